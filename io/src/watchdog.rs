//! Wakes executor threads that stopped making progress.
//!
//! A glommio executor with nothing to run sleeps in `io_uring_enter` with no deadline;
//! timers, wakes from other threads and its helper threads' results reach it only
//! through a chain of eventfd → latency ring → poll completion. When a link of that
//! chain is lost the core sleeps forever (seen here: start-ups that hung until a
//! SIGSTOP/SIGCONT, an idle server that ignored SIGTERM; glommio issues #326, #547).
//! Any signal delivered to the thread ends the wait with EINTR, after which glommio
//! checks its timers and queues again. So each executor runs a heartbeat task, and a
//! plain thread sends a no-op signal to every executor whose heartbeat is late.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How often each executor's heartbeat task beats.
pub const BEAT: Duration = Duration::from_millis(100);
/// A heartbeat this late gets its executor a wake-up signal.
const LATE: Duration = Duration::from_millis(600);
/// How often the watchdog looks.
const LOOK_EVERY: Duration = Duration::from_millis(200);

/// One executor's registration.
struct Beat {
    thread: libc::pthread_t,
    count: AtomicU64,
    /// Cleared (under the registry lock) before the thread exits: no signal after.
    alive: AtomicBool,
}

/// An executor's registration with the watchdog; dropping it (before the thread exits,
/// also by a panic) ends the signals to that thread.
pub struct Registration {
    beat: Arc<Beat>,
    beats: Arc<Mutex<Vec<Arc<Beat>>>>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let _held = self.beats.lock();
        self.beat.alive.store(false, Ordering::Relaxed);
    }
}

/// The executors of one `run_per_core`, watched by one thread.
#[derive(Clone, Default)]
pub struct Watchdog {
    beats: Arc<Mutex<Vec<Arc<Beat>>>>,
    stop: Arc<AtomicBool>,
    kicks: Arc<AtomicU64>,
}

/// The real-time signal used to interrupt a sleeping executor; its handler does nothing.
fn wake_signal() -> libc::c_int {
    libc::SIGRTMIN() + 4
}

extern "C" fn on_wake_signal(_: libc::c_int) {}

/// Installs the no-op handler (without SA_RESTART, so the wait is interrupted).
fn install_handler() -> std::io::Result<()> {
    // SAFETY: installs a handler that does nothing (async-signal-safe) for a
    // real-time signal nothing else in the process uses.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_wake_signal as *const () as libc::sighandler_t;
        sa.sa_flags = 0;
        libc::sigemptyset(&mut sa.sa_mask);
        if libc::sigaction(wake_signal(), &sa, std::ptr::null_mut()) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

impl Watchdog {
    /// Starts the watching thread; it ends with `stop`.
    pub fn start() -> std::io::Result<Watchdog> {
        install_handler()?;
        let w = Watchdog::default();
        let w2 = w.clone();
        std::thread::Builder::new()
            .name("rdb-watchdog".into())
            .spawn(move || w2.watch())?;
        Ok(w)
    }

    /// Registers the calling executor thread; returns its registration (keep it until
    /// the thread is done) and the future that beats for it (spawn it on that executor).
    pub fn register(&self) -> (Registration, impl std::future::Future<Output = ()>) {
        let beat = Arc::new(Beat {
            // SAFETY: pthread_self has no preconditions.
            thread: unsafe { libc::pthread_self() },
            count: AtomicU64::new(0),
            alive: AtomicBool::new(true),
        });
        self.beats.lock().expect("watchdog lock").push(beat.clone());
        let stop = self.stop.clone();
        let b = beat.clone();
        let beating = async move {
            while !stop.load(Ordering::Relaxed) && b.alive.load(Ordering::Relaxed) {
                b.count.fetch_add(1, Ordering::Relaxed);
                crate::sleep(BEAT).await;
            }
        };
        let registration = Registration {
            beat,
            beats: self.beats.clone(),
        };
        (registration, beating)
    }

    /// Interrupts every executor's wait now (shutdown: each checks its flag at once).
    pub fn kick_all(&self) {
        for b in self.beats.lock().expect("watchdog lock").iter() {
            self.kick(b);
        }
    }

    /// Wake-up signals sent so far (for tests and logs).
    pub fn kicks(&self) -> u64 {
        self.kicks.load(Ordering::Relaxed)
    }

    /// Signals `b`'s thread; callers hold the registry lock.
    fn kick(&self, b: &Beat) {
        if !b.alive.load(Ordering::Relaxed) {
            return;
        }
        // SAFETY: the thread is alive: it clears `alive` under the registry lock (held
        // by our caller) before it exits. The handler is installed.
        unsafe { libc::pthread_kill(b.thread, wake_signal()) };
        self.kicks.fetch_add(1, Ordering::Relaxed);
    }

    /// Stops the watching thread and the heartbeats.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
        self.beats.lock().expect("watchdog lock").clear();
    }

    fn watch(&self) {
        let late_looks = (LATE.as_millis() / LOOK_EVERY.as_millis()).max(1) as u32;
        // Per executor: its last count and how many looks it has not moved.
        let mut seen: Vec<(u64, u32)> = Vec::new();
        while !self.stop.load(Ordering::Relaxed) {
            std::thread::sleep(LOOK_EVERY);
            let beats = self.beats.lock().expect("watchdog lock");
            seen.resize(beats.len(), (0, 0));
            for (b, s) in beats.iter().zip(seen.iter_mut()) {
                let now = b.count.load(Ordering::Relaxed);
                if now != s.0 {
                    *s = (now, 0);
                    continue;
                }
                s.1 += 1;
                if s.1 >= late_looks {
                    self.kick(b);
                    s.1 = 0;
                }
            }
        }
    }
}
