//! A function that succeeds and does nothing: the floor for the host's per-invocation cost in
//! benchmarks.

use levee_sdk::{Context, Error, Message};

/// Accepts every message.
pub fn handle(_msg: &Message, _ctx: &mut dyn Context) -> Result<(), Error> {
    Ok(())
}

levee_sdk::export!(handle);

#[cfg(test)]
mod tests {
    use super::*;
    use levee_sdk::MemoryContext;

    #[test]
    fn succeeds_without_side_effects() {
        let mut ctx = MemoryContext::new();
        handle(&Message::new("m1", "anything"), &mut ctx).unwrap();
        assert_eq!(ctx.writes(), 0);
        assert!(ctx.emitted().is_empty());
    }
}
