//! The Wasm runtime: one wasmtime engine with a tuned pooling allocator, one `InstancePre` per
//! function, a fresh instance per message, with a memory cap and a deadline per invocation.
//!
//! Invocations are futures run on the caller's tokio task: each guest runs on a fiber of its
//! own (wasmtime's async support), yields back to the runtime at every epoch tick, and awaits
//! its kv, WASI and HTTP calls like any task. The deadline is a timeout around the whole
//! invocation, so a guest that spins or waits in a host call (a sleep, a stream, a store call)
//! is stopped there and holds no thread while it waits.

mod artifact;
mod engine;
mod guest_log;
mod host;
mod slot;

use std::collections::HashSet;
use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::FutureExt;
use wasmtime::Store as WasmStore;
use wasmtime::component::{HasSelf, Linker};

use crate::outbound::Outbound;
use crate::queue::{Emitted, ReceivedMessage};
use crate::secrets::Redactor;
use crate::store::{KvCommit, Store};
use crate::{Error, Result};

pub use artifact::version_of;
pub use engine::{EPOCH_TICK, RuntimeConfig};
use host::HostState;
pub use slot::{Active, Canary, FunctionSlot, Pick, WindowSnapshot};

/// Bindings generated from the WIT contract in `functions/wit/`.
mod bindings {
    wasmtime::component::bindgen!({
        path: "../functions/wit",
        world: "capability",
        imports: { default: async },
        exports: { default: async },
    });
}

use bindings::levee::function::types;
use bindings::{Capability, CapabilityPre};

/// Limits applied to every invocation of one function.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Linear memory cap in bytes.
    pub memory_bytes: usize,
    /// Wall-clock deadline: a timeout around the invocation (a computing guest yields to it at
    /// every epoch tick).
    pub timeout: Duration,
}

/// Why an invocation failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The handler asked to be retried later.
    Retryable(String),
    /// The handler said the message can never succeed.
    Permanent(String),
    /// The guest trapped (panic, unreachable, stack overflow, ...).
    Trap(String),
    /// The guest ran past its deadline and was stopped.
    Timeout(Duration),
    /// The guest tried to grow its memory past the cap.
    MemoryCap { cap_bytes: usize },
    /// Not the message's fault: the store was unavailable, the instance pool was full, or
    /// the invocation could not be settled. Retried without using an attempt.
    Infrastructure(String),
}

impl Failure {
    /// Permanent failures go to the DLQ at once; the rest are retried with backoff.
    pub fn is_permanent(&self) -> bool {
        matches!(self, Failure::Permanent(_))
    }

    /// Failures of the platform rather than of the message: they use no attempt.
    pub fn is_infrastructure(&self) -> bool {
        matches!(self, Failure::Infrastructure(_))
    }
}

impl Failure {
    /// The failure with secret values removed from its text.
    fn redacted(self, r: &Redactor) -> Failure {
        if r.is_empty() {
            return self;
        }
        let clean = |m: String| r.redact(&m).into_owned();
        match self {
            Failure::Retryable(m) => Failure::Retryable(clean(m)),
            Failure::Permanent(m) => Failure::Permanent(clean(m)),
            Failure::Trap(m) => Failure::Trap(clean(m)),
            Failure::Infrastructure(m) => Failure::Infrastructure(clean(m)),
            other => other,
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Retryable(m) => write!(f, "retryable error: {m}"),
            Failure::Permanent(m) => write!(f, "permanent error: {m}"),
            Failure::Trap(m) => write!(f, "trap: {m}"),
            Failure::Timeout(d) => write!(
                f,
                "timeout: handler ran past its {} ms deadline",
                d.as_millis()
            ),
            Failure::MemoryCap { cap_bytes } => write!(
                f,
                "memory cap: handler tried to grow its memory past {} MiB",
                cap_bytes / (1024 * 1024)
            ),
            Failure::Infrastructure(m) => write!(f, "infrastructure: {m}"),
        }
    }
}

/// What a successful invocation asks to commit: its emitted messages and its kv transaction.
#[derive(Debug, Default)]
pub struct Output {
    pub emitted: Vec<Emitted>,
    pub kv: KvCommit,
}

/// The result of one invocation: what it would commit if it succeeded, and how long it took.
#[derive(Debug)]
pub struct Invocation {
    pub outcome: std::result::Result<Output, Failure>,
    pub elapsed: Duration,
    /// How long a destination asked to be left alone (`Retry-After`), when the invocation
    /// failed because of it: the pool pauses at least that long.
    pub retry_after: Option<Duration>,
}

/// The engine and linker shared by every function.
pub struct Runtime {
    engine: wasmtime::Engine,
    linker: Linker<HostState>,
    config: RuntimeConfig,
    _ticker: engine::EpochTicker,
}

impl Runtime {
    /// Builds the engine (pooling allocator sized by `config`) and links WASI (granting nothing),
    /// `wasi:http` (outbound only, through each function's grants), `wasi:config` and Levee's
    /// `kv` and `emit` imports.
    pub fn new(config: RuntimeConfig) -> Result<Self> {
        let engine = engine::build(&config)?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(rt_err)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker).map_err(rt_err)?;
        Capability::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |s| s)
            .map_err(rt_err)?;
        let ticker = engine::EpochTicker::start(engine.clone());
        Ok(Self {
            engine,
            linker,
            config,
            _ticker: ticker,
        })
    }

    /// Compiles (or loads the cached artifact of) a component and pre-links it.
    pub fn load(&self, spec: FunctionDef) -> Result<Arc<Function>> {
        self.check_memory(&spec)?;
        let (component, version) =
            artifact::load(&self.engine, &spec.module, self.config.cache_dir.as_deref())?;
        self.link(spec, component, version)
    }

    /// Like [`load`](Self::load), for a module in memory (a deployed version): `spec.module`
    /// only names it in errors. Compiles it once per engine and caches the artifact.
    pub fn load_bytes(&self, spec: FunctionDef, bytes: &[u8]) -> Result<Arc<Function>> {
        self.check_memory(&spec)?;
        if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
            return Err(Error::Runtime(format!(
                "{} is not a WebAssembly file",
                spec.module.display()
            )));
        }
        let component = artifact::load_bytes(
            &self.engine,
            &spec.module,
            bytes,
            self.config.cache_dir.as_deref(),
        )?;
        let version = artifact::version_of(bytes);
        self.link(spec, component, version)
    }

    fn check_memory(&self, spec: &FunctionDef) -> Result<()> {
        if spec.limits.memory_bytes > self.config.max_memory_bytes {
            return Err(Error::Runtime(format!(
                "function `{}` asks for {} MiB but the runtime's pool allows {} MiB",
                spec.name,
                spec.limits.memory_bytes >> 20,
                self.config.max_memory_bytes >> 20
            )));
        }
        Ok(())
    }

    fn link(
        &self,
        spec: FunctionDef,
        component: wasmtime::component::Component,
        version: String,
    ) -> Result<Arc<Function>> {
        let pre = self.linker.instantiate_pre(&component).map_err(|e| {
            Error::Runtime(format!(
                "function `{}`: {} does not fit the levee:function/capability world: {e:#}",
                spec.name,
                spec.module.display()
            ))
        })?;
        let pre = CapabilityPre::new(pre).map_err(|e| {
            Error::Runtime(format!(
                "function `{}`: {} does not export `handle`: {e:#}",
                spec.name,
                spec.module.display()
            ))
        })?;
        Ok(Arc::new(Function {
            version,
            name: spec.name.clone(),
            ns: spec.name.into(),
            pre,
            limits: spec.limits,
            emits_to: Arc::new(spec.emits_to.into_iter().collect()),
            store: spec.store,
            outbound: spec.outbound,
            config: spec.config,
            redactor: spec.redactor,
            engine: self.engine.clone(),
        }))
    }

    /// The engine (for benchmarks and tests).
    pub fn engine(&self) -> &wasmtime::Engine {
        &self.engine
    }
}

/// What the runtime needs to load one function.
#[derive(Clone)]
pub struct FunctionDef {
    pub name: String,
    pub module: std::path::PathBuf,
    pub limits: Limits,
    pub emits_to: Vec<String>,
    /// The store behind the function's kv namespace (its name).
    pub store: Arc<dyn Store>,
    /// The destinations it may call.
    pub outbound: Arc<Outbound>,
    /// What `wasi:config/store` answers: its config and resolved secrets.
    pub config: Arc<Vec<(String, String)>>,
    /// Its secrets' values, kept out of its logs and errors.
    pub redactor: Arc<Redactor>,
}

impl FunctionDef {
    /// A function with no grants, config or secrets.
    pub fn new(
        name: &str,
        module: std::path::PathBuf,
        limits: Limits,
        emits_to: Vec<String>,
        store: Arc<dyn Store>,
    ) -> Self {
        FunctionDef {
            outbound: Arc::new(Outbound::none(name)),
            name: name.to_string(),
            module,
            limits,
            emits_to,
            store,
            config: Arc::default(),
            redactor: Arc::default(),
        }
    }
}

/// A loaded function, ready to be instantiated once per message.
pub struct Function {
    name: String,
    /// The module's content hash (see [`artifact::version_of`]).
    version: String,
    ns: Arc<str>,
    pre: CapabilityPre<HostState>,
    limits: Limits,
    emits_to: Arc<HashSet<String>>,
    store: Arc<dyn Store>,
    outbound: Arc<Outbound>,
    config: Arc<Vec<(String, String)>>,
    redactor: Arc<Redactor>,
    engine: wasmtime::Engine,
}

impl Function {
    /// The version it runs: its module's content hash, 12 hex digits.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The function's name (also its queue and kv namespace).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The limits of each invocation.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The store behind the function's kv namespace (the cache, in a platform).
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The destinations it may call, with their state.
    pub fn outbound(&self) -> &Arc<Outbound> {
        &self.outbound
    }

    /// Instantiates the component and runs `handle` once, on a fiber polled by the caller's
    /// task, stopped at the function's deadline.
    pub async fn invoke(&self, msg: &ReceivedMessage) -> Invocation {
        self.invoke_speculating(msg, false).await
    }

    /// [`Function::invoke`], where `speculate` lets a `put-if-absent` of a key the cache knows
    /// nothing of assume the key absent instead of reading it (see `HostState::put_if_absent`).
    /// Only for a caller that runs the message again when the commit conflicts, and only
    /// honoured for a function without outbound grants: nothing else it does is visible before
    /// its commit.
    pub async fn invoke_speculating(&self, msg: &ReceivedMessage, speculate: bool) -> Invocation {
        let start = Instant::now();
        let run = AssertUnwindSafe(self.run(msg, speculate, start)).catch_unwind();
        // The guest waits for each of its kv reads anyway: SQLite reads are done in place.
        match crate::store::in_place::polled(std::pin::pin!(run)).await {
            Ok(inv) => inv,
            Err(panic) => Invocation {
                outcome: Err(Failure::Trap(format!(
                    "the host panicked during the invocation: {}",
                    panic_message(&*panic)
                ))),
                elapsed: start.elapsed(),
                retry_after: None,
            },
        }
    }

    async fn run(&self, msg: &ReceivedMessage, speculate: bool, start: Instant) -> Invocation {
        let deadline = start + self.limits.timeout;
        let calls = self.outbound.calls(&msg.id, deadline);
        let unavailable = calls.unavailable.clone();
        let state = HostState::new(host::Wiring {
            name: &self.name,
            ns: self.ns.clone(),
            store: self.store.clone(),
            emits_to: self.emits_to.clone(),
            memory_cap: self.limits.memory_bytes,
            calls,
            config: self.config.clone(),
            redactor: self.redactor.clone(),
            speculate: speculate && !self.outbound.grants_any(),
        });
        let mut store = WasmStore::new(&self.engine, state);
        store.limiter(|s| &mut s.limiter);
        // Back to the runtime at every tick: the deadline below is checked there, and other
        // tasks on this thread get their turn while a guest computes.
        store.set_epoch_deadline(1);
        store.epoch_deadline_async_yield_and_update(1);
        let message = types::Message {
            id: msg.id.clone(),
            body: msg.body.clone(),
            attributes: msg.attributes.clone(),
            receive_count: msg.receive_count,
        };
        let call = async {
            let inst = self.pre.instantiate_async(&mut store).await?;
            inst.call_handle(&mut store, &message).await
        };
        let result = tokio::time::timeout_at(deadline.into(), call).await;
        store.data_mut().flush_logs();
        let mut state = store.into_data();
        let outcome = match result {
            // Cut off at the deadline, wherever the guest was: computing, or waiting in a host
            // call (whatever the guest would have made of that call's error).
            Err(_elapsed) => Err(Failure::Timeout(self.limits.timeout)),
            // A store failure decides, whatever the guest made of the error it got.
            _ if state.infra.is_some() => Err(Failure::Infrastructure(
                state.infra.take().unwrap_or_default(),
            )),
            Ok(Ok(Ok(()))) => Ok(Output {
                kv: state.take_commit(),
                emitted: std::mem::take(&mut state.emitted),
            }),
            Ok(Ok(Err(types::Error::Retryable(m)))) => Err(Failure::Retryable(m)),
            Ok(Ok(Err(types::Error::Permanent(m)))) => Err(Failure::Permanent(m)),
            Ok(Err(e)) => Err(classify_trap(e, &state, &self.limits)),
        };
        // A failure after a destination was unavailable is the destination's, not the message's.
        let signal = unavailable.lock().unwrap_or_else(|p| p.into_inner()).take();
        let (outcome, retry_after) = match (outcome, signal) {
            (Err(f), Some(u)) if !f.is_infrastructure() => (
                Err(Failure::Infrastructure(format!(
                    "destination unavailable: {} (the handler then failed: {f})",
                    u.reason
                ))),
                u.retry_after,
            ),
            (outcome, _) => (outcome, None),
        };
        Invocation {
            outcome: outcome.map_err(|f| f.redacted(&self.redactor)),
            elapsed: start.elapsed(),
            retry_after,
        }
    }
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
}

fn classify_trap(e: wasmtime::Error, state: &HostState, limits: &Limits) -> Failure {
    if state.limiter.memory_denied {
        return Failure::MemoryCap {
            cap_bytes: limits.memory_bytes,
        };
    }
    if let Some(full) = e.downcast_ref::<wasmtime::PoolConcurrencyLimitError>() {
        return Failure::Infrastructure(format!("instance pool exhausted: {full}"));
    }
    // The root cause is the trap code; the backtrace context is long and rarely helps authors.
    let root = e.root_cause().to_string();
    Failure::Trap(root)
}

fn rt_err(e: wasmtime::Error) -> Error {
    Error::Runtime(format!("{e:#}"))
}

/// Checks that `path` looks like a component before handing it to the compiler, for a clear error.
pub fn check_module_file(path: &Path) -> Result<()> {
    let bytes =
        std::fs::read(path).map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        return Err(Error::Runtime(format!(
            "{} is not a WebAssembly file",
            path.display()
        )));
    }
    Ok(())
}
