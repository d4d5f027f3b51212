//! SIGKILL in the middle of a run of thousands of messages, then a restart: every accepted
//! message is processed and none is lost.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hyper::Method;
use levee::client::call;
use levee_tests::{Fn, LeveeProcess, free_port, write_manifest};

const MESSAGES: u64 = 4000;

async fn status(addr: &str, key: &str) -> Option<serde_json::Value> {
    let a = call(addr, Some(key), Method::GET, "/v1/status", vec![])
        .await
        .ok()?;
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
    let key = first.key.clone();

    let accepted = Arc::new(AtomicU64::new(0));
    let attempted = Arc::new(AtomicU64::new(0));
    let mut senders = Vec::new();
    for t in 0..4 {
        let (addr, accepted, attempted) = (addr.clone(), accepted.clone(), attempted.clone());
        let key = key.clone();
        senders.push(tokio::spawn(async move {
            for i in 0..MESSAGES / 4 {
                attempted.fetch_add(1, Ordering::SeqCst);
                let body = format!("{{\"n\":{}}}", t * MESSAGES + i).into_bytes();
                match call(
                    &addr,
                    Some(&key),
                    Method::POST,
                    "/v1/functions/sink/messages",
                    body,
                )
                .await
                {
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
        let processed = status(&addr, &key)
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
        if let Some(s) = status(&second.addr, &second.key).await {
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

async fn kv_count(addr: &str, api_key: &str, function: &str, key: &str) -> Option<i64> {
    let path = format!(
        "/v1/functions/{function}/kv/{}",
        levee::client::encode_segment(key)
    );
    let a = call(addr, Some(api_key), Method::GET, &path, vec![])
        .await
        .ok()?;
    match a.status.as_u16() {
        404 => Some(0),
        200 => a.json().ok()?.as_i64(),
        _ => None,
    }
}

async fn functions(addr: &str, key: &str) -> Option<Vec<serde_json::Value>> {
    let a = call(addr, Some(key), Method::GET, "/v1/status", vec![])
        .await
        .ok()?;
    a.json().ok()?["functions"].as_array().cloned()
}

/// 20 SIGKILLs while a fan-out runs (`fan` emits two messages per message to `tally`, both count
/// every message they commit): after the last restart every accepted message's kv effects were
/// applied exactly once, and no emitted message was lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_sigkills_during_a_fan_out_apply_every_effect_once() {
    const KILLS: usize = 20;
    const PER_ROUND: usize = 30;
    let dir = tempfile::tempdir().unwrap();
    let lease = "visibility_timeout_ms = 1000\nbackoff_ms = 50";
    let manifest = write_manifest(
        dir.path(),
        &[
            Fn::new(
                "fan",
                "tally",
                &format!("emits_to = [\"tally\"]\nconcurrency = 2\n{lease}"),
            ),
            Fn::new("tally", "tally", &format!("concurrency = 2\n{lease}")),
        ],
    );
    let mut accepted = Vec::new();
    for round in 0..KILLS {
        let mut p = LeveeProcess::up(&manifest, free_port());
        for i in 0..PER_ROUND {
            let key = format!("r{round}-{i}");
            let body = format!(r#"{{"key": "{key}", "fanout": 2, "to": "tally"}}"#).into_bytes();
            let a = call(
                &p.addr,
                Some(&p.key),
                Method::POST,
                "/v1/functions/fan/messages",
                body,
            )
            .await
            .unwrap();
            assert_eq!(a.status.as_u16(), 202);
            accepted.push(key);
        }
        // Kill at a different point of the work each round.
        tokio::time::sleep(Duration::from_millis(20 + (round as u64 * 37) % 300)).await;
        p.kill9();
    }

    let last = LeveeProcess::up(&manifest, free_port());
    let start = Instant::now();
    let drained = loop {
        if let Some(fs) = functions(&last.addr, &last.key).await {
            let idle = fs
                .iter()
                .all(|f| f["visible"] == 0 && f["in_flight"] == 0 && f["delayed"] == 0);
            if idle {
                break true;
            }
        }
        if start.elapsed() > Duration::from_secs(120) {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let status = functions(&last.addr, &last.key).await;
    assert!(drained, "the backlog drained: {status:?}");
    let n = accepted.len() as i64;
    assert_eq!(
        kv_count(&last.addr, &last.key, "fan", "count/_total").await,
        Some(n)
    );
    assert_eq!(
        kv_count(&last.addr, &last.key, "tally", "count/_total").await,
        Some(2 * n),
        "every emitted message counted once: {status:?}"
    );
    for key in &accepted {
        assert_eq!(
            kv_count(&last.addr, &last.key, "fan", &format!("count/{key}")).await,
            Some(1),
            "{key}"
        );
        for i in 0..2 {
            let emitted = format!("count/{key}.{i}");
            assert_eq!(
                kv_count(&last.addr, &last.key, "tally", &emitted).await,
                Some(1),
                "{emitted}"
            );
        }
    }
    for f in status.unwrap_or_default() {
        assert_eq!(f["dlq"], 0, "{f}");
    }
    eprintln!(
        "{KILLS} SIGKILLs, {n} messages fanned out to {}: every effect applied once",
        2 * n
    );
}
