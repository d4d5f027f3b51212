//! `notify`: records the notification a team gets for each routed message and, when a provider
//! is configured, delivers it there.
//!
//! Input is what `routing` emits: `{"id", "org", "conversation", "team", "previous_team"?,
//! "channel"?, "from"?, "preview"?}`. The record goes to `notif/{org}/{conversation}/{id}` with
//! put-if-absent, keyed by the upstream message id, so however often routing re-emits it there
//! is one record; the team's counter `count/{org}/{team}` (a JSON integer) is incremented only
//! when the record was new.
//!
//! The invocation is a transaction, so the record and the counter change together or not at
//! all: a crash or failure before commit applies neither. The record is read (put-if-absent)
//! and version-checked at commit, so two deliveries of one notification never count twice; the
//! counter, which every notification of a team touches, is a blind `add` applied by the
//! commit, so notifications for one team handled at once never conflict and never lose an
//! increment. The counter is exactly the number of records of the team.
//!
//! Delivery: with `provider_url` in `[functions.notify.config]` (and the origin granted in
//! `[[functions.notify.outbound]]`), a new notification is POSTed there as JSON (the record plus
//! `id`, `org`, `conversation`), with `authorization: Bearer {provider_token}` when that secret
//! is set. The host adds an `idempotency-key` derived from the message id, so if the invocation
//! runs again (a conflict, a crash before commit) the provider sees the same key. A provider
//! that answers 429 or 5xx makes the invocation fail retryably; the host then holds the message
//! in the queue without using an attempt. Other 4xx answers are permanent (dead-lettered with
//! the provider's reason).

use levee_sdk::{Context, Error, Fields, Message, Request};
use serde::{Deserialize, Serialize};

/// Longest id, org, conversation or team accepted in a key.
pub const MAX_ID_CHARS: usize = 128;

const FIELDS: [&str; 8] = [
    "id",
    "org",
    "conversation",
    "team",
    "previous_team",
    "channel",
    "from",
    "preview",
];

/// Why the team is notified.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// The conversation's first routed message.
    NewConversation,
    /// Another message in a conversation the team already has.
    NewMessage,
    /// The conversation moved to this team.
    Reassigned,
}

/// The value at `notif/{org}/{conversation}/{id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Team notified.
    pub team: String,
    /// Why.
    pub kind: Kind,
    /// The team that had the conversation before, when reassigned.
    pub previous_team: Option<String>,
    /// Channel to answer on.
    pub channel: Option<String>,
    /// Customer to answer.
    pub from: Option<String>,
    /// Start of the customer's message.
    pub preview: Option<String>,
}

/// The kv key of a notification record.
pub fn record_key(org: &str, conversation: &str, id: &str) -> String {
    format!("notif/{org}/{conversation}/{id}")
}

/// The kv key of a team's notification counter.
pub fn counter_key(org: &str, team: &str) -> String {
    format!("count/{org}/{team}")
}

/// What the provider receives.
#[derive(Debug, Serialize)]
struct Delivery<'a> {
    id: &'a str,
    org: &'a str,
    conversation: &'a str,
    #[serde(flatten)]
    record: &'a Record,
}

/// POSTs the notification to the configured provider, if there is one.
fn deliver(ctx: &mut dyn Context, delivery: &Delivery<'_>) -> Result<(), Error> {
    let Some(url) = ctx.config("provider_url")? else {
        return Ok(());
    };
    let mut req = Request::post(&url).json(delivery)?;
    if let Some(token) = ctx.config("provider_token")? {
        req = req.header("authorization", &format!("Bearer {token}"));
    }
    ctx.http(&req)?
        .require_success("the notification provider")?;
    Ok(())
}

/// Records one notification (and delivers it when a provider is configured).
pub fn handle(msg: &Message, ctx: &mut dyn Context) -> Result<(), Error> {
    let body = msg.json_object()?;
    let f = Fields::new(&body);
    f.deny_unknown(&FIELDS)?;
    let id = f.key_segment("id", MAX_ID_CHARS)?;
    let org = f.key_segment("org", MAX_ID_CHARS)?.to_lowercase();
    let conversation = f.key_segment("conversation", MAX_ID_CHARS)?;
    let team = f.key_segment("team", MAX_ID_CHARS)?;
    let previous_team = f.opt_str("previous_team")?;
    let kind = match previous_team {
        None => Kind::NewConversation,
        Some(p) if p == team => Kind::NewMessage,
        Some(_) => Kind::Reassigned,
    };
    let record = Record {
        team: team.to_string(),
        kind,
        previous_team: previous_team
            .filter(|_| kind == Kind::Reassigned)
            .map(str::to_string),
        channel: f.opt_str("channel")?.map(str::to_string),
        from: f.opt_str("from")?.map(str::to_string),
        preview: f.opt_str("preview")?.map(str::to_string),
    };
    if ctx.put_json_if_absent(&record_key(&org, conversation, id), &record)? {
        let delivery = Delivery {
            id,
            org: &org,
            conversation,
            record: &record,
        };
        deliver(ctx, &delivery)?;
        ctx.add(&counter_key(&org, team), 1)?;
    }
    Ok(())
}

levee_sdk::export!(handle);

#[cfg(test)]
mod tests {
    use super::*;
    use levee_sdk::MemoryContext;
    use serde_json::{Value, json};

    fn note(id: &str, conversation: &str, team: &str, previous: Option<&str>) -> Message {
        Message::from_json(
            format!("q-{id}"),
            &json!({"id": id, "org": "acme", "conversation": conversation, "team": team,
                    "previous_team": previous, "channel": "email", "from": "ann@example.com",
                    "preview": "where is my invoice"}),
        )
    }

    fn count(ctx: &MemoryContext, team: &str) -> u64 {
        ctx.read_json(&counter_key("acme", team))
            .unwrap()
            .unwrap_or(0)
    }

    #[test]
    fn records_the_notification_and_counts_it() {
        let mut ctx = MemoryContext::new();
        handle(&note("m1", "c-1", "billing", None), &mut ctx).unwrap();
        let record: Record = ctx.read_json("notif/acme/c-1/m1").unwrap().unwrap();
        assert_eq!(
            record,
            Record {
                team: "billing".into(),
                kind: Kind::NewConversation,
                previous_team: None,
                channel: Some("email".into()),
                from: Some("ann@example.com".into()),
                preview: Some("where is my invoice".into()),
            }
        );
        let raw: Value = ctx.read_json("notif/acme/c-1/m1").unwrap().unwrap();
        assert_eq!(raw["kind"], "new-conversation");
        assert_eq!(count(&ctx, "billing"), 1);
    }

    #[test]
    fn redelivery_neither_rewrites_nor_recounts() {
        let mut ctx = MemoryContext::new();
        handle(&note("m1", "c-1", "billing", None), &mut ctx).unwrap();
        let writes = ctx.writes();
        for receive_count in 2..5 {
            handle(
                &note("m1", "c-1", "billing", None).with_receive_count(receive_count),
                &mut ctx,
            )
            .unwrap();
        }
        assert_eq!(ctx.writes(), writes);
        assert_eq!(count(&ctx, "billing"), 1);
    }

    #[test]
    fn kinds_follow_the_previous_team_and_counters_are_per_team() {
        let mut ctx = MemoryContext::new();
        handle(&note("m1", "c-1", "general", None), &mut ctx).unwrap();
        handle(&note("m2", "c-1", "general", Some("general")), &mut ctx).unwrap();
        handle(&note("m3", "c-1", "billing", Some("general")), &mut ctx).unwrap();
        let kind = |id: &str| {
            ctx.read_json::<Record>(&record_key("acme", "c-1", id))
                .unwrap()
                .unwrap()
                .kind
        };
        assert_eq!(kind("m1"), Kind::NewConversation);
        assert_eq!(kind("m2"), Kind::NewMessage);
        assert_eq!(kind("m3"), Kind::Reassigned);
        let moved: Record = ctx.read_json("notif/acme/c-1/m3").unwrap().unwrap();
        assert_eq!(moved.previous_team.as_deref(), Some("general"));
        assert_eq!((count(&ctx, "general"), count(&ctx, "billing")), (2, 1));
    }

    #[test]
    fn bad_input_is_permanent_and_names_the_field() {
        let mut ctx = MemoryContext::new();
        let cases = [
            (
                json!({"org": "acme", "conversation": "c", "team": "t"}),
                r#"field "id": expected a non-empty string, got nothing (missing)"#,
            ),
            (
                json!({"id": "m", "org": "acme", "conversation": "c", "team": "a/b"}),
                r#"field "team": expected 1 to 128 characters without '/' or control characters, got "a/b""#,
            ),
            (
                json!({"id": "m", "org": "acme", "conversation": "c", "team": "t", "from": 5}),
                r#"field "from": expected a non-empty string, got 5"#,
            ),
            (
                json!({"id": "m", "org": "acme", "conversation": "c", "team": "t", "urgent": true}),
                r#"field "urgent": unknown, expected only id, org, conversation, team, previous_team, channel, from, preview"#,
            ),
        ];
        for (body, expected) in cases {
            let e = handle(&Message::from_json("q", &body), &mut ctx).unwrap_err();
            assert!(!e.is_retryable());
            assert_eq!(e.message(), expected);
        }
        assert_eq!(ctx.writes(), 0);
    }

    #[test]
    fn a_store_outage_is_retryable_and_the_retry_counts_once() {
        let mut ctx = MemoryContext::new();
        ctx.fail_with(Some(Error::retryable("store unavailable")));
        assert!(
            handle(&note("m1", "c-1", "billing", None), &mut ctx)
                .unwrap_err()
                .is_retryable()
        );
        ctx.fail_with(None);
        handle(&note("m1", "c-1", "billing", None), &mut ctx).unwrap();
        assert_eq!(count(&ctx, "billing"), 1);
    }

    #[test]
    fn a_configured_provider_gets_each_new_notification_once() {
        let mut ctx = MemoryContext::new()
            .with_config("provider_url", "http://provider.test/notify")
            .with_config("provider_token", "tok-123456789");
        ctx.respond_with(|_| Ok(levee_sdk::Response::new(202, "")));
        ctx.invoke(handle, &note("m1", "c-1", "billing", None))
            .unwrap();
        ctx.invoke(handle, &note("m1", "c-1", "billing", None))
            .unwrap();
        assert_eq!(
            ctx.requests().len(),
            1,
            "a redelivery is not delivered again"
        );
        let req = &ctx.requests()[0];
        assert_eq!(req.method, "POST");
        assert_eq!(req.url, "http://provider.test/notify");
        assert_eq!(
            req.header_value("authorization"),
            Some("Bearer tok-123456789")
        );
        let sent: Value = serde_json::from_slice(&req.body).unwrap();
        assert_eq!(sent["id"], "m1");
        assert_eq!(sent["team"], "billing");
        assert_eq!(sent["kind"], "new-conversation");
        assert_eq!(count(&ctx, "billing"), 1);
    }

    #[test]
    fn a_provider_refusal_commits_nothing() {
        let mut ctx = MemoryContext::new().with_config("provider_url", "http://p.test/n");
        ctx.respond_with(|_| Ok(levee_sdk::Response::new(429, "slow down")));
        let e = ctx
            .invoke(handle, &note("m1", "c-1", "billing", None))
            .unwrap_err();
        assert!(e.is_retryable(), "{e:?}");
        assert_eq!(ctx.keys().count(), 0);
        ctx.respond_with(|_| Ok(levee_sdk::Response::new(400, "unknown team")));
        let e = ctx
            .invoke(handle, &note("m1", "c-1", "billing", None))
            .unwrap_err();
        assert!(!e.is_retryable());
        assert!(e.message().contains("unknown team"), "{e:?}");
        ctx.respond_with(|_| Ok(levee_sdk::Response::new(200, "")));
        ctx.invoke(handle, &note("m1", "c-1", "billing", None))
            .unwrap();
        assert_eq!(count(&ctx, "billing"), 1);
        assert_eq!(
            ctx.requests().len(),
            3,
            "each run sent it (with the same key, host-side)"
        );
    }

    #[test]
    fn the_record_and_the_counter_commit_together() {
        let mut ctx = MemoryContext::new();
        let crash_before_commit = |msg: &Message, ctx: &mut dyn Context| {
            handle(msg, ctx)?;
            Err(Error::retryable("worker killed before commit"))
        };
        let m1 = note("m1", "c-1", "billing", None);
        assert!(ctx.invoke(crash_before_commit, &m1).is_err());
        assert_eq!(ctx.keys().count(), 0, "neither the record nor the count");
        ctx.invoke(handle, &m1.clone().with_receive_count(2))
            .unwrap();
        ctx.invoke(handle, &m1.with_receive_count(3)).unwrap();
        ctx.invoke(handle, &note("m2", "c-2", "billing", None))
            .unwrap();
        assert_eq!(count(&ctx, "billing"), 2);
        assert_eq!(ctx.keys().filter(|k| k.starts_with("notif/")).count(), 2);
    }
}
