//! rdb-bench: a load generator over the RethinkDB wire protocol. Runs against rdb or any
//! RethinkDB 2.4 server, reports ops/s, latency percentiles and (with --server-pid) the
//! server's CPU time per operation.

mod client;
mod engine;
mod feeds;
mod workload;

use clap::Parser;
use client::Client;
use hdrhistogram::Histogram;
use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Parser, Debug, Clone)]
#[command(
    name = "rdb-bench",
    about = "Load generator over the RethinkDB wire protocol"
)]
struct Cli {
    #[command(subcommand)]
    mode: Option<Mode>,
    #[command(flatten)]
    wire: Opts,
}

#[derive(clap::Subcommand, Debug, Clone)]
enum Mode {
    /// db_bench workloads against the storage engine in-process (no network).
    Engine(engine::EngineOpts),
}

#[derive(clap::Args, Debug, Clone)]
struct Opts {
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    #[arg(long, default_value_t = 28015)]
    port: u16,
    #[arg(long, default_value = "admin")]
    user: String,
    #[arg(long, default_value = "")]
    password: String,
    /// Workload: expr (r.expr(1)), load (insert --keys documents, then stop), insert,
    /// get, update, ycsb-a (50% update), ycsb-b (5% update), ycsb-c (gets), scan
    /// (filter+count over the table), get-all (get_all by index f0), order-limit (the
    /// 100 documents from a random f0 value up, in f0 order), changefeed (--feeds feeds
    /// on the table over --connections, one writer at --rate writes/s; reports the time
    /// from a write's send to each feed receiving it), get-nearest (the 10 documents
    /// nearest a random point, index loc; needs --geo data), get-intersecting (the
    /// documents in a random 50 km circle, index loc).
    #[arg(long, default_value = "expr")]
    workload: String,
    #[arg(long, default_value = "test")]
    db: String,
    #[arg(long, default_value = "bench")]
    table: String,
    /// Size of the key space (documents loaded by `load`, keys read by the others).
    #[arg(long, default_value_t = 100_000)]
    keys: u64,
    /// Documents per insert query.
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Bytes of padding per document.
    #[arg(long, default_value_t = 100)]
    doc_bytes: usize,
    /// Write durability: hard or soft.
    #[arg(long, default_value = "hard")]
    durability: String,
    /// Integer fields f0..f<N-1> added to every document (values drawn from 0..keys).
    #[arg(long, default_value_t = 0)]
    fields: usize,
    /// With --setup: secondary indexes on fields f0..f<N-1> (implies --fields N).
    #[arg(long, default_value_t = 0)]
    indexes: usize,
    /// Documents get a `loc` point (uniform over the sphere); with --setup, a
    /// geospatial index `loc` (for get-nearest and get-intersecting).
    #[arg(long)]
    geo: bool,
    /// Key distribution: uniform or zipfian.
    #[arg(long, default_value = "uniform")]
    distribution: String,
    /// Create the database and table first.
    #[arg(long)]
    setup: bool,
    /// Stop after this many measured operations.
    #[arg(long)]
    ops: Option<u64>,
    /// Limit to this many operations per second in total.
    #[arg(long)]
    rate: Option<f64>,
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Changefeeds for the changefeed workload.
    #[arg(long, default_value_t = 1)]
    feeds: usize,
    /// Queries in flight per connection.
    #[arg(long, default_value_t = 16)]
    pipeline: usize,
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds of load before measuring.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Report the server's CPU time per operation, read from /proc/PID/stat.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
}

fn spec(o: &Opts) -> Result<workload::Spec, String> {
    workload::check(&o.workload)?;
    if !matches!(o.durability.as_str(), "hard" | "soft") {
        return Err("--durability is hard or soft".into());
    }
    let zipfian = match o.distribution.as_str() {
        "uniform" => false,
        "zipfian" => true,
        _ => return Err("--distribution is uniform or zipfian".into()),
    };
    if o.batch == 0 {
        return Err("--batch must be at least 1".into());
    }
    if o.indexes > 64 {
        return Err("--indexes is at most 64".into());
    }
    Ok(workload::Spec {
        name: o.workload.clone(),
        db: o.db.clone(),
        table: o.table.clone(),
        keys: o.keys,
        batch: o.batch,
        doc_bytes: o.doc_bytes,
        durability: o.durability.clone(),
        zipfian,
        fields: o.fields.max(o.indexes),
        indexes: o.indexes,
        geo: o.geo,
    })
}

/// CPU time (user + system) of a process, in microseconds.
pub(crate) fn process_cpu_us(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    // SAFETY: sysconf has no side effects.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Some((utime + stime) * 1_000_000 / hz)
}

struct Shared {
    measuring: AtomicBool,
    stop: AtomicBool,
    ops: AtomicU64,
    /// Documents covered by the measured operations.
    docs: AtomicU64,
    errors: AtomicU64,
    first_error: Mutex<Option<String>>,
    hist: Mutex<Histogram<u64>>,
}

fn run_connection(o: &Opts, mut gen: workload::Generator, sh: &Shared) -> Result<(), String> {
    let mut c = Client::connect(&o.host, o.port, &o.user, &o.password)
        .map_err(|e| format!("connect: {e}"))?;
    let mut hist =
        Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).map_err(|e| e.to_string())?;
    let mut sent: HashMap<u64, Instant> = HashMap::with_capacity(o.pipeline * 2);
    let mut next = 1u64;
    let docs = gen.docs_per_op();
    // Pacing for --rate: this connection's share, as a time between sends.
    let interval = o
        .rate
        .map(|r| Duration::from_secs_f64(o.connections as f64 / r.max(0.001)));
    let mut due = Instant::now();
    let mut send = |c: &mut Client,
                    sent: &mut HashMap<u64, Instant>,
                    next: &mut u64|
     -> Result<bool, String> {
        let Some(body) = gen.next_query() else {
            return Ok(false);
        };
        if let Some(iv) = interval {
            let now = Instant::now();
            if due > now {
                c.flush().map_err(|e| e.to_string())?;
                std::thread::sleep(due - now);
            }
            due += iv;
        }
        c.send(*next, &body).map_err(|e| e.to_string())?;
        sent.insert(*next, Instant::now());
        *next += 1;
        Ok(true)
    };
    for _ in 0..o.pipeline {
        if !send(&mut c, &mut sent, &mut next)? {
            break;
        }
    }
    c.flush().map_err(|e| e.to_string())?;
    while !sent.is_empty() {
        let (token, t, body) = c.recv().map_err(|e| format!("recv: {e}"))?;
        if t == SUCCESS_PARTIAL {
            // A stream answered in several batches: the operation ends with the last.
            c.send(token, CONTINUE).map_err(|e| e.to_string())?;
            c.flush().map_err(|e| e.to_string())?;
            continue;
        }
        let start = sent.remove(&token).ok_or("response for an unknown token")?;
        // Write results report row errors inside a successful response.
        let failed = t >= 16 || (t == 1 && has_write_errors(&body));
        if failed && sh.first_error.lock().map(|e| e.is_none()).unwrap_or(false) {
            if let Ok(mut e) = sh.first_error.lock() {
                *e = Some(String::from_utf8_lossy(&body).chars().take(300).collect());
            }
        }
        if sh.measuring.load(Ordering::Relaxed) {
            let _ = hist.record(start.elapsed().as_micros().max(1) as u64);
            sh.ops.fetch_add(1, Ordering::Relaxed);
            sh.docs.fetch_add(docs, Ordering::Relaxed);
            if failed {
                sh.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
        let limit_reached = o
            .ops
            .is_some_and(|limit| sh.ops.load(Ordering::Relaxed) + sent.len() as u64 >= limit);
        if sh.stop.load(Ordering::Relaxed) || limit_reached {
            // Queries written but not yet flushed must go out, or their answers never come.
            c.flush().map_err(|e| e.to_string())?;
            continue;
        }
        send(&mut c, &mut sent, &mut next)?;
        // Refill the pipeline with one write per burst of responses.
        if !c.has_buffered() {
            c.flush().map_err(|e| e.to_string())?;
        }
    }
    sh.hist
        .lock()
        .map_err(|_| "poisoned")?
        .add(&hist)
        .map_err(|e| e.to_string())?;
    Ok(())
}

/// True when a write result (`{"t":1,"r":[{...}]}`) counts errors.
/// Response type of a partial stream, and the query that asks for the next batch.
const SUCCESS_PARTIAL: u32 = 3;
const CONTINUE: &[u8] = b"[2]";

pub(crate) fn has_write_errors(body: &[u8]) -> bool {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) else {
        return false;
    };
    v["r"][0]["errors"].as_f64().is_some_and(|n| n > 0.0)
}

/// Runs the setup queries on one connection, ignoring "already exists" errors.
fn setup(o: &Opts, spec: &workload::Spec) -> Result<(), String> {
    let mut c = Client::connect(&o.host, o.port, &o.user, &o.password)
        .map_err(|e| format!("connect: {e}"))?;
    for (i, q) in workload::setup_queries(spec).into_iter().enumerate() {
        c.send(i as u64 + 1, &q).map_err(|e| e.to_string())?;
        c.flush().map_err(|e| e.to_string())?;
        let (_, t, body) = c.recv().map_err(|e| e.to_string())?;
        let text = String::from_utf8_lossy(&body);
        if t >= 16 && !text.contains("already exists") {
            return Err(format!("setup failed: {text}"));
        }
    }
    Ok(())
}

fn main() {
    let cli = Cli::parse();
    let r = match &cli.mode {
        Some(Mode::Engine(e)) => engine::run(e),
        None => run(&cli.wire),
    };
    if let Err(e) = r {
        eprintln!("rdb-bench: error: {e}");
        std::process::exit(1);
    }
}

fn run(o: &Opts) -> Result<(), String> {
    let spec = spec(o)?;
    if o.setup {
        setup(o, &spec)?;
    }
    if o.workload == "changefeed" {
        return feeds::run(feeds::FeedOpts {
            host: o.host.clone(),
            port: o.port,
            user: o.user.clone(),
            password: o.password.clone(),
            db: o.db.clone(),
            table: o.table.clone(),
            feeds: o.feeds,
            connections: o.connections,
            rate: o.rate.unwrap_or(1000.0),
            pipeline: o.pipeline,
            duration: o.duration,
            warmup: o.warmup,
            durability: o.durability.clone(),
            server_pid: o.server_pid,
            json: o.json,
        });
    }
    // A load runs to completion and is measured from its first operation.
    let bounded = o.workload == "load";
    let sh = Arc::new(Shared {
        measuring: AtomicBool::new(bounded),
        stop: AtomicBool::new(false),
        ops: AtomicU64::new(0),
        docs: AtomicU64::new(0),
        first_error: Mutex::new(None),
        errors: AtomicU64::new(0),
        hist: Mutex::new(Histogram::new_with_bounds(1, 60_000_000, 3).map_err(|e| e.to_string())?),
    });
    let mut threads = Vec::new();
    let cpu_start = o.server_pid.and_then(process_cpu_us);
    for conn in 0..o.connections {
        let gen = workload::Generator::new(&spec, conn, o.connections)?;
        let (o, sh) = (o.clone(), sh.clone());
        threads.push(std::thread::spawn(move || run_connection(&o, gen, &sh)));
    }
    if !bounded {
        std::thread::sleep(Duration::from_secs_f64(o.warmup));
    }
    let cpu0 = if bounded {
        cpu_start
    } else {
        o.server_pid.and_then(process_cpu_us)
    };
    let t0 = Instant::now();
    sh.measuring.store(true, Ordering::Relaxed);
    let tty = std::io::stderr().is_terminal();
    while bounded || t0.elapsed().as_secs_f64() < o.duration {
        std::thread::sleep(Duration::from_millis(250));
        if tty {
            let ops = sh.ops.load(Ordering::Relaxed);
            eprint!(
                "\r{:>6.1}s  {:>12} ops  {:>10.0} ops/s",
                t0.elapsed().as_secs_f64(),
                ops,
                ops as f64 / t0.elapsed().as_secs_f64()
            );
            let _ = std::io::stderr().flush();
        }
        if threads.iter().any(|t| t.is_finished()) && !bounded {
            break;
        }
        if threads.iter().all(|t| t.is_finished()) {
            break;
        }
        if o.ops.is_some_and(|n| sh.ops.load(Ordering::Relaxed) >= n) {
            break;
        }
    }
    sh.measuring.store(false, Ordering::Relaxed);
    let secs = t0.elapsed().as_secs_f64();
    let cpu1 = o.server_pid.and_then(process_cpu_us);
    sh.stop.store(true, Ordering::Relaxed);
    if tty {
        eprintln!();
    }
    for t in threads {
        t.join().map_err(|_| "a connection thread panicked")??;
    }
    let ops = sh.ops.load(Ordering::Relaxed);
    let docs = sh.docs.load(Ordering::Relaxed);
    let errors = sh.errors.load(Ordering::Relaxed);
    let h = sh.hist.lock().map_err(|_| "poisoned")?;
    let cpu_us_per_op = match (cpu0, cpu1) {
        (Some(a), Some(b)) if ops > 0 => Some((b - a) as f64 / ops as f64),
        _ => None,
    };
    let cpu_us_per_doc = match (cpu0, cpu1) {
        (Some(a), Some(b)) if docs > 0 => Some((b - a) as f64 / docs as f64),
        _ => None,
    };
    let summary = serde_json::json!({
        "workload": o.workload,
        "connections": o.connections,
        "pipeline": o.pipeline,
        "seconds": secs,
        "ops": ops,
        "errors": errors,
        "ops_per_sec": ops as f64 / secs,
        "docs": docs,
        "docs_per_sec": docs as f64 / secs,
        "server_cpu_us_per_doc": cpu_us_per_doc,
        "latency_us": {
            "p50": h.value_at_quantile(0.5),
            "p90": h.value_at_quantile(0.9),
            "p99": h.value_at_quantile(0.99),
            "p999": h.value_at_quantile(0.999),
            "max": h.max(),
        },
        "server_cpu_us_per_op": cpu_us_per_op,
    });
    if o.json {
        println!("{summary}");
    } else {
        println!(
            "workload {}: {} connections x {} in flight, {:.1} s",
            o.workload, o.connections, o.pipeline, secs
        );
        println!(
            "  {:.0} ops/s ({} ops, {} errors)",
            ops as f64 / secs,
            ops,
            errors
        );
        println!(
            "  latency us: p50 {}  p90 {}  p99 {}  p99.9 {}  max {}",
            h.value_at_quantile(0.5),
            h.value_at_quantile(0.9),
            h.value_at_quantile(0.99),
            h.value_at_quantile(0.999),
            h.max()
        );
        if docs != ops {
            println!("  {:.0} documents/s", docs as f64 / secs);
        }
        if let Some(c) = cpu_us_per_op {
            println!("  server CPU: {c:.2} us/op");
        }
        if let (Some(c), true) = (cpu_us_per_doc, docs != ops) {
            println!("  server CPU: {c:.3} us/document");
        }
    }
    if errors > 0 {
        let first = sh
            .first_error
            .lock()
            .ok()
            .and_then(|e| e.clone())
            .unwrap_or_default();
        return Err(format!("{errors} queries failed; first: {first}"));
    }
    Ok(())
}
