//! The dashboard at `/` in headless Chromium: it renders what `GET /v1/status` says (processed
//! counts, queue depth, dead letters, workers), reads its key from the URL fragment, and keeps
//! rendering while the kv store is down, showing the store as down and its breaker open. Each
//! test writes a screenshot under `target/test-output/` and prints its path.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use hyper::Method;
use levee::client::{Answer, call};
use levee::ingress::{Ingress, serve_ingress};
use levee::platform::StartOptions;
use levee_tests::browser::{Dom, Headless, test_output_dir};
use levee_tests::{
    LeveeProcess, eventually, free_port, pipeline_fns, start_with, with_chromium, write_manifest,
    write_manifest_with,
};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The numbers of a function the page must show as `/v1/status` has them.
const FIELDS: [&str; 8] = [
    "processed",
    "visible",
    "in_flight",
    "dlq",
    "failed",
    "workers",
    "desired",
    "max_workers",
];

fn message(n: usize) -> String {
    json!({"org": "acme", "conversation": format!("c-{n}"), "channel": "chat",
        "from": "ann@example.com", "text": "my order has not arrived"})
    .to_string()
}

async fn get(addr: &str, key: Option<&str>, path: &str) -> Answer {
    call(addr, key, Method::GET, path, vec![])
        .await
        .expect("the API answers")
}

async fn status(addr: &str, key: &str) -> Value {
    let a = get(addr, Some(key), "/v1/status").await;
    a.json().expect("status is JSON")
}

/// What the page must show of each function: the status's number as text, `-` for null.
fn expected(status: &Value) -> BTreeMap<String, BTreeMap<&'static str, String>> {
    status["functions"]
        .as_array()
        .expect("functions")
        .iter()
        .map(|f| {
            let fields = FIELDS
                .iter()
                .map(|k| {
                    let v = match &f[*k] {
                        Value::Null => "-".to_string(),
                        v => v.to_string(),
                    };
                    (*k, v)
                })
                .collect();
            (f["name"].as_str().unwrap().to_string(), fields)
        })
        .collect()
}

fn shown(dom: &Dom, status: &Value) -> BTreeMap<String, BTreeMap<&'static str, String>> {
    status["functions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            let name = f["name"].as_str().unwrap();
            let fields = FIELDS
                .iter()
                .map(|k| {
                    let text = dom
                        .function_field(name, k)
                        .unwrap_or_else(|| panic!("the page has {name}'s {k}"));
                    (*k, text.to_string())
                })
                .collect();
            (name.to_string(), fields)
        })
        .collect()
}

/// One raw request; returns the whole answer (head and body).
async fn raw(addr: &str, head: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(head.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .expect("answered")
        .unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

fn header<'a>(answer: &'a str, name: &str) -> Option<&'a str> {
    let head = answer.split("\r\n\r\n").next().unwrap_or("");
    head.lines().skip(1).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// The page and its assets are static, served without a key with their type, no-cache and a
/// strict CSP; the data routes still want a key; Host and Origin are checked as on any route.
async fn check_static_answers(addr: &str, key: &str) {
    for (path, ty) in [
        ("/", "text/html"),
        ("/dashboard/app.js", "text/javascript"),
        ("/dashboard/style.css", "text/css"),
    ] {
        let a = raw(
            addr,
            &format!("GET {path} HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n\r\n"),
        )
        .await;
        assert!(a.starts_with("HTTP/1.1 200"), "{path} without a key: {a}");
        assert!(header(&a, "content-type").unwrap().starts_with(ty), "{a}");
        assert_eq!(header(&a, "cache-control"), Some("no-cache"), "{path}");
        let csp = header(&a, "content-security-policy").expect("a CSP");
        assert!(csp.starts_with("default-src 'self'"), "{csp}");
        assert_eq!(header(&a, "x-content-type-options"), Some("nosniff"));
    }
    let page = get(addr, None, "/").await;
    let html = String::from_utf8_lossy(&page.body);
    assert!(!html.contains(key), "the page never holds a key");
    assert_eq!(get(addr, None, "/v1/status").await.status.as_u16(), 401);
    assert_eq!(
        get(addr, None, "/dashboard/nope.js").await.status.as_u16(),
        404
    );
    let rebinding = raw(
        addr,
        "GET / HTTP/1.1\r\nhost: evil.example\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert!(rebinding.starts_with("HTTP/1.1 421"), "{rebinding}");
    let cross = raw(
        addr,
        "GET / HTTP/1.1\r\nhost: 127.0.0.1\r\norigin: https://evil.example\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert!(cross.starts_with("HTTP/1.1 403"), "{cross}");
}

/// What the page must say about alerts and latency, given what the API answers for them (404
/// until those routes exist on this host).
async fn check_optional_parts(dom: &Dom, addr: &str, key: &str) {
    let alerts = get(addr, Some(key), "/v1/alerts").await;
    match alerts.status.as_u16() {
        404 => assert_eq!(dom.field("alerts-status"), Some("alerts: not available")),
        200 => {
            let v: Value = serde_json::from_slice(&alerts.body).unwrap();
            let n = v["alerts"].as_array().map_or(0, Vec::len);
            assert_eq!(dom.all("alert").len(), n, "every alert is listed");
        }
        other => eprintln!("GET /v1/alerts answered {other}; not checked"),
    }
    let metrics = get(addr, Some(key), "/metrics").await;
    let text = String::from_utf8_lossy(&metrics.body);
    let histogram = metrics.status.is_success()
        && text.contains("levee_handler_duration_seconds_bucket{")
        && text.contains("function=\"inbound\"");
    let p50 = dom.function_field("inbound", "p50").expect("a p50 field");
    let p99 = dom.function_field("inbound", "p99").expect("a p99 field");
    if histogram {
        assert!(
            p50 != "-" && p99 != "-",
            "latency from /metrics: {p50} {p99}"
        );
    } else if !metrics.status.is_success() {
        assert_eq!((p50, p99), ("-", "-"), "no /metrics: no latency");
    }
}

/// `levee up` with the pipeline: messages sent and processed, then the page in Chromium must
/// show the same numbers as `/v1/status` fetched around it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_what_the_status_says() {
    let chromium = with_chromium!();
    let dir = tempfile::tempdir().unwrap();
    let manifest = write_manifest(dir.path(), &pipeline_fns(2));
    let levee = LeveeProcess::up(&manifest, free_port());
    let (addr, key) = (levee.addr.clone(), levee.key.clone());
    check_static_answers(&addr, &key).await;

    const N: usize = 12;
    for n in 0..N {
        let a = call(
            &addr,
            Some(&key),
            Method::POST,
            "/v1/functions/inbound/messages",
            message(n).into_bytes(),
        )
        .await
        .unwrap();
        assert_eq!(a.status.as_u16(), 202);
    }
    // Invalid: lands in inbound's dead-letter queue.
    call(
        &addr,
        Some(&key),
        Method::POST,
        "/v1/functions/inbound/messages",
        br#"{"org": "acme", "channel": "fax"}"#.to_vec(),
    )
    .await
    .unwrap();
    let done = eventually(Duration::from_secs(60), || async {
        let s = status(&addr, &key).await;
        let f = |name: &str| {
            s["functions"]
                .as_array()
                .unwrap()
                .iter()
                .find(|f| f["name"] == name)
                .cloned()
                .unwrap()
        };
        let settled = s["functions"]
            .as_array()
            .unwrap()
            .iter()
            .all(|f| f["visible"] == 0 && f["in_flight"] == 0 && f["delayed"] == 0);
        settled
            && f("notify")["processed"] == N
            && f("search-index")["processed"] == N
            && f("inbound")["dlq"] == 1
    })
    .await;
    assert!(done, "processed: {}", status(&addr, &key).await);

    let browser = Headless::new(chromium);
    let url = format!("http://{addr}/#key={key}");
    // The scaler may still move workers: read the page between two equal statuses.
    let mut last = None;
    for _ in 0..5 {
        let before = status(&addr, &key).await;
        let b = browser.clone_with_budget(Duration::from_millis(8000));
        let html = tokio::task::spawn_blocking({
            let url = url.clone();
            move || b.dump_dom(&url)
        })
        .await
        .unwrap();
        let after = status(&addr, &key).await;
        if expected(&before) != expected(&after) {
            last = Some((html, before, after));
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        let dom = Dom::parse(&html);
        assert_eq!(dom.field("connection"), Some("live"), "{html}");
        let polls: u32 = dom.field("polls").unwrap().parse().unwrap();
        assert!(polls >= 2, "the page polled more than once: {polls}");
        assert_eq!(
            shown(&dom, &after),
            expected(&after),
            "the page shows what /v1/status says"
        );
        assert_eq!(dom.function_field("inbound", "throughput"), Some("0.0"));
        let version = after["functions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["name"] == "inbound")
            .and_then(|f| f["version"].as_str())
            .unwrap_or("-")
            .to_string();
        assert_eq!(
            dom.function_field("inbound", "version"),
            Some(version.as_str()),
            "the module version from /v1/status"
        );
        assert_eq!(dom.store_field("kv", "breaker"), Some("closed"));
        assert_eq!(dom.field("store-state"), Some("ok"));
        for f in ["inbound", "routing", "notify", "search-index"] {
            for chart in ["depth", "throughput", "workers"] {
                let drawn = dom.elements.iter().any(|e| {
                    e.attr("data-function") == Some(f) && e.attr("data-chart") == Some(chart)
                });
                assert!(drawn, "{f} has a {chart} chart");
            }
        }
        assert!(
            !html.contains(&key),
            "the key is not left in the page or its address"
        );
        check_optional_parts(&dom, &addr, &key).await;

        let png = test_output_dir().join("dashboard.png");
        let b = browser.clone_with_budget(Duration::from_millis(8000));
        tokio::task::spawn_blocking({
            let (url, png) = (url.clone(), png.clone());
            move || b.screenshot(&url, &png)
        })
        .await
        .unwrap();
        println!("dashboard screenshot: {}", png.display());

        // Without a key: the form, and no data call succeeds.
        let b = browser.clone_with_budget(Duration::from_millis(3000));
        let html = tokio::task::spawn_blocking({
            let url = format!("http://{addr}/");
            move || b.dump_dom(&url)
        })
        .await
        .unwrap();
        let dom = Dom::parse(&html);
        assert_eq!(dom.field("connection"), Some("no key"));
        assert!(dom.function_field("inbound", "processed").is_none());
        // A wrong key: refused, back to the form with the reason.
        let b = browser.clone_with_budget(Duration::from_millis(3000));
        let html = tokio::task::spawn_blocking({
            let url = format!(
                "http://{addr}/#key=lvk_000000000000_xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
            );
            move || b.dump_dom(&url)
        })
        .await
        .unwrap();
        let dom = Dom::parse(&html);
        assert_eq!(dom.field("connection"), Some("key refused"), "{html}");
        assert!(dom.field("key-error").unwrap().contains("refused"));
        return;
    }
    let (_, before, after) = last.unwrap();
    panic!("the status never held still for a page load: {before} vs {after}");
}

/// The kv store fails every call: the page keeps rendering from `/v1/status` (which needs no
/// store), shows the store as down with its breaker open, and the figures still match.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_keeps_rendering_while_the_store_is_down() {
    let chromium = with_chromium!();
    let dir = tempfile::tempdir().unwrap();
    // A long cool-down: the breaker stays open for the whole page load.
    let cache = "\n[cache]\nstore_timeout_ms = 100\n[cache.breaker]\ncool_down_ms = 120000";
    let manifest = write_manifest_with(dir.path(), cache, &pipeline_fns(2));
    let platform = start_with(
        &manifest,
        StartOptions {
            inject_store_faults: true,
            ..Default::default()
        },
    )
    .await;
    let faults = platform.store_faults().expect("fault injector").clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let ingress = Ingress::new(platform.clone(), listener.local_addr().unwrap());
    let key = ingress.keys.create("admin", "dashboard").await.unwrap().0;
    let (stop, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(serve_ingress(listener, Arc::clone(&ingress), rx));

    for n in 0..5 {
        platform
            .send("inbound", message(n).into_bytes())
            .await
            .unwrap();
    }
    let processed = |name: &'static str| {
        let p = platform.clone();
        async move {
            let s = p.status().await.unwrap();
            s.functions
                .iter()
                .find(|f| f.name == name)
                .map_or(0, |f| f.processed)
        }
    };
    assert!(
        eventually(Duration::from_secs(60), || async {
            processed("notify").await == 5
        })
        .await
    );
    // The key is checked (and cached) while the store is up.
    assert_eq!(
        get(&addr, Some(&key), "/v1/status").await.status.as_u16(),
        200
    );

    faults.fail_always();
    for n in 5..25 {
        platform
            .send("inbound", message(n).into_bytes())
            .await
            .expect("accepted while the store is down");
    }
    let opened = eventually(Duration::from_secs(30), || async {
        let s = platform.status().await.unwrap();
        s.stores[0].cache.breaker_opens > 0
            && serde_json::to_value(s.stores[0].cache.breaker).unwrap() == "open"
    })
    .await;
    assert!(opened, "the breaker opened: {:?}", platform.status().await);

    let browser = Headless::new(chromium);
    let url = format!("http://{addr}/#key={key}");
    let html = tokio::task::spawn_blocking({
        let (b, url) = (
            browser.clone_with_budget(Duration::from_millis(6000)),
            url.clone(),
        );
        move || b.dump_dom(&url)
    })
    .await
    .unwrap();
    let s = status(&addr, &key).await;
    let dom = Dom::parse(&html);
    assert_eq!(dom.field("connection"), Some("live"), "{html}");
    assert!(dom.field("polls").unwrap().parse::<u32>().unwrap() >= 2);
    assert_eq!(dom.store_field("kv", "breaker"), Some("open"), "{html}");
    assert_eq!(dom.store_field("kv", "state"), Some("down"));
    assert_eq!(dom.field("store-state"), Some("down"));
    for f in s["functions"].as_array().unwrap() {
        let name = f["name"].as_str().unwrap();
        assert_eq!(
            dom.function_field(name, "processed"),
            Some(f["processed"].to_string().as_str()),
            "nothing completes while the store is down: {name}"
        );
    }
    let png = test_output_dir().join("dashboard-store-down.png");
    tokio::task::spawn_blocking({
        let (b, url, png) = (
            browser.clone_with_budget(Duration::from_millis(6000)),
            url.clone(),
            png.clone(),
        );
        move || b.screenshot(&url, &png)
    })
    .await
    .unwrap();
    println!("dashboard screenshot (store down): {}", png.display());

    faults.heal();
    let _ = stop.send(true);
    platform.shutdown().await;
}

/// A fake API in front of the page: the dashboard's own files, and fixed answers for
/// `/v1/status` (processed counts growing by 10 per call), `/v1/alerts` and `/metrics`. Records
/// every request's path and `Authorization` header.
struct FakeApi {
    addr: String,
    requests: Requests,
}

/// Each request's path and `Authorization` header.
type Requests = Arc<std::sync::Mutex<Vec<(String, Option<String>)>>>;

const FAKE_KEY: &str = "lvk_0123456789ab_fake-key-for-the-dashboard-test-0123456789";

fn fake_status(call: u64) -> Value {
    json!({
        "functions": [
            {"name": "inbound", "visible": 7, "in_flight": 3, "dlq": 2, "workers": 4,
             "processed": 1000 + 10 * call, "failed": 5, "delayed": 1, "retried": 6,
             "oldest_age_ms": 2500, "max_workers": 16, "invocations": 0, "conflicts": 0,
             "infra_failures": 0, "duplicates": 0, "paused": false, "desired": 6,
             "reason": "backlog 7", "version": "inbound@3"},
            {"name": "notify", "visible": 0, "in_flight": 0, "dlq": 0, "workers": 1,
             "processed": 500, "failed": 0, "delayed": 0, "retried": 0,
             "oldest_age_ms": null, "max_workers": 4, "invocations": 0, "conflicts": 0,
             "infra_failures": 0, "duplicates": 0, "paused": true, "desired": null,
             "reason": null},
        ],
        "stores": [
            {"name": "kv", "backend": "embedded", "breaker": "half-open", "breaker_opens": 3,
             "hits": 75, "misses": 25, "coalesced_waits": 0, "store_reads": 25,
             "store_writes": 9, "store_errors": 4, "timeouts": 2, "stale_serves": 1,
             "rejected": 8, "in_flight": 0, "entries": 12, "bytes": 2048},
        ],
        "ingress": {"connections": 3, "max_connections": 1024, "blocks": [{"source": "x"}],
                    "blocked_total": 2, "shed_connections": 0},
    })
}

const FAKE_ALERTS: &str = r#"{"alerts": [
  {"rule": "backlog-high", "kind": "backlog", "function": "inbound", "state": "firing",
   "since_ms": 1, "value": 700, "threshold": 500, "message": "inbound backlog 700 > 500",
   "deliveries": [{"channel": "webhook", "state": "failed", "attempts": 3,
                   "last_error": "connection refused"}]},
  {"rule": "dlq-growing", "kind": "dlq", "function": "notify", "state": "resolved",
   "since_ms": 1, "value": 0, "threshold": 1, "message": "notify dead letters", "deliveries": []}
]}"#;

/// inbound: p50 5 ms, p99 46 ms (its buckets split over two `host` labels); notify: none.
const FAKE_METRICS: &str = "\
# HELP levee_handler_duration_seconds Handler run time.
# TYPE levee_handler_duration_seconds histogram
levee_handler_duration_seconds_bucket{function=\"inbound\",host=\"a\",le=\"0.001\"} 0
levee_handler_duration_seconds_bucket{function=\"inbound\",host=\"a\",le=\"0.005\"} 30
levee_handler_duration_seconds_bucket{function=\"inbound\",host=\"a\",le=\"0.01\"} 50
levee_handler_duration_seconds_bucket{function=\"inbound\",host=\"a\",le=\"0.05\"} 60
levee_handler_duration_seconds_bucket{function=\"inbound\",host=\"a\",le=\"+Inf\"} 60
levee_handler_duration_seconds_bucket{host=\"b\",le=\"0.001\",function=\"inbound\"} 0
levee_handler_duration_seconds_bucket{host=\"b\",le=\"0.005\",function=\"inbound\"} 20
levee_handler_duration_seconds_bucket{host=\"b\",le=\"0.01\",function=\"inbound\"} 40
levee_handler_duration_seconds_bucket{host=\"b\",le=\"0.05\",function=\"inbound\"} 40
levee_handler_duration_seconds_bucket{host=\"b\",le=\"+Inf\",function=\"inbound\"} 40
levee_handler_duration_seconds_sum{function=\"inbound\"} 1.5
levee_handler_duration_seconds_count{function=\"inbound\"} 100
";

impl FakeApi {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let requests: Requests = Arc::default();
        let calls = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let log = requests.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let (log, calls) = (log.clone(), calls.clone());
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 65536 {
                        match s.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let head = String::from_utf8_lossy(&buf).into_owned();
                    let path = head.split(' ').nth(1).unwrap_or("").to_string();
                    let auth = head.lines().find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("authorization")
                            .then(|| v.trim().to_string())
                    });
                    log.lock().unwrap().push((path.clone(), auth.clone()));
                    let authorized = auth.as_deref() == Some(&format!("Bearer {FAKE_KEY}"));
                    let asset = match path.as_str() {
                        "/" => Some(""),
                        p => p.strip_prefix("/dashboard/"),
                    };
                    let (code, ty, body) = match (
                        asset.and_then(levee::ingress::dashboard::file),
                        path.as_str(),
                    ) {
                        (Some((ty, text)), _) => (200, ty, text.to_string()),
                        (None, _) if !authorized => {
                            (401, "application/json", r#"{"error":"key"}"#.into())
                        }
                        (None, "/v1/status") => {
                            let n = calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            (200, "application/json", fake_status(n).to_string())
                        }
                        (None, "/v1/alerts") => {
                            let since = levee::platform::now_ms() - 90_000;
                            (
                                200,
                                "application/json",
                                FAKE_ALERTS
                                    .replace("\"since_ms\": 1", &format!("\"since_ms\": {since}")),
                            )
                        }
                        (None, "/metrics") => {
                            (200, "text/plain; version=0.0.4", FAKE_METRICS.into())
                        }
                        _ => (
                            404,
                            "application/json",
                            r#"{"error":"no such route"}"#.into(),
                        ),
                    };
                    let answer = format!(
                        "HTTP/1.1 {code} X\r\ncontent-type: {ty}\r\ncontent-length: {}\r\n\
                         content-security-policy: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len(),
                        levee::ingress::dashboard::CSP,
                    );
                    let _ = s.write_all(answer.as_bytes()).await;
                    let _ = s.shutdown().await;
                });
            }
        });
        FakeApi { addr, requests }
    }
}

/// Alerts, latency from the Prometheus histogram, versions, throughput and a half-open breaker,
/// as the page reads them from the API's answers; every data call carries the key as a Bearer
/// header and never in a URL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_reads_alerts_latency_and_the_store_from_the_api() {
    let chromium = with_chromium!();
    let api = FakeApi::start().await;
    let browser = Headless::new(chromium);
    let url = format!("http://{}/#key={FAKE_KEY}", api.addr);
    let html = tokio::task::spawn_blocking({
        let (b, url) = (browser.clone(), url.clone());
        move || b.dump_dom(&url)
    })
    .await
    .unwrap();
    let dom = Dom::parse(&html);
    assert_eq!(dom.field("connection"), Some("live"), "{html}");

    let f = |name, field| dom.function_field(name, field).unwrap_or("?").to_string();
    assert_eq!(f("inbound", "visible"), "7");
    assert_eq!(f("inbound", "in_flight"), "3");
    assert_eq!(f("inbound", "dlq"), "2");
    assert_eq!(f("inbound", "workers"), "4");
    assert_eq!(f("inbound", "desired"), "6");
    assert_eq!(f("inbound", "max_workers"), "16");
    assert_eq!(f("inbound", "oldest"), "3 s");
    assert_eq!(f("inbound", "version"), "inbound@3");
    assert_eq!(f("notify", "version"), "-");
    assert_eq!(f("notify", "desired"), "-");
    let paused = dom.function_element("notify", "paused").unwrap();
    assert!(!paused.attrs.contains_key("hidden"), "notify shows paused");
    let paused = dom.function_element("inbound", "paused").unwrap();
    assert!(paused.attrs.contains_key("hidden"), "inbound is not paused");
    // 10 more processed per poll, a poll a second (of the page's virtual time).
    let thr: f64 = f("inbound", "throughput").parse().unwrap();
    assert!((5.0..=20.0).contains(&thr), "inbound throughput {thr}/s");
    assert_eq!(f("notify", "throughput"), "0.0");
    // Cumulative buckets summed over `host`, interpolated within the bucket.
    assert_eq!(f("inbound", "p50"), "5.00 ms");
    assert_eq!(f("inbound", "p99"), "46.0 ms");
    assert_eq!(f("notify", "p50"), "-");
    assert_eq!(f("notify", "p99"), "-");

    assert_eq!(dom.store_field("kv", "breaker"), Some("half-open"));
    assert_eq!(dom.store_field("kv", "state"), Some("recovering"));
    assert_eq!(dom.store_field("kv", "hit_ratio"), Some("75.0 %"));
    assert_eq!(dom.field("store-state"), Some("recovering"));
    assert_eq!(dom.field("blocks"), Some("1"));
    assert_eq!(dom.field("connections"), Some("3 / 1024"));

    assert_eq!(dom.field("alerts-count"), Some("1"));
    assert_eq!(dom.field("alerts-status"), Some("1 active"));
    let alerts = dom.all("alert");
    let rules: Vec<_> = alerts
        .iter()
        .map(|a| a.attr("data-rule").unwrap())
        .collect();
    assert_eq!(rules, ["backlog-high", "dlq-growing"], "active first");
    assert_eq!(alerts[0].attr("data-state"), Some("firing"));
    assert!(
        html.contains("webhook: failed (3 attempts): connection refused"),
        "the delivery is shown"
    );

    let requests = api.requests.lock().unwrap().clone();
    let data: Vec<_> = requests
        .iter()
        .filter(|(p, _)| p.starts_with("/v1/") || p.starts_with("/metrics"))
        .collect();
    assert!(data.len() >= 6, "the page polled: {requests:?}");
    for (path, auth) in &data {
        assert_eq!(
            auth.as_deref(),
            Some(format!("Bearer {FAKE_KEY}").as_str()),
            "{path} carries the key"
        );
    }
    for (path, _) in &requests {
        assert!(!path.contains("lvk_"), "no key in a URL: {path}");
    }
    assert!(!html.contains(FAKE_KEY), "the key is not left in the page");
    let png = test_output_dir().join("dashboard-fake-api.png");
    tokio::task::spawn_blocking({
        let (b, png) = (browser.clone(), png.clone());
        move || b.screenshot(&url, &png)
    })
    .await
    .unwrap();
    println!("dashboard screenshot (fake API): {}", png.display());
}
