//! Levee host: runs WebAssembly capability functions fed by durable queues, with an embedded
//! SQLite backend by default and SQS/DynamoDB/S3 in the cloud.

mod error;
pub mod aws;
pub mod blobs;
pub mod queue;
pub mod store;
pub mod provision;

pub use error::{Error, Result};
pub use blobs::Blobs;
pub use queue::{
    DeadLetter, Emitted, OutgoingMessage, Queue, QueueSpec, QueueStats, ReceiveOptions,
    ReceivedMessage,
};
pub use store::{PutOptions, Store};
pub use aws::{AwsBackends, AwsSettings};
pub use blobs::{disk::DiskBlobs, s3::S3Blobs};
pub use provision::{ProvisionReport, provision};
pub use queue::{offload::OffloadQueue, sqs::SqsQueue};
pub use store::dynamo::DynamoStore;
