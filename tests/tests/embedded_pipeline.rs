//! The sample pipeline end to end on the embedded backend: a customer message sent to `inbound`
//! flows through routing, search-index and notify and leaves the expected kv state.

use std::time::Duration;

use levee_tests::{eventually, pipeline_fns, start, write_manifest};
use serde_json::{Value, json};

async fn processed(p: &levee::platform::Platform, name: &str) -> u64 {
    let s = p.status().await.unwrap();
    s.functions
        .iter()
        .find(|f| f.name == name)
        .map(|f| f.processed)
        .unwrap_or(0)
}

async fn kv_json(p: &levee::platform::Platform, function: &str, key: &str) -> Value {
    let v = p.kv_get(function, key).await.unwrap();
    let v = v.unwrap_or_else(|| panic!("{function} has no kv key {key}"));
    serde_json::from_slice(&v).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_flows_through_all_four_functions() {
    let dir = tempfile::tempdir().unwrap();
    let p = start(&write_manifest(dir.path(), &pipeline_fns(2))).await;

    let rules = json!({"kind": "set-rules", "org": "acme",
        "rules": [{"team": "shipping", "keywords": ["order", "delivery"]}]});
    p.send("routing", rules.to_string().into_bytes())
        .await
        .unwrap();
    assert!(
        eventually(Duration::from_secs(20), || async {
            processed(&p, "routing").await == 1
        })
        .await
    );

    let msg = json!({"org": "Acme", "conversation": "c-42", "channel": "email",
        "from": "Ann@Example.com", "text": "  my order has   not arrived "});
    let id = p
        .send("inbound", msg.to_string().into_bytes())
        .await
        .unwrap();
    let done = eventually(Duration::from_secs(30), || async {
        processed(&p, "notify").await == 1 && processed(&p, "search-index").await == 1
    })
    .await;
    assert!(done, "pipeline settles: {:?}", p.status().await.unwrap());

    let conv = kv_json(&p, "inbound", "conv/acme/c-42").await;
    let conv_text = conv.to_string();
    assert!(
        conv_text.contains("ann@example.com"),
        "from normalised: {conv_text}"
    );
    assert!(
        conv_text.contains("my order has not arrived"),
        "text normalised: {conv_text}"
    );

    let assign = kv_json(&p, "routing", "assign/acme/c-42").await;
    assert_eq!(assign["team"], "shipping", "{assign}");

    let term = kv_json(&p, "search-index", "term/acme/order").await;
    assert!(term.to_string().contains("c-42"), "indexed: {term}");

    let notes = p
        .store()
        .scan("notify", "notif/acme/c-42/", 10)
        .await
        .unwrap();
    assert_eq!(notes.len(), 1, "one notification recorded: {notes:?}");
    let note: Value = serde_json::from_slice(&notes[0].1).unwrap();
    assert!(note.to_string().contains("shipping"), "{note}");
    assert!(
        notes[0].0.contains(&id) || note.to_string().contains(&id),
        "keyed by the inbound id {id}: {notes:?}"
    );

    // A bad message is a permanent error naming the field; it lands in the DLQ, nothing else moves.
    let bad =
        json!({"org": "acme", "conversation": "c-43", "channel": "fax", "from": "x", "text": "hi"});
    let bad_id = p
        .send("inbound", bad.to_string().into_bytes())
        .await
        .unwrap();
    assert!(
        eventually(Duration::from_secs(20), || async {
            !p.dlq_list("inbound", 10).await.unwrap().is_empty()
        })
        .await
    );
    let dead = p.dlq_list("inbound", 10).await.unwrap();
    assert_eq!(dead[0].id, bad_id);
    assert!(
        dead[0].reason.contains("channel") && dead[0].reason.contains("fax"),
        "{}",
        dead[0].reason
    );
    assert_eq!(
        processed(&p, "routing").await,
        2,
        "the bad message emitted nothing"
    );
    p.shutdown().await;
}
