//! The sample pipeline end to end on the AWS backends (SQS, DynamoDB, S3) of the emulator: the
//! same scenarios as `embedded_pipeline`, after `levee provision` of the manifest's resources.

use std::time::Duration;

use levee::QueueSpec;
use levee::platform::StartOptions;
use levee_tests::emulator::emulator;
use levee_tests::pipeline::{large_event_flows, message_flows_through_all_four};
use levee_tests::{pipeline_fns, start_with, write_manifest_with};

async fn aws_platform(
    dir: &std::path::Path,
    tag: &str,
) -> Option<std::sync::Arc<levee::platform::Platform>> {
    let emu = emulator()?;
    let sdk = emu.sdk_config().await;
    let s = emu.settings(tag);
    let extra = format!(
        "backend = \"aws\"\n\n[aws]\nqueue_prefix = \"{}\"\ntable = \"{}\"\nbucket = \"{}\"",
        s.queue_prefix, s.table, s.bucket
    );
    let fns = pipeline_fns(4);
    let specs: Vec<_> = fns
        .iter()
        .map(|f| QueueSpec {
            name: f.name.clone(),
            max_receive: 5,
        })
        .collect();
    let report = levee::provision(&sdk, &s, &specs).await.expect("provision");
    assert_eq!(
        report.created(),
        10,
        "4 queues, 4 DLQs, a table and a bucket: {report}"
    );
    let manifest = write_manifest_with(dir, &extra, &fns);
    let opts = StartOptions {
        aws_sdk: Some(sdk),
        ..Default::default()
    };
    Some(start_with(&manifest, opts).await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_flows_through_all_four_functions_on_aws() {
    let dir = tempfile::tempdir().unwrap();
    let Some(p) = aws_platform(dir.path(), "e2e").await else {
        return;
    };
    message_flows_through_all_four(&p, Duration::from_secs(60)).await;
    p.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_5_mib_event_flows_on_aws() {
    let dir = tempfile::tempdir().unwrap();
    let Some(p) = aws_platform(dir.path(), "large").await else {
        return;
    };
    large_event_flows(&p, 5, Duration::from_secs(90)).await;
    p.shutdown().await;
}
