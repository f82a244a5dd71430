//! `golem-provider clean`: frees disk space the agent's activities left: the
//! work dirs of ended activities (`<data-dir>/work/<agreement>/<activity>`)
//! and the downloaded packages (`<data-dir>/cache/packages/`), by a policy:
//! older than `--older-than-days` (last change), then the least recently
//! changed until what is left fits `--max-size-gib`. The work dir of a live
//! activity (`state.json`) is never touched. VM images loaded into the Docker
//! engine are not removed here: the VM exe unit bounds its image cache itself
//! (the newest images, unless a container uses them). `--dry-run` lists what
//! would go and removes nothing.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::Context;
use clap::Args;
use serde::Serialize;

use crate::state::{self, STATE_FILE};

#[derive(Debug, Args)]
pub struct CleanArgs {
    /// Remove what has not changed for this many days.
    #[arg(long, value_name = "DAYS", default_value_t = 7)]
    pub older_than_days: u64,
    /// Then remove the least recently changed entries until the work dirs and
    /// packages together take at most this many GiB.
    #[arg(long, value_name = "GIB", allow_negative_numbers = true)]
    pub max_size_gib: Option<f64>,
    /// Show what would be removed; remove nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// What `clean` found and did.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CleanReport {
    pub dry_run: bool,
    pub removed: Vec<CleanEntry>,
    /// Bytes of the removed entries (would be, with `--dry-run`).
    pub freed_bytes: u64,
    /// Bytes left in work dirs and packages.
    pub kept_bytes: u64,
    /// Work dirs left alone because their activity is live.
    pub live_work_dirs: usize,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CleanEntry {
    pub path: PathBuf,
    /// `work-dir` or `package`.
    pub kind: &'static str,
    pub bytes: u64,
    /// Days since its last change.
    pub age_days: f64,
    /// `age` or `size`: which rule removes it.
    pub rule: &'static str,
}

struct Candidate {
    path: PathBuf,
    kind: &'static str,
    bytes: u64,
    changed: SystemTime,
}

/// Size and newest modification time of `path` (a file or a tree; links are
/// not followed).
fn size_and_changed(path: &Path) -> (u64, SystemTime) {
    let Ok(metadata) = std::fs::symlink_metadata(path) else {
        return (0, SystemTime::UNIX_EPOCH);
    };
    let mut changed = metadata.modified().unwrap_or(SystemTime::UNIX_EPOCH);
    if !metadata.is_dir() {
        return (metadata.len(), changed);
    }
    let mut bytes = 0;
    if let Ok(entries) = std::fs::read_dir(path) {
        for entry in entries.flatten() {
            let (inner_bytes, inner_changed) = size_and_changed(&entry.path());
            bytes += inner_bytes;
            changed = changed.max(inner_changed);
        }
    }
    (bytes, changed)
}

fn children(dir: &Path) -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| entries.flatten().map(|entry| entry.path()).collect())
        .unwrap_or_default();
    paths.sort();
    paths
}

/// Apply the policy to `data_dir` at `now`.
pub fn clean(data_dir: &Path, args: &CleanArgs, now: SystemTime) -> anyhow::Result<CleanReport> {
    if let Some(max) = args.max_size_gib {
        if !(max.is_finite() && max >= 0.0) {
            anyhow::bail!("invalid --max-size-gib {max}: give a size in GiB >= 0, e.g. 20");
        }
    }
    let agent_state = state::read(&data_dir.join(STATE_FILE))
        .with_context(|| format!("cannot read the agent's state in {}", data_dir.display()))?;
    let live: Vec<PathBuf> = agent_state
        .agreements
        .values()
        .flat_map(|agreement| agreement.activities.values())
        .filter(|activity| activity.alive)
        .map(|activity| activity.work_dir.clone())
        .collect();
    let mut candidates = Vec::new();
    let mut live_work_dirs = 0;
    let mut live_bytes = 0;
    for agreement_dir in children(&data_dir.join("work")) {
        for activity_dir in children(&agreement_dir) {
            let (bytes, changed) = size_and_changed(&activity_dir);
            if live.iter().any(|live| live == &activity_dir) {
                live_work_dirs += 1;
                live_bytes += bytes;
                continue;
            }
            candidates.push(Candidate {
                path: activity_dir,
                kind: "work-dir",
                bytes,
                changed,
            });
        }
    }
    for package in children(&data_dir.join("cache").join("packages")) {
        let (bytes, changed) = size_and_changed(&package);
        candidates.push(Candidate {
            path: package,
            kind: "package",
            bytes,
            changed,
        });
    }
    // Oldest first.
    candidates.sort_by_key(|candidate| candidate.changed);
    let age_of = |changed: SystemTime| now.duration_since(changed).unwrap_or(Duration::ZERO);
    let max_age = Duration::from_secs(args.older_than_days.saturating_mul(86_400));
    let mut removed = Vec::new();
    let mut kept_bytes: u64 = live_bytes;
    let mut kept = Vec::new();
    for candidate in candidates {
        if age_of(candidate.changed) >= max_age {
            removed.push((candidate, "age"));
        } else {
            kept_bytes += candidate.bytes;
            kept.push(candidate);
        }
    }
    if let Some(max_gib) = args.max_size_gib {
        let limit = (max_gib * 1024.0 * 1024.0 * 1024.0) as u64;
        for candidate in kept {
            if kept_bytes <= limit {
                break;
            }
            kept_bytes -= candidate.bytes;
            removed.push((candidate, "size"));
        }
    }
    let mut report = CleanReport {
        dry_run: args.dry_run,
        removed: Vec::new(),
        freed_bytes: 0,
        kept_bytes,
        live_work_dirs,
    };
    for (candidate, rule) in removed {
        if !args.dry_run {
            let result = if candidate.kind == "work-dir" {
                std::fs::remove_dir_all(&candidate.path)
            } else {
                std::fs::remove_file(&candidate.path)
            };
            if let Err(error) = result {
                tracing::warn!(path = %candidate.path.display(), %error, "cannot remove; skipped");
                report.kept_bytes += candidate.bytes;
                continue;
            }
            // An agreement dir left empty goes too.
            if let Some(parent) = candidate.path.parent() {
                if candidate.kind == "work-dir" {
                    let _ = std::fs::remove_dir(parent);
                }
            }
        }
        report.freed_bytes += candidate.bytes;
        report.removed.push(CleanEntry {
            age_days: age_of(candidate.changed).as_secs_f64() / 86_400.0,
            path: candidate.path,
            kind: candidate.kind,
            bytes: candidate.bytes,
            rule,
        });
    }
    Ok(report)
}

pub fn execute(data_dir: &Path, args: CleanArgs) -> anyhow::Result<()> {
    let report = clean(data_dir, &args, SystemTime::now())?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    let verb = if report.dry_run {
        "would remove"
    } else {
        "removed"
    };
    for entry in &report.removed {
        println!(
            "{verb} {:<8} {:>12} B  {:>6.1} days  ({}) {}",
            entry.kind,
            entry.bytes,
            entry.age_days,
            entry.rule,
            entry.path.display()
        );
    }
    println!(
        "{verb} {} entries, {} bytes; {} bytes kept ({} work dirs of live activities)",
        report.removed.len(),
        report.freed_bytes,
        report.kept_bytes,
        report.live_work_dirs
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn args(older_than_days: u64, max_size_gib: Option<f64>, dry_run: bool) -> CleanArgs {
        CleanArgs {
            older_than_days,
            max_size_gib,
            dry_run,
            json: false,
        }
    }

    #[test]
    fn age_then_size_oldest_first_and_dry_run_removes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path();
        let old = data.join("work/agr-1/act-old");
        let newer = data.join("work/agr-2/act-new");
        for path in [&old, &newer] {
            std::fs::create_dir_all(path).unwrap();
            std::fs::write(path.join("out.txt"), vec![0u8; 1000]).unwrap();
        }
        std::fs::create_dir_all(data.join("cache/packages")).unwrap();
        std::fs::write(data.join("cache/packages/sha3-ab"), vec![0u8; 500]).unwrap();
        let now = SystemTime::now() + Duration::from_secs(3 * 86_400);

        let report = clean(data, &args(2, None, true), now).unwrap();
        assert_eq!(report.removed.len(), 3, "all three are 3 days old");
        assert_eq!(report.freed_bytes, 2500);
        assert!(old.exists(), "a dry run removes nothing");

        let report = clean(data, &args(30, None, false), now).unwrap();
        assert!(report.removed.is_empty(), "nothing older than 30 days");
        assert_eq!(report.kept_bytes, 2500);

        let report = clean(data, &args(30, Some(0.0), false), now).unwrap();
        assert_eq!(report.removed.len(), 3);
        assert!(report.removed.iter().all(|entry| entry.rule == "size"));
        assert!(!old.exists() && !data.join("work/agr-1").exists());
        let error = clean(data, &args(1, Some(-1.0), true), now).unwrap_err();
        assert!(error.to_string().contains("--max-size-gib"), "{error}");
    }
}
