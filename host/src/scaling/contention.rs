//! What a surge will do to a worker's speed on one host. Every function's workers share the
//! host's cores, so a worker's service rate, measured per second of occupancy, falls as the host
//! gets busier: at 10× the load a pool sized on the rate measured before the step is too small,
//! and the next readings lower the rate and raise the pool step by step (seconds, not one).
//!
//! The model is a processor-sharing host: a message's occupancy is its unloaded occupancy over
//! `1 − ρ`, ρ being the share of the host's cores in use (the larger of this process's share of
//! the cores it may use and the whole host's busy share, since other processes slow it too). When a surge is fresh the host's
//! CPU use is expected to grow with the throughput the surge asks for (over what the surging
//! functions did, both measured over the last reading's interval that ended before the surge), up to
//! [`PLANNED_UTILIZATION`], and the pools are sized for service rates `(1 − ρ') / (1 − ρ)` times
//! the measured ones (the signals' `contention` factor; the capacities the policy's backpressure
//! plans with stay measured, since on one host a downstream slowed by the same cores is no reason
//! to hold its upstream back). Only the host scaler (`levee up`) applies it, only in the first [`REACTING`] of a surge, and
//! never to raise a rate: after that, readings under the new load measure the rate themselves,
//! and the scale-down window keeps the pools the correction sized.

use std::time::Duration;

/// How long after a surge is first seen its readings are corrected: long enough for the
/// decisions that size the pools, short enough that readings under the new load (noisy, and
/// from a host that may saturate below [`PLANNED_UTILIZATION`]) are taken as they are.
pub const REACTING: Duration = Duration::from_secs(1);

/// The busiest the host is planned to get: past it a worker added buys nothing but a share of
/// the same cores.
pub const PLANNED_UTILIZATION: f64 = 0.9;

/// The factor on every measured service rate when the host is at `rho` (0..1) and the surge asks
/// for `load_ratio` times the throughput measured at that utilisation: 1 unless the load grows.
pub fn service_rate_factor(rho: f64, load_ratio: f64) -> f64 {
    if !rho.is_finite() || !load_ratio.is_finite() || load_ratio <= 1.0 {
        return 1.0;
    }
    let rho = rho.clamp(0.0, 0.99);
    let planned = (rho * load_ratio).min(PLANNED_UTILIZATION);
    if planned <= rho {
        1.0
    } else {
        (1.0 - planned) / (1.0 - rho)
    }
}

/// CPU time this process has used so far (all threads).
pub fn process_cpu() -> Option<Duration> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec through a valid pointer. (Reading
    // /proc/self/stat instead would avoid the block but counts in 10 ms ticks.)
    #[allow(unsafe_code)]
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    (rc == 0).then(|| Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32))
}

/// The host's CPU time so far from `/proc/stat`, in clock ticks: (busy, total) over all cores.
/// Other processes count too: a load generator or a noisy neighbour slows the workers as much
/// as the platform's own threads do.
pub fn host_cpu_ticks() -> Option<(u64, u64)> {
    parse_proc_stat(&std::fs::read_to_string("/proc/stat").ok()?)
}

fn parse_proc_stat(text: &str) -> Option<(u64, u64)> {
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|x| x.parse().ok())
        .collect::<Option<_>>()?;
    // user nice system idle iowait irq softirq steal (guest time is inside user already).
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3)? + v.get(4).copied().unwrap_or(0);
    Some((total - idle, total))
}

/// The host's busy share between two `/proc/stat` readings, within 0..1.
pub fn host_utilization(before: (u64, u64), now: (u64, u64)) -> Option<f64> {
    let total = now.1.checked_sub(before.1).filter(|t| *t > 0)?;
    Some((now.0.saturating_sub(before.0) as f64 / total as f64).clamp(0.0, 1.0))
}

/// The cores this process may use (cgroup quotas included).
pub fn cores() -> f64 {
    std::thread::available_parallelism().map_or(1, |n| n.get()) as f64
}

/// The share of `cores` used between two CPU readings `wall` apart, within 0..1.
pub fn utilization(cpu_before: Duration, cpu_now: Duration, wall: Duration, cores: f64) -> f64 {
    let wall = wall.as_secs_f64() * cores;
    if wall <= 0.0 {
        return 0.0;
    }
    (cpu_now.saturating_sub(cpu_before).as_secs_f64() / wall).clamp(0.0, 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tenfold_step_on_a_quiet_host_plans_for_the_busy_host() {
        // 9% busy, 10x the throughput: 90% busy, so each worker goes 0.1/0.91 as fast.
        let k = service_rate_factor(0.09, 10.0);
        assert!((k - 0.1 / 0.91).abs() < 1e-9, "{k}");
        // A smaller step on a quiet host: 10% -> 30%.
        let k = service_rate_factor(0.1, 3.0);
        assert!((k - 0.7 / 0.9).abs() < 1e-9, "{k}");
    }

    #[test]
    fn no_growth_or_a_busy_host_leaves_the_rates_alone() {
        assert_eq!(service_rate_factor(0.5, 1.0), 1.0);
        assert_eq!(service_rate_factor(0.5, 0.5), 1.0);
        // Already past the planned utilisation: the measured rates are the busy host's.
        assert_eq!(service_rate_factor(0.95, 3.0), 1.0);
        assert_eq!(service_rate_factor(f64::NAN, 3.0), 1.0);
        assert_eq!(service_rate_factor(0.2, f64::INFINITY), 1.0);
    }

    #[test]
    fn utilization_is_cpu_over_wall_times_cores() {
        let u = utilization(
            Duration::from_millis(100),
            Duration::from_millis(400),
            Duration::from_millis(500),
            2.0,
        );
        assert!((u - 0.3).abs() < 1e-9, "{u}");
        assert_eq!(
            utilization(
                Duration::ZERO,
                Duration::from_secs(9),
                Duration::from_secs(1),
                2.0
            ),
            1.0
        );
        assert_eq!(
            utilization(Duration::ZERO, Duration::ZERO, Duration::ZERO, 2.0),
            0.0
        );
    }

    #[test]
    fn host_utilization_is_busy_over_total_ticks() {
        let a = parse_proc_stat("cpu  100 0 50 800 50 0 0 0 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\n");
        assert_eq!(a, Some((150, 1000)));
        let b = parse_proc_stat("cpu  160 0 70 820 50 0 0 0 0 0\n");
        assert_eq!(b, Some((230, 1100)));
        assert_eq!(host_utilization(a.unwrap(), b.unwrap()), Some(0.8));
        assert_eq!(host_utilization(b.unwrap(), b.unwrap()), None);
        assert_eq!(parse_proc_stat("intr 1 2 3\n"), None);
    }

    #[test]
    fn process_cpu_grows_with_work() {
        let before = process_cpu().expect("the process clock");
        let mut x = 0u64;
        let start = std::time::Instant::now();
        while start.elapsed() < Duration::from_millis(30) {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
        }
        let after = process_cpu().expect("the process clock");
        assert!(after > before, "{before:?} -> {after:?} ({x})");
    }
}
