//! The per-function [`Outbound`] (its destinations and the HTTP client) and the per-invocation
//! [`Calls`], which wasmtime's `wasi:http` hands every request to.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rustls::pki_types::CertificateDer;
use wasmtime_wasi_http::{Error as HttpErr, RequestOptions, WasiBody, WasiHttpHooks};

use super::body::Bounded;
use super::destination::{self, DEFAULT_THROTTLE, Destination, Unavailable};
use super::grant::{GrantSpec, Origin};
use crate::Result;
use crate::tls::{Connector, error_chain};

/// Most outbound requests one invocation may make.
pub const MAX_REQUESTS_PER_INVOCATION: u32 = 100;
/// Idle connections kept per destination.
const IDLE_PER_HOST: usize = 8;

/// Where an invocation's calls report that a destination was unavailable (first report wins).
pub type Signal = Arc<Mutex<Option<Unavailable>>>;

/// A function's granted destinations and the client that reaches them.
pub struct Outbound {
    function: String,
    destinations: Vec<Arc<Destination>>,
    client: Option<Client<Connector, WasiBody>>,
}

impl std::fmt::Debug for Outbound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbound")
            .field("function", &self.function)
            .field("destinations", &self.destinations)
            .finish_non_exhaustive()
    }
}

impl Outbound {
    /// The destinations of `grants` (validated), trusting the system's roots and `extra_roots`.
    pub fn new(
        function: &str,
        grants: &[GrantSpec],
        extra_roots: &[CertificateDer<'static>],
    ) -> Result<Self> {
        let mut destinations = Vec::new();
        for (i, g) in grants.iter().enumerate() {
            let origin = g.validate(&format!("functions.{function}.outbound[{i}]"))?;
            destinations.push(Arc::new(Destination::new(function, origin, g.clone())?));
        }
        let client = (!destinations.is_empty()).then(|| {
            let connector = crate::tls::connector("outbound http", extra_roots);
            Client::builder(TokioExecutor::new())
                .pool_idle_timeout(Duration::from_secs(30))
                .pool_max_idle_per_host(IDLE_PER_HOST)
                .build(connector)
        });
        Ok(Outbound {
            function: function.to_string(),
            destinations,
            client,
        })
    }

    /// A function granted nothing.
    /// Whether the function may call out at all (it has at least one destination).
    pub fn grants_any(&self) -> bool {
        !self.destinations.is_empty()
    }

    pub fn none(function: &str) -> Self {
        Outbound {
            function: function.to_string(),
            destinations: Vec::new(),
            client: None,
        }
    }

    /// The granted destinations.
    pub fn destinations(&self) -> &[Arc<Destination>] {
        &self.destinations
    }

    fn find(&self, origin: &Origin) -> Option<&Arc<Destination>> {
        self.destinations.iter().find(|d| &d.origin == origin)
    }

    fn granted(&self) -> String {
        if self.destinations.is_empty() {
            return "none".into();
        }
        let list: Vec<String> = self
            .destinations
            .iter()
            .map(|d| d.origin.to_string())
            .collect();
        list.join(", ")
    }

    /// The hooks of one invocation of message `message_id`, ending at `deadline`.
    pub fn calls(self: &Arc<Self>, message_id: &str, deadline: Instant) -> Calls {
        Calls {
            outbound: self.clone(),
            message_id: message_id.to_string(),
            deadline,
            sent: 0,
            unavailable: Arc::default(),
        }
    }
}

/// One invocation's view of outbound HTTP.
pub struct Calls {
    outbound: Arc<Outbound>,
    message_id: String,
    pub(crate) deadline: Instant,
    sent: u32,
    /// Set when a destination was unavailable during the invocation.
    pub unavailable: Signal,
}

type Sent = std::result::Result<
    (
        http::Response<WasiBody>,
        Box<dyn Future<Output = std::result::Result<(), HttpErr>> + Send>,
    ),
    HttpErr,
>;

impl Calls {
    /// Matches the request to a grant and stamps its idempotency key.
    fn prepare(
        &mut self,
        mut request: http::Request<WasiBody>,
    ) -> std::result::Result<(Arc<Destination>, http::Request<WasiBody>), HttpErr> {
        let f = &self.outbound.function;
        if self.sent >= MAX_REQUESTS_PER_INVOCATION {
            return Err(denied(format!(
                "function `{f}` made more than {MAX_REQUESTS_PER_INVOCATION} outbound requests in one invocation"
            )));
        }
        let n = self.sent;
        self.sent += 1;
        let origin = Origin::of(request.uri())
            .ok_or_else(|| denied(format!("request to `{}` has no host", request.uri())))?;
        let Some(dest) = self.outbound.find(&origin) else {
            return Err(denied(format!(
                "{origin} is not granted to function `{f}`: its manifest's outbound grants are [{}]; add [[functions.{f}.outbound]] url = \"{origin}\"",
                self.outbound.granted()
            )));
        };
        if dest.spec.idempotency_key
            && matches!(
                *request.method(),
                http::Method::POST | http::Method::PUT | http::Method::PATCH | http::Method::DELETE
            )
        {
            let key = format!("{}.{n}", self.message_id);
            if let Ok(v) = http::HeaderValue::from_str(&key) {
                request.headers_mut().entry("idempotency-key").or_insert(v);
            }
        }
        Ok((dest.clone(), request))
    }
}

/// An error the guest sees with its reason (the `denied:` prefix tells SDKs it is permanent).
fn denied(why: String) -> HttpErr {
    HttpErr::InternalError(Some(format!("denied: {why}")))
}

fn unavailable(why: String) -> HttpErr {
    HttpErr::InternalError(Some(format!("unavailable: {why}")))
}

impl WasiHttpHooks for Calls {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _fut: Box<dyn Future<Output = std::result::Result<(), HttpErr>> + Send>,
    ) -> Box<dyn Future<Output = Sent> + Send> {
        let prepared = self.prepare(request);
        let deadline = self.deadline;
        let signal = self.unavailable.clone();
        let client = self.outbound.client.clone();
        let function = self.outbound.function.clone();
        Box::new(async move {
            let (dest, request) = prepared.inspect_err(|e| {
                metrics::counter!("levee_outbound_requests_total", "function" => function.clone(), "destination" => "not-granted", "result" => "denied").increment(1);
                tracing::warn!(function = %function, "outbound request refused: {e:?}");
            })?;
            let client = client.expect("a function with grants has a client");
            let result = send(&dest, &client, request, options, deadline, &signal).await;
            let label = match &result {
                Ok((r, _)) if r.status().is_success() => "ok",
                Ok((r, _)) if destination::is_throttle(r.status()) => "throttled",
                Ok((r, _)) if r.status().is_server_error() => "5xx",
                Ok(_) => "4xx",
                Err(_) => "failed",
            };
            metrics::counter!("levee_outbound_requests_total", "function" => function, "destination" => dest.origin.to_string(), "result" => label).increment(1);
            result
        })
    }
}

fn report(signal: &Signal, reason: String, retry_after: Option<Duration>) {
    let mut s = signal.lock().unwrap_or_else(|p| p.into_inner());
    if s.is_none() {
        *s = Some(Unavailable {
            reason,
            retry_after,
        });
    }
}

async fn send(
    dest: &Destination,
    client: &Client<Connector, WasiBody>,
    request: http::Request<WasiBody>,
    options: Option<RequestOptions>,
    deadline: Instant,
    signal: &Signal,
) -> Sent {
    let origin = &dest.origin;
    if let Some(left) = dest.throttled_for(Instant::now()) {
        let why = format!("{origin} asked to slow down; {} ms left", left.as_millis());
        report(signal, why.clone(), Some(left));
        return Err(unavailable(why));
    }
    let Some(slot) = dest.slot(deadline).await else {
        let why = format!(
            "{origin}: all {} concurrency slots stayed busy until the invocation's deadline",
            dest.spec.concurrency
        );
        report(signal, why.clone(), None);
        return Err(unavailable(why));
    };
    if let Err(wait) = dest.pace(deadline).await {
        let why = format!(
            "{origin}: its rate limit of {}/s has no room before the invocation's deadline",
            dest.spec.rate.unwrap_or_default()
        );
        report(signal, why.clone(), Some(wait));
        return Err(unavailable(why));
    }
    let now = Instant::now();
    let permit = match dest.breaker.try_acquire(now) {
        Ok(p) => p,
        Err(_) => {
            let why = format!("{origin}: circuit breaker open");
            report(signal, why.clone(), Some(dest.spec.breaker.cool_down()));
            return Err(unavailable(why));
        }
    };
    let mut budget = dest
        .spec
        .timeout()
        .min(deadline.saturating_duration_since(now));
    if let Some(t) = options.and_then(|o| o.first_byte_timeout) {
        budget = budget.min(t);
    }
    let answer = tokio::time::timeout(budget, client.request(request)).await;
    let resp = match answer {
        Err(_) => {
            permit.failure(Instant::now());
            let why = format!("{origin}: no answer within {} ms", budget.as_millis());
            report(signal, why, None);
            return Err(HttpErr::HttpResponseTimeout);
        }
        Ok(Err(e)) => {
            let chain = error_chain(&e);
            tracing::debug!(destination = %origin, "outbound request failed: {chain}");
            // A certificate the host does not trust is a configuration error, not an outage:
            // the message's attempts count, so it reaches the DLQ with the reason.
            if chain.contains("certificate") {
                permit.success(Instant::now());
                return Err(HttpErr::InternalError(Some(format!(
                    "{origin}: TLS certificate not trusted ({chain}); add its CA to [platform] ca_file"
                ))));
            }
            permit.failure(Instant::now());
            report(signal, format!("{origin}: {chain}"), None);
            return Err(if e.is_connect() {
                HttpErr::ConnectionRefused
            } else {
                HttpErr::InternalError(Some(format!("{origin}: {chain}")))
            });
        }
        Ok(Ok(r)) => r,
    };
    let status = resp.status();
    if destination::is_failure(status) {
        permit.failure(Instant::now());
    } else {
        permit.success(Instant::now());
    }
    if destination::is_throttle(status) {
        let max = Duration::from_secs(dest.spec.max_retry_after_s);
        let said = destination::retry_after(resp.headers().get(http::header::RETRY_AFTER), max);
        let wait = said.unwrap_or(DEFAULT_THROTTLE);
        dest.throttle(Instant::now(), wait);
        report(
            signal,
            format!(
                "{origin} answered {status} (retry after {} ms)",
                wait.as_millis()
            ),
            Some(wait),
        );
    } else if destination::is_failure(status) {
        report(signal, format!("{origin} answered {status}"), None);
    }
    let limit = dest.spec.max_response_bytes;
    if let Some(len) = resp
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
        && len > limit
    {
        return Err(HttpErr::InternalError(Some(format!(
            "{origin}: the answer's body of {len} bytes is over the grant's max_response_bytes ({limit})"
        ))));
    }
    let resp = resp.map(|b| Bounded::new(b, limit, slot).boxed_unsync());
    let io: Box<dyn Future<Output = std::result::Result<(), HttpErr>> + Send> =
        Box::new(async { Ok(()) });
    Ok((resp, io))
}
