//! A shard: one core's LSM tree. Writes go to the WAL and the memtable; full memtables
//! are flushed to level-0 SSTs; compaction merges levels down. Reads see a snapshot:
//! a sequence number below which everything is acknowledged and stable.

use crate::batch::{WriteBatch, KEY_BYTES_MAX, VALUE_BYTES_MAX};
use crate::cache::BlockCache;
use crate::compaction::{self, CompactionOptions, VersionFilter};
use crate::entry::{cmp_internal, Entry, EntryRef, Seq, SEQ_MAX};
use crate::error::{io_err, Error, Result};
use crate::manifest::{self, sst_name, Version};
use crate::memtable::Memtable;
use crate::sst::bloom::KeyHash;
use crate::sst::{build_sst, SstIter, SstMeta, SstReader, SstScan};
use rdb_io::fs::{install_file, Fs};
use rdb_wal::{Durability, Wal, WalOptions};
use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
/// SST readers by file number (small integers: no DoS-resistant hash needed).
type Readers<F> = rustc_hash::FxHashMap<u64, Rc<SstReader<F>>>;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::rc::Rc;

/// Writes wait (when maintenance runs in the background) while the memtable holds this
/// many times `memtable_bytes_max`: see `Shard::write_stalled`.
pub const MEMTABLE_STALL_FACTOR: usize = 2;

#[derive(Clone, Debug)]
pub struct ShardOptions {
    /// The memtable is flushed once it holds about this many bytes.
    pub memtable_bytes_max: usize,
    pub block_cache_bytes: usize,
    pub compress: bool,
    pub compaction: CompactionOptions,
    pub wal: WalOptions,
    /// Old manifests kept for inspection.
    pub manifests_kept: usize,
    /// Flush and compact inside the write that fills the memtable (simple and
    /// self-contained). Off when the owner runs `maintain` in a background task (the
    /// server does, so no query waits for a compaction).
    pub maintain_in_writes: bool,
}

impl Default for ShardOptions {
    fn default() -> Self {
        ShardOptions {
            memtable_bytes_max: 32 * 1024 * 1024,
            // Reads bypass the OS page cache (O_DIRECT): this is the shard's page cache.
            block_cache_bytes: 256 * 1024 * 1024,
            compress: true,
            compaction: CompactionOptions::default(),
            wal: WalOptions::default(),
            manifests_kept: 4,
            maintain_in_writes: true,
        }
    }
}

/// Counters for write amplification and inspection.
#[derive(Clone, Copy, Debug, Default)]
pub struct Stats {
    pub user_bytes_written: u64,
    /// Physical WAL bytes, including partial blocks rewritten by each group commit.
    pub wal_bytes_written: u64,
    pub flush_bytes_written: u64,
    pub compaction_bytes_written: u64,
    pub compaction_bytes_read: u64,
    pub flushes: u64,
    pub compactions: u64,
}

impl Stats {
    /// Bytes written to disk per byte of user data (WAL + SSTs).
    pub fn write_amplification(&self) -> f64 {
        let disk =
            self.wal_bytes_written + self.flush_bytes_written + self.compaction_bytes_written;
        disk as f64 / self.user_bytes_written.max(1) as f64
    }
}

/// A consistent read view. Registered while alive so compaction keeps what it sees.
pub struct Snapshot {
    pub seq: Seq,
    registry: Rc<RefCell<BTreeMap<Seq, usize>>>,
}

impl Drop for Snapshot {
    fn drop(&mut self) {
        let mut r = self.registry.borrow_mut();
        if let Some(n) = r.get_mut(&self.seq) {
            *n -= 1;
            if *n == 0 {
                r.remove(&self.seq);
            }
        }
    }
}

/// What a read works on: its sequence number, the memtables newest first, the files.
type ReadView<F> = (Seq, Vec<Rc<RefCell<Memtable>>>, Rc<Version>, Rc<Readers<F>>);

struct State<F: Fs> {
    mem: Rc<RefCell<Memtable>>,
    /// Frozen memtables waiting to be flushed, newest first.
    imm: Vec<Rc<RefCell<Memtable>>>,
    version: Rc<Version>,
    /// Shared with in-flight reads (copied on change), so a read takes no allocation.
    readers: Rc<Readers<F>>,
    next_seq: Seq,
    visible_seq: Seq,
    failed: Option<String>,
}

pub struct Shard<F: Fs> {
    fs: F,
    dir: PathBuf,
    opts: ShardOptions,
    wal: Wal<F>,
    cache: Rc<BlockCache>,
    st: RefCell<State<F>>,
    snapshots: Rc<RefCell<BTreeMap<Seq, usize>>>,
    maintaining: Cell<bool>,
    /// Notified when a full memtable is frozen (writes stalled on it may go on).
    room: event_listener::Event,
    stats: Cell<Stats>,
    /// Closed log segments kept past their flush, in bytes (see `set_log_retention_bytes`).
    log_retention_bytes: Cell<u64>,
}

impl<F: Fs> Shard<F> {
    /// Opens (or creates) the shard in `dir`, recovering from whatever a crash left.
    pub async fn open(fs: F, dir: &Path, opts: ShardOptions) -> Result<Shard<F>> {
        fs.create_dir_all(dir).map_err(|e| io_err(dir, e))?;
        let version = manifest::load(&fs, dir).await?.unwrap_or_default();
        let cache = Rc::new(BlockCache::new(opts.block_cache_bytes));
        let mut readers = Readers::default();
        for f in version.all_files() {
            let path = dir.join(sst_name(f.file_no));
            let r = SstReader::open(&fs, &path, f.file_no, cache.clone()).await?;
            if r.meta.size != f.size || r.meta.entries != f.entries {
                return Err(crate::error::corrupt(
                    &path,
                    0,
                    "SST does not match its manifest entry",
                ));
            }
            readers.insert(f.file_no, Rc::new(r));
        }
        remove_obsolete(&fs, dir, &version, opts.manifests_kept).await?;
        let mem = RefCell::new(Memtable::default());
        let mut last_seq = version.last_seq;
        let wal_dir = dir.join("wal");
        let wal = Wal::open(
            fs.clone(),
            &wal_dir,
            opts.wal.clone(),
            version.log_lsn + 1,
            |lsn, payload| {
                let (first, batch) =
                    WriteBatch::decode(payload).map_err(|r| rdb_wal::Error::Corrupt {
                        path: wal_dir.clone(),
                        offset: 0,
                        reason: format!("record {lsn} is not a write batch: {r}"),
                    })?;
                let mut m = mem.borrow_mut();
                for (i, (k, v)) in batch.ops.into_iter().enumerate() {
                    m.insert(k, first + i as u64, v);
                }
                m.last_lsn = lsn;
                last_seq = last_seq.max(first + batch_len_minus_one(payload));
                Ok(())
            },
        )
        .await?;
        let mem = mem.into_inner();
        if mem.is_empty() && wal.next_lsn() <= version.log_lsn {
            // The WAL was trimmed past what the manifest covers: records are missing.
            return Err(crate::error::corrupt(
                dir,
                0,
                "WAL ends before the manifest's log position",
            ));
        }
        Ok(Shard {
            fs,
            dir: dir.to_path_buf(),
            opts,
            wal,
            cache,
            st: RefCell::new(State {
                mem: Rc::new(RefCell::new(mem)),
                imm: Vec::new(),
                version: Rc::new(version),
                readers: Rc::new(readers),
                next_seq: last_seq + 1,
                visible_seq: last_seq,
                failed: None,
            }),
            snapshots: Rc::new(RefCell::new(BTreeMap::new())),
            maintaining: Cell::new(false),
            room: event_listener::Event::new(),
            stats: Cell::new(Stats::default()),
            log_retention_bytes: Cell::new(0),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Opens this shard's directory again, as a new shard recovered from what is on
    /// disk. The way back from a failure (a full disk, an I/O error): a failed write or
    /// fsync is never retried; the log is read back instead, and what it holds durably
    /// (every acknowledged write) is what the new shard has. Callers stop using this
    /// shard, which stays failed.
    pub async fn reopen(&self) -> Result<Shard<F>> {
        assert!(
            self.failure().is_some(),
            "only a failed shard is reopened (a live one may still be writing)"
        );
        Shard::open(self.fs.clone(), &self.dir, self.opts.clone()).await
    }

    pub fn stats(&self) -> Stats {
        let mut s = self.stats.get();
        s.wal_bytes_written = self.wal.bytes_written();
        s
    }

    fn bump(&self, f: impl FnOnce(&mut Stats)) {
        let mut s = self.stats.get();
        f(&mut s);
        self.stats.set(s);
    }

    pub fn failure(&self) -> Option<String> {
        self.st
            .borrow()
            .failed
            .clone()
            .or_else(|| self.wal.failure())
    }

    fn fail(&self, e: &Error) {
        let mut st = self.st.borrow_mut();
        if st.failed.is_none() {
            tracing::error!(dir = %self.dir.display(), "shard stops accepting writes: {e}");
            st.failed = Some(e.to_string());
        }
        drop(st);
        // Stalled writes go on, to find the failure.
        self.room.notify(usize::MAX);
    }

    /// Applies a batch atomically; returns the sequence number of its last write.
    pub async fn write(&self, batch: WriteBatch, durability: Durability) -> Result<Seq> {
        Ok(self.write_logged(batch, durability).await?.0)
    }

    /// `write`, also returning the LSN of the batch's log record (`None` for an empty
    /// batch, which writes no record).
    pub async fn write_logged(
        &self,
        batch: WriteBatch,
        durability: Durability,
    ) -> Result<(Seq, Option<rdb_wal::Lsn>)> {
        if batch.is_empty() {
            return Ok((self.st.borrow().visible_seq, None));
        }
        for (k, v) in &batch.ops {
            if k.len() > KEY_BYTES_MAX || v.as_ref().is_some_and(|v| v.len() > VALUE_BYTES_MAX) {
                return Err(Error::Invalid(format!(
                    "keys are limited to {KEY_BYTES_MAX} bytes and values to {VALUE_BYTES_MAX}"
                )));
            }
        }
        let n = batch.len() as u64;
        let user_bytes = batch.bytes() as u64;
        let (first, payload) = {
            let mut st = self.st.borrow_mut();
            if let Some(f) = &st.failed {
                return Err(Error::Failed(f.clone()));
            }
            let first = st.next_seq;
            st.next_seq += batch.len() as u64;
            let payload = batch.encode(first);
            // In the memtable at once (in sequence order), visible only once acknowledged.
            let lsn = self.wal.next_lsn();
            let mut m = st.mem.borrow_mut();
            for (i, (k, v)) in batch.ops.into_iter().enumerate() {
                m.insert(k, first + i as u64, v);
            }
            m.last_lsn = lsn;
            (first, payload)
        };
        let last = first + n - 1;
        let lsn = match self.wal.append(&payload, durability).await {
            Ok(lsn) => lsn,
            Err(e) => {
                let e = Error::from(e);
                self.fail(&e);
                return Err(e);
            }
        };
        {
            let mut st = self.st.borrow_mut();
            st.visible_seq = st.visible_seq.max(last);
        }
        self.bump(|s| s.user_bytes_written += user_bytes);
        if self.opts.maintain_in_writes && self.needs_maintenance() {
            self.maintain().await?;
        }
        Ok((last, Some(lsn)))
    }

    /// Log records from `from` on (durable ones only), decoded, up to about
    /// `bytes_max` of payload. Fails with `Error::Expired` if they are gone.
    pub async fn read_log(
        &self,
        from: rdb_wal::Lsn,
        bytes_max: usize,
    ) -> Result<Vec<(rdb_wal::Lsn, WriteBatch)>> {
        let records = self.wal.read_from(from, bytes_max).await?;
        records
            .into_iter()
            .map(|(lsn, payload)| {
                WriteBatch::decode(&payload)
                    .map(|(_, b)| (lsn, b))
                    .map_err(|r| Error::Invalid(format!("log record {lsn}: {r}")))
            })
            .collect()
    }

    /// The LSN the next log record will get.
    pub fn next_lsn(&self) -> rdb_wal::Lsn {
        self.wal.next_lsn()
    }

    /// The oldest LSN still in the log.
    pub fn oldest_lsn(&self) -> rdb_wal::Lsn {
        self.wal.retained_range().0
    }

    /// Keeps at least this many bytes of closed log segments when flushes would
    /// delete them (for readers that replay the log later, such as resumable feeds).
    pub fn set_log_retention_bytes(&self, bytes: u64) {
        self.log_retention_bytes.set(bytes);
    }

    /// Waits until every write submitted before this call is visible to readers (or
    /// the shard has failed). Callers that change what writers derive from a document
    /// (index entries) use it to know no write still carries the old derivation.
    pub async fn settle(&self) {
        let target = self.st.borrow().next_seq.saturating_sub(1);
        loop {
            {
                let st = self.st.borrow();
                if st.visible_seq >= target || st.failed.is_some() {
                    return;
                }
            }
            rdb_io::sleep(std::time::Duration::from_millis(1)).await;
        }
    }

    /// True when background maintenance has fallen so far behind that writes must wait
    /// for it: the memtable holds `MEMTABLE_STALL_FACTOR` times its flush size. Without
    /// this a write load faster than compaction grows the memtable (and the log) without
    /// bound. Never when writes maintain the shard themselves.
    pub fn write_stalled(&self) -> bool {
        let st = self.st.borrow();
        !self.opts.maintain_in_writes
            && st.failed.is_none()
            && st.mem.borrow().bytes() >= self.opts.memtable_bytes_max * MEMTABLE_STALL_FACTOR
    }

    /// Waits until writes are no longer stalled (see `write_stalled`); the caller makes
    /// sure maintenance is running.
    pub async fn write_room(&self) {
        loop {
            if !self.write_stalled() {
                return;
            }
            let listener = self.room.listen();
            if !self.write_stalled() {
                return;
            }
            listener.await;
        }
    }

    /// True when the memtable is full and `maintain` should run.
    pub fn needs_maintenance(&self) -> bool {
        self.st.borrow().mem.borrow().bytes() >= self.opts.memtable_bytes_max
    }

    pub async fn put(&self, key: &[u8], value: &[u8], durability: Durability) -> Result<Seq> {
        let mut b = WriteBatch::new();
        b.put(key, value);
        self.write(b, durability).await
    }

    pub async fn delete(&self, key: &[u8], durability: Durability) -> Result<Seq> {
        let mut b = WriteBatch::new();
        b.delete(key);
        self.write(b, durability).await
    }

    /// Writes and syncs everything acknowledged with soft durability.
    pub async fn sync(&self) -> Result<()> {
        self.wal.flush().await.map_err(|e| {
            let e = Error::from(e);
            self.fail(&e);
            e
        })
    }

    /// A read view of everything acknowledged so far.
    pub fn snapshot(&self) -> Snapshot {
        let seq = self.st.borrow().visible_seq;
        *self.snapshots.borrow_mut().entry(seq).or_insert(0) += 1;
        Snapshot {
            seq,
            registry: self.snapshots.clone(),
        }
    }

    /// The value of `key` as of `snap` (the latest acknowledged state when `None`).
    pub async fn get(&self, key: &[u8], snap: Option<&Snapshot>) -> Result<Option<Vec<u8>>> {
        let (seq, mems, version, readers) = self.read_view(snap);
        for m in &mems {
            if let Some(v) = m.borrow().get(key, seq) {
                return Ok(v);
            }
        }
        let hash = KeyHash::of(key);
        for f in &version.levels[0] {
            if let Some(v) = readers[&f.file_no].get(key, hash, seq).await? {
                return Ok(v);
            }
        }
        for level in &version.levels[1..] {
            let i = level.partition_point(|f| f.largest_key.as_slice() < key);
            if let Some(f) = level.get(i) {
                if f.smallest_key.as_slice() <= key {
                    if let Some(v) = readers[&f.file_no].get(key, hash, seq).await? {
                        return Ok(v);
                    }
                }
            }
        }
        Ok(None)
    }

    /// Up to `limit` live (key, value) pairs with keys in the range, in key order (or
    /// reverse key order), as of `snap`.
    pub async fn scan(
        &self,
        lo: Bound<&[u8]>,
        hi: Bound<&[u8]>,
        snap: Option<&Snapshot>,
        reverse: bool,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let (seq, mems, version, readers) = self.read_view(snap);
        let start: Option<(Vec<u8>, Seq)> = match (reverse, lo, hi) {
            (false, Bound::Included(k) | Bound::Excluded(k), _) => Some((k.to_vec(), SEQ_MAX)),
            (true, _, Bound::Included(k) | Bound::Excluded(k)) => Some((k.to_vec(), 0)),
            _ => None,
        };
        let (klo, khi): (&[u8], Option<&[u8]>) = (
            match lo {
                Bound::Included(k) | Bound::Excluded(k) => k,
                Bound::Unbounded => &[],
            },
            match hi {
                Bound::Included(k) | Bound::Excluded(k) => Some(k),
                Bound::Unbounded => None,
            },
        );
        let mut sources: Vec<Source<F>> = Vec::new();
        for m in mems {
            let mut c = MemCursor {
                mem: m,
                first: None,
                pos: None,
                reverse,
                done: false,
            };
            c.init(start.as_ref());
            sources.push(Source::Mem(c));
        }
        let in_range = |f: &SstMeta| {
            f.largest_key.as_slice() >= klo && khi.is_none_or(|h| f.smallest_key.as_slice() <= h)
        };
        // Level-0 files overlap: one cursor each. Deeper levels are disjoint and sorted:
        // one cursor per level that opens the next file only when it gets there.
        for f in version.levels[0].iter().filter(|f| in_range(f)) {
            let r = readers[&f.file_no].clone();
            let it = match &start {
                Some((k, s)) => SstIter::seek(r, k, *s, reverse).await?,
                None => SstIter::start(r, reverse).await?,
            };
            sources.push(Source::Sst(it));
        }
        for level in &version.levels[1..] {
            let mut files: Vec<Rc<SstReader<F>>> = level
                .iter()
                .filter(|f| in_range(f))
                .map(|f| readers[&f.file_no].clone())
                .collect();
            if files.is_empty() {
                continue;
            }
            if reverse {
                files.reverse();
            }
            sources.push(Source::Level(
                LevelIter::new(files, start.clone(), reverse).await?,
            ));
        }
        let mut merge = Merge::new(sources, reverse).await?;
        let mut out = Vec::new();
        let past_end = |k: &[u8]| -> bool {
            if reverse {
                match lo {
                    Bound::Included(b) => k < b,
                    Bound::Excluded(b) => k <= b,
                    Bound::Unbounded => false,
                }
            } else {
                match hi {
                    Bound::Included(b) => k > b,
                    Bound::Excluded(b) => k >= b,
                    Bound::Unbounded => false,
                }
            }
        };
        let before_start = |k: &[u8]| -> bool {
            if reverse {
                matches!(hi, Bound::Excluded(b) if k >= b)
                    || matches!(hi, Bound::Included(b) if k > b)
            } else {
                matches!(lo, Bound::Excluded(b) if k <= b)
                    || matches!(lo, Bound::Included(b) if k < b)
            }
        };
        // Versions of one user key arrive together: newest first forward, oldest first
        // in reverse. `group` holds the visible version of the current key.
        let mut group: Option<(Vec<u8>, Option<Entry>)> = None;
        loop {
            let e = merge.next().await?;
            let key_changed = match (&group, &e) {
                (Some((k, _)), Some(e)) => *k != e.key,
                (Some(_), None) => true,
                _ => false,
            };
            if key_changed {
                if let Some((_, Some(best))) = group.take() {
                    if let Some(v) = best.value {
                        out.push((best.key, v));
                        if out.len() >= limit {
                            return Ok(out);
                        }
                    }
                }
            }
            let Some(e) = e else { return Ok(out) };
            if past_end(&e.key) {
                if let Some((_, Some(best))) = group.take() {
                    if let Some(v) = best.value {
                        out.push((best.key, v));
                    }
                }
                return Ok(out);
            }
            if before_start(&e.key) {
                continue;
            }
            let g = group.get_or_insert_with(|| (e.key.clone(), None));
            if e.seq <= seq && (reverse || g.1.is_none()) {
                g.1 = Some(e);
            }
        }
    }

    fn read_view(&self, snap: Option<&Snapshot>) -> ReadView<F> {
        let st = self.st.borrow();
        let seq = snap.map_or(st.visible_seq, |s| s.seq);
        let mut mems = vec![st.mem.clone()];
        mems.extend(st.imm.iter().cloned());
        (seq, mems, st.version.clone(), st.readers.clone())
    }

    /// Flushes the memtable now (even if small) and runs due compactions.
    pub async fn flush(&self) -> Result<()> {
        self.freeze();
        self.maintain().await
    }

    /// Compacts until no level is over its target.
    pub async fn maintain(&self) -> Result<()> {
        // After a failure the in-memory state may be ahead of or behind the disk: only a
        // reopen (recovery) may touch the files again.
        if let Some(f) = self.failure() {
            return Err(Error::Failed(f));
        }
        if self.maintaining.replace(true) {
            return Ok(());
        }
        let r = self.maintain_inner().await;
        self.maintaining.set(false);
        if let Err(e) = &r {
            self.fail(e);
        }
        r
    }

    fn freeze(&self) {
        let mut st = self.st.borrow_mut();
        if st.mem.borrow().is_empty() {
            return;
        }
        let old = std::mem::replace(&mut st.mem, Rc::new(RefCell::new(Memtable::default())));
        st.imm.insert(0, old);
        self.room.notify(usize::MAX);
    }

    async fn maintain_inner(&self) -> Result<()> {
        if self.st.borrow().mem.borrow().bytes() >= self.opts.memtable_bytes_max {
            self.freeze();
        }
        loop {
            let oldest = self.st.borrow().imm.last().cloned();
            let Some(m) = oldest else { break };
            self.flush_memtable(&m).await?;
        }
        loop {
            let v = self.st.borrow().version.clone();
            let Some(job) = compaction::pick(&v, &self.opts.compaction) else {
                break;
            };
            self.compact(job).await?;
        }
        Ok(())
    }

    async fn flush_memtable(&self, m: &Rc<RefCell<Memtable>>) -> Result<()> {
        // Everything in the memtable must be durable in the WAL before its SST claims
        // the log position: otherwise a crash could keep data never acknowledged.
        self.wal.flush().await?;
        let mut v = (*self.st.borrow().version).clone();
        let file_no = v.next_file_no;
        // Built straight from the frozen memtable (no writer touches it any more), without
        // copying its entries.
        let (image, last_lsn) = {
            let mb = m.borrow();
            let entries: Vec<EntryRef<'_>> = mb.entry_refs().collect();
            let image = (!entries.is_empty()).then(|| {
                let max_seq = entries.iter().map(|e| e.seq).max().unwrap_or(0);
                (build_sst(file_no, &entries, self.opts.compress), max_seq)
            });
            (image, mb.last_lsn)
        };
        let mut new_files = Vec::new();
        if let Some(((bytes, meta), max_seq)) = image {
            v.next_file_no += 1;
            self.install_sst(file_no, &bytes).await?;
            self.bump(|s| {
                s.flush_bytes_written += meta.size;
                s.flushes += 1;
            });
            v.last_seq = v.last_seq.max(max_seq);
            v.levels[0].insert(0, meta.clone());
            new_files.push(meta);
        }
        v.log_lsn = v.log_lsn.max(last_lsn);
        v.number += 1;
        self.install_version(v, new_files, &[]).await?;
        {
            let mut st = self.st.borrow_mut();
            st.imm.retain(|x| !Rc::ptr_eq(x, m));
        }
        let log_lsn = self.st.borrow().version.log_lsn;
        let keep_from = self.wal.retention_cut(self.log_retention_bytes.get());
        if let Err(e) = self.wal.remove_before((log_lsn + 1).min(keep_from)).await {
            // Old segments are replayed from `log_lsn` on anyway; removal is cleanup.
            tracing::warn!(dir = %self.dir.display(), "could not remove old WAL segments: {e}");
        }
        Ok(())
    }

    async fn write_sst(&self, file_no: u64, entries: &[Entry]) -> Result<SstMeta> {
        let (bytes, meta) = build_sst(file_no, entries, self.opts.compress);
        self.install_sst(file_no, &bytes).await?;
        Ok(meta)
    }

    async fn install_sst(&self, file_no: u64, bytes: &[u8]) -> Result<()> {
        let path = self.dir.join(sst_name(file_no));
        install_file(&self.fs, &path, bytes)
            .await
            .map_err(|e| io_err(&path, e))
    }

    /// Opens readers for new files, installs the manifest, then retires old files.
    async fn install_version(
        &self,
        v: Version,
        new_files: Vec<SstMeta>,
        removed: &[u64],
    ) -> Result<()> {
        let mut opened = Vec::new();
        for f in &new_files {
            let path = self.dir.join(sst_name(f.file_no));
            opened.push((
                f.file_no,
                Rc::new(SstReader::open(&self.fs, &path, f.file_no, self.cache.clone()).await?),
            ));
        }
        manifest::install(&self.fs, &self.dir, &v).await?;
        {
            let mut st = self.st.borrow_mut();
            st.version = Rc::new(v);
            Rc::make_mut(&mut st.readers).extend(opened);
            for no in removed {
                Rc::make_mut(&mut st.readers).remove(no);
            }
        }
        for no in removed {
            self.cache.forget_file(*no);
        }
        // The new state is installed; deleting what it no longer references is cleanup
        // that the next open repeats, so a failure here changes nothing that matters.
        // Readers still holding a removed file keep its (unlinked) data until they finish.
        let v = self.st.borrow().version.clone();
        if let Err(e) = remove_obsolete(&self.fs, &self.dir, &v, self.opts.manifests_kept).await {
            tracing::warn!(dir = %self.dir.display(), "could not remove obsolete files: {e}");
        }
        Ok(())
    }

    async fn compact(&self, job: compaction::Job) -> Result<()> {
        let (v, readers) = {
            let st = self.st.borrow();
            (st.version.clone(), st.readers.clone())
        };
        if job.trivial_move {
            let mut next_v = (*v).clone();
            let moved: Vec<SstMeta> = next_v.levels[job.level]
                .iter()
                .filter(|f| job.upper.contains(&f.file_no))
                .cloned()
                .collect();
            next_v.levels[job.level].retain(|f| !job.upper.contains(&f.file_no));
            next_v.levels[job.level + 1].extend(moved);
            next_v.levels[job.level + 1].sort_by(|a, b| a.smallest_key.cmp(&b.smallest_key));
            next_v.number += 1;
            self.bump(|s| s.compactions += 1);
            return self.install_version(next_v, Vec::new(), &[]).await;
        }
        let (lower, barriers) = self.narrow_lower(&job, &readers).await?;
        let inputs: Vec<u64> = job.upper.iter().chain(&lower).copied().collect();
        let mut sources = Vec::new();
        let mut read_bytes = 0;
        for no in &inputs {
            let r = readers[no].clone();
            read_bytes += r.meta.size;
            sources.push(Source::Scan(SstScan::new(r)));
        }
        let oldest_snapshot = {
            let st = self.st.borrow();
            let reg = self.snapshots.borrow();
            reg.keys()
                .next()
                .copied()
                .unwrap_or(st.visible_seq)
                .min(st.visible_seq)
        };
        let mut filter = VersionFilter::new(oldest_snapshot, job.bottommost);
        let mut merge = Merge::new(sources, false).await?;
        let mut next_v = (*v).clone();
        let mut outputs = Vec::new();
        let mut pending: Vec<Entry> = Vec::new();
        let mut pending_bytes = 0u64;
        let target = self.opts.compaction.target_file_bytes;
        // The next barrier: outputs never span one.
        let mut barrier_i = 0;
        while let Some(e) = merge.next().await? {
            if !filter.keep(&e) {
                continue;
            }
            let at_barrier = !pending.is_empty()
                && barriers
                    .get(barrier_i)
                    .is_some_and(|b| b.smallest_key <= e.key);
            while barriers
                .get(barrier_i)
                .is_some_and(|b| b.largest_key < e.key)
            {
                barrier_i += 1;
            }
            assert!(
                barriers
                    .get(barrier_i)
                    .is_none_or(|b| e.key < b.smallest_key),
                "a compaction input key lies in a file it left out"
            );
            // Cut files only between user keys: deeper levels never split a key.
            if at_barrier
                || pending_bytes >= target && pending.last().is_some_and(|p| p.key != e.key)
            {
                let no = next_v.next_file_no;
                next_v.next_file_no += 1;
                outputs.push(self.write_sst(no, &pending).await?);
                pending.clear();
                pending_bytes = 0;
            }
            pending_bytes += (e.key.len() + e.value.as_ref().map_or(0, Vec::len) + 8) as u64;
            pending.push(e);
        }
        if !pending.is_empty() {
            let no = next_v.next_file_no;
            next_v.next_file_no += 1;
            outputs.push(self.write_sst(no, &pending).await?);
        }
        let written: u64 = outputs.iter().map(|f| f.size).sum();
        self.bump(|s| {
            s.compaction_bytes_written += written;
            s.compaction_bytes_read += read_bytes;
            s.compactions += 1;
        });
        next_v.levels[job.level].retain(|f| !job.upper.contains(&f.file_no));
        next_v.levels[job.level + 1].retain(|f| !lower.contains(&f.file_no));
        next_v.levels[job.level + 1].extend(outputs.iter().cloned());
        next_v.levels[job.level + 1].sort_by(|a, b| a.smallest_key.cmp(&b.smallest_key));
        assert!(
            next_v.levels[job.level + 1]
                .windows(2)
                .all(|w| w[0].largest_key < w[1].smallest_key),
            "level {} files overlap after compaction",
            job.level + 1
        );
        next_v.number += 1;
        self.install_version(next_v, outputs, &inputs).await
    }

    /// Splits the job's lower files into those some upper file holds a key of (merged)
    /// and those it only spans by key range (left in place; the outputs are cut around
    /// them, sorted by key). Upper files written from several streams of appended keys
    /// span the gaps between the streams, where the lower level keeps what earlier
    /// compactions wrote: by key range alone every compaction would rewrite all of it.
    async fn narrow_lower(
        &self,
        job: &compaction::Job,
        readers: &Readers<F>,
    ) -> Result<(Vec<u64>, Vec<SstMeta>)> {
        let mut lower = Vec::new();
        let mut barriers = Vec::new();
        for no in &job.lower {
            let g = &readers[no].meta;
            let mut touched = false;
            for u in &job.upper {
                if readers[u]
                    .has_key_in(&g.smallest_key, &g.largest_key)
                    .await?
                {
                    touched = true;
                    break;
                }
            }
            if touched {
                lower.push(*no);
            } else {
                barriers.push(g.clone());
            }
        }
        barriers.sort_by(|a, b| a.smallest_key.cmp(&b.smallest_key));
        Ok((lower, barriers))
    }

    /// Files per level and their bytes (for inspection and tests).
    pub fn level_summary(&self) -> Vec<(usize, u64)> {
        let v = self.st.borrow().version.clone();
        v.levels
            .iter()
            .map(|l| (l.len(), l.iter().map(|f| f.size).sum()))
            .collect()
    }

    pub fn version(&self) -> Rc<Version> {
        self.st.borrow().version.clone()
    }

    pub fn wal(&self) -> &Wal<F> {
        &self.wal
    }

    pub fn block_cache_stats(&self) -> (usize, u64, u64) {
        self.cache.stats()
    }
}

/// The last op index of a batch payload (count - 1), without decoding it again.
fn batch_len_minus_one(payload: &[u8]) -> u64 {
    crate::entry::get_u32(payload, 8).map_or(0, |n| (n as u64).saturating_sub(1))
}

/// Deletes SSTs the manifest does not reference, temporary files, and old manifests.
async fn remove_obsolete<F: Fs>(
    fs: &F,
    dir: &Path,
    v: &Version,
    manifests_kept: usize,
) -> Result<()> {
    let live: std::collections::HashSet<String> =
        v.all_files().map(|f| sst_name(f.file_no)).collect();
    let mut removed = false;
    for name in fs.list(dir).map_err(|e| io_err(dir, e))? {
        let stale_sst = name.ends_with(".sst") && !live.contains(&name);
        let stale_manifest = name
            .strip_prefix("MANIFEST-")
            .and_then(|n| n.parse::<u64>().ok())
            .is_some_and(|n| n + manifests_kept as u64 <= v.number);
        if stale_sst || stale_manifest || name.ends_with(".tmp") {
            let p = dir.join(&name);
            fs.remove(&p).await.map_err(|e| io_err(&p, e))?;
            removed = true;
        }
    }
    if removed {
        fs.sync_dir(dir).await.map_err(|e| io_err(dir, e))?;
    }
    Ok(())
}

/// Walks a memtable by re-seeking from the last position, so it stays valid while
/// writers add newer entries.
struct MemCursor {
    mem: Rc<RefCell<Memtable>>,
    /// The entry to return next when the walk starts at a seek target.
    first: Option<Entry>,
    pos: Option<(Vec<u8>, Seq)>,
    reverse: bool,
    done: bool,
}

impl MemCursor {
    fn init(&mut self, start: Option<&(Vec<u8>, Seq)>) {
        if let Some((k, s)) = start {
            self.first = self.mem.borrow().seek(k, *s, self.reverse);
            self.done = self.first.is_none();
        }
    }

    fn next(&mut self) -> Option<Entry> {
        if self.done {
            return None;
        }
        let e = match self.first.take() {
            Some(e) => Some(e),
            None => {
                let m = self.mem.borrow();
                match &self.pos {
                    None => m.step(None, self.reverse),
                    Some((k, s)) => m.step(Some((k, *s)), self.reverse),
                }
            }
        };
        match &e {
            Some(e) => self.pos = Some((e.key.clone(), e.seq)),
            None => self.done = true,
        }
        e
    }
}

enum Source<F: Fs> {
    Mem(MemCursor),
    Sst(SstIter<F>),
    Level(LevelIter<F>),
    Scan(SstScan<F>),
}

impl<F: Fs> Source<F> {
    async fn next(&mut self) -> Result<Option<Entry>> {
        match self {
            Source::Mem(m) => Ok(m.next()),
            Source::Sst(s) => s.next().await,
            Source::Level(l) => l.next().await,
            Source::Scan(s) => s.next().await,
        }
    }
}

/// Walks the files of one sorted level (in walking order), opening each lazily.
struct LevelIter<F: Fs> {
    files: Vec<Rc<SstReader<F>>>,
    next_file: usize,
    cur: Option<SstIter<F>>,
    reverse: bool,
}

impl<F: Fs> LevelIter<F> {
    async fn new(
        files: Vec<Rc<SstReader<F>>>,
        start: Option<(Vec<u8>, Seq)>,
        reverse: bool,
    ) -> Result<LevelIter<F>> {
        assert!(!files.is_empty());
        let cur = match &start {
            Some((k, s)) => SstIter::seek(files[0].clone(), k, *s, reverse).await?,
            None => SstIter::start(files[0].clone(), reverse).await?,
        };
        Ok(LevelIter {
            files,
            next_file: 1,
            cur: Some(cur),
            reverse,
        })
    }

    async fn next(&mut self) -> Result<Option<Entry>> {
        loop {
            let Some(cur) = self.cur.as_mut() else {
                return Ok(None);
            };
            if let Some(e) = cur.next().await? {
                return Ok(Some(e));
            }
            self.cur = match self.files.get(self.next_file) {
                Some(f) => Some(SstIter::start(f.clone(), self.reverse).await?),
                None => None,
            };
            self.next_file += 1;
        }
    }
}

/// Merges sources in internal order (or its reverse).
struct Merge<F: Fs> {
    sources: Vec<Source<F>>,
    heads: Vec<Option<Entry>>,
    reverse: bool,
}

impl<F: Fs> Merge<F> {
    async fn new(mut sources: Vec<Source<F>>, reverse: bool) -> Result<Merge<F>> {
        let mut heads = Vec::with_capacity(sources.len());
        for s in sources.iter_mut() {
            heads.push(s.next().await?);
        }
        Ok(Merge {
            sources,
            heads,
            reverse,
        })
    }

    async fn next(&mut self) -> Result<Option<Entry>> {
        let mut best: Option<usize> = None;
        for (i, h) in self.heads.iter().enumerate() {
            let Some(h) = h else { continue };
            let better = match best {
                None => true,
                Some(b) => {
                    let cur = self.heads[b].as_ref().expect("best has a head");
                    let c = cmp_internal(&h.key, h.seq, &cur.key, cur.seq);
                    if self.reverse {
                        c.is_gt()
                    } else {
                        c.is_lt()
                    }
                }
            };
            if better {
                best = Some(i);
            }
        }
        let Some(b) = best else { return Ok(None) };
        let out = self.heads[b].take();
        self.heads[b] = self.sources[b].next().await?;
        Ok(out)
    }
}
