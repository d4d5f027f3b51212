//! Levee scaler (placeholder doc, rewritten below).

mod controller;
mod error;
mod graph;
mod policy;
mod signals;
pub mod sim;

pub use controller::{Actuator, Controller, SignalSource, Status, StatusHandle};
pub use error::{Error, Result};
pub use graph::{Edge, FunctionSpec, Graph, StoreRead, StoreSpec};
pub use policy::{
    Admission, Coordinated, CoordinatedConfig, Decision, FunctionDecision, Independent, IndependentConfig,
    LambdaLike, LambdaLikeConfig, POLICY_NAMES, Policy, by_name,
};
pub use signals::{FunctionSignals, Signals};
