//! Input mutations: a small, deterministic set in the spirit of libFuzzer's.

/// xorshift64*: fast, deterministic from its seed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Bytes that make structure in the formats fuzzed: JSON punctuation, varint and length
/// extremes, type tags.
const TOKENS: &[&[u8]] = &[
    b"[",
    b"]",
    b"{",
    b"}",
    b"\"",
    b",",
    b":",
    b"null",
    b"1e308",
    b"-0",
    b"\\u0000",
    b"\xff\xff\xff\xff",
    b"\x00\x00\x00\x00",
    b"\x80\x80\x80\x80\x80\x80\x80\x80\x80\x01",
    b"\x7f",
    b"\x06",
    b"\x07",
    b"[1,",
    b"[[[[[[[[",
    b"{\"a\":",
];

/// One to four mutations of `base`, sometimes spliced with `other`.
pub fn mutate(rng: &mut Rng, base: &[u8], other: &[u8], max: usize) -> Vec<u8> {
    let mut v = base.to_vec();
    for _ in 0..1 + rng.below(4) {
        match rng.below(9) {
            0 if !v.is_empty() => {
                let i = rng.below(v.len());
                v[i] ^= 1 << rng.below(8);
            }
            1 if !v.is_empty() => {
                let i = rng.below(v.len());
                v[i] = rng.next() as u8;
            }
            2 => {
                let i = rng.below(v.len() + 1);
                let n = 1 + rng.below(8);
                let bytes: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
                v.splice(i..i, bytes);
            }
            3 if !v.is_empty() => {
                let i = rng.below(v.len());
                let n = 1 + rng.below((v.len() - i).min(16));
                v.drain(i..i + n);
            }
            4 if !v.is_empty() => {
                // Repeat a slice: nesting and long runs.
                let i = rng.below(v.len());
                let n = 1 + rng.below((v.len() - i).min(32));
                let piece = v[i..i + n].to_vec();
                for _ in 0..1 + rng.below(64) {
                    v.splice(i..i, piece.iter().copied());
                }
            }
            5 if !other.is_empty() => {
                let cut = rng.below(v.len() + 1);
                let from = rng.below(other.len());
                v.truncate(cut);
                v.extend_from_slice(&other[from..]);
            }
            6 => {
                let i = rng.below(v.len() + 1);
                let t = TOKENS[rng.below(TOKENS.len())];
                v.splice(i..i, t.iter().copied());
            }
            7 if v.len() >= 4 => {
                // An interesting 32-bit value (length prefixes, counts).
                let i = rng.below(v.len() - 3);
                let vals = [0u32, 1, 0x7f, 0x80, 0xffff, 0x7fff_ffff, 0xffff_ffff];
                let x = vals[rng.below(vals.len())];
                v[i..i + 4].copy_from_slice(&x.to_le_bytes());
            }
            _ => {
                let cut = rng.below(v.len() + 1);
                v.truncate(cut);
            }
        }
    }
    v.truncate(max);
    v
}
