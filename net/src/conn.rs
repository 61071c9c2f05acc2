//! Serves one client connection: handshake, then frames until the client leaves.
//! Queries of one connection run concurrently (each on its own fiber), as RethinkDB
//! runs them; responses go out as they finish, matched to queries by token.

use crate::frame::{parse_body, parse_header, HEADER_BYTES, QUERY_BYTES_LIMIT};
use crate::handshake::{handshake, write_refusal, HandshakeError};
use crate::response;
use crate::scram::UserStore;
use crate::session::{noreply_wait_done, Outcome, ServerInfo, Session, Step};
use futures::stream::{FuturesUnordered, StreamExt};
use futures_lite::io::{BufReader, ReadHalf};
use futures_lite::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use rdb_query::store::Store;
use rdb_query::ErrorKind;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::rc::Rc;

/// Time a client has to finish the handshake (RethinkDB has no limit; without one,
/// connections that never finish hold their descriptors forever).
pub const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Queries evaluated at once on one connection; further frames wait to be read.
const INFLIGHT_MAX: usize = 1024;

/// One frame read from the client.
enum Frame {
    Query(u64, Vec<u8>),
    /// A query too large to read: answered, then the connection ends.
    TooLarge(u64, u64),
    /// Connections together are receiving more query bytes than the server buffers:
    /// answered, then the connection ends.
    Overloaded(u64),
    Eof,
}

/// Bytes of query frames being received, over all connections: a frame's body is read
/// in chunks as they arrive (a length prefix alone reserves nothing), and the chunks
/// of unfinished frames together stay under `RECEIVING_BYTES_MAX`.
static RECEIVING_BYTES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
pub const RECEIVING_BYTES_MAX: u64 = 1 << 30;
/// Bytes read (and reserved) at a time for a frame's body.
const RECEIVE_CHUNK_BYTES: usize = 1 << 20;

/// A share of `RECEIVING_BYTES`, given back on drop.
struct Receiving(u64);

impl Receiving {
    /// Reserves `n` more bytes; false (nothing reserved) when that would pass the cap.
    fn grow(&mut self, n: u64) -> bool {
        use std::sync::atomic::Ordering;
        let before = RECEIVING_BYTES.fetch_add(n, Ordering::SeqCst);
        if before + n > RECEIVING_BYTES_MAX {
            RECEIVING_BYTES.fetch_sub(n, Ordering::SeqCst);
            return false;
        }
        self.0 += n;
        true
    }
}

impl Drop for Receiving {
    fn drop(&mut self) {
        RECEIVING_BYTES.fetch_sub(self.0, std::sync::atomic::Ordering::SeqCst);
    }
}

type Reader<S> = ReadHalf<BufReader<S>>;

/// Reads one frame; owns the reader while it runs, so it is never cut off mid-frame.
async fn read_frame<S: AsyncRead + AsyncWrite + Unpin + 'static>(
    mut r: Reader<S>,
) -> (Reader<S>, io::Result<Frame>) {
    let mut header = [0u8; HEADER_BYTES];
    match r.read_exact(&mut header).await {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return (r, Ok(Frame::Eof)),
        Err(e) => return (r, Err(e)),
    }
    let h = parse_header(&header);
    if h.len >= QUERY_BYTES_LIMIT {
        return (r, Ok(Frame::TooLarge(h.token, u64::from(h.len))));
    }
    let len = h.len as usize;
    let mut body = Vec::with_capacity(len.min(RECEIVE_CHUNK_BYTES));
    let mut receiving = Receiving(0);
    while body.len() < len {
        let chunk = (len - body.len()).min(RECEIVE_CHUNK_BYTES);
        if !receiving.grow(chunk as u64) {
            return (r, Ok(Frame::Overloaded(h.token)));
        }
        let start = body.len();
        body.resize(start + chunk, 0);
        if let Err(e) = r.read_exact(&mut body[start..]).await {
            return (r, Err(e));
        }
    }
    (r, Ok(Frame::Query(h.token, body)))
}

type Task = Pin<Box<dyn Future<Output = (u64, Outcome)>>>;

/// Runs the protocol on `stream` until the client disconnects or misbehaves.
/// Errors are per-connection: they never affect other clients.
pub async fn serve_connection<S: AsyncRead + AsyncWrite + Unpin + 'static>(
    stream: S,
    users: &UserStore,
    server: &ServerInfo,
    store: Option<Rc<Store>>,
) -> io::Result<()> {
    let mut s = BufReader::new(stream);
    let shaken = std::cell::Cell::new(None);
    rdb_io::race(
        async { shaken.set(Some(handshake(&mut s, users).await)) },
        rdb_io::sleep(HANDSHAKE_TIMEOUT),
    )
    .await;
    let Some(shaken) = shaken.into_inner() else {
        tracing::debug!("handshake not finished within {HANDSHAKE_TIMEOUT:?}; closing");
        return Ok(());
    };
    match shaken {
        Ok(user) => tracing::debug!(user, "client authenticated"),
        Err(HandshakeError::Io(e)) => return Err(e),
        Err(HandshakeError::Refused {
            code,
            message,
            json,
        }) => {
            tracing::debug!(code, message, "handshake refused");
            write_refusal(s.get_mut(), code, &message, json).await?;
            return Ok(());
        }
    }
    let (reader, mut writer) = futures_lite::io::split(s);
    let mut c = Conn {
        session: Session::new(server.clone(), store),
        tasks: FuturesUnordered::new(),
        reading: Some(Box::pin(read_frame(reader))),
        parked_reader: None,
        noreply_waiters: Vec::new(),
        feed_reads: std::collections::HashSet::new(),
        pending: Vec::new(),
        closing: false,
    };
    loop {
        let ev = next_event(&mut c.reading, &mut c.tasks).await;
        let mut end = c.handle(ev)?;
        // Take every other event that is ready now, so their answers share one write.
        while !end {
            match futures_lite::future::poll_once(next_event(&mut c.reading, &mut c.tasks)).await {
                Some(ev) => end = c.handle(ev)?,
                None => break,
            }
        }
        if !c.pending.is_empty() {
            writer.write_all(&c.pending).await?;
            writer.flush().await?;
            c.pending.clear();
            if c.pending.capacity() > 4 << 20 {
                c.pending = Vec::new();
            }
        }
        if end {
            return Ok(());
        }
    }
}

type ReadFuture<S> = Pin<Box<dyn Future<Output = (Reader<S>, io::Result<Frame>)>>>;

enum Event<S> {
    Read(Reader<S>, io::Result<Frame>),
    Done(u64, Outcome),
}

/// Waits for the next frame or finished query.
async fn next_event<S: AsyncRead + AsyncWrite + Unpin>(
    reading: &mut Option<ReadFuture<S>>,
    tasks: &mut FuturesUnordered<Task>,
) -> Event<S> {
    let read = async {
        match reading.as_mut() {
            Some(f) => {
                let (r, frame) = f.await;
                *reading = None;
                Event::Read(r, frame)
            }
            None => std::future::pending().await,
        }
    };
    let done = async {
        match tasks.next().await {
            Some((token, outcome)) => Event::Done(token, outcome),
            None => std::future::pending().await,
        }
    };
    futures_lite::future::or(read, done).await
}

/// One connection's state between events.
struct Conn<S: AsyncRead + AsyncWrite + Unpin> {
    session: Session,
    tasks: FuturesUnordered<Task>,
    reading: Option<ReadFuture<S>>,
    /// The reader, while too many queries run to read another frame.
    parked_reader: Option<Reader<S>>,
    noreply_waiters: Vec<u64>,
    /// Running CONTINUEs of changefeeds: they may wait indefinitely for changes, so
    /// NOREPLY_WAIT does not wait for them.
    feed_reads: std::collections::HashSet<u64>,
    pending: Vec<u8>,
    closing: bool,
}

impl<S: AsyncRead + AsyncWrite + Unpin + 'static> Conn<S> {
    /// Applies one event; `Ok(true)` when the connection should end after writing.
    fn handle(&mut self, ev: Event<S>) -> io::Result<bool> {
        match ev {
            Event::Done(token, outcome) => {
                self.feed_reads.remove(&token);
                if !self.session.job_done(token) {
                    // STOPped while running: STOP was answered; this answer is not.
                    self.session.finished(token);
                } else {
                    match outcome.cursor {
                        Some(c) => self.session.keep_cursor(token, c),
                        None => self.session.finished(token),
                    }
                    if let Some(r) = outcome.reply {
                        self.pending.extend_from_slice(&r);
                    }
                }
            }
            Event::Read(r, frame) => match frame? {
                Frame::Eof => {
                    self.closing = true;
                    // Nobody will read the answers: running queries stop at their
                    // next step, waiting feeds at once.
                    self.session.interrupt_all();
                }
                Frame::TooLarge(token, len) => {
                    let msg = format!(
                        "Query size ({len}) greater than maximum ({}).",
                        QUERY_BYTES_LIMIT - 1
                    );
                    self.pending.extend_from_slice(&response::client_error(
                        token,
                        ErrorKind::ResourceLimit,
                        &msg,
                    ));
                    // The rest of the stream is the oversized body: it cannot resync.
                    return Ok(true);
                }
                Frame::Overloaded(token) => {
                    self.pending.extend_from_slice(&response::client_error(
                        token,
                        ErrorKind::ResourceLimit,
                        &format!(
                            "The server is receiving more query data than it buffers ({} MiB over all connections); try again later.",
                            RECEIVING_BYTES_MAX >> 20
                        ),
                    ));
                    return Ok(true);
                }
                Frame::Query(token, body) => {
                    match self.session.step(token, parse_body(&body)) {
                        Step::Reply(Some(r)) => self.pending.extend_from_slice(&r),
                        Step::Reply(None) => {}
                        Step::NoreplyWait => self.noreply_waiters.push(token),
                        Step::Run(job) => {
                            let control = self
                                .session
                                .control(token)
                                .expect("the session registers every job it hands out");
                            if self.session.is_feed(token) {
                                // Delivering changes yields to queries and writes: a
                                // busy core lets feeds lag (up to their queue bound)
                                // rather than slow the writers down.
                                self.feed_reads.insert(token);
                                self.tasks.push(Box::pin(rdb_io::in_background(run_job(
                                    token, job, control,
                                ))));
                            } else {
                                self.tasks.push(Box::pin(rdb_io::foreground(run_job(
                                    token, job, control,
                                ))));
                            }
                        }
                    }
                    self.parked_reader = Some(r);
                }
            },
        }
        // NOREPLY_WAIT is answered once everything started before it has finished
        // (changefeed reads aside).
        if self.tasks.len() == self.feed_reads.len() {
            for t in self.noreply_waiters.drain(..) {
                self.pending.extend_from_slice(&noreply_wait_done(t));
            }
        }
        if self.closing {
            return Ok(self.tasks.is_empty());
        }
        if self.reading.is_none() && self.tasks.len() < INFLIGHT_MAX {
            if let Some(r) = self.parked_reader.take() {
                self.reading = Some(Box::pin(read_frame(r)));
            }
        }
        Ok(false)
    }
}

async fn run_job(
    token: u64,
    job: crate::session::Job,
    control: Rc<rdb_io::control::Control>,
) -> (u64, Outcome) {
    let outcome = rdb_io::fiber::run_controlled(control, move || {
        // A bug in one query must not take the server (or this connection) down.
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(job)).unwrap_or_else(|_| Outcome {
            reply: Some(response::client_error(
                token,
                ErrorKind::Internal,
                "Internal error: the query hit a server bug (see the server log).",
            )),
            cursor: None,
        })
    })
    .await;
    (token, outcome)
}
