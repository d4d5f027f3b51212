//! Alerts: the manifest's `[[alerts]]` rules evaluated live in `levee up`, and their notices
//! delivered to the `[alerting]` webhooks.
//!
//! Every [`EVAL_EVERY`] a task started with the ingress ([`start`]) reads what the platform
//! already knows ([`gather`]): per function the queue's figures of [`Platform::status`] (oldest
//! message age, dead letters, processed and dead-lettered totals), the kv cache's metrics
//! ([`Platform::cache_metrics`]: breaker state, store calls and errors), the ingress's active
//! blocks, and, when a `store_unreachable` rule exists and nothing called the store since the
//! last evaluation, one probe read of the store. The [`rules::Engine`] turns that into alerts
//! firing and resolving; each firing and each resolution is a notice, delivered to the primary
//! channel with retries and, when the primary failed it, to the secondary with a note saying so.
//!
//! Bounds: at most [`MAX_PENDING`] notices queued or being delivered (past it a notice is
//! dropped and its delivery shown failed), [`DELIVERING_AT_ONCE`] delivered at once, one request
//! at a time per notice with `timeout_ms` each, `retries` retries per channel, bodies of at most
//! [`deliver::MAX_BODY_BYTES`], and the [`MAX_RESOLVED`] most recent resolved alerts kept.
//! Nothing is persisted: a restart starts with no alerts (a condition still holding fires anew).

pub mod deliver;
pub mod rules;

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use crate::ingress::Ingress;
use crate::manifest::Manifest;
use crate::platform::Platform;
use deliver::{Notice, Webhook};
use rules::{
    AlertKind, AlertRule, AlertingSettings, Change, ChannelSettings, Engine, Event, FunctionInputs,
    Inputs,
};

/// How often the rules are evaluated.
pub const EVAL_EVERY: Duration = Duration::from_secs(1);
/// Longest wait for one reading of the inputs (queue figures, store probe).
pub const READ_TIMEOUT: Duration = Duration::from_secs(2);
/// Notices queued or being delivered at once; past it a notice is dropped (and shown failed).
pub const MAX_PENDING: usize = 64;
/// Notices being delivered at once (the others wait their turn).
pub const DELIVERING_AT_ONCE: usize = 4;
/// Resolved alerts kept for `GET /v1/alerts` (the most recent).
pub const MAX_RESOLVED: usize = 50;
/// Namespace and key of the store probe (function names cannot start with `_`).
const PROBE_NS: &str = "_levee_alerts";
const PROBE_KEY: &str = "probe";

/// An alert's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertState {
    Firing,
    Resolved,
}

/// A channel of `[alerting]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ChannelName {
    Primary,
    Secondary,
}

/// Where one notice stands on one channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryState {
    /// Queued, not attempted yet.
    Pending,
    /// An attempt failed; another is due.
    Retrying,
    Delivered,
    /// Every attempt failed (or the notice was dropped at the queue's bound).
    Failed,
}

/// One notice's delivery on one channel, in `GET /v1/alerts`.
#[derive(Debug, Clone, Serialize)]
pub struct DeliveryView {
    pub channel: ChannelName,
    /// The notice: `firing` or `resolved`.
    pub event: AlertState,
    pub state: DeliveryState,
    pub attempts: u32,
    pub last_error: Option<String>,
    /// When this entry last changed, ms since the Unix epoch.
    pub updated_ms: u64,
}

/// One alert in `GET /v1/alerts`.
#[derive(Debug, Clone, Serialize)]
pub struct AlertView {
    pub id: u64,
    pub rule: String,
    pub kind: AlertKind,
    pub function: Option<String>,
    pub state: AlertState,
    /// Since when it is in its state (fired or resolved), ms since the Unix epoch.
    pub since_ms: u64,
    /// When the condition started to hold.
    pub holding_since_ms: u64,
    pub fired_ms: u64,
    pub resolved_ms: Option<u64>,
    /// The latest reading (seconds for `oldest_age`, dead letters for `dlq_growth`, a fraction
    /// for `failure_rate`, a count of sources for `source_blocked`, 1 or 0 otherwise).
    pub value: f64,
    pub threshold: Option<f64>,
    pub for_s: f64,
    pub message: String,
    pub deliveries: Vec<DeliveryView>,
}

#[derive(Debug, Default)]
struct Board {
    next_id: u64,
    /// Every alert kept, by id (ids grow with time).
    alerts: BTreeMap<u64, AlertView>,
    /// The firing alert of each (rule, function).
    active: HashMap<(usize, Option<String>), u64>,
    /// Each alert's last delivery task, so its notices go out in order.
    chains: HashMap<u64, JoinHandle<()>>,
}

/// The alerts of one host: the rules, the alerts firing and recently resolved, and delivery.
pub struct Alerts {
    rules: Vec<AlertRule>,
    settings: AlertingSettings,
    primary: Option<(ChannelSettings, hyper::Uri)>,
    secondary: Option<(ChannelSettings, hyper::Uri)>,
    webhook: Option<Webhook>,
    board: Mutex<Board>,
    pending: AtomicUsize,
    dropped: AtomicU64,
    delivering: Arc<Semaphore>,
    evaluations: AtomicU64,
}

impl std::fmt::Debug for Alerts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Alerts")
            .field("rules", &self.rules.len())
            .finish_non_exhaustive()
    }
}

/// `GET /v1/alerts`.
#[derive(Debug, Clone, Serialize)]
pub struct AlertsView {
    /// Firing alerts first (newest first), then the recently resolved ones (newest first).
    pub alerts: Vec<AlertView>,
    /// Rules in the manifest.
    pub rules: usize,
    /// Channels configured (`primary`, `secondary`).
    pub channels: Vec<ChannelName>,
    /// Notices queued or being delivered now.
    pub pending_deliveries: usize,
    /// Notices dropped at the queue's bound since start.
    pub dropped_deliveries: u64,
    /// Evaluations since start.
    pub evaluations: u64,
    pub now_ms: u64,
}

impl Alerts {
    /// The alerts of `manifest` (validated: its URLs parse).
    pub fn new(manifest: &Manifest) -> Arc<Self> {
        let settings = manifest.alerting.clone();
        let channel = |c: &Option<ChannelSettings>| {
            c.as_ref()
                .and_then(|c| rules::check_url(&c.url).ok().map(|u| (c.clone(), u)))
        };
        let primary = channel(&settings.primary);
        let secondary = channel(&settings.secondary);
        let webhook = primary.is_some().then(|| {
            let roots = manifest.extra_roots().unwrap_or_else(|e| {
                tracing::warn!("alert webhooks: {e}");
                Vec::new()
            });
            Webhook::with_roots(&roots)
        });
        Arc::new(Alerts {
            rules: manifest.alerts.clone(),
            primary,
            secondary,
            webhook,
            settings,
            board: Mutex::new(Board::default()),
            pending: AtomicUsize::new(0),
            dropped: AtomicU64::new(0),
            delivering: Arc::new(Semaphore::new(DELIVERING_AT_ONCE)),
            evaluations: AtomicU64::new(0),
        })
    }

    /// The rules.
    pub fn rules(&self) -> &[AlertRule] {
        &self.rules
    }

    /// The alerts firing and the recently resolved ones, with their deliveries.
    pub fn view(&self) -> AlertsView {
        let board = self.board.lock().expect("alerts lock");
        let mut alerts: Vec<AlertView> = board
            .alerts
            .values()
            .rev()
            .filter(|a| a.state == AlertState::Firing)
            .cloned()
            .collect();
        alerts.extend(
            board
                .alerts
                .values()
                .rev()
                .filter(|a| a.state == AlertState::Resolved)
                .cloned(),
        );
        for a in &mut alerts {
            // Firing before resolved, primary before secondary (stable: in order of creation).
            a.deliveries.sort_by_key(|d| {
                (
                    d.event == AlertState::Resolved,
                    d.channel == ChannelName::Secondary,
                )
            });
        }
        let mut channels = Vec::new();
        if self.primary.is_some() {
            channels.push(ChannelName::Primary);
        }
        if self.secondary.is_some() {
            channels.push(ChannelName::Secondary);
        }
        AlertsView {
            alerts,
            rules: self.rules.len(),
            channels,
            pending_deliveries: self.pending.load(Ordering::Relaxed),
            dropped_deliveries: self.dropped.load(Ordering::Relaxed),
            evaluations: self.evaluations.load(Ordering::Relaxed),
            now_ms: crate::platform::now_ms(),
        }
    }

    /// Applies one evaluation's events: new alerts, updated readings, resolutions, and their
    /// notices.
    pub fn apply(self: &Arc<Self>, events: Vec<Event>, now_ms: u64) {
        self.evaluations.fetch_add(1, Ordering::Relaxed);
        let mut board = self.board.lock().expect("alerts lock");
        for e in events {
            let key = (e.rule, e.function.clone());
            let Some(rule) = self.rules.get(e.rule) else {
                continue;
            };
            match e.change {
                Change::Fired => {
                    board.next_id += 1;
                    let id = board.next_id;
                    tracing::warn!(
                        rule = rule.name,
                        kind = %rule.kind,
                        function = e.function.as_deref().unwrap_or("-"),
                        "alert firing: {}",
                        e.reading.message
                    );
                    board.alerts.insert(
                        id,
                        AlertView {
                            id,
                            rule: rule.name.clone(),
                            kind: rule.kind,
                            function: e.function.clone(),
                            state: AlertState::Firing,
                            since_ms: now_ms,
                            holding_since_ms: e.holding_since_ms,
                            fired_ms: now_ms,
                            resolved_ms: None,
                            value: e.reading.value,
                            threshold: e.reading.threshold,
                            for_s: rule.for_s,
                            message: rules::cut(e.reading.message),
                            deliveries: Vec::new(),
                        },
                    );
                    board.active.insert(key, id);
                    self.enqueue(&mut board, id, now_ms);
                }
                Change::Firing => {
                    if let Some(id) = board.active.get(&key).copied()
                        && let Some(a) = board.alerts.get_mut(&id)
                    {
                        a.value = e.reading.value;
                        a.message = rules::cut(e.reading.message);
                    }
                }
                Change::Resolved => {
                    let Some(id) = board.active.remove(&key) else {
                        continue;
                    };
                    if let Some(a) = board.alerts.get_mut(&id) {
                        tracing::info!(
                            rule = a.rule,
                            function = a.function.as_deref().unwrap_or("-"),
                            "alert resolved: {}",
                            e.reading.message
                        );
                        a.state = AlertState::Resolved;
                        a.since_ms = now_ms;
                        a.resolved_ms = Some(now_ms);
                        a.value = e.reading.value;
                        a.message = rules::cut(e.reading.message);
                    }
                    self.enqueue(&mut board, id, now_ms);
                }
            }
        }
        // Keep the most recent resolved alerts only.
        let resolved: Vec<u64> = board
            .alerts
            .values()
            .filter(|a| a.state == AlertState::Resolved)
            .map(|a| a.id)
            .collect();
        if resolved.len() > MAX_RESOLVED {
            for id in &resolved[..resolved.len() - MAX_RESOLVED] {
                board.alerts.remove(id);
                board.chains.remove(id);
            }
        }
    }

    /// Queues the notice of alert `id`'s current state for delivery (nothing without a primary).
    fn enqueue(self: &Arc<Self>, board: &mut Board, id: u64, now_ms: u64) {
        let (Some(webhook), Some(_)) = (&self.webhook, &self.primary) else {
            return;
        };
        let Some(a) = board.alerts.get_mut(&id) else {
            return;
        };
        let notice = Notice {
            id,
            rule: a.rule.clone(),
            kind: a.kind,
            function: a.function.clone(),
            state: a.state,
            value: a.value,
            threshold: a.threshold,
            message: a.message.clone(),
            fired_ms: a.fired_ms,
            resolved_ms: a.resolved_ms,
        };
        let entry = |state, last_error| DeliveryView {
            channel: ChannelName::Primary,
            event: notice.state,
            state,
            attempts: 0,
            last_error,
            updated_ms: now_ms,
        };
        if self.pending.fetch_add(1, Ordering::AcqRel) >= MAX_PENDING {
            self.pending.fetch_sub(1, Ordering::AcqRel);
            self.dropped.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                rule = a.rule,
                "alert notice dropped: {MAX_PENDING} notices are already waiting for delivery"
            );
            a.deliveries.push(entry(
                DeliveryState::Failed,
                Some(format!(
                    "dropped: {MAX_PENDING} notices were already waiting for delivery"
                )),
            ));
            return;
        }
        a.deliveries.push(entry(DeliveryState::Pending, None));
        let index = a.deliveries.len() - 1;
        let before = board.chains.remove(&id);
        let (me, webhook) = (self.clone(), webhook.clone());
        let task = tokio::spawn(async move {
            if let Some(b) = before {
                let _ = b.await;
            }
            me.deliver(&webhook, id, index, notice).await;
            me.pending.fetch_sub(1, Ordering::AcqRel);
        });
        board.chains.insert(id, task);
    }

    /// Delivers a notice: the primary with its retries, then, if it failed, the secondary.
    async fn deliver(&self, webhook: &Webhook, id: u64, index: usize, notice: Notice) {
        let Ok(_slot) = self.delivering.acquire().await else {
            return;
        };
        let Some((primary, uri)) = &self.primary else {
            return;
        };
        let failed = match self
            .attempts(
                webhook,
                id,
                index,
                ChannelName::Primary,
                primary,
                uri,
                &notice,
                None,
            )
            .await
        {
            Ok(()) => return,
            Err(e) => e,
        };
        let Some((secondary, uri)) = &self.secondary else {
            return;
        };
        let index = {
            let mut board = self.board.lock().expect("alerts lock");
            let Some(a) = board.alerts.get_mut(&id) else {
                return;
            };
            a.deliveries.push(DeliveryView {
                channel: ChannelName::Secondary,
                event: notice.state,
                state: DeliveryState::Pending,
                attempts: 0,
                last_error: None,
                updated_ms: crate::platform::now_ms(),
            });
            a.deliveries.len() - 1
        };
        let _ = self
            .attempts(
                webhook,
                id,
                index,
                ChannelName::Secondary,
                secondary,
                uri,
                &notice,
                Some(&failed),
            )
            .await;
    }

    /// Attempts one channel up to `1 + retries` times; the error of the last attempt (with the
    /// count) when every one failed.
    #[allow(clippy::too_many_arguments)]
    async fn attempts(
        &self,
        webhook: &Webhook,
        id: u64,
        index: usize,
        channel: ChannelName,
        settings: &ChannelSettings,
        uri: &hyper::Uri,
        notice: &Notice,
        primary_failure: Option<&str>,
    ) -> std::result::Result<(), String> {
        let timeout = Duration::from_millis(self.settings.timeout_ms);
        let tries = 1 + self.settings.retries;
        let mut last = String::new();
        for attempt in 1..=tries {
            if attempt > 1 {
                tokio::time::sleep(deliver::retry_wait(self.settings.backoff_ms, attempt - 1))
                    .await;
            }
            let body = deliver::body(
                settings.format,
                notice,
                channel,
                primary_failure,
                crate::platform::now_ms(),
            );
            let r = webhook.post(uri, body, timeout).await;
            let state = match (&r, attempt == tries) {
                (Ok(()), _) => DeliveryState::Delivered,
                (Err(_), false) => DeliveryState::Retrying,
                (Err(_), true) => DeliveryState::Failed,
            };
            if let Err(e) = &r {
                last = e.clone();
            }
            self.update(id, index, |d| {
                d.attempts = attempt;
                d.state = state;
                if let Err(e) = &r {
                    d.last_error = Some(e.clone());
                }
            });
            match r {
                Ok(()) => {
                    tracing::info!(
                        rule = notice.rule,
                        channel = ?channel,
                        attempts = attempt,
                        "alert notice ({:?}) delivered",
                        notice.state
                    );
                    return Ok(());
                }
                Err(e) if attempt < tries => tracing::debug!(
                    rule = notice.rule,
                    channel = ?channel,
                    attempt,
                    of = tries,
                    "alert notice ({:?}) not delivered, retrying: {e}",
                    notice.state
                ),
                Err(e) => tracing::warn!(
                    rule = notice.rule,
                    channel = ?channel,
                    attempts = tries,
                    "alert notice ({:?}) not delivered: {e}",
                    notice.state
                ),
            }
        }
        Err(format!("{last} (after {tries} attempt(s))"))
    }

    fn update(&self, id: u64, index: usize, f: impl FnOnce(&mut DeliveryView)) {
        let mut board = self.board.lock().expect("alerts lock");
        if let Some(d) = board
            .alerts
            .get_mut(&id)
            .and_then(|a| a.deliveries.get_mut(index))
        {
            f(d);
            d.updated_ms = crate::platform::now_ms();
        }
    }
}

/// Starts evaluating `ingress`'s platform's rules every [`EVAL_EVERY`], until the ingress is
/// dropped. Nothing runs when the manifest has no rules.
pub fn start(ingress: &Arc<Ingress>) {
    let alerts = ingress.alerts.clone();
    if alerts.rules.is_empty() {
        return;
    }
    let functions: Vec<String> = ingress
        .platform
        .manifest()
        .functions
        .keys()
        .cloned()
        .collect();
    let mut engine = Engine::new(alerts.rules.clone(), functions);
    let weak: Weak<Ingress> = Arc::downgrade(ingress);
    tokio::spawn(async move {
        // Milliseconds on the wall clock at start, then monotonic.
        let (wall0, t0) = (crate::platform::now_ms(), tokio::time::Instant::now());
        let mut last_calls = None;
        let mut tick = tokio::time::interval(EVAL_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(ing) = weak.upgrade() else { break };
            let now_ms = wall0 + t0.elapsed().as_millis() as u64;
            let inputs = gather(&ing, &engine, now_ms, &mut last_calls).await;
            drop(ing);
            let events = engine.evaluate(&inputs);
            alerts.apply(events, now_ms);
        }
    });
}

/// Reads the evaluator's inputs from the platform and the ingress (see the module's doc).
/// `last_calls` carries the cache's (calls, errors) counters from one evaluation to the next.
pub async fn gather(
    ing: &Ingress,
    engine: &Engine,
    now_ms: u64,
    last_calls: &mut Option<(u64, u64)>,
) -> Inputs {
    let p: &Platform = &ing.platform;
    let functions = if engine.needs_functions() {
        match tokio::time::timeout(READ_TIMEOUT, p.status()).await {
            Ok(Ok(st)) => Some(
                st.functions
                    .iter()
                    .map(|f| {
                        (
                            f.name.clone(),
                            FunctionInputs {
                                oldest_age_ms: f.oldest_age_ms,
                                dlq: f.dlq,
                                processed: f.processed,
                                failed: f.failed,
                            },
                        )
                    })
                    .collect(),
            ),
            Ok(Err(e)) => {
                tracing::debug!("alerts: queue figures unavailable: {e}");
                None
            }
            Err(_) => {
                tracing::debug!("alerts: queue figures took over {READ_TIMEOUT:?}");
                None
            }
        }
    } else {
        None
    };
    let cache = p.cache_metrics();
    let store_answers = if engine.needs_store() {
        let calls = cache.store_reads + cache.store_writes;
        let errors = cache.store_errors;
        let since = last_calls.replace((calls, errors));
        match since {
            Some((c0, e0)) if calls > c0 => Some(errors.saturating_sub(e0) < calls - c0),
            _ => {
                // No call went through the cache since the last look: ask the store itself.
                let probe = p.raw_store().get(PROBE_NS, PROBE_KEY);
                Some(matches!(
                    tokio::time::timeout(READ_TIMEOUT, probe).await,
                    Ok(Ok(_))
                ))
            }
        }
    } else {
        None
    };
    Inputs {
        now_ms,
        functions,
        breaker: Some(cache.breaker),
        blocked_sources: Some(ing.blocker.list().into_iter().map(|b| b.source).collect()),
        store_answers,
    }
}

/// `levee alerts`: a table of `GET /v1/alerts`'s answer.
pub fn render_table(v: &serde_json::Value) -> String {
    let mut s = String::new();
    let alerts = v["alerts"].as_array().cloned().unwrap_or_default();
    let now = v["now_ms"].as_u64().unwrap_or(0);
    if alerts.is_empty() {
        let _ = writeln!(
            s,
            "no alerts firing or recently resolved ({} rule(s), channels: {})",
            v["rules"].as_u64().unwrap_or(0),
            channels(v)
        );
        return s;
    }
    let _ = writeln!(
        s,
        "{:<9} {:<24} {:<18} {:<14} {:>10} {:>10} {:>9}  DELIVERIES",
        "STATE", "RULE", "KIND", "FUNCTION", "VALUE", "THRESHOLD", "SINCE"
    );
    for a in &alerts {
        let since = a["since_ms"]
            .as_u64()
            .map(|t| format!("{}s ago", now.saturating_sub(t) / 1000))
            .unwrap_or_default();
        let deliveries: Vec<String> = a["deliveries"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|d| {
                let mut t = format!(
                    "{} {} {} ({} attempt(s))",
                    d["event"].as_str().unwrap_or("?"),
                    d["channel"].as_str().unwrap_or("?"),
                    d["state"].as_str().unwrap_or("?"),
                    d["attempts"].as_u64().unwrap_or(0)
                );
                if let Some(e) = d["last_error"].as_str()
                    && d["state"] != "delivered"
                {
                    let _ = write!(t, ": {e}");
                }
                t
            })
            .collect();
        let _ = writeln!(
            s,
            "{:<9} {:<24} {:<18} {:<14} {:>10} {:>10} {:>9}  {}",
            a["state"].as_str().unwrap_or(""),
            a["rule"].as_str().unwrap_or(""),
            a["kind"].as_str().unwrap_or(""),
            a["function"].as_str().unwrap_or("-"),
            a["value"].as_f64().map_or("-".into(), |x| format!("{x}")),
            a["threshold"]
                .as_f64()
                .map_or("-".into(), |x| format!("{x}")),
            since,
            if deliveries.is_empty() {
                "none (no channel)".to_string()
            } else {
                deliveries.join("; ")
            }
        );
        let _ = writeln!(s, "          {}", a["message"].as_str().unwrap_or(""));
    }
    if v["dropped_deliveries"].as_u64().unwrap_or(0) > 0 {
        let _ = writeln!(
            s,
            "{} notice(s) dropped at the delivery queue's bound",
            v["dropped_deliveries"]
        );
    }
    s
}

fn channels(v: &serde_json::Value) -> String {
    let c: Vec<&str> = v["channels"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c.as_str())
        .collect();
    if c.is_empty() {
        "none".into()
    } else {
        c.join(", ")
    }
}

#[cfg(test)]
mod tests;
