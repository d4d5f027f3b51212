//! Per-invocation host state: the guest's kv namespace, its outbox of emitted messages, its
//! memory limiter and its (empty) WASI context.

use std::collections::HashSet;
use std::sync::Arc;

use bytes::Bytes;
use wasmtime::ResourceLimiter;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::bindings::levee::function::{emit, kv, types};
use super::guest_log::GuestLog;
use crate::queue::{Emitted, OutgoingMessage};
use crate::store::{self, PutOptions, Store};

/// Largest total of bytes one invocation may emit (an outbox bound, not a queue limit).
pub const MAX_EMIT_BYTES: usize = 8 << 20;
/// Most messages one invocation may emit.
pub const MAX_EMITS: usize = 100;

pub(super) struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    pub(super) limiter: MemoryLimiter,
    /// When the invocation must end; blocking WASI calls stop there (see `deadline.rs`).
    pub(super) deadline: std::time::Instant,
    pub(super) emitted: Vec<Emitted>,
    emitted_bytes: usize,
    emits_to: Arc<HashSet<String>>,
    ns: Arc<str>,
    store: Arc<dyn Store>,
    rt: tokio::runtime::Handle,
    stdout: GuestLog,
    stderr: GuestLog,
}

impl HostState {
    pub(super) fn new(
        name: &str,
        ns: Arc<str>,
        store: Arc<dyn Store>,
        emits_to: Arc<HashSet<String>>,
        rt: tokio::runtime::Handle,
        memory_cap: usize,
    ) -> Self {
        let stdout = GuestLog::new(name, "stdout");
        let stderr = GuestLog::new(name, "stderr");
        // Nothing is granted: no preopened directories, no env, no args, no network.
        let wasi = WasiCtx::builder()
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            .build();
        Self {
            wasi,
            table: ResourceTable::new(),
            limiter: MemoryLimiter {
                cap: memory_cap,
                memory_denied: false,
            },
            deadline: std::time::Instant::now(), // Function::invoke sets the real one
            emitted: Vec::new(),
            emitted_bytes: 0,
            emits_to,
            ns,
            store,
            rt,
            stdout,
            stderr,
        }
    }

    pub(super) fn flush_logs(&mut self) {
        self.stdout.flush_all();
        self.stderr.flush_all();
    }

    fn block<T>(&self, f: impl Future<Output = crate::Result<T>>) -> Result<T, types::Error> {
        self.rt.block_on(f).map_err(to_guest_error)
    }
}

fn to_guest_error(e: crate::Error) -> types::Error {
    if e.is_retryable() {
        types::Error::Retryable(e.to_string())
    } else {
        types::Error::Permanent(e.to_string())
    }
}

/// Caps linear memory growth and remembers that it refused, so the failure is reported as a
/// memory cap rather than as the guest's own abort.
pub(super) struct MemoryLimiter {
    cap: usize,
    pub(super) memory_denied: bool,
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.cap {
            self.memory_denied = true;
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl types::Host for HostState {}

impl kv::Host for HostState {
    fn get(&mut self, key: String) -> Result<Option<Vec<u8>>, types::Error> {
        store::validate(&key, None).map_err(to_guest_error)?;
        let v = self.block(self.store.get(&self.ns, &key))?;
        Ok(v.map(|b| b.to_vec()))
    }

    fn put(&mut self, key: String, value: Vec<u8>) -> Result<(), types::Error> {
        store::validate(&key, Some(&value)).map_err(to_guest_error)?;
        self.block(
            self.store
                .put(&self.ns, &key, Bytes::from(value), PutOptions::default()),
        )?;
        Ok(())
    }

    fn put_if_absent(&mut self, key: String, value: Vec<u8>) -> Result<bool, types::Error> {
        store::validate(&key, Some(&value)).map_err(to_guest_error)?;
        let opts = PutOptions {
            if_absent: true,
            ttl: None,
        };
        self.block(self.store.put(&self.ns, &key, Bytes::from(value), opts))
    }

    fn delete(&mut self, key: String) -> Result<(), types::Error> {
        store::validate(&key, None).map_err(to_guest_error)?;
        self.block(self.store.delete(&self.ns, &key))
    }
}

impl emit::Host for HostState {
    fn send(&mut self, function: String, body: Vec<u8>) -> Result<(), types::Error> {
        if !self.emits_to.contains(&function) {
            let mut allowed: Vec<_> = self.emits_to.iter().map(String::as_str).collect();
            allowed.sort_unstable();
            return Err(types::Error::Permanent(format!(
                "emit to `{function}` is not allowed: the manifest's emits_to for this function is [{}]",
                allowed.join(", ")
            )));
        }
        if self.emitted.len() >= MAX_EMITS || self.emitted_bytes + body.len() > MAX_EMIT_BYTES {
            return Err(types::Error::Permanent(format!(
                "outbox full: at most {MAX_EMITS} messages and {} MiB per invocation",
                MAX_EMIT_BYTES >> 20
            )));
        }
        self.emitted_bytes += body.len();
        self.emitted.push(Emitted {
            queue: function,
            message: OutgoingMessage::new(body),
        });
        Ok(())
    }
}
