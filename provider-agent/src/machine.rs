//! What this machine has: CPU cores and threads, memory and free storage. The
//! offered resources default to (and are capped by) these figures.

use std::collections::HashSet;
use std::path::Path;

#[derive(Debug, Clone, PartialEq)]
pub struct Machine {
    pub hostname: String,
    pub cores: u32,
    pub threads: u32,
    pub mem_gib: f64,
    /// Free space of the filesystem holding the agent's data dir.
    pub storage_gib: f64,
}

const GIB: f64 = 1024.0 * 1024.0 * 1024.0;

impl Machine {
    /// Probe the machine; `data_dir` (created if missing) decides which filesystem counts.
    pub fn probe(data_dir: &Path) -> Machine {
        let threads = std::thread::available_parallelism()
            .map(|n| n.get() as u32)
            .unwrap_or(1);
        let cores = physical_cores().unwrap_or(threads).min(threads).max(1);
        let mem_gib = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|text| {
                text.lines()
                    .find(|line| line.starts_with("MemTotal:"))
                    .and_then(|line| line.split_whitespace().nth(1))
                    .and_then(|kib| kib.parse::<f64>().ok())
            })
            .map(|kib| kib * 1024.0 / GIB)
            .unwrap_or(1.0);
        let _ = std::fs::create_dir_all(data_dir);
        let storage_gib = nix::sys::statvfs::statvfs(data_dir)
            .map(|stat| stat.blocks_available() as f64 * stat.fragment_size() as f64 / GIB)
            .unwrap_or(1.0);
        let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|name| name.trim().to_string())
            .ok()
            .filter(|name| !name.is_empty())
            .unwrap_or_else(|| "golem-provider".into());
        Machine {
            hostname,
            cores,
            threads,
            mem_gib,
            storage_gib,
        }
    }
}

/// Distinct (physical id, core id) pairs of `/proc/cpuinfo`.
fn physical_cores() -> Option<u32> {
    let text = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    let mut cores = HashSet::new();
    let mut physical = String::new();
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        match key.trim() {
            "physical id" => physical = value.trim().to_string(),
            "core id" => {
                cores.insert((physical.clone(), value.trim().to_string()));
            }
            _ => {}
        }
    }
    (!cores.is_empty()).then_some(cores.len() as u32)
}
