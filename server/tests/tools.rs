//! rdb-bench and rdb-inspect against a real server and the data directory it wrote:
//! a load and a YCSB mix through the wire protocol, then the offline listing, document
//! dump and verification, and verification of a copy with a corrupted file.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

/// A workspace binary beside `rdb` (built by `cargo test --workspace`; built here if a
/// narrower `cargo test` left it out).
fn tool(name: &str) -> PathBuf {
    let rdb = PathBuf::from(env!("CARGO_BIN_EXE_rdb"));
    let path = rdb.with_file_name(name);
    if !path.exists() {
        let release = rdb.components().any(|c| c.as_os_str() == "release");
        let mut cmd = Command::new(env!("CARGO"));
        cmd.args(["build", "-q", "-p", name]);
        if release {
            cmd.arg("--release");
        }
        let out = common::output_within(&mut cmd, 900);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(path.exists(), "{} is missing", path.display());
    path
}

fn bench(port: u16, args: &[&str]) -> serde_json::Value {
    let out = common::output_within(
        Command::new(tool("rdb-bench"))
            .args(["--port", &port.to_string(), "--json"])
            .args(args),
        300,
    );
    assert!(
        out.status.success(),
        "rdb-bench {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("rdb-bench --json prints JSON")
}

fn inspect(args: &[&str]) -> (bool, String) {
    let out = common::output_within(Command::new(tool("rdb-inspect")).args(args), 120);
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

#[test]
fn bench_and_inspect_a_real_server() {
    let server = common::start("tools", &["--cores", "1"]);
    let port = server.port;

    // A table with two secondary indexes first, so its writes open the WAL.
    let ix = bench(
        port,
        &[
            "--setup",
            "--table",
            "ix",
            "--indexes",
            "2",
            "--workload",
            "load",
            "--keys",
            "2000",
            "--batch",
            "500",
        ],
    );
    assert_eq!(ix["docs"], 2000, "{ix}");
    for w in ["get-all", "order-limit"] {
        let r = bench(
            port,
            &[
                "--table",
                "ix",
                "--workload",
                w,
                "--keys",
                "2000",
                "--duration",
                "1",
                "--warmup",
                "0.2",
            ],
        );
        assert!(r["ops"].as_u64().unwrap() > 0, "{r}");
        assert_eq!(r["errors"], 0, "{r}");
    }

    let load = bench(
        port,
        &[
            "--setup",
            "--workload",
            "load",
            "--keys",
            "20000",
            "--batch",
            "500",
            "--connections",
            "2",
        ],
    );
    assert_eq!(load["docs"], 20000, "{load}");
    assert_eq!(load["errors"], 0, "{load}");
    // Changefeeds: every write reaches every feed.
    let cf = bench(
        port,
        &[
            "--setup",
            "--table",
            "cf",
            "--workload",
            "changefeed",
            "--feeds",
            "3",
            "--rate",
            "200",
            "--durability",
            "soft",
            "--duration",
            "1",
            "--warmup",
            "0.2",
        ],
    );
    assert!(cf["writes"].as_u64().unwrap() > 50, "{cf}");
    assert!(
        cf["changes_received"].as_u64().unwrap() >= 3 * cf["writes"].as_u64().unwrap() - 30,
        "{cf}"
    );
    for w in ["ycsb-a", "scan"] {
        let r = bench(
            port,
            &[
                "--workload",
                w,
                "--keys",
                "20000",
                "--duration",
                "1",
                "--warmup",
                "0.2",
                "--connections",
                "2",
            ],
        );
        assert!(r["ops"].as_u64().unwrap() > 0, "{r}");
        assert_eq!(r["errors"], 0, "{r}");
    }

    // Offline: a clean shutdown first (SIGTERM), then the tools on the directory.
    // SAFETY: sending a signal to our own child.
    unsafe { libc::kill(server.child.id() as i32, libc::SIGTERM) };
    let mut server = server;
    let status = server.child.wait().unwrap();
    assert!(status.success(), "rdb exited with {status}");
    let dir = server.sigkill_keep_dir();
    let d = dir.to_str().unwrap();
    let (ok, out) = inspect(&["ls", d]);
    assert!(
        ok && out.contains("shard-0") && out.contains("wal"),
        "{out}"
    );
    let (ok, out) = inspect(&["verify", d]);
    assert!(ok && out.contains("no problems"), "{out}");
    // Documents are shown as JSON.
    let shard = dir.join("shard-0");
    let (ok, out) = inspect(&["wal", shard.to_str().unwrap(), "--limit", "12"]);
    assert!(ok && out.contains("\"pad\":\"xxx"), "{out}");
    // Index entries are shown as their value and primary key.
    assert!(out.contains("index entry: value"), "{out}");

    // A copy with one flipped byte in the newest WAL segment: verify names it.
    let copy = dir.with_extension("corrupt");
    let _ = std::fs::remove_dir_all(&copy);
    copy_dir(&dir, &copy);
    let wal = std::fs::read_dir(copy.join("shard-0").join("wal"))
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .max()
        .expect("a WAL segment");
    let mut bytes = std::fs::read(&wal).unwrap();
    let at = 64 + 100;
    bytes[at] ^= 0x40;
    std::fs::write(&wal, &bytes).unwrap();
    let (ok, out) = inspect(&["verify", copy.to_str().unwrap()]);
    assert!(!ok, "verify missed the damage: {out}");
    let name = wal.file_name().unwrap().to_str().unwrap();
    assert!(out.contains(name) && out.contains("offset"), "{out}");
    let _ = std::fs::remove_dir_all(&copy);
    let _ = std::fs::remove_dir_all(&dir);
}
