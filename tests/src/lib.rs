//! Test support for Levee's end-to-end tests: builds the guest components from `functions/`,
//! writes manifests, runs the platform in process or as a `levee` child process.

pub mod browser;
pub mod contract;
pub mod emulator;
pub mod http_server;
pub mod pipeline;
pub mod support;

pub use support::*;
