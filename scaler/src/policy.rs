//! Scaling policies: pure functions of the graph, the signals and the time since start (passed in; no
//! clock is read here), with a little memory of their own past decisions for stabilisation.
//!
//! * [`Coordinated`]: Levee's policy. Feed-forward over the graph, backpressure from saturated
//!   downstreams and stores, immediate scale-up, stabilised scale-down, scale to zero.
//! * [`Independent`]: KEDA's SQS scaler on a Kubernetes HPA, each function alone.
//! * [`LambdaLike`]: AWS Lambda's SQS event source mapping, each function alone.

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::graph::Graph;
use crate::signals::{FunctionSignals, Signals};

/// A limit on what a function may take from its queue, set when something downstream of it (a function
/// at its maximum, or a store at capacity) cannot take more. The backlog then waits durably in this
/// function's queue instead of failing further down.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Admission {
    /// Messages per second this function may process.
    pub max_rate: f64,
    /// Messages this function may handle concurrently.
    pub max_concurrency: u32,
    /// What is saturated.
    pub cause: String,
}

/// The decision for one function.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FunctionDecision {
    /// Workers wanted.
    pub desired: u32,
    /// Workers running or starting when the decision was made.
    pub current: u32,
    /// Admission limit, when held back by a saturated downstream.
    pub admission: Option<Admission>,
    /// Why, in words (for `levee status`).
    pub reason: String,
}

/// A decision for every function of the graph.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    /// Time since the controller started.
    pub at: Duration,
    /// Name of the policy that made it.
    pub policy: String,
    /// Per function decisions, keyed by name.
    pub functions: BTreeMap<String, FunctionDecision>,
}

impl Decision {
    /// Desired workers of one function (0 when not in the decision).
    pub fn desired(&self, name: &str) -> u32 {
        self.functions.get(name).map_or(0, |d| d.desired)
    }
}

/// A scaling policy.
pub trait Policy: Send {
    /// Short name (`coordinated`, `independent`, `lambda-like`).
    fn name(&self) -> &'static str;
    /// How often the policy wants to be evaluated.
    fn interval(&self) -> Duration;
    /// Decides desired workers for every function of `graph`. `now` is the time since start and must not
    /// go backwards between calls.
    fn decide(&mut self, graph: &Graph, signals: &Signals, now: Duration) -> Decision;
}

/// Policy names accepted by [`by_name`].
pub const POLICY_NAMES: [&str; 3] = ["coordinated", "independent", "lambda-like"];

/// A policy with its default configuration, by name.
pub fn by_name(name: &str) -> Result<Box<dyn Policy>> {
    match name {
        "coordinated" => Ok(Box::new(Coordinated::default())),
        "independent" | "keda" => Ok(Box::new(Independent::default())),
        "lambda-like" | "lambda" => Ok(Box::new(LambdaLike::default())),
        other => Err(Error::UnknownPolicy(other.to_string())),
    }
}

const EPS: f64 = 1e-9;

/// Max-min fair shares of `capacity` among `demands`: small demands are met in full and what is left
/// is split evenly among the larger ones, so one surging reader cannot starve the others (a bulkhead).
fn water_fill(demands: &[f64], capacity: f64) -> Vec<f64> {
    let mut share = vec![0.0; demands.len()];
    let mut idx: Vec<usize> = (0..demands.len()).collect();
    idx.sort_by(|&a, &b| demands[a].total_cmp(&demands[b]));
    let mut left = capacity;
    for (k, &i) in idx.iter().enumerate() {
        let even = left / (idx.len() - k) as f64;
        share[i] = demands[i].min(even);
        left -= share[i];
    }
    share
}

fn ceil_u32(x: f64) -> u32 {
    if x <= EPS {
        0
    } else {
        (x - EPS).ceil().min(u32::MAX as f64) as u32
    }
}

fn current_workers(s: &FunctionSignals) -> u32 {
    s.workers + s.starting
}

// ---------------------------------------------------------------------------------------------------
// Coordinated
// ---------------------------------------------------------------------------------------------------

/// Settings of the [`Coordinated`] policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CoordinatedConfig {
    /// Evaluation interval.
    pub interval: Duration,
    /// Fraction of a worker's measured service rate to plan for (headroom for noise).
    pub target_utilization: f64,
    /// A function's backlog should be drained within this time (adds backlog / drain_target msg/s).
    pub drain_target: Duration,
    /// Scale-down takes the maximum recommendation over this window.
    pub scale_down_window: Duration,
    /// Extra fraction on recommendations used for scale-down, so noise around a boundary cannot flap.
    pub scale_down_headroom: f64,
    /// A function with `min_workers = 0` goes to zero after being idle (no inflow, no backlog) this long.
    pub idle_window: Duration,
    /// At most this fraction of a saturated downstream's capacity is reserved for draining its own
    /// backlog when upstream admission is computed.
    pub drain_reserve: f64,
    /// Service rate per worker assumed when nothing is measured and the graph gives no hint.
    pub default_service_rate: f64,
    /// When the plan uses this fraction of a store's capacity, every reader of it gets a rate cap.
    pub store_guard: f64,
    /// Fraction of a store's declared capacity the plan may use (declared capacities are estimates).
    pub store_utilization: f64,
}

impl Default for CoordinatedConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(5),
            target_utilization: 0.9,
            drain_target: Duration::from_secs(30),
            scale_down_window: Duration::from_secs(60),
            scale_down_headroom: 0.15,
            idle_window: Duration::from_secs(120),
            drain_reserve: 0.5,
            default_service_rate: 1.0,
            store_guard: 0.8,
            store_utilization: 0.95,
        }
    }
}

#[derive(Debug, Clone, Default)]
struct CoordState {
    history: VecDeque<(Duration, u32)>,
    last_desired: Option<u32>,
    last_active: Option<Duration>,
    service_rate: Option<f64>,
}

/// Levee's coordinated policy.
///
/// Per decision, over the graph in topological order:
/// 1. own arrivals of `f` = measured arrivals − Σ upstream measured throughput × fan-out;
/// 2. feed-forward: expected inflow of `f` = own arrivals + Σ upstream expected outflow × fan-out, where
///    a function's expected outflow is its expected throughput (inflow + backlog / drain_target, capped by
///    its capacity), so a dependency is sized in the same decision as the function feeding it;
/// 3. backpressure (reverse order): a function's capacity is capped by its max workers, by its share of
///    every store it reads (stores over capacity are shared in proportion to demand), and by its share of
///    what each downstream can take (downstream capacity, less part of it for the downstream's own
///    drain, divided by the fan-out); a capped function gets an [`Admission`] limit;
/// 4. desired = ceil(throughput / (service rate × target utilisation)); up immediately, down to the
///    maximum of (recommendation × (1 + headroom)) over the scale-down window; to zero after the idle
///    window when `min_workers = 0`; back to at least 1 as soon as anything arrives (or is expected to
///    arrive from upstream).
#[derive(Debug, Clone, Default)]
pub struct Coordinated {
    config: CoordinatedConfig,
    state: BTreeMap<String, CoordState>,
}

impl Coordinated {
    /// A coordinated policy with the given settings.
    pub fn new(config: CoordinatedConfig) -> Self {
        Self {
            config,
            state: BTreeMap::new(),
        }
    }

    /// Its settings.
    pub fn config(&self) -> &CoordinatedConfig {
        &self.config
    }
}

impl Policy for Coordinated {
    fn name(&self) -> &'static str {
        "coordinated"
    }

    fn interval(&self) -> Duration {
        self.config.interval
    }

    fn decide(&mut self, graph: &Graph, signals: &Signals, now: Duration) -> Decision {
        let cfg = &self.config;
        let fns = graph.functions();
        let n = fns.len();
        let order = graph.topological_order();
        let sig: Vec<FunctionSignals> = fns.iter().map(|f| signals.get(&f.name)).collect();
        let drain_secs = cfg.drain_target.as_secs_f64().max(EPS);

        // Service rates: measured, else last measured, else the hint, else the default.
        let mut mu = vec![0.0; n];
        for (i, f) in fns.iter().enumerate() {
            let st = self.state.entry(f.name.clone()).or_default();
            if let Some(m) = sig[i]
                .service_rate_per_worker
                .filter(|m| m.is_finite() && *m > EPS)
            {
                st.service_rate = Some(m);
            }
            mu[i] = st
                .service_rate
                .or(f.service_rate_hint)
                .unwrap_or(cfg.default_service_rate);
        }
        // What sizing divides by: each worker's rate under the host's forecast contention.
        let mu_size: Vec<f64> = (0..n)
            .map(|i| {
                mu[i]
                    * sig[i]
                        .contention
                        .filter(|k| *k > EPS && *k <= 1.0)
                        .unwrap_or(1.0)
            })
            .collect();
        let fan_out = |u: usize, e: usize| -> f64 {
            let edge = &fns[u].emits_to[e];
            sig[u]
                .fan_out
                .get(&edge.target)
                .copied()
                .filter(|k| k.is_finite() && *k >= 0.0 && sig[u].processed_rate > EPS)
                .unwrap_or(edge.fan_out)
        };
        let own: Vec<f64> = (0..n)
            .map(|i| {
                let from_upstream: f64 = graph
                    .upstream_of(i)
                    .iter()
                    .map(|&(u, e)| sig[u].processed_rate * fan_out(u, e))
                    .sum();
                (sig[i].arrival_rate - from_upstream).max(0.0)
            })
            .collect();
        let drain: Vec<f64> = sig.iter().map(|s| s.backlog as f64 / drain_secs).collect();
        let max_cap: Vec<f64> = (0..n).map(|i| fns[i].max_workers as f64 * mu[i]).collect();
        let mut cap = max_cap.clone();
        let mut cause: Vec<Option<String>> = vec![None; n];

        // Stores: every message entering f costs footprint[f][s] operations on store s, at f and at
        // everything downstream of it. The sources of store load are each function's own arrivals and
        // its backlog drain; when a store cannot serve them all, they get max-min fair shares (a
        // surging source cannot starve the others), and a source's share limits what it may admit.
        let stores = graph.stores();
        let mut footprint = vec![vec![0.0; stores.len()]; n];
        for &i in order.iter().rev() {
            for (si, st) in stores.iter().enumerate() {
                let own_ops: f64 = fns[i]
                    .reads
                    .iter()
                    .filter(|r| r.store == st.name)
                    .map(|r| r.ops_per_message)
                    .sum();
                let below: f64 = fns[i]
                    .emits_to
                    .iter()
                    .enumerate()
                    .map(|(e, edge)| {
                        fan_out(i, e) * footprint[graph.index_of(&edge.target).expect("edge")][si]
                    })
                    .sum();
                footprint[i][si] = own_ops + below;
            }
        }
        let mut own_limit = vec![f64::INFINITY; n];
        for (si, st) in stores.iter().enumerate() {
            let demands: Vec<f64> = (0..n)
                .map(|i| (own[i] + drain[i]) * footprint[i][si])
                .collect();
            let total: f64 = demands.iter().sum();
            let usable = st.capacity * cfg.store_utilization;
            if total <= usable + EPS {
                continue;
            }
            for (i, share) in water_fill(&demands, usable).into_iter().enumerate() {
                if footprint[i][si] > EPS && share < demands[i] - EPS {
                    let limit = share / footprint[i][si];
                    if limit < own_limit[i] {
                        own_limit[i] = limit;
                        cause[i] = Some(format!(
                            "store {} at capacity ({:.0} ops/s wanted, {:.0} available)",
                            st.name, total, st.capacity
                        ));
                    }
                }
            }
        }

        let forward = |cap: &[f64]| -> (Vec<f64>, Vec<f64>) {
            let mut inflow = vec![0.0; n];
            let mut out = vec![0.0; n];
            for &i in order {
                let from_up: f64 = graph
                    .upstream_of(i)
                    .iter()
                    .map(|&(u, e)| out[u] * fan_out(u, e))
                    .sum();
                inflow[i] = own[i] + from_up;
                out[i] = ((own[i] + drain[i]).min(own_limit[i]) + from_up).min(cap[i]);
            }
            (inflow, out)
        };
        // Pass A: feed-forward within worker and store limits.
        let (inflow_a, out_a) = forward(&cap);
        // Pass B: backpressure from downstreams at their maximum, in reverse topological order.
        for &i in order.iter().rev() {
            for (e, edge) in fns[i].emits_to.iter().enumerate() {
                let d = graph.index_of(&edge.target).expect("validated edge");
                let k = fan_out(i, e);
                if k <= EPS || inflow_a[d] <= EPS {
                    continue;
                }
                let wanted_d = inflow_a[d] + drain[d];
                if wanted_d <= cap[d] + EPS {
                    continue;
                }
                let avail = (cap[d] - drain[d].min(cfg.drain_reserve * cap[d])).max(0.0);
                let share = avail * (out_a[i] * k / inflow_a[d]) / k;
                if share < cap[i] {
                    cap[i] = share;
                    cause[i] = Some(format!(
                        "downstream {} saturated ({:.1} msg/s wanted, {:.1} possible){}",
                        edge.target,
                        wanted_d,
                        cap[d],
                        cause[d]
                            .as_ref()
                            .map(|c| format!(": {c}"))
                            .unwrap_or_default()
                    ));
                }
            }
        }
        // Pass C: feed-forward with the held-back outflows.
        let (inflow, out) = forward(&cap);

        let mut decision = Decision {
            at: now,
            policy: self.name().into(),
            functions: BTreeMap::new(),
        };
        for &i in order {
            let f = &fns[i];
            let s = &sig[i];
            let st = self.state.get_mut(&f.name).expect("state created above");
            let current = current_workers(s);
            let prev = st.last_desired.unwrap_or(current);
            let active = inflow[i] > EPS || s.backlog > 0 || s.in_flight > 0 || s.delayed > 0;
            if active || st.last_active.is_none() {
                st.last_active = Some(now);
            }
            let idle_for = now.saturating_sub(st.last_active.unwrap_or(now));
            let needed = out[i] / (mu_size[i] * cfg.target_utilization);
            let held = cause[i].is_some() && out[i] < (inflow[i] + drain[i]).min(max_cap[i]) - EPS;
            let concurrency_cap = if held {
                ceil_u32(out[i] / mu_size[i]).max(1)
            } else {
                f.max_workers
            };
            let floor = if f.min_workers > 0 {
                f.min_workers
            } else if active || idle_for < cfg.idle_window {
                1
            } else {
                0
            };
            let up = ceil_u32(needed)
                .max(floor)
                .min(f.max_workers)
                .min(concurrency_cap.max(f.min_workers));
            let down = ceil_u32(needed * (1.0 + cfg.scale_down_headroom))
                .max(floor)
                .min(f.max_workers);
            st.history.push_back((now, down));
            while st
                .history
                .front()
                .is_some_and(|&(t, _)| now.saturating_sub(t) > cfg.scale_down_window)
            {
                st.history.pop_front();
            }
            let window_max = st.history.iter().map(|&(_, d)| d).max().unwrap_or(down);
            let mut desired = if up > prev {
                up
            } else {
                prev.min(window_max.max(up))
            };
            if floor == 0 && !active {
                desired = 0;
                st.history.clear();
            }
            let desired = desired.clamp(f.min_workers, f.max_workers);
            st.last_desired = Some(desired);

            let mut reason = String::new();
            let ups: Vec<String> = graph
                .upstream_of(i)
                .iter()
                .filter(|&&(u, e)| out[u] * fan_out(u, e) > EPS)
                .map(|&(u, e)| format!("{} {:.1} msg/s x{:.2}", fns[u].name, out[u], fan_out(u, e)))
                .collect();
            if ups.is_empty() {
                let _ = write!(reason, "own arrivals {:.1} msg/s", own[i]);
            } else {
                let _ = write!(reason, "feed-forward from {}", ups.join(" + "));
                if own[i] > EPS {
                    let _ = write!(reason, " + own {:.1} msg/s", own[i]);
                }
            }
            if s.backlog > 0 {
                let _ = write!(
                    reason,
                    "; backlog {} (oldest {:.0}s) drained in {:.0}s",
                    s.backlog,
                    s.oldest_age.as_secs_f64(),
                    drain_secs
                );
            }
            let _ = write!(
                reason,
                "; plan {:.1} msg/s at {:.1} msg/s/worker",
                out[i], mu_size[i]
            );
            if mu_size[i] < mu[i] - EPS {
                let _ = write!(
                    reason,
                    " ({:.1} measured, x{:.2} for a busier host)",
                    mu[i],
                    mu_size[i] / mu[i]
                );
            }
            if desired == 0 {
                let _ = write!(
                    reason,
                    "; idle {:.0}s: scaled to zero",
                    idle_for.as_secs_f64()
                );
            } else if desired < prev {
                let _ = write!(
                    reason,
                    "; scaling down (max over {:.0}s window)",
                    cfg.scale_down_window.as_secs_f64()
                );
            } else if desired == prev && up < prev {
                let _ = write!(reason, "; holding {prev} (scale-down window)");
            }
            if desired == f.max_workers && needed > f.max_workers as f64 {
                let _ = write!(reason, "; at max {}", f.max_workers);
            }
            let admission = if held {
                let c = cause[i].clone().unwrap_or_default();
                let _ = write!(reason, "; held back to {:.1} msg/s: {c}", out[i]);
                Some(Admission {
                    max_rate: out[i],
                    max_concurrency: concurrency_cap,
                    cause: c,
                })
            } else {
                None
            };
            decision.functions.insert(
                f.name.clone(),
                FunctionDecision {
                    desired,
                    current,
                    admission,
                    reason,
                },
            );
        }
        // Workers kept by the scale-down window can read faster than planned. When a store is close to
        // capacity, every reader gets at most its planned rate plus its proportional part of the slack,
        // so the plan as a whole never asks a store for more than it serves.
        for st in stores {
            let planned: f64 = fns
                .iter()
                .enumerate()
                .map(|(i, f)| {
                    out[i]
                        * f.reads
                            .iter()
                            .filter(|r| r.store == st.name)
                            .map(|r| r.ops_per_message)
                            .sum::<f64>()
                })
                .sum();
            if planned < cfg.store_guard * st.capacity {
                continue;
            }
            let ratio = (st.capacity * cfg.store_utilization / planned).max(1.0);
            for (i, f) in fns.iter().enumerate() {
                if !f
                    .reads
                    .iter()
                    .any(|r| r.store == st.name && r.ops_per_message > 0.0)
                {
                    continue;
                }
                let l = out[i] * ratio;
                let d = decision.functions.get_mut(&f.name).expect("decided above");
                let conc = d.desired.min(ceil_u32(l / mu[i]).max(1));
                match &mut d.admission {
                    Some(a) => {
                        a.max_rate = a.max_rate.min(l);
                        a.max_concurrency = a.max_concurrency.min(conc);
                    }
                    None => {
                        let c = format!(
                            "store {} at {:.0}% of capacity",
                            st.name,
                            planned / st.capacity * 100.0
                        );
                        let _ = write!(d.reason, "; rate capped at {l:.1} msg/s: {c}");
                        d.admission = Some(Admission {
                            max_rate: l,
                            max_concurrency: conc,
                            cause: c,
                        });
                    }
                }
            }
        }
        decision
    }
}

// ---------------------------------------------------------------------------------------------------
// Independent (KEDA)
// ---------------------------------------------------------------------------------------------------

/// Settings of the [`Independent`] policy, with KEDA / Kubernetes HPA defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IndependentConfig {
    /// KEDA `pollingInterval` (default 30 s).
    pub interval: Duration,
    /// KEDA aws-sqs-queue `queueLength`: target messages per worker (default 5).
    pub target_per_worker: f64,
    /// KEDA `scaleOnInFlight` (default true): count in-flight messages in the queue length.
    pub scale_on_in_flight: bool,
    /// HPA tolerance: no change while metric / (target × current) is within 1 ± this (default 0.1).
    pub tolerance: f64,
    /// HPA `scaleDown.stabilizationWindowSeconds` (default 300 s).
    pub scale_down_window: Duration,
    /// KEDA `cooldownPeriod` before scaling a `min = 0` function to zero (default 300 s).
    pub cooldown: Duration,
}

impl Default for IndependentConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(30),
            target_per_worker: 5.0,
            scale_on_in_flight: true,
            tolerance: 0.1,
            scale_down_window: Duration::from_secs(300),
            cooldown: Duration::from_secs(300),
        }
    }
}

#[derive(Debug, Clone, Default)]
struct IndepState {
    history: VecDeque<(Duration, u32)>,
    last_desired: Option<u32>,
    last_active: Option<Duration>,
}

/// KEDA-like: each function alone, `desired = ceil(queue length / target per worker)`, evaluated every
/// 30 s, with the HPA's 10% tolerance, its default scale-up limit (the larger of +100% and +4 pods per
/// 15 s period, so ×4 or +8 per 30 s evaluation) and its 300 s scale-down stabilisation window.
#[derive(Debug, Clone, Default)]
pub struct Independent {
    config: IndependentConfig,
    state: BTreeMap<String, IndepState>,
}

impl Independent {
    /// An independent policy with the given settings.
    pub fn new(config: IndependentConfig) -> Self {
        Self {
            config,
            state: BTreeMap::new(),
        }
    }
}

impl Policy for Independent {
    fn name(&self) -> &'static str {
        "independent"
    }

    fn interval(&self) -> Duration {
        self.config.interval
    }

    fn decide(&mut self, graph: &Graph, signals: &Signals, now: Duration) -> Decision {
        let cfg = &self.config;
        let mut decision = Decision {
            at: now,
            policy: self.name().into(),
            functions: BTreeMap::new(),
        };
        for f in graph.functions() {
            let s = signals.get(&f.name);
            let st = self.state.entry(f.name.clone()).or_default();
            let current = current_workers(&s);
            let prev = st.last_desired.unwrap_or(current);
            // SQS ApproximateNumberOfMessagesNotVisible counts messages being handled and those waiting
            // out a failed attempt's visibility timeout.
            let not_visible = (s.in_flight + s.delayed) as f64;
            let metric = s.backlog as f64
                + if cfg.scale_on_in_flight {
                    not_visible
                } else {
                    0.0
                };
            if metric > 0.0 || st.last_active.is_none() {
                st.last_active = Some(now);
            }
            let mut rec = ceil_u32(metric / cfg.target_per_worker);
            if prev > 0
                && (metric / (cfg.target_per_worker * prev as f64) - 1.0).abs() <= cfg.tolerance
            {
                rec = prev;
            }
            // HPA scale-up limit per 15 s period: max(+100%, +4 pods); two periods per evaluation.
            let mut limit = prev;
            for _ in 0..((cfg.interval.as_secs_f64() / 15.0).ceil().max(1.0) as u32) {
                limit = (limit * 2).max(limit + 4);
            }
            let floor = if f.min_workers > 0 {
                f.min_workers
            } else if now.saturating_sub(st.last_active.unwrap_or(now)) < cfg.cooldown {
                1
            } else {
                0
            };
            let rec = rec.min(limit).clamp(floor, f.max_workers);
            st.history.push_back((now, rec));
            while st
                .history
                .front()
                .is_some_and(|&(t, _)| now.saturating_sub(t) > cfg.scale_down_window)
            {
                st.history.pop_front();
            }
            let window_max = st.history.iter().map(|&(_, d)| d).max().unwrap_or(rec);
            let desired = if rec >= prev {
                rec
            } else {
                prev.min(window_max)
            };
            let desired = if floor == 0 && metric == 0.0 {
                0
            } else {
                desired
            }
            .clamp(f.min_workers, f.max_workers);
            st.last_desired = Some(desired);
            let reason = format!(
                "queue length {metric:.0} / target {:.0} per worker = {rec}{}",
                cfg.target_per_worker,
                if desired > rec {
                    format!("; holding {desired} (300 s stabilisation)")
                } else {
                    String::new()
                }
            );
            decision.functions.insert(
                f.name.clone(),
                FunctionDecision {
                    desired,
                    current,
                    admission: None,
                    reason,
                },
            );
        }
        decision
    }
}

// ---------------------------------------------------------------------------------------------------
// Lambda-like
// ---------------------------------------------------------------------------------------------------

/// Settings of the [`LambdaLike`] policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LambdaLikeConfig {
    /// Evaluation interval (Lambda's pollers react continuously; 1 s is close enough).
    pub interval: Duration,
    /// Concurrency added per minute, as a fraction of the function's max workers. Lambda on SQS adds
    /// up to 300 concurrent invocations a minute against a default account limit of 1000, so 0.3.
    pub growth_per_minute: f64,
    /// Concurrency Lambda starts polling with when messages appear, as a fraction of max workers
    /// (5 concurrent batches of 1000, so 0.005; at least one worker).
    pub initial_fraction: f64,
    /// Messages per concurrent invocation Lambda aims for (batch size 1: one message per invocation).
    pub messages_per_worker: f64,
}

impl Default for LambdaLikeConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(1),
            growth_per_minute: 0.3,
            initial_fraction: 0.005,
            messages_per_worker: 1.0,
        }
    }
}

#[derive(Debug, Clone, Default)]
struct LambdaState {
    concurrency: Option<f64>,
    last: Option<Duration>,
}

/// Lambda-like: each function alone; concurrency targets the queue length (visible + in flight, one
/// message per invocation), grows by at most `growth_per_minute × max_workers` a minute (Lambda's 300
/// per minute out of 1000, scaled to our worker counts; at least 1 a minute), and shrinks as soon as
/// there are fewer messages (idle Lambda instances cost nothing, so there is no stabilisation window).
#[derive(Debug, Clone, Default)]
pub struct LambdaLike {
    config: LambdaLikeConfig,
    state: BTreeMap<String, LambdaState>,
}

impl LambdaLike {
    /// A Lambda-like policy with the given settings.
    pub fn new(config: LambdaLikeConfig) -> Self {
        Self {
            config,
            state: BTreeMap::new(),
        }
    }
}

impl Policy for LambdaLike {
    fn name(&self) -> &'static str {
        "lambda-like"
    }

    fn interval(&self) -> Duration {
        self.config.interval
    }

    fn decide(&mut self, graph: &Graph, signals: &Signals, now: Duration) -> Decision {
        let cfg = &self.config;
        let mut decision = Decision {
            at: now,
            policy: self.name().into(),
            functions: BTreeMap::new(),
        };
        for f in graph.functions() {
            let s = signals.get(&f.name);
            let st = self.state.entry(f.name.clone()).or_default();
            let current = current_workers(&s);
            let conc = st.concurrency.unwrap_or(current as f64);
            let elapsed = st.last.map_or(0.0, |t| now.saturating_sub(t).as_secs_f64());
            st.last = Some(now);
            let max = f.max_workers as f64;
            let growth = (cfg.growth_per_minute * max).max(1.0) * elapsed / 60.0;
            let messages = (s.backlog + s.in_flight) as f64;
            let target = (messages / cfg.messages_per_worker).ceil().min(max);
            let start = (cfg.initial_fraction * max).ceil().max(1.0);
            let next = if target > conc {
                // From nothing, Lambda starts with its initial pollers, then grows at the fixed rate.
                target.min((conc + growth).max(start.min(target)))
            } else {
                target
            };
            let next = next.max(f.min_workers as f64).min(max);
            st.concurrency = Some(next);
            let desired = next.floor() as u32;
            let reason = if target > next + EPS {
                format!(
                    "queue length {messages:.0}: growing toward {target:.0} by {:.1}/min",
                    growth * 60.0 / elapsed.max(EPS)
                )
            } else {
                format!("queue length {messages:.0}: concurrency {desired}")
            };
            decision.functions.insert(
                f.name.clone(),
                FunctionDecision {
                    desired,
                    current,
                    admission: None,
                    reason,
                },
            );
        }
        decision
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::{FunctionSpec, StoreSpec};

    fn chain() -> Graph {
        Graph::new(
            vec![
                FunctionSpec::new("a", 1, 20)
                    .emits("b", 2.0)
                    .service_rate(10.0),
                FunctionSpec::new("b", 1, 50).service_rate(5.0),
            ],
            vec![],
        )
        .unwrap()
    }

    fn sig(arrival: f64, processed: f64, backlog: u64, workers: u32, mu: f64) -> FunctionSignals {
        FunctionSignals {
            arrival_rate: arrival,
            processed_rate: processed,
            service_rate_per_worker: Some(mu),
            backlog,
            workers,
            ..FunctionSignals::default()
        }
    }

    fn signals(list: &[(&str, FunctionSignals)]) -> Signals {
        Signals {
            functions: list
                .iter()
                .map(|(n, s)| (n.to_string(), s.clone()))
                .collect(),
        }
    }

    #[test]
    fn water_fill_meets_small_demands_first() {
        let s = water_fill(&[900.0, 30.0, 40.0], 600.0);
        assert_eq!(s[1], 30.0);
        assert_eq!(s[2], 40.0);
        assert!((s[0] - 530.0).abs() < 1e-9);
        assert_eq!(water_fill(&[1.0, 2.0], 10.0), vec![1.0, 2.0]);
    }

    #[test]
    fn feed_forward_sizes_the_dependency_from_upstream_arrivals() {
        let g = chain();
        let mut p = Coordinated::default();
        // a's arrivals jumped to 100 msg/s; b has seen nothing yet.
        let s = signals(&[
            ("a", sig(100.0, 10.0, 0, 2, 10.0)),
            ("b", sig(20.0, 20.0, 0, 5, 5.0)),
        ]);
        let d = p.decide(&g, &s, Duration::from_secs(5));
        // a: 100 / (10 * 0.9) -> 12; b: 100 * 2 / (5 * 0.9) -> 45.
        assert_eq!(d.desired("a"), 12);
        assert_eq!(d.desired("b"), 45);
        assert!(
            d.functions["b"].reason.contains("feed-forward from a"),
            "{}",
            d.functions["b"].reason
        );
    }

    #[test]
    fn a_contention_forecast_sizes_pools_without_holding_the_upstream_back() {
        let g = Graph::new(
            vec![
                FunctionSpec::new("a", 1, 50).emits("b", 1.0),
                FunctionSpec::new("b", 1, 8),
            ],
            vec![],
        )
        .unwrap();
        let slowed = |s: FunctionSignals| FunctionSignals {
            contention: Some(0.2),
            ..s
        };
        // Without a forecast: a needs 600 / (100 * 0.9) -> 7 workers, and b (8 x 100 msg/s) has room.
        let plain = signals(&[
            ("a", sig(600.0, 60.0, 0, 2, 100.0)),
            ("b", sig(60.0, 60.0, 0, 1, 100.0)),
        ]);
        let d = Coordinated::default().decide(&g, &plain, Duration::from_secs(5));
        assert_eq!((d.desired("a"), d.desired("b")), (7, 7));
        // Each worker forecast 5x slower: a is sized for 20 msg/s per worker (34 workers), b up to
        // its maximum. b's capacity for backpressure stays 8 x 100 msg/s measured, so a is not held
        // back to what 8 slowed workers of b would take (which would give it 8).
        let forecast = signals(&[
            ("a", slowed(sig(600.0, 60.0, 0, 2, 100.0))),
            ("b", slowed(sig(60.0, 60.0, 0, 1, 100.0))),
        ]);
        let mut p = Coordinated::default();
        let d = p.decide(&g, &forecast, Duration::from_secs(5));
        assert_eq!((d.desired("a"), d.desired("b")), (34, 8));
        let reason = &d.functions["a"].reason;
        assert!(!reason.contains("held back"), "{reason}");
        assert!(reason.contains("x0.20 for a busier host"), "{reason}");
        // The remembered rate is the measured one: a later reading without a rate sizes on it.
        let later = signals(&[(
            "a",
            FunctionSignals {
                arrival_rate: 600.0,
                processed_rate: 600.0,
                workers: 34,
                ..FunctionSignals::default()
            },
        )]);
        let d = p.decide(&g, &later, Duration::from_secs(6));
        assert!(
            d.functions["a"].reason.contains("at 100.0 msg/s/worker"),
            "{}",
            d.functions["a"].reason
        );
    }

    #[test]
    fn a_contention_factor_outside_0_1_is_refused() {
        let g = chain();
        let mut s = signals(&[("a", sig(1.0, 1.0, 0, 1, 1.0))]);
        s.functions.get_mut("a").unwrap().contention = Some(1.5);
        assert!(s.check(&g).is_err());
        s.functions.get_mut("a").unwrap().contention = Some(f64::NAN);
        assert!(s.check(&g).is_err());
        s.functions.get_mut("a").unwrap().contention = Some(0.5);
        assert!(s.check(&g).is_ok());
    }

    #[test]
    fn own_arrivals_exclude_what_upstream_emitted() {
        let g = chain();
        let mut p = Coordinated::default();
        // b receives 40 msg/s: 2 x 10 from a, plus 20 of its own from ingress.
        let s = signals(&[
            ("a", sig(10.0, 10.0, 0, 2, 10.0)),
            ("b", sig(40.0, 40.0, 0, 9, 5.0)),
        ]);
        let d = p.decide(&g, &s, Duration::ZERO);
        assert_eq!(d.desired("b"), 9); // 40 / 4.5 = 8.9
        assert!(
            d.functions["b"].reason.contains("own 20.0"),
            "{}",
            d.functions["b"].reason
        );
    }

    #[test]
    fn backpressure_when_downstream_is_at_max() {
        let g = Graph::new(
            vec![
                FunctionSpec::new("a", 1, 20)
                    .emits("b", 1.0)
                    .service_rate(10.0),
                FunctionSpec::new("b", 1, 4).service_rate(5.0),
            ],
            vec![],
        )
        .unwrap();
        let mut p = Coordinated::default();
        let s = signals(&[
            ("a", sig(100.0, 20.0, 0, 2, 10.0)),
            ("b", sig(20.0, 20.0, 0, 4, 5.0)),
        ]);
        let d = p.decide(&g, &s, Duration::ZERO);
        let a = d.functions["a"].admission.clone().expect("a is held back");
        assert!((a.max_rate - 20.0).abs() < 1e-6, "{a:?}");
        assert_eq!(a.max_concurrency, 2);
        assert!(a.cause.contains("downstream b"), "{}", a.cause);
        assert_eq!(d.desired("b"), 4);
        assert!(
            d.desired("a") <= 3,
            "a is not scaled beyond what b can take: {}",
            d.desired("a")
        );
    }

    #[test]
    fn store_capacity_is_shared_fairly_between_sources() {
        let g = Graph::new(
            vec![
                FunctionSpec::new("chat", 1, 100)
                    .reads("auth", 1.0)
                    .service_rate(20.0),
                FunctionSpec::new("login", 1, 20)
                    .reads("auth", 2.0)
                    .service_rate(10.0),
            ],
            vec![StoreSpec::new("auth", 1000.0)],
        )
        .unwrap();
        let mut p = Coordinated::default();
        let s = signals(&[
            ("chat", sig(5000.0, 800.0, 0, 40, 20.0)),
            ("login", sig(20.0, 20.0, 0, 3, 10.0)),
        ]);
        let d = p.decide(&g, &s, Duration::ZERO);
        // login's 40 ops/s are served in full; chat gets the rest of 950 usable ops/s.
        let chat = d.functions["chat"].admission.clone().expect("chat is held");
        assert!((chat.max_rate - 910.0).abs() < 1e-6, "{chat:?}");
        assert!(chat.cause.contains("store auth"));
        assert!(
            d.functions["login"]
                .admission
                .as_ref()
                .is_none_or(|a| a.max_rate >= 20.0)
        );
        assert_eq!(d.desired("login"), 3);
    }

    #[test]
    fn scale_up_is_immediate_and_scale_down_waits_for_the_window() {
        let g = Graph::new(
            vec![FunctionSpec::new("a", 1, 50).service_rate(10.0)],
            vec![],
        )
        .unwrap();
        let mut p = Coordinated::default();
        let d = p.decide(
            &g,
            &signals(&[("a", sig(90.0, 90.0, 0, 1, 10.0))]),
            Duration::ZERO,
        );
        assert_eq!(d.desired("a"), 10);
        let low = signals(&[("a", sig(9.0, 9.0, 0, 10, 10.0))]);
        let mut t = Duration::ZERO;
        for _ in 0..12 {
            t += Duration::from_secs(5);
            assert_eq!(
                p.decide(&g, &low, t).desired("a"),
                10,
                "held during the 60 s window at {t:?}"
            );
        }
        t += Duration::from_secs(5);
        // 9 msg/s needs 1 worker at 90%; scale-down keeps 15% headroom on top, so 2.
        assert_eq!(p.decide(&g, &low, t).desired("a"), 2);
    }

    #[test]
    fn scale_to_zero_after_idle_window_and_back_on_first_arrival() {
        let g = Graph::new(
            vec![
                FunctionSpec::new("a", 0, 5)
                    .emits("b", 1.0)
                    .service_rate(10.0),
                FunctionSpec::new("b", 0, 5),
            ],
            vec![],
        )
        .unwrap();
        let mut p = Coordinated::default();
        let idle = Signals::default();
        let mut t = Duration::ZERO;
        let mut last = p.decide(&g, &idle, t);
        while t < Duration::from_secs(200) {
            t += Duration::from_secs(5);
            last = p.decide(&g, &idle, t);
        }
        assert_eq!((last.desired("a"), last.desired("b")), (0, 0));
        let first = signals(&[(
            "a",
            FunctionSignals {
                backlog: 1,
                ..FunctionSignals::default()
            },
        )]);
        let d = p.decide(&g, &first, t + Duration::from_secs(5));
        assert_eq!(d.desired("a"), 1);
        assert_eq!(
            d.desired("b"),
            1,
            "b is woken in the same decision by feed-forward"
        );
    }

    #[test]
    fn independent_follows_queue_length_every_poll_and_holds_for_300s() {
        let g = Graph::new(vec![FunctionSpec::new("a", 1, 100)], vec![]).unwrap();
        let mut p = Independent::default();
        assert_eq!(p.interval(), Duration::from_secs(30));
        let s = |backlog| {
            signals(&[(
                "a",
                FunctionSignals {
                    backlog,
                    workers: 10,
                    ..FunctionSignals::default()
                },
            )])
        };
        assert_eq!(p.decide(&g, &s(200), Duration::ZERO).desired("a"), 40);
        assert_eq!(
            p.decide(&g, &s(20), Duration::from_secs(30)).desired("a"),
            40
        );
        assert_eq!(
            p.decide(&g, &s(20), Duration::from_secs(300)).desired("a"),
            40
        );
        assert_eq!(
            p.decide(&g, &s(20), Duration::from_secs(330)).desired("a"),
            4
        );
    }

    #[test]
    fn lambda_like_growth_is_rate_limited() {
        let g = Graph::new(vec![FunctionSpec::new("a", 1, 100)], vec![]).unwrap();
        let mut p = LambdaLike::default();
        let s = signals(&[(
            "a",
            FunctionSignals {
                backlog: 10_000,
                workers: 1,
                ..FunctionSignals::default()
            },
        )]);
        let mut t = Duration::ZERO;
        p.decide(&g, &s, t);
        for _ in 0..60 {
            t += Duration::from_secs(1);
            p.decide(&g, &s, t);
        }
        // 300/min of 1000 scaled to a max of 100: +30 in a minute.
        assert_eq!(p.decide(&g, &s, t).desired("a"), 31);
        let empty = signals(&[(
            "a",
            FunctionSignals {
                workers: 31,
                ..FunctionSignals::default()
            },
        )]);
        assert_eq!(
            p.decide(&g, &empty, t + Duration::from_secs(1))
                .desired("a"),
            1,
            "scale-down is immediate"
        );
    }

    #[test]
    fn policies_by_name() {
        for n in POLICY_NAMES {
            assert_eq!(by_name(n).unwrap().name(), n);
        }
        assert!(by_name("hpa").err().unwrap().to_string().contains("hpa"));
    }
}
