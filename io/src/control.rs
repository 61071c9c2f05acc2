//! What a fiber running a query answers to: a memory meter (the bytes it allocated and
//! has not freed), an interrupt flag (STOP, the client leaving, shutdown), and time
//! slices (a long evaluation yields its core every `SLICE`).
//!
//! The process's global allocator reports every allocation and free (`on_alloc`,
//! `on_dealloc`); they are charged to the fiber running on the thread at the time, and
//! to the thread's total over all its fibers. Evaluation calls `tick()` at every step,
//! which checks the meter against the query's limit, the thread's total against the
//! core's limit and the interrupt flag, and every `TICK_CHECK_EVERY`-th call yields
//! when the slice is used up. A charge is an estimate (a fiber may free what another
//! allocated), good for the purpose: no query grows without bound.

use std::cell::Cell;
use std::rc::Rc;
use std::task::Waker;
use std::time::{Duration, Instant};

/// How long evaluation runs before it lets other tasks on its core have a turn.
pub const SLICE: Duration = Duration::from_micros(500);
/// Ticks between two checks (a check reads the clock).
const TICK_CHECK_EVERY: u32 = 64;

/// Why a fiber must stop evaluating.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// Stopped from outside (STOP, the connection closed, the server shuts down).
    Interrupted,
    /// The query holds more memory than its limit allows.
    QueryMemory { limit_bytes: u64 },
    /// Queries on this core together hold more than the core's limit.
    CoreMemory { limit_bytes: u64 },
}

/// The controls of one query's fiber, shared with whoever may interrupt it.
pub struct Control {
    metered_bytes: Cell<i64>,
    query_limit_bytes: u64,
    interrupted: Cell<bool>,
    /// Wakes a fiber waiting in `block_on_interruptible` when it is interrupted.
    waiters: Cell<Vec<Waker>>,
    ticks: Cell<u32>,
    slice_start: Cell<Option<Instant>>,
}

impl Control {
    pub fn new(query_limit_bytes: u64) -> Rc<Control> {
        Rc::new(Control {
            metered_bytes: Cell::new(0),
            query_limit_bytes,
            interrupted: Cell::new(false),
            waiters: Cell::new(Vec::new()),
            ticks: Cell::new(0),
            slice_start: Cell::new(None),
        })
    }

    /// A control with the per-query limit set by `set_query_limit_bytes`.
    pub fn for_query() -> Rc<Control> {
        Control::new(QUERY_LIMIT_BYTES.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// Asks the fiber to stop: its next tick (or interruptible wait) fails.
    pub fn interrupt(&self) {
        self.interrupted.set(true);
        for w in self.waiters.take() {
            w.wake();
        }
    }

    pub fn is_interrupted(&self) -> bool {
        self.interrupted.get()
    }

    /// Bytes allocated and not yet freed while this query's fiber ran.
    pub fn metered_bytes(&self) -> i64 {
        self.metered_bytes.get()
    }

    pub(crate) fn add_waiter(&self, w: &Waker) {
        let mut ws = self.waiters.take();
        if !ws.iter().any(|x| x.will_wake(w)) {
            ws.push(w.clone());
        }
        self.waiters.set(ws);
    }
}

thread_local! {
    /// The control of the fiber running on this thread now (null: none).
    static CURRENT: Cell<*const Control> = const { Cell::new(std::ptr::null()) };
    /// Bytes held by every controlled fiber of this thread together.
    static THREAD_METERED: Cell<i64> = const { Cell::new(0) };
}

static CORE_LIMIT_BYTES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(u64::MAX);

static QUERY_LIMIT_BYTES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1 << 30);

/// Sets the memory one query may hold (for controls made by `Control::for_query`).
pub fn set_query_limit_bytes(n: u64) {
    QUERY_LIMIT_BYTES.store(n, std::sync::atomic::Ordering::Relaxed);
}

/// Sets the memory all queries of one core may hold together.
pub fn set_core_limit_bytes(n: u64) {
    CORE_LIMIT_BYTES.store(n, std::sync::atomic::Ordering::Relaxed);
}

/// Called by the global allocator for every allocation. Never allocates.
#[inline]
pub fn on_alloc(bytes: usize) {
    charge(bytes as i64);
}

/// Called by the global allocator for every free. Never allocates.
#[inline]
pub fn on_dealloc(bytes: usize) {
    charge(-(bytes as i64));
}

/// Adds `delta` bytes to the current fiber's meter and its thread's total.
#[inline]
fn charge(delta: i64) {
    let _ = CURRENT.try_with(|c| {
        let p = c.get();
        if !p.is_null() {
            // SAFETY: `enter` sets the pointer only while the Control is alive (the
            // fiber holding it runs), and clears it before the fiber is left.
            let ctl = unsafe { &*p };
            ctl.metered_bytes.set(ctl.metered_bytes.get() + delta);
            let _ = THREAD_METERED.try_with(|t| t.set(t.get() + delta));
        }
    });
}

/// Makes `ctl` the current control (null for none); returns the previous one.
pub(crate) fn enter(ctl: *const Control) -> *const Control {
    CURRENT.with(|c| c.replace(ctl))
}

/// Takes a finished fiber's remaining bytes off its thread's total (what it kept lives
/// on outside the query now, or was freed elsewhere).
pub(crate) fn retire(ctl: &Control) {
    let left = ctl.metered_bytes.replace(0);
    THREAD_METERED.with(|t| t.set(t.get() - left));
}

/// The bytes every controlled fiber on this thread holds together.
pub fn thread_metered_bytes() -> i64 {
    THREAD_METERED.with(|t| t.get())
}

fn current() -> Option<&'static Control> {
    let p = CURRENT.with(|c| c.get());
    // SAFETY: as in `on_alloc`; the reference does not outlive the fiber's turn.
    (!p.is_null()).then(|| unsafe { &*p })
}

/// One step of evaluation. Cheap: it checks the interrupt flag and the memory limits,
/// and every `TICK_CHECK_EVERY` calls whether the time slice is used up (then yields). Outside a
/// controlled fiber it does nothing.
#[inline]
pub fn tick() -> Result<(), Stop> {
    let Some(ctl) = current() else {
        return Ok(());
    };
    // Limits are a few compares, checked every step: a handful of steps can each
    // double what a query holds.
    check(ctl)?;
    let n = ctl.ticks.get().wrapping_add(1);
    ctl.ticks.set(n);
    if n % TICK_CHECK_EVERY != 0 {
        return Ok(());
    }
    checkpoint()
}

/// The full check `tick` makes now and then; callers about to do something large call
/// it directly.
#[cold]
pub fn checkpoint() -> Result<(), Stop> {
    let Some(ctl) = current() else {
        return Ok(());
    };
    check(ctl)?;
    let now = Instant::now();
    match ctl.slice_start.get() {
        None => ctl.slice_start.set(Some(now)),
        Some(start) if now.duration_since(start) >= SLICE => {
            crate::fiber::yield_now();
            // `ctl` is still ours: the fiber resumed with the same control.
            ctl.slice_start.set(Some(Instant::now()));
            check(ctl)?;
        }
        Some(_) => {}
    }
    Ok(())
}

#[inline]
fn check(ctl: &Control) -> Result<(), Stop> {
    if ctl.interrupted.get() {
        return Err(Stop::Interrupted);
    }
    if ctl.metered_bytes.get() > ctl.query_limit_bytes as i64 {
        return Err(Stop::QueryMemory {
            limit_bytes: ctl.query_limit_bytes,
        });
    }
    let core_limit = CORE_LIMIT_BYTES.load(std::sync::atomic::Ordering::Relaxed);
    if thread_metered_bytes() > core_limit as i64 {
        return Err(Stop::CoreMemory {
            limit_bytes: core_limit,
        });
    }
    Ok(())
}

/// Whether `more` bytes may still be allocated by the current query (callers about to
/// build something large ask first, so one allocation cannot overshoot by gigabytes).
pub fn can_allocate(more: u64) -> Result<(), Stop> {
    let Some(ctl) = current() else {
        return Ok(());
    };
    let held = ctl.metered_bytes.get().max(0) as u64;
    if held.saturating_add(more) > ctl.query_limit_bytes {
        return Err(Stop::QueryMemory {
            limit_bytes: ctl.query_limit_bytes,
        });
    }
    let core_limit = CORE_LIMIT_BYTES.load(std::sync::atomic::Ordering::Relaxed);
    let core_held = thread_metered_bytes().max(0) as u64;
    if core_held.saturating_add(more) > core_limit {
        return Err(Stop::CoreMemory {
            limit_bytes: core_limit,
        });
    }
    Ok(())
}

/// The control of the current fiber, for waits that must end when it is interrupted.
pub fn current_control() -> Option<Rc<Control>> {
    let p = CURRENT.with(|c| c.get());
    if p.is_null() {
        return None;
    }
    // SAFETY: a non-null `CURRENT` always comes from `Rc::as_ptr` of a control that the
    // running fiber keeps alive; taking one more strong count makes a new handle.
    unsafe {
        Rc::increment_strong_count(p);
        Some(Rc::from_raw(p))
    }
}
