//! Bloom filters over user keys, built from two CRC32C-based hashes (stable across
//! platforms and releases, unlike std's hasher).
//!
//! Two layouts, told apart by the first byte:
//! - blocked (written now): `64 + k u8 | 64-byte lines`. A key's k probes all fall in one
//!   line picked by its first hash, so a lookup costs one cache miss where the classic
//!   layout costs one per probe; point reads check a filter per file, so this matters.
//! - classic (files written before): `k u8 | bits`, k <= 30 probes over the whole array.

const BITS_PER_KEY: usize = 10;
/// Probes per key in the blocked layout (the best count for 10 bits per key there).
const BLOCKED_K: u8 = 6;
const BLOCKED_TAG: u8 = 64;
const LINE_BYTES: usize = 64;

/// A key's two hashes; computed once per lookup and shared by every filter probed.
#[derive(Clone, Copy, Debug)]
pub struct KeyHash(u32, u32);

impl KeyHash {
    pub fn of(key: &[u8]) -> KeyHash {
        KeyHash(
            crc32c::crc32c(key),
            crc32c::crc32c_append(0x9747_b28c, key) | 1,
        )
    }
}

/// The line of the blocked layout for hash `h1` (a multiply-shift: no division).
fn line_of(h1: u32, lines: usize) -> usize {
    ((u64::from(h1) * lines as u64) >> 32) as usize
}

/// Bit positions within a line: double hashing on h2 with a second stride from its top.
fn line_bits(h2: u32, k: u8) -> impl Iterator<Item = usize> {
    let step = h2.rotate_left(15) | 1;
    (0..u32::from(k)).map(move |i| (h2.wrapping_add(i.wrapping_mul(step)) % 512) as usize)
}

/// A blocked filter for `keys`.
pub fn build(keys: &[&[u8]]) -> Vec<u8> {
    let lines = (keys.len() * BITS_PER_KEY).div_ceil(LINE_BYTES * 8).max(1);
    let mut out = vec![0u8; 1 + lines * LINE_BYTES];
    out[0] = BLOCKED_TAG + BLOCKED_K;
    for key in keys {
        let KeyHash(h1, h2) = KeyHash::of(key);
        let line = 1 + line_of(h1, lines) * LINE_BYTES;
        for bit in line_bits(h2, BLOCKED_K) {
            out[line + bit / 8] |= 1 << (bit % 8);
        }
    }
    out
}

/// False means definitely absent. A malformed filter answers "maybe".
pub fn may_contain(filter: &[u8], h: KeyHash) -> bool {
    let KeyHash(h1, h2) = h;
    match filter.first() {
        Some(&tag) if tag > BLOCKED_TAG && tag <= BLOCKED_TAG + 30 => {
            let body = &filter[1..];
            if body.is_empty() || !body.len().is_multiple_of(LINE_BYTES) {
                return true;
            }
            let line = &body[line_of(h1, body.len() / LINE_BYTES) * LINE_BYTES..][..LINE_BYTES];
            line_bits(h2, tag - BLOCKED_TAG).all(|bit| line[bit / 8] & (1 << (bit % 8)) != 0)
        }
        Some(&k) if k > 0 && k <= 30 && filter.len() >= 2 => {
            let nbits = (filter.len() - 1) * 8;
            (0..u32::from(k)).all(|i| {
                let bit = (h1.wrapping_add(i.wrapping_mul(h2)) as usize) % nbits;
                filter[1 + bit / 8] & (1 << (bit % 8)) != 0
            })
        }
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(range: std::ops::Range<u32>) -> Vec<Vec<u8>> {
        range.map(|i| i.to_be_bytes().to_vec()).collect()
    }

    fn false_positives(f: &[u8]) -> usize {
        (1000..11000u32)
            .filter(|i| may_contain(f, KeyHash::of(&i.to_be_bytes())))
            .count()
    }

    #[test]
    fn no_false_negatives_and_few_false_positives() {
        let keys = keys(0..1000);
        let refs: Vec<&[u8]> = keys.iter().map(|k| k.as_slice()).collect();
        let f = build(&refs);
        assert_eq!(f[0], BLOCKED_TAG + BLOCKED_K);
        assert!(refs.iter().all(|k| may_contain(&f, KeyHash::of(k))));
        let fp = false_positives(&f);
        assert!(fp < 300, "{fp} false positives in 10000");
    }

    /// Files written before the blocked layout keep their classic filters.
    #[test]
    fn reads_the_classic_layout() {
        let keys = keys(0..1000);
        let nbits = 1000 * BITS_PER_KEY;
        let mut f = vec![0u8; 1 + nbits / 8];
        f[0] = 7;
        for k in &keys {
            let KeyHash(h1, h2) = KeyHash::of(k);
            for i in 0..7u32 {
                let bit = (h1.wrapping_add(i.wrapping_mul(h2)) as usize) % nbits;
                f[1 + bit / 8] |= 1 << (bit % 8);
            }
        }
        assert!(keys.iter().all(|k| may_contain(&f, KeyHash::of(k))));
        assert!(false_positives(&f) < 300);
    }

    #[test]
    fn malformed_filters_answer_maybe() {
        let h = KeyHash::of(b"k");
        for f in [
            &[][..],
            &[0],
            &[31, 0],
            &[BLOCKED_TAG + 6, 0, 0],
            &[BLOCKED_TAG + 6],
        ] {
            assert!(may_contain(f, h), "{f:?}");
        }
    }
}
