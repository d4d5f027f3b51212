//! Simulation reports: per function figures, a markdown table, a side-by-side comparison of policies and
//! a hand-written SVG chart of backlog and workers over time.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

/// One time-series sample.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SeriesPoint {
    /// Seconds since start.
    pub t: f64,
    /// Messages waiting (visible + waiting for retry).
    pub backlog: u64,
    /// Workers requested (ready + starting).
    pub workers: u32,
    /// Workers ready.
    pub ready: u32,
}

/// Figures for one function. Everything but `arrivals`/`processed`/`pending` counts only after warm-up.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FunctionReport {
    /// Function name.
    pub name: String,
    /// Messages that entered its queue (whole run).
    pub arrivals: u64,
    /// Messages it processed successfully (whole run).
    pub processed: u64,
    /// Messages still waiting at the end.
    pub pending: u64,
    /// Attempts that failed because a store it reads was over capacity.
    pub errors: u64,
    /// Largest backlog.
    pub max_backlog: u64,
    /// Time-averaged backlog.
    pub mean_backlog: f64,
    /// Median delay from ingress to completion here, seconds.
    pub p50_delay: f64,
    /// 99th percentile of that delay, seconds.
    pub p99_delay: f64,
    /// Worker-seconds paid (ready + starting).
    pub worker_seconds: f64,
    /// Most workers at once.
    pub peak_workers: u32,
    /// Backlog and workers over time.
    pub series: Vec<SeriesPoint>,
}

/// The result of one simulated run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// Scenario name.
    pub scenario: String,
    /// Policy name.
    pub policy: String,
    /// Statistics start (end of warm-up), seconds.
    pub start: f64,
    /// End of the run, seconds.
    pub end: f64,
    /// Median end-to-end delay (ingress to completion at a sink), seconds.
    pub e2e_p50: f64,
    /// 99th percentile end-to-end delay, seconds.
    pub e2e_p99: f64,
    /// Per function figures, in model order.
    pub functions: Vec<FunctionReport>,
}

impl Report {
    /// Errors over all functions.
    pub fn total_errors(&self) -> u64 {
        self.functions.iter().map(|f| f.errors).sum()
    }

    /// Worker-seconds over all functions.
    pub fn total_worker_seconds(&self) -> f64 {
        self.functions.iter().map(|f| f.worker_seconds).sum()
    }

    /// A function's figures by name.
    pub fn function(&self, name: &str) -> Option<&FunctionReport> {
        self.functions.iter().find(|f| f.name == name)
    }

    /// A markdown table, one row per function and a total row.
    pub fn table(&self) -> String {
        compare(std::slice::from_ref(self))
    }

    /// A self-contained SVG: one panel per function with its backlog (filled, left axis) and workers
    /// (line, right axis) over time.
    pub fn to_svg(&self) -> String {
        const W: f64 = 900.0;
        const PANEL: f64 = 150.0;
        const LEFT: f64 = 70.0;
        const RIGHT: f64 = 60.0;
        const TOP: f64 = 40.0;
        let plot_w = W - LEFT - RIGHT;
        let h = TOP + PANEL * self.functions.len() as f64 + 30.0;
        let mut s = String::new();
        let _ = write!(
            s,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{h}" viewBox="0 0 {W} {h}" font-family="sans-serif" font-size="11">"#
        );
        let _ = write!(s, r#"<rect width="{W}" height="{h}" fill="white"/>"#);
        let _ = write!(
            s,
            r#"<text x="{LEFT}" y="20" font-size="14" font-weight="bold">{} under {}: backlog (blue, left) and workers (orange, right); e2e p50 {:.1}s p99 {:.1}s, errors {}, {:.0} worker-s</text>"#,
            esc(&self.scenario),
            esc(&self.policy),
            self.e2e_p50,
            self.e2e_p99,
            self.total_errors(),
            self.total_worker_seconds()
        );
        let t_max = self.end.max(1.0);
        for (i, f) in self.functions.iter().enumerate() {
            let y0 = TOP + PANEL * i as f64;
            let ph = PANEL - 35.0;
            let b_max = f.series.iter().map(|p| p.backlog).max().unwrap_or(0).max(1) as f64;
            let w_max = f.series.iter().map(|p| p.workers).max().unwrap_or(0).max(1) as f64;
            let x = |t: f64| LEFT + plot_w * t / t_max;
            let yb = |b: f64| y0 + ph - ph * b / b_max;
            let yw = |w: f64| y0 + ph - ph * w / w_max;
            let _ = write!(
                s,
                r##"<rect x="{LEFT}" y="{y0}" width="{plot_w}" height="{ph}" fill="#fafafa" stroke="#999"/>"##
            );
            let _ = write!(
                s,
                r#"<text x="{}" y="{}" font-weight="bold">{} (max backlog {}, peak workers {}, errors {})</text>"#,
                LEFT + 5.0,
                y0 + 13.0,
                esc(&f.name),
                f.max_backlog,
                f.peak_workers,
                f.errors
            );
            let _ = write!(
                s,
                r##"<text x="{}" y="{}" text-anchor="end" fill="#1f77b4">{}</text>"##,
                LEFT - 5.0,
                y0 + 10.0,
                b_max as u64
            );
            let _ = write!(
                s,
                r##"<text x="{}" y="{}" text-anchor="end" fill="#1f77b4">0</text>"##,
                LEFT - 5.0,
                y0 + ph
            );
            let _ = write!(
                s,
                r##"<text x="{}" y="{}" fill="#ff7f0e">{}</text>"##,
                LEFT + plot_w + 5.0,
                y0 + 10.0,
                w_max as u64
            );
            let _ = write!(
                s,
                r##"<text x="{}" y="{}" fill="#ff7f0e">0</text>"##,
                LEFT + plot_w + 5.0,
                y0 + ph
            );
            if !f.series.is_empty() {
                let mut area = format!("M{:.1},{:.1}", x(f.series[0].t), yb(0.0));
                for p in &f.series {
                    let _ = write!(area, " L{:.1},{:.1}", x(p.t), yb(p.backlog as f64));
                }
                let _ = write!(
                    area,
                    " L{:.1},{:.1} Z",
                    x(f.series[f.series.len() - 1].t),
                    yb(0.0)
                );
                let _ = write!(
                    s,
                    r##"<path d="{area}" fill="#1f77b4" fill-opacity="0.35" stroke="#1f77b4"/>"##
                );
                let mut line = String::new();
                let mut last: Option<f64> = None;
                for p in &f.series {
                    let (px, py) = (x(p.t), yw(p.workers as f64));
                    match last {
                        None => {
                            let _ = write!(line, "M{px:.1},{py:.1}");
                        }
                        Some(ly) => {
                            let _ = write!(line, " L{px:.1},{ly:.1} L{px:.1},{py:.1}");
                        }
                    }
                    last = Some(py);
                }
                let _ = write!(
                    s,
                    r##"<path d="{line}" fill="none" stroke="#ff7f0e" stroke-width="1.5"/>"##
                );
            }
            let steps = 6;
            for k in 0..=steps {
                let t = t_max * k as f64 / steps as f64;
                let _ = write!(
                    s,
                    r##"<text x="{:.1}" y="{:.1}" text-anchor="middle" fill="#555">{:.0}s</text>"##,
                    x(t),
                    y0 + ph + 13.0,
                    t
                );
            }
        }
        s.push_str("</svg>\n");
        s
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A markdown table comparing runs side by side: one row per policy × function, then a total row per
/// policy (end-to-end delays at the sinks, errors and worker-seconds summed, cost relative to the
/// cheapest run).
pub fn compare(reports: &[Report]) -> String {
    let mut s = String::new();
    s.push_str("| policy | function | max backlog | mean backlog | p50 delay (s) | p99 delay (s) | errors | worker-s | peak workers | pending |\n");
    s.push_str("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    let cheapest = reports
        .iter()
        .map(Report::total_worker_seconds)
        .fold(f64::INFINITY, f64::min);
    for r in reports {
        for f in &r.functions {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {:.1} | {:.1} | {:.1} | {} | {:.0} | {} | {} |",
                r.policy,
                f.name,
                f.max_backlog,
                f.mean_backlog,
                f.p50_delay,
                f.p99_delay,
                f.errors,
                f.worker_seconds,
                f.peak_workers,
                f.pending
            );
        }
    }
    for r in reports {
        let total = r.total_worker_seconds();
        let _ = writeln!(
            s,
            "| **{}** | **total (end to end)** | {} | {:.1} | {:.1} | {:.1} | {} | {:.0} ({:+.1}% vs cheapest) | {} | {} |",
            r.policy,
            r.functions.iter().map(|f| f.max_backlog).max().unwrap_or(0),
            r.functions.iter().map(|f| f.mean_backlog).sum::<f64>(),
            r.e2e_p50,
            r.e2e_p99,
            r.total_errors(),
            total,
            if cheapest > 0.0 {
                (total / cheapest - 1.0) * 100.0
            } else {
                0.0
            },
            r.functions.iter().map(|f| f.peak_workers).sum::<u32>(),
            r.functions.iter().map(|f| f.pending).sum::<u64>()
        );
    }
    s
}
