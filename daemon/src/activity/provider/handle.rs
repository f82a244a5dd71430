//! [`ProviderSide`]: the cheap handle the REST API and the wiring use to reach
//! the provider actor. Reads of committed records go to the sled view; the
//! provider-event long-poll waits here, on the change notifier, not in the actor.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use golem_bus::actor::deliver;
use golem_bus::{Caller, Incoming, Router, ServiceEndpoint, Supervised};
use golem_model::activity::{ActivityState, ActivityUsage, ReportState, ReportUsage};
use golem_model::activity_control::{GetStateRemote, GetUsageRemote, ProviderEvent};
use golem_model::{GolemError, NodeId};
use tokio::sync::watch;

use super::batches::BatchShelf;
use super::events::ReadEvents;
use super::{local, public, CountInMemory, CrashForTest, ProviderActivityActor, Shared};
use crate::activity::records::{ActivityRecords, Retention};
use crate::activity::{ActivitySettings, Agreements};

/// Handle to the provider side. Cheap to clone.
#[derive(Clone)]
pub struct ProviderSide {
    actor: Supervised<ProviderActivityActor>,
    records: ActivityRecords,
    changes: Arc<watch::Sender<u64>>,
    /// The actor's batch shelf (tests look at what it holds).
    #[cfg_attr(not(test), allow(dead_code))]
    batches: BatchShelf,
}

impl ProviderSide {
    /// Start the actor on `arbiter`; it loads its book from `tree`.
    pub(in crate::activity) fn start(
        arbiter: &actix_rt::ArbiterHandle,
        node_id: NodeId,
        router: Router,
        agreements: Arc<dyn Agreements>,
        tree: sled::Tree,
        settings: ActivitySettings,
        retention: Retention,
    ) -> ProviderSide {
        let records = ActivityRecords::new(tree.clone());
        let shared = Shared {
            node_id,
            router,
            agreements,
            settings,
            tree,
            records: records.clone(),
            changes: Arc::new(watch::channel(0).0),
            starts: Arc::new(AtomicU64::new(0)),
            retention,
            batches: BatchShelf::default(),
        };
        let changes = shared.changes.clone();
        let batches = shared.batches.clone();
        let actor = Supervised::start("activity", arbiter, move || {
            ProviderActivityActor::new(shared.clone())
        });
        ProviderSide {
            actor,
            records,
            changes,
            batches,
        }
    }

    /// How many activities have batches on the actor's shelf.
    #[cfg(test)]
    pub(in crate::activity) fn activities_with_batches(&self) -> usize {
        self.batches.len()
    }

    /// `/public/activity`: what requestors' daemons may call.
    pub fn public_endpoint(&self) -> ServiceEndpoint {
        public::endpoint(&self.actor)
    }

    /// `/local/activity`: reports of this node's exe units.
    pub fn local_endpoint(&self) -> ServiceEndpoint {
        local::endpoint(&self.actor)
    }

    /// Stop supervising (shutdown): the actor is not started again.
    pub fn stop(&self) {
        self.actor.stop();
    }

    /// Whether this node hosts or hosted `activity_id` (from sled).
    pub fn hosts(&self, activity_id: &str) -> bool {
        self.records.hosts(activity_id)
    }

    pub async fn activity_state(
        &self,
        caller: Caller,
        activity_id: &str,
    ) -> Result<ActivityState, GolemError> {
        let message = GetStateRemote {
            activity_id: activity_id.to_string(),
        };
        deliver(&self.actor, Incoming { caller, message }).await?
    }

    pub async fn activity_usage(
        &self,
        caller: Caller,
        activity_id: &str,
    ) -> Result<ActivityUsage, GolemError> {
        let message = GetUsageRemote {
            activity_id: activity_id.to_string(),
        };
        deliver(&self.actor, Incoming { caller, message }).await?
    }

    /// `PUT /activity/{id}/state` on the provider's node (the provider agent's view wins).
    pub async fn set_state(
        &self,
        activity_id: &str,
        state: ActivityState,
    ) -> Result<(), GolemError> {
        let message = ReportState {
            activity_id: activity_id.to_string(),
            state,
        };
        let caller = Caller::Local;
        deliver(&self.actor, Incoming { caller, message }).await?
    }

    /// `PUT /activity/{id}/usage` on the provider's node.
    pub async fn set_usage(
        &self,
        activity_id: &str,
        usage: ActivityUsage,
    ) -> Result<(), GolemError> {
        let message = ReportUsage {
            activity_id: activity_id.to_string(),
            usage,
        };
        let caller = Caller::Local;
        deliver(&self.actor, Incoming { caller, message }).await?
    }

    /// Provider events after `after` (oldest first), waiting up to `timeout` for one.
    pub async fn events(
        &self,
        after: Option<DateTime<Utc>>,
        timeout: Duration,
        max_events: usize,
    ) -> Result<Vec<ProviderEvent>, GolemError> {
        let mut changes = self.changes.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        crate::long_poll::until_found(deadline, &mut changes, || async move {
            deliver(&self.actor, ReadEvents { after, max_events }).await
        })
        .await
    }

    /// Fault injection: the actor panics and its supervisor starts it again from sled.
    #[doc(hidden)]
    pub async fn crash_for_test(&self) {
        let restarts = self.actor.restarts();
        let _ = deliver(&self.actor, CrashForTest).await;
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while self.actor.restarts() == restarts && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// A receiver of the change notifier (tests wait on it instead of sleeping).
    #[cfg(test)]
    pub(super) fn changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// How many hosted activities the actor keeps in memory (retention tests).
    #[doc(hidden)]
    pub async fn count_in_memory(&self) -> Result<usize, GolemError> {
        deliver(&self.actor, CountInMemory).await
    }
}
