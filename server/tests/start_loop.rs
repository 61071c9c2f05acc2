//! Start-up and shutdown latency: with both cores kept busy by other processes, a server
//! (on a fresh directory, then on one holding a table with an index) must answer a
//! driver query within 5 s of being spawned and exit cleanly within 2 s of SIGTERM, run
//! after run; an idle server must stop within a second of SIGTERM.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

const START_LIMIT: Duration = Duration::from_secs(5);
const STOP_LIMIT: Duration = Duration::from_secs(2);
const IDLE_STOP_LIMIT: Duration = Duration::from_secs(1);

/// The tests of this file run one at a time: the CPU hogs of one would slow down the
/// other's server and make its timing say nothing about the server.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    // A failed test poisons the lock; the other test still has to run.
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Processes killed by PID and reaped when dropped, so that a failing assertion leaves
/// no CPU hog or server running behind it.
struct Reaped(Vec<Child>);

impl Drop for Reaped {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A directory removed when dropped.
struct ScratchDir(PathBuf);

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// What each thread of process `pid` is doing (name, state, kernel wait channel,
/// syscall), for the message of a start that hangs.
fn threads_of(pid: u32) -> String {
    let mut out = String::new();
    for t in std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let p = t.path();
        let f = |n: &str| read_or_empty(&p.join(n)).trim().to_string();
        let state = f("stat")
            .split(") ")
            .nth(1)
            .unwrap_or("")
            .chars()
            .next()
            .unwrap_or('?');
        out += &format!(
            "  {} {:?} state {state} wchan {} syscall {}\n",
            t.file_name().to_string_lossy(),
            f("comm"),
            f("wchan"),
            f("syscall")
        );
    }
    out
}

fn read_or_empty(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

/// `drivers/start_probe.py`, started before the server so that the interpreter's own
/// start-up (slow with both cores busy) is not counted against the server.
struct Probe {
    child: Reaped,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    stderr: PathBuf,
}

impl Probe {
    fn spawn(port: u16, mode: Option<&str>, stderr: PathBuf) -> Probe {
        let mut child = Command::new("python3")
            .arg(common::tests_dir().join("drivers/start_probe.py"))
            .arg(port.to_string())
            .args(mode)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .expect("start the probe");
        let stdin = child.stdin.take();
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
        let probe = Probe {
            child: Reaped(vec![child]),
            stdin,
            lines,
            stderr,
        };
        let ready = probe.wait_for("ready", Instant::now() + Duration::from_secs(60), None);
        if let Err(why) = ready {
            panic!(
                "the probe did not start: {why}\n{}",
                read_or_empty(&probe.stderr)
            );
        }
        probe
    }

    /// Lets the probe connect (it retries until the server listens).
    fn go(&mut self) {
        let mut stdin = self.stdin.take().unwrap();
        writeln!(stdin, "go").unwrap();
    }

    /// Waits for the line `word` until `deadline`; gives up early when the server or
    /// the probe exits, saying which.
    fn wait_for(
        &self,
        word: &str,
        deadline: Instant,
        mut server: Option<&mut Child>,
    ) -> Result<(), String> {
        loop {
            match self.lines.recv_timeout(Duration::from_millis(10)) {
                Ok(line) if line == word || line.starts_with(&format!("{word} ")) => {
                    return Ok(());
                }
                Ok(_) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(format!("the probe exited before printing {word:?}"));
                }
                Err(RecvTimeoutError::Timeout) => {}
            }
            if let Some(s) = server.as_deref_mut() {
                if let Some(st) = s.try_wait().unwrap() {
                    return Err(format!("the server exited ({st}) before {word:?}"));
                }
            }
            if Instant::now() > deadline {
                return Err(format!("no {word:?} in time"));
            }
        }
    }

    fn finish(mut self) {
        let child = &mut self.child.0[0];
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(st) = child.try_wait().unwrap() {
                assert!(
                    st.success(),
                    "the probe failed ({st}):\n{}",
                    read_or_empty(&self.stderr)
                );
                return;
            }
            assert!(Instant::now() < deadline, "the probe did not exit");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

fn spawn_rdb(dir: &Path, port: u16, log: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_rdb"))
        .args([
            "--directory",
            dir.to_str().unwrap(),
            "--driver-port",
            &port.to_string(),
            "--cores",
            "2",
        ])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .expect("start rdb")
}

/// Sends SIGTERM and waits (polling, bounded by `limit`) for a successful exit; returns
/// how long the exit took.
fn sigterm_and_wait(child: &mut Child, limit: Duration, log: &Path) -> Duration {
    let t = Instant::now();
    // SAFETY: sending a signal to our own child process, which has not been reaped.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            let took = t.elapsed();
            assert!(
                st.success(),
                "exit status {st} after SIGTERM; server stderr:\n{}",
                read_or_empty(log)
            );
            assert!(
                took <= limit,
                "exiting took {took:?} after SIGTERM (limit {limit:?}); server stderr:\n{}",
                read_or_empty(log)
            );
            return took;
        }
        if t.elapsed() > limit {
            panic!(
                "the server did not exit within {limit:?} of SIGTERM; server stderr:\n{}",
                read_or_empty(log)
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Starts rdb on `dir`, requires a driver answer within START_LIMIT of the spawn, runs
/// the probe's `mode` to its end, then requires a clean exit within STOP_LIMIT of SIGTERM.
/// Returns (time to the answer, time to the exit).
fn start_and_stop(dir: &Path, log: &Path, mode: Option<&str>) -> (Duration, Duration) {
    // A fixed port for the run: the probe must know it before the server exists.
    let port = common::free_port();
    let mut probe = Probe::spawn(port, mode, log.with_extension("probe"));
    let t0 = Instant::now();
    let mut server = Reaped(vec![spawn_rdb(dir, port, log)]);
    probe.go();
    if let Err(why) = probe.wait_for("answered", t0 + START_LIMIT, Some(&mut server.0[0])) {
        panic!(
            "no answer to r.expr(1) within {START_LIMIT:?} of the spawn on port {port} \
             ({why}); server stderr:\n{}\nprobe stderr:\n{}\nserver threads:\n{}",
            read_or_empty(log),
            read_or_empty(&probe.stderr),
            threads_of(server.0[0].id())
        );
    }
    let started = t0.elapsed();
    if let Some(m) = mode {
        let done = if m == "populate" {
            "populated"
        } else {
            "checked"
        };
        let until = Instant::now() + Duration::from_secs(300);
        if let Err(why) = probe.wait_for(done, until, Some(&mut server.0[0])) {
            panic!(
                "{m}: {why}; server stderr:\n{}\nprobe stderr:\n{}",
                read_or_empty(log),
                read_or_empty(&probe.stderr)
            );
        }
    }
    // The probe's connection is closed before the stop: an idle server is measured.
    probe.finish();
    let stopped = sigterm_and_wait(&mut server.0[0], STOP_LIMIT, log);
    (started, stopped)
}

fn hog(core: &str) -> Child {
    Command::new("taskset")
        .args(["-c", core, "sh", "-c", "while :; do :; done"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start a CPU hog (taskset)")
}

#[test]
fn starts_serve_quickly_with_both_cores_busy() {
    let _serial = serial();
    let runs: usize = std::env::var("RDB_START_LOOPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(40);
    let logs = ScratchDir(common::scratch_dir("start-logs"));
    std::fs::create_dir_all(&logs.0).unwrap();

    // The populated directory is filled before the hogs start: only starts and stops are
    // measured under load.
    let populated = ScratchDir(common::scratch_dir("start-full"));
    start_and_stop(&populated.0, &logs.0.join("populate.log"), Some("populate"));

    // Pushed one by one: the guard already holds the first if the second fails to start.
    let mut hogs = Reaped(Vec::new());
    hogs.0.push(hog("0"));
    hogs.0.push(hog("1"));
    let mut slowest_start = (Duration::ZERO, 0);
    let mut slowest_stop = (Duration::ZERO, 0);
    for run in 0..runs {
        let log = logs.0.join(format!("run{run}.log"));
        let (started, stopped) = if run < runs / 2 {
            let fresh = ScratchDir(common::scratch_dir("start-fresh"));
            start_and_stop(&fresh.0, &log, None)
        } else {
            start_and_stop(&populated.0, &log, Some("check"))
        };
        println!("run {run}: answered after {started:?}, exited {stopped:?} after SIGTERM");
        if started > slowest_start.0 {
            slowest_start = (started, run);
        }
        if stopped > slowest_stop.0 {
            slowest_stop = (stopped, run);
        }
    }
    println!(
        "{runs} runs with both cores busy: slowest start {:?} (run {}), slowest stop {:?} (run {})",
        slowest_start.0, slowest_start.1, slowest_stop.0, slowest_stop.1
    );
}

#[test]
fn an_idle_server_stops_within_a_second() {
    let _serial = serial();
    let mut server = common::start("idle-stop", &["--cores", "2"]);
    std::thread::sleep(Duration::from_secs(3));
    // The server's stderr goes to the test's own (common::start inherits it).
    let took = sigterm_and_wait(&mut server.child, IDLE_STOP_LIMIT, Path::new(""));
    println!("an idle server exited {took:?} after SIGTERM");
}
