//! The capability itself (everything but the export), in its own file so that the drill's
//! next release (`inbound-next`) can build on the same code.

pub mod attachments;

pub use attachments::Attachment;
use levee_sdk::{Context, Error, Fields, Message, quote};
use serde::{Deserialize, Serialize};

/// Where routed messages go.
pub const ROUTING: &str = "routing";
/// Where messages are indexed.
pub const SEARCH_INDEX: &str = "search-index";
/// The channels a message can arrive on.
pub const CHANNELS: [&str; 4] = ["chat", "email", "sms", "whatsapp"];
/// Longest message text accepted, in characters after normalisation.
pub const MAX_TEXT_CHARS: usize = 4000;
/// Longest org name.
pub const MAX_ORG_CHARS: usize = 64;
/// Longest conversation id.
pub const MAX_CONVERSATION_CHARS: usize = 128;
/// Longest sender (email addresses are at most 254 characters).
pub const MAX_FROM_CHARS: usize = 254;
/// How many recent messages a conversation record keeps (bounds the record's size).
pub const RECENT_LIMIT: usize = 10;
/// How many message ids a record remembers for deduplication; far more than any redelivery
/// window, since a message is retried at most `max_receive` times before it is dead-lettered.
pub const SEEN_LIMIT: usize = 200;

const FIELDS: [&str; 6] = [
    "org",
    "conversation",
    "channel",
    "from",
    "text",
    "attachments",
];

/// A validated, normalised customer message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inbound {
    /// Lowercase tenant name.
    pub org: String,
    /// Conversation id, as sent.
    pub conversation: String,
    /// One of [`CHANNELS`].
    pub channel: String,
    /// Sender: a lowercase email address, a `+digits` phone number, or a chat handle.
    pub from: String,
    /// Text with whitespace collapsed to single spaces.
    pub text: String,
    /// Metadata of the attached files, in the order sent; omitted from JSON when empty, so a
    /// message without attachments keeps its earlier shape.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attachments: Vec<Attachment>,
}

/// One stored message of a conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The queue message id it arrived with.
    pub id: String,
    /// Channel it arrived on.
    pub channel: String,
    /// Its sender.
    pub from: String,
    /// Its text.
    pub text: String,
    /// Its attachments' metadata (never their data); omitted when empty, and absent in
    /// records written before attachments existed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attachments: Vec<Attachment>,
}

/// The conversation record at `conv/{org}/{conversation}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conversation {
    /// Tenant.
    pub org: String,
    /// Conversation id.
    pub conversation: String,
    /// Channel of the latest message.
    pub channel: String,
    /// Sender of the latest message.
    pub from: String,
    /// Messages appended so far (not bounded by `recent`).
    pub message_count: u64,
    /// The latest [`RECENT_LIMIT`] messages, oldest first.
    pub recent: Vec<Entry>,
    /// Ids of the latest [`SEEN_LIMIT`] messages, oldest first.
    pub seen_ids: Vec<String>,
}

impl Conversation {
    fn new(msg: &Inbound) -> Self {
        Self {
            org: msg.org.clone(),
            conversation: msg.conversation.clone(),
            channel: msg.channel.clone(),
            from: msg.from.clone(),
            message_count: 0,
            recent: Vec::new(),
            seen_ids: Vec::new(),
        }
    }

    /// Appends the message unless its id was already recorded; returns whether it did.
    pub fn append(&mut self, id: &str, msg: &Inbound) -> bool {
        if self.seen_ids.iter().any(|seen| seen == id) {
            return false;
        }
        self.channel.clone_from(&msg.channel);
        self.from.clone_from(&msg.from);
        self.message_count += 1;
        self.recent.push(Entry {
            id: id.to_string(),
            channel: msg.channel.clone(),
            from: msg.from.clone(),
            text: msg.text.clone(),
            attachments: msg.attachments.clone(),
        });
        if self.recent.len() > RECENT_LIMIT {
            self.recent.drain(..self.recent.len() - RECENT_LIMIT);
        }
        self.seen_ids.push(id.to_string());
        if self.seen_ids.len() > SEEN_LIMIT {
            self.seen_ids.drain(..self.seen_ids.len() - SEEN_LIMIT);
        }
        true
    }
}

/// What `routing` receives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoutingMessage {
    /// Always `"message"` (routing also accepts `"set-rules"`).
    pub kind: String,
    /// The inbound message id, carried downstream for idempotency.
    pub id: String,
    /// The normalised message.
    #[serde(flatten)]
    pub message: Inbound,
}

/// What `search-index` receives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexMessage {
    /// The inbound message id.
    pub id: String,
    /// Tenant.
    pub org: String,
    /// Conversation to index the text under.
    pub conversation: String,
    /// Normalised text, followed by the attachment names so files can be found by name.
    pub text: String,
}

/// The kv key of a conversation record.
pub fn conversation_key(org: &str, conversation: &str) -> String {
    format!("conv/{org}/{conversation}")
}

/// Handles one inbound message.
pub fn handle(msg: &Message, ctx: &mut dyn Context) -> Result<(), Error> {
    let inbound = parse(&msg.json_object()?)?;
    let key = conversation_key(&inbound.org, &inbound.conversation);
    let mut record = ctx
        .get_json::<Conversation>(&key)?
        .unwrap_or_else(|| Conversation::new(&inbound));
    if record.append(&msg.id, &inbound) {
        ctx.put_json(&key, &record)?;
    }
    ctx.emit_json(
        SEARCH_INDEX,
        &IndexMessage {
            id: msg.id.clone(),
            org: inbound.org.clone(),
            conversation: inbound.conversation.clone(),
            text: index_text(&inbound),
        },
    )?;
    ctx.emit_json(
        ROUTING,
        &RoutingMessage {
            kind: "message".to_string(),
            id: msg.id.clone(),
            message: inbound,
        },
    )
}

/// The text to index: the message text, then each attachment name.
fn index_text(msg: &Inbound) -> String {
    let mut text = msg.text.clone();
    for a in &msg.attachments {
        text.push(' ');
        text.push_str(&a.name);
    }
    text
}

/// Validates and normalises a message body; errors name the field and what is allowed.
pub fn parse(body: &serde_json::Map<String, serde_json::Value>) -> Result<Inbound, Error> {
    let f = Fields::new(body);
    f.deny_unknown(&FIELDS)?;

    let org = f.str("org")?.to_lowercase();
    if org.chars().count() > MAX_ORG_CHARS
        || !org
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
    {
        return Err(f.invalid(
            "org",
            &format!("1 to {MAX_ORG_CHARS} characters of a-z, 0-9, '-', '_'"),
            quote(&org),
        ));
    }

    let conversation = f.str("conversation")?;
    if conversation.chars().count() > MAX_CONVERSATION_CHARS
        || !conversation
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'))
    {
        return Err(f.invalid(
            "conversation",
            &format!(
                "1 to {MAX_CONVERSATION_CHARS} characters of A-Z, a-z, 0-9, '-', '_', '.', ':'"
            ),
            quote(conversation),
        ));
    }

    let channel = f.str("channel")?.to_lowercase();
    if !CHANNELS.contains(&channel.as_str()) {
        return Err(f.invalid(
            "channel",
            &format!("one of {}", CHANNELS.join(", ")),
            quote(&channel),
        ));
    }

    let raw_from = f.str("from")?;
    let from = normalise_from(&channel, raw_from).ok_or_else(|| {
        let expected = match channel.as_str() {
            "email" => "an email address like ann@example.com".to_string(),
            "chat" => format!("a sender name of at most {MAX_FROM_CHARS} printable characters"),
            _ => "a phone number like +4412345 ('+' and 6 to 15 digits)".to_string(),
        };
        f.invalid(
            "from",
            &format!("{expected} for channel \"{channel}\""),
            quote(raw_from),
        )
    })?;

    let text = normalise_text(f.str("text")?);
    let chars = text.chars().count();
    if chars == 0 {
        return Err(f.invalid("text", "visible text", "only control characters"));
    }
    if chars > MAX_TEXT_CHARS {
        return Err(f.invalid(
            "text",
            &format!("at most {MAX_TEXT_CHARS} characters"),
            format!("{chars} characters"),
        ));
    }

    let attachments = attachments::parse(&f)?;

    Ok(Inbound {
        org,
        conversation: conversation.to_string(),
        channel,
        from,
        text,
        attachments,
    })
}

/// The sender in canonical form for its channel, or `None` if it does not fit the channel.
fn normalise_from(channel: &str, from: &str) -> Option<String> {
    match channel {
        "email" => {
            let addr = from.to_lowercase();
            let (local, domain) = addr.split_once('@')?;
            let valid = addr.len() <= MAX_FROM_CHARS
                && !local.is_empty()
                && !domain.contains('@')
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && !addr.chars().any(|c| c.is_whitespace() || c.is_control());
            valid.then_some(addr)
        }
        "sms" | "whatsapp" => {
            // People write numbers with spaces, dashes and brackets; the canonical form drops them.
            let compact: String = from
                .chars()
                .filter(|c| !matches!(c, ' ' | '-' | '(' | ')' | '.'))
                .collect();
            let digits = compact.strip_prefix('+')?;
            let valid =
                (6..=15).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit());
            valid.then_some(compact)
        }
        _ => {
            let valid =
                from.chars().count() <= MAX_FROM_CHARS && !from.chars().any(char::is_control);
            valid.then(|| from.to_string())
        }
    }
}

/// Collapses every run of whitespace to one space and drops other control characters, so the
/// stored text and its index do not depend on how the client wrapped lines.
pub fn normalise_text(text: &str) -> String {
    text.split_whitespace()
        .map(|word| word.chars().filter(|c| !c.is_control()).collect::<String>())
        .filter(|word| !word.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use levee_sdk::MemoryContext;
    use serde_json::{Value, json};

    fn valid() -> Value {
        json!({"org": "acme", "conversation": "c-42", "channel": "chat",
               "from": "ann@example.com", "text": "my order has not arrived"})
    }

    fn with(field: &str, value: Value) -> Value {
        let mut v = valid();
        v[field] = value;
        v
    }

    fn without(field: &str) -> Value {
        let mut v = valid();
        v.as_object_mut().unwrap().remove(field);
        v
    }

    fn ctx() -> MemoryContext {
        MemoryContext::new().with_emits_to([ROUTING, SEARCH_INDEX])
    }

    fn run(ctx: &mut MemoryContext, id: &str, body: &Value) -> Result<(), Error> {
        handle(&Message::from_json(id, body), ctx)
    }

    fn rejection(body: Value) -> String {
        let mut ctx = ctx();
        let e = run(&mut ctx, "m1", &body).unwrap_err();
        assert!(!e.is_retryable(), "{e}");
        assert_eq!(ctx.writes(), 0, "a rejected message must not be stored");
        assert!(
            ctx.emitted().is_empty(),
            "a rejected message must not be emitted"
        );
        e.message().to_string()
    }

    #[test]
    fn stores_the_conversation_and_emits_to_routing_and_search() {
        let mut ctx = ctx();
        run(&mut ctx, "m1", &valid()).unwrap();

        let conv: Conversation = ctx.read_json("conv/acme/c-42").unwrap().unwrap();
        assert_eq!(conv.message_count, 1);
        assert_eq!(conv.channel, "chat");
        assert_eq!(conv.recent[0].text, "my order has not arrived");
        assert_eq!(conv.seen_ids, vec!["m1"]);

        let routed: Value = ctx.emitted_to(ROUTING).next().unwrap().json().unwrap();
        assert_eq!(
            routed,
            json!({"kind": "message", "id": "m1", "org": "acme", "conversation": "c-42",
                   "channel": "chat", "from": "ann@example.com", "text": "my order has not arrived"})
        );
        let indexed: Value = ctx.emitted_to(SEARCH_INDEX).next().unwrap().json().unwrap();
        assert_eq!(
            indexed,
            json!({"id": "m1", "org": "acme", "conversation": "c-42", "text": "my order has not arrived"})
        );
    }

    #[test]
    fn normalises_org_email_whitespace_and_phone_numbers() {
        let mut ctx = ctx();
        let body = json!({"org": "  ACME ", "conversation": "c-1", "channel": "Email",
                          "from": " Ann@Example.COM ", "text": "  where\n\n is   my\trefund? "});
        run(&mut ctx, "m1", &body).unwrap();
        let conv: Conversation = ctx.read_json("conv/acme/c-1").unwrap().unwrap();
        assert_eq!(conv.from, "ann@example.com");
        assert_eq!(conv.channel, "email");
        assert_eq!(conv.recent[0].text, "where is my refund?");

        let sms = parse_value(
            json!({"org": "acme", "conversation": "c-2", "channel": "sms",
                                     "from": "+44 (20) 7946-0018", "text": "hi"}),
        );
        assert_eq!(sms.unwrap().from, "+442079460018");
    }

    fn parse_value(v: Value) -> Result<Inbound, Error> {
        parse(v.as_object().unwrap())
    }

    #[test]
    fn redelivery_does_not_append_twice_but_emits_again() {
        let mut ctx = ctx();
        run(&mut ctx, "m1", &valid()).unwrap();
        let writes = ctx.writes();
        let retry = Message::from_json("m1", &valid()).with_receive_count(2);
        handle(&retry, &mut ctx).unwrap();
        assert_eq!(
            ctx.writes(),
            writes,
            "a duplicate must not rewrite the record"
        );
        let conv: Conversation = ctx.read_json("conv/acme/c-42").unwrap().unwrap();
        assert_eq!(conv.message_count, 1);
        assert_eq!(conv.recent.len(), 1);
        assert_eq!(ctx.emitted_to(ROUTING).count(), 2);
        assert_eq!(ctx.emitted_to(SEARCH_INDEX).count(), 2);
    }

    #[test]
    fn a_run_that_does_not_commit_leaves_nothing_and_the_next_appends_once() {
        let mut ctx = ctx();
        let msg = Message::from_json("m1", &valid());
        let killed = |msg: &Message, ctx: &mut dyn Context| {
            handle(msg, ctx)?;
            Err(Error::retryable("worker killed before commit"))
        };
        assert!(ctx.invoke(killed, &msg).is_err());
        assert_eq!(ctx.writes(), 0);
        assert!(ctx.emitted().is_empty());
        ctx.invoke(handle, &msg.with_receive_count(2)).unwrap();
        let conv: Conversation = ctx.read_json("conv/acme/c-42").unwrap().unwrap();
        assert_eq!((conv.message_count, conv.seen_ids.len()), (1, 1));
        assert_eq!(ctx.emitted().len(), 2);
    }

    #[test]
    fn recent_messages_and_seen_ids_are_bounded() {
        let mut ctx = ctx();
        for i in 0..(SEEN_LIMIT + 5) {
            run(
                &mut ctx,
                &format!("m{i}"),
                &with("text", json!(format!("message {i}"))),
            )
            .unwrap();
        }
        let conv: Conversation = ctx.read_json("conv/acme/c-42").unwrap().unwrap();
        assert_eq!(conv.message_count, (SEEN_LIMIT + 5) as u64);
        assert_eq!(conv.recent.len(), RECENT_LIMIT);
        assert_eq!(
            conv.recent.last().unwrap().text,
            format!("message {}", SEEN_LIMIT + 4)
        );
        assert_eq!(conv.seen_ids.len(), SEEN_LIMIT);
        assert_eq!(conv.seen_ids[0], "m5");
    }

    #[test]
    fn conversations_are_kept_apart_per_org() {
        let mut ctx = ctx();
        run(&mut ctx, "m1", &valid()).unwrap();
        run(&mut ctx, "m2", &with("org", json!("globex"))).unwrap();
        let keys: Vec<_> = ctx.keys().collect();
        assert_eq!(keys, vec!["conv/acme/c-42", "conv/globex/c-42"]);
    }

    #[test]
    fn missing_wrong_type_and_empty_fields_are_named() {
        assert_eq!(
            rejection(without("org")),
            r#"field "org": expected a non-empty string, got nothing (missing)"#
        );
        assert_eq!(
            rejection(with("conversation", json!(42))),
            r#"field "conversation": expected a non-empty string, got 42"#
        );
        assert_eq!(
            rejection(with("text", json!("   "))),
            r#"field "text": expected a non-empty string, got "   ""#
        );
        assert_eq!(
            rejection(with("from", json!(null))),
            r#"field "from": expected a non-empty string, got nothing (missing)"#
        );
    }

    #[test]
    fn bad_channel_lists_the_allowed_ones() {
        assert_eq!(
            rejection(with("channel", json!("fax"))),
            r#"field "channel": expected one of chat, email, sms, whatsapp, got "fax""#
        );
    }

    #[test]
    fn from_must_fit_the_channel() {
        let email = json!({"org": "acme", "conversation": "c", "channel": "email", "from": "ann", "text": "x"});
        assert_eq!(
            rejection(email),
            r#"field "from": expected an email address like ann@example.com for channel "email", got "ann""#
        );
        for bad in ["4412345", "+44", "+44abc5678", "+1234567890123456"] {
            let sms = json!({"org": "acme", "conversation": "c", "channel": "whatsapp", "from": bad, "text": "x"});
            let msg = rejection(sms);
            assert!(
                msg.starts_with(r#"field "from": expected a phone number like +4412345"#),
                "{msg}"
            );
            assert!(msg.contains(r#"for channel "whatsapp""#), "{msg}");
        }
        for bad in ["a@b", "a@@b.com", "@b.com", "a b@c.com", "a@.com"] {
            let email = json!({"org": "acme", "conversation": "c", "channel": "email", "from": bad, "text": "x"});
            assert!(rejection(email).starts_with(r#"field "from""#), "{bad}");
        }
    }

    #[test]
    fn org_and_conversation_cannot_break_out_of_their_key() {
        assert_eq!(
            rejection(with("org", json!("ac/me"))),
            r#"field "org": expected 1 to 64 characters of a-z, 0-9, '-', '_', got "ac/me""#
        );
        assert!(
            rejection(with("conversation", json!("c/../x"))).starts_with(r#"field "conversation""#)
        );
        assert!(rejection(with("org", json!("x".repeat(65)))).starts_with(r#"field "org""#));
    }

    #[test]
    fn oversized_text_and_unknown_fields_are_rejected() {
        assert_eq!(
            rejection(with("text", json!("a".repeat(MAX_TEXT_CHARS + 1)))),
            r#"field "text": expected at most 4000 characters, got 4001 characters"#
        );
        assert_eq!(
            rejection(with("priority", json!("high"))),
            r#"field "priority": unknown, expected only org, conversation, channel, from, text, attachments"#
        );
        let msg = rejection(json!(["not", "an", "object"]));
        assert_eq!(msg, "message body must be a JSON object, got an array");
    }

    fn attachment(name: &str, content_type: &str, data: &[u8]) -> Value {
        json!({"name": name, "content_type": content_type, "data": attachments::encode(data)})
    }

    /// Deterministic bytes that are not all alike, so the checksum tells them apart.
    fn noise(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed;
        (0..len)
            .map(|_| {
                x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                (x >> 56) as u8
            })
            .collect()
    }

    #[test]
    fn a_5_mib_attachment_is_recorded_and_emitted_as_metadata_only() {
        let big = noise(5 * 1024 * 1024, 7);
        let body = with(
            "attachments",
            json!([
                attachment("scan.PNG", "Image/PNG", &big),
                attachment("notes.txt", "text/plain", b"foobar")
            ]),
        );
        let mut ctx = ctx();
        run(&mut ctx, "m1", &body).unwrap();

        let scan = json!({"name": "scan.PNG", "content_type": "image/png",
                          "bytes": 5 * 1024 * 1024,
                          "checksum": format!("{:016x}", attachments::fnv1a64(&big))});
        let notes = json!({"name": "notes.txt", "content_type": "text/plain", "bytes": 6,
                           "checksum": "85944171f73967e8"});

        let stored = ctx.value("conv/acme/c-42").unwrap();
        assert!(
            stored.len() < 1024,
            "the record must hold metadata only, got {} bytes",
            stored.len()
        );
        let conv: Value = ctx.read_json("conv/acme/c-42").unwrap().unwrap();
        assert_eq!(conv["recent"][0]["attachments"], json!([scan, notes]));
        assert_eq!(conv["recent"][0]["text"], "my order has not arrived");

        let routed = ctx.emitted_to(ROUTING).next().unwrap();
        assert!(routed.body.len() < 1024, "{} bytes", routed.body.len());
        assert_eq!(
            routed.json::<Value>().unwrap(),
            json!({"kind": "message", "id": "m1", "org": "acme", "conversation": "c-42",
                   "channel": "chat", "from": "ann@example.com", "text": "my order has not arrived",
                   "attachments": [scan, notes]})
        );
        let indexed: Value = ctx.emitted_to(SEARCH_INDEX).next().unwrap().json().unwrap();
        assert_eq!(
            indexed,
            json!({"id": "m1", "org": "acme", "conversation": "c-42",
                   "text": "my order has not arrived scan.PNG notes.txt"})
        );
    }

    #[test]
    fn empty_or_null_attachments_keep_the_earlier_shapes() {
        for none in [json!([]), json!(null)] {
            let mut ctx = ctx();
            run(&mut ctx, "m1", &with("attachments", none)).unwrap();
            let plain = {
                let mut c = self::ctx();
                run(&mut c, "m1", &valid()).unwrap();
                c
            };
            assert_eq!(ctx.value("conv/acme/c-42"), plain.value("conv/acme/c-42"));
            assert_eq!(ctx.emitted(), plain.emitted());
        }
    }

    #[test]
    fn records_written_before_attachments_existed_still_load() {
        let mut ctx = ctx();
        let old = json!({"org": "acme", "conversation": "c-42", "channel": "chat",
                         "from": "ann@example.com", "message_count": 1,
                         "recent": [{"id": "m0", "channel": "chat", "from": "ann@example.com",
                                     "text": "hello"}],
                         "seen_ids": ["m0"]});
        levee_sdk::Context::put(&mut ctx, "conv/acme/c-42", old.to_string().as_bytes()).unwrap();
        let body = with(
            "attachments",
            json!([attachment("a.pdf", "application/pdf", b"%PDF")]),
        );
        run(&mut ctx, "m1", &body).unwrap();
        let conv: Conversation = ctx.read_json("conv/acme/c-42").unwrap().unwrap();
        assert_eq!(conv.message_count, 2);
        assert!(conv.recent[0].attachments.is_empty());
        assert_eq!(conv.recent[1].attachments[0].bytes, 4);
    }

    #[test]
    fn redelivery_with_attachments_does_not_append_twice() {
        let mut ctx = ctx();
        let body = with(
            "attachments",
            json!([attachment(
                "a.bin",
                "application/octet-stream",
                &noise(1000, 1)
            )]),
        );
        run(&mut ctx, "m1", &body).unwrap();
        run(&mut ctx, "m1", &body).unwrap();
        let conv: Conversation = ctx.read_json("conv/acme/c-42").unwrap().unwrap();
        assert_eq!(conv.recent.len(), 1);
        assert_eq!(ctx.emitted_to(ROUTING).count(), 2);
    }

    #[test]
    fn bad_base64_is_named_with_its_index() {
        let good = attachment("a.txt", "text/plain", b"hi");
        let bad = json!({"name": "b.txt", "content_type": "text/plain", "data": "aGk*"});
        assert_eq!(
            rejection(with("attachments", json!([good, bad]))),
            r#"field "attachments[1].data": expected base64 (standard alphabet, '=' padded), got '*' at offset 3"#
        );
        let short = json!({"name": "b.txt", "content_type": "text/plain", "data": "aGk"});
        assert_eq!(
            rejection(with("attachments", json!([short]))),
            r#"field "attachments[0].data": expected base64 (standard alphabet, '=' padded), got 3 characters, not a multiple of 4"#
        );
        let number = json!({"name": "b.txt", "content_type": "text/plain", "data": 5});
        assert_eq!(
            rejection(with("attachments", json!([number]))),
            r#"field "attachments[0].data": expected a base64 string, got 5"#
        );
        let missing = json!({"name": "b.txt", "content_type": "text/plain"});
        assert_eq!(
            rejection(with("attachments", json!([missing]))),
            r#"field "attachments[0].data": expected a base64 string, got nothing (missing)"#
        );
    }

    #[test]
    fn too_many_attachments_are_refused() {
        let list: Vec<Value> = (0..=attachments::MAX_ATTACHMENTS)
            .map(|i| attachment(&format!("f{i}.txt"), "text/plain", b"x"))
            .collect();
        assert_eq!(
            rejection(with("attachments", json!(list))),
            r#"field "attachments": expected at most 20 attachments, got 21 attachments"#
        );
        let list = &list[..attachments::MAX_ATTACHMENTS];
        run(&mut ctx(), "m1", &with("attachments", json!(list))).unwrap();
    }

    #[test]
    fn the_total_decoded_size_is_bounded() {
        let half = vec![0u8; 4 * 1024 * 1024];
        let two_halves = json!([
            attachment("a", "application/octet-stream", &half),
            attachment("b", "application/octet-stream", &half)
        ]);
        run(&mut ctx(), "m1", &with("attachments", two_halves)).unwrap();

        let over = json!([
            attachment("a", "application/octet-stream", &half),
            attachment("b", "application/octet-stream", &half),
            attachment("c", "application/octet-stream", b"x")
        ]);
        assert_eq!(
            rejection(with("attachments", over)),
            r#"field "attachments": expected at most 8388608 bytes (8 MiB) of decoded data in total, got 8388609 bytes in attachments[0] to attachments[2]"#
        );
    }

    #[test]
    fn bad_names_and_content_types_are_named() {
        let name_error = r#"expected a file name of 1 to 255 bytes of UTF-8 without '/' or control characters, not "." or "..", got "#;
        for bad in ["../etc/passwd", "a\u{0}b", "..", "x\ty"] {
            let msg = rejection(with(
                "attachments",
                json!([attachment(bad, "text/plain", b"x")]),
            ));
            assert_eq!(
                msg,
                format!(r#"field "attachments[0].name": {name_error}{}"#, quote(bad))
            );
        }
        let long = "é".repeat(128);
        assert!(
            rejection(with(
                "attachments",
                json!([attachment(&long, "text/plain", b"x")])
            ))
            .starts_with(r#"field "attachments[0].name": expected a file name"#)
        );
        let fits = "é".repeat(127);
        run(
            &mut ctx(),
            "m1",
            &with(
                "attachments",
                json!([attachment(&fits, "text/plain", b"x")]),
            ),
        )
        .unwrap();
        assert_eq!(
            rejection(with(
                "attachments",
                json!([attachment("  ", "text/plain", b"x")])
            )),
            r#"field "attachments[0].name": expected a non-empty string, got "  ""#
        );

        for bad in [
            "image",
            "image/",
            "/png",
            "text/plain; charset=utf-8",
            "image/png/x",
            "-a/b",
        ] {
            let msg = rejection(with("attachments", json!([attachment("a.png", bad, b"x")])));
            assert_eq!(
                msg,
                format!(
                    r#"field "attachments[0].content_type": expected a media type like "image/png" (type/subtype, at most 127 characters, no parameters), got {}"#,
                    quote(bad)
                )
            );
        }
        for good in [
            "image/svg+xml",
            "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        ] {
            run(
                &mut ctx(),
                "m1",
                &with("attachments", json!([attachment("a", good, b"x")])),
            )
            .unwrap();
        }
    }

    #[test]
    fn malformed_attachment_lists_are_named() {
        assert_eq!(
            rejection(with("attachments", json!({"name": "a"}))),
            r#"field "attachments": expected an array, got an object"#
        );
        assert_eq!(
            rejection(with("attachments", json!(["a.txt"]))),
            r#"field "attachments[0]": expected an object, got "a.txt""#
        );
        let mut extra = attachment("a.txt", "text/plain", b"x");
        extra["size"] = json!(1);
        assert_eq!(
            rejection(with("attachments", json!([extra]))),
            r#"field "attachments[0].size": unknown, expected only name, content_type, data"#
        );
    }

    /// The largest record the limits allow (longest texts, senders, names and content types,
    /// in the characters JSON spends the most bytes on) must still fit one kv value; if it did
    /// not, every later message of that conversation would fail to store.
    #[test]
    fn the_largest_possible_record_fits_a_kv_value() {
        let mut ctx = ctx();
        let content_type = format!("{}/{}", "a".repeat(63), "b".repeat(63));
        let list: Vec<Value> = (0..attachments::MAX_ATTACHMENTS)
            .map(|_| {
                attachment(
                    &"\"".repeat(attachments::MAX_NAME_BYTES),
                    &content_type,
                    b"",
                )
            })
            .collect();
        for i in 0..SEEN_LIMIT {
            let body = json!({"org": "a".repeat(MAX_ORG_CHARS),
                              "conversation": "c".repeat(MAX_CONVERSATION_CHARS),
                              "channel": "chat", "from": "\u{1d11e}".repeat(MAX_FROM_CHARS),
                              "text": "\u{1d11e}".repeat(MAX_TEXT_CHARS), "attachments": list});
            run(&mut ctx, &format!("{i:064}"), &body).unwrap();
        }
        let key = conversation_key(
            &"a".repeat(MAX_ORG_CHARS),
            &"c".repeat(MAX_CONVERSATION_CHARS),
        );
        let size = ctx.value(&key).unwrap().len();
        assert!(size <= levee_sdk::MAX_VALUE_LEN, "{size}");
    }

    #[test]
    fn store_outages_are_retryable_and_emit_nothing() {
        let mut ctx = ctx();
        ctx.fail_with(Some(Error::retryable("store unavailable")));
        let e = run(&mut ctx, "m1", &valid()).unwrap_err();
        assert!(e.is_retryable());
        ctx.fail_with(None);
        assert!(ctx.emitted().is_empty());
        run(&mut ctx, "m1", &valid()).unwrap();
    }
}
