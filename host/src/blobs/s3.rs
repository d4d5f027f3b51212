//! [`Blobs`] over one S3 bucket (default `levee-blobs`, created by `levee provision`).
//!
//! With an endpoint override (`AWS_ENDPOINT_URL`, i.e. LocalStack or moto) requests use path-style
//! addressing (`http://host:4566/bucket/key`), since `bucket.localhost` does not resolve
//! everywhere; against AWS the SDK's default virtual-hosted style is kept.

use async_trait::async_trait;
use aws_config::SdkConfig;
use aws_sdk_s3::Client;
use aws_sdk_s3::error::ProvideErrorMetadata as _;
use aws_sdk_s3::primitives::ByteStream;
use bytes::Bytes;

use crate::aws::errors::{ErrorContext, Resource};
use crate::blobs::Blobs;
use crate::{Error, Result};

/// S3's longest object key, in bytes.
pub const MAX_KEY_LEN: usize = 1024;

/// Blob storage in one S3 bucket.
#[derive(Clone)]
pub struct S3Blobs {
    client: Client,
    ctx: ErrorContext,
    bucket: String,
}

impl std::fmt::Debug for S3Blobs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Blobs")
            .field("bucket", &self.bucket)
            .finish_non_exhaustive()
    }
}

impl S3Blobs {
    /// Blobs in `bucket` (which `levee provision` creates).
    pub fn new(sdk: &SdkConfig, bucket: impl Into<String>) -> Self {
        let conf = aws_sdk_s3::config::Builder::from(sdk)
            .force_path_style(sdk.endpoint_url().is_some())
            .build();
        Self {
            client: Client::from_conf(conf),
            ctx: ErrorContext::new("s3", sdk),
            bucket: bucket.into(),
        }
    }

    /// The bucket name.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// The S3 client, for provisioning.
    pub fn client(&self) -> &Client {
        &self.client
    }
}

fn check_key(key: &str) -> Result<()> {
    if key.is_empty() || key.len() > MAX_KEY_LEN {
        return Err(Error::Invalid(format!(
            "blob key must be 1 to {MAX_KEY_LEN} bytes, got {}",
            key.len()
        )));
    }
    Ok(())
}

#[async_trait]
impl Blobs for S3Blobs {
    async fn put(&self, key: &str, data: Bytes) -> Result<()> {
        check_key(key)?;
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .body(ByteStream::from(data))
            .send()
            .await
            .map_err(|e| self.ctx.map("PutObject", Resource::Bucket(&self.bucket), e))?;
        Ok(())
    }

    async fn get(&self, key: &str) -> Result<Option<Bytes>> {
        check_key(key)?;
        let out = match self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(out) => out,
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => return Ok(None),
            Err(e) => return Err(self.ctx.map("GetObject", Resource::Bucket(&self.bucket), e)),
        };
        let data = out.body.collect().await.map_err(|e| Error::Unavailable {
            service: "s3".into(),
            message: format!(
                "GetObject `{key}` from bucket `{}`: reading the body failed: {e}",
                self.bucket
            ),
        })?;
        Ok(Some(data.into_bytes()))
    }

    /// A ranged `GetObject` (`bytes=0-{n-1}`): the total size comes from `Content-Range`, so only
    /// the first `n` bytes travel.
    async fn head(&self, key: &str, n: usize) -> Result<Option<(u64, Bytes)>> {
        check_key(key)?;
        if n == 0 {
            // A range cannot be empty: ask for the size alone.
            return match self
                .client
                .head_object()
                .bucket(&self.bucket)
                .key(key)
                .send()
                .await
            {
                Ok(out) => Ok(Some((
                    out.content_length().unwrap_or(0).max(0) as u64,
                    Bytes::new(),
                ))),
                Err(e) if e.as_service_error().is_some_and(|s| s.is_not_found()) => Ok(None),
                Err(e) => Err(self
                    .ctx
                    .map("HeadObject", Resource::Bucket(&self.bucket), e)),
            };
        }
        let out = match self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .range(format!("bytes=0-{}", n - 1))
            .send()
            .await
        {
            Ok(out) => out,
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => return Ok(None),
            // An empty object has no byte 0 to start a range at.
            Err(e) if e.code() == Some("InvalidRange") => return Ok(Some((0, Bytes::new()))),
            Err(e) => return Err(self.ctx.map("GetObject", Resource::Bucket(&self.bucket), e)),
        };
        // `bytes 0-255/1048576`; a store that ignored the range sends everything instead.
        let total = out
            .content_range()
            .and_then(|r| r.rsplit_once('/'))
            .and_then(|(_, total)| total.parse::<u64>().ok());
        let length = out.content_length().unwrap_or(0).max(0) as u64;
        let data = out.body.collect().await.map_err(|e| Error::Unavailable {
            service: "s3".into(),
            message: format!(
                "GetObject `{key}` (range) from bucket `{}`: reading the body failed: {e}",
                self.bucket
            ),
        })?;
        let data = data.into_bytes();
        let size = total.unwrap_or(length.max(data.len() as u64));
        Ok(Some((size, data.slice(..n.min(data.len())))))
    }

    async fn delete(&self, key: &str) -> Result<()> {
        check_key(key)?;
        // S3 answers a delete of a missing key with success, which is the trait's contract.
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| {
                self.ctx
                    .map("DeleteObject", Resource::Bucket(&self.bucket), e)
            })?;
        Ok(())
    }
}
