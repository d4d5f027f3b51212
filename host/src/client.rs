//! A small HTTP client for the CLI commands that talk to a running `levee up`.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;

use crate::{Error, Result};

/// An answer of the API: status and body.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub body: Bytes,
}

impl Answer {
    /// The body as JSON, or the API's `{"error": ...}` reason as an error for non-2xx answers.
    pub fn json(&self) -> Result<serde_json::Value> {
        let v: serde_json::Value = serde_json::from_slice(&self.body).map_err(|e| {
            Error::Invalid(format!(
                "the server answered {} with non-JSON: {e}",
                self.status
            ))
        })?;
        if !self.status.is_success() {
            let reason = v
                .get("error")
                .and_then(|e| e.as_str())
                .unwrap_or("unknown error");
            return Err(Error::Invalid(format!(
                "{reason} (HTTP {})",
                self.status.as_u16()
            )));
        }
        Ok(v)
    }
}

/// Sends one request to `addr` (HOST:PORT) with the API key `key`.
pub async fn call(
    addr: &str,
    key: Option<&str>,
    method: Method,
    path: &str,
    body: Vec<u8>,
) -> Result<Answer> {
    call_as(addr, key, None, method, path, body).await
}

/// Like [`call`], naming the client in `X-Levee-Client` (part of its source at the ingress).
pub async fn call_as(
    addr: &str,
    key: Option<&str>,
    client: Option<&str>,
    method: Method,
    path: &str,
    body: Vec<u8>,
) -> Result<Answer> {
    call_typed(addr, key, client, method, path, "application/json", body).await
}

/// Like [`call_as`], with the body's Content-Type (a module is `application/wasm`).
pub async fn call_typed(
    addr: &str,
    key: Option<&str>,
    client: Option<&str>,
    method: Method,
    path: &str,
    content_type: &str,
    body: Vec<u8>,
) -> Result<Answer> {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| Error::Unavailable {
            service: format!("levee at {addr}"),
            message: format!(
                "{e}; is `levee up` running? (pass --addr or set LEVEE_ADDR for another address)"
            ),
        })?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| unavailable(addr, e))?;
    tokio::spawn(conn);
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr)
        .header(
            "user-agent",
            concat!("levee-cli/", env!("CARGO_PKG_VERSION")),
        )
        .header("content-type", content_type);
    if let Some(c) = client {
        req = req.header("x-levee-client", c);
    }
    if let Some(k) = key {
        req = req.header("authorization", format!("Bearer {k}"));
    }
    let req = req
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| Error::Invalid(format!("bad request: {e}")))?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| unavailable(addr, e))?;
    let status = resp.status();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| unavailable(addr, e))?
        .to_bytes();
    Ok(Answer { status, body })
}

fn unavailable(addr: &str, e: impl std::fmt::Display) -> Error {
    Error::Unavailable {
        service: format!("levee at {addr}"),
        message: e.to_string(),
    }
}

/// Everything but the unreserved characters of RFC 3986 is escaped in a path segment.
const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Percent-encodes a path segment (function names are plain; kv keys may hold `/`).
pub fn encode_segment(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, SEGMENT).to_string()
}
