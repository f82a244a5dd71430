//! The agent's own small database, `<data-dir>/state.json`: the offers it
//! subscribed, the agreements it is billing (agreed coeffs and terms, their
//! activities with exe-unit pids and billed amounts, debit notes awaiting
//! acceptance, the invoice), and the last activity event it handled. Written
//! atomically (temp file + rename) after every change, so a restarted agent
//! kills orphaned exe units and still invoices what was used.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

pub const STATE_FILE: &str = "state.json";

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot read or write {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("corrupt {path}: {message} (move it away to start without billing history)")]
    Corrupt { path: PathBuf, message: String },
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentState {
    #[serde(default)]
    pub offers: Vec<OfferRecord>,
    #[serde(default)]
    pub last_activity_event: Option<DateTime<Utc>>,
    #[serde(default)]
    pub agreements: BTreeMap<String, AgreementRecord>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OfferRecord {
    pub subscription_id: String,
    pub runtime: String,
    pub preset: String,
    pub coeffs: Vec<Decimal>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SentDebitNote {
    pub debit_note_id: String,
    pub activity_id: String,
    pub amount: Decimal,
    pub sent_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ActivityRecord {
    pub activity_id: String,
    pub pid: Option<u32>,
    pub work_dir: PathBuf,
    pub alive: bool,
    pub started_at: DateTime<Utc>,
    /// Last counters read, aligned with the agreement's usage vector.
    #[serde(default)]
    pub usage: Vec<f64>,
    /// Cost of `usage`.
    pub amount: Decimal,
    /// Highest amount put on a debit note.
    pub billed: Decimal,
    #[serde(default)]
    pub ended_reason: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InvoiceRecord {
    pub invoice_id: String,
    pub amount: Decimal,
    pub sent: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgreementRecord {
    pub agreement_id: String,
    pub runtime: String,
    pub requestor_id: String,
    pub approved_at: DateTime<Utc>,
    pub valid_to: DateTime<Utc>,
    /// `[per counter..., constant]` in the order of `usage_vector`.
    pub coeffs: Vec<Decimal>,
    pub usage_vector: Vec<String>,
    pub debit_note_interval_sec: u64,
    pub accept_timeout_sec: Option<u64>,
    pub next_debit_note_at: DateTime<Utc>,
    #[serde(default)]
    pub activities: BTreeMap<String, ActivityRecord>,
    #[serde(default)]
    pub unaccepted: Vec<SentDebitNote>,
    /// Why it ended, once it has.
    #[serde(default)]
    pub ended: Option<String>,
    #[serde(default)]
    pub invoice: Option<InvoiceRecord>,
    /// Why the daemon refused the invoice (not retried).
    #[serde(default)]
    pub invoice_error: Option<String>,
}

impl AgreementRecord {
    /// Still running (not yet ended).
    pub fn live(&self) -> bool {
        self.ended.is_none()
    }

    /// Live, or ended with an invoice still to issue or send.
    pub fn needs_billing(&self) -> bool {
        self.live()
            || (self.invoice_error.is_none() && self.invoice.as_ref().is_none_or(|i| !i.sent))
    }

    /// What the agreement costs so far: the sum over its activities.
    pub fn total(&self) -> Decimal {
        self.activities
            .values()
            .map(|activity| activity.amount)
            .sum()
    }
}

/// The state file and its in-memory copy. The lock is never held across an await.
pub struct StateStore {
    path: PathBuf,
    state: Mutex<AgentState>,
}

impl StateStore {
    pub fn open(data_dir: &Path) -> Result<StateStore, StateError> {
        let path = data_dir.join(STATE_FILE);
        let state = read(&path)?;
        Ok(StateStore {
            path,
            state: Mutex::new(state),
        })
    }

    fn lock(&self) -> MutexGuard<'_, AgentState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A copy of the current state.
    pub fn snapshot(&self) -> AgentState {
        self.lock().clone()
    }

    /// Read without changing.
    pub fn read<T>(&self, view: impl FnOnce(&AgentState) -> T) -> T {
        view(&self.lock())
    }

    /// Change and persist; a failed write is logged (the change stays in memory).
    pub fn update<T>(&self, change: impl FnOnce(&mut AgentState) -> T) -> T {
        let mut state = self.lock();
        let result = change(&mut state);
        if let Err(error) = write(&self.path, &state) {
            tracing::error!(%error, "cannot save the agent state; a restart may lose billing data");
        }
        result
    }
}

/// Read the state file (missing → empty).
pub fn read(path: &Path) -> Result<AgentState, StateError> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|error| StateError::Corrupt {
            path: path.to_path_buf(),
            message: error.to_string(),
        }),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(AgentState::default()),
        Err(source) => Err(StateError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

fn write(path: &Path, state: &AgentState) -> Result<(), StateError> {
    let io = |source| StateError::Io {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let bytes = serde_json::to_vec_pretty(state).map_err(|error| StateError::Corrupt {
        path: path.to_path_buf(),
        message: error.to_string(),
    })?;
    let temporary = path.with_extension("json.tmp");
    std::fs::write(&temporary, bytes).map_err(io)?;
    std::fs::rename(&temporary, path).map_err(io)
}
