//! Fibers: synchronous code that can wait for futures without blocking its core.
//!
//! The ReQL evaluator is a plain recursive function; table terms need storage I/O in the
//! middle of it. Rather than turning every evaluation step into a future, a query runs on
//! its own stack (a stackful coroutine, like Seastar's `seastar::thread`): `block_on`
//! inside it suspends the fiber and hands the future to the async task driving it, which
//! awaits it on the core's executor and then resumes the fiber. Other tasks on the core
//! run meanwhile. Stacks are pooled per thread, so starting a fiber costs no mmap.
//!
//! Recursive walks over data and terms of any depth call `with_room`: when the current
//! stack (a fiber's, or a plain thread's) is nearly used up it runs the rest of the walk
//! on a fresh stack segment, as RethinkDB's `call_with_enough_stack` does, so depth is
//! bounded by memory, never by one stack. Every stack ends in a guard page.

use corosensei::stack::DefaultStack;
use corosensei::{Coroutine, CoroutineResult, Yielder};
use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;

/// Stack reserved per fiber; pages are committed only when touched.
pub const STACK_BYTES: usize = 8 << 20;
/// Finished stacks kept per thread for reuse: enough for every query a busy core runs
/// at once, so steady load never maps or unmaps a stack.
const STACK_POOL_MAX: usize = 1024;

/// A walk that finds less than this much stack left continues on a new segment; every
/// recursive step between two `with_room` checks must fit in it.
pub const RED_ZONE_BYTES: usize = 256 << 10;
/// Size of each extra stack segment `with_room` switches to.
const SEGMENT_BYTES: usize = 2 << 20;
/// Spare segments kept per thread.
const SEGMENT_POOL_MAX: usize = 16;

type Wait = Pin<Box<dyn Future<Output = ()>>>;
type FiberYielder = Yielder<(), Wait>;

thread_local! {
    /// The yielder of the fiber running on this thread right now, if any.
    static CURRENT: Cell<*const FiberYielder> = const { Cell::new(std::ptr::null()) };
    static STACKS: RefCell<Vec<DefaultStack>> = const { RefCell::new(Vec::new()) };
    /// Lowest usable address of the stack this thread runs on now (0: not known yet).
    static STACK_LIMIT: Cell<usize> = const { Cell::new(0) };
    static SEGMENTS: RefCell<Vec<DefaultStack>> = const { RefCell::new(Vec::new()) };
    /// Lowest usable address of this thread's own stack (0: not looked up yet; 1:
    /// unknown).
    static THREAD_LIMIT: Cell<usize> = const { Cell::new(0) };
}

fn page_bytes() -> usize {
    // SAFETY: sysconf has no side effects.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p > 0 {
        p as usize
    } else {
        4096
    }
}

/// The usable bottom of a corosensei stack (above its guard page).
fn usable_limit(s: &DefaultStack) -> usize {
    use corosensei::stack::Stack;
    s.limit().get() + page_bytes()
}

/// The bottom of the calling thread's own stack, from pthread (0 if unknown).
fn thread_stack_limit() -> usize {
    // SAFETY: pthread_getattr_np fills `attr` for the calling thread; it is destroyed
    // after we read the stack bounds out of it.
    unsafe {
        let mut attr: libc::pthread_attr_t = std::mem::zeroed();
        if libc::pthread_getattr_np(libc::pthread_self(), &mut attr) != 0 {
            return 0;
        }
        let mut addr: *mut libc::c_void = std::ptr::null_mut();
        let mut size: libc::size_t = 0;
        let rc = libc::pthread_attr_getstack(&attr, &mut addr, &mut size);
        libc::pthread_attr_destroy(&mut attr);
        if rc != 0 {
            return 0;
        }
        // glibc counts the guard page in the reported stack; skip it.
        addr as usize + page_bytes()
    }
}

#[inline(always)]
fn stack_pointer() -> usize {
    let marker = 0u8;
    std::hint::black_box(&marker) as *const u8 as usize
}

/// Bytes of stack left below the caller (`usize::MAX` when the bounds are unknown).
#[inline]
pub fn stack_left_bytes() -> usize {
    let mut limit = STACK_LIMIT.with(|l| l.get());
    if limit == 0 {
        // Off any fiber: the thread's own stack, looked up once per thread.
        limit = THREAD_LIMIT.with(|l| {
            if l.get() == 0 {
                l.set(thread_stack_limit().max(1));
            }
            l.get()
        });
        if limit <= 1 {
            return usize::MAX;
        }
    }
    stack_pointer().saturating_sub(limit)
}

/// Runs `f` with at least `RED_ZONE_BYTES` of stack: here when there is that much left,
/// otherwise on a new stack segment. Recursive walks call it at each level, so their
/// depth is bounded by memory instead of by the stack they started on. `f` may wait
/// (`block_on`) and may panic; both work across the switch.
#[inline]
pub fn with_room<T>(f: impl FnOnce() -> T) -> T {
    if stack_left_bytes() >= RED_ZONE_BYTES {
        return f();
    }
    on_new_segment(f)
}

/// Runs `f` with at least `bytes` of stack: here when there is that much left,
/// otherwise on a new stack of that size (for recursion we cannot instrument, such as a
/// parser, whose depth is known beforehand).
pub fn with_stack_bytes<T>(bytes: usize, f: impl FnOnce() -> T) -> T {
    if stack_left_bytes() >= bytes {
        return f();
    }
    if bytes <= SEGMENT_BYTES {
        return on_new_segment(f);
    }
    let mut stack = DefaultStack::new(bytes).expect("stack allocation failed");
    on_stack_with_limit(&mut stack, f)
}

/// Runs `f` on `stack`, with the stack limit set to it meanwhile.
fn on_stack_with_limit<T>(stack: &mut DefaultStack, f: impl FnOnce() -> T) -> T {
    /// Puts the caller's stack limit back however `f` ends.
    struct Restore(usize);
    impl Drop for Restore {
        fn drop(&mut self) {
            STACK_LIMIT.with(|l| l.set(self.0));
        }
    }
    let prev = STACK_LIMIT.with(|l| l.replace(usable_limit(stack)));
    let restore = Restore(prev);
    let out = corosensei::on_stack(stack, f);
    drop(restore);
    out
}

#[cold]
#[inline(never)]
fn on_new_segment<T>(f: impl FnOnce() -> T) -> T {
    let mut seg = SEGMENTS.with(|p| p.borrow_mut().pop()).unwrap_or_else(|| {
        DefaultStack::new(SEGMENT_BYTES).expect("stack segment allocation failed")
    });
    let out = on_stack_with_limit(&mut seg, f);
    SEGMENTS.with(|p| {
        let mut p = p.borrow_mut();
        if p.len() < SEGMENT_POOL_MAX {
            p.push(seg);
        }
    });
    out
}

fn take_stack() -> DefaultStack {
    STACKS
        .with(|p| p.borrow_mut().pop())
        .unwrap_or_else(|| DefaultStack::new(STACK_BYTES).expect("fiber stack allocation failed"))
}

fn return_stack(s: DefaultStack) {
    STACKS.with(|p| {
        let mut p = p.borrow_mut();
        if p.len() < STACK_POOL_MAX {
            p.push(s);
        }
    });
}

/// Runs `f` on a fiber; every `block_on` inside it awaits on the calling task.
pub async fn run<T: 'static>(f: impl FnOnce() -> T + 'static) -> T {
    run_with(None, f).await
}

/// Runs `f` on a fiber under `ctl`: its allocations are metered, `control::tick` inside
/// it time-slices and reports `ctl`'s interrupt and memory limits.
pub async fn run_controlled<T: 'static>(
    ctl: Rc<crate::control::Control>,
    f: impl FnOnce() -> T + 'static,
) -> T {
    run_with(Some(ctl), f).await
}

/// A started fiber. Dropping it before it returns unwinds it, with its own stack limit
/// and control in place (destructors may walk deep data and free metered memory).
struct Running<T> {
    co: Option<Coroutine<(), Wait, T, DefaultStack>>,
    ctl: Option<Rc<crate::control::Control>>,
    /// The stack limit the fiber had when it last suspended (it may be on a segment).
    limit: usize,
}

impl<T> Running<T> {
    fn ctl_ptr(&self) -> *const crate::control::Control {
        self.ctl.as_ref().map_or(std::ptr::null(), Rc::as_ptr)
    }
}

impl<T> Drop for Running<T> {
    fn drop(&mut self) {
        if let Some(co) = self.co.take() {
            let prev_limit = STACK_LIMIT.with(|l| l.replace(self.limit));
            let prev_ctl = crate::control::enter(self.ctl_ptr());
            drop(co);
            crate::control::enter(prev_ctl);
            STACK_LIMIT.with(|l| l.set(prev_limit));
        }
        if let Some(c) = &self.ctl {
            crate::control::retire(c);
        }
    }
}

thread_local! {
    /// The stack limit of the fiber that suspended last on this thread (set by
    /// `block_on` just before it suspends, read by `run` just after).
    static SUSPENDED_LIMIT: Cell<usize> = const { Cell::new(0) };
}

async fn run_with<T: 'static>(
    ctl: Option<Rc<crate::control::Control>>,
    f: impl FnOnce() -> T + 'static,
) -> T {
    let stack = take_stack();
    let limit = usable_limit(&stack);
    let co: Coroutine<(), Wait, T, DefaultStack> =
        Coroutine::with_stack(stack, move |y: &FiberYielder, ()| {
            CURRENT.with(|c| c.set(y as *const FiberYielder));
            STACK_LIMIT.with(|l| l.set(limit));
            f()
        });
    let mut running = Running {
        co: Some(co),
        ctl,
        limit,
    };
    loop {
        let prev = CURRENT.with(|c| c.get());
        let prev_limit = STACK_LIMIT.with(|l| l.get());
        let prev_ctl = crate::control::enter(running.ctl_ptr());
        let step = running
            .co
            .as_mut()
            .expect("a fiber is resumed only until it returns")
            .resume(());
        crate::control::enter(prev_ctl);
        CURRENT.with(|c| c.set(prev));
        STACK_LIMIT.with(|l| l.set(prev_limit));
        match step {
            CoroutineResult::Yield(wait) => {
                running.limit = SUSPENDED_LIMIT.with(|l| l.get());
                wait.await
            }
            CoroutineResult::Return(v) => {
                let co = running.co.take().expect("the fiber just returned");
                return_stack(co.into_stack());
                return v;
            }
        }
    }
}

/// True while running on a fiber.
pub fn in_fiber() -> bool {
    !CURRENT.with(|c| c.get()).is_null()
}

/// Waits for `fut`. On a fiber this suspends the fiber (the core keeps serving other
/// tasks); elsewhere it blocks the thread, which is only right off the executor (tests,
/// offline tools).
pub fn block_on<T: 'static>(fut: impl Future<Output = T> + 'static) -> T {
    let y = CURRENT.with(|c| c.get());
    if y.is_null() {
        return futures_lite::future::block_on(fut);
    }
    let slot: Rc<Cell<Option<T>>> = Rc::new(Cell::new(None));
    let out = slot.clone();
    let wait: Wait = Box::pin(async move { out.set(Some(fut.await)) });
    // SAFETY: `y` was set by `run` from the yielder of the fiber executing this very
    // code; that fiber is alive (we are on its stack) and only this thread touches it.
    let yielder = unsafe { &*y };
    // The fiber may be on a `with_room` segment; it gets the same limit back.
    let limit = STACK_LIMIT.with(|l| l.get());
    SUSPENDED_LIMIT.with(|l| l.set(limit));
    yielder.suspend(wait);
    CURRENT.with(|c| c.set(y));
    STACK_LIMIT.with(|l| l.set(limit));
    slot.take()
        .expect("a fiber resumes only after the future it waits for completes")
}

/// Waits for `fut` like `block_on`, but gives up (dropping `fut`) as soon as the
/// current fiber's control is interrupted: long waits (scripts, HTTP requests) end
/// within moments of a STOP or of the client leaving.
pub fn block_on_interruptible<T: 'static>(
    fut: impl Future<Output = T> + 'static,
) -> Result<T, crate::control::Stop> {
    use crate::control::Stop;
    let Some(ctl) = crate::control::current_control() else {
        return Ok(block_on(fut));
    };
    if ctl.is_interrupted() {
        return Err(Stop::Interrupted);
    }
    let stopped = std::future::poll_fn(move |cx| {
        if ctl.is_interrupted() {
            std::task::Poll::Ready(None)
        } else {
            ctl.add_waiter(cx.waker());
            std::task::Poll::Pending
        }
    });
    block_on(futures_lite::future::or(async { Some(fut.await) }, stopped)).ok_or(Stop::Interrupted)
}

/// Lets other tasks on the core run (a long query calls this now and then).
pub fn yield_now() {
    if in_fiber() {
        block_on(futures_lite::future::yield_now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_on_outside_a_fiber_blocks() {
        assert_eq!(block_on(async { 7 }), 7);
        assert!(!in_fiber());
    }

    #[test]
    fn fibers_interleave_at_waits() {
        let log = Rc::new(RefCell::new(Vec::new()));
        let (l1, l2) = (log.clone(), log.clone());
        let a = run(move || {
            l1.borrow_mut().push("a1");
            yield_now();
            l1.borrow_mut().push("a2");
            1
        });
        let b = run(move || {
            l2.borrow_mut().push("b1");
            yield_now();
            l2.borrow_mut().push("b2");
            2
        });
        let (x, y) = futures_lite::future::block_on(futures_lite::future::zip(a, b));
        assert_eq!((x, y), (1, 2));
        assert_eq!(*log.borrow(), vec!["a1", "b1", "a2", "b2"]);
    }

    #[test]
    fn nested_fibers_restore_the_outer_one() {
        let v = futures_lite::future::block_on(run(|| {
            assert!(in_fiber());
            let inner = block_on(run(|| {
                yield_now();
                block_on(async { 5 })
            }));
            assert!(in_fiber());
            inner + block_on(async { 1 })
        }));
        assert_eq!(v, 6);
        assert!(!in_fiber());
    }

    #[test]
    fn dropping_a_suspended_fiber_unwinds_it() {
        struct Flag(Rc<Cell<bool>>);
        impl Drop for Flag {
            fn drop(&mut self) {
                self.0.set(true);
            }
        }
        let dropped = Rc::new(Cell::new(false));
        let d = dropped.clone();
        let mut fut = Box::pin(run(move || {
            let _f = Flag(d);
            block_on(futures_lite::future::pending::<()>());
        }));
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        assert!(fut.as_mut().poll(&mut cx).is_pending());
        drop(fut);
        assert!(dropped.get());
        assert!(!in_fiber());
    }

    /// Recursion far deeper than one stack holds, with waits and a panic at the bottom.
    fn deep(n: u32, wait_every: u32) -> u32 {
        with_room(|| {
            let pad = [n as u8; 256];
            std::hint::black_box(&pad);
            if n == 0 {
                return 0;
            }
            if wait_every > 0 && n.is_multiple_of(wait_every) {
                yield_now();
            }
            1 + deep(n - 1, wait_every)
        })
    }

    #[test]
    fn with_room_grows_past_a_fiber_stack() {
        // ~400 bytes a level: 100k levels need ~40 MiB, five times a fiber's stack.
        let a = run(|| deep(100_000, 1000));
        let b = run(|| deep(50_000, 777));
        let (x, y) = futures_lite::future::block_on(futures_lite::future::zip(a, b));
        assert_eq!((x, y), (100_000, 50_000));
    }

    #[test]
    fn with_room_grows_past_a_thread_stack() {
        let h = std::thread::Builder::new()
            .stack_size(256 << 10)
            .spawn(|| deep(20_000, 0))
            .unwrap();
        assert_eq!(h.join().unwrap(), 20_000);
    }

    #[test]
    fn a_panic_on_a_segment_reaches_the_caller() {
        fn boom(n: u32) -> u32 {
            with_room(|| {
                let pad = [0u8; 256];
                std::hint::black_box(&pad);
                if n == 0 {
                    panic!("bottom");
                }
                boom(n - 1) + 1
            })
        }
        let r = futures_lite::future::block_on(run(|| std::panic::catch_unwind(|| boom(60_000))));
        assert!(r.is_err());
        // The thread's limit is back: a shallow call needs no segment.
        assert!(stack_left_bytes() > RED_ZONE_BYTES);
    }

    #[test]
    fn deep_recursion_fits_the_stack() {
        fn depth(n: u32) -> u32 {
            let pad = [n as u8; 512];
            if n == 0 {
                return pad[0] as u32;
            }
            std::hint::black_box(&pad);
            1 + depth(n - 1)
        }
        assert_eq!(
            futures_lite::future::block_on(run(|| depth(10_000))),
            10_000
        );
    }
}
