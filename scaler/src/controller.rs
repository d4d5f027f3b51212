//! The control loop: every tick, read signals, decide, apply; a wake-up ([`Controller::with_wake`],
//! e.g. a surge detected in arrivals) runs a tick at once. Generic over where signals come from
//! ([`SignalSource`]: queue stats, the simulator) and what carries decisions out ([`Actuator`]: local
//! worker pools, ECS desired counts, the simulator). Time comes from `tokio::time`, so tests run on paused
//! time; the policy only ever sees the elapsed [`Duration`].

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, watch};
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
    wake: Option<Arc<Notify>>,
    status: watch::Sender<Arc<Status>>,
}

/// The shortest gap between two ticks run by wake-ups, so a burst of wake-ups costs at most one
/// signal reading per gap.
pub const MIN_WAKE_GAP: Duration = Duration::from_millis(20);

impl<P: Policy, S: SignalSource, A: Actuator> Controller<P, S, A> {
    /// A controller ticking at the policy's own interval.
    pub fn new(graph: Arc<Graph>, policy: P, source: S, actuator: A) -> Self {
        let interval = policy.interval();
        let (status, _) = watch::channel(Arc::new(Status::default()));
        Self {
            graph,
            policy,
            source,
            actuator,
            interval,
            wake: None,
            status,
        }
    }

    /// Also ticks as soon as `wake` is notified (at most once per [`MIN_WAKE_GAP`]), besides the
    /// regular interval: whoever sees a change worth reacting to at once (arrivals jumping) says so.
    pub fn with_wake(mut self, wake: Arc<Notify>) -> Self {
        self.wake = Some(wake);
        self
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
        let wake = self.wake.clone();
        let woken = async || match &wake {
            Some(w) => w.notified().await,
            None => std::future::pending().await,
        };
        let mut last = None::<Instant>;
        loop {
            tokio::select! {
                _ = &mut shutdown => return self,
                t = interval.tick() => {
                    last = Some(t);
                    self.tick(t.duration_since(start)).await;
                }
                _ = woken() => {
                    if let Some(l) = last {
                        tokio::time::sleep_until(l + MIN_WAKE_GAP).await;
                    }
                    // Wake-ups that came during the gap are answered by this tick: it reads the
                    // signals after them. Without this, a burst would leave a permit behind and
                    // cost a second tick for nothing new.
                    if let Some(w) = &wake {
                        tokio::select! {
                            biased;
                            _ = w.notified() => {}
                            _ = std::future::ready(()) => {}
                        }
                    }
                    let t = Instant::now();
                    last = Some(t);
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

#[cfg(test)]
mod tests {
    //! Controller tests on paused tokio time against the in-crate simulated pipeline.

    use std::sync::Mutex;

    use super::*;
    use crate::policy::Coordinated;
    use crate::sim::{FunctionModel, Pipeline, Scenario, SimHandle, Trace};

    /// The simulated pipeline as source and actuator, recording every decision.
    #[derive(Clone)]
    struct Recorder {
        sim: SimHandle,
        log: Arc<Mutex<Vec<Decision>>>,
    }

    impl SignalSource for Recorder {
        async fn signals(&mut self, now: Duration) -> Result<Signals> {
            self.sim.signals(now).await
        }
    }

    impl Actuator for Recorder {
        async fn apply(&mut self, decision: &Decision) -> Result<()> {
            self.log.lock().unwrap().push(decision.clone());
            self.sim.apply(decision).await
        }
    }

    fn model(
        name: &str,
        service_time: f64,
        bounds: (u32, u32, u32),
        emits: &[(&str, f64)],
    ) -> FunctionModel {
        FunctionModel {
            name: name.into(),
            service_time,
            startup: 5.0,
            min_workers: bounds.0,
            max_workers: bounds.1,
            initial_workers: bounds.2,
            emits_to: emits.iter().map(|&(t, k)| (t.into(), k)).collect(),
            reads: vec![],
        }
    }

    fn scenario(functions: Vec<FunctionModel>, noise: f64) -> Scenario {
        Scenario {
            name: "test".into(),
            description: String::new(),
            functions,
            stores: vec![],
            step: 0.1,
            retry_backoff: 10.0,
            noise,
            seed: 7,
            warmup: 0.0,
            tail: 0.0,
            sample_every: 10.0,
        }
    }

    async fn drive(sc: Scenario, trace: &str, secs: u64) -> (Recorder, StatusHandle) {
        let pipeline = Pipeline::new(sc, Trace::parse(trace).unwrap()).unwrap();
        let graph = Arc::new(pipeline.graph().clone());
        let rec = Recorder {
            sim: SimHandle::new(pipeline),
            log: Arc::default(),
        };
        let controller = Controller::new(graph, Coordinated::default(), rec.clone(), rec.clone());
        let status = controller.status();
        controller
            .run(tokio::time::sleep(Duration::from_secs(secs)))
            .await;
        (rec, status)
    }

    #[tokio::test(start_paused = true)]
    async fn feed_forward_scales_the_dependency_in_the_same_tick() {
        let sc = scenario(
            vec![
                model("a", 0.1, (1, 20, 2), &[("b", 2.0)]),
                model("b", 0.2, (1, 60, 5), &[]),
            ],
            0.0,
        );
        let (rec, status) = drive(sc, "0,a,10\n60,a,50\n200,a,50", 120).await;
        let log = rec.log.lock().unwrap();
        let first_up = log
            .iter()
            .position(|d| d.desired("a") > 2)
            .expect("a scaled up");
        let d = &log[first_up];
        // a: at least 50 / 9 -> 6 (plus its short backlog); b: at least 2 x 50 / 4.5 -> 23, in the
        // very decision that first scaled a.
        assert!(d.desired("a") >= 6, "{}", d.functions["a"].reason);
        assert!(d.desired("b") >= 23, "{}", d.functions["b"].reason);
        assert!(log[first_up - 1].desired("b") < 23);
        assert!(d.functions["b"].reason.contains("feed-forward from a"));
        let st = status.get();
        assert!(st.ticks >= 24 && st.last_error.is_none(), "{st:?}");
        assert_eq!(
            st.decision.as_ref(),
            log.last(),
            "status shows the last decision"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn backpressure_keeps_the_backlog_upstream_when_downstream_is_at_max() {
        let sc = scenario(
            vec![
                model("a", 0.05, (1, 20, 2), &[("b", 1.0)]),
                model("b", 0.2, (1, 4, 4), &[]),
            ],
            0.0,
        );
        // b can do 4 x 5 = 20 msg/s; a receives 40 msg/s.
        let (rec, _) = drive(sc, "0,a,40\n600,a,40", 300).await;
        let log = rec.log.lock().unwrap();
        let last = log.last().unwrap();
        let adm = last.functions["a"].admission.as_ref().expect("a held back");
        assert!(
            adm.max_rate <= 20.0 + 1e-6 && adm.cause.contains("downstream b"),
            "{adm:?}"
        );
        assert_eq!(last.desired("b"), 4);
        rec.sim.with(|p| {
            let r = p.report("coordinated");
            let (a, b) = (r.function("a").unwrap(), r.function("b").unwrap());
            assert!(
                a.pending > 5000,
                "the backlog waits in a's queue: {}",
                a.pending
            );
            assert!(
                b.max_backlog < 200,
                "b's queue stays short: {}",
                b.max_backlog
            );
        });
    }

    #[tokio::test(start_paused = true)]
    async fn no_flapping_under_noisy_steady_load() {
        let sc = scenario(
            vec![
                model("a", 0.1, (1, 40, 10), &[("b", 1.5)]),
                model("b", 0.2, (1, 80, 30), &[]),
            ],
            0.3,
        );
        let (rec, _) = drive(sc, "0,a,97\n3600,a,97", 1800).await;
        let log = rec.log.lock().unwrap();
        // After two minutes of settling, count changes of desired workers over the next 28 minutes.
        let steady: Vec<&Decision> = log
            .iter()
            .filter(|d| d.at >= Duration::from_secs(120))
            .collect();
        assert!(steady.len() > 300);
        for f in ["a", "b"] {
            let changes = steady
                .windows(2)
                .filter(|w| w[0].desired(f) != w[1].desired(f))
                .count();
            assert!(
                changes <= 2,
                "{f} changed {changes} times under steady noisy load"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_wake_up_ticks_at_once_between_regular_ticks() {
        let sc = scenario(vec![model("a", 0.1, (1, 20, 2), &[])], 0.0);
        let pipeline = Pipeline::new(sc, Trace::parse("0,a,10\n60,a,10").unwrap()).unwrap();
        let graph = Arc::new(pipeline.graph().clone());
        let rec = Recorder {
            sim: SimHandle::new(pipeline),
            log: Arc::default(),
        };
        let wake = Arc::new(Notify::new());
        let controller = Controller::new(graph, Coordinated::default(), rec.clone(), rec.clone())
            .with_wake(wake.clone());
        // The poker is a task of its own, as real wake-ups come from other tasks: its burst lands
        // while the controller waits out the gap.
        let w = wake.clone();
        let poke = tokio::spawn(async move {
            let wake = w;
            tokio::time::sleep(Duration::from_millis(1300)).await;
            wake.notify_one();
            // A burst of wake-ups runs one tick per gap, not one per wake-up.
            tokio::time::sleep(Duration::from_millis(700)).await;
            for _ in 0..10 {
                wake.notify_one();
                tokio::task::yield_now().await;
            }
            tokio::time::sleep(Duration::from_secs(10)).await;
        });
        controller
            .run(async {
                poke.await.unwrap();
            })
            .await;
        let at: Vec<Duration> = rec.log.lock().unwrap().iter().map(|d| d.at).collect();
        let ms = Duration::from_millis;
        assert_eq!(&at[..3], &[ms(0), ms(1300), ms(2000)], "{at:?}");
        // Regular ticks go on at the interval.
        assert!(at.contains(&ms(5000)) && at.contains(&ms(10_000)), "{at:?}");
        assert!(at.len() <= 6, "{at:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn scale_to_zero_when_idle_and_back_on_first_arrival() {
        let sc = scenario(
            vec![
                model("a", 0.1, (0, 5, 1), &[("b", 1.0)]),
                model("b", 0.1, (0, 5, 1), &[]),
            ],
            0.0,
        );
        let (rec, _) = drive(sc, "0,a,5\n30,a,0\n400,a,5\n460,a,0", 600).await;
        let log = rec.log.lock().unwrap();
        let zero = log
            .iter()
            .find(|d| d.desired("a") == 0 && d.desired("b") == 0)
            .expect("went to zero");
        assert!(
            zero.at >= Duration::from_secs(30 + 120) && zero.at < Duration::from_secs(400),
            "{:?}",
            zero.at
        );
        assert!(zero.functions["a"].reason.contains("scaled to zero"));
        let back = log
            .iter()
            .find(|d| d.at > Duration::from_secs(400) && d.desired("a") > 0)
            .expect("back up");
        assert!(
            back.at <= Duration::from_secs(405),
            "first tick after the first arrival: {:?}",
            back.at
        );
        assert!(back.desired("b") > 0, "b is woken in the same decision");
        rec.sim.with(|p| {
            for (name, arrivals, processed, pending) in p.conservation() {
                assert_eq!(
                    (arrivals, pending),
                    (processed, 0),
                    "{name}: everything processed"
                );
            }
            assert_eq!(
                p.report("c").function("a").unwrap().arrivals,
                5 * 30 + 5 * 60
            );
        });
    }
}
