//! Engine mode: db_bench's workloads run in-process against one storage shard on real
//! files (no network), so the engine can be compared with RocksDB's db_bench directly.

use clap::Args;
use rdb_engine::{Durability, Shard, ShardOptions};
use rdb_io::fs::DmaFs;
use std::ops::Bound;
use std::path::PathBuf;
use std::time::Instant;

#[derive(Args, Debug, Clone)]
pub struct EngineOpts {
    /// Data directory (wiped by the fill benchmarks).
    #[arg(long, default_value = "/tmp/rdb-engine-bench")]
    pub dir: PathBuf,
    /// Comma-separated: fillseq, fillrandom, overwrite, readrandom, seekrandom.
    #[arg(
        long,
        default_value = "fillseq,fillrandom,overwrite,readrandom,seekrandom"
    )]
    pub benchmarks: String,
    /// Operations per task (as db_bench counts them); also the key space.
    #[arg(long, default_value_t = 1_000_000)]
    pub num: u64,
    /// Concurrent tasks issuing operations (on the shard's one core).
    #[arg(long, default_value_t = 1)]
    pub threads: u64,
    /// Every write waits for fdatasync (group-committed across tasks).
    #[arg(long, default_value_t = false)]
    pub sync: bool,
    #[arg(long, default_value_t = 16)]
    pub key_size: usize,
    #[arg(long, default_value_t = 100)]
    pub value_size: usize,
    #[arg(long)]
    pub json: bool,
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// db_bench's key layout: the number big-endian, padded to `size` bytes.
fn key(n: u64, size: usize) -> Vec<u8> {
    let mut k = n.to_be_bytes().to_vec();
    k.resize(size.max(8), b'0');
    k
}

/// Values that compress to about half their size, like db_bench's default.
fn value(rng: &mut Rng, size: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(size);
    while v.len() < size / 2 {
        v.extend_from_slice(&rng.next().to_le_bytes());
    }
    v.truncate(size / 2);
    v.resize(size, b'x');
    v
}

pub fn run(o: &EngineOpts) -> Result<(), String> {
    let cfg = rdb_io::RuntimeConfig {
        cores: 1,
        io_memory_bytes: 512 * 1024,
        pin: false,
    };
    let o2 = o.clone();
    let result = std::sync::Arc::new(std::sync::Mutex::new(Ok(Vec::new())));
    let r2 = result.clone();
    rdb_io::run_per_core(&cfg, move |_| {
        let o = o2.clone();
        let r2 = r2.clone();
        async move {
            let r = run_all(&o).await;
            *r2.lock().expect("not poisoned") = r;
        }
    })
    .map_err(|e| e.to_string())?;
    let rows = std::mem::replace(&mut *result.lock().map_err(|_| "poisoned")?, Ok(Vec::new()))?;
    if o.json {
        println!("{}", serde_json::Value::Array(rows));
    } else {
        for r in rows {
            println!(
                "{:<11}: {:>10.3} micros/op {:>10.0} ops/sec; write-amp {:.2}",
                r["benchmark"].as_str().unwrap_or(""),
                r["micros_per_op"].as_f64().unwrap_or(0.0),
                r["ops_per_sec"].as_f64().unwrap_or(0.0),
                r["write_amplification"].as_f64().unwrap_or(0.0)
            );
        }
    }
    Ok(())
}

async fn open(o: &EngineOpts, fresh: bool) -> Result<Shard<DmaFs>, String> {
    if fresh {
        let _ = std::fs::remove_dir_all(&o.dir);
    }
    let fs = DmaFs::new(&o.dir).await.map_err(|e| e.to_string())?;
    Shard::open(fs, &o.dir.join("shard"), ShardOptions::default())
        .await
        .map_err(|e| e.to_string())
}

async fn run_all(o: &EngineOpts) -> Result<Vec<serde_json::Value>, String> {
    let mut rows = Vec::new();
    let mut shard: Option<Shard<DmaFs>> = None;
    for name in o
        .benchmarks
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        let fresh = matches!(name, "fillseq" | "fillrandom");
        if fresh || shard.is_none() {
            drop(shard.take());
            shard = Some(open(o, fresh).await?);
        }
        let s = shard.as_ref().expect("opened above");
        let before = s.stats();
        let t0 = Instant::now();
        // Like db_bench: every task performs `num` operations.
        let per_task = o.num;
        let tasks: Vec<_> = (0..o.threads.max(1))
            .map(|t| bench_task(s, name, o, t, per_task))
            .collect();
        for r in rdb_io::poll_all(tasks).await {
            r?;
        }
        if name.starts_with("fill") || name == "overwrite" {
            // Count the work a write leaves behind (flushes, compactions) in its time.
            s.sync().await.map_err(|e| e.to_string())?;
        }
        let secs = t0.elapsed().as_secs_f64();
        let after = s.stats();
        let ops = per_task * o.threads.max(1);
        let user = after.user_bytes_written - before.user_bytes_written;
        let disk =
            (after.wal_bytes_written + after.flush_bytes_written + after.compaction_bytes_written)
                - (before.wal_bytes_written
                    + before.flush_bytes_written
                    + before.compaction_bytes_written);
        rows.push(serde_json::json!({
            "benchmark": name,
            "ops": ops,
            "seconds": secs,
            "ops_per_sec": ops as f64 / secs,
            "micros_per_op": secs * 1e6 / ops as f64,
            "write_amplification": if user > 0 { disk as f64 / user as f64 } else { 0.0 },
            "levels": s.level_summary().iter().map(|(n, b)| serde_json::json!([n, b])).collect::<Vec<_>>(),
        }));
    }
    Ok(rows)
}

async fn bench_task(
    s: &Shard<DmaFs>,
    name: &str,
    o: &EngineOpts,
    task: u64,
    n: u64,
) -> Result<(), String> {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (task + 1).wrapping_mul(0x2545_f491_4f6c_dd1d));
    let durability = if o.sync {
        Durability::Hard
    } else {
        Durability::Soft
    };
    for i in 0..n {
        match name {
            "fillseq" => {
                let k = key(task * n + i, o.key_size);
                let v = value(&mut rng, o.value_size);
                s.put(&k, &v, durability).await.map_err(|e| e.to_string())?;
            }
            "fillrandom" | "overwrite" => {
                let k = key(rng.next() % o.num, o.key_size);
                let v = value(&mut rng, o.value_size);
                s.put(&k, &v, durability).await.map_err(|e| e.to_string())?;
            }
            "readrandom" => {
                let k = key(rng.next() % o.num, o.key_size);
                s.get(&k, None).await.map_err(|e| e.to_string())?;
            }
            "seekrandom" => {
                let k = key(rng.next() % o.num, o.key_size);
                s.scan(Bound::Included(&k), Bound::Unbounded, None, false, 1)
                    .await
                    .map_err(|e| e.to_string())?;
            }
            other => return Err(format!("unknown benchmark `{other}`")),
        }
    }
    Ok(())
}
