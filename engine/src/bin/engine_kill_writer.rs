//! Test helper for the kill test (`tests/kill.rs`): writes keys with hard durability on
//! real files (DMA, io_uring) and prints each acknowledged key, until killed; or, in
//! verify mode, recovers the shard and checks the keys a previous run acknowledged.
//!
//! Usage: engine_kill_writer write DIR FIRST_KEY
//!        engine_kill_writer verify DIR ACKED_KEYS_FILE

use rdb_engine::compaction::CompactionOptions;
use rdb_engine::{Durability, Shard, ShardOptions};
use rdb_io::fs::DmaFs;
use std::io::Write;
use std::ops::Bound;
use std::path::PathBuf;

/// Concurrent writers on the core, so commits are grouped.
const WRITERS: u64 = 8;

fn value(k: u64) -> Vec<u8> {
    let mut v = format!("value-of-{k}-").into_bytes();
    v.resize(100, (k % 251) as u8);
    v
}

fn opts() -> ShardOptions {
    ShardOptions {
        memtable_bytes_max: 64 * 1024,
        compaction: CompactionOptions {
            l0_files_trigger: 3,
            level1_bytes: 512 * 1024,
            level_multiplier: 4,
            target_file_bytes: 128 * 1024,
        },
        ..ShardOptions::default()
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 4 {
        eprintln!("usage: engine_kill_writer write|verify DIR ARG");
        std::process::exit(2);
    }
    let (mode, dir, arg) = (args[1].clone(), PathBuf::from(&args[2]), args[3].clone());
    let cfg = rdb_io::RuntimeConfig {
        cores: 1,
        io_memory_bytes: 512 * 1024,
        pin: false,
    };
    let code = std::sync::Arc::new(std::sync::atomic::AtomicI32::new(0));
    let c2 = code.clone();
    rdb_io::run_per_core(&cfg, move |_| {
        let (mode, dir, arg, code) = (mode.clone(), dir.clone(), arg.clone(), c2.clone());
        async move {
            let r = match mode.as_str() {
                "write" => write(dir, arg.parse().expect("first key")).await,
                "verify" => verify(dir, PathBuf::from(arg)).await,
                _ => Err("unknown mode".into()),
            };
            if let Err(e) = r {
                eprintln!("engine_kill_writer: {e}");
                code.store(1, std::sync::atomic::Ordering::SeqCst);
            }
        }
    })
    .expect("runtime");
    std::process::exit(code.load(std::sync::atomic::Ordering::SeqCst));
}

async fn write(dir: PathBuf, first: u64) -> Result<(), String> {
    let fs = DmaFs::new(&dir).await.map_err(|e| e.to_string())?;
    let shard = Shard::open(fs, &dir.join("shard"), opts())
        .await
        .map_err(|e| e.to_string())?;
    let writers = (0..WRITERS).map(|w| {
        let shard = &shard;
        async move {
            let mut k = first + w;
            loop {
                shard
                    .put(&k.to_be_bytes(), &value(k), Durability::Hard)
                    .await
                    .map_err(|e| e.to_string())?;
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "{k}");
                let _ = out.flush();
                k += WRITERS;
            }
            #[allow(unreachable_code)]
            Ok::<(), String>(())
        }
    });
    let results = rdb_io::poll_all(writers.collect()).await;
    results.into_iter().collect()
}

async fn verify(dir: PathBuf, acked_file: PathBuf) -> Result<(), String> {
    let acked: Vec<u64> = std::fs::read_to_string(&acked_file)
        .map_err(|e| e.to_string())?
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    let fs = DmaFs::new(&dir).await.map_err(|e| e.to_string())?;
    let shard = Shard::open(fs, &dir.join("shard"), opts())
        .await
        .map_err(|e| format!("recovery: {e}"))?;
    for k in &acked {
        match shard
            .get(&k.to_be_bytes(), None)
            .await
            .map_err(|e| e.to_string())?
        {
            Some(v) if v == value(*k) => {}
            Some(_) => return Err(format!("key {k} has a wrong value")),
            None => return Err(format!("acknowledged key {k} is missing")),
        }
    }
    let all = shard
        .scan(Bound::Unbounded, Bound::Unbounded, None, false, usize::MAX)
        .await
        .map_err(|e| e.to_string())?;
    for (k, v) in &all {
        let k = u64::from_be_bytes(
            k.as_slice()
                .try_into()
                .map_err(|_| "a key of the wrong size")?,
        );
        if *v != value(k) {
            return Err(format!("key {k} holds bytes nobody wrote"));
        }
    }
    println!(
        "verified {} acknowledged keys, {} keys present",
        acked.len(),
        all.len()
    );
    Ok(())
}
