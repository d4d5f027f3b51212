//! [`Queue`] over Amazon SQS (or LocalStack / moto through `AWS_ENDPOINT_URL`).
//!
//! Each Levee queue `f` is the SQS queue `{prefix}f` with the dead-letter queue `{prefix}f-dlq`;
//! [`SqsQueue::ensure`] sets the source queue's `RedrivePolicy` (`maxReceiveCount = max_receive`),
//! so SQS itself moves a message received too often to the DLQ. Mapping of the trait:
//!
//! - bodies are bytes, SQS bodies are XML-safe text: a body that is valid SQS text goes as is,
//!   anything else is base64 with the attribute `levee-encoding=base64` (an empty body is sent as
//!   `-` with `levee-encoding=empty`, SQS refuses empty bodies). Attributes are SQS `String`
//!   message attributes, returned sorted by name; an empty value travels as type `String.empty`.
//!   SQS allows 10 attributes per message and Levee reserves 5 names, of which at most 4 are on
//!   one message (a dead letter carries encoding, reason, meta and history; a live message
//!   encoding, id and history), so a message carries at most [`MAX_ATTRIBUTES`].
//! - delays, visibility timeouts and long polls are whole seconds in SQS: sub-second durations
//!   round up. On AWS a receive with `wait = 0` is a short poll that samples a subset of servers
//!   and may come back empty while messages exist; workers should long-poll.
//! - `retry_later`, `extend_lease` and `release` change the message's visibility; SQS keeps no
//!   failure reason, so [`ReceivedMessage::last_error`] is always `None` here.
//! - `dead_letter` sends a copy carrying `levee-dead-reason` (and `levee-dead-meta`: receive count
//!   and time) to the DLQ, then deletes the original. Messages SQS moved by the redrive policy have
//!   no reason attribute; [`Queue::dlq_list`] reports them as exceeding the receive limit, with
//!   their send time as the time of death.
//! - `dlq_list` (at most [`MAX_DLQ_LIST`](crate::queue::MAX_DLQ_LIST)) receives DLQ messages with a
//!   30 s visibility, then makes them visible again at once (`ChangeMessageVisibility` to 0);
//!   reading a DLQ therefore increments its messages' approximate receive count and briefly hides
//!   them from other DLQ readers (a redrive running meanwhile skips what a listing holds).
//! - `dlq_page`: an SQS queue cannot be read by position, so a page is computed from one *pass*:
//!   at most [`PASS_RECEIVES`] receives of 10 (so at most 10 × `PASS_RECEIVES` distinct letters)
//!   with a 30 s visibility, stopping early when the DLQ comes back empty, then every letter is
//!   made visible again. Letters are ordered by (time of death, id); the page is the first `limit`
//!   of those the pass saw that come after the cursor, and the cursor (`s1:{dead_at_ms}:{id}`) is
//!   the key of the page's last letter. Only one summary per page slot is kept while receiving,
//!   so memory is `limit` summaries plus one receive batch. Pages never repeat a letter and a
//!   letter dead-lettered meanwhile (dying later) shows on a later page; they are exact while the
//!   DLQ holds at most 10 × `PASS_RECEIVES` letters and nobody else reads it. A bigger DLQ, or a
//!   concurrent reader hiding letters, can make a pass miss letters, which are then skipped. `next`
//!   is `None` when the pass saw nothing beyond the page and came back empty before its budget.
//! - `dlq_get` scans the DLQ the same way, at most [`GET_RECEIVES`] receives, stopping at the
//!   first letter with that id; a letter beyond the scan is reported as `None`.
//! - `dlq_redrive` receives DLQ messages, sends copies (without the dead-letter attributes, with
//!   the letter's id as `levee-id` and its death appended to `levee-history`) to the source
//!   queue, then deletes them from the DLQ; only messages dead-lettered before the redrive
//!   started are moved, so one that fails again at once is not cycled forever. `receive` strips
//!   `levee-history` like every reserved attribute and remembers it by receipt (in memory, bounded
//!   like the receipts), so `dead_letter` carries it to the next dead letter; a message SQS moves by
//!   the redrive policy keeps its attributes, history included.
//! - `stats` reads `ApproximateNumberOfMessages{,NotVisible,Delayed}` of the queue and the DLQ;
//!   SQS's counts are approximate and `oldest_age_ms` is `None` (SQS publishes that only as a
//!   CloudWatch metric). `processed`, `failed` and `retried` are counted in this process's memory
//!   only: they start at 0 on every start and do not include other hosts' work.
//! - `complete` sends the emitted messages (`SendMessageBatch`, grouped per target queue) and only
//!   after every send succeeded deletes the source message: delivery is at least once, a crash in
//!   between re-delivers the source and sends its emitted messages again.
//! - the deletes of `commit` and the visibility changes of concurrent callers on one queue are
//!   coalesced into `DeleteMessageBatch` / `ChangeMessageVisibilityBatch` calls of up to 10
//!   entries, each caller getting its own entry's outcome (see [`super::sqs_batch`]).
//!
//! The SDK retries throttling, 5xx answers and connection failures with backoff; batch entries that
//! fail for a transient reason are retried here a few times. What still fails is a retryable
//! [`Error::Unavailable`].

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use aws_config::SdkConfig;
use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::{
    ChangeMessageVisibilityBatchRequestEntry, DeleteMessageBatchRequestEntry, Message,
    MessageAttributeValue, MessageSystemAttributeName, QueueAttributeName,
    SendMessageBatchRequestEntry,
};
use base64::Engine as _;

use super::sqs_batch::{BatchCounts, Batcher, Kind, is_stale_receipt};
use crate::aws::errors::{ErrorContext, Resource};
use crate::ids::now_ms;
use crate::limits::SQS_MAX_MESSAGE_BYTES;
use crate::provision::Outcome;
use crate::queue::{
    Completion, DeadLetter, DeadLetterSummary, DlqPage, MAX_BATCH, MAX_DLQ_LIST, MAX_WAIT,
    OutgoingMessage, PREVIEW_BYTES, PastDeath, Queue, QueueSpec, QueueStats, ReceiveOptions,
    ReceivedMessage, dead,
};
use crate::store::CommitOutcome;
use crate::{Error, Result};

/// Marks how the SQS body encodes the message bytes (`base64` or `empty`); absent means UTF-8 as is.
pub const ATTR_ENCODING: &str = "levee-encoding";
/// Why a message was dead-lettered by [`Queue::dead_letter`].
pub const ATTR_DEAD_REASON: &str = "levee-dead-reason";
/// `{receive_count},{dead_at_ms}` of a message dead-lettered by [`Queue::dead_letter`].
pub const ATTR_DEAD_META: &str = "levee-dead-meta";
/// The stable id of a message sent with one (emitted messages): delivered as its id instead of
/// the SQS message id, so a re-sent emit is known downstream.
pub const ATTR_ID: &str = "levee-id";
/// JSON list of the past deaths of a redriven message (see [`crate::queue::PastDeath`]).
pub const ATTR_HISTORY: &str = "levee-history";
/// Attributes a message may carry: SQS's 10 minus the 4 Levee puts on one message at most.
pub const MAX_ATTRIBUTES: usize = 6;
/// Receives of 10 one `dlq_page` pass makes at most.
pub const PASS_RECEIVES: usize = 20;
/// Receives of 10 one `dlq_get` scan makes at most.
pub const GET_RECEIVES: usize = 30;
/// Longest delay SQS accepts.
pub const MAX_DELAY: Duration = Duration::from_secs(15 * 60);
/// Longest visibility timeout SQS accepts.
pub const MAX_VISIBILITY: Duration = Duration::from_secs(12 * 60 * 60);
/// Longest queue name SQS accepts.
const MAX_QUEUE_NAME: usize = 80;
/// Retention of dead letters: SQS's maximum, 14 days.
const DLQ_RETENTION_SECS: &str = "1209600";
/// How long `dlq_list` hides the messages it reads before restoring them.
const LIST_VISIBILITY_SECS: i32 = 30;
/// How long `dlq_redrive` leases a batch while it copies it.
const REDRIVE_VISIBILITY_SECS: i32 = 60;
/// Attempts for batch entries that failed for a transient reason.
const ENTRY_ATTEMPTS: u32 = 4;
/// Data type of an attribute whose value is the empty string (SQS refuses empty values).
const EMPTY_TYPE: &str = "String.empty";
const RESERVED: [&str; 5] = [
    ATTR_ENCODING,
    ATTR_DEAD_REASON,
    ATTR_DEAD_META,
    ATTR_ID,
    ATTR_HISTORY,
];
/// Version tag of `dlq_page` cursors.
const CURSOR_TAG: &str = "s1:";

#[derive(Debug, Default, Clone, Copy)]
struct Totals {
    processed: u64,
    failed: u64,
    retried: u64,
}

/// A Levee queue service backed by SQS. Cheap to share behind an `Arc`; URLs are cached.
pub struct SqsQueue {
    client: Client,
    ctx: ErrorContext,
    prefix: String,
    urls: RwLock<HashMap<String, String>>,
    totals: Mutex<HashMap<String, Totals>>,
    leases: Mutex<Leases>,
    /// Coalesces commits' deletes and visibility changes into batch calls.
    batch: std::sync::Arc<Batcher>,
}

/// Receipts this process was handed, so an old receipt is refused as stale even where SQS (or an
/// emulator) would still accept it: a worker whose lease expired must not move a message that
/// another worker now holds. Bounded: past the cap it forgets and SQS's own checks remain.
#[derive(Default)]
struct Leases {
    message_of: HashMap<String, String>,
    latest: HashMap<String, String>,
    /// receipt → `levee-history` of a redriven message, for `dead_letter` to carry on.
    history: HashMap<String, String>,
}

const MAX_TRACKED_LEASES: usize = 100_000;

impl Leases {
    fn received(&mut self, id: &str, receipt: &str) {
        if self.message_of.len() >= MAX_TRACKED_LEASES {
            self.message_of.clear();
            self.latest.clear();
            self.history.clear();
        }
        if let Some(old) = self.latest.insert(id.to_string(), receipt.to_string()) {
            // Keep the old receipt known (as stale) so its use is refused.
            self.message_of.insert(old, id.to_string());
        }
        self.message_of.insert(receipt.to_string(), id.to_string());
    }

    fn is_stale(&self, receipt: &str) -> bool {
        self.message_of
            .get(receipt)
            .is_some_and(|id| self.latest.get(id).is_some_and(|r| r != receipt))
    }

    fn done(&mut self, receipt: &str) {
        self.history.remove(receipt);
        if let Some(id) = self.message_of.remove(receipt)
            && self.latest.get(&id).is_some_and(|r| r == receipt)
        {
            self.latest.remove(&id);
        }
    }
}

impl std::fmt::Debug for SqsQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqsQueue")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

/// A message as SQS carries it.
#[derive(Debug, Clone)]
struct Wire {
    body: String,
    attributes: HashMap<String, MessageAttributeValue>,
    delay_secs: i32,
    size: usize,
}

impl SqsQueue {
    /// An SQS queue service whose queue names start with `prefix` (e.g. `levee-`; tests use a
    /// unique prefix each so they can share one emulator).
    pub fn new(sdk: &SdkConfig, prefix: impl Into<String>) -> Self {
        let client = Client::new(sdk);
        let ctx = ErrorContext::new("sqs", sdk);
        Self {
            batch: Batcher::new(client.clone(), ctx.clone()),
            client,
            ctx,
            prefix: prefix.into(),
            urls: RwLock::new(HashMap::new()),
            totals: Mutex::new(HashMap::new()),
            leases: Mutex::new(Leases::default()),
        }
    }

    /// The SQS name of the queue of `function`.
    pub fn queue_name(&self, function: &str) -> String {
        format!("{}{function}", self.prefix)
    }

    /// The SQS name of the dead-letter queue of `function`.
    pub fn dlq_name(&self, function: &str) -> String {
        format!("{}{function}-dlq", self.prefix)
    }

    /// The SQS client, for callers that need an operation this type does not wrap.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Creates the queue and its DLQ if missing and (re)sets the redrive policy; reports for each
    /// whether it was created or already existed (used by `levee provision`).
    pub async fn ensure_queues(&self, spec: &QueueSpec) -> Result<(Outcome, Outcome)> {
        if !(1..=1000).contains(&spec.max_receive) {
            return Err(Error::Invalid(format!(
                "queue `{}`: max_receive must be 1 to 1000 (SQS maxReceiveCount), got {}",
                spec.name, spec.max_receive
            )));
        }
        let (name, dlq) = self.names(&spec.name)?;
        let dlq_attrs = HashMap::from([(
            QueueAttributeName::MessageRetentionPeriod,
            DLQ_RETENTION_SECS.to_string(),
        )]);
        let (dlq_url, dlq_outcome) = self.create_if_missing(&dlq, dlq_attrs).await?;
        let arn = self
            .queue_attributes(&dlq, &dlq_url, vec![QueueAttributeName::QueueArn])
            .await?
            .remove(&QueueAttributeName::QueueArn)
            .ok_or_else(|| {
                self.backend(format!(
                    "GetQueueAttributes on `{dlq}` returned no QueueArn"
                ))
            })?;
        let redrive = serde_json::json!({
            "deadLetterTargetArn": arn,
            "maxReceiveCount": spec.max_receive.to_string(),
        })
        .to_string();
        let attrs = HashMap::from([(QueueAttributeName::RedrivePolicy, redrive)]);
        let (url, outcome) = self.create_if_missing(&name, attrs.clone()).await?;
        if outcome == Outcome::Exists {
            self.client
                .set_queue_attributes()
                .queue_url(&url)
                .set_attributes(Some(attrs))
                .send()
                .await
                .map_err(|e| {
                    self.ctx
                        .map("SetQueueAttributes", Resource::Queue(&name), e)
                })?;
        }
        Ok((outcome, dlq_outcome))
    }

    fn names(&self, queue: &str) -> Result<(String, String)> {
        let name = self.queue_name(queue);
        let dlq = self.dlq_name(queue);
        if queue.is_empty()
            || dlq.len() > MAX_QUEUE_NAME
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(Error::Invalid(format!(
                "queue name `{queue}`: SQS names (`{name}`, `{dlq}`) must be 1 to {MAX_QUEUE_NAME} \
                 characters of A-Z, a-z, 0-9, `-` and `_`"
            )));
        }
        Ok((name, dlq))
    }

    async fn create_if_missing(
        &self,
        name: &str,
        attrs: HashMap<QueueAttributeName, String>,
    ) -> Result<(String, Outcome)> {
        match self.url(name).await {
            Ok(url) => return Ok((url, Outcome::Exists)),
            Err(Error::QueueNotFound(_)) => {}
            Err(e) => return Err(e),
        }
        let out = self
            .client
            .create_queue()
            .queue_name(name)
            .set_attributes(Some(attrs))
            .send()
            .await
            .map_err(|e| self.ctx.map("CreateQueue", Resource::Queue(name), e))?;
        let url = out
            .queue_url()
            .ok_or_else(|| self.backend(format!("CreateQueue `{name}` returned no queue URL")))?
            .to_string();
        self.urls
            .write()
            .expect("url cache poisoned")
            .insert(name.to_string(), url.clone());
        Ok((url, Outcome::Created))
    }

    /// The URL of the SQS queue `name` (physical name), from the cache or `GetQueueUrl`.
    async fn url(&self, name: &str) -> Result<String> {
        if let Some(url) = self.urls.read().expect("url cache poisoned").get(name) {
            return Ok(url.clone());
        }
        // Boxed: an SDK call's future is kilobytes, and every caller's future would carry (and
        // move) that much for a lookup that is almost always cached.
        Box::pin(self.fetch_url(name)).await
    }

    async fn fetch_url(&self, name: &str) -> Result<String> {
        let out = self
            .client
            .get_queue_url()
            .queue_name(name)
            .send()
            .await
            .map_err(|e| self.ctx.map("GetQueueUrl", Resource::Queue(name), e))?;
        let url = out
            .queue_url()
            .ok_or_else(|| self.backend(format!("GetQueueUrl `{name}` returned no URL")))?
            .to_string();
        self.urls
            .write()
            .expect("url cache poisoned")
            .insert(name.to_string(), url.clone());
        Ok(url)
    }

    /// Drops a cached URL when SQS says the queue is gone, so `levee provision` can bring it back.
    fn forget_if_gone(&self, name: &str, err: Error) -> Error {
        if matches!(err, Error::QueueNotFound(_)) {
            self.urls.write().expect("url cache poisoned").remove(name);
        }
        err
    }

    fn backend(&self, message: String) -> Error {
        Error::Backend {
            service: "sqs".into(),
            message,
        }
    }

    fn count(&self, queue: &str, f: impl FnOnce(&mut Totals)) {
        f(self
            .totals
            .lock()
            .expect("totals poisoned")
            .entry(queue.to_string())
            .or_default());
    }

    async fn queue_attributes(
        &self,
        name: &str,
        url: &str,
        names: Vec<QueueAttributeName>,
    ) -> Result<HashMap<QueueAttributeName, String>> {
        let out = self
            .client
            .get_queue_attributes()
            .queue_url(url)
            .set_attribute_names(Some(names))
            .send()
            .await
            .map_err(|e| {
                self.forget_if_gone(
                    name,
                    self.ctx.map("GetQueueAttributes", Resource::Queue(name), e),
                )
            })?;
        Ok(out.attributes().cloned().unwrap_or_default())
    }

    /// Sends wire messages in as few `SendMessageBatch` calls as SQS's count and size limits allow;
    /// returns the message ids in order.
    async fn send_wires(&self, name: &str, url: &str, wires: Vec<Wire>) -> Result<Vec<String>> {
        let mut ids = vec![String::new(); wires.len()];
        let mut chunk: Vec<(usize, Wire)> = Vec::new();
        let mut chunk_size = 0;
        for (i, wire) in wires.into_iter().enumerate() {
            if chunk.len() == MAX_BATCH || chunk_size + wire.size > SQS_MAX_MESSAGE_BYTES {
                self.send_chunk(name, url, std::mem::take(&mut chunk), &mut ids)
                    .await?;
                chunk_size = 0;
            }
            chunk_size += wire.size;
            chunk.push((i, wire));
        }
        if !chunk.is_empty() {
            self.send_chunk(name, url, chunk, &mut ids).await?;
        }
        Ok(ids)
    }

    async fn send_chunk(
        &self,
        name: &str,
        url: &str,
        chunk: Vec<(usize, Wire)>,
        ids: &mut [String],
    ) -> Result<()> {
        let mut pending: BTreeMap<usize, Wire> = chunk.into_iter().collect();
        for attempt in 0..ENTRY_ATTEMPTS {
            let entries = pending
                .iter()
                .map(|(i, w)| {
                    SendMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .message_body(&w.body)
                        .set_message_attributes(
                            (!w.attributes.is_empty()).then(|| w.attributes.clone()),
                        )
                        .set_delay_seconds((w.delay_secs > 0).then_some(w.delay_secs))
                        .build()
                        .map_err(|e| self.backend(format!("building SendMessageBatch entry: {e}")))
                })
                .collect::<Result<Vec<_>>>()?;
            let out = self
                .client
                .send_message_batch()
                .queue_url(url)
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(|e| {
                    self.forget_if_gone(
                        name,
                        self.ctx.map("SendMessageBatch", Resource::Queue(name), e),
                    )
                })?;
            for ok in out.successful() {
                if let Ok(i) = ok.id().parse::<usize>() {
                    ids[i] = ok.message_id().to_string();
                    pending.remove(&i);
                }
            }
            if let Some(bad) = out.failed().iter().find(|f| f.sender_fault()) {
                return Err(Error::Invalid(format!(
                    "SQS refused message {} of the batch to `{name}`: {}: {}",
                    bad.id(),
                    bad.code(),
                    bad.message().unwrap_or("")
                )));
            }
            if pending.is_empty() {
                return Ok(());
            }
            tokio::time::sleep(entry_backoff(attempt)).await;
        }
        Err(Error::Unavailable {
            service: "sqs".into(),
            message: format!(
                "SendMessageBatch to `{name}`: {} message(s) still failing after {ENTRY_ATTEMPTS} attempts",
                pending.len()
            ),
        })
    }

    /// Deletes by receipt in batches of 10; transient entry failures are retried, a receipt SQS
    /// rejects is reported as [`Error::StaleReceipt`] after the others were deleted.
    async fn delete_receipts(&self, name: &str, url: &str, receipts: &[String]) -> Result<()> {
        let mut stale = false;
        for chunk in receipts.chunks(MAX_BATCH) {
            let mut pending: BTreeMap<usize, &String> = chunk.iter().enumerate().collect();
            let mut attempt = 0;
            while !pending.is_empty() {
                let entries = pending
                    .iter()
                    .map(|(i, r)| {
                        DeleteMessageBatchRequestEntry::builder()
                            .id(i.to_string())
                            .receipt_handle(r.as_str())
                            .build()
                            .map_err(|e| {
                                self.backend(format!("building DeleteMessageBatch entry: {e}"))
                            })
                    })
                    .collect::<Result<Vec<_>>>()?;
                let out = self
                    .client
                    .delete_message_batch()
                    .queue_url(url)
                    .set_entries(Some(entries))
                    .send()
                    .await
                    .map_err(|e| {
                        self.forget_if_gone(
                            name,
                            self.ctx.map("DeleteMessageBatch", Resource::Queue(name), e),
                        )
                    })?;
                for ok in out.successful() {
                    if let Ok(i) = ok.id().parse::<usize>() {
                        pending.remove(&i);
                    }
                }
                for f in out.failed() {
                    if is_stale_receipt(f.code()) || f.sender_fault() {
                        stale |= is_stale_receipt(f.code());
                        if !is_stale_receipt(f.code()) {
                            return Err(self.backend(format!(
                                "DeleteMessageBatch on `{name}`: {}: {}",
                                f.code(),
                                f.message().unwrap_or("")
                            )));
                        }
                        if let Ok(i) = f.id().parse::<usize>() {
                            pending.remove(&i);
                        }
                    }
                }
                if pending.is_empty() {
                    break;
                }
                attempt += 1;
                if attempt >= ENTRY_ATTEMPTS {
                    return Err(Error::Unavailable {
                        service: "sqs".into(),
                        message: format!(
                            "DeleteMessageBatch on `{name}`: {} receipt(s) still failing after \
                             {ENTRY_ATTEMPTS} attempts",
                            pending.len()
                        ),
                    });
                }
                tokio::time::sleep(entry_backoff(attempt)).await;
            }
        }
        if stale {
            Err(Error::StaleReceipt)
        } else {
            Ok(())
        }
    }

    /// Refuses a receipt this process knows to be superseded by a newer receive.
    fn check_fresh(&self, receipt: &str) -> Result<()> {
        if self
            .leases
            .lock()
            .expect("leases poisoned")
            .is_stale(receipt)
        {
            return Err(Error::StaleReceipt);
        }
        Ok(())
    }

    /// Received messages of `queue` leave without a batched delete: the batcher stops waiting
    /// for them.
    async fn settled(&self, queue: &str, n: usize) {
        if let Ok((name, _)) = self.names(queue)
            && let Ok(url) = self.url(&name).await
        {
            self.batch.settled(&name, &url, n);
        }
    }

    /// `DeleteMessageBatch` and `ChangeMessageVisibilityBatch` calls made so far, with their
    /// entries.
    pub fn batch_counts(&self) -> BatchCounts {
        self.batch.counts()
    }

    /// Changes a message's visibility (in a `ChangeMessageVisibilityBatch` with concurrent ones).
    async fn change_visibility(&self, queue: &str, receipt: &str, secs: i32) -> Result<()> {
        let (name, _) = self.names(queue)?;
        self.check_fresh(receipt)?;
        let url = self.url(&name).await?;
        self.batch
            .submit(&name, &url, Kind::Visibility, receipt, secs)
            .await
            .map_err(|e| self.forget_if_gone(&name, e))
    }

    async fn receive_raw(
        &self,
        name: &str,
        url: &str,
        max: usize,
        visibility_secs: i32,
        wait_secs: i32,
    ) -> Result<Vec<Message>> {
        let out = self
            .client
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(max.clamp(1, MAX_BATCH) as i32)
            .visibility_timeout(visibility_secs)
            .wait_time_seconds(wait_secs)
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .message_system_attribute_names(MessageSystemAttributeName::SentTimestamp)
            .message_attribute_names("All")
            .send()
            .await
            .map_err(|e| {
                self.forget_if_gone(
                    name,
                    self.ctx.map("ReceiveMessage", Resource::Queue(name), e),
                )
            })?;
        Ok(out.messages.unwrap_or_default())
    }

    /// Makes leased messages visible again at once (best effort: a failure leaves them hidden only
    /// until their short visibility timeout ends).
    async fn restore(&self, url: &str, receipts: Vec<String>) {
        for chunk in receipts.chunks(MAX_BATCH) {
            let entries: Vec<_> = chunk
                .iter()
                .enumerate()
                .filter_map(|(i, r)| {
                    ChangeMessageVisibilityBatchRequestEntry::builder()
                        .id(i.to_string())
                        .receipt_handle(r)
                        .visibility_timeout(0)
                        .build()
                        .ok()
                })
                .collect();
            if let Err(e) = self
                .client
                .change_message_visibility_batch()
                .queue_url(url)
                .set_entries(Some(entries))
                .send()
                .await
            {
                tracing::warn!(error = %self.ctx.map("ChangeMessageVisibilityBatch", Resource::None, e),
                    "could not restore the visibility of listed dead letters");
            }
        }
    }
}

#[async_trait]
impl Queue for SqsQueue {
    async fn ensure(&self, spec: &QueueSpec) -> Result<()> {
        self.ensure_queues(spec).await.map(|_| ())
    }

    async fn send(&self, queue: &str, messages: Vec<OutgoingMessage>) -> Result<Vec<String>> {
        if messages.len() > MAX_BATCH {
            return Err(Error::Invalid(format!(
                "send takes at most {MAX_BATCH} messages, got {}",
                messages.len()
            )));
        }
        if messages.is_empty() {
            return Ok(Vec::new());
        }
        let (name, _) = self.names(queue)?;
        let wires = messages
            .iter()
            .map(|m| encode_message(queue, m))
            .collect::<Result<Vec<_>>>()?;
        let url = self.url(&name).await?;
        self.send_wires(&name, &url, wires).await
    }

    async fn receive(&self, queue: &str, opts: ReceiveOptions) -> Result<Vec<ReceivedMessage>> {
        if !(1..=MAX_BATCH).contains(&opts.max_messages) {
            return Err(Error::Invalid(format!(
                "receive max_messages must be 1 to {MAX_BATCH}, got {}",
                opts.max_messages
            )));
        }
        if opts.wait > MAX_WAIT {
            return Err(Error::Invalid(format!(
                "receive wait must be at most {MAX_WAIT:?}, got {:?}",
                opts.wait
            )));
        }
        if opts.visibility > MAX_VISIBILITY {
            return Err(Error::Invalid(format!(
                "visibility timeout must be at most {MAX_VISIBILITY:?} (SQS), got {:?}",
                opts.visibility
            )));
        }
        let (name, _) = self.names(queue)?;
        let url = self.url(&name).await?;
        let messages = self
            .receive_raw(
                &name,
                &url,
                opts.max_messages,
                ceil_secs(opts.visibility),
                ceil_secs(opts.wait),
            )
            .await?;
        let received: Vec<ReceivedMessage> = messages.iter().map(decode_received).collect();
        self.batch.expect(&url, received.len());
        let mut leases = self.leases.lock().expect("leases poisoned");
        // Keyed by the SQS id: two copies of one emit share a stable id but not a lease.
        for (raw, m) in messages.iter().zip(&received) {
            leases.received(raw.message_id().unwrap_or(&m.id), &m.receipt);
            if let Some(h) = attribute(raw, ATTR_HISTORY) {
                leases.history.insert(m.receipt.clone(), h.to_string());
            }
        }
        Ok(received)
    }

    /// Sends the emits, then deletes the source. It cannot commit kv: the AWS backends put a
    /// [`Ledger`](crate::queue::ledger::LedgerQueue) in front, which commits kv and the
    /// completion record to DynamoDB first.
    async fn commit(
        &self,
        queue: &str,
        receipt: &str,
        completion: Completion,
    ) -> Result<CommitOutcome> {
        if completion.kv.as_ref().is_some_and(|kv| !kv.is_empty()) {
            return Err(Error::Invalid(
                "the SQS queue cannot commit kv writes; wrap it in a LedgerQueue".into(),
            ));
        }
        let (name, _) = self.names(queue)?;
        self.check_fresh(receipt)?;
        // Group per target queue, keeping the emit order within each target.
        let mut groups: Vec<(String, Vec<Wire>)> = Vec::new();
        for e in &completion.emitted {
            let wire = encode_message(&e.queue, &e.message)?;
            match groups.iter_mut().find(|(q, _)| *q == e.queue) {
                Some((_, wires)) => wires.push(wire),
                None => groups.push((e.queue.clone(), vec![wire])),
            }
        }
        for (target, wires) in groups {
            let (target_name, _) = self.names(&target)?;
            let target_url = self.url(&target_name).await?;
            // Boxed, like `url`'s SDK call: most commits emit nothing.
            Box::pin(self.send_wires(&target_name, &target_url, wires)).await?;
        }
        let url = self.url(&name).await?;
        self.batch
            .submit(&name, &url, Kind::Delete, receipt, 0)
            .await
            .map_err(|e| self.forget_if_gone(&name, e))?;
        self.leases.lock().expect("leases poisoned").done(receipt);
        self.count(queue, |t| t.processed += 1);
        Ok(CommitOutcome::Committed {
            versions: Vec::new(),
        })
    }

    async fn release(&self, queue: &str, receipt: &str, delay: Duration) -> Result<()> {
        if delay > MAX_VISIBILITY {
            return Err(Error::Invalid(format!(
                "release delay must be at most {MAX_VISIBILITY:?} (SQS visibility limit), got {delay:?}"
            )));
        }
        // SQS cannot take a receive back: the receive count stays raised. The pool's pause
        // after an infrastructure failure is what keeps such messages from the redrive DLQ.
        self.settled(queue, 1).await;
        self.change_visibility(queue, receipt, ceil_secs(delay))
            .await
    }

    async fn delete(&self, queue: &str, receipts: &[String]) -> Result<()> {
        if receipts.is_empty() {
            return Ok(());
        }
        let (name, _) = self.names(queue)?;
        for r in receipts {
            self.check_fresh(r)?;
        }
        let url = self.url(&name).await?;
        self.batch.settled(&name, &url, receipts.len());
        self.delete_receipts(&name, &url, receipts).await?;
        let mut leases = self.leases.lock().expect("leases poisoned");
        receipts.iter().for_each(|r| leases.done(r));
        Ok(())
    }

    async fn retry_later(
        &self,
        queue: &str,
        receipt: &str,
        delay: Duration,
        _reason: &str,
    ) -> Result<()> {
        if delay > MAX_VISIBILITY {
            return Err(Error::Invalid(format!(
                "retry delay must be at most {MAX_VISIBILITY:?} (SQS visibility limit), got {delay:?}"
            )));
        }
        self.settled(queue, 1).await;
        self.change_visibility(queue, receipt, ceil_secs(delay))
            .await?;
        self.count(queue, |t| t.retried += 1);
        Ok(())
    }

    async fn extend_lease(&self, queue: &str, receipt: &str, visibility: Duration) -> Result<()> {
        if visibility > MAX_VISIBILITY {
            return Err(Error::Invalid(format!(
                "visibility timeout must be at most {MAX_VISIBILITY:?} (SQS), got {visibility:?}"
            )));
        }
        self.change_visibility(queue, receipt, ceil_secs(visibility))
            .await
    }

    async fn dead_letter(
        &self,
        queue: &str,
        message: &ReceivedMessage,
        reason: &str,
    ) -> Result<()> {
        let (name, dlq) = self.names(queue)?;
        self.settled(queue, 1).await;
        // A stale holder must not copy a message another consumer now holds into the DLQ.
        self.check_fresh(&message.receipt)?;
        let reason: String = reason
            .chars()
            .filter(|c| is_sqs_char(*c))
            .take(4096)
            .collect();
        // The original id travels along: the DLQ copy gets a new SQS id, but users (and
        // `levee dlq list`) know the message by the id `send` returned.
        let meta = format!("{},{},{}", message.receive_count, now_ms(), message.id);
        let history = self
            .leases
            .lock()
            .expect("leases poisoned")
            .history
            .get(&message.receipt)
            .cloned();
        let mut extra = vec![
            (ATTR_DEAD_REASON, reason.as_str()),
            (ATTR_DEAD_META, meta.as_str()),
        ];
        if let Some(h) = &history {
            extra.push((ATTR_HISTORY, h.as_str()));
        }
        let wire = encode(
            queue,
            &message.body,
            &message.attributes,
            Duration::ZERO,
            &extra,
        )?;
        let dlq_url = self.url(&dlq).await?;
        self.send_wires(&dlq, &dlq_url, vec![wire]).await?;
        let url = self.url(&name).await?;
        self.delete_receipts(&name, &url, std::slice::from_ref(&message.receipt))
            .await?;
        self.leases
            .lock()
            .expect("leases poisoned")
            .done(&message.receipt);
        self.count(queue, |t| t.failed += 1);
        Ok(())
    }

    async fn stats(&self, queue: &str) -> Result<QueueStats> {
        let (name, dlq) = self.names(queue)?;
        // Both at once, but the queue's own error first: a missing queue is named as itself, not
        // as whichever lookup happened to fail first.
        let (url, dlq_url) = futures::join!(self.url(&name), self.url(&dlq));
        let (url, dlq_url) = (url?, dlq_url?);
        let (main, dead) = futures::try_join!(
            self.queue_attributes(
                &name,
                &url,
                vec![
                    QueueAttributeName::ApproximateNumberOfMessages,
                    QueueAttributeName::ApproximateNumberOfMessagesNotVisible,
                    QueueAttributeName::ApproximateNumberOfMessagesDelayed,
                ],
            ),
            self.queue_attributes(
                &dlq,
                &dlq_url,
                vec![
                    QueueAttributeName::ApproximateNumberOfMessages,
                    QueueAttributeName::ApproximateNumberOfMessagesNotVisible,
                ],
            ),
        )?;
        let n = |m: &HashMap<QueueAttributeName, String>, k: QueueAttributeName| {
            m.get(&k).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
        };
        let totals = self
            .totals
            .lock()
            .expect("totals poisoned")
            .get(queue)
            .copied()
            .unwrap_or_default();
        Ok(QueueStats {
            visible: n(&main, QueueAttributeName::ApproximateNumberOfMessages),
            in_flight: n(
                &main,
                QueueAttributeName::ApproximateNumberOfMessagesNotVisible,
            ),
            delayed: n(
                &main,
                QueueAttributeName::ApproximateNumberOfMessagesDelayed,
            ),
            dlq: n(&dead, QueueAttributeName::ApproximateNumberOfMessages)
                + n(
                    &dead,
                    QueueAttributeName::ApproximateNumberOfMessagesNotVisible,
                ),
            oldest_age_ms: None,
            processed: totals.processed,
            failed: totals.failed,
            retried: totals.retried,
        })
    }

    async fn dlq_list(&self, queue: &str, max: usize) -> Result<Vec<DeadLetter>> {
        let max = max.min(MAX_DLQ_LIST);
        let (_, dlq) = self.names(queue)?;
        let url = self.url(&dlq).await?;
        let mut letters: HashMap<String, DeadLetter> = HashMap::new();
        let mut receipts = Vec::new();
        let result = async {
            while letters.len() < max {
                let batch = self
                    .receive_raw(
                        &dlq,
                        &url,
                        (max - letters.len()).min(MAX_BATCH),
                        LIST_VISIBILITY_SECS,
                        1,
                    )
                    .await?;
                if batch.is_empty() {
                    break;
                }
                for m in &batch {
                    receipts.extend(m.receipt_handle().map(str::to_string));
                    let letter = decode_dead(m);
                    letters.entry(letter.id.clone()).or_insert(letter);
                }
            }
            Ok::<_, Error>(())
        }
        .await;
        self.restore(&url, receipts).await;
        result?;
        let mut letters: Vec<DeadLetter> = letters.into_values().collect();
        letters.sort_by(|a, b| {
            a.dead_at_ms
                .cmp(&b.dead_at_ms)
                .then_with(|| a.id.cmp(&b.id))
        });
        letters.truncate(max);
        Ok(letters)
    }

    /// One pass over the DLQ (see the module doc): the first `limit` letters after the cursor by
    /// (time of death, id).
    async fn dlq_page(&self, queue: &str, after: Option<&str>, limit: usize) -> Result<DlqPage> {
        let after = after.map(parse_cursor).transpose()?;
        let limit = dead::clamp_limit(limit);
        let (_, dlq) = self.names(queue)?;
        let url = self.url(&dlq).await?;
        // The `limit + 1` smallest keys seen: one more than the page tells whether there is more.
        let mut best: BTreeMap<(u64, String), DeadLetterSummary> = BTreeMap::new();
        let mut receipts = Vec::new();
        let mut exhausted = false;
        let result = async {
            for _ in 0..PASS_RECEIVES {
                let batch = self
                    .receive_raw(&dlq, &url, MAX_BATCH, LIST_VISIBILITY_SECS, 1)
                    .await?;
                if batch.is_empty() {
                    exhausted = true;
                    break;
                }
                for m in &batch {
                    receipts.extend(m.receipt_handle().map(str::to_string));
                    let letter = summarize(m);
                    let key = (letter.dead_at_ms, letter.id.clone());
                    if after.as_ref().is_some_and(|a| &key <= a) {
                        continue;
                    }
                    best.entry(key).or_insert(letter);
                    if best.len() > limit + 1 {
                        best.pop_last();
                    }
                }
            }
            Ok::<_, Error>(())
        }
        .await;
        self.restore(&url, receipts).await;
        result?;
        let more = best.len() > limit;
        let letters: Vec<DeadLetterSummary> = best.into_values().take(limit).collect();
        // A pass cut by its budget may have missed letters: offer another page after this one.
        let next = match letters.last() {
            Some(last) if more || !exhausted => Some(format_cursor(last.dead_at_ms, &last.id)),
            _ => None,
        };
        Ok(DlqPage { letters, next })
    }

    async fn dlq_get(&self, queue: &str, id: &str) -> Result<Option<DeadLetter>> {
        let (_, dlq) = self.names(queue)?;
        let url = self.url(&dlq).await?;
        let mut receipts = Vec::new();
        let result = async {
            for _ in 0..GET_RECEIVES {
                let batch = self
                    .receive_raw(&dlq, &url, MAX_BATCH, LIST_VISIBILITY_SECS, 1)
                    .await?;
                if batch.is_empty() {
                    break;
                }
                receipts.extend(
                    batch
                        .iter()
                        .filter_map(|m| m.receipt_handle().map(str::to_string)),
                );
                if let Some(m) = batch.iter().find(|m| dead_meta(m).id == id) {
                    return Ok(Some(decode_dead(m)));
                }
            }
            Ok::<_, Error>(None)
        }
        .await;
        self.restore(&url, receipts).await;
        result
    }

    async fn dlq_redrive(&self, queue: &str) -> Result<u64> {
        let (name, dlq) = self.names(queue)?;
        let (url, dlq_url) = futures::try_join!(self.url(&name), self.url(&dlq))?;
        let started_ms = now_ms();
        let mut moved = 0u64;
        loop {
            let batch = self
                .receive_raw(&dlq, &dlq_url, MAX_BATCH, REDRIVE_VISIBILITY_SECS, 1)
                .await?;
            let (old, new): (Vec<&Message>, Vec<&Message>) =
                batch.iter().partition(|m| sent_at_ms(m) < started_ms);
            if !new.is_empty() {
                self.restore(
                    &dlq_url,
                    new.iter()
                        .filter_map(|m| m.receipt_handle().map(str::to_string))
                        .collect(),
                )
                .await;
            }
            if old.is_empty() {
                break;
            }
            let wires = old
                .iter()
                .map(|m| {
                    let death = dead_meta(m);
                    let history = dead::encode_history(&dead::push_death(
                        death.history,
                        PastDeath {
                            receive_count: death.receive_count,
                            reason: death.reason,
                            dead_at_ms: death.dead_at_ms,
                        },
                    ));
                    let mut attributes = m.message_attributes().cloned().unwrap_or_default();
                    attributes.remove(ATTR_DEAD_REASON);
                    attributes.remove(ATTR_DEAD_META);
                    // The message keeps its id (and so its history) in its new life.
                    attributes.insert(ATTR_ID.into(), string_attribute(&death.id));
                    attributes.insert(ATTR_HISTORY.into(), string_attribute(&history));
                    let body = m.body().unwrap_or("-").to_string();
                    let size = wire_size(&body, &attributes);
                    Wire {
                        body,
                        attributes,
                        delay_secs: 0,
                        size,
                    }
                })
                .collect();
            self.send_wires(&name, &url, wires).await?;
            let receipts: Vec<String> = old
                .iter()
                .filter_map(|m| m.receipt_handle().map(str::to_string))
                .collect();
            self.delete_receipts(&dlq, &dlq_url, &receipts).await?;
            moved += old.len() as u64;
        }
        Ok(moved)
    }
}

fn entry_backoff(attempt: u32) -> Duration {
    Duration::from_millis(100 << attempt.min(5))
}

/// Whole seconds, rounding up (SQS takes seconds; a sub-second wait or delay still waits).
fn ceil_secs(d: Duration) -> i32 {
    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    secs.min(i32::MAX as u64) as i32
}

/// Characters SQS accepts in bodies and attribute values (XML 1.0 characters).
fn is_sqs_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
}

fn check_attribute_name(queue: &str, name: &str) -> Result<()> {
    let lower = name.to_ascii_lowercase();
    let ok = !name.is_empty()
        && name.len() <= 256
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && !name.starts_with('.')
        && !name.ends_with('.')
        && !name.contains("..")
        && !lower.starts_with("aws.")
        && !lower.starts_with("amazon.");
    if !ok {
        return Err(Error::Invalid(format!(
            "message to `{queue}`: attribute name `{name}` is not valid for SQS (1 to 256 characters of \
             A-Z, a-z, 0-9, `-`, `_`, `.`; no leading, trailing or doubled `.`; not starting with \
             `AWS.` or `Amazon.`)"
        )));
    }
    if RESERVED.contains(&name) {
        return Err(Error::Invalid(format!(
            "message to `{queue}`: attribute name `{name}` is reserved by Levee"
        )));
    }
    Ok(())
}

fn string_attribute(value: &str) -> MessageAttributeValue {
    let (data_type, value) = if value.is_empty() {
        (EMPTY_TYPE, "-")
    } else {
        ("String", value)
    };
    MessageAttributeValue::builder()
        .data_type(data_type)
        .string_value(value)
        .build()
        .expect("data_type is set")
}

fn wire_size(body: &str, attributes: &HashMap<String, MessageAttributeValue>) -> usize {
    body.len()
        + attributes
            .iter()
            .map(|(k, v)| k.len() + v.data_type().len() + v.string_value().map_or(0, str::len))
            .sum::<usize>()
}

/// Encodes a message for SQS; `extra` are Levee's own attributes (not validated as user ones).
fn encode(
    queue: &str,
    body: &[u8],
    attributes: &[(String, String)],
    delay: Duration,
    extra: &[(&str, &str)],
) -> Result<Wire> {
    if attributes.len() > MAX_ATTRIBUTES {
        return Err(Error::Invalid(format!(
            "message to `{queue}` has {} attributes; SQS allows 10 and Levee reserves 4, so at most \
             {MAX_ATTRIBUTES}",
            attributes.len()
        )));
    }
    if delay > MAX_DELAY {
        return Err(Error::Invalid(format!(
            "message to `{queue}`: delay must be at most {MAX_DELAY:?} (SQS), got {delay:?}"
        )));
    }
    let mut attrs = HashMap::with_capacity(attributes.len() + extra.len() + 1);
    for (k, v) in attributes {
        check_attribute_name(queue, k)?;
        if let Some(c) = v.chars().find(|c| !is_sqs_char(*c)) {
            return Err(Error::Invalid(format!(
                "message to `{queue}`: attribute `{k}` contains the character {c:?}, which SQS does not \
                 accept"
            )));
        }
        attrs.insert(k.clone(), string_attribute(v));
    }
    for (k, v) in extra {
        attrs.insert((*k).to_string(), string_attribute(v));
    }
    let text = std::str::from_utf8(body)
        .ok()
        .filter(|s| s.chars().all(is_sqs_char));
    let body = match text {
        Some("") => {
            attrs.insert(ATTR_ENCODING.into(), string_attribute("empty"));
            "-".to_string()
        }
        Some(s) => s.to_string(),
        None => {
            attrs.insert(ATTR_ENCODING.into(), string_attribute("base64"));
            base64::engine::general_purpose::STANDARD.encode(body)
        }
    };
    let size = wire_size(&body, &attrs);
    if size > SQS_MAX_MESSAGE_BYTES {
        return Err(Error::Invalid(format!(
            "message to `{queue}` is {size} bytes as SQS carries it (body{} and attributes), over SQS's \
             {SQS_MAX_MESSAGE_BYTES}-byte limit; wrap the queue in OffloadQueue to send large payloads \
             through blobs",
            if !body.is_empty() && attrs.contains_key(ATTR_ENCODING) {
                " in base64"
            } else {
                ""
            }
        )));
    }
    Ok(Wire {
        body,
        attributes: attrs,
        delay_secs: ceil_secs(delay),
        size,
    })
}

/// Encodes an outgoing message, carrying its stable id if it has one.
fn encode_message(queue: &str, m: &OutgoingMessage) -> Result<Wire> {
    match &m.id {
        Some(id) => encode(queue, &m.body, &m.attributes, m.delay, &[(ATTR_ID, id)]),
        None => encode(queue, &m.body, &m.attributes, m.delay, &[]),
    }
}

/// The body encoding and the user attributes (sorted by name), without Levee's reserved ones.
fn decode_attributes(m: &Message) -> (Option<String>, Vec<(String, String)>) {
    let mut encoding = None;
    let mut attributes = Vec::new();
    for (k, v) in m.message_attributes().into_iter().flatten() {
        let value = if v.data_type() == EMPTY_TYPE {
            ""
        } else {
            v.string_value().unwrap_or("")
        };
        if k == ATTR_ENCODING {
            encoding = Some(value.to_string());
        } else if !RESERVED.contains(&k.as_str()) {
            attributes.push((k.clone(), value.to_string()));
        }
    }
    attributes.sort();
    (encoding, attributes)
}

/// Decodes body and user attributes (sorted by name), dropping Levee's reserved ones.
fn decode_payload(m: &Message) -> (Vec<u8>, Vec<(String, String)>) {
    let (encoding, attributes) = decode_attributes(m);
    let raw = m.body().unwrap_or("");
    let body = match encoding.as_deref() {
        Some("empty") => Vec::new(),
        Some("base64") => base64::engine::general_purpose::STANDARD
            .decode(raw)
            .unwrap_or_else(|e| {
                tracing::warn!(message_id = m.message_id().unwrap_or(""), error = %e,
                "message marked base64 does not decode; delivering the raw body");
                raw.as_bytes().to_vec()
            }),
        _ => raw.as_bytes().to_vec(),
    };
    (body, attributes)
}

fn system_attribute(m: &Message, name: MessageSystemAttributeName) -> Option<&str> {
    m.attributes()
        .and_then(|a| a.get(&name))
        .map(String::as_str)
}

fn sent_at_ms(m: &Message) -> u64 {
    system_attribute(m, MessageSystemAttributeName::SentTimestamp)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn receive_count(m: &Message) -> u32 {
    system_attribute(m, MessageSystemAttributeName::ApproximateReceiveCount)
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
}

fn decode_received(m: &Message) -> ReceivedMessage {
    let (body, attributes) = decode_payload(m);
    let stable = m
        .message_attributes()
        .and_then(|a| a.get(ATTR_ID))
        .and_then(|v| v.string_value());
    ReceivedMessage {
        id: stable.or(m.message_id()).unwrap_or_default().to_string(),
        receipt: m.receipt_handle().unwrap_or_default().to_string(),
        body,
        attributes,
        receive_count: receive_count(m),
        sent_at_ms: sent_at_ms(m),
        last_error: None,
    }
}

fn attribute<'a>(m: &'a Message, name: &str) -> Option<&'a str> {
    m.message_attributes()
        .and_then(|a| a.get(name))
        .and_then(|v| v.string_value())
}

/// Why, when and after how many receives a DLQ message died, its id and its past deaths.
struct Death {
    id: String,
    reason: String,
    receive_count: u32,
    dead_at_ms: u64,
    history: Vec<PastDeath>,
}

fn dead_meta(m: &Message) -> Death {
    let meta = attribute(m, ATTR_DEAD_META);
    let mut parts = meta.unwrap_or_default().splitn(3, ',');
    let (c, t, original) = (parts.next(), parts.next(), parts.next());
    let (count, dead_at) = c
        .zip(t)
        .and_then(|(c, t)| Some((c.parse().ok()?, t.parse().ok()?)))
        // Moved by the redrive policy: this receive counts too, the rest happened on the source.
        .unwrap_or_else(|| (receive_count(m).saturating_sub(1).max(1), sent_at_ms(m)));
    let history = dead::decode_history(attribute(m, ATTR_HISTORY)).unwrap_or_else(|e| {
        tracing::warn!(message_id = m.message_id().unwrap_or(""), error = %e,
            "dead letter has an unreadable history; showing none");
        Vec::new()
    });
    Death {
        // `dead_letter` puts the original id in the meta; the redrive policy keeps `levee-id`.
        id: original
            .filter(|o| !o.is_empty())
            .or_else(|| attribute(m, ATTR_ID))
            .or(m.message_id())
            .unwrap_or_default()
            .to_string(),
        reason: attribute(m, ATTR_DEAD_REASON)
            .map(str::to_string)
            .unwrap_or_else(|| {
                "received more times than the queue's max_receive (moved by the SQS redrive policy)"
                    .into()
            }),
        receive_count: count,
        dead_at_ms: dead_at,
        history,
    }
}

fn decode_dead(m: &Message) -> DeadLetter {
    let (body, attributes) = decode_payload(m);
    let d = dead_meta(m);
    DeadLetter {
        id: d.id,
        body,
        attributes,
        reason: d.reason,
        receive_count: d.receive_count,
        dead_at_ms: d.dead_at_ms,
        history: d.history,
    }
}

/// A summary without decoding the whole body: the size of a base64 body is computed from its
/// length, and only the characters behind the preview are decoded.
fn summarize(m: &Message) -> DeadLetterSummary {
    let raw = m.body().unwrap_or("");
    let (size, head) = match attribute(m, ATTR_ENCODING) {
        Some("empty") => (0, Vec::new()),
        Some("base64") => {
            let trimmed = raw.trim_end_matches('=');
            let size = (trimmed.len() * 3 / 4) as u64;
            // 4 characters carry 3 bytes: enough whole groups for the preview.
            let take = raw.len().min(PREVIEW_BYTES.div_ceil(3) * 4);
            let head = base64::engine::general_purpose::STANDARD
                .decode(&raw.as_bytes()[..take])
                .unwrap_or_else(|_| raw.as_bytes()[..take].to_vec());
            (size, head)
        }
        _ => (
            raw.len() as u64,
            raw.as_bytes()[..raw.len().min(PREVIEW_BYTES)].to_vec(),
        ),
    };
    let (_, attributes) = decode_attributes(m);
    let d = dead_meta(m);
    DeadLetterSummary {
        id: d.id,
        reason: d.reason,
        receive_count: d.receive_count,
        dead_at_ms: d.dead_at_ms,
        size,
        preview: dead::preview(&head),
        attributes: dead::summary_attributes(attributes),
        history: d.history,
    }
}

/// Parses a `dlq_page` cursor into the (dead_at_ms, id) it continues after.
fn parse_cursor(cursor: &str) -> Result<(u64, String)> {
    cursor
        .strip_prefix(CURSOR_TAG)
        .and_then(|rest| rest.split_once(':'))
        .and_then(|(t, id)| Some((t.parse().ok()?, id.to_string())))
        .ok_or_else(|| Error::Invalid(format!("`{cursor}` is not a dead-letter cursor")))
}

fn format_cursor(dead_at_ms: u64, id: &str) -> String {
    format!("{CURSOR_TAG}{dead_at_ms}:{id}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(body: &[u8], attributes: &[(String, String)]) -> (Vec<u8>, Vec<(String, String)>) {
        let wire = encode("q", body, attributes, Duration::ZERO, &[]).unwrap();
        assert!(!wire.body.is_empty(), "SQS refuses empty bodies");
        assert!(wire.body.chars().all(is_sqs_char));
        let m = Message::builder()
            .message_id("id")
            .body(wire.body)
            .set_message_attributes(Some(wire.attributes))
            .build();
        decode_payload(&m)
    }

    #[test]
    fn text_binary_and_empty_bodies_round_trip() {
        for body in [
            &b"{\"hello\":\"world\"}"[..],
            &[0, 159, 146, 150, 255],
            b"",
            b"tab\tok\x01bad",
        ] {
            assert_eq!(roundtrip(body, &[]).0, body);
        }
        let text = encode("q", b"plain", &[], Duration::ZERO, &[]).unwrap();
        assert_eq!(text.body, "plain");
        assert!(text.attributes.is_empty(), "text bodies travel as is");
    }

    #[test]
    fn attributes_round_trip_sorted_including_empty_values() {
        let attrs = vec![
            ("b".to_string(), "2".to_string()),
            ("a".to_string(), String::new()),
        ];
        let (_, got) = roundtrip(b"x", &attrs);
        assert_eq!(
            got,
            vec![
                ("a".to_string(), String::new()),
                ("b".to_string(), "2".to_string())
            ]
        );
    }

    #[test]
    fn bad_messages_are_refused_with_the_reason() {
        let too_many: Vec<_> = (0..8).map(|i| (format!("a{i}"), "v".to_string())).collect();
        let e = encode("q", b"x", &too_many, Duration::ZERO, &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("at most 6"), "{e}");
        let e = encode(
            "q",
            b"x",
            &[("AWS.x".into(), "v".into())],
            Duration::ZERO,
            &[],
        )
        .unwrap_err();
        assert!(e.to_string().contains("`AWS.x`"), "{e}");
        let e = encode(
            "q",
            b"x",
            &[(ATTR_ENCODING.into(), "v".into())],
            Duration::ZERO,
            &[],
        )
        .unwrap_err();
        assert!(e.to_string().contains("reserved"), "{e}");
        let e = encode("q", b"x", &[], Duration::from_secs(901), &[]).unwrap_err();
        assert!(e.to_string().contains("delay"), "{e}");
        let big = vec![b'a'; SQS_MAX_MESSAGE_BYTES + 1];
        let e = encode("q", &big, &[], Duration::ZERO, &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("OffloadQueue"), "{e}");
        // Base64 grows binary bodies by a third: 800 KiB of binary does not fit.
        let e = encode("q", &vec![0u8; 800 * 1024], &[], Duration::ZERO, &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("base64"), "{e}");
    }

    #[test]
    fn durations_round_up_to_seconds() {
        assert_eq!(ceil_secs(Duration::ZERO), 0);
        assert_eq!(ceil_secs(Duration::from_millis(1)), 1);
        assert_eq!(ceil_secs(Duration::from_secs(2)), 2);
        assert_eq!(ceil_secs(Duration::from_millis(2001)), 3);
    }

    #[test]
    fn dead_letter_metadata_is_read_back() {
        let wire = encode(
            "q",
            b"x",
            &[],
            Duration::ZERO,
            &[(ATTR_DEAD_REASON, "boom"), (ATTR_DEAD_META, "3,1234")],
        )
        .unwrap();
        let m = Message::builder()
            .message_id("id")
            .body(wire.body)
            .set_message_attributes(Some(wire.attributes))
            .build();
        let d = decode_dead(&m);
        assert_eq!(
            (d.reason.as_str(), d.receive_count, d.dead_at_ms),
            ("boom", 3, 1234)
        );
        assert!(
            d.attributes.is_empty(),
            "dead-letter attributes are Levee's own"
        );
    }

    fn dead_message(body: &[u8], extra: &[(&str, &str)]) -> Message {
        let wire = encode(
            "q",
            body,
            &[("k".into(), "v".into())],
            Duration::ZERO,
            extra,
        )
        .unwrap();
        Message::builder()
            .message_id("sqs-id")
            .body(wire.body)
            .set_message_attributes(Some(wire.attributes))
            .build()
    }

    #[test]
    fn summaries_size_and_preview_base64_bodies_without_decoding_them_whole() {
        for len in [0, 1, 2, 3, 255, 256, 1000, 1001, 1002] {
            let body: Vec<u8> = (0..len).map(|i| (i % 7) as u8 | 0x80).collect();
            let s = summarize(&dead_message(&body, &[]));
            assert_eq!(s.size, len as u64, "len {len}");
            assert_eq!(s.preview, dead::preview(&body[..len.min(PREVIEW_BYTES)]));
            assert_eq!(s.attributes, vec![("k".to_string(), "v".to_string())]);
        }
        let s = summarize(&dead_message("é".repeat(200).as_bytes(), &[]));
        assert_eq!((s.size, s.preview.len()), (400, 256));
    }

    #[test]
    fn history_and_ids_are_read_from_the_attributes() {
        let history = dead::encode_history(&[PastDeath {
            receive_count: 3,
            reason: "boom".into(),
            dead_at_ms: 7,
        }]);
        // Moved by the redrive policy: no meta, the id is the stable one.
        let m = dead_message(b"x", &[(ATTR_ID, "stable"), (ATTR_HISTORY, &history)]);
        let d = decode_dead(&m);
        assert_eq!(d.id, "stable");
        assert_eq!(d.history.len(), 1);
        assert_eq!(d.history[0].reason, "boom");
        assert_eq!(d.attributes, vec![("k".to_string(), "v".to_string())]);
        let received = decode_received(&m);
        assert!(
            received
                .attributes
                .iter()
                .all(|(k, _)| !k.starts_with("levee-"))
        );
    }

    #[test]
    fn cursors_round_trip_and_bad_ones_are_refused() {
        let c = format_cursor(12, "a:b");
        assert_eq!(parse_cursor(&c).unwrap(), (12, "a:b".to_string()));
        for bad in ["", "12:a", "s1:", "s1:x:a", "s2:1:a"] {
            assert!(matches!(parse_cursor(bad), Err(Error::Invalid(_))), "{bad}");
        }
    }
}
