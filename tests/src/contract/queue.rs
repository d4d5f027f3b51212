//! The [`Queue`] contract: SQS semantics every queue backend must show.
//!
//! Run it with [`queue_contract_tests!`](crate::queue_contract_tests).

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use levee::{
    DeadLetterSummary, Emitted, Error, MAX_DLQ_PAGE, OutgoingMessage, PREVIEW_BYTES, PastDeath,
    Queue, QueueSpec, ReceiveOptions, ReceivedMessage,
};

/// Expands to one `#[tokio::test]` per queue contract case. `$setup` is an async function
/// returning `(Arc<dyn Queue>, G)`; `G` is kept alive until the case ends.
#[macro_export]
macro_rules! queue_contract_tests {
    ($setup:path) => {
        $crate::queue_contract_tests!(@cases $setup;
            roundtrip_with_attributes,
            batch_of_ten_and_eleven_rejected,
            visibility_timeout_redelivers,
            stale_receipt_after_rereceive,
            stale_receipt_settles_nothing,
            release_makes_it_visible_again,
            retry_later_delays_redelivery,
            extend_lease_keeps_message_hidden,
            max_receive_moves_to_dlq,
            dead_letter_list_and_redrive,
            complete_sends_emitted_and_deletes,
            complete_to_missing_queue_keeps_source,
            long_poll_wakes_on_send,
            delay_hides_message,
            stats_counts,
            queue_not_found,
        );
    };
    (@cases $setup:path; $($case:ident),* $(,)?) => {
        $(
            #[::tokio::test]
            async fn $case() {
                let Some((queue, _keep)) = $setup().await else { return };
                let prefix = $crate::contract::unique_prefix(stringify!($case));
                $crate::contract::queue::$case(queue, &prefix).await;
            }
        )*
    };
}

/// Expands to one `#[tokio::test]` per dead-letter paging case (pages, previews, `dlq_get`,
/// history across redrives). Separate from [`queue_contract_tests!`] because one case sends a
/// 1 MiB body: on SQS that needs the offload wrapper, so the AWS suite runs these on
/// `OffloadQueue<SqsQueue, S3Blobs>`.
#[macro_export]
macro_rules! dlq_contract_tests {
    ($setup:path) => {
        $crate::queue_contract_tests!(@cases $setup;
            dlq_pages_cover_every_letter_once_in_order,
            dlq_previews_are_bounded_and_sizes_exact,
            dlq_get_returns_the_whole_letter,
            redrive_keeps_the_death_history,
        );
    };
}

const SECOND: Duration = Duration::from_secs(1);

async fn make(q: &dyn Queue, prefix: &str, suffix: &str, max_receive: u32) -> String {
    let name = format!("{prefix}-{suffix}");
    q.ensure(&QueueSpec {
        name: name.clone(),
        max_receive,
    })
    .await
    .unwrap_or_else(|e| panic!("ensure {name}: {e}"));
    name
}

fn opts(max_messages: usize, visibility_s: u64, wait_s: u64) -> ReceiveOptions {
    ReceiveOptions {
        max_messages,
        visibility: Duration::from_secs(visibility_s),
        wait: Duration::from_secs(wait_s),
    }
}

async fn recv(q: &dyn Queue, name: &str, o: ReceiveOptions) -> Vec<ReceivedMessage> {
    q.receive(name, o)
        .await
        .unwrap_or_else(|e| panic!("receive from {name}: {e}"))
}

/// Receives until `n` messages arrived or a few long polls came back empty (SQS may spread a
/// batch over several receives).
async fn recv_n(q: &dyn Queue, name: &str, n: usize, visibility_s: u64) -> Vec<ReceivedMessage> {
    let mut got = Vec::new();
    let mut empty_polls = 0;
    while got.len() < n && empty_polls < 3 {
        let batch = recv(q, name, opts((n - got.len()).min(10), visibility_s, 1)).await;
        if batch.is_empty() {
            empty_polls += 1;
        }
        got.extend(batch);
    }
    got
}

fn sorted(mut attrs: Vec<(String, String)>) -> Vec<(String, String)> {
    attrs.sort();
    attrs
}

fn attrs(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A sent message comes back once with its body and attributes, and is gone after delete.
pub async fn roundtrip_with_attributes(q: Arc<dyn Queue>, prefix: &str) {
    let name = make(&*q, prefix, "q", 5).await;
    let before = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let message = OutgoingMessage {
        id: None,
        body: b"hello, levee".to_vec(),
        attributes: attrs(&[("trace", "t-1"), ("kind", "greeting")]),
        delay: Duration::ZERO,
    };
    let ids = q.send(&name, vec![message]).await.unwrap();
    assert_eq!(ids.len(), 1);

    let got = recv_n(&*q, &name, 1, 30).await;
    assert_eq!(got.len(), 1, "the sent message must be received");
    let m = &got[0];
    assert_eq!(m.id, ids[0]);
    assert_eq!(m.body, b"hello, levee");
    assert_eq!(
        sorted(m.attributes.clone()),
        sorted(attrs(&[("kind", "greeting"), ("trace", "t-1")]))
    );
    assert_eq!(m.receive_count, 1);
    // Clocks may differ by a little between the test and an emulator; allow a minute.
    assert!(
        m.sent_at_ms + 60_000 >= before,
        "sent_at_ms {} is long before the send {before}",
        m.sent_at_ms
    );

    assert!(
        recv(&*q, &name, opts(10, 30, 0)).await.is_empty(),
        "a leased message must stay hidden"
    );
    q.delete(&name, std::slice::from_ref(&m.receipt))
        .await
        .unwrap();
    let stats = q.stats(&name).await.unwrap();
    assert_eq!(
        (stats.visible, stats.in_flight, stats.delayed),
        (0, 0, 0),
        "{stats:?}"
    );
}

/// Ten messages go in one send and come back; eleven are rejected as invalid, both ways.
pub async fn batch_of_ten_and_eleven_rejected(q: Arc<dyn Queue>, prefix: &str) {
    let name = make(&*q, prefix, "q", 5).await;
    let batch: Vec<_> = (0..10)
        .map(|i| OutgoingMessage::new(format!("m{i}")))
        .collect();
    let ids = q.send(&name, batch).await.unwrap();
    assert_eq!(ids.len(), 10);
    let mut unique = ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 10, "message ids must be distinct: {ids:?}");

    let eleven: Vec<_> = (0..11)
        .map(|i| OutgoingMessage::new(format!("x{i}")))
        .collect();
    let err = q.send(&name, eleven).await.unwrap_err();
    assert!(
        matches!(err, Error::Invalid(_)),
        "sending 11 must be invalid, got {err:?}"
    );
    let err = q.receive(&name, opts(11, 30, 0)).await.unwrap_err();
    assert!(
        matches!(err, Error::Invalid(_)),
        "receiving 11 must be invalid, got {err:?}"
    );

    let got = recv_n(&*q, &name, 10, 30).await;
    let mut bodies: Vec<String> = got
        .iter()
        .map(|m| String::from_utf8(m.body.clone()).unwrap())
        .collect();
    bodies.sort();
    let mut expected: Vec<String> = (0..10).map(|i| format!("m{i}")).collect();
    expected.sort();
    assert_eq!(
        bodies, expected,
        "exactly the ten sent messages, none of the rejected eleven"
    );

    let receipts: Vec<String> = got.iter().map(|m| m.receipt.clone()).collect();
    q.delete(&name, &receipts).await.unwrap();
    assert!(recv(&*q, &name, opts(10, 30, 0)).await.is_empty());
}

/// A message that is not deleted before its visibility timeout is delivered again, counted.
pub async fn visibility_timeout_redelivers(q: Arc<dyn Queue>, prefix: &str) {
    let name = make(&*q, prefix, "q", 5).await;
    let ids = q
        .send(&name, vec![OutgoingMessage::new("again")])
        .await
        .unwrap();
    let first = recv_n(&*q, &name, 1, 1).await;
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].receive_count, 1);
    assert!(
        recv(&*q, &name, opts(1, 30, 0)).await.is_empty(),
        "hidden while leased"
    );

    let second = recv(&*q, &name, opts(1, 30, 3)).await;
    assert_eq!(
        second.len(),
        1,
        "the message must reappear after its visibility timeout"
    );
    assert_eq!(second[0].id, ids[0]);
    assert_eq!(second[0].receive_count, 2);
    q.delete(&name, &[second[0].receipt.clone()]).await.unwrap();
}

/// Once a message is received again, the receipt of the earlier receive no longer works.
pub async fn stale_receipt_after_rereceive(q: Arc<dyn Queue>, prefix: &str) {
    let name = make(&*q, prefix, "q", 5).await;
    q.send(&name, vec![OutgoingMessage::new("lease")])
        .await
        .unwrap();
    let first = recv_n(&*q, &name, 1, 1).await.remove(0);
    let second = recv(&*q, &name, opts(1, 30, 3)).await;
    assert_eq!(
        second.len(),
        1,
        "the message must reappear after its visibility timeout"
    );
    let second = &second[0];
    assert_eq!(second.id, first.id);

    let err = q
        .extend_lease(&name, &first.receipt, 30 * SECOND)
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::StaleReceipt),
        "extend_lease with the old receipt: {err:?}"
    );
    let err = q
        .retry_later(&name, &first.receipt, SECOND, "late")
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::StaleReceipt),
        "retry_later with the old receipt: {err:?}"
    );

    // The current lease is unaffected.
    q.extend_lease(&name, &second.receipt, 30 * SECOND)
        .await
        .unwrap();
    q.complete(&name, &second.receipt, vec![]).await.unwrap();
    assert!(recv(&*q, &name, opts(1, 30, 0)).await.is_empty());
}

/// `retry_later` hides the message for the given delay, then it comes back counted.
pub async fn retry_later_delays_redelivery(q: Arc<dyn Queue>, prefix: &str) {
    let name = make(&*q, prefix, "q", 5).await;
    let ids = q
        .send(&name, vec![OutgoingMessage::new("flaky")])
        .await
        .unwrap();
    let m = recv_n(&*q, &name, 1, 30).await.remove(0);
    q.retry_later(&name, &m.receipt, SECOND, "downstream busy")
        .await
        .unwrap();
    assert!(
        recv(&*q, &name, opts(1, 30, 0)).await.is_empty(),
        "hidden during the retry delay"
    );

    let again = recv(&*q, &name, opts(1, 30, 3)).await;
    assert_eq!(
        again.len(),
        1,
        "the message must come back after the retry delay"
    );
    assert_eq!(again[0].id, ids[0]);
    assert_eq!(again[0].receive_count, 2);
    q.delete(&name, &[again[0].receipt.clone()]).await.unwrap();
}

/// Extending a lease keeps the message hidden past its original visibility timeout.
pub async fn extend_lease_keeps_message_hidden(q: Arc<dyn Queue>, prefix: &str) {
    let name = make(&*q, prefix, "q", 5).await;
    q.send(&name, vec![OutgoingMessage::new("slow")])
        .await
        .unwrap();
    let m = recv_n(&*q, &name, 1, 1).await.remove(0);
    q.extend_lease(&name, &m.receipt, 5 * SECOND).await.unwrap();
    // Without the extension the message would reappear one second after the receive.
    assert!(
        recv(&*q, &name, opts(1, 30, 2)).await.is_empty(),
        "an extended lease must keep the message hidden"
    );
    q.delete(&name, std::slice::from_ref(&m.receipt))
        .await
        .unwrap();
    assert!(recv(&*q, &name, opts(1, 30, 0)).await.is_empty());
}

/// A message received `max_receive` times goes to the dead-letter queue with a reason instead
/// of being delivered again.
pub async fn max_receive_moves_to_dlq(q: Arc<dyn Queue>, prefix: &str) {
    let name = make(&*q, prefix, "q", 2).await;
    let ids = q
        .send(&name, vec![OutgoingMessage::new("poison")])
        .await
        .unwrap();
    let first = recv_n(&*q, &name, 1, 1).await;
    assert_eq!(first[0].receive_count, 1);
    let second = recv(&*q, &name, opts(1, 1, 3)).await;
    assert_eq!(second.len(), 1, "the second delivery must happen");
    assert_eq!(second[0].receive_count, 2);

    let third = recv(&*q, &name, opts(1, 30, 3)).await;
    assert!(
        third.is_empty(),
        "a third delivery exceeds max_receive 2: {third:?}"
    );
    let dead = q.dlq_list(&name, 10).await.unwrap();
    assert_eq!(
        dead.len(),
        1,
        "the message must be in the dead-letter queue"
    );
    assert_eq!(dead[0].id, ids[0]);
    assert_eq!(dead[0].body, b"poison");
    assert!(
        dead[0].reason.contains("max_receive"),
        "reason must name max_receive: {}",
        dead[0].reason
    );
    assert_eq!(q.stats(&name).await.unwrap().dlq, 1);
}

/// `dead_letter` moves a message with its reason; `dlq_list` shows it; `dlq_redrive` returns it
/// to the queue with a fresh receive count.
pub async fn dead_letter_list_and_redrive(q: Arc<dyn Queue>, prefix: &str) {
    let name = make(&*q, prefix, "q", 5).await;
    q.send(
        &name,
        vec![OutgoingMessage {
            id: None,
            body: b"{\"org\": 7}".to_vec(),
            attributes: attrs(&[("source", "test")]),
            delay: Duration::ZERO,
        }],
    )
    .await
    .unwrap();
    let m = recv_n(&*q, &name, 1, 30).await.remove(0);
    q.dead_letter(&name, &m, "permanent: field `org` must be a string")
        .await
        .unwrap();
    assert!(
        recv(&*q, &name, opts(1, 30, 0)).await.is_empty(),
        "dead letters are not delivered"
    );

    let dead = q.dlq_list(&name, 10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].body, m.body);
    assert_eq!(dead[0].reason, "permanent: field `org` must be a string");
    let stats = q.stats(&name).await.unwrap();
    assert_eq!(
        (stats.visible, stats.in_flight, stats.dlq),
        (0, 0, 1),
        "{stats:?}"
    );

    assert_eq!(q.dlq_redrive(&name).await.unwrap(), 1);
    let back = recv_n(&*q, &name, 1, 30).await;
    assert_eq!(
        back.len(),
        1,
        "the redriven message must be delivered again"
    );
    assert_eq!(back[0].body, m.body);
    assert_eq!(
        back[0].receive_count, 1,
        "redrive starts a fresh receive count"
    );
    assert!(q.dlq_list(&name, 10).await.unwrap().is_empty());
    q.delete(&name, &[back[0].receipt.clone()]).await.unwrap();
}

/// `complete` sends every emitted message to its queue and deletes the source.
pub async fn complete_sends_emitted_and_deletes(q: Arc<dyn Queue>, prefix: &str) {
    let src = make(&*q, prefix, "src", 5).await;
    let a = make(&*q, prefix, "a", 5).await;
    let b = make(&*q, prefix, "b", 5).await;
    q.send(&src, vec![OutgoingMessage::new("source")])
        .await
        .unwrap();
    let m = recv_n(&*q, &src, 1, 30).await.remove(0);
    let emitted = vec![
        Emitted {
            queue: a.clone(),
            message: OutgoingMessage::new("to a"),
        },
        Emitted {
            queue: b.clone(),
            message: OutgoingMessage {
                id: None,
                body: b"to b".to_vec(),
                attributes: attrs(&[("from", "src")]),
                delay: Duration::ZERO,
            },
        },
    ];
    q.complete(&src, &m.receipt, emitted).await.unwrap();

    let got_a = recv_n(&*q, &a, 1, 30).await;
    assert_eq!(got_a.len(), 1);
    assert_eq!(got_a[0].body, b"to a");
    let got_b = recv_n(&*q, &b, 1, 30).await;
    assert_eq!(got_b.len(), 1);
    assert_eq!(got_b[0].body, b"to b");
    assert_eq!(got_b[0].attributes, attrs(&[("from", "src")]));
    let stats = q.stats(&src).await.unwrap();
    assert_eq!(
        (stats.visible, stats.in_flight, stats.delayed),
        (0, 0, 0),
        "source deleted: {stats:?}"
    );
}

/// A completion that emits to a queue that does not exist fails and keeps the source message.
pub async fn complete_to_missing_queue_keeps_source(q: Arc<dyn Queue>, prefix: &str) {
    let src = make(&*q, prefix, "src", 5).await;
    q.send(&src, vec![OutgoingMessage::new("source")])
        .await
        .unwrap();
    let m = recv_n(&*q, &src, 1, 30).await.remove(0);
    let missing = format!("{prefix}-missing");
    let err = q
        .complete(
            &src,
            &m.receipt,
            vec![Emitted {
                queue: missing.clone(),
                message: OutgoingMessage::new("x"),
            }],
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::QueueNotFound(n) if n.ends_with(missing.as_str())),
        "got {err:?}"
    );
    let stats = q.stats(&src).await.unwrap();
    assert_eq!(
        stats.in_flight, 1,
        "the source message must survive a failed completion: {stats:?}"
    );
    q.complete(&src, &m.receipt, vec![]).await.unwrap();
}

/// A long-polling receive started on an empty queue returns the message sent while it waits.
pub async fn long_poll_wakes_on_send(q: Arc<dyn Queue>, prefix: &str) {
    let name = make(&*q, prefix, "q", 5).await;
    let sender = {
        let (q, name) = (q.clone(), name.clone());
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            q.send(&name, vec![OutgoingMessage::new("awaited")])
                .await
                .unwrap()
        })
    };
    let got = recv(&*q, &name, opts(10, 30, 5)).await;
    let ids = sender.await.unwrap();
    assert_eq!(
        got.len(),
        1,
        "the long poll must return the message sent during it"
    );
    assert_eq!(got[0].id, ids[0]);
    q.delete(&name, &[got[0].receipt.clone()]).await.unwrap();
}

/// A delayed message is counted as delayed and only delivered once its delay is over.
pub async fn delay_hides_message(q: Arc<dyn Queue>, prefix: &str) {
    let name = make(&*q, prefix, "q", 5).await;
    let ids = q
        .send(
            &name,
            vec![OutgoingMessage {
                delay: SECOND,
                ..OutgoingMessage::new("later")
            }],
        )
        .await
        .unwrap();
    assert!(
        recv(&*q, &name, opts(1, 30, 0)).await.is_empty(),
        "hidden during its delay"
    );
    let stats = q.stats(&name).await.unwrap();
    assert_eq!((stats.visible, stats.delayed), (0, 1), "{stats:?}");

    let got = recv(&*q, &name, opts(1, 30, 3)).await;
    assert_eq!(got.len(), 1, "delivered once the delay is over");
    assert_eq!(got[0].id, ids[0]);
    q.delete(&name, &[got[0].receipt.clone()]).await.unwrap();
}

/// Stats count visible, in-flight, delayed and dead-lettered messages.
pub async fn stats_counts(q: Arc<dyn Queue>, prefix: &str) {
    let name = make(&*q, prefix, "q", 5).await;
    let empty = q.stats(&name).await.unwrap();
    assert_eq!(
        (empty.visible, empty.in_flight, empty.delayed, empty.dlq),
        (0, 0, 0, 0),
        "{empty:?}"
    );

    let batch: Vec<_> = (0..4)
        .map(|i| OutgoingMessage::new(format!("s{i}")))
        .collect();
    q.send(&name, batch).await.unwrap();
    q.send(
        &name,
        vec![OutgoingMessage {
            delay: 60 * SECOND,
            ..OutgoingMessage::new("delayed")
        }],
    )
    .await
    .unwrap();
    let leased = recv_n(&*q, &name, 2, 60).await;
    assert_eq!(leased.len(), 2);
    let stats = q.stats(&name).await.unwrap();
    assert_eq!(
        (stats.visible, stats.in_flight, stats.delayed, stats.dlq),
        (2, 2, 1, 0),
        "{stats:?}"
    );

    q.dead_letter(&name, &leased[0], "bad").await.unwrap();
    q.delete(&name, &[leased[1].receipt.clone()]).await.unwrap();
    let stats = q.stats(&name).await.unwrap();
    assert_eq!(
        (stats.visible, stats.in_flight, stats.delayed, stats.dlq),
        (2, 0, 1, 1),
        "{stats:?}"
    );
}

/// Using a queue that was never ensured fails with `QueueNotFound` naming it.
pub async fn queue_not_found(q: Arc<dyn Queue>, prefix: &str) {
    let name = format!("{prefix}-never");
    let is_not_found =
        |e: &Error| matches!(e, Error::QueueNotFound(n) if n.ends_with(name.as_str()));
    let err = q
        .send(&name, vec![OutgoingMessage::new("x")])
        .await
        .unwrap_err();
    assert!(is_not_found(&err), "send: {err:?}");
    let err = q.receive(&name, opts(1, 30, 0)).await.unwrap_err();
    assert!(is_not_found(&err), "receive: {err:?}");
    let err = q.stats(&name).await.unwrap_err();
    assert!(is_not_found(&err), "stats: {err:?}");
}

/// A holder whose lease was superseded can neither complete (no emits are sent), dead-letter nor
/// delete the message: the current holder still has it.
pub async fn stale_receipt_settles_nothing(q: Arc<dyn Queue>, prefix: &str) {
    let name = make(&*q, prefix, "q", 5).await;
    let next = make(&*q, prefix, "next", 5).await;
    q.send(&name, vec![OutgoingMessage::new("lease")])
        .await
        .unwrap();
    let first = recv_n(&*q, &name, 1, 1).await.remove(0);
    let second = recv(&*q, &name, opts(1, 30, 3)).await;
    assert_eq!(second.len(), 1, "redelivered after the visibility timeout");
    let second = second.into_iter().next().unwrap();

    let emitted = vec![Emitted {
        queue: next.clone(),
        message: OutgoingMessage::new("must not be sent"),
    }];
    let err = q
        .complete(&name, &first.receipt, emitted)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::StaleReceipt), "complete: {err:?}");
    let err = q
        .dead_letter(&name, &first, "stale holder")
        .await
        .unwrap_err();
    assert!(matches!(err, Error::StaleReceipt), "dead_letter: {err:?}");
    let err = q
        .delete(&name, std::slice::from_ref(&first.receipt))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::StaleReceipt), "delete: {err:?}");
    assert!(
        recv(&*q, &next, opts(1, 30, 0)).await.is_empty(),
        "a stale completion sent no emits"
    );
    assert_eq!(
        q.stats(&name).await.unwrap().dlq,
        0,
        "nothing dead-lettered"
    );

    // The current holder settles it.
    q.complete(&name, &second.receipt, vec![]).await.unwrap();
    assert!(recv(&*q, &name, opts(1, 30, 0)).await.is_empty());
}

/// `release` makes a leased message visible again after its delay (the embedded queue also takes
/// the receive back; its own unit tests check that the count does not rise).
pub async fn release_makes_it_visible_again(q: Arc<dyn Queue>, prefix: &str) {
    let name = make(&*q, prefix, "q", 10).await;
    q.send(&name, vec![OutgoingMessage::new("held back")])
        .await
        .unwrap();
    let first = recv_n(&*q, &name, 1, 30).await.remove(0);
    q.release(&name, &first.receipt, Duration::ZERO)
        .await
        .unwrap();
    let again = recv_n(&*q, &name, 1, 30).await.remove(0);
    assert_eq!(again.id, first.id);
    q.release(&name, &again.receipt, 2 * SECOND).await.unwrap();
    assert!(
        recv(&*q, &name, opts(1, 30, 0)).await.is_empty(),
        "hidden for the release delay"
    );
    let last = recv_n(&*q, &name, 1, 30).await.remove(0);
    assert_eq!(last.id, first.id);
    assert_eq!(q.stats(&name).await.unwrap().dlq, 0);
    q.complete(&name, &last.receipt, vec![]).await.unwrap();
}

/// Every summary of the dead-letter queue, paging with `limit`; checks each page's size and
/// that the last one ends the listing.
async fn all_pages(q: &dyn Queue, name: &str, limit: usize) -> Vec<DeadLetterSummary> {
    let mut out = Vec::new();
    let mut after: Option<String> = None;
    for _ in 0..100 {
        let page = q
            .dlq_page(name, after.as_deref(), limit)
            .await
            .unwrap_or_else(|e| panic!("dlq_page of {name} after {after:?}: {e}"));
        assert!(
            page.letters.len() <= limit,
            "a page holds at most limit: {page:?}"
        );
        out.extend(page.letters);
        match page.next {
            Some(next) => after = Some(next),
            None => return out,
        }
    }
    panic!("paging {name} did not end after 100 pages");
}

/// Sends one message, receives it and dead-letters it with `reason`; returns it as received.
async fn kill(
    q: &dyn Queue,
    name: &str,
    message: OutgoingMessage,
    reason: &str,
) -> ReceivedMessage {
    q.send(name, vec![message]).await.unwrap();
    let m = recv_n(q, name, 1, 30).await.remove(0);
    q.dead_letter(name, &m, reason).await.unwrap();
    m
}

/// Paging with small limits returns every dead letter exactly once, oldest first, and ends;
/// limits are clamped and a malformed cursor is refused.
pub async fn dlq_pages_cover_every_letter_once_in_order(q: Arc<dyn Queue>, prefix: &str) {
    let name = make(&*q, prefix, "q", 5).await;
    let mut died = Vec::new();
    for i in 0..7 {
        let m = kill(
            &*q,
            &name,
            OutgoingMessage::new(format!("m{i}")),
            &format!("r{i}"),
        )
        .await;
        died.push(m.id);
        // Distinct times of death, so "oldest first" has one answer on every backend.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for limit in [1, 3, 7, 50] {
        let letters = all_pages(&*q, &name, limit).await;
        let ids: Vec<&str> = letters.iter().map(|l| l.id.as_str()).collect();
        assert_eq!(
            ids, died,
            "limit {limit}: each letter once, in the order they died"
        );
        let reasons: Vec<&str> = letters.iter().map(|l| l.reason.as_str()).collect();
        assert_eq!(reasons, ["r0", "r1", "r2", "r3", "r4", "r5", "r6"]);
        assert!(
            letters
                .windows(2)
                .all(|w| w[0].dead_at_ms <= w[1].dead_at_ms)
        );
        assert!(
            letters
                .iter()
                .all(|l| l.receive_count == 1 && l.history.is_empty())
        );
    }
    let first = q.dlq_page(&name, None, 3).await.unwrap();
    assert_eq!(first.letters.len(), 3);
    assert!(first.next.is_some(), "more letters follow the first page");
    let clamped = q.dlq_page(&name, None, 0).await.unwrap();
    assert_eq!(clamped.letters.len(), 1, "a limit of 0 is clamped to 1");
    let huge = q.dlq_page(&name, None, 10_000).await.unwrap();
    assert!(huge.letters.len() <= MAX_DLQ_PAGE);
    assert_eq!((huge.letters.len(), huge.next), (7, None));
    let err = q
        .dlq_page(&name, Some("not a cursor"), 3)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Invalid(_)), "{err:?}");
    // The listing leaves the letters where they were.
    assert_eq!(q.stats(&name).await.unwrap().dlq, 7);
    let empty = make(&*q, prefix, "empty", 5).await;
    assert_eq!(
        q.dlq_page(&empty, None, 10).await.unwrap(),
        Default::default()
    );
}

/// A summary's preview is at most [`PREVIEW_BYTES`] of the body cut on a character boundary and
/// its size is the body's exact length, for a 1 MiB body (offloaded on AWS) and small ones.
pub async fn dlq_previews_are_bounded_and_sizes_exact(q: Arc<dyn Queue>, prefix: &str) {
    let name = make(&*q, prefix, "q", 5).await;
    // Multi-byte characters, so a cut at 256 bytes lands inside one (`€` is 3 bytes).
    let big: String = format!("xx{}", "ab€".repeat((1 << 20) / 5 + 1));
    assert!(big.len() > 1 << 20);
    kill(&*q, &name, OutgoingMessage::new(big.clone()), "big").await;
    kill(&*q, &name, OutgoingMessage::new("tiny"), "tiny").await;
    kill(
        &*q,
        &name,
        OutgoingMessage::new(vec![0xFF, 0xFE, b'o', b'k']),
        "binary",
    )
    .await;
    let letters = all_pages(&*q, &name, 2).await;
    assert_eq!(letters.len(), 3, "{letters:?}");
    let big_letter = &letters[0];
    assert_eq!(
        big_letter.size,
        big.len() as u64,
        "the real size, not the reference's"
    );
    assert!(big_letter.preview.len() <= PREVIEW_BYTES);
    assert!(
        big_letter.preview.len() > PREVIEW_BYTES - 4 && big.starts_with(&big_letter.preview),
        "the preview is the body's start, cut on a character boundary: {:?}",
        big_letter.preview
    );
    assert!(
        big_letter.attributes.is_empty(),
        "no reference attributes: {:?}",
        big_letter.attributes
    );
    assert_eq!((letters[1].size, letters[1].preview.as_str()), (4, "tiny"));
    assert_eq!(letters[2].size, 4);
    assert_eq!(letters[2].preview, "\u{FFFD}\u{FFFD}ok");
    let whole = q
        .dlq_get(&name, &big_letter.id)
        .await
        .unwrap()
        .expect("the big letter");
    assert!(
        whole.body == big.as_bytes(),
        "dlq_get returns the whole body"
    );
}

/// `dlq_get` returns one dead letter whole (body, attributes, reason), `None` for an unknown id.
pub async fn dlq_get_returns_the_whole_letter(q: Arc<dyn Queue>, prefix: &str) {
    let name = make(&*q, prefix, "q", 5).await;
    let message = OutgoingMessage {
        attributes: attrs(&[("source", "test")]),
        ..OutgoingMessage::new("{\"org\": 7}")
    };
    let m = kill(&*q, &name, message, "permanent: bad org").await;
    kill(&*q, &name, OutgoingMessage::new("other"), "other").await;
    let got = q
        .dlq_get(&name, &m.id)
        .await
        .unwrap()
        .expect("the dead letter");
    assert_eq!(got.id, m.id);
    assert_eq!(got.body, b"{\"org\": 7}");
    assert_eq!(got.attributes, attrs(&[("source", "test")]));
    assert_eq!(
        (got.reason.as_str(), got.receive_count),
        ("permanent: bad org", 1)
    );
    assert!(got.history.is_empty());
    assert_eq!(q.dlq_get(&name, "no-such-id").await.unwrap(), None);
    // Reading it left it in place.
    assert!(q.dlq_get(&name, &m.id).await.unwrap().is_some());
    assert_eq!(q.stats(&name).await.unwrap().dlq, 2);
}

/// A redriven message that dies again shows its earlier deaths (oldest first) besides the
/// current one, whether it is dead-lettered or exceeds `max_receive`; each life gets a fresh
/// receive budget, and handlers never see the history attribute.
pub async fn redrive_keeps_the_death_history(q: Arc<dyn Queue>, prefix: &str) {
    let name = make(&*q, prefix, "q", 2).await;
    let first = kill(&*q, &name, OutgoingMessage::new("again"), "first death").await;
    let page = q.dlq_page(&name, None, 10).await.unwrap();
    let first_death = PastDeath {
        receive_count: 1,
        reason: "first death".into(),
        dead_at_ms: page.letters[0].dead_at_ms,
    };
    assert!(page.letters[0].history.is_empty());

    assert_eq!(q.dlq_redrive(&name).await.unwrap(), 1);
    let second = recv_n(&*q, &name, 1, 30).await.remove(0);
    assert_eq!(second.id, first.id, "a redriven message keeps its id");
    assert_eq!(
        second.receive_count, 1,
        "a new life starts a fresh receive count"
    );
    assert!(
        second
            .attributes
            .iter()
            .all(|(k, _)| !k.starts_with("levee-")),
        "handlers see no reserved attributes: {:?}",
        second.attributes
    );
    q.dead_letter(&name, &second, "second death").await.unwrap();
    let page = q.dlq_page(&name, None, 10).await.unwrap();
    assert_eq!(page.letters.len(), 1, "{page:?}");
    let letter = &page.letters[0];
    assert_eq!(
        (letter.id.as_str(), letter.reason.as_str()),
        (first.id.as_str(), "second death")
    );
    assert_eq!(letter.history, vec![first_death.clone()]);
    let whole = q
        .dlq_get(&name, &first.id)
        .await
        .unwrap()
        .expect("the letter");
    assert_eq!(whole.history, vec![first_death.clone()]);
    assert_eq!(whole.body, b"again");
    let second_death = PastDeath {
        receive_count: 1,
        reason: "second death".into(),
        dead_at_ms: letter.dead_at_ms,
    };

    // Third life: it uses up max_receive 2 and is moved by the queue itself.
    assert_eq!(q.dlq_redrive(&name).await.unwrap(), 1);
    let a = recv_n(&*q, &name, 1, 1).await;
    assert_eq!(
        a[0].receive_count, 1,
        "the third life has a fresh budget too"
    );
    let b = recv(&*q, &name, opts(1, 1, 3)).await;
    assert_eq!(
        b.len(),
        1,
        "the second receive of the third life must happen"
    );
    assert_eq!(b[0].receive_count, 2);
    assert!(recv(&*q, &name, opts(1, 30, 3)).await.is_empty());
    let page = q.dlq_page(&name, None, 10).await.unwrap();
    assert_eq!(page.letters.len(), 1, "{page:?}");
    let letter = &page.letters[0];
    assert_eq!(letter.id, first.id);
    assert!(letter.reason.contains("max_receive"), "{}", letter.reason);
    assert_eq!(letter.history, vec![first_death, second_death]);
}
