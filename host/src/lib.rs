//! Levee host: runs WebAssembly capability functions fed by durable queues, with an embedded
//! SQLite backend by default and SQS/DynamoDB/S3 in the cloud.

mod error;
pub mod blobs;
pub mod embedded;
pub mod queue;
pub mod store;

pub use error::{Error, Result};
pub use blobs::Blobs;
pub use embedded::{EmbeddedDb, EmbeddedQueue, EmbeddedStore};
pub use queue::{
    DeadLetter, Emitted, OutgoingMessage, Queue, QueueSpec, QueueStats, ReceiveOptions,
    ReceivedMessage,
};
pub use store::{PutOptions, Store};
