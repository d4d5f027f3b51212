//! `inbound`: the entry point for customer messages from every channel.
//!
//! Validates a message (`{"org", "conversation", "channel", "from", "text", "attachments"?}`),
//! normalises it, appends it to the conversation record `conv/{org}/{conversation}` at most once
//! per message id, then hands it to `routing` (team assignment) and `search-index` (full-text
//! index). Attachments are checked and reduced to their metadata (see [`attachments`]); their
//! data goes no further than this function.
//!
//! Concurrency: the invocation is a transaction and the record is read, so two messages of one
//! conversation handled at the same instant are serialised by the commit-time version check
//! (the later committer runs again on the record the other wrote): no append is lost, and the
//! record, the emits and the deletion of the source message are applied together or not at all.
//!
//! Redelivery: the record keeps the ids of the messages it holds, so a delivery of a message it
//! already holds does not append again. It still emits: the messages are identical to the first
//! run's (same body, and the host gives emits stable ids, so it recognises them as duplicates),
//! both receivers are idempotent, and it covers records written before invocations were
//! transactional, whose emits may never have left.

// Loaded by path so its own modules (`attachments`) sit beside it in src/, as for inbound-next.
#[path = "capability.rs"]
mod capability;

pub use capability::*;

levee_sdk::export!(handle);
