//! `faulty`: a test fixture that misbehaves on request, for the host's fault tests.
//!
//! Body: `{"action": "ok" | "trap" | "spin" | "sleep" | "hog" | "retryable" | "permanent",
//! "mb": N, "ms": N}`.
//! - `ok`: prints a line to stdout and succeeds.
//! - `trap`: prints to stderr and panics (a Wasm trap under `panic = "abort"`).
//! - `spin`: loops forever, so only the host's deadline ends it.
//! - `sleep`: sleeps `ms` milliseconds (at most [`MAX_SLEEP_MS`]) with `std::thread::sleep`,
//!   which blocks in WASI `poll` outside Wasm code, then succeeds; the host must still stop it
//!   at its deadline.
//! - `hog`: allocates and touches `mb` MiB, then succeeds; beyond the memory cap the
//!   allocation fails and the guest traps.
//! - `fresh`: checks that its zero-initialised static memory is still zero (a fresh instance per
//!   message: nothing an earlier message wrote is visible), then dirties it for the next one;
//!   fails permanently naming how many pages were dirty.
//! - `retryable` / `permanent`: returns that error.

use std::hint::black_box;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use levee_sdk::{Context, Error, Fields, Message, quote};

/// Largest `mb` a hog request may ask for (beyond any sane per-invocation memory cap).
pub const MAX_HOG_MB: u64 = 4096;
/// Longest `ms` a sleep request may ask for (one hour, beyond any per-invocation deadline).
pub const MAX_SLEEP_MS: u64 = 3_600_000;
/// Bytes between touched bytes: one per Wasm page would do, one per OS page is sure to commit.
const TOUCH_STRIDE: usize = 4096;
/// OS pages of static memory `fresh` checks and dirties.
pub const FRESH_PAGES: usize = 64;

/// Zero-initialised static memory (`.bss`): zero in every fresh instance.
static STATIC_PAGES: [AtomicU8; FRESH_PAGES * TOUCH_STRIDE] =
    [const { AtomicU8::new(0) }; FRESH_PAGES * TOUCH_STRIDE];

/// What the message asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Succeed.
    Ok,
    /// Trap.
    Trap,
    /// Never return.
    Spin,
    /// Block in the host's `poll` for this long, then succeed.
    Sleep {
        /// Milliseconds to sleep.
        ms: u64,
    },
    /// Allocate and touch this many MiB.
    Hog {
        /// MiB to allocate.
        mb: u64,
    },
    /// Check that static memory is fresh, then dirty it.
    Fresh,
    /// Fail with a retryable error.
    Retryable,
    /// Fail with a permanent error.
    Permanent,
}

const ACTIONS: &str = "one of ok, trap, spin, sleep, hog, fresh, retryable, permanent";

/// Reads the action from a message body.
pub fn parse(msg: &Message) -> Result<Action, Error> {
    let body = msg.json_object()?;
    let f = Fields::new(&body);
    f.deny_unknown(&["action", "mb", "ms"])?;
    let mb = f.opt_u64("mb")?;
    let ms = f.opt_u64("ms")?;
    let action = match f.str("action")? {
        "ok" => Action::Ok,
        "trap" => Action::Trap,
        "spin" => Action::Spin,
        "sleep" => match ms {
            Some(ms) if ms <= MAX_SLEEP_MS => Action::Sleep { ms },
            Some(ms) => return Err(f.invalid("ms", &format!("at most {MAX_SLEEP_MS}"), ms)),
            None => {
                return Err(f.invalid(
                    "ms",
                    "milliseconds to sleep for action \"sleep\"",
                    "nothing (missing)",
                ));
            }
        },
        "retryable" => Action::Retryable,
        "permanent" => Action::Permanent,
        "fresh" => Action::Fresh,
        "hog" => match mb {
            Some(mb) if mb <= MAX_HOG_MB => Action::Hog { mb },
            Some(mb) => return Err(f.invalid("mb", &format!("at most {MAX_HOG_MB}"), mb)),
            None => {
                return Err(f.invalid(
                    "mb",
                    "MiB to allocate for action \"hog\"",
                    "nothing (missing)",
                ));
            }
        },
        other => return Err(f.invalid("action", ACTIONS, quote(other))),
    };
    Ok(action)
}

/// Does what the message asks.
pub fn handle(msg: &Message, _ctx: &mut dyn Context) -> Result<(), Error> {
    match parse(msg)? {
        Action::Ok => {
            println!(
                "faulty: ok for message {} (delivery {})",
                msg.id, msg.receive_count
            );
            Ok(())
        }
        Action::Trap => {
            eprintln!("faulty: trapping for message {}", msg.id);
            panic!("faulty: trap requested by message {}", msg.id);
        }
        Action::Spin => {
            eprintln!("faulty: spinning for message {}", msg.id);
            spin()
        }
        Action::Sleep { ms } => {
            eprintln!("faulty: sleeping {ms} ms for message {}", msg.id);
            std::thread::sleep(Duration::from_millis(ms));
            println!("faulty: slept {ms} ms for message {}", msg.id);
            Ok(())
        }
        Action::Hog { mb } => {
            let sum = hog(mb);
            println!(
                "faulty: touched {mb} MiB for message {} ({sum} pages)",
                msg.id
            );
            Ok(())
        }
        Action::Fresh => match dirty_pages() {
            0 => Ok(()),
            n => Err(Error::permanent(format!(
                "faulty: {n} of {FRESH_PAGES} static pages hold an earlier message's writes"
            ))),
        },
        Action::Retryable => Err(Error::retryable(format!(
            "faulty: retryable failure requested (delivery {})",
            msg.receive_count
        ))),
        Action::Permanent => Err(Error::permanent("faulty: permanent failure requested")),
    }
}

levee_sdk::export!(handle);

/// Loops forever; `black_box` keeps the optimiser from proving the loop does nothing.
fn spin() -> ! {
    let mut n: u64 = 0;
    loop {
        n = black_box(n.wrapping_add(1));
    }
}

/// How many of the [`FRESH_PAGES`] static pages were already written, then writes them all.
pub fn dirty_pages() -> usize {
    let mut dirty = 0;
    for i in (0..STATIC_PAGES.len()).step_by(TOUCH_STRIDE) {
        if STATIC_PAGES[i].swap(1, Ordering::Relaxed) != 0 {
            dirty += 1;
        }
    }
    dirty
}

/// Allocates `mb` MiB and writes one byte per page so the memory is really committed; returns
/// the number of pages touched. A failed allocation traps with a message saying how much.
pub fn hog(mb: u64) -> u64 {
    let bytes = usize::try_from(mb)
        .ok()
        .and_then(|mb| mb.checked_mul(1 << 20));
    let mut buf: Vec<u8> = Vec::new();
    if bytes.is_none_or(|bytes| buf.try_reserve_exact(bytes).is_err()) {
        eprintln!("faulty: could not allocate {mb} MiB");
        panic!("faulty: could not allocate {mb} MiB");
    }
    buf.resize(bytes.unwrap_or_default(), 0);
    let mut pages = 0;
    for i in (0..buf.len()).step_by(TOUCH_STRIDE) {
        buf[i] = black_box(1);
        pages += 1;
    }
    black_box(&buf);
    pages
}

#[cfg(test)]
mod tests {
    use super::*;
    use levee_sdk::MemoryContext;
    use levee_sdk::serde_json::json;

    fn run(body: levee_sdk::serde_json::Value) -> Result<(), Error> {
        handle(&Message::from_json("m1", &body), &mut MemoryContext::new())
    }

    #[test]
    fn fresh_finds_what_an_earlier_call_in_the_same_instance_wrote() {
        // Natively the process is one long-lived instance: the second call sees the first's
        // writes, which is what a reused Wasm instance would show.
        let _ = dirty_pages();
        assert_eq!(dirty_pages(), FRESH_PAGES);
        let e = run(json!({"action": "fresh"})).unwrap_err();
        assert!(!e.is_retryable());
        assert!(
            e.message().contains("64 of 64 static pages"),
            "{}",
            e.message()
        );
    }

    #[test]
    fn parses_every_action() {
        let action = |body| parse(&Message::from_json("m", &body)).unwrap();
        assert_eq!(action(json!({"action": "ok"})), Action::Ok);
        assert_eq!(action(json!({"action": "trap"})), Action::Trap);
        assert_eq!(action(json!({"action": "spin"})), Action::Spin);
        assert_eq!(
            action(json!({"action": "sleep", "ms": 1500})),
            Action::Sleep { ms: 1500 }
        );
        assert_eq!(
            action(json!({"action": "sleep", "ms": MAX_SLEEP_MS})),
            Action::Sleep { ms: MAX_SLEEP_MS }
        );
        assert_eq!(
            action(json!({"action": "hog", "mb": 64})),
            Action::Hog { mb: 64 }
        );
        assert_eq!(action(json!({"action": "retryable"})), Action::Retryable);
        assert_eq!(action(json!({"action": "fresh"})), Action::Fresh);
        assert_eq!(
            action(json!({"action": "permanent", "mb": 1})),
            Action::Permanent
        );
    }

    #[test]
    fn ok_and_errors_do_what_they_say() {
        run(json!({"action": "ok"})).unwrap();
        assert!(
            run(json!({"action": "retryable"}))
                .unwrap_err()
                .is_retryable()
        );
        let e = run(json!({"action": "permanent"})).unwrap_err();
        assert_eq!(e, Error::permanent("faulty: permanent failure requested"));
    }

    #[test]
    fn sleep_sleeps_then_succeeds() {
        let start = std::time::Instant::now();
        run(json!({"action": "sleep", "ms": 20})).unwrap();
        assert!(start.elapsed() >= Duration::from_millis(20));
    }

    #[test]
    fn hog_touches_every_page() {
        assert_eq!(hog(2), 2 * (1 << 20) / TOUCH_STRIDE as u64);
        assert_eq!(hog(0), 0);
        run(json!({"action": "hog", "mb": 1})).unwrap();
    }

    #[test]
    #[should_panic(expected = "faulty: trap requested by message m1")]
    fn trap_panics() {
        let _ = run(json!({"action": "trap"}));
    }

    #[test]
    fn bad_requests_are_permanent_and_named() {
        let cases = [
            (
                json!({"action": "explode"}),
                r#"field "action": expected one of ok, trap, spin, sleep, hog, fresh, retryable, permanent, got "explode""#,
            ),
            (
                json!({"action": "hog"}),
                r#"field "mb": expected MiB to allocate for action "hog", got nothing (missing)"#,
            ),
            (
                json!({"action": "hog", "mb": 5000}),
                r#"field "mb": expected at most 4096, got 5000"#,
            ),
            (
                json!({"action": "hog", "mb": -1}),
                r#"field "mb": expected a non-negative integer, got -1"#,
            ),
            (
                json!({"action": "sleep"}),
                r#"field "ms": expected milliseconds to sleep for action "sleep", got nothing (missing)"#,
            ),
            (
                json!({"action": "sleep", "ms": 3_600_001}),
                r#"field "ms": expected at most 3600000, got 3600001"#,
            ),
            (
                json!({"action": "sleep", "ms": "5"}),
                r#"field "ms": expected a non-negative integer, got "5""#,
            ),
            (
                json!({"mb": 1}),
                r#"field "action": expected a non-empty string, got nothing (missing)"#,
            ),
            (
                json!({"action": "ok", "delay": 1}),
                r#"field "delay": unknown, expected only action, mb, ms"#,
            ),
        ];
        for (body, expected) in cases {
            let e = run(body).unwrap_err();
            assert!(!e.is_retryable());
            assert_eq!(e.message(), expected);
        }
    }
}
