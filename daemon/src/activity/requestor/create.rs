//! Creating an activity, in named steps: check the agreement (in the actor),
//! ask the provider's daemon for an activity (outside), record it (in the
//! actor, before answering), wait until the provider's exe unit has started
//! (outside, polling the provider within the caller's deadline).

use std::time::Duration;

use actix::{ActorFutureExt, Context, Handler, ResponseActFuture, WrapFuture};
use chrono::Utc;
use golem_bus::Router;
use golem_model::activity::State;
use golem_model::activity_control::{
    CreateActivityRemote, GetStateRemote, ACTIVITY_PUBLIC_SERVICE,
};
use golem_model::market::AgreementState;
use golem_model::{ErrorCode, GolemError, NodeId};

use super::{RequestorActivityActor, RequestorSide};
use crate::activity::records::{put, RequestorActivity, CREATED_PREFIX};

/// How often the wait for the exe unit asks the provider.
const STARTED_POLL: Duration = Duration::from_millis(50);

/// Create an activity on the provider of `agreement_id`; answers once the
/// provider's exe unit reports Initialized, or fails after `timeout`.
pub struct CreateActivity {
    pub agreement_id: String,
    pub timeout: Duration,
}

impl actix::Message for CreateActivity {
    type Result = Result<String, GolemError>;
}

impl Handler<CreateActivity> for RequestorActivityActor {
    type Result = ResponseActFuture<Self, Result<String, GolemError>>;

    fn handle(&mut self, message: CreateActivity, _ctx: &mut Context<Self>) -> Self::Result {
        let deadline = tokio::time::Instant::now() + message.timeout;
        let provider_id = match self.provider_of(&message.agreement_id) {
            Ok(provider_id) => provider_id,
            Err(error) => return Box::pin(actix::fut::ready(Err(error))),
        };
        let router = self.router.clone();
        let request = request_activity(
            router.clone(),
            provider_id,
            message.agreement_id.clone(),
            message.timeout,
        );
        let agreement_id = message.agreement_id;
        let timeout = message.timeout;
        Box::pin(
            request
                .into_actor(self)
                .map(move |activity_id, actor, _ctx| {
                    actor.record_created(activity_id?, agreement_id, provider_id)
                })
                .then(move |recorded, actor, _ctx| {
                    async move {
                        let activity = recorded?;
                        wait_until_started(&router, &activity, deadline, timeout).await?;
                        Ok(activity.activity_id)
                    }
                    .into_actor(actor)
                }),
        )
    }
}

impl RequestorActivityActor {
    /// Step 1: the provider of an Approved agreement this node made as requestor.
    fn provider_of(&self, agreement_id: &str) -> Result<NodeId, GolemError> {
        let agreement = self.agreements.agreement(agreement_id)?;
        if agreement.demand.requestor_id != self.node_id {
            return Err(GolemError::forbidden(format!(
                "agreement {agreement_id} was not made by this node as requestor"
            )));
        }
        if agreement.state != AgreementState::Approved {
            return Err(GolemError::conflict(format!(
                "agreement {agreement_id} is {:?}; create activities on Approved agreements",
                agreement.state
            )));
        }
        Ok(agreement.offer.provider_id)
    }

    /// Step 3: commit the record of the activity the provider made.
    fn record_created(
        &mut self,
        activity_id: String,
        agreement_id: String,
        provider_id: NodeId,
    ) -> Result<RequestorActivity, GolemError> {
        // The provider chose it, and it becomes a sled key here.
        golem_model::ids::check_id("activity id from the provider", &activity_id)?;
        let activity = RequestorActivity {
            activity_id,
            agreement_id,
            provider_id,
            created: Utc::now(),
        };
        put(
            &self.tree,
            format!("{CREATED_PREFIX}{}", activity.activity_id),
            &activity,
        )?;
        tracing::info!(activity_id = %activity.activity_id, agreement_id = %activity.agreement_id, %provider_id, "activity created on the provider");
        Ok(activity)
    }
}

/// Step 2: ask the provider's daemon for an activity (it answers within its own bound).
async fn request_activity(
    router: Router,
    provider_id: NodeId,
    agreement_id: String,
    timeout: Duration,
) -> Result<String, GolemError> {
    let message = CreateActivityRemote {
        agreement_id,
        timeout_sec: timeout.as_secs_f64(),
    };
    let address = golem_bus::address::net_address(provider_id, ACTIVITY_PUBLIC_SERVICE);
    router.call(&address, &message).await
}

/// Step 4: keep asking the provider until the activity leaves New, up to `deadline`.
async fn wait_until_started(
    router: &Router,
    activity: &RequestorActivity,
    deadline: tokio::time::Instant,
    timeout: Duration,
) -> Result<(), GolemError> {
    let activity_id = &activity.activity_id;
    let address = golem_bus::address::net_address(activity.provider_id, ACTIVITY_PUBLIC_SERVICE);
    loop {
        let message = GetStateRemote {
            activity_id: activity_id.clone(),
        };
        let state = router.call(&address, &message).await?;
        match state.state.0 {
            State::New => {}
            State::Terminated => {
                return Err(GolemError::new(
                    ErrorCode::Gone,
                    format!(
                        "activity {activity_id} terminated at start: {}",
                        state.reason.unwrap_or_default()
                    ),
                ))
            }
            _ => return Ok(()),
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(GolemError::timeout(format!(
                "the provider {} did not start an exe unit for activity {activity_id} within {:.0} s",
                activity.provider_id,
                timeout.as_secs_f64()
            )));
        }
        tokio::time::sleep(STARTED_POLL).await;
    }
}

impl RequestorSide {
    /// Create an activity on the provider of `agreement_id` (see [`CreateActivity`]).
    pub async fn create(
        &self,
        agreement_id: &str,
        timeout: Duration,
    ) -> Result<String, GolemError> {
        let message = CreateActivity {
            agreement_id: agreement_id.to_string(),
            timeout,
        };
        golem_bus::actor::deliver(&self.actor, message).await?
    }
}
