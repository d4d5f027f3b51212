//! Levee's coordinated scaler: a pure scaling policy over the function dependency graph, an async
//! control loop, and a trace simulator that replays incidents with the real policy code.
//!
//! # Public API
//!
//! * **Graph** ([`Graph::new`] from [`FunctionSpec`]s and [`StoreSpec`]s): functions with
//!   `min_workers`/`max_workers`, `emits_to` edges with a prior fan-out ([`Edge`]), store reads with ops
//!   per message ([`StoreRead`]) and an optional service-rate hint; stores with a capacity in ops/s.
//!   Validation names the bad function, edge or store; cycles are rejected (feed-forward needs an
//!   acyclic graph); [`Graph::topological_order`] puts upstream first.
//! * **Signals** ([`Signals`], [`FunctionSignals`]): per function arrival rate, processed rate,
//!   measured service rate per worker, backlog, in-flight, delayed (waiting for a retry), oldest age,
//!   workers running and starting, measured fan-out per edge.
//! * **Policies** ([`Policy`]: `decide(&mut self, &Graph, &Signals, now: Duration) -> Decision`, plus
//!   `interval()`): [`Coordinated`] (feed-forward over the graph, backpressure from functions at max and
//!   stores at capacity as [`Admission`] limits, immediate scale-up, scale-down over a 60 s window with
//!   15% headroom, drain within 30 s, scale to zero after 120 s idle), [`Independent`] (KEDA's SQS
//!   scaler on an HPA: ceil(queue / 5) every 30 s, 10% tolerance, 300 s scale-down window) and
//!   [`LambdaLike`] (Lambda on SQS: concurrency toward the queue length, +30% of max per minute,
//!   i.e. 300/min out of 1000 scaled to our pools; no scale-down window). [`by_name`] builds one from
//!   `coordinated`, `independent` or `lambda-like`. A [`Decision`] holds per function the desired and
//!   current workers, the admission limit and a reason in words.
//! * **Controller** ([`Controller`]): ticks on `tokio::time::interval`, reads a [`SignalSource`],
//!   decides, applies through an [`Actuator`]; [`Controller::status`] gives a [`StatusHandle`] on the
//!   last decision, tick count and last error (for `levee status`). Source and actuator errors are
//!   recorded and the loop goes on.
//! * **Simulator** ([`sim`]): [`sim::Trace`] (CSV `t_seconds,function,rate_per_second`, piecewise
//!   constant), [`sim::Scenario`] (pipeline model: service time, start-up delay, bounds, fan-out, store
//!   reads and capacities; named scenarios `jan2025` and `apr2020` match `traces/*.csv`),
//!   [`sim::run`] → [`sim::Report`] (`table()`, `to_svg()`), [`sim::compare`] /
//!   [`sim::compare_policies`] for a side-by-side table, and [`sim::SimHandle`], the simulated pipeline
//!   as a controller's source and actuator.
//!
//! ```
//! use levee_scaler::sim::{self, Scenario, Trace};
//! let trace = Trace::parse("0,inbound,100\n600,inbound,200\n900,inbound,0").unwrap();
//! let mut policy = levee_scaler::by_name("coordinated").unwrap();
//! let report = sim::run(&Scenario::jan2025(), &trace, policy.as_mut()).unwrap();
//! assert_eq!(report.total_errors(), 0);
//! println!("{}", report.table());
//! ```

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
    Admission, Coordinated, CoordinatedConfig, Decision, FunctionDecision, Independent,
    IndependentConfig, LambdaLike, LambdaLikeConfig, POLICY_NAMES, Policy, by_name,
};
pub use signals::{FunctionSignals, Signals};
