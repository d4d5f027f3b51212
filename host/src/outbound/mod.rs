//! Outbound HTTP for functions (`wasi:http/outgoing-handler`), on the host's terms.
//!
//! A function may call only the origins (`scheme://host:port`) its manifest grants in
//! `[[functions.NAME.outbound]]`; anything else fails with an error naming the grants. Each
//! granted destination has, per host process, a concurrency limit, a rate limit and a circuit
//! breaker, and every request a timeout within the invocation's deadline and a bounded response
//! body. A destination that answers 429 or 503 (its `Retry-After` honoured), times out, refuses
//! connections or has its breaker open marks the invocation: if the handler then fails, the
//! message goes back without using an attempt and the pool pauses (see `worker/gate.rs`), so a
//! provider's limit holds the backlog in the queue instead of sweeping it into the DLQ.
//!
//! Wasmtime's `wasi:http` implementation parses the guest's request; Levee sends it with its own
//! pooled hyper client (`tls.rs`), since the crate's default sender opens a connection per
//! request and trusts only the webpki roots.

mod body;
mod destination;
mod grant;
mod hooks;

pub use destination::{Destination, Unavailable};
pub use grant::{GrantSpec, MAX_RESPONSE_BYTES, Origin};
pub use hooks::{Calls, MAX_REQUESTS_PER_INVOCATION, Outbound, Signal};
