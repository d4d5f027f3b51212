//! `LedgerQueue`: exactly-once kv effects for a queue that cannot share a transaction with the
//! store (SQS beside DynamoDB).
//!
//! A commit goes in three steps: the kv writes and a completion record keyed by the message id
//! (holding the messages the handler emitted) in one store transaction, version-checked; then
//! the emits, with ids derived from the source id; then the deletion of the source. A crash
//! between the steps leaves the record behind, so a redelivered message whose record exists is
//! not run again: its recorded emits are re-sent and it is deleted. A re-sent emit carries the
//! same stable id, so the function it reaches recognises it by its own record. kv effects are
//! exactly once; emits are at least once with stable ids. A commit that writes and emits nothing
//! is only the deletion: a second run of its message has nothing to be kept from repeating.
//!
//! Records live in [`RECORDS_NS`] for [`RECORD_TTL`], longer than a message can stay in a
//! queue. A record's emits are stored inline when small and in blobs otherwise (DynamoDB items
//! hold 400 KB).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::blobs::Blobs;
use crate::queue::{
    Completion, DeadLetter, DlqPage, Emitted, OutgoingMessage, Queue, QueueSpec, QueueStats,
    ReceiveOptions, ReceivedMessage,
};
use crate::store::{CommitOutcome, KvCommit, RECORDS_NS, Record, Store, in_place};
use crate::{Error, Result};

/// How long a completion record is kept: past SQS's longest retention (14 days), so no copy of
/// the message can arrive after its record expired.
pub const RECORD_TTL: Duration = Duration::from_secs(15 * 24 * 3600);

/// Largest record kept inline; larger lists of emits go to blobs under `records/`.
const MAX_INLINE_RECORD: usize = 300 * 1024;

/// The key of message `id`'s completion record in queue `queue`.
pub fn record_key(queue: &str, id: &str) -> String {
    format!("{queue}/{id}")
}

#[derive(Serialize, Deserialize)]
struct RecordedEmit {
    queue: String,
    id: Option<String>,
    /// Base64 of the body (after offload: at most the offload threshold).
    body: String,
    attributes: Vec<(String, String)>,
    delay_ms: u64,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum RecordBody {
    Emits(Vec<RecordedEmit>),
    Blob(String),
}

/// A queue whose completions commit kv and a completion record to a store first.
pub struct LedgerQueue<Q> {
    inner: Q,
    store: Arc<dyn Store>,
    blobs: Arc<dyn Blobs>,
}

impl<Q> std::fmt::Debug for LedgerQueue<Q> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LedgerQueue").finish_non_exhaustive()
    }
}

impl<Q: Queue> LedgerQueue<Q> {
    /// Commits through `store` (the raw store, not a cache: records must be read fresh) and
    /// keeps large records in `blobs`.
    pub fn new(inner: Q, store: Arc<dyn Store>, blobs: Arc<dyn Blobs>) -> Self {
        Self {
            inner,
            store,
            blobs,
        }
    }

    /// The wrapped queue.
    pub fn inner(&self) -> &Q {
        &self.inner
    }

    async fn encode(&self, key: &str, emitted: &[Emitted]) -> Result<Bytes> {
        let emits: Vec<RecordedEmit> = emitted
            .iter()
            .map(|e| RecordedEmit {
                queue: e.queue.clone(),
                id: e.message.id.clone(),
                body: base64::engine::general_purpose::STANDARD.encode(&e.message.body),
                attributes: e.message.attributes.clone(),
                delay_ms: e.message.delay.as_millis() as u64,
            })
            .collect();
        let inline = serde_json::to_vec(&RecordBody::Emits(emits)).map_err(encoding)?;
        if inline.len() <= MAX_INLINE_RECORD {
            return Ok(inline.into());
        }
        let blob = format!("records/{key}");
        self.blobs.put(&blob, inline.into()).await?;
        Ok(serde_json::to_vec(&RecordBody::Blob(blob))
            .map_err(encoding)?
            .into())
    }

    async fn decode(&self, raw: &[u8]) -> Result<Vec<Emitted>> {
        let body: RecordBody = serde_json::from_slice(raw).map_err(corrupt)?;
        let emits = match body {
            RecordBody::Emits(e) => e,
            RecordBody::Blob(key) => {
                let raw = self.blobs.get(&key).await?.ok_or_else(|| Error::Backend {
                    service: "ledger".into(),
                    message: format!("completion record blob `{key}` is missing"),
                })?;
                match serde_json::from_slice(&raw).map_err(corrupt)? {
                    RecordBody::Emits(e) => e,
                    RecordBody::Blob(_) => return Err(corrupt("nested blob reference")),
                }
            }
        };
        emits
            .into_iter()
            .map(|e| {
                let body = base64::engine::general_purpose::STANDARD
                    .decode(e.body)
                    .map_err(corrupt)?;
                Ok(Emitted {
                    queue: e.queue,
                    message: OutgoingMessage {
                        id: e.id,
                        body,
                        attributes: e.attributes,
                        delay: Duration::from_millis(e.delay_ms),
                    },
                })
            })
            .collect()
    }

    /// Re-sends what the first run of a committed message emitted and deletes it.
    async fn replay(&self, queue: &str, receipt: &str, id: &str) -> Result<()> {
        let key = record_key(queue, id);
        let emitted = match self.store.get(RECORDS_NS, &key).await? {
            Some(raw) => self.decode(&raw).await?,
            // Expired between the check and now: the emits were sent long ago.
            None => Vec::new(),
        };
        tracing::info!(
            queue,
            message_id = id,
            emits = emitted.len(),
            "already committed: re-sending its recorded emits and deleting it"
        );
        let replay = Completion {
            id: Some(id.to_string()),
            emitted,
            kv: None,
        };
        self.inner.commit(queue, receipt, replay).await.map(|_| ())
    }
}

fn encoding(e: serde_json::Error) -> Error {
    Error::Invalid(format!("completion record cannot be encoded: {e}"))
}

fn corrupt(e: impl std::fmt::Display) -> Error {
    Error::Backend {
        service: "ledger".into(),
        message: format!("completion record is corrupt: {e}"),
    }
}

#[async_trait]
impl<Q: Queue> Queue for LedgerQueue<Q> {
    async fn ensure(&self, spec: &QueueSpec) -> Result<()> {
        self.inner.ensure(spec).await
    }

    async fn send(&self, queue: &str, messages: Vec<OutgoingMessage>) -> Result<Vec<String>> {
        self.inner.send(queue, messages).await
    }

    /// Messages already committed (a redelivery after a crash, or a re-sent emit) are settled
    /// here and never reach a handler.
    async fn receive(&self, queue: &str, opts: ReceiveOptions) -> Result<Vec<ReceivedMessage>> {
        let received = self.inner.receive(queue, opts).await?;
        if received.is_empty() {
            return Ok(received);
        }
        let keys: Vec<String> = received.iter().map(|m| record_key(queue, &m.id)).collect();
        // One batch read for the whole receive, in place on an embedded store (the fetcher
        // waits for it either way). If it fails the records are unknown: the commit's own record
        // check still stops a second effect.
        let found = match in_place::polled(self.store.get_many(RECORDS_NS, &keys)).await {
            Ok(found) => found,
            Err(e) => {
                tracing::debug!(queue, error = %e, "could not check completion records at receive");
                vec![None; keys.len()]
            }
        };
        let mut out = Vec::with_capacity(received.len());
        for (m, record) in received.into_iter().zip(found) {
            match record {
                Some(_) => {
                    if let Err(e) = self.replay(queue, &m.receipt, &m.id).await {
                        tracing::warn!(queue, message_id = %m.id, error = %e,
                            "could not settle an already committed message; it comes back later");
                    }
                }
                None => out.push(m),
            }
        }
        Ok(out)
    }

    async fn commit(
        &self,
        queue: &str,
        receipt: &str,
        completion: Completion,
    ) -> Result<CommitOutcome> {
        let Some(id) = completion.id.clone() else {
            return self.inner.commit(queue, receipt, completion).await;
        };
        // Nothing written and nothing emitted: running the message again could only do what this
        // run did not, so there is nothing a record would guard. Skip the store's transaction.
        let writes_nothing = completion
            .kv
            .as_ref()
            .is_none_or(|kv| kv.writes.is_empty() && kv.adds.is_empty());
        if writes_nothing && completion.emitted.is_empty() {
            let delete = Completion {
                id: Some(id),
                emitted: Vec::new(),
                kv: None,
            };
            self.inner.commit(queue, receipt, delete).await?;
            return Ok(CommitOutcome::Committed {
                versions: Vec::new(),
            });
        }
        let key = record_key(queue, &id);
        let mut kv = completion.kv.unwrap_or_else(|| KvCommit {
            ns: queue.to_string(),
            ..KvCommit::default()
        });
        kv.record = Some(Record {
            key: key.clone(),
            value: self.encode(&key, &completion.emitted).await?,
            ttl: RECORD_TTL,
        });
        let outcome = self.store.commit(&kv).await?;
        match &outcome {
            CommitOutcome::Conflict { .. } => return Ok(outcome),
            CommitOutcome::Duplicate => {
                self.replay(queue, receipt, &id).await?;
                return Ok(outcome);
            }
            CommitOutcome::Committed { .. } => {}
        }
        let send = Completion {
            id: Some(id),
            emitted: completion.emitted,
            kv: None,
        };
        // If this fails the record stands: the redelivered message is replayed, not rerun.
        self.inner.commit(queue, receipt, send).await?;
        Ok(outcome)
    }

    async fn release(&self, queue: &str, receipt: &str, delay: Duration) -> Result<()> {
        self.inner.release(queue, receipt, delay).await
    }

    async fn delete(&self, queue: &str, receipts: &[String]) -> Result<()> {
        self.inner.delete(queue, receipts).await
    }

    async fn retry_later(
        &self,
        queue: &str,
        receipt: &str,
        delay: Duration,
        reason: &str,
    ) -> Result<()> {
        self.inner.retry_later(queue, receipt, delay, reason).await
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
        self.inner.dead_letter(queue, message, reason).await
    }

    async fn stats(&self, queue: &str) -> Result<QueueStats> {
        self.inner.stats(queue).await
    }

    async fn dlq_list(&self, queue: &str, max: usize) -> Result<Vec<DeadLetter>> {
        self.inner.dlq_list(queue, max).await
    }

    async fn dlq_page(&self, queue: &str, after: Option<&str>, limit: usize) -> Result<DlqPage> {
        self.inner.dlq_page(queue, after, limit).await
    }

    async fn dlq_get(&self, queue: &str, id: &str) -> Result<Option<DeadLetter>> {
        self.inner.dlq_get(queue, id).await
    }

    async fn dlq_redrive(&self, queue: &str) -> Result<u64> {
        self.inner.dlq_redrive(queue).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blobs::disk::DiskBlobs;
    use crate::store::MemoryStore;

    fn emit(queue: &str, body: Vec<u8>) -> Emitted {
        Emitted {
            queue: queue.into(),
            message: OutgoingMessage {
                id: Some("e1".into()),
                body,
                attributes: vec![("k".into(), "v".into())],
                delay: Duration::from_millis(1500),
            },
        }
    }

    struct NoQueue;

    #[async_trait]
    impl Queue for NoQueue {
        async fn ensure(&self, _: &QueueSpec) -> Result<()> {
            Ok(())
        }
        async fn send(&self, _: &str, _: Vec<OutgoingMessage>) -> Result<Vec<String>> {
            Ok(vec![])
        }
        async fn receive(&self, _: &str, _: ReceiveOptions) -> Result<Vec<ReceivedMessage>> {
            Ok(vec![])
        }
        async fn commit(&self, _: &str, _: &str, _: Completion) -> Result<CommitOutcome> {
            Ok(CommitOutcome::Committed { versions: vec![] })
        }
        async fn release(&self, _: &str, _: &str, _: Duration) -> Result<()> {
            Ok(())
        }
        async fn delete(&self, _: &str, _: &[String]) -> Result<()> {
            Ok(())
        }
        async fn retry_later(&self, _: &str, _: &str, _: Duration, _: &str) -> Result<()> {
            Ok(())
        }
        async fn extend_lease(&self, _: &str, _: &str, _: Duration) -> Result<()> {
            Ok(())
        }
        async fn dead_letter(&self, _: &str, _: &ReceivedMessage, _: &str) -> Result<()> {
            Ok(())
        }
        async fn stats(&self, _: &str) -> Result<QueueStats> {
            Ok(QueueStats::default())
        }
        async fn dlq_list(&self, _: &str, _: usize) -> Result<Vec<DeadLetter>> {
            Ok(vec![])
        }
        async fn dlq_page(&self, _: &str, _: Option<&str>, _: usize) -> Result<DlqPage> {
            Ok(DlqPage::default())
        }
        async fn dlq_get(&self, _: &str, _: &str) -> Result<Option<DeadLetter>> {
            Ok(None)
        }
        async fn dlq_redrive(&self, _: &str) -> Result<u64> {
            Ok(0)
        }
    }

    #[tokio::test]
    async fn records_round_trip_inline_and_through_blobs() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = LedgerQueue::new(
            NoQueue,
            Arc::new(MemoryStore::new()),
            Arc::new(DiskBlobs::new(dir.path())),
        );
        for size in [10, 400 * 1024] {
            let emits = vec![emit("next", vec![7u8; size])];
            let raw = ledger.encode("q/m1", &emits).await.unwrap();
            assert!(raw.len() <= MAX_INLINE_RECORD + 64);
            assert_eq!(ledger.decode(&raw).await.unwrap(), emits);
        }
    }

    #[tokio::test]
    async fn a_second_commit_of_one_message_is_a_duplicate() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(MemoryStore::new());
        let ledger = LedgerQueue::new(NoQueue, store.clone(), Arc::new(DiskBlobs::new(dir.path())));
        let kv = KvCommit {
            ns: "f".into(),
            reads: vec![],
            writes: vec![("n".into(), Some(Bytes::from_static(b"1")))],
            adds: Vec::new(),
            record: None,
        };
        let c = || Completion {
            id: Some("m1".into()),
            emitted: vec![emit("next", b"x".to_vec())],
            kv: Some(kv.clone()),
        };
        let first = ledger.commit("f", "r1", c()).await.unwrap();
        assert!(
            matches!(first, CommitOutcome::Committed { .. }),
            "{first:?}"
        );
        let second = ledger.commit("f", "r2", c()).await.unwrap();
        assert_eq!(second, CommitOutcome::Duplicate);
        assert_eq!(store.get_versioned("f", "n").await.unwrap().version, 1);
    }
    #[tokio::test]
    async fn only_a_commit_with_effects_leaves_a_record() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(MemoryStore::new());
        let ledger = LedgerQueue::new(NoQueue, store.clone(), Arc::new(DiskBlobs::new(dir.path())));
        let read_only = KvCommit {
            ns: "f".into(),
            reads: vec![("n".into(), 0)],
            ..KvCommit::default()
        };
        for (id, kv) in [("quiet", None), ("reader", Some(read_only))] {
            let c = Completion {
                id: Some(id.into()),
                emitted: Vec::new(),
                kv,
            };
            let out = ledger.commit("f", "r", c).await.unwrap();
            assert!(matches!(out, CommitOutcome::Committed { .. }), "{out:?}");
        }
        let emitting = Completion {
            id: Some("loud".into()),
            emitted: vec![emit("next", b"x".to_vec())],
            kv: None,
        };
        ledger.commit("f", "r", emitting).await.unwrap();
        let keys: Vec<String> = ["quiet", "reader", "loud"]
            .iter()
            .map(|id| record_key("f", id))
            .collect();
        let found = store.get_many(RECORDS_NS, &keys).await.unwrap();
        assert_eq!(
            found.iter().map(Option::is_some).collect::<Vec<_>>(),
            [false, false, true]
        );
    }
}
