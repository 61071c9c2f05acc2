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
pub mod watchdog;

pub use background::{foreground, in_background};
pub use runtime::{
    memlock_limit_bytes, run_per_core, spawn_local, watchdog, RuntimeConfig, RuntimeError,
};

/// A TCP listener bound with SO_REUSEPORT, so every core can accept on the same port.
pub type TcpListener = glommio::net::TcpListener;

/// Backlog of each listener.
const LISTEN_BACKLOG: i32 = 1024;

/// Binds a listener for the current core: SO_REUSEPORT (every core listens on the same
/// port) and SO_REUSEADDR (connections a previous run left in TIME_WAIT do not keep a
/// restarted server off its port for a minute; a server still listening does).
pub fn listen(addr: &std::net::SocketAddr) -> std::io::Result<TcpListener> {
    let s = listen_socket(addr, true)?;
    use std::os::fd::{FromRawFd, IntoRawFd};
    // SAFETY: the descriptor is a bound, listening TCP socket we own; the listener
    // takes it over.
    Ok(unsafe { TcpListener::from_raw_fd(s.into_raw_fd()) })
}

/// Checks that `addr` can be listened on, with the same options as `listen` except
/// SO_REUSEPORT (so another server listening there counts as busy).
pub fn probe_listen(addr: &std::net::SocketAddr) -> std::io::Result<()> {
    listen_socket(addr, false).map(drop)
}

fn listen_socket(
    addr: &std::net::SocketAddr,
    reuse_port: bool,
) -> std::io::Result<socket2::Socket> {
    let s = socket2::Socket::new(
        socket2::Domain::for_address(*addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    s.set_reuse_address(true)?;
    if reuse_port {
        s.set_reuse_port(true)?;
    }
    s.bind(&(*addr).into())?;
    s.listen(LISTEN_BACKLOG)?;
    Ok(s)
}
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
