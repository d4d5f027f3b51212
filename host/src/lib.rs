//! Levee host: runs WebAssembly capability functions fed by durable queues, with an embedded
//! SQLite backend by default and SQS/DynamoDB/S3 in the cloud.

mod error;
pub mod backends;
pub mod blobs;
pub mod cli;
pub mod embedded;
pub mod client;
pub mod manifest;
pub mod platform;
pub mod ingress;
pub mod queue;
pub mod runtime;
pub mod store;
pub mod worker;

pub use error::{Error, Result};
pub use blobs::Blobs;
pub use embedded::{EmbeddedDb, EmbeddedQueue, EmbeddedStore};
pub use queue::{
    DeadLetter, Emitted, OutgoingMessage, Queue, QueueSpec, QueueStats, ReceiveOptions,
    ReceivedMessage,
};
pub use store::{CacheConfig, CacheMetrics, CachedStore, MemoryStore, PutOptions, Store};
