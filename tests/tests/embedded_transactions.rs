//! Every invocation is a transaction, on the embedded backend: read-modify-write under eight
//! concurrent workers loses no update, the search index holds every conversation sent, and a
//! graceful stop with `max_receive = 1` dead-letters nothing.

use std::time::{Duration, Instant};

use hyper::Method;
use levee::client::call;
use levee::platform::Platform;
use levee_tests::pipeline::processed;
use levee_tests::{Fn, LeveeProcess, eventually, free_port, start, write_manifest};
use serde_json::json;

async fn count(p: &Platform, function: &str, key: &str) -> i64 {
    p.kv_get(function, key)
        .await
        .unwrap()
        .map(|v| serde_json::from_slice(&v).unwrap())
        .unwrap_or(0)
}

async fn status_of(p: &Platform, name: &str) -> levee::platform::FunctionStatus {
    p.status()
        .await
        .unwrap()
        .functions
        .into_iter()
        .find(|f| f.name == name)
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_workers_on_one_hot_key_lose_no_increment() {
    const N: usize = 600;
    let dir = tempfile::tempdir().unwrap();
    let manifest = write_manifest(
        dir.path(),
        &[Fn::new(
            "tally",
            "tally",
            "concurrency = 8\nbackoff_ms = 50",
        )],
    );
    let p = start(&manifest).await;
    for n in 0..N {
        let body = json!({"key": format!("m{n}")}).to_string().into_bytes();
        p.send("tally", body).await.unwrap();
    }
    let done = eventually(Duration::from_secs(120), || async {
        processed(&p, "tally").await == N as u64
    })
    .await;
    let status = status_of(&p, "tally").await;
    assert!(done, "all processed: {status:?}");
    // Every message incremented the one hot key: none of the increments was lost.
    assert_eq!(
        count(&p, "tally", "count/_total").await,
        N as i64,
        "{status:?}"
    );
    for n in [0, 1, N / 2, N - 1] {
        assert_eq!(count(&p, "tally", &format!("count/m{n}")).await, 1);
    }
    assert_eq!(status.dlq, 0, "{status:?}");
    assert_eq!(status.retried, 0, "conflicts use no attempt: {status:?}");
    eprintln!(
        "tally, 8 workers, {N} messages on one hot key: {} conflicts ({:.1}% of invocations)",
        status.conflicts,
        100.0 * status.conflicts as f64 / status.invocations.max(1) as f64
    );
    p.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_search_index_at_eight_workers_holds_every_conversation() {
    const N: usize = 1500;
    let dir = tempfile::tempdir().unwrap();
    let manifest = write_manifest(
        dir.path(),
        &[Fn::new(
            "search-index",
            "search-index",
            "concurrency = 8\nbackoff_ms = 50",
        )],
    );
    let p = start(&manifest).await;
    for n in 0..N {
        let body = json!({"org": "acme", "conversation": format!("c-{n}"),
            "text": "where is my order"})
        .to_string()
        .into_bytes();
        p.send("search-index", body).await.unwrap();
    }
    let done = eventually(Duration::from_secs(120), || async {
        processed(&p, "search-index").await == N as u64
    })
    .await;
    let status = status_of(&p, "search-index").await;
    assert!(done, "all processed: {status:?}");
    let mut postings = 0;
    let mut after: Option<String> = None;
    loop {
        let page = p
            .store()
            .scan("search-index", "term/acme/order/", after.as_deref(), 1000)
            .await
            .unwrap();
        postings += page.len();
        match page.last() {
            Some((k, _)) if page.len() == 1000 => after = Some(k.clone()),
            _ => break,
        }
    }
    assert_eq!(
        postings, N,
        "every conversation is in the posting list of \"order\""
    );
    eprintln!(
        "search-index, 8 workers, {N} conversations sharing a word: {} conflicts ({:.2}% of invocations)",
        status.conflicts,
        100.0 * status.conflicts as f64 / status.invocations.max(1) as f64
    );
    p.shutdown().await;
}

fn sigterm(process: &LeveeProcess) {
    let pid = process.child.id() as libc::pid_t;
    // SAFETY: sending a signal to our own child process.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::kill(pid, libc::SIGTERM) };
    assert_eq!(rc, 0, "kill(SIGTERM)");
}

async fn sink_status(addr: &str, key: &str) -> Option<serde_json::Value> {
    let a = call(addr, Some(key), Method::GET, "/v1/status", vec![])
        .await
        .ok()?;
    a.json().ok().map(|v| v["functions"][0].clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_max_receive_one_dead_letters_nothing() {
    const N: u64 = 600;
    let dir = tempfile::tempdir().unwrap();
    let manifest = write_manifest(
        dir.path(),
        &[Fn::new(
            "sink",
            "faulty",
            "concurrency = 4\nmax_receive = 1\nvisibility_timeout_ms = 2000",
        )],
    );
    let mut first = LeveeProcess::up(&manifest, free_port());
    // 20 ms each on 4 workers: a backlog of several seconds is under way at the SIGTERM.
    for _ in 0..N {
        let body = br#"{"action": "sleep", "ms": 20}"#.to_vec();
        let a = call(
            &first.addr,
            Some(&first.key),
            Method::POST,
            "/v1/functions/sink/messages",
            body,
        )
        .await
        .unwrap();
        assert_eq!(a.status.as_u16(), 202);
    }
    // Stop while the backlog is being worked through.
    sigterm(&first);
    let stopped = Instant::now();
    let exit = loop {
        if let Some(status) = first.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            stopped.elapsed() < Duration::from_secs(30),
            "levee did not exit within its grace period after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(exit.success(), "clean exit: {exit:?}");
    eprintln!("exited {:?} after SIGTERM", stopped.elapsed());

    // Leases that were handed back come back at once; expired ones after 2 s.
    let second = LeveeProcess::up(&manifest, free_port());
    let mut last = serde_json::Value::Null;
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(60) {
        if let Some(s) = sink_status(&second.addr, &second.key).await {
            let done = s["processed"].as_u64() == Some(N) && s["visible"] == 0;
            last = s;
            if done {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(last["processed"], N, "{last}");
    assert_eq!(last["dlq"], 0, "a graceful stop uses no attempt: {last}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hot_counter_kept_with_add_never_conflicts_and_loses_nothing() {
    const N: usize = 600;
    let dir = tempfile::tempdir().unwrap();
    let manifest = write_manifest(
        dir.path(),
        &[Fn::new(
            "notify",
            "notify",
            "concurrency = 8\nbackoff_ms = 50",
        )],
    );
    let p = start(&manifest).await;
    // Every notification is for one team: one counter that every invocation adds to.
    for n in 0..N {
        let body = json!({"id": format!("m{n}"), "org": "acme", "conversation": format!("c-{n}"),
            "team": "billing"})
        .to_string()
        .into_bytes();
        p.send("notify", body).await.unwrap();
    }
    let done = eventually(Duration::from_secs(120), || async {
        processed(&p, "notify").await == N as u64
    })
    .await;
    let status = status_of(&p, "notify").await;
    assert!(done, "all processed: {status:?}");
    assert_eq!(count(&p, "notify", "count/acme/billing").await, N as i64);
    assert_eq!(status.dlq, 0, "{status:?}");
    // The counter is a blind add and the records' keys are distinct: nothing to conflict on.
    assert_eq!(status.conflicts, 0, "{status:?}");
    p.shutdown().await;
}
