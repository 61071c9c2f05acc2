//! Corruption on disk is detected and reported with the file and offset, never returned
//! as data: flipped bits, truncation and zeroed blocks, in SSTs, manifests and the WAL.

use futures_lite::future::block_on;
use rdb_engine::{Durability, Error, Shard, ShardOptions};
use rdb_io::fs::{Fs, MemFs};
use std::ops::Bound;
use std::path::{Path, PathBuf};

const N: u32 = 400;

fn value(i: u32) -> Vec<u8> {
    format!("value-{i}-{}", "abcdefgh".repeat((i % 5) as usize)).into_bytes()
}

/// A shard with N keys flushed to one SST, and the path of that SST.
async fn populated(fs: &MemFs) -> PathBuf {
    let dir = Path::new("/c");
    let s = Shard::open(fs.clone(), dir, ShardOptions::default())
        .await
        .unwrap();
    for i in 0..N {
        s.put(&i.to_be_bytes(), &value(i), Durability::Soft)
            .await
            .unwrap();
    }
    s.flush().await.unwrap();
    let f = &s.version().levels[0][0];
    dir.join(rdb_engine::manifest::sst_name(f.file_no))
}

/// Opens the shard and reads everything: each read is right or an error, never wrong.
async fn read_back(fs: &MemFs) -> Result<usize, Error> {
    let s = Shard::open(fs.clone(), Path::new("/c"), ShardOptions::default()).await?;
    let mut right = 0;
    for i in 0..N {
        match s.get(&i.to_be_bytes(), None).await {
            Ok(Some(v)) => {
                assert_eq!(v, value(i), "key {i} returned wrong data");
                right += 1;
            }
            Ok(None) => panic!("key {i} silently missing"),
            Err(e) => assert!(matches!(e, Error::Corrupt { .. }), "{e}"),
        }
    }
    let all = s
        .scan(Bound::Unbounded, Bound::Unbounded, None, false, usize::MAX)
        .await?;
    for (k, v) in &all {
        let i = u32::from_be_bytes(k.as_slice().try_into().unwrap());
        assert_eq!(*v, value(i), "scan returned wrong data for key {i}");
    }
    assert_eq!(all.len(), N as usize, "scan silently dropped keys");
    Ok(right)
}

#[test]
fn flipped_bits_in_an_sst_are_detected() {
    block_on(async {
        let fs = MemFs::new(1);
        let sst = populated(&fs).await;
        let clean = fs.contents(&sst).unwrap();
        assert_eq!(read_back(&fs).await.unwrap(), N as usize);
        let mut detected = 0;
        // Every 7th byte, each bit position in turn.
        for (n, byte) in (0..clean.len()).step_by(7).enumerate() {
            let mut d = clean.clone();
            d[byte] ^= 1 << (n % 8);
            fs.set_contents(&sst, d);
            match read_back(&fs).await {
                Ok(_) => {}
                Err(Error::Corrupt { path, .. }) => {
                    assert_eq!(path, sst);
                    detected += 1;
                }
                Err(e) => panic!("unexpected error {e}"),
            }
        }
        fs.set_contents(&sst, clean);
        assert!(detected > 0);
    });
}

#[test]
fn truncated_and_zeroed_ssts_are_detected() {
    block_on(async {
        let fs = MemFs::new(2);
        let sst = populated(&fs).await;
        let clean = fs.contents(&sst).unwrap();
        for cut in [0, 10, 64, clean.len() / 2, clean.len() - 1] {
            fs.set_contents(&sst, clean[..cut].to_vec());
            let e = read_back(&fs).await.unwrap_err();
            assert!(matches!(e, Error::Corrupt { .. }), "cut at {cut}: {e}");
        }
        // Zero each 4 KiB block in turn.
        for start in (0..clean.len()).step_by(4096) {
            let mut d = clean.clone();
            let end = (start + 4096).min(d.len());
            d[start..end].fill(0);
            fs.set_contents(&sst, d);
            match read_back(&fs).await {
                Ok(_) | Err(Error::Corrupt { .. }) => {}
                Err(e) => panic!("zeroed block at {start}: {e}"),
            }
        }
    });
}

#[test]
fn damaged_manifest_and_wal_refuse_to_open() {
    block_on(async {
        let fs = MemFs::new(3);
        populated(&fs).await;
        let dir = Path::new("/c");
        // WAL: write unflushed records, then damage one in the middle of the log.
        {
            let s = Shard::open(fs.clone(), dir, ShardOptions::default())
                .await
                .unwrap();
            for i in 0..50u32 {
                s.put(&(N + i).to_be_bytes(), b"more", Durability::Hard)
                    .await
                    .unwrap();
            }
        }
        let wal_dir = dir.join("wal");
        let seg = wal_dir.join(
            fs.list(&wal_dir)
                .unwrap()
                .into_iter()
                .find(|n| n.ends_with(".wal"))
                .unwrap(),
        );
        let clean = fs.contents(&seg).unwrap();
        let mut d = clean.clone();
        d[100] ^= 0x40;
        fs.set_contents(&seg, d);
        match Shard::open(fs.clone(), dir, ShardOptions::default()).await {
            Err(Error::Wal(rdb_wal::Error::Corrupt { path, offset, .. })) => {
                assert_eq!(path, seg);
                assert!(offset <= 100);
            }
            Err(e) => panic!("unexpected error {e}"),
            Ok(_) => panic!("opened over a corrupt WAL"),
        }
        fs.set_contents(&seg, clean);
        // Manifest: any flipped bit is refused.
        let current = String::from_utf8(fs.contents(&dir.join("CURRENT")).unwrap()).unwrap();
        let man = dir.join(current.trim_end_matches('\0').trim());
        let clean = fs.contents(&man).unwrap();
        let mut d = clean.clone();
        d[20] ^= 1;
        fs.set_contents(&man, d);
        let e = Shard::open(fs.clone(), dir, ShardOptions::default())
            .await
            .err()
            .expect("refused");
        assert!(
            matches!(&e, Error::Corrupt { path, .. } if *path == man),
            "{e}"
        );
        fs.set_contents(&man, clean);
        assert!(Shard::open(fs.clone(), dir, ShardOptions::default())
            .await
            .is_ok());
    });
}
