//! The in-memory write buffer: versioned entries in internal order.

use crate::entry::{Entry, Seq};
use std::cmp::Reverse;
use std::collections::BTreeMap;
use std::ops::Bound;

/// Approximate per-entry overhead in the map, for the flush threshold.
const ENTRY_OVERHEAD_BYTES: usize = 48;

/// (user key, newest-first seq) -> value or tombstone.
type VersionMap = BTreeMap<(Vec<u8>, Reverse<Seq>), Option<Vec<u8>>>;

#[derive(Default)]
pub struct Memtable {
    map: VersionMap,
    bytes: usize,
    /// Highest WAL LSN whose writes are in this memtable.
    pub last_lsn: u64,
}

impl Memtable {
    pub fn insert(&mut self, key: Vec<u8>, seq: Seq, value: Option<Vec<u8>>) {
        self.bytes += key.len() + value.as_ref().map_or(0, Vec::len) + ENTRY_OVERHEAD_BYTES;
        self.map.insert((key, Reverse(seq)), value);
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// The newest version of `key` with seq <= `snap`: `Some(None)` is a tombstone.
    pub fn get(&self, key: &[u8], snap: Seq) -> Option<Option<Vec<u8>>> {
        let lo = (key.to_vec(), Reverse(snap));
        let ((k, _), v) = self.map.range(lo..).next()?;
        (k.as_slice() == key).then(|| v.clone())
    }

    /// The first entry strictly after (or, in reverse, strictly before) the position
    /// `after` in internal order, or the first/last entry when `after` is `None`.
    pub fn step(&self, after: Option<(&[u8], Seq)>, reverse: bool) -> Option<Entry> {
        let item = match (after, reverse) {
            (None, false) => self.map.iter().next(),
            (None, true) => self.map.iter().next_back(),
            (Some((k, s)), false) => self
                .map
                .range((Bound::Excluded((k.to_vec(), Reverse(s))), Bound::Unbounded))
                .next(),
            (Some((k, s)), true) => self
                .map
                .range((Bound::Unbounded, Bound::Excluded((k.to_vec(), Reverse(s)))))
                .next_back(),
        };
        item.map(|((k, Reverse(s)), v)| Entry {
            key: k.clone(),
            seq: *s,
            value: v.clone(),
        })
    }

    /// The first entry at or after (k, s) in internal order (forward), or at or before
    /// it (reverse).
    pub fn seek(&self, k: &[u8], s: Seq, reverse: bool) -> Option<Entry> {
        let pos = (k.to_vec(), Reverse(s));
        let item = if reverse {
            self.map.range(..=pos).next_back()
        } else {
            self.map.range(pos..).next()
        };
        item.map(|((k, Reverse(s)), v)| Entry {
            key: k.clone(),
            seq: *s,
            value: v.clone(),
        })
    }

    /// Every entry in internal order (for flushing).
    pub fn entries(&self) -> impl Iterator<Item = Entry> + '_ {
        self.map.iter().map(|((k, Reverse(s)), v)| Entry {
            key: k.clone(),
            seq: *s,
            value: v.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_and_snapshots() {
        let mut m = Memtable::default();
        m.insert(b"a".to_vec(), 1, Some(b"1".to_vec()));
        m.insert(b"a".to_vec(), 5, Some(b"5".to_vec()));
        m.insert(b"a".to_vec(), 7, None);
        m.insert(b"b".to_vec(), 2, Some(b"b".to_vec()));
        assert_eq!(m.get(b"a", 10), Some(None));
        assert_eq!(m.get(b"a", 6), Some(Some(b"5".to_vec())));
        assert_eq!(m.get(b"a", 4), Some(Some(b"1".to_vec())));
        assert_eq!(m.get(b"a", 0), None);
        assert_eq!(m.get(b"c", 10), None);
        let first = m.step(None, false).unwrap();
        assert_eq!((first.key.as_slice(), first.seq), (&b"a"[..], 7));
        let next = m.step(Some((b"a", 7)), false).unwrap();
        assert_eq!(next.seq, 5);
        let last = m.step(None, true).unwrap();
        assert_eq!(last.key, b"b");
    }
}
