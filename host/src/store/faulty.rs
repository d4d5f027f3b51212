//! `FaultyStore`: a decorator that injects faults into any [`Store`] at run time — added latency,
//! a failure rate (1.0 = every call fails), a hang (calls never answer until released) and a
//! concurrency capacity that makes excess calls queue like a saturated database — and counts the
//! calls that reached it and the inner store. Tests and benchmarks use it to stage outages.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::{Semaphore, watch};

use super::{CommitOutcome, KvCommit, PutOptions, Store, Versioned};
use crate::{Error, Result};

#[derive(Debug, Clone, Default)]
struct Faults {
    latency: Duration,
    error_rate: f64,
    capacity: Option<Arc<Semaphore>>,
}

#[derive(Debug, Default)]
struct Counters {
    calls: AtomicU64,
    injected_errors: AtomicU64,
    gets: AtomicU64,
    puts: AtomicU64,
    deletes: AtomicU64,
    scans: AtomicU64,
    in_flight: AtomicU64,
    peak_in_flight: AtomicU64,
    working: AtomicU64,
    peak_working: AtomicU64,
}

/// Counts of what reached a [`FaultyStore`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct FaultStats {
    /// Calls made to the decorator, whatever happened to them.
    pub calls: u64,
    /// Calls failed by an injected error.
    pub injected_errors: u64,
    /// Calls of each kind that reached the inner store.
    pub gets: u64,
    pub puts: u64,
    pub deletes: u64,
    pub scans: u64,
    /// Calls inside the decorator now (hung, delayed, queued or in the inner store).
    pub in_flight: u64,
    /// The most calls that were ever inside the decorator at once.
    pub peak_in_flight: u64,
    /// The most calls that were ever past the capacity limit at once.
    pub peak_working: u64,
}

impl FaultStats {
    /// Calls of any kind that reached the inner store.
    pub fn reached_inner(&self) -> u64 {
        self.gets + self.puts + self.deletes + self.scans
    }
}

/// A fault-injecting wrapper around a store; every fault can be switched while calls run.
#[derive(Debug)]
pub struct FaultyStore<S: ?Sized + Store> {
    inner: Arc<S>,
    faults: Mutex<Faults>,
    hung: watch::Sender<bool>,
    counters: Counters,
}

/// Counts one call in a gauge for as long as it lives, and keeps the gauge's peak.
struct Gauge<'a>(&'a AtomicU64);

impl<'a> Gauge<'a> {
    fn enter(gauge: &'a AtomicU64, peak: &AtomicU64) -> Self {
        let now = gauge.fetch_add(1, Ordering::SeqCst) + 1;
        peak.fetch_max(now, Ordering::SeqCst);
        Gauge(gauge)
    }
}

impl Drop for Gauge<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

#[derive(Clone, Copy)]
enum Op {
    Get,
    Put,
    Delete,
    Scan,
}

impl<S: ?Sized + Store> FaultyStore<S> {
    /// A wrapper that passes every call through until a fault is switched on.
    pub fn new(inner: Arc<S>) -> Self {
        FaultyStore {
            inner,
            faults: Mutex::new(Faults::default()),
            hung: watch::Sender::new(false),
            counters: Counters::default(),
        }
    }

    /// The wrapped store.
    pub fn inner(&self) -> &Arc<S> {
        &self.inner
    }

    fn faults(&self) -> std::sync::MutexGuard<'_, Faults> {
        self.faults.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds `latency` to every call from now on.
    pub fn set_latency(&self, latency: Duration) {
        self.faults().latency = latency;
    }

    /// Fails this share of calls (0 to 1) with a retryable `Unavailable` error.
    pub fn set_error_rate(&self, rate: f64) -> Result<()> {
        if !(0.0..=1.0).contains(&rate) {
            return Err(Error::Invalid(format!(
                "fault error rate must be within 0 and 1, got {rate}"
            )));
        }
        self.faults().error_rate = rate;
        Ok(())
    }

    /// Fails every call until [`heal`](Self::heal).
    pub fn fail_always(&self) {
        self.faults().error_rate = 1.0;
    }

    /// Lets at most `capacity` calls work at once; the rest wait in the store's own queue, which
    /// is how a saturated database behaves. `None` removes the limit.
    pub fn set_capacity(&self, capacity: Option<usize>) -> Result<()> {
        if capacity == Some(0) {
            return Err(Error::Invalid(
                "fault capacity must be at least 1 call".into(),
            ));
        }
        self.faults().capacity = capacity.map(|n| Arc::new(Semaphore::new(n)));
        Ok(())
    }

    /// New calls stop answering until [`release`](Self::release) (calls already past the
    /// decorator's entry finish normally).
    pub fn hang(&self) {
        self.hung.send_replace(true);
    }

    /// Lets hung calls, and new ones, through.
    pub fn release(&self) {
        self.hung.send_replace(false);
    }

    /// Switches off errors and the hang (latency and capacity stay).
    pub fn heal(&self) {
        self.faults().error_rate = 0.0;
        self.release();
    }

    /// What reached the decorator so far.
    pub fn stats(&self) -> FaultStats {
        let c = &self.counters;
        let load = |a: &AtomicU64| a.load(Ordering::SeqCst);
        FaultStats {
            calls: load(&c.calls),
            injected_errors: load(&c.injected_errors),
            gets: load(&c.gets),
            puts: load(&c.puts),
            deletes: load(&c.deletes),
            scans: load(&c.scans),
            in_flight: load(&c.in_flight),
            peak_in_flight: load(&c.peak_in_flight),
            peak_working: load(&c.peak_working),
        }
    }

    async fn run<T>(&self, op: Op, call: impl Future<Output = Result<T>>) -> Result<T> {
        let c = &self.counters;
        c.calls.fetch_add(1, Ordering::SeqCst);
        let _in_flight = Gauge::enter(&c.in_flight, &c.peak_in_flight);

        // The sender lives in `self`, so `wait_for` cannot see a closed channel here.
        let _ = self.hung.subscribe().wait_for(|hung| !*hung).await;
        let faults = self.faults().clone();
        let _slot = match &faults.capacity {
            Some(sem) => Some(sem.acquire().await.map_err(|_| Error::Unavailable {
                service: "faulty store".into(),
                message: "capacity semaphore closed".into(),
            })?),
            None => None,
        };
        let _working = Gauge::enter(&c.working, &c.peak_working);
        if !faults.latency.is_zero() {
            tokio::time::sleep(faults.latency).await;
        }
        if faults.error_rate >= 1.0
            || (faults.error_rate > 0.0 && rand::random::<f64>() < faults.error_rate)
        {
            c.injected_errors.fetch_add(1, Ordering::SeqCst);
            return Err(Error::Unavailable {
                service: "faulty store".into(),
                message: "injected failure".into(),
            });
        }
        let counter = match op {
            Op::Get => &c.gets,
            Op::Put => &c.puts,
            Op::Delete => &c.deletes,
            Op::Scan => &c.scans,
        };
        counter.fetch_add(1, Ordering::SeqCst);
        call.await
    }
}

#[async_trait]
impl<S: ?Sized + Store> Store for FaultyStore<S> {
    async fn get(&self, ns: &str, key: &str) -> Result<Option<Bytes>> {
        self.run(Op::Get, self.inner.get(ns, key)).await
    }

    async fn get_versioned(&self, ns: &str, key: &str) -> Result<Versioned> {
        self.run(Op::Get, self.inner.get_versioned(ns, key)).await
    }

    /// A commit counts as one put.
    async fn commit(&self, commit: &KvCommit) -> Result<CommitOutcome> {
        self.run(Op::Put, self.inner.commit(commit)).await
    }

    async fn observe(&self, commit: &KvCommit, outcome: &CommitOutcome) {
        self.inner.observe(commit, outcome).await
    }

    async fn forget(&self, ns: &str, keys: &[String]) {
        self.inner.forget(ns, keys).await
    }

    /// A look into a cache below, not a store call: no fault applies.
    fn cached(&self, ns: &str, key: &str) -> Option<Versioned> {
        self.inner.cached(ns, key)
    }

    async fn put(&self, ns: &str, key: &str, value: Bytes, opts: PutOptions) -> Result<bool> {
        self.run(Op::Put, self.inner.put(ns, key, value, opts))
            .await
    }

    async fn delete(&self, ns: &str, key: &str) -> Result<()> {
        self.run(Op::Delete, self.inner.delete(ns, key)).await
    }

    async fn scan(
        &self,
        ns: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, Bytes)>> {
        self.run(Op::Scan, self.inner.scan(ns, prefix, after, limit))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::super::MemoryStore;
    use super::*;

    fn faulty() -> Arc<FaultyStore<dyn Store>> {
        let inner: Arc<dyn Store> = Arc::new(MemoryStore::new());
        Arc::new(FaultyStore::new(inner))
    }

    #[tokio::test]
    async fn passes_through_and_counts() {
        let f = faulty();
        assert!(
            f.put("f", "k", Bytes::from_static(b"v"), PutOptions::default())
                .await
                .unwrap()
        );
        assert_eq!(
            f.get("f", "k").await.unwrap(),
            Some(Bytes::from_static(b"v"))
        );
        assert_eq!(f.scan("f", "", None, 10).await.unwrap().len(), 1);
        f.delete("f", "k").await.unwrap();
        let s = f.stats();
        assert_eq!(
            (s.calls, s.gets, s.puts, s.scans, s.deletes),
            (4, 1, 1, 1, 1)
        );
        assert_eq!(s.reached_inner(), 4);
        assert_eq!(s.in_flight, 0);
    }

    #[tokio::test]
    async fn injected_errors_are_retryable_and_never_reach_the_inner_store() {
        let f = faulty();
        f.fail_always();
        let err = f.get("f", "k").await.unwrap_err();
        assert!(err.is_retryable(), "{err}");
        assert_eq!(f.stats().injected_errors, 1);
        assert_eq!(f.stats().reached_inner(), 0);
        f.heal();
        assert_eq!(f.get("f", "k").await.unwrap(), None);
        assert!(
            f.set_error_rate(1.5)
                .unwrap_err()
                .to_string()
                .contains("error rate")
        );
        assert!(f.set_capacity(Some(0)).is_err());
    }

    #[tokio::test]
    async fn hang_holds_calls_until_released() {
        let f = faulty();
        f.hang();
        let call = tokio::spawn({
            let f = f.clone();
            async move { f.get("f", "k").await }
        });
        while f.stats().in_flight == 0 {
            tokio::task::yield_now().await;
        }
        for _ in 0..100 {
            tokio::task::yield_now().await;
        }
        assert!(!call.is_finished(), "a hung call must not answer");
        assert_eq!(f.stats().reached_inner(), 0);
        f.release();
        assert_eq!(call.await.unwrap().unwrap(), None);
        assert_eq!(f.stats().gets, 1);
        assert_eq!(f.stats().in_flight, 0);
    }

    #[tokio::test]
    async fn capacity_bounds_calls_inside_the_inner_store() {
        let f = faulty();
        f.set_capacity(Some(2)).unwrap();
        f.set_latency(Duration::from_millis(2));
        let calls = (0..20).map(|i| {
            let f = f.clone();
            async move { f.get("f", &format!("k{i}")).await }
        });
        for r in futures::future::join_all(calls).await {
            assert_eq!(r.unwrap(), None);
        }
        assert_eq!(f.stats().gets, 20);
        assert_eq!(f.stats().peak_in_flight, 20, "all queued inside the store");
        assert_eq!(f.stats().peak_working, 2, "but only two at work at once");
    }
}
