//! What the `bench_*` tests share: a process's resident memory and the rows
//! of the markdown tables they print (scripts/bench/*.sh keep the `|` lines).

/// A process's resident set size in KiB (`VmRSS` of `/proc/<pid>/status`).
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|line| line.starts_with("VmRSS:"))
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|kib| kib.parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS for process {pid}"))
}

/// One table row: p50, p90 and max of `samples`, with the goal.
pub fn row(what: &str, unit: &str, mut samples: Vec<f64>, goal: &str) {
    samples.sort_by(f64::total_cmp);
    assert!(!samples.is_empty(), "no samples for {what}");
    let at = |fraction: f64| {
        samples[((samples.len() as f64 * fraction) as usize).min(samples.len() - 1)]
    };
    println!(
        "| {what} ({} samples) | {:.2} {unit} | {:.2} {unit} | {:.2} {unit} | {goal} |",
        samples.len(),
        at(0.5),
        at(0.9),
        samples[samples.len() - 1]
    );
}
