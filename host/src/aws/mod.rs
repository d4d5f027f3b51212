//! The AWS backends assembled: [`AwsBackends`] (SQS with large payloads offloaded to S3, DynamoDB,
//! S3) built from one SDK configuration, and [`load_sdk_config`], which loads that configuration
//! from the standard AWS sources only. The settings live in `settings` (re-exported here), the
//! mapping of SDK errors to [`Error`] in `errors`; the modules this one assembles import those two
//! directly, never this one, so the assembly is the only thing that depends on all of them.
//!
//! Configuration comes from `aws_config::defaults` and nothing else: `AWS_ENDPOINT_URL` (or
//! `AWS_ENDPOINT_URL_SQS` …) to point at LocalStack or moto, `AWS_REGION`, `AWS_PROFILE`, the
//! credentials chain, `AWS_MAX_ATTEMPTS` / `AWS_RETRY_MODE` for the SDK's own retries. Throttling,
//! 5xx answers, timeouts and connection failures are retried by the SDK's standard retry policy
//! (exponential backoff with jitter, a retry quota); what still fails surfaces as the retryable
//! [`Error::Unavailable`], so a consumer loop backs off and goes on.

pub(crate) mod errors;
pub(crate) mod settings;

use aws_config::{BehaviorVersion, SdkConfig};

pub use settings::{AwsSettings, DEFAULT_BUCKET, DEFAULT_QUEUE_PREFIX, DEFAULT_TABLE};
// Backend-neutral sizes, re-exported so `levee::aws::DEFAULT_OFFLOAD_THRESHOLD` and the rest go on
// resolving.
pub use crate::limits::{DEFAULT_OFFLOAD_THRESHOLD, MIN_OFFLOAD_THRESHOLD, SQS_MAX_MESSAGE_BYTES};

use crate::{Error, Result};

/// Loads the SDK configuration from the standard AWS sources (environment, profiles, credentials
/// chain). Fails with a hint when no region is configured, since every call would fail later.
pub async fn load_sdk_config() -> Result<SdkConfig> {
    let config = aws_config::defaults(BehaviorVersion::latest()).load().await;
    if config.region().is_none() {
        return Err(Error::Backend {
            service: "aws".into(),
            message:
                "no AWS region configured: set AWS_REGION (for example `us-east-1`) or a region \
                      in your AWS profile"
                    .into(),
        });
    }
    Ok(config)
}

/// The AWS backends of one platform, built from one SDK configuration and the settings: the
/// queue (SQS with large payloads offloaded to S3), the key-value store and the blob store.
#[derive(Debug)]
pub struct AwsBackends {
    /// Large bodies go to S3 first; the ledger commits kv and completion records to DynamoDB
    /// before SQS sends the emits and deletes the source.
    pub queue: crate::queue::offload::OffloadQueue<
        crate::queue::ledger::LedgerQueue<crate::queue::sqs::SqsQueue>,
        crate::blobs::s3::S3Blobs,
    >,
    pub store: crate::store::dynamo::DynamoStore,
    pub blobs: crate::blobs::s3::S3Blobs,
}

impl AwsBackends {
    /// Builds the clients (no network call: errors show on first use or in `levee provision`).
    pub fn new(sdk: &SdkConfig, settings: &AwsSettings) -> Result<Self> {
        settings.validate()?;
        let blobs = crate::blobs::s3::S3Blobs::new(sdk, settings.bucket.clone());
        let store = crate::store::dynamo::DynamoStore::new(sdk, settings.table.clone());
        let ledger = crate::queue::ledger::LedgerQueue::new(
            crate::queue::sqs::SqsQueue::new(sdk, settings.queue_prefix.clone()),
            std::sync::Arc::new(store.clone()),
            std::sync::Arc::new(blobs.clone()),
        );
        let queue = crate::queue::offload::OffloadQueue::new(ledger, blobs.clone())
            .with_threshold(settings.offload_threshold)?;
        Ok(Self {
            queue,
            store,
            blobs,
        })
    }

    /// Loads the standard AWS configuration ([`load_sdk_config`]) and builds the backends.
    pub async fn from_env(settings: &AwsSettings) -> Result<Self> {
        Self::new(&load_sdk_config().await?, settings)
    }
}
