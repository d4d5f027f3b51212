//! Discrete-time simulator: replays an arrival [`Trace`] through a pipeline [`Scenario`] with the real
//! policy code and produces a [`Report`] (backlog, end-to-end delay, errors from overloaded stores,
//! worker-seconds), a markdown table, a policy comparison and an SVG chart.

mod engine;
mod report;
mod scenario;
mod trace;

pub use engine::{Pipeline, SimHandle, run};
pub use report::{FunctionReport, Report, SeriesPoint, compare};
pub use scenario::{FunctionModel, SCENARIO_NAMES, Scenario, StoreModel};
pub use trace::Trace;

/// The January 2025 trace shipped in `traces/jan2025.csv`.
pub const JAN2025_TRACE: &str = include_str!("../../traces/jan2025.csv");
/// The April 2020 trace shipped in `traces/apr2020.csv`.
pub const APR2020_TRACE: &str = include_str!("../../traces/apr2020.csv");

/// Runs every policy (default settings) over the same scenario and trace.
pub fn compare_policies(scenario: &Scenario, trace: &Trace) -> crate::Result<Vec<Report>> {
    crate::policy::POLICY_NAMES
        .iter()
        .map(|name| {
            let mut p = crate::policy::by_name(name)?;
            run(scenario, trace, p.as_mut())
        })
        .collect()
}
