//! Write batches and their WAL record encoding:
//! `first_seq u64 | count u32 | (kind u8 | key_len varint | key | [value_len varint | value])*`
//! with kind 1 = put, 0 = delete. Operation i gets sequence number first_seq + i.

use crate::entry::{get_u32, get_u64, get_varint, put_varint, Seq};

/// Keys and values larger than this are refused.
pub const KEY_BYTES_MAX: usize = 64 * 1024;
pub const VALUE_BYTES_MAX: usize = 16 * 1024 * 1024;

/// Writes applied atomically: all or none survive a crash, all become visible together.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WriteBatch {
    pub ops: Vec<(Vec<u8>, Option<Vec<u8>>)>,
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
        if pos != b.len() {
            return Err("trailing bytes in batch");
        }
        Ok((first, WriteBatch { ops }))
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
        assert_eq!((s, back), (42, w));
        assert!(WriteBatch::decode(&[1, 2, 3]).is_err());
    }
}
