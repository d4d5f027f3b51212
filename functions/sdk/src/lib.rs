//! Guest SDK for Levee functions: the [`Message`] a handler receives, the [`Error`] it returns,
//! the [`Context`] it uses for kv, emit, config and outbound HTTP, and [`export!`] to make it
//! the component's `handle`.
//!
//! ```
//! use levee_sdk::{Context, Error, Message};
//!
//! fn handle(msg: &Message, ctx: &mut dyn Context) -> Result<(), Error> {
//!     let order: serde_json::Value = msg.json()?;
//!     ctx.put_json(&format!("order/{}", msg.id), &order)?;
//!     ctx.emit_json("billing", &order)
//! }
//! levee_sdk::export!(handle);
//!
//! let mut ctx = levee_sdk::MemoryContext::new();
//! handle(&Message::new("m1", r#"{"total": 3}"#), &mut ctx).unwrap();
//! assert_eq!(ctx.emitted().len(), 1);
//! ```
//!
//! Every invocation is a transaction: the handler's kv writes and emits are applied together,
//! with the deletion of the source message, only if it returns `Ok`; the keys it read are
//! version-checked at commit and on a conflict it simply runs again with fresh reads. So
//! read-modify-write ([`Context::get`] then [`Context::put`], or the `update_json` and `incr`
//! helpers on `dyn Context`) is correct under any concurrency. [`MemoryContext::invoke`] runs a
//! handler the same all-or-nothing way in tests.
//!
//! On wasm32 the bindings come from `wit-bindgen`; natively only the portable parts compile, so
//! handlers are unit-tested (and benchmarked) against [`MemoryContext`].

mod context;
mod error;
mod fields;
pub mod http;
mod memory;
mod message;
#[cfg(target_arch = "wasm32")]
mod wasi_http;
#[cfg(target_arch = "wasm32")]
#[allow(unsafe_code)]
mod wasm;

pub use context::{Context, MAX_SCAN_LIMIT, Page};
pub use error::Error;
pub use fields::{Fields, describe, quote};
pub use http::{Request, Response};
pub use memory::{
    Emitted, MAX_KEY_LEN, MAX_TXN_BYTES, MAX_TXN_KEYS, MAX_VALUE_LEN, MemoryContext, Transaction,
};
pub use message::Message;
#[cfg(target_arch = "wasm32")]
pub use wasm::WasmContext;

/// Handlers re-export serde_json so they need no version of their own to agree with.
pub use serde_json;

/// The signature [`export!`] accepts.
pub type Handler = fn(&Message, &mut dyn Context) -> Result<(), Error>;

#[cfg(target_arch = "wasm32")]
#[doc(hidden)]
pub use wasm::{bindings as __bindings, dispatch as __dispatch};

/// Exports `handler` (a `fn(&Message, &mut dyn Context) -> Result<(), Error>`) as the
/// component's `handle`. Natively it only checks the signature, so the crate still builds and
/// tests on the host.
#[macro_export]
macro_rules! export {
    ($handler:path) => {
        #[cfg(target_arch = "wasm32")]
        #[allow(unsafe_code)]
        const _: () = {
            struct LeveeGuest;
            impl $crate::__bindings::Guest for LeveeGuest {
                fn handle(
                    msg: $crate::__bindings::Message,
                ) -> ::core::result::Result<(), $crate::__bindings::Error> {
                    $crate::__dispatch(msg, $handler)
                }
            }
    $crate::__bindings::__export_capability!(LeveeGuest with_types_in $crate::__bindings);
        };
        #[cfg(not(target_arch = "wasm32"))]
        const _: $crate::Handler = $handler;
    };
}
