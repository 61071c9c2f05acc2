//! The background budget on a real executor: while foreground work keeps the core busy,
//! background futures get only a small share of it, every one of them still finishes
//! (including when others are cancelled while they wait for their turn), and once the
//! foreground goes quiet they run freely.

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

fn spin(d: Duration) {
    let t = Instant::now();
    while t.elapsed() < d {
        std::hint::spin_loop();
    }
}

#[test]
fn background_work_is_capped_while_foreground_is_busy_and_never_stalls() {
    let cfg = rdb_io::RuntimeConfig {
        cores: 1,
        io_memory_bytes: 256 * 1024,
        pin: false,
    };
    let report = std::sync::Arc::new(std::sync::Mutex::new(None));
    let r2 = report.clone();
    rdb_io::run_per_core(&cfg, move |_| {
        let r2 = r2.clone();
        async move {
            let busy = Duration::from_millis(400);
            let start = Instant::now();
            let background_during_busy = Rc::new(Cell::new(Duration::ZERO));
            let finished = Rc::new(Cell::new(0usize));
            // Foreground: busy for `busy`, in 1 ms steps with short idle gaps between
            // (like a writer waiting for its client), which glommio's shares alone
            // would hand to the background queue whole.
            let fg = async move {
                while start.elapsed() < busy {
                    rdb_io::foreground(async { spin(Duration::from_millis(1)) }).await;
                    rdb_io::sleep(Duration::from_micros(300)).await;
                }
            };
            // Background: 300 jobs of 4 steps of 0.2 ms; every third is cancelled at
            // some point of the busy time, possibly while parked or just handed its turn.
            let mut jobs = Vec::new();
            for i in 0..300u64 {
                let used = background_during_busy.clone();
                let finished = finished.clone();
                let job = rdb_io::in_background(async move {
                    for _ in 0..4 {
                        spin(Duration::from_micros(200));
                        if start.elapsed() < busy {
                            used.set(used.get() + Duration::from_micros(200));
                        }
                        futures_lite::future::yield_now().await;
                    }
                    finished.set(finished.get() + 1);
                });
                jobs.push(async move {
                    if i % 3 == 0 {
                        let at = Duration::from_micros(1000 + i * 1300);
                        rdb_io::race(job, rdb_io::sleep(at)).await;
                    } else {
                        job.await;
                    }
                });
            }
            let all = async move {
                rdb_io::poll_all(jobs).await;
            };
            rdb_io::race(
                async move {
                    rdb_io::poll_all(vec![
                        Box::pin(fg) as std::pin::Pin<Box<dyn std::future::Future<Output = ()>>>,
                        Box::pin(all),
                    ])
                    .await;
                },
                rdb_io::sleep(Duration::from_secs(20)),
            )
            .await;
            *r2.lock().unwrap() = Some((
                finished.get(),
                background_during_busy.get(),
                start.elapsed(),
            ));
        }
    })
    .unwrap();
    let (finished, bg_busy, total) = report.lock().unwrap().take().unwrap();
    // 200 jobs were not cancelled (some cancelled ones may also have finished in time).
    assert!(
        finished >= 200,
        "only {finished} background jobs finished in {total:?}"
    );
    assert!(total < Duration::from_secs(10), "took {total:?}");
    // Uncapped, background work (300 x 0.8 ms = 240 ms) would take about a third of the
    // 400 busy ms; capped at a few percent it gets far less.
    assert!(
        bg_busy < Duration::from_millis(60),
        "background ran {bg_busy:?} of 400 busy ms"
    );
}
