//! `search-index`: a per-org inverted index of conversation text.
//!
//! For `{"id"?, "org", "conversation", "text"}` it adds the conversation to the posting list of
//! every term of the text: `term/{org}/{term}` holds the sorted, deduplicated conversation ids
//! (a JSON array). Adding an id already present writes nothing, so redelivery and reindexing
//! are idempotent. [`search`] answers queries from the same keys.

use levee_sdk::{Context, Error, Fields, Message};

/// Terms shorter than this (in characters) are not indexed.
pub const MIN_TERM_CHARS: usize = 3;
/// Terms longer than this are not indexed (hashes, URLs, base64 noise).
pub const MAX_TERM_CHARS: usize = 64;
/// Most distinct terms indexed per message, bounding the kv writes of one message.
pub const MAX_TERMS: usize = 100;
/// Most conversations per term. A term this common no longer narrows a search, and the cap keeps
/// the value well under the store's 350 KiB limit; further conversations are not added.
pub const MAX_POSTINGS: usize = 2000;
/// Longest org or conversation id accepted in a key.
pub const MAX_ID_CHARS: usize = 128;

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

/// The kv key of a term's posting list.
pub fn term_key(org: &str, term: &str) -> String {
    format!("term/{org}/{term}")
}

/// Indexes one message.
pub fn handle(msg: &Message, ctx: &mut dyn Context) -> Result<(), Error> {
    let body = msg.json_object()?;
    let f = Fields::new(&body);
    f.deny_unknown(&["id", "org", "conversation", "text"])?;
    let org = f.key_segment("org", MAX_ID_CHARS)?.to_lowercase();
    let conversation = f.key_segment("conversation", MAX_ID_CHARS)?;
    let text = f.str("text")?;
    if let Some(id) = f.get("id")
        && !id.is_string()
    {
        return Err(f.invalid("id", "a string", levee_sdk::describe(id)));
    }
    for term in tokenize(text) {
        let key = term_key(&org, &term);
        let mut postings: Vec<String> = ctx.get_json(&key)?.unwrap_or_default();
        if let Err(at) = postings.binary_search_by(|c| c.as_str().cmp(conversation))
            && postings.len() < MAX_POSTINGS
        {
            postings.insert(at, conversation.to_string());
            ctx.put_json(&key, &postings)?;
        }
    }
    Ok(())
}

levee_sdk::export!(handle);

/// The conversations of `org` containing every term of `query`, sorted. A query with no
/// indexable terms matches nothing.
pub fn search(ctx: &mut dyn Context, org: &str, query: &str) -> Result<Vec<String>, Error> {
    let org = org.to_lowercase();
    let mut result: Option<Vec<String>> = None;
    for term in tokenize(query) {
        let postings: Vec<String> = ctx.get_json(&term_key(&org, &term))?.unwrap_or_default();
        result = Some(match result {
            None => postings,
            Some(mut acc) => {
                acc.retain(|c| postings.binary_search(c).is_ok());
                acc
            }
        });
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
    use levee_sdk::MemoryContext;
    use serde_json::json;

    fn index(ctx: &mut MemoryContext, id: &str, conversation: &str, text: &str) {
        handle(&index_message(id, "acme", conversation, text), ctx).unwrap();
    }

    fn postings(ctx: &MemoryContext, term: &str) -> Vec<String> {
        ctx.read_json(&term_key("acme", term))
            .unwrap()
            .unwrap_or_default()
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
    fn postings_are_sorted_and_deduplicated() {
        let mut ctx = MemoryContext::new();
        index(&mut ctx, "m1", "c-7", "refund for order");
        index(&mut ctx, "m2", "c-3", "where is my order");
        index(&mut ctx, "m3", "c-5", "ORDER order order");
        assert_eq!(postings(&ctx, "order"), vec!["c-3", "c-5", "c-7"]);
        assert_eq!(postings(&ctx, "refund"), vec!["c-7"]);
        assert!(
            ctx.value("term/acme/for").is_none(),
            "stopwords are not indexed"
        );
    }

    #[test]
    fn reprocessing_is_idempotent() {
        let mut ctx = MemoryContext::new();
        index(&mut ctx, "m1", "c-1", "my parcel is damaged");
        let writes = ctx.writes();
        let before: Vec<(String, Vec<u8>)> = ctx
            .keys()
            .map(|k| (k.to_string(), ctx.value(k).unwrap().to_vec()))
            .collect();
        index(&mut ctx, "m1", "c-1", "my parcel is damaged");
        index(&mut ctx, "m9", "c-1", "damaged parcel");
        assert_eq!(ctx.writes(), writes, "nothing new to write");
        let after: Vec<(String, Vec<u8>)> = ctx
            .keys()
            .map(|k| (k.to_string(), ctx.value(k).unwrap().to_vec()))
            .collect();
        assert_eq!(before, after);
    }

    #[test]
    fn search_intersects_terms_within_an_org() {
        let mut ctx = MemoryContext::new();
        index(&mut ctx, "m1", "c-1", "refund for my broken phone");
        index(&mut ctx, "m2", "c-2", "phone screen broken");
        index(&mut ctx, "m3", "c-3", "refund please");
        handle(
            &index_message("m4", "globex", "g-1", "broken phone"),
            &mut ctx,
        )
        .unwrap();
        assert_eq!(
            search(&mut ctx, "acme", "broken phone").unwrap(),
            vec!["c-1", "c-2"]
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
    }

    #[test]
    fn a_full_posting_list_stops_growing() {
        let mut ctx = MemoryContext::new();
        let full: Vec<String> = (0..MAX_POSTINGS).map(|i| format!("c-{i:05}")).collect();
        (&mut ctx as &mut dyn Context)
            .put_json(&term_key("acme", "order"), &full)
            .unwrap();
        index(&mut ctx, "m1", "z-new", "order");
        assert_eq!(postings(&ctx, "order").len(), MAX_POSTINGS);
        assert!(!postings(&ctx, "order").contains(&"z-new".to_string()));
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
