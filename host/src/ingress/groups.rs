//! API groups as bulkheads: each has its own concurrency budget, a bounded queue of waiting
//! requests and a token bucket per source (governor). A flood in one group fills only its own
//! slots, queue and buckets.

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};
use serde::Serialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::settings::GroupSettings;

/// Sources with a token bucket per group; past it, stale buckets are dropped, and if none is
/// stale new sources share one overflow bucket.
pub const MAX_BUCKETS: usize = 100_000;
const OVERFLOW: &str = "(overflow)";

/// One group's live state.
pub struct Group {
    pub name: String,
    settings: GroupSettings,
    slots: Arc<Semaphore>,
    waiting: AtomicUsize,
    limiter: DefaultKeyedRateLimiter<String>,
    counters: Counters,
}

#[derive(Default)]
struct Counters {
    requests: AtomicU64,
    limited: AtomicU64,
    shed: AtomicU64,
    blocked: AtomicU64,
    by_status: std::sync::Mutex<BTreeMap<u16, u64>>,
}

/// A group in `levee status`.
#[derive(Debug, Clone, Serialize)]
pub struct GroupStatus {
    pub name: String,
    pub concurrency: usize,
    pub in_use: usize,
    pub waiting: usize,
    pub requests: u64,
    /// Answered 429 by the per-source limit.
    pub limited: u64,
    /// Answered 503: slots and queue full, or waited too long.
    pub shed: u64,
    /// Answered 429 because the source is blocked.
    pub blocked: u64,
    pub by_status: BTreeMap<u16, u64>,
}

/// Why a request was not admitted.
#[derive(Debug)]
pub enum Refusal {
    /// Over the source's rate: retry after this long.
    Limited(Duration),
    /// No slot and the queue is full or the wait ran out.
    Shed,
}

impl std::fmt::Debug for Group {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Group").field("name", &self.name).finish()
    }
}

impl Group {
    pub fn new(name: &str, settings: &GroupSettings) -> Self {
        // governor takes whole cells per period: express fractional rates over a longer period.
        let period = Duration::from_secs_f64(1.0 / settings.rate);
        let quota = Quota::with_period(period)
            .expect("rate validated positive")
            .allow_burst(NonZeroU32::new(settings.burst()).expect("burst validated ≥ 1"));
        Group {
            name: name.to_string(),
            settings: settings.clone(),
            slots: Arc::new(Semaphore::new(settings.concurrency)),
            waiting: AtomicUsize::new(0),
            limiter: DefaultKeyedRateLimiter::keyed(quota),
            counters: Counters::default(),
        }
    }

    /// Counts a request of the group (every one, admitted or not).
    pub fn count(&self) {
        self.counters.requests.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts the status a request of the group was answered with.
    pub fn answered(&self, status: u16) {
        *self
            .counters
            .by_status
            .lock()
            .expect("status lock")
            .entry(status)
            .or_default() += 1;
    }

    /// Counts a request refused because its source is blocked.
    pub fn count_blocked(&self) {
        self.counters.blocked.fetch_add(1, Ordering::Relaxed);
    }

    /// Takes a token of `source`'s bucket.
    pub fn check_rate(&self, source: &str) -> Result<(), Refusal> {
        let key = if self.limiter.len() >= MAX_BUCKETS {
            self.limiter.retain_recent();
            if self.limiter.len() >= MAX_BUCKETS {
                OVERFLOW
            } else {
                source
            }
        } else {
            source
        };
        self.limiter
            .check_key(&key.to_string())
            .map_err(|not_until| {
                self.counters.limited.fetch_add(1, Ordering::Relaxed);
                Refusal::Limited(not_until.wait_time_from(DefaultClock::default().now()))
            })
    }

    /// Waits for a slot, at most the group's queue timeout and only if the queue has room.
    pub async fn admit(&self) -> Result<OwnedSemaphorePermit, Refusal> {
        if let Ok(p) = self.slots.clone().try_acquire_owned() {
            return Ok(p);
        }
        if self.waiting.fetch_add(1, Ordering::AcqRel) >= self.settings.queue {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            self.counters.shed.fetch_add(1, Ordering::Relaxed);
            return Err(Refusal::Shed);
        }
        let wait = Duration::from_millis(self.settings.queue_timeout_ms);
        let got = tokio::time::timeout(wait, self.slots.clone().acquire_owned()).await;
        self.waiting.fetch_sub(1, Ordering::AcqRel);
        match got {
            Ok(Ok(p)) => Ok(p),
            _ => {
                self.counters.shed.fetch_add(1, Ordering::Relaxed);
                Err(Refusal::Shed)
            }
        }
    }

    /// Drops token buckets that are full again (called now and then).
    pub fn tidy(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }

    pub fn status(&self) -> GroupStatus {
        let c = &self.counters;
        GroupStatus {
            name: self.name.clone(),
            concurrency: self.settings.concurrency,
            in_use: self.settings.concurrency - self.slots.available_permits(),
            waiting: self.waiting.load(Ordering::Relaxed),
            requests: c.requests.load(Ordering::Relaxed),
            limited: c.limited.load(Ordering::Relaxed),
            shed: c.shed.load(Ordering::Relaxed),
            blocked: c.blocked.load(Ordering::Relaxed),
            by_status: c.by_status.lock().expect("status lock").clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_queue_is_bounded_and_waits_time_out() {
        let g = Group::new(
            "g",
            &GroupSettings {
                concurrency: 1,
                queue: 1,
                queue_timeout_ms: 50,
                ..Default::default()
            },
        );
        let held = g.admit().await.expect("first slot");
        let waiter = g.admit();
        let third = async {
            tokio::task::yield_now().await;
            g.admit().await
        };
        let (w, t) = tokio::join!(waiter, third);
        assert!(matches!(w, Err(Refusal::Shed)), "the waiter timed out");
        assert!(matches!(t, Err(Refusal::Shed)), "the queue held one");
        drop(held);
        assert!(g.admit().await.is_ok());
        assert_eq!(g.status().shed, 2);
    }

    #[test]
    fn each_source_has_its_own_bucket() {
        let g = Group::new(
            "g",
            &GroupSettings {
                rate: 1.0,
                burst: Some(3),
                ..Default::default()
            },
        );
        for _ in 0..3 {
            assert!(g.check_rate("a").is_ok());
        }
        match g.check_rate("a") {
            Err(Refusal::Limited(after)) => assert!(after <= Duration::from_secs(1)),
            other => panic!("expected a limit, got {other:?}"),
        }
        assert!(g.check_rate("b").is_ok(), "another source is not affected");
    }
}
