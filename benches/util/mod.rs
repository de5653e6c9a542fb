//! Benchmark support: percentiles, the report table, and what /proc tells about a process.
#![allow(dead_code)]

/// The `p` quantile of sorted samples (nearest rank).
pub fn pct(v: &[f64], p: f64) -> f64 {
    v[((v.len() - 1) as f64 * p).round() as usize]
}

/// The column titles for [`report`] rows, under a heading.
pub fn header(what: &str) {
    println!("\n{what}");
    println!(
        "{:<52} {:>6} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "(ms)", "n", "min", "median", "p90", "p99", "max"
    );
}

/// Sorts the samples and prints min / median / p90 / p99 / max.
pub fn report(name: &str, v: &mut [f64]) {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!(
        "{name:<52} {:>6} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3}",
        v.len(),
        v[0],
        pct(v, 0.5),
        pct(v, 0.9),
        pct(v, 0.99),
        v[v.len() - 1]
    );
}

/// CPU time of every thread of `pid`, in ns (schedstat: finer than the tick counts of stat).
pub fn cpu_ns(pid: i32) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| {
            d.filter_map(|t| {
                let s = std::fs::read_to_string(t.ok()?.path().join("schedstat")).ok()?;
                s.split_whitespace().next()?.parse::<u64>().ok()
            })
            .sum()
        })
        .unwrap_or(0)
}

/// A `/proc/PID/status` memory field (`VmRSS`, `RssAnon`, `RssFile`), in KiB.
pub fn mem_kib(pid: i32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}
