//! Cost of one outbound HTTP call from a function: `relay` POSTing a small JSON body to a
//! loopback server through `wasi:http` (grant check, concurrency slot, breaker, idempotency key,
//! Levee's pooled hyper client), against the same POST made natively with a pooled hyper client
//! from the same thread, in the same run. `noop`'s instantiate + call is shown as the floor of
//! any invocation.
//!
//! Run: `cargo bench -p levee-tests --bench outbound`. Prints a table to stdout (progress on
//! stderr): median µs per call over several rounds and the ratio to the native call.

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use levee::ReceivedMessage;
use levee::outbound::{GrantSpec, Outbound};
use levee::runtime::{Function, FunctionDef, Limits, Runtime, RuntimeConfig};
use levee_tests::http_server::{Canned, TestServer};

const ROUND: Duration = Duration::from_millis(800);
const ROUNDS: usize = 7;
const WARMUP: Duration = Duration::from_millis(500);

static SEQ: AtomicU64 = AtomicU64::new(0);

fn received(body: Vec<u8>) -> ReceivedMessage {
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    ReceivedMessage {
        id: format!("m-{n}"),
        receipt: format!("r-{n}"),
        body,
        attributes: Vec::new(),
        receive_count: 1,
        sent_at_ms: 0,
        last_error: None,
    }
}

/// Median ns per call of `op` over [`ROUNDS`] rounds (after a warm-up).
fn measure(name: &str, op: &mut dyn FnMut()) -> (f64, f64, f64) {
    eprintln!("  measuring {name} ...");
    let round = |op: &mut dyn FnMut(), length: Duration| {
        let start = Instant::now();
        let mut n = 0u64;
        while start.elapsed() < length {
            op();
            n += 1;
        }
        start.elapsed().as_nanos() as f64 / n as f64
    };
    round(op, WARMUP);
    let mut r: Vec<f64> = (0..ROUNDS).map(|_| round(op, ROUND)).collect();
    r.sort_by(f64::total_cmp);
    (r[ROUNDS / 2], r[0], r[ROUNDS - 1])
}

fn load(runtime: &Runtime, name: &str, grants: &[GrantSpec]) -> Arc<Function> {
    let mut def = FunctionDef::new(
        name,
        levee_tests::guest(name),
        Limits {
            memory_bytes: 64 << 20,
            timeout: Duration::from_secs(5),
        },
        Vec::new(),
        Arc::new(levee::MemoryStore::new()),
    );
    def.outbound = Arc::new(Outbound::new(name, grants, &[]).expect("grants"));
    runtime.load(def).expect("loading")
}

fn main() {
    eprintln!("building guest components (functions/ for wasm32-wasip2) ...");
    levee_tests::guests();
    let tokio_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let handle = tokio_rt.handle().clone();
    // The invocations spawn their requests on the ambient runtime, as a worker's do.
    let _enter = handle.enter();
    let server = handle.block_on(TestServer::start(|_, _| Canned::status(200).body("ok")));
    let origin = server.origin();
    let url = format!("{origin}/hook");
    let runtime = Runtime::new(RuntimeConfig {
        max_instances: 8,
        max_memory_bytes: 64 << 20,
        cache_dir: None,
    })
    .expect("runtime");
    eprintln!("compiling components ...");
    let relay = load(&runtime, "relay", &[GrantSpec::new(&origin)]);
    let noop = load(&runtime, "noop", &[]);
    let relay_body =
        format!(r#"{{"url": "{url}", "payload": {{"conversation": "c-1", "team": "billing"}}}}"#)
            .into_bytes();

    let wasm = measure("relay: wasm, outbound POST", &mut || {
        let inv = handle.block_on(relay.invoke(&received(relay_body.clone())));
        if let Err(e) = &inv.outcome {
            panic!("relay failed: {e}");
        }
        black_box(inv);
    });
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<Bytes>>();
    let payload = Bytes::from_static(br#"{"conversation":"c-1","team":"billing"}"#);
    let uri: hyper::Uri = url.parse().unwrap();
    let native = measure("native hyper POST", &mut || {
        let req = hyper::Request::post(uri.clone())
            .header("content-type", "application/json")
            .header("idempotency-key", "m.0")
            .body(Full::new(payload.clone()))
            .unwrap();
        let body = handle.block_on(async {
            let resp = client.request(req).await.expect("native POST");
            assert!(resp.status().is_success());
            resp.into_body().collect().await.unwrap().to_bytes()
        });
        black_box(body);
    });
    let floor = measure("noop: wasm", &mut || {
        let inv = handle.block_on(noop.invoke(&received(br#"{"n": 1}"#.to_vec())));
        black_box(inv);
    });
    println!();
    println!("One outbound call (median of {ROUNDS} rounds of {ROUND:?}; min..max in brackets)");
    println!("| what | µs per call | vs native |");
    println!("|---|---|---|");
    let row = |name: &str, (m, lo, hi): (f64, f64, f64)| {
        println!(
            "| {name} | {:.1} [{:.1}..{:.1}] | {:.2}x |",
            m / 1e3,
            lo / 1e3,
            hi / 1e3,
            m / native.0
        );
    };
    row("native hyper POST (pooled connection, block_on)", native);
    row(
        "relay in Wasm: instance + JSON + wasi:http POST + kv put",
        wasm,
    );
    row(
        "noop in Wasm: instance + call (the floor of any invocation)",
        floor,
    );
    println!();
    println!(
        "Levee's overhead per outbound call: {:.1} µs (relay minus native minus noop's floor)",
        (wasm.0 - native.0 - floor.0) / 1e3
    );
}
