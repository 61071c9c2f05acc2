//! Record framing: `len u32 | crc32c u32 | lsn u64 | batch_first_lsn u64 | payload`,
//! little-endian, padded with zeros to 8 bytes. The CRC covers len, both LSNs and the
//! payload. `batch_first_lsn` is the first LSN of the group commit that wrote the
//! record; recovery uses it to tell a torn last write from older corruption.

pub const RECORD_HEADER_BYTES: usize = 24;
/// Largest payload accepted (a batch of documents larger than this is split above us).
pub const RECORD_PAYLOAD_MAX: usize = 64 * 1024 * 1024;

pub fn padded_len(payload: usize) -> usize {
    (RECORD_HEADER_BYTES + payload).div_ceil(8) * 8
}

pub fn encode(out: &mut Vec<u8>, lsn: u64, batch_first: u64, payload: &[u8]) {
    let start = out.len();
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&lsn.to_le_bytes());
    out.extend_from_slice(&batch_first.to_le_bytes());
    out.extend_from_slice(payload);
    let crc = checksum(&out[start..]);
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    out.resize(start + padded_len(payload.len()), 0);
}

fn checksum(rec: &[u8]) -> u32 {
    let c = crc32c::crc32c(&rec[..4]);
    crc32c::crc32c_append(c, &rec[8..])
}

/// What sits at an offset of a segment.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded<'a> {
    Record {
        lsn: u64,
        batch_first: u64,
        payload: &'a [u8],
        next: usize,
    },
    /// Zeros: the end of what was written.
    End,
    /// Not a valid record (torn or corrupt), with the reason.
    Bad(&'static str),
}

pub fn decode(buf: &[u8], at: usize) -> Decoded<'_> {
    let Some(h) = buf.get(at..at + RECORD_HEADER_BYTES) else {
        return if buf[at.min(buf.len())..].iter().all(|b| *b == 0) {
            Decoded::End
        } else {
            Decoded::Bad("truncated record header")
        };
    };
    let len = u32::from_le_bytes(h[0..4].try_into().expect("4 bytes")) as usize;
    let crc = u32::from_le_bytes(h[4..8].try_into().expect("4 bytes"));
    if len == 0 && crc == 0 && h.iter().all(|b| *b == 0) {
        return Decoded::End;
    }
    if len > RECORD_PAYLOAD_MAX {
        return Decoded::Bad("record length out of range");
    }
    let end = at + RECORD_HEADER_BYTES + len;
    let Some(rec) = buf.get(at..end) else {
        return Decoded::Bad("record extends past the end of the file");
    };
    if checksum(rec) != crc {
        return Decoded::Bad("checksum mismatch");
    }
    let lsn = u64::from_le_bytes(h[8..16].try_into().expect("8 bytes"));
    let batch_first = u64::from_le_bytes(h[16..24].try_into().expect("8 bytes"));
    Decoded::Record {
        lsn,
        batch_first,
        payload: &rec[RECORD_HEADER_BYTES..],
        next: at + padded_len(len),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn round_trip_and_damage() {
        let mut b = Vec::new();
        encode(&mut b, 7, 5, b"hello");
        assert_eq!(b.len() % 8, 0);
        match decode(&b, 0) {
            Decoded::Record {
                lsn,
                batch_first,
                payload,
                next,
            } => {
                assert_eq!(
                    (lsn, batch_first, payload, next),
                    (7, 5, &b"hello"[..], b.len())
                );
            }
            other => panic!("{other:?}"),
        }
        for i in 0..(RECORD_HEADER_BYTES + 5) {
            let mut d = b.clone();
            d[i] ^= 0x10;
            assert!(
                matches!(decode(&d, 0), Decoded::Bad(_)),
                "flip at byte {i} went unnoticed"
            );
        }
        assert_eq!(decode(&[0u8; 64], 0), Decoded::End);
    }

    proptest! {
        #[test]
        fn decoding_garbage_never_panics(buf in proptest::collection::vec(any::<u8>(), 0..200), at in 0usize..200) {
            let _ = decode(&buf, at.min(buf.len()));
        }
    }
}
