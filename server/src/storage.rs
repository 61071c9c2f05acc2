//! Opens this server's storage: one engine shard per core, the channels between cores,
//! and the catalog (loaded by core 0 before any core serves a query).

use rdb_engine::{Shard, ShardOptions};
use rdb_io::fs::DmaFs;
use rdb_query::store::{self, LocalShard, Request, ServerIdentity, ShardOps, SharedCatalog, Store};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Requests from other cores waiting for a core's shard; a sender finding the queue
/// full waits (back-pressure instead of memory growth).
const REQUESTS_QUEUED_MAX: usize = 4096;

/// How often a core waiting for the others to open their storage says what it waits for.
const STARTUP_REPORT_EVERY: Duration = Duration::from_secs(10);

/// Documents are placed by hashing over the shard count, so it is fixed when the data
/// directory is created; later starts use the recorded count whatever `--cores` says.
pub fn shard_count(dir: &Path, cores: usize) -> Result<usize, String> {
    let p = dir.join("shards");
    match std::fs::read_to_string(&p) {
        Ok(s) => s
            .trim()
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=256).contains(n))
            .ok_or_else(|| format!("{} is corrupt: {s:?}", p.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let tmp = dir.join("shards.tmp");
            std::fs::write(&tmp, cores.to_string())
                .and_then(|_| std::fs::File::open(&tmp)?.sync_all())
                .and_then(|_| std::fs::rename(&tmp, &p))
                .and_then(|_| std::fs::File::open(dir)?.sync_all())
                .map_err(|e| format!("cannot write {}: {e}", p.display()))?;
            Ok(cores)
        }
        Err(e) => Err(format!("cannot read {}: {e}", p.display())),
    }
}

/// What the cores share while starting: request channels, the catalog, a rendezvous.
pub struct Wiring {
    dir: PathBuf,
    identity: ServerIdentity,
    senders: Vec<flume::Sender<Request>>,
    receivers: Mutex<Vec<Option<flume::Receiver<Request>>>>,
    catalog: SharedCatalog,
    /// Cores done opening (successfully or not); the last one wakes the others.
    arrived: AtomicUsize,
    all_arrived: event_listener::Event,
    /// What each core is doing while starting, for the report of a slow start.
    phases: Mutex<Vec<String>>,
    failed: AtomicBool,
    /// Sizes for every shard (log segments, memtable).
    opts: ShardOptions,
}

impl Wiring {
    pub fn new(
        dir: &Path,
        shards: usize,
        identity: ServerIdentity,
        wal_segment_mb: u64,
        memtable_mb: u64,
    ) -> Arc<Wiring> {
        let mut opts = ShardOptions {
            maintain_in_writes: false,
            memtable_bytes_max: (memtable_mb << 20) as usize,
            ..ShardOptions::default()
        };
        opts.wal.segment_bytes_max = wal_segment_mb << 20;
        let (senders, receivers): (Vec<_>, Vec<_>) = (0..shards)
            .map(|_| flume::bounded(REQUESTS_QUEUED_MAX))
            .unzip();
        Arc::new(Wiring {
            dir: dir.to_path_buf(),
            identity,
            senders,
            receivers: Mutex::new(receivers.into_iter().map(Some).collect()),
            catalog: store::new_catalog(),
            arrived: AtomicUsize::new(0),
            all_arrived: event_listener::Event::new(),
            phases: Mutex::new(vec!["not started".to_string(); shards]),
            failed: AtomicBool::new(false),
            opts,
        })
    }

    pub fn failed(&self) -> bool {
        self.failed.load(Ordering::SeqCst)
    }

    /// Opens core `core`'s shard and returns its store handle, once every core has
    /// opened its own and the catalog is loaded. `None` if any core failed.
    pub async fn open_core(&self, core: usize) -> Option<(Rc<Store>, Rc<LocalShard<DmaFs>>)> {
        self.set_phase(
            core,
            format!(
                "opening {}",
                self.dir.join(format!("shard-{core}")).display()
            ),
        );
        let opened = self.open_shard(core).await;
        let local = match opened {
            Ok(l) => Some(l),
            Err(e) => {
                tracing::error!(core, "cannot open storage: {e}");
                self.failed.store(true, Ordering::SeqCst);
                None
            }
        };
        if let (0, Some(l)) = (core, &local) {
            self.set_phase(core, "loading the catalog".into());
            let ops: Rc<dyn ShardOps> = l.clone();
            if let Err(e) = Store::load_catalog(ops, &self.catalog).await {
                tracing::error!("cannot load the catalog: {}", e.msg);
                self.failed.store(true, Ordering::SeqCst);
            }
        }
        // Every core waits here (briefly, before serving) so no query sees a half-open
        // server. The wait is async: a core must never block its thread on another.
        self.set_phase(core, "ready".into());
        self.arrive_and_wait(core).await;
        let local = local.filter(|_| !self.failed())?;
        let rx = self.receivers.lock().expect("wiring lock")[core]
            .take()
            .expect("each core takes its receiver once");
        rdb_io::spawn_local(local.clone().serve(rx));
        rdb_io::spawn_local(reopen_when_failed(local.clone(), core));
        let ops: Rc<dyn ShardOps> = local.clone();
        let store = Store::new(
            core,
            ops,
            self.senders.clone(),
            self.catalog.clone(),
            self.identity.clone(),
        );
        if core == 0 {
            store.resume_builds();
        }
        Some((store, local))
    }

    fn set_phase(&self, core: usize, what: String) {
        if let Ok(mut p) = self.phases.lock() {
            p[core] = what;
        }
    }

    /// Counts this core in and waits until every core is; while waiting, reports every
    /// `STARTUP_REPORT_EVERY` which cores are not done and what they are doing.
    async fn arrive_and_wait(&self, core: usize) {
        let shards = self.senders.len();
        if self.arrived.fetch_add(1, Ordering::SeqCst) + 1 == shards {
            self.all_arrived.notify(usize::MAX);
            return;
        }
        let started = Instant::now();
        loop {
            let listener = self.all_arrived.listen();
            if self.arrived.load(Ordering::SeqCst) == shards {
                return;
            }
            let woke = std::cell::Cell::new(false);
            rdb_io::race(
                async {
                    listener.await;
                    woke.set(true);
                },
                rdb_io::sleep(STARTUP_REPORT_EVERY),
            )
            .await;
            if woke.get() || self.arrived.load(Ordering::SeqCst) == shards {
                return;
            }
            let waiting: Vec<String> = self
                .phases
                .lock()
                .map(|p| {
                    p.iter()
                        .enumerate()
                        .filter(|(_, what)| *what != "ready")
                        .map(|(c, what)| format!("core {c}: {what}"))
                        .collect()
                })
                .unwrap_or_default();
            tracing::warn!(
                core,
                "start-up not finished after {} s; waiting for {}",
                started.elapsed().as_secs(),
                waiting.join("; ")
            );
        }
    }

    async fn open_shard(&self, core: usize) -> Result<Rc<LocalShard<DmaFs>>, String> {
        let dir = self.dir.join(format!("shard-{core}"));
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let fs = DmaFs::new(&dir)
            .await
            .map_err(|e| format!("{}: {e}", dir.display()))?;
        let shard = Shard::open(fs, &dir, self.opts.clone())
            .await
            .map_err(|e| format!("{}: {e}", dir.display()))?;
        let indexer = rdb_query::eval::index::Indexer::new(self.catalog.clone())
            .map_err(|e| format!("cannot set up index maintenance: {}", e.msg))?;
        Ok(LocalShard::new(shard, Some(indexer)))
    }
}

/// How often a core checks whether its shard has failed.
const FAILURE_CHECK_EVERY: Duration = Duration::from_secs(2);
/// How often a reopen that keeps failing is reported.
const REOPEN_REPORT_EVERY: Duration = Duration::from_secs(60);

/// Watches this core's shard; once it has failed (a full disk, an I/O error), reopens it
/// from disk until that works and puts the new shard in its place, so writes are
/// accepted again once the cause is gone, without a restart and without retrying any
/// failed write or fsync.
async fn reopen_when_failed(local: Rc<LocalShard<DmaFs>>, core: usize) {
    let mut reported: Option<Instant> = None;
    let mut attempts = 0u64;
    loop {
        rdb_io::sleep(FAILURE_CHECK_EVERY).await;
        let shard = local.shard();
        let Some(why) = shard.failure() else {
            continue;
        };
        attempts += 1;
        match shard.reopen().await {
            Ok(reopened) => {
                local.replace_failed(reopened);
                tracing::warn!(
                    core,
                    "storage had failed ({why}); reopened from disk after {attempts} attempt(s): writes are accepted again"
                );
                attempts = 0;
                reported = None;
            }
            Err(e) => {
                if reported.is_none_or(|t| t.elapsed() >= REOPEN_REPORT_EVERY) {
                    tracing::error!(
                        core,
                        "storage has failed ({why}); reopening it failed: {e} (attempt {attempts}; retrying every {} s)",
                        FAILURE_CHECK_EVERY.as_secs()
                    );
                    reported = Some(Instant::now());
                }
            }
        }
    }
}
