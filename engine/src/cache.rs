//! The block cache: decoded data blocks shared by all readers of a shard, bounded by a
//! byte budget, evicted by second chance (CLOCK).
//!
//! The cache owns the blocks; each SST reader finds its cached blocks through a weak
//! reference per block number, so a hit costs no hash lookup, and sets the block's own
//! `referenced` flag (on a line the read touches anyway) where an LRU list would relink
//! nodes.

use crate::sst::block::DecodedBlock;
use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;

pub type Block = Rc<DecodedBlock>;

pub struct BlockCache {
    inner: RefCell<Inner>,
}

struct Inner {
    /// Every cached block once, with its file and charge, in the order the clock hand
    /// visits them.
    clock: VecDeque<(u64, usize, Block)>,
    bytes: usize,
    budget_bytes: usize,
    hits: u64,
    misses: u64,
}

impl BlockCache {
    pub fn new(budget_bytes: usize) -> BlockCache {
        BlockCache {
            inner: RefCell::new(Inner {
                clock: VecDeque::new(),
                bytes: 0,
                budget_bytes,
                hits: 0,
                misses: 0,
            }),
        }
    }

    /// Counts a read served by a cached block (found by its reader).
    pub fn hit(&self, block: &DecodedBlock) {
        block.referenced.set(true);
        self.inner.borrow_mut().hits += 1;
    }

    /// Takes a block just read from `file_no` (counted as a miss); it stays while it
    /// is read often enough to survive the clock hand, within the budget.
    pub fn insert(&self, file_no: u64, block: Block) {
        let bytes = block.heap_bytes();
        let mut i = self.inner.borrow_mut();
        i.misses += 1;
        if bytes > i.budget_bytes {
            return;
        }
        i.clock.push_back((file_no, bytes, block));
        i.bytes += bytes;
        while i.bytes > i.budget_bytes {
            let Some((f, b, block)) = i.clock.pop_front() else {
                break;
            };
            if block.referenced.replace(false) {
                i.clock.push_back((f, b, block));
            } else {
                i.bytes -= b;
            }
        }
    }

    /// Drops every block of a file (it was deleted).
    pub fn forget_file(&self, file_no: u64) {
        let mut i = self.inner.borrow_mut();
        let Inner { clock, bytes, .. } = &mut *i;
        clock.retain(|(f, b, _)| {
            if *f == file_no {
                *bytes -= b;
            }
            *f != file_no
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

    fn block() -> Block {
        let mut b = crate::sst::block::BlockBuilder::default();
        b.add(&crate::entry::Entry {
            key: b"key".to_vec(),
            seq: 1,
            value: Some(vec![7; 100]),
        });
        Rc::new(DecodedBlock::decode(&b.finish()).unwrap())
    }

    #[test]
    fn stays_within_budget_and_gives_read_blocks_a_second_chance() {
        let per = block().heap_bytes();
        assert!(per > 100);
        let c = BlockCache::new(10 * per);
        let blocks: Vec<Block> = (0..20).map(|_| block()).collect();
        for b in &blocks[..10] {
            c.insert(1, b.clone());
        }
        c.hit(&blocks[0]);
        for b in &blocks[10..12] {
            c.insert(1, b.clone());
        }
        assert!(c.stats().0 <= 10 * per);
        // The block read since the hand last passed survived; the next oldest did not.
        let held = |b: &Block| Rc::strong_count(b) > 1;
        assert!(held(&blocks[0]));
        assert!(!held(&blocks[1]) && !held(&blocks[2]));
        assert!(held(&blocks[3]) && held(&blocks[11]));
        c.insert(2, blocks[12].clone());
        c.forget_file(1);
        assert_eq!(c.stats().0, per);
        assert!(held(&blocks[12]) && !held(&blocks[0]));
        assert_eq!(c.stats().1, 1);
    }
}
