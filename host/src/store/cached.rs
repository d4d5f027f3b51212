//! `CachedStore`: the cache layer that shields a downstream [`Store`] during bursts and keeps
//! serving while it fails.
//!
//! - Reads go through a moka cache. Concurrent misses on one key share a single store read
//!   (request coalescing); missing keys are cached too (negative caching) for a shorter TTL.
//! - Writes go to the store first and update the cache only once the store confirmed them, so a
//!   function reads its own writes. Every cache entry carries a version so a slow read that
//!   started before a write can never overwrite the write's entry.
//! - Cached values keep the store version they were read at. The cache serves reads only: a
//!   transaction that read a stale value fails its commit's version check and runs again, after
//!   [`Store::forget`] made the cache drop the keys that conflicted. Commits made elsewhere (the
//!   embedded queue commits kv with the message) reach the cache through [`Store::observe`].
//! - The cache's bound is in bytes (a moka weigher over key, value and entry overhead).
//! - Stale-if-error: a value past its TTL is kept for a stale window and served when the store
//!   errors, times out, is overloaded or behind an open breaker; such serves are counted.
//! - Downstream protection: every store call runs under a timeout, at most `max_concurrency`
//!   calls are in the store at once and the next caller is refused at once with a retryable
//!   [`Error::Overloaded`] (nothing queues in memory), and a [`CircuitBreaker`] fails calls fast
//!   while the store is unhealthy. Errors are retryable, so the worker retries the message later.
//!
//! Freshness is decided on the injectable [`Clock`] (moka only bounds memory: entries leave it
//! after `ttl + stale_window`), so tests move time by hand.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use futures::FutureExt;
use futures::future::{BoxFuture, Shared, WeakShared};
use moka::sync::Cache;
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;

use super::breaker::{BreakerConfig, BreakerState, CircuitBreaker, Clock, SystemClock};
use super::memory::validate_namespace;
use super::{CommitOutcome, KvCommit, PutOptions, Store, Versioned, validate};
use crate::{Error, Result};

/// How long a read value is served from the cache without asking the store, in milliseconds.
pub const DEFAULT_TTL_MS: u64 = 30_000;
/// How long "this key is missing" is cached, in milliseconds.
pub const DEFAULT_NEGATIVE_TTL_MS: u64 = 5_000;
/// How long past its TTL a value may still be served while the store is failing, in milliseconds.
pub const DEFAULT_STALE_WINDOW_MS: u64 = 300_000;
/// Most bytes the cache holds per store (keys, values and a fixed overhead per entry).
pub const DEFAULT_MAX_BYTES: u64 = 64 << 20;
/// Locks serialising cache inserts (see `Inner::install`).
const INSTALL_STRIPES: usize = 64;

/// Bytes counted per entry beyond its key and value (the entry's own fields and moka's).
const ENTRY_OVERHEAD: usize = 128;
/// Longest a single store call may take, in milliseconds.
pub const DEFAULT_STORE_TIMEOUT_MS: u64 = 1_000;
/// Most store calls in flight at once per store.
pub const DEFAULT_MAX_CONCURRENCY: usize = 64;

/// Settings of one cached store; embeddable in the manifest (unknown fields are rejected,
/// missing ones take the `DEFAULT_*` constants).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    /// Milliseconds a read value stays fresh (at least 1).
    pub ttl_ms: u64,
    /// Milliseconds a missing key stays cached as missing (0 turns negative caching off).
    pub negative_ttl_ms: u64,
    /// Milliseconds past `ttl_ms` a value may be served while the store fails (0 turns
    /// stale-if-error off).
    pub stale_window_ms: u64,
    /// Most bytes held: keys, values and a fixed overhead per entry (at least 1).
    pub max_bytes: u64,
    /// Milliseconds a store call may take before it fails as timed out (at least 1).
    pub store_timeout_ms: u64,
    /// Most store calls in flight at once; further callers get a retryable overload error.
    pub max_concurrency: usize,
    /// When the circuit breaker opens and for how long.
    pub breaker: BreakerConfig,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            ttl_ms: DEFAULT_TTL_MS,
            negative_ttl_ms: DEFAULT_NEGATIVE_TTL_MS,
            stale_window_ms: DEFAULT_STALE_WINDOW_MS,
            max_bytes: DEFAULT_MAX_BYTES,
            store_timeout_ms: DEFAULT_STORE_TIMEOUT_MS,
            max_concurrency: DEFAULT_MAX_CONCURRENCY,
            breaker: BreakerConfig::default(),
        }
    }
}

impl CacheConfig {
    /// Checks every field; `field_prefix` (like `functions.router.cache`) names where the config
    /// sits so the error points at the field.
    pub fn validate(&self, field_prefix: &str) -> Result<()> {
        let at_least_one = |name: &str, value: u64, unit: &str| {
            if value == 0 {
                Err(Error::Manifest(format!(
                    "{field_prefix}.{name} must be at least 1{unit}, got 0"
                )))
            } else {
                Ok(())
            }
        };
        at_least_one("ttl_ms", self.ttl_ms, " (milliseconds)")?;
        at_least_one("max_bytes", self.max_bytes, " (bytes)")?;
        at_least_one("store_timeout_ms", self.store_timeout_ms, " (milliseconds)")?;
        if self.max_concurrency == 0 || self.max_concurrency > Semaphore::MAX_PERMITS {
            return Err(Error::Manifest(format!(
                "{field_prefix}.max_concurrency must be from 1 to {}, got {}",
                Semaphore::MAX_PERMITS,
                self.max_concurrency
            )));
        }
        self.breaker.validate(&format!("{field_prefix}.breaker"))
    }

    fn ttl(&self) -> Duration {
        Duration::from_millis(self.ttl_ms)
    }

    fn negative_ttl(&self) -> Duration {
        Duration::from_millis(self.negative_ttl_ms)
    }

    fn stale_window(&self) -> Duration {
        Duration::from_millis(self.stale_window_ms)
    }

    fn store_timeout(&self) -> Duration {
        Duration::from_millis(self.store_timeout_ms)
    }
}

/// Counters of one cached store, for `levee status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CacheMetrics {
    /// Reads answered from a fresh cache entry.
    pub hits: u64,
    /// Reads that needed the store (including coalesced ones and stale serves).
    pub misses: u64,
    /// Misses that waited on another caller's store read instead of making their own.
    pub coalesced_waits: u64,
    /// Reads (get and scan) sent to the store.
    pub store_reads: u64,
    /// Writes (put and delete) sent to the store.
    pub store_writes: u64,
    /// Store calls that failed with a retryable error (timeouts included).
    pub store_errors: u64,
    /// Store calls that hit the timeout.
    pub timeouts: u64,
    /// Reads answered with a value past its TTL because the store failed.
    pub stale_serves: u64,
    /// Calls refused without reaching the store: concurrency bound reached or breaker open.
    pub rejected: u64,
    /// Store calls in flight now.
    pub in_flight: u64,
    /// Entries in the cache (moka's estimate).
    pub entries: u64,
    /// Bytes the entries weigh (moka's estimate), bounded by `max_bytes`.
    pub bytes: u64,
    /// `closed`, `open` or `half-open`.
    pub breaker: BreakerState,
    /// Times the breaker opened.
    pub breaker_opens: u64,
}

#[derive(Debug, Default)]
struct Counters {
    hits: AtomicU64,
    misses: AtomicU64,
    coalesced_waits: AtomicU64,
    store_reads: AtomicU64,
    store_writes: AtomicU64,
    store_errors: AtomicU64,
    timeouts: AtomicU64,
    stale_serves: AtomicU64,
    rejected: AtomicU64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

#[derive(Debug, Clone)]
enum Known {
    /// A value, with its store version when known (a plain put does not learn it).
    Present(Bytes, Option<u64>),
    /// No item, with its store version when known.
    Absent(Option<u64>),
    /// A write's outcome is unknown (or raced another write): never served, always re-read.
    Unknown,
}

#[derive(Debug, Clone)]
struct Entry {
    known: Known,
    /// When the store last confirmed this state.
    at: Instant,
    /// The item's own TTL from the write that produced it.
    expires_at: Option<Instant>,
    /// Entries only replace entries with a version at most theirs.
    version: u64,
}

/// A store read shared by every caller that missed on the key meanwhile; `bool` = served stale
/// (then the version is that of the stale value, so a commit based on it fails its check).
type FetchFuture = BoxFuture<'static, Result<(Versioned, bool), Arc<Error>>>;

/// Writers of one key in flight, and whether two of them overlapped.
#[derive(Debug, Default)]
struct Writers {
    active: u32,
    overlapped: bool,
}

/// Why a guarded store call failed.
enum CallError {
    /// Refused before reaching the store (breaker open, concurrency bound).
    Refused(Error),
    /// The store was called; for writes, the outcome is unknown.
    Store(Error),
}

impl CallError {
    fn into_error(self) -> Error {
        match self {
            CallError::Refused(e) | CallError::Store(e) => e,
        }
    }
}

struct Inner<S: ?Sized> {
    name: String,
    store: Arc<S>,
    clock: Arc<dyn Clock>,
    ttl: Duration,
    negative_ttl: Duration,
    stale_window: Duration,
    store_timeout: Duration,
    max_concurrency: usize,
    cache: Cache<String, Entry>,
    /// Serialise [`Inner::install`]'s check-then-insert per key (striped by the key's hash).
    installs: [Mutex<()>; INSTALL_STRIPES],
    /// Store reads in progress, by cache key. Weak, so a read every caller gave up on is dropped
    /// (releasing its concurrency permit) instead of lingering here.
    flights: Mutex<HashMap<String, (u64, WeakShared<FetchFuture>)>>,
    next_flight: AtomicU64,
    writers: Mutex<HashMap<String, Writers>>,
    version: AtomicU64,
    permits: Semaphore,
    breaker: CircuitBreaker,
    counters: Counters,
}

/// A [`Store`] behind a read-through, write-through cache with downstream protection.
pub struct CachedStore<S: ?Sized + Store> {
    inner: Arc<Inner<S>>,
}

impl<S: ?Sized + Store> std::fmt::Debug for CachedStore<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CachedStore")
            .field("name", &self.inner.name)
            .finish_non_exhaustive()
    }
}

impl<S: ?Sized + Store> Clone for CachedStore<S> {
    fn clone(&self) -> Self {
        CachedStore {
            inner: self.inner.clone(),
        }
    }
}

/// The cache key: the namespace's length first, so `("ab", "c")` and `("a", "bc")` differ.
fn cache_key(ns: &str, key: &str) -> String {
    let mut k = String::with_capacity(ns.len() + key.len() + 6);
    k.push_str(&ns.len().to_string());
    k.push(':');
    k.push_str(ns);
    k.push_str(key);
    k
}

impl<S: ?Sized + Store> CachedStore<S> {
    /// Caches `store` (called `name` in errors and metrics) with `config`, on the system clock.
    pub fn new(name: impl Into<String>, store: Arc<S>, config: &CacheConfig) -> Result<Self> {
        Self::with_clock(name, store, config, Arc::new(SystemClock))
    }

    /// Like [`new`](Self::new), with freshness and the breaker's cool-down read from `clock`.
    pub fn with_clock(
        name: impl Into<String>,
        store: Arc<S>,
        config: &CacheConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Self> {
        config.validate("cache")?;
        let name = name.into();
        let cache = Cache::builder()
            .max_capacity(config.max_bytes)
            .weigher(|key: &String, entry: &Entry| {
                u32::try_from(key.len() + entry.weight()).unwrap_or(u32::MAX)
            })
            .time_to_live(config.ttl().max(config.negative_ttl()) + config.stale_window())
            .build();
        Ok(CachedStore {
            inner: Arc::new(Inner {
                breaker: CircuitBreaker::new(format!("kv store `{name}`"), config.breaker.clone())?,
                name,
                store,
                clock,
                ttl: config.ttl(),
                negative_ttl: config.negative_ttl(),
                stale_window: config.stale_window(),
                store_timeout: config.store_timeout(),
                max_concurrency: config.max_concurrency,
                cache,
                installs: std::array::from_fn(|_| Mutex::new(())),
                flights: Mutex::new(HashMap::new()),
                next_flight: AtomicU64::new(0),
                writers: Mutex::new(HashMap::new()),
                version: AtomicU64::new(0),
                permits: Semaphore::new(config.max_concurrency),
                counters: Counters::default(),
            }),
        })
    }

    /// The wrapped store.
    pub fn store(&self) -> &Arc<S> {
        &self.inner.store
    }

    /// The store's name, as given to [`new`](Self::new).
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// A snapshot of the counters.
    pub fn metrics(&self) -> CacheMetrics {
        let c = &self.inner.counters;
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        CacheMetrics {
            hits: load(&c.hits),
            misses: load(&c.misses),
            coalesced_waits: load(&c.coalesced_waits),
            store_reads: load(&c.store_reads),
            store_writes: load(&c.store_writes),
            store_errors: load(&c.store_errors),
            timeouts: load(&c.timeouts),
            stale_serves: load(&c.stale_serves),
            rejected: load(&c.rejected),
            in_flight: (self.inner.max_concurrency - self.inner.permits.available_permits()) as u64,
            entries: self.inner.cache.entry_count(),
            bytes: self.inner.cache.weighted_size(),
            breaker: self.inner.breaker.state(),
            breaker_opens: self.inner.breaker.times_opened(),
        }
    }
}

impl<S: ?Sized + Store> CachedStore<S> {
    /// A read through the cache; `versioned` reads skip entries whose version is unknown.
    async fn lookup(&self, ns: &str, key: &str, versioned: bool) -> Result<Versioned> {
        validate_namespace(ns)?;
        validate(key, None)?;
        let inner = &self.inner;
        let c = &inner.counters;
        let cache_key = cache_key(ns, key);
        if let Some(entry) = inner.cache.get(&cache_key)
            && let Some(value) =
                entry.fresh(inner.clock.now(), inner.ttl, inner.negative_ttl, versioned)
        {
            bump(&c.hits);
            return Ok(value);
        }
        bump(&c.misses);
        let (fetch, joined) = inner.flight(cache_key, ns, key);
        if joined {
            bump(&c.coalesced_waits);
        }
        match fetch.await {
            Ok((value, stale)) => {
                if stale {
                    bump(&c.stale_serves);
                }
                Ok(value)
            }
            Err(e) => Err(e.copied(&inner.store_label())),
        }
    }
}

/// Removes a finished or abandoned store read from the flight map.
struct FlightGuard<S: ?Sized> {
    inner: Weak<Inner<S>>,
    key: String,
    id: u64,
}

impl<S: ?Sized> Drop for FlightGuard<S> {
    fn drop(&mut self) {
        if let Some(inner) = self.inner.upgrade() {
            let mut flights = inner.flights.lock().unwrap_or_else(|p| p.into_inner());
            if flights.get(&self.key).is_some_and(|(id, _)| *id == self.id) {
                flights.remove(&self.key);
            }
        }
    }
}

/// Tracks one write of a key; tells at the end whether another write of it overlapped.
struct WriteGuard<'a, S: ?Sized> {
    inner: &'a Inner<S>,
    key: &'a str,
    done: bool,
}

impl<S: ?Sized> WriteGuard<'_, S> {
    fn finish(mut self) -> bool {
        self.done = true;
        self.leave()
    }

    fn leave(&self) -> bool {
        let mut writers = self.inner.writers.lock().unwrap_or_else(|p| p.into_inner());
        let Some(w) = writers.get_mut(self.key) else {
            return true;
        };
        let overlapped = w.overlapped;
        w.active -= 1;
        if w.active == 0 {
            writers.remove(self.key);
        }
        overlapped
    }
}

impl<S: ?Sized> Drop for WriteGuard<'_, S> {
    fn drop(&mut self) {
        if !self.done {
            self.leave();
        }
    }
}

impl Entry {
    fn weight(&self) -> usize {
        ENTRY_OVERHEAD
            + match &self.known {
                Known::Present(v, _) => v.len(),
                _ => 0,
            }
    }

    /// The value to serve without asking the store, if the entry is fresh at `now`; with
    /// `versioned`, only if its version is known.
    fn fresh(
        &self,
        now: Instant,
        ttl: Duration,
        negative_ttl: Duration,
        versioned: bool,
    ) -> Option<Versioned> {
        if self.expires_at.is_some_and(|t| now >= t) {
            return None;
        }
        let (value, version, fresh_for) = match &self.known {
            Known::Present(v, version) => (Some(v.clone()), *version, ttl),
            Known::Absent(version) => (None, *version, negative_ttl),
            Known::Unknown => return None,
        };
        if now >= self.at + fresh_for || (versioned && version.is_none()) {
            return None;
        }
        Some(Versioned {
            value,
            version: version.unwrap_or(0),
        })
    }

    /// The value to serve while the store fails, if still within the stale window at `now`.
    /// Only values are served stale: a stale "missing" could make a function recreate a key.
    fn stale(&self, now: Instant, ttl: Duration, window: Duration) -> Option<Versioned> {
        match &self.known {
            Known::Present(v, version)
                if now <= self.at + ttl + window && self.expires_at.is_none_or(|t| now < t) =>
            {
                Some(Versioned {
                    value: Some(v.clone()),
                    // An unknown version can never pass a commit's check.
                    version: version.unwrap_or(u64::MAX),
                })
            }
            _ => None,
        }
    }
}

impl<S: ?Sized + Store> Inner<S> {
    fn store_label(&self) -> String {
        format!("kv store `{}`", self.name)
    }

    /// Runs one store call behind the breaker, the concurrency bound and the timeout.
    async fn call<T, F>(&self, op: &str, call: F) -> Result<T, CallError>
    where
        F: Future<Output = Result<T>>,
    {
        let c = &self.counters;
        let permit = self.breaker.try_acquire(self.clock.now()).map_err(|e| {
            bump(&c.rejected);
            CallError::Refused(e)
        })?;
        let Ok(_slot) = self.permits.try_acquire() else {
            bump(&c.rejected);
            return Err(CallError::Refused(Error::Overloaded(format!(
                "{} ({} calls in flight)",
                self.store_label(),
                self.max_concurrency
            ))));
        };
        match op {
            "get" | "scan" => bump(&c.store_reads),
            _ => bump(&c.store_writes),
        }
        match tokio::time::timeout(self.store_timeout, call).await {
            Ok(Ok(v)) => {
                permit.success(self.clock.now());
                Ok(v)
            }
            Ok(Err(e)) => {
                if e.is_retryable() {
                    bump(&c.store_errors);
                    permit.failure(self.clock.now());
                } else {
                    // A permanent error is still an answer: the store is up.
                    permit.success(self.clock.now());
                }
                Err(CallError::Store(e))
            }
            Err(_) => {
                bump(&c.store_errors);
                bump(&c.timeouts);
                permit.failure(self.clock.now());
                Err(CallError::Store(Error::Timeout {
                    what: format!("{} {op}", self.store_label()),
                    after: self.store_timeout,
                }))
            }
        }
    }

    /// Puts `entry` under `key` unless a newer entry is already there.
    ///
    /// A lock striped by key around a plain get and insert, rather than moka's per-key
    /// `and_compute_with`: every insert goes through here, so the check and the insert are atomic
    /// for a key all the same, and in the pipeline's profile the compute path cost about 3% of
    /// all CPU (its waiter map and the async machinery around it) for one comparison.
    async fn install(&self, key: String, entry: Entry) {
        let stripe = {
            use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
            BuildHasherDefault::<DefaultHasher>::default().hash_one(&key) as usize % INSTALL_STRIPES
        };
        let _held = self.installs[stripe]
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if self
            .cache
            .get(&key)
            .is_some_and(|current| current.version > entry.version)
        {
            return;
        }
        self.cache.insert(key, entry);
    }

    /// Reads `key` from the store and caches the answer; on a retryable failure, falls back to
    /// a stale value.
    async fn fetch(
        &self,
        cache_key: &str,
        ns: &str,
        key: &str,
    ) -> Result<(Versioned, bool), Arc<Error>> {
        // Taken before the read: a write confirmed after this point gets a higher version.
        let version = self.version.load(Ordering::SeqCst);
        match self.call("get", self.store.get_versioned(ns, key)).await {
            Ok(value) => {
                let known = match &value.value {
                    Some(v) => Known::Present(v.clone(), Some(value.version)),
                    None => Known::Absent(Some(value.version)),
                };
                let entry = Entry {
                    known,
                    at: self.clock.now(),
                    expires_at: None,
                    version,
                };
                self.install(cache_key.to_owned(), entry).await;
                Ok((value, false))
            }
            Err(e) => {
                let e = e.into_error();
                if e.is_retryable()
                    && let Some(entry) = self.cache.get(cache_key)
                    && let Some(v) = entry.stale(self.clock.now(), self.ttl, self.stale_window)
                {
                    return Ok((v, true));
                }
                Err(Arc::new(e))
            }
        }
    }

    /// Joins the store read of `key` in progress, or starts one. `true` when joining.
    fn flight(
        self: &Arc<Self>,
        cache_key: String,
        ns: &str,
        key: &str,
    ) -> (Shared<FetchFuture>, bool) {
        let mut flights = self.flights.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, weak)) = flights.get(&cache_key)
            && let Some(shared) = weak.upgrade()
        {
            return (shared, true);
        }
        let id = self.next_flight.fetch_add(1, Ordering::Relaxed);
        let guard = FlightGuard {
            inner: Arc::downgrade(self),
            key: cache_key.clone(),
            id,
        };
        let weak_inner = Arc::downgrade(self);
        let (ns, key) = (ns.to_owned(), key.to_owned());
        let fut: FetchFuture = async move {
            let guard = guard;
            let Some(inner) = weak_inner.upgrade() else {
                return Err(Arc::new(Error::Unavailable {
                    service: "kv cache".into(),
                    message: "the cached store was dropped".into(),
                }));
            };
            let result = inner.fetch(&guard.key, &ns, &key).await;
            // The cache holds the answer now, so later callers hit instead of starting a read.
            drop(guard);
            result
        }
        .boxed();
        let shared = fut.shared();
        if let Some(weak) = shared.downgrade() {
            flights.insert(cache_key, (id, weak));
        }
        (shared, false)
    }

    /// Records a confirmed (or possibly applied) write of `key` in the cache.
    async fn wrote(&self, cache_key: &str, known: Known, expires_at: Option<Instant>) {
        let version = self.version.fetch_add(1, Ordering::SeqCst) + 1;
        let entry = Entry {
            known,
            at: self.clock.now(),
            expires_at,
            version,
        };
        // Readers arriving from now on must not join a read that may predate the write.
        self.flights
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(cache_key);
        self.install(cache_key.to_owned(), entry).await;
    }

    /// Whether the cache neither holds `cache_key` nor has a read of it in flight. A write of
    /// such a key, once applied, needs no entry: any later read starts after it and sees it,
    /// and no earlier read is left to install an older value.
    fn untracked(&self, cache_key: &str) -> bool {
        !self.cache.contains_key(cache_key)
            && !self
                .flights
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .contains_key(cache_key)
    }

    /// Updates the cache after a commit: written keys take their new versions (unless another
    /// write of the key overlapped), conflicting keys are forgotten.
    async fn learn(&self, commit: &KvCommit, outcome: &CommitOutcome, overlapped: Option<&[bool]>) {
        match outcome {
            CommitOutcome::Committed { versions } => {
                for (i, ((key, value), version)) in commit.writes.iter().zip(versions).enumerate() {
                    let ck = cache_key(&commit.ns, key);
                    if commit.read_version(key).is_none() && self.untracked(&ck) {
                        // A blind write of a key nobody has read (an index posting, a record):
                        // caching it would spend the cache on a value no one asked for.
                        continue;
                    }
                    let known = if overlapped.is_some_and(|o| o.get(i) == Some(&true)) {
                        Known::Unknown
                    } else {
                        match value {
                            Some(v) => Known::Present(v.clone(), *version),
                            None => Known::Absent(Some(0)),
                        }
                    };
                    self.wrote(&ck, known, None).await;
                }
                // The new sums were computed by the store: the next read fetches them.
                for (key, _) in &commit.adds {
                    let ck = cache_key(&commit.ns, key);
                    if !self.untracked(&ck) {
                        self.wrote(&ck, Known::Unknown, None).await;
                    }
                }
            }
            CommitOutcome::Conflict { keys } => {
                for key in keys {
                    self.wrote(&cache_key(&commit.ns, key), Known::Unknown, None)
                        .await;
                }
            }
            CommitOutcome::Duplicate => {}
        }
    }

    fn begin_write<'a>(&'a self, cache_key: &'a str) -> WriteGuard<'a, S> {
        let mut writers = self.writers.lock().unwrap_or_else(|p| p.into_inner());
        let w = writers.entry(cache_key.to_owned()).or_default();
        w.active += 1;
        if w.active > 1 {
            w.overlapped = true;
        }
        WriteGuard {
            inner: self,
            key: cache_key,
            done: false,
        }
    }
}

#[async_trait]
impl<S: ?Sized + Store> Store for CachedStore<S> {
    async fn get(&self, ns: &str, key: &str) -> Result<Option<Bytes>> {
        Ok(self.lookup(ns, key, false).await?.value)
    }

    async fn get_versioned(&self, ns: &str, key: &str) -> Result<Versioned> {
        self.lookup(ns, key, true).await
    }

    /// Counts neither a hit nor a miss: a caller that uses what it finds reads it again.
    fn cached(&self, ns: &str, key: &str) -> Option<Versioned> {
        let inner = &self.inner;
        inner.cache.get(&cache_key(ns, key))?.fresh(
            inner.clock.now(),
            inner.ttl,
            inner.negative_ttl,
            true,
        )
    }

    async fn commit(&self, commit: &KvCommit) -> Result<CommitOutcome> {
        validate_namespace(&commit.ns)?;
        let inner = &self.inner;
        let keys: Vec<String> = commit
            .writes
            .iter()
            .map(|(k, _)| k)
            .chain(commit.adds.iter().map(|(k, _)| k))
            .map(|k| cache_key(&commit.ns, k))
            .collect();
        let guards: Vec<_> = keys.iter().map(|k| inner.begin_write(k)).collect();
        let result = inner.call("commit", inner.store.commit(commit)).await;
        let overlapped: Vec<bool> = guards.into_iter().map(WriteGuard::finish).collect();
        match result {
            Ok(outcome) => {
                inner.learn(commit, &outcome, Some(&overlapped)).await;
                Ok(outcome)
            }
            Err(CallError::Refused(e)) => Err(e),
            Err(CallError::Store(e)) => {
                // The commit may have been applied: forget what the cache knew.
                for k in &keys {
                    inner.wrote(k, Known::Unknown, None).await;
                }
                Err(e)
            }
        }
    }

    async fn observe(&self, commit: &KvCommit, outcome: &CommitOutcome) {
        self.inner.learn(commit, outcome, None).await;
    }

    async fn forget(&self, ns: &str, keys: &[String]) {
        for key in keys {
            self.inner
                .wrote(&cache_key(ns, key), Known::Unknown, None)
                .await;
        }
    }

    async fn put(&self, ns: &str, key: &str, value: Bytes, opts: PutOptions) -> Result<bool> {
        validate_namespace(ns)?;
        validate(key, Some(&value))?;
        let inner = &self.inner;
        let cache_key = cache_key(ns, key);
        let writing = inner.begin_write(&cache_key);
        let result = inner
            .call("put", inner.store.put(ns, key, value.clone(), opts))
            .await;
        let overlapped = writing.finish();
        match result {
            Ok(true) => {
                let known = if overlapped {
                    Known::Unknown
                } else {
                    Known::Present(value, None)
                };
                let expires_at = opts.ttl.map(|ttl| inner.clock.now() + ttl);
                inner.wrote(&cache_key, known, expires_at).await;
                Ok(true)
            }
            Ok(false) => {
                // The key exists with a value this call did not see: read it next time.
                inner.wrote(&cache_key, Known::Unknown, None).await;
                Ok(false)
            }
            Err(CallError::Refused(e)) => Err(e),
            Err(CallError::Store(e)) => {
                // The write may have been applied: forget what the cache knew.
                inner.wrote(&cache_key, Known::Unknown, None).await;
                Err(e)
            }
        }
    }

    async fn delete(&self, ns: &str, key: &str) -> Result<()> {
        validate_namespace(ns)?;
        validate(key, None)?;
        let inner = &self.inner;
        let cache_key = cache_key(ns, key);
        let writing = inner.begin_write(&cache_key);
        let result = inner.call("delete", inner.store.delete(ns, key)).await;
        let overlapped = writing.finish();
        match result {
            Ok(()) => {
                let known = if overlapped {
                    Known::Unknown
                } else {
                    Known::Absent(Some(0))
                };
                inner.wrote(&cache_key, known, None).await;
                Ok(())
            }
            Err(CallError::Refused(e)) => Err(e),
            Err(CallError::Store(e)) => {
                inner.wrote(&cache_key, Known::Unknown, None).await;
                Err(e)
            }
        }
    }

    /// Scans are not cached (their answers depend on prefix and limit) but are protected like
    /// every other store call.
    async fn scan(
        &self,
        ns: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, Bytes)>> {
        validate_namespace(ns)?;
        let inner = &self.inner;
        inner
            .call("scan", inner.store.scan(ns, prefix, after, limit))
            .await
            .map_err(CallError::into_error)
    }
}

#[cfg(test)]
mod tests {
    use super::super::{FaultyStore, ManualClock, MemoryStore};
    use super::*;

    /// The store every test below runs over: change this one line to run them over another
    /// backend (the tests only use the `Store` trait on it).
    fn backing() -> Arc<dyn Store> {
        Arc::new(MemoryStore::new())
    }

    struct Rig {
        clock: Arc<ManualClock>,
        faulty: Arc<FaultyStore<dyn Store>>,
        cached: CachedStore<FaultyStore<dyn Store>>,
    }

    impl Rig {
        fn store(&self) -> &Arc<dyn Store> {
            self.faulty.inner()
        }
    }

    fn config() -> CacheConfig {
        CacheConfig {
            ttl_ms: 10_000,
            negative_ttl_ms: 1_000,
            stale_window_ms: 60_000,
            max_bytes: 64 << 20,
            store_timeout_ms: 200,
            max_concurrency: 16,
            breaker: BreakerConfig {
                failure_threshold: 3,
                failure_ratio: 1.0,
                ratio_window: 10,
                cool_down_ms: 5_000,
            },
        }
    }

    fn rig(config: CacheConfig) -> Rig {
        let clock = Arc::new(ManualClock::new());
        let faulty = Arc::new(FaultyStore::new(backing()));
        let cached =
            CachedStore::with_clock("test", faulty.clone(), &config, clock.clone()).unwrap();
        Rig {
            clock,
            faulty,
            cached,
        }
    }

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    const PLAIN: PutOptions = PutOptions {
        if_absent: false,
        ttl: None,
    };

    async fn wait_until(mut cond: impl FnMut() -> bool) {
        while !cond() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn thousand_concurrent_readers_of_one_key_make_one_store_read() {
        // A generous timeout: the store is held until all readers are waiting.
        let r = rig(CacheConfig {
            store_timeout_ms: 60_000,
            ..config()
        });
        r.store().put("fn", "hot", b("v"), PLAIN).await.unwrap();
        r.faulty.hang();
        let readers: Vec<_> = (0..1_000)
            .map(|_| {
                let cached = r.cached.clone();
                tokio::spawn(async move { cached.get("fn", "hot").await })
            })
            .collect();
        wait_until(|| r.cached.metrics().misses == 1_000).await;
        r.faulty.release();
        for reader in readers {
            assert_eq!(reader.await.unwrap().unwrap(), Some(b("v")));
        }
        assert_eq!(r.faulty.stats().gets, 1);
        let m = r.cached.metrics();
        assert_eq!((m.store_reads, m.coalesced_waits, m.hits), (1, 999, 0));

        // Everyone after that is a hit.
        assert_eq!(r.cached.get("fn", "hot").await.unwrap(), Some(b("v")));
        assert_eq!(r.cached.metrics().hits, 1);
        assert_eq!(r.faulty.stats().gets, 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn hung_store_stays_bounded_fails_fast_and_recovers() {
        let cfg = config();
        let r = rig(cfg.clone());
        r.store().put("fn", "k0", b("v0"), PLAIN).await.unwrap();
        r.faulty.hang();

        let calls: Vec<_> = (0..10_000)
            .map(|i| {
                let cached = r.cached.clone();
                tokio::spawn(async move { cached.get("fn", &format!("k{i}")).await })
            })
            .collect();
        let (mut overloaded, mut timed_out, mut circuit_open) = (0, 0, 0);
        for call in calls {
            let err = call.await.unwrap().expect_err("a hung store cannot answer");
            assert!(err.is_retryable(), "{err}");
            match err {
                Error::Overloaded(_) => overloaded += 1,
                Error::Timeout { .. } => timed_out += 1,
                Error::CircuitOpen(_) => circuit_open += 1,
                other => panic!("unexpected error {other}"),
            }
        }
        let f = r.faulty.stats();
        assert!(f.peak_in_flight <= cfg.max_concurrency as u64, "{f:?}");
        assert_eq!(f.reached_inner(), 0);
        assert_eq!(
            f.calls, timed_out,
            "only calls that got a slot reached the store"
        );
        assert!(overloaded > 0 && timed_out >= cfg.breaker.failure_threshold as u64);
        assert_eq!(overloaded + timed_out + circuit_open, 10_000);

        // The abandoned calls left nothing behind: no store call, permit or read in flight.
        assert_eq!(f.in_flight, 0);
        let m = r.cached.metrics();
        assert_eq!(m.in_flight, 0);
        assert_eq!(m.timeouts, timed_out);
        assert_eq!(m.rejected, overloaded + circuit_open);
        assert!(r.cached.inner.flights.lock().unwrap().is_empty());
        r.cached.inner.cache.run_pending_tasks();
        assert_eq!(r.cached.metrics().entries, 0);
        assert_eq!(m.breaker, BreakerState::Open);

        // While open, the store is not called at all.
        for i in 0..10_000 {
            let err = r.cached.get("fn", &format!("k{i}")).await.unwrap_err();
            assert!(matches!(err, Error::CircuitOpen(_)), "{err}");
        }
        assert_eq!(r.faulty.stats().calls, f.calls);

        // The store comes back: after the cool-down one probe goes through and closes the breaker.
        r.faulty.release();
        r.clock.advance(cfg.breaker.cool_down());
        assert_eq!(r.cached.get("fn", "k0").await.unwrap(), Some(b("v0")));
        assert_eq!(r.cached.metrics().breaker, BreakerState::Closed);
        assert_eq!(r.cached.get("fn", "k1").await.unwrap(), None);
    }

    #[tokio::test]
    async fn hung_hot_key_holds_one_store_call_however_many_wait() {
        let r = rig(config());
        r.faulty.hang();
        let readers = (0..10_000).map(|_| r.cached.get("fn", "hot"));
        for result in futures::future::join_all(readers).await {
            assert!(matches!(result, Err(Error::Timeout { .. })), "{result:?}");
        }
        assert_eq!(r.faulty.stats().calls, 1);
        assert_eq!(r.cached.metrics().coalesced_waits, 9_999);
    }

    #[tokio::test]
    async fn stale_values_are_served_during_an_outage_and_refreshed_after() {
        let cfg = config();
        let r = rig(cfg.clone());
        r.store().put("fn", "k", b("v1"), PLAIN).await.unwrap();
        assert_eq!(r.cached.get("fn", "k").await.unwrap(), Some(b("v1")));
        r.clock.advance(cfg.ttl() + Duration::from_millis(1));

        // Errors, a timeout, then the open breaker: the last value keeps being served.
        r.faulty.fail_always();
        assert_eq!(r.cached.get("fn", "k").await.unwrap(), Some(b("v1")));
        r.faulty.heal();
        r.faulty.hang();
        assert_eq!(r.cached.get("fn", "k").await.unwrap(), Some(b("v1")));
        assert_eq!(r.cached.get("fn", "k").await.unwrap(), Some(b("v1")));
        assert_eq!(r.cached.metrics().breaker, BreakerState::Open);
        let calls = r.faulty.stats().calls;
        assert_eq!(r.cached.get("fn", "k").await.unwrap(), Some(b("v1")));
        assert_eq!(
            r.faulty.stats().calls,
            calls,
            "served stale without calling the store"
        );
        let m = r.cached.metrics();
        assert_eq!((m.stale_serves, m.timeouts, m.store_errors), (4, 2, 3));

        // The store is back with a newer value: the next read after the cool-down refreshes it.
        r.faulty.release();
        r.store().put("fn", "k", b("v2"), PLAIN).await.unwrap();
        r.clock.advance(cfg.breaker.cool_down());
        assert_eq!(r.cached.get("fn", "k").await.unwrap(), Some(b("v2")));
        assert_eq!(r.cached.get("fn", "k").await.unwrap(), Some(b("v2")));
        let m = r.cached.metrics();
        assert_eq!((m.stale_serves, m.hits), (4, 1));

        // Past the stale window, an outage is an error again (a retryable one).
        r.clock
            .advance(cfg.ttl() + cfg.stale_window() + Duration::from_millis(1));
        r.faulty.fail_always();
        let err = r.cached.get("fn", "k").await.unwrap_err();
        assert!(err.is_retryable(), "{err}");
        assert_eq!(r.cached.metrics().stale_serves, 4);
    }

    #[tokio::test]
    async fn cached_tells_what_the_cache_knows_without_a_store_call_or_a_count() {
        let cfg = config();
        let r = rig(cfg.clone());
        r.store().put("fn", "k", b("v1"), PLAIN).await.unwrap();
        assert_eq!(r.cached.cached("fn", "k"), None, "never read: unknown");
        let read = r.cached.get_versioned("fn", "k").await.unwrap();
        assert_eq!(
            r.cached.get_versioned("fn", "gone").await.unwrap().value,
            None
        );
        let (calls, hits, misses) = (
            r.faulty.stats().calls,
            r.cached.metrics().hits,
            r.cached.metrics().misses,
        );
        assert_eq!(r.cached.cached("fn", "k"), Some(read));
        assert_eq!(
            r.cached.cached("fn", "gone").map(|v| v.value),
            Some(None),
            "a known absence is knowledge too"
        );
        assert_eq!(r.faulty.stats().calls, calls);
        assert_eq!(r.cached.metrics().hits, hits);
        assert_eq!(r.cached.metrics().misses, misses);
        // Past its freshness an entry is not offered.
        r.clock.advance(cfg.ttl() + Duration::from_millis(1));
        assert_eq!(r.cached.cached("fn", "k"), None);
    }

    #[tokio::test]
    async fn a_write_is_visible_to_the_next_read() {
        let r = rig(config());
        assert_eq!(r.cached.get("fn", "k").await.unwrap(), None);
        assert!(r.cached.put("fn", "k", b("v1"), PLAIN).await.unwrap());
        assert_eq!(r.cached.get("fn", "k").await.unwrap(), Some(b("v1")));
        assert!(r.cached.put("fn", "k", b("v2"), PLAIN).await.unwrap());
        assert_eq!(r.cached.get("fn", "k").await.unwrap(), Some(b("v2")));
        r.cached.delete("fn", "k").await.unwrap();
        assert_eq!(r.cached.get("fn", "k").await.unwrap(), None);
        assert_eq!(
            r.faulty.stats().gets,
            1,
            "writes updated the cache, reads stayed hits"
        );
        assert_eq!(
            r.store().get("fn", "k").await.unwrap(),
            None,
            "written through"
        );

        // if_absent keeps its meaning, and a refused conditional write sends the next read to
        // the store.
        let cond = PutOptions {
            if_absent: true,
            ttl: None,
        };
        assert!(r.cached.put("fn", "k", b("v3"), cond).await.unwrap());
        assert!(!r.cached.put("fn", "k", b("v4"), cond).await.unwrap());
        assert_eq!(r.cached.get("fn", "k").await.unwrap(), Some(b("v3")));
        assert_eq!(r.faulty.stats().gets, 2);

        // An item's own TTL bounds how long the cache serves it.
        let short = PutOptions {
            if_absent: false,
            ttl: Some(Duration::from_secs(1)),
        };
        assert!(r.cached.put("fn", "t", b("x"), short).await.unwrap());
        assert_eq!(r.cached.get("fn", "t").await.unwrap(), Some(b("x")));
        assert_eq!(r.faulty.stats().gets, 2);
        r.clock.advance(Duration::from_secs(1));
        r.cached.get("fn", "t").await.unwrap();
        assert_eq!(r.faulty.stats().gets, 3);
        assert_eq!(r.cached.metrics().store_writes, 6);
    }

    #[tokio::test]
    async fn a_failed_write_forgets_the_cached_value() {
        let r = rig(config());
        assert!(r.cached.put("fn", "k", b("v1"), PLAIN).await.unwrap());
        r.faulty.fail_always();
        let err = r.cached.put("fn", "k", b("v2"), PLAIN).await.unwrap_err();
        assert!(err.is_retryable(), "{err}");
        // The write may or may not have landed: the old value is neither fresh nor stale now.
        let err = r.cached.get("fn", "k").await.unwrap_err();
        assert!(err.is_retryable(), "{err}");
        r.faulty.heal();
        assert_eq!(r.cached.get("fn", "k").await.unwrap(), Some(b("v1")));
        let err = {
            r.faulty.fail_always();
            r.cached.delete("fn", "k").await.unwrap_err()
        };
        assert!(err.is_retryable(), "{err}");
        assert_eq!(r.cached.metrics().stale_serves, 0);
    }

    #[tokio::test]
    async fn a_read_that_started_before_a_write_cannot_overwrite_it() {
        let r = rig(config());
        r.store().put("fn", "k", b("old"), PLAIN).await.unwrap();
        let inner = &r.cached.inner;
        let key = cache_key("fn", "k");
        // What a slow read would do: take its version, read `old`, and install it late.
        let version = inner.version.load(Ordering::SeqCst);
        assert!(r.cached.put("fn", "k", b("new"), PLAIN).await.unwrap());
        let late = Entry {
            known: Known::Present(b("old"), Some(1)),
            at: inner.clock.now(),
            expires_at: None,
            version,
        };
        inner.install(key, late).await;
        assert_eq!(r.cached.get("fn", "k").await.unwrap(), Some(b("new")));
        assert_eq!(r.faulty.stats().gets, 0);
    }

    #[tokio::test]
    async fn missing_keys_are_cached_for_the_negative_ttl() {
        let cfg = config();
        let r = rig(cfg.clone());
        assert_eq!(r.cached.get("fn", "k").await.unwrap(), None);
        assert_eq!(r.cached.get("fn", "k").await.unwrap(), None);
        assert_eq!(r.faulty.stats().gets, 1);
        // Written behind the cache's back (another host): seen once the negative TTL ran out.
        r.store().put("fn", "k", b("v"), PLAIN).await.unwrap();
        assert_eq!(r.cached.get("fn", "k").await.unwrap(), None);
        r.clock.advance(cfg.negative_ttl());
        assert_eq!(r.cached.get("fn", "k").await.unwrap(), Some(b("v")));
        assert_eq!(r.faulty.stats().gets, 2);

        // A stale "missing" is never served during an outage.
        r.store().delete("fn", "k").await.unwrap();
        r.clock.advance(cfg.ttl());
        assert_eq!(r.cached.get("fn", "k").await.unwrap(), None);
        r.clock.advance(cfg.negative_ttl());
        r.faulty.fail_always();
        assert!(r.cached.get("fn", "k").await.is_err());
    }

    #[tokio::test]
    async fn namespaces_are_kept_apart() {
        let r = rig(config());
        r.cached.put("a", "bk", b("a/bk"), PLAIN).await.unwrap();
        r.cached.put("ab", "k", b("ab/k"), PLAIN).await.unwrap();
        r.cached.put("b", "bk", b("b/bk"), PLAIN).await.unwrap();
        assert_eq!(r.cached.get("a", "bk").await.unwrap(), Some(b("a/bk")));
        assert_eq!(r.cached.get("ab", "k").await.unwrap(), Some(b("ab/k")));
        assert_eq!(r.cached.get("b", "bk").await.unwrap(), Some(b("b/bk")));
        r.cached.delete("a", "bk").await.unwrap();
        assert_eq!(r.cached.get("a", "bk").await.unwrap(), None);
        assert_eq!(r.cached.get("b", "bk").await.unwrap(), Some(b("b/bk")));
        assert_eq!(r.cached.get("ab", "k").await.unwrap(), Some(b("ab/k")));
        assert_eq!(r.store().get("b", "bk").await.unwrap(), Some(b("b/bk")));
    }

    #[tokio::test]
    async fn scans_pass_through_behind_the_breaker() {
        let r = rig(config());
        for k in ["x1", "x2", "y"] {
            r.cached.put("fn", k, b(k), PLAIN).await.unwrap();
        }
        assert_eq!(r.cached.scan("fn", "x", None, 10).await.unwrap().len(), 2);
        assert_eq!(r.cached.metrics().store_reads, 1);
        r.faulty.fail_always();
        for _ in 0..3 {
            assert!(r.cached.scan("fn", "x", None, 10).await.is_err());
        }
        let err = r.cached.scan("fn", "x", None, 10).await.unwrap_err();
        assert!(
            matches!(err, Error::CircuitOpen(ref s) if s.contains("test")),
            "{err}"
        );
    }

    #[tokio::test]
    async fn bad_input_is_rejected_before_the_store() {
        let r = rig(config());
        let err = r.cached.get("fn", "").await.unwrap_err();
        assert!(err.to_string().contains("kv key"), "{err}");
        assert!(!err.is_retryable());
        let err = r.cached.put("", "k", b("v"), PLAIN).await.unwrap_err();
        assert!(err.to_string().contains("namespace"), "{err}");
        assert_eq!(r.faulty.stats().calls, 0);
    }

    #[test]
    fn config_defaults_parse_and_validation() {
        let cfg: CacheConfig = toml::from_str("").unwrap();
        assert_eq!(cfg, CacheConfig::default());
        assert_eq!(cfg.ttl_ms, DEFAULT_TTL_MS);
        assert_eq!(cfg.max_concurrency, DEFAULT_MAX_CONCURRENCY);

        let cfg: CacheConfig =
            toml::from_str("ttl_ms = 500\n[breaker]\ncool_down_ms = 100\n").unwrap();
        assert_eq!((cfg.ttl_ms, cfg.breaker.cool_down_ms), (500, 100));
        assert_eq!(
            cfg.breaker.failure_threshold,
            super::super::breaker::DEFAULT_FAILURE_THRESHOLD
        );

        let err = toml::from_str::<CacheConfig>("ttl = 5").unwrap_err();
        assert!(err.to_string().contains("unknown field `ttl`"), "{err}");
        let err = toml::from_str::<CacheConfig>("[breaker]\nthreshold = 5").unwrap_err();
        assert!(
            err.to_string().contains("unknown field `threshold`"),
            "{err}"
        );

        let err = CacheConfig {
            max_concurrency: 0,
            ..config()
        }
        .validate("functions.f.cache")
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("functions.f.cache.max_concurrency"),
            "{err}"
        );
        let err = CacheConfig {
            ttl_ms: 0,
            ..config()
        }
        .validate("cache")
        .unwrap_err();
        assert!(err.to_string().contains("cache.ttl_ms"), "{err}");
        let bad_breaker = CacheConfig {
            breaker: BreakerConfig {
                failure_threshold: 0,
                ..BreakerConfig::default()
            },
            ..config()
        };
        let err = CachedStore::new("s", backing(), &bad_breaker).unwrap_err();
        assert!(
            err.to_string().contains("cache.breaker.failure_threshold"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn metrics_serialize_for_status() {
        let r = rig(config());
        r.cached.get("fn", "k").await.unwrap();
        let json = serde_json::to_value(r.cached.metrics()).unwrap();
        assert_eq!(json["breaker"], "closed");
        assert_eq!(json["misses"], 1);
        assert_eq!(json["store_reads"], 1);
    }
}
