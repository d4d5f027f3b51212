//! [`EmbeddedQueue`]: the [`Queue`] trait on the embedded SQLite file, with SQS semantics.
//!
//! A message row is hidden until `visible_at`; a receive leases it by moving `visible_at` forward
//! and drawing a fresh receipt token, so receipts of earlier receives go stale. Completion,
//! dead-lettering and the running totals are each one transaction, so on this backend the outbox
//! is atomic: emitted messages exist if and only if the source message is gone.
//!
//! A redrive appends the letter's death to the message's `history` column (JSON, see
//! [`dead`]); receives never read that column, so handlers do not see it, and a second death
//! copies it to the dead letter.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, params};
use tokio::time::Instant;

use super::writer::{Totals, Wakes};
use super::{EmbeddedDb, duration_ms, now_ms, store};
use crate::queue::dead;
use crate::queue::{
    Completion, DeadLetterSummary, DlqPage, MAX_BATCH, MAX_DLQ_LIST, MAX_WAIT, PREVIEW_BYTES,
    PastDeath,
};
use crate::store::CommitOutcome;
use crate::{
    DeadLetter, Error, OutgoingMessage, Queue, QueueSpec, QueueStats, ReceiveOptions,
    ReceivedMessage, Result,
};

/// Longest delivery delay, as in SQS.
const MAX_DELAY: Duration = Duration::from_secs(15 * 60);

/// Longest visibility timeout or retry delay, as in SQS.
const MAX_VISIBILITY: Duration = Duration::from_secs(12 * 60 * 60);

/// Largest `max_receive`, as SQS's `maxReceiveCount`.
const MAX_RECEIVE_LIMIT: u32 = 1000;

/// Longest queue name, as in SQS (which also allows only letters, digits, `-` and `_`).
const MAX_NAME_LEN: usize = 80;

/// How often an idle long poll looks again without being woken: sends made by another process
/// that opened the same file (a CLI) do not ring this process's wakers.
const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// The queue service of an [`EmbeddedDb`].
#[derive(Debug, Clone)]
pub struct EmbeddedQueue {
    db: Arc<EmbeddedDb>,
}

impl EmbeddedQueue {
    pub(super) fn new(db: Arc<EmbeddedDb>) -> Self {
        Self { db }
    }
}

#[async_trait]
impl Queue for EmbeddedQueue {
    async fn ensure(&self, spec: &QueueSpec) -> Result<()> {
        validate_name(&spec.name)?;
        if !(1..=MAX_RECEIVE_LIMIT).contains(&spec.max_receive) {
            return Err(Error::Invalid(format!(
                "max_receive of queue `{}` must be 1 to {MAX_RECEIVE_LIMIT}, got {}",
                spec.name, spec.max_receive
            )));
        }
        let spec = spec.clone();
        self.db
            .write(move |conn, _| {
                conn.prepare_cached(
                    "INSERT INTO queues (name, max_receive) VALUES (?1, ?2)
                     ON CONFLICT (name) DO UPDATE SET max_receive = excluded.max_receive",
                )?
                .execute(params![spec.name, spec.max_receive])?;
                Ok(())
            })
            .await
    }

    async fn send(&self, queue: &str, messages: Vec<OutgoingMessage>) -> Result<Vec<String>> {
        if messages.len() > MAX_BATCH {
            return Err(Error::Invalid(format!(
                "a send takes at most {MAX_BATCH} messages, got {}",
                messages.len()
            )));
        }
        for m in &messages {
            validate_delay(m.delay)?;
        }
        let ids: Vec<String> = messages
            .iter()
            .map(|m| m.id.clone().unwrap_or_else(new_id))
            .collect();
        let queue = queue.to_string();
        let reply = ids.clone();
        self.db
            .write(move |conn, wakes| {
                let q = queue_id_of(conn, &queue)?;
                let now = now_ms();
                for (id, m) in ids.iter().zip(&messages) {
                    insert_message(conn, q, id, m, now)?;
                }
                wakes.add(&queue, messages.len());
                Ok(())
            })
            .await?;
        Ok(reply)
    }

    async fn receive(&self, queue: &str, opts: ReceiveOptions) -> Result<Vec<ReceivedMessage>> {
        if !(1..=MAX_BATCH).contains(&opts.max_messages) {
            return Err(Error::Invalid(format!(
                "max_messages must be 1 to {MAX_BATCH}, got {}",
                opts.max_messages
            )));
        }
        validate_visibility("visibility timeout", opts.visibility)?;
        if opts.wait > MAX_WAIT {
            return Err(Error::Invalid(format!(
                "long-poll wait must be at most {} s, got {:?}",
                MAX_WAIT.as_secs(),
                opts.wait
            )));
        }
        let deadline = Instant::now() + opts.wait;
        let waker = self.db.waker(queue);
        loop {
            // Registered before looking, so a send committed after the look still wakes us.
            let notified = waker.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();

            let name = queue.to_string();
            let (max, visibility) = (opts.max_messages, duration_ms(opts.visibility));
            let (messages, next_due) = self
                .db
                .write(move |conn, wakes| lease_messages(conn, wakes, &name, max, visibility))
                .await?;
            let now = Instant::now();
            if !messages.is_empty() || now >= deadline {
                return Ok(messages);
            }
            let mut wake_at = deadline.min(now + POLL_INTERVAL);
            if let Some(due) = next_due {
                let until_due = Duration::from_millis(due.saturating_sub(now_ms()).max(0) as u64);
                wake_at = wake_at.min(now + until_due);
            }
            tokio::select! {
                _ = &mut notified => {}
                _ = tokio::time::sleep_until(wake_at) => {}
            }
        }
    }

    async fn commit(
        &self,
        queue: &str,
        receipt: &str,
        completion: Completion,
    ) -> Result<CommitOutcome> {
        for e in &completion.emitted {
            validate_delay(e.message.delay)?;
        }
        if let Some(kv) = &completion.kv {
            store::validate_commit(kv)?;
        }
        let lease = Lease::parse(receipt)?;
        let queue = queue.to_string();
        self.db
            .write(move |conn, wakes| {
                let q = queue_id_of(conn, &queue)?;
                // Everything that can fail for a reason of its own comes before the first write.
                let mut targets = Vec::with_capacity(completion.emitted.len());
                for e in &completion.emitted {
                    targets.push((
                        queue_id_of(conn, &e.queue)?,
                        encode_attrs(&e.message.attributes)?,
                    ));
                }
                let mut outcome = CommitOutcome::Committed {
                    versions: Vec::new(),
                };
                // The delete checks the lease: a stale one deletes nothing and fails the job
                // before its first write. With kv, the reads' checks come first: they write
                // nothing either (a stale lease whose reads also changed reports the conflict;
                // the run that follows finds the lease gone).
                match &completion.kv {
                    None => lease.delete(conn, q)?,
                    Some(kv) => {
                        if let Some(r) = &kv.record
                            && store::record_exists(conn, &r.key)?
                        {
                            lease.delete(conn, q)?;
                            return Ok(CommitOutcome::Duplicate);
                        }
                        let sums = match store::check_commit(conn, kv)? {
                            store::Checked::Conflict(conflict) => return Ok(conflict),
                            store::Checked::Ready(sums) => sums,
                        };
                        lease.delete(conn, q)?;
                        outcome = store::write_commit(conn, kv, sums)?;
                        if let Some(r) = &kv.record {
                            store::insert_record(conn, r)?;
                        }
                    }
                }
                let now = now_ms();
                for (e, (target, attrs)) in completion.emitted.iter().zip(targets) {
                    let id = e.message.id.clone().unwrap_or_else(new_id);
                    insert_encoded(conn, target, &id, &e.message, attrs, now)?;
                    wakes.add(&e.queue, 1);
                }
                wakes.count(q, |t| t.processed += 1);
                Ok(outcome)
            })
            .await
    }

    async fn release(&self, queue: &str, receipt: &str, delay: Duration) -> Result<()> {
        validate_visibility("release delay", delay)?;
        let lease = Lease::parse(receipt)?;
        let (queue, delay) = (queue.to_string(), duration_ms(delay));
        self.db
            .write(move |conn, wakes| {
                let q = queue_row(conn, &queue)?;
                let seq = lease.check(conn, q.id)?;
                // The receive that leased it is taken back: it was not an attempt.
                conn.prepare_cached(
                    "UPDATE messages SET visible_at = ?2, leased = 0, token = NULL,
                     receive_count = MAX(receive_count - 1, 0) WHERE seq = ?1",
                )?
                .execute(params![seq, now_ms().saturating_add(delay)])?;
                wakes.add(&queue, 1);
                Ok(())
            })
            .await
    }

    async fn delete(&self, queue: &str, receipts: &[String]) -> Result<()> {
        let leases = receipts
            .iter()
            .map(|r| Lease::parse(r))
            .collect::<Result<Vec<_>>>()?;
        let queue = queue.to_string();
        self.db
            .write(move |conn, _| {
                let q = queue_row(conn, &queue)?;
                // All or nothing: every receipt is checked before any message is deleted.
                let seqs = leases
                    .iter()
                    .map(|l| l.check(conn, q.id))
                    .collect::<Result<Vec<_>>>()?;
                for seq in seqs {
                    delete_message(conn, seq)?;
                }
                Ok(())
            })
            .await
    }

    async fn retry_later(
        &self,
        queue: &str,
        receipt: &str,
        delay: Duration,
        reason: &str,
    ) -> Result<()> {
        validate_visibility("retry delay", delay)?;
        let lease = Lease::parse(receipt)?;
        let (queue, reason, delay) = (queue.to_string(), reason.to_string(), duration_ms(delay));
        self.db
            .write(move |conn, wakes| {
                let q = queue_row(conn, &queue)?;
                let seq = lease.check(conn, q.id)?;
                conn.prepare_cached(
                    "UPDATE messages SET visible_at = ?2, leased = 0, last_error = ?3 WHERE seq = ?1",
                )?
                .execute(params![seq, now_ms().saturating_add(delay), reason])?;
                wakes.count(q.id, |t| t.retried += 1);
                wakes.add(&queue, 1);
                Ok(())
            })
            .await
    }

    async fn extend_lease(&self, queue: &str, receipt: &str, visibility: Duration) -> Result<()> {
        validate_visibility("visibility timeout", visibility)?;
        let lease = Lease::parse(receipt)?;
        let (queue, visibility) = (queue.to_string(), duration_ms(visibility));
        self.db
            .write(move |conn, _| {
                let q = queue_row(conn, &queue)?;
                let seq = lease.check(conn, q.id)?;
                conn.prepare_cached(
                    "UPDATE messages SET visible_at = ?2, leased = 1 WHERE seq = ?1",
                )?
                .execute(params![seq, now_ms().saturating_add(visibility)])?;
                Ok(())
            })
            .await
    }

    async fn dead_letter(
        &self,
        queue: &str,
        message: &ReceivedMessage,
        reason: &str,
    ) -> Result<()> {
        let lease = Lease::parse(&message.receipt)?;
        let (queue, reason) = (queue.to_string(), reason.to_string());
        self.db
            .write(move |conn, wakes| {
                let q = queue_row(conn, &queue)?;
                let seq = lease.check(conn, q.id)?;
                move_to_dlq(conn, seq, &reason, now_ms())?;
                wakes.count(q.id, |t| t.failed += 1);
                Ok(())
            })
            .await
    }

    async fn stats(&self, queue: &str) -> Result<QueueStats> {
        let queue = queue.to_string();
        self.db
            .read(move |conn| {
                // One read transaction: all figures come from the same snapshot.
                let tx = conn.unchecked_transaction()?;
                let (id, processed, failed, retried) = tx
                    .prepare_cached(
                        "SELECT id, processed, failed, retried FROM queues WHERE name = ?1",
                    )?
                    .query_row([&queue], |r| {
                        Ok((r.get::<_, i64>(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
                    })
                    .optional()?
                    .ok_or_else(|| Error::QueueNotFound(queue.clone()))?;
                let now = now_ms();
                let visible: i64 = tx
                    .prepare_cached(
                        "SELECT COUNT(*) FROM messages WHERE queue = ?1 AND visible_at <= ?2",
                    )?
                    .query_row(params![id, now], |r| r.get(0))?;
                let (mut in_flight, mut delayed) = (0, 0);
                let mut stmt = tx.prepare_cached(
                    "SELECT leased, COUNT(*) FROM messages WHERE queue = ?1 AND visible_at > ?2
                     GROUP BY leased",
                )?;
                let mut rows = stmt.query(params![id, now])?;
                while let Some(row) = rows.next()? {
                    let n: i64 = row.get(1)?;
                    if row.get::<_, i64>(0)? != 0 {
                        in_flight = n;
                    } else {
                        delayed = n;
                    }
                }
                drop(rows);
                drop(stmt);
                let dlq: i64 = tx
                    .prepare_cached("SELECT COUNT(*) FROM dead_letters WHERE queue = ?1")?
                    .query_row([id], |r| r.get(0))?;
                let oldest: Option<i64> = tx
                    .prepare_cached("SELECT MIN(sent_at) FROM messages WHERE queue = ?1")?
                    .query_row([id], |r| r.get(0))?;
                Ok(QueueStats {
                    visible: visible as u64,
                    in_flight: in_flight as u64,
                    delayed: delayed as u64,
                    dlq: dlq as u64,
                    oldest_age_ms: oldest.map(|sent| now.saturating_sub(sent).max(0) as u64),
                    processed: to_u64(processed),
                    failed: to_u64(failed),
                    retried: to_u64(retried),
                })
            })
            .await
    }

    async fn dlq_list(&self, queue: &str, max: usize) -> Result<Vec<DeadLetter>> {
        let queue = queue.to_string();
        let max = max.min(MAX_DLQ_LIST);
        self.db
            .read(move |conn| {
                let tx = conn.unchecked_transaction()?;
                let id = queue_id(&tx, &queue)?;
                let mut stmt = tx.prepare_cached(
                    "SELECT id, body, attrs, reason, receive_count, dead_at, history
                     FROM dead_letters WHERE queue = ?1 ORDER BY seq LIMIT ?2",
                )?;
                let mut rows = stmt.query(params![id, max as i64])?;
                let mut out = Vec::new();
                while let Some(r) = rows.next()? {
                    out.push(dead_letter_row(r)?);
                }
                Ok(out)
            })
            .await
    }

    /// The cursor is the row number (`seq`) of the page's last letter: pages are exact, and a
    /// letter dead-lettered meanwhile appears on a later page.
    async fn dlq_page(&self, queue: &str, after: Option<&str>, limit: usize) -> Result<DlqPage> {
        let after = match after {
            None => 0,
            Some(c) => c
                .parse::<i64>()
                .ok()
                .filter(|seq| *seq >= 0)
                .ok_or_else(|| Error::Invalid(format!("`{c}` is not a dead-letter cursor")))?,
        };
        let limit = dead::clamp_limit(limit);
        let queue = queue.to_string();
        self.db
            .read(move |conn| {
                let tx = conn.unchecked_transaction()?;
                let id = queue_id(&tx, &queue)?;
                // length() and substr() are computed by SQLite: no whole body is loaded.
                let mut stmt = tx.prepare_cached(
                    "SELECT seq, id, length(body), substr(body, 1, ?4), attrs, reason,
                     receive_count, dead_at, history FROM dead_letters
                     WHERE queue = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
                )?;
                // One more than asked tells whether there is a next page.
                let mut rows =
                    stmt.query(params![id, after, (limit + 1) as i64, PREVIEW_BYTES as i64])?;
                let mut page = DlqPage::default();
                let mut last = None;
                while let Some(r) = rows.next()? {
                    if page.letters.len() == limit {
                        page.next = last.map(|seq: i64| seq.to_string());
                        break;
                    }
                    last = Some(r.get(0)?);
                    let head: Option<Vec<u8>> = r.get(3)?;
                    page.letters.push(DeadLetterSummary {
                        id: r.get(1)?,
                        size: to_u64(r.get(2)?),
                        preview: dead::preview(head.as_deref().unwrap_or_default()),
                        attributes: dead::summary_attributes(decode_attrs(r.get(4)?)?),
                        reason: r.get(5)?,
                        receive_count: r.get(6)?,
                        dead_at_ms: to_u64(r.get(7)?),
                        history: dead::decode_history(r.get::<_, Option<String>>(8)?.as_deref())?,
                    });
                }
                Ok(page)
            })
            .await
    }

    async fn dlq_get(&self, queue: &str, id: &str) -> Result<Option<DeadLetter>> {
        let (queue, letter) = (queue.to_string(), id.to_string());
        self.db
            .read(move |conn| {
                let tx = conn.unchecked_transaction()?;
                let id = queue_id(&tx, &queue)?;
                // Ids are unique unless a stable id died twice; the oldest is the one listed first.
                let mut stmt = tx.prepare_cached(
                    "SELECT id, body, attrs, reason, receive_count, dead_at, history
                     FROM dead_letters WHERE queue = ?1 AND id = ?2 ORDER BY seq LIMIT 1",
                )?;
                let mut rows = stmt.query(params![id, letter])?;
                let found = rows.next()?.map(dead_letter_row).transpose()?;
                Ok(found)
            })
            .await
    }

    async fn dlq_redrive(&self, queue: &str) -> Result<u64> {
        let queue = queue.to_string();
        self.db
            .write(move |conn, wakes| {
                let q = queue_row(conn, &queue)?;
                // Only the small columns are read here; bodies are copied inside SQLite.
                let mut deaths = Vec::new();
                {
                    let mut stmt = conn.prepare_cached(
                        "SELECT seq, receive_count, reason, dead_at, history FROM dead_letters
                         WHERE queue = ?1 ORDER BY seq",
                    )?;
                    let mut rows = stmt.query([q.id])?;
                    while let Some(r) = rows.next()? {
                        let history = dead::push_death(
                            dead::decode_history(r.get::<_, Option<String>>(4)?.as_deref())?,
                            PastDeath {
                                receive_count: r.get(1)?,
                                reason: r.get(2)?,
                                dead_at_ms: to_u64(r.get(3)?),
                            },
                        );
                        deaths.push((r.get::<_, i64>(0)?, dead::encode_history(&history)));
                    }
                }
                let now = now_ms();
                for (seq, history) in &deaths {
                    conn.prepare_cached(
                        "INSERT INTO messages (queue, id, body, attrs, sent_at, visible_at, history)
                         SELECT queue, id, body, attrs, sent_at, ?2, ?3 FROM dead_letters
                         WHERE seq = ?1",
                    )?
                    .execute(params![seq, now, history])?;
                }
                conn.prepare_cached("DELETE FROM dead_letters WHERE queue = ?1")?
                    .execute([q.id])?;
                wakes.add(&queue, deaths.len());
                Ok(deaths.len() as u64)
            })
            .await
    }
}

fn queue_id(conn: &Connection, name: &str) -> Result<i64> {
    conn.prepare_cached("SELECT id FROM queues WHERE name = ?1")?
        .query_row([name], |r| r.get(0))
        .optional()?
        .ok_or_else(|| Error::QueueNotFound(name.to_string()))
}

/// A dead letter from `id, body, attrs, reason, receive_count, dead_at, history`.
fn dead_letter_row(r: &rusqlite::Row<'_>) -> Result<DeadLetter> {
    Ok(DeadLetter {
        id: r.get(0)?,
        body: r.get(1)?,
        attributes: decode_attrs(r.get(2)?)?,
        reason: r.get(3)?,
        receive_count: r.get(4)?,
        dead_at_ms: to_u64(r.get(5)?),
        history: dead::decode_history(r.get::<_, Option<String>>(6)?.as_deref())?,
    })
}

struct QueueRow {
    id: i64,
    max_receive: i64,
}

fn queue_row(conn: &Connection, name: &str) -> Result<QueueRow> {
    conn.prepare_cached("SELECT id, max_receive FROM queues WHERE name = ?1")?
        .query_row([name], |r| {
            Ok(QueueRow {
                id: r.get(0)?,
                max_receive: r.get(1)?,
            })
        })
        .optional()?
        .ok_or_else(|| Error::QueueNotFound(name.to_string()))
}

thread_local! {
    /// Queue row ids by name, on the writer thread (one per database file). A queue's row is
    /// never deleted, so its id never changes once committed; the cache is cleared when a group
    /// rolls back, which may undo the creation of a queue.
    static QUEUE_IDS: std::cell::RefCell<std::collections::HashMap<String, i64>> =
        Default::default();
}

/// The row id of queue `name`, from the writer's cache when it has it.
fn queue_id_of(conn: &Connection, name: &str) -> Result<i64> {
    if let Some(id) = QUEUE_IDS.with_borrow(|ids| ids.get(name).copied()) {
        return Ok(id);
    }
    let id = queue_row(conn, name)?.id;
    QUEUE_IDS.with_borrow_mut(|ids| ids.insert(name.to_string(), id));
    Ok(id)
}

/// Forgets the cached queue ids of this thread (after a rollback).
pub(super) fn forget_queue_ids() {
    QUEUE_IDS.with_borrow_mut(|ids| ids.clear());
}

/// A parsed receipt handle: the message's row and the token of the receive that leased it.
#[derive(Debug, Clone, Copy)]
struct Lease {
    seq: i64,
    token: i64,
}

impl Lease {
    fn parse(receipt: &str) -> Result<Self> {
        let parsed = receipt.split_once('.').and_then(|(seq, token)| {
            Some(Lease {
                seq: i64::from_str_radix(seq, 16).ok()?,
                token: u64::from_str_radix(token, 16).ok()? as i64,
            })
        });
        parsed.ok_or_else(|| {
            Error::Invalid(format!(
                "`{receipt}` is not a receipt handle of the embedded queue"
            ))
        })
    }

    fn format(seq: i64, token: i64) -> String {
        format!("{seq:x}.{:x}", token as u64)
    }

    /// The message's row if this is still its current lease in `queue`.
    fn check(&self, conn: &Connection, queue: i64) -> Result<i64> {
        conn.prepare_cached(
            "SELECT seq FROM messages WHERE seq = ?1 AND queue = ?2 AND token = ?3",
        )?
        .query_row(params![self.seq, queue, self.token], |r| r.get(0))
        .optional()?
        .ok_or(Error::StaleReceipt)
    }

    /// Deletes the message if this is still its current lease in `queue`; a stale lease deletes
    /// nothing.
    fn delete(&self, conn: &Connection, queue: i64) -> Result<()> {
        let deleted = conn
            .prepare_cached("DELETE FROM messages WHERE seq = ?1 AND queue = ?2 AND token = ?3")?
            .execute(params![self.seq, queue, self.token])?;
        if deleted == 0 {
            return Err(Error::StaleReceipt);
        }
        Ok(())
    }
}

/// The write half of a receive: leases up to `max` due messages, dead-lettering those that have
/// used up their receives. Returns the leased messages and, when there are none, when the next
/// hidden message becomes due.
fn lease_messages(
    conn: &Connection,
    wakes: &mut Wakes,
    queue: &str,
    max: usize,
    visibility: i64,
) -> Result<(Vec<ReceivedMessage>, Option<i64>)> {
    let q = queue_row(conn, queue)?;
    let now = now_ms();
    let mut out = Vec::with_capacity(max);
    let mut dead = 0;
    loop {
        let want = max - out.len();
        let mut candidates = Vec::with_capacity(want);
        {
            let mut stmt = conn.prepare_cached(
                "SELECT seq, id, body, attrs, sent_at, receive_count, last_error FROM messages
                 WHERE queue = ?1 AND visible_at <= ?2 ORDER BY visible_at LIMIT ?3",
            )?;
            let mut rows = stmt.query(params![q.id, now, want as i64])?;
            while let Some(r) = rows.next()? {
                candidates.push((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, Vec<u8>>(2)?,
                    r.get::<_, Option<Vec<u8>>>(3)?,
                    r.get::<_, i64>(4)?,
                    r.get::<_, i64>(5)?,
                    r.get::<_, Option<String>>(6)?,
                ));
            }
        }
        let found = candidates.len();
        for (seq, id, body, attrs, sent_at, receive_count, last_error) in candidates {
            if receive_count >= q.max_receive {
                let reason = format!(
                    "received {receive_count} times (max_receive {}); last error: {}",
                    q.max_receive,
                    last_error.as_deref().unwrap_or("none recorded")
                );
                move_to_dlq(conn, seq, &reason, now)?;
                dead += 1;
                continue;
            }
            let token = rand::random::<i64>();
            conn.prepare_cached(
                "UPDATE messages SET visible_at = ?2, leased = 1, receive_count = receive_count + 1,
                 token = ?3 WHERE seq = ?1",
            )?
            .execute(params![seq, now.saturating_add(visibility), token])?;
            out.push(ReceivedMessage {
                id,
                receipt: Lease::format(seq, token),
                body,
                attributes: decode_attrs(attrs)?,
                receive_count: (receive_count + 1) as u32,
                sent_at_ms: to_u64(sent_at),
                last_error,
            });
        }
        if out.len() == max || found < want {
            break;
        }
    }
    if dead > 0 {
        wakes.count(q.id, |t| t.failed += dead);
    }
    let next_due = if out.is_empty() {
        conn.prepare_cached(
            "SELECT MIN(visible_at) FROM messages WHERE queue = ?1 AND visible_at > ?2",
        )?
        .query_row(params![q.id, now], |r| r.get(0))?
    } else {
        None
    };
    Ok((out, next_due))
}

fn insert_message(
    conn: &Connection,
    queue: i64,
    id: &str,
    m: &OutgoingMessage,
    now: i64,
) -> Result<()> {
    insert_encoded(conn, queue, id, m, encode_attrs(&m.attributes)?, now)
}

/// [`insert_message`] with the attributes already encoded.
fn insert_encoded(
    conn: &Connection,
    queue: i64,
    id: &str,
    m: &OutgoingMessage,
    attrs: Option<Vec<u8>>,
    now: i64,
) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO messages (queue, id, body, attrs, sent_at, visible_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![
        queue,
        id,
        m.body,
        attrs,
        now,
        now.saturating_add(duration_ms(m.delay))
    ])?;
    Ok(())
}

fn delete_message(conn: &Connection, seq: i64) -> Result<()> {
    conn.prepare_cached("DELETE FROM messages WHERE seq = ?1")?
        .execute([seq])?;
    Ok(())
}

fn move_to_dlq(conn: &Connection, seq: i64, reason: &str, now: i64) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO dead_letters
             (queue, id, body, attrs, sent_at, receive_count, reason, dead_at, history)
         SELECT queue, id, body, attrs, sent_at, receive_count, ?2, ?3, history
         FROM messages WHERE seq = ?1",
    )?
    .execute(params![seq, reason, now])?;
    delete_message(conn, seq)
}

/// Adds a group's totals to a queue's running totals (see [`Wakes::count`]).
pub(super) fn add_totals(conn: &Connection, queue: i64, t: Totals) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "UPDATE queues SET processed = processed + ?2, failed = failed + ?3,
         retried = retried + ?4 WHERE id = ?1",
    )?
    .execute(params![queue, t.processed, t.failed, t.retried])?;
    Ok(())
}

fn encode_attrs(attrs: &[(String, String)]) -> Result<Option<Vec<u8>>> {
    if attrs.is_empty() {
        return Ok(None);
    }
    serde_json::to_vec(attrs)
        .map(Some)
        .map_err(|e| Error::Invalid(format!("message attributes cannot be encoded: {e}")))
}

fn decode_attrs(raw: Option<Vec<u8>>) -> Result<Vec<(String, String)>> {
    match raw {
        None => Ok(Vec::new()),
        Some(raw) => serde_json::from_slice(&raw).map_err(|e| Error::Backend {
            service: "sqlite".into(),
            message: format!("stored message attributes are corrupt: {e}"),
        }),
    }
}

fn new_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

fn to_u64(v: i64) -> u64 {
    v.max(0) as u64
}

fn validate_name(name: &str) -> Result<()> {
    let ok_chars = name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if name.is_empty() || name.len() > MAX_NAME_LEN || !ok_chars {
        return Err(Error::Invalid(format!(
            "queue name `{name}` must be 1 to {MAX_NAME_LEN} letters, digits, `-` or `_`"
        )));
    }
    Ok(())
}

fn validate_delay(delay: Duration) -> Result<()> {
    if delay > MAX_DELAY {
        return Err(Error::Invalid(format!(
            "message delay must be at most {} s, got {delay:?}",
            MAX_DELAY.as_secs()
        )));
    }
    Ok(())
}

fn validate_visibility(what: &str, d: Duration) -> Result<()> {
    if d > MAX_VISIBILITY {
        return Err(Error::Invalid(format!(
            "{what} must be at most {} s, got {d:?}",
            MAX_VISIBILITY.as_secs()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::embedded::FILE_NAME;
    use crate::{Emitted, Store};

    fn opts(max: usize, visibility: Duration, wait: Duration) -> ReceiveOptions {
        ReceiveOptions {
            max_messages: max,
            visibility,
            wait,
        }
    }

    async fn setup(max_receive: u32) -> (tempfile::TempDir, Arc<EmbeddedDb>, EmbeddedQueue) {
        let dir = tempfile::tempdir().unwrap();
        let db = EmbeddedDb::open(dir.path().join(FILE_NAME)).unwrap();
        let q = db.queue();
        q.ensure(&QueueSpec {
            name: "q".into(),
            max_receive,
        })
        .await
        .unwrap();
        (dir, db, q)
    }

    #[tokio::test]
    async fn a_release_takes_the_receive_back_and_stales_the_receipt() {
        let (_dir, _db, q) = setup(1).await;
        q.send("q", vec![OutgoingMessage::new("a")]).await.unwrap();
        let recv = || q.receive("q", opts(1, Duration::from_secs(30), Duration::ZERO));
        for _ in 0..5 {
            let got = recv().await.unwrap();
            assert_eq!(
                got[0].receive_count, 1,
                "a released receive is not an attempt"
            );
            q.release("q", &got[0].receipt, Duration::ZERO)
                .await
                .unwrap();
            let err = q.complete("q", &got[0].receipt, vec![]).await.unwrap_err();
            assert!(matches!(err, Error::StaleReceipt), "{err:?}");
        }
        let got = recv().await.unwrap();
        q.complete("q", &got[0].receipt, vec![]).await.unwrap();
        assert_eq!(q.stats("q").await.unwrap().dlq, 0);
    }

    #[tokio::test]
    async fn a_commit_applies_kv_emits_and_the_delete_in_one_transaction() {
        use crate::store::{CommitOutcome, KvCommit};
        let (_dir, db, q) = setup(5).await;
        q.ensure(&QueueSpec {
            name: "next".into(),
            max_receive: 5,
        })
        .await
        .unwrap();
        let store = db.store();
        q.send(
            "q",
            vec![OutgoingMessage::new("a"), OutgoingMessage::new("b")],
        )
        .await
        .unwrap();
        let got = q
            .receive("q", opts(2, Duration::from_secs(30), Duration::ZERO))
            .await
            .unwrap();
        // Both read `n` absent and write it: one commit wins, the other conflicts.
        let txn = |v: &str| KvCommit {
            ns: "q".into(),
            reads: vec![("n".into(), 0)],
            writes: vec![(
                "n".into(),
                Some(bytes::Bytes::copy_from_slice(v.as_bytes())),
            )],
            adds: Vec::new(),
            record: None,
        };
        let completion = |v: &str| Completion {
            id: Some(v.into()),
            emitted: vec![Emitted {
                queue: "next".into(),
                message: OutgoingMessage {
                    id: Some(format!("{v}-0")),
                    ..OutgoingMessage::new(v)
                },
            }],
            kv: Some(txn(v)),
        };
        let won = q
            .commit("q", &got[0].receipt, completion("a"))
            .await
            .unwrap();
        assert!(matches!(won, CommitOutcome::Committed { .. }), "{won:?}");
        let lost = q
            .commit("q", &got[1].receipt, completion("b"))
            .await
            .unwrap();
        assert_eq!(
            lost,
            CommitOutcome::Conflict {
                keys: vec!["n".into()]
            }
        );
        assert_eq!(store.get("q", "n").await.unwrap().unwrap().as_ref(), b"a");
        let next = q
            .receive("next", opts(10, Duration::from_secs(30), Duration::ZERO))
            .await
            .unwrap();
        assert_eq!(next.len(), 1, "only the winner's emit was sent");
        assert_eq!(next[0].id, "a-0", "emits keep their stable id");
        let stats = q.stats("q").await.unwrap();
        assert_eq!((stats.processed, stats.in_flight), (1, 1), "{stats:?}");
        // The loser keeps its lease and commits after reading again.
        let v = store.get_versioned("q", "n").await.unwrap().version;
        let mut retry = completion("b");
        retry.kv.as_mut().unwrap().reads = vec![("n".into(), v)];
        let ok = q.commit("q", &got[1].receipt, retry).await.unwrap();
        assert!(matches!(ok, CommitOutcome::Committed { .. }), "{ok:?}");
    }

    #[tokio::test]
    async fn totals_and_last_error_are_kept_in_the_file() {
        let (dir, db, q) = setup(2).await;
        q.send(
            "q",
            vec![OutgoingMessage::new("a"), OutgoingMessage::new("b")],
        )
        .await
        .unwrap();
        let got = q
            .receive("q", opts(10, Duration::from_secs(30), Duration::ZERO))
            .await
            .unwrap();
        assert_eq!(got.len(), 2);
        q.complete("q", &got[0].receipt, vec![]).await.unwrap();
        q.retry_later("q", &got[1].receipt, Duration::ZERO, "db timeout")
            .await
            .unwrap();
        let again = q
            .receive("q", opts(10, Duration::ZERO, Duration::ZERO))
            .await
            .unwrap();
        assert_eq!(again[0].last_error.as_deref(), Some("db timeout"));
        assert_eq!(again[0].receive_count, 2);
        // Its lease was zero seconds: the next receive finds it used up and dead-letters it.
        assert!(
            q.receive("q", opts(10, Duration::ZERO, Duration::ZERO))
                .await
                .unwrap()
                .is_empty()
        );
        let dead = q.dlq_list("q", 10).await.unwrap();
        assert_eq!(
            dead[0].reason,
            "received 2 times (max_receive 2); last error: db timeout"
        );

        drop((q, db));
        let db = EmbeddedDb::open(dir.path().join(FILE_NAME)).unwrap();
        let stats = db.queue().stats("q").await.unwrap();
        assert_eq!(
            (stats.processed, stats.retried, stats.failed, stats.dlq),
            (1, 1, 1, 1),
            "{stats:?}"
        );
    }

    #[tokio::test]
    async fn a_stale_completion_emits_nothing() {
        let (_dir, _db, q) = setup(5).await;
        q.ensure(&QueueSpec {
            name: "next".into(),
            max_receive: 5,
        })
        .await
        .unwrap();
        q.send("q", vec![OutgoingMessage::new("a")]).await.unwrap();
        let first = q
            .receive("q", opts(1, Duration::ZERO, Duration::ZERO))
            .await
            .unwrap()
            .remove(0);
        let second = q
            .receive("q", opts(1, Duration::from_secs(30), Duration::ZERO))
            .await
            .unwrap()
            .remove(0);
        let emitted = vec![Emitted {
            queue: "next".into(),
            message: OutgoingMessage::new("out"),
        }];
        let err = q
            .complete("q", &first.receipt, emitted.clone())
            .await
            .unwrap_err();
        assert!(matches!(err, Error::StaleReceipt), "{err:?}");
        assert_eq!(
            q.stats("next").await.unwrap().visible,
            0,
            "nothing emitted by a stale completion"
        );
        q.complete("q", &second.receipt, emitted).await.unwrap();
        assert_eq!(q.stats("next").await.unwrap().visible, 1);
        assert_eq!(q.stats("q").await.unwrap().processed, 1);
    }

    #[tokio::test]
    async fn delete_is_all_or_nothing_and_receipts_are_checked() {
        let (_dir, _db, q) = setup(5).await;
        q.send(
            "q",
            vec![OutgoingMessage::new("a"), OutgoingMessage::new("b")],
        )
        .await
        .unwrap();
        let got = q
            .receive("q", opts(10, Duration::from_secs(30), Duration::ZERO))
            .await
            .unwrap();
        q.delete("q", &[got[0].receipt.clone()]).await.unwrap();
        let err = q
            .delete("q", &[got[1].receipt.clone(), got[0].receipt.clone()])
            .await
            .unwrap_err();
        assert!(matches!(err, Error::StaleReceipt), "{err:?}");
        assert_eq!(
            q.stats("q").await.unwrap().in_flight,
            1,
            "the valid receipt's message is kept"
        );

        let err = q.delete("q", &["not-a-receipt".into()]).await.unwrap_err();
        assert!(err.to_string().contains("not-a-receipt"), "{err}");
        q.ensure(&QueueSpec {
            name: "other".into(),
            max_receive: 5,
        })
        .await
        .unwrap();
        let err = q
            .extend_lease("other", &got[1].receipt, Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(
            matches!(err, Error::StaleReceipt),
            "a receipt of another queue: {err:?}"
        );
    }

    #[tokio::test]
    async fn bad_input_is_rejected_with_a_clear_error() {
        let (_dir, _db, q) = setup(5).await;
        let spec = |name: &str, max_receive| QueueSpec {
            name: name.into(),
            max_receive,
        };
        let err = q
            .ensure(&spec("has space", 5))
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("has space") && err.contains("letters"),
            "{err}"
        );
        let err = q.ensure(&spec("q", 0)).await.unwrap_err().to_string();
        assert!(err.contains("max_receive"), "{err}");
        let late = OutgoingMessage {
            delay: Duration::from_secs(901),
            ..OutgoingMessage::new("x")
        };
        let err = q.send("q", vec![late]).await.unwrap_err().to_string();
        assert!(err.contains("delay"), "{err}");
        let err = q
            .receive("q", opts(0, Duration::ZERO, Duration::ZERO))
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("max_messages"), "{err}");
        let err = q
            .receive("q", opts(1, Duration::ZERO, Duration::from_secs(21)))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("wait"), "{err}");
        let err = q
            .receive("q", opts(1, Duration::from_secs(13 * 3600), Duration::ZERO))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("visibility"), "{err}");
    }

    #[tokio::test]
    async fn ensure_updates_max_receive_and_stats_report_the_oldest_age() {
        let (_dir, _db, q) = setup(5).await;
        q.ensure(&QueueSpec {
            name: "q".into(),
            max_receive: 1,
        })
        .await
        .unwrap();
        assert_eq!(q.stats("q").await.unwrap().oldest_age_ms, None);
        q.send("q", vec![OutgoingMessage::new("a")]).await.unwrap();
        assert!(q.stats("q").await.unwrap().oldest_age_ms.is_some());
        q.receive("q", opts(1, Duration::ZERO, Duration::ZERO))
            .await
            .unwrap();
        assert!(
            q.receive("q", opts(1, Duration::ZERO, Duration::ZERO))
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            q.stats("q").await.unwrap().dlq,
            1,
            "max_receive 1 allows a single delivery"
        );
    }

    #[tokio::test]
    async fn concurrent_writers_share_group_commits_without_losing_any() {
        let (_dir, _db, q) = setup(5).await;
        let q = Arc::new(q);
        let tasks: Vec<_> = (0..32)
            .map(|i| {
                let q = q.clone();
                tokio::spawn(async move {
                    for j in 0..20 {
                        q.send("q", vec![OutgoingMessage::new(format!("{i}-{j}"))])
                            .await
                            .unwrap();
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        let mut bodies = std::collections::HashSet::new();
        loop {
            let got = q
                .receive("q", opts(10, Duration::from_secs(30), Duration::ZERO))
                .await
                .unwrap();
            if got.is_empty() {
                break;
            }
            for m in got {
                assert!(bodies.insert(m.body), "delivered twice");
            }
        }
        assert_eq!(bodies.len(), 32 * 20);
    }
}
