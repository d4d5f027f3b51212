//! Throughput of the embedded SQLite queue: `cargo bench -p levee --bench queue`.
//!
//! Prints messages per second for sends in batches of 10, for draining with receive (batches of
//! 10) + one `complete` per message, and for the full cycle with producers and several consumers
//! running at once, as a worker pool does. Bodies are 200 bytes.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use levee::{EmbeddedDb, OutgoingMessage, Queue, QueueSpec, ReceiveOptions};

const MESSAGES: u64 = 100_000;
const BODY: [u8; 200] = [b'x'; 200];

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        for senders in [1, 8] {
            bench_send(senders).await;
        }
        for consumers in [1, 8] {
            bench_drain(consumers).await;
        }
        for consumers in [4, 16, 64] {
            bench_cycle(consumers).await;
        }
    });
}

async fn fresh(name: &str) -> (tempfile::TempDir, Arc<dyn Queue>) {
    let dir = tempfile::tempdir().unwrap();
    let db = EmbeddedDb::open(dir.path().join("bench.db")).unwrap();
    let queue: Arc<dyn Queue> = Arc::new(db.queue());
    queue
        .ensure(&QueueSpec {
            name: name.into(),
            max_receive: 5,
        })
        .await
        .unwrap();
    (dir, queue)
}

async fn fill(queue: &Arc<dyn Queue>, name: &str, senders: u64, total: u64) {
    let tasks: Vec<_> = (0..senders)
        .map(|_| {
            let (queue, name) = (queue.clone(), name.to_string());
            tokio::spawn(async move {
                for _ in 0..total / senders / 10 {
                    let batch = (0..10).map(|_| OutgoingMessage::new(BODY)).collect();
                    queue.send(&name, batch).await.unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
}

async fn drain(queue: &Arc<dyn Queue>, name: &str, consumers: u64, total: u64) {
    let done = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..consumers)
        .map(|_| {
            let (queue, name, done) = (queue.clone(), name.to_string(), done.clone());
            tokio::spawn(async move {
                let opts = ReceiveOptions {
                    max_messages: 10,
                    visibility: Duration::from_secs(30),
                    wait: Duration::from_millis(200),
                };
                while done.load(Ordering::Relaxed) < total {
                    for m in queue.receive(&name, opts).await.unwrap() {
                        queue.complete(&name, &m.receipt, vec![]).await.unwrap();
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
}

fn report(what: &str, n: u64, started: Instant) {
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{what:<48} {n:>7} msgs in {secs:>6.2} s = {:>8.0} msgs/s",
        n as f64 / secs
    );
}

async fn bench_send(senders: u64) {
    let (_dir, queue) = fresh("send").await;
    let started = Instant::now();
    fill(&queue, "send", senders, MESSAGES).await;
    report(
        &format!("send, batches of 10, {senders} senders"),
        MESSAGES,
        started,
    );
}

async fn bench_drain(consumers: u64) {
    let (_dir, queue) = fresh("drain").await;
    fill(&queue, "drain", 8, MESSAGES).await;
    let started = Instant::now();
    drain(&queue, "drain", consumers, MESSAGES).await;
    report(
        &format!("receive 10 + complete each, {consumers} consumers"),
        MESSAGES,
        started,
    );
}

async fn bench_cycle(consumers: u64) {
    let (_dir, queue) = fresh("cycle").await;
    let started = Instant::now();
    let producer = {
        let queue = queue.clone();
        tokio::spawn(async move { fill(&queue, "cycle", 4, MESSAGES).await })
    };
    drain(&queue, "cycle", consumers, MESSAGES).await;
    producer.await.unwrap();
    report(
        &format!("full cycle, 4 senders, {consumers} consumers"),
        MESSAGES,
        started,
    );
    let stats = queue.stats("cycle").await.unwrap();
    assert_eq!(
        (stats.visible, stats.in_flight, stats.processed),
        (0, 0, MESSAGES)
    );
}
