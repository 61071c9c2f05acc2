//! The block cache: decoded data blocks shared by all readers of a shard, bounded by a
//! byte budget, evicted by second chance (CLOCK): a hit only sets a flag in the entry
//! it already reads, where an LRU list would relink three nodes on every hit.

use crate::sst::block::DecodedBlock;
use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;

pub type Block = Rc<DecodedBlock>;

pub struct BlockCache {
    inner: RefCell<Inner>,
}

/// Block ids are (file number, offset): small integers that need no DoS-resistant hash.
type FastHash = std::hash::BuildHasherDefault<rustc_hash::FxHasher>;

struct Cached {
    block: Block,
    bytes: usize,
    /// Read since the clock hand last passed.
    referenced: Cell<bool>,
}

struct Inner {
    map: HashMap<(u64, u64), Cached, FastHash>,
    /// Every key of `map` once, in the order the clock hand visits them.
    clock: VecDeque<(u64, u64)>,
    bytes: usize,
    budget_bytes: usize,
    hits: u64,
    misses: u64,
}

impl BlockCache {
    pub fn new(budget_bytes: usize) -> BlockCache {
        BlockCache {
            inner: RefCell::new(Inner {
                map: HashMap::default(),
                clock: VecDeque::new(),
                bytes: 0,
                budget_bytes,
                hits: 0,
                misses: 0,
            }),
        }
    }

    pub fn get(&self, file_no: u64, offset: u64) -> Option<Block> {
        let mut i = self.inner.borrow_mut();
        let r = i.map.get(&(file_no, offset)).map(|c| {
            c.referenced.set(true);
            c.block.clone()
        });
        if r.is_some() {
            i.hits += 1;
        } else {
            i.misses += 1;
        }
        r
    }

    pub fn insert(&self, file_no: u64, offset: u64, block: Block, bytes: usize) {
        let mut i = self.inner.borrow_mut();
        if bytes > i.budget_bytes {
            return;
        }
        let new = Cached {
            block,
            bytes,
            referenced: Cell::new(false),
        };
        match i.map.insert((file_no, offset), new) {
            Some(old) => i.bytes -= old.bytes,
            None => i.clock.push_back((file_no, offset)),
        }
        i.bytes += bytes;
        while i.bytes > i.budget_bytes {
            let Some(k) = i.clock.pop_front() else {
                break;
            };
            let c = i.map.get(&k).expect("every clock key is cached");
            if c.referenced.replace(false) {
                i.clock.push_back(k);
            } else {
                let c = i.map.remove(&k).expect("just found");
                i.bytes -= c.bytes;
            }
        }
        debug_assert_eq!(i.map.len(), i.clock.len());
    }

    /// Drops every block of a file (it was deleted).
    pub fn forget_file(&self, file_no: u64) {
        let mut i = self.inner.borrow_mut();
        let Inner {
            map, clock, bytes, ..
        } = &mut *i;
        clock.retain(|k| {
            if k.0 != file_no {
                return true;
            }
            *bytes -= map.remove(k).expect("every clock key is cached").bytes;
            false
        });
    }

    /// (bytes held, hits, misses).
    pub fn stats(&self) -> (usize, u64, u64) {
        let i = self.inner.borrow();
        (i.bytes, i.hits, i.misses)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stays_within_budget() {
        let c = BlockCache::new(1000);
        for i in 0..20 {
            c.insert(1, i, Rc::new(DecodedBlock::decode(&[]).unwrap()), 100);
        }
        assert!(c.stats().0 <= 1000);
        assert!(c.get(1, 19).is_some());
        assert!(c.get(1, 0).is_none());
        // A block read since the hand last passed survives the next eviction.
        assert!(c.get(1, 10).is_some());
        c.insert(2, 0, Rc::new(DecodedBlock::decode(&[]).unwrap()), 100);
        assert!(c.get(1, 10).is_some());
        assert!(c.get(1, 11).is_none());
        c.forget_file(1);
        assert_eq!(c.stats().0, 100);
        assert!(c.get(2, 0).is_some());
    }
}
