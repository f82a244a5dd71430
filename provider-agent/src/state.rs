//! The agent's own small database, `<data-dir>/state.json`: the offers it
//! subscribed, the agreements it is billing (agreed coeffs and terms, their
//! activities with exe-unit pids and billed amounts, debit notes awaiting
//! acceptance, the invoice), and the last activity event it handled. Written
//! atomically (temp file + rename) after every change, so a restarted agent
//! kills orphaned exe units and still invoices what was used. An agreement that
//! has ended, has no exe unit alive and whose invoice went out (or was refused
//! for good) is retired: appended as one JSON line to
//! `<data-dir>/agreements-archive.jsonl` and dropped from the state, so the
//! state and every write of it stay the size of the live work, not of history.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::capacity::Claim;

pub const STATE_FILE: &str = "state.json";
/// Finished agreements, one JSON `AgreementRecord` per line, oldest first.
pub const ARCHIVE_FILE: &str = "agreements-archive.jsonl";

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
    /// The threads and memory its demand asked for, held while it is live.
    #[serde(default)]
    pub claim: Claim,
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

    /// Nothing is left to do for it: ended, no exe unit alive, nothing to bill.
    pub fn finished(&self) -> bool {
        !self.needs_billing() && self.activities.values().all(|activity| !activity.alive)
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
    archive_path: PathBuf,
    state: Mutex<AgentState>,
}

impl StateStore {
    pub fn open(data_dir: &Path) -> Result<StateStore, StateError> {
        let path = data_dir.join(STATE_FILE);
        let state = read(&path)?;
        Ok(StateStore {
            path,
            archive_path: data_dir.join(ARCHIVE_FILE),
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
        self.retire_finished(&mut state);
        if let Err(error) = write(&self.path, &state) {
            tracing::error!(%error, "cannot save the agent state; a restart may lose billing data");
        }
        result
    }
}

impl StateStore {
    /// Move finished agreements to the archive file. One that cannot be
    /// archived stays in the state (and is tried again on the next change).
    fn retire_finished(&self, state: &mut AgentState) {
        let finished: Vec<String> = state
            .agreements
            .values()
            .filter(|agreement| agreement.finished())
            .map(|agreement| agreement.agreement_id.clone())
            .collect();
        if finished.is_empty() {
            return;
        }
        let mut lines = Vec::new();
        for id in &finished {
            if let Ok(mut line) = serde_json::to_vec(&state.agreements[id]) {
                line.push(b'\n');
                lines.extend(line);
            }
        }
        if let Err(error) = append(&self.archive_path, &lines) {
            tracing::warn!(%error, "cannot archive finished agreements; keeping them in the state");
            return;
        }
        for id in finished {
            state.agreements.remove(&id);
        }
    }
}

fn append(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    file.write_all(bytes)
}

/// The archived agreements, oldest first (missing file → none); a line that
/// does not parse is skipped.
pub fn read_archive(data_dir: &Path) -> Vec<AgreementRecord> {
    std::fs::read_to_string(data_dir.join(ARCHIVE_FILE))
        .map(|text| {
            text.lines()
                .filter_map(|line| serde_json::from_str(line).ok())
                .collect()
        })
        .unwrap_or_default()
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
    let bytes = serde_json::to_vec(state).map_err(|error| StateError::Corrupt {
        path: path.to_path_buf(),
        message: error.to_string(),
    })?;
    let temporary = path.with_extension("json.tmp");
    std::fs::write(&temporary, bytes).map_err(io)?;
    std::fs::rename(&temporary, path).map_err(io)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn agreement(id: &str) -> AgreementRecord {
        AgreementRecord {
            agreement_id: id.into(),
            runtime: "wasmtime".into(),
            requestor_id: "0x01".into(),
            approved_at: Utc::now(),
            valid_to: Utc::now(),
            coeffs: vec![],
            usage_vector: vec![],
            debit_note_interval_sec: 60,
            accept_timeout_sec: None,
            next_debit_note_at: Utc::now(),
            activities: BTreeMap::new(),
            unaccepted: vec![],
            ended: None,
            invoice: None,
            invoice_error: None,
            claim: Claim::default(),
        }
    }

    #[test]
    fn finished_agreements_leave_the_state_for_the_archive() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(dir.path()).unwrap();
        store.update(|state| {
            state.agreements.insert("live".into(), agreement("live"));
            state.agreements.insert("done".into(), agreement("done"));
        });
        assert_eq!(store.read(|state| state.agreements.len()), 2);
        // Ended but the invoice is not sent yet: still billed, still in the state.
        store.update(|state| {
            let done = state.agreements.get_mut("done").unwrap();
            done.ended = Some("terminated".into());
            done.invoice = Some(InvoiceRecord {
                invoice_id: "i1".into(),
                amount: Decimal::ONE,
                sent: false,
            });
        });
        assert!(store.read(|state| state.agreements.contains_key("done")));
        store.update(|state| {
            if let Some(invoice) = state.agreements.get_mut("done").unwrap().invoice.as_mut() {
                invoice.sent = true;
            }
        });
        let ids: Vec<String> = store.read(|state| state.agreements.keys().cloned().collect());
        assert_eq!(ids, vec!["live".to_string()]);
        let on_disk = read(&dir.path().join(STATE_FILE)).unwrap();
        assert_eq!(on_disk.agreements.len(), 1);
        let archived = read_archive(dir.path());
        assert_eq!(archived.len(), 1);
        assert_eq!(archived[0].agreement_id, "done");
        assert_eq!(archived[0].invoice.as_ref().unwrap().invoice_id, "i1");
    }
}
