//! `{{name}}`: a Levee function in Rust, built with the vendored `levee-sdk`.
//!
//! Body: a JSON object with an `org` (a non-empty string without '/'). It counts messages per org
//! at `seen/{org}` (exact under concurrency: every invocation is a transaction) and writes
//! `greeting/{message id}` = "{greeting} {org}", the greeting coming from the function's config
//! (`[functions.{{name}}.config] greeting = "..."`, default "hello"). Bad input is a permanent
//! error naming the field (the message is dead-lettered with the reason).

use levee_sdk::{Context, Error, Fields, Message};

/// Longest org accepted, in characters.
pub const MAX_ORG_CHARS: usize = 100;

/// Handles one message.
pub fn handle(msg: &Message, ctx: &mut dyn Context) -> Result<(), Error> {
    let body = msg.json_object()?;
    let org = Fields::new(&body).key_segment("org", MAX_ORG_CHARS)?;
    ctx.incr(&format!("seen/{org}"), 1)?;
    let greeting = ctx
        .config("greeting")?
        .unwrap_or_else(|| "hello".to_string());
    ctx.put(
        &format!("greeting/{}", msg.id),
        format!("{greeting} {org}").as_bytes(),
    )
}

levee_sdk::export!(handle);

#[cfg(test)]
mod tests {
    use super::*;
    use levee_sdk::MemoryContext;

    #[test]
    fn counts_per_org_and_greets() {
        let mut ctx = MemoryContext::new();
        for i in 0..3 {
            let msg = Message::new(format!("m{i}"), r#"{"org": "acme"}"#);
            ctx.invoke(handle, &msg).unwrap();
        }
        assert_eq!(ctx.read_json::<i64>("seen/acme").unwrap(), Some(3));
        assert_eq!(ctx.value("greeting/m0"), Some(&b"hello acme"[..]));
    }

    #[test]
    fn the_greeting_comes_from_config() {
        let mut ctx = MemoryContext::new().with_config("greeting", "bonjour");
        ctx.invoke(handle, &Message::new("m1", r#"{"org": "acme"}"#))
            .unwrap();
        assert_eq!(ctx.value("greeting/m1"), Some(&b"bonjour acme"[..]));
    }

    #[test]
    fn bad_bodies_are_permanent_errors_and_write_nothing() {
        for body in ["not json", "[1]", r#"{"org": ""}"#, r#"{"org": "a/b"}"#] {
            let mut ctx = MemoryContext::new();
            let e = ctx.invoke(handle, &Message::new("m1", body)).unwrap_err();
            assert!(!e.is_retryable(), "{body}: {e}");
            assert_eq!(ctx.keys().count(), 0);
        }
    }
}
