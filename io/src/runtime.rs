//! Thread-per-core executors: one glommio LocalExecutor per core, sized to fit the
//! process's locked-memory limit.

use std::future::Future;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum RuntimeError {
    #[error("locked-memory limit (RLIMIT_MEMLOCK) is {limit_bytes} bytes, but {cores} cores need {needed_bytes}; raise it with `ulimit -l` or use fewer --cores")]
    MemlockTooLow {
        limit_bytes: u64,
        cores: usize,
        needed_bytes: u64,
    },
    #[error("could not start the executor for core {core}: {source}")]
    Spawn {
        core: usize,
        source: glommio::GlommioError<()>,
    },
    #[error("could not start the executor watchdog: {reason}")]
    Watchdog { reason: String },
    #[error("the executor for core {core} panicked")]
    Panicked { core: usize },
}

#[derive(Clone, Debug)]
pub struct RuntimeConfig {
    pub cores: usize,
    /// Registered io buffer memory per executor; it counts against RLIMIT_MEMLOCK.
    pub io_memory_bytes: usize,
    /// Pin executor i to CPU i when the machine has that CPU.
    pub pin: bool,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            cores: 1,
            io_memory_bytes: 512 * 1024,
            pin: false,
        }
    }
}

/// Locked memory an executor needs besides its io buffers (rings and their arrays).
const RING_OVERHEAD_BYTES: u64 = 512 * 1024;
const RING_DEPTH: usize = 128;

/// The soft RLIMIT_MEMLOCK of this process, in bytes (`u64::MAX` when unlimited).
pub fn memlock_limit_bytes() -> u64 {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass and has no other effects.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut r) };
    if rc != 0 || r.rlim_cur == libc::RLIM_INFINITY {
        return u64::MAX;
    }
    r.rlim_cur
}

/// Runs `f(core)` on one executor per core and waits for all of them to finish.
/// A watchdog wakes any executor whose heartbeat stops (`watchdog.rs`).
pub fn run_per_core<F, Fut>(cfg: &RuntimeConfig, f: F) -> Result<(), RuntimeError>
where
    F: Fn(usize) -> Fut + Send + Sync + Clone + 'static,
    Fut: Future<Output = ()> + 'static,
{
    let watchdog = crate::watchdog::Watchdog::start().map_err(|e| RuntimeError::Watchdog {
        reason: e.to_string(),
    })?;
    let r = run_watched(cfg, f, &watchdog);
    watchdog.stop();
    r
}

/// The watchdog of the executors this process runs (to wake them all at shutdown).
pub fn watchdog() -> Option<crate::watchdog::Watchdog> {
    WATCHDOG.lock().ok().and_then(|w| w.clone())
}

static WATCHDOG: std::sync::Mutex<Option<crate::watchdog::Watchdog>> = std::sync::Mutex::new(None);

fn run_watched<F, Fut>(
    cfg: &RuntimeConfig,
    f: F,
    watchdog: &crate::watchdog::Watchdog,
) -> Result<(), RuntimeError>
where
    F: Fn(usize) -> Fut + Send + Sync + Clone + 'static,
    Fut: Future<Output = ()> + 'static,
{
    if let Ok(mut w) = WATCHDOG.lock() {
        *w = Some(watchdog.clone());
    }
    assert!(cfg.cores >= 1, "at least one core");
    let needed = cfg.cores as u64 * (cfg.io_memory_bytes as u64 + RING_OVERHEAD_BYTES);
    let limit = memlock_limit_bytes();
    if needed > limit {
        return Err(RuntimeError::MemlockTooLow {
            limit_bytes: limit,
            cores: cfg.cores,
            needed_bytes: needed,
        });
    }
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let mut handles = Vec::with_capacity(cfg.cores);
    for core in 0..cfg.cores {
        let placement = if cfg.pin && core < cpus {
            glommio::Placement::Fixed(core)
        } else {
            glommio::Placement::Unbound
        };
        let f = f.clone();
        let wd = watchdog.clone();
        let h = glommio::LocalExecutorBuilder::new(placement)
            .name(&format!("rdb-core-{core}"))
            .io_memory(cfg.io_memory_bytes)
            .ring_depth(RING_DEPTH)
            // Task queues take turns at least this often.
            .preempt_timer(PREEMPT_EVERY)
            .spawn(move || async move {
                let (registration, beating) = wd.register();
                glommio::spawn_local(beating).detach();
                f(core).await;
                drop(registration);
            })
            .map_err(|source| RuntimeError::Spawn { core, source })?;
        handles.push(h);
    }
    for (core, h) in handles.into_iter().enumerate() {
        h.join().map_err(|_| RuntimeError::Panicked { core })?;
    }
    Ok(())
}

/// Spawns a task on the current core's executor.
pub fn spawn_local(fut: impl Future<Output = ()> + 'static) {
    glommio::spawn_local(fut).detach();
}

/// How long one task queue may run while another has work.
const PREEMPT_EVERY: std::time::Duration = std::time::Duration::from_millis(1);

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    #[test]
    fn runs_one_task_per_core() {
        let hits = Arc::new(AtomicUsize::new(0));
        let h = hits.clone();
        let cfg = RuntimeConfig {
            cores: 2,
            io_memory_bytes: 256 * 1024,
            pin: false,
        };
        run_per_core(&cfg, move |_core| {
            let h = h.clone();
            async move {
                h.fetch_add(1, Ordering::SeqCst);
            }
        })
        .unwrap();
        assert_eq!(hits.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn refuses_when_memlock_is_too_small() {
        if memlock_limit_bytes() == u64::MAX {
            return;
        }
        let cfg = RuntimeConfig {
            cores: 1,
            io_memory_bytes: memlock_limit_bytes() as usize + 1,
            pin: false,
        };
        let err = run_per_core(&cfg, |_| async {}).unwrap_err();
        assert!(matches!(err, RuntimeError::MemlockTooLow { .. }), "{err}");
    }
}
