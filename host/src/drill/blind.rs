//! `levee drill blind`: a queue backs up while the alerting path is half broken. The operators'
//! primary webhook is down; the alert must still reach them through the secondary, in time,
//! saying the primary failed, and the platform's own health and status routes must keep
//! answering (an incident where the platform went blind is one where nobody was told).
//!
//! The drill starts two webhooks on loopback: the primary on a port bound then closed (every
//! connection refused), the secondary a receiver answering 200. It runs the manifest's platform
//! with one rule, `oldest_age` on `inbound` (`--threshold`, `--for`), and no workers for
//! `inbound`, so the load it sends there backs up. Pass: nothing fired during the warm-up; the
//! secondary received the firing alert within `--for` plus 5 s of the condition starting to
//! hold (the first message's age crossing the threshold), told that the primary failed; and
//! `/healthz`, `/v1/status` and `/metrics` (when the route exists) answered every probe.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use tokio::sync::watch;
use tokio::time::Instant;

use super::{Common, Drill, Loopback, Outcome, Progress, backlog, peak_rss_mib, secs};
use crate::alerts::rules::{AlertKind, AlertRule, ChannelSettings, Format};
use crate::alerts::{AlertState, ChannelName, DeliveryState};
use crate::platform::StartOptions;
use crate::scaling::load::{MAX_DURATION, Sender};
use crate::{Error, Result};

/// The drill's name.
pub const NAME: &str = "blind";
/// The function whose queue backs up.
pub const ENTRY: &str = "inbound";
/// The rule the drill adds.
pub const RULE: &str = "blind-backlog";
/// Slack allowed beyond `--for` for the alert to reach the secondary.
pub const SLACK: Duration = Duration::from_secs(5);
/// How often each route is probed.
const PROBE_EVERY: Duration = Duration::from_millis(200);
/// A probe slower than this is a failure.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// How often sends are paced.
const STEP: Duration = Duration::from_millis(20);
/// Largest webhook body the receiver reads.
const MAX_HOOK_BODY: usize = 64 << 10;

/// A queue backs up while the primary alert webhook is down: the secondary must be told in time
/// and the platform's health and status routes must keep answering.
#[derive(Debug, clap::Args)]
#[command(
    long_about = "A queue backs up while the primary alert webhook is down: the secondary must \
be told in time and the platform's health and status routes must keep answering.\n\n\
Starts two webhooks on loopback (the primary on a closed port, the secondary a receiver) and the \
manifest's platform in this process (embedded backend, fresh data directory, HTTP API on \
127.0.0.1) with one alert rule, oldest_age on inbound (--threshold, --for), and no workers for \
inbound. After --warmup with no load, it sends inbound messages at --rate; they back up. It \
probes /healthz, /v1/status and /metrics (when the route exists) every 200 ms throughout, and \
goes on for --after once the secondary has the alert.\n\n\
Pass: no alert during the warm-up; the secondary received the firing alert within --for + 5 s of \
the condition starting to hold, told that the primary failed; every probe answered 2xx within \
2 s. --drain-timeout does not apply (nothing drains). Exit code 0 on pass, 1 on fail."
)]
pub struct Blind {
    /// The rule's `threshold_s`: the oldest message's age above which the condition holds.
    #[arg(long, default_value = "5s", value_parser = super::parse_duration, value_name = "DURATION")]
    pub threshold: Duration,
    /// The rule's `for_s`: how long the condition must hold before the alert fires.
    #[arg(long = "for", default_value = "10s", value_parser = super::parse_duration, value_name = "DURATION")]
    pub for_: Duration,
    /// How long the drill goes on (load and probes) once the secondary has the alert.
    #[arg(long, default_value = "5s", value_parser = super::parse_duration, value_name = "DURATION")]
    pub after: Duration,
    /// `[alerting] retries` for both channels.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(0..=10))]
    pub retries: u32,
    #[command(flatten)]
    pub common: Common,
}

/// One probed route's figures.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ProbeFigures {
    pub probes: u64,
    pub failures: u64,
    pub max_ms: f64,
    /// The first failure, if any.
    pub first_error: Option<String>,
}

/// What the drill measured (the JSON line's fields after `drill`, `verdict` and `reasons`).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Figures {
    pub rate: f64,
    pub warmup_s: f64,
    pub threshold_s: f64,
    pub for_s: f64,
    pub after_s: f64,
    pub retries: u32,
    /// Messages the API answered 202 for (all wait in `inbound`'s queue).
    pub accepted: u64,
    pub send_errors: u64,
    pub peak_backlog: u64,
    /// Alerts seen firing, or notices received by the secondary, during the warm-up.
    pub alerts_during_warmup: u64,
    /// From the load's start to the condition holding: the threshold (the first message is
    /// sent at the start).
    pub condition_after_s: f64,
    /// From the condition holding to the alert firing on the platform, s.
    pub fired_after_s: Option<f64>,
    /// From the condition holding to the secondary receiving the firing notice, s.
    pub secondary_after_s: Option<f64>,
    /// The verdict's bound on `secondary_after_s`: `for_s` + 5 s.
    pub deadline_s: f64,
    /// Whether the notice the secondary received says the primary failed.
    pub secondary_told_primary_failed: bool,
    /// What it said the primary failed with.
    pub primary_error: Option<String>,
    /// The primary's delivery of the firing notice, from `GET /v1/alerts`.
    pub primary_state: Option<String>,
    pub primary_attempts: u32,
    pub secondary_state: Option<String>,
    pub secondary_attempts: u32,
    /// Requests the secondary received in all.
    pub secondary_requests: u64,
    /// Per probed route (`healthz`, `status`, `metrics`).
    pub probes: BTreeMap<String, ProbeFigures>,
    /// Whether `/metrics` exists on this build (it is probed only then).
    pub metrics_route: bool,
    pub peak_rss_mib: Option<f64>,
    pub data_dir: Option<String>,
}

/// Why the figures fail the drill; empty when they pass.
pub fn reasons(f: &Figures) -> Vec<String> {
    let mut r = Vec::new();
    if f.accepted == 0 {
        r.push("no message was accepted".to_string());
    }
    if f.alerts_during_warmup > 0 {
        r.push(format!(
            "{} alert(s) during the warm-up, with nothing backed up",
            f.alerts_during_warmup
        ));
    }
    match f.secondary_after_s {
        None => r.push(format!(
            "the secondary never received the firing alert (primary: {}, {} attempt(s); secondary: {})",
            f.primary_state.as_deref().unwrap_or("no delivery"),
            f.primary_attempts,
            f.secondary_state.as_deref().unwrap_or("no delivery")
        )),
        Some(s) if s > f.deadline_s => r.push(format!(
            "the secondary received the alert {s:.1} s after the condition held, past for_s + 5 s = {} s",
            f.deadline_s
        )),
        Some(_) if !f.secondary_told_primary_failed => {
            r.push("the secondary's notice did not say the primary failed".to_string())
        }
        Some(_) => {}
    }
    for (route, p) in &f.probes {
        if p.probes == 0 {
            r.push(format!("/{route} was never probed"));
        } else if p.failures > 0 {
            r.push(format!(
                "/{route} failed {} of {} probes ({})",
                p.failures,
                p.probes,
                p.first_error.as_deref().unwrap_or("?")
            ));
        }
    }
    r
}

/// A webhook receiver on loopback for drills and tests: answers every POST with `status`,
/// keeping each JSON body (at most 64 KiB) and when it came.
pub struct Hook {
    pub url: String,
    got: Arc<Mutex<Vec<(Instant, serde_json::Value)>>>,
    requests: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for Hook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hook").field("url", &self.url).finish()
    }
}

impl Hook {
    /// A receiver on `127.0.0.1` at a free port answering `status`.
    pub async fn start(status: u16) -> Result<Self> {
        let (listener, addr) = crate::ingress::bind("127.0.0.1:0").await?;
        let status = StatusCode::from_u16(status)
            .map_err(|e| Error::Invalid(format!("status {status}: {e}")))?;
        let got = Arc::new(Mutex::new(Vec::new()));
        let requests = Arc::new(AtomicU64::new(0));
        let (g, n) = (got.clone(), requests.clone());
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (g, n) = (g.clone(), n.clone());
                tokio::spawn(async move {
                    let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                        let (g, n) = (g.clone(), n.clone());
                        async move {
                            n.fetch_add(1, Ordering::Relaxed);
                            let body = Limited::new(req.into_body(), MAX_HOOK_BODY)
                                .collect()
                                .await
                                .map(|b| b.to_bytes())
                                .unwrap_or_default();
                            let v = serde_json::from_slice(&body).unwrap_or_else(|_| {
                                serde_json::Value::String(
                                    String::from_utf8_lossy(&body).into_owned(),
                                )
                            });
                            g.lock().expect("hook lock").push((Instant::now(), v));
                            Ok::<_, std::convert::Infallible>(
                                Response::builder()
                                    .status(status)
                                    .body(Full::new(Bytes::new()))
                                    .expect("static response"),
                            )
                        }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Ok(Hook {
            url: format!("http://{addr}/hook"),
            got,
            requests,
            task,
        })
    }

    /// The bodies received so far, with when each came.
    pub fn received(&self) -> Vec<(Instant, serde_json::Value)> {
        self.got.lock().expect("hook lock").clone()
    }

    /// Requests received so far.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }
}

impl Drop for Hook {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A URL on loopback where nothing listens (a port bound, then closed).
pub fn closed_url() -> Result<String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")
        .map_err(|e| Error::io("binding a loopback port", e))?;
    let addr = l
        .local_addr()
        .map_err(|e| Error::io("reading a loopback port", e))?;
    drop(l);
    Ok(format!("http://{addr}/hook"))
}

#[derive(Default)]
struct ProbeState {
    routes: BTreeMap<String, ProbeFigures>,
    metrics_route: Option<bool>,
}

/// Probes `/healthz`, `/v1/status` and `/metrics` every [`PROBE_EVERY`] until `stop`.
async fn probe(
    addr: String,
    key: String,
    state: Arc<Mutex<ProbeState>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(PROBE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => break,
        }
        let metrics = state.lock().expect("probe lock").metrics_route;
        let mut routes = vec![("healthz", "/healthz"), ("status", "/v1/status")];
        if metrics != Some(false) {
            routes.push(("metrics", "/metrics"));
        }
        let calls = routes.iter().map(|(name, path)| {
            let (addr, key) = (addr.clone(), key.clone());
            async move {
                let start = Instant::now();
                let r = tokio::time::timeout(
                    PROBE_TIMEOUT,
                    crate::client::call(&addr, Some(&key), Method::GET, path, vec![]),
                )
                .await;
                let ms = start.elapsed().as_secs_f64() * 1000.0;
                let outcome = match r {
                    Err(_) => Err(format!("no answer within {} s", PROBE_TIMEOUT.as_secs())),
                    Ok(Err(e)) => Err(e.to_string()),
                    Ok(Ok(a)) if a.status.is_success() => Ok(a.status),
                    Ok(Ok(a)) => Err(format!("HTTP {}", a.status.as_u16())),
                };
                (*name, ms, outcome)
            }
        });
        let results = futures::future::join_all(calls).await;
        let mut st = state.lock().expect("probe lock");
        for (name, ms, outcome) in results {
            if name == "metrics" && st.metrics_route.is_none() {
                // The route exists unless the first answer is the API's 404 (no such route).
                let absent = matches!(&outcome, Err(e) if e == "HTTP 404");
                st.metrics_route = Some(!absent);
                if absent {
                    continue;
                }
            }
            let p = st.routes.entry(name.to_string()).or_default();
            p.probes += 1;
            p.max_ms = p.max_ms.max((ms * 10.0).round() / 10.0);
            if let Err(e) = outcome {
                p.failures += 1;
                p.first_error.get_or_insert(e);
            }
        }
    }
}

impl Blind {
    fn validate(&self) -> Result<()> {
        for (flag, d, min) in [
            ("--threshold", self.threshold, Duration::from_millis(100)),
            ("--for", self.for_, Duration::ZERO),
            ("--after", self.after, Duration::ZERO),
        ] {
            if d < min || d > MAX_DURATION {
                return Err(Error::Invalid(format!(
                    "{flag} must be {} to {}, got {}",
                    secs(min),
                    secs(MAX_DURATION),
                    secs(d)
                )));
            }
        }
        Ok(())
    }
}

#[async_trait]
impl Drill for Blind {
    fn common(&self) -> &Common {
        &self.common
    }

    async fn run(&self, progress: &mut Progress) -> Result<Outcome> {
        self.validate()?;
        let c = &self.common;
        let mut manifest = c.load_manifest()?;
        if !manifest.functions.get(ENTRY).is_some_and(|s| s.public) {
            return Err(Error::Invalid(format!(
                "{NAME} backs up the queue of `{ENTRY}`: it must be a public function of the manifest"
            )));
        }
        let secondary = Hook::start(200).await?;
        let primary_url = closed_url()?;
        manifest.alerts = vec![AlertRule {
            name: RULE.into(),
            kind: AlertKind::OldestAge,
            function: Some(ENTRY.into()),
            threshold_s: Some(self.threshold.as_secs_f64()),
            threshold: None,
            window_s: None,
            for_s: self.for_.as_secs_f64(),
        }];
        manifest.alerting.primary = Some(ChannelSettings {
            url: primary_url.clone(),
            format: Format::Json,
        });
        manifest.alerting.secondary = Some(ChannelSettings {
            url: secondary.url.clone(),
            format: Format::Json,
        });
        manifest.alerting.retries = self.retries;
        manifest.alerting.backoff_ms = 200;
        manifest.alerting.timeout_ms = 1000;
        crate::alerts::rules::validate(&manifest.alerts, &manifest.alerting, &manifest.functions)?;
        let others: Vec<String> = manifest
            .functions
            .keys()
            .filter(|f| *f != ENTRY)
            .cloned()
            .collect();
        let lb = Loopback::start(
            NAME,
            manifest,
            c,
            StartOptions {
                only: Some(others),
                ..Default::default()
            },
        )
        .await?;
        progress.note(&format!(
            "{NAME}: platform on http://{} (data in {}), no workers for {ENTRY}; alerts to primary {primary_url} (closed) then secondary {}",
            lb.addr,
            lb.data_dir().display(),
            secondary.url
        ));
        let probes = Arc::new(Mutex::new(ProbeState::default()));
        let (stop_probes, stop_rx) = watch::channel(false);
        let prober = tokio::spawn(probe(
            lb.addr.to_string(),
            lb.admin_key.clone(),
            probes.clone(),
            stop_rx,
        ));
        let alerts = lb.ingress.alerts.clone();
        let firing = || {
            alerts
                .view()
                .alerts
                .iter()
                .filter(|a| a.state == AlertState::Firing)
                .count() as u64
        };

        // Warm-up: nothing backed up, nothing may fire.
        progress.restart_clock();
        let warm_end = Instant::now() + c.warmup;
        let mut during_warmup = 0;
        while Instant::now() < warm_end {
            tokio::time::sleep(Duration::from_millis(100)).await;
            during_warmup = during_warmup.max(firing());
            let probed: u64 = probes
                .lock()
                .expect("probe lock")
                .routes
                .values()
                .map(|p| p.probes)
                .sum();
            progress.show(
                "warm-up",
                &format!("no load; alerts firing {during_warmup}; probes {probed}"),
            );
        }
        during_warmup += secondary.requests();

        // The queue backs up.
        let mut sender = Sender::new(&lb.addr.to_string(), ENTRY).with_key(Some(&lb.admin_key));
        let start = Instant::now();
        let condition_at = start + self.threshold;
        let give_up = condition_at + self.for_ + SLACK + self.after;
        let mut fired_at = None;
        let mut received_at = None;
        let mut peak_backlog = 0;
        let mut next_sample = start;
        let mut tick = tokio::time::interval(STEP);
        loop {
            tick.tick().await;
            let now = Instant::now();
            let t = now - start;
            if received_at.is_some_and(|r: Instant| now >= r + self.after) || now >= give_up {
                break;
            }
            sender.send_up_to((c.rate * t.as_secs_f64()).floor().max(1.0) as u64);
            if fired_at.is_none() && firing() > 0 {
                fired_at = Some(now);
            }
            if received_at.is_none() {
                received_at = secondary
                    .received()
                    .iter()
                    .find(|(_, v)| v["state"] == "firing" && v["rule"] == RULE)
                    .map(|(at, _)| *at);
            }
            if now >= next_sample {
                next_sample += Duration::from_secs(1);
                let (queued, oldest) = match lb.platform.status().await {
                    Ok(st) => {
                        peak_backlog = peak_backlog.max(backlog(&st));
                        let oldest = st
                            .functions
                            .iter()
                            .find(|f| f.name == ENTRY)
                            .and_then(|f| f.oldest_age_ms)
                            .map_or(0.0, |ms| ms as f64 / 1000.0);
                        (backlog(&st), oldest)
                    }
                    Err(_) => (0, 0.0),
                };
                let failures: u64 = probes
                    .lock()
                    .expect("probe lock")
                    .routes
                    .values()
                    .map(|p| p.failures)
                    .sum();
                let phase = if received_at.is_some() {
                    "alerted"
                } else if fired_at.is_some() {
                    "firing"
                } else if now >= condition_at {
                    "holding"
                } else {
                    "backing"
                };
                progress.show(
                    phase,
                    &format!(
                        "accepted {:>6}  queued {queued:>6}  oldest {oldest:>5.1} s  secondary got {}  probe failures {failures}",
                        sender.counts().accepted,
                        secondary.requests()
                    ),
                );
            }
        }
        let sent = sender.finish().await;
        let _ = stop_probes.send(true);
        let _ = prober.await;
        progress.finish();

        let view = alerts.view();
        let alert = view.alerts.iter().find(|a| a.rule == RULE);
        let delivery = |ch: ChannelName| {
            alert.and_then(|a| {
                a.deliveries
                    .iter()
                    .find(|d| d.channel == ch && d.event == AlertState::Firing)
            })
        };
        let word = |s: DeliveryState| {
            serde_json::to_value(s)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
        };
        let first = secondary
            .received()
            .into_iter()
            .find(|(_, v)| v["state"] == "firing" && v["rule"] == RULE)
            .map(|(_, v)| v);
        let since = |at: Option<Instant>| {
            at.map(|at| {
                let s = at.saturating_duration_since(condition_at).as_secs_f64();
                (s * 1000.0).round() / 1000.0
            })
        };
        let probe_state = std::mem::take(&mut *probes.lock().expect("probe lock"));
        let mut f = Figures {
            rate: c.rate,
            warmup_s: c.warmup.as_secs_f64(),
            threshold_s: self.threshold.as_secs_f64(),
            for_s: self.for_.as_secs_f64(),
            after_s: self.after.as_secs_f64(),
            retries: self.retries,
            accepted: sent.accepted,
            send_errors: sent.errors + sent.skipped,
            peak_backlog,
            alerts_during_warmup: during_warmup,
            condition_after_s: self.threshold.as_secs_f64(),
            fired_after_s: since(fired_at),
            secondary_after_s: since(received_at),
            deadline_s: (self.for_ + SLACK).as_secs_f64(),
            secondary_told_primary_failed: first
                .as_ref()
                .is_some_and(|v| v["primary_failed"] == true),
            primary_error: first
                .as_ref()
                .and_then(|v| v["primary_error"].as_str().map(str::to_string)),
            primary_state: delivery(ChannelName::Primary).and_then(|d| word(d.state)),
            primary_attempts: delivery(ChannelName::Primary).map_or(0, |d| d.attempts),
            secondary_state: delivery(ChannelName::Secondary).and_then(|d| word(d.state)),
            secondary_attempts: delivery(ChannelName::Secondary).map_or(0, |d| d.attempts),
            secondary_requests: secondary.requests(),
            metrics_route: probe_state.metrics_route == Some(true),
            probes: probe_state.routes,
            peak_rss_mib: None,
            data_dir: None,
        };
        f.data_dir = lb.stop().await.map(|p| p.display().to_string());
        f.peak_rss_mib = peak_rss_mib().map(|m| (m * 10.0).round() / 10.0);
        let reasons = reasons(&f);
        Outcome::new(NAME, headline(&f), lines(&f), reasons, &f)
    }
}

fn headline(f: &Figures) -> String {
    format!(
        "{} warm-up, then {} msg/s to {ENTRY} with nothing consuming it; rule oldest_age > {} for {}; \
         primary webhook down, secondary up ({} retries each)",
        secs(Duration::from_secs_f64(f.warmup_s)),
        f.rate,
        secs(Duration::from_secs_f64(f.threshold_s)),
        secs(Duration::from_secs_f64(f.for_s)),
        f.retries
    )
}

fn lines(f: &Figures) -> Vec<(String, String)> {
    let after = |v: Option<f64>| v.map_or("never".to_string(), |s| format!("{s:.1} s"));
    let mut v = vec![
        (
            "messages accepted".to_string(),
            format!(
                "{} (202 from the API; {} errors or skipped); peak backlog {}",
                f.accepted, f.send_errors, f.peak_backlog
            ),
        ),
        (
            "alerts during warm-up".to_string(),
            f.alerts_during_warmup.to_string(),
        ),
        (
            "condition held from".to_string(),
            format!("{} s after the load started", f.condition_after_s),
        ),
        (
            "alert fired".to_string(),
            format!("{} after the condition held", after(f.fired_after_s)),
        ),
        (
            "secondary received it".to_string(),
            format!(
                "{} after the condition held (bound: for {} s + 5 s = {} s); told the primary failed: {}",
                after(f.secondary_after_s),
                f.for_s,
                f.deadline_s,
                if f.secondary_told_primary_failed {
                    "yes"
                } else {
                    "no"
                }
            ),
        ),
        (
            "primary delivery".to_string(),
            format!(
                "{} after {} attempt(s) ({}); secondary {} after {}",
                f.primary_state.as_deref().unwrap_or("none"),
                f.primary_attempts,
                f.primary_error.as_deref().unwrap_or("-"),
                f.secondary_state.as_deref().unwrap_or("none"),
                f.secondary_attempts
            ),
        ),
    ];
    for (route, p) in &f.probes {
        v.push((
            format!("probes /{route}"),
            format!(
                "{} probes, {} failed, slowest {:.1} ms",
                p.probes, p.failures, p.max_ms
            ),
        ));
    }
    if !f.metrics_route {
        v.push((
            "probes /metrics".to_string(),
            "not probed: no such route on this build".to_string(),
        ));
    }
    v.push((
        "peak RSS".to_string(),
        f.peak_rss_mib
            .map_or("unknown (no /proc)".into(), |m| format!("{m:.1} MiB")),
    ));
    if let Some(dir) = &f.data_dir {
        v.push(("data kept in".to_string(), dir.clone()));
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn passing() -> Figures {
        Figures {
            accepted: 100,
            for_s: 10.0,
            deadline_s: 15.0,
            secondary_after_s: Some(11.2),
            secondary_told_primary_failed: true,
            probes: BTreeMap::from([
                (
                    "healthz".to_string(),
                    ProbeFigures {
                        probes: 50,
                        ..Default::default()
                    },
                ),
                (
                    "status".to_string(),
                    ProbeFigures {
                        probes: 50,
                        ..Default::default()
                    },
                ),
            ]),
            ..Default::default()
        }
    }

    #[test]
    fn a_timely_alert_with_every_probe_answered_passes() {
        assert_eq!(reasons(&passing()), Vec::<String>::new());
    }

    #[test]
    fn each_broken_promise_is_a_reason() {
        let mut f = passing();
        f.secondary_after_s = Some(15.5);
        f.alerts_during_warmup = 1;
        f.probes.get_mut("status").unwrap().failures = 2;
        f.probes.get_mut("status").unwrap().first_error = Some("HTTP 503".into());
        let r = reasons(&f);
        assert_eq!(r.len(), 3, "{r:?}");
        assert!(r[0].contains("warm-up"), "{r:?}");
        assert!(r[1].contains("15.5 s") && r[1].contains("15 s"), "{r:?}");
        assert!(
            r[2].contains("/status failed 2 of 50") && r[2].contains("503"),
            "{r:?}"
        );
        let mut f = passing();
        f.secondary_after_s = None;
        assert!(reasons(&f)[0].contains("never received"));
        let mut f = passing();
        f.secondary_told_primary_failed = false;
        assert!(reasons(&f)[0].contains("did not say the primary failed"));
    }

    #[test]
    fn the_report_names_every_figure() {
        let text: String = lines(&passing())
            .iter()
            .map(|(l, v)| format!("{l}: {v}\n"))
            .collect();
        for want in [
            "secondary received it: 11.2 s after the condition held (bound: for 10 s + 5 s = 15 s); told the primary failed: yes",
            "probes /healthz: 50 probes, 0 failed",
            "probes /metrics: not probed",
            "alerts during warm-up: 0",
        ] {
            assert!(text.contains(want), "{want} in\n{text}");
        }
    }
}
