//! `rdb-fuzz`: a mutation fuzzer for the targets in `lib.rs` that runs on stable Rust.
//!
//! Inputs start from the seed corpus (`fuzz/corpus/<target>/`, written by `rdb-fuzz
//! seed`) and are mutated (bit flips, byte changes, insertions and deletions, splices of
//! two inputs, structural tokens); each run is timed and a panic is a failure. Runs are
//! reproducible: the same `--seed` replays the same inputs. A failing input is saved to
//! `fuzz/artifacts/<target>-<n>` and the exit status is 1.
//!
//! ```text
//! rdb-fuzz all --seconds 10          # every target, 10 s each (what CI runs)
//! rdb-fuzz codec --seconds 3600      # one target for an hour
//! rdb-fuzz codec --seed 42           # replay a run
//! rdb-fuzz seed                      # rewrite the seed corpus from the encoders
//! ```

mod mutate;
mod seed;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Longest input the fuzzer builds.
const INPUT_BYTES_MAX: usize = 64 << 10;
/// A single run slower than this is reported as a hang.
const RUN_SLOW: Duration = Duration::from_secs(5);

fn fuzz_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn load_corpus(target: &str) -> Vec<Vec<u8>> {
    let dir = fuzz_dir().join("corpus").join(target);
    let mut out: Vec<(PathBuf, Vec<u8>)> = std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| std::fs::read(e.path()).ok().map(|b| (e.path(), b)))
        .collect();
    out.sort();
    let mut v: Vec<Vec<u8>> = out.into_iter().map(|(_, b)| b).collect();
    if v.is_empty() {
        v.push(Vec::new());
    }
    v
}

/// Runs `target` on inputs for `budget`; the number of runs, or the failing input.
fn fuzz(target: &rdb_fuzz::Target, budget: Duration, seed: u64) -> Result<u64, (Vec<u8>, String)> {
    let corpus = load_corpus(target.name);
    let mut rng = mutate::Rng::new(seed);
    let start = Instant::now();
    let mut runs = 0u64;
    // Seeds first, unmutated.
    for input in &corpus {
        run_one(target, input)?;
        runs += 1;
    }
    while start.elapsed() < budget {
        let base = &corpus[rng.below(corpus.len())];
        let other = &corpus[rng.below(corpus.len())];
        let input = mutate::mutate(&mut rng, base, other, INPUT_BYTES_MAX);
        run_one(target, &input)?;
        runs += 1;
    }
    Ok(runs)
}

fn run_one(target: &rdb_fuzz::Target, input: &[u8]) -> Result<(), (Vec<u8>, String)> {
    let t = Instant::now();
    let r = std::panic::catch_unwind(|| (target.run)(input));
    if let Err(p) = r {
        let msg = p
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "panic".into());
        return Err((input.to_vec(), msg));
    }
    if t.elapsed() > RUN_SLOW {
        return Err((input.to_vec(), format!("one run took {:?}", t.elapsed())));
    }
    Ok(())
}

fn save_artifact(target: &str, input: &[u8]) -> PathBuf {
    let dir = fuzz_dir().join("artifacts");
    let _ = std::fs::create_dir_all(&dir);
    let mut n = 0;
    loop {
        let p = dir.join(format!("{target}-{n}"));
        if !p.exists() {
            let _ = std::fs::write(&p, input);
            return p;
        }
        n += 1;
    }
}

fn usage() -> ! {
    eprintln!("usage: rdb-fuzz (all|seed|replay FILE TARGET|TARGET) [--seconds N] [--seed S]");
    eprintln!(
        "targets: {}",
        rdb_fuzz::TARGETS
            .iter()
            .map(|t| t.name)
            .collect::<Vec<_>>()
            .join(", ")
    );
    std::process::exit(2)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(what) = args.first() else { usage() };
    let flag = |name: &str| -> Option<u64> {
        let i = args.iter().position(|a| a == name)?;
        args.get(i + 1).and_then(|v| v.parse().ok())
    };
    if what == "seed" {
        let n = seed::write_all(&fuzz_dir().join("corpus"));
        println!("wrote {n} seed inputs");
        return;
    }
    if what == "replay" {
        let (Some(file), Some(name)) = (args.get(1), args.get(2)) else {
            usage()
        };
        let t = rdb_fuzz::target(name).unwrap_or_else(|| usage());
        let input = std::fs::read(Path::new(file)).expect("read the input");
        (t.run)(&input);
        println!("{name}: no failure on {file}");
        return;
    }
    let seconds = flag("--seconds").unwrap_or(10);
    let seed = flag("--seed").unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
    });
    let targets: Vec<&rdb_fuzz::Target> = if what == "all" {
        rdb_fuzz::TARGETS.iter().collect()
    } else {
        vec![rdb_fuzz::target(what).unwrap_or_else(|| usage())]
    };
    // Expected panics are reported below; keep the default hook's noise out.
    std::panic::set_hook(Box::new(|_| {}));
    let mut failed = false;
    for t in targets {
        match fuzz(t, Duration::from_secs(seconds), seed) {
            Ok(runs) => println!(
                "{}: {runs} runs in {seconds} s, no failure (seed {seed})",
                t.name
            ),
            Err((input, msg)) => {
                let p = save_artifact(t.name, &input);
                println!(
                    "{}: FAILED (seed {seed}): {msg}; input saved to {} (rdb-fuzz replay {} {})",
                    t.name,
                    p.display(),
                    p.display(),
                    t.name
                );
                failed = true;
            }
        }
    }
    if failed {
        std::process::exit(1);
    }
}
