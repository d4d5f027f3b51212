//! A kv store outage in the middle of a run of the sample pipeline, with the shipped defaults
//! (`max_receive` 5): the store first hangs, then fails every call. Store calls in flight stay
//! within the cache's concurrency bound, the breaker opens, the invocations fail as
//! infrastructure failures: their messages go back without using an attempt and the pools pause
//! until a probe gets through. Once the store is back every message completes and none is
//! dead-lettered or lost.

use std::time::Duration;

use levee::platform::StartOptions;
use levee_tests::pipeline::processed;
use levee_tests::{eventually, pipeline_fns, start_with, write_manifest_with};
use serde_json::json;

const MAX_CONCURRENCY: u64 = 8;

fn customer_message(n: usize) -> Vec<u8> {
    json!({"org": "acme", "conversation": format!("c-{n}"), "channel": "chat",
        "from": "ann@example.com", "text": "my order has not arrived"})
    .to_string()
    .into_bytes()
}

async fn send_range(p: &levee::platform::Platform, range: std::ops::Range<usize>) {
    for n in range {
        p.send("inbound", customer_message(n))
            .await
            .expect("accepted while the store is down");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_outage_delays_messages_but_loses_none() {
    let dir = tempfile::tempdir().unwrap();
    // The shipped defaults: an outage must not use up the messages' attempts.
    let fns = pipeline_fns(4);
    assert!(
        fns.iter().all(|f| !f.extra.contains("max_receive")),
        "the default max_receive applies"
    );
    let cache = format!(
        "\n[cache]\nstore_timeout_ms = 100\nmax_concurrency = {MAX_CONCURRENCY}\n\
         [cache.breaker]\ncool_down_ms = 300"
    );
    let manifest = write_manifest_with(dir.path(), &cache, &fns);
    let p = start_with(
        &manifest,
        StartOptions {
            inject_store_faults: true,
            ..Default::default()
        },
    )
    .await;
    let faults = p.store_faults().expect("fault injector").clone();
    let settle = Duration::from_secs(60);

    send_range(&p, 0..20).await;
    assert!(eventually(settle, || async { processed(&p, "notify").await == 20 }).await);

    // The store hangs: calls time out, the breaker opens, nothing piles up.
    faults.hang();
    send_range(&p, 20..120).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let during = faults.stats();
    assert!(
        during.peak_in_flight <= MAX_CONCURRENCY,
        "store calls held at once stay within max_concurrency: {during:?}"
    );
    assert_eq!(
        processed(&p, "inbound").await,
        20,
        "no new conversation can be stored while the store hangs"
    );
    // Then it fails fast instead of hanging.
    faults.release();
    faults.fail_always();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let status = p.status().await.unwrap();
    let kv = &status.stores[0].cache;
    assert!(kv.timeouts > 0, "hung calls timed out: {kv:?}");
    assert!(kv.breaker_opens > 0, "the breaker opened: {kv:?}");
    let inbound = status
        .functions
        .iter()
        .find(|f| f.name == "inbound")
        .unwrap();
    assert!(
        inbound.infra_failures > 0,
        "invocations failed as infrastructure failures: {inbound:?}"
    );
    assert!(inbound.paused, "the pool paused fetching: {inbound:?}");
    assert_eq!(inbound.retried, 0, "no attempt was used: {inbound:?}");

    faults.heal();
    let done = eventually(settle, || async {
        processed(&p, "notify").await == 120 && processed(&p, "search-index").await == 120
    })
    .await;
    let status = p.status().await.unwrap();
    assert!(
        done,
        "every message completes once the store is back: {status:?}"
    );
    for f in &status.functions {
        assert_eq!(f.dlq, 0, "nothing dead-lettered: {f:?}");
    }
    for n in [20, 77, 119] {
        let conv = p
            .kv_get("inbound", &format!("conv/acme/c-{n}"))
            .await
            .unwrap();
        assert!(conv.is_some(), "conversation c-{n} was stored");
    }
    let after = faults.stats();
    assert!(
        after.peak_in_flight <= MAX_CONCURRENCY,
        "bounded throughout: {after:?}"
    );
    p.shutdown().await;
}
