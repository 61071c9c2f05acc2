//! A full disk: writes fail, and once space is free they are accepted again without a
//! restart (the failed shard is reopened from disk; no failed fsync is retried).
//! Needs root to mount a small loop file system; skipped (with a note) otherwise.

mod common;

use std::process::Command;

/// Mounts a fresh 200 MiB ext4 file system at `dir`; false if this machine cannot.
fn mount_small_fs(img: &std::path::Path, dir: &std::path::Path) -> bool {
    let ok = |c: &mut Command| c.status().map(|s| s.success()).unwrap_or(false);
    std::fs::create_dir_all(dir).unwrap();
    ok(Command::new("truncate").args(["-s", "200M"]).arg(img))
        && ok(Command::new("mkfs.ext4").arg("-q").arg(img))
        && ok(Command::new("mount").args(["-o", "loop"]).arg(img).arg(dir))
}

struct Unmount(std::path::PathBuf, std::path::PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
        let _ = std::fs::remove_file(&self.1);
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn writes_come_back_after_a_full_disk_is_freed() {
    let base = common::scratch_dir("full-disk");
    let mount = base.join("mnt");
    let img = base.with_extension("img");
    if !mount_small_fs(&img, &mount) {
        eprintln!("skipped: cannot mount a loop file system here (needs root and mkfs.ext4)");
        let _ = std::fs::remove_file(&img);
        return;
    }
    let _unmount = Unmount(mount.clone(), img);
    let data = mount.join("data");
    let server = common::start_in(
        "full-disk",
        &data,
        &[
            "--cores",
            "1",
            "--wal-segment-mb",
            "8",
            "--memtable-mb",
            "8",
        ],
    );
    common::run_python(
        "full_disk.py",
        &[&server.port.to_string(), mount.to_str().unwrap()],
        120,
    );
    drop(server);
}
