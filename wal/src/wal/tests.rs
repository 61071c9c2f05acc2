use super::*;
use futures_lite::future::block_on;
use rdb_io::fs::{Fault, MemFs};
use std::cell::RefCell as Cell;

fn dir() -> &'static Path {
    Path::new("/db/wal")
}

async fn open(fs: &MemFs, opts: WalOptions) -> Result<(Wal<MemFs>, Vec<(Lsn, Vec<u8>)>)> {
    let got = Cell::new(Vec::new());
    let w = Wal::open(fs.clone(), dir(), opts, 1, |l, p| {
        got.borrow_mut().push((l, p.to_vec()));
        Ok(())
    })
    .await?;
    Ok((w, got.into_inner()))
}

#[test]
fn appends_survive_reopen_and_power_loss() {
    block_on(async {
        let fs = MemFs::new(3);
        let (w, got) = open(&fs, WalOptions::default()).await.unwrap();
        assert!(got.is_empty());
        for i in 0..100u32 {
            let lsn = w.append(&i.to_le_bytes(), Durability::Hard).await.unwrap();
            assert_eq!(lsn, i as u64 + 1);
        }
        w.append(b"soft, never flushed", Durability::Soft)
            .await
            .unwrap();
        drop(w);
        fs.power_loss();
        let (w, got) = open(&fs, WalOptions::default()).await.unwrap();
        assert_eq!(got.len(), 100);
        assert_eq!(got[99], (100, 99u32.to_le_bytes().to_vec()));
        assert_eq!(w.next_lsn(), 101);
        assert_eq!(w.append(b"x", Durability::Hard).await.unwrap(), 101);
    });
}

#[test]
fn concurrent_hard_writers_share_syncs() {
    block_on(async {
        let fs = MemFs::new(4);
        let (w, _) = open(&fs, WalOptions::default()).await.unwrap();
        let before = fs.ops();
        let payloads: Vec<[u8; 4]> = (0..50u32).map(|i| i.to_le_bytes()).collect();
        let writes: Vec<_> = payloads
            .iter()
            .map(|p| w.append(p, Durability::Hard))
            .collect();
        let results = futures_lite::future::block_on(rdb_io::poll_all(writes));
        assert!(results.iter().all(|r| r.is_ok()));
        // 50 writers, far fewer than 50 write+sync pairs.
        assert!(
            fs.ops() - before < 20,
            "{} ops for 50 commits",
            fs.ops() - before
        );
        drop(w);
        fs.power_loss();
        let (_, got) = open(&fs, WalOptions::default()).await.unwrap();
        assert_eq!(got.len(), 50);
    });
}

#[test]
fn segments_roll_and_old_ones_can_be_removed() {
    block_on(async {
        let fs = MemFs::new(5);
        let opts = WalOptions {
            segment_bytes_max: 8192,
            ..Default::default()
        };
        let (w, _) = open(&fs, opts.clone()).await.unwrap();
        for i in 0..300u32 {
            w.append(&[i as u8; 100], Durability::Hard).await.unwrap();
        }
        assert!(w.segment_count() > 3);
        let recs = w.read_from(150, usize::MAX).await.unwrap();
        assert_eq!(recs.first().unwrap().0, 150);
        assert_eq!(recs.last().unwrap().0, 300);
        w.remove_before(200).await.unwrap();
        let (oldest, newest) = w.retained_range();
        assert!(oldest <= 200 && oldest > 1 && newest == 300);
        assert!(matches!(
            w.read_from(1, 10).await,
            Err(Error::Expired { .. })
        ));
        drop(w);
        // Reopening after removal replays from the oldest retained segment.
        let mut first = None;
        Wal::open(fs.clone(), dir(), opts, 0, |l, _| {
            first.get_or_insert(l);
            Ok(())
        })
        .await
        .unwrap();
        assert_eq!(first, Some(oldest));
    });
}

#[test]
fn failed_fsync_stops_the_log() {
    block_on(async {
        let fs = MemFs::new(6);
        let (w, _) = open(&fs, WalOptions::default()).await.unwrap();
        w.append(b"a", Durability::Hard).await.unwrap();
        fs.inject(0, "sync", Fault::Eio);
        assert!(w.append(b"b", Durability::Hard).await.is_err());
        // No retry: later writes are refused even though the disk "recovered".
        assert!(matches!(
            w.append(b"c", Durability::Hard).await,
            Err(Error::Failed(_))
        ));
        assert!(w.failure().is_some());
    });
}

#[test]
fn torn_tail_is_dropped_but_mid_log_damage_is_refused() {
    block_on(async {
        let fs = MemFs::new(8);
        let (w, _) = open(&fs, WalOptions::default()).await.unwrap();
        for i in 0..20u32 {
            w.append(&[i as u8; 300], Durability::Hard).await.unwrap();
        }
        drop(w);
        let seg = dir().join(crate::segment::segment_name(1));
        let clean = fs.contents(&seg).unwrap();
        // Damage in the last record: a torn tail, recovered to 19 records.
        let last_rec = SEGMENT_HEADER_BYTES + 19 * record::padded_len(300) + 30;
        let mut torn = clean.clone();
        torn[last_rec] ^= 0xff;
        fs.set_contents(&seg, torn);
        let (_, got) = open(&fs, WalOptions::default()).await.unwrap();
        assert_eq!(got.len(), 19);
        // Damage in record 3, followed by later commits: refused, naming file and offset.
        let mut bad = clean.clone();
        bad[SEGMENT_HEADER_BYTES + 3 * record::padded_len(300) + 40] ^= 1;
        fs.set_contents(&seg, bad);
        match open(&fs, WalOptions::default()).await {
            Err(Error::Corrupt { path, offset, .. }) => {
                assert_eq!(path, seg);
                assert_eq!(
                    offset as usize,
                    SEGMENT_HEADER_BYTES + 3 * record::padded_len(300)
                );
            }
            Err(e) => panic!("unexpected error {e}"),
            Ok(_) => panic!("mid-log corruption was accepted"),
        }
    });
}

#[test]
fn random_crashes_never_lose_acknowledged_records() {
    for seed in 0..200u64 {
        block_on(async {
            let fs = MemFs::new(seed + 100);
            let opts = WalOptions {
                segment_bytes_max: 16384,
                ..Default::default()
            };
            let mut acked: Vec<Vec<u8>> = Vec::new();
            for round in 0..4u64 {
                let (w, got) = open(&fs, opts.clone())
                    .await
                    .unwrap_or_else(|e| panic!("seed {seed}: {e}"));
                // Everything acknowledged is there, in order; at most the unacknowledged
                // in-flight record may also be there.
                assert!(
                    got.len() >= acked.len(),
                    "seed {seed} round {round}: lost records"
                );
                for (i, a) in acked.iter().enumerate() {
                    assert_eq!(&got[i].1, a, "seed {seed}: record {i} differs");
                }
                acked = got.into_iter().map(|(_, p)| p).collect();
                let n = 5 + (seed * 7 + round * 13) % 40;
                fs.inject(fs.ops() + 1 + (seed * 31 + round) % 60, "any", Fault::Eio);
                for i in 0..n {
                    let payload = vec![(seed + round + i) as u8; ((seed + i) % 700) as usize + 1];
                    match w.append(&payload, Durability::Hard).await {
                        Ok(_) => acked.push(payload),
                        Err(_) => break,
                    }
                }
                drop(w);
                fs.power_loss();
            }
        });
    }
}

#[test]
fn soft_overflow_and_rolls_are_covered_by_the_next_hard_commit() {
    block_on(async {
        let fs = MemFs::new(11);
        let opts = WalOptions {
            segment_bytes_max: 8192,
            soft_buffer_bytes_max: 1000,
        };
        let (w, _) = open(&fs, opts.clone()).await.unwrap();
        for i in 0..100u32 {
            w.append(&[i as u8; 200], Durability::Soft).await.unwrap();
        }
        assert!(w.segment_count() > 2);
        w.append(b"hard", Durability::Hard).await.unwrap();
        drop(w);
        fs.power_loss();
        let (_, got) = open(&fs, opts).await.unwrap();
        assert_eq!(got.len(), 101);
        assert_eq!(got[100].1, b"hard");
    });
}

#[test]
fn followers_keep_their_segments_and_wait_for_new_records() {
    block_on(async {
        let fs = MemFs::new(12);
        let opts = WalOptions {
            segment_bytes_max: 4096,
            ..Default::default()
        };
        let (w, _) = open(&fs, opts).await.unwrap();
        for i in 0..100u32 {
            w.append(&[i as u8; 100], Durability::Hard).await.unwrap();
        }
        let hold = w.retain_from(10).unwrap();
        w.remove_before(90).await.unwrap();
        // Still readable from the follower's position.
        let recs = w.read_from(10, usize::MAX).await.unwrap();
        assert_eq!(recs.first().unwrap().0, 10);
        drop(hold);
        w.remove_before(90).await.unwrap();
        assert!(w.read_from(10, 1).await.is_err());
        assert!(w.retain_from(1).is_err());
        // A follower blocks until the next record is durable.
        let next = w.next_lsn();
        let (a, b) =
            futures_lite::future::zip(w.wait_for(next), w.append(b"new", Durability::Hard)).await;
        a.unwrap();
        assert_eq!(b.unwrap(), next);
        assert_eq!(w.read_from(next, usize::MAX).await.unwrap()[0].1, b"new");
    });
}
