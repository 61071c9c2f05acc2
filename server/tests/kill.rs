//! Crash test through the official Python driver: a million documents are inserted with
//! hard durability by several connections; the server is killed with SIGKILL in the
//! middle of the stream, restarted, and every acknowledged batch must be there, intact.
//! Then the rest is written and the table must hold exactly the million.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const TOTAL: usize = 1_000_000;
const KILL_AFTER_DOCS: usize = 500_000;
const WRITERS: usize = 4;

fn script() -> String {
    common::tests_dir()
        .join("drivers/kill_writer.py")
        .to_string_lossy()
        .into_owned()
}

fn write_acked(path: &std::path::Path, acked: &[(usize, usize)]) {
    let mut f = std::fs::File::create(path).unwrap();
    for (s, e) in acked {
        writeln!(f, "{s} {e}").unwrap();
    }
}

fn verify(port: u16, acked_file: &std::path::Path, total: Option<usize>) {
    let mut cmd = Command::new("python3");
    cmd.arg(script())
        .arg(port.to_string())
        .arg("verify")
        .arg(acked_file);
    if let Some(t) = total {
        cmd.arg(t.to_string());
    }
    let out = common::output_within(&mut cmd, 600);
    assert!(
        out.status.success(),
        "verification failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn acknowledged_documents_survive_sigkill() {
    let server = common::start("kill", &["--cores", "2"]);
    let port = server.port;
    let mut writer = Command::new("python3")
        .arg(script())
        .args([
            &port.to_string(),
            "write",
            &TOTAL.to_string(),
            &WRITERS.to_string(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the writer");
    let stdout = writer.stdout.take().unwrap();
    let mut acked = Vec::new();
    let mut docs = 0;
    let mut server = Some(server);
    let mut dir = None;
    let deadline = Instant::now() + Duration::from_secs(900);
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap();
        let mut it = line.split_whitespace().skip(1);
        let s: usize = it.next().unwrap().parse().unwrap();
        let e: usize = it.next().unwrap().parse().unwrap();
        acked.push((s, e));
        docs += e - s;
        if docs >= KILL_AFTER_DOCS {
            if let Some(srv) = server.take() {
                // Mid-stream: the other writers have batches in flight right now.
                dir = Some(srv.sigkill_keep_dir());
            }
        }
        assert!(Instant::now() < deadline, "the writer is too slow");
    }
    let status = writer.wait().unwrap();
    assert!(status.success(), "the writer failed: {status}");
    let dir = dir.expect("the server was killed mid-stream");
    assert!(
        (KILL_AFTER_DOCS..TOTAL).contains(&docs),
        "acknowledged {docs}"
    );

    let server = common::start_in("kill", &dir, &["--cores", "2"]);
    let acked_file = dir.with_extension("acked");
    write_acked(&acked_file, &acked);
    verify(server.port, &acked_file, None);

    // Finish the job after the crash: only the batches never acknowledged are resent.
    let out = common::output_within(
        Command::new("python3").arg(script()).args([
            &server.port.to_string(),
            "write",
            &TOTAL.to_string(),
            &WRITERS.to_string(),
            acked_file.to_str().unwrap(),
        ]),
        900,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let all: Vec<(usize, usize)> = (0..TOTAL)
        .step_by(1000)
        .map(|s| (s, (s + 1000).min(TOTAL)))
        .collect();
    write_acked(&acked_file, &all);
    verify(server.port, &acked_file, Some(TOTAL));
    let _ = std::fs::remove_file(&acked_file);
}
