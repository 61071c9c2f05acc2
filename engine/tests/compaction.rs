//! Compaction of appended keys: level-0 files written from two streams of appended keys
//! span the gap between the streams, where level 1 holds what earlier compactions wrote.
//! Only the level-1 files that hold keys of the level-0 files may be rewritten; the rest
//! stay in place, so the bytes compaction reads stay proportional to the bytes flushed.

use futures_lite::future::block_on;
use rdb_engine::compaction::CompactionOptions;
use rdb_engine::{Durability, Shard, ShardOptions};
use rdb_io::fs::MemFs;
use std::path::Path;

fn options() -> ShardOptions {
    ShardOptions {
        memtable_bytes_max: 32 * 1024,
        maintain_in_writes: true,
        compaction: CompactionOptions {
            l0_files_trigger: 2,
            level1_bytes: 1 << 40,
            level_multiplier: 10,
            target_file_bytes: 16 * 1024,
        },
        ..Default::default()
    }
}

fn key(stream: u8, i: u32) -> Vec<u8> {
    let mut k = vec![stream];
    k.extend_from_slice(&i.to_be_bytes());
    k
}

#[test]
fn appending_streams_do_not_rewrite_the_gap_between_them() {
    block_on(async {
        let s = Shard::open(MemFs::new(7), Path::new("/st"), options())
            .await
            .unwrap();
        let per_stream = 20_000u32;
        for i in 0..per_stream {
            for stream in [b'a', b'z'] {
                s.put(&key(stream, i), &[stream; 40], Durability::Soft)
                    .await
                    .unwrap();
            }
        }
        s.maintain().await.unwrap();
        let st = s.stats();
        assert!(st.compactions > 20, "{st:?}");
        // Each compaction reads its level-0 files (flushed once) and at most the file
        // that spans the gap between the streams (one target size). By key range alone it
        // would read every file the second stream has in level 1, over and over.
        assert!(
            st.compaction_bytes_read < 3 * st.flush_bytes_written,
            "compactions read {} bytes for {} flushed",
            st.compaction_bytes_read,
            st.flush_bytes_written
        );
        let v = s.version();
        for w in v.levels[1].windows(2) {
            assert!(w[0].largest_key < w[1].smallest_key, "level 1 overlaps");
        }
        for i in (0..per_stream).step_by(7) {
            for stream in [b'a', b'z'] {
                let got = s.get(&key(stream, i), None).await.unwrap();
                assert_eq!(got, Some(vec![stream; 40]), "{stream} {i}");
            }
        }
        assert_eq!(s.get(&key(b'm', 1), None).await.unwrap(), None);
    });
}
