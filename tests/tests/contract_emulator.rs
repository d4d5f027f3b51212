//! The same queue and store contract suites as `contract_embedded`, against SQS and DynamoDB on
//! the AWS emulator (moto started by `localstack/start.sh`, or `LEVEE_TEST_AWS_ENDPOINT`).
//! Outside CI a missing emulator skips loudly; with CI=true it fails.

use std::sync::Arc;

use levee::{DynamoStore, OffloadQueue, Queue, S3Blobs, SqsQueue, Store};
use levee_tests::emulator::{Emulator, emulator};
use levee_tests::{dlq_contract_tests, queue_contract_tests, store_contract_tests};

async fn sqs_queue() -> Option<(Arc<dyn Queue>, Emulator)> {
    let emu = emulator()?;
    let sdk = emu.sdk_config().await;
    let settings = emu.settings("contract");
    // The contract's own names are unique per run; a short prefix keeps them within SQS's 80.
    let _ = settings;
    Some((Arc::new(SqsQueue::new(&sdk, "c-")), emu))
}

/// SQS with large bodies offloaded to S3, as the AWS backend runs it (the dead-letter cases send
/// a 1 MiB body).
async fn offloaded_sqs_queue() -> Option<(Arc<dyn Queue>, Emulator)> {
    let emu = emulator()?;
    let sdk = emu.sdk_config().await;
    let settings = emu.settings("contract-dlq");
    levee::provision(&sdk, &settings, &[])
        .await
        .expect("provisioning the bucket");
    let blobs = S3Blobs::new(&sdk, settings.bucket);
    Some((
        Arc::new(OffloadQueue::new(SqsQueue::new(&sdk, "d-"), blobs)),
        emu,
    ))
}

async fn dynamo_store() -> Option<(Arc<dyn Store>, Emulator)> {
    let emu = emulator()?;
    let sdk = emu.sdk_config().await;
    let settings = emu.settings("contract");
    // The table is provisioned like `levee provision` does, with no queues.
    levee::provision(&sdk, &settings, &[])
        .await
        .expect("provisioning the table");
    Some((Arc::new(DynamoStore::new(&sdk, settings.table)), emu))
}

mod queue {
    super::queue_contract_tests!(super::sqs_queue);
}

mod dlq {
    super::dlq_contract_tests!(super::offloaded_sqs_queue);
}

mod store {
    super::store_contract_tests!(super::dynamo_store);
}
