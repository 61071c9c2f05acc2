//! glommio issue #605: if the first DMA file opened on a device is empty, glommio's
//! io-poll probe wrongly enables polled I/O and later reads fail with EOPNOTSUPP.
//! `DmaFs::new` opens a non-empty file first; this test (its own process, so the probe
//! cache starts empty) opens an empty file right after and checks reads still work.

use rdb_io::fs::{DmaFs, File, Fs, ALIGN};

#[test]
fn dma_reads_work_after_opening_an_empty_file_first() {
    let dir = std::env::temp_dir().join(format!("rdb-dma-probe-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let d2 = dir.clone();
    let cfg = rdb_io::RuntimeConfig {
        cores: 1,
        io_memory_bytes: 256 * 1024,
        pin: false,
    };
    let result = std::sync::Arc::new(std::sync::Mutex::new(None));
    let r2 = result.clone();
    rdb_io::run_per_core(&cfg, move |_| {
        let dir = d2.clone();
        let r2 = r2.clone();
        async move {
            let out = async {
                let fs = DmaFs::new(&dir).await?;
                // The trigger: an empty DMA file.
                let empty = fs.create(&dir.join("empty")).await?;
                drop(empty);
                let f = fs.create(&dir.join("data")).await?;
                let data: Vec<u8> = (0..ALIGN as usize * 2 + 100)
                    .map(|i| (i % 251) as u8)
                    .collect();
                f.write_at(0, &data).await?;
                f.sync().await?;
                let back = f.read_at(0, data.len()).await?;
                let tail = f.read_at(ALIGN + 7, 10).await?;
                std::io::Result::Ok((
                    back == data,
                    tail == data[ALIGN as usize + 7..ALIGN as usize + 17],
                ))
            }
            .await;
            *r2.lock().unwrap() = Some(out.map_err(|e| e.to_string()));
        }
    })
    .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let got = result.lock().unwrap().take().unwrap();
    assert_eq!(got, Ok((true, true)));
}
