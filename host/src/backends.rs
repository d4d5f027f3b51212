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
    /// Whether queues are created by the platform (embedded) or by `levee provision` (aws).
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
                creates_queues: false,
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
    s
}
