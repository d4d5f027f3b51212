//! Blob storage for compiled modules and large payloads: the [`Blobs`] trait.

use async_trait::async_trait;
use bytes::Bytes;

use crate::Result;

pub mod disk;
pub mod s3;

/// A flat key → bytes object store (files under the data directory, or S3).
#[async_trait]
pub trait Blobs: Send + Sync + 'static {
    /// Stores `data` under `key`, replacing what was there.
    async fn put(&self, key: &str, data: Bytes) -> Result<()>;
    /// The bytes under `key`, if any.
    async fn get(&self, key: &str) -> Result<Option<Bytes>>;
    /// Removes `key`; removing a missing key is not an error.
    async fn delete(&self, key: &str) -> Result<()>;

    /// The size of the blob under `key` and its first `n` bytes (all of it if shorter), if any.
    /// Stores that can read a prefix override this so a large blob is not read for a preview;
    /// this default reads it whole.
    async fn head(&self, key: &str, n: usize) -> Result<Option<(u64, Bytes)>> {
        Ok(self
            .get(key)
            .await?
            .map(|b| (b.len() as u64, b.slice(..n.min(b.len())))))
    }
}
