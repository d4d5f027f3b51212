//! Test support for Levee end-to-end tests.
