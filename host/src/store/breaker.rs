//! A circuit breaker for one downstream store, and the injectable [`Clock`] it (and the cache)
//! read time from.
//!
//! The breaker is a small state machine: closed until too many calls fail (a run of consecutive
//! failures, or a failure ratio over the last calls), then open and failing fast with a retryable
//! [`Error::CircuitOpen`] for a cool-down, then half-open, letting exactly one probe through: the
//! probe's success closes it, its failure opens it again. Time is an input (`now`), so tests
//! drive it with a [`ManualClock`] instead of sleeping.

use std::collections::VecDeque;
use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Consecutive failures that open the breaker.
pub const DEFAULT_FAILURE_THRESHOLD: u32 = 5;
/// Share of failed calls in the recent window that opens the breaker.
pub const DEFAULT_FAILURE_RATIO: f64 = 0.5;
/// How many recent calls the failure ratio is computed over (and the least it needs).
pub const DEFAULT_RATIO_WINDOW: u32 = 20;
/// How long an open breaker fails fast before letting a probe through, in milliseconds.
pub const DEFAULT_COOL_DOWN_MS: u64 = 5_000;

/// Where the cache layer reads the time from.
pub trait Clock: Send + Sync + fmt::Debug {
    /// The current instant.
    fn now(&self) -> Instant;
}

/// The real clock. It reads tokio's clock, so paused tokio time also pauses it.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        tokio::time::Instant::now().into_std()
    }
}

/// A clock that only moves when told to, for tests.
#[derive(Debug)]
pub struct ManualClock {
    start: Instant,
    offset: Mutex<Duration>,
}

impl ManualClock {
    /// A clock standing at an arbitrary instant.
    pub fn new() -> Self {
        ManualClock {
            start: Instant::now(),
            offset: Mutex::new(Duration::ZERO),
        }
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        *self.offset.lock().unwrap_or_else(|p| p.into_inner()) += by;
    }
}

impl Default for ManualClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        self.start + *self.offset.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// When a breaker opens and how long it stays open.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BreakerConfig {
    /// Consecutive failures that open the breaker (at least 1).
    pub failure_threshold: u32,
    /// Share of failures among the last `ratio_window` calls that opens the breaker, in (0, 1].
    pub failure_ratio: f64,
    /// Number of recent calls the ratio is computed over (at least 1); the ratio only applies
    /// once that many calls were seen.
    pub ratio_window: u32,
    /// Milliseconds an open breaker fails fast before it lets one probe through (at least 1).
    pub cool_down_ms: u64,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            failure_threshold: DEFAULT_FAILURE_THRESHOLD,
            failure_ratio: DEFAULT_FAILURE_RATIO,
            ratio_window: DEFAULT_RATIO_WINDOW,
            cool_down_ms: DEFAULT_COOL_DOWN_MS,
        }
    }
}

impl BreakerConfig {
    /// The cool-down as a duration.
    pub fn cool_down(&self) -> Duration {
        Duration::from_millis(self.cool_down_ms)
    }

    /// Checks every field; `field_prefix` (like `cache.breaker`) names where the config sits.
    pub fn validate(&self, field_prefix: &str) -> Result<()> {
        if self.failure_threshold == 0 {
            return Err(Error::Manifest(format!(
                "{field_prefix}.failure_threshold must be at least 1, got 0"
            )));
        }
        if !(self.failure_ratio > 0.0 && self.failure_ratio <= 1.0) {
            return Err(Error::Manifest(format!(
                "{field_prefix}.failure_ratio must be greater than 0 and at most 1, got {}",
                self.failure_ratio
            )));
        }
        if self.ratio_window == 0 {
            return Err(Error::Manifest(format!(
                "{field_prefix}.ratio_window must be at least 1, got 0"
            )));
        }
        if self.cool_down_ms == 0 {
            return Err(Error::Manifest(format!(
                "{field_prefix}.cool_down_ms must be at least 1 (milliseconds), got 0"
            )));
        }
        Ok(())
    }
}

/// What a breaker currently does with calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BreakerState {
    /// Calls go through.
    Closed,
    /// Calls fail fast.
    Open,
    /// One probe is in flight; other calls fail fast until it reports.
    HalfOpen,
}

impl BreakerState {
    /// `closed`, `open` or `half-open`.
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half-open",
        }
    }
}

impl fmt::Display for BreakerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug)]
enum Mode {
    Closed,
    Open { until: Instant },
    HalfOpen { probe_started: Instant },
}

#[derive(Debug)]
struct State {
    mode: Mode,
    consecutive_failures: u32,
    /// Outcomes of the most recent calls while closed, `true` for a failure.
    recent: VecDeque<bool>,
    recent_failures: u32,
    opened: u64,
}

/// A circuit breaker guarding one downstream.
#[derive(Debug)]
pub struct CircuitBreaker {
    name: String,
    config: BreakerConfig,
    state: Mutex<State>,
}

impl CircuitBreaker {
    /// A closed breaker for the downstream called `name` (used in its errors).
    pub fn new(name: impl Into<String>, config: BreakerConfig) -> Result<Self> {
        config.validate("breaker")?;
        Ok(CircuitBreaker {
            name: name.into(),
            state: Mutex::new(State {
                mode: Mode::Closed,
                consecutive_failures: 0,
                recent: VecDeque::with_capacity(config.ratio_window as usize),
                recent_failures: 0,
                opened: 0,
            }),
            config,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // The state stays consistent even if a holder panicked: every update is a few assignments.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Asks to make a call at `now`. The permit must be told how the call went; dropping it
    /// unreported (a cancelled call) counts as neither success nor failure, except that a
    /// cancelled probe lets the next call probe again.
    pub fn try_acquire(&self, now: Instant) -> Result<BreakerPermit<'_>> {
        let mut state = self.lock();
        match state.mode {
            Mode::Closed => Ok(BreakerPermit {
                breaker: self,
                probe: false,
                reported: false,
            }),
            Mode::Open { until } if now >= until => {
                state.mode = Mode::HalfOpen { probe_started: now };
                Ok(BreakerPermit {
                    breaker: self,
                    probe: true,
                    reported: false,
                })
            }
            Mode::Open { .. } | Mode::HalfOpen { .. } => Err(Error::CircuitOpen(self.name.clone())),
        }
    }

    /// The state as callers see it now.
    pub fn state(&self) -> BreakerState {
        match self.lock().mode {
            Mode::Closed => BreakerState::Closed,
            Mode::Open { .. } => BreakerState::Open,
            Mode::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    /// How many times the breaker went from closed or half-open to open.
    pub fn times_opened(&self) -> u64 {
        self.lock().opened
    }

    fn open(&self, state: &mut State, now: Instant) {
        state.mode = Mode::Open {
            until: now + self.config.cool_down(),
        };
        state.opened += 1;
        state.consecutive_failures = 0;
        state.recent.clear();
        state.recent_failures = 0;
    }

    fn record(&self, probe: bool, failed: bool, now: Instant) {
        let mut state = self.lock();
        match (&state.mode, probe) {
            (Mode::HalfOpen { .. }, true) => {
                if failed {
                    self.open(&mut state, now);
                } else {
                    state.mode = Mode::Closed;
                    state.consecutive_failures = 0;
                    state.recent.clear();
                    state.recent_failures = 0;
                }
            }
            (Mode::Closed, false) => {
                if failed {
                    state.consecutive_failures += 1;
                } else {
                    state.consecutive_failures = 0;
                }
                if state.recent.len() == self.config.ratio_window as usize
                    && state.recent.pop_front() == Some(true)
                {
                    state.recent_failures -= 1;
                }
                state.recent.push_back(failed);
                state.recent_failures += u32::from(failed);
                let window_full = state.recent.len() == self.config.ratio_window as usize;
                let ratio = f64::from(state.recent_failures) / state.recent.len() as f64;
                if state.consecutive_failures >= self.config.failure_threshold
                    || (window_full && ratio >= self.config.failure_ratio)
                {
                    self.open(&mut state, now);
                }
            }
            // A call let through before the breaker changed state reports late: the state was
            // already decided by newer evidence, so the late outcome is ignored.
            _ => {}
        }
    }
}

/// Leave to make one call; report its outcome with [`success`](Self::success) or
/// [`failure`](Self::failure).
#[derive(Debug)]
pub struct BreakerPermit<'a> {
    breaker: &'a CircuitBreaker,
    probe: bool,
    reported: bool,
}

impl BreakerPermit<'_> {
    /// Whether this call is the half-open probe.
    pub fn is_probe(&self) -> bool {
        self.probe
    }

    /// The downstream answered (even with a permanent error: it is up).
    pub fn success(mut self, now: Instant) {
        self.reported = true;
        self.breaker.record(self.probe, false, now);
    }

    /// The downstream failed, timed out or was unavailable.
    pub fn failure(mut self, now: Instant) {
        self.reported = true;
        self.breaker.record(self.probe, true, now);
    }
}

impl Drop for BreakerPermit<'_> {
    fn drop(&mut self) {
        if self.reported || !self.probe {
            return;
        }
        let mut state = self.breaker.lock();
        if let Mode::HalfOpen { probe_started } = state.mode {
            // The probe was cancelled without an answer: stay open, but let the next call probe.
            state.mode = Mode::Open {
                until: probe_started,
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> BreakerConfig {
        BreakerConfig {
            failure_threshold: 3,
            failure_ratio: 0.5,
            ratio_window: 10,
            cool_down_ms: 1_000,
        }
    }

    fn fail(b: &CircuitBreaker, clock: &ManualClock) {
        b.try_acquire(clock.now())
            .expect("breaker should let the call through")
            .failure(clock.now());
    }

    fn succeed(b: &CircuitBreaker, clock: &ManualClock) {
        b.try_acquire(clock.now())
            .expect("breaker should let the call through")
            .success(clock.now());
    }

    #[test]
    fn opens_after_consecutive_failures_then_probes_and_closes() {
        let clock = ManualClock::new();
        let b = CircuitBreaker::new("kv", config()).unwrap();
        fail(&b, &clock);
        fail(&b, &clock);
        assert_eq!(b.state(), BreakerState::Closed);
        fail(&b, &clock);
        assert_eq!(b.state(), BreakerState::Open);
        assert_eq!(b.times_opened(), 1);

        let err = b.try_acquire(clock.now()).unwrap_err();
        assert!(
            matches!(err, Error::CircuitOpen(ref n) if n == "kv"),
            "{err}"
        );
        assert!(err.is_retryable());

        clock.advance(Duration::from_millis(999));
        assert!(b.try_acquire(clock.now()).is_err(), "still cooling down");
        clock.advance(Duration::from_millis(1));
        let probe = b.try_acquire(clock.now()).unwrap();
        assert!(probe.is_probe());
        assert_eq!(b.state(), BreakerState::HalfOpen);
        assert!(
            b.try_acquire(clock.now()).is_err(),
            "only one probe at a time"
        );
        probe.success(clock.now());
        assert_eq!(b.state(), BreakerState::Closed);
        succeed(&b, &clock);
    }

    #[test]
    fn failed_probe_reopens_for_another_cool_down() {
        let clock = ManualClock::new();
        let b = CircuitBreaker::new("kv", config()).unwrap();
        for _ in 0..3 {
            fail(&b, &clock);
        }
        clock.advance(Duration::from_secs(1));
        b.try_acquire(clock.now()).unwrap().failure(clock.now());
        assert_eq!(b.state(), BreakerState::Open);
        assert_eq!(b.times_opened(), 2);
        clock.advance(Duration::from_millis(500));
        assert!(b.try_acquire(clock.now()).is_err());
        clock.advance(Duration::from_millis(500));
        assert!(b.try_acquire(clock.now()).unwrap().is_probe());
    }

    #[test]
    fn cancelled_probe_lets_the_next_call_probe() {
        let clock = ManualClock::new();
        let b = CircuitBreaker::new("kv", config()).unwrap();
        for _ in 0..3 {
            fail(&b, &clock);
        }
        clock.advance(Duration::from_secs(1));
        drop(b.try_acquire(clock.now()).unwrap());
        assert_eq!(b.state(), BreakerState::Open);
        let probe = b.try_acquire(clock.now()).unwrap();
        assert!(probe.is_probe());
        probe.success(clock.now());
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[test]
    fn success_resets_the_consecutive_count() {
        let clock = ManualClock::new();
        let b = CircuitBreaker::new(
            "kv",
            BreakerConfig {
                failure_ratio: 1.0,
                ..config()
            },
        )
        .unwrap();
        for _ in 0..5 {
            fail(&b, &clock);
            fail(&b, &clock);
            succeed(&b, &clock);
        }
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[test]
    fn opens_on_failure_ratio_over_a_full_window() {
        let clock = ManualClock::new();
        let b = CircuitBreaker::new(
            "kv",
            BreakerConfig {
                failure_threshold: 100,
                ..config()
            },
        )
        .unwrap();
        // Alternating outcomes never make three failures in a row but reach a 50% ratio.
        for i in 0..9 {
            if i % 2 == 0 {
                fail(&b, &clock);
            } else {
                succeed(&b, &clock);
            }
        }
        assert_eq!(b.state(), BreakerState::Closed, "window not full yet");
        succeed(&b, &clock);
        assert_eq!(
            b.state(),
            BreakerState::Open,
            "5 failures in the last 10 calls"
        );
    }

    #[test]
    fn late_reports_from_before_opening_are_ignored() {
        let clock = ManualClock::new();
        let b = CircuitBreaker::new("kv", config()).unwrap();
        let slow = b.try_acquire(clock.now()).unwrap();
        for _ in 0..3 {
            fail(&b, &clock);
        }
        slow.success(clock.now());
        assert_eq!(b.state(), BreakerState::Open);
    }

    #[test]
    fn rejects_bad_config_naming_the_field() {
        let err = CircuitBreaker::new(
            "kv",
            BreakerConfig {
                failure_threshold: 0,
                ..config()
            },
        )
        .unwrap_err();
        assert!(err.to_string().contains("failure_threshold"), "{err}");
        let err = BreakerConfig {
            failure_ratio: 1.5,
            ..config()
        }
        .validate("cache.breaker")
        .unwrap_err();
        assert!(
            err.to_string().contains("cache.breaker.failure_ratio"),
            "{err}"
        );
        let err = BreakerConfig {
            cool_down_ms: 0,
            ..config()
        }
        .validate("b")
        .unwrap_err();
        assert!(err.to_string().contains("b.cool_down_ms"), "{err}");
        let err = BreakerConfig {
            ratio_window: 0,
            ..config()
        }
        .validate("b")
        .unwrap_err();
        assert!(err.to_string().contains("b.ratio_window"), "{err}");
    }

    #[test]
    fn state_serializes_as_a_string() {
        assert_eq!(
            serde_json::to_string(&BreakerState::HalfOpen).unwrap(),
            "\"half-open\""
        );
        assert_eq!(BreakerState::Open.to_string(), "open");
    }
}
