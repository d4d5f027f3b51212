//! Alerts end to end: a real `levee up` with an `oldest_age` rule on a function whose message
//! always fails with a retryable error (so it waits in the queue, then is dead-lettered), a
//! primary webhook answering 500 and a secondary answering 200, both on loopback.

use std::time::{Duration, Instant};

use levee::drill::blind::Hook;
use levee_tests::{Fn, LeveeProcess, free_port, levee, write_manifest_with};
use serde_json::Value;

fn wait_for(timeout: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if cond() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("{what} within {timeout:?}");
}

fn alerts_json(p: &LeveeProcess) -> Value {
    let (code, out, err) = p.cli(&["alerts", "--json"]);
    assert_eq!(code, 0, "levee alerts --json: {err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

#[test]
fn an_alert_fires_and_resolves_through_the_secondary_when_the_primary_fails() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let primary = rt.block_on(Hook::start(500)).unwrap();
    let secondary = rt.block_on(Hook::start(200)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let extra = format!(
        r#"
[alerting]
primary = {{ url = "{}", format = "json" }}
secondary = {{ url = "{}", format = "json" }}
retries = 2
backoff_ms = 100
timeout_ms = 1000

[[alerts]]
name = "stuck"
kind = "oldest_age"
function = "faulty"
threshold_s = 1
for_s = 1
"#,
        primary.url, secondary.url
    );
    // Receives at 0, 3 and 9 s, then the dead-letter queue: the message is at least 9 s old
    // before its queue empties.
    let manifest = write_manifest_with(
        dir.path(),
        &extra,
        &[Fn::new(
            "faulty",
            "faulty",
            "concurrency = 1\nmax_receive = 3\nbackoff_ms = 3000",
        )],
    );
    let p = LeveeProcess::up(&manifest, free_port());
    let v = alerts_json(&p);
    assert_eq!(v["rules"], 1, "{v}");
    assert_eq!(
        v["channels"],
        serde_json::json!(["primary", "secondary"]),
        "{v}"
    );
    assert_eq!(
        v["alerts"],
        serde_json::json!([]),
        "nothing fires on an idle platform: {v}"
    );

    let (code, _, err) = p.cli(&["send", "faulty", r#"{"action": "retryable"}"#]);
    assert_eq!(code, 0, "{err}");
    let states = |h: &Hook| -> Vec<String> {
        h.received()
            .iter()
            .map(|(_, v)| v["state"].as_str().unwrap_or("?").to_string())
            .collect()
    };
    wait_for(
        Duration::from_secs(20),
        "the secondary gets the firing alert",
        || states(&secondary).contains(&"firing".to_string()),
    );
    let v = alerts_json(&p);
    let a = &v["alerts"][0];
    assert_eq!(a["state"], "firing", "{v}");
    assert_eq!(a["rule"], "stuck");
    assert_eq!(a["kind"], "oldest_age");
    assert_eq!(a["function"], "faulty");
    assert_eq!(a["threshold"], 1.0);
    assert!(a["value"].as_f64().unwrap() > 1.0, "{v}");
    assert!(a["since_ms"].as_u64().unwrap() > 0, "{v}");
    assert!(a["message"].as_str().unwrap().contains("faulty"), "{v}");
    let (code, table, _) = p.cli(&["alerts"]);
    assert_eq!(code, 0);
    assert!(
        table.contains("firing") && table.contains("stuck") && table.contains("oldest_age"),
        "{table}"
    );

    wait_for(
        Duration::from_secs(40),
        "the secondary gets the resolution",
        || states(&secondary).contains(&"resolved".to_string()),
    );
    wait_for(Duration::from_secs(10), "every delivery settled", || {
        alerts_json(&p)["pending_deliveries"] == 0
    });

    // The primary: 1 + 2 retries for each notice, no more.
    assert_eq!(primary.requests(), 6, "{:?}", states(&primary));
    assert_eq!(
        states(&primary),
        [
            "firing", "firing", "firing", "resolved", "resolved", "resolved"
        ]
    );
    // The secondary: each notice once, told the primary failed.
    let got: Vec<Value> = secondary.received().into_iter().map(|(_, v)| v).collect();
    assert_eq!(states(&secondary), ["firing", "resolved"], "{got:?}");
    for n in &got {
        assert_eq!(n["rule"], "stuck", "{n}");
        assert_eq!(n["function"], "faulty", "{n}");
        assert_eq!(n["channel"], "secondary", "{n}");
        assert_eq!(n["primary_failed"], true, "{n}");
        let e = n["primary_error"].as_str().unwrap_or("");
        assert!(e.contains("HTTP 500") && e.contains("3 attempt"), "{n}");
    }
    for n in primary.received() {
        assert_eq!(n.1["primary_failed"], false, "{}", n.1);
    }

    let v = alerts_json(&p);
    let a = &v["alerts"][0];
    assert_eq!(a["state"], "resolved", "{v}");
    assert!(a["message"].as_str().unwrap().contains("empty"), "{v}");
    let d: Vec<(String, String, String, u64)> = a["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["event"].as_str().unwrap().to_string(),
                d["channel"].as_str().unwrap().to_string(),
                d["state"].as_str().unwrap().to_string(),
                d["attempts"].as_u64().unwrap(),
            )
        })
        .collect();
    let want = [
        ("firing", "primary", "failed", 3),
        ("firing", "secondary", "delivered", 1),
        ("resolved", "primary", "failed", 3),
        ("resolved", "secondary", "delivered", 1),
    ];
    let want: Vec<(String, String, String, u64)> = want
        .iter()
        .map(|(e, c, s, n)| (e.to_string(), c.to_string(), s.to_string(), *n))
        .collect();
    assert_eq!(d, want, "{v}");
    assert!(
        a["deliveries"][0]["last_error"]
            .as_str()
            .unwrap()
            .contains("HTTP 500"),
        "{v}"
    );
    assert!(a["deliveries"][1]["last_error"].is_null(), "{v}");
    let (_, table, _) = p.cli(&["alerts"]);
    assert!(
        table.contains("resolved")
            && table.contains("firing primary failed (3 attempt(s)): HTTP 500"),
        "{table}"
    );

    // Route class `status`: any valid key reads it; no key, no alerts.
    let (code, key, err) = p.cli(&["keys", "create", "--group", "default"]);
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = p.cli(&["alerts", "--json", "--key", key.trim()]);
    assert_eq!(code, 0, "a non-admin key reads alerts: {err}");
    assert!(out.contains("\"stuck\""), "{out}");
    let (code, _, err) = levee(&["alerts", "--addr", &p.addr, "--key-file", "/nonexistent"]);
    assert_ne!(code, 0);
    assert!(err.contains("401") || err.contains("API key"), "{err}");
}

#[test]
fn levee_up_refuses_a_bad_rule_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = write_manifest_with(
        dir.path(),
        "\n[[alerts]]\nname = \"ok\"\nkind = \"breaker_open\"\n\n[[alerts]]\nname = \"stuck\"\nkind = \"oldest_age\"\n",
        &[Fn::new("noop", "noop", "")],
    );
    let (code, _, err) = levee(&[
        "up",
        "--manifest",
        manifest.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
    ]);
    assert_ne!(code, 0);
    assert!(
        err.contains("alerts[1].threshold_s") && err.contains("needs it"),
        "{err}"
    );
}
