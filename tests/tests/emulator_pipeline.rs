//! The sample pipeline end to end on the AWS backends (SQS, DynamoDB, S3) of the emulator: the
//! same scenarios as `embedded_pipeline`, after `levee provision` of the manifest's resources.

use std::time::Duration;

use levee_tests::emulator::aws_platform;
use levee_tests::pipeline::{large_event_flows, message_flows_through_all_four};
use levee_tests::pipeline_fns;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_flows_through_all_four_functions_on_aws() {
    let dir = tempfile::tempdir().unwrap();
    let Some(p) = aws_platform(dir.path(), "e2e", &pipeline_fns(4)).await else {
        return;
    };
    message_flows_through_all_four(&p, Duration::from_secs(60)).await;
    p.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_5_mib_event_flows_on_aws() {
    let dir = tempfile::tempdir().unwrap();
    let Some(p) = aws_platform(dir.path(), "large", &pipeline_fns(4)).await else {
        return;
    };
    large_event_flows(&p, 5, Duration::from_secs(90)).await;
    p.shutdown().await;
}
