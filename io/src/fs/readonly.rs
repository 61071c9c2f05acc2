//! Blocking, read-only access to real files for offline tools: every future completes at
//! once (drive it with any `block_on`), and every operation that would change the disk
//! fails with PermissionDenied, so a tool built on it cannot modify what it inspects.

use super::{File, Fs};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

#[derive(Clone, Default)]
pub struct ReadOnlyFs;

pub struct ReadOnlyFile {
    file: std::fs::File,
}

fn refused() -> io::Error {
    io::Error::new(
        io::ErrorKind::PermissionDenied,
        "read-only file system (offline inspection)",
    )
}

impl File for ReadOnlyFile {
    async fn write_at(&self, _pos: u64, _data: &[u8]) -> io::Result<()> {
        Err(refused())
    }

    async fn read_at(&self, pos: u64, len: usize) -> io::Result<Vec<u8>> {
        let mut buf = vec![0u8; len];
        let mut done = 0;
        while done < len {
            let n = self.file.read_at(&mut buf[done..], pos + done as u64)?;
            if n == 0 {
                break;
            }
            done += n;
        }
        buf.truncate(done);
        Ok(buf)
    }

    async fn sync(&self) -> io::Result<()> {
        Err(refused())
    }

    async fn size(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    async fn truncate(&self, _len: u64) -> io::Result<()> {
        Err(refused())
    }
}

impl Fs for ReadOnlyFs {
    type File = ReadOnlyFile;

    async fn create(&self, _path: &Path) -> io::Result<ReadOnlyFile> {
        Err(refused())
    }

    async fn open(&self, path: &Path) -> io::Result<ReadOnlyFile> {
        Ok(ReadOnlyFile {
            file: std::fs::File::open(path)?,
        })
    }

    async fn rename(&self, _from: &Path, _to: &Path) -> io::Result<()> {
        Err(refused())
    }

    async fn remove(&self, _path: &Path) -> io::Result<()> {
        Err(refused())
    }

    async fn sync_dir(&self, _dir: &Path) -> io::Result<()> {
        Err(refused())
    }

    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        if dir.is_dir() {
            Ok(())
        } else {
            Err(refused())
        }
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        super::list_dir(dir)
    }

    fn exists(&self, path: &Path) -> bool {
        path.exists()
    }
}
