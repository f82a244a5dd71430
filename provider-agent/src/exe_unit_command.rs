//! `golem-provider exe-unit list`: every exe unit this agent knows, where its
//! binary is, and whether it would be offered (or why not), found and asked
//! for its `offer-template` exactly as `run` does at start.

use std::path::Path;

use clap::Subcommand;
use serde::Serialize;

use crate::config::{env_names, ProviderConfig, ProviderSettings};
use crate::exe_units::{probe_all, ProbeOutcome};
use crate::machine::Machine;

#[derive(Debug, Subcommand)]
pub enum ExeUnitCommand {
    /// List the known exe units: runtime, binary, and offered or why not.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// One row of `exe-unit list`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ExeUnitRow {
    runtime: String,
    binary_name: String,
    /// Where the binary is; `null` when not found.
    path: Option<String>,
    /// `offered`, `not-allowed`, `not-found` or `failing`.
    status: &'static str,
    /// Why it is not offered.
    reason: Option<String>,
}

pub async fn execute(
    data_dir: &Path,
    command: ExeUnitCommand,
    env: &dyn Fn(&str) -> Option<String>,
) -> anyhow::Result<()> {
    let ExeUnitCommand::List { json } = command;
    let settings = ProviderSettings::load_without_flags(data_dir, env)?;
    let config = ProviderConfig::resolve(data_dir, settings, &Machine::probe(data_dir))?;
    let probes = probe_all(
        &config.search_path,
        config.exe_units.as_deref(),
        &[(env_names::VM_SANDBOX, config.vm_sandbox.as_deref())],
    )
    .await;
    let rows: Vec<ExeUnitRow> = probes
        .into_iter()
        .map(|probe| {
            let (path, status, reason) = match probe.outcome {
                ProbeOutcome::Working(unit) => {
                    (Some(unit.binary.display().to_string()), "offered", None)
                }
                ProbeOutcome::NotAllowed => (
                    None,
                    "not-allowed",
                    Some("left out by the exe-units setting".to_string()),
                ),
                ProbeOutcome::NotFound => (
                    None,
                    "not-found",
                    Some(format!(
                        "{} is neither beside golem-provider nor on PATH",
                        probe.binary_name
                    )),
                ),
                ProbeOutcome::Failing { binary, reason } => {
                    (Some(binary.display().to_string()), "failing", Some(reason))
                }
            };
            ExeUnitRow {
                runtime: probe.runtime,
                binary_name: probe.binary_name.to_string(),
                path,
                status,
                reason,
            }
        })
        .collect();
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    println!(
        "{:<10} {:<14} {:<12} WHERE / WHY",
        "RUNTIME", "BINARY", "STATUS"
    );
    for row in rows {
        let detail = row.reason.or(row.path).unwrap_or_default();
        println!(
            "{:<10} {:<14} {:<12} {detail}",
            row.runtime, row.binary_name, row.status
        );
    }
    Ok(())
}
