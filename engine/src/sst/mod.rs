//! Sorted string tables: immutable files of entries in internal order. Byte layout in
//! `docs/format.md`.

pub mod block;
pub mod bloom;
pub mod format;
pub mod prefix;
pub mod reader;
pub mod writer;

pub use reader::{SstIter, SstReader, SstScan};
pub use writer::{build_sst, SstMeta};
