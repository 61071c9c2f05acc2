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

/// Where the prefix section of a sorted run of keys lies in a byte buffer, laid out for
/// the search: the common prefix (8 bytes per word, big-endian, zero-padded), then every
/// `GROUP`th key's word, then every key's word (words in native byte order). A search
/// reads the first cache line or two, then two lines of the words: no pointer to chase
/// between them. The section lives in its owner's buffer (a decoded block keeps it in
/// the same allocation as its entries).
#[derive(Clone, Copy, Debug, Default)]
pub struct KeyPrefixes {
    /// Offset of the section in the buffer.
    at: usize,
    /// Bytes every key of the run starts with.
    common_len: usize,
    /// Keys in the run.
    len: usize,
}

/// Words per group of the two-level search (two cache lines).
const GROUP: usize = 16;

/// The first `i` in `lo..hi` for which `less(i)` is false (`less` must be monotone).
fn lower_bound(mut lo: usize, mut hi: usize, less: impl Fn(usize) -> bool) -> usize {
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if less(mid) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    lo
}

impl KeyPrefixes {
    /// Appends the section for `keys` to `out`. `keys` must be sorted (ties allowed: a
    /// key may appear in several versions).
    pub fn build<'a>(
        keys: impl ExactSizeIterator<Item = &'a [u8]> + Clone,
        out: &mut Vec<u8>,
    ) -> KeyPrefixes {
        let at = out.len();
        let len = keys.len();
        let mut it = keys.clone();
        let Some(first) = it.next() else {
            return KeyPrefixes {
                at,
                ..KeyPrefixes::default()
            };
        };
        let last = it.last().unwrap_or(first);
        // In a sorted run the first and last keys share exactly the run's common prefix.
        let common_len = first.iter().zip(last).take_while(|(a, b)| a == b).count();
        let p = KeyPrefixes {
            at,
            common_len,
            len,
        };
        out.reserve(p.section_bytes());
        for i in 0..common_len.div_ceil(8) {
            out.extend_from_slice(&word(&first[..common_len], i * 8).to_ne_bytes());
        }
        for k in keys.clone().step_by(GROUP).chain(keys) {
            out.extend_from_slice(&word(k, common_len).to_ne_bytes());
        }
        debug_assert!(
            (1..len).all(|i| p.word(out, i - 1) <= p.word(out, i)),
            "keys out of order"
        );
        p
    }

    /// (offset, common prefix length, keys): what `from_parts` rebuilds it from.
    pub fn parts(&self) -> (usize, usize, usize) {
        (self.at, self.common_len, self.len)
    }

    pub fn from_parts(at: usize, common_len: usize, len: usize) -> KeyPrefixes {
        KeyPrefixes {
            at,
            common_len,
            len,
        }
    }

    /// Bytes of the section.
    pub fn section_bytes(&self) -> usize {
        (self.common_len.div_ceil(8) + self.len.div_ceil(GROUP) + self.len) * 8
    }

    fn load(buf: &[u8], at: usize) -> u64 {
        u64::from_ne_bytes(buf[at..at + 8].try_into().expect("8 bytes"))
    }

    /// Word `i` of the common prefix.
    fn common_word(&self, buf: &[u8], i: usize) -> u64 {
        Self::load(buf, self.at + i * 8)
    }

    /// The first word of group `g`.
    fn group_first(&self, buf: &[u8], g: usize) -> u64 {
        Self::load(buf, self.at + (self.common_len.div_ceil(8) + g) * 8)
    }

    /// The word of key `i`.
    fn word(&self, buf: &[u8], i: usize) -> u64 {
        let words_at = self.common_len.div_ceil(8) + self.len.div_ceil(GROUP);
        Self::load(buf, self.at + (words_at + i) * 8)
    }

    /// `key`'s first bytes against the common prefix (`Less` also when `key` is a
    /// proper prefix of it).
    fn cmp_common(&self, buf: &[u8], key: &[u8]) -> Ordering {
        let c = self.common_len;
        for i in 0..c.div_ceil(8) {
            let at = i * 8;
            let bytes = self.common_word(buf, i).to_be_bytes();
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
    /// than `key` and every key from `hi` on is greater. `buf` holds the section.
    pub fn candidates(&self, buf: &[u8], key: &[u8]) -> (usize, usize) {
        let n = self.len;
        match self.cmp_common(buf, key) {
            Ordering::Less => return (0, 0),
            Ordering::Greater => return (n, n),
            Ordering::Equal => {}
        }
        let w = word(key, self.common_len);
        // The first group starting at or after `w`: the first word >= `w` is in the group
        // before it, or is its first.
        let g = lower_bound(0, n.div_ceil(GROUP), |g| self.group_first(buf, g) < w);
        let start = g.saturating_sub(1) * GROUP;
        let end = (g * GROUP).min(n);
        let lo = lower_bound(start, end, |i| self.word(buf, i) < w);
        // Ties are rare (keys that agree on these 8 bytes): step over a few, then search.
        let mut hi = lo;
        while hi < n && self.word(buf, hi) == w && hi - lo < GROUP {
            hi += 1;
        }
        if hi < n && self.word(buf, hi) == w {
            hi = lower_bound(hi, n, |i| self.word(buf, i) == w);
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
            let mut buf = vec![0xAA; 3];
            let p = KeyPrefixes::build(keys.iter().map(|k| k.as_slice()), &mut buf);
            prop_assert_eq!(buf.len(), 3 + p.section_bytes());
            for probe in [probe.clone(), [shared.clone(), probe].concat()] {
                let (lo, hi) = p.candidates(&buf, &probe);
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
        let mut buf = Vec::new();
        let p = KeyPrefixes::build(keys.iter().copied(), &mut buf);
        assert_eq!(p.candidates(&buf, b"ta"), (0, 0));
        assert_eq!(p.candidates(&buf, b"tb"), (2, 2));
        assert_eq!(p.candidates(&buf, b"tab/15"), (1, 1));
        assert_eq!(p.candidates(&buf, b"tab/2"), (1, 2));
    }
}
