//! Activity service: activities run ExeScript on a provider for an approved
//! agreement. On the requestor's node it serves the Activity API and drives the
//! provider's daemon over `/net/<provider>/public/activity`; on the provider's
//! node it keeps the hosted activities, tells the provider agent (provider
//! events) to start and stop exe units, routes batches to the exe unit bound at
//! `/local/exeunit/<activityId>` and collects its reports at `/local/activity`.
//!
//! It must never run user code itself, and never trust a remote caller for
//! anything but its own activities (the caller NodeId comes from the net).
//! What a requestor may ask of this provider is bounded: ids must have the
//! shape of ids, waits are capped, and an agreement hosts at most
//! [`ActivitySettings::max_per_agreement`] activities.
//!
//! Two actors on one service thread ("activity") own the state:
//! [`ProviderActivityActor`] (hosted activities, provider events, batches) and
//! [`RequestorActivityActor`] (records of created activities). An exe unit
//! that leaves the bus reaches the provider actor as a message at once (the
//! router's unbinds), and other services read the records through
//! [`ActivityRecords`], a view over sled that never waits for an actor.

mod provider;
mod records;
mod requestor;
pub mod rest;

use std::sync::Arc;

use golem_bus::{Router, ServiceArbiter};
use golem_model::activity::ACTIVITY_SERVICE;
use golem_model::activity_control::ACTIVITY_PUBLIC_SERVICE;
use golem_model::{GolemError, NodeId};

pub use provider::{ProviderActivityActor, ProviderSide};
pub use records::{ActivityRecords, RequestorActivity};
pub use requestor::{RequestorActivityActor, RequestorSide};

use crate::ports::Agreements;
use crate::store::Store;

/// The `[activity]` section of the daemon config file (kebab-case keys, every
/// one optional), `GOLEM_ACTIVITY_*` in the environment and the
/// `--activity-*` flags of `golem-daemon run`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct ActivitySettings {
    /// Activities one agreement may create on this provider over its life
    /// (destroyed ones count too, so a requestor cannot grow the records
    /// without bound). yapapi and golem-js create one per agreement and a new
    /// one after a failure; 100 leaves room for many restarts.
    pub max_per_agreement: usize,
}

impl Default for ActivitySettings {
    fn default() -> Self {
        ActivitySettings {
            max_per_agreement: 100,
        }
    }
}

/// Handle to the activity service. Cheap to clone.
#[derive(Clone)]
pub struct ActivityService {
    pub requestor: RequestorSide,
    pub provider: ProviderSide,
    /// The committed records, read-only: the ports other services read.
    pub records: ActivityRecords,
    /// The "activity" thread both actors run on; taken at stop.
    arbiter: ServiceArbiter,
}

/// Start both actors on the "activity" service thread (they load their
/// records from sled), and bind `/public/activity` and `/local/activity`.
pub fn start(
    node_id: NodeId,
    store: &Store,
    router: &Router,
    agreements: Arc<dyn Agreements>,
    settings: &ActivitySettings,
    retention: &crate::retention::RetentionPolicy,
) -> Result<ActivityService, GolemError> {
    if settings.max_per_agreement == 0 {
        return Err(GolemError::bad_request(
            "activity setting max-per-agreement must be greater than zero",
        ));
    }
    let tree = store.tree("activity")?;
    let arbiter = ServiceArbiter::current_or_spawn("activity").map_err(|error| {
        GolemError::internal(format!("cannot start the activity service thread: {error}"))
    })?;
    let provider = ProviderSide::start(
        arbiter.handle(),
        node_id,
        router.clone(),
        agreements.clone(),
        tree.clone(),
        settings.clone(),
        records::Retention {
            finished_activity: retention.memory_age,
            max_finished: retention.memory_count,
            provider_events: retention.events_age,
            max_provider_events: retention.events_count,
            ..records::Retention::default()
        },
    );
    let requestor = RequestorSide::start(
        arbiter.handle(),
        node_id,
        router.clone(),
        agreements,
        tree.clone(),
    );
    router.bind(ACTIVITY_PUBLIC_SERVICE, provider.public_endpoint())?;
    router.bind(ACTIVITY_SERVICE, provider.local_endpoint())?;
    Ok(ActivityService {
        requestor,
        provider,
        records: ActivityRecords::new(tree),
        arbiter,
    })
}

impl ActivityService {
    /// Stop both actors and their thread.
    pub fn stop(&self) {
        self.provider.stop();
        self.requestor.stop();
        self.arbiter.stop();
    }
}
