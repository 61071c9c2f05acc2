//! One core's shard as the store sees it: reads, conditional writes under per-key locks
//! (so a read-modify-write of one document is atomic), and the request loop that serves
//! other cores.

use crate::error::{ErrorKind, ReqlError, Result};
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

/// The operations every shard offers, as futures that own what they need.
pub trait ShardOps {
    fn get(self: Rc<Self>, key: Vec<u8>) -> LocalFuture<Result<Option<Vec<u8>>>>;
    fn scan(self: Rc<Self>, req: ScanReq) -> LocalFuture<Result<Rows>>;
    fn write(self: Rc<Self>, ops: Vec<CasOp>, hard: bool) -> LocalFuture<Result<Vec<CasOutcome>>>;
    fn sync(self: Rc<Self>) -> LocalFuture<Result<()>>;
}

/// A request from another core, with where to send the answer.
pub enum Request {
    Get(Vec<u8>, flume::Sender<Result<Option<Vec<u8>>>>),
    Scan(ScanReq, flume::Sender<Result<Rows>>),
    Write(Vec<CasOp>, bool, flume::Sender<Result<Vec<CasOutcome>>>),
    Sync(flume::Sender<Result<()>>),
}

/// Keys with a write in progress; writers of the same key queue behind each other.
#[derive(Default)]
struct KeyLocks {
    held: RefCell<rustc_hash::FxHashSet<Vec<u8>>>,
    released: event_listener::Event,
}

struct KeyGuard<'a> {
    locks: &'a KeyLocks,
    keys: Vec<Vec<u8>>,
}

impl Drop for KeyGuard<'_> {
    fn drop(&mut self) {
        let mut held = self.locks.held.borrow_mut();
        for k in &self.keys {
            held.remove(k);
        }
        drop(held);
        self.locks.released.notify(usize::MAX);
    }
}

impl KeyLocks {
    /// Takes every key at once (all or none, so two writers cannot deadlock).
    async fn lock(&self, mut keys: Vec<Vec<u8>>) -> KeyGuard<'_> {
        keys.sort();
        keys.dedup();
        loop {
            let listener = {
                let mut held = self.held.borrow_mut();
                if keys.iter().all(|k| !held.contains(k)) {
                    for k in &keys {
                        held.insert(k.clone());
                    }
                    return KeyGuard { locks: self, keys };
                }
                self.released.listen()
            };
            listener.await;
        }
    }
}

/// The shard owned by the current core.
pub struct LocalShard<F: Fs> {
    shard: Shard<F>,
    locks: KeyLocks,
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
    pub fn new(shard: Shard<F>) -> Rc<LocalShard<F>> {
        Rc::new(LocalShard {
            shard,
            locks: KeyLocks::default(),
            maintaining: Cell::new(false),
        })
    }

    pub fn shard(&self) -> &Shard<F> {
        &self.shard
    }

    async fn do_write(
        &self,
        ops: Vec<CasOp>,
        hard: bool,
        stage: &Cell<&'static str>,
    ) -> Result<Vec<CasOutcome>> {
        let keys = ops.iter().map(|o| o.key.clone()).collect();
        stage.set("waiting for key locks");
        let _guard = self.locks.lock(keys).await;
        stage.set("reading current values");
        let mut batch = WriteBatch::new();
        let mut out = Vec::with_capacity(ops.len());
        // Later ops in one request see earlier ones (two inserts of one key conflict).
        let mut pending: rustc_hash::FxHashMap<Vec<u8>, Option<Vec<u8>>> =
            rustc_hash::FxHashMap::default();
        for op in ops {
            let current = match pending.get(&op.key) {
                Some(v) => v.clone(),
                None => self.shard.get(&op.key, None).await.map_err(storage_err)?,
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
            match &op.new {
                Some(v) => batch.put(op.key.clone(), v.clone()),
                None => batch.delete(op.key.clone()),
            };
            pending.insert(op.key, op.new);
            out.push(CasOutcome::Applied { old: current });
        }
        let durability = if hard {
            Durability::Hard
        } else {
            Durability::Soft
        };
        stage.set("writing");
        self.shard
            .write(batch, durability)
            .await
            .map_err(storage_err)?;
        Ok(out)
    }

    /// Starts flushing and compacting in the background once the memtable is full, so
    /// no write waits for it (the shard is opened with `maintain_in_writes` off).
    fn kick_maintenance(self: &Rc<Self>) {
        if self.maintaining.get() || !self.shard.needs_maintenance() {
            return;
        }
        self.maintaining.set(true);
        let me = self.clone();
        rdb_io::spawn_local(async move {
            // Writes keep filling the next memtable meanwhile: go again until caught up.
            while me.shard.needs_maintenance() {
                if let Err(e) = me.shard.maintain().await {
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
                }
            });
        }
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
            watched("get", &stage, self.shard.get(&key, None))
                .await
                .map_err(storage_err)
        })
    }
    fn scan(self: Rc<Self>, r: ScanReq) -> LocalFuture<Result<Rows>> {
        Box::pin(async move {
            self.shard
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
            let r = watched("write", &stage, self.do_write(ops, hard, &stage)).await;
            self.kick_maintenance();
            r
        })
    }
    fn sync(self: Rc<Self>) -> LocalFuture<Result<()>> {
        Box::pin(async move { self.shard.sync().await.map_err(storage_err) })
    }
}
