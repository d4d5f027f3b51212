//! End-to-end throughput and latency on the embedded backend: messages per second through one
//! no-op function and through the four-function sample pipeline (inbound → routing → notify,
//! inbound → search-index), with p50/p99 latency from the send of the source message to the
//! committed completion (delete) of the last message of its chain.
//!
//! Run: `cargo bench -p levee-tests --bench pipeline` (`PIPELINE_BENCH_SCALE=0.2` for a quick
//! run). Each scenario runs on a fresh in-process platform in a temp dir, twice:
//! - saturation: 8 tasks send N source messages in batches of 10 as fast as the queue takes
//!   them while the workers run; throughput is N over the time from the first send until the
//!   last completion. Latency here includes the backlog the senders build up.
//! - paced: a fresh platform receives half the saturation rate, steadily, in batches of 10, so
//!   the latency figures are those of a platform that keeps up.
//!
//! Latencies come from the worker pools' histograms (`PoolStats::latency_p50_ms`/`p99`): each
//! completion records now minus the origin send time, which workers carry down the pipeline in
//! the `levee-origin-ms` attribute; the pipeline's figure is that of `notify`, the end of the
//! longest chain. Progress goes to stderr, the table to stdout.

use std::sync::Arc;
use std::time::{Duration, Instant};

use levee::OutgoingMessage;
use levee::platform::Platform;
use levee::worker::PoolStats;
use levee_tests::{Fn, start, write_manifest};

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

fn scale() -> f64 {
    std::env::var("PIPELINE_BENCH_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0)
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
    }
}

/// Sends `messages` source messages to `source` from [`SENDERS`] tasks in batches of 10, at most
/// `rate` per second overall (`None`: as fast as the queue accepts them).
async fn send_all(
    p: Arc<Platform>,
    source: &'static str,
    body: fn(u64) -> Vec<u8>,
    messages: u64,
    rate: Option<f64>,
) {
    let per_sender = messages / SENDERS;
    let tasks: Vec<_> = (0..SENDERS)
        .map(|k| {
            let p = p.clone();
            tokio::spawn(async move {
                let start = Instant::now();
                let mut sent = 0u64;
                while sent < per_sender {
                    if let Some(r) = rate {
                        let due = Duration::from_secs_f64(sent as f64 * SENDERS as f64 / r);
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

async fn run(s: &Scenario, rate: Option<f64>) -> Outcome {
    let dir = tempfile::tempdir().expect("temp dir");
    let p = start(&write_manifest(dir.path(), &s.fns)).await;
    let expected = s.messages / SENDERS * SENDERS;
    let t0 = Instant::now();
    let sender = tokio::spawn(send_all(p.clone(), s.source, s.body, s.messages, rate));
    let mut last_report = Instant::now();
    loop {
        let mut done = true;
        let mut counts = Vec::new();
        for sink in &s.sinks {
            let n = processed(&p, sink).await;
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
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let secs = t0.elapsed().as_secs_f64();
    sender.await.expect("senders");
    let latency = p.pools()[s.last].stats();
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

fn main() {
    eprintln!("building guest components (functions/ for wasm32-wasip2) ...");
    levee_tests::guests();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let k = scale();
    let n = |base: f64| ((base * k) as u64).max(SENDERS * BATCH);
    let scenarios = vec![
        noop(8, n(40_000.0)),
        noop(16, n(40_000.0)),
        noop(32, n(40_000.0)),
        pipeline(4, n(8_000.0)),
        pipeline(8, n(8_000.0)),
    ];
    let mut rows = Vec::new();
    rt.block_on(async {
        for s in &scenarios {
            eprintln!("{}: {} source messages, saturation", s.label, s.messages);
            let sat = run(s, None).await;
            let paced_rate = (sat.rate / 2.0).max(10.0);
            eprintln!(
                "  {:.0} msg/s; now paced at {paced_rate:.0} msg/s",
                sat.rate
            );
            let paced = run(s, Some(paced_rate)).await;
            rows.push((s.label.clone(), s.messages, sat, paced_rate, paced));
        }
    });
    println!();
    println!("End to end on the embedded backend (latency: origin send to last completion)");
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
}
