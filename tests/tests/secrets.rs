//! Secrets reach the guest through `wasi:config` and nothing else: from the host's environment,
//! and from AWS Secrets Manager on the emulator. `relay` sends its `token` secret to an endpoint
//! that echoes it back in a 401; the secret then sits in the handler's error and on its stderr,
//! and must appear in none of the log lines, the dead-letter reason, `levee status` or
//! `/metrics`, which show `[redacted]` instead.

use std::time::{Duration, Instant};

use levee_tests::http_server::{Canned, TestServer};
use levee_tests::{Fn, LeveeProcess, free_port, with_emulator, write_manifest};

fn manifest(dir: &std::path::Path, origin: &str, source: &str) -> std::path::PathBuf {
    let extra = format!(
        "max_receive = 1\n[functions.relay.secrets]\ntoken = {source}\n\
         [[functions.relay.outbound]]\nurl = \"{origin}\"\n"
    );
    write_manifest(dir, &[Fn::new("relay", "relay", &extra)])
}

async fn echo_server() -> TestServer {
    TestServer::start(|r, _| {
        let said = r.header("authorization").unwrap_or("nothing").to_string();
        Canned::status(401).body(format!("bad credentials: {said}"))
    })
    .await
}

/// Sends one message through `levee up` (a child process) and checks where the secret went.
fn check_redacted(up: &LeveeProcess, server: &TestServer, secret: &str, log: &std::path::Path) {
    let body = format!(
        r#"{{"url": "{}/hook", "payload": {{"n": 1}}}}"#,
        server.origin()
    );
    let (code, out, err) = up.cli(&["send", "relay", &body]);
    assert_eq!(code, 0, "{out}{err}");
    let deadline = Instant::now() + Duration::from_secs(60);
    let dead = loop {
        let (_, out, _) = up.cli(&["dlq", "list", "relay"]);
        if out.contains("401") {
            break out;
        }
        assert!(
            Instant::now() < deadline,
            "dead-lettered within 60 s: {out}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    // The guest did read the secret and send it.
    let sent = server.requests();
    assert_eq!(sent.len(), 1);
    assert_eq!(
        sent[0].header("authorization"),
        Some(format!("Bearer {secret}").as_str())
    );
    assert!(
        dead.contains("[redacted]"),
        "the reason shows [redacted]: {dead}"
    );
    let (_, invoke, invoke_err) = up.cli(&["invoke", "relay", &body]);
    let (_, status, _) = up.cli(&["status", "--json"]);
    let metrics = get(&up.addr, "/metrics");
    std::thread::sleep(Duration::from_millis(300));
    let logs = std::fs::read_to_string(log).unwrap();
    assert!(
        logs.contains("[redacted]"),
        "the guest's stderr line is logged, redacted: {logs}"
    );
    for (what, text) in [
        ("the log", logs.as_str()),
        ("the dead letter", dead.as_str()),
        ("levee invoke", &format!("{invoke}{invoke_err}")),
        ("levee status", status.as_str()),
        ("/metrics", metrics.as_str()),
    ] {
        assert!(
            !text.contains(secret),
            "the secret appears in {what}: {text}"
        );
    }
}

fn get(addr: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

fn log_of(manifest: &std::path::Path, port: u16) -> std::path::PathBuf {
    manifest.with_file_name(format!("levee-{port}.log"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_environment_secret_is_read_by_the_guest_and_redacted_everywhere() {
    let server = echo_server().await;
    let dir = tempfile::tempdir().unwrap();
    let m = manifest(
        dir.path(),
        &server.origin(),
        r#"{ env = "LEVEE_TEST_RELAY_TOKEN" }"#,
    );
    let secret = format!("sk-env-{:016x}", rand_u64());
    let port = free_port();
    let up = LeveeProcess::up_with(&m, port, &[], &[("LEVEE_TEST_RELAY_TOKEN", &secret)]);
    let log = log_of(&m, port);
    tokio::task::block_in_place(|| check_redacted(&up, &server, &secret, &log));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secrets_manager_secret_is_read_on_the_emulator_and_redacted_everywhere() {
    let emu = with_emulator!();
    let sm = aws_sdk_secretsmanager::Client::new(&emu.sdk_config().await);
    let name = levee_tests::emulator::unique("relay-token");
    let secret = format!("sk-aws-{:016x}", rand_u64());
    sm.create_secret()
        .name(&name)
        .secret_string(&secret)
        .send()
        .await
        .expect("creating the secret on the emulator");
    let server = echo_server().await;
    let dir = tempfile::tempdir().unwrap();
    let m = manifest(
        dir.path(),
        &server.origin(),
        &format!(r#"{{ aws = "{name}" }}"#),
    );
    let port = free_port();
    let env = [
        ("AWS_ENDPOINT_URL", emu.endpoint.as_str()),
        ("AWS_REGION", "us-east-1"),
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
    ];
    let up = LeveeProcess::up_with(&m, port, &[], &env);
    let log = log_of(&m, port);
    tokio::task::block_in_place(|| check_redacted(&up, &server, &secret, &log));
}

#[test]
fn a_missing_secret_stops_the_start_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let m = manifest(
        dir.path(),
        "http://127.0.0.1:9",
        r#"{ env = "LEVEE_TEST_UNSET_TOKEN_7C1E" }"#,
    );
    let (code, _, err) = levee_tests::levee(&[
        "up",
        "--manifest",
        m.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
    ]);
    assert_ne!(code, 0);
    assert!(
        err.contains("functions.relay.secrets.token")
            && err.contains("LEVEE_TEST_UNSET_TOKEN_7C1E"),
        "{err}"
    );
}

fn rand_u64() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    t ^ (u64::from(std::process::id()) << 40)
}
