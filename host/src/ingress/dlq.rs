//! Dead letters over HTTP, bounded: pages of summaries (size and a 256-byte preview, never the
//! bodies), one dead letter's details, and one body on its own (at most [`MAX_BODY_BYTES`]).

use hyper::StatusCode;
use serde_json::json;

use super::routes::{Reject, Resp, bytes_resp, echo, json_resp, reject_for};
use crate::platform::{MAX_BODY_BYTES, Platform};

/// `GET /v1/functions/{f}/dlq?limit=N&after=CURSOR`.
pub async fn page(
    p: &Platform,
    f: &str,
    after: Option<&str>,
    limit: usize,
) -> Result<Resp, Reject> {
    let page = p
        .dlq_page(f, after, limit)
        .await
        .map_err(|e| reject_for(&e))?;
    Ok(json_resp(
        StatusCode::OK,
        json!({"function": f, "messages": page.letters, "next": page.next}),
    ))
}

/// `GET /v1/functions/{f}/dlq/{id}`: the details and a preview, not the body.
pub async fn one(p: &Platform, f: &str, id: &str) -> Result<Resp, Reject> {
    let d = find(p, f, id).await?;
    let preview = crate::queue::dead::preview(&d.body);
    Ok(json_resp(
        StatusCode::OK,
        json!({"function": f, "id": d.id, "reason": d.reason, "receive_count": d.receive_count,
               "dead_at_ms": d.dead_at_ms, "size": d.body.len(), "preview": preview,
               "history": d.history, "body": format!("/v1/functions/{f}/dlq/{}/body", d.id)}),
    ))
}

/// `GET /v1/functions/{f}/dlq/{id}/body`: the body as it was sent.
pub async fn body(p: &Platform, f: &str, id: &str) -> Result<Resp, Reject> {
    let d = find(p, f, id).await?;
    debug_assert!(d.body.len() <= MAX_BODY_BYTES);
    Ok(bytes_resp(d.body.into()))
}

async fn find(p: &Platform, f: &str, id: &str) -> Result<crate::queue::DeadLetter, Reject> {
    p.dlq_get(f, id)
        .await
        .map_err(|e| reject_for(&e))?
        .ok_or_else(|| {
            Reject::new(
                StatusCode::NOT_FOUND,
                format!("no dead letter `{}` for {f}", echo(id)),
            )
        })
}
