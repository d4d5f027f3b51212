//! One granted destination's shared state on this host: its concurrency slots, its rate
//! limiter (governor), its circuit breaker and how long it asked to be left alone.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota};
use http::StatusCode;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::grant::{GrantSpec, Origin};
use crate::store::{BreakerState, CircuitBreaker};
use crate::{Error, Result};

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
    limiter: Option<DefaultDirectRateLimiter>,
    pub(super) breaker: CircuitBreaker,
    throttled_until: Mutex<Option<Instant>>,
}

impl Destination {
    pub fn new(function: &str, origin: Origin, spec: GrantSpec) -> Result<Self> {
        let limiter = match spec.rate {
            None => None,
            Some(rate) => {
                // governor counts whole cells per period: one cell every 1/rate s.
                let period = Duration::from_secs_f64(1.0 / rate);
                let burst = std::num::NonZeroU32::new(spec.burst.max(1)).expect("burst >= 1");
                let quota = Quota::with_period(period)
                    .ok_or_else(|| Error::Manifest(format!("rate {rate} is too high")))?
                    .allow_burst(burst);
                Some(DefaultDirectRateLimiter::direct(quota))
            }
        };
        Ok(Destination {
            breaker: CircuitBreaker::new(format!("{function} → {origin}"), spec.breaker.clone())?,
            slots: Arc::new(Semaphore::new(spec.concurrency as usize)),
            limiter,
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

    /// Waits for the rate limiter; `Err(wait)` if the next permit comes after `deadline`.
    pub(super) async fn pace(&self, deadline: Instant) -> std::result::Result<(), Duration> {
        let Some(limiter) = &self.limiter else {
            return Ok(());
        };
        let clock = DefaultClock::default();
        loop {
            match limiter.check() {
                Ok(()) => return Ok(()),
                Err(not_until) => {
                    let wait = not_until.wait_time_from(clock.now());
                    if Instant::now() + wait >= deadline {
                        return Err(wait);
                    }
                    tokio::time::sleep(wait).await;
                }
            }
        }
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

    #[tokio::test]
    async fn the_rate_limit_refuses_what_would_pass_the_deadline() {
        let mut spec = GrantSpec::new("http://127.0.0.1:1");
        spec.rate = Some(2.0);
        let origin = spec.validate("t").unwrap();
        let d = Destination::new("f", origin, spec).unwrap();
        let soon = Instant::now() + Duration::from_millis(100);
        assert_eq!(d.pace(soon).await, Ok(()));
        // The next permit is 500 ms away: past a 100 ms deadline.
        let wait = d.pace(soon).await.unwrap_err();
        assert!(wait > Duration::from_millis(300), "{wait:?}");
        // Within a longer deadline it waits for it.
        let started = Instant::now();
        d.pace(Instant::now() + Duration::from_secs(2))
            .await
            .unwrap();
        assert!(started.elapsed() >= Duration::from_millis(300));
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
