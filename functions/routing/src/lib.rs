//! `routing`: assigns each conversation to a team and tells `notify`.
//!
//! Rules live in kv at `rules/{org}`: an ordered list of `{team, keywords, channel?}`; the first
//! rule whose channel fits (or has none) and one of whose keywords occurs in the text as whole
//! words wins. When no rule matches, a conversation keeps the team it already has (a "thanks!"
//! must not bounce a billing case back to triage), and a new one goes to [`DEFAULT_TEAM`].
//!
//! Two message kinds:
//! - `{"kind": "message", "id", "org", "conversation", "channel", "from"?, "text"}` (what
//!   `inbound` emits; `kind` and `id` may be omitted) writes `assign/{org}/{conversation}` and
//!   emits to `notify`. The assignment remembers the message that made it, so a redelivery of
//!   that message writes nothing and emits the same notification again (a duplicate the host
//!   recognises by its stable id, and that `notify` would ignore anyway).
//! - `{"kind": "set-rules", "org", "rules": [...]}` validates and replaces the org's rules.
//!
//! Concurrency: the invocation is a transaction, and routing reads both keys it decides on
//! (`assign/...` and `rules/...`), so they are version-checked at commit. Two messages of one
//! conversation, or a message and a rules update, handled at once are serialised: the one that
//! commits second runs again on what the first wrote, so `previous_team` is always the team
//! the conversation really had, and the assignment and its notification commit together.

use levee_sdk::{Context, Error, Fields, Message, quote};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Where assignments are announced.
pub const NOTIFY: &str = "notify";
/// The team of conversations no rule claims.
pub const DEFAULT_TEAM: &str = "general";
/// The channels a rule may be limited to.
pub const CHANNELS: [&str; 4] = ["chat", "email", "sms", "whatsapp"];
/// Most rules an org can have.
pub const MAX_RULES: usize = 100;
/// Most keywords per rule.
pub const MAX_KEYWORDS: usize = 50;
/// Longest keyword (or phrase), in characters.
pub const MAX_KEYWORD_CHARS: usize = 64;
/// Longest team name.
pub const MAX_TEAM_CHARS: usize = 64;
/// Longest org or conversation id accepted in a key.
pub const MAX_ID_CHARS: usize = 128;
/// Characters of the message text that go into the notification.
pub const PREVIEW_CHARS: usize = 140;

/// One routing rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rule {
    /// Team that gets matching conversations.
    pub team: String,
    /// Words or phrases (normalised: lowercase words joined by single spaces).
    pub keywords: Vec<String>,
    /// Only messages from this channel match, if set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
}

impl Rule {
    /// Whether the rule claims a message on `channel` whose text has these tokens.
    pub fn matches(&self, channel: &str, tokens: &[String]) -> bool {
        if self.channel.as_deref().is_some_and(|c| c != channel) {
            return false;
        }
        self.keywords.iter().any(|keyword| {
            let words: Vec<&str> = keyword.split(' ').collect();
            tokens
                .windows(words.len())
                .any(|window| window.iter().zip(&words).all(|(t, w)| t == w))
        })
    }
}

/// The value at `rules/{org}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleSet {
    /// In priority order.
    pub rules: Vec<Rule>,
}

impl RuleSet {
    /// The first matching rule and its index.
    pub fn find(&self, channel: &str, text: &str) -> Option<(usize, &Rule)> {
        let tokens = tokenize(text);
        self.rules
            .iter()
            .enumerate()
            .find(|(_, rule)| rule.matches(channel, &tokens))
    }
}

/// The value at `assign/{org}/{conversation}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assignment {
    /// Assigned team.
    pub team: String,
    /// Index of the rule that assigned it; `None` for the default team.
    pub rule: Option<usize>,
    /// The message that made this assignment (the latest one routed).
    pub message_id: String,
    /// The team before that message, if the conversation had one.
    pub previous_team: Option<String>,
}

/// What `notify` receives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notification {
    /// The inbound message id (the key of notify's idempotency).
    pub id: String,
    /// Tenant.
    pub org: String,
    /// Conversation.
    pub conversation: String,
    /// Team to notify.
    pub team: String,
    /// The team before this message, if the conversation had one.
    pub previous_team: Option<String>,
    /// Channel of the message.
    pub channel: String,
    /// Sender, if known.
    pub from: Option<String>,
    /// The start of the text.
    pub preview: String,
}

/// The kv key of an org's rules.
pub fn rules_key(org: &str) -> String {
    format!("rules/{org}")
}

/// The kv key of a conversation's assignment.
pub fn assignment_key(org: &str, conversation: &str) -> String {
    format!("assign/{org}/{conversation}")
}

/// Lowercase words: runs of letters and digits.
pub fn tokenize(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|t| !t.is_empty())
        .map(str::to_lowercase)
        .collect()
}

/// Handles a routed message or a rules update.
pub fn handle(msg: &Message, ctx: &mut dyn Context) -> Result<(), Error> {
    let body = msg.json_object()?;
    let f = Fields::new(&body);
    match f.opt_str("kind")?.unwrap_or("message") {
        "message" => route(msg, f, ctx),
        "set-rules" => {
            f.deny_unknown(&["kind", "org", "rules"])?;
            let org = f.key_segment("org", MAX_ID_CHARS)?.to_lowercase();
            let rules = parse_rules(f.array("rules")?)?;
            ctx.put_json(&rules_key(&org), &rules)
        }
        other => Err(f.invalid("kind", "one of message, set-rules", quote(other))),
    }
}

levee_sdk::export!(handle);

fn route(msg: &Message, f: Fields<'_>, ctx: &mut dyn Context) -> Result<(), Error> {
    f.deny_unknown(&[
        "kind",
        "id",
        "org",
        "conversation",
        "channel",
        "from",
        "text",
        // Metadata of inbound's attachments: routing decides on the text alone.
        "attachments",
    ])?;
    // A message posted without an upstream id is identified by its own delivery.
    let id = match f.get("id") {
        Some(_) => f.key_segment("id", MAX_ID_CHARS)?,
        None => msg.id.as_str(),
    };
    let org = f.key_segment("org", MAX_ID_CHARS)?.to_lowercase();
    let conversation = f.key_segment("conversation", MAX_ID_CHARS)?;
    let channel = parse_channel(&f, "channel")?;
    let from = f.opt_str("from")?;
    let text = f.str("text")?;

    let key = assignment_key(&org, conversation);
    let previous: Option<Assignment> = ctx.get_json(&key)?;
    let assignment = match previous {
        // A redelivery of the message that made the current assignment: announce it again
        // exactly as before, even if the rules changed in between.
        Some(current) if current.message_id == id => current,
        previous => {
            let rules: RuleSet = ctx.get_json(&rules_key(&org))?.unwrap_or_default();
            let (team, rule) = match (rules.find(&channel, text), &previous) {
                (Some((index, rule)), _) => (rule.team.clone(), Some(index)),
                (None, Some(kept)) => (kept.team.clone(), kept.rule),
                (None, None) => (DEFAULT_TEAM.to_string(), None),
            };
            let assignment = Assignment {
                team,
                rule,
                message_id: id.to_string(),
                previous_team: previous.map(|p| p.team),
            };
            ctx.put_json(&key, &assignment)?;
            assignment
        }
    };
    ctx.emit_json(
        NOTIFY,
        &Notification {
            id: id.to_string(),
            org,
            conversation: conversation.to_string(),
            team: assignment.team,
            previous_team: assignment.previous_team,
            channel,
            from: from.map(str::to_string),
            preview: text.chars().take(PREVIEW_CHARS).collect(),
        },
    )
}

fn parse_channel(f: &Fields<'_>, name: &str) -> Result<String, Error> {
    let channel = f.str(name)?.to_lowercase();
    if CHANNELS.contains(&channel.as_str()) {
        Ok(channel)
    } else {
        Err(f.invalid(
            name,
            &format!("one of {}", CHANNELS.join(", ")),
            quote(&channel),
        ))
    }
}

/// Validates and normalises a `rules` array; errors name the offending element.
pub fn parse_rules(items: &[Value]) -> Result<RuleSet, Error> {
    if items.len() > MAX_RULES {
        return Err(Error::invalid_field(
            "rules",
            format!("at most {MAX_RULES} rules"),
            items.len(),
        ));
    }
    let mut rules = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let path = format!("rules[{i}]");
        let f = Fields::nested(item, &path)?;
        f.deny_unknown(&["team", "keywords", "channel"])?;

        let team = f.str("team")?.to_lowercase();
        if team.chars().count() > MAX_TEAM_CHARS
            || !team
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
        {
            return Err(f.invalid(
                "team",
                &format!("1 to {MAX_TEAM_CHARS} characters of a-z, 0-9, '-', '_'"),
                quote(&team),
            ));
        }

        let raw = f.array("keywords")?;
        if raw.is_empty() || raw.len() > MAX_KEYWORDS {
            return Err(f.invalid(
                "keywords",
                &format!("1 to {MAX_KEYWORDS} keywords"),
                format!("{} keywords", raw.len()),
            ));
        }
        let mut keywords = Vec::with_capacity(raw.len());
        for (k, keyword) in raw.iter().enumerate() {
            let words = keyword.as_str().map(tokenize).unwrap_or_default();
            let normalised = words.join(" ");
            if words.is_empty() || normalised.chars().count() > MAX_KEYWORD_CHARS {
                return Err(f.invalid(
                    &format!("keywords[{k}]"),
                    &format!("a word or phrase of letters and digits, at most {MAX_KEYWORD_CHARS} characters"),
                    levee_sdk::describe(keyword),
                ));
            }
            if !keywords.contains(&normalised) {
                keywords.push(normalised);
            }
        }

        let channel = match f.get("channel") {
            None => None,
            Some(_) => Some(parse_channel(&f, "channel")?),
        };
        rules.push(Rule {
            team,
            keywords,
            channel,
        });
    }
    Ok(RuleSet { rules })
}

#[cfg(test)]
mod tests {
    use super::*;
    use levee_sdk::MemoryContext;
    use serde_json::json;

    fn ctx() -> MemoryContext {
        MemoryContext::new().with_emits_to([NOTIFY])
    }

    fn message(id: &str, conversation: &str, channel: &str, text: &str) -> Message {
        Message::from_json(
            format!("q-{id}"),
            &json!({"kind": "message", "id": id, "org": "acme", "conversation": conversation,
                    "channel": channel, "from": "ann@example.com", "text": text}),
        )
    }

    fn set_rules(ctx: &mut MemoryContext, rules: Value) -> Result<(), Error> {
        handle(
            &Message::from_json(
                "r1",
                &json!({"kind": "set-rules", "org": "ACME", "rules": rules}),
            ),
            ctx,
        )
    }

    fn standard_rules(ctx: &mut MemoryContext) {
        set_rules(
            ctx,
            json!([
                {"team": "vip", "keywords": ["refund"], "channel": "whatsapp"},
                {"team": "billing", "keywords": ["Refund", "invoice", "charged twice"]},
                {"team": "logistics", "keywords": ["order", "delivery", "not arrived"]}
            ]),
        )
        .unwrap();
    }

    fn assignment(ctx: &MemoryContext, conversation: &str) -> Assignment {
        ctx.read_json(&assignment_key("acme", conversation))
            .unwrap()
            .unwrap()
    }

    fn last_notification(ctx: &MemoryContext) -> Notification {
        ctx.emitted().last().unwrap().json().unwrap()
    }

    #[test]
    fn set_rules_stores_normalised_rules() {
        let mut ctx = ctx();
        standard_rules(&mut ctx);
        let stored: RuleSet = ctx.read_json("rules/acme").unwrap().unwrap();
        assert_eq!(stored.rules.len(), 3);
        assert_eq!(
            stored.rules[1].keywords,
            vec!["refund", "invoice", "charged twice"]
        );
        assert_eq!(stored.rules[0].channel.as_deref(), Some("whatsapp"));
        assert!(ctx.emitted().is_empty());
    }

    #[test]
    fn first_matching_rule_wins_and_channel_limits_apply() {
        let mut ctx = ctx();
        standard_rules(&mut ctx);
        handle(
            &message("m1", "c-1", "email", "I want a refund for my order"),
            &mut ctx,
        )
        .unwrap();
        assert_eq!(assignment(&ctx, "c-1").team, "billing");
        assert_eq!(assignment(&ctx, "c-1").rule, Some(1));
        handle(&message("m2", "c-2", "whatsapp", "refund please"), &mut ctx).unwrap();
        assert_eq!(assignment(&ctx, "c-2").team, "vip");
        handle(
            &message("m3", "c-3", "chat", "My order has NOT arrived."),
            &mut ctx,
        )
        .unwrap();
        assert_eq!(assignment(&ctx, "c-3").team, "logistics");
    }

    #[test]
    fn keywords_match_whole_words_and_phrases_only() {
        let mut ctx = ctx();
        standard_rules(&mut ctx);
        // "refunded" is not "refund"; "charged" alone is not "charged twice".
        handle(
            &message("m1", "c-1", "chat", "I was refunded but charged"),
            &mut ctx,
        )
        .unwrap();
        assert_eq!(assignment(&ctx, "c-1").team, DEFAULT_TEAM);
        handle(
            &message("m2", "c-2", "chat", "you CHARGED  me, twice!"),
            &mut ctx,
        )
        .unwrap();
        assert_eq!(assignment(&ctx, "c-2").team, DEFAULT_TEAM);
        handle(
            &message("m3", "c-3", "chat", "I was charged twice!"),
            &mut ctx,
        )
        .unwrap();
        assert_eq!(assignment(&ctx, "c-3").team, "billing");
    }

    #[test]
    fn without_rules_everything_goes_to_general() {
        let mut ctx = ctx();
        handle(&message("m1", "c-1", "sms", "hello"), &mut ctx).unwrap();
        let a = assignment(&ctx, "c-1");
        assert_eq!((a.team.as_str(), a.rule), (DEFAULT_TEAM, None));
        let n = last_notification(&ctx);
        assert_eq!(
            n,
            Notification {
                id: "m1".into(),
                org: "acme".into(),
                conversation: "c-1".into(),
                team: DEFAULT_TEAM.into(),
                previous_team: None,
                channel: "sms".into(),
                from: Some("ann@example.com".into()),
                preview: "hello".into(),
            }
        );
    }

    #[test]
    fn unmatched_follow_ups_keep_the_team() {
        let mut ctx = ctx();
        standard_rules(&mut ctx);
        handle(
            &message("m1", "c-1", "chat", "where is my invoice"),
            &mut ctx,
        )
        .unwrap();
        handle(&message("m2", "c-1", "chat", "thanks!"), &mut ctx).unwrap();
        assert_eq!(assignment(&ctx, "c-1").team, "billing");
        let n = last_notification(&ctx);
        assert_eq!(
            (n.team.as_str(), n.previous_team.as_deref()),
            ("billing", Some("billing"))
        );
        // A later message matching another rule moves the conversation.
        handle(
            &message("m3", "c-1", "chat", "and the delivery is late"),
            &mut ctx,
        )
        .unwrap();
        assert_eq!(assignment(&ctx, "c-1").team, "logistics");
        assert_eq!(
            last_notification(&ctx).previous_team.as_deref(),
            Some("billing")
        );
    }

    #[test]
    fn redelivery_rewrites_nothing_and_emits_the_same_notification() {
        let mut ctx = ctx();
        standard_rules(&mut ctx);
        handle(&message("m1", "c-1", "chat", "invoice"), &mut ctx).unwrap();
        let writes = ctx.writes();
        let first = ctx.take_emitted();
        handle(
            &message("m1", "c-1", "chat", "invoice").with_receive_count(2),
            &mut ctx,
        )
        .unwrap();
        assert_eq!(ctx.writes(), writes);
        let second = ctx.take_emitted();
        assert_eq!(first[0].function, NOTIFY);
        let a: Notification = first[0].json().unwrap();
        let b: Notification = second[0].json().unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn redelivery_after_a_rules_change_repeats_the_original_assignment() {
        let mut ctx = ctx();
        standard_rules(&mut ctx);
        handle(&message("m1", "c-1", "chat", "invoice"), &mut ctx).unwrap();
        set_rules(
            &mut ctx,
            json!([{"team": "finance", "keywords": ["invoice"]}]),
        )
        .unwrap();
        handle(
            &message("m1", "c-1", "chat", "invoice").with_receive_count(2),
            &mut ctx,
        )
        .unwrap();
        assert_eq!(assignment(&ctx, "c-1").team, "billing");
        let notes: Vec<Notification> = ctx.emitted().iter().map(|e| e.json().unwrap()).collect();
        assert_eq!(notes[0], notes[1]);
        // The next message is routed by the new rules.
        handle(&message("m2", "c-1", "chat", "invoice again"), &mut ctx).unwrap();
        assert_eq!(assignment(&ctx, "c-1").team, "finance");
    }

    #[test]
    fn attachment_metadata_from_inbound_is_accepted() {
        let mut ctx = ctx();
        let body = json!({"org": "acme", "conversation": "c-8", "channel": "email",
            "text": "scan attached", "attachments": [{"name": "scan.pdf",
            "content_type": "application/pdf", "bytes": 5242880, "checksum": "271652cceed06267"}]});
        handle(&Message::from_json("q-78", &body), &mut ctx).unwrap();
        assert_eq!(assignment(&ctx, "c-8").message_id, "q-78");
    }

    #[test]
    fn a_message_without_id_is_identified_by_its_delivery() {
        let mut ctx = ctx();
        let body = json!({"org": "acme", "conversation": "c-9", "channel": "chat", "text": "hi"});
        handle(&Message::from_json("q-77", &body), &mut ctx).unwrap();
        assert_eq!(assignment(&ctx, "c-9").message_id, "q-77");
        let n = last_notification(&ctx);
        assert_eq!((n.id.as_str(), n.from), ("q-77", None));
    }

    #[test]
    fn bad_rules_name_the_field_and_keep_the_old_rules() {
        let mut ctx = ctx();
        standard_rules(&mut ctx);
        let cases = [
            (
                json!([{"keywords": ["x"]}]),
                r#"field "rules[0].team": expected a non-empty string, got nothing (missing)"#,
            ),
            (
                json!([{"team": "Billing Team", "keywords": ["x"]}]),
                r#"field "rules[0].team": expected 1 to 64 characters of a-z, 0-9, '-', '_', got "billing team""#,
            ),
            (
                json!([{"team": "a", "keywords": []}]),
                r#"field "rules[0].keywords": expected 1 to 50 keywords, got 0 keywords"#,
            ),
            (
                json!([{"team": "a", "keywords": ["ok"]}, {"team": "b", "keywords": ["ok", "!!!"]}]),
                r#"field "rules[1].keywords[1]": expected a word or phrase of letters and digits, at most 64 characters, got "!!!""#,
            ),
            (
                json!([{"team": "a", "keywords": [7]}]),
                r#"field "rules[0].keywords[0]": expected a word or phrase of letters and digits, at most 64 characters, got 7"#,
            ),
            (
                json!([{"team": "a", "keywords": ["x"], "channel": "fax"}]),
                r#"field "rules[0].channel": expected one of chat, email, sms, whatsapp, got "fax""#,
            ),
            (
                json!([{"team": "a", "keywords": ["x"], "priority": 1}]),
                r#"field "rules[0].priority": unknown, expected only team, keywords, channel"#,
            ),
            (
                json!(["billing"]),
                r#"field "rules[0]": expected an object, got "billing""#,
            ),
            (
                json!({"team": "a"}),
                r#"field "rules": expected an array, got an object"#,
            ),
        ];
        for (rules, expected) in cases {
            let e = set_rules(&mut ctx, rules).unwrap_err();
            assert!(!e.is_retryable());
            assert_eq!(e.message(), expected);
        }
        let too_many: Vec<Value> = (0..=MAX_RULES)
            .map(|_| json!({"team": "a", "keywords": ["x"]}))
            .collect();
        assert_eq!(
            set_rules(&mut ctx, Value::Array(too_many))
                .unwrap_err()
                .message(),
            r#"field "rules": expected at most 100 rules, got 101"#
        );
        let stored: RuleSet = ctx.read_json("rules/acme").unwrap().unwrap();
        assert_eq!(stored.rules.len(), 3);
    }

    #[test]
    fn bad_messages_are_permanent_errors() {
        let mut ctx = ctx();
        let e = handle(
            &Message::from_json("q", &json!({"kind": "reroute"})),
            &mut ctx,
        )
        .unwrap_err();
        assert_eq!(
            e.message(),
            r#"field "kind": expected one of message, set-rules, got "reroute""#
        );
        let e = handle(
            &Message::from_json("q", &json!({"id": "m", "org": "acme", "conversation": "a/b", "channel": "chat", "text": "x"})),
            &mut ctx,
        )
        .unwrap_err();
        assert!(
            e.message()
                .starts_with(r#"field "conversation": expected 1 to 128 characters without '/'"#),
            "{e}"
        );
        let e = handle(
            &Message::from_json("q", &json!({"id": "m", "org": "acme", "conversation": "c", "channel": "fax", "text": "x"})),
            &mut ctx,
        )
        .unwrap_err();
        assert_eq!(
            e.message(),
            r#"field "channel": expected one of chat, email, sms, whatsapp, got "fax""#
        );
        assert_eq!(ctx.writes(), 0);
        assert!(ctx.emitted().is_empty());
    }

    #[test]
    fn empty_rules_reset_to_the_default_team() {
        let mut ctx = ctx();
        standard_rules(&mut ctx);
        set_rules(&mut ctx, json!([])).unwrap();
        handle(&message("m1", "c-1", "chat", "invoice"), &mut ctx).unwrap();
        assert_eq!(assignment(&ctx, "c-1").team, DEFAULT_TEAM);
    }
}
