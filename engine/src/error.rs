//! Engine errors, classified by cause: the disk, bad bytes on disk, or a shard that has
//! stopped accepting writes.

use std::path::{Path, PathBuf};
use thiserror::Error;

#[derive(Debug, Error, Clone)]
pub enum Error {
    #[error("I/O error on {path}: {message}")]
    Io { path: PathBuf, message: String },
    /// Bytes on disk that fail a checksum or an invariant: never returned as data.
    #[error("corruption in {path} at offset {offset}: {reason}")]
    Corrupt {
        path: PathBuf,
        offset: u64,
        reason: String,
    },
    #[error(transparent)]
    Wal(#[from] rdb_wal::Error),
    /// An earlier write, fsync or file install failed: the shard no longer acknowledges
    /// writes (reads of what is already there still work).
    #[error("shard is failed and accepts no writes: {0}")]
    Failed(String),
    #[error("invalid argument: {0}")]
    Invalid(String),
}

pub type Result<T> = std::result::Result<T, Error>;

pub(crate) fn io_err(path: &Path, e: std::io::Error) -> Error {
    Error::Io {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

pub(crate) fn corrupt(path: &Path, offset: u64, reason: impl Into<String>) -> Error {
    Error::Corrupt {
        path: path.to_path_buf(),
        offset,
        reason: reason.into(),
    }
}
