//! The sample pipeline end to end on the embedded backend: a customer message sent to `inbound`
//! flows through routing, search-index and notify and leaves the expected kv state; a 5 MiB event
//! goes through too (its body offloaded to blobs on disk).

use std::time::Duration;

use levee_tests::pipeline::{large_event_flows, message_flows_through_all_four};
use levee_tests::{pipeline_fns, start, write_manifest};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_flows_through_all_four_functions() {
    let dir = tempfile::tempdir().unwrap();
    let p = start(&write_manifest(dir.path(), &pipeline_fns(2))).await;
    message_flows_through_all_four(&p, Duration::from_secs(30)).await;
    p.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_5_mib_event_flows_and_its_blob_is_removed() {
    let dir = tempfile::tempdir().unwrap();
    let p = start(&write_manifest(dir.path(), &pipeline_fns(2))).await;
    large_event_flows(&p, 5, Duration::from_secs(60)).await;
    p.shutdown().await;
    let blobs = dir.path().join("data").join("blobs");
    // Deployed modules (`modules/`, releases) stay; offloaded bodies must not.
    let left: Vec<_> = files_under(&blobs)
        .into_iter()
        .filter(|p| !p.starts_with(blobs.join("modules")))
        .collect();
    assert!(
        left.is_empty(),
        "offloaded bodies are deleted once their messages complete: {left:?}"
    );
}

/// Regular files below `dir` (empty directories such as `blobs/.tmp` do not count).
fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .flat_map(|e| {
            let path = e.path();
            if path.is_dir() {
                files_under(&path)
            } else {
                vec![path]
            }
        })
        .collect()
}
