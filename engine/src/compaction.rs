//! Leveled compaction: a pure policy that picks the next job from a `Version` (tested
//! without I/O), and the merge rule that decides which versions survive.

use crate::entry::{Entry, Seq};
use crate::manifest::{Version, LEVELS};
use crate::sst::SstMeta;

#[derive(Clone, Debug)]
pub struct CompactionOptions {
    /// Level 0 is compacted into level 1 once it has this many files.
    pub l0_files_trigger: usize,
    /// Target size of level 1; each deeper level is `level_multiplier` times larger.
    pub level1_bytes: u64,
    pub level_multiplier: u64,
    /// Compaction output is cut into files of about this size.
    pub target_file_bytes: u64,
}

impl Default for CompactionOptions {
    fn default() -> Self {
        CompactionOptions {
            l0_files_trigger: 4,
            level1_bytes: 256 * 1024 * 1024,
            level_multiplier: 10,
            target_file_bytes: 32 * 1024 * 1024,
        }
    }
}

/// One compaction: merge `inputs` (from `level` and `level + 1`) into `level + 1`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Job {
    pub level: usize,
    /// Files from `level`.
    pub upper: Vec<u64>,
    /// Overlapping files from `level + 1`.
    pub lower: Vec<u64>,
    /// No level below the output holds any of the keys: tombstones can be dropped.
    pub bottommost: bool,
    /// Nothing to merge (no overlap below, upper files disjoint): the files just move
    /// down a level, unchanged.
    pub trivial_move: bool,
}

pub fn level_target_bytes(opts: &CompactionOptions, level: usize) -> u64 {
    assert!(level >= 1);
    opts.level1_bytes
        .saturating_mul(opts.level_multiplier.saturating_pow(level as u32 - 1))
}

fn key_range(files: &[&SstMeta]) -> (Vec<u8>, Vec<u8>) {
    let lo = files
        .iter()
        .map(|f| f.smallest_key.clone())
        .min()
        .unwrap_or_default();
    let hi = files
        .iter()
        .map(|f| f.largest_key.clone())
        .max()
        .unwrap_or_default();
    (lo, hi)
}

/// Picks the most urgent compaction, if any is due.
pub fn pick(v: &Version, opts: &CompactionOptions) -> Option<Job> {
    let mut best: Option<(f64, usize)> = None;
    let l0_score = v.levels[0].len() as f64 / opts.l0_files_trigger as f64;
    if l0_score >= 1.0 {
        best = Some((l0_score, 0));
    }
    for level in 1..LEVELS - 1 {
        let score = v.level_bytes(level) as f64 / level_target_bytes(opts, level) as f64;
        if score > 1.0 && best.is_none_or(|(s, _)| score > s) {
            best = Some((score, level));
        }
    }
    let (_, level) = best?;
    let upper: Vec<&SstMeta> = if level == 0 {
        v.levels[0].iter().collect()
    } else {
        // The file that overlaps least with the next level: cheapest to push down.
        let f = v.levels[level].iter().min_by_key(|f| {
            let overlap: u64 = v.levels[level + 1]
                .iter()
                .filter(|g| g.overlaps(&f.smallest_key, &f.largest_key))
                .map(|g| g.size)
                .sum();
            (overlap, f.file_no)
        })?;
        vec![f]
    };
    let (lo, hi) = key_range(&upper);
    let lower: Vec<&SstMeta> = v.levels[level + 1]
        .iter()
        .filter(|g| g.overlaps(&lo, &hi))
        .collect();
    let all: Vec<&SstMeta> = upper.iter().chain(lower.iter()).copied().collect();
    let (lo, hi) = key_range(&all);
    let bottommost = v.levels[level + 2..]
        .iter()
        .flatten()
        .all(|g| !g.overlaps(&lo, &hi));
    let mut sorted = upper.clone();
    sorted.sort_by(|a, b| a.smallest_key.cmp(&b.smallest_key));
    let disjoint = sorted
        .windows(2)
        .all(|w| w[0].largest_key < w[1].smallest_key);
    // Moving keeps every version and tombstone; merging could drop some at the bottom,
    // but moving is just as correct, and far cheaper.
    let trivial_move = lower.is_empty() && disjoint;
    Some(Job {
        trivial_move,
        level,
        upper: upper.iter().map(|f| f.file_no).collect(),
        lower: lower.iter().map(|f| f.file_no).collect(),
        bottommost,
    })
}

/// Filters a merged stream (internal order) down to the versions anyone can still see.
///
/// Per user key it keeps every version newer than `oldest_snapshot` and the newest
/// version at or below it (what the oldest reader sees); that last one is dropped too if
/// it is a tombstone and the output is bottommost.
pub struct VersionFilter {
    oldest_snapshot: Seq,
    bottommost: bool,
    cur_key: Option<Vec<u8>>,
    kept_at_or_below: bool,
}

impl VersionFilter {
    pub fn new(oldest_snapshot: Seq, bottommost: bool) -> Self {
        VersionFilter {
            oldest_snapshot,
            bottommost,
            cur_key: None,
            kept_at_or_below: false,
        }
    }

    pub fn keep(&mut self, e: &Entry) -> bool {
        if self.cur_key.as_deref() != Some(e.key.as_slice()) {
            self.cur_key = Some(e.key.clone());
            self.kept_at_or_below = false;
        }
        if e.seq > self.oldest_snapshot {
            return true;
        }
        if self.kept_at_or_below {
            return false;
        }
        self.kept_at_or_below = true;
        !(self.bottommost && e.value.is_none())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(no: u64, lo: &str, hi: &str, size: u64) -> SstMeta {
        SstMeta {
            file_no: no,
            size,
            entries: 1,
            smallest_key: lo.as_bytes().to_vec(),
            smallest_seq: 1,
            largest_key: hi.as_bytes().to_vec(),
            largest_seq: 1,
        }
    }

    #[test]
    fn l0_trigger_pulls_in_overlapping_l1() {
        let opts = CompactionOptions::default();
        let mut v = Version::default();
        assert_eq!(pick(&v, &opts), None);
        for i in 0..4 {
            v.levels[0].push(meta(10 + i, "c", "f", 100));
        }
        v.levels[1] = vec![
            meta(1, "a", "b", 100),
            meta(2, "d", "e", 100),
            meta(3, "g", "h", 100),
        ];
        let job = pick(&v, &opts).unwrap();
        assert_eq!(job.level, 0);
        assert_eq!(job.upper, vec![10, 11, 12, 13]);
        assert_eq!(job.lower, vec![2]);
        assert!(job.bottommost);
    }

    #[test]
    fn disjoint_files_without_overlap_below_just_move() {
        let opts = CompactionOptions::default();
        let mut v = Version::default();
        for (i, (lo, hi)) in [("a", "b"), ("c", "d"), ("e", "f"), ("g", "h")]
            .iter()
            .enumerate()
        {
            v.levels[0].push(meta(10 + i as u64, lo, hi, 100));
        }
        v.levels[1] = vec![meta(1, "x", "z", 100)];
        let job = pick(&v, &opts).unwrap();
        assert!(job.trivial_move && job.lower.is_empty());
        v.levels[0][3] = meta(13, "a", "h", 100);
        assert!(!pick(&v, &opts).unwrap().trivial_move);
    }

    #[test]
    fn oversized_level_pushes_one_file_down() {
        let opts = CompactionOptions {
            level1_bytes: 1000,
            ..Default::default()
        };
        let mut v = Version::default();
        v.levels[1] = vec![meta(1, "a", "c", 800), meta(2, "d", "f", 800)];
        v.levels[2] = vec![
            meta(5, "a", "b", 10),
            meta(6, "e", "e", 10),
            meta(7, "e", "f", 10),
        ];
        v.levels[3] = vec![meta(9, "x", "z", 10)];
        let job = pick(&v, &opts).unwrap();
        assert_eq!(job.level, 1);
        assert_eq!(job.upper, vec![1]);
        assert_eq!(job.lower, vec![5]);
        assert!(job.bottommost);
        v.levels[3] = vec![meta(9, "a", "z", 10)];
        assert!(!pick(&v, &opts).unwrap().bottommost);
    }

    #[test]
    fn version_filter_respects_snapshots_and_tombstones() {
        let e = |k: &str, s: u64, v: Option<&str>| Entry {
            key: k.into(),
            seq: s,
            value: v.map(|x| x.into()),
        };
        let stream = [
            e("a", 9, Some("9")),
            e("a", 5, Some("5")),
            e("a", 3, Some("3")),
            e("b", 4, None),
            e("b", 2, Some("2")),
        ];
        let mut f = VersionFilter::new(6, true);
        let kept: Vec<u64> = stream.iter().filter(|x| f.keep(x)).map(|x| x.seq).collect();
        // a@9 newer than the snapshot; a@5 is what the snapshot sees; b's tombstone at
        // the bottom hides nothing and goes, and so does what it deleted.
        assert_eq!(kept, vec![9, 5]);
        let mut f = VersionFilter::new(6, false);
        let kept: Vec<u64> = stream.iter().filter(|x| f.keep(x)).map(|x| x.seq).collect();
        assert_eq!(kept, vec![9, 5, 4]);
    }
}
