//! Starts the real `rdb` binary on loopback for integration tests.

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Server {
    pub child: Child,
    #[allow(dead_code)] // not every test binary that includes this module uses it
    pub port: u16,
    pub dir: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if !self.dir.as_os_str().is_empty() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

impl Server {
    /// Kills the server with SIGKILL and keeps its data directory for a restart.
    #[allow(dead_code)] // not every test binary that includes this module uses it
    pub fn sigkill_keep_dir(mut self) -> PathBuf {
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::mem::take(&mut self.dir)
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn scratch_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "rdb-it-{tag}-{}-{}",
        std::process::id(),
        free_port()
    ));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// Starts rdb with `extra` arguments and waits until it accepts connections. Tests run
/// in parallel, so a port picked as free can be taken by another test's server before
/// ours binds it: then ours exits, and we retry on another port.
#[allow(dead_code)] // not every test binary that includes this module uses it
pub fn start(tag: &str, extra: &[&str]) -> Server {
    start_with(tag, None, extra)
}

/// Starts rdb on an existing data directory (a restart).
#[allow(dead_code)] // not every test binary that includes this module uses it
pub fn start_in(tag: &str, dir: &std::path::Path, extra: &[&str]) -> Server {
    start_with(tag, Some(dir), extra)
}

fn start_with(tag: &str, existing: Option<&std::path::Path>, extra: &[&str]) -> Server {
    for _ in 0..5 {
        let port = free_port();
        let dir = existing.map_or_else(|| scratch_dir(tag), |d| d.to_path_buf());
        let mut child = Command::new(env!("CARGO_BIN_EXE_rdb"))
            .args([
                "--directory",
                dir.to_str().unwrap(),
                "--driver-port",
                &port.to_string(),
            ])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start rdb");
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut listening = false;
        while Instant::now() < deadline {
            if child.try_wait().unwrap().is_some() {
                break;
            }
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                // Make sure the listener is ours, not another test's server.
                std::thread::sleep(Duration::from_millis(50));
                listening = child.try_wait().unwrap().is_none();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if listening {
            return Server { child, port, dir };
        }
        let _ = child.kill();
        let _ = child.wait();
        if existing.is_none() {
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
    panic!("rdb did not start listening after 5 attempts");
}

/// Runs a command to completion, failing the test instead of hanging past `secs`. Its
/// output is drained while it runs, so a chatty command cannot block on a full pipe.
#[allow(dead_code)] // not every test binary that includes this module uses it
pub fn output_within(cmd: &mut Command, secs: u64) -> std::process::Output {
    use std::io::Read;
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = r.read_to_end(&mut buf);
            buf
        })
    };
    let out = drain(Box::new(child.stdout.take().unwrap()));
    let err = drain(Box::new(child.stderr.take().unwrap()));
    let deadline = Instant::now() + Duration::from_secs(secs);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("command did not finish within {secs} s");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    std::process::Output {
        status,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    }
}
#[allow(dead_code)] // not every test binary that includes this module uses it
pub fn tests_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests")
}

/// Runs `drivers/<script>` with `python3` and the arguments, within `secs`; fails the
/// test (with the script's output) unless it exits 0, and returns its stdout and stderr.
#[allow(dead_code)] // not every test binary that includes this module uses it
pub fn run_python(script: &str, args: &[&str], secs: u64) -> String {
    let out = output_within(
        Command::new("python3")
            .arg(tests_dir().join("drivers").join(script))
            .args(args),
        secs,
    );
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{script} {args:?} failed: {text}");
    text
}
