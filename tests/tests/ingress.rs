//! The ingress against hostile and careless clients: keys on every route, groups as bulkheads,
//! per-source limits and automatic blocking, strict input, and every connection-level bound
//! (header, body and idle timeouts, connection caps, the body budget).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::Method;
use levee::client::{Answer, call, call_as};
use levee::ingress::{Ingress, serve_ingress};
use levee::manifest::Manifest;
use levee::platform::{Platform, StartOptions};
use levee_tests::guest;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

struct Api {
    addr: SocketAddr,
    admin: String,
    ingress: Arc<Ingress>,
    _platform: Arc<Platform>,
    _stop: tokio::sync::watch::Sender<bool>,
    _dir: tempfile::TempDir,
}

impl Api {
    fn addr(&self) -> String {
        self.addr.to_string()
    }
    async fn key(&self, group: &str) -> String {
        self.ingress.keys.create(group, "test").await.unwrap().0
    }
    async fn call(&self, key: Option<&str>, method: Method, path: &str, body: &str) -> Answer {
        call(&self.addr(), key, method, path, body.as_bytes().to_vec())
            .await
            .unwrap()
    }
}

/// The platform of `ingress` (TOML lines of `[ingress]` and its tables) in this process:
/// `faulty` public in group `chat`, `tally` public in `events`, `noop` internal.
async fn start(ingress: &str) -> Api {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        r#"
[platform]
data_dir = "data"

[functions.faulty]
module = "{faulty}"
public = true
concurrency = 1
backoff_ms = 20
max_receive = 1

[functions.tally]
module = "{tally}"
public = true
concurrency = 1

[functions.noop]
module = "{noop}"
concurrency = 1

[ingress]
{ingress}
"#,
        faulty = guest("faulty").display(),
        tally = guest("tally").display(),
        noop = guest("noop").display(),
    );
    let path = dir.path().join("levee.toml");
    std::fs::write(&path, text).unwrap();
    let m = Manifest::load(&path).expect("valid test manifest");
    let platform = Platform::start(
        m,
        StartOptions {
            run_workers: true,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let ingress = Ingress::new(platform.clone(), addr);
    let admin = ingress.keys.create("admin", "test").await.unwrap().0;
    let (stop, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(serve_ingress(listener, ingress.clone(), rx));
    Api {
        addr,
        admin,
        ingress,
        _platform: platform,
        _stop: stop,
        _dir: dir,
    }
}

const GROUPS: &str = r#"
[ingress.groups.chat]
functions = ["faulty"]
[ingress.groups.events]
functions = ["tally"]
"#;

fn reason(a: &Answer) -> String {
    serde_json::from_slice::<serde_json::Value>(&a.body)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_string))
        .unwrap_or_default()
}

/// Writes `raw` on a fresh connection and reads until the server closes it or `wait` passes.
async fn raw(addr: SocketAddr, raw: &[u8], wait: Duration) -> (String, bool) {
    read_answer(addr, raw, wait, true).await
}

/// Writes `raw` and reads one whole answer (headers and `content-length` body).
async fn answer(addr: SocketAddr, raw: &[u8]) -> String {
    read_answer(addr, raw, Duration::from_secs(5), false)
        .await
        .0
}

async fn read_answer(
    addr: SocketAddr,
    raw: &[u8],
    wait: Duration,
    until_close: bool,
) -> (String, bool) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(raw).await.unwrap();
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + wait;
    let mut buf = vec![0u8; 65536];
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Err(_) => return (String::from_utf8_lossy(&out).into_owned(), false),
            Ok(Ok(0)) | Ok(Err(_)) => return (String::from_utf8_lossy(&out).into_owned(), true),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
        let text = String::from_utf8_lossy(&out).into_owned();
        if !until_close && let Some(end) = text.find("\r\n\r\n") {
            let len = text[..end]
                .lines()
                .find_map(|l| {
                    l.to_lowercase()
                        .strip_prefix("content-length: ")
                        .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                })
                .unwrap_or(0);
            if out.len() >= end + 4 + len {
                return (text, false);
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_but_healthz_needs_a_key_and_admin_routes_an_admin_key() {
    let api = start(GROUPS).await;
    let chat = api.key("chat").await;
    let events = api.key("events").await;
    let ok = r#"{"action":"ok"}"#;

    let a = api.call(None, Method::GET, "/healthz", "").await;
    assert_eq!(a.status, 200);
    for (method, path) in [
        (Method::GET, "/v1/status"),
        (Method::POST, "/v1/functions/faulty/messages"),
        (Method::GET, "/v1/functions/faulty/kv/x"),
        (Method::GET, "/v1/keys"),
    ] {
        let a = api.call(None, method.clone(), path, ok).await;
        assert_eq!(a.status, 401, "{path} without a key");
        let a = api
            .call(
                Some("lvk_0123456789ab_notthesecretnotthesecretnotthesecret00"),
                method,
                path,
                ok,
            )
            .await;
        assert_eq!(a.status, 401, "{path} with a wrong key");
        assert!(
            !reason(&a).contains("notthesecret"),
            "the key is not echoed: {}",
            reason(&a)
        );
    }

    // A group key sends to its own public function only.
    let a = api
        .call(
            Some(&chat),
            Method::POST,
            "/v1/functions/faulty/messages",
            ok,
        )
        .await;
    assert_eq!(a.status, 202, "{}", reason(&a));
    let a = api
        .call(
            Some(&chat),
            Method::POST,
            "/v1/functions/tally/messages",
            r#"{"key":"a"}"#,
        )
        .await;
    assert_eq!(a.status, 403);
    assert!(reason(&a).contains("group `events`"), "{}", reason(&a));
    let a = api
        .call(
            Some(&events),
            Method::POST,
            "/v1/functions/tally/messages",
            r#"{"key":"a"}"#,
        )
        .await;
    assert_eq!(a.status, 202, "{}", reason(&a));
    // An internal function takes no message from outside, not even with an admin key.
    for key in [&chat, &api.admin] {
        let a = api
            .call(Some(key), Method::POST, "/v1/functions/noop/messages", "{}")
            .await;
        assert_eq!(a.status, 403, "{}", reason(&a));
        assert!(
            reason(&a).contains("not a public entry point"),
            "{}",
            reason(&a)
        );
    }
    // Status with any key; kv, dlq, invoke, redrive and keys with an admin key only.
    assert_eq!(
        api.call(Some(&chat), Method::GET, "/v1/status", "")
            .await
            .status,
        200
    );
    for (method, path, body) in [
        (Method::GET, "/v1/functions/faulty/kv/x", ""),
        (Method::GET, "/v1/functions/faulty/dlq", ""),
        (Method::POST, "/v1/functions/faulty/dlq/redrive", "{}"),
        (Method::POST, "/v1/functions/faulty/invoke", ok),
        (Method::GET, "/v1/keys", ""),
        (Method::POST, "/v1/keys", r#"{"group":"chat"}"#),
        (Method::GET, "/v1/blocks", ""),
    ] {
        let a = api.call(Some(&chat), method.clone(), path, body).await;
        assert_eq!(a.status, 403, "{method} {path} with a chat key");
        assert!(reason(&a).contains("admin key"), "{}", reason(&a));
        let a = api.call(Some(&api.admin), method.clone(), path, body).await;
        assert!(
            a.status.is_success() || a.status == 404,
            "{method} {path} as admin: {} {}",
            a.status,
            reason(&a)
        );
    }

    // Keys: created through the API, listed without secrets, revoked for good.
    let a = api
        .call(
            Some(&api.admin),
            Method::POST,
            "/v1/keys",
            r#"{"group":"chat","name":"web"}"#,
        )
        .await;
    assert_eq!(a.status, 201);
    let made: serde_json::Value = serde_json::from_slice(&a.body).unwrap();
    let key = made["key"].as_str().unwrap().to_string();
    let id = made["id"].as_str().unwrap().to_string();
    let a = api
        .call(
            Some(&key),
            Method::POST,
            "/v1/functions/faulty/messages",
            ok,
        )
        .await;
    assert_eq!(a.status, 202);
    let list = api
        .call(Some(&api.admin), Method::GET, "/v1/keys", "")
        .await;
    let text = String::from_utf8_lossy(&list.body).to_string();
    assert!(
        text.contains(&id) && !text.contains(&key[17..]) && !text.contains("hash"),
        "{text}"
    );
    let a = api
        .call(
            Some(&api.admin),
            Method::DELETE,
            &format!("/v1/keys/{id}"),
            "",
        )
        .await;
    assert_eq!(a.status, 200);
    let a = api
        .call(
            Some(&key),
            Method::POST,
            "/v1/functions/faulty/messages",
            ok,
        )
        .await;
    assert_eq!(
        a.status, 401,
        "a revoked key is refused at once on this host"
    );
    let a = api
        .call(
            Some(&api.admin),
            Method::POST,
            "/v1/keys",
            r#"{"group":"nosuch"}"#,
        )
        .await;
    assert_eq!(a.status, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_4xx_with_a_reason_never_a_5xx() {
    let api = start(GROUPS).await;
    let k = format!("Bearer {}", api.admin);
    let send = "/v1/functions/faulty/messages";
    let cases: Vec<(String, u16, &str)> = vec![
        // Not JSON, by type or by content.
        (
            format!(
                "POST {send} HTTP/1.1\r\nhost: localhost\r\nauthorization: {k}\r\ncontent-type: text/plain\r\ncontent-length: 2\r\n\r\n{{}}"
            ),
            415,
            "must be JSON",
        ),
        (
            format!(
                "POST {send} HTTP/1.1\r\nhost: localhost\r\nauthorization: {k}\r\ncontent-type: application/json\r\ncontent-length: 4\r\n\r\n{{not"
            ),
            400,
            "not valid JSON",
        ),
        // A Content-Length far over the limit is refused before reading a byte.
        (
            format!(
                "POST {send} HTTP/1.1\r\nhost: localhost\r\nauthorization: {k}\r\ncontent-type: application/json\r\ncontent-length: 99999999999\r\n\r\n"
            ),
            413,
            "larger than the limit",
        ),
        // DNS rebinding: a Host this API does not serve.
        (
            format!(
                "GET /v1/status HTTP/1.1\r\nhost: evil.example:80\r\nauthorization: {k}\r\n\r\n"
            ),
            421,
            "Host is not served",
        ),
        // A page on another origin.
        (
            format!(
                "POST {send} HTTP/1.1\r\nhost: localhost\r\norigin: https://evil.example\r\nauthorization: {k}\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{{}}"
            ),
            403,
            "cross-origin",
        ),
        // Paths: a bad escape and bytes that are not UTF-8 are 400s, never another key.
        (
            format!(
                "GET /v1/functions/faulty/kv/a%zz HTTP/1.1\r\nhost: localhost\r\nauthorization: {k}\r\n\r\n"
            ),
            400,
            "percent-escape",
        ),
        (
            format!(
                "GET /v1/functions/faulty/kv/a%ff%fe HTTP/1.1\r\nhost: localhost\r\nauthorization: {k}\r\n\r\n"
            ),
            400,
            "not UTF-8",
        ),
        (
            format!(
                "GET /v1/functions/nosuch/kv/a HTTP/1.1\r\nhost: localhost\r\nauthorization: {k}\r\n\r\n"
            ),
            400,
            "unknown function",
        ),
        (
            format!("DELETE {send} HTTP/1.1\r\nhost: localhost\r\nauthorization: {k}\r\n\r\n"),
            405,
            "not allowed",
        ),
        (
            format!(
                "GET /v1/functions/faulty/dlq?limit=1000 HTTP/1.1\r\nhost: localhost\r\nauthorization: {k}\r\n\r\n"
            ),
            400,
            "limit",
        ),
        (
            format!("GET /nope HTTP/1.1\r\nhost: localhost\r\nauthorization: {k}\r\n\r\n"),
            404,
            "no such route",
        ),
        (
            "GET /v1/status HTTP/1.1\r\nhost: localhost\r\nauthorization: Basic abc\r\n\r\n"
                .to_string(),
            401,
            "API key is required",
        ),
    ];
    for (req, status, why) in cases {
        let resp = answer(api.addr, req.as_bytes()).await;
        let first = resp.lines().next().unwrap_or("");
        let code = first.split(' ').nth(1).unwrap_or("");
        assert!(
            code == status.to_string() || (status == 400 && code == "404"),
            "expected {status} for {req:?}, got {first}: {resp}"
        );
        assert!(resp.contains(why), "reason `{why}` in {resp}");
    }
    // A CORS preflight from an unknown origin is refused; no CORS header leaks.
    let resp = answer(
        api.addr,
        b"OPTIONS /v1/status HTTP/1.1\r\nhost: localhost\r\norigin: https://evil.example\r\n\r\n",
    )
    .await;
    assert!(
        resp.starts_with("HTTP/1.1 403") && !resp.to_lowercase().contains("access-control"),
        "{resp}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_partial_and_idle_clients_are_cut_off() {
    let api = start(&format!(
        "header_timeout_ms = 400\nbody_timeout_ms = 600\nidle_timeout_ms = 500\n{GROUPS}"
    ))
    .await;
    let t0 = Instant::now();
    // Headers that never end.
    let (_, closed) = raw(
        api.addr,
        b"GET /v1/status HTTP/1.1\r\nhost: local",
        Duration::from_secs(5),
    )
    .await;
    assert!(closed, "a slow header is closed");
    assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
    // Nothing at all.
    let t0 = Instant::now();
    let (_, closed) = raw(api.addr, b"", Duration::from_secs(5)).await;
    assert!(
        closed && t0.elapsed() < Duration::from_secs(3),
        "a silent connection is closed"
    );
    // A chunked body without an end: 408 once the body deadline passes.
    let req = format!(
        "POST /v1/functions/faulty/messages HTTP/1.1\r\nhost: localhost\r\nauthorization: Bearer {}\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n5\r\n{{\"a\":",
        api.admin
    );
    let t0 = Instant::now();
    let (resp, closed) = raw(api.addr, req.as_bytes(), Duration::from_secs(5)).await;
    assert!(resp.starts_with("HTTP/1.1 408"), "{resp}");
    assert!(closed && t0.elapsed() < Duration::from_secs(3));
    // An idle keep-alive connection after one request.
    let req = format!(
        "GET /v1/status HTTP/1.1\r\nhost: localhost\r\nauthorization: Bearer {}\r\n\r\n",
        api.admin
    );
    let t0 = Instant::now();
    let (resp, closed) = raw(api.addr, req.as_bytes(), Duration::from_secs(5)).await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(
        closed && t0.elapsed() < Duration::from_secs(3),
        "idle keep-alive closed after {:?}",
        t0.elapsed()
    );
    assert_eq!(
        api.ingress.status().connections,
        0,
        "every connection was released"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_flood_from_one_peer_leaves_room_for_others() {
    let api = start(&format!(
        "max_connections = 60\nmax_connections_per_peer = 20\nheader_timeout_ms = 30000\nidle_timeout_ms = 30000\n{GROUPS}"
    ))
    .await;
    // 80 connections from 127.0.0.1 holding partial headers.
    let mut held = Vec::new();
    for _ in 0..80 {
        let mut s = TcpStream::connect(api.addr).await.unwrap();
        let _ = s.write_all(b"GET /v1/status HTTP/1.1\r\nhost: loc").await;
        held.push(s);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let st = api.ingress.status();
    assert_eq!(
        st.connections, 20,
        "one peer holds at most its share: {st:?}"
    );
    assert!(st.shed_connections >= 60, "{st:?}");
    // Those over the bound were answered 503 and closed.
    let mut answered = 0;
    for s in held.iter_mut().skip(20) {
        let mut buf = vec![0u8; 256];
        if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf)).await
            && String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 503")
        {
            answered += 1;
        }
    }
    assert!(
        answered >= 50,
        "{answered} of 60 shed connections got a 503"
    );
    // Another peer (127.0.0.2) is served at once, /healthz and keyed routes alike.
    for path in ["/healthz", "/v1/status"] {
        let sock = TcpSocket::new_v4().unwrap();
        sock.bind("127.0.0.2:0".parse().unwrap()).unwrap();
        let mut s = sock.connect(api.addr).await.unwrap();
        let req = format!(
            "GET {path} HTTP/1.1\r\nhost: localhost\r\nauthorization: Bearer {}\r\nconnection: close\r\n\r\n",
            api.admin
        );
        s.write_all(req.as_bytes()).await.unwrap();
        let mut out = String::new();
        tokio::time::timeout(Duration::from_secs(3), s.read_to_string(&mut out))
            .await
            .expect("answered in time")
            .unwrap();
        assert!(out.starts_with("HTTP/1.1 200"), "{path}: {out}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_bodies_share_a_budget() {
    // The smallest budget: one largest body (10 MiB).
    let api = start(&format!(
        "max_inflight_body_bytes = 10485760\nbody_timeout_ms = 5000\n{GROUPS}"
    ))
    .await;
    let head = |len: usize| {
        format!(
            "POST /v1/functions/faulty/messages HTTP/1.1\r\nhost: localhost\r\nauthorization: Bearer {}\r\ncontent-type: application/json\r\ncontent-length: {len}\r\n\r\n",
            api.admin
        )
    };
    // One upload of 6 MiB holds its share while it trickles in...
    let mut slow = TcpStream::connect(api.addr).await.unwrap();
    slow.write_all(head(6 << 20).as_bytes()).await.unwrap();
    slow.write_all(b"{\"a\":\"").await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(api.ingress.status().body_bytes_in_flight, 6 << 20);
    // ...so a second one of 6 MiB is shed at once with 503 and Retry-After.
    let resp = answer(api.addr, head(6 << 20).as_bytes()).await;
    assert!(
        resp.starts_with("HTTP/1.1 503") && resp.to_lowercase().contains("retry-after"),
        "{resp}"
    );
    // A small one still fits.
    let a = api
        .call(
            Some(&api.admin),
            Method::POST,
            "/v1/functions/faulty/messages",
            r#"{"action":"ok"}"#,
        )
        .await;
    assert_eq!(a.status, 202);
    drop(slow);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        api.ingress.status().body_bytes_in_flight,
        0,
        "released when the client left"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_source_limits_answer_429_with_retry_after() {
    let api = start(
        r#"
[ingress.blocking]
enabled = false
[ingress.groups.chat]
functions = ["faulty"]
rate = 2
burst = 5
"#,
    )
    .await;
    let chat = api.key("chat").await;
    let send = |client: &'static str| {
        let (addr, chat) = (api.addr(), chat.clone());
        async move {
            call_as(
                &addr,
                Some(&chat),
                Some(client),
                Method::POST,
                "/v1/functions/faulty/messages",
                br#"{"action":"ok"}"#.to_vec(),
            )
            .await
            .unwrap()
        }
    };
    for _ in 0..5 {
        assert_eq!(send("sdk-a/1").await.status, 202);
    }
    let a = send("sdk-a/1").await;
    assert_eq!(a.status, 429, "{}", reason(&a));
    assert!(reason(&a).contains("rate limit of group `chat`"));
    // Another client behind the same key is another source with its own bucket.
    assert_eq!(send("sdk-b/1").await.status, 202);
    let st = api.ingress.status();
    let chat_st = st.groups.iter().find(|g| g.name == "chat").unwrap();
    assert_eq!(chat_st.limited, 1, "{chat_st:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_surging_source_is_blocked_listed_and_lifted() {
    let api = start(
        r#"
[ingress.blocking]
factor = 5
min_rate = 5
window_ms = 500
ttl_s = 60
[ingress.groups.chat]
functions = ["faulty"]
rate = 1000
"#,
    )
    .await;
    let chat = api.key("chat").await;
    let t0 = Instant::now();
    let mut blocked_after = None;
    while t0.elapsed() < Duration::from_secs(5) {
        let a = call_as(
            &api.addr(),
            Some(&chat),
            Some("stuck/1"),
            Method::GET,
            "/v1/status",
            vec![],
        )
        .await
        .unwrap();
        if a.status == 429 && reason(&a).contains("blocked") {
            blocked_after = Some(t0.elapsed());
            assert!(a.status == 429);
            break;
        }
    }
    let after = blocked_after.expect("the surging source was blocked");
    assert!(after < Duration::from_secs(3), "{after:?}");
    let blocks = api
        .call(Some(&api.admin), Method::GET, "/v1/blocks", "")
        .await;
    let v: serde_json::Value = serde_json::from_slice(&blocks.body).unwrap();
    let source = v["blocks"][0]["source"].as_str().unwrap().to_string();
    assert!(source.contains("stuck/1|127.0.0.1"), "{v}");
    // Others are not affected.
    let a = call_as(
        &api.addr(),
        Some(&chat),
        Some("calm/1"),
        Method::GET,
        "/v1/status",
        vec![],
    )
    .await
    .unwrap();
    assert_eq!(a.status, 200);
    let path = format!("/v1/blocks/{}", levee::client::encode_segment(&source));
    assert_eq!(
        api.call(Some(&api.admin), Method::DELETE, &path, "")
            .await
            .status,
        200
    );
    let a = call_as(
        &api.addr(),
        Some(&chat),
        Some("stuck/1"),
        Method::GET,
        "/v1/status",
        vec![],
    )
    .await
    .unwrap();
    assert_eq!(a.status, 200, "lifted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_group_sheds_while_other_groups_and_invoke_limits_hold() {
    let api = start(
        r#"
invoke_concurrency = 1
[ingress.groups.chat]
functions = ["faulty"]
[ingress.groups.ops]
routes = ["invoke", "status"]
concurrency = 1
queue = 0
queue_timeout_ms = 100
"#,
    )
    .await;
    // One slow invoke holds the ops group's only slot.
    let (addr, admin) = (api.addr(), api.admin.clone());
    let slow = tokio::spawn(async move {
        call(
            &addr,
            Some(&admin),
            Method::POST,
            "/v1/functions/faulty/invoke",
            br#"{"action":"sleep","ms":1500}"#.to_vec(),
        )
        .await
        .unwrap()
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let a = api
        .call(Some(&api.admin), Method::GET, "/v1/status", "")
        .await;
    assert_eq!(a.status, 503, "{}", reason(&a));
    assert!(reason(&a).contains("group `ops`"), "{}", reason(&a));
    // The chat group is untouched.
    let t0 = Instant::now();
    let a = api
        .call(
            Some(&api.admin),
            Method::POST,
            "/v1/functions/faulty/messages",
            r#"{"action":"ok"}"#,
        )
        .await;
    assert_eq!(a.status, 202);
    assert!(t0.elapsed() < Duration::from_millis(500));
    assert_eq!(slow.await.unwrap().status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_come_in_bounded_pages_and_keep_their_history() {
    let api = start(GROUPS).await;
    let pad = "x".repeat(1 << 20);
    for i in 0..3 {
        let body = format!(r#"{{"action":"permanent","n":{i},"pad":"{pad}"}}"#);
        let a = api
            .call(
                Some(&api.admin),
                Method::POST,
                "/v1/functions/faulty/messages",
                &body,
            )
            .await;
        assert_eq!(a.status, 202, "{}", reason(&a));
    }
    let page = |path: String| {
        let api = &api;
        async move {
            let a = api.call(Some(&api.admin), Method::GET, &path, "").await;
            assert_eq!(a.status, 200, "{}", reason(&a));
            (
                a.body.len(),
                serde_json::from_slice::<serde_json::Value>(&a.body).unwrap(),
            )
        }
    };
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(20) {
        let (_, v) = page("/v1/functions/faulty/dlq?limit=10".into()).await;
        if v["messages"].as_array().is_some_and(|m| m.len() == 3) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (len, first) = page("/v1/functions/faulty/dlq?limit=2".into()).await;
    // Two dead letters of 1 MiB each: the page is their summaries, a few hundred bytes each.
    assert!(len < 4096, "a page of 2 is {len} bytes: {first}");
    let msgs = first["messages"].as_array().unwrap();
    assert_eq!(msgs.len(), 2, "{first}");
    for m in msgs {
        assert!(m["size"].as_u64().unwrap() > 1 << 20, "{m}");
        assert!(m["preview"].as_str().unwrap().len() <= 256, "{m}");
        assert!(m["reason"].as_str().unwrap().contains("permanent"), "{m}");
    }
    let next = first["next"]
        .as_str()
        .expect("a cursor to the rest")
        .to_string();
    let path = format!(
        "/v1/functions/faulty/dlq?limit=2&after={}",
        levee::client::encode_segment(&next)
    );
    let (_, second) = page(path).await;
    assert_eq!(second["messages"].as_array().unwrap().len(), 1, "{second}");
    assert!(second["next"].is_null(), "{second}");
    // One body on its own, whole.
    let id = msgs[0]["id"].as_str().unwrap();
    let a = api
        .call(
            Some(&api.admin),
            Method::GET,
            &format!("/v1/functions/faulty/dlq/{id}/body"),
            "",
        )
        .await;
    assert_eq!(a.status, 200);
    assert_eq!(a.body.len() as u64, msgs[0]["size"].as_u64().unwrap());
    let (_, one) = page(format!("/v1/functions/faulty/dlq/{id}")).await;
    assert_eq!(one["id"], id);
    let a = api
        .call(
            Some(&api.admin),
            Method::GET,
            "/v1/functions/faulty/dlq/nosuch",
            "",
        )
        .await;
    assert_eq!(a.status, 404);
    // A redrive keeps the history: dead again, each shows its earlier death.
    let a = api
        .call(
            Some(&api.admin),
            Method::POST,
            "/v1/functions/faulty/dlq/redrive",
            "{}",
        )
        .await;
    assert_eq!(a.status, 200, "{}", reason(&a));
    let t0 = Instant::now();
    let again = loop {
        let (_, v) = page("/v1/functions/faulty/dlq?limit=10".into()).await;
        let done = v["messages"].as_array().is_some_and(|m| {
            m.len() == 3
                && m.iter()
                    .all(|d| d["history"].as_array().is_some_and(|h| h.len() == 1))
        });
        if done || t0.elapsed() > Duration::from_secs(20) {
            break v;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    for m in again["messages"].as_array().unwrap() {
        let h = &m["history"][0];
        assert!(
            h["reason"].as_str().unwrap().contains("permanent") && h["receive_count"] == 1,
            "{m}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_connection_bound_the_idlest_connection_makes_room() {
    let api = start(&format!(
        "max_connections = 30\nmax_connections_per_peer = 1000\nheader_timeout_ms = 30000\nidle_timeout_ms = 30000\n{GROUPS}"
    ))
    .await;
    let mut held = Vec::new();
    for _ in 0..30 {
        let mut s = TcpStream::connect(api.addr).await.unwrap();
        s.write_all(b"GET /v1/status HTTP/1.1\r\nhost: loc")
            .await
            .unwrap();
        held.push(s);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(api.ingress.status().connections, 30);
    // Every slot holds a half-sent header: a new client is still answered, at once.
    for _ in 0..5 {
        let t0 = Instant::now();
        let resp = answer(
            api.addr,
            b"GET /healthz HTTP/1.1\r\nhost: localhost\r\n\r\n",
        )
        .await;
        assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
        assert!(t0.elapsed() < Duration::from_secs(1), "{:?}", t0.elapsed());
    }
    let st = api.ingress.status();
    assert!(
        st.evicted_connections >= 1 && st.connections <= 30,
        "{st:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_invokes_are_bounded_and_queued_messages_keep_running() {
    let api = start(&format!("invoke_concurrency = 2\n{GROUPS}")).await;
    // 30 slow invokes at once: two run, the others wait a second and get 503 with Retry-After.
    let mut calls = Vec::new();
    for _ in 0..30 {
        let (addr, admin) = (api.addr(), api.admin.clone());
        calls.push(tokio::spawn(async move {
            let a = call(
                &addr,
                Some(&admin),
                Method::POST,
                "/v1/functions/faulty/invoke",
                br#"{"action":"sleep","ms":1500}"#.to_vec(),
            )
            .await
            .unwrap();
            (
                a.status.as_u16(),
                reason(&a),
                String::from_utf8_lossy(&a.body).to_string(),
            )
        }));
    }
    // Meanwhile a queued message of another function is handled by its worker as usual.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let a = api
        .call(
            Some(&api.admin),
            Method::POST,
            "/v1/functions/tally/messages",
            r#"{"key":"k"}"#,
        )
        .await;
    assert_eq!(a.status, 202);
    let t0 = Instant::now();
    let mut counted = false;
    while t0.elapsed() < Duration::from_secs(5) {
        let a = api
            .call(
                Some(&api.admin),
                Method::GET,
                "/v1/functions/tally/kv/count%2Fk",
                "",
            )
            .await;
        if a.status == 200 {
            counted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(counted, "the worker ran while invokes were refused");
    let mut by_status = std::collections::BTreeMap::new();
    for c in calls {
        let (status, why, body) = c.await.unwrap();
        match status {
            // Every invoke that ran completed: none failed for want of an instance.
            200 => assert!(body.contains(r#""outcome":"ok""#), "{body}"),
            503 => assert!(
                why.contains("at most 2 invoke calls") || why.contains("concurrency budget"),
                "{why}"
            ),
            other => panic!("{other}: {body}"),
        }
        *by_status.entry(status).or_insert(0) += 1;
    }
    // Two at a time for 1.5 s each, over the few seconds the callers wait.
    let ran = by_status.get(&200).copied().unwrap_or(0);
    assert!((2..=6).contains(&ran), "{by_status:?}");
    assert!(
        by_status.get(&503).copied().unwrap_or(0) >= 24,
        "{by_status:?}"
    );
}
