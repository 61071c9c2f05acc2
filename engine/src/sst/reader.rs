//! Reading an SST: footer, index, bloom and meta at open; data blocks on demand through
//! the block cache. Every byte read is checksummed before use.

use super::block::{decode_index, DecodedBlock, IndexEntry};
use super::bloom::{self, KeyHash};
use super::format::{read_block, BlockHandle, Footer, FOOTER_BYTES};
use super::prefix::KeyPrefixes;
use super::writer::{decode_meta, SstMeta};
use crate::cache::{Block, BlockCache, BlockSlots};
use crate::entry::{cmp_internal, Entry, Seq, SEQ_MAX};
use crate::error::{corrupt, io_err, Result};
use rdb_io::fs::{File, Fs};
use std::path::{Path, PathBuf};
use std::rc::Rc;

pub struct SstReader<F: Fs> {
    pub path: PathBuf,
    pub meta: SstMeta,
    file: F::File,
    index: Vec<IndexEntry>,
    /// Prefixes of the index's keys (the search over the index runs on these).
    index_prefixes: KeyPrefixes,
    /// The buffer `index_prefixes` lies in.
    index_prefix_buf: Vec<u8>,
    bloom: Vec<u8>,
    cache: Rc<BlockCache>,
    /// This file's blocks in the cache, by block number.
    cached: Rc<BlockSlots>,
}

impl<F: Fs> SstReader<F> {
    pub async fn open(
        fs: &F,
        path: &Path,
        file_no: u64,
        cache: Rc<BlockCache>,
    ) -> Result<SstReader<F>> {
        let file = fs.open(path).await.map_err(|e| io_err(path, e))?;
        let size = file.size().await.map_err(|e| io_err(path, e))?;
        if size < FOOTER_BYTES as u64 {
            return Err(corrupt(path, 0, "file shorter than an SST footer"));
        }
        let fb = file
            .read_at(size - FOOTER_BYTES as u64, FOOTER_BYTES)
            .await
            .map_err(|e| io_err(path, e))?;
        let footer =
            Footer::decode(&fb).map_err(|r| corrupt(path, size - FOOTER_BYTES as u64, r))?;
        let read = |h: BlockHandle| {
            let file = &file;
            async move {
                if h.offset + h.len as u64 > size {
                    return Err(corrupt(
                        path,
                        h.offset,
                        "block handle points past the end of the file",
                    ));
                }
                let b = file
                    .read_at(h.offset, h.len as usize)
                    .await
                    .map_err(|e| io_err(path, e))?;
                read_block(&b).map_err(|r| corrupt(path, h.offset, r))
            }
        };
        let index_raw = read(footer.index).await?;
        let index = decode_index(&index_raw).map_err(|r| corrupt(path, footer.index.offset, r))?;
        let bloom = read(footer.bloom).await?;
        let meta_raw = read(footer.meta).await?;
        let meta = decode_meta(&meta_raw, file_no, size)
            .map_err(|r| corrupt(path, footer.meta.offset, r))?;
        if index.is_empty() {
            return Err(corrupt(
                path,
                footer.index.offset,
                "SST without data blocks",
            ));
        }
        for w in index.windows(2) {
            if cmp_internal(&w[0].last_key, w[0].last_seq, &w[1].last_key, w[1].last_seq).is_ge() {
                return Err(corrupt(
                    path,
                    footer.index.offset,
                    "index entries out of order",
                ));
            }
        }
        let mut index_prefix_buf = Vec::new();
        let index_prefixes = KeyPrefixes::build(
            index.iter().map(|h| h.last_key.as_slice()),
            &mut index_prefix_buf,
        );
        let cached = BlockSlots::new(index.len());
        Ok(SstReader {
            path: path.to_path_buf(),
            meta,
            file,
            index,
            index_prefixes,
            index_prefix_buf,
            bloom,
            cache,
            cached,
        })
    }

    pub fn block_count(&self) -> usize {
        self.index.len()
    }

    /// Data block `i`, decoded, from the cache or the disk (then cached).
    pub async fn block(&self, i: usize) -> Result<Block> {
        if let Some(b) = self.cached.get(i) {
            self.cache.hit();
            return Ok(b);
        }
        let block = self.read_block(i).await?;
        self.cache
            .insert(self.meta.file_no, &self.cached, i, block.clone());
        Ok(block)
    }

    /// Reads, checks and decodes block `i` without the cache.
    async fn read_block(&self, i: usize) -> Result<DecodedBlock> {
        let h = &self.index[i];
        let raw = self
            .file
            .read_at(h.offset, h.len as usize)
            .await
            .map_err(|e| io_err(&self.path, e))?;
        self.decode_block(i, &raw)
    }

    /// Checks and decodes block `i` from its bytes as read from the file.
    fn decode_block(&self, i: usize, raw: &[u8]) -> Result<DecodedBlock> {
        let h = &self.index[i];
        if raw.len() != h.len as usize {
            return Err(corrupt(
                &self.path,
                h.offset,
                "block handle points past the end of the file",
            ));
        }
        let bytes = read_block(raw).map_err(|r| corrupt(&self.path, h.offset, r))?;
        let block = DecodedBlock::decode(&bytes).map_err(|r| corrupt(&self.path, h.offset, r))?;
        let Some(last) = block.len().checked_sub(1) else {
            return Err(corrupt(&self.path, h.offset, "empty data block"));
        };
        if block.key(last) != h.last_key.as_slice() || block.seq(last) != h.last_seq {
            return Err(corrupt(
                &self.path,
                h.offset,
                "data block does not end where the index says",
            ));
        }
        Ok(block)
    }

    /// Reads blocks `first..end` in one I/O, taking consecutive blocks while they
    /// follow each other in the file and fit in about `bytes_max` (always at least
    /// `first`): the bytes read, the file offset they start at, and `end`.
    async fn read_run(&self, first: usize, bytes_max: usize) -> Result<Run> {
        let start = self.index[first].offset;
        let mut stop = start.saturating_add(u64::from(self.index[first].len));
        let mut end = first + 1;
        while let Some(h) = self.index.get(end) {
            let next_stop = h.offset.saturating_add(u64::from(h.len));
            if h.offset != stop || next_stop - start > bytes_max as u64 {
                break;
            }
            stop = next_stop;
            end += 1;
        }
        let len = usize::try_from(stop - start)
            .map_err(|_| corrupt(&self.path, start, "block run too large"))?;
        let bytes = self
            .file
            .read_at(start, len)
            .await
            .map_err(|e| io_err(&self.path, e))?;
        Ok(Run { start, bytes, end })
    }

    /// Index of the first block that may hold entries >= (key, seq).
    fn first_block_at_or_after(&self, key: &[u8], seq: Seq) -> usize {
        let (lo, hi) = self.index_prefixes.candidates(&self.index_prefix_buf, key);
        lo + self.index[lo..hi]
            .partition_point(|h| cmp_internal(&h.last_key, h.last_seq, key, seq).is_lt())
    }

    /// Whether some entry's key lies in `[lo, hi]`. The file's key range only says where
    /// keys may be: a file written from two streams of appended keys spans the gap between
    /// them without holding a key in it. Reads at most one block.
    pub async fn has_key_in(&self, lo: &[u8], hi: &[u8]) -> Result<bool> {
        let (smallest, largest) = (
            self.meta.smallest_key.as_slice(),
            self.meta.largest_key.as_slice(),
        );
        if lo > hi || hi < smallest || lo > largest {
            return Ok(false);
        }
        if lo <= smallest || largest <= hi {
            return Ok(true);
        }
        let Some((bi, block, i)) = self.seek_in_block(lo, SEQ_MAX).await? else {
            return Ok(false);
        };
        if i >= block.len() {
            // The index promised an entry at or after `lo` in this block.
            return Err(corrupt(
                &self.path,
                self.index[bi].offset,
                "block ends before its index entry's key",
            ));
        }
        Ok(block.key(i) <= hi)
    }

    /// The newest version of `key` visible at `snap`: `Some(None)` is a tombstone.
    /// `hash` is `KeyHash::of(key)`, computed once by the caller for every file it probes.
    pub async fn get(
        &self,
        key: &[u8],
        hash: KeyHash,
        snap: Seq,
    ) -> Result<Option<Option<Vec<u8>>>> {
        if key < self.meta.smallest_key.as_slice() || key > self.meta.largest_key.as_slice() {
            return Ok(None);
        }
        if !bloom::may_contain(&self.bloom, hash) {
            return Ok(None);
        }
        let Some((_, block, i)) = self.seek_in_block(key, snap).await? else {
            return Ok(None);
        };
        Ok((i < block.len() && block.key(i) == key).then(|| block.value(i).map(<[u8]>::to_vec)))
    }

    /// The first block that may hold entries >= (key, seq), its number, and the position
    /// of the first such entry in it; `None` past the last block.
    async fn seek_in_block(&self, key: &[u8], seq: Seq) -> Result<Option<(usize, Block, usize)>> {
        let bi = self.first_block_at_or_after(key, seq);
        if bi >= self.index.len() {
            return Ok(None);
        }
        let block = self.block(bi).await?;
        let i = block.seek(key, seq);
        Ok(Some((bi, block, i)))
    }
}

/// A cursor over one SST in either direction.
pub struct SstIter<F: Fs> {
    sst: Rc<SstReader<F>>,
    reverse: bool,
    block_i: isize,
    block: Option<Block>,
    pos: isize,
}

impl<F: Fs> SstIter<F> {
    /// Positions at the first entry >= (key, seq) (forward) or <= (key, seq) (reverse).
    pub async fn seek(
        sst: Rc<SstReader<F>>,
        key: &[u8],
        seq: Seq,
        reverse: bool,
    ) -> Result<SstIter<F>> {
        let n = sst.index.len() as isize;
        let bi = sst.first_block_at_or_after(key, seq) as isize;
        let mut it = SstIter {
            sst,
            reverse,
            block_i: bi,
            block: None,
            pos: 0,
        };
        if bi >= n {
            if reverse {
                it.block_i = n - 1;
                it.load().await?;
                it.pos = it.block.as_ref().map_or(0, |b| b.len() as isize - 1);
            }
            return Ok(it);
        }
        it.load().await?;
        let b = it.block.as_ref().expect("just loaded");
        let i = b.seek(key, seq) as isize;
        if reverse {
            // Last entry <= target: the entry at i if it equals the target, else i - 1.
            let exact =
                (i as usize) < b.len() && b.key(i as usize) == key && b.seq(i as usize) == seq;
            it.pos = if exact { i } else { i - 1 };
            if it.pos < 0 {
                it.block_i -= 1;
                if it.block_i >= 0 {
                    it.load().await?;
                    it.pos = it.block.as_ref().map_or(0, |b| b.len() as isize - 1);
                } else {
                    it.block = None;
                }
            }
        } else {
            it.pos = i;
        }
        Ok(it)
    }

    /// Positions at the first entry (forward) or the last one (reverse).
    pub async fn start(sst: Rc<SstReader<F>>, reverse: bool) -> Result<SstIter<F>> {
        let n = sst.index.len() as isize;
        let mut it = SstIter {
            sst,
            reverse,
            block_i: if reverse { n - 1 } else { 0 },
            block: None,
            pos: 0,
        };
        it.load().await?;
        if reverse {
            it.pos = it.block.as_ref().map_or(0, |b| b.len() as isize - 1);
        }
        Ok(it)
    }

    async fn load(&mut self) -> Result<()> {
        self.block = if self.block_i >= 0 && (self.block_i as usize) < self.sst.index.len() {
            Some(self.sst.block(self.block_i as usize).await?)
        } else {
            None
        };
        Ok(())
    }

    /// The current entry, advancing past it.
    pub async fn next(&mut self) -> Result<Option<Entry>> {
        loop {
            let Some(b) = &self.block else {
                return Ok(None);
            };
            if self.pos >= 0 && (self.pos as usize) < b.len() {
                let e = b.entry(self.pos as usize);
                self.pos += if self.reverse { -1 } else { 1 };
                return Ok(Some(e));
            }
            self.block_i += if self.reverse { -1 } else { 1 };
            self.load().await?;
            self.pos = match (&self.block, self.reverse) {
                (Some(b), true) => b.len() as isize - 1,
                _ => 0,
            };
        }
    }
}

/// Bytes a scan reads at once. Blocks are small (a few KiB compressed) and a scan over
/// a whole file (a compaction) that read them one by one would wait once per block; on
/// a core busy with queries every wait costs it a turn of the scheduler, and a
/// compaction of a few files took longer than the memtable took to fill.
const SCAN_READ_BYTES: usize = 256 * 1024;

/// Consecutive blocks read in one I/O.
struct Run {
    /// File offset of `bytes[0]`.
    start: u64,
    bytes: Vec<u8>,
    /// The first block after the run.
    end: usize,
}

/// Every entry of an SST in order, read in runs of blocks and not through the cache
/// (a compaction's single pass over its inputs would only evict the blocks reads need).
pub struct SstScan<F: Fs> {
    sst: Rc<SstReader<F>>,
    next_block: usize,
    /// The block being handed out and the position in it.
    cur: Option<(DecodedBlock, usize)>,
    run: Option<Run>,
}

impl<F: Fs> SstScan<F> {
    pub fn new(sst: Rc<SstReader<F>>) -> SstScan<F> {
        SstScan {
            sst,
            next_block: 0,
            cur: None,
            run: None,
        }
    }

    /// Block `i` (the one after the last), from the current run or a new one.
    async fn block(&mut self, i: usize) -> Result<DecodedBlock> {
        if self.run.as_ref().is_none_or(|r| i >= r.end) {
            self.run = Some(self.sst.read_run(i, SCAN_READ_BYTES).await?);
        }
        let run = self.run.as_ref().expect("a run was just read");
        let h = &self.sst.index[i];
        // Blocks of a run follow each other in the file (`read_run`), so `i` lies in it;
        // a short read leaves its end missing, which `decode_block` reports.
        let from = usize::try_from(h.offset.saturating_sub(run.start)).unwrap_or(usize::MAX);
        let to = from.saturating_add(h.len as usize).min(run.bytes.len());
        self.sst.decode_block(i, &run.bytes[from.min(to)..to])
    }

    pub async fn next(&mut self) -> Result<Option<Entry>> {
        loop {
            if let Some((b, i)) = &mut self.cur {
                if *i < b.len() {
                    *i += 1;
                    return Ok(Some(b.entry(*i - 1)));
                }
            }
            if self.next_block >= self.sst.index.len() {
                return Ok(None);
            }
            self.cur = Some((self.block(self.next_block).await?, 0));
            self.next_block += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sst::build_sst;
    use futures_lite::future::block_on;
    use rdb_io::fs::MemFs;

    /// Enough entries for several scan runs (hundreds of blocks).
    fn entries() -> Vec<Entry> {
        // Values that do not compress away: a few xorshift words each.
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        (0..30_000u32)
            .map(|i| {
                let mut v = Vec::new();
                for _ in 0..4 {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    v.extend_from_slice(&x.to_le_bytes());
                }
                Entry {
                    key: format!("key-{i:08}").into_bytes(),
                    seq: u64::from(i) + 1,
                    value: (i % 7 != 0).then_some(v),
                }
            })
            .collect()
    }

    fn write(fs: &MemFs, path: &Path, entries: &[Entry]) -> SstReader<MemFs> {
        let (bytes, _) = build_sst(1, entries, true);
        fs.create_dir_all(path.parent().unwrap()).unwrap();
        block_on(rdb_io::fs::install_file(fs, path, &bytes)).unwrap();
        let cache = Rc::new(BlockCache::new(1 << 20));
        block_on(SstReader::open(fs, path, 1, cache)).unwrap()
    }

    fn scan_all(r: SstReader<MemFs>) -> Result<Vec<Entry>> {
        let mut scan = SstScan::new(Rc::new(r));
        let mut out = Vec::new();
        while let Some(e) = block_on(scan.next())? {
            out.push(e);
        }
        Ok(out)
    }

    #[test]
    fn a_scan_reads_runs_of_blocks_and_returns_every_entry() {
        let fs = MemFs::new(1);
        let path = Path::new("/s/000001.sst");
        let want = entries();
        let r = write(&fs, path, &want);
        let size = fs.contents(path).unwrap().len();
        assert!(
            size > 3 * SCAN_READ_BYTES,
            "{size} bytes: the test needs several runs"
        );
        let ops = fs.ops();
        let got = scan_all(r).unwrap();
        assert_eq!(got, want);
        let reads = fs.ops() - ops;
        assert!(
            reads <= (size / SCAN_READ_BYTES + 2) as u64,
            "{reads} reads for {size} bytes"
        );
    }

    #[test]
    fn a_damaged_block_inside_a_run_is_reported() {
        let fs = MemFs::new(2);
        let path = Path::new("/s/000001.sst");
        let r = write(&fs, path, &entries());
        // A byte in the middle of the second run's blocks.
        let at = SCAN_READ_BYTES + SCAN_READ_BYTES / 2;
        fs.flip_bit(path, at, 3);
        match scan_all(r) {
            Err(crate::Error::Corrupt { .. }) => {}
            other => panic!(
                "expected a corruption error, got {:?}",
                other.map(|v| v.len())
            ),
        }
    }

    #[test]
    fn has_key_in_looks_inside_the_key_range() {
        let fs = MemFs::new(3);
        let path = Path::new("/s/000001.sst");
        // Two appended streams, "a…" and "c…", with a gap between them (inside a block).
        let mut want: Vec<Entry> = Vec::new();
        for (i, prefix) in ["a", "c"].iter().enumerate() {
            for k in 0..2000u32 {
                want.push(Entry {
                    key: format!("{prefix}{k:06}").into_bytes(),
                    seq: (i as u64) * 10_000 + u64::from(k) + 1,
                    value: Some(vec![1; 8]),
                });
            }
        }
        let r = write(&fs, path, &want);
        let t = |lo: &str, hi: &str| block_on(r.has_key_in(lo.as_bytes(), hi.as_bytes())).unwrap();
        assert!(!t("b", "b999"), "the gap holds no key");
        assert!(!t("a001999~", "b"), "just past the first stream");
        assert!(t("a001999", "b"), "the first stream's last key");
        assert!(t("b", "c000000"), "the second stream's first key");
        assert!(t("a000500", "a000500"), "one key inside");
        assert!(!t("a000500~", "a000500~~"), "between two neighbouring keys");
        assert!(t("a000500~", "a000501"), "up to the next key");
        assert!(t("", "~"), "everything");
        assert!(!t("c002000", "d"), "past the end");
        assert!(!t("", "a"), "before the start");
        assert!(!t("c", "b"), "an empty range");
    }
}
