//! `levee drill bad-release`: a release that cannot read rare large-format events, as in the
//! August 2022 incident (a library upgrade of the workflow service broke them; they stalled the
//! queue for 50 minutes until a manual rollback).
//!
//! Timeline: the sample pipeline under steady load, 1% of it large events (inbound messages with
//! attachments); after `--warmup`, `inbound-next` (the same inbound code with a reader that traps
//! on large events) is deployed as a new version of `inbound`. First with the replay gate, which
//! must refuse it naming a large event of `functions/inbound/replay/`; then again without the
//! gate (as if the corpus had missed such events), so the canary must catch it: its failures
//! are compared with the stable version's and it is rolled back automatically, its failed
//! messages running on the stable version without using an attempt. The load goes on for
//! `--load-after`, stops, and the backlog drains.
//!
//! Pass: the gate refused it, the canary was rolled back automatically (never promoted to
//! stable), nothing dead-lettered, every accepted message completed at every last stage, no
//! queue stalled (inbound's oldest message stayed younger than `--max-stall`), and small
//! messages' end-to-end p99 while the bad version ran stayed within 20% (`--p99-tolerance`) of
//! the `--baseline` (5 s after the warm-up, before the deploy).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine as _;
use hyper::Method;
use serde::Serialize;
use tokio::time::Instant;

use super::{
    Common, Drill, Loopback, Outcome, Progress, backlog, completed, completions_per_message,
    dead_letters, processed, secs, wait_drained,
};
use crate::manifest::CanarySpec;
use crate::platform::StartOptions;
use crate::scaling::load::{Sender, message};
use crate::worker::LatencyCounts;
use crate::{Error, Result};

/// The drill's name.
pub const NAME: &str = "bad-release";
/// The function that gets the bad release, and where the load goes.
pub const ENTRY: &str = "inbound";
/// Where the small messages' end-to-end latency is read (the pipeline's last stage).
const SINK: &str = "notify";
/// One message in this many is a large-format event.
const LARGE_EVERY: u64 = 100;
/// Attachment bytes of a large event (base64 makes its body about 4/3 of this).
const LARGE_BYTES: usize = 96 * 1024;
const STEP: Duration = Duration::from_millis(20);
const SAMPLE_EVERY: Duration = Duration::from_millis(250);

/// A release that fails only on rare large events is deployed under load: the replay gate
/// must refuse it, and with the gate skipped the canary must roll it back automatically.
#[derive(Debug, clap::Args)]
#[command(
    long_about = "A release that fails only on rare large events is deployed under load: the \
replay gate must refuse it, and with the gate skipped the canary must roll it back \
automatically.\n\n\
Starts the manifest's pipeline in this process (embedded backend in a fresh temporary data \
directory, HTTP API on 127.0.0.1 at a free port) and sends generated inbound messages at --rate, \
1% of them large events with attachments. After --warmup it deploys --module (inbound-next: \
inbound's code with a reader that traps on large events) as a new version of inbound over the \
HTTP API: once with the replay gate (functions/inbound/replay/), which must refuse it, then \
without, so that its canary (steps 25%, 50%, 100%, each held --window) must catch it.\n\n\
Pass: the gate refused it naming a large event, the canary was rolled back automatically and \
never became stable, 0 dead letters, every accepted message completed at every last stage, \
inbound's oldest waiting message stayed under --max-stall, and the small messages' end-to-end \
p99 while the bad version ran stayed within --p99-tolerance of the --baseline before the deploy. Exit code 0 on \
pass, 1 on fail."
)]
pub struct BadRelease {
    /// The bad release (default: inbound-next, built with the guests).
    #[arg(long, value_name = "WASM")]
    pub module: Option<PathBuf>,
    /// How long the small messages' latency is measured before the deploy, after the warm-up
    /// (the baseline of the p99 comparison).
    #[arg(long, default_value = "5s", value_parser = super::parse_duration, value_name = "DURATION")]
    pub baseline: Duration,
    /// How long each canary step is held before the next.
    #[arg(long, default_value = "30s", value_parser = super::parse_duration, value_name = "DURATION")]
    pub window: Duration,
    /// Longest wait for the canary's verdict.
    #[arg(long, default_value = "120s", value_parser = super::parse_duration, value_name = "DURATION")]
    pub verdict_timeout: Duration,
    /// How long the load goes on after the rollback.
    #[arg(long, default_value = "5s", value_parser = super::parse_duration, value_name = "DURATION")]
    pub load_after: Duration,
    /// The oldest waiting message of inbound must stay younger than this.
    #[arg(long, default_value = "5s", value_parser = super::parse_duration, value_name = "DURATION")]
    pub max_stall: Duration,
    /// How much the small messages' p99 may grow over the baseline's (0.2 = 20%).
    #[arg(long, default_value_t = 0.2)]
    pub p99_tolerance: f64,
    #[command(flatten)]
    pub common: Common,
}

/// What the drill measured.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Figures {
    pub rate: f64,
    pub warmup_s: f64,
    pub accepted: u64,
    pub send_errors: u64,
    pub large_sent: u64,
    /// The replay gate answered 422 for the bad module.
    pub gate_refused: bool,
    /// The events it named.
    pub gate_events: Vec<String>,
    /// The canary was taken out by its verdict.
    pub canary_rolled_back: bool,
    /// The bad version became stable (it must not).
    pub bad_became_stable: bool,
    /// Why the canary was rolled back.
    pub rollback_reason: Option<String>,
    /// From the canary's deploy to its rollback, s.
    pub rollback_after_s: Option<f64>,
    /// The canary's invocations and failures in its last window before the verdict.
    pub canary_ok: u64,
    pub canary_failed: u64,
    /// From the activation of the canary to its first message served, ms.
    pub first_served_ms: Option<f64>,
    /// Small messages' end-to-end p99 (send to `notify` done), ms: over `--baseline` before the
    /// deploy, and from the canary's activation until the load stopped.
    pub p99_before_ms: u64,
    pub p99_during_ms: u64,
    pub samples_before: u64,
    pub samples_during: u64,
    /// The oldest waiting message of inbound, the most seen, ms.
    pub max_oldest_ms: u64,
    pub processed: BTreeMap<String, u64>,
    pub expected: BTreeMap<String, u64>,
    pub all_completed: bool,
    pub dead_lettered: u64,
    pub drained: bool,
    pub backlog_left: u64,
    pub data_dir: Option<String>,
}

/// The n-th message: every [`LARGE_EVERY`]th is a large-format event (attachments).
fn body(n: u64) -> Vec<u8> {
    let small = message(n);
    if !n.is_multiple_of(LARGE_EVERY) {
        return small;
    }
    let mut v: serde_json::Value = serde_json::from_slice(&small).expect("generated JSON");
    let data: Vec<u8> = (0..LARGE_BYTES)
        .map(|i| (i as u64).wrapping_mul(n | 1).wrapping_mul(0x9E37) as u8)
        .collect();
    v["attachments"] = serde_json::json!([{
        "name": format!("scan-{n}.pdf"),
        "content_type": "application/pdf",
        "data": base64::engine::general_purpose::STANDARD.encode(data),
    }]);
    v.to_string().into_bytes()
}

/// Why the figures fail the drill; empty when they pass.
pub fn reasons(f: &Figures, max_stall: Duration, tolerance: f64) -> Vec<String> {
    let mut r = Vec::new();
    if f.accepted == 0 {
        r.push("no message was accepted".into());
    }
    if !f.gate_refused {
        r.push("the replay gate did not refuse the bad release".into());
    }
    if !f.canary_rolled_back {
        r.push("the canary was not rolled back automatically".into());
    }
    if f.bad_became_stable {
        r.push("the bad release became stable".into());
    }
    if f.dead_lettered > 0 {
        r.push(format!("{} message(s) dead-lettered", f.dead_lettered));
    }
    if !f.all_completed {
        r.push("not every accepted message completed at every last stage".into());
    }
    if !f.drained {
        r.push(format!(
            "the backlog did not drain ({} left)",
            f.backlog_left
        ));
    }
    if f.max_oldest_ms > max_stall.as_millis() as u64 {
        r.push(format!(
            "{ENTRY}'s queue stalled: its oldest message waited {} ms (limit {})",
            f.max_oldest_ms,
            secs(max_stall)
        ));
    }
    let limit = (f.p99_before_ms as f64 * (1.0 + tolerance)).ceil() as u64;
    if f.samples_during > 0 && f.p99_during_ms > limit {
        r.push(format!(
            "small messages' p99 grew from {} ms to {} ms (limit {limit} ms)",
            f.p99_before_ms, f.p99_during_ms
        ));
    }
    r
}

impl BadRelease {
    fn module_path(&self, manifest_dir: &std::path::Path) -> PathBuf {
        self.module.clone().unwrap_or_else(|| {
            manifest_dir.join("functions/target/wasm32-wasip2/release/inbound_next.wasm")
        })
    }
}

/// Uploads `bytes` as a new version of inbound over the API; the status and the JSON answer.
async fn deploy(lb: &Loopback, bytes: &[u8], replay: bool) -> Result<(u16, serde_json::Value)> {
    let path = format!("/v1/functions/{ENTRY}/versions?replay={replay}");
    let a = crate::client::call_typed(
        &lb.addr.to_string(),
        Some(&lb.admin_key),
        None,
        Method::POST,
        &path,
        "application/wasm",
        bytes.to_vec(),
    )
    .await?;
    let v = serde_json::from_slice(&a.body).unwrap_or_default();
    Ok((a.status.as_u16(), v))
}

fn notify_counts(lb: &Loopback) -> LatencyCounts {
    lb.platform
        .pools()
        .get(SINK)
        .map(|p| p.latency_counts())
        .unwrap_or_default()
}

#[async_trait]
impl Drill for BadRelease {
    fn common(&self) -> &Common {
        &self.common
    }

    async fn run(&self, progress: &mut Progress) -> Result<Outcome> {
        let c = &self.common;
        if !(0.0..=10.0).contains(&self.p99_tolerance) {
            return Err(Error::Invalid("--p99-tolerance must be 0 to 10".into()));
        }
        let mut manifest = c.load_manifest()?;
        let per_message = completions_per_message(&manifest, ENTRY).map_err(|e| {
            Error::Invalid(format!(
                "{NAME} deploys a new `{ENTRY}` of the sample pipeline: {e}"
            ))
        })?;
        let module = self.module_path(&manifest.base_dir);
        let bad = std::fs::read(&module).map_err(|e| {
            Error::io(
                format!(
                    "reading the bad release {} (build the guests: ./scripts/up.sh does, or pass --module)",
                    module.display()
                ),
                e,
            )
        })?;
        let spec = manifest
            .functions
            .get_mut(ENTRY)
            .ok_or_else(|| Error::Invalid(format!("the manifest has no `{ENTRY}`")))?;
        spec.canary = CanarySpec {
            steps: vec![25.0, 50.0, 100.0],
            window_s: self.window.as_secs().max(1),
            ..Default::default()
        };
        let lb = Loopback::start(NAME, manifest, c, StartOptions::default()).await?;
        progress.note(&format!(
            "{NAME}: pipeline on http://{} (embedded backend, data in {}), {} msg/s to {ENTRY}, 1 in {LARGE_EVERY} a large event",
            lb.addr,
            lb.data_dir().display(),
            c.rate
        ));
        let mut sender = Sender::new(&lb.addr.to_string(), ENTRY)
            .with_key(Some(&lb.admin_key))
            .with_bodies(body);
        let start = Instant::now();
        progress.restart_clock();
        let mut f = Figures {
            rate: c.rate,
            warmup_s: c.warmup.as_secs_f64(),
            ..Default::default()
        };
        let mut tick = tokio::time::interval(STEP);
        let mut next_sample = Duration::ZERO;
        let mut before_from: Option<LatencyCounts> = None;
        let mut before_to: Option<LatencyCounts> = None;
        let mut canary_at: Option<Instant> = None;
        let mut during_from: Option<LatencyCounts> = None;
        let mut verdict_at: Option<Instant> = None;
        let mut phase = "warm-up";
        loop {
            tick.tick().await;
            let t = start.elapsed();
            sender.send_up_to((c.rate * t.as_secs_f64()).floor() as u64);
            if before_from.is_none() && t >= c.warmup {
                before_from = Some(notify_counts(&lb));
                phase = "baseline";
            }
            if before_to.is_none() && t >= c.warmup + self.baseline {
                before_to = Some(notify_counts(&lb));
                phase = "gate";
                progress.show(phase, "deploying the bad release with the replay gate");
                let (code, v) = deploy(&lb, &bad, true).await?;
                f.gate_refused = code == 422;
                f.gate_events = v["replay"]["regressions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|r| r["event"].as_str().map(str::to_string))
                    .collect();
                progress.show(
                    phase,
                    &format!(
                        "answered {code}: {}",
                        v["error"].as_str().unwrap_or("(deployed)")
                    ),
                );
                if !f.gate_refused {
                    verdict_at = Some(Instant::now());
                } else {
                    phase = "canary";
                    let (code, v) = deploy(&lb, &bad, false).await?;
                    if code != 201 {
                        return Err(Error::Invalid(format!(
                            "deploying without the gate answered {code}: {v}"
                        )));
                    }
                    canary_at = Some(Instant::now());
                    // The bad version runs from here; the deploys' compiling is not its cost.
                    during_from = Some(notify_counts(&lb));
                    progress.show(
                        phase,
                        &format!("release {} on canary at {}%", v["release"], v["share_pct"]),
                    );
                }
            }
            if let Some(at) = canary_at
                && verdict_at.is_none()
                && t >= next_sample
            {
                next_sample = t + SAMPLE_EVERY;
                let view = lb.platform.releases().view(ENTRY).await?;
                if let Some(w) = &view.window {
                    f.canary_ok = w.canary_ok;
                    f.canary_failed = w.canary_failed;
                }
                if view.first_served_ms.is_some() {
                    f.first_served_ms = view.first_served_ms;
                }
                let rec = &view.record;
                if rec.stable != 1 {
                    f.bad_became_stable = true;
                    verdict_at = Some(Instant::now());
                } else if rec.canary.is_none() {
                    let v = rec.versions.iter().find(|v| v.release != 1);
                    f.canary_rolled_back =
                        v.is_some_and(|v| v.state == crate::releases::State::RolledBack);
                    f.rollback_reason = v.and_then(|v| v.reason.clone());
                    f.rollback_after_s = Some(at.elapsed().as_secs_f64());
                    verdict_at = Some(Instant::now());
                    phase = "after";
                } else if at.elapsed() > self.verdict_timeout {
                    verdict_at = Some(Instant::now());
                }
                let st = lb.platform.status().await?;
                let line = format!(
                    "accepted {:>6}  queued {:>5}  canary {} ok / {} failed",
                    sender.counts().accepted,
                    backlog(&st),
                    f.canary_ok,
                    f.canary_failed
                );
                progress.show(phase, &line);
            }
            if t.as_millis() % 1000 < STEP.as_millis() {
                let st = lb.platform.status().await?;
                if let Some(inb) = st.functions.iter().find(|x| x.name == ENTRY) {
                    f.max_oldest_ms = f.max_oldest_ms.max(inb.oldest_age_ms.unwrap_or(0));
                }
                if canary_at.is_none() {
                    let line = format!(
                        "accepted {:>6}  completed {:>6}  queued {:>5}",
                        sender.counts().accepted,
                        completed(&st, &per_message),
                        backlog(&st)
                    );
                    progress.show(phase, &line);
                }
            }
            if verdict_at.is_some_and(|v| v.elapsed() >= self.load_after) {
                break;
            }
        }
        let during = notify_counts(&lb);
        let sent = sender.finish().await;
        let drained = wait_drained(&lb.platform, c.drain_timeout, &mut |st| {
            progress.show("drain", &format!("queued {}", backlog(st)));
        })
        .await?;
        progress.finish();
        let status = lb.platform.status().await?;
        let (from, to) = (
            before_from.unwrap_or_default(),
            before_to.unwrap_or_default(),
        );
        f.p99_before_ms = to.quantile_since(&from, 0.99);
        f.samples_before = to.total() - from.total();
        let since = during_from.unwrap_or_else(|| to.clone());
        f.p99_during_ms = during.quantile_since(&since, 0.99);
        f.samples_during = during.total() - since.total();
        f.accepted = sent.accepted;
        f.send_errors = sent.errors;
        f.large_sent = sender_large(sent.accepted + sent.errors + sent.skipped);
        f.processed = processed(&status);
        f.expected = per_message
            .iter()
            .map(|(sink, per)| (sink.clone(), sent.accepted * per))
            .collect();
        f.all_completed = f
            .expected
            .iter()
            .all(|(sink, due)| f.processed.get(sink).copied().unwrap_or(0) >= *due);
        f.dead_lettered = dead_letters(&status);
        f.drained = drained.is_some();
        f.backlog_left = backlog(&status);
        f.data_dir = lb.stop().await.map(|p| p.display().to_string());
        let reasons = reasons(&f, self.max_stall, self.p99_tolerance);
        Outcome::new(NAME, headline(&f), lines(&f), reasons, &f)
    }
}

fn sender_large(issued: u64) -> u64 {
    issued / LARGE_EVERY
}

fn headline(f: &Figures) -> String {
    format!(
        "{} msg/s to {ENTRY} (1 in {LARGE_EVERY} a large event); after {} warm-up a release that traps on large events was deployed, with the replay gate and then without",
        f.rate,
        secs(Duration::from_secs_f64(f.warmup_s))
    )
}

fn lines(f: &Figures) -> Vec<(String, String)> {
    let yes = |b: bool| if b { "yes" } else { "NO" };
    vec![
        (
            "messages accepted".into(),
            format!(
                "{} ({} large; {} send errors)",
                f.accepted, f.large_sent, f.send_errors
            ),
        ),
        (
            "replay gate refused it".into(),
            format!("{} ({})", yes(f.gate_refused), f.gate_events.join(", ")),
        ),
        (
            "canary rolled back".into(),
            format!(
                "{} after {} ({})",
                yes(f.canary_rolled_back),
                f.rollback_after_s
                    .map_or("-".into(), |s| secs(Duration::from_secs_f64(s))),
                f.rollback_reason.as_deref().unwrap_or("-")
            ),
        ),
        (
            "canary's last window".into(),
            format!(
                "{} ok, {} failed (each ran again on the stable version)",
                f.canary_ok, f.canary_failed
            ),
        ),
        (
            "canary's first message".into(),
            f.first_served_ms
                .map_or("-".into(), |ms| format!("{ms:.1} ms after its activation")),
        ),
        (
            "small messages' p99".into(),
            format!(
                "{} ms while the bad release ran vs {} ms in the baseline before it ({} / {} samples)",
                f.p99_during_ms, f.p99_before_ms, f.samples_during, f.samples_before
            ),
        ),
        (
            "inbound's oldest message".into(),
            format!("{} ms at most", f.max_oldest_ms),
        ),
        (
            "completed end to end".into(),
            format!(
                "{}: {}",
                if f.all_completed { "all" } else { "NOT all" },
                f.expected
                    .iter()
                    .map(|(s, due)| format!(
                        "{s} {} of {due}",
                        f.processed.get(s).copied().unwrap_or(0)
                    ))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ),
        ("dead-lettered".into(), f.dead_lettered.to_string()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_message_in_a_hundred_is_a_large_event() {
        assert!(body(1).len() < 1024);
        assert!(body(100).len() > 64 * 1024);
        let v: serde_json::Value = serde_json::from_slice(&body(200)).unwrap();
        assert_eq!(v["attachments"][0]["content_type"], "application/pdf");
    }

    #[test]
    fn a_passing_run_has_no_reasons_and_a_promoted_bad_release_fails() {
        let mut f = Figures {
            accepted: 100,
            gate_refused: true,
            canary_rolled_back: true,
            all_completed: true,
            drained: true,
            p99_before_ms: 10,
            p99_during_ms: 12,
            samples_during: 50,
            ..Default::default()
        };
        assert!(reasons(&f, Duration::from_secs(5), 0.2).is_empty());
        f.bad_became_stable = true;
        f.p99_during_ms = 20;
        let r = reasons(&f, Duration::from_secs(5), 0.2);
        assert_eq!(r.len(), 2, "{r:?}");
    }
}
