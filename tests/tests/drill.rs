//! `levee drill`: the registry from the command line, and `levee drill store-outage` run for real
//! (the built binary, the sample pipeline of `levee.toml`, a short outage) with its JSON figures
//! checked for consistency. No figure is checked against a time or a rate.

use std::path::Path;
use std::process::Command;

use levee_tests::{guests, levee, levee_bin, repo_root};
use serde_json::Value;

/// Runs `levee drill store-outage ARGS --json` on the sample pipeline with TMPDIR set to `tmp`;
/// returns the exit code, the JSON line and stderr.
fn store_outage(tmp: &Path, args: &[&str]) -> (i32, Value, String) {
    guests();
    let manifest = repo_root().join("levee.toml");
    let out = Command::new(levee_bin())
        .args(["drill", "store-outage", "--manifest"])
        .arg(&manifest)
        .args(args)
        .arg("--json")
        .env("TMPDIR", tmp)
        .env_remove("LEVEE_MANIFEST")
        .current_dir(tmp)
        .output()
        .expect("running levee drill");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let code = out.status.code().unwrap_or(-1);
    assert!(
        code == 0 || code == 1,
        "exit code {code} is neither pass nor fail; stderr:\n{stderr}"
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "--json prints exactly one line on stdout: {stdout}\nstderr:\n{stderr}"
    );
    let v: Value = serde_json::from_str(lines[0])
        .unwrap_or_else(|e| panic!("the JSON line parses ({e}): {stdout}"));
    (code, v, stderr)
}

fn u(v: &Value, key: &str) -> u64 {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("`{key}` is a count in {v}"))
}

#[test]
fn drill_lists_the_drills_and_names_them_for_an_unknown_one() {
    for args in [&["drill"][..], &["drill", "--list"][..]] {
        let (code, out, err) = levee(args);
        assert_eq!(code, 0, "{args:?}: {err}");
        let line = out
            .lines()
            .find(|l| l.trim_start().starts_with("store-outage"))
            .unwrap_or_else(|| panic!("{args:?} lists store-outage: {out}"));
        assert!(line.contains("store"), "with a summary: {line}");
    }
    let (code, _, err) = levee(&["drill", "flood-of-the-century"]);
    assert_ne!(code, 0);
    assert!(
        err.contains("unknown drill `flood-of-the-century`") && err.contains("store-outage"),
        "{err}"
    );
    let (code, out, _) = levee(&["drill", "store-outage", "--help"]);
    assert_eq!(code, 0);
    for flag in [
        "--duration",
        "--rate",
        "--warmup",
        "--load-after",
        "--drain-timeout",
        "--manifest",
        "--keep-data",
        "--json",
    ] {
        assert!(out.contains(flag), "--help documents {flag}: {out}");
    }
    let (code, _, err) = levee(&["drill", "store-outage", "--duration", "10 parsecs"]);
    assert_ne!(code, 0);
    assert!(err.contains("--duration") && err.contains("unit"), "{err}");
}

#[test]
fn a_short_store_outage_reports_consistent_figures() {
    let tmp = tempfile::tempdir().unwrap();
    let (code, v, err) = store_outage(
        tmp.path(),
        &[
            "--duration",
            "4s",
            "--rate",
            "50",
            "--warmup",
            "1s",
            "--load-after",
            "1s",
            "--drain-timeout",
            "3m",
        ],
    );
    assert_eq!(v["drill"], "store-outage");
    let verdict = v["verdict"].as_str().expect("verdict");
    let reasons = v["reasons"].as_array().expect("reasons");
    assert_eq!(verdict == "pass", reasons.is_empty(), "{v}");
    assert_eq!(
        code == 0,
        verdict == "pass",
        "exit code follows the verdict: {v}"
    );

    let accepted = u(&v, "accepted");
    assert!(accepted > 0, "{v}");
    for f in ["inbound", "routing", "search-index", "notify"] {
        assert!(v["processed"][f].is_u64(), "processed has {f}: {v}");
        assert!(v["dlq"][f].is_u64(), "dlq has {f}: {v}");
    }
    // One message to inbound completes once at each last stage.
    for sink in ["notify", "search-index"] {
        assert_eq!(v["expected"][sink].as_u64(), Some(accepted), "{v}");
    }
    let all_completed = ["notify", "search-index"]
        .iter()
        .all(|s| v["processed"][s].as_u64().unwrap() >= accepted);
    assert_eq!(v["all_completed"].as_bool(), Some(all_completed), "{v}");
    let dlq_sum: u64 = v["dlq"]
        .as_object()
        .unwrap()
        .values()
        .map(|n| n.as_u64().unwrap())
        .sum();
    assert_eq!(u(&v, "dead_lettered"), dlq_sum, "{v}");

    assert_eq!(
        u(&v, "store_max_concurrency"),
        64,
        "the [cache] default: {v}"
    );
    assert!(
        u(&v, "store_calls_peak") <= u(&v, "store_max_concurrency"),
        "store calls held at once stay within the cache's bound: {v}"
    );
    assert!(u(&v, "store_calls") > 0, "the store was used: {v}");
    assert_eq!(v["outage_s"].as_f64(), Some(4.0), "{v}");
    assert_eq!(v["hang_s"].as_f64(), Some(2.0), "{v}");
    assert!(v["peak_rss_mib"].as_f64().is_some_and(|m| m > 0.0), "{v}");
    assert_eq!(v["drained"].as_bool(), Some(true), "{v}");
    assert!(
        v["drain_s"].as_f64().is_some_and(|s| s >= 0.0),
        "drain time measured: {v}"
    );
    assert_eq!(u(&v, "backlog_left"), 0, "{v}");
    assert!(v["data_dir"].is_null(), "not kept: {v}");

    // Progress lines and the readable report go to stderr with --json.
    for phase in ["warm-up", "hang", "fail", "recover", "drain"] {
        assert!(err.contains(phase), "progress shows {phase}: {err}");
    }
    assert!(err.contains(&format!("verdict: {verdict}")), "{err}");
    assert!(err.contains("store calls held at once"), "{err}");
    // The data directory is gone.
    let left: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("levee-drill-"))
        .collect();
    assert!(left.is_empty(), "data directory removed: {left:?}");
}

/// A 60 s outage with the shipped defaults, far longer than the sample pipeline's retries (5
/// receives, backoff from 1 s: about 15 s), must still lose nothing and dead-letter nothing.
#[test]
fn a_60_s_store_outage_with_the_shipped_defaults_passes() {
    let tmp = tempfile::tempdir().unwrap();
    let (code, v, err) = store_outage(
        tmp.path(),
        &["--duration", "60s", "--rate", "50", "--drain-timeout", "5m"],
    );
    assert_eq!(
        u(&v, "dead_lettered"),
        0,
        "nothing dead-lettered: {v}\n{err}"
    );
    assert_eq!(v["all_completed"].as_bool(), Some(true), "{v}");
    assert_eq!(v["verdict"], "pass", "{v}\n{err}");
    assert_eq!(code, 0, "{err}");
}

/// `levee drill flood`, protected then unprotected in one run, short: the flooding source is
/// blocked within 2 s when protected and never when not; protected, the flood is refused and
/// leaves nothing in the queues, unprotected it is accepted and piles up.
#[test]
fn flood_drill_blocks_the_source_and_measures_the_difference() {
    guests();
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(levee_bin())
        .args(["drill", "flood", "--manifest"])
        .arg(repo_root().join("levee.toml"))
        .args([
            "--flood-for",
            "4s",
            "--warmup",
            "3s",
            "--rate",
            "100",
            "--json",
        ])
        .env("TMPDIR", tmp.path())
        .current_dir(tmp.path())
        .output()
        .expect("running levee drill flood");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let code = out.status.code().unwrap_or(-1);
    assert!(code == 0 || code == 1, "exit {code}: {stderr}");
    let v: Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    assert!(
        stderr.contains("protected") && stderr.contains("unprotected"),
        "{stderr}"
    );
    let runs = v["runs"].as_array().expect("runs");
    assert_eq!(runs.len(), 2, "{v}");
    let (on, off) = (&runs[0], &runs[1]);
    assert_eq!(
        (on["protections"].as_bool(), off["protections"].as_bool()),
        (Some(true), Some(false))
    );
    let block = on["time_to_block_s"]
        .as_f64()
        .expect("the protected run blocked the source");
    assert!(block <= 2.0, "blocked after {block} s: {v}");
    assert!(off["time_to_block_s"].is_null(), "{v}");
    let sent = u(on, "flood_sent");
    assert!(sent > 100, "{v}");
    assert!(
        u(on, "flood_refused") * 2 > sent,
        "most of the flood is refused: {v}"
    );
    assert!(
        u(off, "flood_accepted") > 4 * u(on, "flood_accepted"),
        "unprotected, the flood gets in: {v}"
    );
    for group in ["chat", "events", "ops"] {
        assert!(
            on["during"][group]["requests"].as_u64().unwrap_or(0) > 0,
            "{group}: {v}"
        );
        assert_eq!(
            on["during"][group]["errors"], 0,
            "{group} had errors protected: {v}"
        );
    }
    assert!(
        u(off, "backlog_at_end") > u(on, "backlog_at_end"),
        "the accepted flood piles up in the queues: {v}"
    );
}

/// `levee drill blind`, short: with the primary webhook down, the secondary gets the alert
/// within `--for` + 5 s, told that the primary failed, and the health and status routes answer
/// every probe throughout.
#[test]
fn blind_drill_reaches_the_secondary_in_time_and_the_platform_keeps_answering() {
    guests();
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(levee_bin())
        .args(["drill", "blind", "--manifest"])
        .arg(repo_root().join("levee.toml"))
        .args([
            "--warmup",
            "1s",
            "--threshold",
            "1s",
            "--for",
            "2s",
            "--after",
            "2s",
            "--rate",
            "20",
            "--json",
        ])
        .env("TMPDIR", tmp.path())
        .env_remove("LEVEE_MANIFEST")
        .current_dir(tmp.path())
        .output()
        .expect("running levee drill blind");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let code = out.status.code().unwrap_or(-1);
    let v: Value =
        serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}\n{stderr}"));
    assert_eq!(v["drill"], "blind");
    assert_eq!(v["verdict"], "pass", "{v}\n{stderr}");
    assert_eq!(code, 0, "{stderr}");
    assert!(u(&v, "accepted") > 0, "{v}");
    assert_eq!(u(&v, "alerts_during_warmup"), 0, "{v}");
    assert_eq!(v["deadline_s"].as_f64(), Some(7.0), "for 2 s + 5 s: {v}");
    let after = v["secondary_after_s"]
        .as_f64()
        .expect("the secondary got it");
    assert!(after <= 7.0, "{v}");
    let fired = v["fired_after_s"].as_f64().expect("it fired");
    assert!(
        fired >= 2.0 && fired <= after,
        "fires after for_s, before the secondary has it: {v}"
    );
    assert_eq!(v["secondary_told_primary_failed"], true, "{v}");
    assert!(
        v["primary_error"]
            .as_str()
            .is_some_and(|e| e.contains("3 attempt")),
        "{v}"
    );
    assert_eq!(v["primary_state"], "failed", "{v}");
    assert_eq!(u(&v, "primary_attempts"), 3, "1 + 2 retries: {v}");
    assert_eq!(v["secondary_state"], "delivered", "{v}");
    for route in ["healthz", "status"] {
        assert!(u(&v["probes"][route], "probes") > 5, "{route}: {v}");
        assert_eq!(u(&v["probes"][route], "failures"), 0, "{route}: {v}");
    }
    assert_eq!(
        v["metrics_route"].as_bool(),
        Some(v["probes"].get("metrics").is_some()),
        "{v}"
    );
    for phase in [
        "warm-up",
        "verdict: pass",
        "secondary received it",
        "probes /healthz",
    ] {
        assert!(stderr.contains(phase), "{phase}: {stderr}");
    }
    let left: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("levee-drill-"))
        .collect();
    assert!(left.is_empty(), "data directory removed: {left:?}");
}

/// `levee drill provider-limit`, short: the provider answers 429 for 4 s under load. Nothing is
/// dead-lettered or delivered twice, nothing goes above the provider's rate, and every
/// notification arrives once the provider recovers. The drain-rate part of the verdict is a
/// rate (it depends on the machine), so only the other reasons are required to be absent.
#[test]
fn provider_limit_drill_holds_the_backlog_and_delivers_each_notification_once() {
    guests();
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(levee_bin())
        .args(["drill", "provider-limit", "--manifest"])
        .arg(repo_root().join("levee.toml"))
        .args([
            "--duration",
            "4s",
            "--rate",
            "30",
            "--provider-rate",
            "80",
            "--retry-after",
            "1",
            "--warmup",
            "2s",
            "--load-after",
            "2s",
            "--drain-timeout",
            "3m",
            "--json",
        ])
        .env("TMPDIR", tmp.path())
        .env_remove("LEVEE_MANIFEST")
        .current_dir(tmp.path())
        .output()
        .expect("running levee drill provider-limit");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let v: Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("one JSON line ({e}): {stdout}\n{stderr}"));
    assert_eq!(v["drill"], "provider-limit");
    let reasons: Vec<&str> = v["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    let others: Vec<&&str> = reasons
        .iter()
        .filter(|r| !r.contains("drained at"))
        .collect();
    assert!(others.is_empty(), "{others:?}\n{v}\n{stderr}");
    assert_eq!(out.status.code() == Some(0), reasons.is_empty(), "{v}");
    let p = &v["provider"];
    let accepted = u(&v, "accepted");
    assert!(accepted > 0, "{v}");
    assert_eq!(u(&v, "dead_lettered"), 0, "{v}");
    assert_eq!(
        u(&v, "notifications_due"),
        accepted,
        "one notification per message: {v}"
    );
    assert_eq!(u(p, "delivered"), accepted, "{v}");
    assert_eq!(u(p, "distinct_ids"), accepted, "{v}");
    assert_eq!(u(p, "ids_delivered_twice"), 0, "{v}");
    assert_eq!(u(p, "missing_key"), 0, "{v}");
    assert_eq!(u(p, "over_limit"), 0, "{v}");
    assert!(u(p, "peak_per_second") <= 80, "{v}");
    assert!(u(p, "throttled") > 0, "the outage was felt: {v}");
    assert!(u(&v, "held_without_attempt") > 0, "{v}");
    assert_eq!(
        u(&v, "failed_attempts"),
        0,
        "the provider's 429s used no attempt: {v}"
    );
    for phase in ["warm-up", "outage", "recover", "drain"] {
        assert!(stderr.contains(phase), "progress shows {phase}: {stderr}");
    }
}

/// `levee drill bad-release`, short: the replay gate refuses a release that traps on large
/// events, and with the gate skipped its canary is rolled back automatically; nothing is
/// dead-lettered or lost. The p99 part of the verdict compares latencies (machine-dependent),
/// so only the other reasons are required to be absent.
#[test]
fn bad_release_drill_catches_the_release_and_loses_nothing() {
    guests();
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(levee_bin())
        .args(["drill", "bad-release", "--manifest"])
        .arg(repo_root().join("levee.toml"))
        .args([
            "--rate",
            "100",
            "--warmup",
            "3s",
            "--load-after",
            "1s",
            "--drain-timeout",
            "3m",
            "--json",
        ])
        .env("TMPDIR", tmp.path())
        .env_remove("LEVEE_MANIFEST")
        .current_dir(tmp.path())
        .output()
        .expect("running levee drill bad-release");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let v: Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("one JSON line ({e}): {stdout}\n{stderr}"));
    assert_eq!(v["drill"], "bad-release");
    let reasons: Vec<&str> = v["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    let others: Vec<&&str> = reasons.iter().filter(|r| !r.contains("p99")).collect();
    assert!(others.is_empty(), "{others:?}\n{v}\n{stderr}");
    assert_eq!(v["gate_refused"], true, "{v}");
    assert_eq!(
        v["gate_events"][0], "06-large-format-attachments.json",
        "{v}"
    );
    assert_eq!(v["canary_rolled_back"], true, "{v}");
    assert_eq!(v["bad_became_stable"], false, "{v}");
    assert_eq!(u(&v, "dead_lettered"), 0, "{v}");
    assert!(u(&v, "large_sent") > 0, "{v}");
    assert_eq!(v["all_completed"], true, "{v}");
    for phase in ["warm-up", "gate", "canary", "drain"] {
        assert!(stderr.contains(phase), "progress shows {phase}: {stderr}");
    }
}
