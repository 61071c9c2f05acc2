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

/// The prefixes of a sorted run of keys, in one allocation laid out for the search:
/// the common prefix (8 bytes per word, big-endian, zero-padded), then every `GROUP`th
/// word, then every key's word. A search reads the first cache line or two, then two
/// lines of the words: no pointer to chase between them.
#[derive(Debug, Default)]
pub struct KeyPrefixes {
    buf: Vec<u64>,
    /// Bytes every key of the run starts with.
    common_len: usize,
    /// Keys in the run.
    len: usize,
}

/// Words per group of the two-level search (two cache lines).
const GROUP: usize = 16;

impl KeyPrefixes {
    /// `keys` must be sorted (ties allowed: a key may appear in several versions).
    pub fn new<'a>(keys: impl ExactSizeIterator<Item = &'a [u8]> + Clone) -> KeyPrefixes {
        let len = keys.len();
        let mut it = keys.clone();
        let Some(first) = it.next() else {
            return KeyPrefixes::default();
        };
        let last = it.last().unwrap_or(first);
        // In a sorted run the first and last keys share exactly the run's common prefix.
        let common_len = first.iter().zip(last).take_while(|(a, b)| a == b).count();
        let common_words = common_len.div_ceil(8);
        let mut buf = Vec::with_capacity(common_words + len.div_ceil(GROUP) + len);
        buf.extend((0..common_words).map(|i| word(&first[..common_len], i * 8)));
        buf.extend(keys.clone().step_by(GROUP).map(|k| word(k, common_len)));
        buf.extend(keys.map(|k| word(k, common_len)));
        let p = KeyPrefixes {
            buf,
            common_len,
            len,
        };
        debug_assert!(
            p.words().windows(2).all(|w| w[0] <= w[1]),
            "keys out of order"
        );
        p
    }

    fn group_firsts(&self) -> &[u64] {
        let at = self.common_len.div_ceil(8);
        &self.buf[at..at + self.len.div_ceil(GROUP)]
    }

    fn words(&self) -> &[u64] {
        &self.buf[self.buf.len() - self.len..]
    }

    pub fn heap_bytes(&self) -> usize {
        self.buf.capacity() * 8
    }

    /// `key`'s first bytes against the common prefix (`Less` also when `key` is a
    /// proper prefix of it).
    fn cmp_common(&self, key: &[u8]) -> Ordering {
        let c = self.common_len;
        for (i, w) in self.buf[..c.div_ceil(8)].iter().enumerate() {
            let at = i * 8;
            let bytes = w.to_be_bytes();
            let want = &bytes[..(c - at).min(8)];
            let got = key.get(at..key.len().min(at + want.len())).unwrap_or(&[]);
            match got.cmp(want) {
                Ordering::Equal => {}
                o => return o,
            }
        }
        Ordering::Equal
    }

    /// The positions `lo..hi` whose key may equal `key`: every key before `lo` is less
    /// than `key` and every key from `hi` on is greater.
    pub fn candidates(&self, key: &[u8]) -> (usize, usize) {
        let n = self.len;
        match self.cmp_common(key) {
            Ordering::Less => return (0, 0),
            Ordering::Greater => return (n, n),
            Ordering::Equal => {}
        }
        let w = word(key, self.common_len);
        let words = self.words();
        // The first group starting at or after `w`: the first word >= `w` is in the group
        // before it, or is its first.
        let g = self.group_firsts().partition_point(|&x| x < w);
        let start = g.saturating_sub(1) * GROUP;
        let end = (g * GROUP).min(n);
        let lo = start + words[start..end].partition_point(|&x| x < w);
        // Ties are rare (keys that agree on these 8 bytes): step over a few, then search.
        let mut hi = lo;
        while hi < n && words[hi] == w && hi - lo < GROUP {
            hi += 1;
        }
        if hi < n && words[hi] == w {
            hi += words[hi..].partition_point(|&x| x == w);
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
            shared in proptest::collection::vec(any::<u8>(), 0..20),
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
