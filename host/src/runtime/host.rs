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
    pub(super) emitted: Vec<Emitted>,
    emitted_bytes: usize,
    emits_to: Arc<HashSet<String>>,
    ns: Arc<str>,
    store: Arc<dyn Store>,
    stdout: GuestLog,
    stderr: GuestLog,
    /// The version of every key read, as first seen.
    reads: HashMap<String, u64>,
    /// Buffered writes (`None` deletes), in key order so scans can merge them.
    writes: BTreeMap<String, Option<Bytes>>,
    /// Pending blind increments (`kv.add`) of keys neither read nor written; a read or write of
    /// the key folds its delta into a buffered write.
    adds: BTreeMap<String, i64>,
    written_bytes: usize,
    /// The first store failure that was not the message's fault.
    pub(super) infra: Option<String>,
    /// See [`Wiring::speculate`].
    speculate: bool,
}

/// What one invocation's host state is made from.
pub(super) struct Wiring<'a> {
    pub name: &'a str,
    pub ns: Arc<str>,
    pub store: Arc<dyn Store>,
    pub emits_to: Arc<HashSet<String>>,
    pub memory_cap: usize,
    pub calls: Calls,
    pub config: Arc<Vec<(String, String)>>,
    pub redactor: Arc<Redactor>,
    /// Whether `put-if-absent` may assume a key absent that the cache knows nothing of.
    pub speculate: bool,
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
            emitted: Vec::new(),
            emitted_bytes: 0,
            emits_to: w.emits_to,
            ns: w.ns,
            store: w.store,
            stdout,
            stderr,
            reads: HashMap::new(),
            writes: BTreeMap::new(),
            adds: BTreeMap::new(),
            written_bytes: 0,
            infra: None,
            speculate: w.speculate,
        }
    }

    /// Awaits a store call (the invocation's deadline cuts it off with the rest of the guest).
    async fn store_call<T>(
        &mut self,
        call: impl Future<Output = crate::Result<T>>,
    ) -> Result<T, types::Error> {
        call.await.map_err(|e| self.store_error(e))
    }

    /// The transaction to commit: versions read and buffered writes.
    pub(super) fn take_commit(&mut self) -> KvCommit {
        KvCommit {
            ns: self.ns.to_string(),
            reads: std::mem::take(&mut self.reads).into_iter().collect(),
            writes: std::mem::take(&mut self.writes).into_iter().collect(),
            adds: std::mem::take(&mut self.adds).into_iter().collect(),
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
    async fn read(&mut self, key: &str) -> Result<Option<Bytes>, types::Error> {
        if let Some(w) = self.writes.get(key) {
            return Ok(w.clone());
        }
        if let Some(delta) = self.adds.remove(key) {
            // Reading a counter with a pending add: from here on it is an ordinary,
            // version-checked read-modify-write.
            let base = self.read_store(key).await?;
            let sum = store::added(key, base.as_deref(), delta).map_err(to_guest_error)?;
            self.write(key.to_string(), Some(sum.clone()))?;
            return Ok(Some(sum));
        }
        self.read_store(key).await
    }

    /// Reads `key` from the store, recording the version first seen for the commit's check.
    async fn read_store(&mut self, key: &str) -> Result<Option<Bytes>, types::Error> {
        if !self.reads.contains_key(key) && self.reads.len() >= MAX_TXN_READS {
            return Err(types::Error::Permanent(format!(
                "an invocation may read at most {MAX_TXN_READS} distinct keys"
            )));
        }
        let (store, ns) = (self.store.clone(), self.ns.clone());
        let got = self
            .store_call(async move { store.get_versioned(&ns, key).await })
            .await?;
        self.reads.entry(key.to_string()).or_insert(got.version);
        Ok(got.value)
    }

    fn write(&mut self, key: String, value: Option<Bytes>) -> Result<(), types::Error> {
        let size = key.len() + value.as_ref().map_or(0, Bytes::len);
        let replaced = self
            .writes
            .get(&key)
            .map(|old| key.len() + old.as_ref().map_or(0, Bytes::len));
        if replaced.is_none()
            && !self.adds.contains_key(&key)
            && self.writes.len() + self.adds.len() >= MAX_TXN_WRITES
        {
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
        // A put or delete replaces whatever a pending add would have made of the old value.
        self.adds.remove(&key);
        self.writes.insert(key, value);
        Ok(())
    }

    /// `kv.add`: folded into the buffered value when the key was read or written, else kept
    /// as a blind increment that the commit applies without a version check.
    async fn add(&mut self, key: String, delta: i64) -> Result<(), types::Error> {
        if self.writes.contains_key(&key) || self.reads.contains_key(&key) {
            let base = self.read(&key).await?;
            let sum = store::added(&key, base.as_deref(), delta).map_err(to_guest_error)?;
            return self.write(key, Some(sum));
        }
        let pending = self.adds.get(&key).copied();
        if pending.is_none() && self.writes.len() + self.adds.len() >= MAX_TXN_WRITES {
            return Err(types::Error::Permanent(format!(
                "an invocation may write at most {MAX_TXN_WRITES} distinct keys"
            )));
        }
        let sum = pending.unwrap_or(0).checked_add(delta).ok_or_else(|| {
            types::Error::Permanent(format!(
                "kv.add on \"{key}\": the invocation's deltas overflow"
            ))
        })?;
        self.adds.insert(key, sum);
        Ok(())
    }

    /// A page of the store's scan with the invocation's own writes laid over it.
    async fn scan_page(
        &mut self,
        prefix: &str,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<kv::Page, types::Error> {
        let limit = limit as usize;
        store::validate_scan(prefix, limit).map_err(to_guest_error)?;
        // Counters with pending adds under the prefix become reads, so the page shows their sums.
        let pending: Vec<String> = self
            .adds
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, _)| k.clone())
            .collect();
        for key in pending {
            self.read(&key).await?;
        }
        let (store, ns) = (self.store.clone(), self.ns.clone());
        let items = self
            .store_call(async move { store.scan(&ns, prefix, cursor, limit).await })
            .await?;
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
    async fn get(&mut self, key: String) -> Result<Option<String>, config::Error> {
        Ok(self
            .config
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.clone()))
    }

    async fn get_all(&mut self) -> Result<Vec<(String, String)>, config::Error> {
        Ok(self.config.as_ref().clone())
    }
}

impl types::Host for HostState {}

impl kv::Host for HostState {
    async fn get(&mut self, key: String) -> Result<Option<Vec<u8>>, types::Error> {
        store::validate(&key, None).map_err(to_guest_error)?;
        Ok(self.read(&key).await?.map(|b| b.to_vec()))
    }

    async fn put(&mut self, key: String, value: Vec<u8>) -> Result<(), types::Error> {
        store::validate(&key, Some(&value)).map_err(to_guest_error)?;
        self.write(key, Some(Bytes::from(value)))
    }

    async fn put_if_absent(&mut self, key: String, value: Vec<u8>) -> Result<bool, types::Error> {
        store::validate(&key, Some(&value)).map_err(to_guest_error)?;
        // Keys put if absent are nearly always new (idempotency records, one per message), so
        // reading one is a store read that finds nothing. When allowed, a key this invocation
        // has not touched and the cache knows nothing of is taken as absent at version 0, as a
        // read that found nothing would record it; the commit checks it like any read. If the
        // key did exist, the commit conflicts, applies nothing, and the message runs again
        // without speculating (it reads the key).
        let untouched = !self.reads.contains_key(&key)
            && !self.writes.contains_key(&key)
            && !self.adds.contains_key(&key);
        if untouched && self.speculate && self.store.cached(&self.ns, &key).is_none() {
            if self.reads.len() >= MAX_TXN_READS {
                return Err(types::Error::Permanent(format!(
                    "an invocation may read at most {MAX_TXN_READS} distinct keys"
                )));
            }
            self.write(key.clone(), Some(Bytes::from(value)))?;
            self.reads.insert(key, 0);
            return Ok(true);
        }
        // The read records the key's version: a concurrent insert makes the commit conflict.
        if self.read(&key).await?.is_some() {
            return Ok(false);
        }
        self.write(key, Some(Bytes::from(value)))?;
        Ok(true)
    }

    async fn delete(&mut self, key: String) -> Result<(), types::Error> {
        store::validate(&key, None).map_err(to_guest_error)?;
        self.write(key, None)
    }

    async fn add(&mut self, key: String, delta: i64) -> Result<(), types::Error> {
        store::validate(&key, None).map_err(to_guest_error)?;
        HostState::add(self, key, delta).await
    }

    async fn scan(
        &mut self,
        prefix: String,
        cursor: Option<String>,
        limit: u32,
    ) -> Result<kv::Page, types::Error> {
        self.scan_page(&prefix, cursor.as_deref(), limit).await
    }
}

impl emit::Host for HostState {
    async fn send(&mut self, function: String, body: Vec<u8>) -> Result<(), types::Error> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbound::Outbound;
    use crate::store::{CommitOutcome, MemoryStore};
    use kv::Host as _;

    fn state(store: Arc<dyn Store>) -> HostState {
        wired(store, false)
    }

    fn wired(store: Arc<dyn Store>, speculate: bool) -> HostState {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        HostState::new(Wiring {
            name: "f",
            ns: "f".into(),
            store,
            emits_to: Arc::default(),
            memory_cap: 1 << 20,
            calls: Arc::new(Outbound::none("f")).calls("m", deadline),
            config: Arc::default(),
            redactor: Arc::new(Redactor::new([])),
            speculate,
        })
    }

    #[tokio::test]
    async fn a_speculated_put_if_absent_is_checked_by_the_commit_and_not_taken_on_the_rerun() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        store
            .put("f", "seen", Bytes::from("old"), Default::default())
            .await
            .unwrap();

        // Speculating: the key is taken as absent (version 0) without a read, and the commit
        // conflicts on it because it exists.
        let mut s = wired(store.clone(), true);
        assert!(
            s.put_if_absent("seen".into(), b"new".to_vec())
                .await
                .unwrap()
        );
        assert_eq!(s.get("seen".into()).await.unwrap(), Some(b"new".to_vec()));
        let c = s.take_commit();
        assert_eq!(c.reads, vec![("seen".to_string(), 0)]);
        assert_eq!(
            store.commit(&c).await.unwrap(),
            CommitOutcome::Conflict {
                keys: vec!["seen".into()]
            }
        );
        assert_eq!(
            store.get("f", "seen").await.unwrap(),
            Some(Bytes::from("old"))
        );

        // The run after the conflict reads the key and finds it.
        let mut s = wired(store.clone(), false);
        assert!(
            !s.put_if_absent("seen".into(), b"new".to_vec())
                .await
                .unwrap()
        );
        let c = s.take_commit();
        assert_eq!(c.reads, vec![("seen".to_string(), 1)]);
        assert!(c.writes.is_empty());

        // A new key speculated absent commits.
        let mut s = wired(store.clone(), true);
        assert!(s.put_if_absent("new".into(), b"1".to_vec()).await.unwrap());
        let c = s.take_commit();
        assert!(matches!(
            store.commit(&c).await.unwrap(),
            CommitOutcome::Committed { .. }
        ));
        assert_eq!(store.get("f", "new").await.unwrap(), Some(Bytes::from("1")));
    }

    #[tokio::test]
    async fn adds_are_blind_until_the_key_is_read_or_written() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        store
            .put("f", "n", Bytes::from("10"), Default::default())
            .await
            .unwrap();

        // Blind: nothing read, the commit carries the summed delta.
        let mut s = state(store.clone());
        s.add("n".into(), 2).await.unwrap();
        s.add("n".into(), 3).await.unwrap();
        let c = s.take_commit();
        assert_eq!(c.adds, vec![("n".to_string(), 5)]);
        assert!(c.reads.is_empty() && c.writes.is_empty());

        // Read after an add: a version-checked read-modify-write of the sum.
        let mut s = state(store.clone());
        s.add("n".into(), 2).await.unwrap();
        assert_eq!(s.get("n".into()).await.unwrap(), Some(b"12".to_vec()));
        s.add("n".into(), 1).await.unwrap();
        let c = s.take_commit();
        assert!(c.adds.is_empty());
        assert_eq!(c.reads, vec![("n".to_string(), 1)]);
        assert_eq!(c.writes, vec![("n".to_string(), Some(Bytes::from("13")))]);

        // A put replaces a pending add; an add after a put adds to the buffered value.
        let mut s = state(store.clone());
        s.add("n".into(), 7).await.unwrap();
        s.put("n".into(), b"1".to_vec()).await.unwrap();
        s.add("n".into(), 1).await.unwrap();
        let c = s.take_commit();
        assert!(c.adds.is_empty());
        assert_eq!(c.writes, vec![("n".to_string(), Some(Bytes::from("2")))]);

        // A scan shows pending adds under its prefix; a non-integer value refuses the add.
        let mut s = state(store.clone());
        s.add("n".into(), 5).await.unwrap();
        s.add("fresh".into(), 1).await.unwrap();
        let page = s.scan("n".into(), None, 10).await.unwrap();
        assert_eq!(page.entries[0].value, b"15".to_vec());
        s.put("text".into(), b"\"hi\"".to_vec()).await.unwrap();
        assert!(matches!(
            s.add("text".into(), 1).await,
            Err(types::Error::Permanent(m)) if m.contains("not an integer")
        ));
        assert_eq!(s.take_commit().adds, vec![("fresh".to_string(), 1)]);
    }
}
