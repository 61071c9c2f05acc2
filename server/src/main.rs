//! `rdb`: starts one executor per core, each accepting driver connections on the same
//! port (SO_REUSEPORT), until SIGINT or SIGTERM.

mod admission;
mod config;
mod lock;
mod storage;

use clap::Parser;
use config::{Cli, Command, Config};
use rdb_net::{serve_connection, ServerInfo, UserStore};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

// Queries allocate many small short-lived values (datums, terms, futures); mimalloc's
// per-thread free lists serve them several times faster than glibc's malloc here.
// Every allocation is also charged to the query fiber running at the time (if any), so
// each query's memory, and all queries' on a core, stay under their limits.
#[global_allocator]
static GLOBAL: Metered = Metered;

struct Metered;

// SAFETY: every call is forwarded unchanged to mimalloc; the meter calls only update
// thread-local counters and never allocate.
unsafe impl std::alloc::GlobalAlloc for Metered {
    #[inline]
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        let p = unsafe { mimalloc::MiMalloc.alloc(layout) };
        if !p.is_null() {
            rdb_io::control::on_alloc(layout.size());
        }
        p
    }
    #[inline]
    unsafe fn alloc_zeroed(&self, layout: std::alloc::Layout) -> *mut u8 {
        let p = unsafe { mimalloc::MiMalloc.alloc_zeroed(layout) };
        if !p.is_null() {
            rdb_io::control::on_alloc(layout.size());
        }
        p
    }
    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        rdb_io::control::on_dealloc(layout.size());
        unsafe { mimalloc::MiMalloc.dealloc(ptr, layout) }
    }
    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { mimalloc::MiMalloc.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            rdb_io::control::on_dealloc(layout.size());
            rdb_io::control::on_alloc(new_size);
        }
        p
    }
}

/// mimalloc's `mi_option_purge_delay` (its position in `mi_option_e`, mimalloc.h v3; the
/// Rust bindings name no constant for it).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
/// How long freed memory stays with the allocator before it is returned to the OS. With
/// mimalloc's default (1 s) a write load gave freed memtables back (hundreds of madvise
/// calls a second) and then paid page faults and page clearing to grow the next ones;
/// like jemalloc's decay, 10 s keeps the memory a steady load cycles through and still
/// returns it once the load stops. `MIMALLOC_PURGE_DELAY` overrides it.
const ALLOCATOR_PURGE_DELAY_MS: std::ffi::c_long = 10_000;

/// How often each core checks whether shutdown was requested.
const SHUTDOWN_POLL: Duration = Duration::from_millis(100);

fn main() {
    // SAFETY: sets a plain integer option; mimalloc reads its options lazily and this
    // runs before any thread is started.
    unsafe {
        libmimalloc_sys::mi_option_set_default(MI_OPTION_PURGE_DELAY, ALLOCATOR_PURGE_DELAY_MS)
    };
    let cli = Cli::parse();
    let args = match &cli.command {
        Some(Command::Serve(a)) => a.clone(),
        None => cli.serve.clone(),
    };
    if let Err(e) = run(&args) {
        eprintln!("rdb: error: {e}");
        std::process::exit(1);
    }
}

fn init_logging(cfg: &Config) -> Result<(), String> {
    let filter = tracing_subscriber::EnvFilter::try_from_env("RDB_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match &cfg.log_file {
        Some(p) => {
            let f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .map_err(|e| format!("cannot open log file {}: {e}", p.display()))?;
            builder
                .with_ansi(false)
                .with_writer(std::sync::Mutex::new(f))
                .init();
        }
        // Colours only for a person at a terminal, never in files or pipes.
        None => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_writer(std::io::stderr)
            .init(),
    }
    Ok(())
}

/// The machine's memory (4 GiB if /proc/meminfo cannot be read).
fn physical_memory_bytes() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("MemTotal:"))?;
            let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
            Some(kib << 10)
        })
        .unwrap_or(4 << 30)
}

fn server_id(dir: &std::path::Path) -> Result<String, String> {
    let p = dir.join("server_id");
    if let Ok(s) = std::fs::read_to_string(&p) {
        if let Ok(u) = uuid::Uuid::parse_str(s.trim()) {
            return Ok(u.to_string());
        }
    }
    let id = uuid::Uuid::new_v4().to_string();
    std::fs::write(&p, &id).map_err(|e| format!("cannot write {}: {e}", p.display()))?;
    Ok(id)
}

/// How long a busy port may take to come free before start-up gives up: a server killed
/// a moment ago keeps its listening sockets until the kernel has torn down its io_uring
/// instances (15-25 ms measured here), and a restart must not fail on that.
const PORT_RELEASE_WAIT: Duration = Duration::from_secs(2);

/// `rdb_io::probe_listen`, retried while the port is in use for `PORT_RELEASE_WAIT`.
fn probe_port(a: &std::net::SocketAddr) -> std::io::Result<()> {
    let deadline = std::time::Instant::now() + PORT_RELEASE_WAIT;
    loop {
        match rdb_io::probe_listen(a) {
            Err(e)
                if e.kind() == std::io::ErrorKind::AddrInUse
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(20));
            }
            r => return r,
        }
    }
}

/// What start-up is doing (for the report of a slow start); empty once the server is
/// ready.
static STARTUP_PHASE: std::sync::Mutex<String> = std::sync::Mutex::new(String::new());
static STARTED: AtomicBool = AtomicBool::new(false);
/// How often a start-up that has not finished says what it is doing.
const STARTUP_REPORT_EVERY: Duration = Duration::from_secs(10);

fn startup_phase(what: &str) {
    if let Ok(mut p) = STARTUP_PHASE.lock() {
        *p = what.to_string();
    }
}

/// Reports every `STARTUP_REPORT_EVERY`, until the server is ready, what start-up is
/// doing (a data directory on a disk that takes seconds per fsync, a lock, a core
/// opening its shard: the log says which).
fn watch_startup() {
    let t0 = std::time::Instant::now();
    let _ = std::thread::Builder::new()
        .name("rdb-startup".into())
        .spawn(move || loop {
            std::thread::sleep(STARTUP_REPORT_EVERY);
            if STARTED.load(Ordering::SeqCst) {
                return;
            }
            let phase = STARTUP_PHASE.lock().map(|p| p.clone()).unwrap_or_default();
            tracing::warn!(
                "start-up not finished after {} s: {phase}",
                t0.elapsed().as_secs()
            );
        });
}

fn run(args: &config::ServeArgs) -> Result<(), String> {
    let cfg = Config::resolve(args)?;
    init_logging(&cfg)?;
    watch_startup();
    let addrs = cfg.listen_addrs()?;
    startup_phase(&format!("locking {}", cfg.directory.display()));
    let lock = lock::lock_directory(&cfg.directory)?;
    startup_phase("reading the server id and the shard count (each file written is fsynced)");
    let info = ServerInfo {
        id: server_id(&cfg.directory)?,
        name: cfg.server_name.clone(),
    };
    let users = Arc::new(UserStore::with_admin(&cfg.initial_password));
    let shards = storage::shard_count(&cfg.directory, cfg.cores)?;
    if shards != cfg.cores {
        tracing::warn!(
            "this data directory was created with {shards} shards; running {shards} cores (not {})",
            cfg.cores
        );
    }
    let wiring = storage::Wiring::new(
        &cfg.directory,
        shards,
        rdb_query::store::ServerIdentity {
            id: info.id.clone(),
            name: cfg.server_name.clone(),
            driver_port: cfg.driver_port,
        },
        cfg.wal_segment_mb,
        cfg.memtable_mb,
    );

    let queries_mb = cfg
        .queries_memory_mb
        .unwrap_or_else(|| (physical_memory_bytes() / 2 / shards as u64) >> 20)
        .max(cfg.query_memory_mb);
    rdb_io::control::set_query_limit_bytes(cfg.query_memory_mb << 20);
    rdb_io::control::set_core_limit_bytes(queries_mb << 20);
    tracing::info!(
        "memory limits: {} MiB per query, {queries_mb} MiB for all queries of a core",
        cfg.query_memory_mb
    );

    if cfg.enable_js {
        rdb_query::eval::js::enable(&rdb_query::eval::js::JsConfig {
            workers: 2,
            memory_bytes_max: (cfg.js_memory_mb << 20) as usize,
        })
        .map_err(|e| format!("cannot start the JavaScript workers: {e}"))?;
        tracing::warn!(
            "r.js is enabled: queries can run JavaScript (sandboxed, {} MiB each)",
            cfg.js_memory_mb
        );
    }

    if cfg.enable_http {
        rdb_query::eval::http::enable(&rdb_query::eval::http::HttpConfig {
            workers: 4,
            allow_private: cfg.http_allow_private,
        })
        .map_err(|e| format!("cannot start the HTTP workers: {e}"))?;
        tracing::warn!(
            "r.http is enabled{}",
            if cfg.http_allow_private {
                " (private addresses allowed)"
            } else {
                ""
            }
        );
    }

    // Bind once up front so a busy port is reported clearly before any core starts.
    for a in &addrs {
        probe_port(a).map_err(|e| format!("cannot listen on {a}: {e}"))?;
    }

    let connections_max = cfg
        .max_connections
        .unwrap_or_else(admission::default_connections_max);
    let admission = admission::Admission::new(connections_max, cfg.max_connections_per_peer);
    tracing::info!(
        "connection limits: {connections_max} in all, {} per client address",
        cfg.max_connections_per_peer
    );
    let accept_errors = Arc::new(admission::RateLimitedLog::new(Duration::from_secs(10)));

    let shutdown = Arc::new(AtomicBool::new(false));
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
    ])
    .map_err(|e| format!("cannot install signal handler: {e}"))?;
    {
        // A thread of its own receives the signals: it raises the flag every core
        // polls and interrupts every core's wait, so an idle core sees it at once.
        let shutdown = shutdown.clone();
        std::thread::Builder::new()
            .name("rdb-signals".into())
            .spawn(move || {
                for sig in signals.forever() {
                    tracing::info!("received signal {sig}; shutting down");
                    shutdown.store(true, Ordering::SeqCst);
                    if let Some(w) = rdb_io::watchdog() {
                        w.kick_all();
                    }
                }
            })
            .map_err(|e| format!("cannot start the signal thread: {e}"))?;
    }

    tracing::info!(
        directory = %cfg.directory.display(),
        cores = shards,
        "rdb {} starting (server id {})",
        env!("CARGO_PKG_VERSION"),
        info.id
    );
    startup_phase("opening storage on every core (each core reports its own progress)");
    let rt = rdb_io::RuntimeConfig {
        cores: shards,
        ..Default::default()
    };
    let sd = shutdown.clone();
    let wired = wiring.clone();
    rdb_io::run_per_core(&rt, move |core| {
        let wiring = wired.clone();
        let addrs = addrs.clone();
        let users = users.clone();
        let info = info.clone();
        let sd = sd.clone();
        let admission = admission.clone();
        let accept_errors = accept_errors.clone();
        async move {
            let Some((store, local)) = wiring.open_core(core).await else {
                return;
            };
            let serve = async {
                let mut listeners = Vec::new();
                for a in &addrs {
                    match rdb_io::listen(a) {
                        Ok(l) => listeners.push(l),
                        Err(e) => {
                            tracing::error!(core, "cannot listen on {a}: {e}");
                            return;
                        }
                    }
                }
                // Storage is open on every core and this port accepts: say so, in
                // RethinkDB's words (harnesses read the port from this line).
                if core == 0 {
                    let port = listeners
                        .first()
                        .and_then(|l| l.local_addr().ok())
                        .map_or(0, |a| a.port());
                    tracing::info!("Listening for client driver connections on port {port}");
                    tracing::info!("Server ready, \"{}\" {}", info.name, info.id);
                    STARTED.store(true, Ordering::SeqCst);
                }
                let accepts = listeners.into_iter().map(|l| {
                    let users = users.clone();
                    let info = info.clone();
                    let store = store.clone();
                    let admission = admission.clone();
                    let accept_errors = accept_errors.clone();
                    async move {
                        loop {
                            match l.accept().await {
                                Ok(stream) => {
                                    let Some(ticket) = stream
                                        .peer_addr()
                                        .ok()
                                        .and_then(|p| admission.admit(p.ip()))
                                    else {
                                        // Over a cap: closed at once (dropped).
                                        continue;
                                    };
                                    let _ = stream.set_nodelay(true);
                                    let users = users.clone();
                                    let info = info.clone();
                                    let store = store.clone();
                                    rdb_io::spawn_local(async move {
                                        let _ticket = ticket;
                                        if let Err(e) =
                                            serve_connection(stream, &users, &info, Some(store))
                                                .await
                                        {
                                            tracing::debug!("connection ended: {e}");
                                        }
                                    });
                                }
                                Err(e) => {
                                    accept_errors.log(|more| {
                                        tracing::warn!(core, "accept failed: {e}{more}")
                                    });
                                    // Out of descriptors: let connections end first.
                                    rdb_io::sleep(Duration::from_millis(50)).await;
                                }
                            }
                        }
                    }
                });
                rdb_io::join_all(accepts.collect()).await;
            };
            let watch = async {
                while !sd.load(Ordering::Relaxed) {
                    rdb_io::sleep(SHUTDOWN_POLL).await;
                }
            };
            rdb_io::race(serve, watch).await;
            // Soft-durability writes become durable on a clean shutdown.
            if let Err(e) = local.shard().sync().await {
                tracing::error!(core, "final sync failed: {e}");
            }
        }
    })
    .map_err(|e| e.to_string())?;
    if wiring.failed() {
        return Err("storage could not be opened (see the log above)".into());
    }
    tracing::info!("rdb shut down cleanly");
    drop(lock);
    Ok(())
}
