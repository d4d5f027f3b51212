//! What the platform tells about itself: Prometheus metrics for `GET /metrics` (the `metrics`
//! facade with its Prometheus exporter) and the log format (`logs`).
//!
//! Only the two latency histograms are recorded on the hot path (a handle per function, made
//! when its pool starts). Everything else already has a running counter or a level somewhere
//! (queue stats, pool counters, the cache's metrics, the ingress's groups); those are copied into
//! the registry when `/metrics` is scraped, so an unscraped platform pays nothing for them.

pub mod logs;

use std::sync::OnceLock;

use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::ingress::IngressStatus;
use crate::platform::Platform;

/// Time in a handler, per function (histogram).
pub const HANDLER_SECONDS: &str = "levee_handler_duration_seconds";
/// From the origin message's send to this message's commit, per function (histogram).
pub const END_TO_END_SECONDS: &str = "levee_end_to_end_seconds";

/// Histogram bucket bounds in seconds: 0.5 ms to a minute.
const BUCKETS: [f64; 16] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the process's Prometheus recorder (once; later calls return the same handle).
/// `None` when another recorder was installed first (an embedding program's).
pub fn install() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &BUCKETS)
                .expect("bucket list is not empty");
            let handle = builder.install_recorder().ok()?;
            describe();
            Some(handle)
        })
        .as_ref()
}

fn describe() {
    describe_histogram!(
        HANDLER_SECONDS,
        metrics::Unit::Seconds,
        "Time in the handler per invocation."
    );
    describe_histogram!(
        END_TO_END_SECONDS,
        metrics::Unit::Seconds,
        "From the send of the first message of a chain to the commit of this one."
    );
    describe_gauge!(
        "levee_queue_messages",
        "Messages in a function's queue by state."
    );
    describe_gauge!(
        "levee_queue_oldest_age_seconds",
        "Age of the oldest message waiting."
    );
    describe_gauge!(
        "levee_dead_letters",
        "Messages in a function's dead-letter queue."
    );
    describe_gauge!(
        "levee_workers",
        "Workers a function's pool runs on this host."
    );
    describe_gauge!(
        "levee_workers_desired",
        "Workers the scaler last asked for."
    );
    describe_gauge!("levee_workers_max", "Most workers a function may run.");
    describe_gauge!(
        "levee_pool_paused",
        "1 while a pool has paused fetching after an infrastructure failure."
    );
    describe_gauge!(
        "levee_function_info",
        "The version each function runs (value 1)."
    );
    describe_counter!(
        "levee_messages_total",
        "Messages that left a queue, by outcome (processed, failed) or went back (retried)."
    );
    describe_counter!("levee_invocations_total", "Handler runs by outcome.");
    describe_counter!(
        "levee_outbound_requests_total",
        "Outbound HTTP requests of functions by destination and result (ok, 4xx, 5xx, throttled, failed, denied)."
    );
    describe_counter!(
        "levee_conflict_retries_total",
        "Commits refused on a version conflict and run again."
    );
    describe_counter!(
        "levee_infra_failures_total",
        "Invocations handed back for the platform's reasons."
    );
    describe_counter!(
        "levee_duplicates_total",
        "Messages found already committed and settled without running."
    );
    describe_counter!("levee_cache_requests_total", "Cache reads by result.");
    describe_counter!(
        "levee_store_calls_total",
        "Calls sent to the store, by kind."
    );
    describe_counter!(
        "levee_store_errors_total",
        "Store calls that failed (timeouts included)."
    );
    describe_counter!(
        "levee_store_rejected_total",
        "Calls refused before the store: concurrency bound or breaker open."
    );
    describe_gauge!("levee_cache_bytes", "Bytes the cache's entries weigh.");
    describe_gauge!(
        "levee_breaker_open",
        "1 while the store's circuit breaker is open (0 closed, 0.5 half-open)."
    );
    describe_counter!(
        "levee_ingress_requests_total",
        "Requests answered, by group and status."
    );
    describe_counter!(
        "levee_ingress_refused_total",
        "Requests refused by group and reason (limited, shed, blocked)."
    );
    describe_gauge!("levee_ingress_in_use", "Requests running in a group.");
    describe_gauge!(
        "levee_ingress_waiting",
        "Requests waiting for a group's slot."
    );
    describe_gauge!("levee_ingress_blocks_active", "Sources blocked now.");
    describe_gauge!("levee_ingress_connections", "Open connections.");
    describe_gauge!(
        "levee_status_up",
        "1 when the last scrape could read every queue's stats."
    );
}

/// The Prometheus text of this process: the platform's levels and counters as of now, then
/// everything recorded. Stays available when the store or a queue is down (`levee_status_up` 0).
pub async fn render(platform: &Platform, ingress: Option<&IngressStatus>) -> Option<String> {
    let handle = install()?;
    match platform.status().await {
        Ok(st) => {
            gauge!("levee_status_up").set(1.0);
            for f in &st.functions {
                let name = f.name.clone();
                for (state, v) in [
                    ("visible", f.visible),
                    ("in_flight", f.in_flight),
                    ("delayed", f.delayed),
                ] {
                    gauge!("levee_queue_messages", "function" => name.clone(), "state" => state)
                        .set(v as f64);
                }
                gauge!("levee_queue_oldest_age_seconds", "function" => name.clone())
                    .set(f.oldest_age_ms.unwrap_or(0) as f64 / 1000.0);
                gauge!("levee_dead_letters", "function" => name.clone()).set(f.dlq as f64);
                gauge!("levee_workers", "function" => name.clone()).set(f64::from(f.workers));
                gauge!("levee_workers_max", "function" => name.clone())
                    .set(f64::from(f.max_workers));
                if let Some(d) = f.desired {
                    gauge!("levee_workers_desired", "function" => name.clone()).set(f64::from(d));
                }
                gauge!("levee_pool_paused", "function" => name.clone())
                    .set(f64::from(u8::from(f.paused)));
                for (outcome, v) in [
                    ("processed", f.processed),
                    ("failed", f.failed),
                    ("retried", f.retried),
                ] {
                    counter!("levee_messages_total", "function" => name.clone(), "outcome" => outcome).absolute(v);
                }
                let failed = f.invocations.saturating_sub(f.succeeded);
                for (outcome, v) in [("ok", f.succeeded), ("failed", failed)] {
                    counter!("levee_invocations_total", "function" => name.clone(), "outcome" => outcome).absolute(v);
                }
                counter!("levee_conflict_retries_total", "function" => name.clone())
                    .absolute(f.conflicts);
                counter!("levee_infra_failures_total", "function" => name.clone())
                    .absolute(f.infra_failures);
                counter!("levee_duplicates_total", "function" => name.clone())
                    .absolute(f.duplicates);
                gauge!("levee_function_info", "function" => name.clone(), "version" => f.version.clone()).set(1.0);
            }
            for s in &st.stores {
                let store = s.name.clone();
                let c = &s.cache;
                let hits = c.hits;
                let misses = c.misses.saturating_sub(c.coalesced_waits + c.stale_serves);
                for (result, v) in [
                    ("hit", hits),
                    ("miss", misses),
                    ("coalesced", c.coalesced_waits),
                    ("stale", c.stale_serves),
                ] {
                    counter!("levee_cache_requests_total", "store" => store.clone(), "result" => result).absolute(v);
                }
                counter!("levee_store_calls_total", "store" => store.clone(), "kind" => "read")
                    .absolute(c.store_reads);
                counter!("levee_store_calls_total", "store" => store.clone(), "kind" => "write")
                    .absolute(c.store_writes);
                counter!("levee_store_errors_total", "store" => store.clone())
                    .absolute(c.store_errors);
                counter!("levee_store_rejected_total", "store" => store.clone())
                    .absolute(c.rejected);
                gauge!("levee_cache_bytes", "store" => store.clone()).set(c.bytes as f64);
                let open = match c.breaker.as_str() {
                    "open" => 1.0,
                    "half-open" => 0.5,
                    _ => 0.0,
                };
                gauge!("levee_breaker_open", "store" => store.clone()).set(open);
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "metrics: the platform's status could not be read");
            gauge!("levee_status_up").set(0.0);
        }
    }
    if let Some(i) = ingress {
        for g in &i.groups {
            let group = g.name.clone();
            for (status, n) in &g.by_status {
                counter!("levee_ingress_requests_total", "group" => group.clone(), "status" => status.to_string())
                    .absolute(*n);
            }
            for (reason, n) in [
                ("limited", g.limited),
                ("shed", g.shed),
                ("blocked", g.blocked),
            ] {
                counter!("levee_ingress_refused_total", "group" => group.clone(), "reason" => reason).absolute(n);
            }
            gauge!("levee_ingress_in_use", "group" => group.clone()).set(g.in_use as f64);
            gauge!("levee_ingress_waiting", "group" => group.clone()).set(g.waiting as f64);
        }
        gauge!("levee_ingress_blocks_active").set(i.blocks.len() as f64);
        gauge!("levee_ingress_connections").set(i.connections as f64);
    }
    handle.run_upkeep();
    Some(handle.render())
}
