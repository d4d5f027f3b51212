//! The AWS backends (SqsQueue, DynamoStore, S3Blobs, OffloadQueue, provisioning) against an AWS
//! emulator: moto started by `localstack/start.sh`, or whatever `LEVEE_TEST_AWS_ENDPOINT` names.
//! Skipped with a loud message when no emulator can be had, a failure in CI.

use std::time::Duration;

use bytes::Bytes;
use levee::provision::{Outcome, ResourceKind};
use levee::{
    Blobs, DynamoStore, Emitted, Error, OffloadQueue, OutgoingMessage, PutOptions, Queue,
    QueueSpec, ReceiveOptions, S3Blobs, SqsQueue, Store, provision,
};
use levee_tests::emulator::Emulator;
use levee_tests::with_emulator;

fn opts(max: usize) -> ReceiveOptions {
    ReceiveOptions {
        max_messages: max,
        visibility: Duration::from_secs(30),
        wait: Duration::from_secs(1),
    }
}

fn spec(name: &str, max_receive: u32) -> QueueSpec {
    QueueSpec {
        name: name.into(),
        max_receive,
    }
}

fn attrs(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Receives until `n` messages arrived (SQS may spread a batch over several receives).
async fn receive_n(q: &impl Queue, queue: &str, n: usize) -> Vec<levee::ReceivedMessage> {
    let mut got = Vec::new();
    for _ in 0..10 {
        if got.len() >= n {
            break;
        }
        got.extend(q.receive(queue, opts(10)).await.unwrap());
    }
    assert_eq!(got.len(), n, "expected {n} messages on `{queue}`");
    got
}

async fn payload_objects(blobs: &S3Blobs) -> i32 {
    let out = blobs
        .client()
        .list_objects_v2()
        .bucket(blobs.bucket())
        .prefix("payloads/")
        .send()
        .await
        .unwrap();
    out.key_count().unwrap_or(0)
}

async fn provisioned(
    emu: &Emulator,
    tag: &str,
    queues: &[QueueSpec],
) -> (aws_config::SdkConfig, levee::AwsSettings) {
    let sdk = emu.sdk_config().await;
    let settings = emu.settings(tag);
    provision(&sdk, &settings, queues).await.unwrap();
    (sdk, settings)
}

#[tokio::test]
async fn sqs_send_receive_complete_with_emitted_messages() {
    let emu = with_emulator!();
    let (sdk, s) = provisioned(&emu, "sqs-basic", &[spec("src", 5), spec("dst", 5)]).await;
    let q = SqsQueue::new(&sdk, &s.queue_prefix);
    let binary = vec![0u8, 159, 146, 150, 255, 1];
    let ids = q
        .send(
            "src",
            vec![
                OutgoingMessage {
                    id: None,
                    body: b"{\"n\":1}".to_vec(),
                    attributes: attrs(&[("kind", "json"), ("e", "")]),
                    ..Default::default()
                },
                OutgoingMessage::new(binary.clone()),
                OutgoingMessage::new(Vec::new()),
            ],
        )
        .await
        .unwrap();
    assert_eq!(ids.len(), 3);
    assert!(ids.iter().all(|id| !id.is_empty()));

    let got = receive_n(&q, "src", 3).await;
    let by_id = |id: &str| got.iter().find(|m| m.id == id).unwrap();
    let first = by_id(&ids[0]);
    assert_eq!(first.body, b"{\"n\":1}");
    assert_eq!(first.attributes, attrs(&[("e", ""), ("kind", "json")]));
    assert_eq!(first.receive_count, 1);
    assert!(
        first.sent_at_ms > 1_600_000_000_000,
        "sent time from SentTimestamp"
    );
    assert_eq!(by_id(&ids[1]).body, binary);
    assert!(by_id(&ids[2]).body.is_empty());

    let stats = q.stats("src").await.unwrap();
    assert_eq!((stats.visible, stats.in_flight), (0, 3));

    let emitted = vec![
        Emitted {
            queue: "dst".into(),
            message: OutgoingMessage::new("a"),
        },
        Emitted {
            queue: "dst".into(),
            message: OutgoingMessage::new("b"),
        },
    ];
    q.complete("src", &first.receipt, emitted).await.unwrap();
    let rest: Vec<String> = got
        .iter()
        .filter(|m| m.id != ids[0])
        .map(|m| m.receipt.clone())
        .collect();
    q.delete("src", &rest).await.unwrap();

    let stats = q.stats("src").await.unwrap();
    assert_eq!((stats.visible, stats.in_flight, stats.processed), (0, 0, 1));
    let mut bodies: Vec<Vec<u8>> = receive_n(&q, "dst", 2)
        .await
        .into_iter()
        .map(|m| m.body)
        .collect();
    bodies.sort();
    assert_eq!(bodies, vec![b"a".to_vec(), b"b".to_vec()]);
}

#[tokio::test]
async fn sqs_batches_of_ten_and_batch_delete() {
    let emu = with_emulator!();
    let (sdk, s) = provisioned(&emu, "sqs-batch", &[spec("q", 5)]).await;
    let q = SqsQueue::new(&sdk, &s.queue_prefix);
    let batch: Vec<_> = (0..10)
        .map(|i| OutgoingMessage::new(format!("m{i}")))
        .collect();
    assert_eq!(q.send("q", batch).await.unwrap().len(), 10);
    let too_many: Vec<_> = (0..11)
        .map(|i| OutgoingMessage::new(format!("m{i}")))
        .collect();
    let e = q.send("q", too_many).await.unwrap_err();
    assert!(matches!(e, Error::Invalid(_)), "{e}");

    let got = receive_n(&q, "q", 10).await;
    let receipts: Vec<String> = got.iter().map(|m| m.receipt.clone()).collect();
    q.delete("q", &receipts).await.unwrap();
    let stats = q.stats("q").await.unwrap();
    assert_eq!(
        (stats.visible, stats.in_flight, stats.processed),
        (0, 0, 0),
        "delete does not count as processed"
    );
}

/// Commits `m` of queue `q` having written and emitted nothing: its deletion.
async fn commit_nothing(
    q: &SqsQueue,
    m: &levee::ReceivedMessage,
) -> levee::Result<levee::store::CommitOutcome> {
    let done = levee::queue::Completion {
        id: Some(m.id.clone()),
        emitted: Vec::new(),
        kv: None,
    };
    q.commit("q", &m.receipt, done).await
}

/// Commits of the messages one receive leased share one `DeleteMessageBatch`; a message that
/// leaves another way (released) or never commits does not hold the others' deletes for long.
#[tokio::test]
async fn sqs_deletes_of_a_receive_go_in_one_batch() {
    let emu = with_emulator!();
    let (sdk, s) = provisioned(&emu, "sqs-delete-batch", &[spec("q", 5)]).await;
    let q = SqsQueue::new(&sdk, &s.queue_prefix);
    let commit = |m| commit_nothing(&q, m);
    let ten: Vec<_> = (0..10)
        .map(|i| OutgoingMessage::new(format!("m{i}")))
        .collect();
    q.send("q", ten).await.unwrap();
    let got = receive_n(&q, "q", 10).await;
    let before = q.batch_counts();
    for outcome in futures::future::join_all(got.iter().map(commit)).await {
        outcome.unwrap();
    }
    let after = q.batch_counts();
    assert_eq!(
        (
            after.delete_calls - before.delete_calls,
            after.deletes - before.deletes
        ),
        (1, 10),
        "ten commits of one receive, one DeleteMessageBatch"
    );

    // Three received: one released, two committed; then one received and never settled while
    // another commits. Every commit still completes (the hang guard is generous).
    let three: Vec<_> = (0..3)
        .map(|i| OutgoingMessage::new(format!("n{i}")))
        .collect();
    q.send("q", three).await.unwrap();
    let got = receive_n(&q, "q", 3).await;
    let guard = Duration::from_secs(20);
    let (released, committed) = tokio::time::timeout(guard, async {
        tokio::join!(
            q.release("q", &got[0].receipt, Duration::from_secs(60)),
            futures::future::join_all(got[1..].iter().map(commit))
        )
    })
    .await
    .expect("commits after a release complete");
    released.unwrap();
    committed.into_iter().for_each(|c| {
        c.unwrap();
    });
    q.send(
        "q",
        vec![OutgoingMessage::new("a"), OutgoingMessage::new("b")],
    )
    .await
    .unwrap();
    let got = receive_n(&q, "q", 2).await;
    tokio::time::timeout(guard, commit(&got[0]))
        .await
        .expect("a commit whose receive-mate never settles completes")
        .unwrap();
    let stats = q.stats("q").await.unwrap();
    assert_eq!(stats.processed, 13);
}

#[tokio::test]
async fn sqs_redrive_policy_moves_messages_after_max_receive_and_redrive_brings_them_back() {
    let emu = with_emulator!();
    let (sdk, s) = provisioned(&emu, "sqs-redrive", &[spec("q", 2)]).await;
    let q = SqsQueue::new(&sdk, &s.queue_prefix);
    q.send("q", vec![OutgoingMessage::new("poison")])
        .await
        .unwrap();
    for attempt in 1..=2 {
        let m = receive_n(&q, "q", 1).await.remove(0);
        assert_eq!(m.receive_count, attempt);
        q.retry_later("q", &m.receipt, Duration::ZERO, "boom")
            .await
            .unwrap();
    }
    // A third receive would exceed maxReceiveCount = 2: SQS moves the message to the DLQ instead.
    assert!(q.receive("q", opts(10)).await.unwrap().is_empty());
    let stats = q.stats("q").await.unwrap();
    assert_eq!((stats.dlq, stats.retried), (1, 2));

    let letters = q.dlq_list("q", 10).await.unwrap();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].body, b"poison");
    assert!(
        letters[0].reason.contains("max_receive"),
        "{}",
        letters[0].reason
    );
    assert_eq!(
        letters[0].receive_count, 2,
        "the receives on the source queue"
    );
    // Listing does not remove.
    assert_eq!(q.dlq_list("q", 10).await.unwrap().len(), 1);

    assert_eq!(q.dlq_redrive("q").await.unwrap(), 1);
    assert_eq!(q.stats("q").await.unwrap().dlq, 0);
    let m = receive_n(&q, "q", 1).await.remove(0);
    assert_eq!(
        (m.body.as_slice(), m.receive_count),
        (&b"poison"[..], 1),
        "fresh receive count after redrive"
    );
}

#[tokio::test]
async fn sqs_dead_letter_keeps_reason_attributes_and_count() {
    let emu = with_emulator!();
    let (sdk, s) = provisioned(&emu, "sqs-dead", &[spec("q", 5)]).await;
    let q = SqsQueue::new(&sdk, &s.queue_prefix);
    let out = OutgoingMessage {
        id: None,
        body: vec![1, 2, 255],
        attributes: attrs(&[("tenant", "acme")]),
        ..Default::default()
    };
    q.send("q", vec![out]).await.unwrap();
    let m = receive_n(&q, "q", 1).await.remove(0);
    q.dead_letter("q", &m, "permanent: bad input")
        .await
        .unwrap();

    let stats = q.stats("q").await.unwrap();
    assert_eq!(
        (stats.visible, stats.in_flight, stats.dlq, stats.failed),
        (0, 0, 1, 1)
    );
    let letters = q.dlq_list("q", 10).await.unwrap();
    assert_eq!(letters.len(), 1);
    let d = &letters[0];
    assert_eq!(
        (d.body.as_slice(), d.reason.as_str(), d.receive_count),
        (&[1u8, 2, 255][..], "permanent: bad input", 1)
    );
    assert_eq!(d.attributes, attrs(&[("tenant", "acme")]));
    assert!(d.dead_at_ms >= m.sent_at_ms);

    assert_eq!(q.dlq_redrive("q").await.unwrap(), 1);
    let back = receive_n(&q, "q", 1).await.remove(0);
    assert_eq!(
        back.attributes,
        attrs(&[("tenant", "acme")]),
        "dead-letter attributes are dropped on redrive"
    );
}

#[tokio::test]
async fn sqs_extend_lease_and_stale_receipts() {
    let emu = with_emulator!();
    let (sdk, s) = provisioned(&emu, "sqs-lease", &[spec("q", 5)]).await;
    let q = SqsQueue::new(&sdk, &s.queue_prefix);
    q.send("q", vec![OutgoingMessage::new("x")]).await.unwrap();
    let m = receive_n(&q, "q", 1).await.remove(0);
    q.extend_lease("q", &m.receipt, Duration::from_secs(60))
        .await
        .unwrap();
    assert!(
        q.receive("q", opts(1)).await.unwrap().is_empty(),
        "still leased"
    );
    q.delete("q", std::slice::from_ref(&m.receipt))
        .await
        .unwrap();
    let e = q
        .extend_lease("q", &m.receipt, Duration::from_secs(60))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::StaleReceipt), "{e}");
    let e = q
        .extend_lease("q", &m.receipt, Duration::from_secs(13 * 3600))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Invalid(_)), "{e}");
}

#[tokio::test]
async fn sqs_missing_queue_suggests_provision() {
    let emu = with_emulator!();
    let sdk = emu.sdk_config().await;
    let q = SqsQueue::new(&sdk, emu.settings("missing").queue_prefix);
    let e = q
        .send("nope", vec![OutgoingMessage::new("x")])
        .await
        .unwrap_err();
    assert!(matches!(e, Error::QueueNotFound(_)), "{e}");
    assert!(e.to_string().contains("levee provision"), "{e}");
    assert!(!e.is_retryable());
    let e = q
        .send("bad/name", vec![OutgoingMessage::new("x")])
        .await
        .unwrap_err();
    assert!(
        matches!(e, Error::Invalid(_)) && e.to_string().contains("bad/name"),
        "{e}"
    );
}

#[tokio::test]
async fn unreachable_endpoint_says_the_emulator_is_not_running() {
    // Port 1 on localhost refuses connections; one attempt keeps the test short.
    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url("http://127.0.0.1:1")
        .region(aws_config::Region::new("us-east-1"))
        .test_credentials()
        .retry_config(aws_config::retry::RetryConfig::standard().with_max_attempts(1))
        .load()
        .await;
    let q = SqsQueue::new(&sdk, "levee-");
    let e = q
        .send("inbound", vec![OutgoingMessage::new("x")])
        .await
        .unwrap_err();
    let text = e.to_string();
    assert!(
        e.is_retryable(),
        "a consumer loop must survive this: {text}"
    );
    assert!(
        text.contains("http://127.0.0.1:1") && text.contains("not running"),
        "{text}"
    );
    assert!(text.contains("localstack/start.sh"), "{text}");
    let store = DynamoStore::new(&sdk, "levee-kv");
    let text = store.get("ns", "k").await.unwrap_err().to_string();
    assert!(text.contains("not running"), "{text}");
}

#[tokio::test]
async fn missing_credentials_are_explained() {
    let emu = with_emulator!();
    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(&emu.endpoint)
        .region(aws_config::Region::new("us-east-1"))
        .no_credentials()
        .load()
        .await;
    let q = SqsQueue::new(&sdk, "levee-");
    let e = q
        .send("inbound", vec![OutgoingMessage::new("x")])
        .await
        .unwrap_err();
    let text = e.to_string();
    assert!(!e.is_retryable(), "{text}");
    assert!(
        text.contains("credentials") && text.contains("AWS_ACCESS_KEY_ID"),
        "{text}"
    );
}

#[tokio::test]
async fn dynamo_store_get_put_delete_conditional_ttl_and_scan() {
    let emu = with_emulator!();
    let (sdk, s) = provisioned(&emu, "dynamo", &[]).await;
    let store = DynamoStore::new(&sdk, &s.table);
    let v = |s: &str| Bytes::from(s.to_string());

    assert_eq!(store.get("a", "k").await.unwrap(), None);
    assert!(
        store
            .put("a", "k", v("1"), PutOptions::default())
            .await
            .unwrap()
    );
    assert_eq!(store.get("a", "k").await.unwrap(), Some(v("1")));
    assert_eq!(
        store.get("b", "k").await.unwrap(),
        None,
        "namespaces are separate"
    );

    let if_absent = PutOptions {
        if_absent: true,
        ttl: None,
    };
    assert!(
        !store.put("a", "k", v("2"), if_absent).await.unwrap(),
        "if_absent on an existing key"
    );
    assert_eq!(store.get("a", "k").await.unwrap(), Some(v("1")));
    assert!(store.put("a", "new", v("3"), if_absent).await.unwrap());

    store.delete("a", "k").await.unwrap();
    store.delete("a", "k").await.unwrap();
    assert_eq!(store.get("a", "k").await.unwrap(), None);

    // TTL: DynamoDB deletes lazily, the store hides expired items at once.
    let ttl = PutOptions {
        if_absent: false,
        ttl: Some(Duration::from_millis(300)),
    };
    store.put("a", "short", v("x"), ttl).await.unwrap();
    assert_eq!(store.get("a", "short").await.unwrap(), Some(v("x")));
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(store.get("a", "short").await.unwrap(), None);
    assert!(
        store.put("a", "short", v("y"), if_absent).await.unwrap(),
        "an expired key counts as absent"
    );

    for i in (0..25).rev() {
        store
            .put(
                "s",
                &format!("user:{i:02}"),
                v(&i.to_string()),
                PutOptions::default(),
            )
            .await
            .unwrap();
    }
    store
        .put("s", "other", v("o"), PutOptions::default())
        .await
        .unwrap();
    store.put("s", "user:99", v("gone"), ttl).await.unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let page = store.scan("s", "user:", None, 10).await.unwrap();
    let keys: Vec<&str> = page.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        keys,
        (0..10).map(|i| format!("user:{i:02}")).collect::<Vec<_>>()
    );
    assert_eq!(
        store.scan("s", "user:", None, 100).await.unwrap().len(),
        25,
        "expired items are not listed"
    );
    assert_eq!(store.scan("s", "", None, 100).await.unwrap().len(), 26);

    let e = store.get("a", "").await.unwrap_err();
    assert!(matches!(e, Error::Invalid(_)), "{e}");
}

#[tokio::test]
async fn dynamo_missing_table_suggests_provision() {
    let emu = with_emulator!();
    let sdk = emu.sdk_config().await;
    let store = DynamoStore::new(&sdk, emu.settings("nokv").table);
    let e = store.get("ns", "k").await.unwrap_err();
    let text = e.to_string();
    assert!(
        !e.is_retryable() && text.contains("does not exist") && text.contains("levee provision"),
        "{text}"
    );
}

#[tokio::test]
async fn s3_blobs_put_get_delete() {
    let emu = with_emulator!();
    let (sdk, s) = provisioned(&emu, "s3", &[]).await;
    let blobs = S3Blobs::new(&sdk, &s.bucket);
    assert_eq!(blobs.get("modules/x.cwasm").await.unwrap(), None);
    let data = Bytes::from(vec![7u8; 3 * 1024 * 1024]);
    blobs.put("modules/x.cwasm", data.clone()).await.unwrap();
    assert_eq!(blobs.get("modules/x.cwasm").await.unwrap(), Some(data));
    blobs.delete("modules/x.cwasm").await.unwrap();
    blobs.delete("modules/x.cwasm").await.unwrap();
    assert_eq!(blobs.get("modules/x.cwasm").await.unwrap(), None);

    let missing = S3Blobs::new(&sdk, emu.settings("nobucket").bucket);
    let text = missing
        .put("k", Bytes::from_static(b"x"))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        text.contains("does not exist") && text.contains("levee provision"),
        "{text}"
    );
}

#[tokio::test]
async fn offload_carries_a_5_mib_body_through_sqs_and_s3() {
    let emu = with_emulator!();
    let (sdk, s) = provisioned(&emu, "offload", &[spec("big", 5), spec("next", 5)]).await;
    let blobs = S3Blobs::new(&sdk, &s.bucket);
    let q = OffloadQueue::new(SqsQueue::new(&sdk, &s.queue_prefix), blobs.clone());
    let body: Vec<u8> = (0..5 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
    q.send(
        "big",
        vec![
            OutgoingMessage {
                id: None,
                body: body.clone(),
                attributes: attrs(&[("kind", "bulk")]),
                ..Default::default()
            },
            OutgoingMessage::new("small"),
        ],
    )
    .await
    .unwrap();
    assert_eq!(
        payload_objects(&blobs).await,
        1,
        "only the large body goes to S3"
    );

    let got = receive_n(&q, "big", 2).await;
    let large = got.iter().find(|m| m.body.len() > 10).unwrap();
    assert_eq!(large.body, body, "the handler sees the whole body");
    assert_eq!(
        large.attributes,
        attrs(&[("kind", "bulk")]),
        "the reference attribute is hidden"
    );
    let small = got.iter().find(|m| m.body == b"small").unwrap();

    // The handler emits another large message: offloaded too.
    let emitted = vec![Emitted {
        queue: "next".into(),
        message: OutgoingMessage::new(body.clone()),
    }];
    q.complete("big", &large.receipt, emitted).await.unwrap();
    q.complete("big", &small.receipt, vec![]).await.unwrap();
    assert_eq!(
        payload_objects(&blobs).await,
        1,
        "the completed message's blob is deleted, the emitted one's exists"
    );

    let next = receive_n(&q, "next", 1).await.remove(0);
    assert_eq!(next.body, body);
    q.complete("next", &next.receipt, vec![]).await.unwrap();
    assert_eq!(payload_objects(&blobs).await, 0);
}

#[tokio::test]
async fn offload_dead_letters_keep_their_payload_through_redrive() {
    let emu = with_emulator!();
    let (sdk, s) = provisioned(&emu, "offdlq", &[spec("q", 5)]).await;
    let blobs = S3Blobs::new(&sdk, &s.bucket);
    let q = OffloadQueue::new(SqsQueue::new(&sdk, &s.queue_prefix), blobs.clone())
        .with_threshold(4096)
        .unwrap();
    let body = vec![b'z'; 10_000];
    q.send("q", vec![OutgoingMessage::new(body.clone())])
        .await
        .unwrap();
    let m = receive_n(&q, "q", 1).await.remove(0);
    q.dead_letter("q", &m, "permanent").await.unwrap();
    assert_eq!(
        payload_objects(&blobs).await,
        1,
        "a dead letter keeps its payload"
    );
    let letters = q.dlq_list("q", 10).await.unwrap();
    assert_eq!(
        (
            letters.len(),
            letters[0].body.len(),
            letters[0].reason.as_str()
        ),
        (1, 10_000, "permanent")
    );

    assert_eq!(q.dlq_redrive("q").await.unwrap(), 1);
    let back = receive_n(&q, "q", 1).await.remove(0);
    assert_eq!(back.body, body, "redrive keeps the payload");
    q.delete("q", std::slice::from_ref(&back.receipt))
        .await
        .unwrap();
    assert_eq!(
        payload_objects(&blobs).await,
        0,
        "deleting the message deletes its payload"
    );

    let e = OffloadQueue::new(SqsQueue::new(&sdk, "x-"), blobs)
        .with_threshold(2 * 1024 * 1024)
        .unwrap_err();
    assert!(e.to_string().contains("1048576"), "{e}");
}

#[tokio::test]
async fn provisioning_is_idempotent_and_reports_what_it_found() {
    let emu = with_emulator!();
    let sdk = emu.sdk_config().await;
    let settings = emu.settings("prov");
    let queues = [spec("inbound", 5), spec("notify", 3)];
    let first = provision(&sdk, &settings, &queues).await.unwrap();
    assert_eq!(first.resources.len(), 6, "{first}");
    assert!(
        first
            .resources
            .iter()
            .all(|r| r.outcome == Outcome::Created),
        "{first}"
    );
    let inbound = format!("{}inbound", settings.queue_prefix);
    assert_eq!(first.get(&inbound).unwrap().kind, ResourceKind::Queue);
    assert!(
        first
            .get(&inbound)
            .unwrap()
            .detail
            .contains("after 5 receives")
    );

    let second = provision(&sdk, &settings, &queues).await.unwrap();
    assert!(
        second
            .resources
            .iter()
            .all(|r| r.outcome == Outcome::Exists),
        "{second}"
    );
    let text = second.to_string();
    assert!(
        text.contains(&inbound)
            && text.contains("exists")
            && text.contains("0 created, 6 already existed"),
        "{text}"
    );

    let bad = levee::AwsSettings {
        bucket: "Bad_Bucket".into(),
        ..settings
    };
    let e = provision(&sdk, &bad, &queues)
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("aws.bucket"), "{e}");
}

#[tokio::test]
async fn missing_region_is_explained() {
    // No network call is made: signing fails first, so this needs no emulator.
    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .empty_test_environment()
        .endpoint_url("http://127.0.0.1:1")
        .test_credentials()
        .load()
        .await;
    let e = SqsQueue::new(&sdk, "levee-")
        .send("inbound", vec![OutgoingMessage::new("x")])
        .await
        .unwrap_err();
    let text = e.to_string();
    assert!(
        !e.is_retryable() && text.contains("no AWS region") && text.contains("AWS_REGION"),
        "{text}"
    );
}
