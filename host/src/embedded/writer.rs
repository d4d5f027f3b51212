//! The writer thread: drains queued write jobs and commits every job that is waiting in one
//! transaction (group commit), then answers each caller and wakes long-polling receivers.
//!
//! While the writer is busy (its last group ended under [`BUSY`] ago) and fewer than
//! [`LINGER_MIN`] jobs wait, it sleeps [`LINGER`] once before it starts the group, as long as
//! lingering pays ([`Linger`]). On 2 cores a writer that commits whatever two or three jobs wait
//! keeps a core for itself and starves the workers that would fill its next group; lingering hands
//! the core back and makes groups larger, and a larger group writes fewer WAL pages per job. With
//! the no-op at saturation (`PIPELINE_BENCH_ONLY=ceiling`) a linger gained 11-13 jobs, groups grew
//! from 3.8 to 15-16 jobs and the rate from 40,000-42,000 to 44,000-50,000 msg/s; 250 µs or more
//! starved the workers instead (24,000-37,000). An idle writer commits a lone job at once.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};

use super::Shared;
use crate::{Error, Result};

/// Most jobs committed in one transaction; bounds the latency a full group adds.
const MAX_GROUP: usize = 1024;
/// A writer whose last group ended less than this ago is busy, and may linger.
const BUSY: Duration = Duration::from_millis(1);
/// Groups smaller than this make a busy writer linger.
const LINGER_MIN: usize = 8;
/// How long a busy writer waits for more jobs (the kernel's timer slack adds ~50 µs).
const LINGER: Duration = Duration::from_micros(50);

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
    let mut last_end: Option<Instant> = None;
    let mut linger = Linger::default();
    while let Some(first) = jobs.blocking_recv() {
        group.push(first);
        take_waiting(&mut group, &mut jobs);
        if group.len() < LINGER_MIN
            && last_end.is_some_and(|t| t.elapsed() < BUSY)
            && linger.worth_it()
        {
            let before = group.len();
            std::thread::sleep(LINGER);
            take_waiting(&mut group, &mut jobs);
            linger.gained(group.len() - before);
        }
        commit_group(&conn, &mut group, &mut jobs, &mut wakes);
        for job in group.drain(..) {
            job.reply();
        }
        last_end = Some(Instant::now());
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

/// What lingering has been bringing: the jobs a linger added, on average (exponentially
/// weighted). Where the jobs come slower than the writer commits them (a pipeline whose
/// handlers do more than the no-op), a linger adds little but its delay to every commit, so
/// below [`LINGER_GAIN`] the writer stops lingering and tries again every [`LINGER_PROBE`]th
/// chance.
struct Linger {
    gain: f64,
    skipped: u32,
}

/// Jobs a linger must add on average to be worth its delay.
const LINGER_GAIN: f64 = 2.0;
/// While lingering does not pay, one chance in this many lingers anyway, to notice a change.
const LINGER_PROBE: u32 = 32;

impl Default for Linger {
    fn default() -> Self {
        Self {
            gain: LINGER_GAIN,
            skipped: 0,
        }
    }
}

impl Linger {
    fn worth_it(&mut self) -> bool {
        if self.gain >= LINGER_GAIN {
            return true;
        }
        self.skipped += 1;
        if self.skipped >= LINGER_PROBE {
            self.skipped = 0;
            return true;
        }
        false
    }

    fn gained(&mut self, jobs: usize) {
        self.gain += 0.1 * (jobs as f64 - self.gain);
    }
}

/// Adds the jobs waiting now to `group`, up to [`MAX_GROUP`].
fn take_waiting(group: &mut Vec<Box<dyn Job>>, jobs: &mut mpsc::UnboundedReceiver<Box<dyn Job>>) {
    while group.len() < MAX_GROUP {
        match jobs.try_recv() {
            Ok(job) => group.push(job),
            Err(_) => break,
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
            take_waiting(group, jobs);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lingering_stops_when_it_brings_nothing_and_probes_now_and_then() {
        let mut l = Linger::default();
        assert!(l.worth_it(), "a writer starts out lingering");
        for _ in 0..30 {
            l.gained(0);
        }
        let tries: Vec<bool> = (0..LINGER_PROBE * 2).map(|_| l.worth_it()).collect();
        assert_eq!(
            tries.iter().filter(|t| **t).count(),
            2,
            "one probe per {LINGER_PROBE} chances"
        );
        for _ in 0..30 {
            l.gained(12);
        }
        assert!(l.worth_it(), "lingering pays again");
    }
}
