//! The requestor side of activities: [`RequestorActivityActor`] records the
//! activities this node creates (it is the only writer of `requestor/<id>`),
//! and [`RequestorSide`] drives them on the provider's daemon
//! (`/net/<provider>/public/activity`). Long waits are split into rounds that
//! each stay below the net call timeout, and run in the caller, not the actor.
//!
//! Nothing per activity is kept in memory: the records are read from sled
//! ([`ActivityRecords`]), so a requestor that creates an activity for every
//! agreement for months holds no more memory than on its first day.

mod control;
mod create;

use std::sync::Arc;

use actix::{Actor, Context};
use golem_bus::{Router, Supervised};
use golem_model::NodeId;

use super::records::{ActivityRecords, RequestorActivity};
use super::Agreements;

/// The requestor side of the activity service, as an actor. It owns the
/// write path of the created-activity records; remote calls run outside it.
pub struct RequestorActivityActor {
    node_id: NodeId,
    router: Router,
    agreements: Arc<dyn Agreements>,
    tree: sled::Tree,
}

impl Actor for RequestorActivityActor {
    type Context = Context<Self>;
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
