//! The local [`Actuator`]: sets the size of each function's worker pool.

use std::collections::BTreeMap;
use std::sync::Arc;

use levee_scaler::{Actuator, Decision, FunctionDecision};

use crate::worker::WorkerPool;

/// Workers to run for one function's decision. An admission limit (a downstream or store cannot take
/// more) caps the pool at the limit's concurrency: fewer workers receive fewer messages, so the backlog
/// waits durably in this function's queue. A rate limit would need a token bucket in the fetch loop;
/// capping concurrency gets the same effect from the policy's own concurrency figure, which it derives
/// from that rate and the measured service rate.
pub fn workers_for(d: &FunctionDecision) -> u32 {
    match &d.admission {
        Some(a) => d.desired.min(a.max_concurrency),
        None => d.desired,
    }
}

/// Applies decisions to the platform's worker pools.
pub struct PoolActuator {
    pools: BTreeMap<String, Arc<WorkerPool>>,
}

impl PoolActuator {
    /// An actuator over `pools` (by function name).
    pub fn new(pools: BTreeMap<String, Arc<WorkerPool>>) -> Self {
        Self { pools }
    }
}

impl Actuator for PoolActuator {
    async fn apply(&mut self, decision: &Decision) -> levee_scaler::Result<()> {
        for (name, d) in &decision.functions {
            let pool = self.pools.get(name).ok_or_else(|| {
                levee_scaler::Error::Actuator(format!("no worker pool for function {name:?}"))
            })?;
            // Pools clamp to their max_workers; the graph carries the same bound, so nothing is lost.
            pool.set_workers(workers_for(d));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use levee_scaler::Admission;

    use super::*;

    #[test]
    fn admission_caps_the_pool() {
        let mut d = FunctionDecision {
            desired: 12,
            current: 4,
            admission: None,
            reason: String::new(),
        };
        assert_eq!(workers_for(&d), 12);
        d.admission = Some(Admission {
            max_rate: 40.0,
            max_concurrency: 5,
            cause: "downstream b at max".into(),
        });
        assert_eq!(workers_for(&d), 5);
        d.desired = 3;
        assert_eq!(workers_for(&d), 3);
    }
}
