//! The storage engine: one LSM tree per core ("shard"), on the io seam.
//!
//! Keys are opaque ordered bytes; the engine knows nothing of documents or ReQL. Writes
//! are batches made durable through the shard's WAL (group commit), buffered in a
//! memtable, flushed to SSTables and compacted level by level. Reads take a snapshot
//! (a sequence number) and see exactly the acknowledged writes below it.

pub mod batch;
pub mod cache;
pub mod compaction;
pub mod entry;
pub mod error;
pub mod manifest;
pub mod memtable;
pub mod shard;
pub mod sst;

pub use batch::{WriteBatch, KEY_BYTES_MAX, VALUE_BYTES_MAX};
pub use error::{Error, Result};
pub use rdb_wal::Durability;
pub use shard::{Shard, ShardOptions, Snapshot, Stats, MEMTABLE_STALL_FACTOR};
