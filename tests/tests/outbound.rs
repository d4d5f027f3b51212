//! Outbound HTTP from functions (`relay`, on the embedded backend): only granted origins, with
//! idempotency keys; TLS to a server whose CA is in `[platform] ca_file` (and refused without
//! it); a slow destination stopped at the invocation's deadline; 429, 503 and an open breaker
//! holding messages without using their attempts; the rate and concurrency limits per
//! destination; bounded response bodies.

use std::time::Duration;

use levee::platform::Platform;
use levee_tests::http_server::{Canned, TestServer};
use levee_tests::{Fn, eventually, start, write_manifest, write_manifest_with};
use serde_json::{Value, json};

fn relay(extra: &str) -> Vec<Fn> {
    vec![Fn::new(
        "relay",
        "relay",
        &format!("concurrency = 4\nmax_receive = 2\nbackoff_ms = 20\ntimeout_ms = 2000\n{extra}"),
    )]
}

fn grant(origin: &str, extra: &str) -> String {
    format!("[[functions.relay.outbound]]\nurl = \"{origin}\"\n{extra}\n")
}

async fn send(p: &Platform, body: Value) -> String {
    p.send("relay", body.to_string().into_bytes())
        .await
        .unwrap()
}

async fn outcome(p: &Platform, id: &str) -> Option<Value> {
    let v = p.kv_get("relay", &format!("relay/{id}")).await.unwrap()?;
    Some(serde_json::from_slice(&v).unwrap())
}

async fn dlq_reason(p: &Platform, id: &str) -> Option<String> {
    p.dlq_get("relay", id).await.unwrap().map(|d| d.reason)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_granted_origins_are_called_and_posts_carry_idempotency_keys() {
    let server = TestServer::start(|_, _| Canned::status(200).body("thanks")).await;
    let other = TestServer::start(|_, _| Canned::status(200)).await;
    let dir = tempfile::tempdir().unwrap();
    let fns = relay(&grant(&server.origin(), ""));
    let p = start(&write_manifest(dir.path(), &fns)).await;

    let post = send(
        &p,
        json!({"url": format!("{}/hook", server.origin()), "payload": {"n": 1}}),
    )
    .await;
    let get = send(
        &p,
        json!({"url": format!("{}/ping", server.origin()), "method": "GET"}),
    )
    .await;
    let refused = send(
        &p,
        json!({"url": format!("{}/x", other.origin()), "payload": 1}),
    )
    .await;
    assert!(
        eventually(Duration::from_secs(30), || async {
            outcome(&p, &post).await.is_some()
                && outcome(&p, &get).await.is_some()
                && dlq_reason(&p, &refused).await.is_some()
        })
        .await,
        "both relayed and the third dead-lettered: {:?}",
        p.status().await.unwrap()
    );
    assert_eq!(
        outcome(&p, &post).await.unwrap(),
        json!({"status": 200, "bytes": 6})
    );
    let reqs = server.requests();
    let hook = reqs
        .iter()
        .find(|r| r.path == "/hook")
        .expect("the POST arrived");
    assert_eq!(hook.method, "POST");
    assert_eq!(hook.body, br#"{"n":1}"#);
    assert_eq!(
        hook.header("idempotency-key"),
        Some(format!("{post}.0").as_str())
    );
    let ping = reqs
        .iter()
        .find(|r| r.path == "/ping")
        .expect("the GET arrived");
    assert_eq!(ping.header("idempotency-key"), None, "GET needs no key");
    assert!(
        other.requests().is_empty(),
        "nothing reached the ungranted origin"
    );
    let reason = dlq_reason(&p, &refused).await.unwrap();
    assert!(
        reason.contains(&format!(
            "{} is not granted to function `relay`",
            other.origin()
        )) && reason.contains(&server.origin())
            && reason.contains("permanent"),
        "the reason names the grant: {reason}"
    );
    p.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_works_with_the_test_ca_and_is_refused_without_it() {
    let server = TestServer::start_tls(|_, _| Canned::status(200).body("secure")).await;
    let ca = levee_tests::repo_root().join("tests/fixtures/tls/ca.pem");
    let url = format!("{}/hook", server.origin());

    let dir = tempfile::tempdir().unwrap();
    let fns = relay(&grant(&server.origin(), ""));
    let m = write_manifest_with(dir.path(), &format!("ca_file = \"{}\"", ca.display()), &fns);
    let p = start(&m).await;
    let id = send(&p, json!({"url": url, "payload": "hi"})).await;
    assert!(
        eventually(Duration::from_secs(30), || async {
            outcome(&p, &id).await.is_some()
        })
        .await,
        "relayed over TLS: {:?}",
        p.dlq_list("relay", 5).await.unwrap()
    );
    assert_eq!(outcome(&p, &id).await.unwrap()["status"], 200);
    p.shutdown().await;

    // The same call from a platform that does not trust the CA: its attempts count (a
    // certificate is configuration, not an outage) and the reason says why.
    let dir = tempfile::tempdir().unwrap();
    let p = start(&write_manifest(dir.path(), &fns)).await;
    let id = send(&p, json!({"url": url, "payload": "hi"})).await;
    assert!(
        eventually(Duration::from_secs(30), || async {
            dlq_reason(&p, &id).await.is_some()
        })
        .await,
        "dead-lettered after its attempts"
    );
    let reason = dlq_reason(&p, &id).await.unwrap();
    assert!(reason.contains("certificate"), "{reason}");
    assert_eq!(
        server.requests().len(),
        1,
        "the untrusted handshake sent no request"
    );
    p.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_destination_is_stopped_at_the_invocations_deadline() {
    let slow_headers =
        TestServer::start(|_, _| Canned::status(200).delay(Duration::from_secs(30))).await;
    let slow_body = TestServer::start(|_, _| {
        Canned::status(200)
            .body("late")
            .body_delay(Duration::from_secs(30))
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let fns = vec![Fn::new(
        "relay",
        "relay",
        &format!(
            "timeout_ms = 500\n{}{}",
            grant(&slow_headers.origin(), ""),
            grant(&slow_body.origin(), "")
        ),
    )];
    let p = start(&write_manifest(dir.path(), &fns)).await;
    for (server, says) in [(&slow_headers, "no answer within"), (&slow_body, "timeout")] {
        let body = json!({"url": format!("{}/slow", server.origin()), "method": "GET"});
        let started = std::time::Instant::now();
        let r = p
            .invoke("relay", body.to_string().into_bytes())
            .await
            .unwrap();
        let took = started.elapsed();
        assert_eq!(r.outcome, "failed", "{r:?}");
        let reason = r.reason.clone().unwrap_or_default();
        // The request's own deadline and the invocation's epoch deadline are the same instant:
        // on a loaded machine either may be the one that reports it.
        assert!(
            reason.contains(says) || reason.contains("ran past its 500 ms deadline"),
            "{says}: {reason}"
        );
        assert!(
            took < Duration::from_secs(5),
            "stopped near its 500 ms deadline, took {took:?}"
        );
        assert_eq!(server.requests().len(), 1);
    }
    p.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_and_an_open_breaker_hold_messages_without_using_attempts() {
    // 429 with Retry-After for the first second, then 503 without it until 4 s, then 200.
    let t0 = std::time::Instant::now();
    let server = TestServer::start(move |_, _| {
        let t = t0.elapsed();
        if t < Duration::from_millis(1000) {
            Canned::status(429).header("retry-after", "1")
        } else if t < Duration::from_millis(4000) {
            Canned::status(503)
        } else {
            Canned::status(200)
        }
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let breaker = "breaker = { failure_threshold = 1, cool_down_ms = 1000 }";
    let fns = relay(&grant(&server.origin(), breaker));
    let p = start(&write_manifest(dir.path(), &fns)).await;
    let mut ids = Vec::new();
    for i in 0..20 {
        ids.push(
            send(
                &p,
                json!({"url": format!("{}/n", server.origin()), "payload": i}),
            )
            .await,
        );
    }
    let (mut saw_open, mut saw_throttled) = (false, false);
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    let done = loop {
        let st = p.status().await.unwrap();
        let f = &st.functions[0];
        for d in &f.destinations {
            saw_open |= d.breaker != "closed";
            saw_throttled |= d.throttled_ms.is_some();
        }
        if f.processed == 20 {
            break true;
        }
        if std::time::Instant::now() > deadline {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(saw_throttled, "status showed the destination's Retry-After");
    assert!(saw_open, "status showed the breaker open during the 503s");
    let st = p.status().await.unwrap();
    let f = &st.functions[0];
    assert!(done, "all 20 relayed once the destination recovered: {f:?}");
    assert_eq!(
        f.dlq, 0,
        "nothing dead-lettered with max_receive = 2: {f:?}"
    );
    assert_eq!(f.failed, 0, "no attempt was used: {f:?}");
    assert!(
        f.infra_failures > 0,
        "the destination's refusals held messages: {f:?}"
    );
    let reqs = server.requests();
    let throttled: Vec<_> = reqs
        .iter()
        .filter(|r| r.at.duration_since(t0) < Duration::from_millis(1500))
        .collect();
    assert!(
        throttled.len() < 20,
        "the pool paused instead of cycling every message through the 429s and 503s ({} requests)",
        throttled.len()
    );
    for id in &ids {
        assert_eq!(outcome(&p, id).await.unwrap()["status"], 200);
    }
    p.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rate_and_concurrency_limits_hold_per_destination() {
    let paced = TestServer::start(|_, _| Canned::status(200)).await;
    let slow =
        TestServer::start(|_, _| Canned::status(200).delay(Duration::from_millis(150))).await;
    let dir = tempfile::tempdir().unwrap();
    let fns = vec![Fn::new(
        "relay",
        "relay",
        &format!(
            "concurrency = 8\ntimeout_ms = 5000\n{}{}",
            grant(&paced.origin(), "rate = 20.0\nburst = 1"),
            grant(&slow.origin(), "concurrency = 2")
        ),
    )];
    let p = start(&write_manifest(dir.path(), &fns)).await;
    for i in 0..30 {
        send(
            &p,
            json!({"url": format!("{}/p", paced.origin()), "payload": i}),
        )
        .await;
        send(
            &p,
            json!({"url": format!("{}/s", slow.origin()), "payload": i}),
        )
        .await;
    }
    assert!(
        eventually(Duration::from_secs(60), || async {
            p.status().await.unwrap().functions[0].processed == 60
        })
        .await,
        "all relayed: {:?}",
        p.status().await.unwrap()
    );
    let mut at: Vec<_> = paced.requests().iter().map(|r| r.at).collect();
    at.sort();
    assert_eq!(at.len(), 30);
    // 20/s with a burst of 1: any second holds at most 21 starts (both ends of the window), and
    // arrivals carry the scheduler's jitter (a late start lands near the next one): allow two.
    // Unpaced, the 30 requests of 8 workers would all arrive within a few milliseconds.
    for (i, start) in at.iter().enumerate() {
        let in_window = at[i..]
            .iter()
            .take_while(|t| t.duration_since(*start) < Duration::from_secs(1))
            .count();
        assert!(in_window <= 23, "{in_window} requests within one second");
    }
    let span = at.last().unwrap().duration_since(at[0]);
    assert!(
        span >= Duration::from_millis(1300),
        "30 requests at 20/s span 1.45 s, got {span:?}"
    );
    assert!(
        slow.peak_in_flight() <= 2,
        "concurrency 2, saw {}",
        slow.peak_in_flight()
    );
    assert_eq!(slow.requests().len(), 30);
    p.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn response_bodies_are_bounded_by_the_grant() {
    let big = vec![b'x'; 300_000];
    let b2 = big.clone();
    let sized = TestServer::start(move |_, _| Canned::status(200).body(b2.clone())).await;
    let streamed = TestServer::start(move |_, _| {
        Canned::status(200)
            .body(big.clone())
            .body_delay(Duration::from_millis(1))
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let limit = "max_response_bytes = 100000";
    let fns = vec![Fn::new(
        "relay",
        "relay",
        &format!(
            "{}{}",
            grant(&sized.origin(), limit),
            grant(&streamed.origin(), limit)
        ),
    )];
    let p = start(&write_manifest(dir.path(), &fns)).await;
    for server in [&sized, &streamed] {
        let body = json!({"url": format!("{}/big", server.origin()), "method": "GET"});
        let r = p
            .invoke("relay", body.to_string().into_bytes())
            .await
            .unwrap();
        assert_eq!(r.outcome, "failed", "{r:?}");
        let reason = r.reason.unwrap_or_default();
        assert!(reason.contains("100000"), "names the bound: {reason}");
    }
    p.shutdown().await;
}
