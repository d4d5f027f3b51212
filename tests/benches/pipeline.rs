//! End-to-end throughput and latency: messages per second through one no-op function and through
//! the four-function sample pipeline (inbound → routing → notify, inbound → search-index), with
//! p50/p99 latency from the send of the source message to the committed completion (delete) of the
//! last message of its chain; and the latency of small messages while a flood of large events
//! (offloaded to blobs) goes through the same function.
//!
//! Run: `cargo bench -p levee-tests --bench pipeline` (`PIPELINE_BENCH_SCALE=0.2` for a quick
//! run, `PIPELINE_BENCH_WORKERS=16,32` for other worker counts per function of the pipeline than
//! 4, 8 and 16) on the embedded backend; `PIPELINE_BENCH_BACKEND=aws` runs the same scenarios on the AWS
//! backends of the emulator (moto or LocalStack, started as the tests start it; default scale 0.1
//! there, fewer scenarios and lower flood rates: a local reference, not a claim about AWS). Each scenario runs on a fresh in-process
//! platform in a temp dir (on the emulator: freshly provisioned queues, table and bucket), twice:
//! - saturation: 8 tasks send N source messages in batches of 10 as fast as the queue takes
//!   them while the workers run; throughput is N over the time from the first send until the
//!   last completion. Latency here includes the backlog the senders build up.
//! - paced: a fresh platform receives half the saturation rate, steadily, in batches of 10, so
//!   the latency figures are those of a platform that keeps up.
//!
//! Latencies come from the worker pools' histograms (`PoolStats::latency_p50_ms`/`p99`): each
//! completion records now minus the origin send time, which workers carry down the pipeline in
//! the `levee-origin-ms` attribute; the pipeline's figure is that of `notify`, the end of the
//! longest chain. Pools keep the latency of large bodies (above the 200 KiB offload threshold)
//! apart, which the flood scenario reads. Progress goes to stderr, the tables to stdout.
//!
//! The storage ceiling (`PIPELINE_BENCH_ONLY=ceiling`) runs the no-op at saturation (128 workers,
//! 16 senders; `PIPELINE_BENCH_CEILING_WORKERS`, `PIPELINE_BENCH_CEILING_SENDERS`) next to a
//! minimal rusqlite loop doing the same durable cycle outside Levee (`common/sqlite_cycle.rs`),
//! alternating three rounds, and prints the ratio.

// The `levee` binary's allocator, so the bench measures what it runs.
#[global_allocator]
static ALLOCATOR: levee::Allocator = levee::Allocator;

use std::sync::Arc;
use std::time::{Duration, Instant};

use levee::OutgoingMessage;
use levee::platform::Platform;
use levee::worker::PoolStats;
use levee_tests::{Fn, start, write_manifest};

#[path = "common/sqlite_cycle.rs"]
mod sqlite_cycle;

/// Sender tasks of a run (the storage ceiling's can be set with PIPELINE_BENCH_CEILING_SENDERS).
const SENDERS: u64 = 8;
const BATCH: u64 = 10;
const TEXTS: [&str; 4] = [
    "my order has not arrived",
    "I was charged twice for the invoice",
    "the app crashes when I log in",
    "please cancel my subscription",
];

struct Scenario {
    label: String,
    fns: Vec<Fn>,
    source: &'static str,
    /// Functions whose processed totals must reach the number of source messages.
    sinks: Vec<&'static str>,
    /// Function whose latency histogram measures the whole chain.
    last: &'static str,
    messages: u64,
    body: fn(u64) -> Vec<u8>,
    /// Tasks sending the source messages.
    senders: u64,
}

struct Outcome {
    secs: f64,
    /// Source messages per second, first send to last completion.
    rate: f64,
    latency: PoolStats,
    invocations: u64,
}

fn noop_body(n: u64) -> Vec<u8> {
    format!(r#"{{"n": {n}}}"#).into_bytes()
}

fn inbound_body(n: u64) -> Vec<u8> {
    // 1000 live conversations in 4 orgs: realistic kv records and posting lists, bounded sizes.
    format!(
        r#"{{"org": "org{}", "conversation": "c-{}", "channel": "chat", "from": "ann@example.com", "text": "{}"}}"#,
        n % 4,
        n % 1000,
        TEXTS[(n % TEXTS.len() as u64) as usize]
    )
    .into_bytes()
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Backend {
    Embedded,
    Aws,
}

impl Backend {
    fn from_env() -> Self {
        match std::env::var("PIPELINE_BENCH_BACKEND").as_deref() {
            Ok("aws") => Backend::Aws,
            Ok("embedded") | Err(_) => Backend::Embedded,
            Ok(other) => panic!("PIPELINE_BENCH_BACKEND={other}: expected embedded or aws"),
        }
    }

    /// How often progress is polled: queue statistics are cheap on SQLite, but on the emulator
    /// every GetQueueAttributes walks the queue, and polling it fast would be the bottleneck.
    fn poll(self) -> Duration {
        match self {
            Backend::Embedded => Duration::from_millis(10),
            Backend::Aws => Duration::from_millis(500),
        }
    }

    fn label(self) -> &'static str {
        match self {
            Backend::Embedded => "embedded backend (SQLite WAL, blobs on disk)",
            Backend::Aws => "AWS backends on the emulator (SQS, DynamoDB, S3)",
        }
    }
}

fn scale(backend: Backend) -> f64 {
    std::env::var("PIPELINE_BENCH_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(match backend {
            Backend::Embedded => 1.0,
            Backend::Aws => 0.1,
        })
}

/// A fresh platform running `fns` on `backend`, its manifest in `dir`.
async fn platform(backend: Backend, dir: &std::path::Path, tag: &str, fns: &[Fn]) -> Arc<Platform> {
    match backend {
        Backend::Embedded => start(&write_manifest(dir, fns)).await,
        Backend::Aws => levee_tests::emulator::aws_platform(dir, tag, fns)
            .await
            .expect("PIPELINE_BENCH_BACKEND=aws needs the emulator (localstack/start.sh)"),
    }
}

fn noop(concurrency: u32, messages: u64) -> Scenario {
    Scenario {
        label: format!("noop, {concurrency} workers"),
        fns: vec![Fn::new(
            "noop",
            "noop",
            &format!("concurrency = {concurrency}"),
        )],
        source: "noop",
        sinks: vec!["noop"],
        last: "noop",
        messages,
        body: noop_body,
        senders: SENDERS,
    }
}

fn pipeline(concurrency: u32, messages: u64) -> Scenario {
    Scenario {
        label: format!("pipeline, {concurrency} workers per function"),
        fns: levee_tests::pipeline_fns(concurrency),
        source: "inbound",
        sinks: vec!["inbound", "routing", "search-index", "notify"],
        last: "notify",
        messages,
        body: inbound_body,
        senders: SENDERS,
    }
}

/// Sends `messages` source messages to `source` from `senders` tasks in batches of 10, at most
/// `rate` per second overall (`None`: as fast as the queue accepts them).
async fn send_all(
    p: Arc<Platform>,
    source: &'static str,
    body: fn(u64) -> Vec<u8>,
    messages: u64,
    senders: u64,
    rate: Option<f64>,
) {
    let per_sender = messages / senders;
    let tasks: Vec<_> = (0..senders)
        .map(|k| {
            let p = p.clone();
            tokio::spawn(async move {
                let start = Instant::now();
                let mut sent = 0u64;
                while sent < per_sender {
                    if let Some(r) = rate {
                        let due = Duration::from_secs_f64(sent as f64 * senders as f64 / r);
                        tokio::time::sleep_until((start + due).into()).await;
                    }
                    let n = BATCH.min(per_sender - sent);
                    let batch = (0..n)
                        .map(|i| OutgoingMessage::new(body(k * per_sender + sent + i)))
                        .collect();
                    p.queue().send(source, batch).await.expect("send");
                    sent += n;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("sender task");
    }
}

async fn processed(p: &Arc<Platform>, name: &str) -> u64 {
    p.queue().stats(name).await.expect("queue stats").processed
}

/// Messages of `name` completed so far, as cheaply as the backend allows while the run goes on.
/// On SQLite that is the pool's own count of committed completions: queue statistics count the
/// backlog's rows, and polling them every 10 ms would cost the run a large share of a core. The
/// count is checked against the queue's own total at the end of the run.
async fn completed(backend: Backend, p: &Arc<Platform>, name: &str) -> u64 {
    match backend {
        Backend::Embedded => p.pools()[name].emit_counts().completed,
        Backend::Aws => processed(p, name).await,
    }
}

async fn run(backend: Backend, s: &Scenario, rate: Option<f64>) -> Outcome {
    run_scraped(backend, s, rate, false).await
}

/// [`run`], with `/metrics` rendered every second while it runs when `scrape` is set (the
/// Prometheus text the route serves: the platform's status copied in, then rendered).
async fn run_scraped(backend: Backend, s: &Scenario, rate: Option<f64>, scrape: bool) -> Outcome {
    let dir = tempfile::tempdir().expect("temp dir");
    let p = platform(backend, dir.path(), "bench", &s.fns).await;
    let scraper = scrape.then(|| {
        let p = p.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                let text = levee::telemetry::render(&p, None).await.unwrap_or_default();
                std::hint::black_box(text);
            }
        })
    });
    let expected = s.messages / s.senders * s.senders;
    let t0 = Instant::now();
    let sends = send_all(p.clone(), s.source, s.body, s.messages, s.senders, rate);
    // When the last send was accepted: a saturation run can be no faster than its senders.
    let sender = tokio::spawn(async move {
        sends.await;
        t0.elapsed().as_secs_f64()
    });
    let mut last_report = Instant::now();
    loop {
        let mut done = true;
        let mut counts = Vec::new();
        for sink in &s.sinks {
            let n = completed(backend, &p, sink).await;
            done &= n >= expected;
            counts.push(format!("{sink} {n}"));
        }
        if done {
            break;
        }
        if last_report.elapsed() >= Duration::from_secs(2) {
            eprintln!(
                "    {:>5.1} s: {} / {expected}",
                t0.elapsed().as_secs_f64(),
                counts.join(", ")
            );
            last_report = Instant::now();
        }
        assert!(
            t0.elapsed() < Duration::from_secs(600),
            "{}: not done after 600 s: {}",
            s.label,
            counts.join(", ")
        );
        tokio::time::sleep(backend.poll()).await;
    }
    let secs = t0.elapsed().as_secs_f64();
    if let Some(t) = scraper {
        t.abort();
    }
    for sink in &s.sinks {
        let n = processed(&p, sink).await;
        assert!(
            n >= expected,
            "{}: the queue counted {n} of {expected} for {sink}",
            s.label
        );
    }
    let sent_secs = sender.await.expect("senders");
    let latency = p.pools()[s.last].stats();
    let per_fn: Vec<String> = p
        .pools()
        .iter()
        .map(|(name, pool)| {
            let st = pool.stats();
            let per = |micros: u64| micros as f64 / st.invocations.max(1) as f64;
            format!(
                "{name} {} invocations, {} conflicts, {:.0} µs in the handler and {:.0} µs holding a worker per invocation",
                st.invocations,
                st.conflicts,
                per(st.busy_micros),
                per(st.occupied_micros)
            )
        })
        .collect();
    eprintln!(
        "    done in {secs:.2} s (sends done at {sent_secs:.2} s): {}",
        per_fn.join("; ")
    );
    let invocations = p
        .pools()
        .values()
        .map(|pool| pool.stats().invocations)
        .sum();
    p.shutdown().await;
    Outcome {
        secs,
        rate: expected as f64 / secs,
        latency,
        invocations,
    }
}

/// What the flood scenario measured.
struct Flood {
    /// The pool's figures: small and large bodies' latencies apart.
    stats: PoolStats,
    large_sent: u64,
}

/// Small messages at `small_rate` per second for `secs` to one no-op function with 8 workers,
/// and, when `large_rate` > 0, large events of `large_bytes` at `large_rate` per second to the
/// same function at the same time. Returns the pool's latency figures, which keep small and large
/// bodies apart.
async fn run_flood(
    backend: Backend,
    small_rate: f64,
    large_rate: f64,
    large_bytes: usize,
    secs: f64,
) -> Flood {
    let dir = tempfile::tempdir().expect("temp dir");
    let fns = [Fn::new("noop", "noop", "concurrency = 8")];
    let p = platform(backend, dir.path(), "flood", &fns).await;
    let small_total = ((small_rate * secs) as u64 / BATCH).max(1) * BATCH;
    let large_total = (large_rate * secs) as u64;
    let t0 = Instant::now();
    let small = {
        let p = p.clone();
        tokio::spawn(async move {
            let mut sent = 0;
            while sent < small_total {
                let due = Duration::from_secs_f64(sent as f64 / small_rate);
                tokio::time::sleep_until((t0 + due).into()).await;
                let batch = (0..BATCH)
                    .map(|i| OutgoingMessage::new(noop_body(sent + i)))
                    .collect();
                p.queue().send("noop", batch).await.expect("send");
                sent += BATCH;
            }
        })
    };
    let large = {
        let p = p.clone();
        tokio::spawn(async move {
            // Text, so its size on the queue is its size (binary would travel as base64).
            let body = format!(r#"{{"blob": "{}"}}"#, "x".repeat(large_bytes));
            for n in 0..large_total {
                let due = Duration::from_secs_f64(n as f64 / large_rate);
                tokio::time::sleep_until((t0 + due).into()).await;
                let m = OutgoingMessage::new(body.clone().into_bytes());
                p.queue().send("noop", vec![m]).await.expect("send large");
            }
        })
    };
    let expected = small_total + large_total;
    let mut last_report = Instant::now();
    while processed(&p, "noop").await < expected {
        if last_report.elapsed() >= Duration::from_secs(2) {
            eprintln!(
                "    {:>5.1} s: {} / {expected}",
                t0.elapsed().as_secs_f64(),
                processed(&p, "noop").await
            );
            last_report = Instant::now();
        }
        assert!(
            t0.elapsed() < Duration::from_secs(600),
            "flood not done after 600 s"
        );
        tokio::time::sleep(backend.poll()).await;
    }
    small.await.expect("small sender");
    large.await.expect("large sender");
    let stats = p.pools()["noop"].stats();
    p.shutdown().await;
    Flood {
        stats,
        large_sent: large_total,
    }
}

fn main() {
    let backend = Backend::from_env();
    eprintln!("building guest components (functions/ for wasm32-wasip2) ...");
    levee_tests::guests();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let k = scale(backend);
    let n = |base: f64| ((base * k) as u64).max(SENDERS * BATCH);
    // The emulator slows down with the length of its queues (every call walks them), so it gets
    // one configuration of each and small counts.
    // PIPELINE_BENCH_WORKERS=16,32 replaces the pipeline's worker counts (per function).
    let pipeline_workers: Vec<u32> = match std::env::var("PIPELINE_BENCH_WORKERS") {
        Ok(v) => v
            .split(',')
            .map(|w| {
                w.trim()
                    .parse()
                    .expect("PIPELINE_BENCH_WORKERS: comma-separated counts")
            })
            .collect(),
        Err(_) => vec![4, 8, 16],
    };
    let scenarios = match backend {
        Backend::Embedded => [
            noop(8, n(40_000.0)),
            noop(16, n(40_000.0)),
            noop(32, n(40_000.0)),
        ]
        .into_iter()
        .chain(pipeline_workers.iter().map(|&w| pipeline(w, n(8_000.0))))
        .collect(),
        Backend::Aws => vec![noop(8, n(40_000.0)), pipeline(4, n(8_000.0))],
    };
    // PIPELINE_BENCH_ONLY=pipeline runs only the scenarios whose label contains the text.
    let only = std::env::var("PIPELINE_BENCH_ONLY").unwrap_or_default();
    let scenarios: Vec<Scenario> = scenarios
        .into_iter()
        .filter(|s| s.label.contains(only.as_str()))
        .collect();
    let mut rows = Vec::new();
    rt.block_on(async {
        for s in &scenarios {
            eprintln!("{}: {} source messages, saturation", s.label, s.messages);
            let sat = run(backend, s, None).await;
            let paced_rate = (sat.rate / 2.0).max(10.0);
            eprintln!(
                "  {:.0} msg/s; now paced at {paced_rate:.0} msg/s",
                sat.rate
            );
            let paced = run(backend, s, Some(paced_rate)).await;
            rows.push((s.label.clone(), s.messages, sat, paced_rate, paced));
        }
    });
    println!();
    println!(
        "End to end on the {} (latency: origin send to last completion)",
        backend.label()
    );
    println!(
        "| scenario | source msgs | saturation msg/s | invocations/s | p50 / p99 at saturation | paced at msg/s | p50 / p99 paced |"
    );
    println!("|---|---|---|---|---|---|---|");
    for (label, msgs, sat, paced_rate, paced) in rows {
        println!(
            "| {label} | {msgs} | {:.0} | {:.0} | {} / {} ms | {paced_rate:.0} | {} / {} ms |",
            sat.rate,
            sat.invocations as f64 / sat.secs,
            sat.latency.latency_p50_ms,
            sat.latency.latency_p99_ms,
            paced.latency.latency_p50_ms,
            paced.latency.latency_p99_ms,
        );
    }

    // The storage engine's ceiling: the no-op end to end next to what SQLite itself does for the
    // same durable cycle (common/sqlite_cycle.rs), alternating so drift hits both alike.
    if backend == Backend::Embedded && (only.is_empty() || only.contains("ceiling")) {
        // PIPELINE_BENCH_CEILING_WORKERS: the no-op's concurrency (default 128). With 32, each
        // worker holds its slot ~330 µs per 14 µs invocation (the commit's round trip through
        // the writer), so the loop is bound by latency with a quarter of the cores idle.
        let workers: u32 = std::env::var("PIPELINE_BENCH_CEILING_WORKERS")
            .map(|v| v.parse().expect("PIPELINE_BENCH_CEILING_WORKERS: a count"))
            .unwrap_or(128);
        let mut s = noop(workers, n(40_000.0));
        // PIPELINE_BENCH_CEILING_SENDERS: its sender tasks (default 16; with 8 the sends ended
        // just before the last completion at 128 workers, so they set the pace).
        s.senders = std::env::var("PIPELINE_BENCH_CEILING_SENDERS")
            .map(|v| v.parse().expect("PIPELINE_BENCH_CEILING_SENDERS: a count"))
            .unwrap_or(16);
        let mut pairs = Vec::new();
        for round in 0..3 {
            let dir = tempfile::tempdir().expect("temp dir");
            eprintln!(
                "ceiling, round {round}: the SQLite cycle, {} messages",
                s.messages
            );
            let base = sqlite_cycle::rate(dir.path(), s.messages as usize);
            eprintln!(
                "  {base:.0} msg/s; now Levee's no-op, {workers} workers, {} senders",
                s.senders
            );
            let levee = rt.block_on(run(backend, &s, None)).rate;
            eprintln!(
                "  {levee:.0} msg/s ({:.2} of the SQLite cycle)",
                levee / base
            );
            pairs.push((base, levee));
        }
        let median = |mut v: Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        let base = median(pairs.iter().map(|p| p.0).collect());
        let levee = median(pairs.iter().map(|p| p.1).collect());
        let ratio = median(pairs.iter().map(|p| p.1 / p.0).collect());
        println!();
        println!(
            "Storage ceiling: no-op, {workers} workers, {} senders, {} messages at saturation, next to the SQLite cycle (insert 10, lease 10, delete 10; WAL, synchronous=NORMAL; one transaction each), 3 rounds alternating",
            s.senders, s.messages
        );
        println!("| round | SQLite cycle msg/s | Levee no-op msg/s | ratio |");
        println!("|---|---|---|---|");
        for (i, (b, l)) in pairs.iter().enumerate() {
            println!("| {i} | {b:.0} | {l:.0} | {:.2} |", l / b);
        }
        println!("| median | {base:.0} | {levee:.0} | {ratio:.2} |");
    }

    // The cost of metrics on the hot path: the no-op at saturation, unscraped and with /metrics
    // rendered every second, alternating so drift of the machine hits both alike.
    if backend == Backend::Embedded && (only.is_empty() || only.contains("metrics")) {
        let s = noop(32, n(40_000.0));
        let runs = rt.block_on(async {
            let mut out = Vec::new();
            for round in 0..3 {
                for scrape in [false, true] {
                    eprintln!("metrics cost, round {round}: scraped {scrape}");
                    out.push((scrape, run_scraped(backend, &s, None, scrape).await.rate));
                }
            }
            out
        });
        let mean = |scraped: bool| {
            let v: Vec<f64> = runs
                .iter()
                .filter(|r| r.0 == scraped)
                .map(|r| r.1)
                .collect();
            v.iter().sum::<f64>() / v.len() as f64
        };
        println!();
        println!(
            "Cost of /metrics: noop, 32 workers, {} messages at saturation, alternating",
            s.messages
        );
        println!("| run | unscraped msg/s | scraped every 1 s msg/s |");
        println!("|---|---|---|");
        for (i, pair) in runs.chunks(2).enumerate() {
            println!("| {} | {:.0} | {:.0} |", i + 1, pair[0].1, pair[1].1);
        }
        println!(
            "| mean | {:.0} | {:.0} (ratio {:.3}) |",
            mean(false),
            mean(true),
            mean(true) / mean(false)
        );
    }

    // Small messages with and without a flood of 1 MiB events through the same function.
    let (small_rate, large_rate, secs) = match backend {
        Backend::Embedded => (1000.0, 20.0, (20.0 * k.max(0.25)).min(60.0)),
        Backend::Aws => (10.0, 1.0, 30.0),
    };
    let large_bytes = 1 << 20;
    let floods = rt.block_on(async {
        let mut out = Vec::new();
        for large in [0.0, large_rate] {
            eprintln!(
                "flood: small {small_rate}/s, large {large}/s of {} KiB, {secs} s",
                large_bytes / 1024
            );
            out.push((
                large,
                run_flood(backend, small_rate, large, large_bytes, secs).await,
            ));
        }
        out
    });
    println!();
    println!(
        "Small messages (noop, 8 workers, {small_rate:.0}/s for {secs:.0} s) beside a flood of {} KiB events to the same function, on the {}",
        large_bytes / 1024,
        backend.label()
    );
    println!("| large events/s | large events sent | small p50 / p99 | large p50 / p99 |");
    println!("|---|---|---|---|");
    for (rate, f) in floods {
        let large = if f.stats.large_latency_samples > 0 {
            format!(
                "{} / {} ms",
                f.stats.large_latency_p50_ms, f.stats.large_latency_p99_ms
            )
        } else {
            "-".into()
        };
        println!(
            "| {rate:.0} | {} | {} / {} ms | {large} |",
            f.large_sent, f.stats.latency_p50_ms, f.stats.latency_p99_ms
        );
    }
}
