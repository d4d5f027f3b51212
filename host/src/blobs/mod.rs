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
}
