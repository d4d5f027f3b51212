//! Levee scaler.
