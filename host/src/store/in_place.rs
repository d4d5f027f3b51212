//! Whether a store call may block the thread it is made on. A guest waits for each of its kv
//! calls anyway, and a backend whose reads are synchronous and short (SQLite, a few
//! microseconds) can do them right there, during the poll of the invocation, instead of
//! crossing to the blocking pool and back (two context switches per read on a 2-core machine).
//! [`polled`] scopes that to the polls of one future.

use std::cell::Cell;
use std::pin::Pin;
use std::task::{Context, Poll};

thread_local! {
    static ALLOWED: Cell<bool> = const { Cell::new(false) };
}

/// While this is alive, store calls made on this thread may block it ([`allowed`]).
#[derive(Debug)]
pub struct InPlace(bool);

/// Declares that the current thread may block in store calls until the guard is dropped. Only
/// for tokio's blocking pool, or for the duration of one poll of an invocation (see
/// `runtime::Function::invoke`): never held across an await.
pub fn allow() -> InPlace {
    InPlace(ALLOWED.replace(true))
}

/// True where [`allow`] is in force on the current thread.
pub fn allowed() -> bool {
    ALLOWED.get()
}

impl Drop for InPlace {
    fn drop(&mut self) {
        ALLOWED.set(self.0);
    }
}

/// Polls `f` with store calls allowed in place ([`allow`]), scoped to each poll so it never
/// outlives the future on a thread. For futures whose store calls are short reads the caller
/// would wait for anyway: an invocation (the guest waits for each kv call), or a ledger's check
/// of the records of a receive. A SQLite read of a few microseconds is cheaper done during the
/// poll than handed to the blocking pool and back (two context switches).
pub fn polled<F: Future + Unpin>(f: F) -> Polled<F> {
    Polled(f)
}

/// See [`polled`].
#[derive(Debug)]
pub struct Polled<F>(F);

impl<F: Future + Unpin> Future for Polled<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let _in_place = allow();
        Pin::new(&mut self.0).poll(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_guard_is_scoped_and_nests() {
        assert!(!allowed());
        {
            let _outer = allow();
            assert!(allowed());
            {
                let _inner = allow();
                assert!(allowed());
            }
            assert!(allowed(), "the inner guard restores the outer state");
        }
        assert!(!allowed());
        let other = std::thread::spawn(|| {
            let _g = allow();
            allowed()
        });
        assert!(other.join().unwrap());
        assert!(!allowed(), "another thread's guard is its own");
    }
}
