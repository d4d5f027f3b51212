//! SIGKILL durability of the embedded backend: a child process (this test binary, re-executed)
//! sends and completes thousands of messages and prints each acknowledgement; it is killed with
//! SIGKILL at a random moment. Reopening the file must show no corruption, every acknowledged send
//! present exactly once (unless its completion was started: the kill may fall between a commit
//! and its acknowledgement), no acknowledged completion undone, and a processed total between the
//! completions acknowledged and the completions started.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use levee::{EmbeddedDb, OutgoingMessage, Queue, QueueSpec, ReceiveOptions};

/// Set in the child: the database file it writes to.
const CHILD_ENV: &str = "LEVEE_EMBEDDED_CRASH_CHILD_DB";
const TEST_NAME: &str = "acknowledged_work_survives_sigkill";
const QUEUE: &str = "crash";
const PRODUCERS: usize = 4;
const CONSUMERS: usize = 2;
/// Acknowledged sends to wait for before the kill is armed.
const MIN_SENDS: usize = 3000;

#[test]
fn acknowledged_work_survives_sigkill() {
    if let Some(path) = std::env::var_os(CHILD_ENV) {
        child(PathBuf::from(path));
    }
    for round in 0..2 {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("levee.db");
        let acks = run_and_kill(&path);
        assert!(
            acks.sent.len() >= MIN_SENDS,
            "round {round}: only {} sends acknowledged",
            acks.sent.len()
        );
        verify(&path, &acks);
    }
}

#[derive(Default)]
struct Acks {
    /// Message id to body of every acknowledged send.
    sent: HashMap<String, String>,
    /// Ids of every acknowledged completion.
    completed: HashSet<String>,
    /// Ids whose completion was started (acknowledged or not: the kill may land between the
    /// commit and the acknowledgement).
    completing: HashSet<String>,
}

fn run_and_kill(path: &Path) -> Acks {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([TEST_NAME, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, path)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("re-executing the test binary");
    let stdout = child.stdout.take().unwrap();
    let (lines_tx, lines) = mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        let mut stdout = BufReader::new(stdout);
        let mut line = Vec::new();
        loop {
            line.clear();
            match stdout.read_until(b'\n', &mut line) {
                // A line cut short by the kill has no newline: it was never acknowledged.
                Ok(n) if n > 0 && line.ends_with(b"\n") => {
                    let _ = lines_tx.send(String::from_utf8_lossy(&line[..n - 1]).into_owned());
                }
                _ => break,
            }
        }
    });

    let mut acks = Acks::default();
    let record = |line: String, acks: &mut Acks| {
        let mut parts = line.splitn(3, ' ');
        match (parts.next(), parts.next(), parts.next()) {
            (Some("S"), Some(id), Some(body)) => {
                let previous = acks.sent.insert(id.to_string(), body.to_string());
                assert!(previous.is_none(), "message id {id} was acknowledged twice");
            }
            (Some("C"), Some(id), None) => {
                acks.completed.insert(id.to_string());
            }
            (Some("R"), Some(id), None) => {
                acks.completing.insert(id.to_string());
            }
            _ => {} // the test harness's own output
        }
    };
    while acks.sent.len() < MIN_SENDS {
        match lines.recv_timeout(Duration::from_secs(60)) {
            Ok(line) => record(line, &mut acks),
            Err(e) => panic!(
                "the child stopped reporting after {} sends: {e}",
                acks.sent.len()
            ),
        }
    }
    // A random moment from here on, so the kill lands anywhere in a group commit.
    let jitter = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos()
        % 300;
    std::thread::sleep(Duration::from_millis(u64::from(jitter)));
    child.kill().expect("SIGKILL the child");
    let status = child.wait().unwrap();
    assert!(
        !status.success(),
        "the child must have been killed, not have exited: {status}"
    );
    reader.join().unwrap();
    for line in lines.try_iter() {
        record(line, &mut acks);
    }
    acks
}

fn verify(path: &Path, acks: &Acks) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let db = EmbeddedDb::open(path).expect("reopening the file after SIGKILL");
        db.integrity_check()
            .await
            .expect("the file must not be corrupt");
        let queue = db.queue();
        let mut found: HashMap<String, Vec<u8>> = HashMap::new();
        let opts = ReceiveOptions {
            max_messages: 10,
            visibility: Duration::from_secs(600),
            wait: Duration::from_secs(3),
        };
        loop {
            let batch = queue.receive(QUEUE, opts).await.unwrap();
            if batch.is_empty() {
                // Done once nothing is hidden except what this loop leased itself.
                let stats = queue.stats(QUEUE).await.unwrap();
                if stats.visible == 0 && stats.delayed == 0 && stats.in_flight == found.len() as u64
                {
                    break;
                }
                continue;
            }
            for m in batch {
                assert!(m.receive_count > 0);
                let twice = found.insert(m.id.clone(), m.body).is_some();
                assert!(!twice, "message {} is in the queue twice", m.id);
            }
        }

        for (id, body) in &acks.sent {
            if acks.completed.contains(id) {
                assert!(
                    !found.contains_key(id),
                    "completed message {id} came back after the crash"
                );
            } else if let Some(stored) = found.get(id) {
                assert_eq!(stored, body.as_bytes(), "message {id} has a corrupt body");
            } else {
                assert!(
                    acks.completing.contains(id),
                    "acknowledged message {id} was lost"
                );
            }
        }
        let stats = queue.stats(QUEUE).await.unwrap();
        assert!(
            stats.processed >= acks.completed.len() as u64,
            "processed total {} is below the {} acknowledged completions",
            stats.processed,
            acks.completed.len()
        );
        assert!(
            stats.processed <= acks.completing.len() as u64,
            "processed total {} is above the {} completions started",
            stats.processed,
            acks.completing.len()
        );
    });
}

/// The child: producers and consumers hammering one queue until the parent kills the process.
fn child(path: PathBuf) -> ! {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let db = EmbeddedDb::open(&path).expect("child: open");
        let queue: Arc<dyn Queue> = Arc::new(db.queue());
        queue
            .ensure(&QueueSpec {
                name: QUEUE.into(),
                max_receive: 1000,
            })
            .await
            .unwrap();
        let mut tasks = Vec::new();
        for p in 0..PRODUCERS {
            let queue = queue.clone();
            tasks.push(tokio::spawn(async move {
                for n in 0u64.. {
                    let size = (n % 10 + 1) as usize;
                    let bodies: Vec<String> = (0..size).map(|i| format!("p{p}-{n}-{i}")).collect();
                    let batch = bodies
                        .iter()
                        .map(|b| OutgoingMessage::new(b.clone()))
                        .collect();
                    let ids = queue.send(QUEUE, batch).await.expect("child: send");
                    let mut out = std::io::stdout().lock();
                    for (id, body) in ids.iter().zip(&bodies) {
                        writeln!(out, "S {id} {body}").unwrap();
                    }
                }
            }));
        }
        for _ in 0..CONSUMERS {
            let queue = queue.clone();
            tasks.push(tokio::spawn(async move {
                let opts = ReceiveOptions {
                    max_messages: 10,
                    visibility: Duration::from_secs(1),
                    wait: Duration::from_secs(1),
                };
                loop {
                    for m in queue.receive(QUEUE, opts).await.expect("child: receive") {
                        writeln!(std::io::stdout().lock(), "R {}", m.id).unwrap();
                        // A lease that ran out under load is a stale receipt: skip it.
                        if queue.complete(QUEUE, &m.receipt, vec![]).await.is_ok() {
                            writeln!(std::io::stdout().lock(), "C {}", m.id).unwrap();
                        }
                    }
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    });
    unreachable!("the child runs until it is killed")
}
