//! `/public/activity`: what requestors' daemons may call, each message bound to
//! a handler of the actor. Create runs in named steps: settle the agreement
//! (outside the actor), admit the activity (in the actor: record, count, event
//! for the agent), wait for the exe unit (outside, on the committed record).

use std::sync::Arc;
use std::time::Duration;

use actix::{ActorFutureExt, Context, Handler, ResponseActFuture, ResponseFuture, WrapFuture};
use chrono::Utc;
use futures::StreamExt;
use golem_bus::{Caller, Incoming, Router, ServiceEndpoint, Supervised};
use golem_model::activity::{
    exe_unit_address, ActivityState, ActivityUsage, ExeScriptCommandState, GetRunningCommand,
    Shutdown, State,
};
use golem_model::activity_control::{
    CreateActivityRemote, DestroyActivityRemote, ExecRemote, GetBatchResultsRemote,
    GetRunningCommandRemote, GetStateRemote, GetUsageRemote, ProviderEvent,
    StreamBatchEventsRemote,
};
use golem_model::ids::check_id;
use golem_model::market::{Agreement, AgreementState};
use golem_model::{GolemError, NodeId};

use super::batches::{event_stream, WatchBatch};
use super::{HostedActivity, HostedRecord, ProviderActivityActor, Shared, MAX_REMOTE_WAIT};
use crate::activity::Agreements;
use crate::api::query::bounded_seconds;

/// How long a create waits for our agreement record to leave Pending: the
/// market tells the requestor "Approved" before it commits its own record.
const AGREEMENT_SETTLE_WAIT: Duration = Duration::from_secs(3);

/// The `/public/activity` endpoint, bound to `actor`.
pub(super) fn endpoint(actor: &Supervised<ProviderActivityActor>) -> ServiceEndpoint {
    let events = actor.clone();
    ServiceEndpoint::new()
        .on_actor::<CreateActivityRemote, _, _>(actor.clone())
        .on_actor::<DestroyActivityRemote, _, _>(actor.clone())
        .on_actor::<ExecRemote, _, _>(actor.clone())
        .on_actor::<GetBatchResultsRemote, _, _>(actor.clone())
        .on_actor::<GetStateRemote, _, _>(actor.clone())
        .on_actor::<GetUsageRemote, _, _>(actor.clone())
        .on_actor::<GetRunningCommandRemote, _, _>(actor.clone())
        .on_stream(move |caller, message: StreamBatchEventsRemote| {
            let actor = events.clone();
            futures::stream::once(async move {
                let watch = WatchBatch::from((caller, message));
                match golem_bus::actor::deliver(&actor, watch).await {
                    Ok(Ok(receiver)) => event_stream(receiver),
                    Ok(Err(error)) | Err(error) => {
                        futures::stream::once(async move { Err(error) }).boxed()
                    }
                }
            })
            .flatten()
        })
}

impl Handler<Incoming<CreateActivityRemote>> for ProviderActivityActor {
    type Result = ResponseActFuture<Self, Result<String, GolemError>>;

    fn handle(
        &mut self,
        incoming: Incoming<CreateActivityRemote>,
        _ctx: &mut Context<Self>,
    ) -> Self::Result {
        let message = incoming.message;
        let Caller::Remote(requestor) = incoming.caller else {
            return Box::pin(actix::fut::ready(Err(GolemError::forbidden(
                "activities are created by the requestor's daemon",
            ))));
        };
        if let Err(error) = check_id("agreement id", &message.agreement_id) {
            return Box::pin(actix::fut::ready(Err(error)));
        }
        let shared = self.shared.clone();
        let wait = bounded_seconds(message.timeout_sec, MAX_REMOTE_WAIT);
        let settle = settle_agreement(self.shared.agreements.clone(), message.agreement_id);
        Box::pin(
            settle
                .into_actor(self)
                .map(move |agreement, actor, _ctx| actor.admit(requestor, agreement?))
                .then(move |admitted, actor, _ctx| {
                    async move {
                        let activity_id = admitted?;
                        // Answer once the exe unit is up; the requestor's daemon keeps waiting if it is not yet.
                        wait_until_started(&shared, &activity_id, wait).await;
                        Ok(activity_id)
                    }
                    .into_actor(actor)
                }),
        )
    }
}

/// Step 1 of create: the agreement, once our record of it is no longer Pending
/// (or after [`AGREEMENT_SETTLE_WAIT`]).
async fn settle_agreement(
    agreements: Arc<dyn Agreements>,
    agreement_id: String,
) -> Result<Agreement, GolemError> {
    let mut agreement = agreements.agreement(&agreement_id)?;
    let deadline = tokio::time::Instant::now() + AGREEMENT_SETTLE_WAIT;
    while agreement.state == AgreementState::Pending && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
        agreement = agreements.agreement(&agreement_id)?;
    }
    Ok(agreement)
}

/// Step 3 of create: wait (outside the actor) until the committed state is no longer New.
async fn wait_until_started(shared: &Shared, activity_id: &str, wait: Duration) {
    let mut changes = shared.changes.subscribe();
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        if shared
            .records
            .hosted_state(activity_id)
            .is_none_or(|state| state != State::New)
        {
            return;
        }
        if tokio::time::timeout_at(deadline, changes.changed())
            .await
            .map_or(true, |changed| changed.is_err())
        {
            return;
        }
    }
}

impl ProviderActivityActor {
    /// Step 2 of create: check the agreement and the limit, then record the
    /// activity, count it and tell the agent to start an exe unit.
    fn admit(&mut self, requestor: NodeId, agreement: Agreement) -> Result<String, GolemError> {
        check_agreement(&agreement, requestor, self.shared.node_id)?;
        let agreement_id = agreement.agreement_id;
        let limit = self.shared.settings.max_per_agreement;
        let created = self
            .book
            .created_per_agreement
            .get(&agreement_id)
            .copied()
            .unwrap_or(0);
        if created >= limit {
            tracing::debug!(%agreement_id, %requestor, limit, "activity refused: the agreement has created its maximum");
            return Err(GolemError::conflict(format!(
                "agreement {agreement_id} has already created {created} activities, the limit of this provider \
                 (activity.max-per-agreement / GOLEM_ACTIVITY_MAX_PER_AGREEMENT = {limit})"
            )));
        }
        let activity_id = golem_model::ids::new_id();
        let record = HostedRecord {
            activity_id: activity_id.clone(),
            agreement_id: agreement_id.clone(),
            requestor_id: requestor,
            state: State::New.into(),
            created: Utc::now(),
        };
        self.persist(&record)?;
        *self
            .book
            .created_per_agreement
            .entry(agreement_id.clone())
            .or_default() += 1;
        self.book.activities.insert(
            activity_id.clone(),
            HostedActivity::new(record, &self.shared.batches),
        );
        self.push_event(ProviderEvent::CreateActivity {
            event_date: Utc::now(),
            activity_id: activity_id.clone(),
            agreement_id: agreement_id.clone(),
            requestor_pub_key: None,
        });
        tracing::info!(%activity_id, %agreement_id, "activity created; waiting for the exe unit");
        Ok(activity_id)
    }
}

/// An agreement of `requestor` with this provider, Approved.
fn check_agreement(
    agreement: &Agreement,
    requestor: NodeId,
    provider: NodeId,
) -> Result<(), GolemError> {
    let agreement_id = &agreement.agreement_id;
    if agreement.demand.requestor_id != requestor {
        return Err(GolemError::forbidden(format!(
            "agreement {agreement_id} belongs to another requestor"
        )));
    }
    if agreement.offer.provider_id != provider {
        return Err(GolemError::not_found(format!(
            "agreement {agreement_id} is not with this provider"
        )));
    }
    if agreement.state != AgreementState::Approved {
        return Err(GolemError::conflict(format!(
            "agreement {agreement_id} is {:?}; activities need an Approved agreement",
            agreement.state
        )));
    }
    Ok(())
}

impl Handler<Incoming<DestroyActivityRemote>> for ProviderActivityActor {
    type Result = ResponseActFuture<Self, Result<(), GolemError>>;

    fn handle(
        &mut self,
        incoming: Incoming<DestroyActivityRemote>,
        _ctx: &mut Context<Self>,
    ) -> Self::Result {
        let activity_id = incoming.message.activity_id;
        if let Err(error) = self.check_owner(incoming.caller, &activity_id) {
            return Box::pin(actix::fut::ready(Err(error)));
        }
        if let Some(hosted) = self.book.activities.get_mut(&activity_id) {
            // Its exe unit leaves the bus when it takes the shutdown: that is this destroy.
            hosted.destroying = true;
        }
        let router = self.shared.router.clone();
        let shutdown = shutdown_exe_unit(router, activity_id.clone());
        Box::pin(shutdown.into_actor(self).map(move |(), actor, _ctx| {
            actor.finish(&activity_id, "destroyed by the requestor", true);
            Ok(())
        }))
    }
}

/// Ask the exe unit of `activity_id` (when it is on the bus) to shut down.
async fn shutdown_exe_unit(router: Router, activity_id: String) {
    let address = exe_unit_address(&activity_id);
    if !router.is_bound(&address) {
        return;
    }
    let shutdown = Shutdown {
        reason: Some("destroyed by the requestor".into()),
    };
    if let Err(error) = router.call(&address, &shutdown).await {
        tracing::warn!(%activity_id, %error, "exe unit did not take the shutdown");
    }
}

impl Handler<Incoming<GetStateRemote>> for ProviderActivityActor {
    type Result = Result<ActivityState, GolemError>;

    fn handle(
        &mut self,
        incoming: Incoming<GetStateRemote>,
        _ctx: &mut Context<Self>,
    ) -> Self::Result {
        self.check_owner(incoming.caller, &incoming.message.activity_id)
            .map(|record| record.state)
    }
}

impl Handler<Incoming<GetUsageRemote>> for ProviderActivityActor {
    type Result = Result<ActivityUsage, GolemError>;

    fn handle(
        &mut self,
        incoming: Incoming<GetUsageRemote>,
        _ctx: &mut Context<Self>,
    ) -> Self::Result {
        let activity_id = incoming.message.activity_id;
        self.check_owner(incoming.caller, &activity_id)?;
        let hosted = self.in_memory(&activity_id)?;
        Ok(ActivityUsage {
            current_usage: hosted.usage.current_usage.clone(),
            timestamp: hosted.usage.timestamp.max(0),
        })
    }
}

impl Handler<Incoming<GetRunningCommandRemote>> for ProviderActivityActor {
    type Result = ResponseFuture<Result<Option<ExeScriptCommandState>, GolemError>>;

    fn handle(
        &mut self,
        incoming: Incoming<GetRunningCommandRemote>,
        _ctx: &mut Context<Self>,
    ) -> Self::Result {
        let activity_id = incoming.message.activity_id;
        let checked = self.check_owner(incoming.caller, &activity_id);
        let router = self.shared.router.clone();
        Box::pin(async move {
            checked?;
            let address = exe_unit_address(&activity_id);
            if !router.is_bound(&address) {
                return Ok(None);
            }
            router.call(&address, &GetRunningCommand).await
        })
    }
}
