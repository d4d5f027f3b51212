//! `[[alerts]]` and `[alerting]` in the manifest, and the evaluation of the rules: a pure
//! [`Engine`] that takes what the platform knows at one instant ([`Inputs`]) and says which
//! alerts start firing, go on firing or resolve ([`Event`]). The live loop around it is in
//! [`super`].

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use serde::{Deserialize, Serialize};

use crate::manifest::FunctionSpec;
use crate::store::BreakerState;
use crate::{Error, Result};

/// Most rules a manifest may declare.
pub const MAX_RULES: usize = 100;
/// Longest `window_s` (the evaluator keeps one sample per function per second of it).
pub const MAX_WINDOW_S: f64 = 3600.0;
/// Longest `for_s`.
pub const MAX_FOR_S: f64 = 86_400.0;
/// Largest `threshold_s` of `oldest_age` (30 days).
pub const MAX_THRESHOLD_S: f64 = 30.0 * 86_400.0;
/// Most retries per channel after the first attempt.
pub const MAX_RETRIES: u32 = 10;
/// Longest first retry delay; the delay doubles per retry up to [`MAX_RETRY_WAIT_MS`].
pub const MAX_BACKOFF_MS: u64 = 60_000;
/// Longest wait between two attempts, however many retries.
pub const MAX_RETRY_WAIT_MS: u64 = 60_000;
/// Per-request timeout bounds.
pub const MIN_TIMEOUT_MS: u64 = 100;
pub const MAX_TIMEOUT_MS: u64 = 60_000;
/// Longest webhook URL.
pub const MAX_URL_LEN: usize = 2048;
/// Longest alert message (longer ones are cut).
pub const MAX_MESSAGE_LEN: usize = 1024;
/// Sources named in a `source_blocked` message (the count is always there).
const MAX_SOURCES_NAMED: usize = 3;

/// What a rule watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    /// A function's oldest message is older than `threshold_s`.
    OldestAge,
    /// More than `threshold` messages reached a function's dead-letter queue within `window_s`
    /// (the rises of its DLQ count, so a redrive meanwhile does not hide them).
    DlqGrowth,
    /// failed / (processed + failed) of a function over `window_s` is above `threshold`.
    FailureRate,
    /// The kv store's circuit breaker is not closed (open, or half-open while it probes).
    BreakerOpen,
    /// The ingress blocks at least one source.
    SourceBlocked,
    /// A canary release was rolled back. Accepted so manifests can declare it; it never fires
    /// until Levee has releases.
    CanaryRolledBack,
    /// The platform cannot reach its kv store: the breaker is not closed, or store calls fail.
    StoreUnreachable,
}

impl AlertKind {
    pub const ALL: [AlertKind; 7] = [
        AlertKind::OldestAge,
        AlertKind::DlqGrowth,
        AlertKind::FailureRate,
        AlertKind::BreakerOpen,
        AlertKind::SourceBlocked,
        AlertKind::CanaryRolledBack,
        AlertKind::StoreUnreachable,
    ];

    /// The name in the manifest.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertKind::OldestAge => "oldest_age",
            AlertKind::DlqGrowth => "dlq_growth",
            AlertKind::FailureRate => "failure_rate",
            AlertKind::BreakerOpen => "breaker_open",
            AlertKind::SourceBlocked => "source_blocked",
            AlertKind::CanaryRolledBack => "canary_rolled_back",
            AlertKind::StoreUnreachable => "store_unreachable",
        }
    }

    /// Whether the rule is evaluated per function (`function`, or every function).
    pub fn per_function(self) -> bool {
        matches!(
            self,
            AlertKind::OldestAge
                | AlertKind::DlqGrowth
                | AlertKind::FailureRate
                | AlertKind::CanaryRolledBack
        )
    }

    /// Which of `threshold_s`, `threshold` and `window_s` the kind takes (all required).
    fn fields(self) -> (bool, bool, bool) {
        match self {
            AlertKind::OldestAge => (true, false, false),
            AlertKind::DlqGrowth | AlertKind::FailureRate => (false, true, true),
            _ => (false, false, false),
        }
    }
}

impl std::fmt::Display for AlertKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `[[alerts]]`: one rule.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AlertRule {
    /// Unique among the rules: 1-64 of a-z, A-Z, 0-9, '-', '_', '.'.
    pub name: String,
    pub kind: AlertKind,
    /// A function of the manifest; absent: every function (one alert each). Only for the
    /// per-function kinds.
    pub function: Option<String>,
    /// `oldest_age`: seconds.
    pub threshold_s: Option<f64>,
    /// `dlq_growth`: dead letters (fires above it); `failure_rate`: a fraction, 0 to 1.
    pub threshold: Option<f64>,
    /// `dlq_growth`, `failure_rate`: the window looked back over, in seconds.
    pub window_s: Option<f64>,
    /// How long the condition must hold before the alert fires, in seconds.
    #[serde(default)]
    pub for_s: f64,
}

/// A webhook body's shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// Levee's own JSON object (every field of the alert).
    #[default]
    Json,
    /// `{"text": "..."}`, what Slack's (and Mattermost's, Discord's /slack) incoming webhooks take.
    Slack,
}

/// A webhook channel: `{ url = "http://…", format = "json" | "slack" }`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelSettings {
    pub url: String,
    #[serde(default)]
    pub format: Format,
}

fn d_retries() -> u32 {
    3
}
fn d_backoff_ms() -> u64 {
    500
}
fn d_timeout_ms() -> u64 {
    5_000
}

/// `[alerting]`: where alerts go and how hard delivery tries.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AlertingSettings {
    /// Gets every firing and resolved notice.
    pub primary: Option<ChannelSettings>,
    /// Gets a notice when the primary failed it (after its retries), told so in the body.
    pub secondary: Option<ChannelSettings>,
    /// Retries per channel after the first attempt (0 to 10).
    #[serde(default = "d_retries")]
    pub retries: u32,
    /// Wait before the first retry, in ms; doubled per retry, at most 60 s between attempts.
    #[serde(default = "d_backoff_ms")]
    pub backoff_ms: u64,
    /// Longest wait for one request's answer (connect, send, response head), in ms.
    #[serde(default = "d_timeout_ms")]
    pub timeout_ms: u64,
}

impl Default for AlertingSettings {
    fn default() -> Self {
        toml::from_str("").expect("defaults parse")
    }
}

fn valid_rule_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// Checks a webhook URL: `http://` or `https://`, a host, no credentials.
pub fn check_url(url: &str) -> std::result::Result<hyper::Uri, String> {
    if url.len() > MAX_URL_LEN {
        return Err(format!("at most {MAX_URL_LEN} characters"));
    }
    let uri: hyper::Uri = url
        .parse()
        .map_err(|e| format!("not a URL ({e}); e.g. http://127.0.0.1:9000/hook"))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        Some(other) => return Err(format!("scheme must be http or https, got `{other}`")),
        None => return Err("needs a scheme: http://HOST[:PORT]/PATH or https://…".into()),
    }
    let Some(auth) = uri.authority() else {
        return Err("needs a host: http://HOST[:PORT]/PATH".into());
    };
    if auth.as_str().contains('@') {
        return Err(
            "credentials in the URL are not supported (put a token in the path or query)".into(),
        );
    }
    if auth.host().is_empty() {
        return Err("needs a host: http://HOST[:PORT]/PATH".into());
    }
    Ok(uri)
}

/// Checks `[[alerts]]` and `[alerting]`; errors name the field (`alerts[2].threshold_s`, with
/// `alerts[0]` the first rule).
pub fn validate(
    rules: &[AlertRule],
    alerting: &AlertingSettings,
    functions: &BTreeMap<String, FunctionSpec>,
) -> Result<()> {
    let bad = |field: String, why: String| Err(Error::Manifest(format!("`{field}`: {why}")));
    for (key, ch) in [
        ("primary", &alerting.primary),
        ("secondary", &alerting.secondary),
    ] {
        if let Some(ch) = ch
            && let Err(why) = check_url(&ch.url)
        {
            return bad(format!("alerting.{key}.url"), why);
        }
    }
    if alerting.secondary.is_some() && alerting.primary.is_none() {
        return bad(
            "alerting.secondary".into(),
            "needs a primary channel (the secondary gets what the primary failed)".into(),
        );
    }
    if alerting.retries > MAX_RETRIES {
        return bad(
            "alerting.retries".into(),
            format!("must be 0 to {MAX_RETRIES}, got {}", alerting.retries),
        );
    }
    if !(1..=MAX_BACKOFF_MS).contains(&alerting.backoff_ms) {
        return bad(
            "alerting.backoff_ms".into(),
            format!("must be 1 to {MAX_BACKOFF_MS}, got {}", alerting.backoff_ms),
        );
    }
    if !(MIN_TIMEOUT_MS..=MAX_TIMEOUT_MS).contains(&alerting.timeout_ms) {
        return bad(
            "alerting.timeout_ms".into(),
            format!(
                "must be {MIN_TIMEOUT_MS} to {MAX_TIMEOUT_MS}, got {}",
                alerting.timeout_ms
            ),
        );
    }
    if rules.len() > MAX_RULES {
        return bad(
            "alerts".into(),
            format!("at most {MAX_RULES} rules, got {}", rules.len()),
        );
    }
    let mut names = BTreeSet::new();
    for (i, r) in rules.iter().enumerate() {
        let field = |k: &str| format!("alerts[{i}].{k}");
        if !valid_rule_name(&r.name) {
            return bad(
                field("name"),
                format!(
                    "1-64 characters of a-z, A-Z, 0-9, '-', '_' and '.', got `{}`",
                    crate::ingress::routes::echo(&r.name)
                ),
            );
        }
        if !names.insert(r.name.as_str()) {
            return bad(
                field("name"),
                format!("`{}` names another rule already", r.name),
            );
        }
        if let Some(f) = &r.function {
            if !r.kind.per_function() {
                return bad(
                    field("function"),
                    format!(
                        "kind `{}` watches the whole platform, not a function; remove it",
                        r.kind
                    ),
                );
            }
            if !functions.contains_key(f) {
                let known: Vec<&str> = functions.keys().map(String::as_str).collect();
                return bad(
                    field("function"),
                    format!(
                        "unknown function `{}`; declared: {} (or leave it out for every function)",
                        crate::ingress::routes::echo(f),
                        known.join(", ")
                    ),
                );
            }
        }
        let (wants_s, wants_t, wants_w) = r.kind.fields();
        for (key, wanted, v) in [
            ("threshold_s", wants_s, r.threshold_s),
            ("threshold", wants_t, r.threshold),
            ("window_s", wants_w, r.window_s),
        ] {
            match (wanted, v) {
                (true, None) => {
                    return bad(field(key), format!("kind `{}` needs it", r.kind));
                }
                (false, Some(_)) => {
                    return bad(field(key), format!("kind `{}` does not take it", r.kind));
                }
                (true, Some(v)) if !v.is_finite() => {
                    return bad(field(key), format!("must be a finite number, got {v}"));
                }
                _ => {}
            }
        }
        if let Some(t) = r.threshold_s
            && !(t > 0.0 && t <= MAX_THRESHOLD_S)
        {
            return bad(
                field("threshold_s"),
                format!("must be above 0 and at most {MAX_THRESHOLD_S} (30 days), got {t}"),
            );
        }
        if let Some(t) = r.threshold {
            match r.kind {
                AlertKind::DlqGrowth if !(t >= 0.0 && t.fract() == 0.0 && t <= 1e9) => {
                    return bad(
                        field("threshold"),
                        format!("a number of dead letters, 0 or more (fires above it), got {t}"),
                    );
                }
                AlertKind::FailureRate if !(0.0..1.0).contains(&t) => {
                    return bad(
                        field("threshold"),
                        format!(
                            "a fraction of messages, 0 to below 1 (0.05 is 5 %; fires above it), got {t}"
                        ),
                    );
                }
                _ => {}
            }
        }
        if let Some(w) = r.window_s
            && !(1.0..=MAX_WINDOW_S).contains(&w)
        {
            return bad(
                field("window_s"),
                format!("must be 1 to {MAX_WINDOW_S} seconds, got {w}"),
            );
        }
        if !(r.for_s.is_finite() && (0.0..=MAX_FOR_S).contains(&r.for_s)) {
            return bad(
                field("for_s"),
                format!("must be 0 to {MAX_FOR_S} seconds, got {}", r.for_s),
            );
        }
    }
    Ok(())
}

/// One function's queue figures at an instant ([`crate::queue::QueueStats`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FunctionInputs {
    pub oldest_age_ms: Option<u64>,
    pub dlq: u64,
    /// Messages completed (a running total).
    pub processed: u64,
    /// Messages dead-lettered (a running total).
    pub failed: u64,
}

/// What the platform knows at one instant; `None`: could not be read this time (the rules that
/// need it keep their state).
#[derive(Debug, Clone, Default)]
pub struct Inputs {
    /// Milliseconds since the Unix epoch (monotonic within a run).
    pub now_ms: u64,
    pub functions: Option<BTreeMap<String, FunctionInputs>>,
    /// The kv store's circuit breaker.
    pub breaker: Option<BreakerState>,
    /// Sources the ingress blocks now.
    pub blocked_sources: Option<Vec<String>>,
    /// Whether the kv store answered since the last evaluation (calls through the cache, or a
    /// probe when there were none).
    pub store_answers: Option<bool>,
}

/// One rule's reading for one function (or the platform).
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    pub holds: bool,
    pub value: f64,
    pub threshold: Option<f64>,
    pub message: String,
}

/// What changed for an alert at an evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// The condition has held for `for_s`: the alert fires.
    Fired,
    /// Still firing (value and message updated).
    Firing,
    /// The condition no longer holds: the alert resolves.
    Resolved,
}

/// An alert's change, with the reading behind it.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Index of the rule in the manifest.
    pub rule: usize,
    pub function: Option<String>,
    pub change: Change,
    pub reading: Reading,
    /// When the condition started to hold (for `Fired`), ms.
    pub holding_since_ms: u64,
}

#[derive(Debug, Clone, Copy)]
struct Sample {
    at_ms: u64,
    f: FunctionInputs,
}

#[derive(Debug, Default)]
struct Instance {
    holding_since: Option<u64>,
    firing: bool,
}

/// The rules' state between evaluations: per-function samples for the windows, and per alert
/// whether its condition holds and since when.
#[derive(Debug)]
pub struct Engine {
    rules: Vec<AlertRule>,
    functions: Vec<String>,
    history: BTreeMap<String, VecDeque<Sample>>,
    keep_ms: u64,
    instances: BTreeMap<(usize, Option<String>), Instance>,
}

impl Engine {
    /// An engine for validated `rules` over the manifest's `functions`.
    pub fn new(rules: Vec<AlertRule>, functions: Vec<String>) -> Self {
        let keep_ms = (rules
            .iter()
            .filter_map(|r| r.window_s)
            .fold(0.0f64, f64::max)
            * 1000.0) as u64;
        Engine {
            rules,
            functions,
            history: BTreeMap::new(),
            keep_ms,
            instances: BTreeMap::new(),
        }
    }

    pub fn rules(&self) -> &[AlertRule] {
        &self.rules
    }

    /// Whether some rule needs the per-function queue figures.
    pub fn needs_functions(&self) -> bool {
        self.rules.iter().any(|r| {
            matches!(
                r.kind,
                AlertKind::OldestAge | AlertKind::DlqGrowth | AlertKind::FailureRate
            )
        })
    }

    /// Whether some rule needs to know if the store answers.
    pub fn needs_store(&self) -> bool {
        self.rules
            .iter()
            .any(|r| r.kind == AlertKind::StoreUnreachable)
    }

    /// Evaluates every rule on `inputs`; the alerts that fired, still fire or resolved.
    pub fn evaluate(&mut self, inputs: &Inputs) -> Vec<Event> {
        let now = inputs.now_ms;
        if let Some(fns) = &inputs.functions {
            for (name, f) in fns {
                let h = self.history.entry(name.clone()).or_default();
                h.push_back(Sample { at_ms: now, f: *f });
                // Keep one sample at or before the longest window's start.
                let cutoff = now.saturating_sub(self.keep_ms);
                while h.len() > 1 && h[1].at_ms <= cutoff {
                    h.pop_front();
                }
            }
        }
        let mut events = Vec::new();
        for i in 0..self.rules.len() {
            let rule = &self.rules[i];
            let targets: Vec<Option<String>> = if !rule.kind.per_function() {
                vec![None]
            } else if let Some(f) = &rule.function {
                vec![Some(f.clone())]
            } else {
                self.functions.iter().cloned().map(Some).collect()
            };
            for target in targets {
                let Some(reading) = self.read(rule, target.as_deref(), inputs) else {
                    continue;
                };
                let inst = self.instances.entry((i, target.clone())).or_default();
                let change = if reading.holds {
                    let since = *inst.holding_since.get_or_insert(now);
                    let held_ms = now.saturating_sub(since);
                    if inst.firing {
                        Some(Change::Firing)
                    } else if held_ms as f64 >= rule.for_s * 1000.0 {
                        inst.firing = true;
                        Some(Change::Fired)
                    } else {
                        None
                    }
                } else {
                    inst.holding_since = None;
                    if inst.firing {
                        inst.firing = false;
                        Some(Change::Resolved)
                    } else {
                        None
                    }
                };
                if let Some(change) = change {
                    events.push(Event {
                        rule: i,
                        function: target,
                        change,
                        holding_since_ms: inst.holding_since.unwrap_or(now),
                        reading,
                    });
                }
            }
        }
        events
    }

    /// Over `window_s` of `function`'s samples (from the one at or before `now - window_s`, or
    /// the oldest kept): the first sample, the dead letters added (the rises of the DLQ count
    /// between samples, so a redrive in between does not hide them) and the newest sample.
    /// `None` when the function was not read at `now`.
    fn window(&self, function: &str, window_s: f64, now: u64) -> Option<(Sample, u64, Sample)> {
        let h = self.history.get(function)?;
        let last = *h.back()?;
        if last.at_ms != now {
            return None;
        }
        let start = now.saturating_sub((window_s * 1000.0) as u64);
        let from = h.iter().rposition(|s| s.at_ms <= start).unwrap_or(0);
        let first = h[from];
        let mut added = 0u64;
        let mut prev = first.f.dlq;
        for s in h.iter().skip(from + 1) {
            added += s.f.dlq.saturating_sub(prev);
            prev = s.f.dlq;
        }
        Some((first, added, last))
    }

    fn read(&self, rule: &AlertRule, function: Option<&str>, inputs: &Inputs) -> Option<Reading> {
        let now = inputs.now_ms;
        let round = |v: f64| (v * 1000.0).round() / 1000.0;
        match rule.kind {
            AlertKind::OldestAge => {
                let f = function?;
                let fi = inputs.functions.as_ref()?.get(f)?;
                let t = rule.threshold_s?;
                let age = fi.oldest_age_ms.map_or(0.0, |ms| ms as f64 / 1000.0);
                let message = match fi.oldest_age_ms {
                    Some(_) => format!(
                        "{f}: the oldest message is {age:.1} s old (threshold {} s)",
                        num(t)
                    ),
                    None => format!("{f}: the queue is empty (threshold {} s)", num(t)),
                };
                Some(Reading {
                    holds: age > t,
                    value: round(age),
                    threshold: Some(t),
                    message,
                })
            }
            AlertKind::DlqGrowth => {
                let f = function?;
                let (w, t) = (rule.window_s?, rule.threshold?);
                let (_, added, last) = self.window(f, w, now)?;
                let growth = added as f64;
                Some(Reading {
                    holds: growth > t,
                    value: growth,
                    threshold: Some(t),
                    message: format!(
                        "{f}: {} new dead letter(s) within {} s ({} in its DLQ; threshold {})",
                        num(growth),
                        num(w),
                        last.f.dlq,
                        num(t)
                    ),
                })
            }
            AlertKind::FailureRate => {
                let f = function?;
                let (w, t) = (rule.window_s?, rule.threshold?);
                let (base, _, last) = self.window(f, w, now)?;
                let failed = last.f.failed.saturating_sub(base.f.failed);
                let done = last.f.processed.saturating_sub(base.f.processed) + failed;
                let rate = if done == 0 {
                    0.0
                } else {
                    failed as f64 / done as f64
                };
                Some(Reading {
                    holds: rate > t,
                    value: round(rate),
                    threshold: Some(t),
                    message: format!(
                        "{f}: {failed} of {done} message(s) failed (dead-lettered) within {} s: {:.1} % (threshold {:.1} %)",
                        num(w),
                        rate * 100.0,
                        t * 100.0
                    ),
                })
            }
            AlertKind::BreakerOpen => {
                let b = inputs.breaker?;
                let open = b != BreakerState::Closed;
                Some(Reading {
                    holds: open,
                    value: if open { 1.0 } else { 0.0 },
                    threshold: None,
                    message: format!("the kv store's circuit breaker is {b}"),
                })
            }
            AlertKind::SourceBlocked => {
                let blocked = inputs.blocked_sources.as_ref()?;
                let named: Vec<&str> = blocked
                    .iter()
                    .take(MAX_SOURCES_NAMED)
                    .map(String::as_str)
                    .collect();
                let more = blocked.len().saturating_sub(MAX_SOURCES_NAMED);
                let message = if blocked.is_empty() {
                    "the ingress blocks no source".to_string()
                } else {
                    format!(
                        "the ingress blocks {} source(s): {}{}",
                        blocked.len(),
                        named.join(", "),
                        if more > 0 {
                            format!(" and {more} more")
                        } else {
                            String::new()
                        }
                    )
                };
                Some(Reading {
                    holds: !blocked.is_empty(),
                    value: blocked.len() as f64,
                    threshold: Some(0.0),
                    message: cut(message),
                })
            }
            AlertKind::CanaryRolledBack => {
                // No releases yet, so nothing is ever rolled back.
                None
            }
            AlertKind::StoreUnreachable => {
                let breaker_open = inputs.breaker.map(|b| b != BreakerState::Closed);
                let failing = inputs.store_answers.map(|ok| !ok);
                if breaker_open.is_none() && failing.is_none() {
                    return None;
                }
                let holds = breaker_open == Some(true) || failing == Some(true);
                let why = match (breaker_open, failing) {
                    (Some(true), _) => format!(
                        "the kv store is unreachable: its circuit breaker is {}",
                        inputs.breaker.map_or("open", BreakerState::as_str)
                    ),
                    (_, Some(true)) => "the kv store is unreachable: its calls fail".to_string(),
                    _ => "the kv store answers".to_string(),
                };
                Some(Reading {
                    holds,
                    value: if holds { 1.0 } else { 0.0 },
                    threshold: None,
                    message: why,
                })
            }
        }
    }
}

/// A number without a needless `.0`.
fn num(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

/// A message cut to [`MAX_MESSAGE_LEN`] bytes (at a character boundary).
pub fn cut(mut s: String) -> String {
    if s.len() > MAX_MESSAGE_LEN {
        let mut end = MAX_MESSAGE_LEN - 3;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push('…');
    }
    s
}
