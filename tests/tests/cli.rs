//! The CLI and HTTP API from a user's side: clear errors for bad manifests and bad input,
//! and every client command against a running `levee up`.

use levee_tests::{Fn, LeveeProcess, free_port, levee, write_manifest, write_manifest_with};

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

#[test]
fn out_of_range_flags_and_traces_are_refused_without_a_panic() {
    let (code, _, err) = levee(&[
        "load",
        "--rate",
        "10",
        "--duration",
        "10",
        "--surge-rate",
        "20",
        "--surge-at",
        "1",
        "--surge-for",
        "18446744073709551615",
    ]);
    assert_eq!(code, 2, "a usage error: {err}");
    assert!(
        err.contains("--surge-for") && !err.contains("panicked"),
        "{err}"
    );
    let dir = tempfile::tempdir().unwrap();
    for (t, why) in [
        ("1e20", "one day"),
        ("1e9", "one day"),
        ("-1", "must be 0 to"),
    ] {
        let trace = dir.path().join("trace.csv");
        std::fs::write(
            &trace,
            format!("t_seconds,function,rate_per_second\n0,inbound,10\n{t},inbound,0\n"),
        )
        .unwrap();
        let out = dir.path().join("out");
        let (code, _, err) = levee(&[
            "sim",
            "--trace",
            trace.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ]);
        assert_ne!(code, 0, "t_seconds={t}");
        assert!(
            err.contains(why) && !err.contains("panicked"),
            "t_seconds={t}: {err}"
        );
    }
}

#[test]
fn keys_and_blocks_from_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = write_manifest_with(
        dir.path(),
        "\n[ingress.groups.chat]\nfunctions = [\"faulty\"]",
        &[Fn::new("faulty", "faulty", "")],
    );
    let up = LeveeProcess::up(&manifest, free_port());
    let (code, out, err) = up.cli(&["keys", "create", "--group", "chat", "--name", "widget"]);
    assert_eq!(code, 0, "{err}");
    let key = out.trim().to_string();
    assert!(key.starts_with("lvk_"), "the key alone on stdout: {out}");
    assert!(err.contains("shown once"), "{err}");
    let id = key[4..16].to_string();
    // The new key sends to its group; it cannot manage keys.
    let send = |key: &str| {
        std::process::Command::new(levee_tests::levee_bin())
            .args(["send", "faulty", r#"{"action":"ok"}"#, "--addr", &up.addr])
            .env("LEVEE_KEY", key)
            .output()
            .unwrap()
    };
    assert!(send(&key).status.success());
    let (code, out, _) = up.cli(&["keys", "list"]);
    assert_eq!(code, 0);
    assert!(
        out.contains(&id) && out.contains("widget") && out.contains("active"),
        "{out}"
    );
    assert!(!out.contains(&key[17..]), "no secret in the list: {out}");
    let (code, _, err) = up.cli(&["keys", "revoke", &id]);
    assert_eq!(code, 0, "{err}");
    let denied = send(&key);
    assert!(!denied.status.success());
    assert!(String::from_utf8_lossy(&denied.stderr).contains("401"));
    let (code, out, _) = up.cli(&["blocks", "list"]);
    assert_eq!(code, 0);
    assert!(out.contains("no blocked sources"), "{out}");
    let (code, _, err) = up.cli(&["blocks", "remove", "nosuch|x|127.0.0.1"]);
    assert_ne!(code, 0);
    assert!(err.contains("not blocked"), "{err}");
    // Without a key the CLI says how to get one.
    let (code, _, err) = levee(&["status", "--addr", &up.addr, "--key-file", "/nonexistent"]);
    assert_ne!(code, 0);
    assert!(err.contains("API key is required"), "{err}");
    // A direct key for the manifest's store (the first admin key of a deployment).
    drop(up);
    let (code, out, err) = levee(&[
        "keys",
        "create",
        "--group",
        "admin",
        "--direct",
        "--manifest",
        manifest.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    let admin = out.trim().to_string();
    let again = LeveeProcess::up(&manifest, free_port());
    let out = std::process::Command::new(levee_tests::levee_bin())
        .args(["keys", "list", "--addr", &again.addr])
        .env("LEVEE_KEY", &admin)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn an_ingress_only_host_accepts_messages_and_runs_no_workers() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = write_manifest(dir.path(), &levee_tests::pipeline_fns(2));
    let up = LeveeProcess::up_with(&manifest, free_port(), &["--ingress-only"], &[]);
    let (code, out, err) = up.cli(&["send", "inbound", r#"{"org": "acme", "conversation": "c-1", "channel": "chat", "from": "a@b.c", "text": "hi"}"#]);
    assert_eq!(code, 0, "{out}{err}");
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let (code, out, err) = up.cli(&["status", "--json"]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let inbound = v["functions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "inbound")
        .unwrap()
        .clone();
    assert_eq!(inbound["visible"], 1, "waits for a worker host: {inbound}");
    assert_eq!(inbound["invocations"], 0, "{inbound}");
    let (code, _, err) = levee(&["up", "--ingress-only", "--function", "inbound"]);
    assert_ne!(code, 0);
    assert!(err.contains("cannot be used with"), "{err}");
}
