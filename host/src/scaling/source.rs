//! The live [`SignalSource`]: reads every function's queue stats and worker-pool counters and turns
//! the running totals into rates over the interval since the previous reading. Time comes in as an
//! argument (the controller's), so the computation is a pure function of two samples.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use levee_scaler::{FunctionSignals, SignalSource, Signals};

use super::contention;
use super::surge::{SHORT_WINDOW, Surges};
use crate::queue::{Queue, QueueStats};
use crate::worker::{EmitCounts, PoolStats, WorkerPool};

/// Fewest visible messages at both readings for a pool to count as saturated.
const SATURATED_BACKLOG: f64 = 50.0;
/// ...and at least this long a stretch of the pool's throughput.
const SATURATION_SPAN: f64 = 0.1;

/// What one function looked like at one reading.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    pub queue: QueueStats,
    pub pool: PoolStats,
    /// Completions and emitted messages per target, with every `emits_to` target present (0 if
    /// nothing went there yet), so an edge that carries nothing measures a fan-out of 0.
    pub emits: EmitCounts,
}

impl Sample {
    /// Messages in the queue in any state but dead-lettered.
    fn depth(&self) -> u64 {
        self.queue.visible + self.queue.in_flight + self.queue.delayed
    }

    /// Messages that left the queue for good (completed or dead-lettered), a running total.
    fn left(&self) -> u64 {
        self.queue.processed + self.queue.failed
    }
}

/// Signals of one function from the sample before (if any) and the current one, `dt` apart.
///
/// The queue has no running total of sends, so arrivals come from conservation: what entered in the
/// interval is what left plus what the depth grew by. The service rate per worker is invocations per
/// second of worker occupancy (handler, lease renewal and settling), not of handler time alone: on a
/// fast handler the outbox sends and the delete are most of a worker's time. The fan-out per edge is
/// messages emitted to the target per message completed in the interval.
pub fn function_signals(prev: Option<&Sample>, cur: &Sample, dt: Duration) -> FunctionSignals {
    let mut s = FunctionSignals {
        backlog: cur.queue.visible,
        in_flight: cur.queue.in_flight,
        delayed: cur.queue.delayed,
        oldest_age: Duration::from_millis(cur.queue.oldest_age_ms.unwrap_or(0)),
        workers: cur.pool.workers,
        ..FunctionSignals::default()
    };
    let secs = dt.as_secs_f64();
    let Some(prev) = prev.filter(|_| secs > 0.0) else {
        return s;
    };
    let left = cur.left().saturating_sub(prev.left());
    let entered = (left as i128 + cur.depth() as i128 - prev.depth() as i128).max(0);
    s.arrival_rate = entered as f64 / secs;
    s.processed_rate = cur.queue.processed.saturating_sub(prev.queue.processed) as f64 / secs;
    let completed = cur.emits.completed.saturating_sub(prev.emits.completed);
    if completed > 0 {
        for (target, n) in &cur.emits.emitted {
            let before = prev.emits.emitted.get(target).copied().unwrap_or(0);
            let k = n.saturating_sub(before) as f64 / completed as f64;
            s.fan_out.insert(target.clone(), k);
        }
    }
    let handled = cur.pool.invocations.saturating_sub(prev.pool.invocations);
    let occupied = cur
        .pool
        .occupied_micros
        .saturating_sub(prev.pool.occupied_micros);
    if handled > 0 && occupied > 0 {
        let per_occupied_second = handled as f64 / (occupied as f64 / 1e6);
        // Under a backlog that persisted through the interval every worker was wanted all along, so
        // the pool's real throughput per worker is measured directly; it is lower than the occupancy
        // figure when something besides the workers (the fetchers, the queue's writes) is the limit.
        // A few messages visible at both readings is not a backlog: a pool that keeps up leaves
        // what arrived during one receive there. Counting it as one would measure the demand per
        // worker, not the capacity, and every worker added would lower it further (a ratchet).
        let backlog = (handled as f64 / secs * SATURATION_SPAN).max(SATURATED_BACKLOG);
        let saturated = prev.queue.visible as f64 >= backlog
            && cur.queue.visible as f64 >= backlog
            && cur.pool.workers > 0;
        let per_worker = handled as f64 / secs / f64::from(cur.pool.workers.max(prev.pool.workers));
        s.service_rate_per_worker = Some(if saturated {
            per_occupied_second.min(per_worker)
        } else {
            per_occupied_second
        });
    }
    s
}

/// Queue stats and pool counters of the running platform as the scaler's signals.
pub struct QueueSignals {
    queue: Arc<dyn Queue>,
    /// The functions read: those with a pool, unless [`QueueSignals::with_functions`] says more.
    functions: Vec<String>,
    pools: BTreeMap<String, Arc<WorkerPool>>,
    /// `emits_to` of each function, so edges that carried nothing measure a fan-out of 0.
    edges: BTreeMap<String, Vec<String>>,
    /// Where the fleet's hosts publish their counters (`levee scale`).
    published: Option<Arc<dyn crate::store::Store>>,
    /// Arrival surges seen between readings ([`super::surge`]).
    surges: Option<Arc<Surges>>,
    /// The surge generation the last reading saw.
    surges_seen: u64,
    /// The cores the pools share, when they share this host's ([`QueueSignals::with_host_cpu`]).
    host_cores: Option<f64>,
    /// The previous base sample: when, per function, and the CPU readings then.
    prev: Option<(Duration, BTreeMap<String, Sample>)>,
    prev_cpu: Option<CpuReading>,
    /// The last regular readings' intervals (at most [`INTERVALS_KEPT`]), newest last: what a
    /// surge's load is compared with is the host before the surge, not an interval it is part of.
    intervals: std::collections::VecDeque<Interval>,
}

/// Regular readings kept for [`Interval`]s: several seconds at the surge tick.
const INTERVALS_KEPT: usize = 32;

/// What one regular reading measured over its interval.
#[derive(Debug, Clone)]
struct Interval {
    /// When the interval ended.
    ended: tokio::time::Instant,
    /// The host's busy share over it (the larger of this process's and the whole host's).
    rho: Option<f64>,
    /// Messages per second each function completed over it.
    processed: BTreeMap<String, f64>,
}

/// This process's CPU time and the host's `/proc/stat` ticks (busy, total) at one reading.
type CpuReading = (Option<Duration>, Option<(u64, u64)>);

impl QueueSignals {
    /// Signals of every function with a pool in `pools`.
    pub fn new(queue: Arc<dyn Queue>, pools: BTreeMap<String, Arc<WorkerPool>>) -> Self {
        Self {
            queue,
            functions: pools.keys().cloned().collect(),
            pools,
            edges: BTreeMap::new(),
            published: None,
            surges: None,
            surges_seen: 0,
            host_cores: None,
            prev: None,
            prev_cpu: None,
            intervals: Default::default(),
        }
    }

    /// Takes a fresh surge's rate as a floor on the function's arrival rate. A reading prompted by
    /// a surge (one recorded since the previous reading) keeps the previous sample as the base of
    /// the next regular reading, so rates are never measured over the few ms between the two.
    pub fn with_surges(mut self, surges: Arc<Surges>) -> Self {
        self.surges = Some(surges);
        self
    }

    /// The pools run on this host and share its cores: in a surge's first second
    /// ([`contention::REACTING`]), every function's signals carry the factor by which the host
    /// will slow a worker at the surge's load ([`contention`], `FunctionSignals::contention`), so
    /// one decision sizes the pools for it.
    pub fn with_host_cpu(mut self) -> Self {
        self.host_cores = Some(contention::cores());
        self
    }

    /// Reads the counters the fleet's hosts publish into `store` ([`super::published`]) for the
    /// functions without a local pool: completions, emits, invocations and worker occupancy
    /// summed over the hosts, so rates are measured, not derived from queue growth alone.
    pub fn with_published(mut self, store: Arc<dyn crate::store::Store>) -> Self {
        self.published = Some(store);
        self
    }

    /// Reads these functions; those without a local pool report queue signals only (no workers,
    /// no service rate), as the scaler of a fleet (`levee scale`) sees them.
    pub fn with_functions(mut self, functions: Vec<String>) -> Self {
        self.functions = functions;
        self
    }

    /// Declares each function's `emits_to` targets (from the manifest).
    pub fn with_edges(mut self, edges: BTreeMap<String, Vec<String>>) -> Self {
        self.edges = edges;
        self
    }
}

/// The last interval that ended a short window before a surge seen at `seen`: the step came up
/// to a short window before the watcher saw it, so a later interval may hold some of it.
fn before_the_surge(
    intervals: &std::collections::VecDeque<Interval>,
    seen: tokio::time::Instant,
) -> Option<&Interval> {
    let cutoff = seen.checked_sub(SHORT_WINDOW)?;
    intervals.iter().rev().find(|iv| iv.ended <= cutoff)
}

impl SignalSource for QueueSignals {
    async fn signals(&mut self, now: Duration) -> levee_scaler::Result<Signals> {
        let mut samples = BTreeMap::new();
        for name in &self.functions {
            let pool = self.pools.get(name);
            let queue =
                self.queue.stats(name).await.map_err(|e| {
                    levee_scaler::Error::Signals(format!("queue stats of {name}: {e}"))
                })?;
            let mut queue = queue;
            let mut emits = pool.map(|p| p.emit_counts()).unwrap_or_default();
            let mut pool_stats = pool.map(|p| p.stats()).unwrap_or_default();
            if pool.is_none()
                && let Some(store) = &self.published
            {
                match super::published::fleet_counters(store.as_ref(), name).await {
                    Ok(Some(c)) => {
                        queue.processed = c.completed;
                        pool_stats.invocations = c.invocations;
                        pool_stats.occupied_micros = c.occupied_micros;
                        emits.completed = c.completed;
                        emits.emitted = c.emitted;
                    }
                    Ok(None) => {}
                    Err(e) => tracing::debug!(function = %name, error = %e,
                        "the hosts' published counters could not be read; rates from queue growth"),
                }
            }
            for target in self.edges.get(name).into_iter().flatten() {
                emits.emitted.entry(target.clone()).or_insert(0);
            }
            samples.insert(
                name.clone(),
                Sample {
                    queue,
                    pool: pool_stats,
                    emits,
                },
            );
        }
        let (dt, prev) = match &self.prev {
            Some((at, prev)) => (now.saturating_sub(*at), Some(prev)),
            None => (Duration::ZERO, None),
        };
        let clock = tokio::time::Instant::now();
        let cpu = self
            .host_cores
            .map(|_| (contention::process_cpu(), contention::host_cpu_ticks()));
        let mut functions: BTreeMap<String, levee_scaler::FunctionSignals> = samples
            .iter()
            .map(|(name, cur)| {
                let before = prev.and_then(|p| p.get(name));
                let mut s = function_signals(before, cur, dt);
                if let Some(rate) = self.surges.as_ref().and_then(|g| g.rate(name, clock)) {
                    s.arrival_rate = s.arrival_rate.max(rate);
                }
                (name.clone(), s)
            })
            .collect();
        // The host's busy share over this reading's interval.
        let rho = match (self.host_cores, self.prev_cpu, cpu) {
            (Some(cores), Some(before), Some(cpu)) if !dt.is_zero() => {
                let own = before
                    .0
                    .zip(cpu.0)
                    .map(|(b, c)| contention::utilization(b, c, dt, cores));
                let host = before
                    .1
                    .zip(cpu.1)
                    .and_then(|(b, c)| contention::host_utilization(b, c));
                own.into_iter().chain(host).reduce(f64::max)
            }
            _ => None,
        };
        if let (Some(_), Some(surges)) = (self.host_cores, &self.surges) {
            let rising: Vec<(String, super::surge::Surge)> = functions
                .keys()
                .filter_map(|name| {
                    let surge = surges.rising(name, clock, contention::REACTING)?;
                    Some((name.clone(), surge))
                })
                .collect();
            // The surging functions' planned throughput over what they did before the surge
            // (the last regular interval that ended a short window before it was seen, since the
            // step itself came up to that much earlier), at the host's load then: the host's load
            // grows by about that ratio. Without such an interval, this reading's.
            let base = rising
                .iter()
                .map(|(_, s)| s.since)
                .min()
                .and_then(|start| before_the_surge(&self.intervals, start));
            let planned: f64 = rising.iter().map(|(_, s)| s.rate).sum();
            let (rho, done): (Option<f64>, f64) = match base {
                Some(iv) => (
                    iv.rho,
                    rising
                        .iter()
                        .map(|(name, _)| iv.processed.get(name).copied().unwrap_or(0.0))
                        .sum(),
                ),
                None => (
                    rho,
                    rising
                        .iter()
                        .map(|(name, _)| functions[name].processed_rate)
                        .sum(),
                ),
            };
            if planned > 0.0
                && let Some(rho) = rho
            {
                let ratio = planned / done.max(1.0);
                let k = contention::service_rate_factor(rho, ratio);
                if k < 1.0 {
                    tracing::debug!(
                        utilization = rho,
                        planned,
                        done,
                        load_ratio = ratio,
                        factor = k,
                        before_the_surge = base.is_some(),
                        "surge: planning for the service rates of a busier host"
                    );
                    // A forecast for sizing only: the measured rates stay as they are, so the
                    // policy's capacities (backpressure) and remembered rates are not lowered.
                    for s in functions.values_mut() {
                        if s.service_rate_per_worker.is_some() {
                            s.contention = Some(k);
                        }
                    }
                }
            }
        }
        let generation = self.surges.as_ref().map_or(0, |g| g.generation());
        let surge_reading = generation != self.surges_seen && self.prev.is_some();
        self.surges_seen = generation;
        if !surge_reading {
            if self.prev.is_some() && !dt.is_zero() {
                if self.intervals.len() >= INTERVALS_KEPT {
                    self.intervals.pop_front();
                }
                self.intervals.push_back(Interval {
                    ended: clock,
                    rho,
                    processed: functions
                        .iter()
                        .map(|(n, s)| (n.clone(), s.processed_rate))
                        .collect(),
                });
            }
            self.prev = Some((now, samples));
            self.prev_cpu = cpu;
        }
        Ok(Signals { functions })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(
        (visible, in_flight, delayed): (u64, u64, u64),
        (processed, failed): (u64, u64),
        (invocations, occupied_ms): (u64, u64),
        workers: u32,
    ) -> Sample {
        Sample {
            queue: QueueStats {
                visible,
                in_flight,
                delayed,
                dlq: failed,
                oldest_age_ms: Some(1500),
                processed,
                failed,
                retried: 0,
            },
            pool: PoolStats {
                workers,
                max_workers: 8,
                invocations,
                succeeded: processed,
                failed_attempts: 0,
                busy_micros: occupied_ms * 100,
                occupied_micros: occupied_ms * 1000,
                ..Default::default()
            },
            emits: EmitCounts::default(),
        }
    }

    #[test]
    fn a_surge_is_compared_with_the_interval_before_it() {
        let t0 = tokio::time::Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let iv = |ms: u64, rate: f64| Interval {
            ended: at(ms),
            rho: Some(rate / 1000.0),
            processed: [("f".to_string(), rate)].into(),
        };
        let kept: std::collections::VecDeque<Interval> =
            [iv(1_000, 250.0), iv(1_250, 251.0), iv(1_500, 900.0)].into();
        // Seen at 1.55 s: the interval ending at 1.5 s may hold the step; the one before is taken.
        let base = before_the_surge(&kept, at(1_550)).unwrap();
        assert_eq!(base.processed["f"], 251.0);
        assert_eq!(before_the_surge(&kept, at(1_300)).unwrap().ended, at(1_000));
        assert!(before_the_surge(&kept, at(1_100)).is_none());
    }

    #[test]
    fn fan_out_per_edge_is_emitted_per_completed() {
        let mut before = sample((0, 0, 0), (100, 0), (100, 1_000), 2);
        before.emits.completed = 100;
        before.emits.emitted = [
            ("routing".to_string(), 100),
            ("search-index".to_string(), 0),
        ]
        .into();
        let mut after = sample((0, 0, 0), (300, 0), (300, 3_000), 2);
        after.emits.completed = 300;
        after.emits.emitted = [
            ("routing".to_string(), 250),
            ("search-index".to_string(), 0),
        ]
        .into();
        let s = function_signals(Some(&before), &after, Duration::from_secs(2));
        assert_eq!(s.fan_out["routing"], 0.75);
        assert_eq!(
            s.fan_out["search-index"], 0.0,
            "an edge that carried nothing measures 0"
        );
        let idle = function_signals(Some(&after), &after, Duration::from_secs(2));
        assert!(
            idle.fan_out.is_empty(),
            "no completions, no measurement: {idle:?}"
        );
    }

    #[test]
    fn rates_come_from_deltas_between_readings() {
        let before = sample((100, 4, 0), (1000, 2), (1010, 2_000), 4);
        // 5 s later: 600 completed, 3 dead-lettered, depth grew by 200 (visible 296, in flight 8):
        // 803 arrived. 610 invocations in 4 s of occupancy: 152.5 per worker-second.
        let after = sample((296, 8, 0), (1600, 5), (1620, 6_000), 6);
        let s = function_signals(Some(&before), &after, Duration::from_secs(5));
        assert!((s.arrival_rate - 803.0 / 5.0).abs() < 1e-9, "{s:?}");
        assert!((s.processed_rate - 120.0).abs() < 1e-9, "{s:?}");
        // A backlog at both readings: 610 handled in 5 s by up to 6 workers is 20.3 per worker,
        // below the 152.5 per occupied second, so the pool, not the handler, is the limit.
        let mu = s.service_rate_per_worker.unwrap();
        assert!((mu - 610.0 / 5.0 / 6.0).abs() < 1e-9, "{mu}");
        assert_eq!((s.backlog, s.in_flight, s.workers), (296, 8, 6));
        assert_eq!(s.oldest_age, Duration::from_millis(1500));
    }

    #[test]
    fn a_short_steady_queue_is_not_saturation() {
        // 20 visible at both readings while 250 were handled in 0.25 s by 2 workers: the pool
        // keeps up; the service rate is the occupancy figure, not 500 per worker per second.
        let before = sample((20, 4, 0), (1000, 0), (1000, 100), 2);
        let after = sample((20, 4, 0), (1250, 0), (1250, 300), 2);
        let s = function_signals(Some(&before), &after, Duration::from_millis(250));
        assert_eq!(s.service_rate_per_worker, Some(1250.0));
    }

    #[test]
    fn without_a_backlog_the_service_rate_is_per_occupied_second() {
        let before = sample((0, 4, 0), (1000, 0), (1000, 2_000), 4);
        let after = sample((0, 3, 0), (1600, 0), (1600, 6_000), 4);
        let s = function_signals(Some(&before), &after, Duration::from_secs(5));
        assert_eq!(s.service_rate_per_worker, Some(150.0));
    }

    #[test]
    fn a_draining_queue_has_no_negative_arrivals_and_idle_pools_no_service_rate() {
        let before = sample((500, 10, 0), (0, 0), (0, 0), 2);
        let after = sample((100, 10, 0), (300, 0), (300, 1_000), 2);
        let s = function_signals(Some(&before), &after, Duration::from_secs(2));
        // 300 left, depth fell by 400: more left than the depth explains would be negative; clamp.
        assert_eq!(s.arrival_rate, 0.0);
        let idle = function_signals(Some(&after), &after, Duration::from_secs(2));
        assert_eq!(
            (
                idle.arrival_rate,
                idle.processed_rate,
                idle.service_rate_per_worker
            ),
            (0.0, 0.0, None)
        );
    }

    #[test]
    fn the_first_reading_has_levels_but_no_rates() {
        let cur = sample((7, 1, 2), (50, 0), (50, 100), 3);
        let s = function_signals(None, &cur, Duration::ZERO);
        assert_eq!((s.backlog, s.in_flight, s.delayed, s.workers), (7, 1, 2, 3));
        assert_eq!((s.arrival_rate, s.service_rate_per_worker), (0.0, None));
        let same_instant = function_signals(Some(&cur), &cur, Duration::ZERO);
        assert_eq!(same_instant.arrival_rate, 0.0);
    }

    #[tokio::test]
    async fn a_fleet_scaler_measures_rates_from_the_counters_its_hosts_publish() {
        use crate::queue::QueueSpec;
        use crate::scaling::published::{HostCounters, stats_ns};
        use crate::store::{MemoryStore, PutOptions, Store};
        let dir = tempfile::tempdir().unwrap();
        let db = crate::EmbeddedDb::open(dir.path().join("q.db")).unwrap();
        let queue: Arc<dyn Queue> = Arc::new(db.queue());
        queue
            .ensure(&QueueSpec {
                name: "f".into(),
                max_receive: 5,
            })
            .await
            .unwrap();
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let publish = |host: &'static str, completed: u64, occupied_s: u64| {
            let store = store.clone();
            async move {
                let c = HostCounters {
                    completed,
                    invocations: completed,
                    occupied_micros: occupied_s * 1_000_000,
                    workers: 2,
                    emitted: BTreeMap::from([("g".to_string(), completed * 2)]),
                };
                let v = bytes::Bytes::from(serde_json::to_vec(&c).unwrap());
                store
                    .put(&stats_ns("f"), host, v, PutOptions::default())
                    .await
                    .unwrap();
            }
        };
        let mut signals = QueueSignals::new(queue, BTreeMap::new())
            .with_functions(vec!["f".into()])
            .with_published(store.clone());
        publish("h1", 100, 1).await;
        publish("h2", 50, 1).await;
        signals.signals(Duration::ZERO).await.unwrap();
        publish("h1", 300, 3).await;
        publish("h2", 150, 2).await;
        let s = signals.signals(Duration::from_secs(2)).await.unwrap();
        let f = &s.functions["f"];
        assert_eq!(
            f.processed_rate, 150.0,
            "(450 - 150) completions in 2 s over two hosts"
        );
        assert_eq!(
            f.service_rate_per_worker,
            Some(100.0),
            "300 invocations per 3 s of occupancy"
        );
        assert_eq!(f.fan_out.get("g"), Some(&2.0));
    }
}
