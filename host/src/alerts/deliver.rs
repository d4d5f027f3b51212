//! Webhook delivery: one HTTP POST of a JSON body per attempt (hyper's client; https through
//! rustls with the system's roots (see `tls.rs`), the TLS stack the AWS SDK already uses), a timeout per
//! request, and the bodies of both formats.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::Request;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::Serialize;

use super::rules::{AlertKind, Format, MAX_RETRY_WAIT_MS};
use super::{AlertState, ChannelName};

/// Largest body sent to a webhook; the message is cut to fit.
pub const MAX_BODY_BYTES: usize = 16 << 10;
/// Longest error kept for a delivery.
const MAX_ERROR_LEN: usize = 256;

use crate::tls::{Connector, error_chain};

/// An HTTP(S) client for webhooks.
#[derive(Clone)]
pub struct Webhook {
    client: Client<Connector, Full<Bytes>>,
}

impl std::fmt::Debug for Webhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhook").finish_non_exhaustive()
    }
}

impl Webhook {
    /// A client for http and https URLs. Without usable system roots, https deliveries fail
    /// (each with the reason) and http ones work.
    pub fn new() -> Self {
        let extra = crate::tls::extra_roots_from_env().unwrap_or_else(|e| {
            tracing::warn!("alert webhooks: {e}");
            Vec::new()
        });
        Self::with_roots(&extra)
    }

    /// A client also trusting `extra` roots (`[platform] ca_file`).
    pub fn with_roots(extra: &[rustls::pki_types::CertificateDer<'static>]) -> Self {
        let connector = crate::tls::connector("alert webhooks", extra);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(2)
            .build(connector);
        Webhook { client }
    }

    /// POSTs `body` to `url`; `Ok` on a 2xx answer within `timeout`, else why not.
    pub async fn post(
        &self,
        url: &hyper::Uri,
        body: Bytes,
        timeout: Duration,
    ) -> std::result::Result<(), String> {
        let host = url.authority().map(|a| a.as_str().to_string());
        let mut req = Request::post(url.clone())
            .header("content-type", "application/json")
            .header("user-agent", concat!("levee/", env!("CARGO_PKG_VERSION")));
        if let Some(h) = host {
            req = req.header("host", h);
        }
        let req = req
            .body(Full::new(body))
            .map_err(|e| format!("bad request: {e}"))?;
        let resp = match tokio::time::timeout(timeout, self.client.request(req)).await {
            Err(_) => return Err(format!("no answer within {} ms", timeout.as_millis())),
            Ok(Err(e)) => return Err(short(&error_chain(&e))),
            Ok(Ok(r)) => r,
        };
        let status = resp.status();
        // The answer's body is not needed: dropping it closes that connection.
        drop(resp);
        if status.is_success() {
            Ok(())
        } else {
            Err(format!("HTTP {status}"))
        }
    }
}

impl Default for Webhook {
    fn default() -> Self {
        Self::new()
    }
}

fn short(s: &str) -> String {
    if s.len() <= MAX_ERROR_LEN {
        return s.to_string();
    }
    let mut end = MAX_ERROR_LEN;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// The wait before retry `n` (1 for the first): `backoff_ms` doubled per retry, at most
/// [`MAX_RETRY_WAIT_MS`].
pub fn retry_wait(backoff_ms: u64, n: u32) -> Duration {
    let ms = backoff_ms.saturating_mul(1u64 << n.saturating_sub(1).min(20));
    Duration::from_millis(ms.min(MAX_RETRY_WAIT_MS))
}

/// What one notice says: an alert firing or resolved.
#[derive(Debug, Clone, Serialize)]
pub struct Notice {
    pub id: u64,
    pub rule: String,
    pub kind: AlertKind,
    pub function: Option<String>,
    /// `firing` or `resolved`.
    pub state: AlertState,
    pub value: f64,
    pub threshold: Option<f64>,
    pub message: String,
    /// When the alert fired, ms since the Unix epoch.
    pub fired_ms: u64,
    /// When it resolved (resolved notices).
    pub resolved_ms: Option<u64>,
}

/// The `json` body.
#[derive(Serialize)]
struct JsonBody<'a> {
    source: &'static str,
    #[serde(flatten)]
    notice: &'a Notice,
    /// Which channel this is sent to.
    channel: ChannelName,
    /// Sent to the secondary because the primary failed.
    primary_failed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    primary_error: Option<&'a str>,
    sent_ms: u64,
}

/// The body of `notice` for a channel in `format`; `primary_failure` is set when the notice
/// goes to the secondary because the primary failed (what it failed with). At most
/// [`MAX_BODY_BYTES`].
pub fn body(
    format: Format,
    notice: &Notice,
    channel: ChannelName,
    primary_failure: Option<&str>,
    sent_ms: u64,
) -> Bytes {
    let mut notice = notice.clone();
    loop {
        let b = match format {
            Format::Json => serde_json::to_vec(&JsonBody {
                source: "levee",
                notice: &notice,
                channel,
                primary_failed: primary_failure.is_some(),
                primary_error: primary_failure,
                sent_ms,
            }),
            Format::Slack => serde_json::to_vec(&serde_json::json!({
                "text": slack_text(&notice, primary_failure),
            })),
        }
        .expect("a notice serialises");
        if b.len() <= MAX_BODY_BYTES || notice.message.is_empty() {
            return Bytes::from(b);
        }
        let keep = notice.message.len() / 2;
        let mut end = keep;
        while !notice.message.is_char_boundary(end) {
            end -= 1;
        }
        notice.message.truncate(end);
    }
}

/// The Slack-compatible `text`.
pub fn slack_text(n: &Notice, primary_failure: Option<&str>) -> String {
    let tag = match n.state {
        AlertState::Firing => "FIRING",
        AlertState::Resolved => "RESOLVED",
    };
    let scope = n
        .function
        .as_deref()
        .map_or_else(String::new, |f| format!(", {f}"));
    let mut t = format!(
        "[{tag}] levee alert `{}` ({}{scope}): {}",
        n.rule, n.kind, n.message
    );
    if let Some(e) = primary_failure {
        t.push_str(&format!(
            "\n(sent to the secondary channel: the primary channel failed: {e})"
        ));
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notice() -> Notice {
        Notice {
            id: 7,
            rule: "backlog".into(),
            kind: AlertKind::OldestAge,
            function: Some("inbound".into()),
            state: AlertState::Firing,
            value: 12.5,
            threshold: Some(5.0),
            message: "inbound: the oldest message is 12.5 s old (threshold 5 s)".into(),
            fired_ms: 1000,
            resolved_ms: None,
        }
    }

    #[test]
    fn retry_waits_double_and_are_capped() {
        assert_eq!(retry_wait(500, 1), Duration::from_millis(500));
        assert_eq!(retry_wait(500, 2), Duration::from_millis(1000));
        assert_eq!(retry_wait(500, 3), Duration::from_millis(2000));
        assert_eq!(
            retry_wait(50_000, 3),
            Duration::from_millis(MAX_RETRY_WAIT_MS)
        );
        assert_eq!(retry_wait(1, 60), Duration::from_millis(MAX_RETRY_WAIT_MS));
        assert_eq!(retry_wait(1, 11), Duration::from_millis(1024));
    }

    #[test]
    fn json_bodies_carry_the_alert_and_the_primary_failure() {
        let b = body(Format::Json, &notice(), ChannelName::Primary, None, 5);
        let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(v["rule"], "backlog");
        assert_eq!(v["kind"], "oldest_age");
        assert_eq!(v["function"], "inbound");
        assert_eq!(v["state"], "firing");
        assert_eq!(v["channel"], "primary");
        assert_eq!(v["primary_failed"], false);
        assert!(v.get("primary_error").is_none());
        let b = body(
            Format::Json,
            &notice(),
            ChannelName::Secondary,
            Some("HTTP 500 after 4 attempts"),
            5,
        );
        let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(v["channel"], "secondary");
        assert_eq!(v["primary_failed"], true);
        assert_eq!(v["primary_error"], "HTTP 500 after 4 attempts");
    }

    #[test]
    fn slack_bodies_are_one_text_field() {
        let b = body(
            Format::Slack,
            &notice(),
            ChannelName::Secondary,
            Some("connection refused"),
            5,
        );
        let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
        let obj = v.as_object().unwrap();
        assert_eq!(obj.len(), 1, "{v}");
        let text = v["text"].as_str().unwrap();
        assert!(text.starts_with("[FIRING] levee alert `backlog`"), "{text}");
        assert!(
            text.contains("primary channel failed: connection refused"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn https_goes_through_tls_and_failures_say_why() {
        let hook = crate::drill::blind::Hook::start(200).await.unwrap();
        let w = Webhook::new();
        let plain: hyper::Uri = hook.url.parse().unwrap();
        let b = body(Format::Json, &notice(), ChannelName::Primary, None, 5);
        w.post(&plain, b.clone(), Duration::from_secs(5))
            .await
            .unwrap();
        // The same server over https: a TLS handshake with a plain HTTP server fails.
        let tls: hyper::Uri = hook.url.replacen("http://", "https://", 1).parse().unwrap();
        let e = w
            .post(&tls, b.clone(), Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(!e.is_empty(), "{e}");
        assert_eq!(
            hook.requests(),
            1,
            "no HTTP request reached it over https: {e}"
        );
        let closed: hyper::Uri = crate::drill::blind::closed_url().unwrap().parse().unwrap();
        let e = w
            .post(&closed, b, Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(e.contains("refused"), "{e}");
    }

    #[test]
    fn bodies_are_bounded() {
        let mut n = notice();
        n.message = "é".repeat(40_000);
        for f in [Format::Json, Format::Slack] {
            let b = body(f, &n, ChannelName::Primary, None, 5);
            assert!(b.len() <= MAX_BODY_BYTES, "{}", b.len());
            serde_json::from_slice::<serde_json::Value>(&b).unwrap();
        }
    }
}
