//! What the dashboard reads from the agent, handed over once at start: the
//! data dir, the daemon's address and app-key, the live settings (re-read on
//! each answer), the exe units offered and the link the agent shares with
//! the dashboard. The server and the views both read it; neither owns it.

use std::path::PathBuf;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::AgentLink;

/// An exe unit this agent offers, as the status section shows it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ExeUnitFacts {
    pub runtime: String,
    pub binary: PathBuf,
    /// The VM unit's sandbox (`gvisor`, `runc`); `None` for the WASM unit.
    pub sandbox: Option<String>,
}

/// The resources every offer announces.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OfferedResources {
    pub cores: u32,
    pub threads: u32,
    pub mem_gib: f64,
    pub storage_gib: f64,
    pub platforms: Vec<String>,
}

/// The settings the dashboard shows that `provider.toml` may change while the
/// agent runs; read anew for each answer.
#[derive(Debug, Clone, Default)]
pub struct LiveSettings {
    pub node_name: String,
    pub subnet: String,
    pub resources: OfferedResources,
}

/// Everything the dashboard reads, handed over by the agent at start.
pub struct DashboardSources {
    /// The agent's data dir: state, archive, presets, exe-unit logs.
    pub data_dir: PathBuf,
    pub api_url: String,
    /// The agent's app-key: the daemon's REST API and the dashboard's login.
    pub app_key: String,
    /// The agent's configuration in force (it re-reads `provider.toml`).
    pub settings: Box<dyn Fn() -> LiveSettings + Send + Sync>,
    pub exe_units: Vec<ExeUnitFacts>,
    pub link: AgentLink,
    pub started_at: DateTime<Utc>,
}
