//! Outbound HTTP as a handler sees it: a [`Request`] built with a few methods and the
//! [`Response`] that comes back, through [`Context::http`](crate::Context::http).
//!
//! The host sends only to origins the manifest grants the function
//! (`[[functions.NAME.outbound]]`); a refused request is a permanent error naming the grants.
//! It limits concurrency and rate per destination, cuts the call off at the invocation's
//! deadline, bounds the response body, and adds an `idempotency-key` header derived from the
//! message id to POST, PUT, PATCH and DELETE requests that carry none, so a retried invocation
//! sends the same keys. When a destination is unavailable (429, 503, its breaker open) and the
//! handler fails because of it, the message waits in the queue without using an attempt.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::Error;

/// Largest request body the SDK sends.
pub const MAX_REQUEST_BODY: usize = 4 << 20;

/// An outbound request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// `GET`, `POST`, ...
    pub method: String,
    /// An absolute `http://` or `https://` URL.
    pub url: String,
    /// Header names and values, in order.
    pub headers: Vec<(String, String)>,
    /// The body (empty for none).
    pub body: Vec<u8>,
}

impl Request {
    /// A request with `method` to `url`.
    pub fn new(method: &str, url: &str) -> Self {
        Request {
            method: method.to_ascii_uppercase(),
            url: url.to_string(),
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// A GET of `url`.
    pub fn get(url: &str) -> Self {
        Self::new("GET", url)
    }

    /// A POST to `url`.
    pub fn post(url: &str) -> Self {
        Self::new("POST", url)
    }

    /// Adds a header.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    /// Sets the body.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// Sets a JSON body and its content type.
    pub fn json<T: Serialize + ?Sized>(self, value: &T) -> Result<Self, Error> {
        let body = serde_json::to_vec(value)
            .map_err(|e| Error::permanent(format!("request body for {}: {e}", self.url)))?;
        Ok(self.header("content-type", "application/json").body(body))
    }

    /// The first value of header `name` (case-insensitive).
    pub fn header_value(&self, name: &str) -> Option<&str> {
        find(&self.headers, name)
    }
}

/// An answer to a [`Request`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// Header names (lower case) and values.
    pub headers: Vec<(String, String)>,
    /// The whole body.
    pub body: Vec<u8>,
}

impl Response {
    /// An answer with `status` and `body`.
    pub fn new(status: u16, body: impl Into<Vec<u8>>) -> Self {
        Response {
            status,
            headers: Vec::new(),
            body: body.into(),
        }
    }

    /// Whether the status is 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        find(&self.headers, name)
    }

    /// The body parsed as JSON.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, Error> {
        serde_json::from_slice(&self.body)
            .map_err(|e| Error::permanent(format!("response is not the expected JSON: {e}")))
    }

    /// `Ok(self)` for a 2xx answer; otherwise the error a handler usually wants: retryable for
    /// 408, 425, 429 and 5xx (the host also holds the message without using an attempt when
    /// the destination asked to slow down), permanent for the other 4xx, naming `what`.
    pub fn require_success(self, what: &str) -> Result<Self, Error> {
        if self.is_success() {
            return Ok(self);
        }
        let text = String::from_utf8_lossy(&self.body[..self.body.len().min(200)]).into_owned();
        let msg = format!("{what} answered {}: {}", self.status, text.trim());
        if matches!(self.status, 408 | 425 | 429) || self.status >= 500 {
            Err(Error::retryable(msg))
        } else {
            Err(Error::permanent(msg))
        }
    }
}

fn find<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// The error for a request the host refused or could not complete: `denied:` reasons (not
/// granted, too many requests) are permanent, the rest retryable.
pub fn transport_error(url: &str, reason: &str) -> Error {
    let msg = format!("outbound request to {url} failed: {reason}");
    if reason.starts_with("denied:") {
        Error::permanent(msg)
    } else {
        Error::retryable(msg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_build_and_answers_classify() {
        let r = Request::post("https://x.example/send")
            .json(&serde_json::json!({"a": 1}))
            .unwrap()
            .header("Authorization", "Bearer t");
        assert_eq!(r.method, "POST");
        assert_eq!(r.header_value("content-type"), Some("application/json"));
        assert_eq!(r.header_value("authorization"), Some("Bearer t"));
        assert!(Response::new(204, "").require_success("p").is_ok());
        assert!(
            Response::new(429, "slow down")
                .require_success("p")
                .unwrap_err()
                .is_retryable()
        );
        let e = Response::new(400, "bad phone")
            .require_success("provider")
            .unwrap_err();
        assert!(!e.is_retryable());
        assert_eq!(e.message(), "provider answered 400: bad phone");
        assert!(!transport_error("u", "denied: not granted").is_retryable());
        assert!(transport_error("u", "ConnectionRefused").is_retryable());
    }
}
