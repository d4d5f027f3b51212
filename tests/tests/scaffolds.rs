//! `levee new` scaffolds, built with their own toolchains outside the repository, run on a
//! platform: for Rust (the vendored SDK, Levee's Cargo.lock), Python (componentize-py) and
//! JavaScript (componentize-js), each test scaffolds a project into a temporary directory, runs
//! its unit tests natively, builds it the way its README says, and runs the component through a
//! queue with the manifest entry `levee new` printed: messages count per org in kv, the config
//! greeting is read, and a bad body is dead-lettered with its reason.
//!
//! The toolchains come from scripts/test.sh: componentize-py from `.venv-componentize-py`
//! (`ensure_componentize_py`; `LEVEE_COMPONENTIZE_PY` may name another), componentize-js from
//! `functions/js/node_modules` (`ensure_componentize_js`, linked into the scaffold so nothing is
//! downloaded), the wasm32-wasip2 target from `ensure_toolchain`. With CI=true a missing
//! toolchain is a failure; otherwise the test prints SKIPPED.
//!
//! `LEVEE_SCAFFOLD_FIGURES=N` also times N synchronous invocations and N messages through the
//! queue and prints the averages (the figures in the notes); by default 20 invocations.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use levee::scaffold::{self, Lang, Project};
use levee_tests::{cargo, eventually, repo_root, start};

fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Reports a missing toolchain: a failure with CI=true, otherwise SKIPPED.
fn missing(what: &str, how: &str) {
    assert!(!ci(), "{what} is missing (CI=true): {how}");
    eprintln!("SKIPPED: {what} is not installed ({how})");
}

/// Runs `cmd`, failing the test with its output if it fails; returns how long it took.
fn run(cmd: &mut Command, what: &str) -> Duration {
    let started = Instant::now();
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run: {e}"));
    let took = started.elapsed();
    assert!(
        out.status.success(),
        "{what} failed ({}):\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{what}: {took:.1?}");
    took
}

fn has(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

fn figures_messages() -> usize {
    std::env::var("LEVEE_SCAFFOLD_FIGURES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Runs the built component of `project` on a platform with the manifest entry `levee new`
/// printed (greeting set to "bonjour", quick retries): five messages and a bad one through the
/// queue, then the timing of synchronous invocations.
async fn run_on_a_platform(project: &Project) {
    let name = &project.name;
    let size = std::fs::metadata(&project.module)
        .unwrap_or_else(|e| panic!("{}: {e}", project.module.display()))
        .len();
    let entry = project
        .manifest_entry
        .replacen(
            "timeout_ms = 5000\n",
            "timeout_ms = 5000\nmax_receive = 2\nbackoff_ms = 20\n",
            1,
        )
        .replacen("greeting = \"hello\"", "greeting = \"bonjour\"", 1);
    assert!(
        entry.contains("bonjour") && entry.contains("max_receive"),
        "{entry}"
    );
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path().join("levee.toml");
    std::fs::write(&m, format!("[platform]\ndata_dir = \"data\"\n\n{entry}")).unwrap();
    let started = Instant::now();
    let p = start(&m).await;
    eprintln!(
        "FIGURES {name}: {size} bytes, platform start (compiles the component) {:.2?}",
        started.elapsed()
    );

    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(p.send(name, br#"{"org":"acme"}"#.to_vec()).await.unwrap());
    }
    let bad = p.send(name, b"not json".to_vec()).await.unwrap();
    let settled = eventually(Duration::from_secs(60), || async {
        let f = &p.status().await.unwrap().functions[0];
        f.processed == 5 && f.dlq == 1
    })
    .await;
    assert!(settled, "{:?}", p.status().await.unwrap());
    let seen = p.kv_get(name, "seen/acme").await.unwrap().unwrap();
    assert_eq!(&seen[..], b"5");
    let greeting = p
        .kv_get(name, &format!("greeting/{}", ids[0]))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&greeting[..], b"bonjour acme");
    let reason = p.dlq_get(name, &bad).await.unwrap().unwrap().reason;
    assert!(reason.contains("body is not"), "{reason}");

    // Per-message cost: synchronous invocations (each commits its kv writes), then messages
    // through the queue.
    let n = figures_messages();
    let invokes = n.max(20);
    let started = Instant::now();
    let mut guest_us = 0;
    for i in 0..invokes {
        let body = format!(r#"{{"org":"o{}"}}"#, i % 10).into_bytes();
        let r = p.invoke(name, body).await.unwrap();
        assert_eq!(r.outcome, "ok", "{:?}", r.reason);
        guest_us += r.elapsed_us;
    }
    let wall = started.elapsed();
    eprintln!(
        "FIGURES {name}: {invokes} invocations, {:.2} ms each (invoke call), {:.2} ms each in the handler",
        wall.as_secs_f64() * 1000.0 / invokes as f64,
        guest_us as f64 / 1000.0 / invokes as f64
    );
    if n > 0 {
        let before = p.status().await.unwrap().functions[0].processed;
        let started = Instant::now();
        for i in 0..n {
            let body = format!(r#"{{"org":"q{}"}}"#, i % 10).into_bytes();
            p.send(name, body).await.unwrap();
        }
        let done = eventually(Duration::from_secs(300), || async {
            p.status().await.unwrap().functions[0].processed >= before + n as u64
        })
        .await;
        assert!(done, "{:?}", p.status().await.unwrap());
        let took = started.elapsed();
        eprintln!(
            "FIGURES {name}: {n} messages through the queue in {took:.2?}, {:.1} messages/s",
            n as f64 / took.as_secs_f64()
        );
    }
    p.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_scaffold_tests_builds_and_runs() {
    let cpy = std::env::var_os("LEVEE_COMPONENTIZE_PY")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".venv-componentize-py/bin/componentize-py"));
    if !cpy.exists() {
        return missing(
            "componentize-py",
            "scripts/test.sh installs it into .venv-componentize-py",
        );
    }
    if !has("python3") {
        return missing("python3", "apt-get install python3");
    }
    let root = tempfile::tempdir().unwrap();
    let project =
        scaffold::create("py-greet", Lang::Python, &root.path().join("py-greet")).unwrap();
    run(
        Command::new("python3")
            .args(["-m", "unittest", "-v"])
            .current_dir(&project.dir),
        "py-greet: python3 -m unittest",
    );
    run(
        Command::new("bash")
            .arg("build.sh")
            .env("COMPONENTIZE_PY", &cpy)
            .current_dir(&project.dir),
        "py-greet: build.sh (componentize-py)",
    );
    run_on_a_platform(&project).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_javascript_scaffold_tests_builds_and_runs() {
    let modules = repo_root().join("functions/js/node_modules");
    if !modules.join(".bin/componentize-js").exists() {
        return missing("componentize-js", "npm ci in functions/js");
    }
    let root = tempfile::tempdir().unwrap();
    let project = scaffold::create("js-greet", Lang::Js, &root.path().join("js-greet")).unwrap();
    // The scaffold pins the same versions as functions/js: reuse its install (no download).
    std::os::unix::fs::symlink(&modules, project.dir.join("node_modules")).unwrap();
    run(
        Command::new("node").arg("--test").current_dir(&project.dir),
        "js-greet: node --test",
    );
    run(
        Command::new("bash")
            .arg("build.sh")
            .current_dir(&project.dir),
        "js-greet: build.sh (componentize-js)",
    );
    run_on_a_platform(&project).await;
}

/// Where the Rust scaffold builds: one directory kept across runs, so its dependencies (the
/// SDK's wit-bindgen, serde) compile once.
fn rust_target_dir() -> PathBuf {
    repo_root().join("functions/target/scaffold-test")
}

fn wasm_target_installed() -> bool {
    Command::new("rustc")
        .args(["--print", "sysroot"])
        .current_dir(repo_root())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()))
        .is_some_and(|sysroot| sysroot.join("lib/rustlib/wasm32-wasip2").is_dir())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rust_scaffold_tests_builds_and_runs() {
    if !wasm_target_installed() {
        return missing(
            "the wasm32-wasip2 target",
            "rustup target add wasm32-wasip2",
        );
    }
    let root = tempfile::tempdir().unwrap();
    let project = scaffold::create("rs-greet", Lang::Rust, &root.path().join("rs-greet")).unwrap();
    let target = rust_target_dir();
    let cargo_in = |args: &[&str]| {
        let mut cmd = cargo();
        cmd.args(args)
            .current_dir(&project.dir)
            .env("CARGO_TARGET_DIR", &target)
            .env_remove("RUSTFLAGS")
            .env_remove("CARGO_ENCODED_RUSTFLAGS");
        cmd
    };
    run(&mut cargo_in(&["test"]), "rs-greet: cargo test");
    run(
        &mut cargo_in(&["build", "--release", "--target", "wasm32-wasip2"]),
        "rs-greet: cargo build --release --target wasm32-wasip2",
    );
    // The component lands in the shared target directory, not the project's own target/.
    let built = target.join("wasm32-wasip2/release/rs_greet.wasm");
    assert_eq!(
        project.module,
        project
            .dir
            .join("target/wasm32-wasip2/release/rs_greet.wasm")
    );
    std::fs::create_dir_all(project.module.parent().unwrap()).unwrap();
    std::fs::copy(&built, &project.module).unwrap();
    // The first build pruned Levee's lock to what the project uses, and kept it usable.
    let lock = std::fs::read_to_string(project.dir.join("Cargo.lock")).unwrap();
    assert!(lock.contains("name = \"rs-greet\""), "{lock}");
    assert!(!lock.contains("name = \"inbound\""), "pruned: {lock}");
    run(
        &mut cargo_in(&[
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "--locked",
            "--offline",
        ]),
        "rs-greet: cargo build --locked --offline (the lock as committed)",
    );
    run_on_a_platform(&project).await;
}

#[test]
fn levee_wit_prints_the_contract_and_levee_new_refuses_bad_input() {
    let (code, out, err) = levee_tests::levee(&["wit"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("world capability"), "{out}");
    assert!(out.contains("package wasi:config@0.2.0-rc.1;"), "{out}");

    let dir = tempfile::tempdir().unwrap();
    let wit = dir.path().join("wit");
    let (code, out, err) = levee_tests::levee(&["wit", "--out", wit.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("levee.wit"), "{out}");
    assert!(
        std::fs::read_to_string(wit.join("levee.wit"))
            .unwrap()
            .contains("world capability")
    );

    let target = dir.path().join("x");
    let t = target.to_str().unwrap();
    let (code, _, err) = levee_tests::levee(&["new", "My_Fn", "--lang", "js", "--dir", t]);
    assert_ne!(code, 0);
    assert!(err.contains("function name \"My_Fn\""), "{err}");
    assert!(!target.exists());
    let (code, _, err) = levee_tests::levee(&["new", "fn", "--lang", "cobol", "--dir", t]);
    assert_ne!(code, 0);
    assert!(err.contains("possible values: rust, python, js"), "{err}");

    std::fs::create_dir(&target).unwrap();
    std::fs::write(target.join("mine.txt"), "keep").unwrap();
    let (code, _, err) = levee_tests::levee(&["new", "good", "--lang", "python", "--dir", t]);
    assert_ne!(code, 0);
    assert!(err.contains("not an empty directory"), "{err}");
    assert_eq!(std::fs::read_dir(&target).unwrap().count(), 1);

    let fresh = dir.path().join("fresh");
    let (code, out, err) = levee_tests::levee(&[
        "new",
        "good",
        "--lang",
        "python",
        "--dir",
        fresh.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("[functions.good]"), "{out}");
    assert!(out.contains("next steps"), "{out}");
    assert!(fresh.join("app.py").is_file());
}
