//! WAL errors, classified by cause.

use std::path::PathBuf;
use thiserror::Error;

#[derive(Debug, Error, Clone)]
pub enum Error {
    /// The disk failed us (EIO, ENOSPC...).
    #[error("WAL I/O error on {path}: {message}")]
    Io { path: PathBuf, message: String },
    /// Bytes on disk that are not a valid log, away from the tail.
    #[error("WAL corruption in {path} at offset {offset}: {reason}")]
    Corrupt {
        path: PathBuf,
        offset: u64,
        reason: String,
    },
    /// A write or fsync failed earlier; the log accepts no more writes (no retry: the
    /// page cache may have dropped the data, so success later would be a lie).
    #[error("WAL is failed and accepts no writes: {0}")]
    Failed(String),
    #[error("record of {0} bytes is larger than the limit")]
    TooLarge(usize),
    /// Asked for records the log no longer keeps.
    #[error("LSN {requested} is no longer retained (oldest retained is {oldest})")]
    Expired { requested: u64, oldest: u64 },
}

pub type Result<T> = std::result::Result<T, Error>;

pub(crate) fn io_err(path: &std::path::Path, e: std::io::Error) -> Error {
    Error::Io {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}
