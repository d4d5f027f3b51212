//! One request, in order: Host and Origin, route, key, source, block, permission, rate,
//! body, bulkhead slot, then the platform. Every refusal is a 4xx (or a 503 to shed load) with
//! `{"error": reason}`; nothing a client sends yields a 500, and no answer repeats an internal
//! error or a key.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{AUTHORIZATION, HOST, HeaderValue, ORIGIN, RETRY_AFTER};
use hyper::{Method, Request, Response, StatusCode};
use percent_encoding::percent_decode_str;
use serde_json::json;

use super::Ingress;
use super::blocker::Verdict;
use super::groups::Refusal;
use super::keys::Rejected;
use super::settings::ADMIN_GROUP;
use crate::Error;

pub type Resp = Response<Full<Bytes>>;

/// Longest client header kept in a source's identity.
const MAX_CLIENT_LEN: usize = 64;
/// Longest kv key or id echoed in an error.
const MAX_ECHO: usize = 64;
/// Dead letters per page by default.
const DEFAULT_PAGE: usize = 20;

/// A refusal: status, reason and an optional `Retry-After` in seconds.
#[derive(Debug, Clone)]
pub struct Reject {
    pub status: StatusCode,
    pub reason: String,
    pub retry_after: Option<u64>,
}

impl Reject {
    pub fn new(status: StatusCode, reason: impl Into<String>) -> Self {
        Reject {
            status,
            reason: reason.into(),
            retry_after: None,
        }
    }
    pub fn retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs.max(1));
        self
    }
    fn into_resp(self) -> Resp {
        let mut r = json_resp(self.status, json!({"error": self.reason}));
        if let Some(s) = self.retry_after {
            r.headers_mut().insert(RETRY_AFTER, HeaderValue::from(s));
        }
        r
    }
}

/// The routes, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    Health,
    /// The dashboard's page (`""`, at `GET /`) or one of its assets (`GET /dashboard/{file}`):
    /// static, served without a key.
    Dashboard(String),
    Status,
    Metrics,
    Alerts,
    Send(String),
    Invoke(String),
    KvGet(String, String),
    DlqList(String),
    DlqGet(String, String),
    DlqBody(String, String),
    DlqRedrive(String),
    KeysList,
    KeysCreate,
    KeysRevoke(String),
    BlocksList,
    BlocksRemove(String),
    Versions(String),
    Deploy(String),
    Rollback(String),
}

impl Route {
    /// The route class (for groups and permissions), or `None` for sending to a function.
    pub fn class(&self) -> Option<&'static str> {
        Some(match self {
            Route::Health | Route::Dashboard(_) | Route::Send(_) => return None,
            Route::Status | Route::Metrics | Route::Alerts => "status",
            Route::Invoke(_) => "invoke",
            Route::KvGet(..) => "kv",
            Route::DlqList(_) | Route::DlqGet(..) | Route::DlqBody(..) | Route::DlqRedrive(_) => {
                "dlq"
            }
            Route::KeysList | Route::KeysCreate | Route::KeysRevoke(_) => "keys",
            Route::BlocksList | Route::BlocksRemove(_) => "blocks",
            Route::Versions(_) | Route::Deploy(_) | Route::Rollback(_) => "releases",
        })
    }

    /// Whether the route takes a JSON body.
    fn json_body(&self) -> bool {
        matches!(
            self,
            Route::Send(_) | Route::Invoke(_) | Route::KeysCreate | Route::Rollback(_)
        )
    }
}

/// Decodes one path segment: every `%` must start a valid escape and the result must be UTF-8.
pub fn decode_segment(s: &str) -> Result<String, Reject> {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let ok =
                b.len() >= i + 3 && b[i + 1].is_ascii_hexdigit() && b[i + 2].is_ascii_hexdigit();
            if !ok {
                return Err(Reject::new(
                    StatusCode::BAD_REQUEST,
                    "the path has an invalid percent-escape (expected %XX with two hex digits)",
                ));
            }
            i += 3;
        } else {
            i += 1;
        }
    }
    percent_decode_str(s)
        .decode_utf8()
        .map(|c| c.into_owned())
        .map_err(|_| {
            Reject::new(
                StatusCode::BAD_REQUEST,
                "a path segment is not UTF-8 once decoded",
            )
        })
}

/// Matches method and path to a route.
pub fn parse(method: &Method, path: &str) -> Result<Route, Reject> {
    let raw: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    if raw.len() > 8 {
        return Err(not_found());
    }
    let segs = raw
        .iter()
        .map(|s| decode_segment(s))
        .collect::<Result<Vec<_>, _>>()?;
    let s: Vec<&str> = segs.iter().map(String::as_str).collect();
    let route = match s.as_slice() {
        ["healthz"] => (Method::GET, Route::Health),
        [""] => (Method::GET, Route::Dashboard(String::new())),
        ["dashboard", f] if !f.is_empty() && super::dashboard::exists(f) => {
            (Method::GET, Route::Dashboard(f.to_string()))
        }
        ["v1", "status"] => (Method::GET, Route::Status),
        ["metrics"] => (Method::GET, Route::Metrics),
        ["v1", "alerts"] => (Method::GET, Route::Alerts),
        ["v1", "keys"] if method == Method::POST => (Method::POST, Route::KeysCreate),
        ["v1", "keys"] => (Method::GET, Route::KeysList),
        ["v1", "keys", id] => (Method::DELETE, Route::KeysRevoke(id.to_string())),
        ["v1", "blocks"] => (Method::GET, Route::BlocksList),
        ["v1", "blocks", src] => (Method::DELETE, Route::BlocksRemove(src.to_string())),
        ["v1", "functions", f, "messages"] => (Method::POST, Route::Send(f.to_string())),
        ["v1", "functions", f, "invoke"] => (Method::POST, Route::Invoke(f.to_string())),
        ["v1", "functions", f, "kv", k] => {
            (Method::GET, Route::KvGet(f.to_string(), k.to_string()))
        }
        ["v1", "functions", f, "dlq"] => (Method::GET, Route::DlqList(f.to_string())),
        ["v1", "functions", f, "versions"] if method == Method::POST => {
            (Method::POST, Route::Deploy(f.to_string()))
        }
        ["v1", "functions", f, "versions"] => (Method::GET, Route::Versions(f.to_string())),
        ["v1", "functions", f, "rollback"] => (Method::POST, Route::Rollback(f.to_string())),
        ["v1", "functions", f, "dlq", "redrive"] => {
            (Method::POST, Route::DlqRedrive(f.to_string()))
        }
        ["v1", "functions", f, "dlq", id] => {
            (Method::GET, Route::DlqGet(f.to_string(), id.to_string()))
        }
        ["v1", "functions", f, "dlq", id, "body"] => {
            (Method::GET, Route::DlqBody(f.to_string(), id.to_string()))
        }
        _ => return Err(not_found()),
    };
    let head_of_page = *method == Method::HEAD && matches!(route.1, Route::Dashboard(_));
    if *method != route.0 && !head_of_page {
        return Err(Reject::new(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{method} is not allowed here; use {}", route.0),
        ));
    }
    Ok(route.1)
}

fn not_found() -> Reject {
    Reject::new(
        StatusCode::NOT_FOUND,
        "no such route; see GET /v1/status, POST /v1/functions/{name}/messages",
    )
}

/// Handles one request; never panics on client input, never answers 500.
pub async fn handle(ing: &Ingress, req: Request<Incoming>, peer: SocketAddr) -> Resp {
    let origin = req.headers().get(ORIGIN).cloned();
    let mut resp = match admit_and_run(ing, req, peer).await {
        Ok(r) => r,
        Err(r) => r.into_resp(),
    };
    if let Some(o) = origin
        && ing
            .settings
            .allow_origins
            .iter()
            .any(|a| a.as_bytes() == o.as_bytes())
    {
        let h = resp.headers_mut();
        h.insert("access-control-allow-origin", o);
        h.insert("vary", HeaderValue::from_static("origin"));
    }
    resp
}

async fn admit_and_run(
    ing: &Ingress,
    req: Request<Incoming>,
    peer: SocketAddr,
) -> Result<Resp, Reject> {
    let headers = req.headers();
    let host = headers
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    if host.is_empty() {
        return Err(Reject::new(StatusCode::BAD_REQUEST, "missing Host header"));
    }
    if !ing.host_allowed(host) {
        return Err(Reject::new(
            StatusCode::MISDIRECTED_REQUEST,
            "this Host is not served here (add it to [ingress] hosts)",
        ));
    }
    if let Some(o) = headers.get(ORIGIN)
        && !ing
            .settings
            .allow_origins
            .iter()
            .any(|a| a.as_bytes() == o.as_bytes())
    {
        return Err(Reject::new(
            StatusCode::FORBIDDEN,
            "cross-origin requests are not allowed (add the origin to [ingress] allow_origins)",
        ));
    }
    if req.method() == Method::OPTIONS && headers.contains_key(ORIGIN) {
        return Ok(preflight());
    }
    let route = parse(req.method(), req.uri().path())?;
    if route == Route::Health {
        return Ok(json_resp(StatusCode::OK, json!({"status": "ok"})));
    }
    if let Route::Dashboard(file) = &route {
        return super::dashboard::serve(file).ok_or_else(not_found);
    }
    let key = bearer(headers)?;
    let record = match ing.keys.verify(key).await {
        Ok(r) => r,
        Err(Rejected::Malformed | Rejected::Invalid) => {
            return Err(Reject::new(
                StatusCode::UNAUTHORIZED,
                "invalid API key (send Authorization: Bearer <key>; create keys with `levee keys create`)",
            ));
        }
        Err(Rejected::Unavailable) => {
            return Err(Reject::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "the key cannot be checked right now (the store is unavailable); retry later",
            )
            .retry_after(1));
        }
    };
    let group_name = match &route {
        Route::Send(f) => ing.settings.group_of_function(f).to_string(),
        r => ing
            .settings
            .group_of_route(r.class().expect("not health"))
            .to_string(),
    };
    let group = ing
        .groups
        .get(&group_name)
        .expect("every group has its state");
    group.count();
    let source = source_of(ing, &record.id, headers, peer);
    // Admin keys are the operator's own tooling (`levee load`, drills, scripts): exempt from the
    // per-source limits and blocking, still inside the group's bulkhead.
    let protect = ing.settings.protections;
    let limit_source = protect && !record.is_admin();
    let result = async move {
        if limit_source && let Verdict::Blocked(left) = ing.blocker.observe(&source, Instant::now())
        {
            group.count_blocked();
            return Err(Reject::new(
                StatusCode::TOO_MANY_REQUESTS,
                format!(
                    "this source is blocked for {} s after a surge far above its usual rate",
                    left.as_secs().max(1)
                ),
            )
            .retry_after(left.as_secs()));
        }
        authorize(ing, &record, &route)?;
        if limit_source && let Err(Refusal::Limited(wait)) = group.check_rate(&source) {
            return Err(Reject::new(
                StatusCode::TOO_MANY_REQUESTS,
                format!("rate limit of group `{group_name}` reached for this source"),
            )
            .retry_after(wait.as_secs_f64().ceil() as u64));
        }
        let method = req.method().clone();
        let module = matches!(route, Route::Deploy(_));
        if module && !super::body::is_type(req.headers(), "application/wasm") {
            return Err(Reject::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "a module is uploaded as Content-Type: application/wasm",
            ));
        }
        if method == Method::POST && !module && !super::body::is_json(req.headers()) {
            return Err(Reject::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "POST bodies must be JSON (Content-Type: application/json)",
            ));
        }
        let query = req.uri().query().unwrap_or("").to_string();
        let body = if method == Method::POST {
            Some(
                super::body::read(
                    req.into_body(),
                    if module {
                        &ing.module_budget
                    } else {
                        &ing.body_budget
                    },
                    ing.settings.body_timeout(),
                    route.json_body(),
                    if module {
                        crate::releases::MAX_MODULE_BYTES
                    } else {
                        crate::platform::MAX_BODY_BYTES
                    },
                )
                .await?,
            )
        } else {
            None
        };
        let _slot = if protect {
            Some(group.admit().await.map_err(|_| {
                Reject::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("group `{group_name}` is at its concurrency budget; retry later"),
                )
                .retry_after(1)
            })?)
        } else {
            None
        };
        let bytes = body.as_ref().map(|b| b.bytes.clone()).unwrap_or_default();
        run(ing, route, bytes, &query).await
    }
    .await;
    let status = match &result {
        Ok(r) => r.status(),
        Err(r) => r.status,
    };
    group.answered(status.as_u16());
    result
}

fn preflight() -> Resp {
    let mut r = Response::builder()
        .status(StatusCode::NO_CONTENT)
        .body(Full::new(Bytes::new()))
        .expect("static response");
    let h = r.headers_mut();
    h.insert(
        "access-control-allow-methods",
        HeaderValue::from_static("GET, POST, DELETE"),
    );
    h.insert(
        "access-control-allow-headers",
        HeaderValue::from_static("authorization, content-type"),
    );
    h.insert("access-control-max-age", HeaderValue::from_static("600"));
    r
}

fn bearer(headers: &hyper::HeaderMap) -> Result<&str, Reject> {
    let missing = || {
        Reject::new(
            StatusCode::UNAUTHORIZED,
            "an API key is required: send Authorization: Bearer <key> (the CLI reads LEVEE_KEY or --key)",
        )
    };
    let v = headers.get(AUTHORIZATION).ok_or_else(missing)?;
    let v = v.to_str().map_err(|_| missing())?;
    let (scheme, key) = v.split_once(' ').ok_or_else(missing)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(missing());
    }
    Ok(key.trim())
}

/// A source: the key, the client's own header (SDK name and version) and its address.
fn source_of(ing: &Ingress, key_id: &str, headers: &hyper::HeaderMap, peer: SocketAddr) -> String {
    let client = headers
        .get("x-levee-client")
        .or_else(|| headers.get(hyper::header::USER_AGENT))
        .and_then(|v| v.to_str().ok())
        .map(|s| {
            s.chars()
                .filter(|c| c.is_ascii_graphic() || *c == ' ')
                .filter(|c| *c != '|')
                .take(MAX_CLIENT_LEN)
                .collect::<String>()
        })
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "-".into());
    let ip: IpAddr = if ing.settings.trust_forwarded_for {
        headers
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(peer.ip())
    } else {
        peer.ip()
    };
    format!("{key_id}|{client}|{ip}")
}

fn authorize(ing: &Ingress, key: &super::keys::KeyRecord, route: &Route) -> Result<(), Reject> {
    match route {
        Route::Health | Route::Dashboard(_) | Route::Status | Route::Metrics | Route::Alerts => {
            Ok(())
        }
        Route::Send(f) => {
            let Some(spec) = ing.platform.manifest().functions.get(f) else {
                return Err(Reject::new(
                    StatusCode::NOT_FOUND,
                    format!("unknown function `{}`", echo(f)),
                ));
            };
            if !spec.public {
                return Err(Reject::new(
                    StatusCode::FORBIDDEN,
                    format!(
                        "`{f}` is not a public entry point: it takes messages only from the functions that emit to it"
                    ),
                ));
            }
            let group = ing.settings.group_of_function(f);
            if key.is_admin() || key.group == group {
                Ok(())
            } else {
                Err(Reject::new(
                    StatusCode::FORBIDDEN,
                    format!(
                        "this key belongs to group `{}`; `{f}` is served by group `{group}`",
                        key.group
                    ),
                ))
            }
        }
        _ if key.is_admin() => Ok(()),
        r => Err(Reject::new(
            StatusCode::FORBIDDEN,
            format!(
                "{} needs an admin key (group `{ADMIN_GROUP}`)",
                r.class().unwrap_or("this route")
            ),
        )),
    }
}

/// Calls the platform for an admitted request.
async fn run(ing: &Ingress, route: Route, body: Bytes, query: &str) -> Result<Resp, Reject> {
    let p = &ing.platform;
    let r = match route {
        Route::Health => Ok(json_resp(StatusCode::OK, json!({"status": "ok"}))),
        Route::Dashboard(file) => return super::dashboard::serve(&file).ok_or_else(not_found),
        Route::Status => p.status().await.map(|s| {
            let mut v = json!(s);
            v["ingress"] = json!(ing.status());
            json_resp(StatusCode::OK, v)
        }),
        Route::Metrics => match crate::telemetry::render(p, Some(&ing.status())).await {
            Some(text) => Ok(Response::builder()
                .status(StatusCode::OK)
                .header("content-type", "text/plain; version=0.0.4; charset=utf-8")
                .body(Full::new(Bytes::from(text)))
                .expect("static response")),
            None => Ok(Reject::new(
                StatusCode::NOT_FOUND,
                "metrics are off: another metrics recorder was installed in this process",
            )
            .into_resp()),
        },
        Route::Alerts => Ok(json_resp(StatusCode::OK, json!(ing.alerts.view()))),
        Route::Send(f) => p
            .send(&f, body.to_vec())
            .await
            .map(|id| json_resp(StatusCode::ACCEPTED, json!({"id": id}))),
        Route::Invoke(f) => {
            let wait = Duration::from_secs(1);
            let Ok(Ok(_permit)) =
                tokio::time::timeout(wait, ing.invoke_slots.clone().acquire_owned()).await
            else {
                return Err(Reject::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!(
                        "at most {} invoke calls run at once (workers keep their instances); retry later",
                        ing.settings.invoke_concurrency
                    ),
                )
                .retry_after(1));
            };
            p.invoke(&f, body.to_vec())
                .await
                .map(|r| json_resp(StatusCode::OK, json!(r)))
        }
        Route::KvGet(f, key) => p.kv_get(&f, &key).await.map(|v| match v {
            Some(v) => bytes_resp(v),
            None => Reject::new(
                StatusCode::NOT_FOUND,
                format!("no key `{}` in {f}'s kv", echo(&key)),
            )
            .into_resp(),
        }),
        Route::DlqList(f) => {
            let q = Query::parse(query)?;
            let limit = match q.get("limit") {
                None => DEFAULT_PAGE,
                Some(l) => l
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=100).contains(n))
                    .ok_or_else(|| {
                        Reject::new(StatusCode::BAD_REQUEST, "limit must be 1 to 100")
                    })?,
            };
            return super::dlq::page(p, &f, q.get("after"), limit).await;
        }
        Route::DlqGet(f, id) => return super::dlq::one(p, &f, &id).await,
        Route::DlqBody(f, id) => return super::dlq::body(p, &f, &id).await,
        Route::DlqRedrive(f) => p
            .dlq_redrive(&f)
            .await
            .map(|n| json_resp(StatusCode::OK, json!({"function": f, "redriven": n}))),
        Route::KeysList => ing
            .keys
            .list()
            .await
            .map(|keys| json_resp(StatusCode::OK, json!({"keys": keys}))),
        Route::KeysCreate => {
            #[derive(serde::Deserialize)]
            #[serde(deny_unknown_fields)]
            struct Create {
                group: String,
                #[serde(default)]
                name: String,
            }
            let c: Create = serde_json::from_slice(&body).map_err(|e| {
                Reject::new(
                    StatusCode::BAD_REQUEST,
                    format!("expected {{\"group\": G, \"name\": N}}: {e}"),
                )
            })?;
            if c.group != ADMIN_GROUP && !ing.groups.contains_key(&c.group) {
                let known: Vec<&str> = ing.groups.keys().map(String::as_str).collect();
                return Err(Reject::new(
                    StatusCode::BAD_REQUEST,
                    format!(
                        "no ingress group `{}`; groups: {ADMIN_GROUP}, {}",
                        echo(&c.group),
                        known.join(", ")
                    ),
                ));
            }
            ing.keys.create(&c.group, &c.name).await.map(|(key, r)| {
                tracing::info!(id = r.id, group = r.group, name = r.name, "API key created");
                json_resp(
                    StatusCode::CREATED,
                    json!({"key": key, "id": r.id, "group": r.group, "name": r.name}),
                )
            })
        }
        Route::KeysRevoke(id) => ing.keys.revoke(&id).await.map(|found| {
            if found {
                tracing::info!(id, "API key revoked");
                json_resp(StatusCode::OK, json!({"revoked": id}))
            } else {
                Reject::new(StatusCode::NOT_FOUND, format!("no key `{}`", echo(&id))).into_resp()
            }
        }),
        Route::BlocksList => Ok(json_resp(
            StatusCode::OK,
            json!({"blocks": ing.blocker.list(), "blocked_total": ing.blocker.blocked_total()}),
        )),
        Route::BlocksRemove(source) => Ok(if ing.blocker.remove(&source) {
            json_resp(StatusCode::OK, json!({"removed": source}))
        } else {
            Reject::new(StatusCode::NOT_FOUND, "that source is not blocked").into_resp()
        }),
        Route::Versions(f) => p
            .releases()
            .view(&f)
            .await
            .map(|v| json_resp(StatusCode::OK, json!(v))),
        Route::Deploy(f) => {
            let q = Query::parse(query)?;
            let flag = |k: &str| match q.get(k) {
                None | Some("true") => Ok(true),
                Some("false") => Ok(false),
                Some(_) => Err(Reject::new(
                    StatusCode::BAD_REQUEST,
                    format!("{k} must be true or false"),
                )),
            };
            let opts = crate::releases::DeployOptions {
                canary: flag("canary")?,
                replay: flag("replay")?,
            };
            return match p.releases().deploy(&f, body.to_vec(), opts).await {
                Ok(r) if r.release.is_none() => {
                    let names: Vec<&str> = r
                        .replay
                        .regressions
                        .iter()
                        .map(|x| x.event.as_str())
                        .collect();
                    let mut v = json!(r);
                    v["error"] = json!(format!(
                        "the replay gate refused this module: it fails {} that the stable version handles",
                        names.join(", ")
                    ));
                    Ok(json_resp(StatusCode::UNPROCESSABLE_ENTITY, v))
                }
                Ok(r) => Ok(json_resp(StatusCode::CREATED, json!(r))),
                // A module that does not compile or link is the deployer's input.
                Err(Error::Runtime(m)) => Err(Reject::new(StatusCode::UNPROCESSABLE_ENTITY, m)),
                Err(e) => Err(reject_for(&e)),
            };
        }
        Route::Rollback(f) => {
            #[derive(serde::Deserialize)]
            #[serde(deny_unknown_fields)]
            struct To {
                #[serde(default)]
                to: Option<String>,
            }
            let to: To = serde_json::from_slice(&body).map_err(|e| {
                Reject::new(
                    StatusCode::BAD_REQUEST,
                    format!("expected {{\"to\": RELEASE}} or {{}}: {e}"),
                )
            })?;
            p.releases()
                .rollback(&f, to.to.as_deref())
                .await
                .map(|r| json_resp(StatusCode::OK, json!(r)))
        }
    };
    r.map_err(|e| reject_for(&e))
}

/// Query parameters, strictly decoded.
struct Query(Vec<(String, String)>);

impl Query {
    fn parse(q: &str) -> Result<Self, Reject> {
        let mut out = Vec::new();
        for pair in q.split('&').filter(|p| !p.is_empty()).take(16) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            out.push((decode_segment(k)?, decode_segment(&v.replace('+', " "))?));
        }
        Ok(Query(out))
    }
    fn get(&self, k: &str) -> Option<&str> {
        self.0.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str())
    }
}

/// Cuts what a client sent before it is echoed.
pub fn echo(s: &str) -> String {
    if s.chars().count() <= MAX_ECHO {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(MAX_ECHO).collect::<String>())
    }
}

static REFS: AtomicU64 = AtomicU64::new(1);

/// Maps a platform error to a refusal: bad input is the client's (4xx, with the reason); anything
/// else is a 503 with a reference to the log line holding the detail.
pub fn reject_for(e: &Error) -> Reject {
    match e {
        Error::Invalid(m) if m.starts_with("unknown function") => {
            Reject::new(StatusCode::NOT_FOUND, m.clone())
        }
        Error::Invalid(m) | Error::Manifest(m) => Reject::new(StatusCode::BAD_REQUEST, m.clone()),
        Error::Conflict(m) => Reject::new(StatusCode::CONFLICT, m.clone()),
        Error::QueueNotFound(_) => Reject::new(StatusCode::NOT_FOUND, "no such queue"),
        e => {
            let r = REFS.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(reference = r, "request failed: {e}");
            Reject::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("the platform could not complete this now; retry later (reference {r} in its log)"),
            )
            .retry_after(1)
        }
    }
}

pub fn json_resp(status: StatusCode, v: serde_json::Value) -> Resp {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(v.to_string())))
        .expect("static response")
}

pub fn bytes_resp(v: Bytes) -> Resp {
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/octet-stream")
        .body(Full::new(v))
        .expect("static response")
}

#[cfg(test)]
mod tests {
    use super::super::settings::ROUTE_CLASSES;
    use super::*;

    #[test]
    fn classes_are_known() {
        for r in [
            Route::Status,
            Route::Alerts,
            Route::Invoke("f".into()),
            Route::KvGet("f".into(), "k".into()),
            Route::DlqList("f".into()),
            Route::KeysList,
            Route::BlocksList,
            Route::Versions("f".into()),
            Route::Deploy("f".into()),
        ] {
            assert!(ROUTE_CLASSES.contains(&r.class().unwrap()));
        }
    }

    #[test]
    fn invalid_escapes_and_non_utf8_are_refused() {
        assert_eq!(decode_segment("a%2Fb").unwrap(), "a/b");
        for bad in ["a%zz", "a%2", "%", "%ff%fe"] {
            let e = decode_segment(bad).unwrap_err();
            assert_eq!(e.status, StatusCode::BAD_REQUEST, "{bad}");
        }
    }

    #[test]
    fn routes_parse_and_methods_are_checked() {
        assert_eq!(
            parse(&Method::GET, "/v1/functions/a/kv/x%2Fy").unwrap(),
            Route::KvGet("a".into(), "x/y".into())
        );
        assert_eq!(
            parse(&Method::GET, "/v1/functions/a/messages")
                .unwrap_err()
                .status,
            StatusCode::METHOD_NOT_ALLOWED
        );
        assert_eq!(
            parse(&Method::GET, "/nope").unwrap_err().status,
            StatusCode::NOT_FOUND
        );
        assert_eq!(parse(&Method::POST, "/v1/keys").unwrap(), Route::KeysCreate);
        assert_eq!(parse(&Method::GET, "/v1/keys").unwrap(), Route::KeysList);
        assert_eq!(
            parse(&Method::GET, "/").unwrap(),
            Route::Dashboard(String::new())
        );
        assert_eq!(
            parse(&Method::GET, "/dashboard/app.js").unwrap(),
            Route::Dashboard("app.js".into())
        );
        for missing in [
            "/dashboard/",
            "/dashboard/nope.js",
            "/dashboard/..%2Fmod.rs",
        ] {
            assert_eq!(
                parse(&Method::GET, missing).unwrap_err().status,
                StatusCode::NOT_FOUND,
                "{missing}"
            );
        }
        assert_eq!(
            parse(&Method::POST, "/").unwrap_err().status,
            StatusCode::METHOD_NOT_ALLOWED
        );
        assert_eq!(parse(&Method::GET, "/v1/alerts").unwrap(), Route::Alerts);
        assert_eq!(
            parse(&Method::GET, "/v1/alerts").unwrap().class(),
            Some("status")
        );
    }
}
