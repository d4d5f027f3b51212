//! What the platform tells about itself, scraped from a running `levee up`: `/metrics` passes
//! `promtool check metrics`, has every family operators alert on, and agrees with `/v1/status`;
//! JSON logs are one object per line, carry the invocation's message id, function and version,
//! and no output off a terminal has ANSI colour.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use levee_tests::{LeveeProcess, free_port, levee_bin, pipeline_fns, write_manifest};

fn get(p: &LeveeProcess, path: &str, key: Option<&str>) -> (u16, String) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let a = rt
        .block_on(levee::client::call(
            &p.addr,
            key,
            hyper::Method::GET,
            path,
            Vec::new(),
        ))
        .unwrap();
    (
        a.status.as_u16(),
        String::from_utf8_lossy(&a.body).into_owned(),
    )
}

/// The value of the sample `name{labels}` (labels in the exporter's order).
fn sample(text: &str, name_and_labels: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(name_and_labels) && l[name_and_labels.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

fn promtool() -> Option<std::path::PathBuf> {
    let p = std::path::PathBuf::from("/usr/bin/promtool");
    if p.exists() {
        return Some(p);
    }
    assert!(
        std::env::var("CI").is_err(),
        "CI: promtool (Debian's prometheus package) is missing; scripts/test.sh installs it"
    );
    eprintln!("SKIPPED promtool check: /usr/bin/promtool missing (apt-get install prometheus)");
    None
}

#[test]
fn metrics_pass_promtool_and_agree_with_status() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = write_manifest(dir.path(), &pipeline_fns(2));
    let up = LeveeProcess::up(&manifest, free_port());
    for n in 0..5 {
        let msg = format!(
            r#"{{"org": "acme", "conversation": "c-{n}", "channel": "chat", "from": "a@b.c", "text": "my order"}}"#
        );
        assert_eq!(up.cli(&["send", "inbound", &msg]).0, 0);
    }
    assert_eq!(
        up.cli(&["send", "inbound", r#"{"org": "acme"}"#]).0,
        0,
        "one to the DLQ"
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        let (_, out, _) = up.cli(&["status", "--json"]);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        let f = |name: &str| {
            v["functions"]
                .as_array()
                .unwrap()
                .iter()
                .find(|f| f["name"] == name)
                .unwrap()
                .clone()
        };
        if (f("notify")["processed"] == 5 && f("inbound")["dlq"] == 1) || Instant::now() > deadline
        {
            break v;
        }
        std::thread::sleep(Duration::from_millis(100));
    };

    let (code, body) = get(&up, "/metrics", None);
    assert_eq!(code, 401, "metrics need a key: {body}");
    let (code, text) = get(&up, "/metrics", Some(&up.key));
    assert_eq!(code, 200, "{text}");
    let families = [
        "levee_queue_messages",
        "levee_queue_oldest_age_seconds",
        "levee_dead_letters",
        "levee_workers",
        "levee_workers_max",
        "levee_messages_total",
        "levee_invocations_total",
        "levee_handler_duration_seconds",
        "levee_end_to_end_seconds",
        "levee_conflict_retries_total",
        "levee_cache_requests_total",
        "levee_store_calls_total",
        "levee_store_errors_total",
        "levee_breaker_open",
        "levee_ingress_requests_total",
        "levee_ingress_refused_total",
        "levee_ingress_blocks_active",
        "levee_function_info",
    ];
    for f in families {
        assert!(
            text.contains(&format!("# TYPE {f} ")),
            "family {f} missing:\n{text}"
        );
    }
    let inbound = status["functions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "inbound")
        .unwrap();
    assert_eq!(
        sample(&text, r#"levee_dead_letters{function="inbound"}"#),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            r#"levee_messages_total{function="notify",outcome="processed"}"#
        ),
        Some(5.0)
    );
    assert_eq!(
        sample(
            &text,
            r#"levee_handler_duration_seconds_count{function="notify"}"#
        ),
        Some(5.0)
    );
    let version = inbound["version"].as_str().unwrap();
    assert_eq!(version.len(), 12, "{inbound}");
    assert_eq!(
        sample(
            &text,
            &format!(r#"levee_function_info{{function="inbound",version="{version}"}}"#)
        ),
        Some(1.0)
    );
    assert!(
        text.contains("levee_ingress_requests_total{group="),
        "{text}"
    );
    if let Some(promtool) = promtool() {
        let mut child = Command::new(promtool)
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write as _;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "promtool: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn json_logs_carry_the_invocation_and_no_output_has_ansi() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = write_manifest(dir.path(), &pipeline_fns(1));
    let port = free_port();
    // LeveeProcess::up logs stderr to levee-PORT.log beside the manifest.
    let up = LeveeProcess::up_with(&manifest, port, &[], &[("LEVEE_LOG_FORMAT", "json")]);
    let (code, out, err) = up.cli(&["send", "inbound", r#"{"org": "acme", "channel": "fax"}"#]);
    assert_eq!(code, 0, "{out}{err}");
    let id = out.trim().to_string();
    let log = manifest.with_file_name(format!("levee-{port}.log"));
    let deadline = Instant::now() + Duration::from_secs(20);
    let line = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if let Some(l) = text.lines().find(|l| l.contains("dead-lettered")) {
            break l.to_string();
        }
        assert!(Instant::now() < deadline, "no dead-letter line in {text}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let text = std::fs::read_to_string(&log).unwrap();
    for l in text.lines() {
        serde_json::from_str::<serde_json::Value>(l)
            .unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}"));
    }
    assert!(!text.contains('\u{1b}'), "ANSI in JSON logs");
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    let span = v["spans"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "invocation")
        .unwrap_or_else(|| panic!("no invocation span: {line}"));
    assert_eq!(span["message_id"], id.as_str());
    assert_eq!(span["function"], "inbound");
    assert_eq!(span["version"].as_str().map(str::len), Some(12), "{line}");
    drop(up);

    // Text logs to a file (not a terminal): no colour codes.
    let port = free_port();
    let up = LeveeProcess::up(&manifest, port);
    assert_eq!(up.cli(&["send", "inbound", r#"{"org": "acme"}"#]).0, 0);
    std::thread::sleep(Duration::from_millis(1500));
    let text =
        std::fs::read_to_string(manifest.with_file_name(format!("levee-{port}.log"))).unwrap();
    assert!(
        text.contains("invocation{"),
        "text lines name the invocation: {text}"
    );
    assert!(!text.contains('\u{1b}'), "ANSI off a terminal: {text:?}");
    let out = Command::new(levee_bin())
        .args(["status", "--addr", "127.0.0.1:1"])
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&out.stderr).contains('\u{1b}'));
}
