//! Chooses and opens the backends a manifest asks for: the embedded SQLite file with blobs on
//! disk, or SQS, DynamoDB and S3 from the standard AWS configuration.

use std::path::Path;
use std::sync::Arc;

use crate::Result;
use crate::aws::{AwsBackends, AwsSettings};
use crate::blobs::disk::DiskBlobs;
use crate::embedded::EmbeddedDb;
use crate::limits::DEFAULT_OFFLOAD_THRESHOLD;
use crate::manifest::{Backend, Manifest};
use crate::queue::Queue;
use crate::queue::offload::OffloadQueue;
use crate::store::Store;

/// The queue and store a platform runs on.
pub struct Backends {
    /// Large bodies are offloaded to blobs behind this queue on both backends.
    pub queue: Arc<dyn Queue>,
    /// The raw store (the platform puts the cache in front of it).
    pub store: Arc<dyn Store>,
    /// Blobs: deployed modules (and the queue's offloaded bodies).
    pub blobs: Arc<dyn crate::blobs::Blobs>,
    /// Whether the platform creates missing queues at start: always on the embedded backend, and
    /// on AWS unless a stack owns them ([`aws_managed`]).
    pub creates_queues: bool,
}

/// Name of the embedded database file inside the data directory.
pub const EMBEDDED_DB_FILE: &str = "levee.db";

/// Opens the backends for `manifest` (the data directory holds the embedded database).
/// `sdk` overrides the standard AWS configuration (tests point it at an emulator).
pub async fn open(
    manifest: &Manifest,
    data_dir: &Path,
    sdk: Option<&aws_config::SdkConfig>,
) -> Result<Backends> {
    match manifest.platform.backend {
        Backend::Embedded => {
            let db = EmbeddedDb::open(data_dir.join(EMBEDDED_DB_FILE))?;
            let threshold = manifest
                .platform
                .offload_threshold
                .unwrap_or(DEFAULT_OFFLOAD_THRESHOLD);
            let queue = OffloadQueue::new(db.queue(), DiskBlobs::new(data_dir))
                .with_threshold(threshold)?;
            Ok(Backends {
                queue: Arc::new(queue),
                store: Arc::new(db.store()),
                blobs: Arc::new(DiskBlobs::new(data_dir)),
                creates_queues: true,
            })
        }
        Backend::Aws => {
            let settings = aws_settings(&manifest.aws);
            let b = match sdk {
                Some(sdk) => AwsBackends::new(sdk, &settings)?,
                None => AwsBackends::from_env(&settings).await?,
            };
            Ok(Backends {
                queue: Arc::new(b.queue),
                store: Arc::new(b.store),
                blobs: Arc::new(b.blobs),
                creates_queues: !aws_managed(),
            })
        }
    }
}

/// The manifest's `[aws]` settings with the environment's overrides applied (the ECS task
/// definition in `infra/` passes resource names this way).
pub fn aws_settings(base: &AwsSettings) -> AwsSettings {
    let mut s = base.clone();
    if let Ok(v) = std::env::var("LEVEE_AWS_QUEUE_PREFIX") {
        s.queue_prefix = v;
    }
    if let Ok(v) = std::env::var("LEVEE_AWS_TABLE") {
        s.table = v;
    }
    if let Ok(v) = std::env::var("LEVEE_AWS_BUCKET") {
        s.bucket = v;
    }
    // The rendered stack names its cluster and services; these keep the scaler and the hosts
    // on the same names whatever the baked manifest says.
    if let Ok(v) = std::env::var("LEVEE_AWS_ECS_CLUSTER") {
        s.ecs.get_or_insert_with(Default::default).cluster = v;
    }
    if let Ok(v) = std::env::var("LEVEE_AWS_ECS_SERVICE_PATTERN") {
        s.ecs.get_or_insert_with(Default::default).service_pattern = v;
    }
    s
}

/// Whether the AWS resources belong to a CloudFormation stack (`LEVEE_AWS_MANAGED`, set by the
/// rendered task definitions): hosts then never create or alter queues, which their roles could
/// not do anyway.
pub fn aws_managed() -> bool {
    std::env::var("LEVEE_AWS_MANAGED").is_ok_and(|v| !v.is_empty())
}
