//! `inbound-next`: the release of `inbound` that `levee drill bad-release` deploys. It is the
//! same capability (its source is `inbound`'s), with one change standing in for the August 2022
//! incident's library upgrade: its reader of large-format events (bodies over
//! [`LARGE_EVENT_BYTES`], such as messages with attachments) is broken and traps on them.
//! Every other message is handled exactly as release 1 handles it.
//!
//! The replay gate (`functions/inbound/replay/` holds large-format events) or the canary must
//! catch it; the drill checks that nothing is lost or dead-lettered because of it.

#[path = "../../inbound/src/capability.rs"]
#[allow(dead_code)]
mod capability;

use levee_sdk::{Context, Error, Message};

/// Bodies above this size take the (broken) large-format path.
pub const LARGE_EVENT_BYTES: usize = 64 * 1024;

/// `inbound`'s handler, but for large-format events.
pub fn handle(msg: &Message, ctx: &mut dyn Context) -> Result<(), Error> {
    if msg.body.len() > LARGE_EVENT_BYTES {
        panic!(
            "large-format reader: unsupported event layout ({} bytes)",
            msg.body.len()
        );
    }
    capability::handle(msg, ctx)
}

levee_sdk::export!(handle);

#[cfg(test)]
mod tests {
    use super::*;
    use levee_sdk::MemoryContext;

    #[test]
    fn small_events_are_handled_as_release_1_handles_them() {
        let body = br#"{"org":"acme","conversation":"c1","channel":"chat","from":"a@b.c","text":"hello there"}"#;
        let msg = Message::new("m1", body.to_vec());
        let (mut a, mut b) = (MemoryContext::new(), MemoryContext::new());
        handle(&msg, &mut a).unwrap();
        capability::handle(&msg, &mut b).unwrap();
        assert_eq!(a.emitted(), b.emitted());
    }
}
