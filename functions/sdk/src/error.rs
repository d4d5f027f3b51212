//! The error a handler returns, mirroring the WIT `error` variant.

use std::fmt;

/// How a handler (or a host call it made) failed.
///
/// The host redelivers a message after a backoff on [`Error::Retryable`] and moves it to the
/// function's dead-letter queue on [`Error::Permanent`], keeping the message as the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// Try again later: a dependency was unavailable, a limit was hit.
    Retryable(String),
    /// Never succeeds: the input is invalid or a rule forbids it.
    Permanent(String),
}

impl Error {
    /// A failure that may go away on redelivery.
    pub fn retryable(message: impl Into<String>) -> Self {
        Self::Retryable(message.into())
    }

    /// A failure that no redelivery fixes.
    pub fn permanent(message: impl Into<String>) -> Self {
        Self::Permanent(message.into())
    }

    /// The permanent error for a field that does not hold what is allowed, in the one shape
    /// every function uses: `field "channel": expected one of chat, email, got "fax"`.
    pub fn invalid_field(field: &str, expected: impl fmt::Display, got: impl fmt::Display) -> Self {
        Self::Permanent(format!("field \"{field}\": expected {expected}, got {got}"))
    }

    /// Whether the host should redeliver the message.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Retryable(_))
    }

    /// The human-readable reason.
    pub fn message(&self) -> &str {
        match self {
            Self::Retryable(m) | Self::Permanent(m) => m,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Retryable(m) => write!(f, "retryable: {m}"),
            Self::Permanent(m) => write!(f, "permanent: {m}"),
        }
    }
}

impl std::error::Error for Error {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constructors_pick_the_variant() {
        assert!(Error::retryable("store down").is_retryable());
        assert!(!Error::permanent("bad input").is_retryable());
        assert_eq!(Error::permanent("bad input").message(), "bad input");
        assert_eq!(Error::retryable("x").to_string(), "retryable: x");
    }

    #[test]
    fn invalid_field_names_field_expectation_and_value() {
        let e = Error::invalid_field("channel", "one of chat, email", "\"fax\"");
        assert_eq!(
            e,
            Error::Permanent(r#"field "channel": expected one of chat, email, got "fax""#.into())
        );
    }
}
