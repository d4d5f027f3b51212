//! A JavaScript function built with componentize-js at its default settings (so the component
//! imports `wasi:http`, which Levee links for every function) loads and runs through a queue:
//! `functions/js/counter.js` counts messages per org in kv, reads its config, and a bad body is
//! dead-lettered with its reason. The toolchain comes from `functions/js/package-lock.json`
//! (`npm ci`, which the test script runs).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use levee_tests::{eventually, repo_root, start};

fn componentize_js() -> Option<PathBuf> {
    let bin = repo_root().join("functions/js/node_modules/.bin/componentize-js");
    if bin.exists() {
        return Some(bin);
    }
    let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
    assert!(
        !ci,
        "componentize-js is missing (CI=true): run `npm ci` in functions/js"
    );
    eprintln!("SKIPPED: componentize-js is not installed (npm ci in functions/js)");
    None
}

fn build(bin: &Path, out: &Path) -> PathBuf {
    let wasm = out.join("counter.wasm");
    let js = repo_root().join("functions/js");
    let started = std::time::Instant::now();
    let status = Command::new(bin)
        .arg("counter.js")
        .args(["--wit", "../wit", "-n", "capability", "-o"])
        .arg(&wasm)
        .current_dir(&js)
        .status()
        .expect("running componentize-js");
    assert!(status.success(), "componentize-js failed");
    eprintln!(
        "built counter.wasm ({} bytes) in {:?}",
        std::fs::metadata(&wasm).unwrap().len(),
        started.elapsed()
    );
    wasm
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_default_componentize_js_function_runs_through_a_queue() {
    let Some(bin) = componentize_js() else { return };
    let dir = tempfile::tempdir().unwrap();
    let wasm = build(&bin, dir.path());
    let bytes = std::fs::read(&wasm).unwrap();
    let has = |s: &str| bytes.windows(s.len()).any(|w| w == s.as_bytes());
    assert!(has("wasi:http/types@"), "a default build imports wasi:http");

    let m = dir.path().join("levee.toml");
    let manifest = format!(
        "[platform]\ndata_dir = \"data\"\n\n[functions.counter]\nmodule = \"{}\"\n\
         memory_mb = 32\ntimeout_ms = 5000\nmax_receive = 2\nbackoff_ms = 20\n\n\
         [functions.counter.config]\ngreeting = \"bonjour\"\n",
        wasm.display()
    );
    std::fs::write(&m, manifest).unwrap();
    let p = start(&m).await;
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(
            p.send("counter", br#"{"org":"acme"}"#.to_vec())
                .await
                .unwrap(),
        );
    }
    let bad = p.send("counter", b"not json".to_vec()).await.unwrap();
    let settled = eventually(Duration::from_secs(60), || async {
        let f = &p.status().await.unwrap().functions[0];
        f.processed == 5 && f.dlq == 1
    })
    .await;
    assert!(settled, "{:?}", p.status().await.unwrap());
    let seen = p.kv_get("counter", "seen/acme").await.unwrap().unwrap();
    assert_eq!(&seen[..], b"5");
    let greeting = p
        .kv_get("counter", &format!("js/{}", ids[0]))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&greeting[..], b"bonjour acme");
    let reason = p.dlq_get("counter", &bad).await.unwrap().unwrap().reason;
    assert!(reason.contains("body is not JSON"), "{reason}");
    p.shutdown().await;
}
