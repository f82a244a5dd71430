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

mod provider;
mod requestor;
pub mod rest;

use std::sync::Arc;
use std::time::Duration;

use golem_bus::Router;
use golem_model::activity::ACTIVITY_SERVICE;
use golem_model::activity_control::ACTIVITY_PUBLIC_SERVICE;
use golem_model::{GolemError, NodeId};
use tokio_util::sync::CancellationToken;

pub use provider::ProviderSide;
pub use requestor::RequestorSide;

use crate::store::Store;

use crate::ports::Agreements;

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
    shutdown: CancellationToken,
}

/// Open the activity records, bind `/public/activity` and `/local/activity`,
/// and start supervising exe units.
pub fn start(
    node_id: NodeId,
    store: &Store,
    router: &Router,
    agreements: Arc<dyn Agreements>,
    settings: &ActivitySettings,
) -> Result<ActivityService, GolemError> {
    if settings.max_per_agreement == 0 {
        return Err(GolemError::bad_request(
            "activity setting max-per-agreement must be greater than zero",
        ));
    }
    let tree = store.tree("activity")?;
    let provider = ProviderSide::open(
        node_id,
        router.clone(),
        agreements.clone(),
        tree.clone(),
        settings.clone(),
    )?;
    let requestor = RequestorSide::open(node_id, router.clone(), agreements, tree)?;
    router.bind(ACTIVITY_PUBLIC_SERVICE, provider.public_endpoint())?;
    router.bind(ACTIVITY_SERVICE, provider.local_endpoint())?;
    let shutdown = CancellationToken::new();
    tokio::spawn(
        provider
            .clone()
            .supervise(Duration::from_millis(250), shutdown.clone()),
    );
    Ok(ActivityService {
        requestor,
        provider,
        shutdown,
    })
}

impl ActivityService {
    pub fn stop(&self) {
        self.shutdown.cancel();
    }
}

impl crate::ports::HostedActivities for ProviderSide {
    fn agreement_of_activity(&self, activity_id: &str) -> Option<String> {
        self.agreement_of(activity_id)
    }
}

impl crate::ports::CreatedActivities for RequestorSide {
    fn created_activity(&self, activity_id: &str) -> Option<(String, NodeId)> {
        self.find(activity_id)
            .map(|activity| (activity.agreement_id, activity.provider_id))
    }
}
