//! The canary's verdict: the candidate's failure rate and latency against the stable
//! version's over the same window, on this host. Pure, so the rules are tested on numbers.

use crate::manifest::CanarySpec;
use crate::runtime::WindowSnapshot;

/// What to do with a canary now.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Keep the current step.
    Hold,
    /// The step's window passed without a regression: next step.
    Promote,
    /// A regression: take it out, with the reason.
    Reject(String),
}

/// Judges a canary `held_ms` into its step from each version's window.
pub fn judge(
    spec: &CanarySpec,
    stable: &WindowSnapshot,
    canary: &WindowSnapshot,
    held_ms: u64,
) -> Verdict {
    let (sr, cr) = (stable.failure_rate(), canary.failure_rate());
    if canary.failed >= spec.min_failures && cr > sr + spec.max_failure_increase {
        return Verdict::Reject(format!(
            "failure rate {:.1}% ({} of {}) against the stable version's {:.1}% ({} of {}) over the same window",
            cr * 100.0,
            canary.failed,
            canary.total(),
            sr * 100.0,
            stable.failed,
            stable.total()
        ));
    }
    let enough = canary.total() >= spec.min_samples && stable.total() >= spec.min_samples;
    let latency_cap = stable.p95_ms * spec.max_latency_ratio + spec.latency_slack_ms;
    if enough && canary.p95_ms > latency_cap {
        return Verdict::Reject(format!(
            "p95 latency {:.1} ms against the stable version's {:.1} ms (the limit is {:.1} ms)",
            canary.p95_ms, stable.p95_ms, latency_cap
        ));
    }
    if held_ms >= spec.window_s * 1000 && canary.total() >= spec.min_samples {
        return Verdict::Promote;
    }
    Verdict::Hold
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(ok: u64, failed: u64, p95_ms: f64) -> WindowSnapshot {
        WindowSnapshot { ok, failed, p95_ms }
    }

    #[test]
    fn failures_above_the_stable_rate_reject_the_canary() {
        let spec = CanarySpec::default();
        let v = judge(&spec, &w(1000, 0, 1.0), &w(48, 2, 1.0), 1000);
        assert!(
            matches!(&v, Verdict::Reject(r) if r.contains("4.0%")),
            "{v:?}"
        );
    }

    #[test]
    fn one_failure_or_the_stable_rate_is_no_regression() {
        let spec = CanarySpec::default();
        assert_eq!(
            judge(&spec, &w(1000, 0, 1.0), &w(49, 1, 1.0), 1000),
            Verdict::Hold
        );
        // Both versions fail the same bad messages.
        assert_eq!(
            judge(&spec, &w(900, 100, 1.0), &w(45, 5, 1.0), 1000),
            Verdict::Hold
        );
    }

    #[test]
    fn slow_canaries_are_rejected_only_with_enough_samples() {
        let spec = CanarySpec::default();
        assert_eq!(
            judge(&spec, &w(100, 0, 2.0), &w(5, 0, 50.0), 1000),
            Verdict::Hold
        );
        assert!(matches!(
            judge(&spec, &w(100, 0, 2.0), &w(30, 0, 50.0), 1000),
            Verdict::Reject(_)
        ));
        // 2 ms against 1 ms is within the slack.
        assert_eq!(
            judge(&spec, &w(100, 0, 1.0), &w(30, 0, 2.0), 1000),
            Verdict::Hold
        );
    }

    #[test]
    fn a_healthy_canary_is_promoted_after_its_window() {
        let spec = CanarySpec {
            window_s: 10,
            ..Default::default()
        };
        assert_eq!(
            judge(&spec, &w(100, 0, 1.0), &w(30, 0, 1.0), 9_999),
            Verdict::Hold
        );
        assert_eq!(
            judge(&spec, &w(100, 0, 1.0), &w(30, 0, 1.0), 10_000),
            Verdict::Promote
        );
        assert_eq!(
            judge(&spec, &w(100, 0, 1.0), &w(3, 0, 1.0), 60_000),
            Verdict::Hold,
            "not without enough samples"
        );
    }
}
