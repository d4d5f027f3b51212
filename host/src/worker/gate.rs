//! Backpressure after infrastructure failures. When the store is down, the instance pool is full,
//! settling fails or an outbound destination is unavailable (429/503, its breaker open; its
//! `Retry-After` sets the least pause), retrying at full speed would only cycle the backlog (and, on SQS, raise
//! every message's receive count toward the redrive DLQ). The pool's gate closes instead: its
//! fetchers stop, wait out a pause that doubles per failed probe, then let one message through as
//! a probe; the pool resumes when the probe gets through. The backlog waits durably in the queue.

use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

/// First pause after an infrastructure failure.
pub const PAUSE_BASE: Duration = Duration::from_millis(500);
/// Longest pause between two probes.
pub const PAUSE_MAX: Duration = Duration::from_secs(15);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Open,
    /// Closed until `until`; `failures` probes (or first failures) failed in a row.
    Paused {
        until: Instant,
        failures: u32,
    },
    /// One fetcher is probing with a single message.
    Probing {
        failures: u32,
    },
}

/// What a fetcher may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Fetch as many messages as there are free workers.
    Open,
    /// Fetch one message: the probe.
    Probe,
}

/// The gate of one pool.
#[derive(Debug)]
pub struct Gate {
    state: Mutex<State>,
    changed: Notify,
}

impl Default for Gate {
    fn default() -> Self {
        Self {
            state: Mutex::new(State::Open),
            changed: Notify::new(),
        }
    }
}

impl Gate {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits until the pool may fetch.
    pub async fn admit(&self) -> Admit {
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let wait_until = {
                let mut state = self.lock();
                match *state {
                    State::Open => return Admit::Open,
                    State::Paused { until, failures } if Instant::now() >= until => {
                        *state = State::Probing { failures };
                        return Admit::Probe;
                    }
                    State::Paused { until, .. } => Some(until),
                    State::Probing { .. } => None,
                }
            };
            match wait_until {
                Some(until) => tokio::select! {
                    _ = tokio::time::sleep_until(until) => {}
                    _ = &mut notified => {}
                },
                None => notified.await,
            }
        }
    }

    /// A message got through: the pool runs at full speed again.
    pub fn succeeded(&self) {
        let mut state = self.lock();
        if *state != State::Open {
            *state = State::Open;
            drop(state);
            self.changed.notify_waiters();
        }
    }

    /// A probe found the queue empty: nothing to test with, so the pool opens again.
    pub fn probe_found_nothing(&self) {
        let mut state = self.lock();
        if matches!(*state, State::Probing { .. }) {
            *state = State::Open;
            drop(state);
            self.changed.notify_waiters();
        }
    }

    /// An infrastructure failure: closes the gate (a failure seen while already closed, from a
    /// message that was running before, changes nothing). Returns how long the pause lasts,
    /// which is also how long the failed message should stay hidden.
    pub fn failed(&self) -> Duration {
        self.failed_for(Duration::ZERO)
    }

    /// [`failed`](Self::failed), pausing at least `at_least` (a downstream's `Retry-After`,
    /// which may exceed [`PAUSE_MAX`]; its caller bounds it).
    pub fn failed_for(&self, at_least: Duration) -> Duration {
        let mut state = self.lock();
        let now = Instant::now();
        let failures = match *state {
            State::Open => 1,
            State::Probing { failures } => failures + 1,
            State::Paused { until, failures } => {
                if now + at_least > until {
                    *state = State::Paused {
                        until: now + at_least,
                        failures,
                    };
                    return at_least;
                }
                return until.saturating_duration_since(now);
            }
        };
        let pause = pause(failures).max(at_least);
        *state = State::Paused {
            until: now + pause,
            failures,
        };
        drop(state);
        // Fetchers waiting out a probe now wait for the pause's end instead.
        self.changed.notify_waiters();
        pause
    }

    /// Whether fetching is paused or limited to a probe.
    pub fn is_closed(&self) -> bool {
        *self.lock() != State::Open
    }
}

fn pause(failures: u32) -> Duration {
    let exp = PAUSE_BASE.saturating_mul(1 << failures.saturating_sub(1).min(16));
    exp.min(PAUSE_MAX)
        .mul_f64(rand::random_range(0.8..1.2))
        .min(PAUSE_MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_failure_pauses_then_admits_one_probe_and_success_reopens() {
        let gate = Gate::default();
        assert_eq!(gate.admit().await, Admit::Open);
        let p = gate.failed();
        assert!(
            p >= PAUSE_BASE.mul_f64(0.8) && p <= PAUSE_BASE.mul_f64(1.2),
            "{p:?}"
        );
        assert!(gate.is_closed());
        // Failures of messages that were already running do not lengthen the pause.
        assert!(gate.failed() <= p);
        let start = Instant::now();
        assert_eq!(gate.admit().await, Admit::Probe);
        assert!(start.elapsed() >= p.mul_f64(0.99), "{:?}", start.elapsed());
        // While one fetcher probes, the others wait.
        let waiting = tokio::time::timeout(Duration::from_secs(60), gate.admit()).await;
        assert!(waiting.is_err(), "a second fetcher got in during the probe");
        gate.succeeded();
        assert!(!gate.is_closed());
        assert_eq!(gate.admit().await, Admit::Open);
    }

    #[tokio::test(start_paused = true)]
    async fn failed_probes_double_the_pause_up_to_the_cap() {
        let gate = Gate::default();
        let mut last = gate.failed();
        for _ in 0..8 {
            assert_eq!(gate.admit().await, Admit::Probe);
            let next = gate.failed();
            assert!(next <= PAUSE_MAX);
            assert!(
                next >= last.min(PAUSE_MAX.mul_f64(0.6)),
                "{last:?} then {next:?}"
            );
            last = next;
        }
        assert!(last >= PAUSE_MAX.mul_f64(0.8), "{last:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_fetcher_waiting_out_a_probe_probes_again_after_it_failed() {
        let gate = std::sync::Arc::new(Gate::default());
        gate.failed();
        assert_eq!(gate.admit().await, Admit::Probe);
        let waiter = tokio::spawn({
            let gate = gate.clone();
            async move { gate.admit().await }
        });
        tokio::task::yield_now().await;
        gate.failed();
        let next = tokio::time::timeout(PAUSE_MAX * 2, waiter).await;
        assert_eq!(next.expect("woken").unwrap(), Admit::Probe);
    }

    #[tokio::test(start_paused = true)]
    async fn an_empty_probe_reopens() {
        let gate = Gate::default();
        gate.failed();
        assert_eq!(gate.admit().await, Admit::Probe);
        gate.probe_found_nothing();
        assert_eq!(gate.admit().await, Admit::Open);
    }
}
