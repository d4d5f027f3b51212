//! The writer thread: drains queued write jobs and commits every job that is waiting in one
//! transaction (group commit), then answers each caller and wakes long-polling receivers.
//!
//! Jobs check their own preconditions before writing, so a job that fails for a reason of its
//! own (stale receipt, unknown queue) leaves nothing behind and the group still commits. A SQLite
//! error may leave a half-done job, so it rolls the group back and each job is re-run in a
//! transaction of its own: one bad job never fails its neighbours.

use std::collections::HashMap;

use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};

use super::Shared;
use crate::{Error, Result};

/// Most jobs committed in one transaction; bounds the latency a full group adds.
const MAX_GROUP: usize = 1024;

/// What a group's jobs leave for the writer to do around its commit: the long-poll wake-ups to
/// ring after it (queue name to number of messages that became receivable) and the running totals
/// to add before it, once per queue for the whole group instead of one `UPDATE` per job.
#[derive(Debug, Default)]
pub(super) struct Wakes {
    wakes: HashMap<String, usize>,
    totals: HashMap<i64, Totals>,
}

/// Additions to a queue's running totals (see `queue::add_totals`).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct Totals {
    pub processed: i64,
    pub failed: i64,
    pub retried: i64,
}

impl Wakes {
    /// Records that `n` messages of `queue` became receivable.
    pub(super) fn add(&mut self, queue: &str, n: usize) {
        if n == 0 {
            return;
        }
        if let Some(c) = self.wakes.get_mut(queue) {
            *c += n;
        } else {
            self.wakes.insert(queue.to_string(), n);
        }
    }

    /// Adds to the running totals of the queue with row id `queue`, written with the group.
    pub(super) fn count(&mut self, queue: i64, f: impl FnOnce(&mut Totals)) {
        f(self.totals.entry(queue).or_default());
    }

    fn clear(&mut self) {
        self.wakes.clear();
        self.totals.clear();
    }

    fn absorb(&mut self, other: Wakes) {
        for (q, n) in other.wakes {
            self.add(&q, n);
        }
    }

    /// Writes the totals inside the open transaction.
    fn write_totals(&mut self, conn: &Connection) -> rusqlite::Result<()> {
        for (queue, t) in self.totals.drain() {
            super::queue::add_totals(conn, queue, t)?;
        }
        Ok(())
    }
}

/// A write waiting for the writer thread.
pub(super) trait Job: Send {
    /// Runs inside the open transaction, keeping the outcome; true if it failed in a way that
    /// needs the transaction rolled back.
    fn apply(&mut self, conn: &Connection, wakes: &mut Wakes) -> bool;
    /// Replaces the outcome with an error (the commit failed).
    fn fail(&mut self, err: Error);
    /// Sends the outcome to the caller.
    fn reply(self: Box<Self>);
}

struct FnJob<T, F> {
    f: F,
    outcome: Option<Result<T>>,
    reply: Option<oneshot::Sender<Result<T>>>,
}

pub(super) fn job<T, F>(f: F, reply: Option<oneshot::Sender<Result<T>>>) -> Box<dyn Job>
where
    T: Send + 'static,
    F: FnMut(&Connection, &mut Wakes) -> Result<T> + Send + 'static,
{
    Box::new(FnJob {
        f,
        outcome: None,
        reply,
    })
}

impl<T, F> Job for FnJob<T, F>
where
    T: Send + 'static,
    F: FnMut(&Connection, &mut Wakes) -> Result<T> + Send + 'static,
{
    fn apply(&mut self, conn: &Connection, wakes: &mut Wakes) -> bool {
        let outcome = (self.f)(conn, wakes);
        let fatal = matches!(outcome, Err(Error::Sqlite(_)));
        self.outcome = Some(outcome);
        fatal
    }

    fn fail(&mut self, err: Error) {
        self.outcome = Some(Err(err));
    }

    fn reply(self: Box<Self>) {
        if let (Some(reply), Some(outcome)) = (self.reply, self.outcome) {
            // The caller may have given up waiting (its future was dropped); the write stands.
            let _ = reply.send(outcome);
        }
    }
}

/// The writer thread's loop; returns when every sender is gone and the channel is drained.
pub(super) fn run(
    conn: Connection,
    mut jobs: mpsc::UnboundedReceiver<Box<dyn Job>>,
    shared: &Shared,
) {
    let mut group: Vec<Box<dyn Job>> = Vec::with_capacity(MAX_GROUP);
    let mut wakes = Wakes::default();
    while let Some(first) = jobs.blocking_recv() {
        group.push(first);
        while group.len() < MAX_GROUP {
            match jobs.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        commit_group(&conn, &mut group, &mut jobs, &mut wakes);
        for job in group.drain(..) {
            job.reply();
        }
        for (queue, n) in wakes.wakes.drain() {
            let waker = shared.waker(&queue);
            // One wake per new message: each woken receiver takes at least one, and a wake that
            // finds no waiter is kept as a permit for the next receiver.
            for _ in 0..n.min(64) {
                waker.notify_one();
            }
        }
    }
}

/// Applies `group` in one transaction and commits it. Jobs that arrive while the group is being
/// applied join it before the commit (up to [`MAX_GROUP`]): they would otherwise wait for this
/// commit and then pay for one of their own, and most pages a group writes (the queues' tails,
/// their index, the totals) are shared, so a larger group writes fewer WAL frames per job.
fn commit_group(
    conn: &Connection,
    group: &mut Vec<Box<dyn Job>>,
    jobs: &mut mpsc::UnboundedReceiver<Box<dyn Job>>,
    wakes: &mut Wakes,
) {
    let together = (|| -> rusqlite::Result<bool> {
        begin(conn)?;
        let mut applied = 0;
        loop {
            for job in group[applied..].iter_mut() {
                if job.apply(conn, wakes) {
                    return Ok(false);
                }
            }
            applied = group.len();
            while group.len() < MAX_GROUP {
                match jobs.try_recv() {
                    Ok(job) => group.push(job),
                    Err(_) => break,
                }
            }
            if group.len() == applied {
                break;
            }
        }
        wakes.write_totals(conn)?;
        commit(conn)?;
        Ok(true)
    })();
    if matches!(together, Ok(true)) {
        return;
    }
    rollback(conn);
    wakes.clear();
    for job in group.iter_mut() {
        let mut own = Wakes::default();
        let result = (|| -> rusqlite::Result<bool> {
            begin(conn)?;
            if job.apply(conn, &mut own) {
                // The job's own SQLite error is its outcome; undo what it half did.
                return Ok(false);
            }
            own.write_totals(conn)?;
            commit(conn)?;
            Ok(true)
        })();
        match result {
            Ok(true) => wakes.absorb(own),
            Ok(false) => rollback(conn),
            Err(e) => {
                rollback(conn);
                job.fail(Error::Sqlite(e));
            }
        }
    }
}

// Prepared once: `execute_batch` would parse them again for every group.
fn begin(conn: &Connection) -> rusqlite::Result<()> {
    conn.prepare_cached("BEGIN IMMEDIATE")?
        .execute([])
        .map(drop)
}

fn commit(conn: &Connection) -> rusqlite::Result<()> {
    conn.prepare_cached("COMMIT")?.execute([]).map(drop)
}

fn rollback(conn: &Connection) {
    // A queue created in the rolled-back transaction may get another row id when its job re-runs.
    super::queue::forget_queue_ids();
    if !conn.is_autocommit() {
        // A failed ROLLBACK means SQLite already rolled back (e.g. after SQLITE_FULL).
        let _ = conn.execute_batch("ROLLBACK");
    }
}
