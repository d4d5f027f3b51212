//! Contract suites shared by every backend: the same cases run against the embedded SQLite
//! backend and against SQS/DynamoDB (through an emulator), so the backends cannot drift apart.
//!
//! Each case is a `pub async fn` taking the backend and a name prefix unique to the test, so many
//! cases can share one emulator (or one database file). The [`queue_contract_tests!`] and
//! [`store_contract_tests!`] macros expand to one `#[tokio::test]` per case, given a setup
//! function `async fn() -> (Arc<dyn Queue>, G)` (or `Arc<dyn Store>`), where `G` is anything that
//! must outlive the test (a temporary directory, an emulator handle, `()`).
//!
//! Cases that depend on visibility timeouts or delays use whole seconds (SQS's granularity) and
//! keep waits to a few seconds.

pub mod queue;
pub mod store;

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// A prefix for queue names or namespaces unique to this process, run and case. Fits SQS's
/// 80-character name limit with room for suffixes such as `-dlq`.
pub fn unique_prefix(case: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let case: String = case.chars().take(36).collect();
    format!("t{:x}{nanos:08x}{n:x}-{case}", std::process::id())
}
