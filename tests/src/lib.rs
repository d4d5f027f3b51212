//! Test support for Levee end-to-end tests.

pub mod emulator;
