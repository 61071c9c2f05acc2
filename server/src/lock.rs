//! The data directory lock: one server per directory.

use std::fs::{File, OpenOptions};
use std::os::unix::io::AsRawFd;
use std::path::Path;

/// Held for the life of the server; the OS releases it if the process dies.
pub struct DirLock {
    _file: File,
}

pub fn lock_directory(dir: &Path) -> Result<DirLock, String> {
    std::fs::create_dir_all(dir)
        .map_err(|e| format!("cannot create data directory {}: {e}", dir.display()))?;
    let path = dir.join("LOCK");
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| format!("cannot open lock file {}: {e}", path.display()))?;
    // SAFETY: flock on a file descriptor we own; no memory is touched.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        return Err(format!(
            "data directory {} is in use by another rdb server (lock file {} is held)",
            dir.display(),
            path.display()
        ));
    }
    Ok(DirLock { _file: file })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_is_refused() {
        let dir = std::env::temp_dir().join(format!("rdb-lock-{}", std::process::id()));
        let first = lock_directory(&dir).unwrap();
        let err = lock_directory(&dir).err().unwrap();
        assert!(err.contains("in use by another rdb server"), "{err}");
        drop(first);
        assert!(lock_directory(&dir).is_ok());
    }
}
