//! Crash test for secondary indexes, through the official Python driver: a table with
//! three indexes is changed by several connections (inserts, updates of indexed fields,
//! deletes) while a fourth index is being built; the server is killed with SIGKILL
//! mid-stream and restarted. Every index must then agree exactly with a recomputation
//! from the documents, and the interrupted build must finish.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Writes acknowledged after the fourth index was created, before the kill.
const KILL_AFTER_WRITES: usize = 20;
const WRITERS: usize = 4;

fn script() -> String {
    common::tests_dir()
        .join("drivers/index_writer.py")
        .to_string_lossy()
        .into_owned()
}

#[test]
fn indexes_match_their_documents_after_sigkill() {
    let server = common::start("ixkill", &["--cores", "2"]);
    let port = server.port;
    let mut writer = Command::new("python3")
        .arg(script())
        .args([&port.to_string(), "write", &WRITERS.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the writer");
    let stdout = writer.stdout.take().unwrap();
    let mut server = Some(server);
    let mut dir = None;
    let mut late_created = false;
    let mut after_late = 0;
    let deadline = Instant::now() + Duration::from_secs(600);
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap();
        if line == "late-created" {
            late_created = true;
        } else if late_created {
            after_late += 1;
        }
        if after_late >= KILL_AFTER_WRITES {
            if let Some(srv) = server.take() {
                dir = Some(srv.sigkill_keep_dir());
            }
        }
        assert!(Instant::now() < deadline, "the writer is too slow");
    }
    let status = writer.wait().unwrap();
    assert!(status.success(), "the writer failed: {status}");
    let dir = dir.expect("the server was killed mid-stream");

    let server = common::start_in("ixkill", &dir, &["--cores", "2"]);
    let out = common::output_within(
        Command::new("python3")
            .arg(script())
            .args([&server.port.to_string(), "verify"]),
        600,
    );
    assert!(
        out.status.success(),
        "verification failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
