//! Surge detection for the live scaler: the ingress counts what it accepts per function
//! ([`ArrivalMeter`]); a watcher samples the counts every [`SAMPLE_EVERY`] and, when the
//! arrivals of the last [`SHORT_WINDOW`] are well above what the [`LONG_WINDOW`] before them
//! predicts (twice as many and beyond Poisson noise), records the short-window rate as a surge
//! ([`Surges`]) and wakes the controller, which decides at once instead of at its next tick.
//! While a surge is fresh ([`SURGE_HOLD`]) it wakes the controller every [`SURGE_TICK`] too, so the
//! service rates measured under the new load resize the pools within a second, not at the next
//! regular tick; then the regular interval takes over again.
//!
//! Only arrivals from outside are metered: a downstream function is sized in the same decision by
//! feed-forward from its upstream's expected outflow, and metering emits too would count the
//! surge twice. The test is a count test, not a rate threshold, so steady noisy load never fires
//! it: at 25 messages expected per short window it needs 45 or more (a 4σ excess).

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tokio::time::Instant;

/// How often the watcher samples the counts.
pub const SAMPLE_EVERY: Duration = Duration::from_millis(25);
/// The window whose arrivals are tested.
pub const SHORT_WINDOW: Duration = Duration::from_millis(250);
/// The window before it that says what to expect.
pub const LONG_WINDOW: Duration = Duration::from_secs(5);
/// How long a detected surge rate stays a floor on the function's measured arrival rate: until
/// the scaler's regular readings (a few seconds apart) carry the new rate themselves.
pub const SURGE_HOLD: Duration = Duration::from_secs(10);
/// How often the controller decides while a surge is fresh.
pub const SURGE_TICK: Duration = Duration::from_millis(250);
/// A surge already recorded fires again only when the short-window rate grew by this factor, so
/// a ramp wakes the controller a bounded number of times.
const REFIRE_GROWTH: f64 = 1.25;
/// A surge recorded this long after the previous record of the same function is a new step, not
/// more of the same ramp (a ramp refires within a window or two), so it is planned for afresh
/// (see [`Surges::rising`]).
const RAMP_GAP: Duration = Duration::from_secs(1);
/// Fewest arrivals in the short window above expectation that count as a surge.
const MIN_EXCESS: f64 = 10.0;

/// Messages the ingress accepted per function, running totals.
#[derive(Debug, Default)]
pub struct ArrivalMeter {
    counts: BTreeMap<String, AtomicU64>,
}

impl ArrivalMeter {
    /// A meter for these functions (others are not counted).
    pub fn new(functions: impl IntoIterator<Item = String>) -> Self {
        Self {
            counts: functions
                .into_iter()
                .map(|f| (f, AtomicU64::new(0)))
                .collect(),
        }
    }

    /// Counts `n` messages accepted for `function`.
    pub fn record(&self, function: &str, n: u64) {
        if let Some(c) = self.counts.get(function) {
            c.fetch_add(n, Ordering::Relaxed);
        }
    }

    fn totals(&self) -> impl Iterator<Item = (&String, u64)> {
        self.counts
            .iter()
            .map(|(f, c)| (f, c.load(Ordering::Relaxed)))
    }
}

/// A surge the watcher saw: the short-window arrival rate and when, and when this surge was
/// first seen (a ramp records a growing rate several times).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Surge {
    pub rate: f64,
    pub at: Instant,
    pub since: Instant,
}

/// The surges seen, per function, for the signal source.
#[derive(Debug, Default)]
pub struct Surges {
    inner: Mutex<SurgeState>,
}

#[derive(Debug, Default)]
struct SurgeState {
    by_function: BTreeMap<String, Surge>,
    /// Bumped on every recorded surge, so a reader knows whether one came since it last looked.
    generation: u64,
}

impl Surges {
    /// The current surge rate of `function`, if one was seen within [`SURGE_HOLD`] of `now`.
    pub fn rate(&self, function: &str, now: Instant) -> Option<f64> {
        let st = self.inner.lock().expect("surge state");
        st.by_function
            .get(function)
            .filter(|s| now.saturating_duration_since(s.at) <= SURGE_HOLD)
            .map(|s| s.rate)
    }

    /// The surge of `function` while it is new: within `reacting` of when it was first seen.
    pub fn rising(&self, function: &str, now: Instant, reacting: Duration) -> Option<Surge> {
        let st = self.inner.lock().expect("surge state");
        st.by_function
            .get(function)
            .filter(|s| now.saturating_duration_since(s.since) <= reacting)
            .filter(|s| now.saturating_duration_since(s.at) <= SURGE_HOLD)
            .copied()
    }

    /// How many surges were recorded so far.
    pub fn generation(&self) -> u64 {
        self.inner.lock().expect("surge state").generation
    }

    /// Records a surge of `function` at `rate` if it is new or grew by [`REFIRE_GROWTH`];
    /// returns whether it did (and the controller should be woken).
    fn record(&self, function: &str, rate: f64, now: Instant) -> bool {
        let mut st = self.inner.lock().expect("surge state");
        let fresh = st
            .by_function
            .get(function)
            .filter(|s| now.saturating_duration_since(s.at) <= SURGE_HOLD);
        if fresh.is_some_and(|s| rate < s.rate * REFIRE_GROWTH) {
            return false;
        }
        // Within SURGE_HOLD a step from 250 to 2,500 msg/s ten seconds after one from 0 to 250
        // would otherwise count as the old surge, long past its `rising` second.
        let since = fresh
            .filter(|s| now.saturating_duration_since(s.at) <= RAMP_GAP)
            .map_or(now, |s| s.since);
        st.by_function.insert(
            function.to_string(),
            Surge {
                rate,
                at: now,
                since,
            },
        );
        st.generation += 1;
        true
    }
}

/// Whether `short` arrivals in [`SHORT_WINDOW`] are a surge when `expected` were due at the
/// long-window rate: at least twice as many, and more than 4σ (Poisson) plus [`MIN_EXCESS`] above.
pub fn is_surge(short: f64, expected: f64) -> bool {
    let expected = expected.max(0.0);
    short >= 2.0 * expected && short >= expected + 4.0 * expected.sqrt() + MIN_EXCESS
}

/// One function's recent totals, oldest first, covering [`LONG_WINDOW`] + [`SHORT_WINDOW`].
#[derive(Debug, Default)]
struct History {
    samples: VecDeque<(Instant, u64)>,
}

impl History {
    fn push(&mut self, at: Instant, total: u64) {
        self.samples.push_back((at, total));
        while self
            .samples
            .front()
            .is_some_and(|(t, _)| at.saturating_duration_since(*t) > LONG_WINDOW + SHORT_WINDOW)
        {
            self.samples.pop_front();
        }
    }

    /// The latest sample at or before `t`.
    fn at_or_before(&self, t: Instant) -> Option<(Instant, u64)> {
        self.samples.iter().rev().find(|(s, _)| *s <= t).copied()
    }

    /// (arrivals in the short window, arrivals expected there from the window before, the short
    /// window's rate), once at least a second of history is there to compare against.
    fn test(&self) -> Option<(f64, f64, f64)> {
        let &(now, total) = self.samples.back()?;
        let (cut_t, cut) = self.at_or_before(now.checked_sub(SHORT_WINDOW)?)?;
        let &(first_t, first) = self.samples.front()?;
        let long = cut_t.saturating_duration_since(first_t);
        let short = now.saturating_duration_since(cut_t);
        if long < Duration::from_secs(1) || short.is_zero() {
            return None;
        }
        let base_rate = cut.saturating_sub(first) as f64 / long.as_secs_f64();
        let n = total.saturating_sub(cut) as f64;
        Some((n, base_rate * short.as_secs_f64(), n / short.as_secs_f64()))
    }
}

/// Samples `meter` until `stop`, recording surges into `surges` and notifying `wake` on each.
pub async fn watch(
    meter: Arc<ArrivalMeter>,
    surges: Arc<Surges>,
    wake: Arc<Notify>,
    mut stop: watch::Receiver<bool>,
) {
    let mut history: BTreeMap<String, History> = BTreeMap::new();
    let mut surging_until = None::<Instant>;
    let mut last_wake = Instant::now();
    let mut every = tokio::time::interval(SAMPLE_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = every.tick() => {}
            r = stop.changed() => if r.is_err() || *stop.borrow() { return },
        }
        let now = Instant::now();
        let mut fired = false;
        for (f, total) in meter.totals() {
            let h = history.entry(f.clone()).or_default();
            h.push(now, total);
            if let Some((n, expected, rate)) = h.test()
                && is_surge(n, expected)
                && surges.record(f, rate, now)
            {
                tracing::debug!(function = %f, rate, expected, "arrival surge: waking the scaler");
                fired = true;
            }
        }
        if fired {
            surging_until = Some(now + SURGE_HOLD);
        }
        let fast = surging_until.is_some_and(|u| now < u) && now - last_wake >= SURGE_TICK;
        if fired || fast {
            last_wake = now;
            wake.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ramp_is_one_surge_and_a_later_step_a_new_one() {
        let surges = Surges::default();
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let reacting = Duration::from_secs(1);
        // A ramp: each record 25-50 ms after the last, each 1.25x or more above it.
        for (ms, rate) in [(0, 100.0), (25, 130.0), (75, 170.0), (100, 250.0)] {
            assert!(surges.record("f", rate, at(ms)));
        }
        assert_eq!(
            surges.rising("f", at(900), reacting).map(|s| s.rate),
            Some(250.0)
        );
        assert_eq!(
            surges.rising("f", at(1_100), reacting),
            None,
            "since the ramp began"
        );
        // Growth below the refire factor is the same surge.
        assert!(!surges.record("f", 300.0, at(2_000)));
        // A step 9.8 s later, within SURGE_HOLD of the ramp: a new surge, rising again.
        assert!(surges.record("f", 2_500.0, at(9_900)));
        let step = surges.rising("f", at(10_500), reacting).unwrap();
        assert_eq!((step.rate, step.since), (2_500.0, at(9_900)));
        assert_eq!(surges.rate("f", at(10_500)), Some(2_500.0));
    }

    #[test]
    fn steady_poisson_noise_is_not_a_surge() {
        // 100 msg/s: 25 expected per short window; 40 is noise, a 10x step is not.
        assert!(!is_surge(40.0, 25.0));
        assert!(is_surge(250.0, 25.0));
        // At 4,000 msg/s a 1.5x excess is well beyond noise but below the 2x a surge needs.
        assert!(!is_surge(1_500.0, 1_000.0));
        assert!(is_surge(2_000.0, 1_000.0));
        // From idle, a handful of messages is not a surge, a burst is.
        assert!(!is_surge(8.0, 0.0));
        assert!(is_surge(12.0, 0.0));
    }

    #[tokio::test(start_paused = true)]
    async fn a_step_is_seen_within_a_short_window_and_noise_never() {
        let meter = Arc::new(ArrivalMeter::new(["inbound".to_string()]));
        let surges = Arc::new(Surges::default());
        let wake = Arc::new(Notify::new());
        let (stop_tx, stop) = watch::channel(false);
        let task = tokio::spawn(watch(meter.clone(), surges.clone(), wake.clone(), stop));
        // 10 s at 100 msg/s with bursts of +-40% per 25 ms step: nothing fires.
        for i in 0..400u64 {
            meter.record("inbound", if i % 2 == 0 { 1 } else { 4 });
            tokio::time::sleep(SAMPLE_EVERY).await;
        }
        assert_eq!(surges.generation(), 0, "steady load woke the scaler");
        // A step to 1,000 msg/s (25 per step): seen within 150 ms, at a rising rate.
        let step = Instant::now();
        let woken = tokio::spawn({
            let wake = wake.clone();
            async move { wake.notified().await }
        });
        while !woken.is_finished() {
            meter.record("inbound", 25);
            tokio::time::sleep(SAMPLE_EVERY).await;
        }
        assert!(
            step.elapsed() <= Duration::from_millis(150),
            "{:?}",
            step.elapsed()
        );
        for _ in 0..20 {
            meter.record("inbound", 25);
            tokio::time::sleep(SAMPLE_EVERY).await;
        }
        let rate = surges.rate("inbound", Instant::now()).expect("a surge");
        assert!((800.0..=1_100.0).contains(&rate), "{rate}");
        assert!(surges.generation() <= 6, "{}", surges.generation());
        assert_eq!(
            surges.rate("inbound", Instant::now() + SURGE_HOLD * 2),
            None
        );
        stop_tx.send(true).unwrap();
        task.await.unwrap();
    }
}
