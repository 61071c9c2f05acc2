//! The seed corpus: valid inputs for every target, made with the real encoders (and, for
//! storage files, by a real shard on a scratch directory), so mutations start from
//! inputs that reach deep into each decoder.

use rdb_query::datum::{Datum, Object};
use std::path::Path;

fn sample_datums() -> Vec<Datum> {
    let mut o = Object::new();
    o.insert("id".into(), Datum::str("a"));
    o.insert("n".into(), Datum::Num(-1.5));
    o.insert("big".into(), Datum::Num(9007199254740992.0));
    o.insert("t".into(), Datum::Bool(true));
    o.insert("nil".into(), Datum::Null);
    o.insert("bin".into(), Datum::Binary(vec![0u8, 1, 255].into()));
    o.insert(
        "list".into(),
        Datum::array(vec![
            Datum::Num(1.0),
            Datum::str("é"),
            Datum::empty_object(),
        ]),
    );
    let mut nested = Datum::Null;
    for _ in 0..20 {
        nested = Datum::array(vec![nested]);
    }
    vec![
        Datum::object(o),
        nested,
        Datum::str(""),
        Datum::Num(0.0),
        Datum::array(vec![Datum::MinVal, Datum::MaxVal]),
    ]
}

const QUERIES: &[&str] = &[
    r#"[1,[1],{}]"#,
    r#"[1,"x",{"db":[14,["test"]]}]"#,
    r#"[1,[39,[[15,[[14,["test"]],"t"]],{"a":1}]],{"array_limit":4}]"#,
    r#"[1,[173,[[167,[10]]]],{}]"#,
    r#"[1,[69,[[2,[1]],[20,[[10,[1]],5]]]],{}]"#,
    r#"[1,[2,[1,"a",null,true,{"k":[2,[]]}]],{"profile":true}]"#,
    r#"[1,[16,[[15,[[14,["test"]],"t"]],"id"]],{"noreply":true}]"#,
    r#"[2]"#,
    r#"[3]"#,
    r#"[4]"#,
    r#"[5]"#,
];

fn write(dir: &Path, target: &str, name: &str, bytes: &[u8]) -> usize {
    let d = dir.join(target);
    std::fs::create_dir_all(&d).expect("create the corpus directory");
    std::fs::write(d.join(name), bytes).expect("write a seed");
    1
}

/// Writes every target's seeds under `dir`; returns how many.
pub fn write_all(dir: &Path) -> usize {
    let mut n = 0;
    // Handshake: V1_0 magic, the three client messages; and the old protocols.
    let mut hs = 0x34c2_bdc3u32.to_le_bytes().to_vec();
    hs.extend_from_slice(
        br#"{"protocol_version":0,"authentication_method":"SCRAM-SHA-256","authentication":"n,,n=admin,r=rOprNGfwEbeRWgbNEkqO"}"#,
    );
    hs.push(0);
    hs.extend_from_slice(br#"{"authentication":"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="}"#);
    hs.push(0);
    n += write(dir, "handshake", "v1_0", &hs);
    for (name, magic) in [("v0_4", 0x400c_2d20u32), ("v0_1", 0x3f61_ba36)] {
        n += write(dir, "handshake", name, &magic.to_le_bytes());
    }
    // Frames and terms.
    for (i, q) in QUERIES.iter().enumerate() {
        let mut f = (i as u64 + 1).to_le_bytes().to_vec();
        f.extend_from_slice(&(q.len() as u32).to_le_bytes());
        f.extend_from_slice(q.as_bytes());
        n += write(dir, "frame", &format!("q{i}"), &f);
        n += write(dir, "term", &format!("q{i}"), q.as_bytes());
    }
    // Documents and keys.
    for (i, d) in sample_datums().iter().enumerate() {
        if let Ok(b) = rdb_query::codec::encode(d) {
            n += write(dir, "codec", &format!("d{i}"), &b);
        }
        n += write(
            dir,
            "keycode",
            &format!("k{i}"),
            &rdb_query::keycode::encode(d),
        );
    }
    // A write batch as logged.
    let mut batch = rdb_engine::WriteBatch::new();
    batch
        .put(b"k1".to_vec(), b"v1".to_vec())
        .delete(b"k2".to_vec());
    n += write(dir, "write_batch", "b0", &batch.encode(7));
    n + storage_files(dir)
}

/// Runs a shard on a scratch directory (writes, a flush) and keeps its log segment,
/// SST and manifest as seeds; SST blocks are cut out by their index.
fn storage_files(dir: &Path) -> usize {
    let scratch = std::env::temp_dir().join(format!("rdb-fuzz-seed-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(&scratch).expect("scratch directory");
    let s2 = scratch.clone();
    rdb_io::run_per_core(&rdb_io::RuntimeConfig::default(), move |_| {
        let s2 = s2.clone();
        async move {
            let fs = rdb_io::fs::DmaFs::new(&s2)
                .await
                .expect("open the scratch fs");
            let shard = rdb_engine::Shard::open(fs, &s2, rdb_engine::ShardOptions::default())
                .await
                .expect("open a shard");
            for i in 0..200u32 {
                let mut b = rdb_engine::WriteBatch::new();
                b.put(
                    format!("key{i:05}").into_bytes(),
                    vec![i as u8; (i % 50) as usize],
                );
                if i % 7 == 0 {
                    b.delete(format!("key{:05}", i / 2).into_bytes());
                }
                shard
                    .write(b, rdb_engine::Durability::Hard)
                    .await
                    .expect("write");
            }
            shard.flush().await.expect("flush");
        }
    })
    .expect("run the seed shard");
    let mut n = 0;
    for e in walk(&scratch) {
        let name = e
            .file_name()
            .and_then(|s| s.to_str())
            .unwrap_or("")
            .to_string();
        let bytes = std::fs::read(&e).unwrap_or_default();
        if name.ends_with(".wal") {
            n += write(dir, "wal_segment", &name, &bytes);
        } else if name.ends_with(".sst") {
            n += write(dir, "sst_file", &name, &bytes);
            // The data blocks start the file; the first 16 KiB holds at least one.
            n += write(dir, "sst_block", &name, &bytes[..bytes.len().min(16 << 10)]);
        } else if name.starts_with("MANIFEST") {
            n += write(dir, "manifest", &name, &bytes);
        }
    }
    let _ = std::fs::remove_dir_all(&scratch);
    n
}

fn walk(d: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(d).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}
