//! Arrival traces: piecewise-constant ingress rates per function.
//!
//! CSV format, one row per change: `t_seconds,function,rate_per_second`. Each row sets the rate of
//! messages arriving from outside the pipeline into `function`'s queue from `t_seconds` on, until the
//! next row for the same function. A function's rate is 0 before its first row. The trace ends at the
//! largest `t_seconds` in the file (so end a trace with a row at its end time, e.g. `3600,inbound,0`).
//! An optional header row `t_seconds,function,rate_per_second`, blank lines and lines starting with `#`
//! are ignored. Rows may come in any order; two rows for the same function and time are an error.

use std::collections::BTreeMap;
use std::path::Path;

use crate::error::{Error, Result};

/// Longest trace accepted: one day. The simulation steps once per policy interval (100 ms to
/// 1 s), so this keeps a run under a minute; `1e20` would overflow the step counter and `1e9`
/// would run for days.
pub const MAX_TRACE_SECONDS: f64 = 86_400.0;
/// Highest rate accepted, messages per second (far above any pipeline the models describe).
pub const MAX_RATE: f64 = 10_000_000.0;

/// A parsed trace.
#[derive(Debug, Clone, PartialEq)]
pub struct Trace {
    rates: BTreeMap<String, Vec<(f64, f64)>>,
    end: f64,
}

impl Trace {
    /// Parses CSV text (see the module doc for the format).
    pub fn parse(text: &str) -> Result<Self> {
        let mut rates: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
        let mut end: f64 = 0.0;
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let row = raw.trim();
            if row.is_empty() || row.starts_with('#') {
                continue;
            }
            let fields: Vec<&str> = row.split(',').map(str::trim).collect();
            if fields.len() != 3 {
                return Err(Error::Trace {
                    line,
                    message: format!(
                        "expected 3 fields t_seconds,function,rate_per_second, got {}",
                        fields.len()
                    ),
                });
            }
            if fields[0] == "t_seconds" {
                continue;
            }
            let t: f64 = fields[0].parse().map_err(|_| Error::Trace {
                line,
                message: format!("t_seconds {:?} is not a number", fields[0]),
            })?;
            if !(t.is_finite() && (0.0..=MAX_TRACE_SECONDS).contains(&t)) {
                return Err(Error::Trace {
                    line,
                    message: format!(
                        "t_seconds must be 0 to {MAX_TRACE_SECONDS} (one day), got {t}"
                    ),
                });
            }
            if fields[1].is_empty() {
                return Err(Error::Trace {
                    line,
                    message: "function name is empty".into(),
                });
            }
            let rate: f64 = fields[2].parse().map_err(|_| Error::Trace {
                line,
                message: format!("rate_per_second {:?} is not a number", fields[2]),
            })?;
            if !(rate.is_finite() && (0.0..=MAX_RATE).contains(&rate)) {
                return Err(Error::Trace {
                    line,
                    message: format!("rate_per_second must be 0 to {MAX_RATE}, got {rate}"),
                });
            }
            let rows = rates.entry(fields[1].to_string()).or_default();
            if rows.iter().any(|&(t0, _)| t0 == t) {
                return Err(Error::Trace {
                    line,
                    message: format!("a second rate for {:?} at t = {t}", fields[1]),
                });
            }
            rows.push((t, rate));
            end = end.max(t);
        }
        if rates.is_empty() {
            return Err(Error::Trace {
                line: 0,
                message: "the trace has no rows".into(),
            });
        }
        for rows in rates.values_mut() {
            rows.sort_by(|a, b| a.0.total_cmp(&b.0));
        }
        Ok(Self { rates, end })
    }

    /// Reads and parses a CSV file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::Trace {
            line: 0,
            message: format!("cannot read {}: {e}", path.display()),
        })?;
        Self::parse(&text)
    }

    /// Ingress rate into `function` at time `t` (seconds).
    pub fn rate_at(&self, function: &str, t: f64) -> f64 {
        let Some(rows) = self.rates.get(function) else {
            return 0.0;
        };
        let idx = rows.partition_point(|&(t0, _)| t0 <= t);
        if idx == 0 { 0.0 } else { rows[idx - 1].1 }
    }

    /// Functions the trace sends to.
    pub fn functions(&self) -> impl Iterator<Item = &str> {
        self.rates.keys().map(String::as_str)
    }

    /// End of the trace in seconds.
    pub fn end(&self) -> f64 {
        self.end
    }

    /// Expected number of arrivals into `function` over the whole trace.
    pub fn total(&self, function: &str) -> f64 {
        let Some(rows) = self.rates.get(function) else {
            return 0.0;
        };
        rows.iter()
            .enumerate()
            .map(|(i, &(t, r))| r * (rows.get(i + 1).map_or(self.end, |n| n.0) - t))
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_piecewise_constant_rates() {
        let t = Trace::parse(
            "t_seconds,function,rate_per_second\n# comment\n0,a,10\n60,a,20\n\n30,b,1\n120,a,0\n",
        )
        .unwrap();
        assert_eq!(t.rate_at("a", 0.0), 10.0);
        assert_eq!(t.rate_at("a", 59.9), 10.0);
        assert_eq!(t.rate_at("a", 60.0), 20.0);
        assert_eq!(t.rate_at("b", 10.0), 0.0);
        assert_eq!(t.rate_at("b", 30.0), 1.0);
        assert_eq!(t.end(), 120.0);
        assert_eq!(t.total("a"), 600.0 + 1200.0);
        assert_eq!(t.total("b"), 90.0);
    }

    #[test]
    fn bad_rows_name_line_and_field() {
        for (text, want) in [
            ("0,a", "line 1: expected 3 fields"),
            ("0,a,1\nx,a,1", "line 2: t_seconds \"x\""),
            ("0,a,-1", "rate_per_second must be 0 to"),
            ("1e20,a,1", "t_seconds must be 0 to 86400 (one day)"),
            ("1e9,a,1", "t_seconds must be 0 to 86400 (one day)"),
            ("0,a,1e12", "rate_per_second must be 0 to"),
            ("0,a,1\n0,a,2", "a second rate for \"a\""),
            ("0,,1", "function name is empty"),
            ("# nothing", "no rows"),
        ] {
            let err = Trace::parse(text).unwrap_err().to_string();
            assert!(err.contains(want), "{err:?} should contain {want:?}");
        }
    }
}
