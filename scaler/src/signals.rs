//! What the scaler observes: per function queue and worker statistics, measured over the interval since
//! the previous reading. The host fills them from its queue stats and worker pools; the simulator from
//! its model.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::graph::Graph;

/// Signals for one function.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FunctionSignals {
    /// Messages per second entering this function's queue, from any source (ingress and upstream emits).
    pub arrival_rate: f64,
    /// Messages per second this function completed successfully.
    pub processed_rate: f64,
    /// Measured messages per second one busy worker handles (`None` when no worker was busy).
    pub service_rate_per_worker: Option<f64>,
    /// Visible messages waiting in the queue.
    pub backlog: u64,
    /// Messages being handled right now.
    pub in_flight: u64,
    /// Messages whose handling failed and that wait out a retry backoff (invisible, not yet visible again).
    pub delayed: u64,
    /// Age of the oldest visible message.
    pub oldest_age: Duration,
    /// Workers running and able to take messages.
    pub workers: u32,
    /// Workers requested but still starting.
    pub starting: u32,
    /// Measured messages emitted per processed message, per downstream function.
    pub fan_out: BTreeMap<String, f64>,
    /// A forecast, in (0, 1]: how much slower each worker will get because the host its pool
    /// shares is getting busier (a surge on one host; see the host's contention model). Sizing
    /// divides the service rate by it; the capacities that backpressure plans with do not, since
    /// on one host a downstream slowed by the same shared CPU is no reason to hold its upstream
    /// back. `None`: no forecast.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contention: Option<f64>,
}

/// Signals for every function, keyed by function name.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Signals {
    /// Per function signals.
    pub functions: BTreeMap<String, FunctionSignals>,
}

impl Signals {
    /// Signals of one function (all zero when the source has none for it).
    pub fn get(&self, name: &str) -> FunctionSignals {
        self.functions.get(name).cloned().unwrap_or_default()
    }

    /// Checks that every function named is in the graph and every number is finite and non-negative.
    pub fn check(&self, graph: &Graph) -> Result<()> {
        for (name, s) in &self.functions {
            let Some(f) = graph.function(name) else {
                return Err(Error::Signals(format!(
                    "signals for unknown function {name:?}"
                )));
            };
            let ok = |v: f64| v.is_finite() && v >= 0.0;
            if !ok(s.arrival_rate) || !ok(s.processed_rate) {
                return Err(Error::Signals(format!(
                    "{name}: rates must be finite and non-negative"
                )));
            }
            if let Some(mu) = s.service_rate_per_worker
                && !ok(mu)
            {
                return Err(Error::Signals(format!(
                    "{name}: service rate {mu} is not a rate"
                )));
            }
            if let Some(k) = s.contention
                && !(k.is_finite() && k > 0.0 && k <= 1.0)
            {
                return Err(Error::Signals(format!(
                    "{name}: contention factor {k} is not in (0, 1]"
                )));
            }
            for (target, k) in &s.fan_out {
                if !f.emits_to.iter().any(|e| &e.target == target) {
                    return Err(Error::Signals(format!(
                        "{name}: fan-out measured to {target:?}, which it does not emit to"
                    )));
                }
                if !ok(*k) {
                    return Err(Error::Signals(format!(
                        "{name} -> {target}: fan-out {k} is not a ratio"
                    )));
                }
            }
        }
        Ok(())
    }
}
