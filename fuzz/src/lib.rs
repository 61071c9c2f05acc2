//! Fuzz targets: every decoder of bytes that come from the network or the disk, each a
//! function that must return (with an error or not) and never panic, hang or overflow
//! its stack, whatever the bytes. `main.rs` runs them under a mutation fuzzer.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

/// One fuzz target.
pub struct Target {
    pub name: &'static str,
    pub run: fn(&[u8]),
}

/// Every target, in the order `all` runs them.
pub const TARGETS: &[Target] = &[
    Target {
        name: "handshake",
        run: handshake,
    },
    Target {
        name: "frame",
        run: frame,
    },
    Target {
        name: "term",
        run: term,
    },
    Target {
        name: "codec",
        run: codec,
    },
    Target {
        name: "keycode",
        run: keycode,
    },
    Target {
        name: "wal_segment",
        run: wal_segment,
    },
    Target {
        name: "sst_block",
        run: sst_block,
    },
    Target {
        name: "sst_file",
        run: sst_file,
    },
    Target {
        name: "manifest",
        run: manifest,
    },
    Target {
        name: "write_batch",
        run: write_batch,
    },
];

pub fn target(name: &str) -> Option<&'static Target> {
    TARGETS.iter().find(|t| t.name == name)
}

/// Scripted client bytes in, server bytes out.
struct Pipe<'a> {
    input: &'a [u8],
    output: Vec<u8>,
}

impl futures_lite::AsyncRead for Pipe<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let n = buf.len().min(self.input.len());
        buf[..n].copy_from_slice(&self.input[..n]);
        self.input = &self.input[n..];
        Poll::Ready(Ok(n))
    }
}

impl futures_lite::AsyncWrite for Pipe<'_> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.output.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

thread_local! {
    static USERS: rdb_net::UserStore = rdb_net::UserStore::with_admin("");
}

/// The V1_0 handshake (magic, three JSON messages, SCRAM) over arbitrary client bytes.
pub fn handshake(data: &[u8]) {
    USERS.with(|users| {
        let mut p = Pipe {
            input: data,
            output: Vec::new(),
        };
        let _ = futures_lite::future::block_on(rdb_net::handshake::handshake(&mut p, users));
    });
}

/// A query frame: the 12-byte header, then the body as the connection parses it.
pub fn frame(data: &[u8]) {
    if let Some(h) = data.get(..rdb_net::frame::HEADER_BYTES) {
        let mut b = [0u8; rdb_net::frame::HEADER_BYTES];
        b.copy_from_slice(h);
        let _ = rdb_net::frame::parse_header(&b);
    }
    let _ = rdb_net::frame::parse_body(data);
}

/// A query body through both term parsers and the checker (not evaluated: random
/// terms may legitimately run forever).
pub fn term(data: &[u8]) {
    let _ = rdb_query::term_fast::parse_start(data);
    if let Ok(serde_json::Value::Array(q)) = serde_json::from_slice::<serde_json::Value>(data) {
        if let Some(t) = q.get(1) {
            if let Ok(t) = rdb_query::term::parse(t) {
                let _ = rdb_query::eval::check(&t);
            }
        }
    }
}

/// A stored document: decoding, JSON straight from the bytes, and a field lookup.
pub fn codec(data: &[u8]) {
    let decoded = rdb_query::codec::decode(data);
    let mut json = String::new();
    let direct = rdb_query::codec::write_json(data, &mut json);
    // Both readers check the same things.
    assert_eq!(
        decoded.is_ok(),
        direct.is_ok(),
        "decode and write_json disagree"
    );
    if let Ok(d) = decoded {
        assert_eq!(
            json,
            rdb_query::json::to_json(&d),
            "write_json differs from decode"
        );
        let re = rdb_query::codec::encode(&d).expect("a decoded document encodes");
        assert_eq!(rdb_query::codec::decode(&re).ok(), Some(d));
    }
    let _ = rdb_query::codec::field_path(data, &["a", "b"]);
}

/// An index or primary key encoding.
pub fn keycode(data: &[u8]) {
    if let Some((d, used)) = rdb_query::keycode::decode_prefix(data) {
        assert!(used <= data.len());
        let _ = rdb_query::keycode::encode(&d);
    }
}

/// A WAL segment file image.
pub fn wal_segment(data: &[u8]) {
    let _ = rdb_wal::scan_segment(data, 1);
}

/// One SST data block, its index block, footer and meta block decoders.
pub fn sst_block(data: &[u8]) {
    use rdb_engine::sst::block::DecodedBlock;
    if let Ok(b) = DecodedBlock::decode(data) {
        for i in 0..b.len() {
            let _ = (b.key(i), b.seq(i), b.value(i));
        }
    }
    let _ = rdb_engine::sst::block::decode_index(data);
    let _ = rdb_engine::sst::format::Footer::decode(data);
    let _ = rdb_engine::sst::writer::decode_meta(data, 1, data.len() as u64);
}

/// A whole SST file: opened and read to the end through the engine's reader.
pub fn sst_file(data: &[u8]) {
    use std::rc::Rc;
    let path = std::env::temp_dir().join(format!("rdb-fuzz-sst-{}.sst", std::process::id()));
    if std::fs::write(&path, data).is_err() {
        return;
    }
    let fs = rdb_io::fs::ReadOnlyFs;
    let cache = Rc::new(rdb_engine::cache::BlockCache::new(1 << 20));
    futures_lite::future::block_on(async {
        let Ok(r) = rdb_engine::sst::SstReader::open(&fs, &path, 1, cache).await else {
            return;
        };
        let r = Rc::new(r);
        if let Ok(mut it) = rdb_engine::sst::SstIter::start(r.clone(), false).await {
            // Bounded: a file of n bytes cannot hold more entries than bytes.
            for _ in 0..=data.len() {
                match it.next().await {
                    Ok(Some(_)) => {}
                    _ => break,
                }
            }
        }
        let key = b"key";
        let _ = r
            .get(key, rdb_engine::sst::bloom::KeyHash::of(key), u64::MAX)
            .await;
    });
    let _ = std::fs::remove_file(&path);
}

/// A manifest file image.
pub fn manifest(data: &[u8]) {
    let _ = rdb_engine::manifest::decode_padded(data);
}

/// A write batch as logged in a WAL record's payload.
pub fn write_batch(data: &[u8]) {
    let _ = rdb_engine::WriteBatch::decode(data);
}
