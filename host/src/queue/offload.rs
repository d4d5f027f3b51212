//! Large payloads: [`OffloadQueue`] wraps any [`Queue`] and moves message bodies above a threshold
//! into [`Blobs`], so a 5 MiB event travels through SQS (1 MiB limit) or the embedded queue alike.
//!
//! On send (and for messages emitted by [`Queue::complete`]) a message whose size as the queue
//! carries it exceeds the threshold is written to blobs under `payloads/{queue}/{random}`; the
//! queue carries the attribute `levee-blob` with that key and the key as its body. On receive the
//! reference is resolved, so handlers see the whole body and their own attributes only. The blob is
//! deleted after the message is completed or deleted; a dead-lettered message keeps its blob (the
//! dead letter still references it, and a redrive moves the reference back).
//!
//! Which blob belongs to a lease is remembered in memory from receive to complete. A blob can be
//! left behind when the process dies between deleting the message and deleting the blob, when a
//! lease expires without being completed (the message comes back and is completed under a newer
//! receipt, but the older lease's entry is only pruned), or when a send fails half way: give the
//! blob store an expiry rule for `payloads/` longer than the queues' retention (the CloudFormation
//! template in `infra/` sets 30 days).
//!
//! Dead-letter pages show an offloaded letter's real size and a preview read from the blob's
//! first bytes ([`Blobs::head`], a ranged read on S3), never the whole blob; `dlq_get` and
//! `dlq_list` resolve the whole body.
//!
//! A reference whose blob is gone (completed by a duplicate delivery, or removed by hand) cannot be
//! handled: such a message is dead-lettered with a reason naming the key instead of being
//! delivered with a wrong body.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt as _;

use crate::blobs::Blobs;
use crate::ids::random_id;
use crate::limits::{DEFAULT_OFFLOAD_THRESHOLD, SQS_MAX_MESSAGE_BYTES, check_offload_threshold};
use crate::queue::{
    Completion, DeadLetter, DlqPage, Emitted, OutgoingMessage, PREVIEW_BYTES, Queue, QueueSpec,
    QueueStats, ReceiveOptions, ReceivedMessage, dead,
};
use crate::store::CommitOutcome;
use crate::{Error, Result};

/// The attribute carrying the blob key of an offloaded body.
pub const ATTR_BLOB: &str = "levee-blob";
/// Blob keys of offloaded payloads start with this.
pub const PAYLOAD_PREFIX: &str = "payloads/";
/// Room kept for attributes the inner queue adds (encoding, dead-letter reason).
const HEADROOM: usize = 8 * 1024;
/// Leases are forgotten after this long without complete/delete (SQS's longest visibility).
const LEASE_MEMORY: Duration = Duration::from_secs(12 * 60 * 60);
/// Blob prefixes read at once for a dead-letter page.
const HEAD_CONCURRENCY: usize = 8;
/// Above this many remembered leases, stale ones are pruned.
const PRUNE_ABOVE: usize = 10_000;

/// A [`Queue`] that offloads large bodies to [`Blobs`].
pub struct OffloadQueue<Q, B> {
    inner: Q,
    blobs: B,
    threshold: usize,
    /// receipt → (blob key, when received)
    leases: Mutex<HashMap<String, (String, Instant)>>,
}

impl<Q, B> std::fmt::Debug for OffloadQueue<Q, B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OffloadQueue")
            .field("threshold", &self.threshold)
            .finish_non_exhaustive()
    }
}

/// Size of a message as a text-only queue carries it: binary bodies travel as base64 (4/3).
pub fn wire_size(body: &[u8], attributes: &[(String, String)]) -> usize {
    let body_size = if std::str::from_utf8(body).is_ok() {
        body.len()
    } else {
        body.len().div_ceil(3) * 4
    };
    body_size
        + attributes
            .iter()
            .map(|(k, v)| k.len() + v.len() + "String".len())
            .sum::<usize>()
}

impl<Q: Queue, B: Blobs> OffloadQueue<Q, B> {
    /// Wraps `inner`, offloading bodies above [`DEFAULT_OFFLOAD_THRESHOLD`] (200 KiB) to `blobs`.
    pub fn new(inner: Q, blobs: B) -> Self {
        Self {
            inner,
            blobs,
            threshold: DEFAULT_OFFLOAD_THRESHOLD,
            leases: Mutex::new(HashMap::new()),
        }
    }

    /// Sets the threshold: 1 KiB to 1 MiB (SQS's limit, body and attributes together).
    pub fn with_threshold(mut self, bytes: usize) -> Result<Self> {
        check_offload_threshold(bytes)?;
        self.threshold = bytes;
        Ok(self)
    }

    /// The threshold in bytes.
    pub fn threshold(&self) -> usize {
        self.threshold
    }

    /// The wrapped queue.
    pub fn inner(&self) -> &Q {
        &self.inner
    }

    /// The blob store payloads go to.
    pub fn blobs(&self) -> &B {
        &self.blobs
    }

    /// Replaces a large body by a reference, writing the body to blobs.
    async fn offload(&self, queue: &str, mut message: OutgoingMessage) -> Result<OutgoingMessage> {
        if message.attributes.iter().any(|(k, _)| k == ATTR_BLOB) {
            return Err(Error::Invalid(format!(
                "message to `{queue}`: attribute name `{ATTR_BLOB}` is reserved by Levee"
            )));
        }
        // Leave room for the attributes the inner queue adds, whatever the threshold.
        let limit = self.threshold.min(SQS_MAX_MESSAGE_BYTES - HEADROOM);
        if wire_size(&message.body, &message.attributes) <= limit {
            return Ok(message);
        }
        let key = format!("{PAYLOAD_PREFIX}{queue}/{}", random_id());
        let body = std::mem::take(&mut message.body);
        self.blobs.put(&key, Bytes::from(body)).await?;
        message.body = key.clone().into_bytes();
        message.attributes.push((ATTR_BLOB.to_string(), key));
        Ok(message)
    }

    fn remember(&self, receipt: &str, key: String) {
        let mut leases = self.leases.lock().expect("lease map poisoned");
        if leases.len() > PRUNE_ABOVE {
            leases.retain(|_, (_, at)| at.elapsed() < LEASE_MEMORY);
        }
        leases.insert(receipt.to_string(), (key, Instant::now()));
    }

    fn forget(&self, receipt: &str) -> Option<String> {
        self.leases
            .lock()
            .expect("lease map poisoned")
            .remove(receipt)
            .map(|(key, _)| key)
    }

    /// Size and first bytes of the blob of an offloaded letter (`None`: not offloaded, or gone).
    async fn head_of(&self, key: Option<String>) -> Result<Option<(u64, Bytes)>> {
        match key {
            Some(key) => self.blobs.head(&key, PREVIEW_BYTES).await,
            None => Ok(None),
        }
    }

    /// Deletes blobs whose messages are gone; a failure only leaves garbage behind, so it is logged.
    async fn drop_blobs(&self, keys: impl IntoIterator<Item = String>) {
        for key in keys {
            if let Err(e) = self.blobs.delete(&key).await {
                tracing::warn!(blob = %key, error = %e, "could not delete the payload of a finished message");
            }
        }
    }
}

fn blob_key(attributes: &[(String, String)]) -> Option<&str> {
    attributes
        .iter()
        .find(|(k, _)| k == ATTR_BLOB)
        .map(|(_, v)| v.as_str())
}

#[async_trait]
impl<Q: Queue, B: Blobs> Queue for OffloadQueue<Q, B> {
    async fn ensure(&self, spec: &QueueSpec) -> Result<()> {
        self.inner.ensure(spec).await
    }

    async fn send(&self, queue: &str, messages: Vec<OutgoingMessage>) -> Result<Vec<String>> {
        let mut out = Vec::with_capacity(messages.len());
        for m in messages {
            out.push(self.offload(queue, m).await?);
        }
        self.inner.send(queue, out).await
    }

    async fn receive(&self, queue: &str, opts: ReceiveOptions) -> Result<Vec<ReceivedMessage>> {
        let received = self.inner.receive(queue, opts).await?;
        let mut out = Vec::with_capacity(received.len());
        let mut failure = None;
        for mut m in received {
            let Some(key) = blob_key(&m.attributes).map(str::to_string) else {
                out.push(m);
                continue;
            };
            if failure.is_some() {
                // Leave the rest leased; they come back after their visibility timeout.
                continue;
            }
            match self.blobs.get(&key).await {
                Ok(Some(body)) => {
                    m.body = body.to_vec();
                    m.attributes.retain(|(k, _)| k != ATTR_BLOB);
                    self.remember(&m.receipt, key);
                    out.push(m);
                }
                Ok(None) => {
                    let reason = format!(
                        "large payload blob `{key}` is missing (completed through a duplicate delivery, \
                         or deleted)"
                    );
                    tracing::warn!(queue, message_id = %m.id, %reason, "dead-lettering a message");
                    self.inner.dead_letter(queue, &m, &reason).await?;
                }
                Err(e) => failure = Some(e),
            }
        }
        match failure {
            // Messages already resolved are returned; the caller sees the error on its next call
            // only if it recurs, which keeps the leased messages moving.
            Some(e) if out.is_empty() => Err(e),
            Some(e) => {
                tracing::warn!(queue, error = %e, "could not read some large payloads; they will be retried");
                Ok(out)
            }
            None => Ok(out),
        }
    }

    async fn commit(
        &self,
        queue: &str,
        receipt: &str,
        mut completion: Completion,
    ) -> Result<CommitOutcome> {
        let mut created = Vec::new();
        let mut out = Vec::with_capacity(completion.emitted.len());
        for e in std::mem::take(&mut completion.emitted) {
            let message = self.offload(&e.queue, e.message).await?;
            if let Some(key) = blob_key(&message.attributes) {
                created.push(key.to_string());
            }
            out.push(Emitted {
                queue: e.queue,
                message,
            });
        }
        completion.emitted = out;
        match self.inner.commit(queue, receipt, completion).await {
            Ok(CommitOutcome::Committed { versions }) => {
                self.drop_blobs(self.forget(receipt)).await;
                Ok(CommitOutcome::Committed { versions })
            }
            Ok(CommitOutcome::Duplicate) => {
                // An earlier run committed: its emits were sent, these blobs are nobody's.
                self.drop_blobs(created.into_iter().chain(self.forget(receipt)))
                    .await;
                Ok(CommitOutcome::Duplicate)
            }
            Ok(conflict @ CommitOutcome::Conflict { .. }) => {
                // Nothing was applied; the handler runs again and offloads its emits anew.
                self.drop_blobs(created).await;
                Ok(conflict)
            }
            Err(Error::StaleReceipt) => {
                // Another consumer holds the message now and still needs its blob.
                self.forget(receipt);
                self.drop_blobs(created).await;
                Err(Error::StaleReceipt)
            }
            // The outcome is unknown: keep every blob rather than risk losing one.
            Err(e) => Err(e),
        }
    }

    async fn release(&self, queue: &str, receipt: &str, delay: Duration) -> Result<()> {
        self.inner.release(queue, receipt, delay).await?;
        self.forget(receipt);
        Ok(())
    }

    async fn delete(&self, queue: &str, receipts: &[String]) -> Result<()> {
        self.inner.delete(queue, receipts).await?;
        let keys: Vec<String> = receipts.iter().filter_map(|r| self.forget(r)).collect();
        self.drop_blobs(keys).await;
        Ok(())
    }

    async fn retry_later(
        &self,
        queue: &str,
        receipt: &str,
        delay: Duration,
        reason: &str,
    ) -> Result<()> {
        self.inner
            .retry_later(queue, receipt, delay, reason)
            .await?;
        // The next receive hands out a new receipt and resolves the blob again.
        self.forget(receipt);
        Ok(())
    }

    async fn extend_lease(&self, queue: &str, receipt: &str, visibility: Duration) -> Result<()> {
        self.inner.extend_lease(queue, receipt, visibility).await
    }

    async fn dead_letter(
        &self,
        queue: &str,
        message: &ReceivedMessage,
        reason: &str,
    ) -> Result<()> {
        let key = self
            .leases
            .lock()
            .expect("lease map poisoned")
            .get(&message.receipt)
            .map(|(k, _)| k.clone());
        match key {
            Some(key) => {
                // The dead letter carries the reference, not the large body; the blob stays.
                let mut reference = message.clone();
                reference.body = key.clone().into_bytes();
                reference.attributes.push((ATTR_BLOB.to_string(), key));
                self.inner.dead_letter(queue, &reference, reason).await?;
                self.forget(&message.receipt);
                Ok(())
            }
            None => self.inner.dead_letter(queue, message, reason).await,
        }
    }

    async fn stats(&self, queue: &str) -> Result<QueueStats> {
        self.inner.stats(queue).await
    }

    async fn dlq_list(&self, queue: &str, max: usize) -> Result<Vec<DeadLetter>> {
        let mut letters = self.inner.dlq_list(queue, max).await?;
        for letter in &mut letters {
            let Some(key) = blob_key(&letter.attributes).map(str::to_string) else {
                continue;
            };
            // A dead letter whose blob is gone keeps showing the reference, so it can be traced.
            if let Some(body) = self.blobs.get(&key).await? {
                letter.body = body.to_vec();
                letter.attributes.retain(|(k, _)| k != ATTR_BLOB);
            }
        }
        Ok(letters)
    }

    /// The inner page with each offloaded letter's real size and preview from
    /// [`Blobs::head`], which reads only the first [`PREVIEW_BYTES`] of the blob (a few at a time
    /// concurrently). A letter whose blob is gone keeps showing the reference.
    async fn dlq_page(&self, queue: &str, after: Option<&str>, limit: usize) -> Result<DlqPage> {
        let mut page = self.inner.dlq_page(queue, after, limit).await?;
        let mut lookups = Vec::with_capacity(page.letters.len());
        for letter in &page.letters {
            lookups.push(self.head_of(blob_key(&letter.attributes).map(str::to_string)));
        }
        let heads: Vec<Result<Option<(u64, Bytes)>>> = futures::stream::iter(lookups)
            .buffered(HEAD_CONCURRENCY)
            .collect()
            .await;
        for (letter, head) in page.letters.iter_mut().zip(heads) {
            if let Some((size, head)) = head? {
                letter.size = size;
                letter.preview = dead::preview(&head);
                letter.attributes.retain(|(k, _)| k != ATTR_BLOB);
            }
        }
        Ok(page)
    }

    async fn dlq_get(&self, queue: &str, id: &str) -> Result<Option<DeadLetter>> {
        let Some(mut letter) = self.inner.dlq_get(queue, id).await? else {
            return Ok(None);
        };
        if let Some(key) = blob_key(&letter.attributes).map(str::to_string)
            && let Some(body) = self.blobs.get(&key).await?
        {
            letter.body = body.to_vec();
            letter.attributes.retain(|(k, _)| k != ATTR_BLOB);
        }
        Ok(Some(letter))
    }

    async fn dlq_redrive(&self, queue: &str) -> Result<u64> {
        self.inner.dlq_redrive(queue).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_size_counts_base64_for_binary_bodies() {
        assert_eq!(wire_size(b"abc", &[]), 3);
        assert_eq!(wire_size(&[0xff, 0xfe, 0xfd], &[]), 4);
        assert_eq!(wire_size(b"", &[("k".into(), "vv".into())]), 1 + 2 + 6);
    }
}
