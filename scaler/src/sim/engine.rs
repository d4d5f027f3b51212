//! The discrete-time pipeline model. Messages move as cohorts (count + birth time at ingress) through
//! FIFO queues, so end-to-end delay is tracked exactly per cohort. Each step of `scenario.step` seconds:
//! ingress arrivals and messages emitted in the previous step enter the queues, retries whose backoff
//! expired become visible again, started workers become ready; each function attempts
//! `ready workers × step / service_time` messages (bounded by its admission limit); the stores serve at
//! most `capacity × step` operations and the rest of the attempts fail, are counted as errors and come
//! back after the retry backoff; successes emit their fan-out to downstream queues. Workers count as
//! cost from the moment they are requested (start-up is paid for).

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::controller::{Actuator, SignalSource};
use crate::error::Result;
use crate::graph::Graph;
use crate::policy::{Decision, Policy};
use crate::signals::{FunctionSignals, Signals};
use crate::sim::report::{FunctionReport, Report, SeriesPoint};
use crate::sim::scenario::Scenario;
use crate::sim::trace::Trace;

#[derive(Debug, Clone, Copy)]
struct Cohort {
    birth: f64,
    enqueued: f64,
    count: u64,
}

/// Delay histogram in 0.1 s buckets.
#[derive(Debug, Clone, Default)]
pub(crate) struct Histogram(BTreeMap<u64, u64>);

impl Histogram {
    fn add(&mut self, seconds: f64, count: u64) {
        *self
            .0
            .entry((seconds.max(0.0) * 10.0).round() as u64)
            .or_default() += count;
    }

    pub(crate) fn merge(&mut self, other: &Histogram) {
        for (k, v) in &other.0 {
            *self.0.entry(*k).or_default() += v;
        }
    }

    pub(crate) fn quantile(&self, q: f64) -> f64 {
        let total: u64 = self.0.values().sum();
        if total == 0 {
            return 0.0;
        }
        let want = ((total as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (k, v) in &self.0 {
            seen += v;
            if seen >= want {
                return *k as f64 / 10.0;
            }
        }
        0.0
    }
}

#[derive(Debug, Default)]
struct FnState {
    queue: VecDeque<Cohort>,
    visible: u64,
    retry: VecDeque<(f64, Cohort)>,
    retrying: u64,
    inbox: Vec<Cohort>,
    inbox_count: u64,
    ready: u32,
    starting: VecDeque<f64>,
    arrival_carry: f64,
    service_carry: f64,
    success_carry: f64,
    emit_carry: Vec<f64>,
    admission_rate: Option<f64>,
    admission_concurrency: Option<u32>,
    busy: u64,
    // since the last signals reading
    w_arrivals: u64,
    w_success: u64,
    w_attempts: u64,
    w_busy: f64,
    w_emitted: Vec<u64>,
    // whole run (conservation)
    arrivals: u64,
    processed: u64,
    // after warm-up
    errors: u64,
    worker_seconds: f64,
    peak_workers: u32,
    max_backlog: u64,
    backlog_integral: f64,
    delays: Histogram,
    series: Vec<SeriesPoint>,
}

/// The simulated pipeline. Drive it with [`run`] (policy on its own interval) or through
/// [`SimHandle`] from a [`Controller`](crate::controller::Controller).
#[derive(Debug)]
pub struct Pipeline {
    scenario: Scenario,
    graph: Graph,
    trace: Trace,
    t: f64,
    window_start: f64,
    fns: Vec<FnState>,
    rng: u64,
    next_sample: f64,
    tokens: Vec<f64>,
}

impl Pipeline {
    /// A pipeline at t = 0 with the scenario's initial workers ready and empty queues.
    pub fn new(scenario: Scenario, trace: Trace) -> Result<Self> {
        scenario.check(&trace)?;
        let graph = scenario.graph()?;
        let fns = scenario
            .functions
            .iter()
            .map(|m| FnState {
                ready: m.initial_workers,
                emit_carry: vec![0.0; m.emits_to.len()],
                w_emitted: vec![0; m.emits_to.len()],
                ..FnState::default()
            })
            .collect();
        let rng = scenario.seed.max(1);
        let tokens = scenario
            .stores
            .iter()
            .map(|s| s.capacity * s.burst.max(0.0))
            .collect();
        Ok(Self {
            scenario,
            graph,
            trace,
            t: 0.0,
            window_start: 0.0,
            fns,
            rng,
            next_sample: 0.0,
            tokens,
        })
    }

    /// The graph of the model.
    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    /// The scenario.
    pub fn scenario(&self) -> &Scenario {
        &self.scenario
    }

    /// Simulated time.
    pub fn now(&self) -> Duration {
        Duration::from_secs_f64(self.t)
    }

    /// Time at which the run ends (trace end + tail).
    pub fn end(&self) -> Duration {
        Duration::from_secs_f64(self.trace.end() + self.scenario.tail)
    }

    fn noise(&mut self) -> f64 {
        // xorshift64*: deterministic, good enough for arrival jitter.
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        let u = (self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64;
        1.0 + self.scenario.noise * (2.0 * u - 1.0)
    }

    /// Advances the model to `to` in whole steps.
    pub fn advance_to(&mut self, to: Duration) {
        let to = to.as_secs_f64();
        while self.t + self.scenario.step / 2.0 <= to {
            self.step();
        }
    }

    fn step(&mut self) {
        let dt = self.scenario.step;
        let t = self.t;
        let stats = t >= self.scenario.warmup;
        let n = self.fns.len();
        // 1. arrivals, retries, start-ups.
        for i in 0..n {
            let name = self.scenario.functions[i].name.clone();
            let rate = self.trace.rate_at(&name, t);
            let noise = if rate > 0.0 { self.noise() } else { 1.0 };
            let s = &mut self.fns[i];
            let want = rate * dt * noise + s.arrival_carry;
            let k = want.floor();
            s.arrival_carry = want - k;
            let k = k as u64;
            if k > 0 {
                s.queue.push_back(Cohort {
                    birth: t,
                    enqueued: t,
                    count: k,
                });
                s.visible += k;
                s.arrivals += k;
                s.w_arrivals += k;
            }
            for c in s.inbox.drain(..) {
                s.queue.push_back(c);
                s.visible += c.count;
            }
            s.inbox_count = 0;
            while s.retry.front().is_some_and(|&(at, _)| at <= t + 1e-9) {
                let (_, c) = s.retry.pop_front().expect("checked");
                s.retrying -= c.count;
                s.visible += c.count;
                s.queue.push_back(c);
            }
            while s.starting.front().is_some_and(|&at| at <= t + 1e-9) {
                s.starting.pop_front();
                s.ready += 1;
            }
        }
        // 2. attempts.
        let mut attempts = vec![0u64; n];
        for (i, m) in self.scenario.functions.iter().enumerate() {
            let s = &mut self.fns[i];
            let usable = s.admission_concurrency.map_or(s.ready, |c| s.ready.min(c));
            let mut cap = usable as f64 * dt / m.service_time;
            if let Some(r) = s.admission_rate {
                cap = cap.min(r * dt);
            }
            let cap = cap + s.service_carry;
            let whole = cap.floor();
            if (s.visible as f64) >= whole {
                attempts[i] = whole as u64;
                s.service_carry = cap - whole;
            } else {
                attempts[i] = s.visible;
                s.service_carry = 0.0;
            }
            s.busy = ((attempts[i] as f64) * m.service_time / dt).ceil() as u64;
        }
        // 3. stores.
        let mut success_frac = vec![1.0f64; n];
        for (si, store) in self.scenario.stores.iter().enumerate() {
            let requested: f64 = self
                .scenario
                .functions
                .iter()
                .enumerate()
                .flat_map(|(i, m)| {
                    m.reads
                        .iter()
                        .filter(|r| r.0 == store.name)
                        .map(move |r| (i, r.1))
                })
                .map(|(i, ops)| attempts[i] as f64 * ops)
                .sum();
            let bucket = (store.capacity * store.burst.max(dt)).max(store.capacity * dt);
            let available = (self.tokens[si] + store.capacity * dt).min(bucket);
            let served = requested.min(available);
            self.tokens[si] = available - served;
            if requested > served {
                let frac = served / requested;
                for (i, m) in self.scenario.functions.iter().enumerate() {
                    if m.reads.iter().any(|r| r.0 == store.name && r.1 > 0.0) {
                        success_frac[i] *= frac;
                    }
                }
            }
        }
        // 4. complete, fail, emit.
        let end = t + dt;
        for i in 0..n {
            let m = self.scenario.functions[i].clone();
            let a = attempts[i];
            let s = &mut self.fns[i];
            let successes = if success_frac[i] >= 1.0 {
                s.success_carry = 0.0;
                a
            } else {
                let want = a as f64 * success_frac[i] + s.success_carry;
                let k = want.floor().min(a as f64);
                s.success_carry = want - k;
                k as u64
            };
            let failures = a - successes;
            s.w_attempts += a;
            s.w_busy += a as f64 * m.service_time;
            s.w_success += successes;
            s.processed += successes;
            if stats {
                s.errors += failures;
            }
            let mut take = a;
            let mut ok_left = successes;
            let mut done: Vec<Cohort> = Vec::new();
            while take > 0 {
                let front = s.queue.front_mut().expect("attempts never exceed visible");
                let k = front.count.min(take);
                let piece = Cohort { count: k, ..*front };
                front.count -= k;
                if front.count == 0 {
                    s.queue.pop_front();
                }
                s.visible -= k;
                take -= k;
                let ok = piece.count.min(ok_left);
                ok_left -= ok;
                if ok > 0 {
                    done.push(Cohort { count: ok, ..piece });
                }
                if piece.count > ok {
                    let failed = Cohort {
                        count: piece.count - ok,
                        ..piece
                    };
                    s.retrying += failed.count;
                    s.retry
                        .push_back((end + self.scenario.retry_backoff, failed));
                }
            }
            if stats {
                for c in &done {
                    s.delays.add(end - c.birth, c.count);
                }
            }
            let mut emitted: Vec<(usize, Cohort)> = Vec::new();
            for (e, (target, k)) in m.emits_to.iter().enumerate() {
                let d = self.graph.index_of(target).expect("validated");
                for c in &done {
                    let want = c.count as f64 * k + self.fns[i].emit_carry[e];
                    let whole = want.floor();
                    self.fns[i].emit_carry[e] = want - whole;
                    if whole >= 1.0 {
                        emitted.push((
                            d,
                            Cohort {
                                birth: c.birth,
                                enqueued: end,
                                count: whole as u64,
                            },
                        ));
                    }
                }
                let total: u64 = emitted
                    .iter()
                    .filter(|(x, _)| *x == d)
                    .map(|(_, c)| c.count)
                    .sum();
                self.fns[i].w_emitted[e] += total;
            }
            for (d, c) in emitted {
                let ds = &mut self.fns[d];
                ds.inbox.push(c);
                ds.inbox_count += c.count;
                ds.arrivals += c.count;
                ds.w_arrivals += c.count;
            }
        }
        // 5. accounting.
        let sample = end >= self.next_sample;
        for s in &mut self.fns {
            let workers = s.ready + s.starting.len() as u32;
            let backlog = s.visible + s.retrying;
            if stats {
                s.worker_seconds += workers as f64 * dt;
                s.peak_workers = s.peak_workers.max(workers);
                s.max_backlog = s.max_backlog.max(backlog);
                s.backlog_integral += backlog as f64 * dt;
            }
            if sample {
                s.series.push(SeriesPoint {
                    t: end,
                    backlog,
                    workers,
                    ready: s.ready,
                });
            }
        }
        if sample {
            self.next_sample += self.scenario.sample_every;
        }
        self.t = end;
    }

    /// Signals measured since the previous call (resets the measurement window).
    pub fn signals(&mut self) -> Signals {
        let elapsed = (self.t - self.window_start).max(self.scenario.step);
        self.window_start = self.t;
        let mut out = Signals::default();
        for (m, s) in self.scenario.functions.iter().zip(&mut self.fns) {
            let oldest_age = s
                .queue
                .front()
                .map_or(0.0, |c| (self.t - c.enqueued).max(0.0));
            let fan_out = m
                .emits_to
                .iter()
                .zip(&s.w_emitted)
                .filter(|_| s.w_success > 0)
                .map(|((target, _), &e)| (target.clone(), e as f64 / s.w_success as f64))
                .collect();
            let sig = FunctionSignals {
                arrival_rate: s.w_arrivals as f64 / elapsed,
                processed_rate: s.w_success as f64 / elapsed,
                service_rate_per_worker: (s.w_busy > 0.0).then(|| s.w_attempts as f64 / s.w_busy),
                // Messages emitted in the last step are taken by idle pollers at once, as in a live queue.
                backlog: s.visible,
                in_flight: s.busy.min(s.ready as u64),
                delayed: s.retrying,
                oldest_age: Duration::from_secs_f64(oldest_age),
                workers: s.ready,
                starting: s.starting.len() as u32,
                fan_out,
                // The simulated hosts do not share cores between functions.
                contention: None,
            };
            s.w_arrivals = 0;
            s.w_success = 0;
            s.w_attempts = 0;
            s.w_busy = 0.0;
            s.w_emitted.iter_mut().for_each(|e| *e = 0);
            out.functions.insert(m.name.clone(), sig);
        }
        out
    }

    /// Applies a decision: starts or stops workers (cancelling starting ones first) and sets admission.
    pub fn apply(&mut self, decision: &Decision) {
        for (m, s) in self.scenario.functions.iter().zip(&mut self.fns) {
            let Some(d) = decision.functions.get(&m.name) else {
                continue;
            };
            let desired = d.desired.min(m.max_workers);
            let total = s.ready + s.starting.len() as u32;
            if desired > total {
                for _ in total..desired {
                    s.starting.push_back(self.t + m.startup);
                }
            } else {
                let mut excess = total - desired;
                while excess > 0 && s.starting.pop_back().is_some() {
                    excess -= 1;
                }
                s.ready -= excess.min(s.ready);
            }
            s.admission_rate = d.admission.as_ref().map(|a| a.max_rate);
            s.admission_concurrency = d.admission.as_ref().map(|a| a.max_concurrency);
        }
    }

    /// Messages accepted into each function's queue and not yet processed, per function:
    /// `(arrivals, processed, pending)`, where pending = visible + waiting for retry + emitted this step.
    pub fn conservation(&self) -> Vec<(String, u64, u64, u64)> {
        self.scenario
            .functions
            .iter()
            .zip(&self.fns)
            .map(|(m, s)| {
                (
                    m.name.clone(),
                    s.arrivals,
                    s.processed,
                    s.visible + s.retrying + s.inbox_count,
                )
            })
            .collect()
    }

    /// The report so far.
    pub fn report(&self, policy: &str) -> Report {
        let measured = (self.t - self.scenario.warmup).max(self.scenario.step);
        let mut e2e = Histogram::default();
        let functions = self
            .scenario
            .functions
            .iter()
            .zip(&self.fns)
            .enumerate()
            .map(|(i, (m, s))| {
                if self.graph.is_sink(i) {
                    e2e.merge(&s.delays);
                }
                FunctionReport {
                    name: m.name.clone(),
                    arrivals: s.arrivals,
                    processed: s.processed,
                    pending: s.visible + s.retrying + s.inbox_count,
                    errors: s.errors,
                    max_backlog: s.max_backlog,
                    mean_backlog: s.backlog_integral / measured,
                    p50_delay: s.delays.quantile(0.5),
                    p99_delay: s.delays.quantile(0.99),
                    worker_seconds: s.worker_seconds,
                    peak_workers: s.peak_workers,
                    series: s.series.clone(),
                }
            })
            .collect();
        Report {
            scenario: self.scenario.name.clone(),
            policy: policy.to_string(),
            start: self.scenario.warmup,
            end: self.t,
            e2e_p50: e2e.quantile(0.5),
            e2e_p99: e2e.quantile(0.99),
            functions,
        }
    }
}

/// Replays `trace` through `scenario` under `policy`, evaluating the policy on its own interval from
/// t = 0 until the trace ends plus the scenario's tail.
pub fn run(scenario: &Scenario, trace: &Trace, policy: &mut dyn Policy) -> Result<Report> {
    let mut p = Pipeline::new(scenario.clone(), trace.clone())?;
    let end = p.end();
    let every = policy
        .interval()
        .max(Duration::from_secs_f64(scenario.step));
    let mut next = Duration::ZERO;
    while next <= end {
        p.advance_to(next);
        let signals = p.signals();
        let decision = policy.decide(p.graph(), &signals, next);
        p.apply(&decision);
        next += every;
    }
    p.advance_to(end);
    Ok(p.report(policy.name()))
}

/// A shared handle on a [`Pipeline`] that is both the [`SignalSource`] and the [`Actuator`] of a
/// controller: reading signals at `now` first advances the model to `now`.
#[derive(Debug, Clone)]
pub struct SimHandle(pub Arc<Mutex<Pipeline>>);

impl SimHandle {
    /// Wraps a pipeline.
    pub fn new(p: Pipeline) -> Self {
        Self(Arc::new(Mutex::new(p)))
    }

    /// Runs `f` on the pipeline.
    pub fn with<R>(&self, f: impl FnOnce(&mut Pipeline) -> R) -> R {
        f(&mut self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

impl SignalSource for SimHandle {
    async fn signals(&mut self, now: Duration) -> Result<Signals> {
        Ok(self.with(|p| {
            p.advance_to(now);
            p.signals()
        }))
    }
}

impl Actuator for SimHandle {
    async fn apply(&mut self, decision: &Decision) -> Result<()> {
        self.with(|p| p.apply(decision));
        Ok(())
    }
}
