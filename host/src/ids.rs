//! Identifiers and wall-clock time shared by every backend: the current time in milliseconds since
//! the Unix epoch and random hex ids for blob keys.

/// Current time in ms since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A random 128-bit hex string, for blob keys.
pub(crate) fn random_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}
