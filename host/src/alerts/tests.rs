use std::path::Path;

use super::rules::*;
use super::*;
use crate::store::BreakerState;

const FNS: &str =
    "[functions.inbound]\nmodule = \"a.wasm\"\n[functions.notify]\nmodule = \"n.wasm\"\n";

fn manifest(extra: &str) -> crate::Result<Manifest> {
    Manifest::parse(&format!("{FNS}{extra}"), Path::new("."))
}

fn err(extra: &str) -> String {
    manifest(extra).unwrap_err().to_string()
}

#[test]
fn a_full_schema_parses_with_defaults() {
    let m = manifest(
        r#"
[alerting]
primary = { url = "http://127.0.0.1:9000/hook" }
secondary = { url = "https://hooks.example.com/services/T0/B0/x", format = "slack" }

[[alerts]]
name = "backlog"
kind = "oldest_age"
function = "inbound"
threshold_s = 30
for_s = 10

[[alerts]]
name = "dead-letters"
kind = "dlq_growth"
threshold = 5
window_s = 300

[[alerts]]
name = "failures"
kind = "failure_rate"
function = "notify"
threshold = 0.05
window_s = 60

[[alerts]]
name = "breaker"
kind = "breaker_open"

[[alerts]]
name = "blocked"
kind = "source_blocked"

[[alerts]]
name = "canary"
kind = "canary_rolled_back"

[[alerts]]
name = "store"
kind = "store_unreachable"
for_s = 5
"#,
    )
    .unwrap();
    assert_eq!(m.alerts.len(), 7);
    assert_eq!(m.alerts[0].kind, AlertKind::OldestAge);
    assert_eq!(m.alerts[0].threshold_s, Some(30.0));
    assert_eq!(m.alerts[1].function, None, "every function");
    assert_eq!(m.alerts[3].for_s, 0.0, "for_s defaults to 0");
    let a = &m.alerting;
    assert_eq!((a.retries, a.backoff_ms, a.timeout_ms), (3, 500, 5000));
    assert_eq!(a.primary.as_ref().unwrap().format, Format::Json);
    assert_eq!(a.secondary.as_ref().unwrap().format, Format::Slack);
    // No alerting at all is fine too.
    let m = manifest("").unwrap();
    assert!(m.alerts.is_empty() && m.alerting.primary.is_none());
}

#[test]
fn errors_name_the_field() {
    let rule = |body: &str| {
        format!("[[alerts]]\nname = \"ok\"\nkind = \"breaker_open\"\n\n[[alerts]]\n{body}\n")
    };
    let cases: &[(String, &[&str])] = &[
        (
            rule("name = \"b\"\nkind = \"oldest_age\"\nfunction = \"inbound\""),
            &["`alerts[1].threshold_s`", "needs it"],
        ),
        (
            rule("name = \"b\"\nkind = \"breaker_open\"\nthreshold_s = 3"),
            &["`alerts[1].threshold_s`", "does not take it"],
        ),
        (
            rule("name = \"b\"\nkind = \"oldest_age\"\nfunction = \"nope\"\nthreshold_s = 3"),
            &["`alerts[1].function`", "nope", "inbound, notify"],
        ),
        (
            rule("name = \"b\"\nkind = \"breaker_open\"\nfunction = \"inbound\""),
            &["`alerts[1].function`", "whole platform"],
        ),
        (
            rule("name = \"b\"\nkind = \"oldest_age\"\nthreshold_s = -1"),
            &["`alerts[1].threshold_s`", "above 0"],
        ),
        (
            rule("name = \"b\"\nkind = \"failure_rate\"\nthreshold = 1.5\nwindow_s = 60"),
            &["`alerts[1].threshold`", "fraction"],
        ),
        (
            rule("name = \"b\"\nkind = \"dlq_growth\"\nthreshold = 2.5\nwindow_s = 60"),
            &["`alerts[1].threshold`", "dead letters"],
        ),
        (
            rule("name = \"b\"\nkind = \"dlq_growth\"\nthreshold = 2"),
            &["`alerts[1].window_s`", "needs it"],
        ),
        (
            rule("name = \"b\"\nkind = \"dlq_growth\"\nthreshold = 2\nwindow_s = 7200"),
            &["`alerts[1].window_s`", "1 to 3600"],
        ),
        (
            rule("name = \"b\"\nkind = \"breaker_open\"\nfor_s = -2"),
            &["`alerts[1].for_s`"],
        ),
        (
            rule("name = \"ok\"\nkind = \"breaker_open\""),
            &["`alerts[1].name`", "another rule"],
        ),
        (
            rule("name = \"has space\"\nkind = \"breaker_open\""),
            &["`alerts[1].name`"],
        ),
        // Parse errors of the TOML itself name the field the same way.
        (
            rule("name = \"b\"\nkind = \"queue_on_fire\""),
            &["alerts[1].kind", "unknown variant", "oldest_age"],
        ),
        (
            rule("name = \"b\"\nkind = \"breaker_open\"\ntreshold = 1"),
            &["alerts[1]", "treshold"],
        ),
        (rule("name = \"b\""), &["alerts[1]", "missing field `kind`"]),
        (
            "[[alerts]]\nkind = \"breaker_open\"\n".to_string(),
            &["alerts[0]", "missing field `name`"],
        ),
        (
            "[alerting]\nprimary = { url = \"ftp://x/y\" }\n".to_string(),
            &["`alerting.primary.url`", "http or https"],
        ),
        (
            "[alerting]\nprimary = { url = \"127.0.0.1:9000/hook\" }\n".to_string(),
            &["`alerting.primary.url`"],
        ),
        (
            "[alerting]\nprimary = { url = \"http://user:pw@host/x\" }\n".to_string(),
            &["`alerting.primary.url`", "credentials"],
        ),
        (
            "[alerting]\nsecondary = { url = \"http://127.0.0.1:1/x\" }\n".to_string(),
            &["`alerting.secondary`", "primary"],
        ),
        (
            "[alerting]\nprimary = { url = \"http://h/x\" }\nretries = 11\n".to_string(),
            &["`alerting.retries`", "0 to 10"],
        ),
        (
            "[alerting]\nprimary = { url = \"http://h/x\" }\ntimeout_ms = 10\n".to_string(),
            &["`alerting.timeout_ms`", "100 to"],
        ),
        (
            "[alerting]\nprimary = { url = \"http://h/x\", format = \"teams\" }\n".to_string(),
            &["alerting.primary", "teams", "slack"],
        ),
    ];
    for (text, wants) in cases {
        let e = err(text);
        for w in *wants {
            assert!(e.contains(w), "`{w}` in: {e}\n--- manifest:\n{text}");
        }
    }
}

fn rule(name: &str, kind: AlertKind) -> AlertRule {
    AlertRule {
        name: name.into(),
        kind,
        function: None,
        threshold_s: None,
        threshold: None,
        window_s: None,
        for_s: 0.0,
    }
}

fn fns(list: &[(&str, FunctionInputs)]) -> Option<BTreeMap<String, FunctionInputs>> {
    Some(list.iter().map(|(n, f)| (n.to_string(), *f)).collect())
}

fn aged(ms: Option<u64>) -> FunctionInputs {
    FunctionInputs {
        oldest_age_ms: ms,
        ..Default::default()
    }
}

fn changes(events: &[Event]) -> Vec<(Option<&str>, Change)> {
    events
        .iter()
        .map(|e| (e.function.as_deref(), e.change))
        .collect()
}

#[test]
fn oldest_age_fires_after_for_s_and_resolves() {
    let mut r = rule("backlog", AlertKind::OldestAge);
    r.function = Some("a".into());
    r.threshold_s = Some(5.0);
    r.for_s = 3.0;
    let mut e = Engine::new(vec![r], vec!["a".into(), "b".into()]);
    let at = |t: u64, age: Option<u64>| Inputs {
        now_ms: t,
        functions: fns(&[("a", aged(age)), ("b", aged(Some(99_000)))]),
        ..Default::default()
    };
    assert!(e.evaluate(&at(0, Some(1000))).is_empty());
    assert!(
        e.evaluate(&at(1000, Some(6000))).is_empty(),
        "holds, not for 3 s yet"
    );
    assert!(e.evaluate(&at(3000, Some(8000))).is_empty());
    let ev = e.evaluate(&at(4000, Some(9000)));
    assert_eq!(changes(&ev), vec![(Some("a"), Change::Fired)]);
    assert_eq!(ev[0].reading.value, 9.0);
    assert_eq!(ev[0].reading.threshold, Some(5.0));
    assert_eq!(ev[0].holding_since_ms, 1000);
    assert!(ev[0].reading.message.contains("9.0 s old"), "{:?}", ev[0]);
    let ev = e.evaluate(&at(5000, Some(10_000)));
    assert_eq!(changes(&ev), vec![(Some("a"), Change::Firing)]);
    // Figures unavailable: no change either way.
    assert!(
        e.evaluate(&Inputs {
            now_ms: 6000,
            ..Default::default()
        })
        .is_empty()
    );
    let ev = e.evaluate(&at(7000, None));
    assert_eq!(changes(&ev), vec![(Some("a"), Change::Resolved)]);
    assert!(ev[0].reading.message.contains("empty"));
    assert!(e.evaluate(&at(8000, None)).is_empty());
}

#[test]
fn a_condition_that_stops_holding_before_for_s_never_fires() {
    let mut r = rule("backlog", AlertKind::OldestAge);
    r.threshold_s = Some(1.0);
    r.for_s = 2.0;
    let mut e = Engine::new(vec![r], vec!["a".into()]);
    let at = |t: u64, age: u64| Inputs {
        now_ms: t,
        functions: fns(&[("a", aged(Some(age)))]),
        ..Default::default()
    };
    for (t, age) in [
        (0, 5000),
        (1000, 5000),
        (1500, 0),
        (2500, 5000),
        (4000, 5000),
    ] {
        assert!(e.evaluate(&at(t, age)).is_empty(), "t={t}");
    }
    assert_eq!(
        changes(&e.evaluate(&at(4500, 5000))),
        vec![(Some("a"), Change::Fired)]
    );
}

#[test]
fn rules_without_a_function_watch_each_function() {
    let mut r = rule("backlog", AlertKind::OldestAge);
    r.threshold_s = Some(1.0);
    let mut e = Engine::new(vec![r], vec!["a".into(), "b".into(), "c".into()]);
    let ev = e.evaluate(&Inputs {
        now_ms: 0,
        functions: fns(&[
            ("a", aged(Some(2000))),
            ("b", aged(None)),
            ("c", aged(Some(5000))),
        ]),
        ..Default::default()
    });
    assert_eq!(
        changes(&ev),
        vec![(Some("a"), Change::Fired), (Some("c"), Change::Fired)]
    );
}

#[test]
fn dlq_growth_counts_within_the_window() {
    let mut r = rule("dead", AlertKind::DlqGrowth);
    r.function = Some("a".into());
    r.threshold = Some(2.0);
    r.window_s = Some(10.0);
    let mut e = Engine::new(vec![r], vec!["a".into()]);
    let at = |t: u64, dlq: u64| Inputs {
        now_ms: t,
        functions: fns(&[(
            "a",
            FunctionInputs {
                dlq,
                ..Default::default()
            },
        )]),
        ..Default::default()
    };
    // 100 dead letters already there at start: not growth.
    assert!(e.evaluate(&at(0, 100)).is_empty());
    assert!(e.evaluate(&at(1000, 102)).is_empty(), "2 is not above 2");
    let ev = e.evaluate(&at(2000, 103));
    assert_eq!(changes(&ev), vec![(Some("a"), Change::Fired)]);
    assert_eq!(ev[0].reading.value, 3.0);
    // A redrive empties the DLQ: the dead letters added still count, so it goes on firing.
    assert_eq!(
        changes(&e.evaluate(&at(3000, 0))),
        vec![(Some("a"), Change::Firing)]
    );
    // With nothing new, it resolves once fewer than 3 were added within the last 10 s: at 11 s
    // the window starts at 1 s and holds only the 1 added at 2 s.
    let mut resolved_at = None;
    for s in 4..=20u64 {
        let ev = e.evaluate(&at(s * 1000, 0));
        if ev.iter().any(|e| e.change == Change::Resolved) {
            assert_eq!(ev[0].reading.value, 1.0);
            resolved_at = Some(s);
            break;
        }
    }
    assert_eq!(resolved_at, Some(11));
    // Redriven letters dying again are new dead letters.
    assert!(e.evaluate(&at(12_000, 2)).is_empty());
    assert_eq!(
        changes(&e.evaluate(&at(13_000, 3))),
        vec![(Some("a"), Change::Fired)]
    );
}

#[test]
fn failure_rate_over_the_window() {
    let mut r = rule("fails", AlertKind::FailureRate);
    r.function = Some("a".into());
    r.threshold = Some(0.1);
    r.window_s = Some(5.0);
    let mut e = Engine::new(vec![r], vec!["a".into()]);
    let at = |t: u64, processed: u64, failed: u64| Inputs {
        now_ms: t,
        functions: fns(&[(
            "a",
            FunctionInputs {
                processed,
                failed,
                ..Default::default()
            },
        )]),
        ..Default::default()
    };
    assert!(
        e.evaluate(&at(0, 1000, 500)).is_empty(),
        "totals before start do not count"
    );
    assert!(
        e.evaluate(&at(1000, 1000, 500)).is_empty(),
        "no traffic: rate 0"
    );
    assert!(
        e.evaluate(&at(2000, 1090, 510)).is_empty(),
        "10 of 100 is not above 10 %"
    );
    let ev = e.evaluate(&at(3000, 1100, 530));
    assert_eq!(changes(&ev), vec![(Some("a"), Change::Fired)]);
    assert_eq!(ev[0].reading.value, 0.231);
    assert!(
        ev[0].reading.message.contains("30 of 130"),
        "{}",
        ev[0].reading.message
    );
    // The failures leave the 5 s window while successes go on.
    let mut resolved_at = None;
    for s in 4..=12u64 {
        let ev = e.evaluate(&at(s * 1000, 1100 + (s - 3) * 50, 530));
        if ev.iter().any(|e| e.change == Change::Resolved) {
            resolved_at = Some(s);
            break;
        }
    }
    // At 7 s the window starts at 2 s: 20 failures of 230.
    assert_eq!(
        resolved_at,
        Some(7),
        "once the failures are under 10 % of the window"
    );
}

#[test]
fn platform_rules_read_the_breaker_the_blocks_and_the_store() {
    let mut store = rule("store", AlertKind::StoreUnreachable);
    store.for_s = 2.0;
    let rules = vec![
        rule("breaker", AlertKind::BreakerOpen),
        rule("blocked", AlertKind::SourceBlocked),
        rule("canary", AlertKind::CanaryRolledBack),
        store,
    ];
    let mut e = Engine::new(rules, vec!["a".into()]);
    assert!(!e.needs_functions() && e.needs_store());
    let at = |t: u64, b: BreakerState, blocked: &[&str], answers: bool| Inputs {
        now_ms: t,
        functions: None,
        breaker: Some(b),
        blocked_sources: Some(blocked.iter().map(|s| s.to_string()).collect()),
        store_answers: Some(answers),
    };
    assert!(
        e.evaluate(&at(0, BreakerState::Closed, &[], true))
            .is_empty()
    );
    let ev = e.evaluate(&at(
        1000,
        BreakerState::Closed,
        &["k|sdk|1.2.3.4", "x", "y", "z"],
        false,
    ));
    let names: Vec<usize> = ev.iter().map(|e| e.rule).collect();
    assert_eq!(names, vec![1], "blocked fires; the store not for 2 s yet");
    assert_eq!(ev[0].reading.value, 4.0);
    assert!(
        ev[0].reading.message.contains("4 source(s)") && ev[0].reading.message.contains("1 more")
    );
    let ev = e.evaluate(&at(2000, BreakerState::Open, &[], false));
    let got: Vec<(usize, Change)> = ev.iter().map(|e| (e.rule, e.change)).collect();
    assert_eq!(got, vec![(0, Change::Fired), (1, Change::Resolved)]);
    let ev = e.evaluate(&at(3000, BreakerState::HalfOpen, &[], false));
    let got: Vec<(usize, Change)> = ev.iter().map(|e| (e.rule, e.change)).collect();
    assert_eq!(
        got,
        vec![(0, Change::Firing), (3, Change::Fired)],
        "half-open is not closed; the store failed for 2 s"
    );
    assert!(ev[1].reading.message.contains("half-open"));
    let ev = e.evaluate(&at(4000, BreakerState::Closed, &[], true));
    let got: Vec<(usize, Change)> = ev.iter().map(|e| (e.rule, e.change)).collect();
    assert_eq!(got, vec![(0, Change::Resolved), (3, Change::Resolved)]);
    // canary_rolled_back never fires: there are no releases to roll back.
    assert!(ev.iter().all(|e| e.rule != 2));
}

#[test]
fn the_board_lists_firing_then_resolved_and_keeps_a_bounded_history() {
    let m = manifest("[[alerts]]\nname = \"backlog\"\nkind = \"oldest_age\"\nthreshold_s = 1\n")
        .unwrap();
    let alerts = Alerts::new(&m);
    let reading = |v: f64| Reading {
        holds: true,
        value: v,
        threshold: Some(1.0),
        message: format!("value {v}"),
    };
    let ev = |f: &str, change| Event {
        rule: 0,
        function: Some(f.to_string()),
        change,
        reading: reading(2.0),
        holding_since_ms: 10,
    };
    alerts.apply(
        vec![ev("inbound", Change::Fired), ev("notify", Change::Fired)],
        100,
    );
    alerts.apply(vec![ev("inbound", Change::Resolved)], 200);
    let v = alerts.view();
    let got: Vec<(&str, AlertState, u64)> = v
        .alerts
        .iter()
        .map(|a| (a.function.as_deref().unwrap(), a.state, a.since_ms))
        .collect();
    assert_eq!(
        got,
        vec![
            ("notify", AlertState::Firing, 100),
            ("inbound", AlertState::Resolved, 200)
        ]
    );
    assert!(
        v.alerts.iter().all(|a| a.deliveries.is_empty()),
        "no channel, no delivery"
    );
    let j = serde_json::to_value(&v).unwrap();
    for key in [
        "rule",
        "kind",
        "function",
        "state",
        "since_ms",
        "value",
        "threshold",
        "message",
        "deliveries",
    ] {
        assert!(j["alerts"][0].get(key).is_some(), "{key} in {j}");
    }
    assert_eq!(j["alerts"][1]["state"], "resolved");
    for i in 0..(MAX_RESOLVED as u64 + 10) {
        alerts.apply(vec![ev("inbound", Change::Fired)], 300 + i * 2);
        alerts.apply(vec![ev("inbound", Change::Resolved)], 301 + i * 2);
    }
    let v = alerts.view();
    let resolved = v
        .alerts
        .iter()
        .filter(|a| a.state == AlertState::Resolved)
        .count();
    assert_eq!(resolved, MAX_RESOLVED);
    assert_eq!(v.alerts[0].state, AlertState::Firing);
    assert_eq!(
        v.alerts[1].since_ms,
        301 + (MAX_RESOLVED as u64 + 9) * 2,
        "newest first"
    );
}

#[tokio::test]
async fn a_failing_primary_is_retried_then_the_secondary_is_told() {
    let bad_hook = crate::drill::blind::Hook::start(500).await.unwrap();
    let good_hook = crate::drill::blind::Hook::start(200).await.unwrap();
    let (bad, good) = (&bad_hook.url, &good_hook.url);
    let m = manifest(&format!(
        "[alerting]\nprimary = {{ url = \"{bad}\" }}\nsecondary = {{ url = \"{good}\", format = \"slack\" }}\n\
         retries = 2\nbackoff_ms = 10\ntimeout_ms = 2000\n\
         [[alerts]]\nname = \"breaker\"\nkind = \"breaker_open\"\n"
    ))
    .unwrap();
    let alerts = Alerts::new(&m);
    let ev = |change| Event {
        rule: 0,
        function: None,
        change,
        reading: Reading {
            holds: true,
            value: 1.0,
            threshold: None,
            message: "the kv store's circuit breaker is open".into(),
        },
        holding_since_ms: 1,
    };
    alerts.apply(vec![ev(Change::Fired)], 1);
    alerts.apply(vec![ev(Change::Resolved)], 2);
    let done = async {
        while alerts.view().pending_deliveries > 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(20), done)
        .await
        .unwrap();
    assert_eq!(bad_hook.requests(), 6, "1 + 2 retries, for each notice");
    let texts: Vec<String> = good_hook
        .received()
        .iter()
        .map(|(_, v)| v["text"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(texts.len(), 2, "{texts:?}");
    assert!(
        texts[0].starts_with("[FIRING]") && texts[1].starts_with("[RESOLVED]"),
        "{texts:?}"
    );
    assert!(
        texts
            .iter()
            .all(|t| t.contains("primary channel failed: HTTP 500")),
        "{texts:?}"
    );
    let a = &alerts.view().alerts[0];
    let d: Vec<(ChannelName, AlertState, DeliveryState, u32)> = a
        .deliveries
        .iter()
        .map(|d| (d.channel, d.event, d.state, d.attempts))
        .collect();
    use AlertState::*;
    use ChannelName::*;
    use DeliveryState::*;
    assert_eq!(
        d,
        vec![
            (Primary, Firing, Failed, 3),
            (Secondary, Firing, Delivered, 1),
            (Primary, Resolved, Failed, 3),
            (Secondary, Resolved, Delivered, 1),
        ]
    );
    assert!(
        a.deliveries[0]
            .last_error
            .as_deref()
            .unwrap()
            .contains("HTTP 500")
    );
}

#[tokio::test]
async fn notices_past_the_pending_bound_are_dropped_and_shown_failed() {
    // A listener that never accepts: connections open, no answer ever comes.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", silent.local_addr().unwrap());
    let m = manifest(&format!(
        "[alerting]\nprimary = {{ url = \"{url}\" }}\ntimeout_ms = 60000\n\
         [[alerts]]\nname = \"backlog\"\nkind = \"oldest_age\"\nthreshold_s = 1\n"
    ))
    .unwrap();
    let alerts = Alerts::new(&m);
    let events: Vec<Event> = (0..=MAX_PENDING)
        .map(|i| Event {
            rule: 0,
            function: Some(format!("f{i}")),
            change: Change::Fired,
            reading: Reading {
                holds: true,
                value: 2.0,
                threshold: Some(1.0),
                message: "old".into(),
            },
            holding_since_ms: 1,
        })
        .collect();
    alerts.apply(events, 5);
    let v = alerts.view();
    assert_eq!(v.pending_deliveries, MAX_PENDING);
    assert_eq!(v.dropped_deliveries, 1);
    let dropped: Vec<&AlertView> = v
        .alerts
        .iter()
        .filter(|a| a.deliveries[0].state == DeliveryState::Failed)
        .collect();
    assert_eq!(dropped.len(), 1);
    assert_eq!(
        dropped[0].function.as_deref(),
        Some(&*format!("f{MAX_PENDING}"))
    );
    assert!(
        dropped[0].deliveries[0]
            .last_error
            .as_deref()
            .unwrap()
            .contains("dropped")
    );
    drop(silent);
}

#[test]
fn the_table_shows_deliveries() {
    let v = serde_json::json!({
        "now_ms": 10_000,
        "rules": 1,
        "channels": ["primary", "secondary"],
        "alerts": [{
            "rule": "backlog", "kind": "oldest_age", "function": "inbound", "state": "firing",
            "since_ms": 4_000, "value": 7.5, "threshold": 5.0, "message": "inbound: old",
            "deliveries": [
                {"channel": "primary", "event": "firing", "state": "failed", "attempts": 4, "last_error": "HTTP 500"},
                {"channel": "secondary", "event": "firing", "state": "delivered", "attempts": 1, "last_error": null}
            ]
        }]
    });
    let t = render_table(&v);
    assert!(
        t.contains("firing") && t.contains("backlog") && t.contains("6s ago"),
        "{t}"
    );
    assert!(
        t.contains("firing primary failed (4 attempt(s)): HTTP 500"),
        "{t}"
    );
    assert!(
        t.contains("firing secondary delivered (1 attempt(s))"),
        "{t}"
    );
    assert!(t.contains("inbound: old"), "{t}");
    let empty = render_table(&serde_json::json!({"alerts": [], "rules": 2, "channels": []}));
    assert!(
        empty.contains("no alerts") && empty.contains("2 rule(s)"),
        "{empty}"
    );
}
