//! Model test: random puts, deletes, gets, scans and snapshots against a BTreeMap, with
//! injected disk faults and simulated power loss at random points. After every
//! recovery, every write acknowledged with hard durability is present and nothing that
//! was neither acknowledged nor in flight appears.
//!
//! `RDB_MODEL_SEEDS=N` runs more seeds (default 40); failing seeds go in `REGRESSIONS`.

use futures_lite::future::block_on;
use rdb_engine::compaction::CompactionOptions;
use rdb_engine::{Durability, Shard, ShardOptions, WriteBatch};
use rdb_io::fs::{Fault, MemFs};
use rdb_wal::WalOptions;
use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::path::Path;

/// Seeds that once failed; they always run.
const REGRESSIONS: &[u64] = &[];
const STEPS: usize = 400;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn opts() -> ShardOptions {
    ShardOptions {
        memtable_bytes_max: 3000,
        block_cache_bytes: 20_000,
        compress: true,
        compaction: CompactionOptions {
            l0_files_trigger: 2,
            level1_bytes: 8_000,
            level_multiplier: 3,
            target_file_bytes: 4_000,
        },
        wal: WalOptions {
            segment_bytes_max: 8192,
            soft_buffer_bytes_max: 1 << 20,
        },
        manifests_kept: 2,
        maintain_in_writes: true,
    }
}

fn key(i: u64) -> Vec<u8> {
    format!("k{:03}", i).into_bytes()
}

/// Where keys come from: a small random set (overwrites, deletes, many versions per key),
/// or (even seeds) three streams of appended keys with some rewrites of earlier ones, whose
/// files span the gaps between the streams (compaction leaves lower files in those gaps
/// out of its merges).
struct Keys {
    append: bool,
    next: [u64; 3],
}

impl Keys {
    fn stream_key(s: usize, i: u64) -> Vec<u8> {
        format!("{}{:05}", ["a", "m", "z"][s], i).into_bytes()
    }

    fn for_write(&mut self, rng: &mut Rng) -> Vec<u8> {
        if !self.append {
            return key(rng.below(60));
        }
        let s = rng.below(3) as usize;
        if self.next[s] > 0 && rng.below(5) == 0 {
            return Keys::stream_key(s, rng.below(self.next[s]));
        }
        self.next[s] += 1;
        Keys::stream_key(s, self.next[s] - 1)
    }

    fn for_read(&mut self, rng: &mut Rng) -> Vec<u8> {
        if !self.append {
            return key(rng.below(70));
        }
        let s = rng.below(3) as usize;
        Keys::stream_key(s, rng.below(self.next[s] + 5))
    }
}

fn in_bounds(k: &[u8], lo: Bound<&[u8]>, hi: Bound<&[u8]>) -> bool {
    let above = match lo {
        Bound::Included(b) => k >= b,
        Bound::Excluded(b) => k > b,
        Bound::Unbounded => true,
    };
    let below = match hi {
        Bound::Included(b) => k <= b,
        Bound::Excluded(b) => k < b,
        Bound::Unbounded => true,
    };
    above && below
}

type Model = BTreeMap<Vec<u8>, Vec<u8>>;

/// What may be found for keys whose last write was in flight when it failed.
type Uncertain = HashMap<Vec<u8>, Vec<Option<Vec<u8>>>>;

fn check_recovered(
    seed: u64,
    shard_all: &[(Vec<u8>, Vec<u8>)],
    model: &mut Model,
    uncertain: &mut Uncertain,
) {
    let got: Model = shard_all.iter().cloned().collect();
    let mut keys: Vec<&Vec<u8>> = got
        .keys()
        .chain(model.keys())
        .chain(uncertain.keys())
        .collect();
    keys.sort();
    keys.dedup();
    for k in keys {
        let g = got.get(k).cloned();
        let m = model.get(k).cloned();
        if g == m {
            continue;
        }
        let ok = uncertain.get(k).is_some_and(|alts| alts.contains(&g));
        assert!(
            ok,
            "seed {seed}: key {:?}: recovered {:?}, acknowledged {:?}",
            String::from_utf8_lossy(k),
            g,
            m
        );
    }
    // Whatever survived is now the truth.
    *model = got;
    uncertain.clear();
}

thread_local! {
    /// (recoveries, flushes, compactions) across all seeds: proof the test reaches them.
    static SEEN: std::cell::Cell<(u64, u64, u64)> = const { std::cell::Cell::new((0, 0, 0)) };
}

fn count(shard: &Shard<MemFs>, recovery: bool) {
    let st = shard.stats();
    SEEN.with(|c| {
        let (r, f, k) = c.get();
        c.set((r + u64::from(recovery), f + st.flushes, k + st.compactions));
    });
}

async fn run(seed: u64) {
    let fs = MemFs::new(seed);
    let dir = Path::new("/shard");
    let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let mut model = Model::new();
    let mut uncertain = Uncertain::new();
    let mut shard = Shard::open(fs.clone(), dir, opts()).await.unwrap();
    let mut snaps: Vec<(rdb_engine::Snapshot, Model)> = Vec::new();
    let mut keys = Keys {
        append: seed.is_multiple_of(2),
        next: [0; 3],
    };
    for step in 0..STEPS {
        let r = rng.below(100);
        if r < 40 || (r < 50 && shard.failure().is_some()) {
            // A batch of 1-3 puts/deletes.
            let mut b = WriteBatch::new();
            let mut next = model.clone();
            for _ in 0..1 + rng.below(3) {
                let k = keys.for_write(&mut rng);
                if rng.below(4) == 0 {
                    b.delete(k.clone());
                    next.remove(&k);
                } else {
                    let v = format!("v{seed}-{step}-{}", "x".repeat(rng.below(40) as usize))
                        .into_bytes();
                    b.put(k.clone(), v.clone());
                    next.insert(k, v);
                }
            }
            match shard.write(b.clone(), Durability::Hard).await {
                Ok(_) => model = next,
                Err(_) => {
                    // In flight: after recovery each key may hold the old or new value.
                    for (k, _) in &b.ops {
                        let alts = uncertain.entry(k.clone()).or_default();
                        alts.push(model.get(k).cloned());
                        alts.push(next.get(k).cloned());
                    }
                }
            }
        } else if r < 60 {
            let k = keys.for_read(&mut rng);
            if shard.failure().is_none() || !uncertain.contains_key(&k) {
                // An injected fault may fail the read; it must never return wrong data.
                let Ok(got) = shard.get(&k, None).await else {
                    continue;
                };
                if !uncertain.contains_key(&k) {
                    assert_eq!(got, model.get(&k).cloned(), "seed {seed} step {step}: get");
                }
            }
        } else if r < 72 {
            let a = keys.for_read(&mut rng);
            let b = keys.for_read(&mut rng);
            let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
            let lo_b = if rng.below(2) == 0 {
                Bound::Included(lo.as_slice())
            } else {
                Bound::Excluded(lo.as_slice())
            };
            let hi_b = match rng.below(3) {
                0 => Bound::Included(hi.as_slice()),
                1 => Bound::Excluded(hi.as_slice()),
                _ => Bound::Unbounded,
            };
            let reverse = rng.below(2) == 0;
            let limit = 1 + rng.below(30) as usize;
            let (source, snap) = if !snaps.is_empty() && rng.below(2) == 0 {
                let i = rng.below(snaps.len() as u64) as usize;
                (snaps[i].1.clone(), Some(&snaps[i].0))
            } else {
                (model.clone(), None)
            };
            if snap.is_none() && !uncertain.is_empty() {
                continue;
            }
            let Ok(got) = shard.scan(lo_b, hi_b, snap, reverse, limit).await else {
                continue;
            };
            let mut want: Vec<(Vec<u8>, Vec<u8>)> = source
                .iter()
                .filter(|(k, _)| in_bounds(k, lo_b, hi_b))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            if reverse {
                want.reverse();
            }
            want.truncate(limit);
            assert_eq!(
                got, want,
                "seed {seed} step {step}: scan {lo_b:?}..{hi_b:?} rev={reverse}"
            );
        } else if r < 78 {
            if uncertain.is_empty() {
                snaps.push((shard.snapshot(), model.clone()));
            }
        } else if r < 82 {
            if !snaps.is_empty() {
                snaps.remove(rng.below(snaps.len() as u64) as usize);
            }
        } else if r < 88 {
            let _ = shard.flush().await;
        } else if r < 92 {
            // A disk fault some operations from now.
            let kinds = ["write", "sync", "sync_dir", "create", "rename", "any"];
            let kind = kinds[rng.below(kinds.len() as u64) as usize];
            let fault = if rng.below(2) == 0 {
                Fault::Eio
            } else {
                Fault::NoSpace
            };
            fs.inject(fs.ops() + 1 + rng.below(30), kind, fault);
        } else {
            // Power loss and recovery.
            snaps.clear();
            count(&shard, true);
            drop(shard);
            fs.power_loss();
            shard = Shard::open(fs.clone(), dir, opts())
                .await
                .unwrap_or_else(|e| panic!("seed {seed} step {step}: recovery failed: {e}"));
            let all = shard
                .scan(Bound::Unbounded, Bound::Unbounded, None, false, usize::MAX)
                .await
                .unwrap();
            check_recovered(seed, &all, &mut model, &mut uncertain);
        }
    }
    snaps.clear();
    count(&shard, true);
    drop(shard);
    fs.power_loss();
    let shard = Shard::open(fs.clone(), dir, opts())
        .await
        .unwrap_or_else(|e| panic!("seed {seed}: final recovery: {e}"));
    let all = shard
        .scan(Bound::Unbounded, Bound::Unbounded, None, false, usize::MAX)
        .await
        .unwrap();
    check_recovered(seed, &all, &mut model, &mut uncertain);
}

#[test]
fn model_with_crashes_and_faults() {
    let n: u64 = std::env::var("RDB_MODEL_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(40);
    for &seed in REGRESSIONS.iter() {
        block_on(run(seed));
    }
    for seed in 1..=n {
        block_on(run(seed));
    }
    let (recoveries, flushes, compactions) = SEEN.with(|c| c.get());
    assert!(
        recoveries > n * 5 && flushes > n * 5 && compactions > n,
        "{recoveries} {flushes} {compactions}"
    );
}
