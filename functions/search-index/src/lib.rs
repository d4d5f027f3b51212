//! `search-index`: a per-org inverted index of conversation text.
//!
//! For `{"id"?, "org", "conversation", "text"}` it writes one posting per term of the text:
//! `term/{org}/{term}/{conversation}` = `1`. The key is the fact; the value is a placeholder.
//! Every posting is written with a plain `put`, without reading it first, so:
//! - messages of different conversations never touch the same key, and even messages of one
//!   conversation only write the same bytes; an invocation reads no key, so no invocation ever
//!   conflicts with another at commit (the platform's optimistic concurrency check is on the
//!   keys a handler *reads*);
//! - redelivery and reindexing are idempotent: they rewrite identical values;
//! - a term has no posting limit and no value grows: the posting list of `order` is the set of
//!   keys under `term/{org}/order/`, however many conversations mention it.
//!
//! `org` and `conversation` are key segments (no '/', no control characters), and terms are
//! runs of letters and digits, so the separators cannot be forged: `term/acme/order/` never
//! lists a posting of `orders` or of another org. [`search`] answers queries by scanning those
//! prefixes (at most [`MAX_POSTINGS`] per term) and intersecting them.

use levee_sdk::{Context, Error, Fields, Message};

/// Terms shorter than this (in characters) are not indexed.
pub const MIN_TERM_CHARS: usize = 3;
/// Terms longer than this are not indexed (hashes, URLs, base64 noise).
pub const MAX_TERM_CHARS: usize = 64;
/// Most distinct terms indexed per message, bounding the kv writes of one message: one key per
/// term, so 99 keeps an invocation within the AWS backend's transaction limit of 99 keys.
pub const MAX_TERMS: usize = 99;
const _: () = assert!(MAX_TERMS <= 99, "one message must fit an AWS transaction");
/// Most postings [`search`] reads per term (ten scan pages). A term this common no longer
/// narrows a search; the conversations past the bound (in key order) are not found through it.
pub const MAX_POSTINGS: usize = 10_000;
/// Longest org or conversation id accepted in a key, in characters.
pub const MAX_ID_CHARS: usize = 128;
/// Longest org or conversation id in bytes (UTF-8, after lowercasing the org), so that
/// `term/{org}/{term}/{conversation}` always fits the store's 1024-byte key limit.
pub const MAX_ID_BYTES: usize = 256;
/// The value of every posting.
pub const POSTING: &[u8] = b"1";

/// Words too common to be worth an index entry (only those of [`MIN_TERM_CHARS`] or more).
pub const STOPWORDS: [&str; 40] = [
    "about", "all", "also", "and", "any", "are", "been", "but", "can", "did", "does", "for",
    "from", "had", "has", "have", "her", "his", "how", "into", "its", "just", "not", "our", "she",
    "than", "that", "the", "their", "them", "then", "there", "they", "this", "was", "were", "what",
    "will", "with", "you",
];

/// The index terms of `text`: lowercase runs of letters and digits, without short words,
/// over-long words and stopwords, each once, in order of first appearance, at most [`MAX_TERMS`].
pub fn tokenize(text: &str) -> Vec<String> {
    let mut terms: Vec<String> = Vec::new();
    for word in text.split(|c: char| !c.is_alphanumeric()) {
        let chars = word.chars().count();
        if !(MIN_TERM_CHARS..=MAX_TERM_CHARS).contains(&chars) {
            continue;
        }
        let term = word.to_lowercase();
        if STOPWORDS.contains(&term.as_str()) || terms.contains(&term) {
            continue;
        }
        terms.push(term);
        if terms.len() == MAX_TERMS {
            break;
        }
    }
    terms
}

/// The key prefix of a term's postings, `term/{org}/{term}/`: scanning it lists the
/// conversations containing the term.
pub fn term_prefix(org: &str, term: &str) -> String {
    format!("term/{org}/{term}/")
}

/// The kv key of one posting: `conversation` contains `term`.
pub fn posting_key(org: &str, term: &str, conversation: &str) -> String {
    format!("term/{org}/{term}/{conversation}")
}

fn check_bytes(f: &Fields<'_>, name: &str, value: &str) -> Result<(), Error> {
    if value.len() > MAX_ID_BYTES {
        return Err(f.invalid(
            name,
            &format!("at most {MAX_ID_BYTES} bytes of UTF-8"),
            format!("{} bytes", value.len()),
        ));
    }
    Ok(())
}

/// Indexes one message.
pub fn handle(msg: &Message, ctx: &mut dyn Context) -> Result<(), Error> {
    let body = msg.json_object()?;
    let f = Fields::new(&body);
    f.deny_unknown(&["id", "org", "conversation", "text"])?;
    let org = f.key_segment("org", MAX_ID_CHARS)?.to_lowercase();
    let conversation = f.key_segment("conversation", MAX_ID_CHARS)?;
    check_bytes(&f, "org", &org)?;
    check_bytes(&f, "conversation", conversation)?;
    let text = f.str("text")?;
    if let Some(id) = f.get("id")
        && !id.is_string()
    {
        return Err(f.invalid("id", "a string", levee_sdk::describe(id)));
    }
    for term in tokenize(text) {
        // A blind write: nothing is read, so nothing is version-checked at commit.
        ctx.put(&posting_key(&org, &term, conversation), POSTING)?;
    }
    Ok(())
}

levee_sdk::export!(handle);

/// The conversations of `org` containing every term of `query`, sorted. A query with no
/// indexable terms matches nothing. Each term's postings are scanned up to [`MAX_POSTINGS`]
/// (following scan cursors), so for a term with more conversations than that only the first
/// [`MAX_POSTINGS`] in key order can match. Scans are not version-checked: a conversation
/// indexed while the search runs may or may not be in the result.
pub fn search(ctx: &mut dyn Context, org: &str, query: &str) -> Result<Vec<String>, Error> {
    let org = org.to_lowercase();
    if org.is_empty() || org.chars().any(|c| c == '/' || c.is_control()) {
        return Err(Error::invalid_field(
            "org",
            "a name without '/' or control characters",
            levee_sdk::quote(&org),
        ));
    }
    let mut result: Option<Vec<String>> = None;
    for term in tokenize(query) {
        let prefix = term_prefix(&org, &term);
        let page = ctx.scan_all(&prefix, MAX_POSTINGS)?;
        // Scans return keys in order, so the conversations come sorted.
        let postings: Vec<String> = page
            .entries
            .into_iter()
            .filter_map(|(key, _)| key.strip_prefix(&prefix).map(str::to_string))
            .collect();
        let acc = match result {
            None => postings,
            Some(mut acc) => {
                acc.retain(|c| postings.binary_search(c).is_ok());
                acc
            }
        };
        if acc.is_empty() {
            return Ok(acc);
        }
        result = Some(acc);
    }
    Ok(result.unwrap_or_default())
}

/// Builds an index message, the shape `inbound` emits.
pub fn index_message(id: &str, org: &str, conversation: &str, text: &str) -> Message {
    let body =
        serde_json::json!({"id": id, "org": org, "conversation": conversation, "text": text});
    Message::from_json(id, &body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use levee_sdk::{MemoryContext, Page};
    use serde_json::json;

    fn index(ctx: &mut MemoryContext, id: &str, conversation: &str, text: &str) {
        ctx.invoke(handle, &index_message(id, "acme", conversation, text))
            .unwrap();
    }

    fn postings(ctx: &MemoryContext, term: &str) -> Vec<String> {
        let prefix = term_prefix("acme", term);
        ctx.keys()
            .filter_map(|k| k.strip_prefix(&prefix).map(str::to_string))
            .collect()
    }

    fn snapshot(ctx: &MemoryContext) -> Vec<(String, Vec<u8>)> {
        ctx.keys()
            .map(|k| (k.to_string(), ctx.value(k).unwrap().to_vec()))
            .collect()
    }

    #[test]
    fn tokenize_lowercases_splits_filters_and_dedupes() {
        assert_eq!(
            tokenize("My ORDER has not arrived; order #A-1234 (tracking: XY99Z) is late!"),
            vec!["order", "arrived", "1234", "tracking", "xy99z", "late"]
        );
        assert_eq!(
            tokenize("Crème brûlée, très délicieuse"),
            vec!["crème", "brûlée", "très", "délicieuse"]
        );
        assert!(tokenize("a an to of is it").is_empty());
        assert!(tokenize(&"x".repeat(MAX_TERM_CHARS + 1)).is_empty());
        let many: String = (0..150).map(|i| format!("word{i} ")).collect();
        assert_eq!(tokenize(&many).len(), MAX_TERMS);
    }

    #[test]
    fn one_posting_key_per_term_and_conversation() {
        let mut ctx = MemoryContext::new();
        index(&mut ctx, "m1", "c-7", "refund for order");
        index(&mut ctx, "m2", "c-3", "where is my order");
        index(&mut ctx, "m3", "c-5", "ORDER order order");
        assert_eq!(postings(&ctx, "order"), vec!["c-3", "c-5", "c-7"]);
        assert_eq!(postings(&ctx, "refund"), vec!["c-7"]);
        assert_eq!(ctx.value("term/acme/order/c-5"), Some(POSTING));
        assert_eq!(
            ctx.keys().collect::<Vec<_>>(),
            vec![
                "term/acme/order/c-3",
                "term/acme/order/c-5",
                "term/acme/order/c-7",
                "term/acme/refund/c-7",
                "term/acme/where/c-3",
            ],
            "stopwords and short words are not indexed"
        );
    }

    #[test]
    fn indexing_reads_nothing_so_it_cannot_conflict() {
        struct WriteOnly(MemoryContext);
        impl Context for WriteOnly {
            fn get(&mut self, key: &str) -> Result<Option<Vec<u8>>, Error> {
                panic!("indexing read {key}")
            }
            fn put(&mut self, key: &str, value: &[u8]) -> Result<(), Error> {
                self.0.put(key, value)
            }
            fn put_if_absent(&mut self, key: &str, _: &[u8]) -> Result<bool, Error> {
                panic!("indexing read {key}")
            }
            fn delete(&mut self, key: &str) -> Result<(), Error> {
                self.0.delete(key)
            }
            fn scan(&mut self, p: &str, _: Option<&str>, _: u32) -> Result<Page, Error> {
                panic!("indexing scanned {p}")
            }
            fn send(&mut self, function: &str, body: &[u8]) -> Result<(), Error> {
                self.0.send(function, body)
            }
        }
        let mut ctx = WriteOnly(MemoryContext::new());
        handle(
            &index_message("m1", "acme", "c-1", "broken phone"),
            &mut ctx,
        )
        .unwrap();
        assert_eq!(ctx.0.writes(), 2);
    }

    #[test]
    fn a_word_shared_by_1500_conversations_has_1500_postings() {
        let mut ctx = MemoryContext::new();
        for i in 0..1500 {
            let text = if i % 3 == 0 {
                "parcel damaged"
            } else {
                "parcel"
            };
            index(&mut ctx, &format!("m{i}"), &format!("c-{i:04}"), text);
        }
        assert_eq!(postings(&ctx, "parcel").len(), 1500);
        let found = search(&mut ctx, "acme", "parcel").unwrap();
        assert_eq!(found.len(), 1500, "the search follows scan cursors");
        assert_eq!(
            (found[0].as_str(), found[1499].as_str()),
            ("c-0000", "c-1499")
        );
        let both = search(&mut ctx, "acme", "damaged parcel").unwrap();
        assert_eq!(both.len(), 500);
        assert!(both.iter().all(|c| c[2..].parse::<u32>().unwrap() % 3 == 0));
    }

    #[test]
    fn reprocessing_is_idempotent() {
        let mut ctx = MemoryContext::new();
        index(&mut ctx, "m1", "c-1", "my parcel is damaged");
        let before = snapshot(&ctx);
        index(&mut ctx, "m1", "c-1", "my parcel is damaged");
        index(&mut ctx, "m9", "c-1", "damaged parcel");
        assert_eq!(snapshot(&ctx), before, "the same postings, the same values");
    }

    #[test]
    fn one_message_stays_within_the_aws_transaction_limit() {
        let mut ctx = MemoryContext::new();
        let many: String = (0..500).map(|i| format!("word{i} ")).collect();
        index(&mut ctx, "m1", "c-1", &many);
        assert_eq!(ctx.writes(), MAX_TERMS as u64);
    }

    #[test]
    fn posting_keys_always_fit_the_key_limit() {
        // Widest case: ids at their byte bound, a term of 4-byte letters at its char bound.
        let org = "é".repeat(MAX_ID_BYTES / 2);
        let conversation = "ü".repeat(MAX_ID_BYTES / 2);
        let term = tokenize(&"\u{10400}".repeat(MAX_TERM_CHARS)).remove(0);
        assert_eq!(term.len(), 4 * MAX_TERM_CHARS);
        let key = posting_key(&org, &term, &conversation);
        assert!(key.len() <= levee_sdk::MAX_KEY_LEN, "{}", key.len());
        let mut ctx = MemoryContext::new();
        let body = json!({"org": "acme", "conversation": "€".repeat(MAX_ID_CHARS), "text": "x"});
        let e = handle(&Message::from_json("q", &body), &mut ctx).unwrap_err();
        assert!(!e.is_retryable());
        assert_eq!(
            e.message(),
            r#"field "conversation": expected at most 256 bytes of UTF-8, got 384 bytes"#
        );
    }

    #[test]
    fn search_intersects_terms_within_an_org() {
        let mut ctx = MemoryContext::new();
        index(&mut ctx, "m1", "c-1", "refund for my broken phone");
        index(&mut ctx, "m2", "c-2", "phone screen broken");
        index(&mut ctx, "m3", "c-3", "refund please");
        index(&mut ctx, "m4", "c-4", "my phones are broken");
        ctx.invoke(
            handle,
            &index_message("m5", "globex", "g-1", "broken phone"),
        )
        .unwrap();
        assert_eq!(
            search(&mut ctx, "acme", "broken phone").unwrap(),
            vec!["c-1", "c-2"]
        );
        assert_eq!(
            search(&mut ctx, "acme", "Phone BROKEN screen").unwrap(),
            vec!["c-2"]
        );
        assert_eq!(
            search(&mut ctx, "ACME", "Refund").unwrap(),
            vec!["c-1", "c-3"]
        );
        assert_eq!(
            search(&mut ctx, "acme", "refund screen").unwrap(),
            Vec::<String>::new()
        );
        assert_eq!(
            search(&mut ctx, "acme", "the").unwrap(),
            Vec::<String>::new()
        );
        assert_eq!(search(&mut ctx, "globex", "phone").unwrap(), vec!["g-1"]);
        assert_eq!(search(&mut ctx, "acme", "phones").unwrap(), vec!["c-4"]);
        assert!(search(&mut ctx, "ac/me", "phone").is_err());
    }

    #[test]
    fn search_reads_at_most_max_postings_per_term() {
        let mut ctx = MemoryContext::new();
        for i in 0..MAX_POSTINGS + 5 {
            ctx.put(&posting_key("acme", "order", &format!("c-{i:05}")), POSTING)
                .unwrap();
        }
        let found = search(&mut ctx, "acme", "order").unwrap();
        assert_eq!(found.len(), MAX_POSTINGS);
        assert_eq!(found.last().unwrap(), &format!("c-{:05}", MAX_POSTINGS - 1));
    }

    #[test]
    fn bad_input_is_a_permanent_error_naming_the_field() {
        let mut ctx = MemoryContext::new();
        let cases = [
            (
                json!({"org": "acme", "conversation": "c", "text": 5}),
                r#"field "text": expected a non-empty string, got 5"#,
            ),
            (
                json!({"org": "acme", "text": "x"}),
                r#"field "conversation": expected a non-empty string, got nothing (missing)"#,
            ),
            (
                json!({"org": "ac/me", "conversation": "c", "text": "x"}),
                r#"field "org": expected 1 to 128 characters without '/' or control characters, got "ac/me""#,
            ),
            (
                json!({"id": 3, "org": "acme", "conversation": "c", "text": "x"}),
                r#"field "id": expected a string, got 3"#,
            ),
            (
                json!({"org": "acme", "conversation": "c", "text": "x", "lang": "en"}),
                r#"field "lang": unknown, expected only id, org, conversation, text"#,
            ),
        ];
        for (body, expected) in cases {
            let e = handle(&Message::from_json("q", &body), &mut ctx).unwrap_err();
            assert!(!e.is_retryable());
            assert_eq!(e.message(), expected);
        }
        assert_eq!(ctx.writes(), 0);
    }
}
