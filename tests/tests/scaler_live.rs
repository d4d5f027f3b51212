//! The coordinated scaler against real worker pools: a `min_workers = 0` function goes to zero when
//! idle, comes back when a burst arrives (the fetch loop wakes from zero workers), drains it, and goes
//! back to zero.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use levee::OutgoingMessage;
use levee::platform::Platform;
use levee_tests::{eventually, guest, start};

const BURST: u64 = 3000;

async fn noop(p: &Platform) -> levee::platform::FunctionStatus {
    let s = p.status().await.unwrap();
    s.functions.into_iter().find(|f| f.name == "noop").unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scales_from_zero_on_a_burst_and_back_to_zero_when_idle() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("levee.toml");
    std::fs::write(
        &manifest,
        format!(
            "[platform]\ndata_dir = \"data\"\nscaler = \"coordinated\"\n\
             idle_window_ms = 2000\nscale_down_window_ms = 2000\n\n\
             [functions.noop]\nmodule = \"{}\"\nconcurrency = 1\nmin_workers = 0\nmax_workers = 8\n",
            guest("noop").display()
        ),
    )
    .unwrap();
    let p = start(&manifest).await;
    let pool = p.pools()["noop"].clone();
    assert_eq!(pool.workers(), 1, "starts at concurrency");

    // Idle from the start: the scaler takes it to zero.
    assert!(
        eventually(Duration::from_secs(20), || async { pool.workers() == 0 }).await,
        "an idle min_workers = 0 function goes to zero"
    );
    let st = noop(&p).await;
    assert_eq!(st.desired, Some(0), "{st:?}");
    assert!(
        st.reason.as_deref().is_some_and(|r| !r.is_empty()),
        "{st:?}"
    );

    // Watch the pool size while a burst arrives.
    let peak = Arc::new(AtomicU32::new(0));
    let watching = Arc::new(AtomicBool::new(true));
    let watcher = {
        let (pool, peak, watching) = (pool.clone(), peak.clone(), watching.clone());
        tokio::spawn(async move {
            while watching.load(Ordering::Relaxed) {
                peak.fetch_max(pool.workers(), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };
    for chunk in 0..BURST / 10 {
        let msgs = (0..10)
            .map(|i| OutgoingMessage::new(format!("{{\"n\":{}}}", chunk * 10 + i).into_bytes()))
            .collect();
        p.queue().send("noop", msgs).await.unwrap();
    }
    assert!(
        eventually(Duration::from_secs(30), || async {
            noop(&p).await.processed >= BURST
        })
        .await,
        "the burst is processed after scaling up from zero: {:?}",
        noop(&p).await
    );
    let st = noop(&p).await;
    assert_eq!((st.processed, st.dlq), (BURST, 0), "{st:?}");
    let rose_to = peak.load(Ordering::Relaxed);
    assert!(rose_to > 0, "workers rose above the minimum of 0");

    // Idle again: back to zero.
    assert!(
        eventually(Duration::from_secs(25), || async { pool.workers() == 0 }).await,
        "back to zero after idling: {:?}",
        noop(&p).await
    );
    watching.store(false, Ordering::Relaxed);
    watcher.await.unwrap();
    eprintln!("noop rose from 0 to {rose_to} workers for a burst of {BURST}, then back to 0");
    p.shutdown().await;
}
