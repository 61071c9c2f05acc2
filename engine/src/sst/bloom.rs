//! Bloom filter over user keys: `k u8 | bits...`, probes by double hashing of two
//! CRC32C-based hashes (stable across platforms and releases, unlike std's hasher).

const BITS_PER_KEY: usize = 10;

fn hashes(key: &[u8]) -> (u32, u32) {
    let h1 = crc32c::crc32c(key);
    let h2 = crc32c::crc32c_append(0x9747_b28c, key) | 1;
    (h1, h2)
}

pub fn build(keys: &[&[u8]]) -> Vec<u8> {
    let nbits = (keys.len() * BITS_PER_KEY).max(64);
    let k: u8 = 7;
    let mut out = vec![0u8; 1 + nbits.div_ceil(8)];
    out[0] = k;
    let nbits = (out.len() - 1) * 8;
    for key in keys {
        let (h1, h2) = hashes(key);
        for i in 0..k as u32 {
            let bit = (h1.wrapping_add(i.wrapping_mul(h2)) as usize) % nbits;
            out[1 + bit / 8] |= 1 << (bit % 8);
        }
    }
    out
}

/// False means definitely absent. A malformed filter answers "maybe".
pub fn may_contain(filter: &[u8], key: &[u8]) -> bool {
    if filter.len() < 2 || filter[0] == 0 || filter[0] > 30 {
        return true;
    }
    let nbits = (filter.len() - 1) * 8;
    let (h1, h2) = hashes(key);
    (0..filter[0] as u32).all(|i| {
        let bit = (h1.wrapping_add(i.wrapping_mul(h2)) as usize) % nbits;
        filter[1 + bit / 8] & (1 << (bit % 8)) != 0
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_false_negatives_and_few_false_positives() {
        let keys: Vec<Vec<u8>> = (0..1000u32).map(|i| i.to_be_bytes().to_vec()).collect();
        let refs: Vec<&[u8]> = keys.iter().map(|k| k.as_slice()).collect();
        let f = build(&refs);
        assert!(refs.iter().all(|k| may_contain(&f, k)));
        let fp = (1000..11000u32)
            .filter(|i| may_contain(&f, &i.to_be_bytes()))
            .count();
        assert!(fp < 300, "{fp} false positives in 10000");
    }
}
