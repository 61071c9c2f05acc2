//! rdb-inspect against a real data directory written by the engine on DMA files: listing,
//! dumping, finding, verifying (clean, and with injected corruption), the lock check, and
//! that it never modifies a file.

use rdb_engine::{Durability, Shard, ShardOptions, WriteBatch};
use rdb_io::fs::DmaFs;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;

fn make_data_dir(dir: &Path) {
    let d = dir.to_path_buf();
    let cfg = rdb_io::RuntimeConfig {
        cores: 1,
        io_memory_bytes: 256 * 1024,
        pin: false,
    };
    rdb_io::run_per_core(&cfg, move |_| {
        let d = d.clone();
        async move {
            let fs = DmaFs::new(&d).await.unwrap();
            let opts = ShardOptions {
                memtable_bytes_max: 16 * 1024,
                ..Default::default()
            };
            let s = Shard::open(fs, &d.join("shard"), opts).await.unwrap();
            for i in 0..2000u32 {
                let mut b = WriteBatch::new();
                b.put(format!("key{i:05}"), format!("value {i}"));
                s.write(b, Durability::Soft).await.unwrap();
            }
            s.flush().await.unwrap();
            for i in 0..50u32 {
                s.put(
                    format!("late{i}").as_bytes(),
                    b"in the WAL only",
                    Durability::Hard,
                )
                .await
                .unwrap();
            }
        }
    })
    .unwrap();
}

fn inspect(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_rdb-inspect"))
        .args(args)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().filter_map(|e| e.ok()) {
        let p = e.path();
        if p.is_dir() {
            out.extend(snapshot(&p));
        } else {
            out.push((p.clone(), std::fs::read(&p).unwrap()));
        }
    }
    out.sort();
    out
}

#[test]
fn inspects_and_verifies_a_real_data_directory() {
    let dir = std::env::temp_dir().join(format!("rdb-inspect-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    make_data_dir(&dir);
    let d = dir.to_str().unwrap();
    let shard = dir.join("shard");
    let sh = shard.to_str().unwrap();
    let before = snapshot(&dir);

    let (ok, out) = inspect(&["ls", d]);
    assert!(
        ok && out.contains("L1: ") && out.contains(".sst") && out.contains("wal"),
        "{out}"
    );
    let (ok, out) = inspect(&["verify", d]);
    assert!(ok && out.contains("no problems"), "{out}");
    let (ok, out) = inspect(&["find", sh, "key01234"]);
    assert!(ok && out.contains("\"value 1234\""), "{out}");
    let (ok, out) = inspect(&["find", sh, "late7"]);
    assert!(ok && out.contains("WAL lsn"), "{out}");
    let (ok, out) = inspect(&["wal", sh, "--limit", "3"]);
    assert!(ok && out.contains("put"), "{out}");
    let (ok, out) = inspect(&["manifest", sh]);
    assert!(ok && out.contains("(current)"), "{out}");
    // Keys were written in order, so the first flushed file holds the smallest ones.
    let sst = std::fs::read_dir(&shard)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "sst"))
        .min()
        .unwrap();
    let (ok, out) = inspect(&[
        "sst",
        sst.to_str().unwrap(),
        "--start",
        "key00010",
        "--end",
        "key00012",
    ]);
    assert!(
        ok && out.contains("key00011") && !out.contains("key00013"),
        "{out}"
    );
    assert_eq!(snapshot(&dir), before, "rdb-inspect modified the directory");

    // A running server's lock is respected.
    let lock = std::fs::File::create(dir.join("LOCK")).unwrap();
    // SAFETY: flock on a descriptor we own.
    assert_eq!(
        unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) },
        0
    );
    let (ok, out) = inspect(&["verify", d]);
    assert!(!ok && out.contains("locked"), "{out}");
    let (ok, _) = inspect(&["--allow-locked", "verify", d]);
    assert!(ok);
    drop(lock);

    // Corruption in an SST data block: reported with the file and offset.
    let clean = std::fs::read(&sst).unwrap();
    let mut bad = clean.clone();
    bad[100] ^= 0x20;
    std::fs::write(&sst, &bad).unwrap();
    let (ok, out) = inspect(&["verify", d]);
    assert!(
        !ok && out.contains(sst.file_name().unwrap().to_str().unwrap()) && out.contains("offset"),
        "{out}"
    );
    std::fs::write(&sst, &clean).unwrap();

    // Corruption in the middle of the WAL.
    let wal_dir = shard.join("wal");
    let seg = std::fs::read_dir(&wal_dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .max()
        .unwrap();
    let clean = std::fs::read(&seg).unwrap();
    let mut bad = clean.clone();
    bad[60] ^= 1;
    std::fs::write(&seg, &bad).unwrap();
    let (ok, out) = inspect(&["verify", d]);
    assert!(
        !ok && out.contains(".wal") && out.contains("offset"),
        "{out}"
    );
    std::fs::write(&seg, &clean).unwrap();
    let (ok, _) = inspect(&["verify", d]);
    assert!(ok);
    let _ = std::fs::remove_dir_all(&dir);
}
