//! `[ingress]` in the manifest: the API's bounds, its groups (bulkheads with per-source limits)
//! and automatic blocking. Every bound has a default, so a manifest without `[ingress]` is safe.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::Deserialize;

use crate::{Error, Result};

/// Name of the implicit group serving the operator routes (status, kv, dead letters, invoke,
/// keys, blocks) when no group lists them.
pub const CONTROL_GROUP: &str = "control";
/// Name of the implicit group serving public functions no group lists.
pub const DEFAULT_GROUP: &str = "default";
/// The group of administrator keys: every route.
pub const ADMIN_GROUP: &str = "admin";
/// Route classes a group may serve besides functions.
pub const ROUTE_CLASSES: [&str; 7] = [
    "status", "kv", "dlq", "invoke", "keys", "blocks", "releases",
];

fn d_max_connections() -> usize {
    1024
}
fn d_per_peer() -> usize {
    256
}
fn d_header_ms() -> u64 {
    5_000
}
fn d_body_ms() -> u64 {
    15_000
}
fn d_idle_ms() -> u64 {
    30_000
}
fn d_inflight() -> usize {
    64 << 20
}
fn d_invoke() -> usize {
    2
}
fn d_true() -> bool {
    true
}

/// `[ingress]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngressSettings {
    /// Host names (without port) the API answers besides the loopback names and the listen
    /// address: a defence against DNS rebinding. Empty on a public listen address: any Host.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Origins allowed to call the API from a browser (exact `scheme://host[:port]`); none by
    /// default, and a request carrying any other `Origin` is refused.
    #[serde(default)]
    pub allow_origins: Vec<String>,
    /// Connections open at once; more are answered 503 and closed. Capped below the process's
    /// file-descriptor limit at start.
    #[serde(default = "d_max_connections")]
    pub max_connections: usize,
    /// Connections open at once from one peer address.
    #[serde(default = "d_per_peer")]
    pub max_connections_per_peer: usize,
    /// Time a client has to send a request's headers.
    #[serde(default = "d_header_ms")]
    pub header_timeout_ms: u64,
    /// Time a client has to send a request's body, from its headers.
    #[serde(default = "d_body_ms")]
    pub body_timeout_ms: u64,
    /// A connection with no request for this long is closed.
    #[serde(default = "d_idle_ms")]
    pub idle_timeout_ms: u64,
    /// Request body bytes held in memory at once, over all connections; past it, 503.
    #[serde(default = "d_inflight")]
    pub max_inflight_body_bytes: usize,
    /// `invoke` calls at once (each takes an instance slot; workers keep theirs).
    #[serde(default = "d_invoke")]
    pub invoke_concurrency: usize,
    /// Take the client's address from `X-Forwarded-For` (only behind a load balancer that sets it).
    #[serde(default)]
    pub trust_forwarded_for: bool,
    /// Rate limits, bulkheads and automatic blocking (keys are always checked). `false` only to
    /// measure what they protect against (`levee drill flood --protections off`).
    #[serde(default = "d_true")]
    pub protections: bool,
    #[serde(default)]
    pub blocking: BlockingSettings,
    /// Groups by name.
    #[serde(default)]
    pub groups: BTreeMap<String, GroupSettings>,
}

impl Default for IngressSettings {
    fn default() -> Self {
        toml::from_str("").expect("defaults parse")
    }
}

fn d_concurrency() -> usize {
    64
}
fn d_queue() -> usize {
    256
}
fn d_queue_ms() -> u64 {
    1_000
}
fn d_rate() -> f64 {
    100.0
}

/// `[ingress.groups.NAME]`: a bulkhead.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupSettings {
    /// Public functions whose `POST .../messages` this group serves.
    #[serde(default)]
    pub functions: Vec<String>,
    /// Route classes it serves: status, kv, dlq, invoke, keys, blocks.
    #[serde(default)]
    pub routes: Vec<String>,
    /// Requests of this group handled at once.
    #[serde(default = "d_concurrency")]
    pub concurrency: usize,
    /// Requests waiting for a slot; past it, 503.
    #[serde(default = "d_queue")]
    pub queue: usize,
    /// Longest wait for a slot before 503.
    #[serde(default = "d_queue_ms")]
    pub queue_timeout_ms: u64,
    /// Requests per second per source (token bucket refill).
    #[serde(default = "d_rate")]
    pub rate: f64,
    /// Bucket size (default: twice `rate`).
    pub burst: Option<u32>,
}

impl Default for GroupSettings {
    fn default() -> Self {
        toml::from_str("").expect("defaults parse")
    }
}

impl GroupSettings {
    /// The token bucket's size.
    pub fn burst(&self) -> u32 {
        self.burst
            .unwrap_or_else(|| (self.rate * 2.0).ceil().clamp(1.0, 1e6) as u32)
    }
}

fn d_factor() -> f64 {
    10.0
}
fn d_window() -> u64 {
    1_000
}
fn d_baseline() -> u64 {
    60
}
fn d_ttl() -> u64 {
    300
}
fn d_min_rate() -> f64 {
    20.0
}

/// `[ingress.blocking]`: a source whose rate exceeds `factor` × its own baseline (a moving
/// average over `baseline_s`, at least `min_rate`) for `window_ms` is blocked for `ttl_s`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlockingSettings {
    #[serde(default = "d_true")]
    pub enabled: bool,
    #[serde(default = "d_factor")]
    pub factor: f64,
    #[serde(default = "d_window")]
    pub window_ms: u64,
    #[serde(default = "d_baseline")]
    pub baseline_s: u64,
    #[serde(default = "d_ttl")]
    pub ttl_s: u64,
    /// Requests per second under which a source is never blocked (a new source's baseline).
    #[serde(default = "d_min_rate")]
    pub min_rate: f64,
}

impl Default for BlockingSettings {
    fn default() -> Self {
        toml::from_str("").expect("defaults parse")
    }
}

impl IngressSettings {
    pub fn header_timeout(&self) -> Duration {
        Duration::from_millis(self.header_timeout_ms)
    }
    pub fn body_timeout(&self) -> Duration {
        Duration::from_millis(self.body_timeout_ms)
    }
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_millis(self.idle_timeout_ms)
    }

    /// Checks the section against the manifest's functions; errors name the field.
    pub fn validate(
        &self,
        functions: &BTreeMap<String, crate::manifest::FunctionSpec>,
    ) -> Result<()> {
        let bad = |field: String, why: String| Err(Error::Manifest(format!("`{field}`: {why}")));
        let ranges: [(&str, u64, u64, u64); 6] = [
            ("max_connections", self.max_connections as u64, 1, 1 << 20),
            (
                "max_connections_per_peer",
                self.max_connections_per_peer as u64,
                1,
                1 << 20,
            ),
            ("header_timeout_ms", self.header_timeout_ms, 100, 300_000),
            ("body_timeout_ms", self.body_timeout_ms, 100, 3_600_000),
            ("idle_timeout_ms", self.idle_timeout_ms, 100, 3_600_000),
            ("invoke_concurrency", self.invoke_concurrency as u64, 1, 16),
        ];
        for (k, v, lo, hi) in ranges {
            if !(lo..=hi).contains(&v) {
                return bad(
                    format!("ingress.{k}"),
                    format!("must be {lo} to {hi}, got {v}"),
                );
            }
        }
        let max_body = crate::platform::MAX_BODY_BYTES;
        if !(max_body..=16 << 30).contains(&self.max_inflight_body_bytes) {
            return bad(
                "ingress.max_inflight_body_bytes".into(),
                format!(
                    "must be at least one largest body ({max_body}) and at most 16 GiB, got {}",
                    self.max_inflight_body_bytes
                ),
            );
        }
        for h in &self.hosts {
            if h.is_empty() || h.contains(['/', ' ', '@']) || h.len() > 253 {
                return bad("ingress.hosts".into(), format!("`{h}` is not a host name"));
            }
        }
        for o in &self.allow_origins {
            if !(o.starts_with("http://") || o.starts_with("https://")) || o.ends_with('/') {
                return bad(
                    "ingress.allow_origins".into(),
                    format!("`{o}` is not an origin like https://app.example.com"),
                );
            }
        }
        let b = &self.blocking;
        if !(b.factor.is_finite() && (1.5..=1e6).contains(&b.factor)) {
            return bad(
                "ingress.blocking.factor".into(),
                format!("must be 1.5 to 1000000, got {}", b.factor),
            );
        }
        if !(250..=600_000).contains(&b.window_ms) {
            return bad(
                "ingress.blocking.window_ms".into(),
                format!("must be 250 to 600000, got {}", b.window_ms),
            );
        }
        if !(1..=86_400).contains(&b.baseline_s) {
            return bad(
                "ingress.blocking.baseline_s".into(),
                format!("must be 1 to 86400, got {}", b.baseline_s),
            );
        }
        if !(1..=86_400 * 7).contains(&b.ttl_s) {
            return bad(
                "ingress.blocking.ttl_s".into(),
                format!("must be 1 to 604800, got {}", b.ttl_s),
            );
        }
        if !(b.min_rate.is_finite() && (0.1..=1e7).contains(&b.min_rate)) {
            return bad(
                "ingress.blocking.min_rate".into(),
                format!("must be 0.1 to 10000000, got {}", b.min_rate),
            );
        }
        let mut owner: BTreeMap<&str, &str> = BTreeMap::new();
        for (name, g) in &self.groups {
            let field = |k: &str| format!("ingress.groups.{name}.{k}");
            if !crate::manifest::valid_name(name) || name == ADMIN_GROUP {
                return bad(
                    format!("ingress.groups.{name}"),
                    format!(
                        "a group name is 1-64 characters of a-z, 0-9 and '-', not `{ADMIN_GROUP}`"
                    ),
                );
            }
            for f in &g.functions {
                let Some(spec) = functions.get(f) else {
                    return bad(field("functions"), format!("unknown function `{f}`"));
                };
                if !spec.public {
                    return bad(
                        field("functions"),
                        format!(
                            "`{f}` is not public; set `public = true` in [functions.{f}] to take messages from outside"
                        ),
                    );
                }
                if let Some(other) = owner.insert(f, name) {
                    return bad(
                        field("functions"),
                        format!("`{f}` is already served by group `{other}`"),
                    );
                }
            }
            let mut seen = BTreeSet::new();
            for r in &g.routes {
                if !ROUTE_CLASSES.contains(&r.as_str()) {
                    return bad(
                        field("routes"),
                        format!("`{r}` is not one of {}", ROUTE_CLASSES.join(", ")),
                    );
                }
                if !seen.insert(r) {
                    return bad(field("routes"), format!("`{r}` is listed twice"));
                }
            }
            if !(1..=65_536).contains(&g.concurrency) {
                return bad(
                    field("concurrency"),
                    format!("must be 1 to 65536, got {}", g.concurrency),
                );
            }
            if g.queue > 1 << 20 {
                return bad(
                    field("queue"),
                    format!("must be 0 to 1048576, got {}", g.queue),
                );
            }
            if !(1..=60_000).contains(&g.queue_timeout_ms) {
                return bad(
                    field("queue_timeout_ms"),
                    format!("must be 1 to 60000, got {}", g.queue_timeout_ms),
                );
            }
            if !(g.rate.is_finite() && (0.01..=1e7).contains(&g.rate)) {
                return bad(
                    field("rate"),
                    format!(
                        "must be 0.01 to 10000000 requests per second, got {}",
                        g.rate
                    ),
                );
            }
            if let Some(b) = g.burst
                && !(1..=10_000_000).contains(&b)
            {
                return bad(field("burst"), format!("must be 1 to 10000000, got {b}"));
            }
        }
        let mut routes = BTreeMap::new();
        for (name, g) in &self.groups {
            for r in &g.routes {
                if let Some(other) = routes.insert(r.as_str(), name) {
                    return bad(
                        format!("ingress.groups.{name}.routes"),
                        format!("`{r}` is already served by group `{other}`"),
                    );
                }
            }
        }
        Ok(())
    }

    /// The group serving messages to `function`: the group listing it, else `default`.
    pub fn group_of_function(&self, function: &str) -> &str {
        self.groups
            .iter()
            .find(|(_, g)| g.functions.iter().any(|f| f == function))
            .map_or(DEFAULT_GROUP, |(n, _)| n.as_str())
    }

    /// The group serving a route class: the group listing it, else `control`.
    pub fn group_of_route(&self, class: &str) -> &str {
        self.groups
            .iter()
            .find(|(_, g)| g.routes.iter().any(|r| r == class))
            .map_or(CONTROL_GROUP, |(n, _)| n.as_str())
    }

    /// Every group with its settings, the implicit `default` and `control` included.
    pub fn all_groups(&self) -> BTreeMap<String, GroupSettings> {
        let mut all = self.groups.clone();
        all.entry(DEFAULT_GROUP.into()).or_default();
        all.entry(CONTROL_GROUP.into())
            .or_insert_with(|| GroupSettings {
                concurrency: 16,
                queue: 64,
                rate: 50.0,
                ..Default::default()
            });
        all
    }
}
