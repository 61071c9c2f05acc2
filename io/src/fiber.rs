//! Fibers: synchronous code that can wait for futures without blocking its core.
//!
//! The ReQL evaluator is a plain recursive function; table terms need storage I/O in the
//! middle of it. Rather than turning every evaluation step into a future, a query runs on
//! its own stack (a stackful coroutine, like Seastar's `seastar::thread`): `block_on`
//! inside it suspends the fiber and hands the future to the async task driving it, which
//! awaits it on the core's executor and then resumes the fiber. Other tasks on the core
//! run meanwhile. Stacks are pooled per thread, so starting a fiber costs no mmap.

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

type Wait = Pin<Box<dyn Future<Output = ()>>>;
type FiberYielder = Yielder<(), Wait>;

thread_local! {
    /// The yielder of the fiber running on this thread right now, if any.
    static CURRENT: Cell<*const FiberYielder> = const { Cell::new(std::ptr::null()) };
    static STACKS: RefCell<Vec<DefaultStack>> = const { RefCell::new(Vec::new()) };
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
    let mut co: Coroutine<(), Wait, T, DefaultStack> =
        Coroutine::with_stack(take_stack(), move |y: &FiberYielder, ()| {
            CURRENT.with(|c| c.set(y as *const FiberYielder));
            f()
        });
    loop {
        let prev = CURRENT.with(|c| c.get());
        let step = co.resume(());
        CURRENT.with(|c| c.set(prev));
        match step {
            CoroutineResult::Yield(wait) => wait.await,
            CoroutineResult::Return(v) => {
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
    yielder.suspend(wait);
    CURRENT.with(|c| c.set(y));
    slot.take()
        .expect("a fiber resumes only after the future it waits for completes")
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
