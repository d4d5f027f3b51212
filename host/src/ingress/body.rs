//! Reading a request body within its bounds: JSON only, `Content-Length` checked before a byte
//! is read, at most [`MAX_BODY_BYTES`](crate::platform::MAX_BODY_BYTES), within the shared budget of body bytes in flight, and
//! within the body deadline.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use hyper::StatusCode;
use hyper::body::{Body, Incoming};
use hyper::header::{CONTENT_TYPE, HeaderMap};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::routes::Reject;

/// A body read in full, holding its share of the budget until dropped.
#[derive(Debug)]
pub struct ReadBody {
    pub bytes: Bytes,
    _budget: Option<OwnedSemaphorePermit>,
}

/// Whether the request says it carries JSON (`application/json`, parameters allowed).
pub fn is_json(headers: &HeaderMap) -> bool {
    is_type(headers, "application/json")
}

/// Whether the request's Content-Type is `mime` (parameters allowed).
pub fn is_type(headers: &HeaderMap, mime: &str) -> bool {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|t| t.trim().eq_ignore_ascii_case(mime))
}

/// Reads `body` within the bounds (at most `limit` bytes, [`MAX_BODY_BYTES`](crate::platform::MAX_BODY_BYTES) but for a
/// deployed module); `json` also checks that it parses as JSON.
pub async fn read(
    body: Incoming,
    budget: &Arc<Semaphore>,
    deadline: Duration,
    json: bool,
    limit: usize,
) -> Result<ReadBody, Reject> {
    let declared = body.size_hint().exact();
    if let Some(n) = declared
        && n > limit as u64
    {
        return Err(Reject::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("body of {n} bytes is larger than the limit of {limit} bytes"),
        ));
    }
    let over_budget = || {
        Reject::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the platform is receiving too many request bodies at once; retry later",
        )
        .retry_after(1)
    };
    // With a Content-Length the whole share is taken up front; a chunked body takes it as its
    // chunks arrive.
    let mut held: Option<OwnedSemaphorePermit> = match declared {
        Some(0) | None => None,
        Some(n) => Some(
            budget
                .clone()
                .try_acquire_many_owned(n as u32)
                .map_err(|_| over_budget())?,
        ),
    };
    let collect = async {
        let mut body = body;
        let mut buf = BytesMut::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| {
                Reject::new(
                    StatusCode::BAD_REQUEST,
                    format!("could not read the body: {e}"),
                )
            })?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            if buf.len() + data.len() > limit {
                return Err(Reject::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("body larger than the limit of {limit} bytes"),
                ));
            }
            if declared.is_none() && !data.is_empty() {
                let more = budget
                    .clone()
                    .try_acquire_many_owned(data.len() as u32)
                    .map_err(|_| over_budget())?;
                match &mut held {
                    Some(p) => p.merge(more),
                    None => held = Some(more),
                }
            }
            buf.extend_from_slice(&data);
        }
        Ok(buf.freeze())
    };
    let bytes = match tokio::time::timeout(deadline, collect).await {
        Ok(r) => r?,
        Err(_) => {
            return Err(Reject::new(
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "the body did not arrive within {} s",
                    deadline.as_secs_f64()
                ),
            ));
        }
    };
    if json && let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(&bytes) {
        return Err(Reject::new(
            StatusCode::BAD_REQUEST,
            format!("the body is not valid JSON: {e}"),
        ));
    }
    Ok(ReadBody {
        bytes,
        _budget: held,
    })
}
