//! rdb-inspect: offline tool for rdb data directories. Lists and describes WAL segments,
//! SSTables and manifests, dumps records and keys, finds a key, and verifies every
//! checksum and invariant. It never modifies a file (all access goes through
//! `ReadOnlyFs`) and refuses a directory locked by a running server unless told the
//! directory is a copy.

mod verify;

use clap::{Parser, Subcommand};
use futures_lite::future::block_on;
use rdb_engine::cache::BlockCache;
use rdb_engine::manifest::{self, sst_name, Version};
use rdb_engine::sst::{SstIter, SstReader};
use rdb_engine::WriteBatch;
use rdb_io::fs::ReadOnlyFs;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::rc::Rc;

#[derive(Parser)]
#[command(
    name = "rdb-inspect",
    version,
    about = "Offline inspection of rdb data directories (never writes)"
)]
struct Cli {
    /// Inspect even if a running server holds the directory's lock (use on a copy).
    #[arg(long, global = true)]
    allow_locked: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// List the shards of a data directory with their WAL segments, levels and SSTs.
    Ls { dir: PathBuf },
    /// Show a shard's manifest history (every kept MANIFEST) and level sizes.
    Manifest { shard: PathBuf },
    /// Dump a shard's WAL records (write batches).
    Wal {
        shard: PathBuf,
        #[arg(long, default_value_t = 0)]
        from: u64,
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Dump an SSTable's entries, optionally only keys in [--start, --end].
    Sst {
        file: PathBuf,
        #[arg(long)]
        start: Option<String>,
        #[arg(long)]
        end: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Find every version of a key in a shard (memtable WAL records and SSTs).
    Find { shard: PathBuf, key: String },
    /// Check every checksum and invariant of every file; exit 1 naming each problem.
    Verify { dir: PathBuf },
}

fn main() {
    // Behave like a Unix tool when piped into `head`: exit quietly on a closed pipe.
    // SAFETY: restoring the default disposition of SIGPIPE before any thread starts.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    let cli = Cli::parse();
    let dir = match &cli.cmd {
        Cmd::Ls { dir } | Cmd::Verify { dir } => dir.clone(),
        Cmd::Manifest { shard } | Cmd::Wal { shard, .. } | Cmd::Find { shard, .. } => shard.clone(),
        Cmd::Sst { file, .. } => file.parent().map(Path::to_path_buf).unwrap_or_default(),
    };
    if let Err(e) = check_unlocked(&dir, cli.allow_locked) {
        eprintln!("rdb-inspect: {e}");
        std::process::exit(2);
    }
    let r = match cli.cmd {
        Cmd::Ls { dir } => ls(&dir),
        Cmd::Manifest { shard } => show_manifest(&shard),
        Cmd::Wal { shard, from, limit } => dump_wal(&shard, from, limit),
        Cmd::Sst {
            file,
            start,
            end,
            limit,
        } => dump_sst(&file, start, end, limit),
        Cmd::Find { shard, key } => find(&shard, &key),
        Cmd::Verify { dir } => {
            let problems = verify::verify_tree(&dir);
            for p in &problems {
                println!("{p}");
            }
            if problems.is_empty() {
                println!("ok: no problems found under {}", dir.display());
                Ok(())
            } else {
                eprintln!("{} problem(s) found", problems.len());
                std::process::exit(1);
            }
        }
    };
    if let Err(e) = r {
        eprintln!("rdb-inspect: {e}");
        std::process::exit(1);
    }
}

/// Refuses a directory (or any ancestor) whose LOCK a running server holds.
fn check_unlocked(dir: &Path, allow: bool) -> Result<(), String> {
    let mut cur = Some(dir);
    while let Some(d) = cur {
        let lock = d.join("LOCK");
        if let Ok(f) = std::fs::File::open(&lock) {
            // SAFETY: flock on a descriptor we own; a shared probe lock is released at once.
            let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_SH | libc::LOCK_NB) };
            if rc != 0 && !allow {
                return Err(format!(
                    "{} is locked by a running server; stop it, or inspect a copy with --allow-locked",
                    d.display()
                ));
            }
        }
        cur = d.parent();
    }
    Ok(())
}

/// Bytes shown as text when printable, else as hex.
pub fn show(b: &[u8]) -> String {
    match std::str::from_utf8(b) {
        Ok(s) if s.chars().all(|c| !c.is_control()) => format!("{s:?}"),
        _ => format!(
            "0x{}",
            b.iter().map(|x| format!("{x:02x}")).collect::<String>()
        ),
    }
}

/// A stored value: a document (rdb's binary encoding) as JSON, anything else as bytes.
/// A stored value as a reader wants it: documents as JSON, secondary index entries as
/// their index value, primary key and tag; anything else as text or hex.
pub fn show_value(k: &[u8], v: &[u8]) -> String {
    use rdb_query::store::index;
    if k.first() == Some(&index::INDEX_PREFIX) {
        if let Ok(e) = index::parse_entry(k, v) {
            let json = |b: &[u8]| match rdb_query::keycode::decode_prefix(b) {
                Some((d, _)) => rdb_query::json::to_json(&d),
                None => show(b),
            };
            let mut out = format!("index entry: value {} pk {}", json(e.sec), json(e.pk));
            if let Some(t) = e.tag {
                out.push_str(&format!(" tag {t}"));
            }
            if e.cut {
                out.push_str(" (value cut in the key)");
            }
            return out;
        }
    }
    match rdb_query::codec::decode(v) {
        Ok(d) => rdb_query::json::to_json(&d),
        Err(_) => show(v),
    }
}

fn parse_key(k: &str) -> Vec<u8> {
    match k.strip_prefix("0x") {
        Some(hex) if hex.len() % 2 == 0 => (0..hex.len())
            .step_by(2)
            .filter_map(|i| u8::from_str_radix(&hex[i..i + 2], 16).ok())
            .collect(),
        _ => k.as_bytes().to_vec(),
    }
}

/// Shard directories under `dir` (those holding a CURRENT file or a wal/ directory).
pub fn shards(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if dir.join("CURRENT").exists() || dir.join("wal").is_dir() {
        out.push(dir.to_path_buf());
    }
    if let Ok(rd) = std::fs::read_dir(dir) {
        let mut subs: Vec<PathBuf> = rd
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| p.is_dir())
            .collect();
        subs.sort();
        for s in subs {
            if s.file_name().is_some_and(|n| n != "wal") {
                out.extend(shards(&s));
            }
        }
    }
    out
}

fn load_version(shard: &Path) -> Result<Version, String> {
    block_on(manifest::load(&ReadOnlyFs, shard))
        .map_err(|e| e.to_string())
        .map(|v| v.unwrap_or_default())
}

fn open_sst(path: &Path) -> Result<Rc<SstReader<ReadOnlyFs>>, String> {
    let no = path
        .file_stem()
        .and_then(|s| s.to_str())
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("{} is not named like an SST (<number>.sst)", path.display()))?;
    let cache = Rc::new(BlockCache::new(8 * 1024 * 1024));
    block_on(SstReader::open(&ReadOnlyFs, path, no, cache))
        .map(Rc::new)
        .map_err(|e| e.to_string())
}

/// WAL segments of a shard, by first LSN.
pub fn wal_segments(shard: &Path) -> Vec<(u64, PathBuf)> {
    let wal = shard.join("wal");
    let mut v: Vec<(u64, PathBuf)> = std::fs::read_dir(&wal)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            rdb_wal::parse_segment_name(&name).map(|l| (l, wal.join(name)))
        })
        .collect();
    v.sort();
    v
}

fn ls(dir: &Path) -> Result<(), String> {
    let list = shards(dir);
    if list.is_empty() {
        return Err(format!("no shards under {}", dir.display()));
    }
    for shard in list {
        println!("shard {}", shard.display());
        let v = load_version(&shard)?;
        println!(
            "  manifest #{} log_lsn {} last_seq {} next_file {}",
            v.number, v.log_lsn, v.last_seq, v.next_file_no
        );
        for (i, level) in v.levels.iter().enumerate() {
            if level.is_empty() {
                continue;
            }
            let bytes: u64 = level.iter().map(|f| f.size).sum();
            println!("  L{i}: {} files, {bytes} bytes", level.len());
            for f in level {
                println!(
                    "    {} {} bytes {} entries keys {}..{} seqs {}..{}",
                    sst_name(f.file_no),
                    f.size,
                    f.entries,
                    show(&f.smallest_key),
                    show(&f.largest_key),
                    f.largest_seq.min(f.smallest_seq),
                    f.largest_seq.max(f.smallest_seq)
                );
            }
        }
        for (first, path) in wal_segments(&shard) {
            let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            match rdb_wal::scan_segment(&bytes, first) {
                Ok(s) => println!(
                    "  wal {}: first LSN {first}, {} records, {} bytes used{}",
                    path.file_name().and_then(|n| n.to_str()).unwrap_or(""),
                    s.records.len(),
                    s.valid_end,
                    s.damage
                        .map(|d| format!(", stops at offset {}: {}", d.offset, d.reason))
                        .unwrap_or_default()
                ),
                Err((off, r)) => {
                    println!("  wal {}: unreadable at offset {off}: {r}", path.display())
                }
            }
        }
    }
    Ok(())
}

fn show_manifest(shard: &Path) -> Result<(), String> {
    let current = std::fs::read_to_string(shard.join("CURRENT")).unwrap_or_default();
    let current = current.trim_end_matches('\0').trim();
    let mut names: Vec<String> = std::fs::read_dir(shard)
        .map_err(|e| e.to_string())?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with("MANIFEST-") && !n.ends_with(".tmp"))
        .collect();
    names.sort();
    for n in names {
        let bytes = std::fs::read(shard.join(&n)).map_err(|e| e.to_string())?;
        let mark = if n == current { " (current)" } else { "" };
        match decode_padded(&bytes) {
            Some(v) => {
                let levels: Vec<String> = v
                    .levels
                    .iter()
                    .enumerate()
                    .filter(|(_, l)| !l.is_empty())
                    .map(|(i, l)| {
                        format!(
                            "L{i}={}f/{}B",
                            l.len(),
                            l.iter().map(|f| f.size).sum::<u64>()
                        )
                    })
                    .collect();
                println!(
                    "{n}{mark}: log_lsn {} last_seq {} next_file {} {}",
                    v.log_lsn,
                    v.last_seq,
                    v.next_file_no,
                    levels.join(" ")
                );
            }
            None => println!("{n}{mark}: does not decode (corrupt)"),
        }
    }
    Ok(())
}

/// Decodes a zero-padded manifest image.
fn decode_padded(bytes: &[u8]) -> Option<Version> {
    manifest::decode_padded(bytes).ok()
}

fn dump_wal(shard: &Path, from: u64, limit: usize) -> Result<(), String> {
    let mut shown = 0;
    for (first, path) in wal_segments(shard) {
        let bytes = std::fs::read(&path).map_err(|e| e.to_string())?;
        let scan = rdb_wal::scan_segment(&bytes, first)
            .map_err(|(o, r)| format!("{}: offset {o}: {r}", path.display()))?;
        for (lsn, offset, payload) in scan.records {
            if lsn < from {
                continue;
            }
            if shown >= limit {
                return Ok(());
            }
            shown += 1;
            match WriteBatch::decode(&payload) {
                Ok((seq, b)) => {
                    println!("lsn {lsn} @{offset}: batch of {} from seq {seq}", b.len());
                    for (i, (k, v)) in b.ops.iter().enumerate() {
                        match v {
                            Some(v) => {
                                println!(
                                    "  seq {} put {} = {}",
                                    seq + i as u64,
                                    show(k),
                                    show_value(k, v)
                                )
                            }
                            None => println!("  seq {} delete {}", seq + i as u64, show(k)),
                        }
                    }
                }
                Err(e) => println!(
                    "lsn {lsn} @{offset}: {} bytes, not a write batch: {e}",
                    payload.len()
                ),
            }
        }
        if let Some(d) = scan.damage {
            println!(
                "{}: stops at offset {}: {}",
                path.display(),
                d.offset,
                d.reason
            );
        }
    }
    Ok(())
}

fn dump_sst(
    file: &Path,
    start: Option<String>,
    end: Option<String>,
    limit: usize,
) -> Result<(), String> {
    let r = open_sst(file)?;
    let m = &r.meta;
    println!(
        "{}: {} bytes, {} entries, {} blocks, keys {}..{}",
        file.display(),
        m.size,
        m.entries,
        r.block_count(),
        show(&m.smallest_key),
        show(&m.largest_key)
    );
    let start = start.map(|s| parse_key(&s));
    let end = end.map(|s| parse_key(&s));
    let mut it = match &start {
        Some(k) => block_on(SstIter::seek(
            r.clone(),
            k,
            rdb_engine::entry::SEQ_MAX,
            false,
        )),
        None => block_on(SstIter::start(r.clone(), false)),
    }
    .map_err(|e| e.to_string())?;
    let mut n = 0;
    while let Some(e) = block_on(it.next()).map_err(|e| e.to_string())? {
        if end.as_ref().is_some_and(|k| e.key > *k) || n >= limit {
            break;
        }
        n += 1;
        match &e.value {
            Some(v) => println!("{} @{} = {}", show(&e.key), e.seq, show_value(&e.key, v)),
            None => println!("{} @{} deleted", show(&e.key), e.seq),
        }
    }
    Ok(())
}

fn find(shard: &Path, key: &str) -> Result<(), String> {
    let key = parse_key(key);
    let v = load_version(shard)?;
    let mut found = 0;
    for (i, level) in v.levels.iter().enumerate() {
        for f in level.iter().filter(|f| f.overlaps(&key, &key)) {
            let r = open_sst(&shard.join(sst_name(f.file_no)))?;
            let mut it = block_on(SstIter::seek(r, &key, rdb_engine::entry::SEQ_MAX, false))
                .map_err(|e| e.to_string())?;
            while let Some(e) = block_on(it.next()).map_err(|e| e.to_string())? {
                if e.key != key {
                    break;
                }
                found += 1;
                let what = e
                    .value
                    .as_deref()
                    .map(show)
                    .unwrap_or_else(|| "deleted".into());
                println!("L{i} {} seq {}: {what}", sst_name(f.file_no), e.seq);
            }
        }
    }
    for (first, path) in wal_segments(shard) {
        let bytes = std::fs::read(&path).map_err(|e| e.to_string())?;
        let Ok(scan) = rdb_wal::scan_segment(&bytes, first) else {
            continue;
        };
        for (lsn, _, payload) in scan.records.iter().filter(|(l, _, _)| *l > v.log_lsn) {
            if let Ok((seq, b)) = WriteBatch::decode(payload) {
                for (i, (k, val)) in b.ops.iter().enumerate() {
                    if *k == key {
                        found += 1;
                        let what = val.as_deref().map(show).unwrap_or_else(|| "deleted".into());
                        println!(
                            "WAL lsn {lsn} (not yet flushed) seq {}: {what}",
                            seq + i as u64
                        );
                    }
                }
            }
        }
    }
    if found == 0 {
        println!("{} not found", show(&key));
    }
    Ok(())
}
