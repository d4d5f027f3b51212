//! Whether a store call may block the thread it is made on. A guest runs on a guest thread of
//! its own ([`crate::runtime::threads`]) and waits for each of its kv calls anyway; a backend whose reads are
//! synchronous (SQLite) can do them right there instead of crossing to another blocking thread
//! and back (two context switches per read on a 2-core machine).

use std::cell::Cell;

thread_local! {
    static ALLOWED: Cell<bool> = const { Cell::new(false) };
}

/// While this is alive, store calls made on this thread may block it ([`allowed`]).
#[derive(Debug)]
pub struct InPlace(bool);

/// Declares that the current thread may block in store calls until the guard is dropped. Only for
/// threads that run no async tasks (guest threads, tokio's blocking pool), never a runtime worker.
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
