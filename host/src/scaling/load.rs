//! `levee load`: a load generator against a running `levee up` on a loopback address. It sends
//! generated inbound customer messages at a steady rate with an optional surge, bounded in count and
//! time, prints each second what it sent and what the platform's scaler did, and at the end the
//! peak workers per function and how soon after the surge began each one reached it. A surge can
//! repeat (`--repeat`, `--surge-every`); while one is on, the status is read every [`FAST_POLL`]
//! and each affected pool's time to its new size is printed per surge and as a distribution. Its
//! [`Sender`] (generated messages, bounded requests in flight, counted answers) is shared with the
//! drills (`levee drill`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hyper::Method;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::client::{call, encode_segment};
use crate::{Error, Result};

/// Highest rate accepted (msg/s), for the steady and the surge rate.
pub const MAX_RATE: f64 = 20_000.0;
/// Longest run accepted.
pub const MAX_DURATION: Duration = Duration::from_secs(3600);
/// Requests in flight at once; beyond it sends are skipped (and counted), never queued without bound.
pub const MAX_IN_FLIGHT: usize = 256;
/// A request that takes longer counts as an error.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How often sends are paced.
const STEP: Duration = Duration::from_millis(20);

/// How often the platform's status is read while a surge is on (and just before one), to time
/// how soon each pool reaches its new size.
pub const FAST_POLL: Duration = Duration::from_millis(100);

/// A surge on top of the steady rate, possibly repeated.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Surge {
    /// Rate during the surge (msg/s), instead of the steady one.
    pub rate: f64,
    /// When it starts, from the beginning of the run.
    pub at: Duration,
    /// How long it lasts.
    pub length: Duration,
    /// How many times it comes (at least 1).
    pub repeat: u32,
    /// Time from one start to the next, when repeated.
    pub every: Duration,
}

impl Surge {
    /// When the `k`-th surge (from 0) starts and ends.
    pub fn window(&self, k: u32) -> (Duration, Duration) {
        let start = self.at + self.every * k;
        (start, start + self.length)
    }

    /// The surge on at `t`, if any.
    pub fn on_at(&self, t: Duration) -> Option<u32> {
        (0..self.repeat).find(|&k| {
            let (a, b) = self.window(k);
            t >= a && t < b
        })
    }
}

/// What to send.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadOptions {
    /// HOST:PORT of the running platform (loopback only).
    pub addr: String,
    /// Function to send to.
    pub function: String,
    /// Steady rate (msg/s).
    pub rate: f64,
    /// How long to send.
    pub duration: Duration,
    pub surge: Option<Surge>,
    /// How long to keep watching the platform after sending stops.
    pub tail: Duration,
    /// The API key to send with.
    pub key: Option<String>,
}

impl LoadOptions {
    /// Checks bounds and the address; errors name the option.
    pub fn validate(&self) -> Result<SocketAddr> {
        let bad = |m: String| Err(Error::Invalid(m));
        let rate_ok = |r: f64| r.is_finite() && (0.0..=MAX_RATE).contains(&r);
        if !rate_ok(self.rate) {
            return bad(format!(
                "--rate must be 0 to {MAX_RATE} msg/s, got {}",
                self.rate
            ));
        }
        if self.duration.is_zero() || self.duration > MAX_DURATION {
            return bad(format!(
                "--duration must be 1 to {} s, got {:?}",
                MAX_DURATION.as_secs(),
                self.duration
            ));
        }
        if self.tail > MAX_DURATION {
            return bad(format!(
                "--tail must be at most {} s",
                MAX_DURATION.as_secs()
            ));
        }
        if let Some(s) = &self.surge {
            if !rate_ok(s.rate) {
                return bad(format!(
                    "--surge-rate must be 0 to {MAX_RATE} msg/s, got {}",
                    s.rate
                ));
            }
            if s.at >= self.duration {
                return bad(format!(
                    "--surge-at ({:?}) must be before the end of --duration ({:?})",
                    s.at, self.duration
                ));
            }
            // Bounded so `at + length` can never overflow (a u64 of seconds would).
            if s.length.is_zero() || s.length > MAX_DURATION {
                return bad(format!(
                    "--surge-for must be 1 to {} s, got {} s",
                    MAX_DURATION.as_secs(),
                    s.length.as_secs()
                ));
            }
            if s.repeat == 0 || s.repeat > 100 {
                return bad(format!("--repeat must be 1 to 100, got {}", s.repeat));
            }
            if s.repeat > 1 {
                if s.every <= s.length || s.every > MAX_DURATION {
                    return bad(format!(
                        "--surge-every ({} s) must be longer than --surge-for ({} s) and at most {} s",
                        s.every.as_secs(),
                        s.length.as_secs(),
                        MAX_DURATION.as_secs()
                    ));
                }
                let (_, last_end) = s.window(s.repeat - 1);
                if last_end > self.duration {
                    return bad(format!(
                        "{} surges every {} s from {} s end at {} s, after --duration ({} s)",
                        s.repeat,
                        s.every.as_secs(),
                        s.at.as_secs(),
                        last_end.as_secs(),
                        self.duration.as_secs()
                    ));
                }
            }
        }
        let addr = self
            .addr
            .to_socket_addrs()
            .map_err(|e| Error::Invalid(format!("--addr {}: {e}", self.addr)))?
            .next()
            .ok_or_else(|| Error::Invalid(format!("--addr {} resolves to nothing", self.addr)))?;
        if !addr.ip().is_loopback() {
            return bad(format!(
                "--addr {} is not a loopback address: levee load only targets a platform on this machine",
                self.addr
            ));
        }
        Ok(addr)
    }

    /// The sending rate at `t` from the start.
    pub fn rate_at(&self, t: Duration) -> f64 {
        match &self.surge {
            Some(s) if s.on_at(t).is_some() => s.rate,
            _ => self.rate,
        }
    }

    /// Messages due by `t`: the integral of the rate, so pacing has no drift.
    pub fn due_by(&self, t: Duration) -> u64 {
        let t = t.min(self.duration).as_secs_f64();
        let steady = self.rate * t;
        let extra = self.surge.map_or(0.0, |s| {
            (0..s.repeat)
                .map(|k| {
                    let (from, to) = s.window(k);
                    let overlap = (t.min(to.as_secs_f64()) - from.as_secs_f64()).max(0.0);
                    (s.rate - self.rate) * overlap
                })
                .sum::<f64>()
        });
        (steady + extra).max(0.0).floor() as u64
    }
}

const ORGS: [&str; 6] = ["acme", "globex", "initech", "umbrella", "hooli", "stark"];
const CHANNELS: [&str; 4] = ["chat", "email", "sms", "whatsapp"];
const TEXTS: [&str; 8] = [
    "Hi, my order hasn't arrived yet. Can you check the status?",
    "I was charged twice for my subscription this month.",
    "How do I reset my password? The link in the email expired.",
    "Thanks, that fixed it!",
    "The app crashes when I open the settings page on Android.",
    "Can I change the delivery address for order 4471?",
    "I'd like to cancel my plan at the end of the billing period.",
    "Is there a discount for annual billing for teams over 50 seats?",
];

/// The `n`-th generated inbound message: a valid `{"org","conversation","channel","from","text"}`.
pub fn message(n: u64) -> Vec<u8> {
    // A multiplicative hash spreads consecutive n over orgs, channels and conversations.
    let h = n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let org = ORGS[(h >> 7) as usize % ORGS.len()];
    let channel = CHANNELS[(h >> 17) as usize % CHANNELS.len()];
    let customer = (h >> 27) % 5000;
    let from = match channel {
        "email" => format!("customer{customer}@example.com"),
        "sms" | "whatsapp" => format!("+1555{customer:07}"),
        _ => format!("visitor-{customer}"),
    };
    serde_json::json!({
        "org": org,
        "conversation": format!("conv-{}", (h >> 37) % 2000),
        "channel": channel,
        "from": from,
        "text": TEXTS[(h >> 47) as usize % TEXTS.len()],
    })
    .to_string()
    .into_bytes()
}

/// One function's line of `/v1/status` as the load generator reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    pub workers: u64,
    pub desired: Option<u64>,
    pub backlog: u64,
}

/// The highest worker count a function reached and when (first reached), from the start of the run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Peak {
    pub workers: u64,
    pub at: Duration,
}

/// How one function's pool met one surge.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepResult {
    /// Workers when the surge began.
    pub before: u64,
    /// Workers at its end: the size the scaler chose for the new load.
    pub after: u64,
    /// From the surge's start to the first reading at that size.
    pub time_to_size: Duration,
}

/// Per function, how its pool met a surge, from `readings` (time since the surge began, status)
/// taken during it, `before` being the workers when it began. Pools that did not grow are left
/// out: the surge did not affect them.
pub fn time_to_size(
    before: &BTreeMap<String, u64>,
    readings: &[(Duration, BTreeMap<String, Observed>)],
) -> BTreeMap<String, StepResult> {
    let Some((_, last)) = readings.last() else {
        return BTreeMap::new();
    };
    last.iter()
        .filter_map(|(name, o)| {
            let before = before.get(name).copied().unwrap_or(0);
            let after = o.workers;
            if after <= before {
                return None;
            }
            let reached = readings
                .iter()
                .find(|(_, st)| st.get(name).is_some_and(|x| x.workers >= after))
                .map(|(t, _)| *t)?;
            Some((
                name.clone(),
                StepResult {
                    before,
                    after,
                    time_to_size: reached,
                },
            ))
        })
        .collect()
}

/// What a run did.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadSummary {
    pub sent: u64,
    pub errors: u64,
    pub skipped: u64,
    /// Workers per function at the first reading.
    pub initial: BTreeMap<String, u64>,
    pub peaks: BTreeMap<String, Peak>,
    /// Per surge, how each affected pool met it.
    pub steps: Vec<BTreeMap<String, StepResult>>,
}

impl LoadSummary {
    /// Records a status reading at `t`.
    pub fn observe(&mut self, t: Duration, status: &BTreeMap<String, Observed>) {
        for (name, o) in status {
            self.initial.entry(name.clone()).or_insert(o.workers);
            let p = self.peaks.entry(name.clone()).or_insert(Peak {
                workers: o.workers,
                at: t,
            });
            if o.workers > p.workers {
                *p = Peak {
                    workers: o.workers,
                    at: t,
                };
            }
        }
    }

    /// The closing summary: per function the workers at the start, the peak, and when it was reached
    /// (seconds after the surge began, or after the start without a surge).
    pub fn render(&self, surge: Option<&Surge>) -> String {
        let mut s = format!(
            "sent {} messages, {} errors, {} skipped (more than {MAX_IN_FLIGHT} requests in flight)\n",
            self.sent, self.errors, self.skipped
        );
        let since = surge.map_or("start", |_| "surge start");
        let _ = writeln!(
            s,
            "{:<16} {:>8} {:>6} {:>22}",
            "FUNCTION",
            "INITIAL",
            "PEAK",
            format!("PEAK AT (s after {since})")
        );
        for (name, p) in &self.peaks {
            let origin = surge.map_or(Duration::ZERO, |s| s.at);
            let when = if p.workers == self.initial.get(name).copied().unwrap_or(0) {
                "never rose".to_string()
            } else if p.at >= origin {
                format!("{:.0}", (p.at - origin).as_secs_f64())
            } else {
                format!("{:.0} before", (origin - p.at).as_secs_f64())
            };
            let _ = writeln!(
                s,
                "{:<16} {:>8} {:>6} {:>22}",
                name,
                self.initial.get(name).copied().unwrap_or(0),
                p.workers,
                when
            );
        }
        if !self.steps.is_empty() {
            let _ = writeln!(
                s,
                "time to size after each surge began (s), {} surge(s), readings every {} ms:",
                self.steps.len(),
                FAST_POLL.as_millis()
            );
            let mut per_function: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
            for step in &self.steps {
                for (name, r) in step {
                    per_function
                        .entry(name)
                        .or_default()
                        .push(r.time_to_size.as_secs_f64());
                }
            }
            let _ = writeln!(
                s,
                "{:<16} {:>6} {:>7} {:>7} {:>7}  EACH",
                "FUNCTION", "SURGES", "MIN", "MEDIAN", "MAX"
            );
            for (name, mut v) in per_function {
                v.sort_by(f64::total_cmp);
                let each: Vec<String> = v.iter().map(|x| format!("{x:.2}")).collect();
                let _ = writeln!(
                    s,
                    "{:<16} {:>6} {:>7.2} {:>7.2} {:>7.2}  {}",
                    name,
                    v.len(),
                    v[0],
                    v[v.len() / 2],
                    v[v.len() - 1],
                    each.join(" ")
                );
            }
        }
        s
    }
}

/// One line per surge: each affected pool's sizes and time to size.
pub fn render_step(k: u32, step: &BTreeMap<String, StepResult>) -> String {
    let mut line = format!("surge {}:", k + 1);
    if step.is_empty() {
        line.push_str(" no pool grew");
    }
    for (name, r) in step {
        let _ = write!(
            line,
            " {name} {}->{} in {:.2} s;",
            r.before,
            r.after,
            r.time_to_size.as_secs_f64()
        );
    }
    line.trim_end_matches(';').to_string()
}

/// Parses `/v1/status` into per function workers, desired and backlog.
pub fn parse_status(v: &serde_json::Value) -> BTreeMap<String, Observed> {
    v["functions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|f| {
            Some((
                f["name"].as_str()?.to_string(),
                Observed {
                    workers: f["workers"].as_u64().unwrap_or(0),
                    desired: f["desired"].as_u64(),
                    backlog: f["visible"].as_u64().unwrap_or(0)
                        + f["in_flight"].as_u64().unwrap_or(0)
                        + f["delayed"].as_u64().unwrap_or(0),
                },
            ))
        })
        .collect()
}

/// What a [`Sender`] has counted so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SendCounts {
    /// Requests answered with a 2xx (for `POST .../messages`: a 202, the message is durably queued).
    pub accepted: u64,
    /// Requests that failed, timed out or got any other answer.
    pub errors: u64,
    /// Messages not sent because [`MAX_IN_FLIGHT`] requests were already out.
    pub skipped: u64,
}

/// Sends generated inbound messages ([`message`]) to one function of a running platform, each
/// request on its own task, at most [`MAX_IN_FLIGHT`] at once: beyond that a message is skipped
/// and counted, never queued. The caller paces it ([`send_up_to`](Self::send_up_to) with the
/// number due so far); `levee load` and the drills share it.
#[derive(Debug)]
pub struct Sender {
    addr: String,
    path: String,
    key: Option<Arc<str>>,
    client: Option<Arc<str>>,
    issued: u64,
    skipped: u64,
    accepted: Arc<AtomicU64>,
    errors: Arc<AtomicU64>,
    in_flight: Arc<Semaphore>,
    tasks: JoinSet<()>,
    body: fn(u64) -> Vec<u8>,
}

impl Sender {
    /// A sender to `function` at `addr` (HOST:PORT; the caller checks it is loopback).
    pub fn new(addr: &str, function: &str) -> Self {
        Sender {
            addr: addr.to_string(),
            path: format!("/v1/functions/{}/messages", encode_segment(function)),
            key: None,
            client: None,
            issued: 0,
            skipped: 0,
            accepted: Arc::new(AtomicU64::new(0)),
            errors: Arc::new(AtomicU64::new(0)),
            in_flight: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
            tasks: JoinSet::new(),
            body: message,
        }
    }

    /// Sends with API key `key`.
    pub fn with_key(mut self, key: Option<&str>) -> Self {
        self.key = key.map(Arc::from);
        self
    }

    /// Sends `body(n)` as the n-th message instead of [`message`]`(n)`.
    pub fn with_bodies(mut self, body: fn(u64) -> Vec<u8>) -> Self {
        self.body = body;
        self
    }

    /// Names the client (`X-Levee-Client`), part of the source the ingress limits and blocks.
    pub fn with_client(mut self, client: &str) -> Self {
        self.client = Some(Arc::from(client));
        self
    }

    /// Issues messages until `due` have been issued in all (the n-th message is `message(n)`,
    /// or what [`Sender::with_bodies`] set).
    pub fn send_up_to(&mut self, due: u64) {
        while self.tasks.try_join_next().is_some() {}
        while self.issued < due {
            self.issued += 1;
            let Ok(permit) = self.in_flight.clone().try_acquire_owned() else {
                self.skipped += 1;
                continue;
            };
            let (addr, path) = (self.addr.clone(), self.path.clone());
            let (key, client) = (self.key.clone(), self.client.clone());
            let (accepted, errors) = (self.accepted.clone(), self.errors.clone());
            let body = (self.body)(self.issued);
            self.tasks.spawn(async move {
                let ok = matches!(
                    tokio::time::timeout(
                        REQUEST_TIMEOUT,
                        crate::client::call_as(&addr, key.as_deref(), client.as_deref(), Method::POST, &path, body),
                    )
                    .await,
                    Ok(Ok(a)) if a.status.is_success()
                );
                if ok { &accepted } else { &errors }.fetch_add(1, Ordering::Relaxed);
                drop(permit);
            });
        }
    }

    /// Messages issued so far (sent or skipped).
    pub fn issued(&self) -> u64 {
        self.issued
    }

    /// The counts so far (requests still out are in none of them).
    pub fn counts(&self) -> SendCounts {
        SendCounts {
            accepted: self.accepted.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            skipped: self.skipped,
        }
    }

    /// Waits for every request still out (each is bounded by [`REQUEST_TIMEOUT`]); the final counts.
    pub async fn finish(mut self) -> SendCounts {
        while self.tasks.join_next().await.is_some() {}
        self.counts()
    }
}

/// A surge being timed: its number, the workers when it began, the readings since.
struct Timing {
    surge: u32,
    before: BTreeMap<String, u64>,
    readings: Vec<(Duration, BTreeMap<String, Observed>)>,
}

/// Runs the load; `print` gets one line per second and the summary.
pub async fn run(opts: &LoadOptions, print: &mut (dyn FnMut(&str) + Send)) -> Result<LoadSummary> {
    let addr = opts.validate()?.to_string();
    // Fail fast on a wrong address or function instead of counting thousands of errors.
    let key = opts.key.as_deref();
    call(&addr, key, Method::GET, "/v1/status", vec![])
        .await?
        .json()?;
    let mut sender = Sender::new(&addr, &opts.function).with_key(key);
    let mut summary = LoadSummary {
        sent: 0,
        errors: 0,
        skipped: 0,
        initial: BTreeMap::new(),
        peaks: BTreeMap::new(),
        steps: Vec::new(),
    };
    let start = Instant::now();
    let end = opts.duration + opts.tail;
    let mut next_report = Duration::from_secs(1);
    let mut next_poll = Duration::ZERO;
    let mut last = SendCounts::default();
    let mut latest: Option<BTreeMap<String, Observed>> = None;
    // The surge being timed.
    let mut step: Option<Timing> = None;
    let mut tick = tokio::time::interval(STEP);
    loop {
        tick.tick().await;
        let t = start.elapsed();
        sender.send_up_to(opts.due_by(t));
        if t >= next_poll {
            let reading = status(&addr, key).await.map(|v| parse_status(&v));
            let read_at = start.elapsed();
            let on = opts.surge.as_ref().and_then(|s| s.on_at(read_at));
            if let Some(timing) = step.take_if(|s| on != Some(s.surge)) {
                let result = time_to_size(&timing.before, &timing.readings);
                print(&render_step(timing.surge, &result));
                summary.steps.push(result);
            }
            if let Ok(st) = &reading {
                summary.observe(read_at, st);
                if let (Some(k), None) = (on, &step) {
                    let before = latest
                        .as_ref()
                        .unwrap_or(st)
                        .iter()
                        .map(|(n, o)| (n.clone(), o.workers))
                        .collect();
                    step = Some(Timing {
                        surge: k,
                        before,
                        readings: Vec::new(),
                    });
                }
                if let Some(timing) = &mut step {
                    let (began, _) = opts.surge.as_ref().expect("a surge").window(timing.surge);
                    timing
                        .readings
                        .push((read_at.saturating_sub(began), st.clone()));
                }
                latest = Some(st.clone());
            }
            let soon = opts.surge.as_ref().is_some_and(|s| {
                (0..s.repeat).any(|k| {
                    let (a, b) = s.window(k);
                    read_at + Duration::from_secs(1) >= a && read_at < b
                })
            });
            next_poll = read_at
                + if soon {
                    FAST_POLL
                } else {
                    Duration::from_secs(1)
                };
            if let Err(e) = &reading
                && t >= next_report
            {
                print(&format!(
                    "t={:>4}s status unavailable: {e}",
                    next_report.as_secs()
                ));
                next_report += Duration::from_secs(1);
            }
        }
        if t >= next_report {
            let secs = next_report.as_secs();
            next_report += Duration::from_secs(1);
            let now = sender.counts();
            let mut line = format!(
                "t={secs:>4}s target {:>6.0}/s sent {:>6}/s errors {:>4}",
                if t <= opts.duration {
                    opts.rate_at(t)
                } else {
                    0.0
                },
                now.accepted - last.accepted,
                now.errors - last.errors
            );
            last = now;
            for (name, o) in latest.iter().flatten() {
                let desired = o.desired.map_or("-".to_string(), |d| d.to_string());
                let _ = write!(line, " | {name} {}/{desired} q{}", o.workers, o.backlog);
            }
            print(&line);
        }
        if t >= end {
            break;
        }
    }
    if let Some(timing) = step.take() {
        let result = time_to_size(&timing.before, &timing.readings);
        print(&render_step(timing.surge, &result));
        summary.steps.push(result);
    }
    let counts = sender.finish().await;
    summary.sent = counts.accepted;
    summary.errors = counts.errors;
    summary.skipped = counts.skipped;
    print(&summary.render(opts.surge.as_ref()));
    Ok(summary)
}

async fn status(addr: &str, key: Option<&str>) -> Result<serde_json::Value> {
    call(addr, key, Method::GET, "/v1/status", vec![])
        .await?
        .json()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> LoadOptions {
        LoadOptions {
            addr: "127.0.0.1:8080".into(),
            function: "inbound".into(),
            rate: 100.0,
            duration: Duration::from_secs(60),
            surge: Some(Surge {
                rate: 400.0,
                at: Duration::from_secs(10),
                length: Duration::from_secs(20),
                repeat: 1,
                every: Duration::ZERO,
            }),
            tail: Duration::ZERO,
            key: None,
        }
    }

    #[test]
    fn pacing_integrates_the_surge() {
        let o = opts();
        assert_eq!(o.due_by(Duration::from_secs(10)), 1000);
        assert_eq!(o.due_by(Duration::from_secs(15)), 1000 + 2000);
        assert_eq!(o.due_by(Duration::from_secs(60)), 100 * 40 + 400 * 20);
        assert_eq!(
            o.due_by(Duration::from_secs(600)),
            o.due_by(o.duration),
            "bounded"
        );
        assert_eq!(o.rate_at(Duration::from_secs(29)), 400.0);
        assert_eq!(o.rate_at(Duration::from_secs(30)), 100.0);
    }

    #[test]
    fn repeated_surges_pace_and_validate() {
        let mut o = opts();
        let s = o.surge.as_mut().unwrap();
        (s.repeat, s.every, s.length) = (3, Duration::from_secs(15), Duration::from_secs(5));
        assert!(o.validate().is_ok());
        assert_eq!(o.rate_at(Duration::from_secs(26)), 400.0);
        assert_eq!(o.rate_at(Duration::from_secs(30)), 100.0);
        assert_eq!(o.due_by(Duration::from_secs(60)), 100 * 60 + 300 * 5 * 3);
        o.surge.as_mut().unwrap().repeat = 4; // the 4th would end at 55 s: still fits
        assert!(o.validate().is_ok());
        o.surge.as_mut().unwrap().repeat = 5;
        assert!(o.validate().unwrap_err().to_string().contains("--duration"));
        o.surge.as_mut().unwrap().repeat = 2;
        o.surge.as_mut().unwrap().every = Duration::from_secs(5);
        assert!(
            o.validate()
                .unwrap_err()
                .to_string()
                .contains("--surge-every")
        );
    }

    #[test]
    fn time_to_size_is_the_first_reading_at_the_final_size() {
        let st = |a, b| {
            BTreeMap::from([
                (
                    "inbound".to_string(),
                    Observed {
                        workers: a,
                        desired: None,
                        backlog: 0,
                    },
                ),
                (
                    "notify".to_string(),
                    Observed {
                        workers: b,
                        desired: None,
                        backlog: 0,
                    },
                ),
            ])
        };
        let ms = Duration::from_millis;
        let before = BTreeMap::from([("inbound".to_string(), 2), ("notify".to_string(), 3)]);
        let readings = vec![
            (ms(40), st(2, 3)),
            (ms(90), st(5, 3)),
            (ms(140), st(8, 3)),
            (ms(190), st(7, 3)),
            (ms(240), st(8, 3)),
        ];
        let r = time_to_size(&before, &readings);
        assert_eq!(
            r["inbound"],
            StepResult {
                before: 2,
                after: 8,
                time_to_size: ms(140)
            }
        );
        assert!(
            !r.contains_key("notify"),
            "a pool that did not grow was not affected"
        );
        assert!(render_step(0, &r).contains("inbound 2->8 in 0.14 s"));
    }

    #[test]
    fn only_loopback_and_bounded_runs() {
        assert!(opts().validate().is_ok());
        let mut o = opts();
        o.addr = "10.1.2.3:8080".into();
        assert!(o.validate().unwrap_err().to_string().contains("loopback"));
        let mut o = opts();
        o.rate = 1e9;
        assert!(o.validate().unwrap_err().to_string().contains("--rate"));
        let mut o = opts();
        o.surge.as_mut().unwrap().at = Duration::from_secs(60);
        assert!(o.validate().unwrap_err().to_string().contains("--surge-at"));
        let mut o = opts();
        o.duration = Duration::ZERO;
        assert!(o.validate().unwrap_err().to_string().contains("--duration"));
    }

    #[test]
    fn messages_are_valid_and_varied() {
        let mut orgs = std::collections::BTreeSet::new();
        let mut channels = std::collections::BTreeSet::new();
        for n in 0..200 {
            let v: serde_json::Value = serde_json::from_slice(&message(n)).unwrap();
            for k in ["org", "conversation", "channel", "from", "text"] {
                assert!(v[k].as_str().is_some_and(|s| !s.is_empty()), "{k} in {v}");
            }
            orgs.insert(v["org"].as_str().unwrap().to_string());
            channels.insert(v["channel"].as_str().unwrap().to_string());
        }
        assert_eq!((orgs.len(), channels.len()), (ORGS.len(), CHANNELS.len()));
    }

    #[test]
    fn peaks_and_when_they_were_reached() {
        let mut s = LoadSummary {
            sent: 0,
            errors: 0,
            skipped: 0,
            initial: BTreeMap::new(),
            peaks: BTreeMap::new(),
            steps: Vec::new(),
        };
        let at = |w| {
            BTreeMap::from([(
                "inbound".to_string(),
                Observed {
                    workers: w,
                    desired: Some(w),
                    backlog: 0,
                },
            )])
        };
        s.observe(Duration::ZERO, &at(2));
        s.observe(Duration::from_secs(12), &at(6));
        s.observe(Duration::from_secs(13), &at(6));
        s.observe(Duration::from_secs(20), &at(3));
        assert_eq!(
            s.peaks["inbound"],
            Peak {
                workers: 6,
                at: Duration::from_secs(12)
            }
        );
        let text = s.render(opts().surge.as_ref());
        assert!(
            text.contains("inbound") && text.contains(" 2 ") && text.contains(" 6 "),
            "{text}"
        );
    }
}
