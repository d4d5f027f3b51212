//! The running platform: backends, runtime, one worker pool per function, and the operations the
//! HTTP API and the CLI expose (send, invoke, status, kv, dead letters).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use levee_scaler::StatusHandle;
use serde::Serialize;
use tokio::sync::watch;

use crate::manifest::{Backend, Manifest};
use crate::queue::{
    DeadLetter, DlqPage, Emitted, OutgoingMessage, Queue, QueueSpec, ReceivedMessage,
};
use crate::releases::{Loaded, Releases};
use crate::runtime::{
    Failure, Function, FunctionDef, FunctionSlot, Limits, Output, Runtime, RuntimeConfig,
};
use crate::store::{CacheMetrics, CachedStore, CommitOutcome, FaultyStore, Store};
use crate::worker::{Backoff, PoolConfig, PoolStats, WorkerPool};
use crate::{Error, Result, backends};

/// Largest message body accepted by `send` (larger bodies need the blob offload of the AWS issue).
pub const MAX_BODY_BYTES: usize = 10 << 20;
/// Longest retry backoff.
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// Time allowed on shutdown, beyond the longest handler deadline, to settle what is in flight.
pub const SHUTDOWN_SETTLE: Duration = Duration::from_secs(5);

/// Overrides of the manifest's `[platform]` settings, from the command line.
#[derive(Debug, Clone, Default)]
pub struct StartOptions {
    pub data_dir: Option<PathBuf>,
    pub backend: Option<Backend>,
    /// Start worker pools (false: an API-only host, e.g. for `invoke` tests).
    pub run_workers: bool,
    /// AWS configuration to use instead of the standard one (tests against an emulator).
    pub aws_sdk: Option<aws_config::SdkConfig>,
    /// Put a [`FaultyStore`] between the cache and the backend's store, reachable through
    /// [`Platform::store_faults`], to stage store outages (fault-injection tests and drills).
    pub inject_store_faults: bool,
    /// Run workers for these functions only (`levee up --function`, one ECS service per
    /// function); `None` runs them all. Every function can still be sent to and invoked.
    pub only: Option<Vec<String>>,
}

/// One function's line in `levee status`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct FunctionStatus {
    pub name: String,
    pub visible: u64,
    pub in_flight: u64,
    pub dlq: u64,
    pub workers: u32,
    pub processed: u64,
    pub failed: u64,
    pub delayed: u64,
    pub retried: u64,
    pub oldest_age_ms: Option<u64>,
    pub max_workers: u32,
    pub invocations: u64,
    /// Invocations whose handler succeeded.
    pub succeeded: u64,
    /// The module version the function runs (its content hash).
    pub version: String,
    /// Its stable release number (`levee versions`; 1 is the manifest's module).
    pub release: u32,
    /// A release on canary, with the share of messages it takes.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub canary: Option<CanaryStatus>,
    /// The latest line of its release history (a deploy, promotion or rollback).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub last_release_event: Option<String>,
    /// Commits refused on a version conflict and run again (no attempt used).
    pub conflicts: u64,
    /// Invocations handed back for the platform's reasons (no attempt used).
    pub infra_failures: u64,
    /// Messages found already committed and settled without running.
    pub duplicates: u64,
    /// Whether the pool paused fetching after an infrastructure failure.
    pub paused: bool,
    /// Workers the scaler last asked for (absent when the scaler is off or has not decided yet).
    pub desired: Option<u32>,
    /// Why, in words, from the scaler's last decision.
    pub reason: Option<String>,
    /// The destinations it may call, with their state on this host (empty when none).
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub destinations: Vec<DestinationStatus>,
}

/// A release on canary, in `levee status`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CanaryStatus {
    pub release: u32,
    pub version: String,
    pub share_pct: f64,
}

/// A granted outbound destination's state, in `levee status`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct DestinationStatus {
    /// `scheme://host:port`.
    pub origin: String,
    /// Requests in flight now.
    pub in_flight: u64,
    /// `closed`, `open` or `half-open`.
    pub breaker: String,
    /// How long it asked to be left alone (`Retry-After`, 429, 503), in ms, if it did.
    pub throttled_ms: Option<u64>,
}

/// The cache and circuit breaker in front of a store, in `levee status`.
#[derive(Debug, Clone, Serialize)]
pub struct StoreStatus {
    pub name: String,
    /// `embedded` or `aws`.
    pub backend: Backend,
    #[serde(flatten)]
    pub cache: CacheMetrics,
}

/// `GET /v1/status`.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub functions: Vec<FunctionStatus>,
    pub stores: Vec<StoreStatus>,
}

/// The outcome of a synchronous `invoke`.
#[derive(Debug, Clone, Serialize)]
pub struct InvokeResult {
    /// "ok" or "failed".
    pub outcome: &'static str,
    /// For failures: retryable, permanent, trap, timeout or memory-cap.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Messages the handler emitted (not sent: `invoke` is a dry run for the outbox).
    pub emitted: Vec<EmittedView>,
    pub elapsed_us: u64,
}

/// An emitted message, with its body as text when it is UTF-8.
#[derive(Debug, Clone, Serialize)]
pub struct EmittedView {
    pub function: String,
    pub body: String,
}

/// The platform: what `levee up` runs.
pub struct Platform {
    manifest: Manifest,
    queue: Arc<dyn Queue>,
    store: Arc<dyn Store>,
    raw_store: Arc<dyn Store>,
    cache: CachedStore<dyn Store>,
    faults: Option<Arc<FaultyStore<dyn Store>>>,
    /// Each function's versions (swapped in place by releases).
    functions: BTreeMap<String, Arc<FunctionSlot>>,
    releases: Arc<Releases>,
    pools: BTreeMap<String, Arc<WorkerPool>>,
    stop: watch::Sender<bool>,
    data_dir: PathBuf,
    scaler: Option<StatusHandle>,
    /// What `send` accepted per function, for the scaler's surge detection.
    arrivals: Arc<crate::scaling::surge::ArrivalMeter>,
}

impl Platform {
    /// Opens the backends, loads every function and (optionally) starts the worker pools.
    pub async fn start(mut manifest: Manifest, opts: StartOptions) -> Result<Arc<Self>> {
        if let Some(b) = opts.backend {
            manifest.platform.backend = b;
        }
        let data_dir = opts.data_dir.clone().unwrap_or_else(|| manifest.data_dir());
        std::fs::create_dir_all(&data_dir)
            .map_err(|e| Error::io(format!("creating data directory {}", data_dir.display()), e))?;
        // Before the pools start: they take their histogram handles from the recorder.
        crate::telemetry::install();
        let backends = backends::open(&manifest, &data_dir, opts.aws_sdk.as_ref()).await?;
        // Every function's kv goes through the cache: coalescing, timeouts, bounded concurrency
        // and a circuit breaker shield the store during bursts and outages.
        let (raw_store, faults) = if opts.inject_store_faults {
            let f = Arc::new(FaultyStore::new(backends.store.clone()));
            (f.clone() as Arc<dyn Store>, Some(f))
        } else {
            (backends.store.clone(), None)
        };
        let cache = CachedStore::new("kv", raw_store.clone(), &manifest.cache)?;
        let store: Arc<dyn Store> = Arc::new(cache.clone());
        let max_workers: u32 = manifest.functions.values().map(|f| f.max_workers()).sum();
        let runtime = Arc::new(Runtime::new(RuntimeConfig {
            max_instances: max_workers * 2 + 16,
            max_memory_bytes: manifest
                .functions
                .values()
                .map(|f| f.memory_bytes())
                .max()
                .unwrap_or(64 << 20),
            cache_dir: Some(data_dir.join("compiled")),
        })?);
        let extra_roots = manifest.extra_roots()?;
        let mut loaded = BTreeMap::new();
        for (name, spec) in &manifest.functions {
            if backends.creates_queues {
                backends
                    .queue
                    .ensure(&QueueSpec {
                        name: name.clone(),
                        max_receive: spec.max_receive,
                    })
                    .await?;
            }
            let module = manifest.module_path(spec);
            let secrets =
                crate::secrets::resolve(name, &spec.secrets, opts.aws_sdk.as_ref()).await?;
            let redactor = crate::secrets::Redactor::new(secrets.iter().map(|(_, v)| v.clone()));
            let mut config: Vec<(String, String)> = spec.config.clone().into_iter().collect();
            config.extend(secrets);
            let outbound = crate::outbound::Outbound::new(name, &spec.outbound, &extra_roots)?;
            let mut def = FunctionDef::new(
                name,
                module.clone(),
                Limits {
                    memory_bytes: spec.memory_bytes(),
                    timeout: spec.timeout(),
                },
                spec.emits_to.clone(),
                store.clone(),
            );
            def.outbound = Arc::new(outbound);
            def.config = Arc::new(config);
            def.redactor = Arc::new(redactor);
            let bytes = std::fs::read(&module).map_err(|e| {
                Error::io(
                    format!("functions.{name}.module: reading {}", module.display()),
                    e,
                )
            })?;
            let function = runtime
                .load_bytes(def.clone(), &bytes)
                .map_err(|e| Error::Manifest(format!("functions.{name}.module: {e}")))?;
            loaded.insert(
                name.clone(),
                Loaded {
                    def,
                    function,
                    bytes,
                },
            );
        }
        if let Some(only) = &opts.only {
            for name in only {
                if !manifest.functions.contains_key(name) {
                    let known: Vec<&str> = manifest.functions.keys().map(String::as_str).collect();
                    return Err(Error::Invalid(format!(
                        "--function {name}: the manifest has no such function (it has: {})",
                        known.join(", ")
                    )));
                }
            }
        }
        let runs_here = |name: &String| {
            opts.run_workers && opts.only.as_ref().is_none_or(|only| only.contains(name))
        };
        let judges: std::collections::BTreeSet<String> = manifest
            .functions
            .keys()
            .filter(|n| runs_here(n))
            .cloned()
            .collect();
        // A fleet host that runs some functions' workers follows only their releases (its
        // task role reaches only their records); any other host follows all of them.
        let followed = if opts.only.is_some() {
            judges.clone()
        } else {
            manifest.functions.keys().cloned().collect()
        };
        // Release 1 of each function is its manifest module; the records say what runs.
        let releases = Releases::start(
            &manifest,
            runtime,
            raw_store.clone(),
            backends.blobs.clone(),
            loaded,
            judges,
            followed,
        )
        .await?;
        let functions = releases.slots().clone();
        let (stop, stop_rx) = watch::channel(false);
        releases.spawn_controller(stop_rx.clone());
        let mut pools = BTreeMap::new();
        if opts.run_workers {
            for (name, spec) in &manifest.functions {
                if !runs_here(name) {
                    continue;
                }
                let cfg = PoolConfig {
                    workers: spec.concurrency,
                    max_workers: spec.max_workers(),
                    lease: spec.visibility_timeout(),
                    max_receive: spec.max_receive,
                    backoff: Backoff {
                        base: Duration::from_millis(spec.backoff_ms),
                        max: MAX_BACKOFF,
                    },
                    poll_wait: Duration::from_secs(1),
                };
                let pool = WorkerPool::start(
                    functions[name].clone(),
                    backends.queue.clone(),
                    cfg,
                    stop_rx.clone(),
                );
                pools.insert(name.clone(), pool);
            }
        }
        if opts.run_workers && crate::scaling::ecs_mode(&manifest) {
            // One host of a fleet: `levee scale` reads what it processed from the store.
            crate::scaling::published::spawn_publisher(
                raw_store.clone(),
                pools.clone(),
                crate::scaling::fleet::candidate_name(),
                stop_rx.clone(),
            );
        }
        let arrivals = Arc::new(crate::scaling::surge::ArrivalMeter::new(
            manifest.functions.keys().cloned(),
        ));
        let scaler = if opts.run_workers {
            crate::scaling::spawn_local(
                &manifest,
                backends.queue.clone(),
                &pools,
                arrivals.clone(),
                stop_rx,
            )?
        } else {
            None
        };
        Ok(Arc::new(Self {
            manifest,
            queue: backends.queue,
            store,
            raw_store,
            cache,
            faults,
            functions,
            releases,
            pools,
            stop,
            data_dir,
            scaler,
            arrivals,
        }))
    }

    /// The manifest the platform runs.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The data directory in use.
    pub fn data_dir(&self) -> &std::path::Path {
        &self.data_dir
    }

    /// The worker pools, by function name.
    pub fn pools(&self) -> &BTreeMap<String, Arc<WorkerPool>> {
        &self.pools
    }

    /// The queue backend.
    pub fn queue(&self) -> &Arc<dyn Queue> {
        &self.queue
    }

    /// The fault injector in front of the backend's store, when started with
    /// [`StartOptions::inject_store_faults`].
    pub fn store_faults(&self) -> Option<&Arc<FaultyStore<dyn Store>>> {
        self.faults.as_ref()
    }

    /// The store functions use (the cache in front of the backend's store).
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The backend's store without the cache (through the fault injector when there is one):
    /// the platform's own records, such as API keys, which must not be served stale.
    pub fn raw_store(&self) -> &Arc<dyn Store> {
        &self.raw_store
    }

    /// The release service (deploy, versions, rollback).
    pub fn releases(&self) -> &Arc<Releases> {
        &self.releases
    }

    fn function(&self, name: &str) -> Result<Arc<Function>> {
        self.functions.get(name).map(|s| s.stable()).ok_or_else(|| {
            let known: Vec<_> = self.functions.keys().map(String::as_str).collect();
            Error::Invalid(format!(
                "unknown function `{name}`; this platform runs: {}",
                known.join(", ")
            ))
        })
    }

    /// Durably queues a message for `function`; returns its id.
    pub async fn send(&self, function: &str, body: Vec<u8>) -> Result<String> {
        self.function(function)?;
        check_body(&body)?;
        let ids = self
            .queue
            .send(function, vec![OutgoingMessage::new(body)])
            .await?;
        self.arrivals.record(function, 1);
        ids.into_iter().next().ok_or_else(|| Error::Unavailable {
            service: "queue".into(),
            message: "send returned no id".into(),
        })
    }

    /// Runs `function` once on `body`, synchronously, with its real kv namespace (its kv
    /// transaction is committed, again with fresh reads on a conflict); emitted messages are
    /// returned, not sent.
    pub async fn invoke(&self, function: &str, body: Vec<u8>) -> Result<InvokeResult> {
        let f = self.function(function)?;
        check_body(&body)?;
        let msg = ReceivedMessage {
            id: format!("invoke-{:016x}", rand::random::<u64>()),
            receipt: String::new(),
            body,
            attributes: vec![],
            receive_count: 1,
            sent_at_ms: now_ms(),
            last_error: None,
        };
        let mut conflicts = 0;
        let inv = loop {
            let inv = f.invoke(&msg).await;
            let Ok(out) = &inv.outcome else { break inv };
            if out.kv.writes.is_empty() && out.kv.adds.is_empty() {
                break inv;
            }
            match self.store.commit(&out.kv).await? {
                CommitOutcome::Conflict { keys } if conflicts < crate::worker::MAX_CONFLICTS => {
                    conflicts += 1;
                    self.store.forget(&out.kv.ns, &keys).await;
                }
                CommitOutcome::Conflict { keys } => {
                    return Err(Error::Unavailable {
                        service: "kv".into(),
                        message: format!(
                            "{conflicts} commits in a row conflicted on {keys:?}; try again"
                        ),
                    });
                }
                _ => break inv,
            }
        };
        let elapsed_us = inv.elapsed.as_micros() as u64;
        Ok(match inv.outcome {
            Ok(Output { emitted, .. }) => InvokeResult {
                outcome: "ok",
                kind: None,
                reason: None,
                emitted: emitted.iter().map(view).collect(),
                elapsed_us,
            },
            Err(f) => InvokeResult {
                outcome: "failed",
                kind: Some(failure_kind(&f)),
                reason: Some(f.to_string()),
                emitted: vec![],
                elapsed_us,
            },
        })
    }

    /// The kv cache's counters and its circuit breaker's state (no store call).
    pub fn cache_metrics(&self) -> CacheMetrics {
        self.cache.metrics()
    }

    /// The scaler's last decision, tick count and last error (`None` when the scaler is off).
    pub fn scaler(&self) -> Option<&StatusHandle> {
        self.scaler.as_ref()
    }

    /// Per-function queue depths, totals, workers and the scaler's last decision.
    pub async fn status(&self) -> Result<Status> {
        let scaler = self.scaler.as_ref().map(StatusHandle::get);
        let decision = scaler.as_ref().and_then(|s| s.decision.as_ref());
        let mut functions = Vec::with_capacity(self.functions.len());
        for (name, spec) in &self.manifest.functions {
            let q = self.queue.stats(name).await?;
            let p = self
                .pools
                .get(name)
                .map(|p| p.stats())
                .unwrap_or(PoolStats {
                    max_workers: spec.max_workers(),
                    ..Default::default()
                });
            functions.push(FunctionStatus {
                name: name.clone(),
                visible: q.visible,
                in_flight: q.in_flight,
                dlq: q.dlq,
                workers: p.workers,
                processed: q.processed,
                failed: q.failed,
                delayed: q.delayed,
                retried: q.retried,
                oldest_age_ms: q.oldest_age_ms,
                max_workers: p.max_workers,
                invocations: p.invocations,
                succeeded: p.succeeded,
                version: self
                    .functions
                    .get(name)
                    .map(|f| f.stable().version().to_string())
                    .unwrap_or_default(),
                release: self
                    .functions
                    .get(name)
                    .map_or(0, |s| s.active().stable_release),
                canary: self.functions.get(name).and_then(|s| {
                    s.active().canary.as_ref().map(|c| CanaryStatus {
                        release: c.release,
                        version: c.function.version().to_string(),
                        share_pct: c.share * 100.0,
                    })
                }),
                last_release_event: self
                    .releases
                    .applied(name)
                    .and_then(|r| r.events.last().cloned())
                    .map(|e| e.what),
                conflicts: p.conflicts,
                infra_failures: p.infra_failures,
                duplicates: p.duplicates,
                paused: p.paused,
                desired: decision
                    .and_then(|d| d.functions.get(name))
                    .map(|d| d.desired),
                reason: decision
                    .and_then(|d| d.functions.get(name))
                    .map(|d| d.reason.clone()),
                destinations: self
                    .functions
                    .get(name)
                    .map(|f| destinations(f.stable().outbound()))
                    .unwrap_or_default(),
            });
        }
        let stores = vec![StoreStatus {
            name: self.cache.name().to_string(),
            backend: self.manifest.platform.backend,
            cache: self.cache.metrics(),
        }];
        Ok(Status { functions, stores })
    }

    /// A value of a function's kv namespace.
    pub async fn kv_get(&self, function: &str, key: &str) -> Result<Option<Bytes>> {
        self.function(function)?;
        crate::store::validate(key, None)?;
        self.store.get(function, key).await
    }

    /// Dead letters of a function.
    pub async fn dlq_list(&self, function: &str, max: usize) -> Result<Vec<DeadLetter>> {
        self.function(function)?;
        self.queue.dlq_list(function, max).await
    }

    /// One page of a function's dead letters (summaries, no bodies); `after` is the previous
    /// page's `next`.
    pub async fn dlq_page(
        &self,
        function: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<DlqPage> {
        self.function(function)?;
        self.queue.dlq_page(function, after, limit).await
    }

    /// One whole dead letter of a function, by id.
    pub async fn dlq_get(&self, function: &str, id: &str) -> Result<Option<DeadLetter>> {
        self.function(function)?;
        self.queue.dlq_get(function, id).await
    }

    /// Moves a function's dead letters back to its queue.
    pub async fn dlq_redrive(&self, function: &str) -> Result<u64> {
        self.function(function)?;
        self.queue.dlq_redrive(function).await
    }

    /// Stops receiving, lets in-flight messages finish, and returns when every pool is idle.
    pub async fn shutdown(&self) {
        let _ = self.stop.send(true);
        for pool in self.pools.values() {
            pool.join().await;
        }
    }

    /// How long [`shutdown_within`](Self::shutdown_within) waits for messages in flight: the
    /// longest `timeout_ms` of the manifest (handlers are stopped at their deadline) plus
    /// [`SHUTDOWN_SETTLE`] to commit or hand them back.
    pub fn shutdown_grace(&self) -> Duration {
        let longest = self
            .manifest
            .functions
            .values()
            .map(|f| f.timeout())
            .max()
            .unwrap_or_default();
        longest + SHUTDOWN_SETTLE
    }

    /// Stops fetching, hands back at once (visibility 0, no attempt used) what was leased but
    /// not started, and waits up to `grace` for the messages in flight to be settled. Returns
    /// false when the grace period ran out; those messages return to their queues when their
    /// leases end.
    pub async fn shutdown_within(&self, grace: Duration) -> bool {
        tokio::time::timeout(grace, self.shutdown()).await.is_ok()
    }
}

fn check_body(body: &[u8]) -> Result<()> {
    if body.is_empty() {
        return Err(Error::Invalid("message body is empty".into()));
    }
    if body.len() > MAX_BODY_BYTES {
        return Err(Error::Invalid(format!(
            "message body is {} bytes; the limit is {MAX_BODY_BYTES}",
            body.len()
        )));
    }
    Ok(())
}

fn view(e: &Emitted) -> EmittedView {
    EmittedView {
        function: e.queue.clone(),
        body: String::from_utf8_lossy(&e.message.body).into_owned(),
    }
}

fn failure_kind(f: &Failure) -> &'static str {
    match f {
        Failure::Retryable(_) => "retryable",
        Failure::Permanent(_) => "permanent",
        Failure::Trap(_) => "trap",
        Failure::Timeout(_) => "timeout",
        Failure::MemoryCap { .. } => "memory-cap",
        Failure::Infrastructure(_) => "infrastructure",
    }
}

/// Milliseconds since the Unix epoch (kept here for `levee::platform::now_ms`; it lives in `ids`).
pub use crate::ids::now_ms;

fn destinations(o: &crate::outbound::Outbound) -> Vec<DestinationStatus> {
    let now = std::time::Instant::now();
    o.destinations()
        .iter()
        .map(|d| DestinationStatus {
            origin: d.origin.to_string(),
            in_flight: d.in_flight() as u64,
            breaker: d.breaker_state().to_string(),
            throttled_ms: d.throttled_for(now).map(|t| t.as_millis() as u64),
        })
        .collect()
}
