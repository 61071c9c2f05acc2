//! Write batches and their WAL record encoding:
//! `first_seq u64 | count u32 | (kind u8 | key_len varint | key | [value_len varint | value])*
//!  [note_len varint | note]`
//! with kind 1 = put, 0 = delete. Operation i gets sequence number first_seq + i. The
//! optional note is opaque bytes kept in the log only (never applied to the tree): the
//! layers above record there what the log alone must tell later (old values for
//! changefeeds). Records without a note are the format's first version, unchanged.

use crate::entry::{get_u32, get_u64, get_varint, put_varint, Seq};

/// Keys and values larger than this are refused.
pub const KEY_BYTES_MAX: usize = 64 * 1024;
pub const VALUE_BYTES_MAX: usize = 16 * 1024 * 1024;

/// Writes applied atomically: all or none survive a crash, all become visible together.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WriteBatch {
    pub ops: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    /// Log-only bytes (see the module doc); empty for none.
    pub note: Vec<u8>,
}

impl WriteBatch {
    pub fn new() -> Self {
        WriteBatch::default()
    }
    pub fn put(&mut self, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> &mut Self {
        self.ops.push((key.into(), Some(value.into())));
        self
    }
    pub fn delete(&mut self, key: impl Into<Vec<u8>>) -> &mut Self {
        self.ops.push((key.into(), None));
        self
    }
    pub fn len(&self) -> usize {
        self.ops.len()
    }
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
    /// Payload bytes (keys and values).
    pub fn bytes(&self) -> usize {
        self.ops
            .iter()
            .map(|(k, v)| k.len() + v.as_ref().map_or(0, Vec::len))
            .sum()
    }

    pub fn encode(&self, first_seq: Seq) -> Vec<u8> {
        let mut b = Vec::with_capacity(12 + self.bytes() + self.ops.len() * 4);
        b.extend_from_slice(&first_seq.to_le_bytes());
        b.extend_from_slice(&(self.ops.len() as u32).to_le_bytes());
        for (k, v) in &self.ops {
            b.push(u8::from(v.is_some()));
            put_varint(&mut b, k.len() as u64);
            b.extend_from_slice(k);
            if let Some(v) = v {
                put_varint(&mut b, v.len() as u64);
                b.extend_from_slice(v);
            }
        }
        if !self.note.is_empty() {
            put_varint(&mut b, self.note.len() as u64);
            b.extend_from_slice(&self.note);
        }
        b
    }

    pub fn decode(b: &[u8]) -> Result<(Seq, WriteBatch), &'static str> {
        let first = get_u64(b, 0).ok_or("batch truncated")?;
        let n = get_u32(b, 8).ok_or("batch truncated")? as usize;
        let mut pos = 12;
        let mut ops = Vec::with_capacity(n.min(1 << 16));
        for _ in 0..n {
            let kind = *b.get(pos).ok_or("batch truncated")?;
            pos += 1;
            let take = |pos: &mut usize| -> Result<Vec<u8>, &'static str> {
                let len = get_varint(b, pos).ok_or("batch truncated")? as usize;
                let end = pos.checked_add(len).ok_or("batch truncated")?;
                let v = b.get(*pos..end).ok_or("batch truncated")?.to_vec();
                *pos = end;
                Ok(v)
            };
            let k = take(&mut pos)?;
            let v = match kind {
                1 => Some(take(&mut pos)?),
                0 => None,
                _ => return Err("bad batch op kind"),
            };
            ops.push((k, v));
        }
        let mut note = Vec::new();
        if pos != b.len() {
            let len = get_varint(b, &mut pos).ok_or("batch truncated")? as usize;
            let end = pos.checked_add(len).ok_or("batch truncated")?;
            if len == 0 || end != b.len() {
                return Err("trailing bytes in batch");
            }
            note = b[pos..end].to_vec();
        }
        Ok((first, WriteBatch { ops, note }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let mut w = WriteBatch::new();
        w.put("a", "1").delete("b").put("", "");
        let (s, back) = WriteBatch::decode(&w.encode(42)).unwrap();
        assert_eq!((s, back), (42, w.clone()));
        assert!(WriteBatch::decode(&[1, 2, 3]).is_err());
        w.note = b"old values".to_vec();
        let enc = w.encode(7);
        assert_eq!(WriteBatch::decode(&enc).unwrap(), (7, w.clone()));
        // A note must run to the end of the record exactly.
        let mut longer = enc.clone();
        longer.push(0);
        assert!(WriteBatch::decode(&longer).is_err());
        assert!(WriteBatch::decode(&enc[..enc.len() - 1]).is_err());
    }
}
