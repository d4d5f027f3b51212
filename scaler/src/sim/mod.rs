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

#[cfg(test)]
mod tests {
    use super::*;

    fn jan() -> (Scenario, Trace) {
        (Scenario::jan2025(), Trace::parse(JAN2025_TRACE).unwrap())
    }

    #[test]
    fn every_arrival_is_processed_or_pending_under_every_policy() {
        let (sc, tr) = jan();
        for name in crate::policy::POLICY_NAMES {
            let mut p = Pipeline::new(sc.clone(), tr.clone()).unwrap();
            let mut policy = crate::policy::by_name(name).unwrap();
            let end = p.end();
            let mut t = std::time::Duration::ZERO;
            while t <= end {
                p.advance_to(t);
                let s = p.signals();
                let d = policy.decide(p.graph(), &s, t);
                p.apply(&d);
                t += policy.interval();
            }
            for (f, arrivals, processed, pending) in p.conservation() {
                assert_eq!(arrivals, processed + pending, "{name}/{f}");
            }
            let inbound = p.conservation()[0].1 as f64;
            let expected = tr.total("inbound");
            assert!(
                (inbound / expected - 1.0).abs() < 0.01,
                "{name}: {inbound} arrivals vs {expected} in the trace"
            );
        }
    }

    #[test]
    fn jan2025_coordinated_avoids_the_bottleneck_within_10_percent_of_the_cheapest() {
        let (sc, tr) = jan();
        let reports = compare_policies(&sc, &tr).unwrap();
        let by = |n: &str| reports.iter().find(|r| r.policy == n).unwrap();
        let (c, i, l) = (by("coordinated"), by("independent"), by("lambda-like"));
        let auto = |r: &Report| r.function("automation").unwrap().clone();
        assert_eq!(c.total_errors(), 0, "{}", compare(&reports));
        assert!(
            i.total_errors() > 10_000 && l.total_errors() > 0,
            "{}",
            compare(&reports)
        );
        assert!(
            auto(c).mean_backlog * 5.0 < auto(i).mean_backlog,
            "{}",
            compare(&reports)
        );
        assert!(
            auto(c).mean_backlog * 5.0 < auto(l).mean_backlog,
            "{}",
            compare(&reports)
        );
        assert!(c.e2e_p99 * 3.0 < i.e2e_p99, "{}", compare(&reports));
        let cheapest = reports
            .iter()
            .map(Report::total_worker_seconds)
            .fold(f64::INFINITY, f64::min);
        assert!(
            c.total_worker_seconds() <= cheapest * 1.10,
            "{}",
            compare(&reports)
        );
        assert!(
            reports
                .iter()
                .all(|r| r.functions.iter().all(|f| f.pending == 0)),
            "all drained by the end"
        );
    }

    #[test]
    fn apr2020_surge_cannot_starve_the_other_apis_under_coordinated() {
        let sc = Scenario::apr2020();
        let tr = Trace::parse(APR2020_TRACE).unwrap();
        let reports = compare_policies(&sc, &tr).unwrap();
        for r in &reports {
            let kb = r.function("kb").unwrap();
            let login = r.function("login").unwrap();
            if r.policy == "coordinated" {
                assert_eq!(kb.errors + login.errors, 0);
                assert!(
                    kb.p99_delay < 2.0 && login.p99_delay < 2.0,
                    "{}",
                    compare(&reports)
                );
            } else {
                assert!(
                    kb.errors > 0 && login.errors > 0,
                    "{}: the surge spills over",
                    r.policy
                );
            }
        }
    }

    #[test]
    fn reports_render_as_markdown_and_svg() {
        let (sc, tr) = jan();
        let mut p = crate::policy::by_name("coordinated").unwrap();
        let r = run(&sc, &tr, p.as_mut()).unwrap();
        let table = r.table();
        assert_eq!(table.lines().count(), 2 + sc.functions.len() + 1);
        assert!(table.contains("| coordinated | automation |"));
        let svg = r.to_svg();
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        for f in &sc.functions {
            assert!(svg.contains(&format!("{} (max backlog", f.name)));
        }
        assert!(r.function("automation").unwrap().series.len() > 500);
    }

    #[test]
    fn scenario_and_trace_mismatch_is_named() {
        let tr = Trace::parse("0,nosuch,1\n10,nosuch,0").unwrap();
        let err = Pipeline::new(Scenario::jan2025(), tr)
            .unwrap_err()
            .to_string();
        assert!(err.contains("nosuch") && err.contains("jan2025"), "{err}");
        assert!(
            Scenario::named("dec1999")
                .unwrap_err()
                .to_string()
                .contains("jan2025, apr2020")
        );
    }
}
