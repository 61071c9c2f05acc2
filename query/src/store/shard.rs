//! One core's shard as the store sees it: reads, conditional writes under per-key locks
//! (so a read-modify-write of one document is atomic), and the request loop that serves
//! other cores.

use crate::error::{ErrorKind, ReqlError, Result};
use rdb_engine::entry::{get_varint, put_varint};
use rdb_engine::{Durability, Shard, WriteBatch};
use rdb_io::fs::Fs;
use std::cell::{Cell, RefCell};
use std::future::Future;
use std::ops::Bound;
use std::pin::Pin;
use std::rc::Rc;

pub type LocalFuture<T> = Pin<Box<dyn Future<Output = T>>>;

/// What a conditional write expects to find.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Cond {
    Any,
    Absent,
    /// Exactly these bytes (the document the caller read and computed from).
    Equals(Vec<u8>),
}

/// One write: the key's new value (`None` deletes) if `cond` holds.
#[derive(Clone, Debug)]
pub struct CasOp {
    pub key: Vec<u8>,
    pub cond: Cond,
    pub new: Option<Vec<u8>>,
}

/// What a `CasOp` found: applied over `old`, or refused because the key holds `current`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CasOutcome {
    Applied { old: Option<Vec<u8>> },
    Refused { current: Option<Vec<u8>> },
}

/// A key range scan, owned so it can cross cores.
#[derive(Clone, Debug)]
pub struct ScanReq {
    pub lo: Bound<Vec<u8>>,
    pub hi: Bound<Vec<u8>>,
    pub reverse: bool,
    pub limit: usize,
}

pub type Rows = Vec<(Vec<u8>, Vec<u8>)>;

/// One applied document change: key, old value, new value.
type Change = (Vec<u8>, Option<Vec<u8>>, Option<Vec<u8>>);

/// A document change as feeds see it: key, old and new encoded values (`None`:
/// absent). Shared by every feed of the table (one copy per write, not per feed).
#[derive(Debug)]
pub struct DocChange {
    pub key: Vec<u8>,
    pub old: Option<Vec<u8>>,
    pub new: Option<Vec<u8>>,
    /// Where the change is in the shard's log: the record and the operation in it.
    /// Strictly increasing in the order a shard delivers changes.
    pub lsn: u64,
    pub idx: u32,
}

/// A position in one shard's change history: everything up to operation `idx` of
/// record `lsn` (`u32::MAX`: the whole record).
pub type LogPos = (u64, u32);

/// A replay of one table's changes from a shard's log.
#[derive(Clone, Debug)]
pub struct ReplayReq {
    pub key_id: u64,
    pub from: LogPos,
    pub upto_lsn: u64,
}

/// Changes read back from a log, and where to go on (`None`: caught up with `upto_lsn`).
#[derive(Debug, Default)]
pub struct Replayed {
    pub changes: Vec<DocChange>,
    pub next: Option<LogPos>,
}

/// Log bytes read per replay step.
const REPLAY_BYTES_MAX: usize = 1 << 20;

/// Version of the log note a document write carries (its old values).
const NOTE_VERSION: u8 = 1;

fn encode_note(olds: &[(u32, &[u8])]) -> Vec<u8> {
    if olds.is_empty() {
        return Vec::new();
    }
    let mut n = vec![NOTE_VERSION];
    for (i, v) in olds {
        put_varint(&mut n, u64::from(*i));
        put_varint(&mut n, v.len() as u64);
        n.extend_from_slice(v);
    }
    n
}

/// The old values a record's note holds, by operation index.
fn decode_note(n: &[u8]) -> Result<rustc_hash::FxHashMap<u32, Vec<u8>>> {
    let mut out = rustc_hash::FxHashMap::default();
    if n.is_empty() {
        return Ok(out);
    }
    let bad = || ReqlError::new(ErrorKind::Internal, "Corrupt change note in the log.");
    if n[0] != NOTE_VERSION {
        return Err(bad());
    }
    let mut pos = 1;
    while pos < n.len() {
        let i = get_varint(n, &mut pos).ok_or_else(bad)?;
        let len = get_varint(n, &mut pos).ok_or_else(bad)? as usize;
        let end = pos
            .checked_add(len)
            .filter(|e| *e <= n.len())
            .ok_or_else(bad)?;
        out.insert(u32::try_from(i).map_err(|_| bad())?, n[pos..end].to_vec());
        pos = end;
    }
    Ok(out)
}

/// What a changefeed receives from a shard.
#[derive(Debug)]
pub enum FeedMsg {
    Change(super::changelog::ChangeRef),
    /// The feed cannot go on (its table was dropped): the message to report.
    End(String),
}

/// A changefeed's registration with one shard: the table's change log, the feed's
/// cursor in it, and the position the feed starts after.
pub type Subscribed = (
    std::sync::Arc<super::changelog::TableLog>,
    std::sync::Arc<std::sync::atomic::AtomicU64>,
    LogPos,
);

/// A read of one index's entries, answered with the documents they point to.
#[derive(Clone, Debug)]
pub struct IndexReadReq {
    /// Prefix of the table's document keys (the entry's primary key follows it).
    pub table_prefix: Vec<u8>,
    /// Entry keys to read (see `index::scan_bounds`).
    pub lo: Bound<Vec<u8>>,
    pub hi: Bound<Vec<u8>>,
    /// Exact bounds on the encoded index value, for entries whose key holds a cut value.
    pub sec_lo: Bound<Vec<u8>>,
    pub sec_hi: Bound<Vec<u8>>,
    pub reverse: bool,
    /// Entries to read (a few more finish a run of cut values).
    pub limit: usize,
}

/// Documents found through an index, keyed by `index::Entry::sort_key` (so they merge
/// across shards in exact index order), and where to continue.
#[derive(Debug, Default)]
pub struct IndexRows {
    pub rows: Rows,
    /// The last entry key read; the next read starts after it.
    pub resume: Option<Vec<u8>>,
    pub done: bool,
}

/// Progress of one index build, summed over shards.
#[derive(Debug, Default)]
pub struct BuildProgress {
    pub done: std::sync::atomic::AtomicU64,
    pub total: std::sync::atomic::AtomicU64,
}

/// An index build on one shard: index every document of a table for one index.
#[derive(Clone, Debug)]
pub struct BuildReq {
    pub table_lo: Vec<u8>,
    pub table_hi: Vec<u8>,
    pub index_id: u64,
    pub progress: std::sync::Arc<BuildProgress>,
}

/// What writes derive from documents: the entries of secondary indexes. Injected by
/// the evaluator (which runs index functions); the shard only places the entries in
/// the document's write batch, under the document's key lock.
pub trait IndexFns {
    /// Entries (key, value) of the encoded document `doc` stored under `doc_key`, for
    /// every index of its table, or only for index `only`. Empty for keys that are not
    /// documents and for tables without indexes.
    fn entries(&self, doc_key: &[u8], doc: &[u8], only: Option<u64>) -> Result<Rows>;
    /// Whether the index still exists (builds stop when it is dropped).
    fn index_exists(&self, index_id: u64) -> bool;
    /// Whether the table of this document key has any index (writes to other tables
    /// skip index work entirely).
    fn has_indexes(&self, doc_key: &[u8]) -> bool;
    /// Log bytes to keep for resumable changefeeds (the largest table setting).
    fn log_retention_bytes(&self) -> u64;
}

/// The operations every shard offers, as futures that own what they need.
pub trait ShardOps {
    fn get(self: Rc<Self>, key: Vec<u8>) -> LocalFuture<Result<Option<Vec<u8>>>>;
    fn scan(self: Rc<Self>, req: ScanReq) -> LocalFuture<Result<Rows>>;
    fn write(self: Rc<Self>, ops: Vec<CasOp>, hard: bool) -> LocalFuture<Result<Vec<CasOutcome>>>;
    fn sync(self: Rc<Self>) -> LocalFuture<Result<()>>;
    fn index_read(self: Rc<Self>, req: IndexReadReq) -> LocalFuture<Result<IndexRows>>;
    fn build(self: Rc<Self>, req: BuildReq) -> LocalFuture<Result<()>>;
    /// Deletes every key in `[lo, hi)` once writes already submitted are visible (so
    /// none of them can add a key there afterwards); returns how many.
    fn purge(self: Rc<Self>, lo: Vec<u8>, hi: Vec<u8>) -> LocalFuture<Result<u64>>;
    /// Registers a changefeed of table `key_id` that may fall `queue_max` changes
    /// behind: it reads every later change from the returned log.
    fn subscribe(self: Rc<Self>, key_id: u64, queue_max: usize) -> Subscribed;
    /// A table's changes after `from` up to record `upto`, read back from the log;
    /// also where to continue (`None`: done).
    fn replay(self: Rc<Self>, req: ReplayReq) -> LocalFuture<Result<Replayed>>;
    /// Ends every changefeed of a table with `msg`.
    fn end_feeds(self: Rc<Self>, key_id: u64, msg: String);
}

/// A request from another core, with where to send the answer.
pub enum Request {
    Get(Vec<u8>, flume::Sender<Result<Option<Vec<u8>>>>),
    Scan(ScanReq, flume::Sender<Result<Rows>>),
    Write(Vec<CasOp>, bool, flume::Sender<Result<Vec<CasOutcome>>>),
    Sync(flume::Sender<Result<()>>),
    IndexRead(IndexReadReq, flume::Sender<Result<IndexRows>>),
    Build(BuildReq, flume::Sender<Result<()>>),
    Purge(Vec<u8>, Vec<u8>, flume::Sender<Result<u64>>),
    /// Acknowledged once registered, so no change after the reply is missed.
    Subscribe(u64, usize, flume::Sender<Result<Subscribed>>),
    Replay(ReplayReq, flume::Sender<Result<Replayed>>),
    EndFeeds(u64, String),
}

/// Keys with a write in progress; writers of the same key queue behind each other. Keys
/// are held by hash: two keys sharing one only make their writers take turns, and taking
/// every lock at once keeps that free of deadlocks too.
#[derive(Default)]
struct KeyLocks {
    held: RefCell<rustc_hash::FxHashSet<u64>>,
    released: event_listener::Event,
}

struct KeyGuard<'a> {
    locks: &'a KeyLocks,
    hashes: Vec<u64>,
}

impl Drop for KeyGuard<'_> {
    fn drop(&mut self) {
        let mut held = self.locks.held.borrow_mut();
        for h in &self.hashes {
            held.remove(h);
        }
        drop(held);
        self.locks.released.notify(usize::MAX);
    }
}

fn lock_hash(key: &[u8]) -> u64 {
    use std::hash::BuildHasher;
    rustc_hash::FxBuildHasher.hash_one(key)
}

impl KeyLocks {
    /// Takes every key at once (all or none, so two writers cannot deadlock). The guard
    /// says whether the keys were distinct (`distinct_keys`).
    async fn lock<'k>(&self, keys: impl Iterator<Item = &'k [u8]>) -> KeyGuard<'_> {
        let mut hashes: Vec<u64> = keys.map(lock_hash).collect();
        hashes.sort_unstable();
        hashes.dedup();
        loop {
            let listener = {
                let mut held = self.held.borrow_mut();
                if hashes.iter().all(|h| !held.contains(h)) {
                    held.extend(hashes.iter().copied());
                    return KeyGuard {
                        locks: self,
                        hashes,
                    };
                }
                self.released.listen()
            };
            listener.await;
        }
    }
}

impl KeyGuard<'_> {
    /// Whether `n` keys locked with this guard were distinct (distinct hashes are distinct
    /// keys; equal hashes may still be, and then the answer is a cautious `false`).
    fn distinct_keys(&self, n: usize) -> bool {
        self.hashes.len() == n
    }
}

/// The shard owned by the current core.
pub struct LocalShard<F: Fs> {
    /// Replaced by a reopened shard after a failure (`replace_failed`).
    shard: RefCell<Rc<Shard<F>>>,
    locks: KeyLocks,
    indexes: Option<Rc<dyn IndexFns>>,
    /// Changefeeds by table key id.
    feeds: RefCell<rustc_hash::FxHashMap<u64, std::sync::Arc<super::changelog::TableLog>>>,
    /// The next log record whose changes feeds get; records finishing out of order wait
    /// in `held` so feeds see changes in log order.
    next_pub: Cell<u64>,
    held: RefCell<std::collections::BTreeMap<u64, Vec<(u32, Change)>>>,
    /// A background flush/compaction task is running.
    maintaining: Cell<bool>,
}

/// How often a storage operation that has not finished is reported.
const SLOW_REPORT_SECS: u64 = 10;

/// Runs a storage operation, logging a warning (with the stage it is in) every
/// `SLOW_REPORT_SECS` it stays unfinished: a stuck write holds its keys' locks, so it must
/// be visible.
async fn watched<T>(
    what: &'static str,
    stage: &Cell<&'static str>,
    fut: impl Future<Output = T>,
) -> T {
    let mut fut = std::pin::pin!(fut);
    let mut waited = 0;
    loop {
        let done = futures_lite::future::or(async { Some(fut.as_mut().await) }, async {
            rdb_io::sleep(std::time::Duration::from_secs(SLOW_REPORT_SECS)).await;
            None
        })
        .await;
        match done {
            Some(v) => return v,
            None => {
                waited += SLOW_REPORT_SECS;
                tracing::warn!(
                    what,
                    stage = stage.get(),
                    waited_secs = waited,
                    "storage operation is slow"
                );
            }
        }
    }
}

fn storage_err(e: rdb_engine::Error) -> ReqlError {
    ReqlError::new(ErrorKind::OpFailed, format!("Storage error: {e}"))
}

impl<F: Fs + 'static> LocalShard<F> {
    /// A shard whose writes maintain the indexes `indexes` describes (`None`: keys
    /// only, for tools and tests).
    pub fn new(shard: Shard<F>, indexes: Option<Rc<dyn IndexFns>>) -> Rc<LocalShard<F>> {
        let next_pub = shard.next_lsn();
        Rc::new(LocalShard {
            shard: RefCell::new(Rc::new(shard)),
            locks: KeyLocks::default(),
            indexes,
            feeds: RefCell::new(rustc_hash::FxHashMap::default()),
            next_pub: Cell::new(next_pub),
            held: RefCell::new(std::collections::BTreeMap::new()),
            maintaining: Cell::new(false),
        })
    }

    pub fn shard(&self) -> Rc<Shard<F>> {
        self.shard.borrow().clone()
    }

    /// Puts `reopened` (the failed shard's directory, opened again) in place of the
    /// failed shard. Operations still running on the old one fail as before; changes of
    /// writes that never committed are dropped from the feeds' queue, and feeds go on
    /// from the new log's end.
    pub fn replace_failed(&self, reopened: Shard<F>) {
        assert!(
            self.shard().failure().is_some(),
            "only a failed shard is replaced"
        );
        assert!(reopened.failure().is_none());
        self.next_pub.set(reopened.next_lsn());
        self.held.borrow_mut().clear();
        *self.shard.borrow_mut() = Rc::new(reopened);
    }

    async fn do_write(
        &self,
        ops: Vec<CasOp>,
        hard: bool,
        stage: &Cell<&'static str>,
    ) -> Result<Vec<CasOutcome>> {
        stage.set("waiting for key locks");
        let guard = self.locks.lock(ops.iter().map(|o| o.key.as_slice())).await;
        stage.set("reading current values");
        let mut batch = WriteBatch::new();
        batch.ops.reserve(ops.len());
        let mut out = Vec::with_capacity(ops.len());
        // Applied changes (key, old, new), for the index entries they imply, and their
        // operations' positions in the batch.
        let mut changes: Vec<Change> = Vec::new();
        let mut change_idx: Vec<u32> = Vec::new();
        // Old values of documents, for the log's note (feeds replay the log).
        let mut olds: Vec<(u32, Vec<u8>)> = Vec::new();
        // Later ops in one request see earlier ones (two inserts of one key conflict);
        // needed only when a key may repeat.
        let mut pending: Option<rustc_hash::FxHashMap<Vec<u8>, Option<Vec<u8>>>> =
            (!guard.distinct_keys(ops.len())).then(rustc_hash::FxHashMap::default);
        for op in ops {
            let current = match pending.as_ref().and_then(|p| p.get(&op.key)) {
                Some(v) => v.clone(),
                None => self.shard().get(&op.key, None).await.map_err(storage_err)?,
            };
            let ok = match &op.cond {
                Cond::Any => true,
                Cond::Absent => current.is_none(),
                Cond::Equals(b) => current.as_deref() == Some(b.as_slice()),
            };
            if !ok {
                out.push(CasOutcome::Refused { current });
                continue;
            }
            let idx = batch.len() as u32;
            if let (Some(old), Some(_)) = (&current, key_id_of(&op.key)) {
                olds.push((idx, old.clone()));
            }
            if self.wants_change(&op.key) {
                changes.push((op.key.clone(), current.clone(), op.new.clone()));
                change_idx.push(idx);
            }
            if let Some(p) = pending.as_mut() {
                p.insert(op.key.clone(), op.new.clone());
            }
            batch.ops.push((op.key, op.new));
            out.push(CasOutcome::Applied { old: current });
        }
        // From here to submitting the batch nothing waits: the index list read below is
        // the one the write is made with (index builds and drops rely on it; see
        // `Shard::settle`).
        if let Some(ix) = &self.indexes {
            for (key, old, new) in &changes {
                index_changes(&**ix, key, old.as_deref(), new.as_deref(), &mut batch)?;
            }
        }
        let durability = if hard {
            Durability::Hard
        } else {
            Durability::Soft
        };
        batch.note = encode_note(
            &olds
                .iter()
                .map(|(i, v)| (*i, v.as_slice()))
                .collect::<Vec<_>>(),
        );
        stage.set("writing");
        let (_, lsn) = self
            .shard()
            .write_logged(batch, durability)
            .await
            .map_err(storage_err)?;
        // Still under the keys' locks: feeds see one document's changes in order.
        if let Some(lsn) = lsn {
            self.sequenced(lsn, change_idx.into_iter().zip(changes).collect());
        }
        Ok(out)
    }

    /// Waits while writes are stalled: flushes and compactions have fallen behind the
    /// writes, and the memtable must not grow without bound.
    async fn wait_for_room(self: &Rc<Self>, stage: &Cell<&'static str>) {
        if self.shard().write_stalled() {
            self.kick_maintenance();
            stage.set("waiting for the memtable to be flushed");
            watched("write", stage, self.shard().write_room()).await;
        }
    }

    /// Writes a batch that changes no document feeds follow (index builds, purges),
    /// soft; its log record still takes its turn in the publication order.
    async fn write_without_changes(self: &Rc<Self>, batch: WriteBatch) -> Result<()> {
        self.wait_for_room(&Cell::new("writing")).await;
        let (_, lsn) = self
            .shard()
            .write_logged(batch, Durability::Soft)
            .await
            .map_err(storage_err)?;
        if let Some(lsn) = lsn {
            self.sequenced(lsn, Vec::new());
        }
        Ok(())
    }

    /// Publishes a record's changes once every earlier record's are (log order).
    fn sequenced(&self, lsn: u64, changes: Vec<(u32, Change)>) {
        assert!(
            lsn >= self.next_pub.get(),
            "log record {lsn} published twice"
        );
        self.held.borrow_mut().insert(lsn, changes);
        loop {
            let next = self.next_pub.get();
            let Some(changes) = self.held.borrow_mut().remove(&next) else {
                break;
            };
            self.next_pub.set(next + 1);
            self.publish(next, changes);
        }
    }

    /// Whether a change to `key` must be kept for index maintenance or feeds.
    fn wants_change(&self, key: &[u8]) -> bool {
        if self.indexes.as_ref().is_some_and(|ix| ix.has_indexes(key)) {
            return true;
        }
        let feeds = self.feeds.borrow();
        !feeds.is_empty() && key_id_of(key).is_some_and(|id| feeds.contains_key(&id))
    }

    /// Appends applied changes to the change logs of their tables (once, whatever the
    /// number of feeds), dropping logs no feed reads any more.
    fn publish(&self, lsn: u64, changes: Vec<(u32, Change)>) {
        let mut feeds = self.feeds.borrow_mut();
        if feeds.is_empty() {
            return;
        }
        let mut by_table: rustc_hash::FxHashMap<u64, Vec<super::changelog::NewChange<'_>>> =
            rustc_hash::FxHashMap::default();
        for (idx, (key, old, new)) in &changes {
            let Some(id) = key_id_of(key) else { continue };
            if !feeds.contains_key(&id) {
                continue;
            }
            by_table.entry(id).or_default().push((
                *idx,
                key.as_slice(),
                old.as_deref(),
                new.as_deref(),
            ));
        }
        for (id, cs) in by_table {
            let log = feeds.get(&id).expect("checked above");
            if !log.has_readers() {
                feeds.remove(&id);
                continue;
            }
            log.append(lsn, cs);
        }
    }

    /// Starts flushing and compacting in the background once the memtable is full, so
    /// no write waits for it (the shard is opened with `maintain_in_writes` off).
    fn kick_maintenance(self: &Rc<Self>) {
        if self.maintaining.get() || !self.shard().needs_maintenance() {
            return;
        }
        if let Some(ix) = &self.indexes {
            self.shard()
                .set_log_retention_bytes(ix.log_retention_bytes());
        }
        self.maintaining.set(true);
        let me = self.clone();
        rdb_io::spawn_local(async move {
            // Writes keep filling the next memtable meanwhile: go again until caught up.
            while me.shard().needs_maintenance() {
                if let Err(e) = me.shard().maintain().await {
                    // The shard refuses writes from now on; the error is logged there.
                    tracing::error!("background maintenance failed: {e}");
                    break;
                }
            }
            me.maintaining.set(false);
        });
    }

    /// Serves requests from other cores until every sender is gone.
    pub async fn serve(self: Rc<Self>, rx: flume::Receiver<Request>) {
        while let Ok(req) = rx.recv_async().await {
            let me = self.clone();
            rdb_io::spawn_local(async move {
                // A requester that went away (its query was cancelled) is not an error.
                match req {
                    Request::Get(k, tx) => {
                        let _ = tx.send(me.get(k).await);
                    }
                    Request::Scan(r, tx) => {
                        let _ = tx.send(me.scan(r).await);
                    }
                    Request::Write(ops, hard, tx) => {
                        let _ = tx.send(me.write(ops, hard).await);
                    }
                    Request::Sync(tx) => {
                        let _ = tx.send(me.sync().await);
                    }
                    Request::IndexRead(r, tx) => {
                        let _ = tx.send(me.index_read(r).await);
                    }
                    Request::Build(r, tx) => {
                        let _ = tx.send(me.build(r).await);
                    }
                    Request::Purge(lo, hi, tx) => {
                        let _ = tx.send(me.purge(lo, hi).await);
                    }
                    Request::Subscribe(id, queue_max, tx) => {
                        let _ = tx.send(Ok(me.subscribe(id, queue_max)));
                    }
                    Request::Replay(r, tx) => {
                        let _ = tx.send(me.replay(r).await);
                    }
                    Request::EndFeeds(id, msg) => me.end_feeds(id, msg),
                }
            });
        }
    }
}

/// Adds to `batch` the index entry changes of one document change: entries of the old
/// version that the new one lacks are deleted, new ones put.
fn index_changes(
    ix: &dyn IndexFns,
    key: &[u8],
    old: Option<&[u8]>,
    new: Option<&[u8]>,
    batch: &mut WriteBatch,
) -> Result<()> {
    let before = match old {
        Some(d) => ix.entries(key, d, None)?,
        None => Vec::new(),
    };
    let after = match new {
        Some(d) => ix.entries(key, d, None)?,
        None => Vec::new(),
    };
    if before.is_empty() && after.is_empty() {
        return Ok(());
    }
    let kept: rustc_hash::FxHashMap<&[u8], &[u8]> = after
        .iter()
        .map(|(k, v)| (k.as_slice(), v.as_slice()))
        .collect();
    let had: rustc_hash::FxHashMap<&[u8], &[u8]> = before
        .iter()
        .map(|(k, v)| (k.as_slice(), v.as_slice()))
        .collect();
    for (k, _) in &before {
        if !kept.contains_key(k.as_slice()) {
            batch.delete(k.clone());
        }
    }
    for (k, v) in &after {
        if had.get(k.as_slice()) != Some(&v.as_slice()) {
            batch.put(k.clone(), v.clone());
        }
    }
    Ok(())
}

/// The table key id of a document key.
fn key_id_of(key: &[u8]) -> Option<u64> {
    if key.first() != Some(&super::catalog::DATA_PREFIX) {
        return None;
    }
    let id: [u8; 8] = key.get(1..9)?.try_into().ok()?;
    Some(u64::from_be_bytes(id))
}

/// Documents indexed per step of an index build.
const BUILD_CHUNK_ROWS: usize = 128;
/// Shortest pause between two build steps. Each pause is at least as long as the step
/// before it, so a build takes at most half of its core and queries keep their latency.
const BUILD_PAUSE_MIN: std::time::Duration = std::time::Duration::from_millis(1);
/// Entries read at a time to finish a run of cut index values.
const CUT_RUN_CHUNK: usize = 64;

impl<F: Fs + 'static> LocalShard<F> {
    async fn do_index_read(&self, r: IndexReadReq) -> Result<IndexRows> {
        let snap = self.shard().snapshot();
        let mut raw = self
            .shard()
            .scan(
                as_ref_bound(&r.lo),
                as_ref_bound(&r.hi),
                Some(&snap),
                r.reverse,
                r.limit,
            )
            .await
            .map_err(storage_err)?;
        let mut done = raw.len() < r.limit;
        // Entries whose values share a cut prefix sort by primary key in storage: read
        // the whole run so it can be put in value order here.
        while !done {
            let (last_k, last_v) = raw.last().expect("a full batch is not empty");
            let last = super::index::parse_entry(last_k, last_v)?;
            if !last.cut {
                break;
            }
            let run_prefix =
                last_k[..super::index::PREFIX_BYTES + super::index::SEC_BYTES_MAX].to_vec();
            let after = Bound::Excluded(last_k.clone());
            let (lo, hi) = if r.reverse {
                (r.lo.clone(), after)
            } else {
                (after, r.hi.clone())
            };
            let more = self
                .shard()
                .scan(
                    as_ref_bound(&lo),
                    as_ref_bound(&hi),
                    Some(&snap),
                    r.reverse,
                    CUT_RUN_CHUNK,
                )
                .await
                .map_err(storage_err)?;
            let n = more.len();
            let mut left_run = false;
            for (k, v) in more {
                if !k.starts_with(&run_prefix) {
                    left_run = true;
                    break;
                }
                raw.push((k, v));
            }
            if left_run {
                break;
            }
            done = n < CUT_RUN_CHUNK;
        }
        let resume = raw.last().map(|(k, _)| k.clone());
        let mut rows = Vec::with_capacity(raw.len());
        let mut any_cut = false;
        for (k, v) in &raw {
            let e = super::index::parse_entry(k, v)?;
            if !super::index::within(e.sec, &r.sec_lo, &r.sec_hi) {
                continue;
            }
            any_cut |= e.cut;
            let mut doc_key = r.table_prefix.clone();
            doc_key.extend_from_slice(e.pk);
            let Some(doc) = self
                .shard()
                .get(&doc_key, Some(&snap))
                .await
                .map_err(storage_err)?
            else {
                return Err(ReqlError::new(
                    ErrorKind::Internal,
                    "An index entry points to a missing document (the index disagrees with its table).",
                ));
            };
            rows.push((e.sort_key(), doc));
        }
        if any_cut {
            if r.reverse {
                rows.sort_by(|a, b| b.0.cmp(&a.0));
            } else {
                rows.sort_by(|a, b| a.0.cmp(&b.0));
            }
        }
        Ok(IndexRows { rows, resume, done })
    }

    async fn do_build(self: &Rc<Self>, r: BuildReq) -> Result<()> {
        let Some(ix) = self.indexes.clone() else {
            return Ok(());
        };
        // Writes submitted before the index existed do not index it: wait until they
        // are visible, so the scan below sees them.
        self.shard().settle().await;
        let hi = Bound::Excluded(r.table_hi.as_slice());
        let mut total = 0u64;
        let mut lo = Bound::Included(r.table_lo.clone());
        loop {
            let rows = self
                .shard()
                .scan(as_ref_bound(&lo), hi, None, false, 4096)
                .await
                .map_err(storage_err)?;
            total += rows.len() as u64;
            match rows.last() {
                Some((k, _)) if rows.len() == 4096 => lo = Bound::Excluded(k.clone()),
                _ => break,
            }
        }
        r.progress
            .total
            .fetch_add(total, std::sync::atomic::Ordering::Relaxed);
        let mut lo = Bound::Included(r.table_lo.clone());
        loop {
            if !ix.index_exists(r.index_id) {
                return Ok(());
            }
            let step_started = std::time::Instant::now();
            let rows = self
                .shard()
                .scan(as_ref_bound(&lo), hi, None, false, BUILD_CHUNK_ROWS)
                .await
                .map_err(storage_err)?;
            let Some((last, _)) = rows.last() else {
                break;
            };
            lo = Bound::Excluded(last.clone());
            let keys: Vec<Vec<u8>> = rows.into_iter().map(|(k, _)| k).collect();
            let n = keys.len();
            // Under the documents' locks no writer changes them between the read and
            // the entries written from it.
            let _guard = self.locks.lock(keys.iter().map(Vec::as_slice)).await;
            let mut current = Vec::with_capacity(n);
            for k in &keys {
                current.push(self.shard().get(k, None).await.map_err(storage_err)?);
            }
            if !ix.index_exists(r.index_id) {
                return Ok(());
            }
            let mut batch = WriteBatch::new();
            for (k, v) in keys.iter().zip(&current) {
                if let Some(v) = v {
                    for (ek, ev) in ix.entries(k, v, Some(r.index_id))? {
                        batch.put(ek, ev);
                    }
                }
            }
            self.write_without_changes(batch).await?;
            drop(_guard);
            r.progress
                .done
                .fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
            self.kick_maintenance();
            if n < BUILD_CHUNK_ROWS {
                break;
            }
            rdb_io::sleep(step_started.elapsed().max(BUILD_PAUSE_MIN)).await;
        }
        self.shard().sync().await.map_err(storage_err)
    }

    async fn do_replay(&self, r: ReplayReq) -> Result<Replayed> {
        // Soft writes already published must be on disk to be read back.
        self.shard().sync().await.map_err(storage_err)?;
        let from_lsn = if r.from.1 == u32::MAX {
            r.from.0 + 1
        } else {
            r.from.0
        };
        if from_lsn > r.upto_lsn {
            return Ok(Replayed::default());
        }
        if from_lsn < self.shard().oldest_lsn() {
            return Err(ReqlError::new(
                ErrorKind::OpFailed,
                "The changefeed cannot resume: the changes after its token are no longer retained (raise the table's `changefeed_retention_mb`).",
            ));
        }
        let records = self
            .shard()
            .read_log(from_lsn, REPLAY_BYTES_MAX)
            .await
            .map_err(storage_err)?;
        let mut out = Replayed::default();
        let mut last = None;
        for (lsn, b) in records {
            if lsn > r.upto_lsn {
                break;
            }
            last = Some(lsn);
            let olds = decode_note(&b.note)?;
            for (i, (key, new)) in b.ops.into_iter().enumerate() {
                let i = i as u32;
                if (lsn, i) <= r.from || key_id_of(&key) != Some(r.key_id) {
                    continue;
                }
                out.changes.push(DocChange {
                    old: olds.get(&i).cloned(),
                    key,
                    new,
                    lsn,
                    idx: i,
                });
            }
        }
        out.next = match last {
            Some(l) if l < r.upto_lsn => Some((l, u32::MAX)),
            _ => None,
        };
        Ok(out)
    }

    async fn do_purge(self: &Rc<Self>, lo: Vec<u8>, hi: Vec<u8>) -> Result<u64> {
        self.shard().settle().await;
        let mut n = 0u64;
        loop {
            let rows = self
                .shard()
                .scan(
                    Bound::Included(lo.as_slice()),
                    Bound::Excluded(hi.as_slice()),
                    None,
                    false,
                    4096,
                )
                .await
                .map_err(storage_err)?;
            if rows.is_empty() {
                break;
            }
            let mut batch = WriteBatch::new();
            for (k, _) in &rows {
                batch.delete(k.clone());
            }
            n += rows.len() as u64;
            self.write_without_changes(batch).await?;
            self.kick_maintenance();
            futures_lite::future::yield_now().await;
        }
        self.shard().sync().await.map_err(storage_err)?;
        Ok(n)
    }
}

fn as_ref_bound(b: &Bound<Vec<u8>>) -> Bound<&[u8]> {
    match b {
        Bound::Included(k) => Bound::Included(k.as_slice()),
        Bound::Excluded(k) => Bound::Excluded(k.as_slice()),
        Bound::Unbounded => Bound::Unbounded,
    }
}

impl<F: Fs + 'static> ShardOps for LocalShard<F> {
    fn get(self: Rc<Self>, key: Vec<u8>) -> LocalFuture<Result<Option<Vec<u8>>>> {
        Box::pin(async move {
            let stage = Cell::new("reading");
            watched("get", &stage, self.shard().get(&key, None))
                .await
                .map_err(storage_err)
        })
    }
    fn scan(self: Rc<Self>, r: ScanReq) -> LocalFuture<Result<Rows>> {
        Box::pin(async move {
            self.shard()
                .scan(
                    as_ref_bound(&r.lo),
                    as_ref_bound(&r.hi),
                    None,
                    r.reverse,
                    r.limit,
                )
                .await
                .map_err(storage_err)
        })
    }
    fn write(self: Rc<Self>, ops: Vec<CasOp>, hard: bool) -> LocalFuture<Result<Vec<CasOutcome>>> {
        Box::pin(async move {
            let stage = Cell::new("starting");
            self.wait_for_room(&stage).await;
            let r = watched("write", &stage, self.do_write(ops, hard, &stage)).await;
            self.kick_maintenance();
            r
        })
    }
    fn sync(self: Rc<Self>) -> LocalFuture<Result<()>> {
        Box::pin(async move { self.shard().sync().await.map_err(storage_err) })
    }
    fn index_read(self: Rc<Self>, req: IndexReadReq) -> LocalFuture<Result<IndexRows>> {
        Box::pin(async move { self.do_index_read(req).await })
    }
    fn build(self: Rc<Self>, req: BuildReq) -> LocalFuture<Result<()>> {
        Box::pin(async move { self.do_build(req).await })
    }
    fn purge(self: Rc<Self>, lo: Vec<u8>, hi: Vec<u8>) -> LocalFuture<Result<u64>> {
        Box::pin(async move { self.do_purge(lo, hi).await })
    }
    fn subscribe(self: Rc<Self>, key_id: u64, queue_max: usize) -> Subscribed {
        let log = self
            .feeds
            .borrow_mut()
            .entry(key_id)
            .or_insert_with(super::changelog::TableLog::new)
            .clone();
        let cursor = log.register(queue_max);
        (
            log,
            cursor,
            (self.next_pub.get().saturating_sub(1), u32::MAX),
        )
    }
    fn replay(self: Rc<Self>, req: ReplayReq) -> LocalFuture<Result<Replayed>> {
        Box::pin(async move { self.do_replay(req).await })
    }
    fn end_feeds(self: Rc<Self>, key_id: u64, msg: String) {
        if let Some(log) = self.feeds.borrow_mut().remove(&key_id) {
            log.end(msg);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn notes_round_trip() {
        assert!(encode_note(&[]).is_empty());
        assert!(decode_note(&[]).unwrap().is_empty());
        let n = encode_note(&[(0, b"old".as_slice()), (7, b"".as_slice())]);
        let d = decode_note(&n).unwrap();
        assert_eq!(d[&0], b"old");
        assert_eq!(d[&7], b"");
        assert_eq!(d.len(), 2);
        assert!(decode_note(&[9, 0, 0]).is_err(), "unknown version");
    }

    #[test]
    fn key_locks_queue_writers_of_a_key_and_spot_repeated_keys() {
        use futures_lite::future::{block_on, poll_once};
        block_on(async {
            let locks = KeyLocks::default();
            let keys: [&[u8]; 3] = [b"a", b"b", b"a"];
            let first = locks.lock(keys.into_iter()).await;
            assert!(!first.distinct_keys(3), "\"a\" is there twice");
            let other = locks.lock([b"c".as_slice(), b"d"].into_iter()).await;
            assert!(other.distinct_keys(2));
            let mut second = std::pin::pin!(locks.lock([b"b".as_slice(), b"e"].into_iter()));
            assert!(poll_once(second.as_mut()).await.is_none(), "\"b\" is held");
            drop(other);
            assert!(poll_once(second.as_mut()).await.is_none(), "still held");
            drop(first);
            let second = poll_once(second.as_mut()).await.expect("released");
            assert!(locks.held.borrow().len() == 2);
            drop(second);
            assert!(locks.held.borrow().is_empty());
        });
    }

    proptest! {
        #[test]
        fn bad_notes_are_errors_not_panics(b in proptest::collection::vec(any::<u8>(), 0..40)) {
            let _ = decode_note(&b);
        }
    }
}
