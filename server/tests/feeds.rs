//! Resumable changefeeds through the official Python driver: resuming after a
//! disconnect, after SIGKILL and restart (every acknowledged write exactly once, in order
//! per document), and the error for a token whose changes are no longer retained.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Acknowledged updates before the server is killed.
const KILL_AFTER_ACKS: usize = 300;

fn script() -> String {
    common::tests_dir()
        .join("drivers/feed_resume.py")
        .to_string_lossy()
        .into_owned()
}

fn run(port: u16, args: &[&str]) -> String {
    let port = port.to_string();
    let mut all = vec![port.as_str()];
    all.extend_from_slice(args);
    common::run_python("feed_resume.py", &all, 300)
}

#[test]
fn resume_after_disconnect() {
    let server = common::start("feed-dis", &["--cores", "2"]);
    let out = run(server.port, &["disconnect"]);
    assert!(out.contains("resume after disconnect: ok"), "{out}");
}

#[test]
fn unions_of_feeds_interleave() {
    let server = common::start("feed-union", &["--cores", "2"]);
    let out = run(server.port, &["union"]);
    assert!(out.contains("union of feeds: ok"), "{out}");
}

#[test]
fn resume_after_sigkill_gets_every_acknowledged_write_once() {
    let server = common::start("feed-kill", &["--cores", "2"]);
    let port = server.port;
    run(port, &["setup"]);
    let dir = server.dir.clone();
    let state = dir.with_extension("feed");
    let acked_path = dir.with_extension("acked");
    let _ = std::fs::remove_file(&state);
    let mut stream = Command::new("python3")
        .arg(script())
        .args([&port.to_string(), "stream", state.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the stream");
    let stdout = stream.stdout.take().unwrap();
    let mut acked = std::fs::File::create(&acked_path).unwrap();
    let mut n = 0;
    let mut server = Some(server);
    let mut kept = None;
    let deadline = Instant::now() + Duration::from_secs(120);
    for line in BufReader::new(stdout).lines() {
        let Ok(line) = line else { break };
        if !line.starts_with("acked ") {
            continue;
        }
        writeln!(acked, "{line}").unwrap();
        n += 1;
        if n >= KILL_AFTER_ACKS {
            if let Some(s) = server.take() {
                kept = Some(s.sigkill_keep_dir());
            }
            break;
        }
        assert!(Instant::now() < deadline, "the writer is too slow");
    }
    let _ = stream.kill();
    let _ = stream.wait();
    drop(acked);
    let dir = kept.expect("the server was killed mid-stream");
    let server = common::start_in("feed-kill", &dir, &["--cores", "2"]);
    let out = run(
        server.port,
        &[
            "check",
            state.to_str().unwrap(),
            acked_path.to_str().unwrap(),
        ],
    );
    assert!(out.contains("resume after restart: ok"), "{out}");
    let _ = std::fs::remove_file(&state);
    let _ = std::fs::remove_file(&acked_path);
}

#[test]
fn old_tokens_expire_unless_the_table_retains_its_log() {
    let small = [
        "--cores",
        "1",
        "--wal-segment-mb",
        "1",
        "--memtable-mb",
        "1",
    ];
    let server = common::start("feed-exp", &small);
    let out = run(server.port, &["expired", "0"]);
    assert!(
        out.contains("expired:") && out.contains("no longer retained"),
        "{out}"
    );
    let out = run(server.port, &["expired", "64"]);
    assert!(out.contains("resumed 12000"), "{out}");
}
