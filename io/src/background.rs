//! The background task queue and its CPU budget: work that must not crowd out queries
//! and writes (changefeed delivery) runs here, and while the core is busy with
//! foreground work (futures wrapped in [`foreground`]: query jobs) it gets at most a
//! fixed fraction of each window.
//!
//! glommio's shares alone do not achieve this: a background queue that finds the core
//! idle runs a whole preemption slice, and foreground work arriving meanwhile waits for
//! it; demand-driven background work (every delivered batch of changes brings the next
//! CONTINUE) then fills every gap and the foreground's pipelines drain. The budget counts
//! the time background futures actually spend in `poll` and parks them until the next
//! window once their share is used.

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// How often the budget starts over, and the unit its fractions are of.
const WINDOW: Duration = Duration::from_millis(10);
/// Foreground work counts as busy when it ran at least this fraction of the last window.
const FOREGROUND_BUSY_FRACTION: f64 = 0.2;
/// What background work may use of a window while the foreground is busy.
const BACKGROUND_BUSY_FRACTION: f64 = 0.01;

/// Shares of the background queue against the default queue's 1000 (glommio's scheduler
/// still picks between runnable queues; the budget bounds the total).
const BACKGROUND_SHARES: usize = 50;

/// The budget's state, kept per core. Pure: times are passed in, so it is tested
/// without an executor.
#[derive(Debug)]
pub struct Budget {
    window_start: Instant,
    /// Time foreground work (see [`foreground`]) spent in `poll` during this window.
    foreground_used: Duration,
    /// Time background futures spent in `poll` during this window, plus what an
    /// earlier capped window overran.
    background_used: Duration,
    /// Whether this window caps background work (decided when it starts).
    capped: bool,
}

impl Budget {
    pub fn new(now: Instant) -> Budget {
        Budget {
            window_start: now,
            foreground_used: Duration::ZERO,
            background_used: Duration::ZERO,
            capped: false,
        }
    }

    fn allowance() -> Duration {
        WINDOW.mul_f64(BACKGROUND_BUSY_FRACTION)
    }

    /// Before polling background work: `None` to go ahead, or how long to wait.
    pub fn wait(&mut self, now: Instant) -> Option<Duration> {
        let elapsed = now.saturating_duration_since(self.window_start);
        if elapsed >= WINDOW {
            self.capped = self.foreground_used.as_secs_f64()
                >= FOREGROUND_BUSY_FRACTION * elapsed.as_secs_f64();
            // What a capped window overran (one poll can outlast the allowance) is
            // owed by the next one, so the cap holds on average.
            let owed = self.background_used.saturating_sub(Self::allowance());
            self.window_start = now;
            self.foreground_used = Duration::ZERO;
            self.background_used = if self.capped {
                owed.min(WINDOW)
            } else {
                Duration::ZERO
            };
        }
        if self.capped && self.background_used >= Self::allowance() {
            return Some(WINDOW.saturating_sub(now.saturating_duration_since(self.window_start)));
        }
        None
    }

    /// Records time background work spent in one poll.
    pub fn charge(&mut self, spent: Duration) {
        self.background_used += spent;
    }

    /// Records time foreground work spent in one poll.
    pub fn charge_foreground(&mut self, spent: Duration) {
        self.foreground_used += spent;
    }

    pub fn capped(&self) -> bool {
        self.capped
    }
}

thread_local! {
    static BACKGROUND: std::cell::Cell<Option<glommio::TaskQueueHandle>> =
        const { std::cell::Cell::new(None) };
    static GATE: std::cell::RefCell<Option<Gate>> = const { std::cell::RefCell::new(None) };
}

/// The core's budget and the background futures waiting for it, in arrival order.
/// Parked futures are woken one at a time while budget is left (each wakes the next
/// after its poll), so a thousand parked feeds cost one wake-up each per turn, not a
/// thousand timers per window.
struct Gate {
    budget: Budget,
    parked: std::collections::VecDeque<(Rc<Cell<bool>>, Waker)>,
    timer_armed: bool,
}

fn with_gate<T>(f: impl FnOnce(&mut Gate) -> T) -> T {
    GATE.with(|g| {
        let mut g = g.borrow_mut();
        let gate = g.get_or_insert_with(|| Gate {
            budget: Budget::new(Instant::now()),
            parked: Default::default(),
            timer_armed: false,
        });
        f(gate)
    })
}

/// Hands the budget on: wakes the longest-parked future if budget is left, or makes
/// sure a timer will look again when the window ends. Called after every background
/// poll, when a parked future is dropped, and when the timer fires, so parked futures
/// never wait without one of these pending.
fn kick() {
    let action = with_gate(|g| {
        if g.parked.is_empty() {
            return None;
        }
        match g.budget.wait(Instant::now()) {
            None => g.parked.pop_front().map(Ok),
            Some(_) if g.timer_armed => None,
            Some(d) => {
                g.timer_armed = true;
                Some(Err(d))
            }
        }
    });
    match action {
        Some(Ok((queued, waker))) => {
            queued.set(false);
            waker.wake();
        }
        Some(Err(wait)) => {
            glommio::spawn_local(async move {
                glommio::timer::sleep(wait).await;
                with_gate(|g| g.timer_armed = false);
                kick();
            })
            .detach();
        }
        None => {}
    }
}

/// A background future under the core's budget.
struct Budgeted<F> {
    fut: Pin<Box<F>>,
    /// Whether this future's waker is in the gate's queue.
    queued: Rc<Cell<bool>>,
}

impl<F: Future> Future for Budgeted<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        if self.queued.get() {
            // Woken by its own work while parked: it keeps its place in the queue.
            return Poll::Pending;
        }
        let now = Instant::now();
        let parked = with_gate(|g| {
            g.budget.wait(now)?;
            g.parked
                .push_back((self.queued.clone(), cx.waker().clone()));
            self.queued.set(true);
            Some(())
        });
        if parked.is_some() {
            kick();
            return Poll::Pending;
        }
        let out = self.fut.as_mut().poll(cx);
        let spent = now.elapsed();
        with_gate(|g| g.budget.charge(spent));
        kick();
        out
    }
}

impl<F> Drop for Budgeted<F> {
    fn drop(&mut self) {
        if self.queued.get() {
            with_gate(|g| g.parked.retain(|(q, _)| !Rc::ptr_eq(q, &self.queued)));
        }
        // A cancelled task may have been handed its turn and never polled: pass it on.
        kick();
    }
}

/// Foreground work whose time decides whether the core is busy (queries and writes);
/// the connection plumbing around it is not counted, so many feeds alone never cap
/// themselves.
pub async fn foreground<T>(fut: impl Future<Output = T>) -> T {
    let mut fut = std::pin::pin!(fut);
    std::future::poll_fn(move |cx| {
        let started = Instant::now();
        let out = fut.as_mut().poll(cx);
        with_gate(|g| g.budget.charge_foreground(started.elapsed()));
        out
    })
    .await
}

/// Runs a future in this core's background task queue, under its budget, and waits for
/// its output. Dropping the returned future cancels the work.
pub async fn in_background<T: 'static>(fut: impl Future<Output = T> + 'static) -> T {
    let tq = BACKGROUND.with(|b| match b.get() {
        Some(h) => h,
        None => {
            let h = glommio::executor().create_task_queue(
                glommio::Shares::Static(BACKGROUND_SHARES),
                glommio::Latency::NotImportant,
                "background",
            );
            b.set(Some(h));
            h
        }
    });
    let fut = Budgeted {
        fut: Box::pin(fut),
        queued: Rc::new(Cell::new(false)),
    };
    glommio::spawn_local_into(fut, tq)
        .expect("the background queue was created on this executor")
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn idle_foreground_leaves_background_unbounded() {
        let t0 = Instant::now();
        let mut b = Budget::new(t0);
        b.charge(9 * MS);
        b.charge_foreground(MS);
        assert_eq!(b.wait(t0 + 10 * MS), None);
        assert!(!b.capped());
        b.charge(9 * MS);
        assert_eq!(b.wait(t0 + 19 * MS), None);
    }

    #[test]
    fn busy_foreground_caps_background_until_the_window_ends() {
        let t0 = Instant::now();
        let mut b = Budget::new(t0);
        b.charge_foreground(3 * MS);
        b.charge(MS / 10);
        assert_eq!(b.wait(t0 + 10 * MS), None);
        assert!(b.capped(), "foreground ran 3 ms of 10");
        b.charge(Budget::allowance());
        assert_eq!(b.wait(t0 + 12 * MS), Some(8 * MS));
        // The next window is decided by what the foreground did in this one.
        b.charge_foreground(MS);
        assert_eq!(b.wait(t0 + 20 * MS), None);
        assert!(!b.capped(), "foreground ran 1 ms of 10");
    }

    #[test]
    fn an_overrun_is_paid_back_by_later_capped_windows() {
        let a = Budget::allowance();
        let t0 = Instant::now();
        let mut b = Budget::new(t0);
        b.charge_foreground(5 * MS);
        assert_eq!(b.wait(t0 + 10 * MS), None);
        // One poll four allowances long: three are owed, so the next three windows
        // stay closed and the fourth opens.
        b.charge(a * 4);
        for w in 2..5 {
            b.charge_foreground(5 * MS);
            assert_eq!(b.wait(t0 + w * 10 * MS), Some(10 * MS), "window {w}");
        }
        b.charge_foreground(5 * MS);
        assert_eq!(b.wait(t0 + 50 * MS), None);
    }
}
