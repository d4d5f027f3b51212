//! The control loop: every tick, read signals, decide, apply. Generic over where signals come from
//! ([`SignalSource`]: queue stats, the simulator) and what carries decisions out ([`Actuator`]: local
//! worker pools, ECS desired counts, the simulator). Time comes from `tokio::time`, so tests run on paused
//! time; the policy only ever sees the elapsed [`Duration`].

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior};

use crate::error::Result;
use crate::graph::Graph;
use crate::policy::{Decision, Policy};
use crate::signals::Signals;

/// Where signals come from.
pub trait SignalSource: Send {
    /// Signals measured since the previous call; `now` is the time since the controller started.
    fn signals(&mut self, now: Duration) -> impl Future<Output = Result<Signals>> + Send;
}

/// Where decisions go.
pub trait Actuator: Send {
    /// Applies a decision (sets pool sizes, desired counts, admission limits).
    fn apply(&mut self, decision: &Decision) -> impl Future<Output = Result<()>> + Send;
}

/// What the controller last did, for `levee status`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Status {
    /// Last decision made, if any.
    pub decision: Option<Decision>,
    /// Number of ticks run.
    pub ticks: u64,
    /// The last error from the source or actuator, with the time it happened.
    pub last_error: Option<(Duration, String)>,
}

/// A read handle on the controller's [`Status`]; cheap to clone, usable from any task.
#[derive(Debug, Clone)]
pub struct StatusHandle(watch::Receiver<Arc<Status>>);

impl StatusHandle {
    /// The current status.
    pub fn get(&self) -> Arc<Status> {
        self.0.borrow().clone()
    }

    /// Waits until the status changes (returns `false` once the controller is gone).
    pub async fn changed(&mut self) -> bool {
        self.0.changed().await.is_ok()
    }
}

/// The control loop.
pub struct Controller<P, S, A> {
    graph: Arc<Graph>,
    policy: P,
    source: S,
    actuator: A,
    interval: Duration,
    status: watch::Sender<Arc<Status>>,
}

impl<P: Policy, S: SignalSource, A: Actuator> Controller<P, S, A> {
    /// A controller ticking at the policy's own interval.
    pub fn new(graph: Arc<Graph>, policy: P, source: S, actuator: A) -> Self {
        let interval = policy.interval();
        let (status, _) = watch::channel(Arc::new(Status::default()));
        Self { graph, policy, source, actuator, interval, status }
    }

    /// Overrides the tick interval.
    pub fn with_interval(mut self, interval: Duration) -> Self {
        self.interval = interval.max(Duration::from_millis(1));
        self
    }

    /// A handle on the last decision and errors.
    pub fn status(&self) -> StatusHandle {
        StatusHandle(self.status.subscribe())
    }

    /// One tick at `now`: read, decide, apply. A failing source skips the decision; a failing actuator
    /// keeps the decision (the next tick applies a fresh one). Both are recorded in the status.
    pub async fn tick(&mut self, now: Duration) -> Option<Decision> {
        let signals = match self.source.signals(now).await {
            Ok(s) => s,
            Err(e) => {
                self.record(|st| st.last_error = Some((now, e.to_string())));
                return None;
            }
        };
        let decision = self.policy.decide(&self.graph, &signals, now);
        let applied = self.actuator.apply(&decision).await;
        let d = decision.clone();
        self.record(move |st| {
            st.decision = Some(d);
            if let Err(e) = applied {
                st.last_error = Some((now, e.to_string()));
            }
        });
        Some(decision)
    }

    fn record(&self, f: impl FnOnce(&mut Status)) {
        self.status.send_modify(|st| {
            let mut next = (**st).clone();
            next.ticks += 1;
            f(&mut next);
            *st = Arc::new(next);
        });
    }

    /// Runs until `shutdown` completes; the first tick is immediate.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) -> Self {
        let start = Instant::now();
        let mut interval = tokio::time::interval(self.interval);
        interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => return self,
                t = interval.tick() => {
                    self.tick(t.duration_since(start)).await;
                }
            }
        }
    }

    /// The signal source (to inspect it after [`run`](Self::run) returns).
    pub fn source(&self) -> &S {
        &self.source
    }

    /// The actuator.
    pub fn actuator(&self) -> &A {
        &self.actuator
    }
}
