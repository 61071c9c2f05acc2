//! The block cache: decoded data blocks of all SSTs of a shard, bounded by a byte
//! budget, evicted by second chance (CLOCK).
//!
//! Each SST reader keeps its cached blocks in a slot per block number (`BlockSlots`),
//! so a hit costs no hash lookup: one slot, then the block. The hit sets the slot's
//! `hot` flag; the cache's clock ring names (reader slots, block number) and, when the
//! hand passes a slot that is not hot, empties it (the block is freed once no iterator
//! holds it).

use crate::sst::block::DecodedBlock;
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;

pub type Block = DecodedBlock;

/// One reader's cached blocks, by block number.
pub struct BlockSlots {
    slots: Vec<Slot>,
}

#[derive(Default)]
struct Slot {
    block: Cell<Option<Block>>,
    /// Read since the clock hand last passed.
    hot: Cell<bool>,
}

impl BlockSlots {
    pub fn new(blocks: usize) -> Rc<BlockSlots> {
        Rc::new(BlockSlots {
            slots: (0..blocks).map(|_| Slot::default()).collect(),
        })
    }

    /// Block `i` if cached (marking it read).
    pub fn get(&self, i: usize) -> Option<Block> {
        let s = &self.slots[i];
        let b = s.block.take();
        let out = b.clone();
        s.block.set(b);
        if out.is_some() {
            s.hot.set(true);
        }
        out
    }
}

pub struct BlockCache {
    inner: RefCell<Inner>,
}

struct Inner {
    /// Every cached block once: its file, charge, reader slots and block number, in the
    /// order the clock hand visits them.
    clock: VecDeque<(u64, usize, Rc<BlockSlots>, usize)>,
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

    /// Counts a read served from a reader's slots.
    pub fn hit(&self) {
        self.inner.borrow_mut().hits += 1;
    }

    /// Takes block `i` of file `file_no`, just read (counted as a miss), into `slots`; it
    /// stays while it is read often enough to survive the clock hand, within the budget.
    pub fn insert(&self, file_no: u64, slots: &Rc<BlockSlots>, i: usize, block: Block) {
        let bytes = block.heap_bytes();
        let mut c = self.inner.borrow_mut();
        c.misses += 1;
        if bytes > c.budget_bytes {
            return;
        }
        let slot = &slots.slots[i];
        if slot.block.replace(Some(block)).is_some() {
            // Already cached (two reads of a block raced): the slot is in the ring.
            return;
        }
        slot.hot.set(false);
        c.clock.push_back((file_no, bytes, slots.clone(), i));
        c.bytes += bytes;
        while c.bytes > c.budget_bytes {
            let Some((f, b, s, j)) = c.clock.pop_front() else {
                break;
            };
            if s.slots[j].hot.replace(false) {
                c.clock.push_back((f, b, s, j));
            } else {
                s.slots[j].block.set(None);
                c.bytes -= b;
            }
        }
    }

    /// Drops every block of a file (it was deleted).
    pub fn forget_file(&self, file_no: u64) {
        let mut i = self.inner.borrow_mut();
        let Inner { clock, bytes, .. } = &mut *i;
        clock.retain(|(f, b, s, j)| {
            if *f == file_no {
                *bytes -= b;
                s.slots[*j].block.set(None);
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
        DecodedBlock::decode(&b.finish()).unwrap()
    }

    #[test]
    fn stays_within_budget_and_gives_read_blocks_a_second_chance() {
        let per = block().heap_bytes();
        assert!(per > 100);
        let c = BlockCache::new(10 * per);
        let one = BlockSlots::new(20);
        for i in 0..10 {
            c.insert(1, &one, i, block());
        }
        assert!(one.get(0).is_some());
        for i in 10..12 {
            c.insert(1, &one, i, block());
        }
        assert!(c.stats().0 <= 10 * per);
        // The block read since the hand last passed survived; the next oldest did not.
        assert!(one.get(0).is_some());
        assert!(one.get(1).is_none() && one.get(2).is_none());
        assert!(one.get(3).is_some() && one.get(11).is_some());
        let two = BlockSlots::new(1);
        c.insert(2, &two, 0, block());
        c.forget_file(1);
        assert_eq!(c.stats().0, per);
        assert!(two.get(0).is_some() && one.get(0).is_none());
    }
}
