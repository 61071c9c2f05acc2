//! The `changefeed` workload: F feeds on one table (spread over `--connections`), one
//! writer inserting documents stamped with their send time at `--rate` writes/s, and
//! the time from a write's send to each feed receiving its change.

use crate::client::Client;
use hdrhistogram::Histogram;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

const CHANGES: u32 = 152;
const INSERT: u32 = 56;
const DB: u32 = 14;
const TABLE: u32 = 15;
const SUCCESS_PARTIAL: u32 = 3;
const CONTINUE: &[u8] = b"[2]";

/// What the feed workload needs from the command line.
pub struct FeedOpts {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: String,
    pub db: String,
    pub table: String,
    pub feeds: usize,
    pub connections: usize,
    pub rate: f64,
    pub pipeline: usize,
    pub duration: f64,
    pub warmup: f64,
    pub durability: String,
    pub server_pid: Option<u32>,
    pub json: bool,
}

struct Shared {
    epoch: Instant,
    measuring: AtomicBool,
    stop: AtomicBool,
    writes: AtomicU64,
    received: AtomicU64,
    errors: AtomicU64,
    hist: Mutex<Histogram<u64>>,
    write_hist: Mutex<Histogram<u64>>,
}

fn micros(sh: &Shared) -> u64 {
    sh.epoch.elapsed().as_micros() as u64
}

fn table(o: &FeedOpts) -> Value {
    json!([TABLE, [[DB, [o.db]], o.table]])
}

/// Resident memory of a process in KiB, from /proc.
fn rss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn connect(o: &FeedOpts) -> Result<Client, String> {
    Client::connect(&o.host, o.port, &o.user, &o.password).map_err(|e| format!("connect: {e}"))
}

/// One connection's feeds: opens them, then records the latency of every change.
fn run_feeds(o: &FeedOpts, n: usize, sh: &Shared, opened: &Barrier) -> Result<(), String> {
    let mut c = connect(o)?;
    let start = json!([1, [CHANGES, [table(o)]], {}]).to_string();
    for token in 1..=n as u64 {
        c.send(token, start.as_bytes()).map_err(|e| e.to_string())?;
    }
    c.flush().map_err(|e| e.to_string())?;
    let mut waiting = n;
    let mut hist =
        Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).map_err(|e| e.to_string())?;
    let mut first = true;
    loop {
        if waiting == 0 && first {
            first = false;
            opened.wait();
        }
        if sh.stop.load(Ordering::Relaxed) && !first {
            break;
        }
        let (token, t, body) = match c.recv() {
            Ok(x) => x,
            Err(_) if sh.stop.load(Ordering::Relaxed) => break,
            Err(e) => return Err(format!("recv: {e}")),
        };
        if first {
            waiting = waiting.saturating_sub(1);
        }
        if t != SUCCESS_PARTIAL {
            sh.errors.fetch_add(1, Ordering::Relaxed);
            return Err(format!(
                "feed {token} ended: {}",
                String::from_utf8_lossy(&body)
                    .chars()
                    .take(300)
                    .collect::<String>()
            ));
        }
        let now = micros(sh);
        let v: Value = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
        let measuring = sh.measuring.load(Ordering::Relaxed);
        for row in v["r"].as_array().into_iter().flatten() {
            if let Some(ts) = row["new_val"]["ts"].as_u64() {
                if measuring {
                    let _ = hist.record(now.saturating_sub(ts).max(1));
                    sh.received.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        c.send(token, CONTINUE).map_err(|e| e.to_string())?;
        c.flush().map_err(|e| e.to_string())?;
    }
    sh.hist
        .lock()
        .map_err(|_| "poisoned")?
        .add(&hist)
        .map_err(|e| e.to_string())
}

/// The writer: inserts stamped documents at the rate, `pipeline` in flight.
fn run_writer(o: &FeedOpts, sh: &Shared) -> Result<(), String> {
    let mut c = connect(o)?;
    let interval = Duration::from_secs_f64(1.0 / o.rate.max(0.001));
    let mut due = Instant::now();
    // Ids stay below 2^53 (JSON numbers) and differ between runs.
    let base = u64::from(rand::random::<u16>()) << 32;
    let mut sent: std::collections::HashMap<u64, Instant> = Default::default();
    let mut next = 1u64;
    let mut hist =
        Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).map_err(|e| e.to_string())?;
    while !sh.stop.load(Ordering::Relaxed) || !sent.is_empty() {
        if !sh.stop.load(Ordering::Relaxed) && sent.len() < o.pipeline && Instant::now() >= due {
            let doc = json!({"id": base + next, "ts": micros(sh)});
            let q = json!([1, [INSERT, [table(o), doc], {"durability": o.durability}], {}]);
            c.send(next, q.to_string().as_bytes())
                .map_err(|e| e.to_string())?;
            c.flush().map_err(|e| e.to_string())?;
            sent.insert(next, Instant::now());
            next += 1;
            due += interval;
            continue;
        }
        if sent.is_empty() {
            std::thread::sleep(
                due.saturating_duration_since(Instant::now())
                    .min(Duration::from_millis(5)),
            );
            continue;
        }
        let (token, t, body) = c.recv().map_err(|e| format!("recv: {e}"))?;
        let started = sent.remove(&token).ok_or("answer for an unknown token")?;
        if t >= 16 || (t == 1 && crate::has_write_errors(&body)) {
            sh.errors.fetch_add(1, Ordering::Relaxed);
        }
        if sh.measuring.load(Ordering::Relaxed) {
            let _ = hist.record(started.elapsed().as_micros().max(1) as u64);
            sh.writes.fetch_add(1, Ordering::Relaxed);
        }
    }
    sh.write_hist
        .lock()
        .map_err(|_| "poisoned")?
        .add(&hist)
        .map_err(|e| e.to_string())
}

pub fn run(o: FeedOpts) -> Result<(), String> {
    let o = Arc::new(o);
    let sh = Arc::new(Shared {
        epoch: Instant::now(),
        measuring: AtomicBool::new(false),
        stop: AtomicBool::new(false),
        writes: AtomicU64::new(0),
        received: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        hist: Mutex::new(Histogram::new_with_bounds(1, 60_000_000, 3).map_err(|e| e.to_string())?),
        write_hist: Mutex::new(
            Histogram::new_with_bounds(1, 60_000_000, 3).map_err(|e| e.to_string())?,
        ),
    });
    let rss_before = o.server_pid.and_then(rss_kib);
    let conns = o.connections.clamp(1, o.feeds.max(1));
    let feed_conns = if o.feeds == 0 { 0 } else { conns };
    let opened = Arc::new(Barrier::new(feed_conns + 1));
    let mut feeders = Vec::new();
    for i in 0..feed_conns {
        let n = o.feeds / conns + usize::from(i < o.feeds % conns);
        let (o, sh, opened) = (o.clone(), sh.clone(), opened.clone());
        feeders.push(std::thread::spawn(move || run_feeds(&o, n, &sh, &opened)));
    }
    opened.wait();
    let rss_feeds = o.server_pid.and_then(rss_kib);
    let writer = {
        let (o, sh) = (o.clone(), sh.clone());
        std::thread::spawn(move || run_writer(&o, &sh))
    };
    std::thread::sleep(Duration::from_secs_f64(o.warmup));
    let cpu0 = o.server_pid.and_then(crate::process_cpu_us);
    let t0 = Instant::now();
    sh.measuring.store(true, Ordering::Relaxed);
    let tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
    while t0.elapsed().as_secs_f64() < o.duration {
        std::thread::sleep(Duration::from_millis(250).min(Duration::from_secs_f64(o.duration)));
        if tty {
            let secs = t0.elapsed().as_secs_f64();
            eprint!(
                "\r{:>6.1}s  {:>10.0} writes/s  {:>12.0} changes/s",
                secs,
                sh.writes.load(Ordering::Relaxed) as f64 / secs,
                sh.received.load(Ordering::Relaxed) as f64 / secs
            );
        }
    }
    if tty {
        eprintln!();
    }
    sh.measuring.store(false, Ordering::Relaxed);
    let secs = t0.elapsed().as_secs_f64();
    let cpu1 = o.server_pid.and_then(crate::process_cpu_us);
    sh.stop.store(true, Ordering::Relaxed);
    writer.join().map_err(|_| "the writer panicked")??;
    // Feed readers may be waiting for a change that never comes: a last write wakes them.
    let mut c = connect(&o)?;
    let q = json!([1, [INSERT, [table(&o), {"wake": true}]], {}]);
    let _ = c.send(1, q.to_string().as_bytes()).and_then(|_| c.flush());
    let _ = c.recv();
    for f in feeders {
        f.join().map_err(|_| "a feed reader panicked")??;
    }
    let writes = sh.writes.load(Ordering::Relaxed);
    let received = sh.received.load(Ordering::Relaxed);
    let h = sh.hist.lock().map_err(|_| "poisoned")?;
    let wh = sh.write_hist.lock().map_err(|_| "poisoned")?;
    let cpu_per_write = match (cpu0, cpu1) {
        (Some(a), Some(b)) if writes > 0 => Some((b - a) as f64 / writes as f64),
        _ => None,
    };
    let per_feed_kib = match (rss_before, rss_feeds) {
        (Some(a), Some(b)) if o.feeds > 0 => Some((b as f64 - a as f64) / o.feeds as f64),
        _ => None,
    };
    let summary = json!({
        "workload": "changefeed",
        "feeds": o.feeds,
        "seconds": secs,
        "writes": writes,
        "writes_per_sec": writes as f64 / secs,
        "changes_received": received,
        "changes_per_sec": received as f64 / secs,
        "errors": sh.errors.load(Ordering::Relaxed),
        "write_latency_us": {"p50": wh.value_at_quantile(0.5), "p99": wh.value_at_quantile(0.99)},
        "change_latency_us": {
            "p50": h.value_at_quantile(0.5),
            "p90": h.value_at_quantile(0.9),
            "p99": h.value_at_quantile(0.99),
            "p999": h.value_at_quantile(0.999),
            "max": h.max(),
        },
        "server_cpu_us_per_write": cpu_per_write,
        "server_rss_kib_per_feed": per_feed_kib,
    });
    if o.json {
        println!("{summary}");
    } else {
        println!("workload changefeed: {} feeds, {:.1} s", o.feeds, secs);
        println!(
            "  {:.0} writes/s, {:.0} changes received/s (expected {:.0})",
            writes as f64 / secs,
            received as f64 / secs,
            (writes * o.feeds as u64) as f64 / secs
        );
        println!(
            "  write sent -> change received, us: p50 {}  p90 {}  p99 {}  p99.9 {}  max {}",
            h.value_at_quantile(0.5),
            h.value_at_quantile(0.9),
            h.value_at_quantile(0.99),
            h.value_at_quantile(0.999),
            h.max()
        );
        println!(
            "  write acknowledged, us: p50 {}  p99 {}",
            wh.value_at_quantile(0.5),
            wh.value_at_quantile(0.99)
        );
        if let Some(c) = cpu_per_write {
            println!("  server CPU: {c:.2} us/write");
        }
        if let Some(m) = per_feed_kib {
            println!("  server memory: {m:.1} KiB/feed");
        }
    }
    if sh.errors.load(Ordering::Relaxed) > 0 {
        return Err("some queries failed".into());
    }
    Ok(())
}
