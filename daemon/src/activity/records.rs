//! The `activity` sled tree and what is kept of finished work. Both sides of
//! the service write their records here (`provider/<id>` for activities this
//! node hosts, `requestor/<id>` for those it created, `provider-event/<seq>`
//! for the provider agent's feed); [`ActivityRecords`] is the read-only view
//! other services read through the ports, without messaging an actor.
//!
//! Memory keeps live work, not history: [`FinishedOrder`] bounds the finished
//! activities a side keeps in memory by count and by age; older ones are still
//! answered from sled (state, owner, agreement).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use golem_model::activity::{ActivityState, State};
use golem_model::{GolemError, NodeId};
use serde::{Deserialize, Serialize};

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
    /// How often the provider actor drops what the retention no longer keeps.
    pub compaction_period: Duration,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            finished_activity: FINISHED_ACTIVITY_RETENTION,
            max_finished: MAX_FINISHED_IN_MEMORY,
            provider_events: PROVIDER_EVENT_RETENTION,
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

    #[cfg(test)]
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
    use super::*;

    #[test]
    fn finished_order_is_bounded_by_count_and_age() {
        let retention = Retention {
            finished_activity: Duration::from_millis(50),
            max_finished: 3,
            provider_events: PROVIDER_EVENT_RETENTION,
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
