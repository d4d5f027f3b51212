//! One granted destination's shared state on this host: its concurrency slots, its pacer (the
//! rate limit), its circuit breaker and how long it asked to be left alone.
//!
//! The pacer is hand-written rather than governor's limiter, which Levee uses for admission in
//! the ingress: admission answers "now or not", and callers that must wait have to poll it. Many
//! waiters polling a governor limiter race for each cell and sleep to 1 ms timer ticks, which
//! measured here lost a quarter of the rate (261/s of 360/s with 12 waiters) and made some wait
//! 200 ms while others went at once. The pacer is GCRA with reservations: each request takes the
//! next start time at once (first come, first served) and sleeps until it, so late wake-ups do
//! not lose cells and no request waits longer than those ahead of it.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use http::StatusCode;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::grant::{GrantSpec, Origin};
use crate::Result;
use crate::store::{BreakerState, CircuitBreaker};

/// How long a destination is left alone after a 429 or 503 without `Retry-After`.
pub const DEFAULT_THROTTLE: Duration = Duration::from_secs(1);

/// Why an invocation's calls found a destination unavailable; the invocation's failure is then
/// the destination's, not the message's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unavailable {
    pub reason: String,
    /// How long the destination asked to be left alone, if it said.
    pub retry_after: Option<Duration>,
}

/// A destination's limits and state, shared by every invocation of the function on this host.
#[derive(Debug)]
pub struct Destination {
    pub origin: Origin,
    pub(super) spec: GrantSpec,
    slots: Arc<Semaphore>,
    pacer: Option<Pacer>,
    pub(super) breaker: CircuitBreaker,
    throttled_until: Mutex<Option<Instant>>,
}

impl Destination {
    pub fn new(function: &str, origin: Origin, spec: GrantSpec) -> Result<Self> {
        let pacer = spec.rate.map(|rate| Pacer::new(rate, spec.burst));
        Ok(Destination {
            breaker: CircuitBreaker::new(format!("{function} → {origin}"), spec.breaker.clone())?,
            slots: Arc::new(Semaphore::new(spec.concurrency as usize)),
            pacer,
            origin,
            spec,
            throttled_until: Mutex::new(None),
        })
    }

    /// The breaker's state (for status and metrics).
    pub fn breaker_state(&self) -> BreakerState {
        self.breaker.state()
    }

    /// Requests in flight now.
    pub fn in_flight(&self) -> usize {
        self.spec.concurrency as usize - self.slots.available_permits()
    }

    /// If the destination asked to be left alone, for how much longer.
    pub fn throttled_for(&self, now: Instant) -> Option<Duration> {
        let until = *self
            .throttled_until
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        until.and_then(|u| (u > now).then(|| u - now))
    }

    /// Leaves the destination alone for `for_` (the longest of overlapping requests wins).
    pub(super) fn throttle(&self, now: Instant, for_: Duration) {
        let mut t = self
            .throttled_until
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let until = now + for_;
        if t.is_none_or(|old| old < until) {
            *t = Some(until);
        }
    }

    /// A concurrency slot, waiting at most until `deadline`.
    pub(super) async fn slot(&self, deadline: Instant) -> Option<OwnedSemaphorePermit> {
        tokio::time::timeout_at(deadline.into(), self.slots.clone().acquire_owned())
            .await
            .ok()?
            .ok()
    }

    /// Waits for the rate limit; `Err(wait)` (nothing reserved) if the request could start
    /// only at or after `deadline`.
    pub(super) async fn pace(&self, deadline: Instant) -> std::result::Result<(), Duration> {
        let Some(pacer) = &self.pacer else {
            return Ok(());
        };
        let start = pacer.reserve(tokio::time::Instant::from_std(deadline))?;
        tokio::time::sleep_until(start).await;
        Ok(())
    }
}

/// GCRA with reservations (see the module's comment): `rate` starts per second, `burst` of
/// them at once after a quiet spell.
#[derive(Debug)]
struct Pacer {
    period: Duration,
    /// How far ahead of its theoretical time a start may go: `(burst - 1) × period`.
    tolerance: Duration,
    /// The theoretical arrival time of the next start.
    next: Mutex<Option<tokio::time::Instant>>,
}

impl Pacer {
    fn new(rate: f64, burst: u32) -> Self {
        let period = Duration::from_secs_f64(1.0 / rate);
        Pacer {
            period,
            tolerance: period * burst.max(1).saturating_sub(1),
            next: Mutex::new(None),
        }
    }

    /// The start time of the next request, reserved; `Err(wait)` without reserving when it is
    /// at or after `deadline`.
    fn reserve(
        &self,
        deadline: tokio::time::Instant,
    ) -> std::result::Result<tokio::time::Instant, Duration> {
        let now = tokio::time::Instant::now();
        let mut next = self.next.lock().unwrap_or_else(|p| p.into_inner());
        let tat = next.map_or(now, |t| t.max(now));
        let start = tat.checked_sub(self.tolerance).unwrap_or(now).max(now);
        if start >= deadline {
            return Err(start - now);
        }
        *next = Some(tat.max(start) + self.period);
        Ok(start)
    }
}

/// Whether an answer's status means the destination is failing (for its breaker).
pub(super) fn is_failure(status: StatusCode) -> bool {
    matches!(status.as_u16(), 502..=504)
}

/// Whether an answer's status asks the caller to slow down.
pub(super) fn is_throttle(status: StatusCode) -> bool {
    matches!(status.as_u16(), 429 | 503)
}

/// A `Retry-After` value (seconds or an HTTP date), capped at `max`.
pub(super) fn retry_after(value: Option<&http::HeaderValue>, max: Duration) -> Option<Duration> {
    let v = value?.to_str().ok()?.trim();
    let d = match v.parse::<u64>() {
        Ok(s) => Duration::from_secs(s),
        Err(_) => httpdate::parse_http_date(v)
            .ok()?
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
    };
    Some(d.min(max))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_reads_seconds_and_dates_and_is_capped() {
        let max = Duration::from_secs(300);
        let h = |s: &str| http::HeaderValue::from_str(s).unwrap();
        assert_eq!(
            retry_after(Some(&h("7")), max),
            Some(Duration::from_secs(7))
        );
        assert_eq!(retry_after(Some(&h("99999")), max), Some(max));
        let later = SystemTime::now() + Duration::from_secs(30);
        let d = retry_after(Some(&h(&httpdate::fmt_http_date(later))), max).unwrap();
        assert!(
            d > Duration::from_secs(27) && d <= Duration::from_secs(30),
            "{d:?}"
        );
        assert_eq!(retry_after(Some(&h("soon")), max), None);
        assert_eq!(retry_after(None, max), None);
    }

    fn paced(rate: f64, burst: u32) -> Arc<Destination> {
        let mut spec = GrantSpec::new("http://127.0.0.1:1");
        spec.rate = Some(rate);
        spec.burst = burst;
        let origin = spec.validate("t").unwrap();
        Arc::new(Destination::new("f", origin, spec).unwrap())
    }

    fn after(d: Duration) -> Instant {
        (tokio::time::Instant::now() + d).into_std()
    }

    #[tokio::test(start_paused = true)]
    async fn the_rate_limit_refuses_what_would_pass_the_deadline() {
        let d = paced(2.0, 1);
        let soon = after(Duration::from_millis(100));
        assert_eq!(d.pace(soon).await, Ok(()));
        // The next start is 500 ms away: past a 100 ms deadline, and not reserved.
        let wait = d.pace(soon).await.unwrap_err();
        assert_eq!(wait, Duration::from_millis(500));
        // Within a longer deadline it waits for it.
        let started = tokio::time::Instant::now();
        d.pace(after(Duration::from_secs(2))).await.unwrap();
        assert_eq!(started.elapsed(), Duration::from_millis(500));
    }

    #[tokio::test(start_paused = true)]
    async fn many_waiters_get_the_whole_rate_first_come_first_served() {
        let d = paced(360.0, 1);
        let start = tokio::time::Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..12 {
            let d = d.clone();
            tasks.push(tokio::spawn(async move {
                let (mut n, mut longest) = (0u32, Duration::ZERO);
                while start.elapsed() < Duration::from_secs(2) {
                    let t = tokio::time::Instant::now();
                    d.pace(after(Duration::from_secs(2))).await.unwrap();
                    longest = longest.max(t.elapsed());
                    n += 1;
                }
                (n, longest)
            }));
        }
        let mut total = 0;
        for t in tasks {
            let (n, longest) = t.await.unwrap();
            total += n;
            // Twelve waiters: each waits for the eleven ahead of it, no longer.
            let bound = Duration::from_secs_f64(12.0 / 360.0) + Duration::from_millis(1);
            assert!(longest <= bound, "{longest:?}");
        }
        // 2 s at 360/s: 720 starts, plus the twelve reserved as the time ran out.
        assert!((720..=732).contains(&total), "{total}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_goes_at_once_after_a_quiet_spell_then_the_rate_holds() {
        let d = paced(10.0, 5);
        let t = tokio::time::Instant::now();
        for _ in 0..5 {
            d.pace(after(Duration::from_secs(5))).await.unwrap();
        }
        assert_eq!(t.elapsed(), Duration::ZERO, "five at once");
        d.pace(after(Duration::from_secs(5))).await.unwrap();
        assert_eq!(
            t.elapsed(),
            Duration::from_millis(100),
            "then one per 100 ms"
        );
    }

    #[test]
    fn throttling_keeps_the_longest_wait() {
        let d = Destination::new(
            "f",
            Origin::parse("http://a:1").unwrap(),
            GrantSpec::new("http://a:1"),
        )
        .unwrap();
        let now = Instant::now();
        d.throttle(now, Duration::from_secs(5));
        d.throttle(now, Duration::from_secs(1));
        let left = d.throttled_for(now).unwrap();
        assert_eq!(left, Duration::from_secs(5));
        assert_eq!(d.throttled_for(now + Duration::from_secs(6)), None);
    }
}
