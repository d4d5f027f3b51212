//! SIGKILL in the middle of a run of thousands of messages, then a restart: every accepted
//! message is processed and none is lost.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hyper::Method;
use levee::client::call;
use levee_tests::{Fn, LeveeProcess, free_port, write_manifest};

const MESSAGES: u64 = 4000;

async fn status(addr: &str) -> Option<serde_json::Value> {
    let a = call(addr, Method::GET, "/v1/status", vec![]).await.ok()?;
    a.json().ok().map(|v| v["functions"][0].clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_run_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    // A short lease so messages leased at the moment of the kill come back quickly.
    let manifest = write_manifest(
        dir.path(),
        &[Fn::new(
            "sink",
            "noop",
            "concurrency = 2\nvisibility_timeout_ms = 2000",
        )],
    );
    let mut first = LeveeProcess::up(&manifest, free_port());
    let addr = first.addr.clone();

    let accepted = Arc::new(AtomicU64::new(0));
    let attempted = Arc::new(AtomicU64::new(0));
    let mut senders = Vec::new();
    for t in 0..4 {
        let (addr, accepted, attempted) = (addr.clone(), accepted.clone(), attempted.clone());
        senders.push(tokio::spawn(async move {
            for i in 0..MESSAGES / 4 {
                attempted.fetch_add(1, Ordering::SeqCst);
                let body = format!("{{\"n\":{}}}", t * MESSAGES + i).into_bytes();
                match call(&addr, Method::POST, "/v1/functions/sink/messages", body).await {
                    Ok(a) if a.status.as_u16() == 202 => {
                        accepted.fetch_add(1, Ordering::SeqCst);
                    }
                    // The process was killed: stop sending.
                    _ => return,
                }
            }
        }));
    }

    // Kill once a good part has been processed but sending is still under way.
    let start = Instant::now();
    loop {
        let processed = status(&addr)
            .await
            .map(|s| s["processed"].as_u64().unwrap_or(0))
            .unwrap_or(0);
        if processed >= MESSAGES / 5 || start.elapsed() > Duration::from_secs(60) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    first.kill9();
    for s in senders {
        s.await.unwrap();
    }
    let accepted = accepted.load(Ordering::SeqCst);
    let attempted = attempted.load(Ordering::SeqCst);
    assert!(
        accepted > MESSAGES / 5,
        "the kill came mid-run ({accepted} accepted)"
    );

    let second = LeveeProcess::up(&manifest, free_port());
    let start = Instant::now();
    let mut last = serde_json::Value::Null;
    while start.elapsed() < Duration::from_secs(120) {
        if let Some(s) = status(&second.addr).await {
            let n = |k: &str| s[k].as_u64().unwrap_or(u64::MAX);
            if n("visible") == 0
                && n("in_flight") == 0
                && n("delayed") == 0
                && n("processed") >= accepted
            {
                last = s;
                break;
            }
            last = s;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let processed = last["processed"].as_u64().unwrap_or(0);
    // Every accepted message was processed exactly once (processed counts completions, which are
    // atomic with the delete); a send the kill cut off after its commit may add a few.
    assert!(
        processed >= accepted && processed <= attempted,
        "accepted {accepted}, attempted {attempted}, processed {processed}: {last}"
    );
    assert_eq!(last["dlq"], 0, "{last}");
    eprintln!("accepted {accepted} of {attempted} attempted; processed {processed} after restart");
}
