//! Releases end to end on the embedded backend: a deployed version walks its canary steps and
//! becomes stable; a canary that fails is rolled back automatically and the messages it failed
//! run on the stable version without using an attempt; versions are swapped under load with no
//! message lost or applied twice; the replay gate refuses a candidate that fails a recorded
//! event; and the CLI's `deploy`, `versions` and `rollback` against a `levee up` process.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use levee::platform::Platform;
use levee::releases::{DeployOptions, Record, State};
use levee_tests::{
    Fn, LeveeProcess, eventually, free_port, guest, pipeline_fns, rebuilt, repo_root, start,
    write_manifest,
};

async fn record(p: &Platform, f: &str) -> Record {
    p.releases().view(f).await.unwrap().record
}

/// Sends `n` tally messages with keys `{prefix}{i}`, `per_s` a second.
fn feed(p: Arc<Platform>, prefix: &str, n: usize, per_s: u64) -> tokio::task::JoinHandle<()> {
    let prefix = prefix.to_string();
    tokio::spawn(async move {
        let gap = Duration::from_micros(1_000_000 / per_s);
        for i in 0..n {
            let body = format!("{{\"key\":\"{prefix}{i}\"}}");
            p.send("t", body.into_bytes()).await.unwrap();
            tokio::time::sleep(gap).await;
        }
    })
}

async fn check_counts(p: &Platform, prefix: &str, n: usize) {
    let total = p.kv_get("t", "count/_total").await.unwrap().unwrap();
    assert_eq!(std::str::from_utf8(&total).unwrap(), n.to_string());
    for i in 0..n {
        let c = p
            .kv_get("t", &format!("count/{prefix}{i}"))
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("message {prefix}{i} was lost"));
        assert_eq!(
            &c[..],
            b"1",
            "message {prefix}{i} was applied more than once"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployed_version_walks_its_canary_steps_and_becomes_stable() {
    let dir = tempfile::tempdir().unwrap();
    let m = write_manifest(
        dir.path(),
        &[Fn::new(
            "t",
            "tally",
            "concurrency = 4\n[functions.t.canary]\nsteps = [50, 100]\nwindow_s = 1\nmin_samples = 5",
        )],
    );
    let p = start(&m).await;
    let load = feed(p.clone(), "k", 400, 100);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = p
        .releases()
        .deploy("t", rebuilt("tally", "v2"), DeployOptions::default())
        .await
        .unwrap();
    assert_eq!((r.release, r.state.as_str()), (Some(2), "canary"));
    assert_eq!(r.share_pct, 50.0);
    let promoted = eventually(Duration::from_secs(30), || async {
        record(&p, "t").await.stable == 2
    })
    .await;
    let rec = record(&p, "t").await;
    assert!(promoted, "{rec:#?}");
    assert_eq!(rec.get(1).unwrap().state, State::Superseded);
    assert!(rec.canary.is_none());
    let history: Vec<&str> = rec.events.iter().map(|e| e.what.as_str()).collect();
    assert!(
        history.contains(&"promoted to stable (100%)"),
        "{history:?}"
    );
    let status = p.status().await.unwrap();
    assert_eq!(status.functions[0].release, 2);
    load.await.unwrap();
    assert!(
        eventually(Duration::from_secs(30), || async {
            p.status().await.unwrap().functions[0].processed == 400
        })
        .await
    );
    check_counts(&p, "k", 400).await;
    p.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_canary_is_rolled_back_and_its_messages_run_on_the_stable_version() {
    let dir = tempfile::tempdir().unwrap();
    // Release 1 (noop) handles everything; release 2 (faulty) fails every message it is asked
    // to fail, as a bad release would.
    let m = write_manifest(
        dir.path(),
        &[Fn::new(
            "f",
            "noop",
            "concurrency = 4\nmax_receive = 1\n[functions.f.canary]\nsteps = [50, 100]\nwindow_s = 60",
        )],
    );
    let p = start(&m).await;
    let faulty = std::fs::read(guest("faulty")).unwrap();
    let r = p
        .releases()
        .deploy("f", faulty, DeployOptions::default())
        .await
        .unwrap();
    assert_eq!(r.state, "canary");
    for _ in 0..200 {
        p.send("f", br#"{"action":"permanent"}"#.to_vec())
            .await
            .unwrap();
    }
    let done = eventually(Duration::from_secs(60), || async {
        let s = &p.status().await.unwrap().functions[0];
        s.processed == 200
    })
    .await;
    let status = p.status().await.unwrap();
    assert!(done, "{status:?}");
    let f = &status.functions[0];
    // max_receive = 1: a single counted attempt would have dead-lettered them.
    assert_eq!((f.dlq, f.failed), (0, 0), "{f:?}");
    // The controller judges every 250 ms.
    let judged = eventually(Duration::from_secs(10), || async {
        record(&p, "f").await.canary.is_none()
    })
    .await;
    let rec = record(&p, "f").await;
    assert!(judged, "{rec:#?}");
    assert_eq!(rec.stable, 1);
    let v2 = rec.get(2).unwrap();
    assert_eq!(v2.state, State::RolledBack);
    let reason = v2.reason.clone().unwrap();
    assert!(reason.contains("failure rate"), "{reason}");
    assert!(
        rec.events.iter().any(|e| e.what.starts_with("rolled back")),
        "{:?}",
        rec.events
    );
    let f = &p.status().await.unwrap().functions[0];
    assert!(f.canary.is_none() && f.release == 1, "{f:?}");
    p.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versions_swapped_under_load_lose_and_duplicate_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let m = write_manifest(
        dir.path(),
        &[Fn::new(
            "t",
            "tally",
            "concurrency = 8\n[functions.t.canary]\nsteps = [50, 100]\nwindow_s = 1\nmin_samples = 5",
        )],
    );
    let p = start(&m).await;
    let n = 1500;
    let load = feed(p.clone(), "r", n, 300);
    let rel = p.releases();
    let mut served = vec![];
    for (i, canary) in [(2, false), (3, true), (4, false)] {
        tokio::time::sleep(Duration::from_millis(700)).await;
        let opts = DeployOptions {
            canary,
            ..Default::default()
        };
        let r = rel
            .deploy("t", rebuilt("tally", &format!("v{i}")), opts)
            .await
            .unwrap();
        assert_eq!(r.release, Some(i));
        let started = Instant::now();
        assert!(
            eventually(Duration::from_secs(20), || async {
                rel.view("t").await.unwrap().first_served_ms.is_some()
            })
            .await
        );
        served.push((i, rel.view("t").await.unwrap().first_served_ms.unwrap()));
        if canary {
            assert!(
                eventually(Duration::from_secs(20), || async {
                    record(&p, "t").await.stable == i
                })
                .await,
                "the canary was promoted within {:?}",
                started.elapsed()
            );
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let back = rel.rollback("t", Some("1")).await.unwrap();
    assert_eq!(back.stable, 1);
    load.await.unwrap();
    let done = eventually(Duration::from_secs(60), || async {
        p.status().await.unwrap().functions[0].processed == n as u64
    })
    .await;
    assert!(done, "{:?}", p.status().await.unwrap());
    check_counts(&p, "r", n).await;
    let f = &p.status().await.unwrap().functions[0];
    assert_eq!((f.dlq, f.failed, f.release), (0, 0, 1));
    eprintln!("first message served after activation, by release (ms): {served:?}");
    p.shutdown().await;
}

fn inbound_with_corpus(dir: &Path) -> std::path::PathBuf {
    let corpus = repo_root().join("functions/inbound/replay");
    let mut fns = pipeline_fns(2);
    fns[0]
        .extra
        .push_str(&format!("\nreplay = \"{}\"", corpus.display()));
    write_manifest(dir, &fns)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_replay_gate_refuses_a_candidate_that_fails_a_recorded_event() {
    let dir = tempfile::tempdir().unwrap();
    let p = start(&inbound_with_corpus(dir.path())).await;
    let next = std::fs::read(guest("inbound-next")).unwrap();
    let r = p
        .releases()
        .deploy("inbound", next, DeployOptions::default())
        .await
        .unwrap();
    assert_eq!(r.release, None, "{r:?}");
    assert_eq!(r.state, "refused");
    assert_eq!(r.replay.events, 7);
    assert_eq!(r.replay.passed, 6);
    let names: Vec<&str> = r
        .replay
        .regressions
        .iter()
        .map(|x| x.event.as_str())
        .collect();
    assert_eq!(names, ["06-large-format-attachments.json"]);
    let rec = record(&p, "inbound").await;
    assert_eq!((rec.versions.len(), rec.stable), (1, 1));
    assert!(
        rec.events
            .last()
            .unwrap()
            .what
            .contains("refused by the replay gate")
    );
    // A rebuild of the stable code passes the gate.
    let ok = p
        .releases()
        .deploy(
            "inbound",
            rebuilt("inbound", "v2"),
            DeployOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(ok.replay.passed, 7);
    assert_eq!(ok.release, Some(2));
    p.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn modules_that_do_not_fit_the_world_are_refused_naming_what_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let p = start(&write_manifest(dir.path(), &[Fn::new("f", "noop", "")])).await;
    let rel = p.releases();
    let err = |bytes: Vec<u8>| {
        let rel = rel.clone();
        async move {
            rel.deploy("f", bytes, DeployOptions::default())
                .await
                .unwrap_err()
                .to_string()
        }
    };
    let e = err(b"not wasm at all".to_vec()).await;
    assert!(e.contains("not a WebAssembly file"), "{e}");
    // A core module, not a component.
    let e = err(b"\0asm\x01\0\0\0".to_vec()).await;
    assert!(e.contains("component"), "{e}");
    // An empty component exports nothing.
    let e = err(b"\0asm\x0d\0\x01\0".to_vec()).await;
    assert!(e.contains("handle"), "{e}");
    let e = rel
        .deploy("nope", b"x".to_vec(), DeployOptions::default())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("deploys only the functions the manifest declares"),
        "{e}"
    );
    assert_eq!(record(&p, "f").await.versions.len(), 1);
    p.shutdown().await;
}

#[test]
fn the_cli_deploys_lists_and_rolls_back() {
    let dir = tempfile::tempdir().unwrap();
    let m = inbound_with_corpus(dir.path());
    let up = LeveeProcess::up(&m, free_port());
    let next = guest("inbound-next");
    let (code, out, err) = up.cli(&["deploy", "inbound", next.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.contains("REGRESSION 06-large-format-attachments.json"),
        "{out}"
    );
    assert!(err.contains("replay gate refused"), "{err}");
    let v2 = dir.path().join("inbound-v2.wasm");
    std::fs::write(&v2, rebuilt("inbound", "v2")).unwrap();
    let (code, out, err) = up.cli(&["deploy", "inbound", v2.to_str().unwrap(), "--no-canary"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("release 2") && out.contains("stable"), "{out}");
    let (code, out, _) = up.cli(&["versions", "inbound"]);
    assert_eq!(code, 0);
    assert!(out.contains("r2") && out.contains("superseded"), "{out}");
    let (code, out, err) = up.cli(&["rollback", "inbound"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("release 1"), "{out}");
    let (_, out, _) = up.cli(&["status"]);
    assert!(out.contains("stable again"), "{out}");
    let (code, _, err) = up.cli(&["rollback", "inbound", "r9"]);
    assert_ne!(code, 0);
    assert!(err.contains("no version `r9`"), "{err}");
}
