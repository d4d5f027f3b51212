//! The CLI and HTTP API from a user's side: clear errors for bad manifests and bad input,
//! and every client command against a running `levee up`.

use levee_tests::{Fn, LeveeProcess, free_port, levee, write_manifest};

fn write(dir: &std::path::Path, text: &str) -> String {
    let p = dir.join("bad.toml");
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

#[test]
fn bad_manifests_name_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "[functions.a]\nmodule = \"a.wasm\"\nconcurency = 2\n",
            "concurency",
        ),
        (
            "[functions.a]\nmodule = \"a.wasm\"\nconcurrency = 0\n",
            "functions.a.concurrency",
        ),
        (
            "[functions.a]\nmodule = \"a.wasm\"\nemits_to = [\"b\"]\n",
            "functions.a.emits_to",
        ),
        (
            "[functions.a]\nmodule = \"missing.wasm\"\n",
            "functions.a.module",
        ),
        (
            "[platform]\nbackend = \"azure\"\n[functions.a]\nmodule = \"a.wasm\"\n",
            "`platform.backend`",
        ),
        ("not toml at all", "levee.toml"),
    ];
    for (text, expect) in cases {
        let path = write(dir.path(), text);
        let (code, _out, err) = levee(&["up", "--manifest", &path, "--listen", "127.0.0.1:0"]);
        assert_ne!(code, 0, "{text:?} must fail");
        let expect = if expect == "levee.toml" {
            "bad.toml"
        } else {
            expect
        };
        assert!(
            err.contains(expect),
            "error for {text:?} names `{expect}`: {err}"
        );
    }
    let (code, _, err) = levee(&["up", "--manifest", "/nonexistent/levee.toml"]);
    assert_ne!(code, 0);
    assert!(err.contains("cannot read /nonexistent/levee.toml"), "{err}");
}

#[test]
fn client_commands_work_against_a_running_platform() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = write_manifest(
        dir.path(),
        &[Fn::new(
            "faulty",
            "faulty",
            "max_receive = 1\nbackoff_ms = 10",
        )],
    );
    let up = LeveeProcess::up(&manifest, free_port());
    let with = |args: &[&str]| up.cli(args);

    let (code, out, err) = with(&["send", "faulty", r#"{"action":"ok"}"#]);
    assert_eq!(code, 0, "{err}");
    assert!(!out.trim().is_empty(), "prints the message id");

    let (code, _, err) = with(&["send", "faulty", "{not json"]);
    assert_ne!(code, 0);
    assert!(err.contains("not valid JSON"), "{err}");

    let (code, _, err) = with(&["send", "nosuch", "{}"]);
    assert_ne!(code, 0);
    assert!(
        err.contains("unknown function `nosuch`") && err.contains("404"),
        "{err}"
    );

    let (code, _, err) = with(&["send", "faulty", "@/nonexistent.json"]);
    assert_ne!(code, 0);
    assert!(err.contains("cannot read message file"), "{err}");

    let (code, out, err) = with(&["invoke", "faulty", r#"{"action":"permanent"}"#]);
    assert_eq!(code, 2, "a failed invocation exits 2: {out} {err}");
    assert!(out.contains("\"permanent\""), "{out}");

    let (code, _, err) = with(&["send", "faulty", r#"{"action":"permanent"}"#]);
    assert_eq!(code, 0, "{err}");
    let mut dead = String::new();
    for _ in 0..100 {
        dead = with(&["dlq", "list", "faulty"]).1;
        if dead.contains("permanent") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(dead.contains("reason: permanent error"), "{dead}");

    let (code, out, _) = with(&["status", "--json"]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let f = &v["functions"][0];
    for k in [
        "name",
        "visible",
        "in_flight",
        "dlq",
        "workers",
        "processed",
        "failed",
    ] {
        assert!(!f[k].is_null(), "status JSON has `{k}`: {out}");
    }
    assert_eq!(f["failed"], 1, "{out}");
    let (code, out, _) = with(&["status"]);
    assert_eq!(code, 0);
    assert!(out.contains("FUNCTION") && out.contains("faulty"), "{out}");
    assert!(
        out.contains("store kv (embedded): breaker closed"),
        "cache metrics shown: {out}"
    );
    assert!(
        v["stores"][0]["hits"].is_u64() && v["stores"][0]["breaker"] == "closed",
        "{v}"
    );

    let (code, out, _) = with(&["dlq", "redrive", "faulty"]);
    assert_eq!(code, 0);
    assert!(out.contains("redrove 1"), "{out}");

    let (code, _, err) = with(&["kv", "get", "faulty", "missing-key"]);
    assert_ne!(code, 0);
    assert!(err.contains("no key `missing-key`"), "{err}");

    drop(up);
    let (code, _, err) = levee(&["status", "--addr", "127.0.0.1:1"]);
    assert_ne!(code, 0);
    assert!(err.contains("is `levee up` running?"), "{err}");
}

#[test]
fn sigterm_lets_in_flight_messages_finish_and_exits_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = write_manifest(
        dir.path(),
        &[Fn::new(
            "faulty",
            "faulty",
            "concurrency = 2\ntimeout_ms = 1500\nmax_receive = 1",
        )],
    );
    let mut up = LeveeProcess::up(&manifest, free_port());
    let addr = up.addr.clone();
    // A handler that is still running when the signal arrives: it must be settled (here: it
    // times out and is dead-lettered), not abandoned mid-flight.
    let (code, _, err) = up.cli(&["send", "faulty", r#"{"action":"spin"}"#]);
    assert_eq!(code, 0, "{err}");
    std::thread::sleep(std::time::Duration::from_millis(300));
    let pid = up.child.id().to_string();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = up.child.wait().unwrap();
    assert!(exit.success(), "levee up exits 0 on SIGTERM: {exit:?}");
    let log = std::fs::read_to_string(
        dir.path()
            .join(format!("levee-{}.log", addr.rsplit(':').next().unwrap())),
    )
    .unwrap();
    assert!(
        log.contains("finishing in-flight messages") && log.contains("stopped"),
        "{log}"
    );

    // Restarted, the data shows the in-flight message was settled before the exit.
    let again = LeveeProcess::up(&manifest, free_port());
    let (code, out, _) = again.cli(&["status", "--json"]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let f = &v["functions"][0];
    assert_eq!(
        (f["dlq"].as_u64(), f["in_flight"].as_u64()),
        (Some(1), Some(0)),
        "{out}"
    );
}
