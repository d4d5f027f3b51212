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
use super::{PutOptions, Store, validate};
use crate::{Error, Result};

/// Writes between two sweeps of expired items: expired items are invisible at once, and the
/// sweep bounds the memory they hold without making every write scan the map.
const SWEEP_EVERY: u64 = 1024;

#[derive(Debug, Clone)]
struct Item {
    value: Bytes,
    expires_at: Option<Instant>,
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
    async fn get(&self, ns: &str, key: &str) -> Result<Option<Bytes>> {
        validate_namespace(ns)?;
        validate(key, None)?;
        let now = self.clock.now();
        Ok(self
            .read()
            .get(ns)
            .and_then(|items| items.get(key))
            .filter(|item| item.live(now))
            .map(|item| item.value.clone()))
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
                items.insert(key.to_owned(), Item { value, expires_at });
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

    async fn scan(&self, ns: &str, prefix: &str, limit: usize) -> Result<Vec<(String, Bytes)>> {
        validate_namespace(ns)?;
        let now = self.clock.now();
        let data = self.read();
        let Some(items) = data.get(ns) else {
            return Ok(Vec::new());
        };
        Ok(items
            .range::<str, _>((
                std::ops::Bound::Included(prefix),
                std::ops::Bound::Unbounded,
            ))
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
        assert_eq!(s.scan("f", "", 10).await.unwrap().len(), 1);
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
            .scan("f", "b", 10)
            .await
            .unwrap()
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(got, ["b1", "b2", "b3"]);
        assert_eq!(s.scan("f", "b", 2).await.unwrap().len(), 2);
        assert_eq!(s.scan("f", "", 100).await.unwrap().len(), 5);
        assert!(s.scan("f", "b", 0).await.unwrap().is_empty());
        assert!(s.scan("h", "", 10).await.unwrap().is_empty());
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
