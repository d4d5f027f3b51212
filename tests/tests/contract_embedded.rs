//! The queue and store contract suites against the embedded SQLite backend, one fresh database
//! file per case.

use std::sync::Arc;

use levee::{EmbeddedDb, Queue, Store};
use levee_tests::{dlq_contract_tests, queue_contract_tests, store_contract_tests};
use tempfile::TempDir;

async fn embedded_queue() -> Option<(Arc<dyn Queue>, TempDir)> {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = EmbeddedDb::open(dir.path().join("levee.db")).expect("open embedded db");
    Some((Arc::new(db.queue()), dir))
}

async fn embedded_store() -> Option<(Arc<dyn Store>, TempDir)> {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = EmbeddedDb::open(dir.path().join("levee.db")).expect("open embedded db");
    Some((Arc::new(db.store()), dir))
}

mod queue {
    super::queue_contract_tests!(super::embedded_queue);
}

mod dlq {
    super::dlq_contract_tests!(super::embedded_queue);
}

mod store {
    super::store_contract_tests!(super::embedded_store);
}
