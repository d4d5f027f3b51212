//! `relay`: sends each message on to an HTTP endpoint, as integrations and webhooks do.
//!
//! Body: `{"url": "https://…", "method": "POST"?, "payload": any JSON?}`. The payload goes as a
//! JSON body (no body when absent), with `authorization: Bearer {token}` when the `token`
//! secret is set. The host decides what may be called (`[[functions.relay.outbound]]`), paces
//! it, and adds the idempotency key. The answer is recorded at `relay/{message id}` as
//! `{"status", "bytes"}`; a 2xx answer succeeds, 408/425/429/5xx are retryable and other answers
//! permanent, with the endpoint's words in the reason (and on stderr).

use levee_sdk::{Context, Error, Fields, Message, Request};
use serde::{Deserialize, Serialize};

/// What is recorded for each relayed message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    /// The endpoint's status code.
    pub status: u16,
    /// Bytes in its answer.
    pub bytes: usize,
}

/// The kv key of a message's outcome.
pub fn outcome_key(id: &str) -> String {
    format!("relay/{id}")
}

/// Relays one message.
pub fn handle(msg: &Message, ctx: &mut dyn Context) -> Result<(), Error> {
    let body = msg.json_object()?;
    let f = Fields::new(&body);
    f.deny_unknown(&["url", "method", "payload"])?;
    let url = f.str("url")?;
    let method = f.opt_str("method")?.unwrap_or("POST");
    let mut req = Request::new(method, url);
    if let Some(payload) = body.get("payload") {
        req = req.json(payload)?;
    }
    if let Some(token) = ctx.config("token")? {
        req = req.header("authorization", &format!("Bearer {token}"));
    }
    let answer = ctx.http(&req).and_then(|r| r.require_success(url));
    let answer = match answer {
        Ok(a) => a,
        Err(e) => {
            eprintln!("relay of {} to {url} failed: {}", msg.id, e.message());
            return Err(e);
        }
    };
    println!("relayed {} to {method} {url}: {}", msg.id, answer.status);
    let outcome = Outcome {
        status: answer.status,
        bytes: answer.body.len(),
    };
    ctx.put_json(&outcome_key(&msg.id), &outcome)
}

levee_sdk::export!(handle);

#[cfg(test)]
mod tests {
    use super::*;
    use levee_sdk::{MemoryContext, Response};
    use serde_json::json;

    #[test]
    fn relays_the_payload_with_the_token_and_records_the_answer() {
        let mut ctx = MemoryContext::new().with_config("token", "tok-abcdefgh");
        ctx.respond_with(|r| Ok(Response::new(201, format!("got {}", r.body.len()))));
        let msg = Message::from_json(
            "m1",
            &json!({"url": "http://hook.test/in", "payload": {"a": 1}}),
        );
        ctx.invoke(handle, &msg).unwrap();
        let req = &ctx.requests()[0];
        assert_eq!(req.method, "POST");
        assert_eq!(
            req.header_value("authorization"),
            Some("Bearer tok-abcdefgh")
        );
        assert_eq!(req.body, br#"{"a":1}"#);
        let out: Outcome = ctx.read_json("relay/m1").unwrap().unwrap();
        assert_eq!(
            out,
            Outcome {
                status: 201,
                bytes: 5
            }
        );
    }

    #[test]
    fn answers_decide_retry_or_dead_letter() {
        let mut ctx = MemoryContext::new();
        let msg = Message::from_json(
            "m1",
            &json!({"url": "http://hook.test/in", "method": "GET"}),
        );
        ctx.respond_with(|_| Ok(Response::new(503, "")));
        assert!(ctx.invoke(handle, &msg).unwrap_err().is_retryable());
        ctx.respond_with(|_| Ok(Response::new(404, "no such hook")));
        let e = ctx.invoke(handle, &msg).unwrap_err();
        assert!(!e.is_retryable());
        assert!(e.message().contains("404: no such hook"), "{e:?}");
        assert_eq!(ctx.keys().count(), 0);
        let e = ctx
            .invoke(handle, &Message::from_json("m2", &json!({"payload": 1})))
            .unwrap_err();
        assert!(e.message().contains("\"url\""), "{e:?}");
    }
}
