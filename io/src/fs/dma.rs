//! Real files: glommio DMA files (O_DIRECT, io_uring).

use super::{File, Fs, ALIGN};
use glommio::io::{DmaFile, OpenOptions};
use std::io;
use std::path::Path;
use std::rc::Rc;

/// Real files under a data directory. Construct it with [`DmaFs::new`], which works
/// around glommio issue #605 (see there).
#[derive(Clone)]
pub struct DmaFs {
    _private: (),
}

/// Name of the non-empty file `DmaFs::new` opens first on a device.
pub const PROBE_FILE: &str = ".io-probe";

impl DmaFs {
    /// glommio probes a device's io-poll support with a read of the *first* DMA file it
    /// opens there, and caches the answer for the process. If that file is empty the read
    /// "succeeds" on devices without io-poll (virtio), every later DMA read then fails
    /// with EOPNOTSUPP. So before anything else, open a non-empty file in `dir` (written
    /// with ordinary syscalls) to make the probe read real data.
    pub async fn new(dir: &Path) -> io::Result<DmaFs> {
        std::fs::create_dir_all(dir)?;
        let probe = dir.join(PROBE_FILE);
        let needs_write = std::fs::metadata(&probe)
            .map(|m| m.len() < ALIGN)
            .unwrap_or(true);
        if needs_write {
            std::fs::write(&probe, vec![0x5au8; ALIGN as usize])?;
        }
        let f = DmaFile::open(&probe).await.map_err(into_io)?;
        f.read_at(0, ALIGN as usize).await.map_err(into_io)?;
        f.close().await.map_err(into_io)?;
        Ok(DmaFs { _private: () })
    }
}

fn into_io<T: std::fmt::Debug>(e: glommio::GlommioError<T>) -> io::Error {
    match e {
        glommio::GlommioError::IoError(e) => e,
        glommio::GlommioError::EnhancedIoError { source, .. } => source,
        other => io::Error::other(format!("{other:?}")),
    }
}

/// An open DMA file.
pub struct DmaHandle {
    file: Rc<DmaFile>,
}

impl File for DmaHandle {
    async fn write_at(&self, pos: u64, data: &[u8]) -> io::Result<()> {
        assert_eq!(pos % ALIGN, 0, "unaligned write at {pos}");
        let padded = super::align_up(data.len() as u64) as usize;
        let mut buf = self.file.alloc_dma_buffer(padded);
        let bytes = buf.as_bytes_mut();
        bytes[..data.len()].copy_from_slice(data);
        bytes[data.len()..].fill(0);
        let n = self.file.write_at(buf, pos).await.map_err(into_io)?;
        if n != padded {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                format!("short write: {n} of {padded} bytes"),
            ));
        }
        Ok(())
    }

    async fn read_at(&self, pos: u64, len: usize) -> io::Result<Vec<u8>> {
        let r = self.file.read_at(pos, len).await.map_err(into_io)?;
        Ok(r.to_vec())
    }

    async fn sync(&self) -> io::Result<()> {
        self.file.fdatasync().await.map_err(into_io)
    }

    async fn size(&self) -> io::Result<u64> {
        self.file.file_size().await.map_err(into_io)
    }

    async fn truncate(&self, len: u64) -> io::Result<()> {
        self.file.truncate(len).await.map_err(into_io)
    }
}

impl Fs for DmaFs {
    type File = DmaHandle;

    async fn create(&self, path: &Path) -> io::Result<DmaHandle> {
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .dma_open(path)
            .await
            .map_err(into_io)?;
        Ok(DmaHandle { file: Rc::new(f) })
    }

    async fn open(&self, path: &Path) -> io::Result<DmaHandle> {
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .dma_open(path)
            .await
            .map_err(into_io)?;
        Ok(DmaHandle { file: Rc::new(f) })
    }

    async fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        glommio::io::rename(from, to).await.map_err(into_io)
    }

    async fn remove(&self, path: &Path) -> io::Result<()> {
        glommio::io::remove(path).await.map_err(into_io)
    }

    async fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let d = glommio::io::Directory::open(dir).await.map_err(into_io)?;
        d.sync().await.map_err(into_io)?;
        d.close().await.map_err(into_io)
    }

    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        std::fs::create_dir_all(dir)
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        super::list_dir(dir)
    }

    fn exists(&self, path: &Path) -> bool {
        path.exists()
    }
}
