//! Kill test: a process writes with hard durability on real files and is killed with
//! SIGKILL at random moments; after each kill, recovery must hold every acknowledged key
//! and nothing nobody wrote. 30 kills by default; `RDB_KILL_ROUNDS=500` for a soak.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[test]
fn every_acknowledged_write_survives_sigkill() {
    let rounds: u64 = std::env::var("RDB_KILL_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    let dir = std::env::temp_dir().join(format!("rdb-kill-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let acked_file = dir.join("acked.txt");
    let acked = Arc::new(Mutex::new(Vec::<u64>::new()));
    let mut seed = 0x2545_f491_4f6c_dd1du64 ^ std::process::id() as u64;
    let mut first = 0u64;
    let mut total_acked = 0usize;
    for round in 0..rounds {
        let mut child = Command::new(env!("CARGO_BIN_EXE_engine_kill_writer"))
            .args(["write", dir.to_str().unwrap(), &first.to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let a2 = acked.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if let Ok(k) = line.trim().parse::<u64>() {
                    a2.lock().unwrap().push(k);
                }
            }
        });
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        std::thread::sleep(Duration::from_millis(30 + seed % 250));
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            let _ = std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err);
            panic!("round {round}: writer exited early ({status}): {err}");
        }
        child.kill().unwrap();
        child.wait().unwrap();
        reader.join().unwrap();
        let keys = acked.lock().unwrap().clone();
        total_acked = keys.len();
        std::fs::write(
            &acked_file,
            keys.iter().map(|k| format!("{k}\n")).collect::<String>(),
        )
        .unwrap();
        let v = Command::new(env!("CARGO_BIN_EXE_engine_kill_writer"))
            .args([
                "verify",
                dir.to_str().unwrap(),
                acked_file.to_str().unwrap(),
            ])
            .output()
            .unwrap();
        assert!(
            v.status.success(),
            "round {round}: {}{}",
            String::from_utf8_lossy(&v.stdout),
            String::from_utf8_lossy(&v.stderr)
        );
        // New keys each round; keys in flight at the kill may or may not exist.
        first = keys.iter().max().copied().unwrap_or(first) + 1000;
    }
    assert!(
        total_acked as u64 > rounds * 10,
        "only {total_acked} writes acknowledged in {rounds} rounds"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
