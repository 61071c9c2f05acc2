//! Repeated SIGKILL through the official Python driver: each iteration restarts the
//! server on the same directory, verifies the previous iteration (every acknowledged
//! write stored with its value, the secondary index on `g` agreeing with a full scan, a
//! feed resumed from a token taken before the writes yielding each stored write exactly
//! once, in order per document), then four connections write with hard durability until
//! the test kills the server 0.3–1.0 s later.

mod common;

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

/// Iterations by default; `RDB_KILL_LOOPS` overrides it (the script handles 100 and more).
const DEFAULT_LOOPS: usize = 20;

fn script() -> String {
    common::tests_dir()
        .join("drivers/kill_loop.py")
        .to_string_lossy()
        .into_owned()
}

/// The delays before each kill come from this seed; `RDB_KILL_SEED` repeats a run's.
fn seed() -> u64 {
    std::env::var("RDB_KILL_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| RandomState::new().build_hasher().finish())
}

/// xorshift64*: enough to spread the kill delays, and needs no crate.
fn next(state: &mut u64) -> u64 {
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    state.wrapping_mul(0x2545_F491_4F6C_DD1D)
}

/// One run of `kill_loop.py iterate`: its stdout lines, read by a thread, and its stderr
/// in a file; killed by PID and reaped when dropped, so that a failing assertion does not
/// leave it running.
struct Script {
    child: Child,
    lines: mpsc::Receiver<String>,
    out: String,
    err: PathBuf,
    context: String,
}

impl Script {
    fn spawn(port: u16, state: &Path, it: usize) -> Script {
        let err = state.join(format!("iterate-{it}.err"));
        let mut child = Command::new("python3")
            .arg(script())
            .args([
                &port.to_string(),
                "iterate",
                state.to_str().unwrap(),
                &it.to_string(),
            ])
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&err).unwrap())
            .spawn()
            .expect("start kill_loop.py");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Script {
            child,
            lines,
            out: String::new(),
            err,
            context: format!("iteration {it} (state in {})", state.display()),
        }
    }

    /// Collects output until the line `word`, or with None until the script closes its
    /// stdout; fails after `secs`.
    fn read_until(&mut self, word: Option<&str>, secs: u64) {
        let awaited = match word {
            Some(w) => format!("{w:?}"),
            None => "the end of its output".to_string(),
        };
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.out.push_str(&line);
                    self.out.push('\n');
                    if Some(line.as_str()) == word {
                        return;
                    }
                }
                Err(RecvTimeoutError::Disconnected) if word.is_none() => return,
                Err(RecvTimeoutError::Disconnected) => {
                    self.fail(&format!("the script ended before {awaited}"))
                }
                Err(RecvTimeoutError::Timeout) => {
                    self.fail(&format!("no {awaited} within {secs} s"))
                }
            }
        }
    }

    /// Waits for the script to exit (it must, once its server is gone) and requires
    /// success: it fails on any write error other than the lost connection.
    fn finish(&mut self) {
        self.read_until(None, 60);
        let deadline = Instant::now() + Duration::from_secs(10);
        let status = loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                break st;
            }
            if Instant::now() > deadline {
                self.fail("the script did not exit");
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        if !status.success() {
            self.fail(&format!("the script failed ({status})"));
        }
    }

    fn fail(&mut self, why: &str) -> ! {
        let _ = self.child.kill();
        let _ = self.child.wait();
        panic!(
            "{}: {why}\n{}{}",
            self.context,
            self.out,
            std::fs::read_to_string(&self.err).unwrap_or_default()
        );
    }
}

impl Drop for Script {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn repeated_sigkill_loses_no_acknowledged_write_index_entry_or_change() {
    let loops: usize = std::env::var("RDB_KILL_LOOPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_LOOPS);
    assert!(loops >= 1, "RDB_KILL_LOOPS must be at least 1");
    let seed = seed();
    println!("kill loop: {loops} iterations, RDB_KILL_SEED={seed}");
    let mut rng = seed | 1; // xorshift never leaves 0

    let mut server = common::start("kill-loop", &["--cores", "2"]);
    // The script's files (its log of acknowledged writes, the tokens, the validated
    // values) live beside the data directory: they must outlive every server.
    let state = server.dir.with_extension("state");
    let _ = std::fs::remove_dir_all(&state);
    std::fs::create_dir_all(&state).unwrap();
    let began = Instant::now();
    let mut acked = 0;
    for it in 0..loops {
        let mut run = Script::spawn(server.port, &state, it);
        // The script first verifies the previous iteration, which takes longer as the
        // table grows; the kill is timed from the moment the writers start.
        run.read_until(Some("writing"), 600);
        let delay = Duration::from_millis(300 + next(&mut rng) % 701);
        std::thread::sleep(delay);
        let dir = server.sigkill_keep_dir();
        run.finish();
        println!("iteration {it}: killed {delay:?} after the writers started");
        print!("{}", run.out);
        // "acked N (I inserts, U updates)", printed once the writers have stopped.
        acked += run
            .out
            .lines()
            .filter_map(|l| {
                l.strip_prefix("acked ")?
                    .split(' ')
                    .next()?
                    .parse::<usize>()
                    .ok()
            })
            .sum::<usize>();
        server = common::start_in("kill-loop", &dir, &["--cores", "2"]);
    }

    let out = common::run_python(
        "kill_loop.py",
        &[
            &server.port.to_string(),
            "verify",
            state.to_str().unwrap(),
            &(loops - 1).to_string(),
        ],
        600,
    );
    print!("{out}");
    println!(
        "{loops} iterations, {acked} acknowledged writes, in {:?}",
        began.elapsed()
    );
    // Without acknowledged writes the checks above would have nothing to check.
    assert!(acked > 0, "no write was acknowledged in {loops} iterations");
    let _ = std::fs::remove_dir_all(&state);
}
