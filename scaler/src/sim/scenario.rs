//! Pipeline models for the simulator: per function service time, worker start-up delay, bounds, fan-out
//! and store reads; per store its capacity. Named scenarios match the traces shipped in `traces/`.
//!
//! A scenario is plain serde data, so the host can also load one from TOML next to its manifest.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::graph::{FunctionSpec, Graph, StoreSpec};
use crate::sim::trace::Trace;

/// One function of the model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FunctionModel {
    /// Function name (matches the trace).
    pub name: String,
    /// Seconds one worker spends on one message.
    pub service_time: f64,
    /// Seconds between asking for a worker and it taking messages.
    pub startup: f64,
    /// Worker bounds.
    pub min_workers: u32,
    /// Worker bounds.
    pub max_workers: u32,
    /// Workers running at t = 0 (warm).
    pub initial_workers: u32,
    /// `(target, messages emitted per processed message)`.
    #[serde(default)]
    pub emits_to: Vec<(String, f64)>,
    /// `(store, operations per processed message)`.
    #[serde(default)]
    pub reads: Vec<(String, f64)>,
}

/// One store of the model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreModel {
    /// Store name.
    pub name: String,
    /// Operations per second it serves; requests beyond fail and the message is retried.
    pub capacity: f64,
    /// Seconds of capacity it can serve in a burst (a token bucket of `capacity × burst` operations).
    pub burst: f64,
}

/// A pipeline model plus simulation settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Name.
    pub name: String,
    /// What it represents.
    pub description: String,
    /// Functions.
    pub functions: Vec<FunctionModel>,
    /// Stores.
    #[serde(default)]
    pub stores: Vec<StoreModel>,
    /// Simulation step in seconds.
    pub step: f64,
    /// Seconds a message whose store request failed stays invisible before it is retried (SQS
    /// visibility timeout).
    pub retry_backoff: f64,
    /// Relative arrival noise: each step's arrivals are scaled by a uniform factor in `1 ± noise`.
    pub noise: f64,
    /// Seed of the noise.
    pub seed: u64,
    /// Statistics are collected after this many seconds (the pipeline settles first).
    pub warmup: f64,
    /// Seconds simulated after the trace ends, so backlogs can drain.
    pub tail: f64,
    /// Seconds between time-series samples in the report.
    pub sample_every: f64,
}

fn f(
    name: &str,
    service_time: f64,
    startup: f64,
    (min_workers, max_workers, initial_workers): (u32, u32, u32),
    emits_to: &[(&str, f64)],
    reads: &[(&str, f64)],
) -> FunctionModel {
    FunctionModel {
        name: name.into(),
        service_time,
        startup,
        min_workers,
        max_workers,
        initial_workers,
        emits_to: emits_to.iter().map(|&(t, k)| (t.into(), k)).collect(),
        reads: reads.iter().map(|&(s, o)| (s.into(), o)).collect(),
    }
}

/// Names accepted by [`Scenario::named`].
pub const SCENARIO_NAMES: [&str; 2] = ["jan2025", "apr2020"];

impl Scenario {
    /// A named scenario (`jan2025`, `apr2020`).
    pub fn named(name: &str) -> Result<Self> {
        match name {
            "jan2025" => Ok(Self::jan2025()),
            "apr2020" => Ok(Self::apr2020()),
            other => Err(Error::Scenario {
                scenario: other.into(),
                message: format!("no such scenario; known: {}", SCENARIO_NAMES.join(", ")),
            }),
        }
    }

    /// January 2025: inbound messages feed the primary platform data service, which feeds automation
    /// (business rules and workflows): a dependency that starts slowly (90 s per worker: a heavy image
    /// that loads rule sets before taking work) and reads the shared platform database twice per message.
    /// The database serves 700 ops/s: enough for doubled traffic (200 + 2 × 200 = 600 ops/s) but not for
    /// every pool draining a backlog at full tilt. Routing is a light side branch. Trace: `traces/jan2025.csv`.
    pub fn jan2025() -> Self {
        Self {
            name: "jan2025".into(),
            description:
                "inbound doubles within minutes; automation starts slowly and shares the db".into(),
            functions: vec![
                f("inbound", 0.04, 5.0, (1, 20, 5), &[("platform", 1.0)], &[]),
                f(
                    "platform",
                    0.1,
                    10.0,
                    (1, 40, 12),
                    &[("automation", 1.0), ("routing", 0.5)],
                    &[("db", 1.0)],
                ),
                f("automation", 0.2, 90.0, (1, 60, 23), &[], &[("db", 2.0)]),
                f("routing", 0.05, 5.0, (0, 10, 3), &[], &[]),
            ],
            stores: vec![StoreModel {
                name: "db".into(),
                capacity: 700.0,
                burst: 1.0,
            }],
            step: 0.1,
            retry_backoff: 30.0,
            noise: 0.1,
            seed: 2025,
            warmup: 300.0,
            tail: 600.0,
            sample_every: 10.0,
        }
    }

    /// April 2020: one source (a buggy SDK loop) sends chat traffic far above peak. Chat, knowledge base
    /// and login are separate functions that share the auth store. Trace: `traces/apr2020.csv`.
    pub fn apr2020() -> Self {
        Self {
            name: "apr2020".into(),
            description:
                "one source surges far above peak; chat, kb and login share the auth store".into(),
            functions: vec![
                f(
                    "chat",
                    0.05,
                    5.0,
                    (1, 60, 3),
                    &[("notify", 1.0)],
                    &[("auth", 1.0)],
                ),
                f("kb", 0.05, 5.0, (1, 20, 2), &[], &[("auth", 1.0)]),
                f("login", 0.1, 5.0, (1, 20, 2), &[], &[("auth", 2.0)]),
                f("notify", 0.02, 5.0, (0, 20, 1), &[], &[]),
            ],
            stores: vec![StoreModel {
                name: "auth".into(),
                capacity: 1000.0,
                burst: 1.0,
            }],
            step: 0.1,
            retry_backoff: 30.0,
            noise: 0.1,
            seed: 2020,
            warmup: 300.0,
            tail: 600.0,
            sample_every: 10.0,
        }
    }

    /// The graph the host would build from the equivalent manifest (fan-outs as priors, service-rate
    /// hints from the modelled service times).
    pub fn graph(&self) -> Result<Graph> {
        let functions = self
            .functions
            .iter()
            .map(|m| FunctionSpec {
                name: m.name.clone(),
                min_workers: m.min_workers,
                max_workers: m.max_workers,
                emits_to: m
                    .emits_to
                    .iter()
                    .map(|(t, k)| crate::graph::Edge {
                        target: t.clone(),
                        fan_out: *k,
                    })
                    .collect(),
                reads: m
                    .reads
                    .iter()
                    .map(|(s, o)| crate::graph::StoreRead {
                        store: s.clone(),
                        ops_per_message: *o,
                    })
                    .collect(),
                service_rate_hint: (m.service_time > 0.0).then(|| 1.0 / m.service_time),
            })
            .collect();
        let stores = self
            .stores
            .iter()
            .map(|s| StoreSpec::new(s.name.clone(), s.capacity))
            .collect();
        Graph::new(functions, stores)
    }

    /// Checks the settings and that every function of the trace is in the model.
    pub fn check(&self, trace: &Trace) -> Result<()> {
        let bad = |message: String| {
            Err(Error::Scenario {
                scenario: self.name.clone(),
                message,
            })
        };
        self.graph().map_err(|e| Error::Scenario {
            scenario: self.name.clone(),
            message: e.to_string(),
        })?;
        for m in &self.functions {
            if !(m.service_time.is_finite() && m.service_time > 0.0) {
                return bad(format!("function {:?}: service_time must be > 0 s", m.name));
            }
            if !(m.startup.is_finite() && m.startup >= 0.0) {
                return bad(format!("function {:?}: startup must be >= 0 s", m.name));
            }
            if m.initial_workers > m.max_workers {
                return bad(format!(
                    "function {:?}: initial_workers exceeds max_workers",
                    m.name
                ));
            }
        }
        for st in &self.stores {
            if !(st.burst.is_finite() && st.burst >= 0.0) {
                return bad(format!("store {:?}: burst must be >= 0 s", st.name));
            }
        }
        for m in &self.functions {
            if m.initial_workers > m.max_workers {
                return bad(format!(
                    "function {:?}: initial_workers exceeds max_workers",
                    m.name
                ));
            }
        }
        for (what, v, min) in [
            ("step", self.step, f64::MIN_POSITIVE),
            ("retry_backoff", self.retry_backoff, 0.0),
            ("warmup", self.warmup, 0.0),
            ("tail", self.tail, 0.0),
            ("sample_every", self.sample_every, f64::MIN_POSITIVE),
        ] {
            if !(v.is_finite() && v >= min) {
                return bad(format!(
                    "{what} must be a non-negative number of seconds, got {v}"
                ));
            }
        }
        if !(0.0..1.0).contains(&self.noise) {
            return bad(format!("noise must be in [0, 1), got {}", self.noise));
        }
        for name in trace.functions() {
            if !self.functions.iter().any(|m| m.name == name) {
                return bad(format!(
                    "the trace sends to {name:?}, which the model does not have"
                ));
            }
        }
        Ok(())
    }
}
