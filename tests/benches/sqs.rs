//! Levee's SQS backend on a fast SQS server (fauxqs, started by `localstack/fast-sqs.sh`), next to
//! a plain aws-sdk-sqs consumer loop against the same server in the same run.
//!
//! Run: `cargo bench -p levee-tests --bench sqs`. Rounds alternate (baseline, then Levee, then the
//! optional platform on moto) so drift of the machine hits all alike; every round and the medians
//! are printed, with the ratio Levee / baseline per round.
//!
//! - baseline: N messages pre-filled with `SendMessageBatch` (not timed), then C tasks each doing
//!   `ReceiveMessage` (10, long poll 1 s) + `DeleteMessageBatch` until N are deleted; msg/s over
//!   the time from the first receive to the N-th delete.
//! - Levee, SQLite ledger: the same N pre-filled messages drained by one host's worker pool
//!   (`WorkerPool`, the wasmtime runtime and the `noop` guest, exactly as `Platform` builds them)
//!   over `OffloadQueue<LedgerQueue<SqsQueue>>` as `AwsBackends` assembles it, with SQS on fauxqs
//!   and the ledger's completion records (one batch read per receive; no record transaction, as
//!   the no-op writes and emits nothing) on the embedded SQLite store instead of DynamoDB, blobs
//!   on disk. All
//!   real code paths; what is left out is the platform's kv cache (the no-op does no kv) and its
//!   release controller.
//! - Levee platform, DynamoDB on moto (`SQS_BENCH_MOTO=1`, the default): a whole `Platform` on the
//!   AWS backends with SQS on fauxqs and DynamoDB/S3 on moto (started as the tests start it), for
//!   reference: its rate is moto's DynamoDB rate, not Levee's.
//!
//! Environment: `SQS_BENCH_MESSAGES` (N, default 20000), `SQS_BENCH_CONSUMERS` (C, default 4),
//! `SQS_BENCH_WORKERS` (default 32), `SQS_BENCH_MAX_WORKERS` (default = workers; the pool runs one
//! fetcher per 20), `SQS_BENCH_ROUNDS` (default 3), `SQS_BENCH_MOTO` (0 skips the moto platform),
//! `SQS_BENCH_MOTO_MESSAGES` (default 400).

// The `levee` binary's allocator, so the bench measures what it runs.
#[global_allocator]
static ALLOCATOR: levee::Allocator = levee::Allocator;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::{DeleteMessageBatchRequestEntry, SendMessageBatchRequestEntry};
use levee::queue::Queue;
use levee::queue::ledger::LedgerQueue;
use levee::runtime::{FunctionDef, FunctionSlot, Limits, Runtime, RuntimeConfig};
use levee::worker::{Backoff, PoolConfig, WorkerPool};
use levee::{DiskBlobs, EmbeddedDb, OffloadQueue, QueueSpec, SqsQueue, Store};
use levee_tests::emulator::unique;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Starts fauxqs with `localstack/fast-sqs.sh` (or finds it running); returns its endpoint.
fn fauxqs() -> String {
    let script = levee_tests::repo_root().join("localstack/fast-sqs.sh");
    let out = std::process::Command::new("bash")
        .arg(&script)
        .output()
        .expect("running localstack/fast-sqs.sh");
    assert!(
        out.status.success(),
        "localstack/fast-sqs.sh failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("export LEVEE_FAST_SQS_ENDPOINT="))
        .map(|u| u.trim().to_string())
        .expect("fast-sqs.sh prints LEVEE_FAST_SQS_ENDPOINT")
}

async fn sdk(endpoint: &str) -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(Region::new("us-east-1"))
        .test_credentials()
        .load()
        .await
}

/// Routes SQS clients built from an `SdkConfig` to `sqs` while the rest keep its endpoint, as
/// `AWS_ENDPOINT_URL_SQS` does: unless the shared endpoint was set on the loader, the SDK asks the
/// service config first.
#[derive(Debug)]
struct SqsElsewhere {
    sqs: String,
}

impl aws_types::service_config::LoadServiceConfig for SqsElsewhere {
    fn load_config(&self, key: aws_types::service_config::ServiceConfigKey<'_>) -> Option<String> {
        (key.service_id() == "SQS" && key.env() == "AWS_ENDPOINT_URL").then(|| self.sqs.clone())
    }
}

/// CPU seconds (user + system) a process used so far, from `/proc/{pid}/stat`.
fn cpu_secs(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command (which may hold spaces): state is field 3, utime 14, stime 15.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<u64> = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|v| v.parse().ok())
        .collect();
    f.iter().sum::<u64>() as f64 / 100.0
}

/// CPU seconds of this process and of the fauxqs server, for CPU per message of each side.
#[derive(Clone, Copy)]
struct Cpu {
    client: f64,
    server: f64,
}

fn cpu_now(server_pid: &str) -> Cpu {
    Cpu {
        client: cpu_secs("self"),
        server: cpu_secs(server_pid),
    }
}

/// What one timed run measured.
#[derive(Clone, Copy)]
struct Run {
    rate: f64,
    /// CPU µs per message of this process (the consumer) and of the server, during the run.
    client_us: f64,
    server_us: f64,
}

impl Run {
    fn new(n: u64, secs: f64, start: Cpu, end: Cpu) -> Self {
        Run {
            rate: n as f64 / secs,
            client_us: (end.client - start.client) * 1e6 / n as f64,
            server_us: (end.server - start.server) * 1e6 / n as f64,
        }
    }
}

fn body(n: u64) -> String {
    format!(r#"{{"n": {n}}}"#)
}

/// Fills the queue at `url` with `n` messages by `SendMessageBatch` from 8 tasks.
async fn prefill(client: &Client, url: &str, n: u64) {
    let tasks = 8u64;
    let mut joins = Vec::new();
    for k in 0..tasks {
        let (client, url) = (client.clone(), url.to_string());
        joins.push(tokio::spawn(async move {
            let mut i = k * 10;
            while i < n {
                let entries = (i..(i + 10).min(n))
                    .map(|j| {
                        SendMessageBatchRequestEntry::builder()
                            .id(j.to_string())
                            .message_body(body(j))
                            .build()
                            .expect("entry")
                    })
                    .collect();
                let out = client
                    .send_message_batch()
                    .queue_url(&url)
                    .set_entries(Some(entries))
                    .send()
                    .await
                    .expect("SendMessageBatch");
                assert!(out.failed().is_empty(), "prefill: {:?}", out.failed());
                i += tasks * 10;
            }
        }));
    }
    for j in joins {
        j.await.expect("prefill task");
    }
}

async fn create_queue(client: &Client, name: &str) -> String {
    client
        .create_queue()
        .queue_name(name)
        .send()
        .await
        .expect("CreateQueue")
        .queue_url()
        .expect("queue url")
        .to_string()
}

/// The plain consumer loop: C tasks of receive 10 + delete in a batch; msg/s.
async fn baseline(client: &Client, n: u64, consumers: u64, server: &str) -> Run {
    let url = create_queue(client, &unique("base")).await;
    prefill(client, &url, n).await;
    let deleted = Arc::new(AtomicU64::new(0));
    let done = Arc::new(tokio::sync::Notify::new());
    let cpu0 = cpu_now(server);
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..consumers {
        let (client, url, deleted, done) =
            (client.clone(), url.clone(), deleted.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            while deleted.load(Ordering::Relaxed) < n {
                let out = client
                    .receive_message()
                    .queue_url(&url)
                    .max_number_of_messages(10)
                    .visibility_timeout(30)
                    .wait_time_seconds(1)
                    .send()
                    .await
                    .expect("ReceiveMessage");
                let msgs = out.messages.unwrap_or_default();
                if msgs.is_empty() {
                    continue;
                }
                let entries = msgs
                    .iter()
                    .enumerate()
                    .map(|(i, m)| {
                        DeleteMessageBatchRequestEntry::builder()
                            .id(i.to_string())
                            .receipt_handle(m.receipt_handle().unwrap_or_default())
                            .build()
                            .expect("entry")
                    })
                    .collect();
                let out = client
                    .delete_message_batch()
                    .queue_url(&url)
                    .set_entries(Some(entries))
                    .send()
                    .await
                    .expect("DeleteMessageBatch");
                let ok = out.successful().len() as u64;
                if deleted.fetch_add(ok, Ordering::Relaxed) + ok >= n {
                    done.notify_one();
                }
            }
        }));
    }
    done.notified().await;
    let secs = t0.elapsed().as_secs_f64();
    let run = Run::new(n, secs, cpu0, cpu_now(server));
    for t in tasks {
        t.await.expect("consumer");
    }
    run
}

/// Pool sizing of the Levee runs.
#[derive(Clone, Copy)]
struct Workers {
    workers: u32,
    max: u32,
}

/// Waits until `completed()` reaches `n`; returns the seconds since `t0`.
async fn drain(n: u64, t0: Instant, completed: impl Fn() -> u64, label: &str) -> f64 {
    let mut last = Instant::now();
    loop {
        let c = completed();
        if c >= n {
            return t0.elapsed().as_secs_f64();
        }
        if last.elapsed() >= Duration::from_secs(5) {
            eprintln!("    {label}: {c} / {n}");
            last = Instant::now();
        }
        assert!(
            t0.elapsed() < Duration::from_secs(300),
            "{label}: {c} of {n} after 300 s"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// One host's worker pool on `OffloadQueue<LedgerQueue<SqsQueue>>`, the ledger on SQLite; msg/s.
async fn levee_sqlite(sdk: &SdkConfig, client: &Client, n: u64, w: Workers, server: &str) -> Run {
    let dir = tempfile::tempdir().expect("temp dir");
    let prefix = format!("{}-", unique("levee"));
    let sqs = SqsQueue::new(sdk, prefix.clone());
    let db = EmbeddedDb::open(dir.path().join("levee.db")).expect("open SQLite");
    let store: Arc<dyn Store> = Arc::new(db.store());
    let ledger = LedgerQueue::new(sqs, store.clone(), Arc::new(DiskBlobs::new(dir.path())));
    let offload = Arc::new(OffloadQueue::new(ledger, DiskBlobs::new(dir.path())));
    let queue: Arc<dyn Queue> = offload.clone();
    queue
        .ensure(&QueueSpec {
            name: "noop".into(),
            max_receive: 5,
        })
        .await
        .expect("ensure");
    let url = client
        .get_queue_url()
        .queue_name(format!("{prefix}noop"))
        .send()
        .await
        .expect("GetQueueUrl")
        .queue_url()
        .expect("url")
        .to_string();
    prefill(client, &url, n).await;
    let runtime = Runtime::new(RuntimeConfig {
        max_instances: w.max * 2 + 16,
        max_memory_bytes: 32 << 20,
        cache_dir: Some(dir.path().join("compiled")),
    })
    .expect("runtime");
    let def = FunctionDef::new(
        "noop",
        levee_tests::guest("noop"),
        Limits {
            memory_bytes: 32 << 20,
            timeout: Duration::from_secs(5),
        },
        Vec::new(),
        store,
    );
    let slot = FunctionSlot::new(runtime.load(def).expect("load noop"), 1);
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let cfg = PoolConfig {
        workers: w.workers,
        max_workers: w.max,
        lease: Duration::from_secs(30),
        max_receive: 5,
        backoff: Backoff {
            base: Duration::from_millis(100),
            max: Duration::from_secs(60),
        },
        poll_wait: Duration::from_secs(1),
    };
    let cpu0 = cpu_now(server);
    let t0 = Instant::now();
    let pool = WorkerPool::start(slot, queue.clone(), cfg, stop_rx);
    let secs = drain(n, t0, || pool.emit_counts().completed, "levee").await;
    let run = Run::new(n, secs, cpu0, cpu_now(server));
    let _ = stop.send(true);
    pool.join().await;
    let st = pool.stats();
    let batches = offload.inner().inner().batch_counts();
    eprintln!(
        "    {} invocations, {:.0} µs in the handler and {:.0} µs holding a worker per invocation; \
         {} DeleteMessageBatch calls, {:.1} entries per call",
        st.invocations,
        st.busy_micros as f64 / st.invocations.max(1) as f64,
        st.occupied_micros as f64 / st.invocations.max(1) as f64,
        batches.delete_calls,
        batches.deletes as f64 / batches.delete_calls.max(1) as f64
    );
    run
}

/// A whole platform on the AWS backends: SQS on fauxqs, DynamoDB and S3 on moto; msg/s.
async fn levee_moto(fauxqs: &str, dir: &Path, n: u64, w: Workers) -> Option<f64> {
    let emu = levee_tests::emulator::emulator()?;
    // As `AWS_ENDPOINT_URL=moto AWS_ENDPOINT_URL_SQS=fauxqs` would: an endpoint set on the
    // loader itself would win over the per-service one, so it is marked as from the environment.
    let mut builder = emu.sdk_config().await.to_builder();
    builder.insert_origin(
        "endpoint_url",
        aws_types::origin::Origin::shared_environment_variable(),
    );
    let sdk = builder
        .service_config(SqsElsewhere {
            sqs: fauxqs.to_string(),
        })
        .build();
    let s = emu.settings("sqsbench");
    let spec = QueueSpec {
        name: "noop".into(),
        max_receive: 5,
    };
    levee::provision(&sdk, &s, std::slice::from_ref(&spec))
        .await
        .expect("provision");
    let client = Client::new(&sdk);
    let url = client
        .get_queue_url()
        .queue_name(format!("{}noop", s.queue_prefix))
        .send()
        .await
        .expect("GetQueueUrl on fauxqs")
        .queue_url()
        .expect("url")
        .to_string();
    assert!(url.contains(fauxqs.trim_start_matches("http://")), "{url}");
    prefill(&client, &url, n).await;
    let extra = format!(
        "backend = \"aws\"\n\n[aws]\nqueue_prefix = \"{}\"\ntable = \"{}\"\nbucket = \"{}\"",
        s.queue_prefix, s.table, s.bucket
    );
    let fns = [levee_tests::Fn::new(
        "noop",
        "noop",
        &format!("concurrency = {}\nmax_workers = {}", w.workers, w.max),
    )];
    let manifest = levee_tests::write_manifest_with(dir, &extra, &fns);
    let opts = levee::platform::StartOptions {
        aws_sdk: Some(sdk),
        data_dir: Some(dir.join("host")),
        ..Default::default()
    };
    // Timed from the platform's start returning (it compiles the guest first), counting only the
    // messages completed after that.
    let p = levee_tests::start_with(&manifest, opts).await;
    let pool = p.pools()["noop"].clone();
    let before = pool.emit_counts().completed;
    let t0 = Instant::now();
    let rate =
        (n - before) as f64 / drain(n, t0, || pool.emit_counts().completed, "levee on moto").await;
    p.shutdown().await;
    Some(rate)
}

/// One round: baseline, Levee on the SQLite ledger, Levee platform on moto (if run).
type Row = (Run, Run, Option<f64>);

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let n = env_or("SQS_BENCH_MESSAGES", 20_000);
    let consumers = env_or("SQS_BENCH_CONSUMERS", 4);
    let workers = env_or("SQS_BENCH_WORKERS", 32) as u32;
    let w = Workers {
        workers,
        max: (env_or("SQS_BENCH_MAX_WORKERS", u64::from(workers)) as u32).max(workers),
    };
    let rounds = env_or("SQS_BENCH_ROUNDS", 3).max(1);
    let moto = env_or("SQS_BENCH_MOTO", 1) != 0;
    let moto_n = env_or("SQS_BENCH_MOTO_MESSAGES", 400);
    eprintln!("building guest components (functions/ for wasm32-wasip2) ...");
    levee_tests::guests();
    let endpoint = fauxqs();
    let pid_file = levee_tests::repo_root().join(".venv-fast-sqs/fauxqs.pid");
    let server = std::fs::read_to_string(pid_file)
        .map(|p| p.trim().to_string())
        .unwrap_or_default();
    eprintln!("fauxqs at {endpoint} (pid {server})");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let fetchers = w.max.div_ceil(20);
    let mut rows: Vec<Row> = Vec::new();
    rt.block_on(async {
        let sdk = sdk(&endpoint).await;
        let client = Client::new(&sdk);
        for round in 0..rounds {
            eprintln!("round {round}: baseline, {n} messages, {consumers} consumers");
            let base = baseline(&client, n, consumers, &server).await;
            eprintln!(
                "  {:.0} msg/s; now Levee (SQLite ledger), {workers} workers",
                base.rate
            );
            let levee = levee_sqlite(&sdk, &client, n, w, &server).await;
            eprintln!(
                "  {:.0} msg/s ({:.2} of the baseline)",
                levee.rate,
                levee.rate / base.rate
            );
            let on_moto = if moto {
                let dir = tempfile::tempdir().expect("temp dir");
                eprintln!("  Levee platform, DynamoDB/S3 on moto, {moto_n} messages");
                let r = levee_moto(&endpoint, dir.path(), moto_n, w).await;
                if let Some(r) = r {
                    eprintln!("  {r:.0} msg/s");
                }
                r
            } else {
                None
            };
            rows.push((base, levee, on_moto));
        }
    });
    println!();
    println!(
        "SQS on fauxqs ({endpoint}): N = {n} messages per run, baseline C = {consumers} consumers \
         (receive 10 + DeleteMessageBatch), Levee one host: {} workers, max_workers {} ({fetchers} \
         fetcher(s)), noop guest; {rounds} rounds alternating",
        w.workers, w.max
    );
    println!(
        "| round | baseline msg/s | Levee msg/s (SQLite ledger) | ratio | CPU µs/msg consumer + server, baseline | the same, Levee | Levee platform msg/s (DynamoDB/S3 on moto, {moto_n} msgs) |"
    );
    println!("|---|---|---|---|---|---|---|");
    let show = |r: Option<f64>| r.map_or("-".to_string(), |r| format!("{r:.0}"));
    let cpu = |r: &Run| format!("{:.0} + {:.0}", r.client_us, r.server_us);
    for (i, (b, l, m)) in rows.iter().enumerate() {
        println!(
            "| {i} | {:.0} | {:.0} | {:.2} | {} | {} | {} |",
            b.rate,
            l.rate,
            l.rate / b.rate,
            cpu(b),
            cpu(l),
            show(*m)
        );
    }
    let moto_rates: Vec<f64> = rows.iter().filter_map(|r| r.2).collect();
    let med = |f: &dyn Fn(&Row) -> f64| median(rows.iter().map(f).collect());
    println!(
        "| median | {:.0} | {:.0} | {:.2} | {:.0} + {:.0} | {:.0} + {:.0} | {} |",
        med(&|r| r.0.rate),
        med(&|r| r.1.rate),
        med(&|r| r.1.rate / r.0.rate),
        med(&|r| r.0.client_us),
        med(&|r| r.0.server_us),
        med(&|r| r.1.client_us),
        med(&|r| r.1.server_us),
        show((!moto_rates.is_empty()).then(|| median(moto_rates)))
    );
}
