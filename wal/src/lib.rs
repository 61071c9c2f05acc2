//! The write-ahead log of one shard: segmented files of checksummed, LSN-numbered
//! records, group commit (writers waiting on one core share one write + fdatasync),
//! recovery that drops a torn tail but refuses mid-log corruption, and a tail API for
//! followers (changefeeds, replication). Format: `docs/format.md`.

mod error;
mod record;
mod segment;
mod wal;

pub use error::{Error, Result};
pub use record::{RECORD_HEADER_BYTES, RECORD_PAYLOAD_MAX};
pub use segment::{
    parse_segment_name, scan_segment, Damage, SegmentScan, SEGMENT_HEADER_BYTES, WAL_VERSION,
};
pub use wal::{Durability, Retention, Wal, WalOptions};

/// Log sequence number: 1 for the first record ever written, then +1 per record.
pub type Lsn = u64;
