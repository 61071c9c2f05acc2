//! SST constants, the block trailer and the footer.

use crate::entry::{get_u32, get_u64};

pub const SST_MAGIC: &[u8; 8] = b"RDBSST\0\x01";
pub const SST_VERSION: u32 = 1;
pub const FOOTER_BYTES: usize = 64;
/// Compression byte + crc32c.
pub const BLOCK_TRAILER_BYTES: usize = 5;
pub const COMPRESSION_NONE: u8 = 0;
pub const COMPRESSION_ZSTD: u8 = 1;
/// Uncompressed size at which a data block is cut. zstd builds its entropy tables per
/// block, which at 4 KiB was most of its cost: 16 KiB blocks halved the CPU of building
/// an SST and made engine fills 24% and reads after them 15-20% faster
/// (`rdb-bench engine`, fillrandom/readrandom of 3M keys).
pub const DATA_BLOCK_BYTES: usize = 16384;
/// Largest block (after decompression) a reader accepts.
pub const BLOCK_BYTES_MAX: usize = 64 * 1024 * 1024;

/// A thread's reusable zstd contexts (compressor at level -1, decompressor). Level -1
/// leaves literals without entropy coding: building an SST of small documents took 40-45%
/// less CPU than at level 1, for files within 4% of the size. Flushes and compactions
/// are a third of a write load's CPU.
type ZstdContexts = (
    Option<zstd::bulk::Compressor<'static>>,
    Option<zstd::bulk::Decompressor<'static>>,
);

thread_local! {
    /// Creating zstd contexts per block cost about a tenth of the write path.
    static ZSTD: std::cell::RefCell<ZstdContexts> =
        std::cell::RefCell::new((zstd::bulk::Compressor::new(-1).ok(), zstd::bulk::Decompressor::new().ok()));
}

/// Where a block lives: offset and length including its trailer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockHandle {
    pub offset: u64,
    pub len: u32,
}

/// Appends a block (compressing it if that pays) with its trailer; returns its handle.
pub fn write_block(out: &mut Vec<u8>, raw: &[u8], compress: bool) -> BlockHandle {
    let offset = out.len() as u64;
    let compressed = if compress {
        ZSTD.with(|z| z.borrow_mut().0.as_mut().and_then(|c| c.compress(raw).ok()))
    } else {
        None
    };
    let (payload, kind): (&[u8], u8) = match &compressed {
        Some(c) if c.len() + c.len() / 8 < raw.len() => (c, COMPRESSION_ZSTD),
        _ => (raw, COMPRESSION_NONE),
    };
    out.extend_from_slice(payload);
    out.push(kind);
    let crc = crc32c::crc32c(&out[offset as usize..]);
    out.extend_from_slice(&crc.to_le_bytes());
    BlockHandle {
        offset,
        len: (out.len() as u64 - offset) as u32,
    }
}

/// Checks a block's trailer and returns its uncompressed contents.
pub fn read_block(bytes: &[u8]) -> Result<Vec<u8>, &'static str> {
    if bytes.len() < BLOCK_TRAILER_BYTES {
        return Err("block shorter than its trailer");
    }
    let body = &bytes[..bytes.len() - 4];
    let crc = get_u32(bytes, bytes.len() - 4).ok_or("block trailer truncated")?;
    if crc32c::crc32c(body) != crc {
        return Err("block checksum mismatch");
    }
    let (payload, kind) = body.split_at(body.len() - 1);
    match kind[0] {
        COMPRESSION_NONE => Ok(payload.to_vec()),
        COMPRESSION_ZSTD => ZSTD
            .with(|z| match z.borrow_mut().1.as_mut() {
                Some(d) => d.decompress(payload, BLOCK_BYTES_MAX),
                None => zstd::bulk::decompress(payload, BLOCK_BYTES_MAX),
            })
            .map_err(|_| "zstd block does not decompress"),
        _ => Err("unknown block compression"),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Footer {
    pub index: BlockHandle,
    pub bloom: BlockHandle,
    pub meta: BlockHandle,
}

impl Footer {
    pub fn encode(&self) -> Vec<u8> {
        let mut f = Vec::with_capacity(FOOTER_BYTES);
        f.extend_from_slice(SST_MAGIC);
        f.extend_from_slice(&SST_VERSION.to_le_bytes());
        f.extend_from_slice(&0u32.to_le_bytes());
        for h in [self.index, self.bloom, self.meta] {
            f.extend_from_slice(&h.offset.to_le_bytes());
            f.extend_from_slice(&h.len.to_le_bytes());
        }
        f.resize(FOOTER_BYTES - 4, 0);
        let crc = crc32c::crc32c(&f);
        f.extend_from_slice(&crc.to_le_bytes());
        f
    }

    pub fn decode(b: &[u8]) -> Result<Footer, &'static str> {
        if b.len() != FOOTER_BYTES {
            return Err("footer has the wrong size");
        }
        if &b[..8] != SST_MAGIC {
            return Err("bad SST magic");
        }
        let crc = get_u32(b, FOOTER_BYTES - 4).ok_or("footer truncated")?;
        if crc32c::crc32c(&b[..FOOTER_BYTES - 4]) != crc {
            return Err("footer checksum mismatch");
        }
        if get_u32(b, 8) != Some(SST_VERSION) {
            return Err("unsupported SST version");
        }
        let h = |at: usize| -> Result<BlockHandle, &'static str> {
            Ok(BlockHandle {
                offset: get_u64(b, at).ok_or("footer truncated")?,
                len: get_u32(b, at + 8).ok_or("footer truncated")?,
            })
        };
        Ok(Footer {
            index: h(16)?,
            bloom: h(28)?,
            meta: h(40)?,
        })
    }
}
