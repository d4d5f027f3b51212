//! The scaler's error type: every bad input names what is wrong.

use thiserror::Error;

/// Errors from building a graph, parsing a trace or a scenario, or running the controller.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum Error {
    /// The dependency graph is invalid (unknown target, cycle, bad bound...).
    #[error("invalid scaling graph: {0}")]
    Graph(String),
    /// A trace file line could not be parsed.
    #[error("trace line {line}: {message}")]
    Trace {
        /// 1-based line number in the CSV.
        line: usize,
        /// What is wrong with it.
        message: String,
    },
    /// A simulation scenario does not fit its trace or is inconsistent.
    #[error("scenario {scenario:?}: {message}")]
    Scenario {
        /// Scenario name.
        scenario: String,
        /// What is wrong with it.
        message: String,
    },
    /// An unknown policy name was requested.
    #[error("unknown policy {0:?}: expected one of coordinated, independent, lambda-like")]
    UnknownPolicy(String),
    /// A signal source could not read signals (transient: the controller skips the tick).
    #[error("signal source: {0}")]
    Signals(String),
    /// An actuator could not apply a decision (transient: the controller retries next tick).
    #[error("actuator: {0}")]
    Actuator(String),
}

/// `Result` with the scaler's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
