//! Per-invocation host state: the guest's kv transaction (reads with their versions, buffered
//! writes), its outbox of emitted messages, its memory limiter, its (empty) WASI context, its
//! outbound HTTP calls and its `wasi:config` values.
//!
//! Nothing reaches the store before the handler returns: the worker commits the transaction
//! with the emits and the source's deletion. A store call that fails for a reason of the store
//! (timeout, breaker open, overload) marks the invocation as an infrastructure failure, so the
//! message goes back without using an attempt whatever the guest does with the error.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use bytes::Bytes;
use wasmtime::ResourceLimiter;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use super::bindings::levee::function::{emit, kv, types};
use super::bindings::wasi::config::store as config;
use super::guest_log::GuestLog;
use crate::outbound::Calls;
use crate::queue::{Emitted, OutgoingMessage};
use crate::secrets::Redactor;
use crate::store::{self, KvCommit, MAX_TXN_BYTES, MAX_TXN_READS, MAX_TXN_WRITES, Store};

/// Largest total of bytes one invocation may emit (an outbox bound, not a queue limit).
pub const MAX_EMIT_BYTES: usize = 8 << 20;
/// Most messages one invocation may emit.
pub const MAX_EMITS: usize = 100;

pub(super) struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    http: WasiHttpCtx,
    calls: Calls,
    config: Arc<Vec<(String, String)>>,
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
    /// The version of every key read, as first seen.
    reads: HashMap<String, u64>,
    /// Buffered writes (`None` deletes), in key order so scans can merge them.
    writes: BTreeMap<String, Option<Bytes>>,
    written_bytes: usize,
    /// The first store failure that was not the message's fault.
    pub(super) infra: Option<String>,
    /// A kv call was cut off at the deadline: the invocation timed out.
    pub(super) timed_out: bool,
}

/// What one invocation's host state is made from.
pub(super) struct Wiring<'a> {
    pub name: &'a str,
    pub ns: Arc<str>,
    pub store: Arc<dyn Store>,
    pub emits_to: Arc<HashSet<String>>,
    pub rt: tokio::runtime::Handle,
    pub memory_cap: usize,
    pub deadline: std::time::Instant,
    pub calls: Calls,
    pub config: Arc<Vec<(String, String)>>,
    pub redactor: Arc<Redactor>,
}

impl HostState {
    pub(super) fn new(w: Wiring<'_>) -> Self {
        let stdout = GuestLog::new(w.name, "stdout", w.redactor.clone());
        let stderr = GuestLog::new(w.name, "stderr", w.redactor);
        // Nothing is granted: no preopened directories, no env, no args, no sockets (outbound
        // HTTP goes through `wasi:http` and the function's grants).
        let wasi = WasiCtx::builder()
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            .build();
        Self {
            wasi,
            table: ResourceTable::new(),
            http: WasiHttpCtx::new(),
            calls: w.calls,
            config: w.config,
            limiter: MemoryLimiter {
                cap: w.memory_cap,
                memory_denied: false,
            },
            deadline: w.deadline,
            emitted: Vec::new(),
            emitted_bytes: 0,
            emits_to: w.emits_to,
            ns: w.ns,
            store: w.store,
            rt: w.rt,
            stdout,
            stderr,
            reads: HashMap::new(),
            writes: BTreeMap::new(),
            written_bytes: 0,
            infra: None,
            timed_out: false,
        }
    }

    /// Runs a store call, cut off at the invocation's deadline like every blocking host call.
    fn store_call<T>(
        &mut self,
        call: impl Future<Output = crate::Result<T>>,
    ) -> Result<T, types::Error> {
        let deadline = tokio::time::Instant::from_std(self.deadline);
        match self
            .rt
            .block_on(async { tokio::time::timeout_at(deadline, call).await })
        {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(self.store_error(e)),
            Err(_) => {
                self.timed_out = true;
                Err(types::Error::Retryable(
                    "the handler's deadline passed during a kv call".into(),
                ))
            }
        }
    }

    /// The transaction to commit: versions read and buffered writes.
    pub(super) fn take_commit(&mut self) -> KvCommit {
        KvCommit {
            ns: self.ns.to_string(),
            reads: std::mem::take(&mut self.reads).into_iter().collect(),
            writes: std::mem::take(&mut self.writes).into_iter().collect(),
            record: None,
        }
    }

    /// A store error as the guest sees it; a retryable one also marks the invocation as an
    /// infrastructure failure.
    fn store_error(&mut self, e: crate::Error) -> types::Error {
        if e.is_retryable() && self.infra.is_none() {
            self.infra = Some(e.to_string());
        }
        to_guest_error(e)
    }

    /// Reads `key`: the invocation's own write if it made one, else the store's value, whose
    /// version is recorded for the commit's check.
    fn read(&mut self, key: &str) -> Result<Option<Bytes>, types::Error> {
        if let Some(w) = self.writes.get(key) {
            return Ok(w.clone());
        }
        if !self.reads.contains_key(key) && self.reads.len() >= MAX_TXN_READS {
            return Err(types::Error::Permanent(format!(
                "an invocation may read at most {MAX_TXN_READS} distinct keys"
            )));
        }
        let (store, ns) = (self.store.clone(), self.ns.clone());
        let got = self.store_call(async move { store.get_versioned(&ns, key).await })?;
        self.reads.entry(key.to_string()).or_insert(got.version);
        Ok(got.value)
    }

    fn write(&mut self, key: String, value: Option<Bytes>) -> Result<(), types::Error> {
        let size = key.len() + value.as_ref().map_or(0, Bytes::len);
        let replaced = self
            .writes
            .get(&key)
            .map(|old| key.len() + old.as_ref().map_or(0, Bytes::len));
        if replaced.is_none() && self.writes.len() >= MAX_TXN_WRITES {
            return Err(types::Error::Permanent(format!(
                "an invocation may write at most {MAX_TXN_WRITES} distinct keys"
            )));
        }
        let total = self.written_bytes - replaced.unwrap_or(0) + size;
        if total > MAX_TXN_BYTES {
            return Err(types::Error::Permanent(format!(
                "an invocation may write at most {} MiB of kv data",
                MAX_TXN_BYTES >> 20
            )));
        }
        self.written_bytes = total;
        self.writes.insert(key, value);
        Ok(())
    }

    /// A page of the store's scan with the invocation's own writes laid over it.
    fn scan_page(
        &mut self,
        prefix: &str,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<kv::Page, types::Error> {
        let limit = limit as usize;
        store::validate_scan(prefix, limit).map_err(to_guest_error)?;
        let (store, ns) = (self.store.clone(), self.ns.clone());
        let items = self.store_call(async move { store.scan(&ns, prefix, cursor, limit).await })?;
        // The store may hold more past its last key: own writes beyond it belong to later pages.
        let full = items.len() == limit;
        let upper = if full {
            items.last().map(|(k, _)| k.clone())
        } else {
            None
        };
        let mut merged: BTreeMap<String, Bytes> = items.into_iter().collect();
        let start = match cursor {
            Some(c) => std::ops::Bound::Excluded(c.to_string()),
            None => std::ops::Bound::Included(prefix.to_string()),
        };
        for (k, v) in self.writes.range((start, std::ops::Bound::Unbounded)) {
            if !k.starts_with(prefix) || upper.as_ref().is_some_and(|u| k > u) {
                break;
            }
            match v {
                Some(v) => merged.insert(k.clone(), v.clone()),
                None => merged.remove(k),
            };
        }
        let more = full || merged.len() > limit;
        let entries: Vec<kv::Entry> = merged
            .into_iter()
            .take(limit)
            .map(|(key, value)| kv::Entry {
                key,
                value: value.to_vec(),
            })
            .collect();
        let next = if more {
            entries.last().map(|e| e.key.clone())
        } else {
            None
        };
        Ok(kv::Page { entries, next })
    }

    pub(super) fn flush_logs(&mut self) {
        self.stdout.flush_all();
        self.stderr.flush_all();
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

impl WasiHttpView for HostState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.calls,
        }
    }
}

impl config::Host for HostState {
    fn get(&mut self, key: String) -> Result<Option<String>, config::Error> {
        Ok(self
            .config
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.clone()))
    }

    fn get_all(&mut self) -> Result<Vec<(String, String)>, config::Error> {
        Ok(self.config.as_ref().clone())
    }
}

impl types::Host for HostState {}

impl kv::Host for HostState {
    fn get(&mut self, key: String) -> Result<Option<Vec<u8>>, types::Error> {
        store::validate(&key, None).map_err(to_guest_error)?;
        Ok(self.read(&key)?.map(|b| b.to_vec()))
    }

    fn put(&mut self, key: String, value: Vec<u8>) -> Result<(), types::Error> {
        store::validate(&key, Some(&value)).map_err(to_guest_error)?;
        self.write(key, Some(Bytes::from(value)))
    }

    fn put_if_absent(&mut self, key: String, value: Vec<u8>) -> Result<bool, types::Error> {
        store::validate(&key, Some(&value)).map_err(to_guest_error)?;
        // The read records the key's version: a concurrent insert makes the commit conflict.
        if self.read(&key)?.is_some() {
            return Ok(false);
        }
        self.write(key, Some(Bytes::from(value)))?;
        Ok(true)
    }

    fn delete(&mut self, key: String) -> Result<(), types::Error> {
        store::validate(&key, None).map_err(to_guest_error)?;
        self.write(key, None)
    }

    fn scan(
        &mut self,
        prefix: String,
        cursor: Option<String>,
        limit: u32,
    ) -> Result<kv::Page, types::Error> {
        self.scan_page(&prefix, cursor.as_deref(), limit)
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
