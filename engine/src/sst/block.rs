//! Data and index block encodings.
//!
//! Data block entry: `shared varint | unshared varint | value_len varint | unshared key
//! bytes | tag u64 (seq << 8 | kind) | value bytes`, keys prefix-compressed against the
//! previous entry of the block (the first entry shares nothing). kind 1 = put,
//! 0 = tombstone (value_len 0).

use super::prefix::KeyPrefixes;
use crate::entry::{cmp_internal, get_u64, get_varint, put_varint, Entry, EntryView, Seq};
use std::rc::Rc;

const KIND_DELETE: u8 = 0;
const KIND_PUT: u8 = 1;

#[derive(Default)]
pub struct BlockBuilder {
    buf: Vec<u8>,
    last_key: Vec<u8>,
    count: usize,
}

impl BlockBuilder {
    pub fn add<E: EntryView>(&mut self, e: &E) {
        let (key, value) = (e.key(), e.value());
        let shared = if self.count == 0 {
            0
        } else {
            self.last_key
                .iter()
                .zip(key)
                .take_while(|(a, b)| a == b)
                .count()
        };
        put_varint(&mut self.buf, shared as u64);
        put_varint(&mut self.buf, (key.len() - shared) as u64);
        put_varint(&mut self.buf, value.map_or(0, <[u8]>::len) as u64);
        self.buf.extend_from_slice(&key[shared..]);
        let kind = if value.is_some() {
            KIND_PUT
        } else {
            KIND_DELETE
        };
        self.buf
            .extend_from_slice(&((e.seq() << 8) | kind as u64).to_le_bytes());
        if let Some(v) = value {
            self.buf.extend_from_slice(v);
        }
        self.last_key.clear();
        self.last_key.extend_from_slice(key);
        self.count += 1;
    }

    pub fn bytes(&self) -> usize {
        self.buf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub fn finish(&mut self) -> Vec<u8> {
        self.count = 0;
        self.last_key.clear();
        std::mem::take(&mut self.buf)
    }
}

/// Where one entry of a decoded block lies in the block's data.
#[derive(Clone, Copy, Debug)]
struct Slot {
    key_off: u32,
    key_len: u32,
    /// `TOMBSTONE` for a delete.
    val_off: u32,
    val_len: u32,
    seq: Seq,
}

const TOMBSTONE: u32 = u32::MAX;
const SLOT_BYTES: usize = 24;

impl Slot {
    fn write(&self, out: &mut Vec<u8>) {
        for v in [self.key_off, self.key_len, self.val_off, self.val_len] {
            out.extend_from_slice(&v.to_ne_bytes());
        }
        out.extend_from_slice(&self.seq.to_ne_bytes());
    }

    fn read(b: &[u8]) -> Slot {
        let u32_at = |i: usize| u32::from_ne_bytes(b[i..i + 4].try_into().expect("4 bytes"));
        Slot {
            key_off: u32_at(0),
            key_len: u32_at(4),
            val_off: u32_at(8),
            val_len: u32_at(12),
            seq: u64::from_ne_bytes(b[16..24].try_into().expect("8 bytes")),
        }
    }
}

/// A decoded data block as the cache holds it, in one reference-counted buffer (the
/// counts and the bytes in one allocation): a header, the keys' prefix section (for the
/// search), a fixed-size slot per entry, then every key in full and every value. A
/// point get touches a few adjacent cache lines of one allocation. Clones share it.
#[derive(Clone, Debug)]
pub struct DecodedBlock {
    buf: Rc<[u8]>,
}

/// Header: entries, slots offset, data offset, then the prefix section's parts (offset,
/// common prefix length, keys), each a native-endian u32.
const HEADER_BYTES: usize = 24;

impl DecodedBlock {
    /// Decodes a whole data block (any bytes: malformed ones give an error).
    pub fn decode(buf: &[u8]) -> Result<DecodedBlock, &'static str> {
        // Offsets are u32: far beyond any block (a few KiB), even with keys expanded.
        if buf.len() > (u32::MAX / 8) as usize {
            return Err("data block too large");
        }
        let offset = |n: usize| u32::try_from(n).map_err(|_| "data block too large");
        let mut data: Vec<u8> = Vec::with_capacity(buf.len() + buf.len() / 2);
        let mut slots: Vec<Slot> = Vec::new();
        let mut pos = 0;
        while pos < buf.len() {
            let shared = get_varint(buf, &mut pos).ok_or("bad entry header")? as usize;
            let unshared = get_varint(buf, &mut pos).ok_or("bad entry header")? as usize;
            let vlen = get_varint(buf, &mut pos).ok_or("bad entry header")? as usize;
            let prev = slots
                .last()
                .map_or((0, 0), |s| (s.key_off as usize, s.key_len as usize));
            if shared > prev.1 {
                return Err("shared prefix longer than the previous key");
            }
            let end = pos.checked_add(unshared).ok_or("entry overflows block")?;
            let tail = buf.get(pos..end).ok_or("entry overflows block")?;
            pos = end;
            let key_off = data.len();
            data.extend_from_within(prev.0..prev.0 + shared);
            data.extend_from_slice(tail);
            let tag = get_u64(buf, pos).ok_or("entry overflows block")?;
            pos += 8;
            let (val_off, val_len) = match (tag & 0xff) as u8 {
                KIND_PUT => {
                    let end = pos.checked_add(vlen).ok_or("entry overflows block")?;
                    let v = buf.get(pos..end).ok_or("entry overflows block")?;
                    pos = end;
                    let off = offset(data.len())?;
                    data.extend_from_slice(v);
                    (off, offset(vlen)?)
                }
                KIND_DELETE if vlen == 0 => (TOMBSTONE, 0),
                _ => return Err("bad entry kind"),
            };
            slots.push(Slot {
                key_off: offset(key_off)?,
                key_len: offset(shared + unshared)?,
                val_off,
                val_len,
                seq: tag >> 8,
            });
        }
        let key = |s: &Slot| &data[s.key_off as usize..(s.key_off + s.key_len) as usize];
        let mut out = vec![0u8; HEADER_BYTES];
        let prefixes = KeyPrefixes::build(slots.iter().map(key), &mut out);
        let slots_at = out.len();
        out.reserve_exact(slots.len() * SLOT_BYTES + data.len());
        for s in &slots {
            s.write(&mut out);
        }
        let data_at = out.len();
        out.extend_from_slice(&data);
        let (p_at, p_common, p_len) = prefixes.parts();
        for (i, v) in [slots.len(), slots_at, data_at, p_at, p_common, p_len]
            .into_iter()
            .enumerate()
        {
            out[i * 4..i * 4 + 4].copy_from_slice(&offset(v)?.to_ne_bytes());
        }
        Ok(DecodedBlock { buf: out.into() })
    }

    fn header(&self, i: usize) -> usize {
        u32::from_ne_bytes(self.buf[i * 4..i * 4 + 4].try_into().expect("4 bytes")) as usize
    }

    pub fn len(&self) -> usize {
        self.header(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn slot(&self, i: usize) -> Slot {
        assert!(i < self.len(), "entry {i} of a block of {}", self.len());
        Slot::read(&self.buf[self.header(1) + i * SLOT_BYTES..][..SLOT_BYTES])
    }

    fn data(&self, off: u32, len: u32) -> &[u8] {
        &self.buf[self.header(2) + off as usize..][..len as usize]
    }

    pub fn key(&self, i: usize) -> &[u8] {
        let s = self.slot(i);
        self.data(s.key_off, s.key_len)
    }

    pub fn seq(&self, i: usize) -> Seq {
        self.slot(i).seq
    }

    /// `None` is a tombstone.
    pub fn value(&self, i: usize) -> Option<&[u8]> {
        let s = self.slot(i);
        (s.val_off != TOMBSTONE).then(|| self.data(s.val_off, s.val_len))
    }

    /// Entry `i`, copied out.
    pub fn entry(&self, i: usize) -> Entry {
        Entry {
            key: self.key(i).to_vec(),
            seq: self.seq(i),
            value: self.value(i).map(<[u8]>::to_vec),
        }
    }

    /// Memory held (for the cache's budget): the buffer and its reference counts.
    pub fn heap_bytes(&self) -> usize {
        self.buf.len() + 16
    }

    /// Position of the first entry >= (key, seq) in internal order.
    pub fn seek(&self, key: &[u8], seq: Seq) -> usize {
        let prefixes = KeyPrefixes::from_parts(self.header(3), self.header(4), self.header(5));
        let (mut lo, mut hi) = prefixes.candidates(&self.buf, key);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if cmp_internal(self.key(mid), self.seq(mid), key, seq).is_lt() {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo
    }
}

/// Index entry: the last entry's key and seq in a data block, and where the block is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IndexEntry {
    pub last_key: Vec<u8>,
    pub last_seq: u64,
    pub offset: u64,
    pub len: u32,
}

pub fn encode_index(entries: &[IndexEntry]) -> Vec<u8> {
    let mut b = Vec::new();
    for e in entries {
        put_varint(&mut b, e.last_key.len() as u64);
        b.extend_from_slice(&e.last_key);
        put_varint(&mut b, e.last_seq);
        put_varint(&mut b, e.offset);
        put_varint(&mut b, e.len as u64);
    }
    b
}

pub fn decode_index(buf: &[u8]) -> Result<Vec<IndexEntry>, &'static str> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < buf.len() {
        let klen = get_varint(buf, &mut pos).ok_or("bad index entry")? as usize;
        let end = pos.checked_add(klen).ok_or("bad index entry")?;
        let last_key = buf.get(pos..end).ok_or("bad index entry")?.to_vec();
        pos = end;
        let last_seq = get_varint(buf, &mut pos).ok_or("bad index entry")?;
        let offset = get_varint(buf, &mut pos).ok_or("bad index entry")?;
        let len = get_varint(buf, &mut pos).ok_or("bad index entry")?;
        out.push(IndexEntry {
            last_key,
            last_seq,
            offset,
            len: u32::try_from(len).map_err(|_| "bad index entry")?,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Decodes a whole data block into owned entries.
    fn decode_block(buf: &[u8]) -> Result<Vec<Entry>, &'static str> {
        let b = DecodedBlock::decode(buf)?;
        Ok((0..b.len()).map(|i| b.entry(i)).collect())
    }

    proptest! {
        #[test]
        fn block_round_trip(mut keys in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..12), 1..40)) {
            keys.sort();
            keys.dedup();
            let entries: Vec<Entry> = keys.iter().enumerate().map(|(i, k)| Entry {
                key: k.clone(),
                seq: i as u64 * 3,
                value: if i % 3 == 0 { None } else { Some(vec![i as u8; i % 7]) },
            }).collect();
            let mut b = BlockBuilder::default();
            for e in &entries { b.add(e); }
            let bytes = b.finish();
            prop_assert_eq!(decode_block(&bytes).unwrap(), entries);
        }

        #[test]
        fn garbage_blocks_never_panic(buf in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode_block(&buf);
            let _ = decode_index(&buf);
        }
    }
}
