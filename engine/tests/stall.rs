//! Write stalls: with maintenance in the background, a memtable that has grown to
//! `MEMTABLE_STALL_FACTOR` times its flush size makes writers wait until it is frozen,
//! so a write load faster than flushes and compactions cannot grow memory without bound.

use futures_lite::future::{block_on, poll_once};
use rdb_engine::{Durability, Shard, ShardOptions, MEMTABLE_STALL_FACTOR};
use rdb_io::fs::MemFs;
use std::path::Path;

fn options(maintain_in_writes: bool) -> ShardOptions {
    ShardOptions {
        memtable_bytes_max: 16 * 1024,
        maintain_in_writes,
        ..Default::default()
    }
}

fn open(seed: u64, maintain_in_writes: bool) -> Shard<MemFs> {
    block_on(Shard::open(
        MemFs::new(seed),
        Path::new("/st"),
        options(maintain_in_writes),
    ))
    .unwrap()
}

#[test]
fn writers_wait_for_a_memtable_far_past_its_flush_size() {
    block_on(async {
        let s = open(3, false);
        let mut i = 0u32;
        while !s.write_stalled() {
            assert!(i < 100_000, "never stalled");
            s.put(&i.to_be_bytes(), &[7u8; 100], Durability::Soft)
                .await
                .unwrap();
            i += 1;
        }
        // Past the flush size by the stall factor (entries carry overhead beyond their bytes).
        assert!(s.needs_maintenance());
        assert!(i as usize * (100 + 4) >= 16 * 1024 * MEMTABLE_STALL_FACTOR / 2);
        let mut room = std::pin::pin!(s.write_room());
        assert!(
            poll_once(room.as_mut()).await.is_none(),
            "stalled writers wait"
        );
        s.maintain().await.unwrap();
        assert!(
            poll_once(room.as_mut()).await.is_some(),
            "a freeze lets them go"
        );
        assert!(!s.write_stalled());
        for k in 0..i {
            assert!(s.get(&k.to_be_bytes(), None).await.unwrap().is_some());
        }
    });
}

#[test]
fn writes_that_maintain_the_shard_never_stall() {
    block_on(async {
        let s = open(4, true);
        for i in 0..2000u32 {
            s.put(&i.to_be_bytes(), &[7u8; 100], Durability::Soft)
                .await
                .unwrap();
            assert!(!s.write_stalled());
        }
    });
}
