//! Prints the policy comparison for a named scenario and writes one SVG per policy.
//! `cargo run -p levee-scaler --example compare -- jan2025 [out_dir]`

use levee_scaler::sim::{self, Scenario, Trace};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let name = std::env::args().nth(1).unwrap_or_else(|| "jan2025".into());
    let out = std::env::args().nth(2);
    let scenario = Scenario::named(&name)?;
    let text = match name.as_str() {
        "apr2020" => sim::APR2020_TRACE,
        _ => sim::JAN2025_TRACE,
    };
    let trace = Trace::parse(text)?;
    let reports = sim::compare_policies(&scenario, &trace)?;
    println!("{}", sim::compare(&reports));
    if let Some(dir) = out {
        for r in &reports {
            std::fs::write(format!("{dir}/{}-{}.svg", r.scenario, r.policy), r.to_svg())?;
        }
    }
    Ok(())
}
