//! Worker threads for blocking work a query waits for (JavaScript, HTTP requests): the
//! query's fiber suspends while a worker runs its job, so the core keeps serving.

/// Why a job got no answer.
pub enum Stopped {
    /// No worker is left to take the job.
    Gone,
    /// The worker dropped the job without answering.
    Dropped,
    /// The query was interrupted while it waited (the job's answer is dropped).
    Interrupted,
}

/// Jobs waiting for a worker; past this a query waits for room (back-pressure).
const JOBS_QUEUED_MAX: usize = 256;

/// A fixed set of threads taking jobs of type `J` from one queue.
pub struct Workers<J> {
    jobs: flume::Sender<J>,
}

impl<J: Send + 'static> Workers<J> {
    /// Starts `n` (at least 1) threads named `name-i`, each running `body` over the
    /// shared queue until it closes.
    pub fn start(
        name: &str,
        n: usize,
        stack_bytes: Option<usize>,
        body: impl Fn(flume::Receiver<J>) + Send + Clone + 'static,
    ) -> std::io::Result<Workers<J>> {
        let (tx, rx) = flume::bounded::<J>(JOBS_QUEUED_MAX);
        for i in 0..n.max(1) {
            let (rx, body) = (rx.clone(), body.clone());
            let mut b = std::thread::Builder::new().name(format!("{name}-{i}"));
            if let Some(s) = stack_bytes {
                b = b.stack_size(s);
            }
            b.spawn(move || body(rx))?;
        }
        Ok(Workers { jobs: tx })
    }

    /// Queues the job `make(reply)` (waiting for room in the queue) and waits for what
    /// the worker sends on `reply`; gives up when the query is interrupted.
    pub fn ask<R: Send + 'static>(
        &self,
        make: impl FnOnce(flume::Sender<R>) -> J,
    ) -> Result<R, Stopped> {
        let (tx, rx) = flume::bounded(1);
        let job = make(tx);
        let jobs = self.jobs.clone();
        rdb_io::fiber::block_on_interruptible(async move {
            jobs.send_async(job).await.map_err(|_| Stopped::Gone)?;
            rx.recv_async().await.map_err(|_| Stopped::Dropped)
        })
        .map_err(|_| Stopped::Interrupted)?
    }
}
