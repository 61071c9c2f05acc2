//! Builds an SST file image from entries in internal order.

use super::block::{encode_index, BlockBuilder, IndexEntry};
use super::bloom;
use super::format::{write_block, Footer, DATA_BLOCK_BYTES, FOOTER_BYTES};
use crate::entry::{cmp_internal, get_u64, get_varint, put_varint, EntryView, Seq};
use rdb_io::fs::ALIGN;

/// What the manifest records about an SST.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SstMeta {
    pub file_no: u64,
    /// Bytes on disk.
    pub size: u64,
    pub entries: u64,
    pub smallest_key: Vec<u8>,
    pub smallest_seq: Seq,
    pub largest_key: Vec<u8>,
    pub largest_seq: Seq,
}

impl SstMeta {
    /// Whether the file may hold user keys in [lo, hi].
    pub fn overlaps(&self, lo: &[u8], hi: &[u8]) -> bool {
        self.smallest_key.as_slice() <= hi && self.largest_key.as_slice() >= lo
    }
}

/// Encodes the meta block: entry count and key/seq bounds.
fn encode_meta(m: &SstMeta) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&m.entries.to_le_bytes());
    for (k, s) in [
        (&m.smallest_key, m.smallest_seq),
        (&m.largest_key, m.largest_seq),
    ] {
        put_varint(&mut b, k.len() as u64);
        b.extend_from_slice(k);
        b.extend_from_slice(&s.to_le_bytes());
    }
    b
}

pub fn decode_meta(b: &[u8], file_no: u64, size: u64) -> Result<SstMeta, &'static str> {
    let entries = get_u64(b, 0).ok_or("meta truncated")?;
    let mut pos = 8;
    let read = |pos: &mut usize| -> Result<(Vec<u8>, Seq), &'static str> {
        let len = get_varint(b, pos).ok_or("meta truncated")? as usize;
        let end = pos.checked_add(len).ok_or("meta truncated")?;
        let k = b.get(*pos..end).ok_or("meta truncated")?.to_vec();
        let s = get_u64(b, end).ok_or("meta truncated")?;
        *pos = end + 8;
        Ok((k, s))
    };
    let (smallest_key, smallest_seq) = read(&mut pos)?;
    let (largest_key, largest_seq) = read(&mut pos)?;
    Ok(SstMeta {
        file_no,
        size,
        entries,
        smallest_key,
        smallest_seq,
        largest_key,
        largest_seq,
    })
}

/// Builds a file image; `entries` must be non-empty and in internal order.
pub fn build_sst<E: EntryView>(file_no: u64, entries: &[E], compress: bool) -> (Vec<u8>, SstMeta) {
    assert!(!entries.is_empty(), "an SST holds at least one entry");
    debug_assert!(
        entries
            .windows(2)
            .all(|w| cmp_internal(w[0].key(), w[0].seq(), w[1].key(), w[1].seq()).is_lt()),
        "entries out of order"
    );
    let mut out = Vec::with_capacity(entries.len() * 32);
    let mut index = Vec::new();
    let mut b = BlockBuilder::default();
    for (i, e) in entries.iter().enumerate() {
        b.add(e);
        let last = i + 1 == entries.len();
        if b.bytes() >= DATA_BLOCK_BYTES || last {
            let h = write_block(&mut out, &b.finish(), compress);
            index.push(IndexEntry {
                last_key: e.key().to_vec(),
                last_seq: e.seq(),
                offset: h.offset,
                len: h.len,
            });
        }
    }
    let mut user_keys: Vec<&[u8]> = entries.iter().map(EntryView::key).collect();
    user_keys.dedup();
    let index_h = write_block(&mut out, &encode_index(&index), false);
    let bloom_h = write_block(&mut out, &bloom::build(&user_keys), false);
    let first = &entries[0];
    let laste = &entries[entries.len() - 1];
    let mut meta = SstMeta {
        file_no,
        size: 0,
        entries: entries.len() as u64,
        smallest_key: first.key().to_vec(),
        smallest_seq: first.seq(),
        largest_key: laste.key().to_vec(),
        largest_seq: laste.seq(),
    };
    let meta_h = write_block(&mut out, &encode_meta(&meta), false);
    // Zero padding so that the footer ends the file on an O_DIRECT block boundary.
    let total = (out.len() + FOOTER_BYTES).div_ceil(ALIGN as usize) * ALIGN as usize;
    out.resize(total - FOOTER_BYTES, 0);
    out.extend_from_slice(
        &Footer {
            index: index_h,
            bloom: bloom_h,
            meta: meta_h,
        }
        .encode(),
    );
    meta.size = out.len() as u64;
    (out, meta)
}
