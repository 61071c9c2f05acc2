//! The table store: documents and the catalog on the per-core engine shards.
//!
//! Every core owns one shard. A document lives on the shard picked by a hash of its
//! encoded primary key; requests for another core's shard travel over a channel and are
//! served there, so no shard is ever touched by two threads. The evaluator is
//! synchronous and runs on a fiber (`rdb_io::fiber`): each storage call here suspends
//! the query until its future completes, while the core serves other work.

pub mod catalog;
pub mod changelog;
pub mod index;
pub mod scan;
pub mod shard;

use crate::codec;
use crate::datum::Datum;
use crate::error::{internal, logic, ErrorKind, ReqlError, Result};
use catalog::{Catalog, DbInfo, TableInfo, CATALOG_PREFIX};
use index::IndexInfo;
use rdb_io::fiber;
pub use shard::{
    BuildProgress, BuildReq, CasOp, CasOutcome, Cond, DocChange, FeedMsg, IndexFns, IndexReadReq,
    IndexRows, LocalShard, LogPos, ReplayReq, Replayed, Request, Rows, ScanReq, ShardOps,
    Subscribed,
};
use std::ops::Bound;
use std::rc::Rc;
use std::sync::{Arc, RwLock};

/// Longest primary key in RethinkDB's printed form (type tag + value): 128 bytes, which
/// its message calls "max 127 characters".
pub const PRIMARY_KEY_BYTES_MAX: usize = 128;

/// The length of RethinkDB's printed primary key (a tag byte, then the value).
fn printed_key_len(d: &Datum) -> usize {
    deep!(printed_key_len(d));
    match d {
        Datum::Str(s) => 1 + s.len(),
        Datum::Bool(_) => 2,
        Datum::Num(_) => 1 + 16 + 1,
        Datum::Binary(b) => 1 + b.len(),
        Datum::Array(a) => 1 + a.iter().map(|x| printed_key_len(x) + 1).sum::<usize>(),
        other => 1 + crate::json::to_json(other).len(),
    }
}

/// The catalog every core shares; changes are rare and short.
pub type SharedCatalog = Arc<RwLock<Catalog>>;

/// A primary-key range of storage keys.
pub type KeyRange = (Bound<Vec<u8>>, Bound<Vec<u8>>);

pub fn new_catalog() -> SharedCatalog {
    Arc::new(RwLock::new(Catalog::empty()))
}

/// One core's handle on every shard.
pub struct Store {
    here: usize,
    local: Rc<dyn ShardOps>,
    /// Request channels of every core, by shard number (ours included, unused).
    peers: Vec<flume::Sender<Request>>,
    catalog: SharedCatalog,
    /// This server's name, as table configs and statuses report it.
    pub server_name: String,
    pub server_id: String,
    pub driver_port: u16,
    pub started_epoch_secs: f64,
}

/// The receiving end of a changefeed's registrations.
pub struct FeedInbox {
    /// Per shard: the table's change log and this feed's cursor in it.
    logs: Vec<(Arc<changelog::TableLog>, Arc<std::sync::atomic::AtomicU64>)>,
    /// Messages copied out of the logs, not yet taken.
    buf: std::collections::VecDeque<FeedMsg>,
    /// The shard read next (shards take turns).
    turn: usize,
    /// How far behind a shard's newest change the feed may fall before skipping.
    backlog_max: u64,
    /// Changes skipped because the feed fell too far behind, not yet reported.
    skipped: u64,
    /// Per shard, the position the feed starts after.
    pub start: Vec<LogPos>,
}

/// Messages copied out of one shard's log at a time.
const FEED_READ_MAX: usize = 256;

impl FeedInbox {
    /// The next message if one is ready.
    pub fn try_next(&mut self) -> Option<FeedMsg> {
        if self.buf.is_empty() {
            for _ in 0..self.logs.len() {
                let (log, cursor) = &self.logs[self.turn];
                self.turn = (self.turn + 1) % self.logs.len();
                self.skipped += log.read(cursor, FEED_READ_MAX, self.backlog_max, &mut self.buf);
                if !self.buf.is_empty() {
                    break;
                }
            }
        }
        self.buf.pop_front()
    }

    /// Changes skipped since the last call.
    pub fn take_skipped(&mut self) -> u64 {
        std::mem::take(&mut self.skipped)
    }

    /// Waits until some shard has news for this feed, or `cancel` fires.
    pub fn wait(
        &self,
        cancel: event_listener::EventListener,
    ) -> impl std::future::Future<Output = ()> + 'static {
        let logs = self.logs.clone();
        let ready = !self.buf.is_empty();
        async move { Self::wait_on(logs, ready, cancel).await }
    }

    async fn wait_on(
        logs: Vec<(Arc<changelog::TableLog>, Arc<std::sync::atomic::AtomicU64>)>,
        ready: bool,
        cancel: event_listener::EventListener,
    ) {
        // Listen first, then look: a change appended in between still wakes us.
        let listeners: Vec<_> = logs.iter().map(|(l, _)| l.listen()).collect();
        if ready || logs.iter().any(|(l, c)| l.has_news(c)) {
            return;
        }
        let mut listeners: Vec<_> = listeners.into_iter().map(Box::pin).collect();
        let mut cancel = Box::pin(cancel);
        std::future::poll_fn(|cx| {
            use std::future::Future;
            if cancel.as_mut().poll(cx).is_ready() {
                return std::task::Poll::Ready(());
            }
            for l in listeners.iter_mut() {
                if l.as_mut().poll(cx).is_ready() {
                    return std::task::Poll::Ready(());
                }
            }
            std::task::Poll::Pending
        })
        .await
    }
}

/// Who this server is, for the system tables.
#[derive(Clone, Debug)]
pub struct ServerIdentity {
    pub id: String,
    pub name: String,
    pub driver_port: u16,
}

fn gone() -> ReqlError {
    ReqlError::new(
        ErrorKind::OpIndeterminate,
        "The shard serving this request stopped.",
    )
}

fn op_failed(msg: String) -> ReqlError {
    ReqlError::new(ErrorKind::OpFailed, msg)
}

async fn ask<T>(
    tx: &flume::Sender<Request>,
    make: impl FnOnce(flume::Sender<Result<T>>) -> Request,
) -> Result<T> {
    let (rtx, rrx) = flume::bounded(1);
    // The queue to another core is bounded: a full one makes this query wait.
    tx.send_async(make(rtx)).await.map_err(|_| gone())?;
    rrx.recv_async().await.map_err(|_| gone())?
}

impl Store {
    pub fn new(
        here: usize,
        local: Rc<dyn ShardOps>,
        peers: Vec<flume::Sender<Request>>,
        catalog: SharedCatalog,
        identity: ServerIdentity,
    ) -> Rc<Store> {
        assert!(here < peers.len(), "core {here} has no shard");
        let started_epoch_secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as f64 / 1000.0)
            .unwrap_or(0.0);
        Rc::new(Store {
            here,
            local,
            peers,
            catalog,
            server_name: identity.name,
            server_id: identity.id,
            driver_port: identity.driver_port,
            started_epoch_secs,
        })
    }

    pub fn shards(&self) -> usize {
        self.peers.len()
    }

    /// The shard that owns a document key (a hash of the encoded primary key).
    pub fn shard_of(&self, key: &[u8]) -> usize {
        let pk = key.get(9..).unwrap_or(key);
        (crc32c::crc32c(pk) as usize) % self.peers.len()
    }

    // ---- raw shard calls (suspend the calling fiber) ----

    pub fn get_raw(self: &Rc<Self>, shard: usize, key: Vec<u8>) -> Result<Option<Vec<u8>>> {
        if shard == self.here {
            return fiber::block_on(self.local.clone().get(key));
        }
        let tx = self.peers[shard].clone();
        fiber::block_on(async move { ask(&tx, |r| Request::Get(key, r)).await })
    }

    /// Scans several shards at once; results in the order of `shards`.
    pub fn scan_raw(self: &Rc<Self>, reqs: Vec<(usize, ScanReq)>) -> Result<Vec<Rows>> {
        let futs: Vec<shard::LocalFuture<Result<Rows>>> = reqs
            .into_iter()
            .map(|(s, r)| -> shard::LocalFuture<Result<Rows>> {
                if s == self.here {
                    self.local.clone().scan(r)
                } else {
                    let tx = self.peers[s].clone();
                    Box::pin(async move { ask(&tx, |x| Request::Scan(r, x)).await })
                }
            })
            .collect();
        fiber::block_on(rdb_io::poll_all(futs))
            .into_iter()
            .collect()
    }

    /// Index reads on several shards at once; results in the order of `reqs`.
    pub fn index_read_raw(
        self: &Rc<Self>,
        reqs: Vec<(usize, IndexReadReq)>,
    ) -> Result<Vec<IndexRows>> {
        let futs: Vec<shard::LocalFuture<Result<IndexRows>>> = reqs
            .into_iter()
            .map(|(s, r)| -> shard::LocalFuture<Result<IndexRows>> {
                if s == self.here {
                    self.local.clone().index_read(r)
                } else {
                    let tx = self.peers[s].clone();
                    Box::pin(async move { ask(&tx, |x| Request::IndexRead(r, x)).await })
                }
            })
            .collect();
        fiber::block_on(rdb_io::poll_all(futs))
            .into_iter()
            .collect()
    }

    /// Runs `op` on every shard at once (ours locally, the others over their channels).
    fn on_every_shard<T: Send + 'static>(
        self: &Rc<Self>,
        local: impl Fn(Rc<dyn ShardOps>) -> shard::LocalFuture<Result<T>>,
        remote: impl Fn(flume::Sender<Result<T>>) -> Request,
    ) -> Vec<Result<T>> {
        let futs: Vec<shard::LocalFuture<Result<T>>> = (0..self.shards())
            .map(|s| -> shard::LocalFuture<Result<T>> {
                if s == self.here {
                    local(self.local.clone())
                } else {
                    let (rtx, rrx) = flume::bounded(1);
                    let req = remote(rtx);
                    let peer = self.peers[s].clone();
                    Box::pin(async move {
                        peer.send_async(req).await.map_err(|_| gone())?;
                        rrx.recv_async().await.map_err(|_| gone())?
                    })
                }
            })
            .collect();
        fiber::block_on(rdb_io::poll_all(futs))
    }

    /// Deletes every key in `[lo, hi)` on every shard.
    fn purge_all(self: &Rc<Self>, lo: Vec<u8>, hi: Vec<u8>) -> Result<u64> {
        let (l2, h2) = (lo.clone(), hi.clone());
        let mut n = 0;
        for r in self.on_every_shard(
            move |s| s.purge(l2.clone(), h2.clone()),
            move |tx| Request::Purge(lo.clone(), hi.clone(), tx),
        ) {
            n += r?;
        }
        Ok(n)
    }

    /// Conditional writes on several shards at once; outcomes in input order.
    pub fn write_raw(self: &Rc<Self>, ops: Vec<CasOp>, hard: bool) -> Result<Vec<CasOutcome>> {
        let n = self.shards();
        let mut per: Vec<(Vec<usize>, Vec<CasOp>)> = (0..n).map(|_| (vec![], vec![])).collect();
        for (i, op) in ops.into_iter().enumerate() {
            let s = if op.key.first() == Some(&CATALOG_PREFIX) {
                0
            } else {
                self.shard_of(&op.key)
            };
            per[s].0.push(i);
            per[s].1.push(op);
        }
        let mut slots = Vec::new();
        let mut futs: Vec<shard::LocalFuture<Result<Vec<CasOutcome>>>> = Vec::new();
        let mut total = 0;
        for (s, (idx, ops)) in per.into_iter().enumerate() {
            if ops.is_empty() {
                continue;
            }
            total += idx.len();
            slots.push(idx);
            if s == self.here {
                futs.push(self.local.clone().write(ops, hard));
            } else {
                let tx = self.peers[s].clone();
                futs.push(Box::pin(async move {
                    ask(&tx, |r| Request::Write(ops, hard, r)).await
                }));
            }
        }
        let results = fiber::block_on(rdb_io::poll_all(futs));
        let mut out: Vec<Option<CasOutcome>> = vec![None; total];
        for (idx, r) in slots.into_iter().zip(results) {
            let r = r?;
            assert_eq!(r.len(), idx.len(), "a shard answers every write");
            for (i, o) in idx.into_iter().zip(r) {
                out[i] = Some(o);
            }
        }
        Ok(out
            .into_iter()
            .map(|o| o.expect("every write has an outcome"))
            .collect())
    }

    /// Makes soft-durability writes on every shard durable.
    pub fn sync_all(self: &Rc<Self>) -> Result<()> {
        let futs: Vec<shard::LocalFuture<Result<()>>> = (0..self.shards())
            .map(|s| -> shard::LocalFuture<Result<()>> {
                if s == self.here {
                    self.local.clone().sync()
                } else {
                    let tx = self.peers[s].clone();
                    Box::pin(async move { ask(&tx, Request::Sync).await })
                }
            })
            .collect();
        for r in fiber::block_on(rdb_io::poll_all(futs)) {
            r?;
        }
        Ok(())
    }

    // ---- catalog ----

    /// Reads the catalog from shard 0 (call on core 0 before serving queries).
    pub async fn load_catalog(local: Rc<dyn ShardOps>, catalog: &SharedCatalog) -> Result<()> {
        let rows = local
            .clone()
            .scan(ScanReq {
                lo: Bound::Included(vec![CATALOG_PREFIX]),
                hi: Bound::Excluded(vec![CATALOG_PREFIX + 1]),
                reverse: false,
                limit: usize::MAX,
            })
            .await?;
        let mut c = Catalog::load(&rows)?;
        let fresh = rows.is_empty();
        if fresh {
            // A new server starts with database `test`, as RethinkDB does.
            let db = DbInfo {
                id: uuid::Uuid::new_v4().to_string(),
                name: "test".into(),
            };
            let op = CasOp {
                key: catalog::db_key("test"),
                cond: Cond::Absent,
                new: Some(db.encode()),
            };
            let _ = local.write(vec![op], true).await?;
            c.dbs.insert("test".into(), db);
        }
        *catalog.write().expect("catalog lock") = c;
        Ok(())
    }

    pub fn catalog(&self) -> std::sync::RwLockReadGuard<'_, Catalog> {
        self.catalog.read().expect("catalog lock")
    }

    pub fn db(&self, name: &str) -> Result<DbInfo> {
        self.catalog()
            .dbs
            .get(name)
            .cloned()
            .ok_or_else(|| op_failed(format!("Database `{name}` does not exist.")))
    }

    pub fn table(&self, db: &str, name: &str) -> Result<Arc<TableInfo>> {
        let c = self.catalog();
        if !c.dbs.contains_key(db) {
            return Err(op_failed(format!("Database `{db}` does not exist.")));
        }
        c.get_table(db, name)
            .cloned()
            .ok_or_else(|| op_failed(format!("Table `{db}.{name}` does not exist.")))
    }

    fn persist(self: &Rc<Self>, key: Vec<u8>, value: Option<Vec<u8>>) -> Result<()> {
        let r = self.write_raw(
            vec![CasOp {
                key,
                cond: Cond::Any,
                new: value,
            }],
            true,
        )?;
        debug_assert!(matches!(r[0], CasOutcome::Applied { .. }));
        Ok(())
    }

    pub fn db_create(self: &Rc<Self>, name: &str) -> Result<DbInfo> {
        let db = DbInfo {
            id: uuid::Uuid::new_v4().to_string(),
            name: name.to_string(),
        };
        {
            let mut c = self.catalog.write().expect("catalog lock");
            if c.dbs.contains_key(name) {
                return Err(op_failed(format!("Database `{name}` already exists.")));
            }
            c.dbs.insert(name.to_string(), db.clone());
        }
        if let Err(e) = self.persist(catalog::db_key(name), Some(db.encode())) {
            self.catalog.write().expect("catalog lock").dbs.remove(name);
            return Err(e);
        }
        Ok(db)
    }

    /// Drops a database and its tables; returns them.
    pub fn db_drop(self: &Rc<Self>, name: &str) -> Result<(DbInfo, Vec<Arc<TableInfo>>)> {
        let (db, tables) = {
            let mut c = self.catalog.write().expect("catalog lock");
            let db = c
                .dbs
                .remove(name)
                .ok_or_else(|| op_failed(format!("Database `{name}` does not exist.")))?;
            let keys: Vec<_> = c
                .tables()
                .map(|(k, _)| k)
                .filter(|(d, _)| d == name)
                .cloned()
                .collect();
            let tables: Vec<_> = keys
                .into_iter()
                .filter_map(|(d, t)| c.remove_table(&d, &t))
                .collect();
            (db, tables)
        };
        for t in &tables {
            self.persist(catalog::table_key(&t.db, &t.name), None)?;
            self.delete_table_data(t)?;
        }
        self.persist(catalog::db_key(name), None)?;
        Ok((db, tables))
    }

    pub fn table_create(
        self: &Rc<Self>,
        db: &str,
        name: &str,
        primary_key: &str,
        durability_hard: bool,
        shards: u32,
        feed_retention_mb: u32,
    ) -> Result<Arc<TableInfo>> {
        let t = {
            let mut c = self.catalog.write().expect("catalog lock");
            let Some(dbi) = c.dbs.get(db).cloned() else {
                return Err(op_failed(format!("Database `{db}` does not exist.")));
            };
            if c.get_table(db, name).is_some() {
                return Err(op_failed(format!("Table `{db}.{name}` already exists.")));
            }
            let t = Arc::new(TableInfo {
                id: uuid::Uuid::new_v4().to_string(),
                db: db.to_string(),
                db_id: dbi.id,
                name: name.to_string(),
                key_id: c.next_key_id,
                primary_key: primary_key.to_string(),
                durability_hard,
                shards,
                write_hook: None,
                indexes: Vec::new(),
                feed_retention_mb,
            });
            c.put_table(t.clone());
            t
        };
        if let Err(e) = self.persist(catalog::table_key(db, name), Some(t.encode())) {
            let mut c = self.catalog.write().expect("catalog lock");
            c.remove_table(db, name);
            return Err(e);
        }
        Ok(t)
    }

    /// Changes a table's configuration (rename, durability, shard count, indexes);
    /// `change` sees the current entry under the catalog lock and may refuse.
    pub fn table_alter(
        self: &Rc<Self>,
        db: &str,
        name: &str,
        change: impl FnOnce(&mut TableInfo) -> Result<()>,
    ) -> Result<Arc<TableInfo>> {
        let (t, old_name) = {
            let mut c = self.catalog.write().expect("catalog lock");
            let Some(old) = c.get_table(db, name).cloned() else {
                return Err(op_failed(format!("Table `{db}.{name}` does not exist.")));
            };
            let mut t = (*old).clone();
            change(&mut t)?;
            assert_eq!(t.key_id, old.key_id, "a table keeps its key id");
            if t.name != name && c.get_table(db, &t.name).is_some() {
                return Err(op_failed(format!(
                    "Table `{db}.{}` already exists.",
                    t.name
                )));
            }
            let t = Arc::new(t);
            c.remove_table(db, name);
            c.put_table(t.clone());
            (t, old.name.clone())
        };
        if t.name != old_name {
            self.persist(catalog::table_key(db, &old_name), None)?;
        }
        self.persist(catalog::table_key(db, &t.name), Some(t.encode()))?;
        Ok(t)
    }

    pub fn table_drop(self: &Rc<Self>, db: &str, name: &str) -> Result<Arc<TableInfo>> {
        let t = {
            let mut c = self.catalog.write().expect("catalog lock");
            if !c.dbs.contains_key(db) {
                return Err(op_failed(format!("Database `{db}` does not exist.")));
            }
            c.remove_table(db, name)
                .ok_or_else(|| op_failed(format!("Table `{db}.{name}` does not exist.")))?
        };
        self.persist(catalog::table_key(db, name), None)?;
        self.delete_table_data(&t)?;
        Ok(t)
    }

    /// Removes every document and index entry of a dropped table on every shard.
    fn delete_table_data(self: &Rc<Self>, t: &TableInfo) -> Result<()> {
        self.end_feeds(t);
        let (lo, hi) = t.key_range();
        self.purge_all(lo, hi)?;
        for ix in &t.indexes {
            self.purge_index(ix.id)?;
        }
        Ok(())
    }

    fn purge_index(self: &Rc<Self>, id: u64) -> Result<u64> {
        self.purge_all(index::index_prefix(id), index::index_prefix(id + 1))
    }

    // ---- changefeeds ----

    /// Registers a feed of table `t` on every shard; changes committed after this
    /// returns reach `rx`. At most `queue_max` wait unread; more are counted skipped.
    pub fn subscribe(self: &Rc<Self>, t: &TableInfo, queue_max: usize) -> Result<FeedInbox> {
        let key_id = t.key_id;
        let mut start = Vec::with_capacity(self.shards());
        let mut logs = Vec::with_capacity(self.shards());
        for r in self.on_every_shard(
            move |s| {
                let sub = s.subscribe(key_id, queue_max);
                Box::pin(async move { Ok(sub) })
            },
            move |tx| Request::Subscribe(key_id, queue_max, tx),
        ) {
            let (log, cursor, pos) = r?;
            logs.push((log, cursor));
            start.push(pos);
        }
        // The bound is the feed's, shared by its shards.
        let backlog_max = (queue_max / self.shards()).max(1) as u64;
        Ok(FeedInbox {
            logs,
            buf: Default::default(),
            turn: 0,
            backlog_max,
            skipped: 0,
            start,
        })
    }

    /// Reads a table's changes back from one shard's log.
    pub fn replay_raw(self: &Rc<Self>, shard: usize, req: ReplayReq) -> Result<Replayed> {
        if shard == self.here {
            return fiber::block_on(self.local.clone().replay(req));
        }
        let tx = self.peers[shard].clone();
        fiber::block_on(async move { ask(&tx, |r| Request::Replay(req, r)).await })
    }

    /// Ends the feeds of a table (it was dropped) on every shard.
    fn end_feeds(self: &Rc<Self>, t: &TableInfo) {
        let msg = "Changefeed aborted (table unavailable).".to_string();
        for s in 0..self.shards() {
            if s == self.here {
                self.local.clone().end_feeds(t.key_id, msg.clone());
            } else {
                let peer = self.peers[s].clone();
                let req = Request::EndFeeds(t.key_id, msg.clone());
                rdb_io::spawn_local(async move {
                    let _ = peer.send_async(req).await;
                });
            }
        }
    }

    // ---- secondary indexes ----

    /// Adds an index (not ready) and starts building it in the background.
    pub fn index_create(self: &Rc<Self>, t: &TableInfo, mut ix: IndexInfo) -> Result<()> {
        ix.id = {
            let mut c = self.catalog.write().expect("catalog lock");
            let id = c.next_key_id;
            c.next_key_id += 1;
            id
        };
        ix.ready = false;
        let id = ix.id;
        let name = ix.name.clone();
        let t = self.table_alter(&t.db, &t.name, |x| {
            if x.index(&name).is_some() {
                return Err(op_failed(format!(
                    "Index `{name}` already exists on table `{}.{}`.",
                    x.db, x.name
                )));
            }
            x.indexes.push(ix);
            x.indexes.sort_by(|a, b| a.name.cmp(&b.name));
            Ok(())
        })?;
        self.start_build(t, id);
        Ok(())
    }

    /// Removes an index; its entries are deleted in the background.
    pub fn index_drop(self: &Rc<Self>, t: &TableInfo, name: &str) -> Result<()> {
        let mut dropped = None;
        self.table_alter(&t.db, &t.name, |x| {
            let Some(at) = x.indexes.iter().position(|ix| ix.name == name) else {
                return Err(op_failed(format!(
                    "Index `{name}` does not exist on table `{}.{}`.",
                    x.db, x.name
                )));
            };
            dropped = Some(x.indexes.remove(at).id);
            Ok(())
        })?;
        if let Some(id) = dropped {
            self.catalog
                .write()
                .expect("catalog lock")
                .builds
                .remove(&id);
            self.spawn_purge(id);
        }
        Ok(())
    }

    /// Renames an index; with `overwrite`, an index already called `new` is dropped.
    /// Returns whether anything changed.
    pub fn index_rename(
        self: &Rc<Self>,
        t: &TableInfo,
        old: &str,
        new: &str,
        overwrite: bool,
    ) -> Result<bool> {
        let mut replaced = None;
        self.table_alter(&t.db, &t.name, |x| {
            let missing = x.index(old).is_none();
            let taken = old != new && x.index(new).is_some();
            if missing || (taken && !overwrite) {
                return Err(op_failed(if overwrite {
                    format!("Index `{old}` does not exist on table `{}.{}`.", x.db, x.name)
                } else {
                    format!(
                        "Index `{old}` does not exist or index `{new}` already exists on table `{}.{}`.",
                        x.db, x.name
                    )
                }));
            }
            if old == new {
                return Ok(());
            }
            if taken {
                let at = x.indexes.iter().position(|ix| ix.name == new).expect("taken");
                replaced = Some(x.indexes.remove(at).id);
            }
            for ix in x.indexes.iter_mut().filter(|ix| ix.name == old) {
                ix.name = new.to_string();
            }
            x.indexes.sort_by(|a, b| a.name.cmp(&b.name));
            Ok(())
        })?;
        if let Some(id) = replaced {
            self.spawn_purge(id);
        }
        Ok(old != new)
    }

    /// Progress of an index build still running (done, total documents).
    pub fn build_progress(&self, index_id: u64) -> Option<(u64, u64)> {
        use std::sync::atomic::Ordering::Relaxed;
        let c = self.catalog();
        let p = c.builds.get(&index_id)?;
        Some((p.done.load(Relaxed), p.total.load(Relaxed)))
    }

    /// Builds index `id` of table `t` on every shard in a background fiber, then marks
    /// it ready.
    fn start_build(self: &Rc<Self>, t: Arc<TableInfo>, id: u64) {
        let progress = Arc::new(BuildProgress::default());
        self.catalog
            .write()
            .expect("catalog lock")
            .builds
            .insert(id, progress.clone());
        let me = self.clone();
        rdb_io::spawn_local(async move {
            fiber::run(move || {
                if let Err(e) = me.run_build(&t, id, progress) {
                    tracing::error!(
                        table = %format!("{}.{}", t.db, t.name),
                        index_id = id,
                        "index build failed (it restarts when the server does): {}",
                        e.msg
                    );
                }
            })
            .await;
        });
    }

    fn run_build(
        self: &Rc<Self>,
        t: &TableInfo,
        id: u64,
        progress: Arc<BuildProgress>,
    ) -> Result<()> {
        let (table_lo, table_hi) = t.key_range();
        let req = BuildReq {
            table_lo,
            table_hi,
            index_id: id,
            progress,
        };
        let r2 = req.clone();
        for r in self.on_every_shard(
            move |s| s.build(r2.clone()),
            move |tx| Request::Build(req.clone(), tx),
        ) {
            r?;
        }
        // The table may have been renamed meanwhile: find it by key id.
        let current = self.catalog().by_key_id(t.key_id).cloned();
        let Some(current) = current else {
            return Ok(());
        };
        if current.indexes.iter().any(|ix| ix.id == id) {
            self.table_alter(&current.db, &current.name, |x| {
                for ix in x.indexes.iter_mut().filter(|ix| ix.id == id) {
                    ix.ready = true;
                }
                Ok(())
            })?;
        }
        self.catalog
            .write()
            .expect("catalog lock")
            .builds
            .remove(&id);
        Ok(())
    }

    fn spawn_purge(self: &Rc<Self>, id: u64) {
        let me = self.clone();
        rdb_io::spawn_local(async move {
            fiber::run(move || {
                if let Err(e) = me.purge_index(id) {
                    tracing::error!(index_id = id, "deleting a dropped index failed: {}", e.msg);
                }
            })
            .await;
        });
    }

    /// Restarts the builds of indexes that were not ready when the server stopped
    /// (call once, on one core, after the catalog is loaded).
    pub fn resume_builds(self: &Rc<Self>) {
        let pending: Vec<(Arc<TableInfo>, u64)> = self
            .catalog()
            .tables()
            .flat_map(|(_, t)| {
                t.indexes
                    .iter()
                    .filter(|ix| !ix.ready)
                    .map(|ix| (t.clone(), ix.id))
                    .collect::<Vec<_>>()
            })
            .collect();
        for (t, id) in pending {
            tracing::info!(table = %format!("{}.{}", t.db, t.name), index_id = id, "resuming an index build");
            self.start_build(t, id);
        }
    }

    // ---- documents ----

    /// The storage key of a document: table prefix + order-preserving primary key.
    pub fn doc_key(t: &TableInfo, pk: &Datum) -> Result<Vec<u8>> {
        check_primary_key(pk)?;
        let mut k = t.key_prefix();
        crate::keycode::encode_into(&mut k, pk);
        if printed_key_len(pk) > PRIMARY_KEY_BYTES_MAX {
            return Err(logic(format!(
                "Primary key too long (max {} characters): {}",
                PRIMARY_KEY_BYTES_MAX - 1,
                crate::json::cut_echo(&crate::json::to_json(pk))
            )));
        }
        Ok(k)
    }

    pub fn get_doc(self: &Rc<Self>, t: &TableInfo, pk: &Datum) -> Result<Option<Datum>> {
        let key = Self::doc_key(t, pk)?;
        let shard = self.shard_of(&key);
        match self.get_raw(shard, key)? {
            None => Ok(None),
            Some(b) => decode_doc(&b).map(Some),
        }
    }
}

pub fn decode_doc(b: &[u8]) -> Result<Datum> {
    codec::decode(b).map_err(|e| internal(format!("Corrupt document in storage: {}", e.0)))
}

pub fn encode_doc(d: &Datum) -> Result<Vec<u8>> {
    let b = codec::encode(d).map_err(|e| logic(format!("Cannot store document: {}", e.0)))?;
    // Checked here, at the write, with the document's own error, rather than failing
    // the whole storage batch later.
    if b.len() > DOC_BYTES_MAX {
        return Err(logic(format!(
            "Document too large to store: {} bytes encoded (the limit is {} bytes).",
            b.len(),
            DOC_BYTES_MAX
        )));
    }
    Ok(b)
}

/// Largest encoded document a table stores (the engine's value limit).
pub const DOC_BYTES_MAX: usize = rdb_engine::VALUE_BYTES_MAX;

/// RethinkDB's rule for what may be a primary key.
pub fn check_primary_key(pk: &Datum) -> Result<()> {
    let ok = match pk {
        Datum::Null | Datum::MinVal | Datum::MaxVal => false,
        Datum::Object(_) => pk.is_ptype(),
        _ => true,
    };
    if ok {
        return check_no_nul(pk);
    }
    Err(logic(format!(
        "Primary keys must be either a number, string, bool, pseudotype or array (got type {}):\n{}",
        pk.type_name(),
        crate::json::trunc_pretty(pk)
    )))
}

/// Primary keys may not contain NUL bytes in strings (RethinkDB's key format forbids
/// them), also inside arrays.
fn check_no_nul(d: &Datum) -> Result<()> {
    deep!(check_no_nul(d));
    match d {
        Datum::Str(s) => match s.bytes().position(|b| b == 0) {
            None => Ok(()),
            Some(at) => {
                let mut shown = String::new();
                for b in s.bytes().take(20) {
                    if b.is_ascii_graphic() || b == b' ' {
                        shown.push(b as char);
                    } else {
                        shown.push_str(&format!("\\x{b:02x}"));
                    }
                }
                Err(logic(format!(
                    "String \"{shown}\" (truncated) contains NULL byte at offset {at} in index key."
                )))
            }
        },
        Datum::Array(a) => a.iter().try_for_each(check_no_nul),
        _ => Ok(()),
    }
}
