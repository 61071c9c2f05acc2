//! Segment files: a 32-byte header (`magic | version u32 | reserved u32 | first_lsn u64 |
//! reserved u32 | crc32c u32`), then records. Named `<first_lsn:020>.wal`.

use crate::record::{decode, Decoded};

pub const WAL_MAGIC: &[u8; 8] = b"RDBWAL\0\x01";
pub const WAL_VERSION: u32 = 1;
pub const SEGMENT_HEADER_BYTES: usize = 32;

pub fn segment_name(first_lsn: u64) -> String {
    format!("{first_lsn:020}.wal")
}

pub fn parse_segment_name(name: &str) -> Option<u64> {
    let stem = name.strip_suffix(".wal")?;
    if stem.len() != 20 {
        return None;
    }
    stem.parse().ok()
}

pub fn encode_header(first_lsn: u64) -> Vec<u8> {
    let mut h = Vec::with_capacity(SEGMENT_HEADER_BYTES);
    h.extend_from_slice(WAL_MAGIC);
    h.extend_from_slice(&WAL_VERSION.to_le_bytes());
    h.extend_from_slice(&[0; 4]);
    h.extend_from_slice(&first_lsn.to_le_bytes());
    h.extend_from_slice(&[0; 4]);
    let crc = crc32c::crc32c(&h);
    h.extend_from_slice(&crc.to_le_bytes());
    h
}

/// Validates a header; returns the first LSN.
pub fn decode_header(buf: &[u8]) -> Result<u64, &'static str> {
    let h = buf
        .get(..SEGMENT_HEADER_BYTES)
        .ok_or("segment shorter than its header")?;
    if &h[..8] != WAL_MAGIC {
        return Err("bad segment magic");
    }
    let crc = u32::from_le_bytes(h[28..32].try_into().expect("4 bytes"));
    if crc32c::crc32c(&h[..28]) != crc {
        return Err("segment header checksum mismatch");
    }
    let v = u32::from_le_bytes(h[8..12].try_into().expect("4 bytes"));
    if v != WAL_VERSION {
        return Err("unsupported WAL version");
    }
    Ok(u64::from_le_bytes(h[16..24].try_into().expect("8 bytes")))
}

/// The result of reading one segment from its start.
#[derive(Debug)]
pub struct SegmentScan {
    pub first_lsn: u64,
    /// (lsn, offset, payload) of every valid record, in order.
    pub records: Vec<(u64, usize, Vec<u8>)>,
    /// Offset just past the last valid record.
    pub valid_end: usize,
    /// Why scanning stopped before the end of the file, if it did not stop at zeros.
    pub damage: Option<Damage>,
}

#[derive(Debug, Clone)]
pub struct Damage {
    pub offset: usize,
    pub reason: String,
    /// A valid record from a *later* group commit lies beyond the damage: older, synced
    /// data is damaged, not just the last write.
    pub later_batches_follow: bool,
}

/// Reads a segment; `expected_first_lsn` comes from its name.
pub fn scan_segment(buf: &[u8], expected_first_lsn: u64) -> Result<SegmentScan, (usize, String)> {
    let first_lsn = decode_header(buf).map_err(|r| (0, r.to_string()))?;
    if first_lsn != expected_first_lsn {
        return Err((
            0,
            format!("header says first LSN {first_lsn}, name says {expected_first_lsn}"),
        ));
    }
    let mut records = Vec::new();
    let mut at = SEGMENT_HEADER_BYTES;
    let mut next_lsn = first_lsn;
    let mut damage = None;
    loop {
        match decode(buf, at) {
            Decoded::End => break,
            Decoded::Record {
                lsn, payload, next, ..
            } if lsn == next_lsn => {
                records.push((lsn, at, payload.to_vec()));
                next_lsn += 1;
                at = next;
            }
            Decoded::Record { lsn, .. } => {
                damage = Some(Damage {
                    offset: at,
                    reason: format!("expected LSN {next_lsn}, found {lsn}"),
                    later_batches_follow: false,
                });
                break;
            }
            Decoded::Bad(reason) => {
                damage = Some(Damage {
                    offset: at,
                    reason: reason.to_string(),
                    later_batches_follow: false,
                });
                break;
            }
        }
    }
    if let Some(d) = damage.as_mut() {
        d.later_batches_follow = later_batch_after(buf, d.offset, next_lsn);
    }
    Ok(SegmentScan {
        first_lsn,
        records,
        valid_end: at,
        damage,
    })
}

/// Whether a valid record of a group commit that started after `lost_lsn` appears
/// beyond `from`. Such a batch was only written after the batch holding `lost_lsn`
/// was synced, so the damage is not a torn final write.
fn later_batch_after(buf: &[u8], from: usize, lost_lsn: u64) -> bool {
    let mut at = from + 8;
    while at + crate::record::RECORD_HEADER_BYTES <= buf.len() {
        if let Decoded::Record {
            lsn, batch_first, ..
        } = decode(buf, at)
        {
            if batch_first > lost_lsn && lsn >= batch_first {
                return true;
            }
        }
        at += 8;
    }
    false
}
