//! Files as the storage engine sees them: positioned, block-aligned writes, positioned
//! reads, fdatasync, and the directory operations needed for crash-safe installs.
//!
//! Three implementations: [`ReadOnlyFs`] (blocking, refuses every change) for offline
//! tools, [`DmaFs`] (glommio DMA files on io_uring, O_DIRECT) for the
//! server, and [`MemFs`] (in memory) for tests, which can lose unsynced writes, tear them,
//! and fail chosen operations with EIO or ENOSPC.

mod dma;
mod mem;
mod readonly;

pub use dma::DmaFs;
pub use mem::{Fault, MemFs};
pub use readonly::{ReadOnlyFile, ReadOnlyFs};

use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};

/// Every write starts at a multiple of this and is zero-padded to a multiple of it
/// (O_DIRECT's alignment on every device we support).
pub const ALIGN: u64 = 4096;

/// Rounds `n` up to a multiple of [`ALIGN`].
pub fn align_up(n: u64) -> u64 {
    n.div_ceil(ALIGN) * ALIGN
}

/// Rounds `n` down to a multiple of [`ALIGN`].
pub fn align_down(n: u64) -> u64 {
    n / ALIGN * ALIGN
}

/// An open file.
pub trait File {
    /// Writes `data` at `pos` (a multiple of [`ALIGN`]), zero-padding the last block.
    fn write_at(&self, pos: u64, data: &[u8]) -> impl Future<Output = io::Result<()>>;
    /// Reads up to `len` bytes at `pos`; fewer only at the end of the file.
    fn read_at(&self, pos: u64, len: usize) -> impl Future<Output = io::Result<Vec<u8>>>;
    /// fdatasync: everything written so far survives power loss once this returns Ok.
    fn sync(&self) -> impl Future<Output = io::Result<()>>;
    fn size(&self) -> impl Future<Output = io::Result<u64>>;
    fn truncate(&self, len: u64) -> impl Future<Output = io::Result<()>>;
}

/// A file system rooted somewhere; paths are absolute or relative to the process.
pub trait Fs: Clone + 'static {
    type File: File + 'static;
    /// Creates (or truncates) a file for reading and writing.
    fn create(&self, path: &Path) -> impl Future<Output = io::Result<Self::File>>;
    /// Opens an existing file for reading and writing.
    fn open(&self, path: &Path) -> impl Future<Output = io::Result<Self::File>>;
    fn rename(&self, from: &Path, to: &Path) -> impl Future<Output = io::Result<()>>;
    fn remove(&self, path: &Path) -> impl Future<Output = io::Result<()>>;
    /// Makes creations, renames and removals in `dir` durable.
    fn sync_dir(&self, dir: &Path) -> impl Future<Output = io::Result<()>>;
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// File names (not paths) in `dir`, sorted.
    fn list(&self, dir: &Path) -> io::Result<Vec<String>>;
    fn exists(&self, path: &Path) -> bool;
}

/// Names of the entries of a real directory, sorted (shared by the real-file systems).
pub(crate) fn list_dir(dir: &Path) -> io::Result<Vec<String>> {
    let mut v: Vec<String> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    v.sort();
    Ok(v)
}

/// Writes a whole file durably under a temporary name, then renames it into place and
/// syncs the directory: after a crash the file is either complete or absent.
pub async fn install_file<F: Fs>(fs: &F, path: &Path, data: &[u8]) -> io::Result<()> {
    let tmp = tmp_path(path);
    let f = fs.create(&tmp).await?;
    f.write_at(0, data).await?;
    f.sync().await?;
    drop(f);
    fs.rename(&tmp, path).await?;
    let dir = path.parent().unwrap_or(Path::new("."));
    fs.sync_dir(dir).await
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".tmp");
    PathBuf::from(s)
}
