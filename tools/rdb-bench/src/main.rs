//! rdb-bench: a load generator over the RethinkDB wire protocol. Runs against rdb or any
//! RethinkDB 2.4 server, reports ops/s, latency percentiles and (with --server-pid) the
//! server's CPU time per operation.

mod client;
mod engine;

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
    /// Workload: `expr` (the trivial query r.expr(1)).
    #[arg(long, default_value = "expr")]
    workload: String,
    #[arg(long, default_value_t = 4)]
    connections: usize,
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

/// The query body a workload sends.
fn query_body(workload: &str) -> Result<Vec<u8>, String> {
    match workload {
        "expr" => Ok(b"[1,1,{}]".to_vec()),
        other => Err(format!("unknown workload `{other}` (available: expr)")),
    }
}

/// CPU time (user + system) of a process, in microseconds.
fn process_cpu_us(pid: u32) -> Option<u64> {
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
    errors: AtomicU64,
    hist: Mutex<Histogram<u64>>,
}

fn run_connection(o: &Opts, body: &[u8], sh: &Shared) -> Result<(), String> {
    let mut c = Client::connect(&o.host, o.port, &o.user, &o.password)
        .map_err(|e| format!("connect: {e}"))?;
    let mut hist =
        Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).map_err(|e| e.to_string())?;
    let mut sent: HashMap<u64, Instant> = HashMap::with_capacity(o.pipeline * 2);
    let mut next = 1u64;
    for _ in 0..o.pipeline {
        c.send(next, body).map_err(|e| e.to_string())?;
        sent.insert(next, Instant::now());
        next += 1;
    }
    c.flush().map_err(|e| e.to_string())?;
    while !sh.stop.load(Ordering::Relaxed) {
        let (token, t, _) = c.recv().map_err(|e| format!("recv: {e}"))?;
        let start = sent.remove(&token).ok_or("response for an unknown token")?;
        if sh.measuring.load(Ordering::Relaxed) {
            let _ = hist.record(start.elapsed().as_micros().max(1) as u64);
            sh.ops.fetch_add(1, Ordering::Relaxed);
            if t >= 16 {
                sh.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
        c.send(next, body).map_err(|e| e.to_string())?;
        sent.insert(next, Instant::now());
        next += 1;
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
    let body = query_body(&o.workload)?;
    let sh = Arc::new(Shared {
        measuring: AtomicBool::new(false),
        stop: AtomicBool::new(false),
        ops: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        hist: Mutex::new(Histogram::new_with_bounds(1, 60_000_000, 3).map_err(|e| e.to_string())?),
    });
    let mut threads = Vec::new();
    for _ in 0..o.connections {
        let (o, body, sh) = (o.clone(), body.clone(), sh.clone());
        threads.push(std::thread::spawn(move || run_connection(&o, &body, &sh)));
    }
    std::thread::sleep(Duration::from_secs_f64(o.warmup));
    let cpu0 = o.server_pid.and_then(process_cpu_us);
    let t0 = Instant::now();
    sh.measuring.store(true, Ordering::Relaxed);
    let tty = std::io::stderr().is_terminal();
    while t0.elapsed().as_secs_f64() < o.duration {
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
        if threads.iter().any(|t| t.is_finished()) {
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
    let errors = sh.errors.load(Ordering::Relaxed);
    let h = sh.hist.lock().map_err(|_| "poisoned")?;
    let cpu_us_per_op = match (cpu0, cpu1) {
        (Some(a), Some(b)) if ops > 0 => Some((b - a) as f64 / ops as f64),
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
        if let Some(c) = cpu_us_per_op {
            println!("  server CPU: {c:.2} us/op");
        }
    }
    if errors > 0 {
        return Err(format!("{errors} queries failed"));
    }
    Ok(())
}
