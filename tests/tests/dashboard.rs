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
        assert_eq!(dom.function_field("inbound", "version"), Some("-"));
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
            && serde_json::to_value(&s.stores[0].cache.breaker).unwrap() == "open"
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
