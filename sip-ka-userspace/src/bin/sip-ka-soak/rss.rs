//! The soak's readings: the daemon's resident memory, its trend, and the
//! table sizes the daemon logs on its way out.

use anyhow::{Context as _, Result};

/// VmRSS of `pid`, in KiB.
pub fn rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status (is sip-ka still running?)"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("no VmRSS line")
}

/// The least-squares slope of (seconds, KiB) samples, in KiB per minute
/// (0 with fewer than two samples).
pub fn slope_kib_per_min(samples: &[(f64, u64)]) -> f64 {
    let n = samples.len() as f64;
    if samples.len() < 2 {
        return 0.0;
    }
    let mean_t = samples.iter().map(|s| s.0).sum::<f64>() / n;
    let mean_k = samples.iter().map(|s| s.1 as f64).sum::<f64>() / n;
    let (mut num, mut den) = (0.0, 0.0);
    for (t, k) in samples {
        num += (t - mean_t) * (*k as f64 - mean_k);
        den += (t - mean_t) * (t - mean_t);
    }
    if den == 0.0 {
        0.0
    } else {
        num / den * 60.0
    }
}

/// (live dialogs, bindings) from the last `edge: N live dialog(s), M
/// binding(s)` line of the daemon's log.
pub fn table_sizes(log: &str) -> Option<(u64, u64)> {
    let line = log.lines().rev().find(|l| l.contains(" live dialog(s)"))?;
    let after = line.split("edge: ").nth(1)?;
    let mut words = after.split_whitespace();
    let dialogs = words.next()?.parse().ok()?;
    let bindings = after
        .split(", ")
        .nth(1)?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some((dialogs, bindings))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slope_of_a_line_and_of_a_flat_series() {
        let rising: Vec<(f64, u64)> = (0..10).map(|i| (i as f64 * 10.0, 1000 + i * 5)).collect();
        assert!((slope_kib_per_min(&rising) - 30.0).abs() < 1e-9);
        let flat: Vec<(f64, u64)> = (0..10).map(|i| (i as f64 * 10.0, 1000)).collect();
        assert_eq!(slope_kib_per_min(&flat), 0.0);
        assert_eq!(slope_kib_per_min(&flat[..1]), 0.0);
    }

    #[test]
    fn table_sizes_from_the_exit_line() {
        let log = "2026-01-01T00:00:00Z  INFO sip_ka::edge::state: edge: 3 live dialog(s), 7 binding(s); upstream up rtt=0.6ms;\n\
                   2026-01-01T00:00:01Z  INFO sip_ka::edge::state: edge: 0 live dialog(s), 0 binding(s); upstream unknown rtt=unknown;\n";
        assert_eq!(table_sizes(log), Some((0, 0)));
        assert_eq!(table_sizes("nothing"), None);
    }
}
