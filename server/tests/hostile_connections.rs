//! Hostile clients at the connection level: stalled handshakes, huge frames, floods,
//! crowds past the connection caps, and a restart on the port of a killed server.
//!
//! Needs `pip install rethinkdb==2.4.10.post1` (`.ci/run` does it).

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The V1_0 magic number, as a client sends it first.
const V1_0: [u8; 4] = 0x34C2_BDC3u32.to_le_bytes();

#[test]
fn hostile_connections_leave_the_server_serving() {
    // The script counts the log's lines to see that refusals cannot flood it, so the log
    // goes to a file of its own (kept if the test fails, for a look at it).
    let logs = common::scratch_dir("hostile-conn-log");
    std::fs::create_dir_all(&logs).unwrap();
    let log = logs.join("rdb.log");
    let log = log.to_str().unwrap();
    let mut server = common::start("hostile-conn", &["--cores", "2", "--log-file", log]);
    let port = server.port.to_string();
    // The script reads the server's descriptors and memory from /proc/PID.
    let pid = server.child.id().to_string();
    common::run_python("hostile_connections.py", &[&port, &pid, log], 240);
    assert!(
        matches!(server.child.try_wait(), Ok(None)),
        "rdb exited during the hostile connections"
    );
    let _ = std::fs::remove_dir_all(&logs);
}

/// Reads the server's hello (a NUL-terminated JSON object) after the magic number; false
/// if the connection is closed first or `wait` passes.
fn hello(s: &mut TcpStream, wait: Duration) -> bool {
    s.set_read_timeout(Some(wait)).unwrap();
    let mut byte = [0u8; 1];
    loop {
        match s.read(&mut byte) {
            Ok(1) if byte[0] == 0 => return true,
            Ok(1) => {}
            _ => return false,
        }
    }
}

/// Whether the server closes `s` (EOF or reset) within `wait`; bytes sent first are skipped.
fn closed_within(s: &mut TcpStream, wait: Duration) -> bool {
    let deadline = Instant::now() + wait;
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        s.set_read_timeout(Some(left)).unwrap();
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return false
            }
            Err(_) => return true,
        }
    }
}

/// Whether `s` is still open now (nothing to read, no EOF), without waiting.
fn open_now(s: &mut TcpStream) -> bool {
    s.set_nonblocking(true).unwrap();
    let open = matches!(s.read(&mut [0u8; 1]), Err(e) if e.kind() == ErrorKind::WouldBlock);
    s.set_nonblocking(false).unwrap();
    open
}

#[test]
fn restart_on_the_same_port_right_after_sigkill() {
    let server = common::start("reuse", &[]);
    let port = server.port;
    // Leave server-side sockets behind: one connection that only connected, and one that
    // got as far as the server's hello (so it was surely accepted).
    let idle = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut talking = TcpStream::connect(("127.0.0.1", port)).unwrap();
    talking.write_all(&V1_0).unwrap();
    assert!(
        hello(&mut talking, Duration::from_secs(5)),
        "no hello before the kill"
    );
    let dir = server.sigkill_keep_dir();
    // The kernel closes the dead server's sockets: the one whose client now closes too
    // goes to TIME_WAIT, the one whose client stays goes to FIN_WAIT_2. Both keep the
    // port bound, and without SO_REUSEADDR on the listener a new server could not bind it
    // for about 60 s (tcp_fin_timeout, 2*MSL): a supervisor restarting a crashed server
    // would fail until then.
    drop(talking);
    let child = Command::new(env!("CARGO_BIN_EXE_rdb"))
        .args([
            "--directory",
            dir.to_str().unwrap(),
            "--driver-port",
            &port.to_string(),
        ])
        .stdout(Stdio::null())
        .spawn()
        .expect("restart rdb");
    // Dropping this kills the new server and removes the directory, however the test ends.
    let mut again = common::Server { child, port, dir };
    // A connection counts once it gets the hello: the dead server's listeners outlive it
    // by some milliseconds (its io_uring is torn down after the process is reaped), and
    // the kernel completes a TCP connect to them meanwhile.
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        if let Some(status) = again.child.try_wait().unwrap() {
            panic!("the restarted server exited ({status}): port {port} still taken?");
        }
        if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) {
            let _ = s.write_all(&V1_0);
            if hello(&mut s, Duration::from_millis(500)) {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the restarted server did not answer a connection within 2 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(100));
    assert!(
        again.child.try_wait().unwrap().is_none(),
        "the restarted server exited after listening"
    );
    drop(idle);
}

#[test]
fn connection_caps_close_extra_connections() {
    let server = common::start("caps", &["--max-connections-per-peer", "50"]);
    let port = server.port;
    // `start` probed the port with a connection of its own; let the server see it closed
    // and give its place back before counting.
    std::thread::sleep(Duration::from_millis(200));
    let connect = || {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        // A refused connection may already be closed: the write can fail.
        let _ = s.write_all(&V1_0);
        s
    };
    // The first 50 are admitted: each gets the hello, so the server holds all 50 before
    // the next ones arrive (which ones are refused would otherwise depend on the order
    // the cores accept them in).
    let mut admitted: Vec<TcpStream> = (0..50).map(|_| connect()).collect();
    for (i, s) in admitted.iter_mut().enumerate() {
        assert!(
            hello(s, Duration::from_secs(5)),
            "connection {i} of the first 50 got no hello"
        );
    }
    let mut extra: Vec<TcpStream> = (0..10).map(|_| connect()).collect();
    for (i, s) in extra.iter_mut().enumerate() {
        assert!(
            closed_within(s, Duration::from_secs(2)),
            "connection {} (past the cap of 50) was not closed within 2 s",
            50 + i
        );
    }
    // The admitted ones wait for the rest of their handshake (10 s); not cut by the cap.
    std::thread::sleep(Duration::from_secs(1));
    for (i, s) in admitted.iter_mut().enumerate() {
        assert!(open_now(s), "connection {i} of the first 50 was closed");
    }
    drop(extra);
    drop(admitted);
    // Their places come back once the server sees them closed: a new connection is
    // admitted and stays open.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut s = loop {
        let mut s = connect();
        if hello(&mut s, Duration::from_secs(2)) {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "no connection admitted after the crowd closed"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    std::thread::sleep(Duration::from_secs(1));
    assert!(open_now(&mut s), "the new connection was closed");
}
