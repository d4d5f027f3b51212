//! `levee drill flood`: one client's SDK stuck in a loop floods the API, as in the April 2020
//! incident (seed: traffic orders of magnitude above peak from one client took chat, knowledge
//! base and login down together for an hour).
//!
//! Normal clients send a steady mix to every ingress group of the sample (chat: messages to
//! `inbound` from four sources; events: delivery events to `events` from two; ops: status reads).
//! After `--warmup`, one chat source sends at `--factor` × its own rate for `--flood-for`. Each
//! request's latency is measured by the client (a keep-alive pool, as real SDKs use). The drill
//! runs protected (the manifest's ingress) and, with `--protections both` (the default), again
//! with the protections off, so the difference is measured in one run. It passes when, protected,
//! the flooding source was blocked within 2 s, the other groups' error rate stayed under 1 % and
//! their p99 under twice its value before the flood plus 50 ms.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Serialize;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::{Common, Drill, Loopback, Outcome, Progress, rss_mib, secs};
use crate::platform::StartOptions;
use crate::scaling::load::{MAX_DURATION, message};
use crate::{Error, Result};

pub const NAME: &str = "flood";
/// Requests of one normal source in flight at once (beyond: counted as an error, not queued).
const NORMAL_IN_FLIGHT: usize = 64;
/// Requests of the flooding source in flight at once.
const FLOOD_IN_FLIGHT: usize = 256;
/// A request slower than this is an error.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// The blocking deadline of the verdict.
const BLOCK_WITHIN: Duration = Duration::from_secs(2);

/// One client's SDK floods the API; the other groups must not notice.
#[derive(Debug, clap::Args)]
#[command(
    long_about = "One client's SDK floods the API; the other groups must not notice.\n\n\
Starts the manifest's platform in this process (embedded backend, fresh data directory, HTTP API \
on 127.0.0.1), creates a key per group, and sends a steady mix at --rate over the groups chat \
(inbound), events and ops (status). After --warmup one chat source sends at --factor times its \
rate for --flood-for. Prints per group p50/p99 and error rate before and during the flood, the \
time to block the source and the memory, protected and (with --protections both) unprotected.\n\n\
Pass (protected run): the source blocked within 2 s; the other groups' error rate under 1 % and \
p99 during the flood under twice their p99 before plus 50 ms. Exit code 0 on pass, 1 on fail."
)]
pub struct Flood {
    /// How long the flood lasts.
    #[arg(long, default_value = "60s", value_parser = super::parse_duration, value_name = "DURATION")]
    pub flood_for: Duration,
    /// The flooding source's rate as a multiple of its normal one.
    #[arg(long, default_value_t = 100.0)]
    pub factor: f64,
    /// on: the manifest's protections; off: rate limits, bulkheads and blocking disabled (keys
    /// are still checked); both: on, then off, in one run.
    #[arg(long, default_value = "both", value_parser = ["on", "off", "both"])]
    pub protections: String,
    #[command(flatten)]
    pub common: Common,
}

/// One group's figures in one window.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Window {
    pub requests: u64,
    pub errors: u64,
    pub error_rate: f64,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

/// One run (protected or not).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Run {
    pub protections: bool,
    /// Per group (`chat` is the flooding source's group, other chat sources only), before and
    /// during the flood.
    pub before: BTreeMap<String, Window>,
    pub during: BTreeMap<String, Window>,
    /// Requests the flooding source sent and how they were answered.
    pub flood_sent: u64,
    pub flood_accepted: u64,
    pub flood_refused: u64,
    pub flood_errors: u64,
    /// From the flood's start to the source's block, s (absent: never blocked).
    pub time_to_block_s: Option<f64>,
    /// The process's largest resident memory seen during the run, MiB.
    pub peak_rss_mib: Option<f64>,
    /// Messages waiting at the end (what the flood left in the queues).
    pub backlog_at_end: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Figures {
    pub rate: f64,
    pub factor: f64,
    pub flood_rate: f64,
    pub warmup_s: f64,
    pub flood_s: f64,
    pub runs: Vec<Run>,
}

/// A normal source or the flood. Each client has its own loopback address (127.0.0.x), as
/// distinct clients have distinct addresses.
#[derive(Clone)]
struct Source {
    ip: std::net::Ipv4Addr,
    group: &'static str,
    client: String,
    key: String,
    method: hyper::Method,
    path: String,
    rate: f64,
    flood: bool,
}

#[derive(Default)]
struct Samples {
    /// (group, during flood) → latencies in µs and error count.
    lat: BTreeMap<(String, bool), (Vec<u32>, u64)>,
    flood: [u64; 4],
}

type Http = Client<HttpConnector, Full<Bytes>>;

/// A keep-alive client pool sending from `ip`.
fn client_from(ip: std::net::Ipv4Addr, max_idle: usize) -> Http {
    let mut connector = HttpConnector::new();
    connector.set_local_address(Some(ip.into()));
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(max_idle)
        .build(connector)
}

fn window(lat: &mut [u32], errors: u64) -> Window {
    lat.sort_unstable();
    let q = |p: f64| {
        (!lat.is_empty())
            .then(|| f64::from(lat[((lat.len() - 1) as f64 * p).round() as usize]) / 1000.0)
    };
    let requests = lat.len() as u64 + errors;
    Window {
        requests,
        errors,
        error_rate: if requests == 0 {
            0.0
        } else {
            errors as f64 / requests as f64
        },
        p50_ms: q(0.5),
        p99_ms: q(0.99),
    }
}

impl Flood {
    fn validate(&self) -> Result<()> {
        if self.flood_for.is_zero() || self.flood_for > MAX_DURATION {
            return Err(Error::Invalid(format!(
                "--flood-for must be above 0 and at most {}, got {}",
                secs(MAX_DURATION),
                secs(self.flood_for)
            )));
        }
        if !(self.factor.is_finite() && (2.0..=10_000.0).contains(&self.factor)) {
            return Err(Error::Invalid(format!(
                "--factor must be 2 to 10000, got {}",
                self.factor
            )));
        }
        Ok(())
    }

    async fn run_once(&self, protected: bool, progress: &mut Progress) -> Result<Run> {
        let c = &self.common;
        let mut manifest = c.load_manifest()?;
        for f in ["inbound", "events"] {
            if !manifest.functions.get(f).is_some_and(|s| s.public) {
                return Err(Error::Invalid(format!(
                    "{NAME} drives the sample platform: `{f}` must be a public function of the manifest"
                )));
            }
        }
        manifest.ingress.protections = protected;
        let lb = Loopback::start(NAME, manifest, c, StartOptions::default()).await?;
        let keys = &lb.ingress.keys;
        let chat_group = lb.ingress.settings.group_of_function("inbound").to_string();
        let events_group = lb.ingress.settings.group_of_function("events").to_string();
        let (chat_key, _) = keys.create(&chat_group, "drill chat clients").await?;
        let (events_key, _) = keys.create(&events_group, "drill event provider").await?;
        progress.note(&format!(
            "{NAME}: protections {}, platform on http://{} (data in {})",
            if protected { "on" } else { "off" },
            lb.addr,
            lb.data_dir().display()
        ));
        let base = format!("http://{}", lb.addr);
        let mut sources = Vec::new();
        for i in 0..4u8 {
            sources.push(Source {
                ip: std::net::Ipv4Addr::new(127, 0, 0, 10 + i),
                group: "chat",
                client: format!("chat-web/5.{i}"),
                key: chat_key.clone(),
                method: hyper::Method::POST,
                path: format!("{base}/v1/functions/inbound/messages"),
                rate: c.rate * 0.15,
                flood: false,
            });
        }
        for i in 0..2u8 {
            sources.push(Source {
                ip: std::net::Ipv4Addr::new(127, 0, 0, 20 + i),
                group: "events",
                client: format!("provider-hooks/1.{i}"),
                key: events_key.clone(),
                method: hyper::Method::POST,
                path: format!("{base}/v1/functions/events/messages"),
                rate: c.rate * 0.1,
                flood: false,
            });
        }
        sources.push(Source {
            ip: std::net::Ipv4Addr::new(127, 0, 0, 30),
            group: "ops",
            client: "ops-dashboard/1.0".into(),
            key: lb.admin_key.clone(),
            method: hyper::Method::GET,
            path: format!("{base}/v1/status"),
            rate: c.rate * 0.1,
            flood: false,
        });
        // The stuck SDK: the first chat client goes into its loop, at `factor` × its rate (it
        // sends nothing else during the flood).
        let mut flood = sources[0].clone();
        flood.rate *= self.factor;
        flood.flood = true;
        let flood_source = format!(
            "{}|{}|{}",
            crate::ingress::keys::key_id(&flood.key).unwrap_or(""),
            flood.client,
            flood.ip
        );
        let samples = Arc::new(Mutex::new(Samples::default()));
        let start = Instant::now();
        let flood_at = start + c.warmup;
        let flood_end = flood_at + self.flood_for;
        let end = flood_end;
        let mut tasks = JoinSet::new();
        for (i, s) in sources
            .into_iter()
            .chain(std::iter::once(flood))
            .enumerate()
        {
            let samples = samples.clone();
            let (from, until) = match (s.flood, i) {
                (true, _) => (flood_at, flood_end),
                (false, 0) => (start, flood_at),
                _ => (start, end),
            };
            let max = if s.flood {
                FLOOD_IN_FLIGHT
            } else {
                NORMAL_IN_FLIGHT
            };
            let http = client_from(s.ip, max);
            tasks.spawn(drive(http, s, from, until, flood_at, samples));
        }
        let mut peak_rss: Option<f64> = None;
        let mut time_to_block = None;
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        loop {
            tick.tick().await;
            let now = Instant::now();
            peak_rss = match (peak_rss, rss_mib()) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            };
            if now >= flood_at
                && time_to_block.is_none()
                && lb
                    .ingress
                    .blocker
                    .list()
                    .iter()
                    .any(|b| b.source == flood_source)
            {
                time_to_block = Some(now - flood_at);
                progress.note(&format!(
                    "{NAME}: flooding source blocked {:.2} s after the flood began",
                    (now - flood_at).as_secs_f64()
                ));
            }
            let phase = if now < flood_at { "normal" } else { "flood" };
            let f = samples.lock().expect("samples").flood;
            progress.show(
                phase,
                &format!(
                    "flood sent {} accepted {} refused {} errors {}  rss {:.0} MiB",
                    f[0],
                    f[1],
                    f[2],
                    f[3],
                    peak_rss.unwrap_or(0.0)
                ),
            );
            if now >= end {
                break;
            }
        }
        while tasks.join_next().await.is_some() {}
        progress.finish();
        let backlog_at_end = super::backlog(&lb.platform.status().await?);
        lb.stop().await;
        let mut s = samples.lock().expect("samples");
        let f = s.flood;
        let mut run = Run {
            protections: protected,
            flood_sent: f[0],
            flood_accepted: f[1],
            flood_refused: f[2],
            flood_errors: f[3],
            time_to_block_s: time_to_block.map(|d| d.as_secs_f64()),
            peak_rss_mib: peak_rss,
            backlog_at_end,
            ..Default::default()
        };
        for ((group, during), (lat, errors)) in s.lat.iter_mut() {
            let w = window(lat, *errors);
            if *during {
                run.during.insert(group.clone(), w);
            } else {
                run.before.insert(group.clone(), w);
            }
        }
        Ok(run)
    }
}

/// Sends `s`'s requests at its rate from `from` to `until`, recording each answer.
async fn drive(
    http: Http,
    s: Source,
    from: Instant,
    until: Instant,
    flood_at: Instant,
    samples: Arc<Mutex<Samples>>,
) {
    tokio::time::sleep_until(from).await;
    let limit = Arc::new(Semaphore::new(if s.flood {
        FLOOD_IN_FLIGHT
    } else {
        NORMAL_IN_FLIGHT
    }));
    let mut issued: u64 = 0;
    let mut tick = tokio::time::interval(Duration::from_millis(5));
    let mut out = JoinSet::new();
    let s = Arc::new(s);
    loop {
        tick.tick().await;
        let now = Instant::now();
        if now >= until {
            break;
        }
        while out.try_join_next().is_some() {}
        let due = (s.rate * (now - from).as_secs_f64()) as u64;
        while issued < due {
            issued += 1;
            let during = now >= flood_at;
            let Ok(permit) = limit.clone().try_acquire_owned() else {
                record(&samples, &s, during, None);
                continue;
            };
            let (http, s, samples) = (http.clone(), s.clone(), samples.clone());
            let body = if s.method == hyper::Method::POST {
                if s.group == "events" {
                    Bytes::from(format!(
                        r#"{{"org":"org-{}","conversation":"c-{issued}","event":"delivered","at_ms":{}}}"#,
                        issued % 7,
                        crate::ids::now_ms()
                    ))
                } else {
                    Bytes::from(message(issued))
                }
            } else {
                Bytes::new()
            };
            out.spawn(async move {
                let req = Request::builder()
                    .method(s.method.clone())
                    .uri(&s.path)
                    .header("authorization", format!("Bearer {}", s.key))
                    .header("x-levee-client", &s.client)
                    .header("content-type", "application/json")
                    .body(Full::new(body))
                    .expect("valid request");
                let t0 = Instant::now();
                let status = match tokio::time::timeout(REQUEST_TIMEOUT, async {
                    let resp = http.request(req).await.ok()?;
                    let status = resp.status();
                    resp.into_body().collect().await.ok()?;
                    Some(status)
                })
                .await
                {
                    Ok(Some(st)) => Some((st, t0.elapsed())),
                    _ => None,
                };
                record(&samples, &s, during, status);
                drop(permit);
            });
        }
    }
    while out.join_next().await.is_some() {}
}

fn record(
    samples: &Mutex<Samples>,
    s: &Source,
    during: bool,
    answer: Option<(hyper::StatusCode, Duration)>,
) {
    let mut m = samples.lock().expect("samples");
    if s.flood {
        m.flood[0] += 1;
        match answer {
            Some((st, _)) if st.is_success() => m.flood[1] += 1,
            Some((st, _)) if st.as_u16() == 429 || st.as_u16() == 503 => m.flood[2] += 1,
            _ => m.flood[3] += 1,
        }
        return;
    }
    let e = m.lat.entry((s.group.to_string(), during)).or_default();
    match answer {
        Some((st, took)) if st.is_success() => {
            e.0.push(took.as_micros().min(u32::MAX as u128) as u32)
        }
        _ => e.1 += 1,
    }
}

/// Why the protected run fails; empty when it passes.
pub fn reasons(run: &Run) -> Vec<String> {
    let mut r = Vec::new();
    match run.time_to_block_s {
        None => r.push("the flooding source was never blocked".to_string()),
        Some(t) if t > BLOCK_WITHIN.as_secs_f64() => r.push(format!(
            "the flooding source was blocked after {t:.2} s (bound {} s)",
            BLOCK_WITHIN.as_secs()
        )),
        _ => {}
    }
    for (group, during) in &run.during {
        if during.error_rate > 0.01 {
            r.push(format!(
                "{group}: {:.1} % errors during the flood",
                during.error_rate * 100.0
            ));
        }
        let before = run.before.get(group).and_then(|w| w.p99_ms);
        if let (Some(b), Some(d)) = (before, during.p99_ms)
            && d > 2.0 * b + 50.0
        {
            r.push(format!(
                "{group}: p99 {d:.1} ms during the flood against {b:.1} ms before"
            ));
        }
        if during.requests == 0 {
            r.push(format!("{group}: no request completed during the flood"));
        }
    }
    r
}

fn ms(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{v:.1}"))
}

#[async_trait]
impl Drill for Flood {
    fn common(&self) -> &Common {
        &self.common
    }

    async fn run(&self, progress: &mut Progress) -> Result<Outcome> {
        self.validate()?;
        let c = &self.common;
        let modes: &[bool] = match self.protections.as_str() {
            "on" => &[true],
            "off" => &[false],
            _ => &[true, false],
        };
        let mut runs = Vec::new();
        for &protected in modes {
            runs.push(self.run_once(protected, progress).await?);
        }
        let figures = Figures {
            rate: c.rate,
            factor: self.factor,
            flood_rate: c.rate * 0.15 * self.factor,
            warmup_s: c.warmup.as_secs_f64(),
            flood_s: self.flood_for.as_secs_f64(),
            runs: runs.clone(),
        };
        let mut lines = Vec::new();
        for run in &runs {
            let tag = if run.protections {
                "protected"
            } else {
                "unprotected"
            };
            for (group, before) in &run.before {
                let during = run.during.get(group).cloned().unwrap_or_default();
                lines.push((
                    format!("{tag} {group}"),
                    format!(
                        "before p50/p99 {}/{} ms errors {:.1} % | flood p50/p99 {}/{} ms errors {:.1} % ({} requests)",
                        ms(before.p50_ms),
                        ms(before.p99_ms),
                        before.error_rate * 100.0,
                        ms(during.p50_ms),
                        ms(during.p99_ms),
                        during.error_rate * 100.0,
                        during.requests
                    ),
                ));
            }
            lines.push((
                format!("{tag} flood"),
                format!(
                    "sent {} accepted {} refused (429/503) {} errors {}; blocked after {}; peak RSS {} MiB; backlog left {}",
                    run.flood_sent,
                    run.flood_accepted,
                    run.flood_refused,
                    run.flood_errors,
                    run.time_to_block_s
                        .map_or("never".into(), |t| format!("{t:.2} s")),
                    ms(run.peak_rss_mib),
                    run.backlog_at_end
                ),
            ));
        }
        let reasons = runs
            .iter()
            .find(|r| r.protections)
            .map(reasons)
            .unwrap_or_default();
        Outcome::new(
            NAME,
            format!(
                "{} msg/s normal mix over chat, events and ops; one chat source at {}× ({:.0}/s) for {} after {}",
                c.rate,
                self.factor,
                figures.flood_rate,
                secs(self.flood_for),
                secs(c.warmup)
            ),
            lines,
            reasons,
            &figures,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_take_percentiles_and_error_rates() {
        let mut lat: Vec<u32> = (1..=100).map(|i| i * 1000).collect();
        let w = window(&mut lat, 0);
        assert_eq!(w.p50_ms, Some(51.0));
        assert_eq!(w.p99_ms, Some(99.0));
        assert_eq!(window(&mut [], 4).error_rate, 1.0);
    }

    #[test]
    fn a_late_block_or_slow_group_fails() {
        let mut run = Run {
            protections: true,
            time_to_block_s: Some(1.2),
            ..Default::default()
        };
        run.before.insert(
            "events".into(),
            Window {
                p99_ms: Some(5.0),
                requests: 10,
                ..Default::default()
            },
        );
        run.during.insert(
            "events".into(),
            Window {
                p99_ms: Some(12.0),
                requests: 10,
                ..Default::default()
            },
        );
        assert!(reasons(&run).is_empty());
        run.during.get_mut("events").unwrap().p99_ms = Some(200.0);
        run.time_to_block_s = None;
        assert_eq!(reasons(&run).len(), 2);
    }
}
