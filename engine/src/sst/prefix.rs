//! Fixed-width key prefixes for binary search over a sorted run of keys.
//!
//! A binary search over `Vec<u8>` keys chases a pointer and calls memcmp on every probe;
//! in a point get that was most of the engine's time. All keys of a sorted run share a
//! common prefix (the table prefix at least), so the next 8 bytes of each key, packed
//! big-endian into a `u64`, order the keys almost everywhere: the search runs over a
//! dense `u64` array and compares whole keys only among keys whose 8 bytes tie.

use std::cmp::Ordering;

/// The 8 bytes of `key` from `at`, zero-padded, as a big-endian number. Monotone: for
/// keys that agree on their first `at` bytes, `a <= b` implies `word(a) <= word(b)`.
fn word(key: &[u8], at: usize) -> u64 {
    let tail = key.get(at..).unwrap_or(&[]);
    let mut b = [0u8; 8];
    let n = tail.len().min(8);
    b[..n].copy_from_slice(&tail[..n]);
    u64::from_be_bytes(b)
}

/// The prefixes of a sorted run of keys.
#[derive(Debug, Default)]
pub struct KeyPrefixes {
    /// Bytes every key of the run starts with.
    common: Vec<u8>,
    /// `word(key, common.len())` of each key, in run order.
    words: Vec<u64>,
    /// Every `GROUP`th word: a search finds the group here (a few KiB that stay in the
    /// CPU cache), then touches two cache lines of `words`.
    group_firsts: Vec<u64>,
}

/// Words per group of the two-level search (two cache lines).
const GROUP: usize = 16;

impl KeyPrefixes {
    /// `keys` must be sorted (ties allowed: a key may appear in several versions).
    pub fn new<'a>(keys: impl ExactSizeIterator<Item = &'a [u8]> + Clone) -> KeyPrefixes {
        let mut it = keys.clone();
        let Some(first) = it.next() else {
            return KeyPrefixes::default();
        };
        let last = it.last().unwrap_or(first);
        // In a sorted run the first and last keys share exactly the run's common prefix.
        let common_len = first.iter().zip(last).take_while(|(a, b)| a == b).count();
        let words: Vec<u64> = keys.map(|k| word(k, common_len)).collect();
        debug_assert!(words.windows(2).all(|w| w[0] <= w[1]), "keys out of order");
        KeyPrefixes {
            common: first[..common_len].to_vec(),
            group_firsts: words.iter().step_by(GROUP).copied().collect(),
            words,
        }
    }

    pub fn heap_bytes(&self) -> usize {
        self.common.capacity() + (self.words.capacity() + self.group_firsts.capacity()) * 8
    }

    /// The positions `lo..hi` whose key may equal `key`: every key before `lo` is less
    /// than `key` and every key from `hi` on is greater.
    pub fn candidates(&self, key: &[u8]) -> (usize, usize) {
        let n = self.words.len();
        let c = self.common.len();
        let head = &key[..key.len().min(c)];
        match head.cmp(&self.common) {
            // `key` is shorter than the common prefix and a prefix of it, or smaller.
            Ordering::Less => return (0, 0),
            Ordering::Greater => return (n, n),
            Ordering::Equal => {}
        }
        let w = word(key, c);
        // The first group starting at or after `w`: the first word >= `w` is in the group
        // before it, or is its first.
        let g = self.group_firsts.partition_point(|&x| x < w);
        let start = g.saturating_sub(1) * GROUP;
        let end = (g * GROUP).min(n);
        let lo = start + self.words[start..end].partition_point(|&x| x < w);
        // Ties are rare (keys that agree on these 8 bytes): step over a few, then search.
        let mut hi = lo;
        while hi < n && self.words[hi] == w && hi - lo < GROUP {
            hi += 1;
        }
        if hi < n && self.words[hi] == w {
            hi += self.words[hi..].partition_point(|&x| x == w);
        }
        (lo, hi)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Searching through the prefixes finds the same position as a plain search.
        #[test]
        fn candidates_bracket_the_plain_partition_point(
            mut keys in proptest::collection::vec(proptest::collection::vec(0u8..4, 0..14), 1..200),
            probe in proptest::collection::vec(0u8..4, 0..14),
            shared in proptest::collection::vec(any::<u8>(), 0..10),
        ) {
            for k in keys.iter_mut() {
                k.splice(0..0, shared.iter().copied());
            }
            keys.sort();
            let p = KeyPrefixes::new(keys.iter().map(|k| k.as_slice()));
            for probe in [probe.clone(), [shared.clone(), probe].concat()] {
                let (lo, hi) = p.candidates(&probe);
                prop_assert!(lo <= hi && hi <= keys.len());
                prop_assert!(keys[..lo].iter().all(|k| *k < probe));
                prop_assert!(keys[hi..].iter().all(|k| *k > probe));
                let plain = keys.partition_point(|k| *k < probe);
                prop_assert_eq!(lo + keys[lo..hi].partition_point(|k| *k < probe), plain);
            }
        }
    }

    #[test]
    fn keys_shorter_than_the_common_prefix() {
        let keys: Vec<&[u8]> = vec![b"tab/1", b"tab/2"];
        let p = KeyPrefixes::new(keys.iter().copied());
        assert_eq!(p.candidates(b"ta"), (0, 0));
        assert_eq!(p.candidates(b"tb"), (2, 2));
        assert_eq!(p.candidates(b"tab/15"), (1, 1));
        assert_eq!(p.candidates(b"tab/2"), (1, 2));
    }
}
