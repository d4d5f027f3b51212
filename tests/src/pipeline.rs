//! The sample-pipeline scenarios, shared by the embedded and emulator end-to-end tests so both
//! backends are held to the same behaviour.

use std::time::Duration;

use base64::Engine;
use levee::platform::Platform;
use serde_json::{Value, json};

use crate::eventually;

/// Total `processed` of one function.
pub async fn processed(p: &Platform, name: &str) -> u64 {
    let s = p.status().await.expect("status");
    s.functions
        .iter()
        .find(|f| f.name == name)
        .map_or(0, |f| f.processed)
}

async fn kv_json(p: &Platform, function: &str, key: &str) -> Value {
    let v = p.kv_get(function, key).await.expect("kv get");
    let v = v.unwrap_or_else(|| panic!("{function} has no kv key {key}"));
    serde_json::from_slice(&v).expect("kv value is JSON")
}

/// Rules, one customer message through all four functions, the kv state it leaves, and a bad
/// message dead-lettered with a reason naming the field.
pub async fn message_flows_through_all_four(p: &Platform, settle: Duration) {
    let rules = json!({"kind": "set-rules", "org": "acme",
        "rules": [{"team": "shipping", "keywords": ["order", "delivery"]}]});
    p.send("routing", rules.to_string().into_bytes())
        .await
        .unwrap();
    assert!(eventually(settle, || async { processed(p, "routing").await == 1 }).await);

    let msg = json!({"org": "Acme", "conversation": "c-42", "channel": "email",
        "from": "Ann@Example.com", "text": "  my order has   not arrived "});
    let id = p
        .send("inbound", msg.to_string().into_bytes())
        .await
        .unwrap();
    let done = eventually(settle, || async {
        processed(p, "notify").await == 1 && processed(p, "search-index").await == 1
    })
    .await;
    assert!(done, "pipeline settles: {:?}", p.status().await.unwrap());

    let conv = kv_json(p, "inbound", "conv/acme/c-42").await.to_string();
    assert!(conv.contains("ann@example.com"), "from normalised: {conv}");
    assert!(
        conv.contains("my order has not arrived"),
        "text normalised: {conv}"
    );

    let assign = kv_json(p, "routing", "assign/acme/c-42").await;
    assert_eq!(assign["team"], "shipping", "{assign}");

    let posting = p
        .kv_get("search-index", "term/acme/order/c-42")
        .await
        .unwrap();
    assert!(posting.is_some(), "c-42 indexed under \"order\"");

    let notes = p
        .store()
        .scan("notify", "notif/acme/c-42/", None, 10)
        .await
        .unwrap();
    assert_eq!(notes.len(), 1, "one notification recorded: {notes:?}");
    let note: Value = serde_json::from_slice(&notes[0].1).unwrap();
    assert!(note.to_string().contains("shipping"), "{note}");
    assert!(
        notes[0].0.ends_with(&id),
        "keyed by the inbound id {id}: {notes:?}"
    );

    let bad =
        json!({"org": "acme", "conversation": "c-43", "channel": "fax", "from": "x", "text": "hi"});
    let bad_id = p
        .send("inbound", bad.to_string().into_bytes())
        .await
        .unwrap();
    assert!(
        eventually(settle, || async {
            !p.dlq_list("inbound", 10).await.unwrap().is_empty()
        })
        .await
    );
    let dead = p.dlq_list("inbound", 10).await.unwrap();
    assert_eq!(dead[0].id, bad_id);
    let reason = &dead[0].reason;
    assert!(
        reason.contains("channel") && reason.contains("fax"),
        "{reason}"
    );
    assert_eq!(
        processed(p, "routing").await,
        2,
        "the bad message emitted nothing"
    );
}

/// A customer email of about `mib` MiB (a base64 attachment) goes through the pipeline: the
/// handler sees the whole body, records the attachment's metadata, and the flow completes.
pub async fn large_event_flows(p: &Platform, mib: usize, settle: Duration) {
    let raw: Vec<u8> = (0..mib * 1024 * 1024 * 3 / 4)
        .map(|i| (i * 31 % 251) as u8)
        .collect();
    let data = base64::engine::general_purpose::STANDARD.encode(&raw);
    let msg = json!({"org": "acme", "conversation": "c-big", "channel": "email",
        "from": "big@example.com", "text": "scan attached",
        "attachments": [{"name": "scan.pdf", "content_type": "application/pdf", "data": data}]});
    let body = msg.to_string().into_bytes();
    assert!(
        body.len() >= mib * 1024 * 1024,
        "event is {} bytes",
        body.len()
    );
    let before = processed(p, "notify").await;
    p.send("inbound", body)
        .await
        .expect("a large event is accepted");
    let done = eventually(settle, || async {
        processed(p, "notify").await == before + 1
    })
    .await;
    assert!(done, "large event settles: {:?}", p.status().await.unwrap());
    let conv = kv_json(p, "inbound", "conv/acme/c-big").await.to_string();
    assert!(
        conv.contains("scan.pdf"),
        "attachment metadata recorded: {}",
        &conv[..conv.len().min(400)]
    );
    assert!(
        conv.contains(&raw.len().to_string()),
        "attachment size recorded"
    );
    assert!(
        conv.len() < 64 * 1024,
        "the data itself is not stored in kv"
    );
    assert!(
        p.dlq_list("inbound", 10)
            .await
            .unwrap()
            .iter()
            .all(|d| !d.reason.contains("c-big"))
    );
}
