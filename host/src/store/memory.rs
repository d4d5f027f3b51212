//! `MemoryStore`: a complete in-process [`Store`] (namespaces, TTL, conditional writes, ordered
//! scans) kept in a map behind a lock. It is the native baseline for benchmarks and the default
//! backing store of the cache tests; it keeps nothing across restarts.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use async_trait::async_trait;
use bytes::Bytes;

use super::breaker::{Clock, SystemClock};
use super::{CommitOutcome, KvCommit, PutOptions, Store, Versioned, validate, validate_scan};
use crate::{Error, Result};

/// Writes between two sweeps of expired items: expired items are invisible at once, and the
/// sweep bounds the memory they hold without making every write scan the map.
const SWEEP_EVERY: u64 = 1024;

#[derive(Debug, Clone)]
struct Item {
    value: Bytes,
    expires_at: Option<Instant>,
    version: u64,
}

impl Item {
    fn live(&self, now: Instant) -> bool {
        self.expires_at.is_none_or(|t| now < t)
    }
}

/// An in-memory store; cheap to create, safe to share between tasks.
#[derive(Debug)]
pub struct MemoryStore {
    clock: Arc<dyn Clock>,
    data: RwLock<HashMap<String, BTreeMap<String, Item>>>,
    writes: AtomicU64,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

pub(crate) fn validate_namespace(ns: &str) -> Result<()> {
    if ns.is_empty() {
        return Err(Error::Invalid("kv namespace must not be empty".into()));
    }
    Ok(())
}

impl MemoryStore {
    /// An empty store on the system clock.
    pub fn new() -> Self {
        Self::with_clock(Arc::new(SystemClock))
    }

    /// An empty store whose item TTLs run on `clock`.
    pub fn with_clock(clock: Arc<dyn Clock>) -> Self {
        MemoryStore {
            clock,
            data: RwLock::new(HashMap::new()),
            writes: AtomicU64::new(0),
        }
    }

    /// Number of items held, expired ones not yet swept included.
    pub fn len(&self) -> usize {
        self.read().values().map(BTreeMap::len).sum()
    }

    /// Whether the store holds no items.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops every expired item now.
    pub fn sweep(&self) {
        let now = self.clock.now();
        let mut data = self.write();
        data.retain(|_, items| {
            items.retain(|_, item| item.live(now));
            !items.is_empty()
        });
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, BTreeMap<String, Item>>> {
        // Every critical section leaves the map whole, so a panic elsewhere does not poison it.
        self.data.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, BTreeMap<String, Item>>> {
        self.data.write().unwrap_or_else(|p| p.into_inner())
    }

    fn wrote(&self) {
        if self.writes.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            self.sweep();
        }
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn get_versioned(&self, ns: &str, key: &str) -> Result<Versioned> {
        validate_namespace(ns)?;
        validate(key, None)?;
        let now = self.clock.now();
        let data = self.read();
        let item = data.get(ns).and_then(|items| items.get(key));
        Ok(Versioned {
            value: item
                .filter(|item| item.live(now))
                .map(|item| item.value.clone()),
            version: item.map_or(0, |item| item.version),
        })
    }

    async fn commit(&self, c: &KvCommit) -> Result<CommitOutcome> {
        validate_namespace(&c.ns)?;
        c.validate()?;
        for (key, value) in &c.writes {
            validate(key, value.as_deref())?;
        }
        let now = self.clock.now();
        let mut data = self.write();
        if let Some(r) = &c.record
            && data
                .get(super::RECORDS_NS)
                .and_then(|items| items.get(&r.key))
                .is_some_and(|item| item.live(now))
        {
            return Ok(CommitOutcome::Duplicate);
        }
        let items = data.get(&c.ns);
        let version_of = |key: &str| items.and_then(|i| i.get(key)).map_or(0, |i| i.version);
        let changed: Vec<String> = c
            .reads
            .iter()
            .filter(|(k, v)| version_of(k) != *v)
            .map(|(k, _)| k.clone())
            .collect();
        if !changed.is_empty() {
            return Ok(CommitOutcome::Conflict { keys: changed });
        }
        // Adds are computed before anything is written: a refused one applies nothing.
        let mut sums = Vec::with_capacity(c.adds.len());
        for (key, delta) in &c.adds {
            let current = items
                .and_then(|i| i.get(key))
                .filter(|i| i.live(now))
                .map(|i| i.value.as_ref());
            sums.push((key, super::added(key, current, *delta)?));
        }
        let items = data.entry(c.ns.clone()).or_default();
        for (key, value) in sums {
            let version = items.get(key).map_or(0, |i| i.version) + 1;
            items.insert(
                key.clone(),
                Item {
                    value,
                    expires_at: None,
                    version,
                },
            );
        }
        let mut versions = Vec::with_capacity(c.writes.len());
        for (key, value) in &c.writes {
            match value {
                Some(v) => {
                    let version = items.get(key).map_or(0, |i| i.version) + 1;
                    items.insert(
                        key.clone(),
                        Item {
                            value: v.clone(),
                            expires_at: None,
                            version,
                        },
                    );
                    versions.push(Some(version));
                }
                None => {
                    items.remove(key);
                    versions.push(Some(0));
                }
            }
        }
        if let Some(r) = &c.record {
            data.entry(super::RECORDS_NS.to_owned())
                .or_default()
                .insert(
                    r.key.clone(),
                    Item {
                        value: r.value.clone(),
                        expires_at: Some(now + r.ttl),
                        version: 1,
                    },
                );
        }
        drop(data);
        self.wrote();
        Ok(CommitOutcome::Committed { versions })
    }

    async fn put(&self, ns: &str, key: &str, value: Bytes, opts: PutOptions) -> Result<bool> {
        validate_namespace(ns)?;
        validate(key, Some(&value))?;
        let now = self.clock.now();
        let written = {
            let mut data = self.write();
            let items = data.entry(ns.to_owned()).or_default();
            if opts.if_absent && items.get(key).is_some_and(|item| item.live(now)) {
                false
            } else {
                let expires_at = opts.ttl.map(|ttl| now + ttl);
                let version = items.get(key).map_or(0, |i| i.version) + 1;
                items.insert(
                    key.to_owned(),
                    Item {
                        value,
                        expires_at,
                        version,
                    },
                );
                true
            }
        };
        if written {
            self.wrote();
        }
        Ok(written)
    }

    async fn delete(&self, ns: &str, key: &str) -> Result<()> {
        validate_namespace(ns)?;
        validate(key, None)?;
        let mut data = self.write();
        if let Some(items) = data.get_mut(ns) {
            items.remove(key);
            if items.is_empty() {
                data.remove(ns);
            }
        }
        Ok(())
    }

    async fn scan(
        &self,
        ns: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, Bytes)>> {
        validate_namespace(ns)?;
        validate_scan(prefix, limit)?;
        let now = self.clock.now();
        let data = self.read();
        let Some(items) = data.get(ns) else {
            return Ok(Vec::new());
        };
        let start = match after {
            Some(a) if a >= prefix => std::ops::Bound::Excluded(a),
            _ => std::ops::Bound::Included(prefix),
        };
        Ok(items
            .range::<str, _>((start, std::ops::Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(prefix))
            .filter(|(_, item)| item.live(now))
            .take(limit)
            .map(|(k, item)| (k.clone(), item.value.clone()))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::breaker::ManualClock;
    use super::*;

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    #[tokio::test]
    async fn put_get_delete_round_trip() {
        let s = MemoryStore::new();
        assert_eq!(s.get("f", "k").await.unwrap(), None);
        assert!(
            s.put("f", "k", b("v"), PutOptions::default())
                .await
                .unwrap()
        );
        assert_eq!(s.get("f", "k").await.unwrap(), Some(b("v")));
        assert!(
            s.put("f", "k", b("w"), PutOptions::default())
                .await
                .unwrap()
        );
        assert_eq!(s.get("f", "k").await.unwrap(), Some(b("w")));
        s.delete("f", "k").await.unwrap();
        assert_eq!(s.get("f", "k").await.unwrap(), None);
        s.delete("f", "k").await.unwrap();
        assert!(s.is_empty());
    }

    #[tokio::test]
    async fn if_absent_only_writes_a_missing_or_expired_key() {
        let clock = Arc::new(ManualClock::new());
        let s = MemoryStore::with_clock(clock.clone());
        let cond = PutOptions {
            if_absent: true,
            ttl: None,
        };
        assert!(s.put("f", "k", b("1"), cond).await.unwrap());
        assert!(!s.put("f", "k", b("2"), cond).await.unwrap());
        assert_eq!(s.get("f", "k").await.unwrap(), Some(b("1")));

        let ttl = PutOptions {
            if_absent: false,
            ttl: Some(Duration::from_secs(10)),
        };
        assert!(s.put("f", "t", b("1"), ttl).await.unwrap());
        clock.advance(Duration::from_secs(10));
        assert!(
            s.put("f", "t", b("2"), cond).await.unwrap(),
            "expired counts as absent"
        );
        assert_eq!(s.get("f", "t").await.unwrap(), Some(b("2")));
    }

    #[tokio::test]
    async fn items_expire_after_their_ttl_and_are_swept() {
        let clock = Arc::new(ManualClock::new());
        let s = MemoryStore::with_clock(clock.clone());
        let ttl = PutOptions {
            if_absent: false,
            ttl: Some(Duration::from_secs(5)),
        };
        s.put("f", "k", b("v"), ttl).await.unwrap();
        s.put("f", "stay", b("v"), PutOptions::default())
            .await
            .unwrap();
        clock.advance(Duration::from_millis(4_999));
        assert_eq!(s.get("f", "k").await.unwrap(), Some(b("v")));
        clock.advance(Duration::from_millis(1));
        assert_eq!(s.get("f", "k").await.unwrap(), None);
        assert_eq!(s.scan("f", "", None, 10).await.unwrap().len(), 1);
        assert_eq!(s.len(), 2);
        s.sweep();
        assert_eq!(s.len(), 1);
    }

    #[tokio::test]
    async fn scan_is_ordered_prefixed_limited_and_per_namespace() {
        let s = MemoryStore::new();
        for k in ["b2", "a", "b1", "b3", "c"] {
            s.put("f", k, b(k), PutOptions::default()).await.unwrap();
        }
        s.put("g", "b0", b("other"), PutOptions::default())
            .await
            .unwrap();
        let got: Vec<String> = s
            .scan("f", "b", None, 10)
            .await
            .unwrap()
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(got, ["b1", "b2", "b3"]);
        assert_eq!(s.scan("f", "b", None, 2).await.unwrap().len(), 2);
        assert_eq!(s.scan("f", "", None, 100).await.unwrap().len(), 5);
        assert!(s.scan("f", "b", None, 0).await.is_err());
        let after: Vec<String> = s
            .scan("f", "b", Some("b1"), 10)
            .await
            .unwrap()
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(after, ["b2", "b3"]);
        assert!(s.scan("h", "", None, 10).await.unwrap().is_empty());
        assert_eq!(s.get("g", "b1").await.unwrap(), None);
    }

    #[tokio::test]
    async fn bad_input_is_named() {
        let s = MemoryStore::new();
        let err = s.get("", "k").await.unwrap_err();
        assert!(err.to_string().contains("namespace"), "{err}");
        let err = s.get("f", "").await.unwrap_err();
        assert!(err.to_string().contains("kv key"), "{err}");
        let big = Bytes::from(vec![0u8; super::super::MAX_VALUE_LEN + 1]);
        let err = s
            .put("f", "k", big, PutOptions::default())
            .await
            .unwrap_err();
        assert!(err.to_string().contains("kv value"), "{err}");
        assert!(!err.is_retryable());
    }
}
