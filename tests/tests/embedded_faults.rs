//! Fault isolation on the embedded backend: traps are retried then dead-lettered with their reason,
//! infinite loops and handlers blocked in a host call stop at their deadline, memory hogs hit their
//! cap, and other messages keep flowing.

use std::time::{Duration, Instant};

use levee_tests::{Fn, eventually, start, write_manifest};

fn faulty(extra: &str) -> Vec<Fn> {
    vec![Fn::new(
        "faulty",
        "faulty",
        &format!(
            "concurrency = 4\nmax_receive = 3\nbackoff_ms = 20\ntimeout_ms = 300\nmemory_mb = 16\n{extra}"
        ),
    )]
}

async fn send(p: &levee::platform::Platform, body: &str) -> String {
    p.send("faulty", body.as_bytes().to_vec())
        .await
        .expect("send")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_messages_are_dead_lettered_with_reasons_while_others_flow() {
    let dir = tempfile::tempdir().unwrap();
    let p = start(&write_manifest(dir.path(), &faulty(""))).await;

    let trap = send(&p, r#"{"action":"trap"}"#).await;
    let spin = send(&p, r#"{"action":"spin"}"#).await;
    let hog = send(&p, r#"{"action":"hog","mb":64}"#).await;
    let permanent = send(&p, r#"{"action":"permanent"}"#).await;
    for _ in 0..50 {
        send(&p, r#"{"action":"ok"}"#).await;
    }

    let settled = eventually(Duration::from_secs(60), || async {
        let s = p.status().await.unwrap();
        let f = &s.functions[0];
        f.processed == 50 && f.dlq == 4 && f.visible == 0 && f.in_flight == 0 && f.delayed == 0
    })
    .await;
    let status = p.status().await.unwrap();
    assert!(
        settled,
        "50 ok processed and 4 dead-lettered; got {status:?}"
    );
    assert_eq!(status.functions[0].failed, 4);

    let dead = p.dlq_list("faulty", 10).await.unwrap();
    let reason = |id: &str| {
        dead.iter()
            .find(|d| d.id == id)
            .map(|d| d.reason.clone())
            .unwrap_or_default()
    };
    let r = reason(&trap);
    assert!(
        r.contains("trap") && r.contains("3 attempts"),
        "trap retried to max_receive: {r}"
    );
    let r = reason(&spin);
    assert!(
        r.contains("timeout") && r.contains("300 ms"),
        "spin stopped at its deadline: {r}"
    );
    let r = reason(&hog);
    assert!(
        r.contains("memory cap") && r.contains("16 MiB"),
        "hog hit its memory cap: {r}"
    );
    let r = reason(&permanent);
    assert!(
        r.contains("permanent"),
        "permanent error dead-lettered at once: {r}"
    );
    let perm = dead.iter().find(|d| d.id == permanent).unwrap();
    assert_eq!(perm.receive_count, 1, "a permanent error is not retried");

    // Redrive puts them back; they fail again and return to the DLQ.
    assert_eq!(p.dlq_redrive("faulty").await.unwrap(), 4);
    let back = eventually(Duration::from_secs(60), || async {
        p.status().await.unwrap().functions[0].dlq == 4
    })
    .await;
    assert!(back, "redriven poison returns to the DLQ");
    p.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invoke_reports_each_failure_kind() {
    let dir = tempfile::tempdir().unwrap();
    let p = start(&write_manifest(dir.path(), &faulty(""))).await;
    let cases = [
        (r#"{"action":"ok"}"#, "ok", None),
        (r#"{"action":"trap"}"#, "failed", Some("trap")),
        (r#"{"action":"spin"}"#, "failed", Some("timeout")),
        (r#"{"action":"hog","mb":64}"#, "failed", Some("memory-cap")),
        (r#"{"action":"retryable"}"#, "failed", Some("retryable")),
        (r#"{"action":"permanent"}"#, "failed", Some("permanent")),
    ];
    for (body, outcome, kind) in cases {
        let r = p.invoke("faulty", body.as_bytes().to_vec()).await.unwrap();
        assert_eq!(r.outcome, outcome, "{body}: {r:?}");
        assert_eq!(r.kind, kind, "{body}: {r:?}");
    }
    // A hog within its cap succeeds: the cap is per invocation, not a leak across instances.
    let r = p
        .invoke("faulty", br#"{"action":"hog","mb":4}"#.to_vec())
        .await
        .unwrap();
    assert_eq!(r.outcome, "ok", "{r:?}");
    // Every message gets a fresh instance: static memory an earlier one wrote is zero again
    // (the pool reuses the same slot and resets only the pages that were dirtied).
    for i in 0..20 {
        let r = p
            .invoke("faulty", br#"{"action":"fresh"}"#.to_vec())
            .await
            .unwrap();
        assert_eq!(r.outcome, "ok", "invocation {i}: {r:?}");
    }
    p.shutdown().await;
}

/// A handler that runs longer than its lease keeps it: the message is not delivered to a second
/// worker meanwhile, and it fails once, at its own deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_handlers_keep_their_lease() {
    let dir = tempfile::tempdir().unwrap();
    let fns = vec![Fn::new(
        "faulty",
        "faulty",
        "concurrency = 4\nmax_receive = 1\ntimeout_ms = 3500\nvisibility_timeout_ms = 1000",
    )];
    let p = start(&write_manifest(dir.path(), &fns)).await;
    let id = send(&p, r#"{"action":"spin"}"#).await;
    let dead = eventually(Duration::from_secs(30), || async {
        p.status().await.unwrap().functions[0].dlq == 1
    })
    .await;
    assert!(dead, "{:?}", p.status().await.unwrap());
    let letters = p.dlq_list("faulty", 10).await.unwrap();
    assert_eq!(letters[0].id, id);
    assert!(
        letters[0].reason.contains("timeout") && letters[0].reason.contains("3500 ms"),
        "failed at its own deadline, not by losing its 1 s lease: {}",
        letters[0].reason
    );
    assert_eq!(letters[0].receive_count, 1, "never delivered twice");
    assert_eq!(
        p.pools()["faulty"].stats().invocations,
        1,
        "one invocation only"
    );
    p.shutdown().await;
}

/// A handler blocked in a host call (`std::thread::sleep` waits in WASI `poll`, outside Wasm code,
/// where epoch interruption cannot reach it) stops at its deadline like a spinning one: it fails
/// as a timeout long before its sleep would end, its only worker is free again for the messages
/// behind it, and it is retried to `max_receive`, then dead-lettered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sleeping_handlers_stop_at_their_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let fns = vec![Fn::new(
        "faulty",
        "faulty",
        "concurrency = 1\nmax_receive = 2\nbackoff_ms = 20\ntimeout_ms = 300",
    )];
    let p = start(&write_manifest(dir.path(), &fns)).await;

    let started = Instant::now();
    let r = p
        .invoke("faulty", br#"{"action":"sleep","ms":60000}"#.to_vec())
        .await
        .unwrap();
    assert_eq!(r.outcome, "failed", "{r:?}");
    assert_eq!(r.kind, Some("timeout"), "{r:?}");
    assert!(
        r.reason.as_deref().unwrap_or_default().contains("300 ms"),
        "{r:?}"
    );
    // Generous: the point is the 300 ms deadline against the 60 s sleep.
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "stopped at its deadline, not after its sleep: {:?}",
        started.elapsed()
    );
    // A sleep within the deadline completes.
    let r = p
        .invoke("faulty", br#"{"action":"sleep","ms":20}"#.to_vec())
        .await
        .unwrap();
    assert_eq!(r.outcome, "ok", "{r:?}");

    let sleeper = send(&p, r#"{"action":"sleep","ms":60000}"#).await;
    for _ in 0..3 {
        send(&p, r#"{"action":"ok"}"#).await;
    }
    // Two attempts of a 60 s sleep would take two minutes; this waits far less.
    let settled = eventually(Duration::from_secs(30), || async {
        let s = p.status().await.unwrap();
        let f = &s.functions[0];
        f.processed == 3 && f.dlq == 1 && f.visible == 0 && f.in_flight == 0 && f.delayed == 0
    })
    .await;
    let status = p.status().await.unwrap();
    assert!(
        settled,
        "3 ok processed by the one worker and the sleeper dead-lettered; got {status:?}"
    );
    let letters = p.dlq_list("faulty", 10).await.unwrap();
    assert_eq!(letters[0].id, sleeper);
    assert!(
        letters[0].reason.contains("timeout")
            && letters[0].reason.contains("300 ms")
            && letters[0].reason.contains("2 attempts"),
        "retried to max_receive, each attempt stopped at its deadline: {}",
        letters[0].reason
    );
    assert_eq!(letters[0].receive_count, 2);
    p.shutdown().await;
}
