//! `rdb-inspect verify`: every checksum and invariant of every file under a directory.

use crate::{shards, show};
use futures_lite::future::block_on;
use rdb_engine::cache::BlockCache;
use rdb_engine::entry::cmp_internal;
use rdb_engine::manifest::{self, sst_name};
use rdb_engine::sst::{SstIter, SstReader};
use rdb_io::fs::ReadOnlyFs;
use std::collections::HashSet;
use std::path::Path;
use std::rc::Rc;

/// Problems found, each naming a file (and an offset where there is one).
pub fn verify_tree(dir: &Path) -> Vec<String> {
    let mut problems = Vec::new();
    let list = shards(dir);
    if list.is_empty() {
        problems.push(format!(
            "{}: no shards found (no CURRENT file or wal/ directory)",
            dir.display()
        ));
    }
    for shard in list {
        verify_shard(&shard, &mut problems);
    }
    problems
}

fn verify_shard(shard: &Path, problems: &mut Vec<String>) {
    verify_wal(shard, problems);
    let v = match block_on(manifest::load(&ReadOnlyFs, shard)) {
        Ok(v) => v.unwrap_or_default(),
        Err(e) => {
            problems.push(e.to_string());
            return;
        }
    };
    let mut referenced = HashSet::new();
    for (i, level) in v.levels.iter().enumerate() {
        if i >= 1 {
            for w in level.windows(2) {
                if w[0].largest_key >= w[1].smallest_key {
                    problems.push(format!(
                        "{}: level {i} files {} and {} overlap or are out of order",
                        shard.display(),
                        sst_name(w[0].file_no),
                        sst_name(w[1].file_no)
                    ));
                }
            }
        }
        for f in level {
            referenced.insert(sst_name(f.file_no));
            let path = shard.join(sst_name(f.file_no));
            if !path.exists() {
                problems.push(format!(
                    "{}: listed in the manifest but missing",
                    path.display()
                ));
                continue;
            }
            verify_sst(&path, f, problems);
        }
    }
    if let Ok(rd) = std::fs::read_dir(shard) {
        for e in rd.filter_map(|e| e.ok()) {
            let name = e.file_name().to_string_lossy().to_string();
            if name.ends_with(".sst") && !referenced.contains(&name) {
                problems.push(format!(
                    "{}: not referenced by the manifest (a crash leftover; the next open deletes it)",
                    shard.join(&name).display()
                ));
            }
        }
    }
}

fn verify_sst(path: &Path, listed: &rdb_engine::sst::SstMeta, problems: &mut Vec<String>) {
    let cache = Rc::new(BlockCache::new(1024 * 1024));
    let r = match block_on(SstReader::open(&ReadOnlyFs, path, listed.file_no, cache)) {
        Ok(r) => Rc::new(r),
        Err(e) => {
            problems.push(e.to_string());
            return;
        }
    };
    if r.meta != *listed {
        problems.push(format!(
            "{}: meta block disagrees with the manifest",
            path.display()
        ));
    }
    for i in 0..r.block_count() {
        if let Err(e) = block_on(r.block(i)) {
            problems.push(e.to_string());
            return;
        }
    }
    let mut it = match block_on(SstIter::start(r.clone(), false)) {
        Ok(it) => it,
        Err(e) => {
            problems.push(e.to_string());
            return;
        }
    };
    let mut prev: Option<(Vec<u8>, u64)> = None;
    let mut n = 0u64;
    loop {
        match block_on(it.next()) {
            Ok(Some(e)) => {
                if let Some((k, s)) = &prev {
                    if cmp_internal(k, *s, &e.key, e.seq).is_ge() {
                        problems.push(format!(
                            "{}: entries out of order at key {}",
                            path.display(),
                            show(&e.key)
                        ));
                        return;
                    }
                }
                prev = Some((e.key, e.seq));
                n += 1;
            }
            Ok(None) => break,
            Err(e) => {
                problems.push(e.to_string());
                return;
            }
        }
    }
    if n != r.meta.entries {
        problems.push(format!(
            "{}: {n} entries, meta says {}",
            path.display(),
            r.meta.entries
        ));
    }
}

fn verify_wal(shard: &Path, problems: &mut Vec<String>) {
    let segs = crate::wal_segments(shard);
    let mut next = None;
    let count = segs.len();
    for (i, (first, path)) in segs.into_iter().enumerate() {
        if let Some(n) = next {
            if n != first {
                problems.push(format!(
                    "{}: offset 0: starts at LSN {first}, expected {n} (missing segment)",
                    path.display()
                ));
            }
        }
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) => {
                problems.push(format!("{}: {e}", path.display()));
                continue;
            }
        };
        match rdb_wal::scan_segment(&bytes, first) {
            Err((off, r)) => problems.push(format!("{}: offset {off}: {r}", path.display())),
            Ok(s) => {
                if let Some(d) = &s.damage {
                    let torn_tail = i + 1 == count && !d.later_batches_follow;
                    if !torn_tail {
                        problems.push(format!(
                            "{}: offset {}: {}",
                            path.display(),
                            d.offset,
                            d.reason
                        ));
                    }
                }
                next = Some(first + s.records.len() as u64);
            }
        }
    }
}
