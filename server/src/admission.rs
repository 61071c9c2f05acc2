//! Who may connect: caps on client connections in total and per peer address, so no
//! client (or crowd of half-open handshakes) can take every file descriptor; and a log
//! line for refusals and accept errors that cannot flood the log.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// File descriptors kept for storage files and everything that is not a client.
const FDS_RESERVED: u64 = 1024;

/// The connection caps of one server.
pub struct Admission {
    total: AtomicUsize,
    per_peer: Mutex<HashMap<IpAddr, usize>>,
    total_max: usize,
    per_peer_max: usize,
    refusals: RateLimitedLog,
}

/// One admitted connection; dropping it gives its place back.
pub struct Ticket {
    admission: Arc<Admission>,
    peer: IpAddr,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.admission.total.fetch_sub(1, Ordering::SeqCst);
        if let Ok(mut m) = self.admission.per_peer.lock() {
            if let Some(n) = m.get_mut(&self.peer) {
                *n -= 1;
                if *n == 0 {
                    m.remove(&self.peer);
                }
            }
        }
    }
}

impl Admission {
    pub fn new(total_max: usize, per_peer_max: usize) -> Arc<Admission> {
        assert!(total_max >= 1 && per_peer_max >= 1);
        Arc::new(Admission {
            total: AtomicUsize::new(0),
            per_peer: Mutex::new(HashMap::new()),
            total_max,
            per_peer_max,
            refusals: RateLimitedLog::new(Duration::from_secs(10)),
        })
    }

    /// A place for a new connection from `peer`, or `None` (the refusal is logged, at
    /// most once per 10 s with the number left out).
    pub fn admit(self: &Arc<Self>, peer: IpAddr) -> Option<Ticket> {
        let mut m = self.per_peer.lock().ok()?;
        let from_peer = m.get(&peer).copied().unwrap_or(0);
        let total = self.total.load(Ordering::SeqCst);
        let why = if total >= self.total_max {
            Some(format!(
                "{total} connections are open (--max-connections {})",
                self.total_max
            ))
        } else if from_peer >= self.per_peer_max {
            Some(format!(
                "{from_peer} connections from {peer} are open (--max-connections-per-peer {})",
                self.per_peer_max
            ))
        } else {
            None
        };
        if let Some(why) = why {
            drop(m);
            self.refusals.log(|suppressed| {
                tracing::warn!("refused a connection from {peer}: {why}{suppressed}")
            });
            return None;
        }
        *m.entry(peer).or_insert(0) += 1;
        self.total.fetch_add(1, Ordering::SeqCst);
        Some(Ticket {
            admission: self.clone(),
            peer,
        })
    }

    #[cfg(test)]
    pub fn open(&self) -> usize {
        self.total.load(Ordering::SeqCst)
    }
}

/// A default cap on connections: what the descriptor limit leaves after storage's share.
/// Raises the soft RLIMIT_NOFILE to the hard one first.
pub fn default_connections_max() -> usize {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write the struct we pass, nothing else.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) != 0 {
            return 1024;
        }
        if r.rlim_cur < r.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: r.rlim_max,
                rlim_max: r.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                r.rlim_cur = r.rlim_max;
            }
        }
    }
    let fds = if r.rlim_cur == libc::RLIM_INFINITY {
        1 << 20
    } else {
        r.rlim_cur
    };
    fds.saturating_sub(FDS_RESERVED.max(fds / 4))
        .clamp(64, 1 << 20) as usize
}

/// A log line that repeats at most once per interval, counting what it left out.
pub struct RateLimitedLog {
    every: Duration,
    state: Mutex<(Option<Instant>, u64)>,
}

impl RateLimitedLog {
    pub fn new(every: Duration) -> RateLimitedLog {
        RateLimitedLog {
            every,
            state: Mutex::new((None, 0)),
        }
    }

    /// Calls `emit` with a suffix naming how many lines were left out since the last,
    /// unless one was emitted less than the interval ago.
    pub fn log(&self, emit: impl FnOnce(&str)) {
        let Ok(mut s) = self.state.lock() else {
            return;
        };
        let now = Instant::now();
        if s.0
            .is_some_and(|last| now.duration_since(last) < self.every)
        {
            s.1 += 1;
            return;
        }
        let suffix = if s.1 > 0 {
            format!(
                " ({} more like this in the last {} s)",
                s.1,
                self.every.as_secs()
            )
        } else {
            String::new()
        };
        *s = (Some(now), 0);
        drop(s);
        emit(&suffix);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_total_and_per_peer_and_gives_places_back() {
        let a = Admission::new(3, 2);
        let p1: IpAddr = "10.0.0.1".parse().unwrap();
        let p2: IpAddr = "10.0.0.2".parse().unwrap();
        let t1 = a.admit(p1).unwrap();
        let _t2 = a.admit(p1).unwrap();
        assert!(a.admit(p1).is_none(), "per-peer cap");
        let _t3 = a.admit(p2).unwrap();
        assert!(a.admit(p2).is_none(), "total cap");
        drop(t1);
        assert_eq!(a.open(), 2);
        assert!(a.admit(p2).is_some());
    }

    #[test]
    fn rate_limited_log_counts_what_it_leaves_out() {
        let l = RateLimitedLog::new(Duration::from_millis(50));
        let mut lines = Vec::new();
        for _ in 0..5 {
            l.log(|s| lines.push(s.to_string()));
        }
        std::thread::sleep(Duration::from_millis(60));
        l.log(|s| lines.push(s.to_string()));
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[1], " (4 more like this in the last 0 s)");
    }
}
