//! A notification provider on loopback, for `levee drill provider-limit` and the tests: it
//! accepts a set number of requests per second (more are answered 429 and counted as over the
//! limit), can be told to answer 429 to everything for a while (an outage at the provider, with
//! or without `Retry-After`), and honours `idempotency-key`: the first request with a key is a
//! delivery, a later one with the same key is answered 200 again without delivering twice.
//!
//! Bounded: request bodies are read up to 64 KiB; at most [`MAX_TRACKED`] keys and arrival times
//! are kept (past that, requests are still answered and counted, not remembered).

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use tokio::time::Instant;

use crate::{Error, Result};

/// Most keys and arrivals remembered.
pub const MAX_TRACKED: usize = 2_000_000;
/// Largest request body read.
const MAX_BODY: usize = 64 << 10;

/// What the provider saw.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ProviderStats {
    /// Requests received, whatever the answer.
    pub requests: u64,
    /// Distinct idempotency keys delivered (first request of each key, answered 2xx).
    pub delivered: u64,
    /// Requests repeating a delivered key (answered 200 again, not delivered).
    pub replays: u64,
    /// Requests answered 429 because the provider was told to throttle (its outage).
    pub throttled: u64,
    /// Requests answered 429 because they came above the provider's rate.
    pub over_limit: u64,
    /// Requests without an `idempotency-key` header (delivered all the same).
    pub missing_key: u64,
    /// Distinct notification ids (`id` of the JSON body) among the deliveries.
    pub distinct_ids: u64,
    /// Ids delivered under more than one key (a notification sent twice).
    pub ids_delivered_twice: u64,
    /// Most requests that arrived within any one second.
    pub peak_per_second: u64,
}

#[derive(Debug, Default)]
struct State {
    stats: ProviderStats,
    keys: HashMap<String, u32>,
    ids: HashMap<String, u32>,
    /// Arrivals of the last second (for the limit).
    window: VecDeque<Instant>,
    /// Every delivery's time since the start, in ms (for drain rates).
    deliveries_ms: Vec<u64>,
    throttle_until: Option<Instant>,
    retry_after_s: Option<u64>,
}

/// A running provider stub.
pub struct Provider {
    pub addr: SocketAddr,
    /// Requests per second it accepts.
    pub rate: u32,
    state: Arc<Mutex<State>>,
    started: Instant,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Provider")
            .field("addr", &self.addr)
            .field("rate", &self.rate)
            .finish_non_exhaustive()
    }
}

impl Provider {
    /// Starts a provider accepting `rate` requests per second on `127.0.0.1:0`.
    pub async fn start(rate: u32) -> Result<Provider> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| Error::io("binding the provider stub", e))?;
        let addr = listener
            .local_addr()
            .map_err(|e| Error::io("reading the provider stub's address", e))?;
        let state = Arc::new(Mutex::new(State::default()));
        let started = Instant::now();
        let s = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let s = s.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| answer(s.clone(), rate, started, req));
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Ok(Provider {
            addr,
            rate,
            state,
            started,
            task,
        })
    }

    /// Where to POST notifications.
    pub fn url(&self) -> String {
        format!("http://{}/notify", self.addr)
    }

    /// The origin to grant.
    pub fn origin(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Answers 429 to everything for `for_`, with `Retry-After: s` when `retry_after_s` is set.
    pub fn throttle(&self, for_: Duration, retry_after_s: Option<u64>) {
        let mut s = self.lock();
        s.throttle_until = Some(Instant::now() + for_);
        s.retry_after_s = retry_after_s;
    }

    /// Ends a throttle early.
    pub fn recover(&self) {
        self.lock().throttle_until = None;
    }

    /// The counts so far.
    pub fn stats(&self) -> ProviderStats {
        self.lock().stats.clone()
    }

    /// When the first delivery at or after `from` (since the stub started) came, in ms since the
    /// start.
    pub fn first_delivery_since(&self, from: Duration) -> Option<u64> {
        let from = from.as_millis() as u64;
        self.lock()
            .deliveries_ms
            .iter()
            .copied()
            .find(|&t| t >= from)
    }

    /// Time since the stub started.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for Provider {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn answer(
    state: Arc<Mutex<State>>,
    rate: u32,
    started: Instant,
    req: Request<hyper::body::Incoming>,
) -> std::result::Result<Response<Full<Bytes>>, std::convert::Infallible> {
    let key = req
        .headers()
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = Limited::new(req.into_body(), MAX_BODY)
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let id = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v.get("id").and_then(|i| i.as_str()).map(str::to_string));
    let now = Instant::now();
    let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
    s.stats.requests += 1;
    while s
        .window
        .front()
        .is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(1))
    {
        s.window.pop_front();
    }
    s.window.push_back(now);
    s.stats.peak_per_second = s.stats.peak_per_second.max(s.window.len() as u64);
    if let Some(until) = s.throttle_until {
        if now < until {
            s.stats.throttled += 1;
            let retry = s.retry_after_s;
            drop(s);
            return Ok(too_many(retry, "provider busy"));
        }
        s.throttle_until = None;
    }
    if s.window.len() > rate as usize {
        s.stats.over_limit += 1;
        drop(s);
        return Ok(too_many(Some(1), "over the rate limit"));
    }
    match &key {
        Some(k) => {
            if let Some(seen) = s.keys.get_mut(k) {
                *seen += 1;
                s.stats.replays += 1;
                return Ok(reply(
                    StatusCode::OK,
                    r#"{"delivered":false,"replay":true}"#,
                ));
            }
            if s.keys.len() < MAX_TRACKED {
                s.keys.insert(k.clone(), 1);
            }
        }
        None => s.stats.missing_key += 1,
    }
    s.stats.delivered += 1;
    if s.deliveries_ms.len() < MAX_TRACKED {
        s.deliveries_ms.push(started.elapsed().as_millis() as u64);
    }
    if let Some(id) = id {
        let n = s.ids.entry(id).or_insert(0);
        *n += 1;
        let twice = *n == 2;
        if *n == 1 {
            s.stats.distinct_ids += 1;
        }
        if twice {
            s.stats.ids_delivered_twice += 1;
        }
    }
    Ok(reply(StatusCode::ACCEPTED, r#"{"delivered":true}"#))
}

fn reply(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = status;
    r
}

fn too_many(retry_after_s: Option<u64>, why: &'static str) -> Response<Full<Bytes>> {
    let mut r = reply(StatusCode::TOO_MANY_REQUESTS, why);
    if let Some(s) = retry_after_s {
        r.headers_mut().insert(
            hyper::header::RETRY_AFTER,
            hyper::header::HeaderValue::from(s),
        );
    }
    r
}
