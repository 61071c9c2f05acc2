//! The io seam: the only crate that names glommio or io_uring.
//!
//! It starts one glommio executor per core and hands out TCP listeners and streams as
//! `futures` AsyncRead/AsyncWrite types, so every crate above it stays runtime-agnostic
//! and can be tested with in-memory streams. Storage file I/O (DMA files, fdatasync) will
//! live here too, with an in-memory fault-injecting twin.

pub mod background;
pub mod control;
pub mod fiber;
pub mod fs;
pub mod runtime;

pub use background::{foreground, in_background};
pub use runtime::{memlock_limit_bytes, run_per_core, spawn_local, RuntimeConfig, RuntimeError};

/// A TCP listener bound with SO_REUSEPORT, so every core can accept on the same port.
pub type TcpListener = glommio::net::TcpListener;
/// An accepted connection, owned by the core that accepted it.
pub type TcpStream = glommio::net::TcpStream;

/// Sleeps on the current core's timer.
pub async fn sleep(d: std::time::Duration) {
    glommio::timer::sleep(d).await;
}

/// Waits for whichever of two futures finishes first.
pub async fn race(
    a: impl std::future::Future<Output = ()>,
    b: impl std::future::Future<Output = ()>,
) {
    futures_lite::future::or(a, b).await;
}

/// Runs futures concurrently on the current core until all of them finish.
pub async fn join_all<F: std::future::Future<Output = ()> + 'static>(fs: Vec<F>) {
    let handles: Vec<_> = fs.into_iter().map(|f| glommio::spawn_local(f)).collect();
    for h in handles {
        h.await;
    }
}

/// Polls futures together on the current task until all finish (no spawning, so it
/// works on any executor, including `block_on` in tests); results in input order.
pub async fn poll_all<T>(fs: Vec<impl std::future::Future<Output = T>>) -> Vec<T> {
    let mut pinned: Vec<_> = fs.into_iter().map(Box::pin).collect();
    let mut out: Vec<Option<T>> = (0..pinned.len()).map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut done = true;
        for (i, f) in pinned.iter_mut().enumerate() {
            if out[i].is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => out[i] = Some(v),
                    std::task::Poll::Pending => done = false,
                }
            }
        }
        if done {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
    out.into_iter()
        .map(|o| o.expect("every future completed"))
        .collect()
}
