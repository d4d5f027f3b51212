//! `levee drill provider-limit`: the notification provider hits its limit, as the cloud
//! provider's throughput limit did in May 2019 (seed: every event backed up for four hours and
//! the messages were replayed after).
//!
//! Starts a provider stub on loopback ([`super::provider`]) accepting `--provider-rate`
//! requests per second, and the manifest's pipeline with `notify` delivering there (its
//! `provider_url` config and an outbound grant at 90% of the provider's rate, so jitter between
//! the two clocks cannot push a second over). Timeline: `--warmup` healthy; the provider answers
//! 429 to everything for `--duration` (with `Retry-After: --retry-after`, none when 0); it
//! recovers; the load goes on for `--load-after`, stops, and the backlog drains.
//!
//! Pass: 0 dead letters, every accepted message completed at every last stage; the provider
//! never got a request above its rate; every notification delivered exactly once (one delivery
//! per idempotency key, no notification under two keys, every request keyed); and once the
//! provider recovered, the backlog drained at no less than 75% of the provider's rate.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use serde::Serialize;
use tokio::time::Instant;

use super::provider::{Provider, ProviderStats};
use super::{
    Common, Drill, Loopback, Outcome, Progress, backlog, completed, completions_per_message,
    dead_letters, peak_rss_mib, processed, secs, wait_drained,
};
use crate::outbound::GrantSpec;
use crate::platform::{StartOptions, Status};
use crate::scaling::load::{MAX_DURATION, Sender};
use crate::{Error, Result};

/// The drill's name.
pub const NAME: &str = "provider-limit";
/// Where the load goes.
pub const ENTRY: &str = "inbound";
/// The function that delivers to the provider.
pub const DELIVERER: &str = "notify";
/// The grant's rate as a share of the provider's.
pub const GRANT_SHARE: f64 = 0.9;
/// The least drain rate that passes, as a share of the provider's rate.
pub const DRAIN_SHARE: f64 = 0.75;
const STEP: Duration = Duration::from_millis(20);
const SAMPLE_EVERY: Duration = Duration::from_secs(1);

/// The notification provider answers 429 for a while under steady load: the backlog must wait
/// in the queue, nothing dead-lettered or delivered twice, and drain at the provider's rate.
#[derive(Debug, clap::Args)]
#[command(
    long_about = "The notification provider answers 429 for a while under steady load: the backlog \
must wait in the queue, nothing dead-lettered or delivered twice, and drain at the provider's \
rate.\n\n\
Starts a provider stub on loopback that accepts --provider-rate requests per second and honours \
idempotency keys, and the manifest's pipeline in this process (embedded backend, fresh data \
directory, HTTP API on 127.0.0.1) with notify delivering to it (outbound grant at 90% of the \
provider's rate). Timeline: --warmup healthy; the provider answers 429 to everything for \
--duration (Retry-After: --retry-after, none when 0); it recovers; the load goes on for \
--load-after, stops, and the backlog drains.\n\n\
Pass: 0 dead letters; every accepted message completed; no request above the provider's rate; \
each notification delivered exactly once (one delivery per idempotency key, none under two \
keys); after recovery the backlog drained at 75% or more of the provider's rate. Exit code 0 on \
pass, 1 on fail."
)]
pub struct ProviderLimit {
    /// How long the provider answers 429 to everything.
    #[arg(long, default_value = "60s", value_parser = super::parse_duration, value_name = "DURATION")]
    pub duration: Duration,
    /// Requests per second the provider accepts (the grant gets 90% of it).
    #[arg(long, default_value_t = 400, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub provider_rate: u32,
    /// `Retry-After` seconds the provider sends with its 429s during the outage (0: none).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(0..=300))]
    pub retry_after: u64,
    /// How long the load goes on after the provider recovers.
    #[arg(long, default_value = "5s", value_parser = super::parse_duration, value_name = "DURATION")]
    pub load_after: Duration,
    #[command(flatten)]
    pub common: Common,
}

/// What the drill measured (the JSON line's fields after `drill`, `verdict` and `reasons`).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Figures {
    pub rate: f64,
    pub warmup_s: f64,
    pub outage_s: f64,
    pub load_after_s: f64,
    pub provider_rate: u32,
    pub grant_rate: f64,
    pub retry_after_s: u64,
    pub accepted: u64,
    pub send_errors: u64,
    pub expected: BTreeMap<String, u64>,
    pub processed: BTreeMap<String, u64>,
    pub all_completed: bool,
    pub dead_lettered: u64,
    /// `notify` invocations handed back without using an attempt (the provider's fault).
    pub held_without_attempt: u64,
    /// `notify` attempts that failed and counted.
    pub failed_attempts: u64,
    pub provider: ProviderStats,
    /// Notifications due: one per accepted message reaching `notify`.
    pub notifications_due: u64,
    pub peak_backlog: u64,
    /// From the provider's recovery to its first delivery after it, s.
    pub first_delivery_after_recovery_s: Option<f64>,
    /// Deliveries per second from the first after recovery until `notify`'s backlog emptied.
    pub drain_rate: Option<f64>,
    /// Over how long `drain_rate` was measured, s.
    pub drain_window_s: Option<f64>,
    pub drained: bool,
    /// From recovery to every queue empty, s.
    pub drain_s: Option<f64>,
    pub drain_timeout_s: f64,
    pub backlog_left: u64,
    pub peak_rss_mib: Option<f64>,
    pub data_dir: Option<String>,
}

/// Why the figures fail the drill; empty when they pass.
pub fn reasons(f: &Figures) -> Vec<String> {
    let mut r = Vec::new();
    let p = &f.provider;
    if f.accepted == 0 {
        r.push("no message was accepted".into());
    }
    if f.dead_lettered > 0 {
        r.push(format!("{} message(s) dead-lettered", f.dead_lettered));
    }
    if !f.drained {
        r.push(format!(
            "the backlog did not drain within {} s ({} left)",
            f.drain_timeout_s, f.backlog_left
        ));
    } else if !f.all_completed {
        r.push("not every accepted message completed at every last stage".into());
    }
    if p.over_limit > 0 || p.peak_per_second > f.provider_rate as u64 {
        r.push(format!(
            "{} request(s) above the provider's rate (peak {} in one second, limit {})",
            p.over_limit, p.peak_per_second, f.provider_rate
        ));
    }
    if p.delivered != f.notifications_due {
        r.push(format!(
            "{} notifications delivered, {} due",
            p.delivered, f.notifications_due
        ));
    }
    if p.ids_delivered_twice > 0 || p.distinct_ids != p.delivered {
        r.push(format!(
            "{} notification(s) delivered under two keys ({} distinct of {} deliveries)",
            p.ids_delivered_twice, p.distinct_ids, p.delivered
        ));
    }
    if p.missing_key > 0 {
        r.push(format!(
            "{} request(s) without an idempotency key",
            p.missing_key
        ));
    }
    if p.throttled == 0 {
        r.push("the provider's outage was never felt (no request got its 429)".into());
    }
    let floor = DRAIN_SHARE * f.provider_rate as f64;
    if let Some(rate) = f.drain_rate
        && rate < floor
    {
        r.push(format!(
            "the backlog drained at {rate:.0}/s, below {:.0}% of the provider's {}/s",
            DRAIN_SHARE * 100.0,
            f.provider_rate
        ));
    }
    r
}

fn notify_status(st: &Status) -> Option<&crate::platform::FunctionStatus> {
    st.functions.iter().find(|f| f.name == DELIVERER)
}

fn notify_backlog(st: &Status) -> u64 {
    notify_status(st).map_or(0, |f| f.visible + f.in_flight + f.delayed)
}

impl ProviderLimit {
    fn validate(&self) -> Result<()> {
        for (flag, d) in [
            ("--duration", self.duration),
            ("--load-after", self.load_after),
        ] {
            if d > MAX_DURATION {
                return Err(Error::Invalid(format!(
                    "{flag} must be at most {}, got {}",
                    secs(MAX_DURATION),
                    secs(d)
                )));
            }
        }
        if self.duration.is_zero() {
            return Err(Error::Invalid("--duration must be above 0".into()));
        }
        Ok(())
    }
}

/// One reading during recovery: provider time, deliveries so far, `notify`'s backlog.
#[derive(Debug, Clone, Copy)]
struct Reading {
    at: Duration,
    delivered: u64,
    backlog: u64,
}

/// Deliveries per second from the first reading after `recovered` that shows a new delivery to
/// the first one with `notify`'s backlog empty (None when that spans under 2 s: too little
/// backlog to measure a rate).
fn drain_rate(readings: &[Reading], recovered: Duration) -> Option<(f64, f64)> {
    let after: Vec<&Reading> = readings.iter().filter(|r| r.at >= recovered).collect();
    let first = after.windows(2).find(|w| w[1].delivered > w[0].delivered)?[0];
    let end = after
        .iter()
        .find(|r| r.at > first.at && r.backlog == 0)
        .or(after.last())?;
    let span = end.at.saturating_sub(first.at).as_secs_f64();
    if span < 2.0 {
        return None;
    }
    Some(((end.delivered - first.delivered) as f64 / span, span))
}

#[async_trait]
impl Drill for ProviderLimit {
    fn common(&self) -> &Common {
        &self.common
    }

    async fn run(&self, progress: &mut Progress) -> Result<Outcome> {
        self.validate()?;
        let c = &self.common;
        let mut manifest = c.load_manifest()?;
        let per_message = completions_per_message(&manifest, ENTRY).map_err(|e| {
            Error::Invalid(format!("{NAME} sends inbound messages to `{ENTRY}`: {e}"))
        })?;
        let provider = Provider::start(self.provider_rate).await?;
        let grant_rate = (self.provider_rate as f64 * GRANT_SHARE).max(0.5);
        let notify = manifest.functions.get_mut(DELIVERER).ok_or_else(|| {
            Error::Invalid(format!(
                "{NAME} needs the sample pipeline's `{DELIVERER}` (the manifest has none)"
            ))
        })?;
        notify.config.insert("provider_url".into(), provider.url());
        let mut grant = GrantSpec::new(&provider.origin());
        grant.rate = Some(grant_rate);
        grant.concurrency = 32;
        notify.outbound.retain(|g| g.url != grant.url);
        notify.outbound.push(grant);
        let lb = Loopback::start(NAME, manifest, c, StartOptions::default()).await?;
        progress.note(&format!(
            "{NAME}: pipeline on http://{} (data in {}), provider on {} accepting {}/s, \
             grant {grant_rate:.0}/s; {} msg/s to {ENTRY}",
            lb.addr,
            lb.data_dir().display(),
            provider.url(),
            self.provider_rate,
            c.rate
        ));

        let throttle_at = c.warmup;
        let recover_at = c.warmup + self.duration;
        let stop_at = recover_at + self.load_after;
        let retry_after = (self.retry_after > 0).then_some(self.retry_after);
        let mut sender = Sender::new(&lb.addr.to_string(), ENTRY).with_key(Some(&lb.admin_key));
        let mut peak_backlog = 0u64;
        let mut readings = Vec::new();
        let mut recovered: Option<(Instant, Duration)> = None;
        let mut phase = "warm-up";
        let start = Instant::now();
        progress.restart_clock();
        let mut next_sample = Duration::ZERO;
        let mut tick = tokio::time::interval(STEP);
        let mut record = |st: &Status, provider: &Provider, readings: &mut Vec<Reading>| {
            let b = notify_backlog(st);
            peak_backlog = peak_backlog.max(backlog(st));
            readings.push(Reading {
                at: provider.elapsed(),
                delivered: provider.stats().delivered,
                backlog: b,
            });
        };
        loop {
            tick.tick().await;
            let t = start.elapsed();
            if phase == "warm-up" && t >= throttle_at {
                provider.throttle(self.duration + Duration::from_secs(3600), retry_after);
                phase = "outage";
                next_sample = t;
            }
            if phase == "outage" && t >= recover_at {
                provider.recover();
                recovered = Some((Instant::now(), provider.elapsed()));
                phase = "recover";
                next_sample = t;
            }
            if t >= stop_at {
                break;
            }
            sender.send_up_to((c.rate * t.as_secs_f64()).floor() as u64);
            if t >= next_sample {
                next_sample += SAMPLE_EVERY;
                if let Ok(st) = lb.platform.status().await {
                    record(&st, &provider, &mut readings);
                    progress.show(
                        phase,
                        &line(&st, &per_message, sender.counts().accepted, &provider),
                    );
                }
            }
        }
        let sent = sender.finish().await;
        let (recovered_at, recovered_elapsed) =
            recovered.unwrap_or_else(|| (Instant::now(), provider.elapsed()));
        let drained_at = wait_drained(&lb.platform, c.drain_timeout, &mut |st| {
            record(st, &provider, &mut readings);
            progress.show("drain", &line(st, &per_message, sent.accepted, &provider));
        })
        .await?;
        progress.finish();
        let status = lb.platform.status().await?;
        let processed = processed(&status);
        let expected: BTreeMap<String, u64> = per_message
            .iter()
            .map(|(sink, per)| (sink.clone(), sent.accepted * per))
            .collect();
        let pstats = provider.stats();
        let first_delivery_after_recovery_s = first_delivery_after(&provider, recovered_elapsed);
        let drain = drain_rate(&readings, recovered_elapsed);
        let nf = notify_status(&status);
        let mut f = Figures {
            rate: c.rate,
            warmup_s: c.warmup.as_secs_f64(),
            outage_s: self.duration.as_secs_f64(),
            load_after_s: self.load_after.as_secs_f64(),
            provider_rate: self.provider_rate,
            grant_rate,
            retry_after_s: self.retry_after,
            accepted: sent.accepted,
            send_errors: sent.errors,
            all_completed: expected
                .iter()
                .all(|(sink, due)| processed.get(sink).copied().unwrap_or(0) >= *due),
            notifications_due: expected.get(DELIVERER).copied().unwrap_or(0),
            expected,
            processed,
            dead_lettered: dead_letters(&status),
            held_without_attempt: nf.map_or(0, |f| f.infra_failures),
            failed_attempts: nf.map_or(0, |f| f.failed),
            provider: pstats,
            peak_backlog,
            first_delivery_after_recovery_s,
            drain_rate: drain.map(|(r, _)| (r * 10.0).round() / 10.0),
            drain_window_s: drain.map(|(_, s)| (s * 10.0).round() / 10.0),
            drained: drained_at.is_some(),
            drain_s: drained_at.map(|at| {
                (at.saturating_duration_since(recovered_at).as_secs_f64() * 10.0).round() / 10.0
            }),
            drain_timeout_s: c.drain_timeout.as_secs_f64(),
            backlog_left: backlog(&status),
            peak_rss_mib: None,
            data_dir: None,
        };
        f.data_dir = lb.stop().await.map(|p| p.display().to_string());
        f.peak_rss_mib = peak_rss_mib().map(|m| (m * 10.0).round() / 10.0);
        let reasons = reasons(&f);
        Outcome::new(NAME, headline(&f), lines(&f), reasons, &f)
    }
}

/// Seconds from `recovered` to the provider's first delivery after it.
fn first_delivery_after(provider: &Provider, recovered: Duration) -> Option<f64> {
    provider
        .first_delivery_since(recovered)
        .map(|ms| ((ms as f64 / 1000.0 - recovered.as_secs_f64()) * 100.0).round() / 100.0)
}

fn line(st: &Status, per: &BTreeMap<String, u64>, accepted: u64, p: &Provider) -> String {
    let s = p.stats();
    format!(
        "accepted {accepted:>6}  completed {:>6}  notify queued {:>5}  dlq {:>3}  delivered {:>6}  429s {:>5}",
        completed(st, per),
        notify_backlog(st),
        dead_letters(st),
        s.delivered,
        s.throttled + s.over_limit
    )
}

fn headline(f: &Figures) -> String {
    format!(
        "{} warm-up, the provider ({}/s) answered 429 for {}{}, then recovered; {} msg/s to {ENTRY} until {} after",
        secs(Duration::from_secs_f64(f.warmup_s)),
        f.provider_rate,
        secs(Duration::from_secs_f64(f.outage_s)),
        if f.retry_after_s > 0 {
            format!(" (Retry-After: {})", f.retry_after_s)
        } else {
            " (no Retry-After)".into()
        },
        f.rate,
        secs(Duration::from_secs_f64(f.load_after_s)),
    )
}

fn lines(f: &Figures) -> Vec<(String, String)> {
    let p = &f.provider;
    let done: Vec<String> = f
        .expected
        .iter()
        .map(|(sink, due)| {
            format!(
                "{sink} {} of {due}",
                f.processed.get(sink).copied().unwrap_or(0)
            )
        })
        .collect();
    let mut v = vec![
        (
            "messages accepted".to_string(),
            format!("{} ({} send errors)", f.accepted, f.send_errors),
        ),
        (
            "completed end to end".to_string(),
            format!(
                "{}: {}",
                if f.all_completed { "all" } else { "NOT all" },
                done.join(", ")
            ),
        ),
        ("dead-lettered".to_string(), f.dead_lettered.to_string()),
        (
            "notify held without an attempt".to_string(),
            format!(
                "{} times ({} attempts failed and counted)",
                f.held_without_attempt, f.failed_attempts
            ),
        ),
        (
            "provider".to_string(),
            format!(
                "{} requests: {} delivered of {} due, {} replays recognised by key, {} got the outage's 429, {} above its rate",
                p.requests, p.delivered, f.notifications_due, p.replays, p.throttled, p.over_limit
            ),
        ),
        (
            "provider's busiest second".to_string(),
            format!(
                "{} requests (limit {}/s, grant {:.0}/s)",
                p.peak_per_second, f.provider_rate, f.grant_rate
            ),
        ),
        (
            "exactly once".to_string(),
            format!(
                "{} distinct notifications in {} deliveries, {} under two keys, {} without a key",
                p.distinct_ids, p.delivered, p.ids_delivered_twice, p.missing_key
            ),
        ),
        ("peak backlog".to_string(), f.peak_backlog.to_string()),
        (
            "after recovery".to_string(),
            format!(
                "first delivery after {}, drained at {} over {}",
                f.first_delivery_after_recovery_s
                    .map_or("-".into(), |s| format!("{s:.2} s")),
                f.drain_rate
                    .map_or("- (backlog too small to measure)".into(), |r| format!(
                        "{r:.0}/s ({:.0}% of the provider's rate)",
                        100.0 * r / f.provider_rate as f64
                    )),
                f.drain_window_s.map_or("-".into(), |s| format!("{s:.1} s")),
            ),
        ),
        (
            "drain after recovery".to_string(),
            match f.drain_s {
                Some(s) => format!("{s:.1} s (timeout {} s)", f.drain_timeout_s),
                None => format!("not drained ({} left)", f.backlog_left),
            },
        ),
        (
            "peak RSS".to_string(),
            f.peak_rss_mib
                .map_or("unknown (no /proc)".into(), |m| format!("{m:.1} MiB")),
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
            provider_rate: 50,
            notifications_due: 100,
            all_completed: true,
            drained: true,
            drain_rate: Some(44.0),
            provider: ProviderStats {
                requests: 130,
                delivered: 100,
                distinct_ids: 100,
                throttled: 30,
                peak_per_second: 45,
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn the_verdict_names_each_failure() {
        assert!(reasons(&passing()).is_empty(), "{:?}", reasons(&passing()));
        let mut f = passing();
        f.dead_lettered = 2;
        f.provider.over_limit = 1;
        f.provider.ids_delivered_twice = 1;
        f.provider.missing_key = 3;
        f.drain_rate = Some(20.0);
        let r = reasons(&f).join("; ");
        for says in [
            "dead-lettered",
            "above the provider's rate",
            "under two keys",
            "without an idempotency key",
            "drained at 20/s",
        ] {
            assert!(r.contains(says), "{says}: {r}");
        }
    }

    #[test]
    fn the_drain_rate_is_measured_from_the_first_delivery_to_an_empty_backlog() {
        let r = |s: u64, delivered, backlog| Reading {
            at: Duration::from_secs(s),
            delivered,
            backlog,
        };
        let readings = [
            r(9, 10, 500),
            r(10, 10, 520),
            r(11, 10, 530),
            r(12, 50, 490),
            r(14, 130, 410),
            r(22, 450, 0),
            r(23, 460, 0),
        ];
        let (rate, span) = drain_rate(&readings, Duration::from_secs(10)).unwrap();
        assert_eq!(span, 11.0);
        assert!((rate - 440.0 / 11.0).abs() < 1e-9, "{rate}");
        assert_eq!(drain_rate(&readings[..3], Duration::from_secs(10)), None);
    }
}
