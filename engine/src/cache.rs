//! The block cache: decoded data blocks shared by all readers of a shard, bounded by a
//! byte budget, least recently used evicted first.

use crate::sst::block::DecodedBlock;
use lru::LruCache;
use std::cell::RefCell;
use std::rc::Rc;

pub type Block = Rc<DecodedBlock>;

pub struct BlockCache {
    inner: RefCell<Inner>,
}

/// Block ids are (file number, offset): small integers that need no DoS-resistant hash.
type FastHash = std::hash::BuildHasherDefault<rustc_hash::FxHasher>;

struct Inner {
    lru: LruCache<(u64, u64), (Block, usize), FastHash>,
    bytes: usize,
    budget_bytes: usize,
    hits: u64,
    misses: u64,
}

impl BlockCache {
    pub fn new(budget_bytes: usize) -> BlockCache {
        BlockCache {
            inner: RefCell::new(Inner {
                lru: LruCache::unbounded_with_hasher(FastHash::default()),
                bytes: 0,
                budget_bytes,
                hits: 0,
                misses: 0,
            }),
        }
    }

    pub fn get(&self, file_no: u64, offset: u64) -> Option<Block> {
        let mut i = self.inner.borrow_mut();
        let r = i.lru.get(&(file_no, offset)).map(|(b, _)| b.clone());
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
        if let Some((_, old)) = i.lru.put((file_no, offset), (block, bytes)) {
            i.bytes -= old;
        }
        i.bytes += bytes;
        while i.bytes > i.budget_bytes {
            match i.lru.pop_lru() {
                Some((_, (_, b))) => i.bytes -= b,
                None => break,
            }
        }
    }

    /// Drops every block of a file (it was deleted).
    pub fn forget_file(&self, file_no: u64) {
        let mut i = self.inner.borrow_mut();
        let keys: Vec<(u64, u64)> = i
            .lru
            .iter()
            .filter(|(k, _)| k.0 == file_no)
            .map(|(k, _)| *k)
            .collect();
        for k in keys {
            if let Some((_, b)) = i.lru.pop(&k) {
                i.bytes -= b;
            }
        }
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
        c.forget_file(1);
        assert_eq!(c.stats().0, 0);
    }
}
