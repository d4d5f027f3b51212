//! `levee drill store-outage`: the kv store behind the cache goes down under steady load, as the
//! cache node did in the November 2019 incident (seed 001: connections were not dropped and
//! pending calls piled up in memory until the app crashed).
//!
//! Timeline: `--warmup` healthy; then the store hangs (calls never answer) for the first half of
//! `--duration` and fails every call for the second half; then it heals. The load goes on
//! throughout and for `--load-after` past healing, then stops, and the drill waits for the
//! backlog to drain. It passes when nothing was dead-lettered, every accepted message completed
//! at every last stage, the backlog drained within `--drain-timeout`, and the store never held
//! more calls at once than the cache's `max_concurrency`.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use serde::Serialize;
use tokio::time::Instant;

use super::{
    Common, Drill, Loopback, Outcome, Progress, backlog, completed, completions_per_message,
    dead_letters, peak_rss_mib, processed, secs, wait_drained,
};
use crate::platform::{StartOptions, Status};
use crate::scaling::load::{MAX_DURATION, Sender};
use crate::store::FaultStats;
use crate::{Error, Result};

/// The drill's name.
pub const NAME: &str = "store-outage";
/// Where the load goes: the sample pipeline's entry.
pub const ENTRY: &str = "inbound";
/// How often sends are paced.
const STEP: Duration = Duration::from_millis(20);
/// How often the platform's status is read while the load runs.
const SAMPLE_EVERY: Duration = Duration::from_secs(1);

/// The kv store hangs, then fails every call, under steady load; then it heals and the backlog
/// must drain with nothing dead-lettered.
#[derive(Debug, clap::Args)]
#[command(
    long_about = "The kv store hangs, then fails every call, under steady load; then it heals and \
the backlog must drain with nothing dead-lettered.\n\n\
Starts the manifest's pipeline in this process (embedded backend in a fresh temporary data \
directory, HTTP API on 127.0.0.1 at a free port) with a fault injector between the cache and the \
store, and sends generated inbound messages at --rate. Timeline: --warmup healthy; the store \
hangs for the first half of --duration and fails every call for the second half; it heals; the \
load goes on for --load-after, stops, and the backlog drains.\n\n\
Pass: 0 dead letters, every accepted message completed at every last stage, drained within \
--drain-timeout, and store calls held at once never above the cache's max_concurrency. Exit code \
0 on pass, 1 on fail."
)]
pub struct StoreOutage {
    /// How long the store is down: it hangs for the first half and fails every call for the second.
    #[arg(long, default_value = "60s", value_parser = super::parse_duration, value_name = "DURATION")]
    pub duration: Duration,
    /// How long the load goes on after the store heals, before it stops and the backlog drains.
    #[arg(long, default_value = "5s", value_parser = super::parse_duration, value_name = "DURATION")]
    pub load_after: Duration,
    #[command(flatten)]
    pub common: Common,
}

/// What the drill measured (the JSON line's fields after `drill`, `verdict` and `reasons`).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Figures {
    /// Load, msg/s.
    pub rate: f64,
    pub warmup_s: f64,
    /// The whole outage: `hang_s` + `fail_s`.
    pub outage_s: f64,
    pub hang_s: f64,
    pub fail_s: f64,
    pub load_after_s: f64,
    /// Messages the API answered 202 for.
    pub accepted: u64,
    /// Requests that failed or got another answer (not accepted, so not expected to complete).
    pub send_errors: u64,
    /// Messages not sent because too many requests were already out.
    pub send_skipped: u64,
    /// Messages each function completed.
    pub processed: BTreeMap<String, u64>,
    /// Completions due at each last stage: accepted × paths from `inbound` to it.
    pub expected: BTreeMap<String, u64>,
    /// Accepted messages completed at every last stage (the least over them).
    pub completed: u64,
    /// Whether every last stage completed at least what was due.
    pub all_completed: bool,
    /// Dead letters over every function.
    pub dead_lettered: u64,
    /// Dead letters per function.
    pub dlq: BTreeMap<String, u64>,
    /// Messages made visible again after a failed attempt, over every function.
    pub retried: u64,
    /// The most calls held inside the faulty store at once (hung, failing or working).
    pub store_calls_peak: u64,
    /// The cache's bound on store calls in flight (`[cache] max_concurrency`).
    pub store_max_concurrency: u64,
    /// Calls that reached the faulty store.
    pub store_calls: u64,
    /// Calls it failed on purpose.
    pub store_injected_errors: u64,
    /// Store calls the cache gave up on (its `store_timeout_ms`).
    pub store_timeouts: u64,
    /// Calls the cache refused without reaching the store (breaker open or bound reached).
    pub store_rejected: u64,
    /// Times the cache's circuit breaker opened.
    pub breaker_opens: u64,
    /// The largest backlog seen (visible + in flight + delayed over every function).
    pub peak_backlog: u64,
    /// The process's peak resident memory (VmHWM), MiB; absent without /proc.
    pub peak_rss_mib: Option<f64>,
    /// Whether the backlog drained within the timeout.
    pub drained: bool,
    /// From healing to drained, s; absent when it did not drain.
    pub drain_s: Option<f64>,
    pub drain_timeout_s: f64,
    /// Backlog left at the end (0 when drained).
    pub backlog_left: u64,
    /// The data directory, when `--keep-data` kept it.
    pub data_dir: Option<String>,
}

/// Why the figures fail the drill; empty when they pass.
pub fn reasons(f: &Figures) -> Vec<String> {
    let mut r = Vec::new();
    if f.accepted == 0 {
        r.push("no message was accepted".to_string());
    }
    if f.dead_lettered > 0 {
        r.push(format!(
            "{} message(s) dead-lettered ({})",
            f.dead_lettered,
            nonzero(&f.dlq)
        ));
    }
    for (sink, due) in &f.expected {
        let done = f.processed.get(sink).copied().unwrap_or(0);
        if done < *due {
            r.push(format!("{sink} completed {done} of {due}"));
        }
    }
    if !f.drained {
        r.push(format!(
            "the backlog did not drain within {} s ({} message(s) left)",
            f.drain_timeout_s, f.backlog_left
        ));
    }
    if f.store_calls_peak > f.store_max_concurrency {
        r.push(format!(
            "the store held {} calls at once, above the cache's max_concurrency {}",
            f.store_calls_peak, f.store_max_concurrency
        ));
    }
    r
}

fn nonzero(counts: &BTreeMap<String, u64>) -> String {
    let parts: Vec<String> = counts
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(name, n)| format!("{name} {n}"))
        .collect();
    parts.join(", ")
}

fn listed(counts: &BTreeMap<String, u64>) -> String {
    let parts: Vec<String> = counts.iter().map(|(k, n)| format!("{k} {n}")).collect();
    parts.join(", ")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    WarmUp,
    Hang,
    Fail,
    Recover,
}

impl Phase {
    fn label(self) -> &'static str {
        match self {
            Phase::WarmUp => "warm-up",
            Phase::Hang => "hang",
            Phase::Fail => "fail",
            Phase::Recover => "recover",
        }
    }
}

/// Running maxima over the status readings.
#[derive(Debug, Default)]
struct Peaks {
    backlog: u64,
}

fn progress_line(
    status: &Status,
    per: &BTreeMap<String, u64>,
    accepted: u64,
    f: FaultStats,
) -> String {
    format!(
        "accepted {accepted:>7}  completed {:>7}  queued {:>6}  dlq {:>5}  store calls {:>3} (peak {})",
        completed(status, per),
        backlog(status),
        dead_letters(status),
        f.in_flight,
        f.peak_in_flight
    )
}

impl StoreOutage {
    fn validate(&self) -> Result<()> {
        if self.duration.is_zero() || self.duration > MAX_DURATION {
            return Err(Error::Invalid(format!(
                "--duration must be above 0 and at most {}, got {}",
                secs(MAX_DURATION),
                secs(self.duration)
            )));
        }
        if self.load_after > MAX_DURATION {
            return Err(Error::Invalid(format!(
                "--load-after must be at most {}, got {}",
                secs(MAX_DURATION),
                secs(self.load_after)
            )));
        }
        Ok(())
    }
}

#[async_trait]
impl Drill for StoreOutage {
    fn common(&self) -> &Common {
        &self.common
    }

    async fn run(&self, progress: &mut Progress) -> Result<Outcome> {
        self.validate()?;
        let c = &self.common;
        let manifest = c.load_manifest()?;
        let per_message = completions_per_message(&manifest, ENTRY).map_err(|e| {
            Error::Invalid(format!(
                "{NAME} sends inbound customer messages to `{ENTRY}` of the sample pipeline: {e}"
            ))
        })?;
        let max_concurrency = manifest.cache.max_concurrency as u64;
        let lb = Loopback::start(
            NAME,
            manifest,
            c,
            StartOptions {
                inject_store_faults: true,
                ..Default::default()
            },
        )
        .await?;
        let faults = lb.platform.store_faults().cloned().ok_or_else(|| {
            Error::Invalid("the platform started without its fault injector".into())
        })?;
        progress.note(&format!(
            "{NAME}: pipeline on http://{} (embedded backend, data in {}), {} msg/s to {ENTRY}",
            lb.addr,
            lb.data_dir().display(),
            c.rate
        ));

        let hang = self.duration / 2;
        let (hang_at, fail_at) = (c.warmup, c.warmup + hang);
        let heal_at = c.warmup + self.duration;
        let stop_at = heal_at + self.load_after;
        let mut sender = Sender::new(&lb.addr.to_string(), ENTRY).with_key(Some(&lb.admin_key));
        let mut peaks = Peaks::default();
        let mut phase = Phase::WarmUp;
        let mut healed_at = None;
        let start = Instant::now();
        progress.restart_clock();
        let mut next_sample = Duration::ZERO;
        let mut tick = tokio::time::interval(STEP);
        loop {
            tick.tick().await;
            let t = start.elapsed();
            let was = phase;
            if phase == Phase::WarmUp && t >= hang_at {
                faults.hang();
                phase = Phase::Hang;
            }
            if phase == Phase::Hang && t >= fail_at {
                // Failing first, so calls the hang held are failed as they are let go.
                faults.fail_always();
                faults.release();
                phase = Phase::Fail;
            }
            if phase == Phase::Fail && t >= heal_at {
                faults.heal();
                healed_at = Some(Instant::now());
                phase = Phase::Recover;
            }
            if phase != was {
                // A reading at once, so every phase shows at least one line, however short.
                next_sample = t;
            }
            if t >= stop_at {
                break;
            }
            sender.send_up_to((c.rate * t.as_secs_f64()).floor() as u64);
            if t >= next_sample {
                next_sample += SAMPLE_EVERY;
                let accepted = sender.counts().accepted;
                match lb.platform.status().await {
                    Ok(st) => {
                        peaks.backlog = peaks.backlog.max(backlog(&st));
                        let line = progress_line(&st, &per_message, accepted, faults.stats());
                        progress.show(phase.label(), &line);
                    }
                    Err(e) => progress.show(phase.label(), &format!("status unavailable: {e}")),
                }
            }
        }
        let healed_at = healed_at.unwrap_or_else(Instant::now);
        let sent = sender.finish().await;

        let drained_at = wait_drained(&lb.platform, c.drain_timeout, &mut |st| {
            peaks.backlog = peaks.backlog.max(backlog(st));
            let line = progress_line(st, &per_message, sent.accepted, faults.stats());
            progress.show("drain", &line);
        })
        .await?;
        progress.finish();
        let status = lb.platform.status().await?;
        let fstats = faults.stats();
        let cache = status.stores.first().map(|s| s.cache.clone());
        let processed = processed(&status);
        let expected: BTreeMap<String, u64> = per_message
            .iter()
            .map(|(sink, per)| (sink.clone(), sent.accepted * per))
            .collect();
        let mut f = Figures {
            rate: c.rate,
            warmup_s: c.warmup.as_secs_f64(),
            outage_s: self.duration.as_secs_f64(),
            hang_s: hang.as_secs_f64(),
            fail_s: (self.duration - hang).as_secs_f64(),
            load_after_s: self.load_after.as_secs_f64(),
            accepted: sent.accepted,
            send_errors: sent.errors,
            send_skipped: sent.skipped,
            completed: completed(&status, &per_message),
            all_completed: expected
                .iter()
                .all(|(sink, due)| processed.get(sink).copied().unwrap_or(0) >= *due),
            processed,
            expected,
            dead_lettered: dead_letters(&status),
            dlq: status
                .functions
                .iter()
                .map(|f| (f.name.clone(), f.dlq))
                .collect(),
            retried: status.functions.iter().map(|f| f.retried).sum(),
            store_calls_peak: fstats.peak_in_flight,
            store_max_concurrency: max_concurrency,
            store_calls: fstats.calls,
            store_injected_errors: fstats.injected_errors,
            store_timeouts: cache.as_ref().map_or(0, |m| m.timeouts),
            store_rejected: cache.as_ref().map_or(0, |m| m.rejected),
            breaker_opens: cache.as_ref().map_or(0, |m| m.breaker_opens),
            peak_backlog: peaks.backlog,
            peak_rss_mib: None,
            drained: drained_at.is_some(),
            drain_s: drained_at.map(|at| {
                let s = at.saturating_duration_since(healed_at).as_secs_f64();
                (s * 1000.0).round() / 1000.0
            }),
            drain_timeout_s: c.drain_timeout.as_secs_f64(),
            backlog_left: backlog(&status),
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
        "{} warm-up, the kv store hung for {} then failed every call for {}, then healed; \
         {} msg/s to {ENTRY} until {} after healing",
        secs(Duration::from_secs_f64(f.warmup_s)),
        secs(Duration::from_secs_f64(f.hang_s)),
        secs(Duration::from_secs_f64(f.fail_s)),
        f.rate,
        secs(Duration::from_secs_f64(f.load_after_s)),
    )
}

fn lines(f: &Figures) -> Vec<(String, String)> {
    let end_to_end: Vec<String> = f
        .expected
        .iter()
        .map(|(sink, due)| {
            let done = f.processed.get(sink).copied().unwrap_or(0);
            let extra = if done > *due {
                format!(" (+{} extra)", done - due)
            } else {
                String::new()
            };
            format!("{sink} {done} of {due}{extra}")
        })
        .collect();
    let mut v = vec![
        (
            "messages accepted".to_string(),
            format!(
                "{} (202 from the API; {} send errors, {} skipped)",
                f.accepted, f.send_errors, f.send_skipped
            ),
        ),
        (
            "completed end to end".to_string(),
            format!(
                "{}: {}",
                if f.all_completed { "all" } else { "NOT all" },
                end_to_end.join(", ")
            ),
        ),
        ("processed per function".to_string(), listed(&f.processed)),
        (
            "dead-lettered".to_string(),
            if f.dead_lettered == 0 {
                "0".to_string()
            } else {
                format!("{} ({})", f.dead_lettered, nonzero(&f.dlq))
            },
        ),
        ("retried".to_string(), f.retried.to_string()),
        (
            "store calls held at once".to_string(),
            format!(
                "{} at peak (cache bound max_concurrency {})",
                f.store_calls_peak, f.store_max_concurrency
            ),
        ),
        (
            "kv store, whole run".to_string(),
            format!(
                "{} calls reached it, {} failed on purpose; the cache timed out {}, refused {}, \
                 its breaker opened {} time(s)",
                f.store_calls,
                f.store_injected_errors,
                f.store_timeouts,
                f.store_rejected,
                f.breaker_opens
            ),
        ),
        ("peak backlog".to_string(), f.peak_backlog.to_string()),
        (
            "peak RSS".to_string(),
            f.peak_rss_mib
                .map_or("unknown (no /proc)".into(), |m| format!("{m:.1} MiB")),
        ),
        (
            "drain after healing".to_string(),
            match f.drain_s {
                Some(s) => format!("{s:.1} s (timeout {} s)", f.drain_timeout_s),
                None => format!(
                    "not drained within {} s ({} left)",
                    f.drain_timeout_s, f.backlog_left
                ),
            },
        ),
    ];
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
            processed: BTreeMap::from([
                ("inbound".into(), 100),
                ("notify".into(), 100),
                ("search-index".into(), 101),
            ]),
            expected: BTreeMap::from([("notify".into(), 100), ("search-index".into(), 100)]),
            all_completed: true,
            dlq: BTreeMap::from([("inbound".into(), 0), ("notify".into(), 0)]),
            store_calls_peak: 64,
            store_max_concurrency: 64,
            drained: true,
            drain_s: Some(3.0),
            drain_timeout_s: 300.0,
            ..Default::default()
        }
    }

    #[test]
    fn a_clean_run_passes() {
        assert_eq!(reasons(&passing()), Vec::<String>::new());
    }

    #[test]
    fn each_broken_promise_is_a_reason() {
        let mut f = passing();
        f.dead_lettered = 3;
        f.dlq.insert("inbound".into(), 3);
        f.processed.insert("notify".into(), 97);
        f.drained = false;
        f.backlog_left = 12;
        f.store_calls_peak = 65;
        let r = reasons(&f);
        assert_eq!(r.len(), 4, "{r:?}");
        assert!(
            r[0].contains("3 message(s) dead-lettered (inbound 3)"),
            "{r:?}"
        );
        assert!(r[1].contains("notify completed 97 of 100"), "{r:?}");
        assert!(
            r[2].contains("did not drain") && r[2].contains("12"),
            "{r:?}"
        );
        assert!(
            r[3].contains("65") && r[3].contains("max_concurrency 64"),
            "{r:?}"
        );
        let mut f = passing();
        f.accepted = 0;
        assert!(reasons(&f)[0].contains("no message was accepted"));
    }

    #[test]
    fn the_report_names_every_figure() {
        let f = passing();
        let text: String = lines(&f)
            .iter()
            .map(|(l, v)| format!("{l}: {v}\n"))
            .collect();
        for want in [
            "messages accepted: 100",
            "completed end to end: all: notify 100 of 100, search-index 101 of 100 (+1 extra)",
            "dead-lettered: 0",
            "store calls held at once: 64 at peak (cache bound max_concurrency 64)",
            "drain after healing: 3.0 s",
            "peak RSS",
        ] {
            assert!(text.contains(want), "{want} in\n{text}");
        }
    }
}
