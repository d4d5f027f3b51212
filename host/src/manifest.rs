//! The platform manifest (`levee.toml`): typed, validated on parse, errors name the field.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::aws::settings::AwsSettings;
use crate::limits::MIN_OFFLOAD_THRESHOLD;
use crate::outbound::GrantSpec;
use crate::secrets::SecretRef;
use crate::store::CacheConfig;
use crate::{Error, Result};

/// Default HTTP listen address of `levee up`.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// Default data directory, relative to the manifest's directory.
pub const DEFAULT_DATA_DIR: &str = ".levee";
/// Default workers per function.
pub const DEFAULT_CONCURRENCY: u32 = 2;
/// Default per-invocation deadline.
pub const DEFAULT_TIMEOUT_MS: u64 = 5_000;
/// Default per-invocation linear memory cap.
pub const DEFAULT_MEMORY_MB: u32 = 64;
/// Default receives before a message is dead-lettered.
pub const DEFAULT_MAX_RECEIVE: u32 = 5;
/// Default first retry delay.
pub const DEFAULT_BACKOFF_MS: u64 = 1_000;
/// Longest allowed first retry delay.
pub const MAX_BACKOFF_MS: u64 = 300_000;
/// Largest allowed per-function concurrency (one machine).
pub const MAX_CONCURRENCY: u32 = 256;
/// Largest allowed per-invocation memory.
pub const MAX_MEMORY_MB: u32 = 4096;
/// Longest allowed per-invocation deadline (the SQS visibility timeout is 12 h; we stay far below).
pub const MAX_TIMEOUT_MS: u64 = 15 * 60 * 1000;

/// Which backend family runs the queues, store and blobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// One SQLite file under the data directory.
    #[default]
    Embedded,
    /// SQS, DynamoDB and S3 from the standard AWS configuration.
    Aws,
}

impl std::str::FromStr for Backend {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "embedded" => Ok(Backend::Embedded),
            "aws" => Ok(Backend::Aws),
            other => Err(Error::Invalid(format!(
                "backend must be one of embedded, aws; got `{other}`"
            ))),
        }
    }
}

/// `[platform]`: settings of the whole host.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Platform {
    /// HTTP listen address (default `127.0.0.1:8080`).
    pub listen: Option<String>,
    /// Data directory for the embedded backend and compiled modules (default `.levee`).
    pub data_dir: Option<PathBuf>,
    /// `embedded` (default) or `aws`.
    #[serde(default)]
    pub backend: Backend,
    /// Message bodies larger than this many bytes go to blobs and the queue carries a reference
    /// (embedded backend; the aws backend uses `aws.offload_threshold`). Default 200 KiB.
    pub offload_threshold: Option<usize>,
    /// Scaling policy `levee up` runs: `coordinated` (default), `independent`, `lambda-like` or `off`.
    #[serde(default)]
    pub scaler: ScalerChoice,
    /// Scale-down stabilisation window of the scaler in ms (default: the policy's own).
    pub scale_down_window_ms: Option<u64>,
    /// How long a `min_workers = 0` function must be idle before it goes to zero, in ms (default:
    /// the policy's own).
    pub idle_window_ms: Option<u64>,
    /// Operations per second the kv store behind the cache sustains (a provisioned DynamoDB
    /// table's capacity, say). When set, the scaler holds back the functions that use it so their
    /// store calls stay within it (see `kv_ops_per_message`); absent: unlimited.
    pub kv_capacity_ops: Option<f64>,
    /// A PEM file of extra root certificates (a private CA) trusted for functions' outbound
    /// HTTPS and alert webhooks, beside the system's roots; relative to the manifest.
    /// `LEVEE_EXTRA_CA_FILE` adds one more.
    pub ca_file: Option<PathBuf>,
}

/// `[platform] scaler`: which policy sizes the worker pools.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ScalerChoice {
    /// Levee's coordinated policy (feed-forward over the graph, backpressure).
    #[default]
    Coordinated,
    /// KEDA-like: each function on its own queue length.
    Independent,
    /// Lambda-on-SQS-like: each function alone, growth limited per minute.
    LambdaLike,
    /// No scaler: pools keep `concurrency` workers.
    Off,
}

impl ScalerChoice {
    /// The policy name (`levee_scaler::by_name`), or `None` for `off`.
    pub fn policy_name(self) -> Option<&'static str> {
        match self {
            ScalerChoice::Coordinated => Some("coordinated"),
            ScalerChoice::Independent => Some("independent"),
            ScalerChoice::LambdaLike => Some("lambda-like"),
            ScalerChoice::Off => None,
        }
    }
}

/// `[functions.NAME]`: one capability function.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FunctionSpec {
    /// Path of the component (`.wasm`), relative to the manifest.
    pub module: PathBuf,
    /// Functions this one may emit to.
    #[serde(default)]
    pub emits_to: Vec<String>,
    /// Workers consuming the function's queue.
    #[serde(default = "default_concurrency")]
    pub concurrency: u32,
    /// Per-invocation deadline in ms.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Per-invocation linear memory cap in MiB.
    #[serde(default = "default_memory_mb")]
    pub memory_mb: u32,
    /// Receives before the message is dead-lettered.
    #[serde(default = "default_max_receive")]
    pub max_receive: u32,
    /// Upper bound of workers the scaler may run (default: `concurrency`).
    pub max_workers: Option<u32>,
    /// Lower bound of workers the scaler keeps (default: `concurrency`; 0 lets an idle function
    /// scale to zero).
    pub min_workers: Option<u32>,
    /// Lease (visibility timeout) of a received message in ms, renewed while the handler runs
    /// (default: `timeout_ms` + 30 s).
    pub visibility_timeout_ms: Option<u64>,
    /// First retry delay in ms; doubles per attempt up to 5 minutes.
    #[serde(default = "default_backoff_ms")]
    pub backoff_ms: u64,
    /// kv store calls that reach the store per message handled (after the cache), for the
    /// scaler's store capacity (`platform.kv_capacity_ops`). Default 1; 0 for a function that
    /// never touches the store.
    #[serde(default = "default_kv_ops")]
    pub kv_ops_per_message: f64,
    /// A public entry point: clients may send it messages (`POST .../messages`, with a key of
    /// the group serving it). Other functions only take messages other functions emit.
    #[serde(default)]
    pub public: bool,
    /// Values the guest reads through `wasi:config/store` (`[functions.NAME.config]`).
    #[serde(default)]
    pub config: BTreeMap<String, String>,
    /// Secrets the guest reads through `wasi:config/store`, by source
    /// (`[functions.NAME.secrets]`, `name = { env = "VAR" }` or `{ aws = "secret-id" }`).
    #[serde(default)]
    pub secrets: BTreeMap<String, SecretRef>,
    /// Destinations the function may call over HTTP (`[[functions.NAME.outbound]]`).
    #[serde(default)]
    pub outbound: Vec<GrantSpec>,
    /// How a deployed version is tried before it takes every message
    /// (`[functions.NAME.canary]`).
    #[serde(default)]
    pub canary: CanarySpec,
    /// The folder of recorded events a candidate version is replayed against before its
    /// canary starts, relative to the manifest (default `functions/NAME/replay`, when present).
    pub replay: Option<PathBuf>,
}

/// A function's canary: the shares a new version takes in steps, each held for a window, and
/// what counts as a regression against the stable version over the same window.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CanarySpec {
    /// Percent of messages per step; the last is 100 (the version becomes stable).
    pub steps: Vec<f64>,
    /// How long each step is held, in seconds (and at least `min_samples` invocations).
    pub window_s: u64,
    /// Invocations of each version a step needs before it is promoted or judged on latency.
    pub min_samples: u64,
    /// Failures of the candidate before its failure rate is judged (a single bad message is
    /// not a regression).
    pub min_failures: u64,
    /// How much higher the candidate's failure rate may be than the stable version's (0.005 =
    /// half a percentage point: a release that breaks 1% of events is caught).
    pub max_failure_increase: f64,
    /// How many times the stable version's p95 latency the candidate's may be...
    pub max_latency_ratio: f64,
    /// ...plus this many milliseconds (latencies of a few ms are noise).
    pub latency_slack_ms: f64,
}

impl Default for CanarySpec {
    fn default() -> Self {
        CanarySpec {
            steps: vec![5.0, 25.0, 100.0],
            window_s: 60,
            min_samples: 20,
            min_failures: 2,
            max_failure_increase: 0.005,
            max_latency_ratio: 2.0,
            latency_slack_ms: 5.0,
        }
    }
}

fn bad(field: String, why: String) -> Result<()> {
    Err(Error::Manifest(format!("`{field}`: {why}")))
}

impl CanarySpec {
    fn validate(&self, field: &dyn Fn(&str) -> String) -> Result<()> {
        let steps_ok = !self.steps.is_empty()
            && self
                .steps
                .iter()
                .all(|s| s.is_finite() && *s > 0.0 && *s <= 100.0)
            && self.steps.windows(2).all(|w| w[0] < w[1])
            && self.steps.last() == Some(&100.0);
        if !steps_ok {
            return bad(
                field("canary.steps"),
                format!(
                    "must be increasing percentages above 0 ending with 100 (e.g. [5, 25, 100]), got {:?}",
                    self.steps
                ),
            );
        }
        if !(1..=86_400).contains(&self.window_s) {
            return bad(
                field("canary.window_s"),
                format!("must be 1 to 86400, got {}", self.window_s),
            );
        }
        if !(0.0..=1.0).contains(&self.max_failure_increase) {
            return bad(
                field("canary.max_failure_increase"),
                format!("must be 0 to 1, got {}", self.max_failure_increase),
            );
        }
        if !(self.max_latency_ratio.is_finite() && self.max_latency_ratio >= 1.0) {
            return bad(
                field("canary.max_latency_ratio"),
                format!("must be 1 or more, got {}", self.max_latency_ratio),
            );
        }
        if !(self.latency_slack_ms.is_finite() && self.latency_slack_ms >= 0.0) {
            return bad(
                field("canary.latency_slack_ms"),
                format!("must be 0 or more, got {}", self.latency_slack_ms),
            );
        }
        if self.min_failures == 0 {
            return bad(field("canary.min_failures"), "must be at least 1".into());
        }
        Ok(())
    }
}

fn default_kv_ops() -> f64 {
    1.0
}

fn default_backoff_ms() -> u64 {
    DEFAULT_BACKOFF_MS
}

fn default_concurrency() -> u32 {
    DEFAULT_CONCURRENCY
}
fn default_timeout_ms() -> u64 {
    DEFAULT_TIMEOUT_MS
}
fn default_memory_mb() -> u32 {
    DEFAULT_MEMORY_MB
}
fn default_max_receive() -> u32 {
    DEFAULT_MAX_RECEIVE
}

impl FunctionSpec {
    /// The per-invocation deadline.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }
    /// Most workers this function may run.
    pub fn max_workers(&self) -> u32 {
        self.max_workers
            .unwrap_or(self.concurrency)
            .max(self.concurrency)
    }
    /// Fewest workers the scaler keeps running.
    pub fn min_workers(&self) -> u32 {
        self.min_workers.unwrap_or(self.concurrency)
    }
    /// How long a received message stays leased before it is renewed or redelivered.
    pub fn visibility_timeout(&self) -> Duration {
        Duration::from_millis(
            self.visibility_timeout_ms
                .unwrap_or(self.timeout_ms + 30_000),
        )
    }
    /// The per-invocation memory cap in bytes.
    pub fn memory_bytes(&self) -> usize {
        self.memory_mb as usize * 1024 * 1024
    }
}

/// A parsed and validated manifest.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    #[serde(default)]
    pub platform: Platform,
    /// Functions by name, in name order.
    pub functions: BTreeMap<String, FunctionSpec>,
    /// `[cache]`: the cache in front of the kv store.
    #[serde(default)]
    pub cache: CacheConfig,
    /// `[aws]`: resource names for the aws backend.
    #[serde(default)]
    pub aws: AwsSettings,
    /// `[ingress]`: the HTTP API's bounds, groups and blocking.
    #[serde(default)]
    pub ingress: crate::ingress::settings::IngressSettings,
    /// `[[alerts]]`: rules evaluated live by `levee up`.
    #[serde(default)]
    pub alerts: Vec<crate::alerts::rules::AlertRule>,
    /// `[alerting]`: the webhooks alerts are delivered to.
    #[serde(default)]
    pub alerting: crate::alerts::rules::AlertingSettings,
    /// Directory the manifest was read from; relative paths resolve against it.
    #[serde(skip)]
    pub base_dir: PathBuf,
}

impl Manifest {
    /// The queue of every function, as `levee provision` and the platform create them.
    pub fn queue_specs(&self) -> Vec<crate::queue::QueueSpec> {
        self.functions
            .iter()
            .map(|(name, f)| crate::queue::QueueSpec {
                name: name.clone(),
                max_receive: f.max_receive,
            })
            .collect()
    }

    /// Reads and validates a manifest file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Manifest(format!("cannot read {}: {e}", path.display())))?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        Self::parse(&text, &base)
            .map_err(|e| Error::Manifest(format!("{}: {}", path.display(), strip(e))))
    }

    /// Parses and validates manifest text; relative paths resolve against `base_dir`.
    pub fn parse(text: &str, base_dir: &Path) -> Result<Self> {
        let mut m: Manifest = toml::from_str(text).map_err(|e| {
            let msg = e.message().to_string();
            let field = e
                .span()
                .map(|s| field_at(text, s.start))
                .filter(|f| !f.is_empty())
                .map(|f| format!(" (at `{f}`)"))
                .unwrap_or_default();
            Error::Manifest(format!("{msg}{field}"))
        })?;
        m.base_dir = base_dir.to_path_buf();
        m.validate()?;
        Ok(m)
    }

    fn validate(&self) -> Result<()> {
        let bad = |field: String, why: String| Err(Error::Manifest(format!("`{field}`: {why}")));
        if self.functions.is_empty() {
            return bad(
                "functions".into(),
                "declare at least one [functions.NAME] table".into(),
            );
        }
        if let Some(listen) = &self.platform.listen
            && listen.parse::<std::net::SocketAddr>().is_err()
        {
            return bad(
                "platform.listen".into(),
                format!("expected HOST:PORT like 127.0.0.1:8080, got `{listen}`"),
            );
        }
        self.cache.validate("cache")?;
        self.ingress.validate(&self.functions)?;
        crate::alerts::rules::validate(&self.alerts, &self.alerting, &self.functions)?;
        self.aws.validate().map_err(|e| match e {
            Error::Manifest(m) if !m.contains("aws.") => Error::Manifest(format!("aws: {m}")),
            other => other,
        })?;
        if let Some(t) = self.platform.offload_threshold
            && !(MIN_OFFLOAD_THRESHOLD..=crate::platform::MAX_BODY_BYTES).contains(&t)
        {
            return bad(
                "platform.offload_threshold".into(),
                format!(
                    "must be {} to {} bytes, got {t}",
                    MIN_OFFLOAD_THRESHOLD,
                    crate::platform::MAX_BODY_BYTES
                ),
            );
        }
        for (key, v) in [
            ("scale_down_window_ms", self.platform.scale_down_window_ms),
            ("idle_window_ms", self.platform.idle_window_ms),
        ] {
            if let Some(ms) = v
                && !(1..=24 * 3600 * 1000).contains(&ms)
            {
                return bad(
                    format!("platform.{key}"),
                    format!("must be 1 to 86400000 (24 h), got {ms}"),
                );
            }
        }
        if let Some(ops) = self.platform.kv_capacity_ops
            && !(ops.is_finite() && ops > 0.0)
        {
            return bad(
                "platform.kv_capacity_ops".into(),
                format!("must be a positive number of operations per second, got {ops}"),
            );
        }
        for (name, f) in &self.functions {
            let field = |k: &str| format!("functions.{name}.{k}");
            if !(f.kv_ops_per_message.is_finite() && f.kv_ops_per_message >= 0.0) {
                return bad(
                    field("kv_ops_per_message"),
                    format!("must be 0 or more, got {}", f.kv_ops_per_message),
                );
            }
            if !valid_name(name) {
                return bad(
                    format!("functions.{name}"),
                    "a function name is 1-64 characters of a-z, 0-9 and '-', starting with a letter"
                        .into(),
                );
            }
            if f.module.as_os_str().is_empty() {
                return bad(
                    field("module"),
                    "path of the component (.wasm) is empty".into(),
                );
            }
            let mut seen = BTreeSet::new();
            for target in &f.emits_to {
                if !self.functions.contains_key(target) {
                    let known: Vec<_> = self.functions.keys().map(String::as_str).collect();
                    return bad(
                        field("emits_to"),
                        format!(
                            "unknown function `{target}`; declared: {}",
                            known.join(", ")
                        ),
                    );
                }
                if !seen.insert(target) {
                    return bad(field("emits_to"), format!("`{target}` is listed twice"));
                }
            }
            if !(1..=MAX_CONCURRENCY).contains(&f.concurrency) {
                return bad(
                    field("concurrency"),
                    format!("must be 1 to {MAX_CONCURRENCY}, got {}", f.concurrency),
                );
            }
            if !(1..=MAX_TIMEOUT_MS).contains(&f.timeout_ms) {
                return bad(
                    field("timeout_ms"),
                    format!("must be 1 to {MAX_TIMEOUT_MS}, got {}", f.timeout_ms),
                );
            }
            if !(1..=MAX_MEMORY_MB).contains(&f.memory_mb) {
                return bad(
                    field("memory_mb"),
                    format!("must be 1 to {MAX_MEMORY_MB}, got {}", f.memory_mb),
                );
            }
            if let Some(max) = f.max_workers
                && !(f.concurrency..=MAX_CONCURRENCY).contains(&max)
            {
                return bad(
                    field("max_workers"),
                    format!(
                        "must be {} (concurrency) to {MAX_CONCURRENCY}, got {max}",
                        f.concurrency
                    ),
                );
            }
            if let Some(min) = f.min_workers
                && min > f.max_workers()
            {
                return bad(
                    field("min_workers"),
                    format!("must be 0 to {} (max_workers), got {min}", f.max_workers()),
                );
            }
            if let Some(v) = f.visibility_timeout_ms
                && !(1000..=12 * 3600 * 1000).contains(&v)
            {
                return bad(
                    field("visibility_timeout_ms"),
                    format!("must be 1000 (1 s) to 43200000 (12 h), got {v}"),
                );
            }
            crate::secrets::validate(name, &f.config, &f.secrets)?;
            f.canary.validate(&field)?;
            let mut origins = BTreeSet::new();
            for (i, g) in f.outbound.iter().enumerate() {
                let origin = g.validate(&format!("functions.{name}.outbound[{i}]"))?;
                if !origins.insert(origin.clone()) {
                    return bad(
                        format!("functions.{name}.outbound[{i}].url"),
                        format!("{origin} is granted twice"),
                    );
                }
            }
            if !(1..=MAX_BACKOFF_MS).contains(&f.backoff_ms) {
                return bad(
                    field("backoff_ms"),
                    format!("must be 1 to {MAX_BACKOFF_MS}, got {}", f.backoff_ms),
                );
            }
            if !(1..=1000).contains(&f.max_receive) {
                return bad(
                    field("max_receive"),
                    format!("must be 1 to 1000, got {}", f.max_receive),
                );
            }
        }
        Ok(())
    }

    /// The folder of a function's recorded events (`replay`, else `functions/NAME/replay`),
    /// resolved against the manifest's directory.
    pub fn replay_dir(&self, name: &str, f: &FunctionSpec) -> PathBuf {
        match &f.replay {
            Some(p) => self.base_dir.join(p),
            None => self.base_dir.join("functions").join(name).join("replay"),
        }
    }

    /// The module path of a function, resolved against the manifest's directory.
    pub fn module_path(&self, f: &FunctionSpec) -> PathBuf {
        self.base_dir.join(&f.module)
    }

    /// The extra root certificates: `[platform] ca_file` and `LEVEE_EXTRA_CA_FILE`.
    pub fn extra_roots(&self) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>> {
        let mut roots = crate::tls::extra_roots_from_env()?;
        if let Some(f) = &self.platform.ca_file {
            let path = self.base_dir.join(f);
            let certs = crate::tls::load_pem(&path)
                .map_err(|e| Error::Manifest(format!("`platform.ca_file`: {e}")))?;
            roots.extend(certs);
        }
        Ok(roots)
    }

    /// The data directory, resolved against the manifest's directory.
    pub fn data_dir(&self) -> PathBuf {
        self.base_dir.join(
            self.platform
                .data_dir
                .clone()
                .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR)),
        )
    }

    /// The listen address.
    pub fn listen(&self) -> String {
        self.platform
            .listen
            .clone()
            .unwrap_or_else(|| DEFAULT_LISTEN.to_string())
    }
}

pub fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// The dotted key path in effect at a byte offset of TOML text (best effort, for messages); an
/// array of tables is indexed from 0 (`alerts[2].kind`).
fn field_at(text: &str, offset: usize) -> String {
    let offset = offset.min(text.len());
    // A span starting at a table's header (a missing field) is about that table.
    let rest = &text[offset..];
    let offset = if rest.trim_start().starts_with('[') {
        offset + rest.find('\n').unwrap_or(rest.len())
    } else {
        offset
    };
    let before = &text[..offset];
    let table = before
        .lines()
        .rev()
        .find_map(|l| {
            let t = l.trim();
            if let Some(name) = t.strip_prefix("[[").and_then(|r| r.strip_suffix("]]")) {
                let name = name.trim();
                let index = before
                    .lines()
                    .filter(|l| {
                        l.trim()
                            .strip_prefix("[[")
                            .and_then(|r| r.strip_suffix("]]"))
                            .is_some_and(|n| n.trim() == name)
                    })
                    .count()
                    .saturating_sub(1);
                return Some(format!("{name}[{index}]"));
            }
            t.strip_prefix('[')
                .and_then(|r| r.strip_suffix(']'))
                .map(str::to_string)
        })
        .unwrap_or_default();
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let key = text[line_start..]
        .split('\n')
        .next()
        .and_then(|l| l.split_once('='))
        .map(|(k, _)| k.trim().to_string())
        .unwrap_or_default();
    match (table.is_empty(), key.is_empty()) {
        (true, _) => key,
        (false, true) => table,
        (false, false) => format!("{table}.{key}"),
    }
}

fn strip(e: Error) -> String {
    match e {
        Error::Manifest(m) => m,
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[platform]
listen = "127.0.0.1:9000"

[functions.inbound]
module = "inbound.wasm"
emits_to = ["routing"]
concurrency = 4

[functions.routing]
module = "routing.wasm"
"#;

    #[test]
    fn parses_with_defaults() {
        let m = Manifest::parse(GOOD, Path::new("/x")).unwrap();
        assert_eq!(m.listen(), "127.0.0.1:9000");
        let r = &m.functions["routing"];
        assert_eq!(r.concurrency, DEFAULT_CONCURRENCY);
        assert_eq!(r.max_receive, DEFAULT_MAX_RECEIVE);
        assert_eq!(m.module_path(r), Path::new("/x/routing.wasm"));
        assert_eq!(m.data_dir(), Path::new("/x/.levee"));
        assert_eq!(m.platform.backend, Backend::Embedded);
    }

    fn err(text: &str) -> String {
        Manifest::parse(text, Path::new("."))
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn unknown_field_is_named() {
        let e = err("[functions.a]\nmodule = \"a.wasm\"\nconcurency = 3\n");
        assert!(e.contains("concurency"), "{e}");
        assert!(e.contains("concurrency"), "lists the allowed fields: {e}");
    }

    #[test]
    fn bad_values_name_the_field() {
        let e = err("[functions.a]\nmodule = \"a.wasm\"\nconcurrency = 0\n");
        assert!(
            e.contains("functions.a.concurrency") && e.contains("1 to"),
            "{e}"
        );
        let e = err("[functions.a]\nmodule = \"a.wasm\"\nemits_to = [\"nope\"]\n");
        assert!(
            e.contains("functions.a.emits_to") && e.contains("nope"),
            "{e}"
        );
        let e = err("[functions.a]\nmodule = \"a.wasm\"\nmemory_mb = \"lots\"\n");
        assert!(e.contains("memory_mb"), "{e}");
        let e = err("[platform]\nbackend = \"gcp\"\n[functions.a]\nmodule = \"a.wasm\"\n");
        assert!(
            e.contains("embedded") && e.contains("aws") && e.contains("`platform.backend`"),
            "{e}"
        );
        let e = err("[functions.Bad_Name]\nmodule = \"a.wasm\"\n");
        assert!(e.contains("functions.Bad_Name"), "{e}");
        let e = err("[platform]\nlisten = \"nowhere\"\n[functions.a]\nmodule = \"a.wasm\"\n");
        assert!(e.contains("platform.listen"), "{e}");
        let e = err("[functions.a]\nemits_to = []\n");
        assert!(e.contains("module"), "{e}");
    }

    #[test]
    fn scaling_fields() {
        let m = Manifest::parse(GOOD, Path::new("/x")).unwrap();
        assert_eq!(m.platform.scaler, ScalerChoice::Coordinated);
        assert_eq!(
            m.functions["inbound"].min_workers(),
            4,
            "defaults to concurrency"
        );
        let m = Manifest::parse(
            "[platform]\nscaler = \"lambda-like\"\nidle_window_ms = 500\n\
             [functions.a]\nmodule = \"a.wasm\"\nconcurrency = 1\nmin_workers = 0\nmax_workers = 8\n",
            Path::new("."),
        )
        .unwrap();
        assert_eq!(m.platform.scaler.policy_name(), Some("lambda-like"));
        assert_eq!(m.platform.idle_window_ms, Some(500));
        let a = &m.functions["a"];
        assert_eq!((a.min_workers(), a.max_workers()), (0, 8));
        let e = err("[functions.a]\nmodule = \"a.wasm\"\nmin_workers = 9\nmax_workers = 8\n");
        assert!(
            e.contains("functions.a.min_workers") && e.contains("0 to 8"),
            "{e}"
        );
        let e = err("[platform]\nscaler = \"keda\"\n[functions.a]\nmodule = \"a.wasm\"\n");
        assert!(
            e.contains("coordinated") && e.contains("platform.scaler"),
            "{e}"
        );
        let e = err("[platform]\nidle_window_ms = 0\n[functions.a]\nmodule = \"a.wasm\"\n");
        assert!(e.contains("platform.idle_window_ms"), "{e}");
    }
}
