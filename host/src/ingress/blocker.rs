//! Automatic blocking: each source's request rate against its own recent baseline.
//!
//! Requests are counted in [`TICK`] buckets. At each tick the rate over the last second is
//! compared with `factor` × the source's baseline (an exponential moving average of its rate
//! with a time constant of `baseline_s`, never below `min_rate`). A source over it for
//! `window_ms` is blocked for `ttl_s`: its requests get 429 with `Retry-After` until the block
//! ends or an operator lifts it. The baseline keeps moving during a flood, slowly, so a source
//! whose traffic really grows is let back in once its baseline has caught up. A source at 100×
//! its baseline is over the threshold within one tick and blocked `window_ms` later.
//!
//! Hand-written rather than a crate: governor and its peers limit a rate; none compares a source
//! with its own history. Bounded: at most [`MAX_SOURCES`] sources are tracked (idle ones are
//! dropped first); past that, new sources are only rate-limited.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::settings::BlockingSettings;

/// Width of a counting bucket.
pub const TICK: Duration = Duration::from_millis(250);
/// Buckets in the one-second rate.
const BUCKETS: usize = 4;
/// Most sources tracked at once.
pub const MAX_SOURCES: usize = 100_000;
/// A source with no request for this long is forgotten.
const FORGET_AFTER: Duration = Duration::from_secs(600);

/// A block in force.
#[derive(Debug, Clone, Serialize)]
pub struct Block {
    pub source: String,
    /// Requests per second when it was blocked.
    pub rate: f64,
    /// Its baseline then.
    pub baseline: f64,
    pub since_ms: u64,
    pub until_ms: u64,
    /// Seconds left.
    pub remaining_s: u64,
}

struct Tracker {
    buckets: [u32; BUCKETS],
    /// Index of the bucket counting now, and when it started.
    current: usize,
    tick_start: Instant,
    baseline: f64,
    over_since: Option<Instant>,
    last_seen: Instant,
}

struct Blocked {
    block: Block,
    until: Instant,
}

#[derive(Default)]
struct State {
    sources: HashMap<String, Tracker>,
    blocks: HashMap<String, Blocked>,
    blocked_total: u64,
}

/// The per-host blocker.
pub struct Blocker {
    cfg: BlockingSettings,
    state: Mutex<State>,
}

impl std::fmt::Debug for Blocker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Blocker").finish_non_exhaustive()
    }
}

/// What to do with a request.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Pass,
    /// Blocked for this much longer.
    Blocked(Duration),
}

impl Blocker {
    pub fn new(cfg: BlockingSettings) -> Self {
        Blocker {
            cfg,
            state: Mutex::new(State::default()),
        }
    }

    /// Counts one request of `source` at `now` and says whether it is blocked.
    pub fn observe(&self, source: &str, now: Instant) -> Verdict {
        let mut st = self.state.lock().expect("blocker lock");
        if let Some(b) = st.blocks.get(source) {
            if b.until > now {
                return Verdict::Blocked(b.until - now);
            }
            st.blocks.remove(source);
            tracing::info!(source, "block ended (its time ran out)");
        }
        if !self.cfg.enabled {
            return Verdict::Pass;
        }
        if !st.sources.contains_key(source) {
            if st.sources.len() >= MAX_SOURCES {
                st.sources
                    .retain(|_, t| now.duration_since(t.last_seen) < FORGET_AFTER);
                if st.sources.len() >= MAX_SOURCES {
                    return Verdict::Pass;
                }
            }
            st.sources.insert(
                source.to_string(),
                Tracker {
                    buckets: [0; BUCKETS],
                    current: 0,
                    tick_start: now,
                    baseline: 0.0,
                    over_since: None,
                    last_seen: now,
                },
            );
        }
        let t = st.sources.get_mut(source).expect("inserted above");
        let decision = self.count(t, now);
        if let Some((rate, baseline)) = decision {
            let ttl = Duration::from_secs(self.cfg.ttl_s);
            let now_ms = crate::ids::now_ms();
            let block = Block {
                source: source.to_string(),
                rate,
                baseline,
                since_ms: now_ms,
                until_ms: now_ms + ttl.as_millis() as u64,
                remaining_s: ttl.as_secs(),
            };
            tracing::warn!(
                source,
                rate = format!("{rate:.0}"),
                baseline = format!("{baseline:.1}"),
                ttl_s = ttl.as_secs(),
                "source blocked: {rate:.0} requests/s against a baseline of {baseline:.1}/s"
            );
            st.blocked_total += 1;
            st.blocks.insert(
                source.to_string(),
                Blocked {
                    block,
                    until: now + ttl,
                },
            );
            return Verdict::Blocked(ttl);
        }
        Verdict::Pass
    }

    /// Advances `t` to `now`, counts the request; `Some((rate, baseline))` when it must be blocked.
    fn count(&self, t: &mut Tracker, now: Instant) -> Option<(f64, f64)> {
        t.last_seen = now;
        let floor = self.cfg.min_rate;
        let tau = self.cfg.baseline_s as f64;
        let mut verdict = None;
        // Quiet for longer than the one-second window: nothing in it counts any more; decay the
        // baseline over the gap at once instead of looping over every missed tick.
        let gap = now.duration_since(t.tick_start);
        if gap > TICK * (BUCKETS as u32 + 1) {
            t.baseline *= (-gap.as_secs_f64() / tau).exp();
            t.buckets = [0; BUCKETS];
            t.over_since = None;
            t.tick_start = now;
        }
        while now.duration_since(t.tick_start) >= TICK {
            // A tick ended: fold its rate into the baseline, then judge the last second.
            let tick_rate = f64::from(t.buckets[t.current]) / TICK.as_secs_f64();
            let alpha = 1.0 - (-TICK.as_secs_f64() / tau).exp();
            let rate: f64 = t.buckets.iter().map(|&c| f64::from(c)).sum();
            let threshold = self.cfg.factor * t.baseline.max(floor);
            if rate > threshold {
                let since = *t.over_since.get_or_insert(t.tick_start + TICK);
                if now.duration_since(since) + TICK > Duration::from_millis(self.cfg.window_ms) {
                    verdict = Some((rate, t.baseline.max(floor)));
                }
            } else {
                t.over_since = None;
            }
            t.baseline += alpha * (tick_rate - t.baseline);
            t.current = (t.current + 1) % BUCKETS;
            t.buckets[t.current] = 0;
            t.tick_start += TICK;
        }
        t.buckets[t.current] = t.buckets[t.current].saturating_add(1);
        verdict
    }

    /// The blocks in force.
    pub fn list(&self) -> Vec<Block> {
        let now = Instant::now();
        let st = self.state.lock().expect("blocker lock");
        let mut out: Vec<Block> = st
            .blocks
            .values()
            .filter(|b| b.until > now)
            .map(|b| {
                let mut block = b.block.clone();
                block.remaining_s = (b.until - now).as_secs();
                block
            })
            .collect();
        out.sort_by_key(|b| b.since_ms);
        out
    }

    /// Lifts the block of `source`; false when it had none.
    pub fn remove(&self, source: &str) -> bool {
        let mut st = self.state.lock().expect("blocker lock");
        let removed = st.blocks.remove(source).is_some();
        if let Some(t) = st.sources.get_mut(source) {
            // Start over: the flood must not count against it a second time.
            t.buckets = [0; BUCKETS];
            t.over_since = None;
        }
        if removed {
            tracing::info!(source, "block lifted by an operator");
        }
        removed
    }

    /// Sources blocked since start (a running total).
    pub fn blocked_total(&self) -> u64 {
        self.state.lock().expect("blocker lock").blocked_total
    }

    /// Sources tracked now.
    pub fn tracked(&self) -> usize {
        self.state.lock().expect("blocker lock").sources.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blocker() -> Blocker {
        Blocker::new(BlockingSettings::default())
    }

    /// Drives `source` at `rate` requests/s from `start` for `secs`; returns when it was blocked.
    fn drive(b: &Blocker, source: &str, start: Instant, rate: f64, secs: f64) -> Option<Duration> {
        let n = (rate * secs) as u64;
        for i in 0..n {
            let at = start + Duration::from_secs_f64(i as f64 / rate);
            if let Verdict::Blocked(_) = b.observe(source, at) {
                return Some(at - start);
            }
        }
        None
    }

    #[test]
    fn steady_traffic_is_never_blocked() {
        let b = blocker();
        let t0 = Instant::now();
        assert_eq!(drive(&b, "a", t0, 50.0, 120.0), None);
        assert!(b.list().is_empty());
    }

    #[test]
    fn a_source_at_100x_its_baseline_is_blocked_within_2s() {
        let b = blocker();
        let t0 = Instant::now();
        assert_eq!(drive(&b, "a", t0, 30.0, 120.0), None);
        let flood_start = t0 + Duration::from_secs(120);
        let took = drive(&b, "a", flood_start, 3000.0, 5.0).expect("blocked");
        assert!(took <= Duration::from_secs(2), "blocked after {took:?}");
        assert_eq!(b.list().len(), 1);
        assert_eq!(b.blocked_total(), 1);
        // Others are untouched, and an operator can lift it.
        assert_eq!(b.observe("b", flood_start + took), Verdict::Pass);
        assert!(b.remove("a"));
        assert!(b.list().is_empty());
    }

    #[test]
    fn a_brief_burst_shorter_than_the_window_passes() {
        let b = blocker();
        let t0 = Instant::now();
        drive(&b, "a", t0, 30.0, 60.0);
        // 0.4 s at 20× then back to normal.
        assert_eq!(
            drive(&b, "a", t0 + Duration::from_secs(60), 600.0, 0.4),
            None
        );
        assert_eq!(
            drive(&b, "a", t0 + Duration::from_secs(61), 30.0, 30.0),
            None
        );
    }

    #[test]
    fn blocks_end_with_their_ttl() {
        let b = Blocker::new(BlockingSettings {
            ttl_s: 2,
            ..Default::default()
        });
        let t0 = Instant::now();
        let took =
            drive(&b, "a", t0, 5000.0, 3.0).expect("a new source at 250× min_rate is blocked");
        let later = t0 + took + Duration::from_secs(3);
        assert_eq!(b.observe("a", later), Verdict::Pass);
    }
}
