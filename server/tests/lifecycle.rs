//! Process-level behaviour of the server: directory lock, clean shutdown on signals.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

#[test]
fn second_server_on_same_directory_refuses_to_start() {
    let s = common::start("lock", &[]);
    let out = common::output_within(
        Command::new(env!("CARGO_BIN_EXE_rdb")).args([
            "--directory",
            s.dir.to_str().unwrap(),
            "--driver-port",
            &common::free_port().to_string(),
        ]),
        20,
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("in use by another rdb server"), "{err}");
}

#[test]
fn sigterm_and_sigint_shut_down_cleanly() {
    for sig in [libc::SIGTERM, libc::SIGINT] {
        let mut s = common::start("sig", &[]);
        // SAFETY: sending a signal to our own child process.
        unsafe { libc::kill(s.child.id() as i32, sig) };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = s.child.try_wait().unwrap() {
                assert!(
                    status.success(),
                    "exit status {status:?} after signal {sig}"
                );
                break;
            }
            assert!(
                Instant::now() < deadline,
                "server did not exit after signal {sig}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        // The lock is released: a new server starts on the same directory.
        let port = common::free_port();
        let mut again = Command::new(env!("CARGO_BIN_EXE_rdb"))
            .args([
                "--directory",
                s.dir.to_str().unwrap(),
                "--driver-port",
                &port.to_string(),
            ])
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(again.try_wait().unwrap().is_none(), "restart failed");
            assert!(Instant::now() < deadline, "restart did not listen");
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = again.kill();
        let _ = again.wait();
    }
}

#[test]
fn busy_port_is_reported() {
    let s = common::start("busy", &[]);
    let out = common::output_within(
        Command::new(env!("CARGO_BIN_EXE_rdb")).args([
            "--directory",
            common::scratch_dir("busy2").to_str().unwrap(),
            "--driver-port",
            &s.port.to_string(),
        ]),
        20,
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot listen"));
}
