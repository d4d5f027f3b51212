//! Key-value stores namespaced per function: the [`Store`] trait every backend implements.

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use crate::Result;

mod breaker;
mod cached;
mod faulty;
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

/// A key-value store holding one namespace per function.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// The value under `key` in namespace `ns`, if present and not expired.
    async fn get(&self, ns: &str, key: &str) -> Result<Option<Bytes>>;

    /// Writes `value`; returns false when `if_absent` was set and the key exists.
    async fn put(&self, ns: &str, key: &str, value: Bytes, opts: PutOptions) -> Result<bool>;

    /// Removes `key`; removing a missing key is not an error.
    async fn delete(&self, ns: &str, key: &str) -> Result<()>;

    /// Up to `limit` items of `ns` whose keys start with `prefix`, in key order.
    async fn scan(&self, ns: &str, prefix: &str, limit: usize) -> Result<Vec<(String, Bytes)>>;
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
