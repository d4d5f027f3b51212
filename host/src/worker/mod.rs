//! Worker pools: per function, fetchers lease messages from the queue and run each in a fresh
//! Wasm instance, at most `workers` at a time. A fetcher leases whole batches: the first once a
//! worker is free, the next while the last still waits for workers (at most [`PREFETCH`] waiting
//! per fetcher); waiting messages have their leases renewed and go back at once on shutdown.
//!
//! Every invocation is a transaction: on success its kv writes, emitted messages (with ids
//! derived from the source's) and the source's deletion are committed together. A commit whose
//! reads went stale applies nothing and the handler runs again at once with fresh reads (no
//! attempt used; after [`MAX_CONFLICTS`] in a row the message backs off briefly). The handler's
//! own failures are retried with exponential backoff or dead-lettered with their reason;
//! infrastructure failures (store down, instance pool full, settling failed) hand the message
//! back without using an attempt and close the pool's [`Gate`] until a probe gets through. The
//! worker count can be changed at run time (the scaler).

mod backoff;
mod gate;
mod stats;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tracing::Instrument;

use crate::queue::{Completion, MAX_BATCH, Queue, ReceiveOptions, ReceivedMessage, emitted_id};
use crate::runtime::{Failure, Function, FunctionSlot, Invocation, Output, Pick};
use crate::store::CommitOutcome;

pub use backoff::Backoff;
pub use gate::{Admit, Gate, PAUSE_BASE, PAUSE_MAX};
pub use stats::{EmitCounts, LatencyCounts, PoolStats, WorkerCounters};

/// Conflicting commits in a row after which a message backs off before running again (a hot
/// key): [`CONFLICT_BACKOFF`], doubled per further conflict up to 32 times that, while the worker
/// keeps the message and its lease.
pub const MAX_CONFLICTS: u32 = 8;
/// Conflicts in a row after which the message goes back to the queue (without using an attempt)
/// and the worker takes other work.
pub const MAX_CONFLICTS_HELD: u32 = 64;
/// The first back-off after [`MAX_CONFLICTS`] conflicts in a row.
pub const CONFLICT_BACKOFF: Duration = Duration::from_millis(20);

/// Leased messages a fetcher holds for workers at most: two batches, so while one batch waits for
/// workers the next can be leased whole.
pub const PREFETCH: usize = 2 * MAX_BATCH;

/// Attribute carried by emitted messages: the send time (ms since the Unix epoch) of the message
/// that started the chain, so the last function of a pipeline measures end-to-end latency.
pub const ORIGIN_ATTRIBUTE: &str = "levee-origin-ms";

/// How a pool leases and retries.
#[derive(Debug, Clone)]
pub struct PoolConfig {
    /// Initial number of workers (concurrent invocations).
    pub workers: u32,
    /// Upper bound the scaler may raise `workers` to.
    pub max_workers: u32,
    /// Visibility timeout of a leased message; renewed while its handler runs.
    pub lease: Duration,
    /// Receives before a failing message is dead-lettered.
    pub max_receive: u32,
    /// Retry backoff.
    pub backoff: Backoff,
    /// Long-poll wait of each receive.
    pub poll_wait: Duration,
}

/// The running pool of one function.
pub struct WorkerPool {
    shared: Arc<Shared>,
    tasks: tokio::sync::Mutex<JoinSet<()>>,
}

struct Shared {
    /// The versions the function runs (swapped by a release, read per message).
    slot: Arc<FunctionSlot>,
    queue: Arc<dyn Queue>,
    cfg: PoolConfig,
    /// Execution slots: one permit per worker.
    workers: Arc<Semaphore>,
    /// Permits to retire as handlers finish, when the pool shrinks while busy.
    retire: AtomicUsize,
    /// The current worker count (what the semaphore will hold once retirements settle).
    target: AtomicU32,
    counters: WorkerCounters,
    gate: Gate,
    stop: watch::Receiver<bool>,
}

impl WorkerPool {
    /// Starts fetching and handling messages of `function` from `queue`.
    pub fn start(
        slot: Arc<FunctionSlot>,
        queue: Arc<dyn Queue>,
        cfg: PoolConfig,
        stop: watch::Receiver<bool>,
    ) -> Arc<Self> {
        let workers = cfg.workers.min(cfg.max_workers);
        let counters = WorkerCounters::for_function(slot.name());
        let shared = Arc::new(Shared {
            slot,
            queue,
            workers: Arc::new(Semaphore::new(workers as usize)),
            retire: AtomicUsize::new(0),
            target: AtomicU32::new(workers),
            counters,
            gate: Gate::default(),
            stop,
            cfg,
        });
        let mut tasks = JoinSet::new();
        // Enough fetchers that batches of 10 keep the largest pool busy even on a slow queue.
        let fetchers = shared.cfg.max_workers.div_ceil(MAX_BATCH as u32 * 2).max(1);
        for _ in 0..fetchers {
            tasks.spawn(fetch_loop(shared.clone()));
        }
        Arc::new(Self {
            shared,
            tasks: tokio::sync::Mutex::new(tasks),
        })
    }

    /// The function's name.
    pub fn name(&self) -> &str {
        self.shared.slot.name()
    }

    /// The versions it runs.
    pub fn slot(&self) -> &Arc<FunctionSlot> {
        &self.shared.slot
    }

    /// Sets the number of workers (clamped to 0..=max_workers). Shrinking lets running handlers
    /// finish; growing takes effect at once.
    pub fn set_workers(&self, n: u32) {
        let n = n.min(self.shared.cfg.max_workers);
        let old = self.shared.target.swap(n, Ordering::SeqCst);
        if n > old {
            let mut add = (n - old) as usize;
            // Cancel pending retirements first.
            while add > 0 {
                let r = self.shared.retire.load(Ordering::SeqCst);
                if r == 0 {
                    break;
                }
                let take = r.min(add);
                if self
                    .shared
                    .retire
                    .compare_exchange(r, r - take, Ordering::SeqCst, Ordering::SeqCst)
                    .is_ok()
                {
                    add -= take;
                }
            }
            self.shared.workers.add_permits(add);
        } else if n < old {
            let remove = (old - n) as usize;
            let forgotten = self.shared.workers.forget_permits(remove);
            self.shared
                .retire
                .fetch_add(remove - forgotten, Ordering::SeqCst);
        }
    }

    /// The current worker count.
    pub fn workers(&self) -> u32 {
        self.shared.target.load(Ordering::SeqCst)
    }

    /// Live counters of this pool.
    pub fn stats(&self) -> PoolStats {
        let mut stats = self
            .shared
            .counters
            .snapshot(self.workers(), self.shared.cfg.max_workers);
        stats.paused = self.shared.gate.is_closed();
        stats
    }

    /// The latency histogram of the small messages this pool completed so far (from their
    /// origin's send), for quantiles over a window.
    pub fn latency_counts(&self) -> LatencyCounts {
        self.shared.counters.latency_counts()
    }

    /// Messages completed and what they emitted per target, running totals (measured fan-out).
    pub fn emit_counts(&self) -> EmitCounts {
        self.shared.counters.emit_counts()
    }

    /// Waits for the fetchers and every in-flight handler to finish (after `stop` was set).
    pub async fn join(&self) {
        let mut tasks = self.tasks.lock().await;
        while tasks.join_next().await.is_some() {}
    }
}

async fn fetch_loop(shared: Arc<Shared>) {
    let mut stop = shared.stop.clone();
    let mut handlers = JoinSet::new();
    let mut errors = 0u32;
    let name = shared.slot.name().to_string();
    // Leased messages waiting for a worker: at most [`PREFETCH`] per fetcher, their leases renewed
    // while they wait (see `wait_for_worker`).
    let prefetch = Arc::new(Semaphore::new(PREFETCH));
    loop {
        if *stop.borrow() {
            break;
        }
        while handlers.try_join_next().is_some() {}
        let admit = tokio::select! {
            a = shared.gate.admit() => a,
            _ = stop.changed() => break,
        };
        // Whole batches while the gate is open: a receive costs the same for 1 message or 10
        // (one SQS call, one SQLite transaction), so the fetcher waits until a batch's room is
        // free rather than leasing the one or two slots its last batch has freed so far.
        let want = if admit == Admit::Open { MAX_BATCH } else { 1 };
        let slots = tokio::select! {
            s = prefetch.clone().acquire_many_owned(want as u32) => s,
            _ = stop.changed() => break,
        };
        let Ok(mut slots) = slots else {
            break;
        };
        // With nothing waiting, a free worker first, so an idle pool holds no leases (the first
        // message takes it); with messages waiting the pool is busy, and the next batch is leased
        // ahead so workers do not idle for a receive's round trip.
        let waiting = (PREFETCH - want).saturating_sub(prefetch.available_permits());
        let mut first = if waiting == 0 {
            tokio::select! {
                p = acquire_worker(&shared) => Some(p),
                _ = stop.changed() => break,
            }
        } else {
            None
        };
        let opts = ReceiveOptions {
            max_messages: want,
            visibility: shared.cfg.lease,
            wait: shared.cfg.poll_wait,
        };
        // Not cancelled by `stop`: a receive that leased messages must get to hand them back.
        let received = shared.queue.receive(&name, opts).await;
        match received {
            Ok(msgs) => {
                errors = 0;
                if *stop.borrow() {
                    hand_back(&shared, msgs).await;
                } else {
                    if admit == Admit::Probe && msgs.is_empty() {
                        shared.gate.probe_found_nothing();
                    }
                    for msg in msgs {
                        // One slot per message; those a short receive leaves free go back below.
                        let slot = slots.split(1);
                        let worker = first.take();
                        let s = shared.clone();
                        handlers.spawn(async move {
                            let worker = match worker {
                                Some(w) => w,
                                None => match wait_for_worker(&s, &msg).await {
                                    Some(w) => w,
                                    None => return,
                                },
                            };
                            drop(slot);
                            let held = tokio::time::Instant::now();
                            let pick = s.slot.pick();
                            // Every line logged while the message runs (the guest's too) names it.
                            let span = tracing::info_span!(
                                "invocation",
                                message_id = %msg.id,
                                function = s.slot.name(),
                                version = pick.function.version(),
                                release = pick.release,
                            );
                            handle(&s, msg, pick).instrument(span).await;
                            s.counters.occupied(held.elapsed());
                            release_worker(&s, worker);
                        });
                    }
                }
            }
            Err(e) => {
                // A consumer loop never ends on a transient error: log, back off, go on.
                errors += 1;
                let pause = Duration::from_millis(100 * 2u64.pow(errors.min(6)));
                tracing::warn!(function = %name, "receive failed (retrying in {pause:?}): {e}");
                if admit == Admit::Probe {
                    shared.gate.failed();
                }
                if let Some(w) = first.take() {
                    release_worker(&shared, w);
                }
                tokio::select! {
                    _ = tokio::time::sleep(pause) => {}
                    _ = stop.changed() => break,
                }
            }
        }
        if let Some(w) = first {
            release_worker(&shared, w);
        }
    }
    // Let in-flight handlers finish before reporting done.
    while handlers.join_next().await.is_some() {}
}

/// Waits for a free worker while renewing the message's lease, so a leased message never runs
/// out its lease in the pool's own waiting line. On shutdown it hands the message back at once
/// (no attempt used) and returns `None`.
async fn wait_for_worker(
    s: &Shared,
    msg: &ReceivedMessage,
) -> Option<tokio::sync::OwnedSemaphorePermit> {
    let name = s.slot.name();
    let mut stop = s.stop.clone();
    let renew_every = s.cfg.lease / 2;
    loop {
        if *stop.borrow() {
            hand_back(s, vec![msg.clone()]).await;
            return None;
        }
        tokio::select! {
            p = acquire_worker(s) => return Some(p),
            _ = tokio::time::sleep(renew_every) => {
                if let Err(e) = s.queue.extend_lease(name, &msg.receipt, s.cfg.lease).await {
                    tracing::warn!(function = %name, id = %msg.id, "could not renew the lease of a waiting message: {e}");
                }
            }
            _ = stop.changed() => {}
        }
    }
}

/// On shutdown: messages leased but not started go back at once, without using an attempt.
async fn hand_back(s: &Shared, msgs: Vec<ReceivedMessage>) {
    let name = s.slot.name();
    for msg in msgs {
        if let Err(e) = s.queue.release(name, &msg.receipt, Duration::ZERO).await {
            tracing::warn!(function = %name, id = %msg.id, "could not hand a message back on shutdown; it returns when its lease ends: {e}");
        }
    }
}

async fn acquire_worker(s: &Shared) -> tokio::sync::OwnedSemaphorePermit {
    s.workers
        .clone()
        .acquire_owned()
        .await
        .expect("the worker semaphore is never closed")
}

fn release_worker(s: &Shared, permit: tokio::sync::OwnedSemaphorePermit) {
    // Retire this slot instead of returning it if the pool shrank while it was busy.
    let retired = s
        .retire
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |r| r.checked_sub(1))
        .is_ok();
    if retired {
        permit.forget();
    }
}

async fn handle(s: &Arc<Shared>, msg: ReceivedMessage, mut pick: Pick) {
    let name = s.slot.name();
    let mut conflicts = 0;
    loop {
        // A run after a conflict reads every key it uses: the conflict may be a speculation's.
        let invocation = run_keeping_lease(s, &pick.function, &msg, conflicts == 0).await;
        s.counters.record(&invocation);
        let output = match invocation.outcome {
            Ok(output) => {
                s.slot.record(&pick, true, invocation.elapsed);
                output
            }
            Err(Failure::Infrastructure(reason)) => {
                return infrastructure(s, &msg, &reason, invocation.retry_after).await;
            }
            Err(failure) if pick.canary => {
                // The candidate's fault until shown otherwise: the stable version runs the
                // message at once, and no attempt is used.
                s.slot.record(&pick, false, invocation.elapsed);
                tracing::info!(function = %name, id = %msg.id, release = pick.release, "canary release {} failed, running the message on the stable version: {failure}", pick.release);
                pick = s.slot.pick_stable();
                conflicts = 0;
                continue;
            }
            Err(failure) => {
                s.slot.record(&pick, false, invocation.elapsed);
                // The platform ran the handler and can settle the message: it works.
                s.gate.succeeded();
                if let Err(e) = settle_failure(s, &msg, failure).await {
                    // The lease will expire and the message will be delivered again.
                    tracing::warn!(function = %name, id = %msg.id, "settling a failed message failed, it will be redelivered: {e}");
                }
                return;
            }
        };
        match commit(s, &pick.function, &msg, output).await {
            Ok(CommitOutcome::Committed { .. }) => {}
            Ok(CommitOutcome::Duplicate) => s.counters.duplicate(),
            Ok(CommitOutcome::Conflict { keys }) => {
                s.counters.conflict();
                conflicts += 1;
                // The next run reads these keys from the store, not from the cache.
                pick.function.store().forget(name, &keys).await;
                if conflicts < MAX_CONFLICTS {
                    continue;
                }
                // The store answers: a hot key is not an outage.
                s.gate.succeeded();
                if conflicts < MAX_CONFLICTS_HELD {
                    // A hot key: back off while keeping the message (and its lease), so on SQS
                    // no receive is spent on it.
                    let doubling = (conflicts - MAX_CONFLICTS).min(5);
                    let delay = CONFLICT_BACKOFF
                        .saturating_mul(1 << doubling)
                        .mul_f64(rand::random_range(0.5..1.5));
                    tracing::debug!(function = %name, id = %msg.id, ?keys, "{conflicts} conflicts in a row; backing off {delay:?}");
                    tokio::time::sleep(delay).await;
                    if let Err(e) = s.queue.extend_lease(name, &msg.receipt, s.cfg.lease).await {
                        tracing::warn!(function = %name, id = %msg.id, "could not renew the lease of a conflicting message: {e}");
                    }
                    continue;
                }
                tracing::warn!(function = %name, id = %msg.id, ?keys, "{conflicts} conflicts in a row; handing it back (no attempt used)");
                if let Err(e) = s.queue.release(name, &msg.receipt, CONFLICT_BACKOFF).await {
                    tracing::warn!(function = %name, id = %msg.id, "could not hand back a conflicting message; it returns when its lease ends: {e}");
                }
                return;
            }
            Err(crate::Error::StaleReceipt) => {
                // The lease was lost and another consumer holds the message: it settles it.
                tracing::info!(function = %name, id = %msg.id, "lease lost before the commit; nothing applied");
                s.gate.succeeded();
                return;
            }
            Err(e) if e.is_retryable() => {
                return infrastructure(s, &msg, &format!("commit failed: {e}"), None).await;
            }
            Err(e) => {
                s.gate.succeeded();
                let reason = format!("commit refused: {e}");
                tracing::info!(function = %name, id = %msg.id, "dead-lettered: {reason}");
                if let Err(e) = s.queue.dead_letter(name, &msg, &reason).await {
                    tracing::warn!(function = %name, id = %msg.id, "dead-lettering failed, it will be redelivered: {e}");
                }
                return;
            }
        }
        s.gate.succeeded();
        return;
    }
}

/// Commits a successful invocation: kv writes, emits with stable ids, and the source's deletion.
async fn commit(
    s: &Shared,
    function: &Function,
    msg: &ReceivedMessage,
    output: Output,
) -> crate::Result<CommitOutcome> {
    let name = s.slot.name();
    let origin = origin_ms(msg);
    let mut emitted = output.emitted;
    for (i, e) in emitted.iter_mut().enumerate() {
        set_origin(&mut e.message.attributes, origin);
        e.message.id = Some(emitted_id(&msg.id, i));
    }
    let targets: Vec<String> = emitted.iter().map(|e| e.queue.clone()).collect();
    let kv = (!output.kv.is_empty()).then_some(output.kv);
    let completion = Completion {
        id: Some(msg.id.clone()),
        emitted,
        kv: kv.clone(),
    };
    let outcome = s.queue.commit(name, &msg.receipt, completion).await?;
    if let CommitOutcome::Committed { .. } = &outcome {
        if let Some(kv) = &kv {
            function.store().observe(kv, &outcome).await;
        }
        s.counters.record_emits(targets.iter().map(String::as_str));
        s.counters
            .record_latency(msg.body.len(), crate::ids::now_ms().saturating_sub(origin));
    }
    Ok(outcome)
}

/// Hands the message back without using an attempt and closes the pool's gate, for at least
/// `at_least` (a destination's `Retry-After`).
async fn infrastructure(
    s: &Shared,
    msg: &ReceivedMessage,
    reason: &str,
    at_least: Option<Duration>,
) {
    let name = s.slot.name();
    s.counters.infra_failure();
    // One line when the gate closes; the messages that were running then fail the same way.
    let was_open = !s.gate.is_closed();
    let pause = s.gate.failed_for(at_least.unwrap_or_default());
    if was_open {
        tracing::warn!(function = %name, id = %msg.id, "infrastructure failure, pausing the pool for {pause:?} (no attempt used): {reason}");
    } else {
        tracing::debug!(function = %name, id = %msg.id, "infrastructure failure while paused, held {pause:?} (no attempt used): {reason}");
    }
    if let Err(e) = s.queue.release(name, &msg.receipt, pause).await {
        tracing::warn!(function = %name, id = %msg.id, "could not hand the message back; it returns when its lease ends: {e}");
    }
}

/// When the first message of this message's chain through the pipeline was sent: its
/// [`ORIGIN_ATTRIBUTE`] if an upstream worker set one, else its own send time.
fn origin_ms(msg: &ReceivedMessage) -> u64 {
    msg.attributes
        .iter()
        .find(|(k, _)| k == ORIGIN_ATTRIBUTE)
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(msg.sent_at_ms)
}

fn set_origin(attributes: &mut Vec<(String, String)>, origin: u64) {
    attributes.retain(|(k, _)| k != ORIGIN_ATTRIBUTE);
    attributes.push((ORIGIN_ATTRIBUTE.to_string(), origin.to_string()));
}

async fn settle_failure(s: &Shared, msg: &ReceivedMessage, failure: Failure) -> crate::Result<()> {
    let name = s.slot.name();
    if failure.is_permanent() {
        tracing::info!(function = %name, id = %msg.id, "dead-lettered: {failure}");
        return s.queue.dead_letter(name, msg, &failure.to_string()).await;
    }
    if msg.receive_count >= s.cfg.max_receive {
        let reason = format!(
            "gave up after {} attempts (max_receive {}): {failure}",
            msg.receive_count, s.cfg.max_receive
        );
        tracing::info!(function = %name, id = %msg.id, "dead-lettered: {reason}");
        return s.queue.dead_letter(name, msg, &reason).await;
    }
    let delay = s.cfg.backoff.delay(msg.receive_count);
    tracing::debug!(function = %name, id = %msg.id, "retry in {delay:?}: {failure}");
    s.queue
        .retry_later(name, &msg.receipt, delay, &failure.to_string())
        .await
}

/// Runs the invocation, renewing the message's lease while it runs.
async fn run_keeping_lease(
    s: &Arc<Shared>,
    function: &Arc<Function>,
    msg: &ReceivedMessage,
    speculate: bool,
) -> Invocation {
    // Boxed rather than pinned in place: the handler's task would otherwise carry the whole
    // invocation future, which `spawn` copies for every message.
    let mut job = Box::pin(function.invoke_speculating(msg, speculate));
    let renew_every = s.cfg.lease / 2;
    loop {
        tokio::select! {
            inv = &mut job => return inv,
            _ = tokio::time::sleep(renew_every) => {
                if let Err(e) = s.queue.extend_lease(s.slot.name(), &msg.receipt, s.cfg.lease).await {
                    tracing::warn!(function = %s.slot.name(), id = %msg.id, "could not renew lease: {e}");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn received(attributes: Vec<(String, String)>) -> ReceivedMessage {
        ReceivedMessage {
            id: "m1".into(),
            receipt: "r1".into(),
            body: b"{}".to_vec(),
            attributes,
            receive_count: 1,
            sent_at_ms: 1_000,
            last_error: None,
        }
    }

    #[test]
    fn origin_is_the_send_time_of_a_source_message() {
        assert_eq!(origin_ms(&received(vec![])), 1_000);
    }

    #[test]
    fn origin_is_carried_from_upstream() {
        let attrs = vec![(ORIGIN_ATTRIBUTE.to_string(), "400".to_string())];
        assert_eq!(origin_ms(&received(attrs)), 400);
    }

    #[test]
    fn a_malformed_origin_falls_back_to_the_send_time() {
        let attrs = vec![(ORIGIN_ATTRIBUTE.to_string(), "soon".to_string())];
        assert_eq!(origin_ms(&received(attrs)), 1_000);
    }

    #[test]
    fn set_origin_replaces_an_existing_origin_and_keeps_other_attributes() {
        let mut attrs = vec![
            ("trace".to_string(), "t1".to_string()),
            (ORIGIN_ATTRIBUTE.to_string(), "1".to_string()),
        ];
        set_origin(&mut attrs, 400);
        assert_eq!(
            attrs,
            vec![
                ("trace".to_string(), "t1".to_string()),
                (ORIGIN_ATTRIBUTE.to_string(), "400".to_string()),
            ]
        );
    }
}
