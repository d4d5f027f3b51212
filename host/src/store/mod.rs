//! Key-value stores namespaced per function: the [`Store`] trait every backend implements.
//!
//! Every item carries a version (1 on first write, raised by every write that changes it; 0 means
//! absent; a backend may also raise it on a write of the same bytes), so an
//! invocation's writes can be committed with optimistic concurrency: [`KvCommit`] lists the
//! versions the invocation read, and a commit applies nothing if any of them changed.

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use crate::Result;

mod breaker;
mod cached;
mod faulty;
pub mod in_place;
mod memory;

pub use breaker::{
    BreakerConfig, BreakerPermit, BreakerState, CircuitBreaker, Clock, ManualClock, SystemClock,
};
pub use cached::{CacheConfig, CacheMetrics, CachedStore};
pub use faulty::{FaultStats, FaultyStore};
pub use memory::MemoryStore;
pub mod dynamo;

/// Longest key a function may use, in bytes.
pub const MAX_KEY_LEN: usize = 1024;

/// Largest value, in bytes (DynamoDB's item limit leaves room for the key and attributes).
pub const MAX_VALUE_LEN: usize = 350 * 1024;

/// Conditions and expiry for a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PutOptions {
    /// Write only if the key is absent (for idempotency records).
    pub if_absent: bool,
    /// Expire the item after this long.
    pub ttl: Option<Duration>,
}

/// Most distinct keys one invocation may write (its buffered writes are held in host memory).
pub const MAX_TXN_WRITES: usize = 1000;
/// Most distinct keys one invocation may read (each read's version is kept until the commit).
pub const MAX_TXN_READS: usize = 10_000;
/// Most bytes of values one invocation may write.
pub const MAX_TXN_BYTES: usize = 8 << 20;
/// Most items one scan call returns.
pub const MAX_SCAN: usize = 1000;

/// Namespace of the completion records (`{queue}/{message id}`); function names cannot start
/// with `_`, so no function can read or write it.
pub const RECORDS_NS: &str = "_levee_done";

/// A value and the version it was read at. `version` 0 means the key has no item; an expired
/// item not yet purged reads as absent but keeps its version.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Versioned {
    pub value: Option<Bytes>,
    pub version: u64,
}

/// A record written with a commit only if no record with its key exists yet, in
/// [`RECORDS_NS`]: the proof that a message was committed, holding what replays need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub key: String,
    pub value: Bytes,
    pub ttl: Duration,
}

/// One invocation's effect on its namespace: the versions it read, the writes it buffered
/// (`None` deletes) and the counters it added to. At most one entry per key in each list, and
/// a key added to is neither read nor written by the same commit.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KvCommit {
    pub ns: String,
    pub reads: Vec<(String, u64)>,
    pub writes: Vec<(String, Option<Bytes>)>,
    /// Blind increments (`kv.add`): each adds its delta to the JSON integer at its key (absent
    /// or expired counts as 0) when the commit applies. Not version-checked, so concurrent adds
    /// to one counter never conflict; a value that is not an integer, or an overflow, refuses
    /// the whole commit (permanently: running again would find the same value).
    pub adds: Vec<(String, i64)>,
    /// The completion record, on backends where the commit and the queue are not one
    /// transaction.
    pub record: Option<Record>,
}

impl KvCommit {
    /// Whether committing would change nothing and check nothing.
    pub fn is_empty(&self) -> bool {
        self.reads.is_empty()
            && self.writes.is_empty()
            && self.adds.is_empty()
            && self.record.is_none()
    }

    /// The version `key` was read at, if it was read.
    pub fn read_version(&self, key: &str) -> Option<u64> {
        self.reads.iter().find(|(k, _)| k == key).map(|(_, v)| *v)
    }

    /// Checks the invocation-level bounds shared by every backend.
    pub fn validate(&self) -> Result<()> {
        let written = self.writes.len() + self.adds.len();
        if written > MAX_TXN_WRITES {
            return Err(crate::Error::Invalid(format!(
                "an invocation may write at most {MAX_TXN_WRITES} keys, this one wrote {written}"
            )));
        }
        for (key, _) in &self.adds {
            validate(key, None)?;
            if self.read_version(key).is_some() || self.writes.iter().any(|(k, _)| k == key) {
                return Err(crate::Error::Invalid(format!(
                    "kv key \"{key}\" is both added to and read or written in one commit"
                )));
            }
        }
        let bytes: usize = self
            .writes
            .iter()
            .map(|(k, v)| k.len() + v.as_ref().map_or(0, Bytes::len))
            .sum();
        if bytes > MAX_TXN_BYTES {
            return Err(crate::Error::Invalid(format!(
                "an invocation may write at most {} MiB of kv data, this one wrote {bytes} bytes",
                MAX_TXN_BYTES >> 20
            )));
        }
        Ok(())
    }
}

/// The value a counter holds after `delta` is added to `current` (its stored bytes, `None` when
/// absent): a JSON integer, written back as decimal text. Shared by every backend so they agree
/// on the format and the errors.
pub fn added(key: &str, current: Option<&[u8]>, delta: i64) -> Result<Bytes> {
    let now = match current {
        None => 0,
        Some(bytes) => std::str::from_utf8(bytes)
            .ok()
            .and_then(|t| t.trim().parse::<i64>().ok())
            .ok_or_else(|| {
                crate::Error::Invalid(format!(
                    "kv.add on \"{key}\": the stored value is not an integer ({} bytes: {:?})",
                    bytes.len(),
                    String::from_utf8_lossy(&bytes[..bytes.len().min(40)])
                ))
            })?,
    };
    let new = now.checked_add(delta).ok_or_else(|| {
        crate::Error::Invalid(format!(
            "kv.add on \"{key}\" would overflow: {now} + {delta}"
        ))
    })?;
    Ok(Bytes::from(new.to_string()))
}

/// What a commit did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommitOutcome {
    /// Applied; the new version of each write, in the order of [`KvCommit::writes`] (0 for a
    /// delete, `None` where the backend does not learn it: a blind write on DynamoDB). Adds have
    /// no entry: a cache forgets the counters they changed.
    Committed { versions: Vec<Option<u64>> },
    /// A key read has changed since: nothing was applied. Names the keys that changed.
    Conflict { keys: Vec<String> },
    /// The completion record already existed: the message was committed before; nothing
    /// was applied.
    Duplicate,
}

/// A key-value store holding one namespace per function.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// The value under `key` in namespace `ns`, if present and not expired.
    async fn get(&self, ns: &str, key: &str) -> Result<Option<Bytes>> {
        Ok(self.get_versioned(ns, key).await?.value)
    }

    /// The value under `key` with its version.
    async fn get_versioned(&self, ns: &str, key: &str) -> Result<Versioned>;

    /// The values under `keys` in namespace `ns`, in their order (`None` where absent or
    /// expired). Backends with a batch read answer in one round trip (the ledger checks a
    /// received batch's completion records this way); the default asks key by key, concurrently.
    async fn get_many(&self, ns: &str, keys: &[String]) -> Result<Vec<Option<Bytes>>> {
        futures::future::try_join_all(keys.iter().map(|k| self.get(ns, k))).await
    }

    /// What a cache in front of the store knows of `key` with its version, without asking the
    /// store; `None` when it knows nothing (and always, for a store without a cache).
    fn cached(&self, _ns: &str, _key: &str) -> Option<Versioned> {
        None
    }

    /// Applies `commit` atomically if every version it read is still current (and its record,
    /// if any, is new).
    async fn commit(&self, commit: &KvCommit) -> Result<CommitOutcome>;

    /// Tells a cache of a commit applied behind its back (by the queue, on the embedded
    /// backend, where the commit is one SQLite transaction with the message's settlement).
    async fn observe(&self, _commit: &KvCommit, _outcome: &CommitOutcome) {}

    /// Makes a cache forget `keys` of `ns`, so the next read of each goes to the store.
    async fn forget(&self, _ns: &str, _keys: &[String]) {}

    /// Writes `value`; returns false when `if_absent` was set and the key exists.
    async fn put(&self, ns: &str, key: &str, value: Bytes, opts: PutOptions) -> Result<bool>;

    /// Removes `key`; removing a missing key is not an error.
    async fn delete(&self, ns: &str, key: &str) -> Result<()>;

    /// Up to `limit` items of `ns` whose keys start with `prefix` and sort after `after`, in
    /// key order.
    async fn scan(
        &self,
        ns: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, Bytes)>>;
}

/// Checks a scan's prefix and limit against the bounds every backend shares.
pub fn validate_scan(prefix: &str, limit: usize) -> Result<()> {
    if prefix.len() > MAX_KEY_LEN {
        return Err(crate::Error::Invalid(format!(
            "kv scan prefix must be at most {MAX_KEY_LEN} bytes, got {}",
            prefix.len()
        )));
    }
    if !(1..=MAX_SCAN).contains(&limit) {
        return Err(crate::Error::Invalid(format!(
            "kv scan limit must be 1 to {MAX_SCAN}, got {limit}"
        )));
    }
    Ok(())
}

/// Checks a key and value against the limits every backend shares.
pub fn validate(key: &str, value: Option<&[u8]>) -> Result<()> {
    if key.is_empty() || key.len() > MAX_KEY_LEN {
        return Err(crate::Error::Invalid(format!(
            "kv key must be 1 to {MAX_KEY_LEN} bytes, got {}",
            key.len()
        )));
    }
    if let Some(v) = value
        && v.len() > MAX_VALUE_LEN
    {
        return Err(crate::Error::Invalid(format!(
            "kv value must be at most {MAX_VALUE_LEN} bytes, got {}",
            v.len()
        )));
    }
    Ok(())
}
