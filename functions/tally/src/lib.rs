//! `tally`: a test fixture that counts the messages it commits, for the host's exactly-once
//! tests.
//!
//! Body: `{"key": K, "fanout": N?, "to": F?}`. It adds 1 to `count/{K}` and to `count/_total`
//! (JSON integers, via `incr`) and, if `fanout` N is more than 0 (at most [`MAX_FANOUT`]),
//! emits N messages `{"key": "{K}.{i}"}` (i in 0..N) to function F (`to`, required then).
//!
//! It is deliberately not idempotent: every committed run counts. Fed each key once, every
//! `count/{K}` must end at exactly 1 and `count/_total` at the number of messages, whatever
//! happens to the workers (kills, retries, conflicts) — a count of 2 is a message applied
//! twice, a missing key one lost. That holds because the invocation is a transaction: the
//! increments, the emits and the deletion of the source message commit together or not at
//! all, and the concurrent increments of `count/_total` are serialised by the version check.
//! Keys starting with '_' are reserved for the total; bad input is a permanent error naming
//! the field.

use levee_sdk::{Context, Error, Fields, Message, quote};

/// Longest key accepted, in characters (so `count/{K}` fits the 1024-byte key limit).
pub const MAX_KEY_CHARS: usize = 200;
/// Most messages one message may fan out to.
pub const MAX_FANOUT: u64 = 10;
/// The counter of every committed message.
pub const TOTAL_KEY: &str = "count/_total";

/// What a message asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The key counted.
    pub key: String,
    /// How many messages to emit, 0 for none.
    pub fanout: u64,
    /// Where to emit them (set when `fanout` > 0).
    pub to: Option<String>,
}

/// The kv key of `key`'s counter.
pub fn counter_key(key: &str) -> String {
    format!("count/{key}")
}

/// Reads a request from a message body.
pub fn parse(msg: &Message) -> Result<Request, Error> {
    let body = msg.json_object()?;
    let f = Fields::new(&body);
    f.deny_unknown(&["key", "fanout", "to"])?;
    let key = f.key_segment("key", MAX_KEY_CHARS)?;
    if key.starts_with('_') {
        return Err(f.invalid("key", "a key not starting with '_' (reserved)", quote(key)));
    }
    let fanout = f.opt_u64("fanout")?.unwrap_or(0);
    if fanout > MAX_FANOUT {
        return Err(f.invalid("fanout", &format!("0 to {MAX_FANOUT}"), fanout));
    }
    let to = f.opt_str("to")?;
    if fanout > 0 && to.is_none() {
        return Err(f.invalid(
            "to",
            "the function to fan out to when fanout > 0",
            "nothing (missing)",
        ));
    }
    Ok(Request {
        key: key.to_string(),
        fanout,
        to: to.map(str::to_string),
    })
}

/// Counts the message and fans out.
pub fn handle(msg: &Message, ctx: &mut dyn Context) -> Result<(), Error> {
    let request = parse(msg)?;
    ctx.incr(&counter_key(&request.key), 1)?;
    ctx.incr(TOTAL_KEY, 1)?;
    if let Some(to) = request.to.as_deref().filter(|_| request.fanout > 0) {
        for i in 0..request.fanout {
            let child = format!("{}.{i}", request.key);
            ctx.emit_json(to, &levee_sdk::serde_json::json!({ "key": child }))?;
        }
    }
    Ok(())
}

levee_sdk::export!(handle);

#[cfg(test)]
mod tests {
    use super::*;
    use levee_sdk::MemoryContext;
    use levee_sdk::serde_json::{Value, json};

    fn msg(id: &str, body: Value) -> Message {
        Message::from_json(id, &body)
    }

    fn count(ctx: &MemoryContext, key: &str) -> Option<i64> {
        ctx.read_json(key).unwrap()
    }

    #[test]
    fn counts_the_key_and_the_total() {
        let mut ctx = MemoryContext::new();
        ctx.invoke(handle, &msg("m1", json!({"key": "a"}))).unwrap();
        ctx.invoke(handle, &msg("m2", json!({"key": "b", "fanout": 0})))
            .unwrap();
        assert_eq!(count(&ctx, "count/a"), Some(1));
        assert_eq!(count(&ctx, "count/b"), Some(1));
        assert_eq!(count(&ctx, TOTAL_KEY), Some(2));
        assert!(ctx.emitted().is_empty());
    }

    #[test]
    fn fans_out_to_the_named_function() {
        let mut ctx = MemoryContext::new().with_emits_to(["tally"]);
        ctx.invoke(
            handle,
            &msg("m1", json!({"key": "k7", "fanout": 3, "to": "tally"})),
        )
        .unwrap();
        let sent: Vec<Value> = ctx.emitted_to("tally").map(|e| e.json().unwrap()).collect();
        assert_eq!(
            sent,
            vec![
                json!({"key": "k7.0"}),
                json!({"key": "k7.1"}),
                json!({"key": "k7.2"})
            ]
        );
        assert_eq!(count(&ctx, "count/k7"), Some(1));
    }

    #[test]
    fn a_fan_feeding_a_tally_counts_every_key_once() {
        // Two namespaces, like the host test's `fan` and `tally` functions.
        let mut fan = MemoryContext::new().with_emits_to(["tally"]);
        let mut tally = MemoryContext::new();
        for i in 0..50 {
            let body = json!({"key": format!("k{i}"), "fanout": 2, "to": "tally"});
            fan.invoke(handle, &msg(&format!("f{i}"), body)).unwrap();
        }
        for (i, e) in fan.take_emitted().into_iter().enumerate() {
            tally
                .invoke(handle, &Message::new(format!("t{i}"), e.body))
                .unwrap();
        }
        assert_eq!(count(&fan, TOTAL_KEY), Some(50));
        assert_eq!(count(&tally, TOTAL_KEY), Some(100));
        for i in 0..50 {
            assert_eq!(count(&fan, &format!("count/k{i}")), Some(1));
            for j in 0..2 {
                assert_eq!(count(&tally, &format!("count/k{i}.{j}")), Some(1));
            }
        }
    }

    #[test]
    fn a_run_that_fails_counts_nothing() {
        // The emit is refused after both increments: the transaction applies none of it.
        let mut ctx = MemoryContext::new().with_emits_to(["tally"]);
        let e = ctx
            .invoke(
                handle,
                &msg("m1", json!({"key": "a", "fanout": 1, "to": "other"})),
            )
            .unwrap_err();
        assert!(!e.is_retryable());
        assert_eq!(ctx.keys().count(), 0);
        assert!(ctx.emitted().is_empty());
    }

    #[test]
    fn bad_input_is_permanent_and_names_the_field() {
        let cases = [
            (
                json!({"fanout": 1, "to": "t"}),
                r#"field "key": expected a non-empty string, got nothing (missing)"#,
            ),
            (
                json!({"key": "a/b"}),
                r#"field "key": expected 1 to 200 characters without '/' or control characters, got "a/b""#,
            ),
            (
                json!({"key": "_total"}),
                r#"field "key": expected a key not starting with '_' (reserved), got "_total""#,
            ),
            (
                json!({"key": "a", "fanout": 11, "to": "t"}),
                r#"field "fanout": expected 0 to 10, got 11"#,
            ),
            (
                json!({"key": "a", "fanout": -1}),
                r#"field "fanout": expected a non-negative integer, got -1"#,
            ),
            (
                json!({"key": "a", "fanout": 2}),
                r#"field "to": expected the function to fan out to when fanout > 0, got nothing (missing)"#,
            ),
            (
                json!({"key": "a", "fanout": 1, "to": 5}),
                r#"field "to": expected a non-empty string, got 5"#,
            ),
            (
                json!({"key": "a", "count": 1}),
                r#"field "count": unknown, expected only key, fanout, to"#,
            ),
        ];
        for (body, expected) in cases {
            let mut ctx = MemoryContext::new();
            let e = ctx.invoke(handle, &msg("q", body)).unwrap_err();
            assert!(!e.is_retryable());
            assert_eq!(e.message(), expected);
            assert_eq!(ctx.writes(), 0);
        }
    }
}
