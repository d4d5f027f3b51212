//! `levee sim`: replays an arrival trace through a pipeline scenario with the real policy code and
//! writes the report (markdown table, one SVG chart per policy).

use std::path::{Path, PathBuf};
use std::time::Duration;

use levee_scaler::sim::{self, Pipeline, Report, Scenario, Trace};
use levee_scaler::{POLICY_NAMES, Policy};

use crate::{Error, Result};

/// What to simulate.
#[derive(Debug, Clone)]
pub struct SimOptions {
    /// The arrival trace (CSV `t_seconds,function,rate_per_second`).
    pub trace: PathBuf,
    /// A policy name, or `all` for every policy side by side.
    pub policy: String,
    /// A named scenario (`jan2025`, `apr2020`).
    pub scenario: String,
    /// Directory for report.md and the SVG charts.
    pub out: PathBuf,
}

/// What a run produced.
#[derive(Debug, Clone)]
pub struct SimOutput {
    pub reports: Vec<Report>,
    /// The markdown table (a comparison when several policies ran).
    pub table: String,
    /// Files written.
    pub files: Vec<PathBuf>,
}

/// The policies `name` stands for (`all`: every one).
pub fn policies(name: &str) -> Result<Vec<&'static str>> {
    if name == "all" {
        return Ok(POLICY_NAMES.to_vec());
    }
    POLICY_NAMES
        .iter()
        .find(|p| **p == name)
        .map(|p| vec![*p])
        .ok_or_else(|| {
            Error::Invalid(format!(
                "--policy must be one of {}, all; got `{name}`",
                POLICY_NAMES.join(", ")
            ))
        })
}

/// Like [`sim::run`], calling `progress(done_fraction)` as simulated time advances.
pub fn run_with_progress(
    scenario: &Scenario,
    trace: &Trace,
    policy: &mut dyn Policy,
    progress: &mut dyn FnMut(f64),
) -> Result<Report> {
    let mut p = Pipeline::new(scenario.clone(), trace.clone()).map_err(sim_err)?;
    let end = p.end();
    let every = policy
        .interval()
        .max(Duration::from_secs_f64(scenario.step));
    let mut next = Duration::ZERO;
    while next <= end {
        p.advance_to(next);
        let signals = p.signals();
        let decision = policy.decide(p.graph(), &signals, next);
        p.apply(&decision);
        progress(next.as_secs_f64() / end.as_secs_f64().max(1e-9));
        next += every;
    }
    p.advance_to(end);
    progress(1.0);
    Ok(p.report(policy.name()))
}

fn sim_err(e: levee_scaler::Error) -> Error {
    Error::Invalid(e.to_string())
}

/// Runs the simulation(s) and writes `report.md` and `{scenario}-{policy}.svg` into `opts.out`.
pub fn run(opts: &SimOptions, progress: &mut dyn FnMut(&str, f64)) -> Result<SimOutput> {
    let names = policies(&opts.policy)?;
    let scenario = Scenario::named(&opts.scenario).map_err(sim_err)?;
    let trace = Trace::load(&opts.trace)
        .map_err(|e| Error::Invalid(format!("--trace {}: {e}", opts.trace.display())))?;
    scenario
        .check(&trace)
        .map_err(|e| Error::Invalid(format!("--trace {}: {e}", opts.trace.display())))?;
    let mut reports = Vec::new();
    for name in names {
        let mut policy = levee_scaler::by_name(name).map_err(sim_err)?;
        let report = run_with_progress(&scenario, &trace, policy.as_mut(), &mut |f| {
            progress(name, f)
        })?;
        reports.push(report);
    }
    let table = sim::compare(&reports);
    let files = write(&opts.out, &scenario, &opts.trace, &reports, &table)?;
    Ok(SimOutput {
        reports,
        table,
        files,
    })
}

fn write(
    out: &Path,
    scenario: &Scenario,
    trace: &Path,
    reports: &[Report],
    table: &str,
) -> Result<Vec<PathBuf>> {
    let io = |what: &Path, e| Error::io(format!("writing {}", what.display()), e);
    std::fs::create_dir_all(out).map_err(|e| io(out, e))?;
    let mut files = Vec::new();
    let mut md = format!(
        "# levee sim: {} ({})\n\nTrace: `{}`. {}\n\n{table}\n",
        scenario.name,
        reports
            .iter()
            .map(|r| r.policy.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        trace.display(),
        scenario.description,
    );
    for r in reports {
        let svg = out.join(format!("{}-{}.svg", r.scenario, r.policy));
        std::fs::write(&svg, r.to_svg()).map_err(|e| io(&svg, e))?;
        md.push_str(&format!(
            "\n## {}\n\nEnd-to-end delay p50 {:.1} s, p99 {:.1} s; errors {}; worker-seconds {:.0}.\n\n![{}]({})\n",
            r.policy,
            r.e2e_p50,
            r.e2e_p99,
            r.total_errors(),
            r.total_worker_seconds(),
            r.policy,
            svg.file_name().and_then(|n| n.to_str()).unwrap_or_default(),
        ));
        files.push(svg);
    }
    let report = out.join("report.md");
    std::fs::write(&report, md).map_err(|e| io(&report, e))?;
    files.insert(0, report);
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_a_short_trace_and_writes_the_report() {
        let dir = tempfile::tempdir().unwrap();
        let trace = dir.path().join("t.csv");
        std::fs::write(&trace, "0,inbound,100\n120,inbound,200\n300,inbound,0\n").unwrap();
        let mut seen = Vec::new();
        let out = run(
            &SimOptions {
                trace,
                policy: "all".into(),
                scenario: "jan2025".into(),
                out: dir.path().join("out"),
            },
            &mut |p, f| seen.push((p.to_string(), f)),
        )
        .unwrap();
        assert_eq!(out.reports.len(), 3);
        assert!(out.table.contains("coordinated") && out.table.contains("lambda-like"));
        assert_eq!(out.files.len(), 4);
        assert!(out.files.iter().all(|f| f.exists()));
        assert!(seen.iter().any(|(p, f)| p == "independent" && *f == 1.0));
    }

    #[test]
    fn bad_policy_and_trace_are_named() {
        assert!(
            policies("keda-ish")
                .unwrap_err()
                .to_string()
                .contains("--policy")
        );
        let dir = tempfile::tempdir().unwrap();
        let trace = dir.path().join("t.csv");
        std::fs::write(&trace, "0,nosuch,10\n10,nosuch,0\n").unwrap();
        let e = run(
            &SimOptions {
                trace,
                policy: "coordinated".into(),
                scenario: "jan2025".into(),
                out: dir.path().join("out"),
            },
            &mut |_, _| {},
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("--trace") && e.contains("nosuch"), "{e}");
    }
}
