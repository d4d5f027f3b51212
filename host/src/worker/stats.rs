//! Live counters of a worker pool, read by `levee status` and the scaler.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

use crate::runtime::Invocation;

/// Counters updated by every invocation.
#[derive(Debug, Default)]
pub struct WorkerCounters {
    invocations: AtomicU64,
    succeeded: AtomicU64,
    failed: AtomicU64,
    busy_micros: AtomicU64,
    occupied_micros: AtomicU64,
}

/// A snapshot of a pool.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct PoolStats {
    pub workers: u32,
    pub max_workers: u32,
    pub invocations: u64,
    pub succeeded: u64,
    pub failed_attempts: u64,
    /// Total time spent in handlers, in µs (the scaler derives service rate from it).
    pub busy_micros: u64,
    /// Total time workers were held by messages (handler, lease renewals and settling: outbox sends
    /// and the delete), in µs: what one worker's service time really is, so the scaler's service
    /// rate per worker comes from it.
    pub occupied_micros: u64,
}

impl WorkerCounters {
    pub(super) fn record(&self, inv: &Invocation) {
        self.invocations.fetch_add(1, Ordering::Relaxed);
        if inv.outcome.is_ok() {
            self.succeeded.fetch_add(1, Ordering::Relaxed);
        } else {
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
        self.busy_micros
            .fetch_add(inv.elapsed.as_micros() as u64, Ordering::Relaxed);
    }

    pub(super) fn occupied(&self, d: std::time::Duration) {
        self.occupied_micros
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
    }

    pub(super) fn snapshot(&self, workers: u32, max_workers: u32) -> PoolStats {
        PoolStats {
            workers,
            max_workers,
            invocations: self.invocations.load(Ordering::Relaxed),
            succeeded: self.succeeded.load(Ordering::Relaxed),
            failed_attempts: self.failed.load(Ordering::Relaxed),
            busy_micros: self.busy_micros.load(Ordering::Relaxed),
            occupied_micros: self.occupied_micros.load(Ordering::Relaxed),
        }
    }
}
