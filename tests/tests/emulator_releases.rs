//! Releases on the AWS backends (the emulator): two hosts over one table, bucket and set of
//! queues. A version deployed on one host is stored in S3 and recorded in DynamoDB, and the
//! other host swaps to it without a restart; a rollback made on the second host reaches the
//! first. Messages sent through both hosts meanwhile are each counted exactly once.

use std::time::Duration;

use levee::releases::DeployOptions;
use levee_tests::emulator::aws_fleet;
use levee_tests::{Fn, eventually, rebuilt};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deploy_on_one_host_reaches_every_host_and_so_does_a_rollback() {
    const N: usize = 60;
    let dir = tempfile::tempdir().unwrap();
    let fns = [Fn::new("t", "tally", "concurrency = 2\nbackoff_ms = 50")];
    let Some((hosts, _sdk, _settings)) = aws_fleet(dir.path(), "releases", &fns, 2).await else {
        return;
    };
    let release_on = |i: usize| {
        let h = hosts[i].clone();
        async move { h.status().await.unwrap().functions[0].release }
    };
    assert_eq!((release_on(0).await, release_on(1).await), (1, 1));
    for n in 0..N / 2 {
        let body = json!({"key": format!("a{n}")}).to_string().into_bytes();
        hosts[n % 2].send("t", body).await.unwrap();
    }
    let opts = DeployOptions {
        canary: false,
        ..Default::default()
    };
    let r = hosts[0]
        .releases()
        .deploy("t", rebuilt("tally", "aws-v2"), opts)
        .await
        .unwrap();
    assert_eq!(r.release, Some(2));
    let started = std::time::Instant::now();
    assert!(
        eventually(Duration::from_secs(20), || async {
            release_on(1).await == 2
        })
        .await,
        "the second host picked up release 2"
    );
    eprintln!(
        "the second host ran release 2 {:?} after the deploy",
        started.elapsed()
    );
    for n in N / 2..N {
        let body = json!({"key": format!("a{n}")}).to_string().into_bytes();
        hosts[n % 2].send("t", body).await.unwrap();
    }
    let back = hosts[1].releases().rollback("t", None).await.unwrap();
    assert_eq!(back.stable, 1);
    assert!(
        eventually(Duration::from_secs(20), || async {
            release_on(0).await == 1
        })
        .await,
        "the first host went back to release 1"
    );
    let total = || async {
        hosts[0]
            .raw_store()
            .get("t", "count/_total")
            .await
            .unwrap()
            .map(|v| serde_json::from_slice::<i64>(v.as_ref()).unwrap())
            .unwrap_or(0)
    };
    let done = eventually(Duration::from_secs(180), || async {
        total().await >= N as i64
    })
    .await;
    assert!(done, "counted {} of {N}", total().await);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(total().await, N as i64, "a message was applied twice");
    for n in 0..N {
        let c = hosts[0]
            .raw_store()
            .get("t", &format!("count/a{n}"))
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("a{n} lost"));
        assert_eq!(&c[..], b"1", "a{n}");
    }
    for h in &hosts {
        h.shutdown().await;
    }
}
