//! The one error type of the `levee` library, with the retryable/permanent split workers act on.

use std::time::Duration;

/// Everything that can go wrong inside Levee. Workers ask [`Error::is_retryable`] to decide
/// between "try again later" and "dead-letter now".
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A queue the manifest names does not exist in the backend.
    #[error("queue `{0}` does not exist; run `levee provision` to create the manifest's queues")]
    QueueNotFound(String),
    /// A receipt handle that expired or was superseded by a newer receive.
    #[error(
        "receipt handle is no longer valid (the lease expired or the message was received again)"
    )]
    StaleReceipt,
    /// A downstream call did not answer in time.
    #[error("{what} timed out after {after:?}")]
    Timeout { what: String, after: Duration },
    /// A bound on in-flight work was reached; the caller should retry later.
    #[error("{0} is at its concurrency bound; retry later")]
    Overloaded(String),
    /// A circuit breaker is open and fails calls fast.
    #[error("circuit breaker open for {0}; retry later")]
    CircuitOpen(String),
    /// A transient backend failure (throttling, connection reset, 5xx).
    #[error("{service} unavailable: {message}")]
    Unavailable { service: String, message: String },
    /// A permanent backend failure (bad credentials, access denied, validation).
    #[error("{service}: {message}")]
    Backend { service: String, message: String },
    /// Input that can never succeed (bad message, key too long, unknown function).
    #[error("invalid input: {0}")]
    Invalid(String),
    /// A request that cannot be done in the current state (a release while a canary runs).
    #[error("{0}")]
    Conflict(String),
    /// A manifest that does not parse or validate; the message names the field.
    #[error("manifest: {0}")]
    Manifest(String),
    /// Compiling or instantiating a Wasm component failed.
    #[error("runtime: {0}")]
    Runtime(String),
    /// The embedded SQLite backend failed.
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// File system access failed.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// Whether retrying the same operation later can succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Timeout { .. }
            | Error::Overloaded(_)
            | Error::CircuitOpen(_)
            | Error::Unavailable { .. }
            | Error::StaleReceipt => true,
            Error::Sqlite(e) => matches!(
                e.sqlite_error_code(),
                Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
            ),
            Error::Io { .. } => true,
            Error::QueueNotFound(_)
            | Error::Backend { .. }
            | Error::Invalid(_)
            | Error::Conflict(_)
            | Error::Manifest(_)
            | Error::Runtime(_) => false,
        }
    }

    /// A copy of this error for one more caller (`Error` is not `Clone`: it wraps SQLite's and
    /// I/O errors), as when several callers share one store read or one batch call. Errors that
    /// cannot be copied keep their text and their retryability, attributed to `service`.
    pub fn copied(&self, service: &str) -> Error {
        match self {
            Error::QueueNotFound(q) => Error::QueueNotFound(q.clone()),
            Error::StaleReceipt => Error::StaleReceipt,
            Error::Timeout { what, after } => Error::Timeout {
                what: what.clone(),
                after: *after,
            },
            Error::Overloaded(s) => Error::Overloaded(s.clone()),
            Error::CircuitOpen(s) => Error::CircuitOpen(s.clone()),
            Error::Unavailable { service, message } => Error::Unavailable {
                service: service.clone(),
                message: message.clone(),
            },
            Error::Backend { service, message } => Error::Backend {
                service: service.clone(),
                message: message.clone(),
            },
            Error::Invalid(s) => Error::Invalid(s.clone()),
            other if other.is_retryable() => Error::Unavailable {
                service: service.to_owned(),
                message: other.to_string(),
            },
            other => Error::Backend {
                service: service.to_owned(),
                message: other.to_string(),
            },
        }
    }

    /// Wraps an I/O error with what was being done.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}

/// `Result` with Levee's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
