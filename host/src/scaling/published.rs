//! What the hosts of a fleet tell the scaler: each host publishes its pools' running counters
//! (completions, emits, invocations, worker occupancy) into the kv store every
//! [`PUBLISH_EVERY`], one item per function and host under `_levee_stats/{function}`, expiring
//! after [`PUBLISHED_TTL`]. `levee scale` sums them per function, so its rates are measured
//! (what the hosts processed, and the service rate per worker) instead of being guessed from
//! queue growth. The store is the channel because every host and the scaler already reach it
//! with least-privilege grants, and it needs no discovery of task addresses.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::store::{PutOptions, Store};
use crate::worker::WorkerPool;

/// How often a host publishes.
pub const PUBLISH_EVERY: Duration = Duration::from_secs(2);
/// A host that stopped publishing drops out of the sums after this long.
pub const PUBLISHED_TTL: Duration = Duration::from_secs(30);
/// Most hosts read per function (a scan page).
const MAX_HOSTS: usize = 1000;

/// The namespace of function `function`'s published counters.
pub fn stats_ns(function: &str) -> String {
    format!("_levee_stats/{function}")
}

/// One host's counters of one function, running totals since the host started.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostCounters {
    pub completed: u64,
    pub invocations: u64,
    pub occupied_micros: u64,
    pub workers: u32,
    pub emitted: BTreeMap<String, u64>,
}

impl HostCounters {
    fn of(pool: &WorkerPool) -> Self {
        let stats = pool.stats();
        let emits = pool.emit_counts();
        Self {
            completed: emits.completed,
            invocations: stats.invocations,
            occupied_micros: stats.occupied_micros,
            workers: stats.workers,
            emitted: emits.emitted,
        }
    }

    fn add(&mut self, other: &HostCounters) {
        self.completed += other.completed;
        self.invocations += other.invocations;
        self.occupied_micros += other.occupied_micros;
        self.workers += other.workers;
        for (t, n) in &other.emitted {
            *self.emitted.entry(t.clone()).or_insert(0) += n;
        }
    }
}

/// Publishes `pools`' counters as host `host` until `stop` turns true. Failures are logged and
/// retried at the next round: the scaler falls back to queue growth meanwhile.
pub fn spawn_publisher(
    store: Arc<dyn Store>,
    pools: BTreeMap<String, Arc<WorkerPool>>,
    host: String,
    mut stop: watch::Receiver<bool>,
) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(PUBLISH_EVERY);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.changed() => return,
            }
            if *stop.borrow() {
                return;
            }
            for (name, pool) in &pools {
                let value =
                    serde_json::to_vec(&HostCounters::of(pool)).expect("counters serialise");
                let opts = PutOptions {
                    if_absent: false,
                    ttl: Some(PUBLISHED_TTL),
                };
                if let Err(e) = store
                    .put(&stats_ns(name), &host, Bytes::from(value), opts)
                    .await
                {
                    tracing::debug!(function = %name, error = %e, "could not publish counters");
                }
            }
        }
    });
}

/// The sum of every live host's counters of `function`; `None` when no host published.
pub async fn fleet_counters(
    store: &dyn Store,
    function: &str,
) -> crate::Result<Option<HostCounters>> {
    let items = store.scan(&stats_ns(function), "", None, MAX_HOSTS).await?;
    if items.is_empty() {
        return Ok(None);
    }
    let mut sum = HostCounters::default();
    for (_, v) in items {
        if let Ok(c) = serde_json::from_slice::<HostCounters>(&v) {
            sum.add(&c);
        }
    }
    Ok(Some(sum))
}
