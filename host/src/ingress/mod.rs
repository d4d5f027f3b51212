//! The HTTP API (hyper): send messages, read status, kv and dead letters, invoke once.
//!
//! Routes: `POST /v1/functions/{name}/messages`, `POST /v1/functions/{name}/invoke`,
//! `GET /v1/functions/{name}/kv/{key}`, `GET /v1/functions/{name}/dlq`,
//! `POST /v1/functions/{name}/dlq/redrive`, `GET /v1/status`, `GET /healthz`.
//! Bad requests get a 4xx with `{"error": reason}`; a backend that is down gets a 503.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::platform::{MAX_BODY_BYTES, Platform};
use crate::{Error, Result};

type Resp = Response<Full<Bytes>>;

/// Serves the API on `listener` until `stop` turns true.
pub async fn serve(
    listener: TcpListener,
    platform: Arc<Platform>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let (stream, _peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.changed() => break,
        };
        let _ = stream.set_nodelay(true);
        let platform = platform.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let p = platform.clone();
                async move { Ok::<_, std::convert::Infallible>(route(&p, req).await) }
            });
            if let Err(e) = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await
            {
                tracing::debug!("connection ended: {e}");
            }
        });
    }
}

/// Binds the listen address with a clear error.
pub async fn bind(addr: &str) -> Result<(TcpListener, SocketAddr)> {
    let listener = TcpListener::bind(addr).await.map_err(|e| {
        Error::io(
            format!("cannot listen on {addr} (pass --listen to pick another address)"),
            e,
        )
    })?;
    let local = listener
        .local_addr()
        .map_err(|e| Error::io("reading the listen address", e))?;
    Ok((listener, local))
}

async fn route(p: &Platform, req: Request<Incoming>) -> Resp {
    let path: Vec<String> = req
        .uri()
        .path()
        .trim_matches('/')
        .split('/')
        .map(percent_decode)
        .collect();
    let segs: Vec<&str> = path.iter().map(String::as_str).collect();
    let method = req.method().clone();
    let result = match (&method, segs.as_slice()) {
        (&Method::GET, ["healthz"]) => Ok(json_resp(StatusCode::OK, json!({"status": "ok"}))),
        (&Method::GET, ["v1", "status"]) => p
            .status()
            .await
            .map(|s| json_resp(StatusCode::OK, json!(s))),
        (&Method::POST, ["v1", "functions", name, "messages"]) => match body(req).await {
            Ok(b) => p
                .send(name, b.to_vec())
                .await
                .map(|id| json_resp(StatusCode::ACCEPTED, json!({"id": id}))),
            Err(r) => return r,
        },
        (&Method::POST, ["v1", "functions", name, "invoke"]) => match body(req).await {
            Ok(b) => p
                .invoke(name, b.to_vec())
                .await
                .map(|r| json_resp(StatusCode::OK, json!(r))),
            Err(r) => return r,
        },
        (&Method::GET, ["v1", "functions", name, "kv", key]) => {
            p.kv_get(name, key).await.map(|v| match v {
                Some(v) => Response::builder()
                    .status(StatusCode::OK)
                    .header("content-type", "application/octet-stream")
                    .body(Full::new(v))
                    .expect("static response"),
                None => error_resp(
                    StatusCode::NOT_FOUND,
                    &format!("no key `{key}` in {name}'s kv"),
                ),
            })
        }
        (&Method::GET, ["v1", "functions", name, "dlq"]) => {
            p.dlq_list(name, 100).await.map(|list| {
                let items: Vec<_> = list
                    .iter()
                    .map(|d| {
                        json!({"id": d.id, "reason": d.reason, "receive_count": d.receive_count,
                           "dead_at_ms": d.dead_at_ms, "body": String::from_utf8_lossy(&d.body)})
                    })
                    .collect();
                json_resp(StatusCode::OK, json!({"function": name, "messages": items}))
            })
        }
        (&Method::POST, ["v1", "functions", name, "dlq", "redrive"]) => p
            .dlq_redrive(name)
            .await
            .map(|n| json_resp(StatusCode::OK, json!({"function": name, "redriven": n}))),
        (_, ["healthz"] | ["v1", "status"] | ["v1", "functions", _, ..]) => Ok(error_resp(
            StatusCode::METHOD_NOT_ALLOWED,
            &format!("{method} is not allowed here"),
        )),
        _ => Ok(error_resp(
            StatusCode::NOT_FOUND,
            "no such route; see GET /v1/status, POST /v1/functions/{name}/messages",
        )),
    };
    result.unwrap_or_else(|e| error_for(&e))
}

async fn body(req: Request<Incoming>) -> std::result::Result<Bytes, Resp> {
    match Limited::new(req.into_body(), MAX_BODY_BYTES)
        .collect()
        .await
    {
        Ok(b) => Ok(b.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(error_resp(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("body larger than {MAX_BODY_BYTES} bytes"),
        )),
        Err(e) => Err(error_resp(
            StatusCode::BAD_REQUEST,
            &format!("could not read the body: {e}"),
        )),
    }
}

/// Maps an error to its status: bad input is the client's (4xx); a backend that is down is
/// temporary (503, retry later); nothing a client sends yields a 500.
fn error_for(e: &Error) -> Resp {
    let status = match e {
        Error::Invalid(m) if m.starts_with("unknown function") => StatusCode::NOT_FOUND,
        Error::Invalid(_) | Error::Manifest(_) => StatusCode::BAD_REQUEST,
        e if e.is_retryable() => StatusCode::SERVICE_UNAVAILABLE,
        Error::QueueNotFound(_) => StatusCode::NOT_FOUND,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    };
    error_resp(status, &e.to_string())
}

fn json_resp(status: StatusCode, v: serde_json::Value) -> Resp {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(v.to_string())))
        .expect("static response")
}

fn error_resp(status: StatusCode, reason: &str) -> Resp {
    json_resp(status, json!({"error": reason}))
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Ok(v) =
                u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("zz"), 16)
        {
            out.push(v);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
