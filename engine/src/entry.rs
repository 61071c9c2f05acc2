//! Versioned entries: a user key, the sequence number that wrote it, and a value or a
//! tombstone. Internal order: user key ascending, then sequence number descending
//! (newest first), which is what every iterator and file in the engine follows.

use std::cmp::Ordering;

pub type Seq = u64;

/// Largest sequence number; seeking to (key, SEQ_MAX) lands on the key's newest version.
pub const SEQ_MAX: Seq = (1 << 56) - 1;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub key: Vec<u8>,
    pub seq: Seq,
    /// `None` is a tombstone.
    pub value: Option<Vec<u8>>,
}

/// An entry as the SST writer reads it: owned, or borrowed (a memtable is flushed from
/// its map without copying its keys and values).
pub trait EntryView {
    fn key(&self) -> &[u8];
    fn seq(&self) -> Seq;
    fn value(&self) -> Option<&[u8]>;
}

impl EntryView for Entry {
    fn key(&self) -> &[u8] {
        &self.key
    }
    fn seq(&self) -> Seq {
        self.seq
    }
    fn value(&self) -> Option<&[u8]> {
        self.value.as_deref()
    }
}

/// A borrowed entry.
#[derive(Clone, Copy, Debug)]
pub struct EntryRef<'a> {
    pub key: &'a [u8],
    pub seq: Seq,
    pub value: Option<&'a [u8]>,
}

impl EntryView for EntryRef<'_> {
    fn key(&self) -> &[u8] {
        self.key
    }
    fn seq(&self) -> Seq {
        self.seq
    }
    fn value(&self) -> Option<&[u8]> {
        self.value
    }
}

/// Compares (key, seq) pairs in internal order.
pub fn cmp_internal(ka: &[u8], sa: Seq, kb: &[u8], sb: Seq) -> Ordering {
    ka.cmp(kb).then(sb.cmp(&sa))
}

impl Entry {
    pub fn cmp_internal(&self, other: &Entry) -> Ordering {
        cmp_internal(&self.key, self.seq, &other.key, other.seq)
    }
}

pub fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Reads a varint at `*pos`, advancing it; `None` on truncation or overlong encoding.
pub fn get_varint(buf: &[u8], pos: &mut usize) -> Option<u64> {
    let mut v: u64 = 0;
    for shift in (0..64).step_by(7) {
        let b = *buf.get(*pos)?;
        *pos += 1;
        v |= ((b & 0x7f) as u64) << shift;
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

pub fn get_u32(buf: &[u8], pos: usize) -> Option<u32> {
    Some(u32::from_le_bytes(buf.get(pos..pos + 4)?.try_into().ok()?))
}

pub fn get_u64(buf: &[u8], pos: usize) -> Option<u64> {
    Some(u64::from_le_bytes(buf.get(pos..pos + 8)?.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn varint_round_trip(v in any::<u64>()) {
            let mut b = Vec::new();
            put_varint(&mut b, v);
            let mut p = 0;
            prop_assert_eq!(get_varint(&b, &mut p), Some(v));
            prop_assert_eq!(p, b.len());
        }
    }
}
