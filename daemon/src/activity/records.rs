//! The `activity` sled tree and what is kept of finished work. Both sides of
//! the service write their records here (`provider/<id>` for activities this
//! node hosts, `requestor/<id>` for those it created, `provider-event/<seq>`
//! for the provider agent's feed); [`ActivityRecords`] is the read-only view
//! other services read through the ports, without messaging an actor.
//!
//! Memory keeps live work, not history: [`FinishedOrder`] bounds the finished
//! activities a side keeps in memory by count and by age; older ones are still
//! answered from sled (state, owner, agreement). Sled keeps history, not
//! everything: [`HistorySweep`] removes the record of an ended activity once
//! the market no longer holds its agreement (the market prunes a final
//! agreement `[retention] history-secs` after it ended, and keeps one whose
//! invoice is still open, so what accounting reads stays as long as it does).

use std::collections::VecDeque;
use std::ops::Bound;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use golem_model::activity::{ActivityState, State};
use golem_model::{GolemError, NodeId};
use serde::{Deserialize, Serialize};

use crate::ports::Agreements;
use crate::store;

pub(super) const HOSTED_PREFIX: &str = "provider/";
pub(super) const CREATED_PREFIX: &str = "requestor/";
pub(super) const EVENT_PREFIX: &str = "provider-event/";

/// How long a Terminated activity's batch results stay readable in memory.
pub const FINISHED_ACTIVITY_RETENTION: Duration = Duration::from_secs(600);
/// At most this many Terminated activities keep their batches in memory; the
/// oldest leave first (a busy provider ends thousands of activities a day).
pub const MAX_FINISHED_IN_MEMORY: usize = 1000;
/// How long provider events stay (the agent reads them within seconds; a
/// restarted agent replays from its last event, and skips what has ended).
pub const PROVIDER_EVENT_RETENTION: Duration = Duration::from_secs(3600);
/// Provider events kept at most, however young (the agent reads them within
/// one long-poll).
pub const MAX_PROVIDER_EVENTS: usize = 2_000;

/// The persisted part of an activity this node hosts.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct HostedRecord {
    pub activity_id: String,
    pub agreement_id: String,
    pub requestor_id: NodeId,
    pub state: ActivityState,
    pub created: DateTime<Utc>,
}

/// An activity this node created as requestor, on `provider_id`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RequestorActivity {
    pub activity_id: String,
    pub agreement_id: String,
    pub provider_id: NodeId,
    pub created: DateTime<Utc>,
}

/// How long finished work stays in memory, and how much of it (tests shorten both).
#[derive(Clone, Copy, Debug)]
pub(super) struct Retention {
    pub finished_activity: Duration,
    pub max_finished: usize,
    pub provider_events: Duration,
    /// Provider events kept at most (the newest).
    pub max_provider_events: usize,
    /// How often the provider actor drops what the retention no longer keeps.
    pub compaction_period: Duration,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            finished_activity: FINISHED_ACTIVITY_RETENTION,
            max_finished: MAX_FINISHED_IN_MEMORY,
            provider_events: PROVIDER_EVENT_RETENTION,
            max_provider_events: MAX_PROVIDER_EVENTS,
            compaction_period: Duration::from_secs(10),
        }
    }
}

/// Finished activities in the order they ended; says which must leave memory.
#[derive(Debug, Default)]
pub(super) struct FinishedOrder {
    ended: VecDeque<(String, Instant)>,
}

impl FinishedOrder {
    pub fn push(&mut self, activity_id: String) {
        self.ended.push_back((activity_id, Instant::now()));
    }

    pub fn len(&self) -> usize {
        self.ended.len()
    }

    /// The activities past `retention` by age or beyond it by count, oldest
    /// first; they are forgotten here.
    pub fn expired(&mut self, retention: &Retention) -> Vec<String> {
        let mut expired = Vec::new();
        while let Some((activity_id, ended)) = self.ended.front() {
            let too_many = self.ended.len() > retention.max_finished;
            if !too_many && ended.elapsed() < retention.finished_activity {
                break;
            }
            expired.push(activity_id.clone());
            self.ended.pop_front();
        }
        expired
    }
}

/// Records looked at per sweep, so one sweep stays short.
pub(super) const SWEEP_BATCH: usize = 1_000;

/// The part of a `provider/<id>` or `requestor/<id>` record a sweep reads
/// (a requestor's record has no state: it ends with its agreement).
#[derive(Deserialize)]
struct SweptRecord {
    agreement_id: String,
    #[serde(default)]
    state: Option<ActivityState>,
}

/// Walks the records under one prefix a slice at a time, resuming where the
/// last slice stopped (from the start again after the end), and removes
/// those of ended activities whose agreement the market no longer holds.
/// Each slice costs at most [`SWEEP_BATCH`] reads, whatever the history's size.
#[derive(Debug)]
pub(super) struct HistorySweep {
    prefix: &'static str,
    resume_after: Option<sled::IVec>,
}

impl HistorySweep {
    pub fn new(prefix: &'static str) -> HistorySweep {
        HistorySweep {
            prefix,
            resume_after: None,
        }
    }

    /// Look at up to `batch` records; how many left sled.
    pub fn sweep(&mut self, tree: &sled::Tree, agreements: &dyn Agreements, batch: usize) -> usize {
        let start = match &self.resume_after {
            Some(key) => Bound::Excluded(key.clone()),
            None => Bound::Included(sled::IVec::from(self.prefix.as_bytes())),
        };
        let mut looked_at = 0;
        let mut removed = 0;
        for entry in tree.range((start, Bound::Unbounded)).take(batch) {
            let (key, value) = match entry {
                Ok(entry) => entry,
                Err(error) => {
                    tracing::warn!(%error, prefix = self.prefix, "cannot read the activity history");
                    return removed;
                }
            };
            if !key.starts_with(self.prefix.as_bytes()) {
                break;
            }
            looked_at += 1;
            if history_ended(&value, agreements) {
                match tree.remove(&key) {
                    Ok(_) => removed += 1,
                    Err(error) => {
                        tracing::warn!(%error, prefix = self.prefix, "cannot remove an old activity record")
                    }
                }
            }
            self.resume_after = Some(key);
        }
        if looked_at < batch {
            self.resume_after = None;
        }
        if removed > 0 {
            tracing::debug!(
                removed,
                prefix = self.prefix,
                "old activity records left the store"
            );
        }
        removed
    }
}

/// Whether a record can leave sled: its activity ended and the market no
/// longer holds its agreement. A record that does not decode stays (it is
/// reported where it is read).
fn history_ended(value: &[u8], agreements: &dyn Agreements) -> bool {
    let Ok(record) = serde_json::from_slice::<SweptRecord>(value) else {
        return false;
    };
    let ended = record.state.is_none_or(|state| !state.state.alive());
    ended
        && agreements
            .agreement(&record.agreement_id)
            .is_err_and(|error| error.code == golem_model::ErrorCode::NotFound)
}

/// Read-only view of the committed activity records. Cheap to clone.
#[derive(Clone)]
pub struct ActivityRecords {
    tree: sled::Tree,
}

impl ActivityRecords {
    pub(super) fn new(tree: sled::Tree) -> ActivityRecords {
        ActivityRecords { tree }
    }

    fn read<T: serde::de::DeserializeOwned>(&self, key: String) -> Option<T> {
        let bytes = match self.tree.get(&key) {
            Ok(bytes) => bytes?,
            Err(error) => {
                tracing::warn!(%key, %error, "cannot read an activity record");
                return None;
            }
        };
        match store::decode("activity", &bytes) {
            Ok(record) => Some(record),
            Err(error) => {
                tracing::warn!(%key, %error, "cannot decode an activity record");
                None
            }
        }
    }

    /// An activity this node hosts or hosted, as last committed.
    pub(super) fn hosted(&self, activity_id: &str) -> Option<HostedRecord> {
        self.read(format!("{HOSTED_PREFIX}{activity_id}"))
    }

    /// Whether this node hosts or hosted `activity_id`.
    pub fn hosts(&self, activity_id: &str) -> bool {
        self.hosted(activity_id).is_some()
    }

    /// The state of a hosted activity as last committed.
    pub(super) fn hosted_state(&self, activity_id: &str) -> Option<State> {
        self.hosted(activity_id).map(|record| record.state.state.0)
    }

    /// An activity this node created as requestor.
    pub fn created(&self, activity_id: &str) -> Option<RequestorActivity> {
        self.read(format!("{CREATED_PREFIX}{activity_id}"))
    }
}

/// Write `value` at `key` of the activity tree.
pub(super) fn put<T: Serialize>(
    tree: &sled::Tree,
    key: String,
    value: &T,
) -> Result<(), GolemError> {
    let bytes = store::encode(value)?;
    tree.insert(key, bytes)
        .map_err(|error| GolemError::from(store::StoreError::from(error)))?;
    Ok(())
}

impl crate::ports::HostedActivities for ActivityRecords {
    fn agreement_of_activity(&self, activity_id: &str) -> Option<String> {
        self.hosted(activity_id).map(|record| record.agreement_id)
    }
}

impl crate::ports::CreatedActivities for ActivityRecords {
    fn created_activity(&self, activity_id: &str) -> Option<(String, NodeId)> {
        self.created(activity_id)
            .map(|activity| (activity.agreement_id, activity.provider_id))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::collections::HashSet;

    use golem_model::market::Agreement;

    use super::*;

    const REQUESTOR: &str = "0x1111111111111111111111111111111111111111";
    const PROVIDER: &str = "0x2222222222222222222222222222222222222222";

    /// The market, as far as the sweep reads it: the agreements it still holds.
    struct HeldAgreements(HashSet<String>);

    impl Agreements for HeldAgreements {
        fn agreement(&self, id: &str) -> Result<Agreement, GolemError> {
            if !self.0.contains(id) {
                return Err(GolemError::not_found(format!("agreement {id} not found")));
            }
            let now = Utc::now();
            Ok(serde_json::from_value(serde_json::json!({
                "agreementId": id,
                "demand": {"properties": {}, "constraints": "()", "demandId": "d",
                           "requestorId": REQUESTOR, "timestamp": now},
                "offer": {"properties": {}, "constraints": "()", "offerId": "o",
                          "providerId": PROVIDER, "timestamp": now},
                "validTo": now,
                "state": "Terminated",
                "timestamp": now,
            }))
            .unwrap())
        }
    }

    fn hosted(tree: &sled::Tree, activity_id: &str, agreement_id: &str, state: State) {
        let record = HostedRecord {
            activity_id: activity_id.into(),
            agreement_id: agreement_id.into(),
            requestor_id: REQUESTOR.parse().unwrap(),
            state: ActivityState::from(state),
            created: Utc::now(),
        };
        put(tree, format!("{HOSTED_PREFIX}{activity_id}"), &record).unwrap();
    }

    fn created(tree: &sled::Tree, activity_id: &str, agreement_id: &str) {
        let record = RequestorActivity {
            activity_id: activity_id.into(),
            agreement_id: agreement_id.into(),
            provider_id: PROVIDER.parse().unwrap(),
            created: Utc::now(),
        };
        put(tree, format!("{CREATED_PREFIX}{activity_id}"), &record).unwrap();
    }

    fn keys(tree: &sled::Tree, prefix: &str) -> Vec<String> {
        tree.scan_prefix(prefix)
            .map(|entry| String::from_utf8(entry.unwrap().0.to_vec()).unwrap())
            .collect()
    }

    /// An ended activity's record leaves sled once the market pruned its
    /// agreement; a live one, one whose agreement is still held, and other
    /// kinds of record stay. Slices resume where the last one stopped, so
    /// every record is reached however small the slice.
    #[test]
    fn history_sweep_removes_records_whose_agreement_was_pruned() {
        let dir = tempfile::tempdir().unwrap();
        let store = store::Store::open(dir.path()).unwrap();
        let tree = store.tree("activity").unwrap();
        let market = HeldAgreements(["held".to_string()].into());
        for index in 0..5 {
            hosted(&tree, &format!("gone{index}"), "pruned", State::Terminated);
            created(&tree, &format!("gone{index}"), "pruned");
        }
        hosted(&tree, "still-running", "pruned", State::Ready);
        hosted(&tree, "billed", "held", State::Terminated);
        created(&tree, "billed", "held");
        put(
            &tree,
            format!("{EVENT_PREFIX}00000000000000000001"),
            &"event",
        )
        .unwrap();

        let mut hosted_sweep = HistorySweep::new(HOSTED_PREFIX);
        let mut removed = 0;
        for _ in 0..4 {
            removed += hosted_sweep.sweep(&tree, &market, 2);
        }
        assert_eq!(removed, 5);
        assert_eq!(
            keys(&tree, HOSTED_PREFIX),
            vec!["provider/billed", "provider/still-running"]
        );
        let mut created_sweep = HistorySweep::new(CREATED_PREFIX);
        assert_eq!(created_sweep.sweep(&tree, &market, SWEEP_BATCH), 5);
        assert_eq!(keys(&tree, CREATED_PREFIX), vec!["requestor/billed"]);
        assert_eq!(keys(&tree, EVENT_PREFIX).len(), 1);
        // Nothing more to remove: a sweep over what stays removes nothing.
        assert_eq!(hosted_sweep.sweep(&tree, &market, SWEEP_BATCH), 0);
    }

    #[test]
    fn finished_order_is_bounded_by_count_and_age() {
        let retention = Retention {
            finished_activity: Duration::from_millis(50),
            max_finished: 3,
            provider_events: PROVIDER_EVENT_RETENTION,
            max_provider_events: MAX_PROVIDER_EVENTS,
            compaction_period: Duration::from_secs(10),
        };
        let mut order = FinishedOrder::default();
        for index in 0..5 {
            order.push(format!("a{index}"));
        }
        assert_eq!(order.expired(&retention), vec!["a0", "a1"]);
        assert_eq!(order.len(), 3);
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(order.expired(&retention), vec!["a2", "a3", "a4"]);
        assert_eq!(order.len(), 0);
    }
}
