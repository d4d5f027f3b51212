//! Sizes both backends share: the offload threshold above which a message body goes to the blob
//! store (the embedded backend's disk or S3) and the SQS message limit that bounds it. They live
//! here, not in `aws`, because the embedded backend, the manifest and the worker statistics use
//! them too.

use crate::{Error, Result};

/// Messages (body + attributes) larger than this go to blobs, the queue carries a reference.
pub const DEFAULT_OFFLOAD_THRESHOLD: usize = 200 * 1024;
/// SQS's largest message, body and attributes together (raised from 256 KiB to 1 MiB in 2025).
pub const SQS_MAX_MESSAGE_BYTES: usize = 1024 * 1024;
/// The smallest offload threshold accepted: below it every message would round-trip through blobs.
pub const MIN_OFFLOAD_THRESHOLD: usize = 1024;

/// Checks an offload threshold against [`MIN_OFFLOAD_THRESHOLD`] and [`SQS_MAX_MESSAGE_BYTES`].
pub(crate) fn check_offload_threshold(bytes: usize) -> Result<()> {
    if !(MIN_OFFLOAD_THRESHOLD..=SQS_MAX_MESSAGE_BYTES).contains(&bytes) {
        return Err(Error::Invalid(format!(
            "offload threshold must be {MIN_OFFLOAD_THRESHOLD} to {SQS_MAX_MESSAGE_BYTES} bytes \
             (SQS's message limit), got {bytes}"
        )));
    }
    Ok(())
}
