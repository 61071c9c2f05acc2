//! The manifest: which SSTs make up each level, and how much of the WAL they cover.
//! Each change writes a whole new `MANIFEST-<n>` and then atomically repoints `CURRENT`
//! at it (both via write-temp, fsync, rename, fsync-dir), so after a crash the shard sees
//! either the old or the new state, never a mix.

use crate::entry::{get_u32, get_u64, get_varint, put_varint};
use crate::error::{corrupt, io_err, Result};
use crate::sst::SstMeta;
use rdb_io::fs::{install_file, File, Fs};
use std::path::Path;

pub const MANIFEST_MAGIC: &[u8; 8] = b"RDBMAN\0\x01";
pub const MANIFEST_VERSION: u32 = 1;
pub const LEVELS: usize = 7;

/// One consistent state of the shard's files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Version {
    /// Number of this manifest (also its file name).
    pub number: u64,
    pub next_file_no: u64,
    /// Every WAL record up to this LSN is in the SSTs.
    pub log_lsn: u64,
    /// Highest sequence number in the SSTs.
    pub last_seq: u64,
    /// Level 0 newest first (files may overlap); deeper levels sorted by key, disjoint.
    pub levels: Vec<Vec<SstMeta>>,
}

impl Default for Version {
    fn default() -> Self {
        Version {
            number: 0,
            next_file_no: 1,
            log_lsn: 0,
            last_seq: 0,
            levels: vec![Vec::new(); LEVELS],
        }
    }
}

impl Version {
    pub fn level_bytes(&self, level: usize) -> u64 {
        self.levels[level].iter().map(|f| f.size).sum()
    }

    pub fn all_files(&self) -> impl Iterator<Item = &SstMeta> {
        self.levels.iter().flatten()
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(MANIFEST_MAGIC);
        b.extend_from_slice(&MANIFEST_VERSION.to_le_bytes());
        for v in [self.number, self.next_file_no, self.log_lsn, self.last_seq] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        b.extend_from_slice(&(self.levels.len() as u32).to_le_bytes());
        for level in &self.levels {
            b.extend_from_slice(&(level.len() as u32).to_le_bytes());
            for f in level {
                for v in [f.file_no, f.size, f.entries, f.smallest_seq, f.largest_seq] {
                    b.extend_from_slice(&v.to_le_bytes());
                }
                for k in [&f.smallest_key, &f.largest_key] {
                    put_varint(&mut b, k.len() as u64);
                    b.extend_from_slice(k);
                }
            }
        }
        let crc = crc32c::crc32c(&b);
        b.extend_from_slice(&crc.to_le_bytes());
        b
    }

    pub fn decode(b: &[u8]) -> std::result::Result<Version, (usize, &'static str)> {
        if b.len() < 12 || &b[..8] != MANIFEST_MAGIC {
            return Err((0, "bad manifest magic"));
        }
        let body = &b[..b.len() - 4];
        let crc = get_u32(b, b.len() - 4).ok_or((b.len(), "manifest truncated"))?;
        if crc32c::crc32c(body) != crc {
            return Err((0, "manifest checksum mismatch"));
        }
        if get_u32(b, 8) != Some(MANIFEST_VERSION) {
            return Err((8, "unsupported manifest version"));
        }
        let t = |p: usize| get_u64(body, p).ok_or((p, "manifest truncated"));
        let mut v = Version {
            number: t(12)?,
            next_file_no: t(20)?,
            log_lsn: t(28)?,
            last_seq: t(36)?,
            levels: Vec::new(),
        };
        let nlevels = get_u32(body, 44).ok_or((44, "manifest truncated"))? as usize;
        if nlevels != LEVELS {
            return Err((44, "unexpected level count"));
        }
        let mut pos = 48;
        for _ in 0..nlevels {
            let n = get_u32(body, pos).ok_or((pos, "manifest truncated"))? as usize;
            pos += 4;
            let mut level = Vec::with_capacity(n.min(1 << 16));
            for _ in 0..n {
                let f = [
                    t(pos)?,
                    t(pos + 8)?,
                    t(pos + 16)?,
                    t(pos + 24)?,
                    t(pos + 32)?,
                ];
                pos += 40;
                let mut keys = Vec::new();
                for _ in 0..2 {
                    let len =
                        get_varint(body, &mut pos).ok_or((pos, "manifest truncated"))? as usize;
                    let end = pos.checked_add(len).ok_or((pos, "manifest truncated"))?;
                    keys.push(
                        body.get(pos..end)
                            .ok_or((pos, "manifest truncated"))?
                            .to_vec(),
                    );
                    pos = end;
                }
                let largest_key = keys.pop().expect("two keys");
                let smallest_key = keys.pop().expect("two keys");
                level.push(SstMeta {
                    file_no: f[0],
                    size: f[1],
                    entries: f[2],
                    smallest_seq: f[3],
                    largest_seq: f[4],
                    smallest_key,
                    largest_key,
                });
            }
            v.levels.push(level);
        }
        if pos != body.len() {
            return Err((pos, "trailing bytes in manifest"));
        }
        Ok(v)
    }
}

pub fn manifest_name(n: u64) -> String {
    format!("MANIFEST-{n:06}")
}

pub fn sst_name(file_no: u64) -> String {
    format!("{file_no:06}.sst")
}

/// Durably installs `v` as the current state of the shard in `dir`.
pub async fn install<F: Fs>(fs: &F, dir: &Path, v: &Version) -> Result<()> {
    let path = dir.join(manifest_name(v.number));
    install_file(fs, &path, &v.encode())
        .await
        .map_err(|e| io_err(&path, e))?;
    let current = dir.join("CURRENT");
    let body = format!("{}\n", manifest_name(v.number));
    install_file(fs, &current, body.as_bytes())
        .await
        .map_err(|e| io_err(&current, e))
}

/// Loads the state `CURRENT` points at, or `None` for a new shard.
pub async fn load<F: Fs>(fs: &F, dir: &Path) -> Result<Option<Version>> {
    let current = dir.join("CURRENT");
    if !fs.exists(&current) {
        return Ok(None);
    }
    let name = read_all(fs, &current).await?;
    // CURRENT is zero-padded to a block: the name ends at the newline.
    let end = name
        .iter()
        .position(|b| *b == b'\n')
        .ok_or_else(|| corrupt(&current, 0, "CURRENT has no newline"))?;
    let name = std::str::from_utf8(&name[..end])
        .map_err(|_| corrupt(&current, 0, "CURRENT is not UTF-8"))?;
    if !name.starts_with("MANIFEST-") || name.contains('/') {
        return Err(corrupt(&current, 0, "CURRENT does not name a manifest"));
    }
    let path = dir.join(name);
    let bytes = read_all(fs, &path).await?;
    decode_padded(&bytes)
        .map(Some)
        .map_err(|(off, r)| corrupt(&path, off as u64, r))
}

/// Decodes a manifest file image, which is zero-padded to a block: its structure gives
/// the encoded length, and the checksum covers exactly that.
pub fn decode_padded(bytes: &[u8]) -> std::result::Result<Version, (usize, &'static str)> {
    let len = encoded_len(bytes).ok_or((0, "manifest truncated"))?;
    Version::decode(&bytes[..len])
}

/// Length of an encoded manifest inside a padded buffer, by walking its structure.
fn encoded_len(b: &[u8]) -> Option<usize> {
    let nlevels = get_u32(b, 44)? as usize;
    if nlevels != LEVELS {
        return None;
    }
    let mut pos = 48;
    for _ in 0..nlevels {
        let n = get_u32(b, pos)? as usize;
        pos += 4;
        for _ in 0..n {
            pos += 40;
            for _ in 0..2 {
                let len = get_varint(b, &mut pos)? as usize;
                pos = pos.checked_add(len)?;
            }
        }
    }
    let end = pos.checked_add(4)?;
    (end <= b.len()).then_some(end)
}

async fn read_all<F: Fs>(fs: &F, path: &Path) -> Result<Vec<u8>> {
    let f = fs.open(path).await.map_err(|e| io_err(path, e))?;
    let n = f.size().await.map_err(|e| io_err(path, e))?;
    f.read_at(0, n as usize).await.map_err(|e| io_err(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_lite::future::block_on;
    use rdb_io::fs::MemFs;

    fn sample() -> Version {
        let mut v = Version {
            number: 3,
            next_file_no: 9,
            log_lsn: 77,
            last_seq: 1234,
            ..Default::default()
        };
        v.levels[0].push(SstMeta {
            file_no: 8,
            size: 4096,
            entries: 10,
            smallest_key: b"a".to_vec(),
            smallest_seq: 5,
            largest_key: b"zz".to_vec(),
            largest_seq: 1,
        });
        v
    }

    #[test]
    fn round_trip_and_corruption() {
        let v = sample();
        let b = v.encode();
        assert_eq!(Version::decode(&b).unwrap(), v);
        for i in 0..b.len() {
            let mut d = b.clone();
            d[i] ^= 4;
            assert!(Version::decode(&d).is_err(), "flip at {i} unnoticed");
        }
    }

    #[test]
    fn install_and_load() {
        block_on(async {
            let fs = MemFs::new(1);
            let dir = Path::new("/s");
            assert!(load(&fs, dir).await.unwrap().is_none());
            install(&fs, dir, &sample()).await.unwrap();
            fs.power_loss();
            assert_eq!(load(&fs, dir).await.unwrap(), Some(sample()));
        });
    }
}
