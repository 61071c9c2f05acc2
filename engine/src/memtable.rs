//! The in-memory write buffer: versioned entries in internal order.

use crate::entry::{Entry, EntryRef, Seq};
use std::collections::{BTreeMap, HashSet};
use std::hash::{BuildHasher, BuildHasherDefault};
use std::ops::Bound;

/// Approximate per-key overhead in the map and the hash set, for the flush threshold.
const ENTRY_OVERHEAD_BYTES: usize = 64;

type FastHash = BuildHasherDefault<rustc_hash::FxHasher>;

/// One key's versions, oldest first (ascending sequence numbers). Most keys have one,
/// kept inline (no allocation of its own).
type Versions = smallvec::SmallVec<[(Seq, Option<Vec<u8>>); 1]>;

/// The memtable's entries in internal order: user key ascending, then sequence number
/// descending. Versions are grouped under their key so a point read looks the key up by
/// reference, without building a search key.
#[derive(Default)]
pub struct Memtable {
    map: BTreeMap<Vec<u8>, Versions>,
    /// A hash of every key in `map`. Most point reads miss the memtable; a walk down
    /// the tree compares against a key behind a pointer at every step, a probe here is
    /// one or two cache lines.
    key_hashes: HashSet<u64, FastHash>,
    entries: usize,
    bytes: usize,
    /// Highest WAL LSN whose writes are in this memtable.
    pub last_lsn: u64,
}

fn key_hash(key: &[u8]) -> u64 {
    FastHash::default().hash_one(key)
}

fn entry(k: &[u8], v: &(Seq, Option<Vec<u8>>)) -> Entry {
    Entry {
        key: k.to_vec(),
        seq: v.0,
        value: v.1.clone(),
    }
}

impl Memtable {
    pub fn insert(&mut self, key: Vec<u8>, seq: Seq, value: Option<Vec<u8>>) {
        self.bytes += key.len() + value.as_ref().map_or(0, Vec::len) + ENTRY_OVERHEAD_BYTES;
        self.key_hashes.insert(key_hash(&key));
        let versions = self.map.entry(key).or_default();
        // Sequence numbers arrive in increasing order; keep the list sorted regardless.
        match versions.last() {
            Some((last, _)) if *last >= seq => {
                let at = versions.partition_point(|(s, _)| *s < seq);
                if versions.get(at).is_some_and(|(s, _)| *s == seq) {
                    versions[at].1 = value;
                    return;
                }
                versions.insert(at, (seq, value));
            }
            _ => versions.push((seq, value)),
        }
        self.entries += 1;
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn len(&self) -> usize {
        self.entries
    }

    /// The newest version of `key` with seq <= `snap`: `Some(None)` is a tombstone.
    pub fn get(&self, key: &[u8], snap: Seq) -> Option<Option<Vec<u8>>> {
        if !self.key_hashes.contains(&key_hash(key)) {
            return None;
        }
        let versions = self.map.get(key)?;
        versions
            .iter()
            .rev()
            .find(|(s, _)| *s <= snap)
            .map(|(_, v)| v.clone())
    }

    /// The newest version of the first key after (or, in reverse, the oldest version of
    /// the last key before) `key`.
    fn next_key(&self, key: Option<&[u8]>, reverse: bool) -> Option<Entry> {
        let item = match (key, reverse) {
            (None, false) => self.map.iter().next(),
            (None, true) => self.map.iter().next_back(),
            (Some(k), false) => self
                .map
                .range::<[u8], _>((Bound::Excluded(k), Bound::Unbounded))
                .next(),
            (Some(k), true) => self
                .map
                .range::<[u8], _>((Bound::Unbounded, Bound::Excluded(k)))
                .next_back(),
        };
        let (k, versions) = item?;
        let v = if reverse {
            versions.first()
        } else {
            versions.last()
        };
        Some(entry(k, v.expect("a key has at least one version")))
    }

    /// The first entry strictly after (or, in reverse, strictly before) the position
    /// `after` in internal order, or the first/last entry when `after` is `None`.
    pub fn step(&self, after: Option<(&[u8], Seq)>, reverse: bool) -> Option<Entry> {
        let Some((k, s)) = after else {
            return self.next_key(None, reverse);
        };
        if let Some(versions) = self.map.get(k) {
            // Forward goes to older versions of the key (smaller seq), reverse to newer.
            let v = if reverse {
                versions.iter().find(|(vs, _)| *vs > s)
            } else {
                versions.iter().rev().find(|(vs, _)| *vs < s)
            };
            if let Some(v) = v {
                return Some(entry(k, v));
            }
        }
        self.next_key(Some(k), reverse)
    }

    /// The first entry at or after (k, s) in internal order (forward), or at or before
    /// it (reverse).
    pub fn seek(&self, k: &[u8], s: Seq, reverse: bool) -> Option<Entry> {
        if let Some(versions) = self.map.get(k) {
            let v = if reverse {
                versions.iter().find(|(vs, _)| *vs >= s)
            } else {
                versions.iter().rev().find(|(vs, _)| *vs <= s)
            };
            if let Some(v) = v {
                return Some(entry(k, v));
            }
        }
        self.next_key(Some(k), reverse)
    }

    /// Every entry, borrowed, in internal order (for flushing).
    pub fn entry_refs(&self) -> impl Iterator<Item = EntryRef<'_>> + '_ {
        self.map.iter().flat_map(|(k, versions)| {
            versions.iter().rev().map(move |(seq, v)| EntryRef {
                key: k,
                seq: *seq,
                value: v.as_deref(),
            })
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
