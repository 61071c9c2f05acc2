//! A lazy scan over a key range of every shard, merged into key order. Each shard is
//! read in batches (small first, so `limit(1)` stays cheap), so memory stays bounded
//! however large the table is.

use super::shard::ScanReq;
use super::Store;
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

pub struct MergedScan {
    store: Rc<Store>,
    cursors: Vec<Cursor>,
    lo: Bound<Vec<u8>>,
    hi: Bound<Vec<u8>>,
    reverse: bool,
    batch: usize,
    failed: bool,
}

impl MergedScan {
    pub fn new(store: Rc<Store>, lo: Bound<Vec<u8>>, hi: Bound<Vec<u8>>, reverse: bool) -> Self {
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
            cursors,
            lo,
            hi,
            reverse,
            batch: BATCH_FIRST,
            failed: false,
        }
    }

    fn refill(&mut self) -> Result<()> {
        let need: Vec<usize> = (0..self.cursors.len())
            .filter(|&i| self.cursors[i].buf.is_empty() && !self.cursors[i].done)
            .collect();
        if need.is_empty() {
            return Ok(());
        }
        let limit = self.batch;
        self.batch = (self.batch * 4).min(BATCH_MAX);
        let reqs = need
            .iter()
            .map(|&i| {
                let c = &self.cursors[i];
                let (lo, hi) = if self.reverse {
                    (self.lo.clone(), c.resume.clone())
                } else {
                    (c.resume.clone(), self.hi.clone())
                };
                (
                    i,
                    ScanReq {
                        lo,
                        hi,
                        reverse: self.reverse,
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
