//! Live counters of a worker pool, read by `levee status`, the scaler and the benchmarks.

use std::collections::BTreeMap;
use std::sync::Mutex;
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
    conflicts: AtomicU64,
    infra_failures: AtomicU64,
    duplicates: AtomicU64,
    latency: LatencyHistogram,
    large_latency: LatencyHistogram,
    emits: Mutex<EmitCounts>,
    /// Prometheus histograms (no-ops unless `telemetry::install` ran before the pool started).
    handler_seconds: Hist,
    end_to_end_seconds: Hist,
}

/// A Prometheus histogram handle that defaults to a no-op.
#[derive(Debug, Clone)]
struct Hist(metrics::Histogram);

impl Default for Hist {
    fn default() -> Self {
        Self(metrics::Histogram::noop())
    }
}

/// Messages completed and the messages they emitted per target function, running totals: the
/// scaler's measured fan-out per edge is the ratio of their increments.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EmitCounts {
    pub completed: u64,
    pub emitted: BTreeMap<String, u64>,
}

/// Bodies above this many bytes count as large (the default offload threshold): their latency is
/// kept apart so a flood of large events cannot hide, or be hidden by, the latency of the rest.
pub const LARGE_BODY_BYTES: usize = crate::limits::DEFAULT_OFFLOAD_THRESHOLD;

/// A snapshot of a pool.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
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
    /// Messages of ordinary size (body up to [`LARGE_BODY_BYTES`]) whose completion recorded a
    /// latency (see [`WorkerCounters::record_latency`]).
    pub latency_samples: u64,
    /// Median latency of those from the origin send to completion, in ms (0 without samples).
    pub latency_p50_ms: u64,
    /// 99th percentile of the same, in ms.
    pub latency_p99_ms: u64,
    /// The same three figures for large messages (body above [`LARGE_BODY_BYTES`]).
    pub large_latency_samples: u64,
    pub large_latency_p50_ms: u64,
    pub large_latency_p99_ms: u64,
    /// Commits refused because a key read had changed; the handler ran again (no attempt used).
    pub conflicts: u64,
    /// Invocations that failed for the platform's reasons (store down, pool full, settling
    /// failed); the message went back without using an attempt.
    pub infra_failures: u64,
    /// Messages found already committed (a redelivery or a re-sent emit): settled, not rerun.
    pub duplicates: u64,
    /// Whether the pool has stopped fetching after an infrastructure failure, until a probe
    /// succeeds.
    pub paused: bool,
}

impl WorkerCounters {
    /// Counters of function `name`'s pool, with its histograms in `/metrics`.
    pub fn for_function(name: &str) -> Self {
        Self {
            handler_seconds: Hist(metrics::histogram!(
                crate::telemetry::HANDLER_SECONDS,
                "function" => name.to_string()
            )),
            end_to_end_seconds: Hist(metrics::histogram!(
                crate::telemetry::END_TO_END_SECONDS,
                "function" => name.to_string()
            )),
            ..Self::default()
        }
    }

    pub(super) fn record(&self, inv: &Invocation) {
        self.handler_seconds.0.record(inv.elapsed.as_secs_f64());
        self.invocations.fetch_add(1, Ordering::Relaxed);
        if inv.outcome.is_ok() {
            self.succeeded.fetch_add(1, Ordering::Relaxed);
        } else {
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
        self.busy_micros
            .fetch_add(inv.elapsed.as_micros() as u64, Ordering::Relaxed);
    }

    pub(super) fn conflict(&self) {
        self.conflicts.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn infra_failure(&self) {
        self.infra_failures.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn duplicate(&self) {
        self.duplicates.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn occupied(&self, d: std::time::Duration) {
        self.occupied_micros
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
    }

    /// Records the latency of a message completed successfully: from when its origin (the first
    /// message of its chain through the pipeline) was sent until its completion was committed.
    pub(super) fn record_latency(&self, body_bytes: usize, ms: u64) {
        self.end_to_end_seconds.0.record(ms as f64 / 1000.0);
        if body_bytes > LARGE_BODY_BYTES {
            self.large_latency.record(ms);
        } else {
            self.latency.record(ms);
        }
    }

    /// Records a completed message and the target function of each message it emitted.
    pub(super) fn record_emits<'a>(&self, targets: impl IntoIterator<Item = &'a str>) {
        let mut e = self.emits.lock().expect("emit counters poisoned");
        e.completed += 1;
        for t in targets {
            match e.emitted.get_mut(t) {
                Some(n) => *n += 1,
                None => {
                    e.emitted.insert(t.to_string(), 1);
                }
            }
        }
    }

    pub(super) fn emit_counts(&self) -> EmitCounts {
        self.emits.lock().expect("emit counters poisoned").clone()
    }

    /// The small-message latency histogram now.
    pub fn latency_counts(&self) -> LatencyCounts {
        self.latency.counts()
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
            latency_samples: self.latency.count(),
            latency_p50_ms: self.latency.quantile(0.50),
            latency_p99_ms: self.latency.quantile(0.99),
            large_latency_samples: self.large_latency.count(),
            large_latency_p50_ms: self.large_latency.quantile(0.50),
            large_latency_p99_ms: self.large_latency.quantile(0.99),
            conflicts: self.conflicts.load(Ordering::Relaxed),
            infra_failures: self.infra_failures.load(Ordering::Relaxed),
            duplicates: self.duplicates.load(Ordering::Relaxed),
            paused: false,
        }
    }
}

/// Values below this are counted exactly (one bucket per ms).
const LINEAR: u64 = 64;
/// Sub-buckets per power of two above [`LINEAR`]: quantiles are within 1/16 (6%) of the truth.
const SUB_BITS: u32 = 4;
/// Powers of two covered above [`LINEAR`] (64 ms · 2^26 is beyond any latency worth telling apart).
const OCTAVES: usize = 26;
const BUCKETS: usize = LINEAR as usize + (OCTAVES << SUB_BITS);

/// A lock-free log-linear histogram of millisecond latencies, in the manner of HDR histograms:
/// exact below 64 ms, 16 buckets per power of two above.
#[derive(Debug)]
struct LatencyHistogram {
    buckets: Box<[AtomicU64]>,
    count: AtomicU64,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        Self {
            buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
        }
    }
}

/// The buckets of a pool's small-message latency histogram at one instant: two of them give
/// the quantiles of the messages completed in between ([`LatencyCounts::quantile_since`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LatencyCounts(Vec<u64>);

impl LatencyCounts {
    /// Messages counted.
    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }

    /// The `q` quantile (ms) of the messages counted since `before` (0 when none).
    pub fn quantile_since(&self, before: &LatencyCounts, q: f64) -> u64 {
        let diff: Vec<u64> = self
            .0
            .iter()
            .enumerate()
            .map(|(i, c)| c.saturating_sub(before.0.get(i).copied().unwrap_or(0)))
            .collect();
        quantile_of(&diff, q)
    }
}

/// The smallest bucket bound below which at least `q` of the samples of `counts` fall (0 when
/// there are none).
fn quantile_of(counts: &[u64], q: f64) -> u64 {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return 0;
    }
    let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
    let mut seen = 0;
    for (i, c) in counts.iter().enumerate() {
        seen += c;
        if seen >= rank {
            return bucket_value(i);
        }
    }
    bucket_value(counts.len() - 1)
}

impl LatencyHistogram {
    fn counts(&self) -> LatencyCounts {
        LatencyCounts(
            self.buckets
                .iter()
                .map(|b| b.load(Ordering::Relaxed))
                .collect(),
        )
    }

    fn record(&self, ms: u64) {
        self.buckets[bucket_of(ms)].fetch_add(1, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// The smallest bucket bound below which at least `q` of the samples fall (0 when empty).
    fn quantile(&self, q: f64) -> u64 {
        quantile_of(&self.counts().0, q)
    }
}

fn bucket_of(ms: u64) -> usize {
    if ms < LINEAR {
        return ms as usize;
    }
    let octave = 63 - ms.leading_zeros(); // >= 6 since ms >= 64
    let first = LINEAR.trailing_zeros();
    let sub = (ms >> (octave - SUB_BITS)) & ((1 << SUB_BITS) - 1);
    let i = LINEAR as usize + (((octave - first) as usize) << SUB_BITS) + sub as usize;
    i.min(BUCKETS - 1)
}

/// The upper bound of bucket `i` (the largest value it holds): quantiles err on the slow side.
fn bucket_value(i: usize) -> u64 {
    if i < LINEAR as usize {
        return i as u64;
    }
    let j = i - LINEAR as usize;
    let octave = (j >> SUB_BITS) as u32 + LINEAR.trailing_zeros();
    let sub = (j & ((1 << SUB_BITS) - 1)) as u64;
    let width = 1u64 << (octave - SUB_BITS);
    (1u64 << octave) + (sub + 1) * width - 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_latencies_are_exact() {
        let h = LatencyHistogram::default();
        for ms in 1..=100 {
            h.record(ms.min(50));
        }
        // 50 samples of 1..=50 ms, then 50 more of 50 ms.
        assert_eq!(h.count(), 100);
        assert_eq!(h.quantile(0.25), 25);
        assert_eq!(h.quantile(0.50), 50);
        assert_eq!(h.quantile(0.99), 50);
    }

    #[test]
    fn large_latencies_are_within_a_sixteenth() {
        let h = LatencyHistogram::default();
        for _ in 0..98 {
            h.record(10);
        }
        h.record(1_000);
        h.record(250_000);
        assert_eq!(h.quantile(0.50), 10);
        let p99 = h.quantile(0.99);
        assert!((1_000..=1_000 + 1_000 / 16).contains(&p99), "p99 {p99}");
        let max = h.quantile(1.0);
        assert!(
            (250_000..=250_000 + 250_000 / 16).contains(&max),
            "max {max}"
        );
    }

    #[test]
    fn buckets_are_contiguous_and_ordered() {
        // Every value lands in a bucket whose bound is >= it, and the previous bucket's is < it.
        for ms in (0..5_000).chain([1 << 20, (1 << 20) + 12_345, 1 << 31]) {
            let i = bucket_of(ms);
            assert!(bucket_value(i) >= ms, "{ms} in bucket {i}");
            if i > 0 {
                assert!(bucket_value(i - 1) < ms, "{ms} in bucket {i}");
            }
        }
        assert_eq!(bucket_of(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn large_bodies_are_counted_apart() {
        let c = WorkerCounters::default();
        for _ in 0..10 {
            c.record_latency(100, 5);
        }
        c.record_latency(LARGE_BODY_BYTES + 1, 50);
        let s = c.snapshot(1, 1);
        assert_eq!((s.latency_samples, s.latency_p99_ms), (10, 5));
        assert_eq!((s.large_latency_samples, s.large_latency_p50_ms), (1, 50));
    }

    #[test]
    fn emits_are_counted_per_target() {
        let c = WorkerCounters::default();
        c.record_emits(["routing", "search-index"]);
        c.record_emits(["routing"]);
        c.record_emits([]);
        let e = c.emit_counts();
        assert_eq!(e.completed, 3);
        assert_eq!(e.emitted["routing"], 2);
        assert_eq!(e.emitted["search-index"], 1);
    }

    #[test]
    fn empty_histogram_reports_zero() {
        let h = LatencyHistogram::default();
        assert_eq!(h.quantile(0.5), 0);
        assert_eq!(h.count(), 0);
    }
}
