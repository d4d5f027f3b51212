//! Per-message cost of the Wasm runtime: instantiate + call of a sample handler in wasmtime
//! (pooling allocator, `InstancePre`, a fresh instance per message), against the same handler
//! compiled natively and called directly with an in-memory context.
//!
//! Run: `cargo bench -p levee-tests --bench runtime`. Prints a table to stdout (progress to
//! stderr): median ns per message over several rounds, the wasm/native ratio, and the aggregate
//! rate with 1 and 2 threads invoking at once.
//!
//! `LEVEE_BENCH_GUEST_DIR=DIR` loads the `.wasm` files from DIR instead of building
//! `functions/`, to compare guest builds (e.g. linker flags) on the same host.
//!
//! Workload: every message is the first of a new conversation (`inbound` reads the missing
//! record, writes it, emits two messages), so the native and the Wasm run do the same work
//! message after message. The Wasm side's kv is a `MemoryStore` behind the host's async `kv`
//! imports, so host-call overhead counts; queue and durable-store costs do not (see
//! `benches/pipeline.rs` for those).

// The `levee` binary's allocator, so the bench measures what it runs.
#[global_allocator]
static ALLOCATOR: levee::Allocator = levee::Allocator;

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use levee::ReceivedMessage;
use levee::runtime::{Function, FunctionDef, Limits, Runtime, RuntimeConfig};
use levee_sdk::{MemoryContext, Message};

/// Each measured round lasts about this long; the median of [`ROUNDS`] is reported.
const ROUND: Duration = Duration::from_millis(700);
const ROUNDS: usize = 7;
const WARMUP: Duration = Duration::from_millis(500);
/// Clock reads happen once per chunk so they do not weigh on sub-µs native calls.
const CHUNK: u64 = 64;

static SEQ: AtomicU64 = AtomicU64::new(0);

fn inbound_body(n: u64) -> Vec<u8> {
    format!(
        r#"{{"org": "acme", "conversation": "c-{n}", "channel": "chat", "from": "Ann@Example.com", "text": "my order   has not arrived"}}"#
    )
    .into_bytes()
}

fn received(n: u64, body: Vec<u8>) -> ReceivedMessage {
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

/// Runs `op` (which handles one message) for a round; returns ns per message.
fn round(op: &mut dyn FnMut(), length: Duration) -> f64 {
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < length {
        for _ in 0..CHUNK {
            op();
        }
        n += CHUNK;
    }
    start.elapsed().as_nanos() as f64 / n as f64
}

struct Figure {
    median_ns: f64,
    min_ns: f64,
    max_ns: f64,
}

fn measure(name: &str, op: &mut dyn FnMut()) -> Figure {
    eprintln!("  measuring {name} ...");
    round(op, WARMUP);
    let mut rounds: Vec<f64> = (0..ROUNDS).map(|_| round(op, ROUND)).collect();
    rounds.sort_by(f64::total_cmp);
    Figure {
        median_ns: rounds[ROUNDS / 2],
        min_ns: rounds[0],
        max_ns: rounds[ROUNDS - 1],
    }
}

fn load(runtime: &Runtime, name: &str, emits_to: &[&str]) -> Arc<Function> {
    runtime
        .load(FunctionDef::new(
            name,
            guest(name),
            Limits {
                memory_bytes: 64 << 20,
                timeout: Duration::from_secs(5),
            },
            emits_to.iter().map(|s| s.to_string()).collect(),
            Arc::new(levee::MemoryStore::new()),
        ))
        .unwrap_or_else(|e| panic!("loading {name}: {e}"))
}

fn guest(name: &str) -> std::path::PathBuf {
    match std::env::var_os("LEVEE_BENCH_GUEST_DIR") {
        Some(dir) => std::path::Path::new(&dir).join(format!("{}.wasm", name.replace('-', "_"))),
        None => levee_tests::guest(name),
    }
}

fn wasm_op<'a>(
    f: &'a Function,
    rt: &'a tokio::runtime::Handle,
    body: fn(u64) -> Vec<u8>,
) -> impl FnMut() + 'a {
    move || {
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let inv = rt.block_on(f.invoke(&received(n, body(n))));
        if let Err(e) = &inv.outcome {
            panic!("{} failed: {e}", f.name());
        }
        black_box(inv);
    }
}

fn native_op(handler: levee_sdk::Handler, body: fn(u64) -> Vec<u8>) -> impl FnMut() {
    move || {
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let msg = Message::new(format!("m-{n}"), body(n));
        let mut ctx = MemoryContext::new().with_emits_to(["routing", "search-index"]);
        handler(&msg, &mut ctx).expect("native handler succeeds");
        black_box(ctx);
    }
}

/// Aggregate messages per second with `threads` threads invoking `f` at once.
fn threaded_rate(
    f: &Arc<Function>,
    rt: &tokio::runtime::Handle,
    threads: usize,
    body: fn(u64) -> Vec<u8>,
) -> f64 {
    let length = ROUND * 3;
    let done = AtomicU64::new(0);
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                let mut op = wasm_op(f, rt, body);
                round(&mut op, WARMUP);
                let t = Instant::now();
                let mut n = 0;
                while t.elapsed() < length {
                    for _ in 0..CHUNK {
                        op();
                    }
                    n += CHUNK;
                }
                done.fetch_add(n, Ordering::Relaxed);
            });
        }
    });
    done.load(Ordering::Relaxed) as f64 / length.as_secs_f64()
}

fn main() {
    if std::env::var_os("LEVEE_BENCH_GUEST_DIR").is_none() {
        eprintln!("building guest components (functions/ for wasm32-wasip2) ...");
        levee_tests::guests();
    }
    let tokio_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let handle = tokio_rt.handle().clone();
    let runtime = Runtime::new(RuntimeConfig {
        max_instances: 8,
        max_memory_bytes: 64 << 20,
        cache_dir: None,
    })
    .expect("runtime");
    eprintln!("compiling components ...");
    let inbound_fn = load(&runtime, "inbound", &["routing", "search-index"]);
    let noop_fn = load(&runtime, "noop", &[]);
    let noop_body: fn(u64) -> Vec<u8> = |_| br#"{"n": 1}"#.to_vec();

    let wasm_inbound = measure(
        "inbound (wasm)",
        &mut wasm_op(&inbound_fn, &handle, inbound_body),
    );
    let native_inbound = measure(
        "inbound (native)",
        &mut native_op(inbound::handle, inbound_body),
    );
    let wasm_noop = measure("noop (wasm)", &mut wasm_op(&noop_fn, &handle, noop_body));
    let native_noop = measure("noop (native)", &mut native_op(noop::handle, noop_body));

    eprintln!("  measuring 1 and 2 threads ...");
    let rates: Vec<(usize, f64, f64)> = [1, 2]
        .into_iter()
        .map(|t| {
            (
                t,
                threaded_rate(&inbound_fn, &handle, t, inbound_body),
                threaded_rate(&noop_fn, &handle, t, noop_body),
            )
        })
        .collect();

    println!();
    println!(
        "Per message, one thread (median of {ROUNDS} rounds of {ROUND:?}; min..max in brackets)"
    );
    println!("| handler | wasm instantiate + call | native call | wasm / native |");
    println!("|---|---|---|---|");
    for (name, w, n) in [
        ("inbound", &wasm_inbound, &native_inbound),
        ("noop", &wasm_noop, &native_noop),
    ] {
        println!(
            "| {name} | {:.2} µs [{:.2}..{:.2}] | {:.3} µs [{:.3}..{:.3}] | {:.1}x |",
            w.median_ns / 1e3,
            w.min_ns / 1e3,
            w.max_ns / 1e3,
            n.median_ns / 1e3,
            n.min_ns / 1e3,
            n.max_ns / 1e3,
            w.median_ns / n.median_ns
        );
    }
    println!();
    println!("Wasm invocations per second, threads invoking at once");
    println!(
        "| threads | inbound msg/s | inbound µs/msg/thread | noop msg/s | noop µs/msg/thread |"
    );
    println!("|---|---|---|---|---|");
    for (t, inb, noop) in rates {
        println!(
            "| {t} | {inb:.0} | {:.2} | {noop:.0} | {:.2} |",
            t as f64 * 1e6 / inb,
            t as f64 * 1e6 / noop
        );
    }
}
