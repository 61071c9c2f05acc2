//! A lazy scan over a key range of every shard, merged into key order. Each shard is
//! read in batches (small first, so `limit(1)` stays cheap), so memory stays bounded
//! however large the table is. Index scans read entries and get back the documents,
//! keyed by exact index order.

use super::shard::{IndexReadReq, ScanReq};
use super::{KeyRange, Store};
use crate::error::Result;
use std::collections::VecDeque;
use std::ops::Bound;
use std::rc::Rc;

const BATCH_FIRST: usize = 32;
const BATCH_MAX: usize = 1024;

struct Cursor {
    buf: VecDeque<(Vec<u8>, Vec<u8>)>,
    /// The bound that continues after what was read (lo forward, hi reverse).
    resume: Bound<Vec<u8>>,
    done: bool,
}

/// What a scan reads: keys as stored, or an index's entries turned into documents.
#[derive(Clone)]
pub enum Source {
    Keys,
    Index {
        table_prefix: Vec<u8>,
        sec_lo: Bound<Vec<u8>>,
        sec_hi: Bound<Vec<u8>>,
    },
}

pub struct MergedScan {
    store: Rc<Store>,
    source: Source,
    cursors: Vec<Cursor>,
    lo: Bound<Vec<u8>>,
    hi: Bound<Vec<u8>>,
    reverse: bool,
    batch: usize,
    failed: bool,
}

impl MergedScan {
    pub fn new(store: Rc<Store>, lo: Bound<Vec<u8>>, hi: Bound<Vec<u8>>, reverse: bool) -> Self {
        Self::with_source(store, Source::Keys, lo, hi, reverse)
    }

    pub fn with_source(
        store: Rc<Store>,
        source: Source,
        lo: Bound<Vec<u8>>,
        hi: Bound<Vec<u8>>,
        reverse: bool,
    ) -> Self {
        let start = if reverse { hi.clone() } else { lo.clone() };
        let cursors = (0..store.shards())
            .map(|_| Cursor {
                buf: VecDeque::new(),
                resume: start.clone(),
                done: false,
            })
            .collect();
        MergedScan {
            store,
            source,
            cursors,
            lo,
            hi,
            reverse,
            batch: BATCH_FIRST,
            failed: false,
        }
    }

    /// Sizes the first reads for a consumer that wants about `rows` rows (a `limit`):
    /// each shard is asked for its share with some slack, rather than for a fixed small
    /// batch followed by a large one.
    pub fn expect_rows(mut self, rows: usize) -> Self {
        let shards = self.cursors.len().max(1);
        let share = rows.saturating_mul(5) / (4 * shards) + 16;
        self.batch = share.clamp(1, BATCH_MAX);
        self
    }

    /// Reads until every shard not finished has a row buffered: merging needs the next
    /// row of each. (An index read can come back empty yet unfinished when it skipped
    /// entries outside the exact bounds.)
    fn refill(&mut self) -> Result<()> {
        loop {
            let need: Vec<usize> = (0..self.cursors.len())
                .filter(|&i| self.cursors[i].buf.is_empty() && !self.cursors[i].done)
                .collect();
            if need.is_empty() {
                return Ok(());
            }
            self.fetch(need)?;
        }
    }

    fn fetch(&mut self, need: Vec<usize>) -> Result<()> {
        let limit = self.batch;
        self.batch = (self.batch * 4).min(BATCH_MAX);
        let ranges: Vec<(usize, KeyRange)> = need
            .iter()
            .map(|&i| {
                let c = &self.cursors[i];
                if self.reverse {
                    (i, (self.lo.clone(), c.resume.clone()))
                } else {
                    (i, (c.resume.clone(), self.hi.clone()))
                }
            })
            .collect();
        match &self.source {
            Source::Keys => {
                let reqs = ranges
                    .into_iter()
                    .map(|(i, (lo, hi))| {
                        let reverse = self.reverse;
                        (
                            i,
                            ScanReq {
                                lo,
                                hi,
                                reverse,
                                limit,
                            },
                        )
                    })
                    .collect();
                let rows = self.store.scan_raw(reqs)?;
                for (i, rows) in need.into_iter().zip(rows) {
                    let c = &mut self.cursors[i];
                    c.done = rows.len() < limit;
                    if let Some((k, _)) = rows.last() {
                        c.resume = Bound::Excluded(k.clone());
                    }
                    c.buf.extend(rows);
                }
            }
            Source::Index {
                table_prefix,
                sec_lo,
                sec_hi,
            } => {
                let reqs = ranges
                    .into_iter()
                    .map(|(i, (lo, hi))| {
                        let r = IndexReadReq {
                            table_prefix: table_prefix.clone(),
                            lo,
                            hi,
                            sec_lo: sec_lo.clone(),
                            sec_hi: sec_hi.clone(),
                            reverse: self.reverse,
                            limit,
                        };
                        (i, r)
                    })
                    .collect();
                let got = self.store.index_read_raw(reqs)?;
                for (i, r) in need.into_iter().zip(got) {
                    let c = &mut self.cursors[i];
                    c.done = r.done;
                    if let Some(k) = r.resume {
                        c.resume = Bound::Excluded(k);
                    }
                    c.buf.extend(r.rows);
                }
            }
        }
        Ok(())
    }
}

impl Iterator for MergedScan {
    type Item = Result<(Vec<u8>, Vec<u8>)>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        if let Err(e) = self.refill() {
            self.failed = true;
            return Some(Err(e));
        }
        let mut best: Option<usize> = None;
        for (i, c) in self.cursors.iter().enumerate() {
            let Some((k, _)) = c.buf.front() else {
                continue;
            };
            best = match best {
                None => Some(i),
                Some(b) => {
                    let bk = &self.cursors[b].buf.front().expect("non-empty").0;
                    if (k < bk) != self.reverse {
                        Some(i)
                    } else {
                        Some(b)
                    }
                }
            };
        }
        best.map(|i| Ok(self.cursors[i].buf.pop_front().expect("non-empty")))
    }
}
