//! Levee host: runs WebAssembly capability functions fed by durable queues, with an embedded
//! SQLite backend by default and SQS/DynamoDB/S3 in the cloud.

pub mod alerts;
pub mod aws;
pub mod backends;
pub mod blobs;
pub mod cli;
pub mod client;
pub mod drill;
pub mod embedded;
mod error;
mod ids;
pub mod infra;
pub mod ingress;
mod limits;
pub mod manifest;
pub mod outbound;
pub mod platform;
pub mod provision;
pub mod queue;
pub mod releases;
pub mod runtime;
pub mod scaffold;
pub mod scaling;
pub mod secrets;
pub mod store;
pub mod telemetry;
pub mod tls;
pub mod worker;

pub use aws::{AwsBackends, AwsSettings};
pub use blobs::Blobs;
pub use blobs::{disk::DiskBlobs, s3::S3Blobs};
pub use embedded::{EmbeddedDb, EmbeddedQueue, EmbeddedStore};
pub use error::{Error, Result};
/// The global allocator of the `levee` binary (and of the benches, so they measure what it runs):
/// mimalloc. The message path allocates small, short-lived objects on every tokio worker (SDK
/// requests, futures, completions); glibc's malloc spent 15% of a consumer's CPU on them
/// (`malloc_consolidate`, `unlink_chunk`), see BENCHMARKS.md.
pub use mimalloc::MiMalloc as Allocator;
pub use provision::{ProvisionReport, provision};
pub use queue::{
    DeadLetter, DeadLetterSummary, DlqPage, Emitted, MAX_DLQ_PAGE, OutgoingMessage, PREVIEW_BYTES,
    PastDeath, Queue, QueueSpec, QueueStats, ReceiveOptions, ReceivedMessage,
};
pub use queue::{offload::OffloadQueue, sqs::SqsQueue};
pub use store::dynamo::DynamoStore;
pub use store::{CacheConfig, CacheMetrics, CachedStore, MemoryStore, PutOptions, Store};
