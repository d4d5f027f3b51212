//! Coalescing of per-message SQS calls into batch calls: the deletes of committed messages and the
//! visibility changes (lease renewals, releases, retries) that concurrent handlers of one queue
//! make go to SQS as `DeleteMessageBatch` / `ChangeMessageVisibilityBatch` of up to 10 entries.
//!
//! Deletes are grouped by what was received. A receive of n messages tells the batcher that n
//! deletes are expected ([`Batcher::expect`]); a message settled another way (released, retried
//! later, dead-lettered) is taken off ([`Batcher::settled`]). While deletes are expected, a delete
//! batch starts only when 10 wait, or when the oldest has waited [`LINGER`] (a slow handler, or a
//! message that left without saying: the expectation is then dropped until the next receive).
//! With none expected, deletes follow the group commit of visibility changes below. So a received
//! batch of 10 whose handlers succeed is deleted in one call, and a lone message at once. On
//! fauxqs (tests/benches/sqs.rs, 32 workers) the entries per call rose from about 6 to 9.5, so
//! the SQS requests per message fell by a fifth (receive and deletes: 2.7 to 2.1 calls per 10
//! messages), and requests are what AWS bills. Dropping the expectation on the timer alone (and
//! deleting each arrival at once after it) gave 7.8.
//!
//! Visibility changes keep group commit without a timer: a call whose line has no batch in flight
//! starts one at once with what waits; while one is in flight the calls wait, and a further batch
//! starts as soon as [`MAX_BATCH`] wait (up to [`MAX_IN_FLIGHT`] batches per line at once).
//!
//! Each caller gets its own entry's outcome: a receipt SQS reports stale or invalid is
//! [`Error::StaleReceipt`] for that caller only (nothing else in the batch is affected), another
//! entry refused as the sender's fault is a [`Error::Backend`] for that caller, entries failing for
//! a transient reason are sent again (up to [`ENTRY_ATTEMPTS`] times with backoff) and then
//! [`Error::Unavailable`]. A failure of the whole call goes to every caller of the batch.
//!
//! Batches run on tasks of their own, so a caller that stops waiting (its future dropped) does not
//! strand the others. Bounds: at most [`MAX_WAITING`] entries wait or travel at once over all
//! queues (a further caller waits for room), at most [`MAX_IN_FLIGHT`] batch calls per line, and
//! an expectation of at most [`MAX_WAITING`] deletes per queue.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::{
    BatchResultErrorEntry, ChangeMessageVisibilityBatchRequestEntry, DeleteMessageBatchRequestEntry,
};
use tokio::sync::{Semaphore, oneshot};

use crate::aws::errors::{ErrorContext, Resource};
use crate::queue::MAX_BATCH;
use crate::{Error, Result};

/// Entries waiting or in a batch call at once, over all queues; callers beyond it wait for room.
pub(crate) const MAX_WAITING: usize = 10_000;
/// Batch calls in flight at once per queue and kind.
pub(crate) const MAX_IN_FLIGHT: usize = 4;
/// Attempts for entries that failed for a transient reason.
pub(crate) const ENTRY_ATTEMPTS: u32 = 4;
/// Longest a delete waits for the rest of its receive's deletes before its batch goes anyway.
pub(crate) const LINGER: Duration = Duration::from_millis(2);

/// Which batch call an entry goes in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Kind {
    Delete,
    /// `ChangeMessageVisibility`; each entry carries its own timeout.
    Visibility,
}

struct Entry {
    receipt: String,
    visibility_secs: i32,
    reply: oneshot::Sender<Result<()>>,
}

#[derive(Default)]
struct Line {
    waiting: VecDeque<Entry>,
    in_flight: usize,
    /// Delete lines: received messages whose delete (or other settling) has not come yet.
    expected: usize,
    /// A [`LINGER`] timer is armed for what waits.
    timer: bool,
}

impl Line {
    /// Whether what waits should go now, batch calls in flight aside.
    fn ready(&self, kind: Kind) -> bool {
        !self.waiting.is_empty()
            && match kind {
                Kind::Delete => self.waiting.len() >= MAX_BATCH || self.expected == 0,
                Kind::Visibility => true,
            }
    }

    /// Whether a new batch call should start now.
    fn should_start(&self, kind: Kind) -> bool {
        match kind {
            // Nothing more expected: group commit, as for visibility changes.
            Kind::Delete if self.expected > 0 => {
                self.waiting.len() >= MAX_BATCH && self.in_flight < MAX_IN_FLIGHT
            }
            Kind::Delete | Kind::Visibility => {
                !self.waiting.is_empty()
                    && (self.in_flight == 0
                        || (self.waiting.len() >= MAX_BATCH && self.in_flight < MAX_IN_FLIGHT))
            }
        }
    }

    /// Whether nothing is kept for this line, so it can be forgotten.
    fn idle(&self) -> bool {
        self.waiting.is_empty() && self.in_flight == 0 && self.expected == 0 && !self.timer
    }
}

/// Batch calls made and entries they carried, since the start (for benchmarks and tests).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchCounts {
    /// `DeleteMessageBatch` calls.
    pub delete_calls: u64,
    /// Entries in them.
    pub deletes: u64,
    /// `ChangeMessageVisibilityBatch` calls.
    pub visibility_calls: u64,
    /// Entries in them.
    pub visibility_changes: u64,
}

type Key = (String, Kind);

/// The batchers of one SQS client (shared by all its queues).
pub(crate) struct Batcher {
    client: Client,
    ctx: ErrorContext,
    lines: Mutex<HashMap<Key, Line>>,
    room: Arc<Semaphore>,
    counts: Mutex<BatchCounts>,
}

impl Batcher {
    pub(crate) fn new(client: Client, ctx: ErrorContext) -> Arc<Self> {
        Arc::new(Self {
            client,
            ctx,
            lines: Mutex::new(HashMap::new()),
            room: Arc::new(Semaphore::new(MAX_WAITING)),
            counts: Mutex::new(BatchCounts::default()),
        })
    }

    /// Batch calls made so far and their entries.
    pub(crate) fn counts(&self) -> BatchCounts {
        *self.counts.lock().expect("batch counts poisoned")
    }

    /// `n` messages of the queue at `url` were received: their deletes are to come.
    pub(crate) fn expect(&self, url: &str, n: usize) {
        if n == 0 {
            return;
        }
        let mut lines = self.lines.lock().expect("batch lines poisoned");
        let line = lines.entry((url.to_string(), Kind::Delete)).or_default();
        line.expected = (line.expected + n).min(MAX_WAITING);
    }

    /// `n` received messages of the queue `name` at `url` were settled without a batched delete
    /// (released, retried later, dead-lettered, deleted directly): their deletes are no longer
    /// to be waited for.
    pub(crate) fn settled(self: &Arc<Self>, name: &str, url: &str, n: usize) {
        let key = (url.to_string(), Kind::Delete);
        let batch = {
            let mut lines = self.lines.lock().expect("batch lines poisoned");
            let Some(line) = lines.get_mut(&key) else {
                return;
            };
            line.expected = line.expected.saturating_sub(n);
            self.start_if_due(line, Kind::Delete)
        };
        if let Some(batch) = batch {
            tokio::spawn(self.clone().run(name.to_string(), key, batch));
        }
    }

    /// Takes a batch off `line` if one should start now.
    fn start_if_due(&self, line: &mut Line, kind: Kind) -> Option<Vec<Entry>> {
        if !line.should_start(kind) {
            return None;
        }
        line.in_flight += 1;
        Some(take_batch(line))
    }

    /// Arms the [`LINGER`] timer of a delete line that keeps entries waiting.
    fn arm(self: &Arc<Self>, name: &str, key: &Key, line: &mut Line) {
        if key.1 != Kind::Delete || line.timer || line.waiting.is_empty() {
            return;
        }
        line.timer = true;
        let (me, name, key) = (self.clone(), name.to_string(), key.clone());
        tokio::spawn(async move {
            tokio::time::sleep(LINGER).await;
            let batch = {
                let mut lines = me.lines.lock().expect("batch lines poisoned");
                let Some(line) = lines.get_mut(&key) else {
                    return;
                };
                line.timer = false;
                // What was expected did not come in time: stop waiting for it until the next
                // receive says what to expect.
                line.expected = 0;
                let batch = me.start_if_due(line, Kind::Delete);
                if line.idle() {
                    lines.remove(&key);
                }
                batch
            };
            if let Some(batch) = batch {
                me.run(name, key, batch).await;
            }
        });
    }

    /// Deletes (`Kind::Delete`) or changes the visibility of one message of the SQS queue `name`
    /// at `url`, in a batch with the others waiting; returns this entry's own outcome.
    pub(crate) async fn submit(
        self: &Arc<Self>,
        name: &str,
        url: &str,
        kind: Kind,
        receipt: &str,
        visibility_secs: i32,
    ) -> Result<()> {
        let _room = self
            .room
            .clone()
            .acquire_owned()
            .await
            .expect("the room semaphore is never closed");
        let (reply, outcome) = oneshot::channel();
        let key = (url.to_string(), kind);
        let start = {
            let mut lines = self.lines.lock().expect("batch lines poisoned");
            let line = lines.entry(key.clone()).or_default();
            line.waiting.push_back(Entry {
                receipt: receipt.to_string(),
                visibility_secs,
                reply,
            });
            if kind == Kind::Delete {
                line.expected = line.expected.saturating_sub(1);
            }
            let start = self.start_if_due(line, kind);
            if start.is_none() {
                self.arm(name, &key, line);
            }
            start
        };
        if let Some(batch) = start {
            tokio::spawn(self.clone().run(name.to_string(), key, batch));
        }
        outcome.await.unwrap_or_else(|_| {
            Err(Error::Unavailable {
                service: "sqs".into(),
                message: format!("the batch call on `{name}` ended without an answer"),
            })
        })
    }

    /// Sends `batch`, then the batches of what is due meanwhile, until nothing is.
    async fn run(self: Arc<Self>, name: String, key: Key, mut batch: Vec<Entry>) {
        loop {
            self.send(&name, &key, batch).await;
            let mut lines = self.lines.lock().expect("batch lines poisoned");
            let line = lines
                .get_mut(&key)
                .expect("a line lives while a batch is in flight");
            if line.ready(key.1) {
                batch = take_batch(line);
                continue;
            }
            line.in_flight -= 1;
            self.arm(&name, &key, line);
            if line.idle() {
                lines.remove(&key);
            }
            return;
        }
    }

    /// One batch, its transient failures retried; answers every entry.
    async fn send(&self, name: &str, (url, kind): &Key, mut batch: Vec<Entry>) {
        for attempt in 0..ENTRY_ATTEMPTS {
            {
                let mut c = self.counts.lock().expect("batch counts poisoned");
                match kind {
                    Kind::Delete => {
                        c.delete_calls += 1;
                        c.deletes += batch.len() as u64;
                    }
                    Kind::Visibility => {
                        c.visibility_calls += 1;
                        c.visibility_changes += batch.len() as u64;
                    }
                }
            }
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(100 << attempt.min(5))).await;
            }
            let (op, answer) = match kind {
                Kind::Delete => ("DeleteMessageBatch", self.delete(name, url, &batch).await),
                Kind::Visibility => (
                    "ChangeMessageVisibilityBatch",
                    self.visibility(name, url, &batch).await,
                ),
            };
            let failed = match answer {
                Ok(failed) => failed,
                Err(e) => {
                    for entry in batch {
                        let _ = entry.reply.send(Err(e.copied("sqs")));
                    }
                    return;
                }
            };
            let mut failed: HashMap<usize, BatchResultErrorEntry> = failed
                .into_iter()
                .filter_map(|f| Some((f.id().parse().ok()?, f)))
                .collect();
            let mut again = Vec::new();
            for (i, entry) in batch.into_iter().enumerate() {
                let outcome = match failed.remove(&i) {
                    None => Ok(()),
                    Some(f) if is_stale_receipt(f.code()) => Err(Error::StaleReceipt),
                    Some(f) if f.sender_fault() => Err(Error::Backend {
                        service: "sqs".into(),
                        message: format!(
                            "{op} on `{name}`: {}: {}",
                            f.code(),
                            f.message().unwrap_or("")
                        ),
                    }),
                    Some(_) => {
                        again.push(entry);
                        continue;
                    }
                };
                let _ = entry.reply.send(outcome);
            }
            if again.is_empty() {
                return;
            }
            batch = again;
        }
        for entry in batch {
            let _ = entry.reply.send(Err(Error::Unavailable {
                service: "sqs".into(),
                message: format!(
                    "batch call on `{name}`: entry still failing after {ENTRY_ATTEMPTS} attempts"
                ),
            }));
        }
    }

    /// `DeleteMessageBatch`; returns the failed entries (ids are indexes into `batch`).
    async fn delete(
        &self,
        name: &str,
        url: &str,
        batch: &[Entry],
    ) -> Result<Vec<BatchResultErrorEntry>> {
        let entries = batch
            .iter()
            .enumerate()
            .map(|(i, e)| {
                DeleteMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .receipt_handle(&e.receipt)
                    .build()
                    .expect("id and receipt are set")
            })
            .collect();
        let out = self
            .client
            .delete_message_batch()
            .queue_url(url)
            .set_entries(Some(entries))
            .send()
            .await
            .map_err(|e| self.ctx.map("DeleteMessageBatch", Resource::Queue(name), e))?;
        Ok(out.failed)
    }

    /// `ChangeMessageVisibilityBatch`; returns the failed entries.
    async fn visibility(
        &self,
        name: &str,
        url: &str,
        batch: &[Entry],
    ) -> Result<Vec<BatchResultErrorEntry>> {
        let entries = batch
            .iter()
            .enumerate()
            .map(|(i, e)| {
                ChangeMessageVisibilityBatchRequestEntry::builder()
                    .id(i.to_string())
                    .receipt_handle(&e.receipt)
                    .visibility_timeout(e.visibility_secs)
                    .build()
                    .expect("id and receipt are set")
            })
            .collect();
        let out = self
            .client
            .change_message_visibility_batch()
            .queue_url(url)
            .set_entries(Some(entries))
            .send()
            .await
            .map_err(|e| {
                self.ctx
                    .map("ChangeMessageVisibilityBatch", Resource::Queue(name), e)
            })?;
        Ok(out.failed)
    }
}

fn take_batch(line: &mut Line) -> Vec<Entry> {
    let n = line.waiting.len().min(MAX_BATCH);
    line.waiting.drain(..n).collect()
}

/// SQS error codes meaning the receipt is expired, superseded or not one of this queue's.
pub(crate) fn is_stale_receipt(code: &str) -> bool {
    matches!(
        code,
        "ReceiptHandleIsInvalid"
            | "AWS.SimpleQueueService.ReceiptHandleIsInvalid"
            | "InvalidReceiptHandle"
            | "MessageNotInflight"
            | "AWS.SimpleQueueService.MessageNotInflight"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_call_errors_are_copied_with_their_kind() {
        let e = Error::QueueNotFound("q".into()).copied("sqs");
        assert!(matches!(e, Error::QueueNotFound(q) if q == "q"));
        let e = Error::Timeout {
            what: "x".into(),
            after: Duration::from_secs(1),
        }
        .copied("sqs");
        assert!(matches!(e, Error::Timeout { .. }) && e.is_retryable());
        let e = Error::Manifest("m".into()).copied("sqs");
        assert!(matches!(e, Error::Backend { .. }) && !e.is_retryable());
    }

    fn line(waiting: usize, expected: usize, in_flight: usize) -> Line {
        let mut line = Line {
            expected,
            in_flight,
            ..Line::default()
        };
        for i in 0..waiting {
            let (reply, _) = oneshot::channel();
            line.waiting.push_back(Entry {
                receipt: i.to_string(),
                visibility_secs: 0,
                reply,
            });
        }
        line
    }

    #[test]
    fn deletes_wait_for_the_rest_of_their_receive() {
        // 3 of a received 10 committed: the other 7 are still expected.
        assert!(!line(3, 7, 0).should_start(Kind::Delete));
        // All arrived (the line's expectation is spent): go, or join the batch after the one
        // in flight.
        assert!(line(3, 0, 0).should_start(Kind::Delete));
        assert!(!line(3, 0, 2).should_start(Kind::Delete));
        // Ten wait: go even with more expected, up to the calls in flight allowed.
        assert!(line(10, 25, 1).should_start(Kind::Delete));
        assert!(!line(10, 25, MAX_IN_FLIGHT).should_start(Kind::Delete));
        // A returning batch takes what is due, not a partial group.
        assert!(line(4, 0, 1).ready(Kind::Delete));
        assert!(!line(4, 6, 1).ready(Kind::Delete));
        assert!(!line(0, 0, 0).should_start(Kind::Delete));
    }

    #[test]
    fn visibility_changes_go_at_once_when_no_call_is_in_flight() {
        assert!(line(1, 5, 0).should_start(Kind::Visibility));
        assert!(!line(9, 0, 1).should_start(Kind::Visibility));
        assert!(line(10, 0, 1).should_start(Kind::Visibility));
        assert!(line(1, 0, 1).ready(Kind::Visibility));
    }

    #[test]
    fn a_batch_takes_at_most_ten() {
        let mut line = Line::default();
        for i in 0..25 {
            let (reply, _) = oneshot::channel();
            line.waiting.push_back(Entry {
                receipt: i.to_string(),
                visibility_secs: 0,
                reply,
            });
        }
        assert_eq!(take_batch(&mut line).len(), 10);
        assert_eq!(take_batch(&mut line).len(), 10);
        assert_eq!(take_batch(&mut line).len(), 5);
        assert!(line.waiting.is_empty());
    }
}
