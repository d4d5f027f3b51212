//! The versions a function runs: its stable release and, during a canary, the candidate that
//! takes a share of its messages. The pair is swapped atomically (hot reload): an invocation
//! keeps the version it started with, the next message gets the new one. The slot also keeps
//! what the canary is judged by: each version's successes, failures and latencies since the
//! current step began.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;

use super::Function;

/// Latencies kept per version for the canary's comparison (a ring; older ones drop out).
pub const LATENCY_SAMPLES: usize = 4096;

/// What a function runs now.
pub struct Active {
    pub stable: Arc<Function>,
    /// The stable version's release number (1 is the manifest's module).
    pub stable_release: u32,
    pub canary: Option<Canary>,
}

/// A candidate release on trial.
pub struct Canary {
    pub function: Arc<Function>,
    pub release: u32,
    /// Share of messages it takes, 0..=1.
    pub share: f64,
}

/// The version chosen for one message.
#[derive(Clone)]
pub struct Pick {
    pub function: Arc<Function>,
    pub release: u32,
    pub canary: bool,
}

/// One version's outcomes since the current comparison window began.
#[derive(Default)]
pub struct WindowStats {
    ok: AtomicU64,
    failed: AtomicU64,
    latencies_us: Mutex<VecDeque<u32>>,
}

/// A snapshot of [`WindowStats`].
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct WindowSnapshot {
    pub ok: u64,
    pub failed: u64,
    /// 95th percentile of the handler's latency, in ms (0 without samples).
    pub p95_ms: f64,
}

impl WindowSnapshot {
    /// Invocations in the window.
    pub fn total(&self) -> u64 {
        self.ok + self.failed
    }

    /// Failed share of the invocations (0 without any).
    pub fn failure_rate(&self) -> f64 {
        if self.total() == 0 {
            0.0
        } else {
            self.failed as f64 / self.total() as f64
        }
    }
}

impl WindowStats {
    fn record(&self, ok: bool, elapsed: Duration) {
        if ok {
            self.ok.fetch_add(1, Ordering::Relaxed);
        } else {
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
        let mut l = self.latencies_us.lock().unwrap_or_else(|p| p.into_inner());
        if l.len() == LATENCY_SAMPLES {
            l.pop_front();
        }
        l.push_back(elapsed.as_micros().min(u32::MAX as u128) as u32);
    }

    fn reset(&self) {
        self.ok.store(0, Ordering::Relaxed);
        self.failed.store(0, Ordering::Relaxed);
        self.latencies_us
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    fn snapshot(&self) -> WindowSnapshot {
        let mut l: Vec<u32> = self
            .latencies_us
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .copied()
            .collect();
        l.sort_unstable();
        let p95_ms = if l.is_empty() {
            0.0
        } else {
            l[(l.len() * 95 / 100).min(l.len() - 1)] as f64 / 1000.0
        };
        WindowSnapshot {
            ok: self.ok.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            p95_ms,
        }
    }
}

/// When the newest activation happened and when its version served its first message.
struct Activation {
    release: u32,
    at: Instant,
    first_served: Option<Duration>,
}

/// The swappable versions of one function, shared by its pool, the API and the release
/// controller.
pub struct FunctionSlot {
    name: String,
    active: ArcSwap<Active>,
    stable_stats: WindowStats,
    canary_stats: WindowStats,
    activation: Mutex<Option<Activation>>,
}

impl FunctionSlot {
    /// A slot running `stable` as release `release`.
    pub fn new(stable: Arc<Function>, release: u32) -> Arc<Self> {
        Arc::new(Self {
            name: stable.name().to_string(),
            active: ArcSwap::from_pointee(Active {
                stable,
                stable_release: release,
                canary: None,
            }),
            stable_stats: WindowStats::default(),
            canary_stats: WindowStats::default(),
            activation: Mutex::new(None),
        })
    }

    /// The function's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// What runs now.
    pub fn active(&self) -> Arc<Active> {
        self.active.load_full()
    }

    /// The stable version (what the API's `invoke` runs, and the store every version shares).
    pub fn stable(&self) -> Arc<Function> {
        self.active.load().stable.clone()
    }

    /// Installs new versions. Messages already running finish on the version they started
    /// with. The comparison window restarts when the pair changed; `newest` is the release
    /// whose first served message is timed (the one just activated), if any.
    pub fn swap(&self, next: Active, newest: Option<u32>) {
        let old = self.active.load();
        let same = old.stable_release == next.stable_release
            && old.canary.as_ref().map(|c| (c.release, c.share.to_bits()))
                == next.canary.as_ref().map(|c| (c.release, c.share.to_bits()));
        self.active.store(Arc::new(next));
        if !same {
            self.stable_stats.reset();
            self.canary_stats.reset();
        }
        let Some(newest) = newest else { return };
        let mut a = self.activation.lock().unwrap_or_else(|p| p.into_inner());
        if a.as_ref().is_none_or(|a| a.release != newest) {
            *a = Some(Activation {
                release: newest,
                at: Instant::now(),
                first_served: None,
            });
        }
    }

    /// Chooses the version for one message: the canary with its share's probability.
    pub fn pick(&self) -> Pick {
        let a = self.active.load();
        if let Some(c) = &a.canary
            && c.share > 0.0
            && rand::random::<f64>() < c.share
        {
            return Pick {
                function: c.function.clone(),
                release: c.release,
                canary: true,
            };
        }
        Pick {
            function: a.stable.clone(),
            release: a.stable_release,
            canary: false,
        }
    }

    /// The stable version as a pick (a canary's failed message runs again on it).
    pub fn pick_stable(&self) -> Pick {
        let a = self.active.load();
        Pick {
            function: a.stable.clone(),
            release: a.stable_release,
            canary: false,
        }
    }

    /// Counts one handler outcome of `pick` (infrastructure failures are not counted: they are
    /// nobody's version's fault).
    pub fn record(&self, pick: &Pick, ok: bool, elapsed: Duration) {
        let a = self.active.load();
        let current = if pick.canary {
            a.canary.as_ref().is_some_and(|c| c.release == pick.release)
        } else {
            a.stable_release == pick.release
        };
        if current {
            let stats = if pick.canary {
                &self.canary_stats
            } else {
                &self.stable_stats
            };
            stats.record(ok, elapsed);
        }
        if ok {
            let mut act = self.activation.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(act) = act.as_mut()
                && act.release == pick.release
                && act.first_served.is_none()
            {
                let after = act.at.elapsed();
                act.first_served = Some(after);
                tracing::info!(function = %self.name, release = pick.release, "release {} served its first message {:.1} ms after its activation", pick.release, after.as_secs_f64() * 1000.0);
            }
        }
    }

    /// The stable and canary versions' outcomes in the current window.
    pub fn window(&self) -> (WindowSnapshot, WindowSnapshot) {
        (self.stable_stats.snapshot(), self.canary_stats.snapshot())
    }

    /// The newest activated release and how long after its activation it served its first
    /// message (None while it has not).
    pub fn first_served(&self) -> Option<(u32, Option<Duration>)> {
        let a = self.activation.lock().unwrap_or_else(|p| p.into_inner());
        a.as_ref().map(|a| (a.release, a.first_served))
    }
}
