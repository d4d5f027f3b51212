//! `events`: delivery events from the messaging channels (a provider's webhook says a reply was
//! delivered, read or failed), kept as each conversation's delivery state.
//!
//! Body: `{"org": O, "conversation": C, "event": "delivered" | "read" | "failed", "at_ms": T}`.
//! It keeps `delivery/{O}/{C}` = `{"event", "at_ms"}` of the latest event by `at_ms`: providers
//! send events late and out of order, so an older event never overwrites a newer one, and a
//! repeated event changes nothing. Bad input is a permanent error naming the field. A public
//! entry point of the sample platform, in its own ingress group (`events`), so a flood of
//! provider callbacks cannot take the chat group's capacity.

use levee_sdk::serde_json::{Value, json};
use levee_sdk::{Context, Error, Fields, Message, quote};

/// Longest org or conversation id, in characters.
pub const MAX_ID_CHARS: usize = 128;
/// The events a channel reports.
pub const EVENTS: [&str; 3] = ["delivered", "read", "failed"];

/// A parsed event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub org: String,
    pub conversation: String,
    pub event: String,
    pub at_ms: u64,
}

/// The kv key of a conversation's delivery state.
pub fn state_key(org: &str, conversation: &str) -> String {
    format!("delivery/{org}/{conversation}")
}

/// Reads an event from a message body.
pub fn parse(msg: &Message) -> Result<Event, Error> {
    let body = msg.json_object()?;
    let f = Fields::new(&body);
    f.deny_unknown(&["org", "conversation", "event", "at_ms"])?;
    let org = f.key_segment("org", MAX_ID_CHARS)?;
    let conversation = f.key_segment("conversation", MAX_ID_CHARS)?;
    let event = f.str("event")?;
    if !EVENTS.contains(&event) {
        return Err(f.invalid("event", "one of delivered, read, failed", quote(event)));
    }
    let at_ms = f.opt_u64("at_ms")?.ok_or_else(|| {
        f.invalid(
            "at_ms",
            "a time in ms since the Unix epoch",
            "nothing (missing)",
        )
    })?;
    Ok(Event {
        org: org.to_string(),
        conversation: conversation.to_string(),
        event: event.to_string(),
        at_ms,
    })
}

/// Records the event unless a newer one is already there.
pub fn handle(msg: &Message, ctx: &mut dyn Context) -> Result<(), Error> {
    let e = parse(msg)?;
    ctx.update_json::<Value, _>(&state_key(&e.org, &e.conversation), |current| {
        let newer = current
            .as_ref()
            .and_then(|c| c["at_ms"].as_u64())
            .is_some_and(|t| t >= e.at_ms);
        Ok(Some(if newer {
            current.expect("checked above")
        } else {
            json!({"event": e.event, "at_ms": e.at_ms})
        }))
    })?;
    Ok(())
}

levee_sdk::export!(handle);

#[cfg(test)]
mod tests {
    use super::*;
    use levee_sdk::MemoryContext;

    fn event(id: &str, body: Value) -> Message {
        Message::from_json(id, &body)
    }

    #[test]
    fn keeps_the_latest_event_whatever_the_order() {
        let mut ctx = MemoryContext::new();
        let at = |event: &str, t: u64| json!({"org": "o", "conversation": "c", "event": event, "at_ms": t});
        ctx.invoke(handle, &event("1", at("read", 20))).unwrap();
        ctx.invoke(handle, &event("2", at("delivered", 10)))
            .unwrap();
        let state: Value = ctx.read_json("delivery/o/c").unwrap().unwrap();
        assert_eq!(state, json!({"event": "read", "at_ms": 20}));
        ctx.invoke(handle, &event("3", at("failed", 30))).unwrap();
        let state: Value = ctx.read_json("delivery/o/c").unwrap().unwrap();
        assert_eq!(state["event"], "failed");
    }

    #[test]
    fn bad_input_is_permanent_and_names_the_field() {
        let mut ctx = MemoryContext::new();
        for (body, field) in [
            (
                json!({"conversation": "c", "event": "read", "at_ms": 1}),
                "org",
            ),
            (
                json!({"org": "o", "conversation": "c", "event": "seen", "at_ms": 1}),
                "event",
            ),
            (
                json!({"org": "o", "conversation": "c", "event": "read"}),
                "at_ms",
            ),
            (
                json!({"org": "o", "conversation": "c", "event": "read", "at_ms": 1, "x": 1}),
                "x",
            ),
        ] {
            let e = ctx.invoke(handle, &event("m", body)).unwrap_err();
            assert!(!e.is_retryable());
            assert!(e.message().contains(field), "{}", e.message());
        }
        assert_eq!(ctx.keys().count(), 0);
    }
}
