//! `[[functions.NAME.outbound]]`: one destination a function may call, with its limits.

use std::fmt;
use std::time::Duration;

use serde::Deserialize;

use crate::store::BreakerConfig;
use crate::{Error, Result};

/// Largest response body a grant may allow.
pub const MAX_RESPONSE_BYTES: u64 = 16 << 20;
/// Longest per-request timeout a grant may set, in ms.
pub const MAX_TIMEOUT_MS: u64 = 300_000;
/// Most requests in flight to one destination a grant may allow, per host.
pub const MAX_CONCURRENCY: u32 = 1024;

/// One granted destination, as written in the manifest.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrantSpec {
    /// `scheme://host[:port]`, http or https; no path, no wildcard.
    pub url: String,
    /// Requests in flight at once to this destination, per host process.
    #[serde(default = "default_concurrency")]
    pub concurrency: u32,
    /// Requests per second to this destination, per host process (none: no rate limit).
    pub rate: Option<f64>,
    /// Requests that may go at once above the rate after a quiet spell (at least 1).
    #[serde(default = "default_burst")]
    pub burst: u32,
    /// Time for the answer's headers, in ms; the invocation's deadline cuts it shorter.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Largest response body read; a longer one fails the read.
    #[serde(default = "default_max_response_bytes")]
    pub max_response_bytes: u64,
    /// Add `idempotency-key: {message id}.{n}` (n: the request's index in the invocation) to
    /// POST, PUT, PATCH and DELETE requests that carry none, so a retried invocation's requests
    /// carry the same keys.
    #[serde(default = "default_true")]
    pub idempotency_key: bool,
    /// The destination's circuit breaker (5xx answers, timeouts and refused connections count
    /// as failures).
    #[serde(default)]
    pub breaker: BreakerConfig,
    /// Longest `Retry-After` honoured, in s.
    #[serde(default = "default_max_retry_after_s")]
    pub max_retry_after_s: u64,
}

fn default_concurrency() -> u32 {
    16
}
fn default_burst() -> u32 {
    1
}
fn default_timeout_ms() -> u64 {
    5_000
}
fn default_max_response_bytes() -> u64 {
    1 << 20
}
fn default_true() -> bool {
    true
}
fn default_max_retry_after_s() -> u64 {
    300
}

impl GrantSpec {
    /// A grant of `url` with the default limits.
    pub fn new(url: &str) -> Self {
        GrantSpec {
            url: url.to_string(),
            concurrency: default_concurrency(),
            rate: None,
            burst: default_burst(),
            timeout_ms: default_timeout_ms(),
            max_response_bytes: default_max_response_bytes(),
            idempotency_key: true,
            breaker: BreakerConfig::default(),
            max_retry_after_s: default_max_retry_after_s(),
        }
    }

    /// The per-request timeout.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    /// Checks every field; `field` (like `functions.notify.outbound[0]`) names where it sits.
    pub fn validate(&self, field: &str) -> Result<Origin> {
        let origin = Origin::parse(&self.url).map_err(|e| bad(field, "url", &e))?;
        if !(1..=MAX_CONCURRENCY).contains(&self.concurrency) {
            return Err(bad(
                field,
                "concurrency",
                &format!("must be 1 to {MAX_CONCURRENCY}, got {}", self.concurrency),
            ));
        }
        if let Some(r) = self.rate
            && !(r.is_finite() && r > 0.0 && r <= 1e6)
        {
            return Err(bad(
                field,
                "rate",
                &format!("must be a number of requests per second above 0 (at most 1e6), got {r}"),
            ));
        }
        if self.burst == 0 || self.burst > 10_000 {
            return Err(bad(
                field,
                "burst",
                &format!("must be 1 to 10000, got {}", self.burst),
            ));
        }
        if !(1..=MAX_TIMEOUT_MS).contains(&self.timeout_ms) {
            return Err(bad(
                field,
                "timeout_ms",
                &format!("must be 1 to {MAX_TIMEOUT_MS}, got {}", self.timeout_ms),
            ));
        }
        if !(1..=MAX_RESPONSE_BYTES).contains(&self.max_response_bytes) {
            return Err(bad(
                field,
                "max_response_bytes",
                &format!(
                    "must be 1 to {MAX_RESPONSE_BYTES} (16 MiB), got {}",
                    self.max_response_bytes
                ),
            ));
        }
        if self.max_retry_after_s > 3600 {
            return Err(bad(
                field,
                "max_retry_after_s",
                &format!("must be at most 3600, got {}", self.max_retry_after_s),
            ));
        }
        self.breaker.validate(&format!("{field}.breaker"))?;
        Ok(origin)
    }
}

fn bad(field: &str, name: &str, why: &str) -> Error {
    Error::Manifest(format!("`{field}.{name}`: {why}"))
}

/// A scheme, host and port: what a grant names and what a request is matched against.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Origin {
    pub scheme: String,
    pub host: String,
    pub port: u16,
}

impl Origin {
    /// Parses `scheme://host[:port]` (a trailing `/` is fine; a path, query, user or wildcard is
    /// not).
    pub fn parse(url: &str) -> std::result::Result<Origin, String> {
        let uri: http::Uri = url
            .parse()
            .map_err(|e| format!("`{url}` is not a URL ({e}); write scheme://host[:port]"))?;
        let scheme = uri
            .scheme_str()
            .ok_or_else(|| format!("`{url}` has no scheme; write http://… or https://…"))?
            .to_ascii_lowercase();
        if scheme != "http" && scheme != "https" {
            return Err(format!(
                "`{url}`: only http and https are supported, got `{scheme}`"
            ));
        }
        let authority = uri
            .authority()
            .ok_or_else(|| format!("`{url}` has no host"))?;
        if authority.as_str().contains('@') {
            return Err(format!("`{url}`: credentials do not belong in a grant"));
        }
        if uri
            .path_and_query()
            .is_some_and(|p| p.as_str() != "/" && !p.as_str().is_empty())
        {
            return Err(format!(
                "`{url}`: a grant names an origin (scheme://host:port), not a path"
            ));
        }
        let host = authority.host().to_ascii_lowercase();
        if host.contains('*') {
            return Err(format!(
                "`{url}`: wildcards are not granted; list each host"
            ));
        }
        Ok(Origin::new(&scheme, &host, authority.port_u16()))
    }

    /// The origin of a request's URI, if it has a scheme and host.
    pub fn of(uri: &http::Uri) -> Option<Origin> {
        let scheme = uri.scheme_str()?.to_ascii_lowercase();
        let authority = uri.authority()?;
        Some(Origin::new(
            &scheme,
            &authority.host().to_ascii_lowercase(),
            authority.port_u16(),
        ))
    }

    fn new(scheme: &str, host: &str, port: Option<u16>) -> Origin {
        let port = port.unwrap_or(if scheme == "https" { 443 } else { 80 });
        Origin {
            scheme: scheme.to_string(),
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string(),
            port,
        }
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "{}://[{}]:{}", self.scheme, self.host, self.port)
        } else {
            write!(f, "{}://{}:{}", self.scheme, self.host, self.port)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_parse_with_default_ports_and_refuse_paths_and_wildcards() {
        let o = Origin::parse("https://API.example.com").unwrap();
        assert_eq!(o.to_string(), "https://api.example.com:443");
        assert_eq!(
            Origin::parse("http://127.0.0.1:9100/").unwrap().to_string(),
            "http://127.0.0.1:9100"
        );
        assert_eq!(
            Origin::parse("http://[::1]:80").unwrap().to_string(),
            "http://[::1]:80"
        );
        for (url, says) in [
            ("https://example.com/hooks", "not a path"),
            ("https://*.example.com", "wildcards"),
            ("ftp://example.com", "only http and https"),
            ("example.com", "no scheme"),
            ("https://user:pw@example.com", "credentials"),
        ] {
            let e = Origin::parse(url).unwrap_err();
            assert!(e.contains(says), "{url}: {e}");
        }
        let uri: http::Uri = "https://api.example.com/v1/send?x=1".parse().unwrap();
        assert_eq!(Origin::of(&uri), Some(o));
    }

    #[test]
    fn validation_names_the_field() {
        let mut g = GrantSpec::new("http://127.0.0.1:9");
        g.rate = Some(0.0);
        let e = g
            .validate("functions.n.outbound[0]")
            .unwrap_err()
            .to_string();
        assert!(e.contains("functions.n.outbound[0].rate"), "{e}");
        let mut g = GrantSpec::new("http://127.0.0.1:9");
        g.max_response_bytes = 1 << 30;
        let e = g
            .validate("functions.n.outbound[1]")
            .unwrap_err()
            .to_string();
        assert!(e.contains("outbound[1].max_response_bytes"), "{e}");
        let e = GrantSpec::new("https://x/y")
            .validate("f")
            .unwrap_err()
            .to_string();
        assert!(e.contains("f.url"), "{e}");
    }
}
