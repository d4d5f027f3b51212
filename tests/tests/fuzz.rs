//! Property-based fuzzing of what clients and operators feed Levee: HTTP requests (routing,
//! headers, bodies) against a running ingress, and manifests. A bounded run is part of the test
//! suite (`PROPTEST_CASES`, default 256 requests and 512 manifests); a longer one:
//!
//! ```sh
//! PROPTEST_CASES=20000 cargo test -p levee-tests --test fuzz -- --nocapture
//! ```

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use levee::ingress::{Ingress, serve_ingress};
use levee::manifest::Manifest;
use levee::platform::{Platform, StartOptions};
use levee_tests::{Fn, guest, repo_root, write_manifest_with};
use proptest::prelude::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Target {
    rt: tokio::runtime::Runtime,
    addr: SocketAddr,
    admin: String,
    chat: String,
    _keep: (
        Arc<Platform>,
        tokio::sync::watch::Sender<bool>,
        tempfile::TempDir,
    ),
}

/// One platform for every request case (in its own runtime), with keys of each kind.
fn target() -> &'static Target {
    static T: OnceLock<Target> = OnceLock::new();
    T.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = write_manifest_with(
            dir.path(),
            "\n[ingress]\nbody_timeout_ms = 2000\n[ingress.groups.chat]\nfunctions = [\"faulty\"]\nrate = 100000\n[ingress.blocking]\nenabled = false",
            &[Fn::new("faulty", "faulty", "max_receive = 1"), Fn::new("noop", "noop", "")],
        );
        let (addr, admin, chat, keep) = rt.block_on(async {
            let m = Manifest::load(&path).unwrap();
            let p = Platform::start(m, StartOptions { run_workers: true, ..Default::default() })
                .await
                .unwrap();
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = l.local_addr().unwrap();
            let ing = Ingress::new(p.clone(), addr);
            let admin = ing.keys.create("admin", "fuzz").await.unwrap().0;
            let chat = ing.keys.create("chat", "fuzz").await.unwrap().0;
            let (stop, rx) = tokio::sync::watch::channel(false);
            tokio::spawn(serve_ingress(l, ing, rx));
            (addr, admin, chat, (p, stop))
        });
        Target { rt, addr, admin, chat, _keep: (keep.0, keep.1, dir) }
    })
}

fn segment() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("v1".to_string()),
        Just("functions".to_string()),
        Just("faulty".to_string()),
        Just("noop".to_string()),
        Just("messages".to_string()),
        Just("invoke".to_string()),
        Just("kv".to_string()),
        Just("dlq".to_string()),
        Just("redrive".to_string()),
        Just("keys".to_string()),
        Just("blocks".to_string()),
        Just("status".to_string()),
        Just("healthz".to_string()),
        Just("body".to_string()),
        Just("%".to_string()),
        Just("%zz".to_string()),
        Just("%ff".to_string()),
        Just("%2F".to_string()),
        "[a-zA-Z0-9._~%-]{0,12}",
    ]
}

fn request() -> impl Strategy<Value = (String, String, Vec<(String, String)>, Vec<u8>)> {
    let method = prop_oneof![
        Just("GET"),
        Just("POST"),
        Just("DELETE"),
        Just("PUT"),
        Just("OPTIONS"),
        Just("HEAD"),
        Just("PATCH")
    ];
    let function = prop_oneof![
        Just("faulty".to_string()),
        Just("noop".to_string()),
        Just("nosuch".to_string()),
        segment()
    ];
    let template = prop_oneof![
        Just("/v1/functions/F/messages"),
        Just("/v1/functions/F/invoke"),
        Just("/v1/functions/F/kv/S"),
        Just("/v1/functions/F/dlq"),
        Just("/v1/functions/F/dlq/S"),
        Just("/v1/functions/F/dlq/S/body"),
        Just("/v1/functions/F/dlq/redrive"),
        Just("/v1/status"),
        Just("/v1/keys"),
        Just("/v1/keys/S"),
        Just("/v1/blocks"),
        Just("/v1/blocks/S"),
        Just("/healthz"),
    ];
    let structured = (template, function, segment(), "(\\?[a-z=&%0-9]{0,20})?")
        .prop_map(|(t, f, s, q)| format!("{}{q}", t.replace('F', &f).replace('S', &s)));
    let random = (
        proptest::collection::vec(segment(), 0..7),
        "(\\?[a-z=&%0-9]{0,20})?",
    )
        .prop_map(|(segs, q)| format!("/{}{q}", segs.join("/")));
    let path = prop_oneof![3 => structured, 1 => random];
    let header = prop_oneof![
        Just(("content-type".to_string(), "application/json".to_string())),
        Just(("content-type".to_string(), "text/plain".to_string())),
        Just((
            "content-type".to_string(),
            "application/json; charset=utf-8".to_string()
        )),
        Just(("authorization".to_string(), "ADMIN".to_string())),
        Just(("authorization".to_string(), "CHAT".to_string())),
        Just((
            "authorization".to_string(),
            "Bearer lvk_000000000000_xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx".to_string()
        )),
        Just(("authorization".to_string(), "Bearer".to_string())),
        Just(("origin".to_string(), "https://evil.example".to_string())),
        Just(("x-levee-client".to_string(), "fuzz/1".to_string())),
        ("[a-z-]{1,12}", "[ -~]{0,40}").prop_map(|(k, v)| (k, v)),
    ];
    let body = prop_oneof![
        Just(Vec::new()),
        Just(br#"{"action":"ok"}"#.to_vec()),
        Just(br#"{"group":"chat"}"#.to_vec()),
        Just(b"{not json".to_vec()),
        proptest::collection::vec(any::<u8>(), 0..300),
        "[ -~]{0,200}".prop_map(String::into_bytes),
    ];
    (method, path, proptest::collection::vec(header, 0..5), body)
        .prop_map(|(m, p, h, b)| (m.to_string(), p, h, b))
}

/// Sends one framed request and returns the status line's code and the head of the answer.
async fn send(
    t: &Target,
    method: &str,
    path: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> (u16, String) {
    let mut head = format!("{method} {path} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n");
    for (k, v) in headers {
        let v = match v.as_str() {
            "ADMIN" => format!("Bearer {}", t.admin),
            "CHAT" => format!("Bearer {}", t.chat),
            _ => v.clone(),
        };
        if k != "host" && k != "content-length" && k != "transfer-encoding" && k != "connection" {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
    }
    head.push_str(&format!("content-length: {}\r\n\r\n", body.len()));
    let mut s = tokio::net::TcpStream::connect(t.addr).await.unwrap();
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(body).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .expect("the ingress answered within 10 s")
        .ok();
    let text = String::from_utf8_lossy(&out).into_owned();
    let code = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, text.chars().take(400).collect())
}

/// Any request gets an answer: a 2xx, a 4xx with a reason, or a 503 with Retry-After; never a
/// 500, a panic or silence. Prints how the cases were answered.
#[test]
fn any_request_gets_a_4xx_or_a_success_never_a_5xx() {
    let t = target();
    let config = ProptestConfig {
        cases: cases(256),
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    let seen = std::cell::RefCell::new(std::collections::BTreeMap::<u16, u64>::new());
    // A fixed seed: the suite's run is the same every time (PROPTEST_CASES makes it longer).
    let rng = proptest::test_runner::TestRng::deterministic_rng(
        proptest::test_runner::RngAlgorithm::ChaCha,
    );
    let mut runner = proptest::test_runner::TestRunner::new_with_rng(config, rng);
    let result = runner.run(&request(), |(method, path, headers, body)| {
        let (code, text) = t.rt.block_on(send(t, &method, &path, &headers, &body));
        *seen.borrow_mut().entry(code).or_default() += 1;
        prop_assert!(code != 0, "no answer to {method} {path}: {text}");
        prop_assert!(
            code < 500 || (code == 503 && text.to_lowercase().contains("retry-after")),
            "{method} {path} {headers:?} → {text}"
        );
        if code >= 400 && method != "HEAD" {
            prop_assert!(
                text.contains("\"error\""),
                "a refusal carries a reason: {text}"
            );
        }
        Ok(())
    });
    let seen = seen.into_inner();
    eprintln!("fuzzed requests by status: {seen:?}");
    if let Err(e) = result {
        panic!("{e}");
    }
    assert!(
        seen.keys().any(|c| (200..300).contains(c)),
        "some cases succeed: {seen:?}"
    );
    assert!(seen.len() >= 5, "the cases reach many answers: {seen:?}");
}

fn sample() -> &'static str {
    static S: OnceLock<String> = OnceLock::new();
    S.get_or_init(|| std::fs::read_to_string(repo_root().join("levee.toml")).unwrap())
}

/// A value of a wrong kind or out of range.
fn bad_value() -> impl Strategy<Value = &'static str> {
    prop_oneof![
        Just("-1"),
        Just("0"),
        Just("1e20"),
        Just("18446744073709551615"),
        Just("3.5"),
        Just("\"x\""),
        Just("\"\""),
        Just("true"),
        Just("[]"),
        Just("{}"),
        Just("nan"),
        Just("inf"),
        Just("[\"nosuch\"]"),
        Just("\"0.0.0.0:99999\""),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(512), failure_persistence: None, ..ProptestConfig::default() })]

    /// One value of the sample manifest replaced by a wrong one: parsing never panics, and a
    /// refusal names the field it is about.
    #[test]
    fn a_bad_value_in_the_manifest_is_named(line in any::<prop::sample::Index>(), value in bad_value()) {
        let lines: Vec<&str> = sample().lines().collect();
        let settable: Vec<usize> = (0..lines.len())
            .filter(|&i| !lines[i].trim_start().starts_with('#') && lines[i].contains(" = "))
            .collect();
        let i = settable[line.index(settable.len())];
        let key = lines[i].split(" = ").next().unwrap().trim().to_string();
        let mut edited: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
        edited[i] = format!("{key} = {value}");
        let text = edited.join("\n");
        match Manifest::parse(&text, Path::new("/nonexistent")) {
            Ok(_) => {}
            Err(e) => {
                let msg = e.to_string();
                prop_assert!(msg.contains(&key), "`{key} = {value}` refused without naming `{key}`: {msg}");
            }
        }
    }

    /// Arbitrary text: never a panic, always an error with a message.
    #[test]
    fn garbage_manifests_are_refused_without_a_panic(text in "[\\[\\]a-z0-9=\"., \n{}#-]{0,300}") {
        if let Err(e) = Manifest::parse(&text, Path::new("/nonexistent")) {
            prop_assert!(!e.to_string().is_empty());
        }
    }
}

/// The guest components exist before the request fuzzing starts its platform.
#[test]
fn guests_are_built() {
    assert!(guest("faulty").exists());
}
