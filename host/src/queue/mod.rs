//! Durable queues with SQS semantics: the [`Queue`] trait every backend implements.
//!
//! Semantics (shared by the embedded SQLite queue and SQS, checked by one contract suite):
//! a received message is leased for a visibility timeout; it becomes visible again unless
//! deleted; every receive increments its receive count; a message received more than the
//! queue's `max_receive` times is moved to the queue's dead-letter queue instead of being
//! delivered again. Receives return at most 10 messages and may long-poll up to `wait`.

use std::time::Duration;

use async_trait::async_trait;

use crate::Result;
use crate::store::{CommitOutcome, KvCommit};

pub mod dead;
pub mod ledger;
pub mod offload;
pub mod sqs;
mod sqs_batch;

pub use dead::{DeadLetterSummary, DlqPage, MAX_DLQ_PAGE, MAX_HISTORY, PREVIEW_BYTES, PastDeath};
pub use sqs_batch::BatchCounts;

/// Most messages one receive or send call handles (SQS's batch limit).
pub const MAX_BATCH: usize = 10;

/// Most dead letters one [`Queue::dlq_list`] returns, whatever `max` asks for.
pub const MAX_DLQ_LIST: usize = 10;

/// Longest long poll, as in SQS.
pub const MAX_WAIT: Duration = Duration::from_secs(20);

/// A queue to create: its name and how many receives a message gets before it is dead-lettered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueSpec {
    pub name: String,
    pub max_receive: u32,
}

/// A message to enqueue.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OutgoingMessage {
    /// A stable id (emitted messages take one derived from their source, see [`emitted_id`]);
    /// `None` lets the backend draw one.
    pub id: Option<String>,
    pub body: Vec<u8>,
    pub attributes: Vec<(String, String)>,
    /// Delivery delay (at most 15 minutes, as in SQS).
    pub delay: Duration,
}

impl OutgoingMessage {
    /// A message with this body, no attributes and no delay.
    pub fn new(body: impl Into<Vec<u8>>) -> Self {
        Self {
            body: body.into(),
            ..Self::default()
        }
    }
}

/// A message leased to a consumer by [`Queue::receive`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedMessage {
    pub id: String,
    /// Handle for this lease; use it to delete, retry or extend. Invalid once the lease expires
    /// and the message is received again.
    pub receipt: String,
    pub body: Vec<u8>,
    pub attributes: Vec<(String, String)>,
    /// 1 on first delivery.
    pub receive_count: u32,
    /// When the message was first sent, in ms since the Unix epoch.
    pub sent_at_ms: u64,
    /// The reason given by the last [`Queue::retry_later`], where the backend keeps it.
    pub last_error: Option<String>,
}

/// How to receive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReceiveOptions {
    /// 1 to [`MAX_BATCH`].
    pub max_messages: usize,
    /// How long received messages stay invisible to other consumers.
    pub visibility: Duration,
    /// Long-poll duration when the queue is empty (0 returns at once), at most [`MAX_WAIT`].
    pub wait: Duration,
}

/// A point-in-time view of one queue, for `levee status` and the scaler.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct QueueStats {
    /// Messages ready to be received.
    pub visible: u64,
    /// Messages leased to a consumer.
    pub in_flight: u64,
    /// Messages waiting for their delay or backoff to end.
    pub delayed: u64,
    /// Messages in the dead-letter queue.
    pub dlq: u64,
    /// Age of the oldest message not yet deleted, in ms.
    pub oldest_age_ms: Option<u64>,
    /// Messages completed successfully (a running total).
    pub processed: u64,
    /// Messages moved to the dead-letter queue (a running total).
    pub failed: u64,
    /// Attempts that failed and were scheduled for another try (a running total).
    pub retried: u64,
}

/// A message in a dead-letter queue, with why it got there.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DeadLetter {
    pub id: String,
    pub body: Vec<u8>,
    pub attributes: Vec<(String, String)>,
    pub reason: String,
    pub receive_count: u32,
    /// When it was dead-lettered, in ms since the Unix epoch.
    pub dead_at_ms: u64,
    /// Its earlier deaths, oldest first, each ended by a redrive (at most [`MAX_HISTORY`]).
    pub history: Vec<PastDeath>,
}

/// The stable id of the `index`th message emitted by the invocation of message `source`: the same
/// on every run, so a re-sent emit is recognised downstream by its completion record.
pub fn emitted_id(source: &str, index: usize) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::new()
        .chain_update(source.as_bytes())
        .chain_update(b":")
        .chain_update(index.to_le_bytes())
        .finalize();
    hex::encode(&digest[..16])
}

/// How a handler's successful invocation settles its message.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Completion {
    /// The source message's id (keys its completion record); `None` for a plain completion.
    pub id: Option<String>,
    /// Messages to send, each with its stable id.
    pub emitted: Vec<Emitted>,
    /// The invocation's kv reads and writes, committed with the settlement.
    pub kv: Option<KvCommit>,
}

/// A message a handler emitted, sent when its source message completes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Emitted {
    /// The target function's queue.
    pub queue: String,
    pub message: OutgoingMessage,
}

/// A durable queue service holding many named queues, each with its dead-letter queue.
#[async_trait]
pub trait Queue: Send + Sync + 'static {
    /// Creates the queue and its dead-letter queue if missing; updates `max_receive`. Idempotent.
    async fn ensure(&self, spec: &QueueSpec) -> Result<()>;

    /// Durably enqueues up to [`MAX_BATCH`] messages; returns their ids once persisted.
    async fn send(&self, queue: &str, messages: Vec<OutgoingMessage>) -> Result<Vec<String>>;

    /// Leases up to `max_messages` visible messages, long-polling up to `wait`.
    async fn receive(&self, queue: &str, opts: ReceiveOptions) -> Result<Vec<ReceivedMessage>>;

    /// Outbox completion without kv: sends every emitted message, and only then deletes the
    /// source message. Counts the message as processed.
    async fn complete(&self, queue: &str, receipt: &str, emitted: Vec<Emitted>) -> Result<()> {
        let completion = Completion {
            emitted,
            ..Completion::default()
        };
        self.commit(queue, receipt, completion).await.map(|_| ())
    }

    /// Commits an invocation: its kv writes (version-checked), its emitted messages and the
    /// deletion of the source, counting the message as processed. On the embedded backend that
    /// is one transaction; a queue that cannot commit kv with its messages refuses `kv` (the AWS
    /// backends put a ledger in front). A stale receipt fails with [`Error::StaleReceipt`]
    /// (crate::Error::StaleReceipt) and does nothing; a conflict applies nothing and keeps the
    /// lease.
    async fn commit(
        &self,
        queue: &str,
        receipt: &str,
        completion: Completion,
    ) -> Result<CommitOutcome>;

    /// Makes a leased message visible again after `delay` without using one of its attempts:
    /// the failure was not the message's (store down, instance pool full). Backends that cannot
    /// take a receive back (SQS) only change its visibility.
    async fn release(&self, queue: &str, receipt: &str, delay: Duration) -> Result<()>;

    /// Deletes messages by receipt without counting them as processed.
    async fn delete(&self, queue: &str, receipts: &[String]) -> Result<()>;

    /// Makes a leased message visible again after `delay`, recording why it failed.
    async fn retry_later(
        &self,
        queue: &str,
        receipt: &str,
        delay: Duration,
        reason: &str,
    ) -> Result<()>;

    /// Extends the lease of a message still being handled.
    async fn extend_lease(&self, queue: &str, receipt: &str, visibility: Duration) -> Result<()>;

    /// Moves a leased message to the dead-letter queue with the reason attached.
    async fn dead_letter(&self, queue: &str, message: &ReceivedMessage, reason: &str)
    -> Result<()>;

    /// Depths, age of the oldest message and running totals.
    async fn stats(&self, queue: &str) -> Result<QueueStats>;

    /// Up to `max` (at most [`MAX_DLQ_LIST`]) whole messages of the dead-letter queue, oldest
    /// first, without removing them. Whole bodies make this heavy (10 MiB each): clients page
    /// with [`dlq_page`](Self::dlq_page) and fetch one body with [`dlq_get`](Self::dlq_get).
    async fn dlq_list(&self, queue: &str, max: usize) -> Result<Vec<DeadLetter>>;

    /// One page of the dead-letter queue, oldest first, without removing anything: summaries
    /// (size, a [`PREVIEW_BYTES`] preview, reason, history), never whole bodies, so a page's
    /// memory is bounded whatever the bodies. `limit` is clamped to 1..=[`MAX_DLQ_PAGE`]; `after`
    /// is the `next` of the previous page (`None` for the first). A cursor is opaque and only
    /// meaningful to the backend that issued it; a malformed one is [`Error::Invalid`]
    /// (crate::Error::Invalid). See each backend for how exact its pages are (SQS cannot read a
    /// queue by position).
    async fn dlq_page(&self, queue: &str, after: Option<&str>, limit: usize) -> Result<DlqPage>;

    /// The whole dead letter with this id (as a page lists it), or `None` if the dead-letter
    /// queue holds none. Bodies are at most what a send accepts (the platform allows
    /// [`MAX_BODY_BYTES`](crate::platform::MAX_BODY_BYTES)).
    async fn dlq_get(&self, queue: &str, id: &str) -> Result<Option<DeadLetter>>;

    /// Moves every dead letter back to the queue; returns how many. Each keeps its id and body,
    /// and its death (receive count, reason, time) is appended to its history (the last
    /// [`MAX_HISTORY`] are kept), shown if it dies again. Its new life gets a fresh receive count,
    /// i.e. a whole new `max_receive` budget.
    async fn dlq_redrive(&self, queue: &str) -> Result<u64>;
}
