//! The negotiation log: the last [`CAPACITY`] answers the agent gave to
//! proposals and agreements (countered, rejected with the reason, approved),
//! and the requestors' rejections of our drafts. A bounded ring in memory,
//! written by the agent's market tasks and read by the dashboard; it is not
//! persisted (the agent's log has the full story).

use std::collections::VecDeque;
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use serde::Serialize;

/// Entries kept; older ones are dropped.
pub const CAPACITY: usize = 200;

/// What happened to a proposal or an agreement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Outcome {
    /// The agent answered the requestor's proposal with a draft.
    Countered,
    /// The agent rejected the proposal (the reason says why).
    Rejected,
    /// The requestor rejected the agent's draft.
    RejectedByRequestor,
    AgreementApproved,
    AgreementRejected,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NegotiationEntry {
    pub at: DateTime<Utc>,
    /// The proposal's id, or the agreement's for agreement outcomes.
    pub id: String,
    pub requestor_id: String,
    pub runtime: String,
    pub outcome: Outcome,
    pub reason: Option<String>,
}

/// A ring of the most recent [`NegotiationEntry`]s.
pub struct NegotiationLog {
    capacity: usize,
    entries: Mutex<VecDeque<NegotiationEntry>>,
}

impl NegotiationLog {
    pub fn new(capacity: usize) -> NegotiationLog {
        NegotiationLog {
            capacity: capacity.max(1),
            entries: Mutex::new(VecDeque::with_capacity(capacity.max(1))),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<NegotiationEntry>> {
        self.entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Add an entry, dropping the oldest when full.
    pub fn record(
        &self,
        id: &str,
        requestor_id: &str,
        runtime: &str,
        outcome: Outcome,
        reason: Option<String>,
    ) {
        let entry = NegotiationEntry {
            at: Utc::now(),
            id: id.to_string(),
            requestor_id: requestor_id.to_string(),
            runtime: runtime.to_string(),
            outcome,
            reason,
        };
        let mut entries = self.lock();
        if entries.len() == self.capacity {
            entries.pop_front();
        }
        entries.push_back(entry);
    }

    /// The entries, newest first.
    pub fn recent(&self) -> Vec<NegotiationEntry> {
        self.lock().iter().rev().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_newest_entries_up_to_its_capacity() {
        let log = NegotiationLog::new(3);
        for index in 0..5 {
            log.record(
                &format!("p{index}"),
                "0xr",
                "wasmtime",
                Outcome::Rejected,
                Some(format!("reason {index}")),
            );
        }
        let ids: Vec<String> = log.recent().into_iter().map(|entry| entry.id).collect();
        assert_eq!(ids, ["p4", "p3", "p2"]);
    }
}
