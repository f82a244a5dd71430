//! The requestor side of activities: [`RequestorActivityActor`] records the
//! activities this node creates (it is the only writer of `requestor/<id>`),
//! and [`RequestorSide`] drives them on the provider's daemon
//! (`/net/<provider>/public/activity`). Long waits are split into rounds that
//! each stay below the net call timeout, and run in the caller, not the actor.
//!
//! Nothing per activity is kept in memory: the records are read from sled
//! ([`ActivityRecords`]), so a requestor that creates an activity for every
//! agreement for months holds no more memory than on its first day; and a
//! record leaves sled with its agreement (a [`HistorySweep`] every
//! [`HISTORY_SWEEP_PERIOD`]), so the history is as bounded as the market's.

mod control;
mod create;

use std::sync::Arc;
use std::time::Duration;

use actix::{Actor, AsyncContext, Context};
use golem_bus::{Router, Supervised};
use golem_model::NodeId;

use super::records::{
    ActivityRecords, HistorySweep, RequestorActivity, CREATED_PREFIX, SWEEP_BATCH,
};
use super::Agreements;

/// The requestor side of the activity service, as an actor. It owns the
/// write path of the created-activity records; remote calls run outside it.
pub struct RequestorActivityActor {
    node_id: NodeId,
    router: Router,
    agreements: Arc<dyn Agreements>,
    tree: sled::Tree,
    /// Removes the records whose agreement the market pruned.
    history: HistorySweep,
}

/// How often the requestor side removes a slice of old records.
pub const HISTORY_SWEEP_PERIOD: Duration = Duration::from_secs(10);

impl Actor for RequestorActivityActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(HISTORY_SWEEP_PERIOD, |actor, _ctx| {
            actor
                .history
                .sweep(&actor.tree, actor.agreements.as_ref(), SWEEP_BATCH);
        });
    }
}

/// Handle to the requestor side. Cheap to clone.
#[derive(Clone)]
pub struct RequestorSide {
    actor: Supervised<RequestorActivityActor>,
    records: ActivityRecords,
    router: Router,
}

impl RequestorSide {
    /// Start the actor on `arbiter`.
    pub(in crate::activity) fn start(
        arbiter: &actix_rt::ArbiterHandle,
        node_id: NodeId,
        router: Router,
        agreements: Arc<dyn Agreements>,
        tree: sled::Tree,
    ) -> RequestorSide {
        let records = ActivityRecords::new(tree.clone());
        let actor_router = router.clone();
        let actor = Supervised::start("activity-requestor", arbiter, move || {
            RequestorActivityActor {
                node_id,
                router: actor_router.clone(),
                agreements: agreements.clone(),
                tree: tree.clone(),
                history: HistorySweep::new(CREATED_PREFIX),
            }
        });
        RequestorSide {
            actor,
            records,
            router,
        }
    }

    /// The record of an activity this node created (from sled).
    pub fn find(&self, activity_id: &str) -> Option<RequestorActivity> {
        self.records.created(activity_id)
    }

    /// Stop supervising (shutdown): the actor is not started again.
    pub fn stop(&self) {
        self.actor.stop();
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::time::Duration;

    use golem_bus::{ServiceArbiter, ServiceEndpoint};
    use golem_model::activity::{ActivityState, State};
    use golem_model::activity_control::{CreateActivityRemote, GetStateRemote};
    use golem_model::market::Agreement;
    use golem_model::{ErrorCode, GolemError};
    use serde_json::json;

    use super::*;

    const REQUESTOR: &str = "0x1111111111111111111111111111111111111111";
    const PROVIDER: &str = "0x2222222222222222222222222222222222222222";

    struct OneAgreement(Agreement);

    impl Agreements for OneAgreement {
        fn agreement(&self, id: &str) -> Result<Agreement, GolemError> {
            (id == self.0.agreement_id)
                .then(|| self.0.clone())
                .ok_or_else(|| GolemError::not_found(id.to_string()))
        }
    }

    /// Created activities are recorded in sled before create answers, read
    /// back through the view; an unknown agreement creates nothing.
    #[tokio::test]
    async fn created_activities_are_recorded_in_steps_and_read_from_sled() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::Store::open(dir.path()).unwrap();
        let tree = store.tree("activity").unwrap();
        let now = chrono::Utc::now();
        let agreement: Agreement = serde_json::from_value(json!({
            "agreementId": "a1",
            "demand": {"properties": {}, "constraints": "()", "demandId": "d",
                       "requestorId": REQUESTOR, "timestamp": now},
            "offer": {"properties": {}, "constraints": "()", "offerId": "o",
                      "providerId": PROVIDER, "timestamp": now},
            "validTo": now + chrono::Duration::hours(1),
            "state": "Approved",
            "timestamp": now,
        }))
        .unwrap();
        let router = Router::new();
        // A stand-in provider daemon: every new activity is Ready at once.
        let provider =
            ServiceEndpoint::new()
                .on(|_caller, _create: CreateActivityRemote| async move {
                    Ok(golem_model::ids::new_id())
                })
                .on(|_caller, _get: GetStateRemote| async move {
                    Ok(ActivityState::from(State::Ready))
                });
        router.bind_prefix("/net/", provider).unwrap();
        let arbiter = ServiceArbiter::spawn("activity-requestor-test").unwrap();
        let requestor = RequestorSide::start(
            arbiter.handle(),
            REQUESTOR.parse().unwrap(),
            router,
            Arc::new(OneAgreement(agreement)),
            tree.clone(),
        );
        let mut ids = Vec::new();
        for _ in 0..200 {
            ids.push(
                requestor
                    .create("a1", Duration::from_secs(5))
                    .await
                    .unwrap(),
            );
        }
        for id in &ids {
            let record = requestor.find(id).unwrap();
            assert_eq!(record.agreement_id, "a1");
            assert_eq!(record.provider_id, PROVIDER.parse().unwrap());
        }
        let unknown = requestor.create("a2", Duration::from_secs(1)).await;
        assert_eq!(unknown.unwrap_err().code, ErrorCode::NotFound);
        requestor.stop();
        arbiter.stop();
    }
}
