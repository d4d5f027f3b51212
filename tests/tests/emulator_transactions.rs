//! Every invocation is a transaction on the AWS backends (SQS, DynamoDB, S3 of the emulator):
//! two hosts over one table lose no update on a hot key, and a message whose completion record
//! exists is not run again: its recorded emits are re-sent and it is deleted.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use levee::queue::ledger::{LedgerQueue, record_key};
use levee::queue::{Completion, Emitted};
use levee::store::{CommitOutcome, KvCommit, Store};
use levee::{DynamoStore, OutgoingMessage, Queue, QueueSpec, ReceiveOptions, S3Blobs, SqsQueue};
use levee_tests::emulator::{aws_fleet, emulator};
use levee_tests::{Fn, eventually};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hosts_over_one_table_lose_no_update() {
    const N: usize = 40;
    let dir = tempfile::tempdir().unwrap();
    let fns = [Fn::new(
        "tally",
        "tally",
        "concurrency = 2\nbackoff_ms = 50",
    )];
    let Some((hosts, sdk, settings)) = aws_fleet(dir.path(), "twohosts", &fns, 2).await else {
        return;
    };
    // Read the table itself: each host's cache may hold what the other host changed since.
    let table = DynamoStore::new(&sdk, &settings.table);
    for n in 0..N {
        let body = json!({"key": format!("m{n}")}).to_string().into_bytes();
        hosts[n % 2].send("tally", body).await.unwrap();
    }
    let total = || async {
        table
            .get("tally", "count/_total")
            .await
            .unwrap()
            .map(|v| serde_json::from_slice::<i64>(v.as_ref()).unwrap())
            .unwrap_or(0)
    };
    let done = eventually(Duration::from_secs(180), || async {
        total().await >= N as i64
    })
    .await;
    let stats: Vec<_> = {
        let mut v = Vec::new();
        for h in &hosts {
            v.push(h.status().await.unwrap().functions.remove(0));
        }
        v
    };
    assert!(done, "all counted: {} of {N}; {stats:?}", total().await);
    // Let any straggler (a duplicate delivery) settle, then check nothing was applied twice.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(total().await, N as i64, "{stats:?}");
    for n in [0, N / 2, N - 1] {
        let v = hosts[1]
            .kv_get("tally", &format!("count/m{n}"))
            .await
            .unwrap();
        assert_eq!(v.as_deref(), Some(&b"1"[..]), "m{n}");
    }
    let ran: u64 = stats.iter().map(|s| s.invocations).sum();
    let conflicts: u64 = stats.iter().map(|s| s.conflicts).sum();
    eprintln!("two hosts, {N} messages on one hot key: {ran} invocations, {conflicts} conflicts");
    for h in hosts {
        h.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_committed_message_is_replayed_not_rerun() {
    let Some(emu) = emulator() else { return };
    let sdk = emu.sdk_config().await;
    let s = emu.settings("replay");
    let specs = ["src", "next"].map(|n| QueueSpec {
        name: n.into(),
        max_receive: 5,
    });
    levee::provision(&sdk, &s, &specs).await.unwrap();
    let store: Arc<dyn Store> = Arc::new(DynamoStore::new(&sdk, &s.table));
    let ledger = LedgerQueue::new(
        SqsQueue::new(&sdk, &s.queue_prefix),
        store.clone(),
        Arc::new(S3Blobs::new(&sdk, &s.bucket)),
    );
    ledger
        .send("src", vec![OutgoingMessage::new("work")])
        .await
        .unwrap();
    let opts = ReceiveOptions {
        max_messages: 1,
        visibility: Duration::from_secs(1),
        wait: Duration::from_secs(2),
    };
    let first = ledger.receive("src", opts).await.unwrap().remove(0);
    let emit = Emitted {
        queue: "next".into(),
        message: OutgoingMessage {
            id: Some(levee::queue::emitted_id(&first.id, 0)),
            ..OutgoingMessage::new("effect")
        },
    };
    // A host commits kv and the record, then dies before sending the emit and deleting.
    let crashed = KvCommit {
        ns: "src".into(),
        reads: vec![("n".into(), 0)],
        writes: vec![("n".into(), Some(Bytes::from_static(b"1")))],
        adds: Vec::new(),
        record: None,
    };
    let c = Completion {
        id: Some(first.id.clone()),
        emitted: vec![emit],
        kv: Some(crashed),
    };
    // Commit through a ledger whose queue is gone, as a host that died after step one.
    let broken = LedgerQueue::new(
        SqsQueue::new(&sdk, "no-such-prefix-"),
        store.clone(),
        Arc::new(S3Blobs::new(&sdk, &s.bucket)),
    );
    assert!(broken.commit("src", &first.receipt, c).await.is_err());
    assert!(
        store
            .get(levee::store::RECORDS_NS, &record_key("src", &first.id))
            .await
            .unwrap()
            .is_some(),
        "the record was written"
    );
    // The message comes back after its lease: the ledger settles it without handing it out.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let again = ledger.receive("src", opts).await.unwrap();
    assert!(
        again.is_empty(),
        "a committed message is not run again: {again:?}"
    );
    let next = ledger
        .receive(
            "next",
            ReceiveOptions {
                max_messages: 10,
                ..opts
            },
        )
        .await
        .unwrap();
    assert_eq!(next.len(), 1, "its recorded emit was sent");
    assert_eq!(next[0].body, b"effect");
    assert_eq!(
        next[0].id,
        levee::queue::emitted_id(&first.id, 0),
        "with its stable id"
    );
    assert!(
        ledger.receive("src", opts).await.unwrap().is_empty(),
        "and the source deleted"
    );
    assert_eq!(
        store.get_versioned("src", "n").await.unwrap().version,
        1,
        "kv applied once"
    );
    // A second commit of the same message is a duplicate and changes nothing.
    let dup = KvCommit {
        ns: "src".into(),
        writes: vec![("n".into(), Some(Bytes::from_static(b"2")))],
        record: Some(levee::store::Record {
            key: record_key("src", &first.id),
            value: Bytes::from_static(b"{}"),
            ttl: Duration::from_secs(60),
        }),
        ..KvCommit::default()
    };
    assert_eq!(store.commit(&dup).await.unwrap(), CommitOutcome::Duplicate);
    assert_eq!(
        store.get("src", "n").await.unwrap().as_deref(),
        Some(&b"1"[..])
    );
}

#[tokio::test]
async fn a_transaction_past_dynamodbs_item_limit_is_refused_by_name() {
    let Some(emu) = emulator() else { return };
    let sdk = emu.sdk_config().await;
    let s = emu.settings("limit");
    levee::provision(&sdk, &s, &[]).await.unwrap();
    let store = DynamoStore::new(&sdk, &s.table);
    // 100 writes and the completion record: 101 items.
    let big = KvCommit {
        ns: "f".into(),
        writes: (0..100)
            .map(|i| (format!("k{i}"), Some(Bytes::from_static(b"v"))))
            .collect(),
        record: Some(levee::store::Record {
            key: "f/m".into(),
            value: Bytes::from_static(b"{}"),
            ttl: Duration::from_secs(60),
        }),
        ..KvCommit::default()
    };
    let err = store.commit(&big).await.unwrap_err();
    assert!(!err.is_retryable(), "{err}");
    assert!(err.to_string().contains("limit of 100 items"), "{err}");
    assert!(
        store.get("f", "k0").await.unwrap().is_none(),
        "nothing applied"
    );
}
