//! `/local/activity`: the reports of this node's exe units (state, usage,
//! batch results and runtime events), each a handler of the actor. The REST
//! API's `PUT /activity/{id}/state|usage` (the provider agent) sends the same
//! reports with a local caller.

use actix::{Context, Handler};
use golem_bus::{Incoming, ServiceEndpoint, Supervised};
use golem_model::activity::{ReportBatchEvent, ReportBatchResult, ReportState, ReportUsage, State};
use golem_model::GolemError;

use super::{HostedActivity, ProviderActivityActor};

/// The `/local/activity` endpoint, bound to `actor`.
pub(super) fn endpoint(actor: &Supervised<ProviderActivityActor>) -> ServiceEndpoint {
    ServiceEndpoint::new()
        .on_actor::<ReportState, _, _>(actor.clone())
        .on_actor::<ReportUsage, _, _>(actor.clone())
        .on_actor::<ReportBatchEvent, _, _>(actor.clone())
        .on_actor::<ReportBatchResult, _, _>(actor.clone())
}

impl ProviderActivityActor {
    /// The activity in memory, or NotFound (an exe unit reports only on live ones).
    fn reported(&mut self, activity_id: &str) -> Result<&mut HostedActivity, GolemError> {
        self.book
            .activities
            .get_mut(activity_id)
            .ok_or_else(|| GolemError::not_found(format!("no activity {activity_id} on this node")))
    }
}

impl Handler<Incoming<ReportState>> for ProviderActivityActor {
    type Result = Result<(), GolemError>;

    fn handle(
        &mut self,
        incoming: Incoming<ReportState>,
        _ctx: &mut Context<Self>,
    ) -> Self::Result {
        let report = incoming.message;
        if report.state.state.0 == State::Terminated {
            let reason = report
                .state
                .reason
                .clone()
                .unwrap_or_else(|| "the exe unit terminated".into());
            if self.refine_lost_reason(&report.activity_id, &reason)? {
                return Ok(());
            }
            self.finish(&report.activity_id, &reason, false);
            return Ok(());
        }
        let hosted = self.reported(&report.activity_id)?;
        if hosted.record.state.state.0 == State::Terminated {
            return Ok(());
        }
        hosted.record.state = report.state;
        let record = hosted.record.clone();
        tracing::debug!(activity_id = %record.activity_id, state = ?record.state.state, "exe unit reported its state");
        self.persist(&record)?;
        self.changed();
        Ok(())
    }
}

impl ProviderActivityActor {
    /// When the activity already ended because its exe unit left the bus,
    /// take the reporter's reason instead of the generic one (the agent saw
    /// the process exit and read its last error line). True when it did.
    fn refine_lost_reason(&mut self, activity_id: &str, reason: &str) -> Result<bool, GolemError> {
        let Some(hosted) = self.book.activities.get_mut(activity_id) else {
            return Ok(false);
        };
        let state = &mut hosted.record.state;
        if state.state.0 != State::Terminated
            || state.reason.as_deref() != Some(super::supervision::EXE_UNIT_LOST)
        {
            return Ok(false);
        }
        state.reason = Some(reason.to_string());
        let record = hosted.record.clone();
        self.persist(&record)?;
        self.changed();
        Ok(true)
    }
}

impl Handler<Incoming<ReportUsage>> for ProviderActivityActor {
    type Result = Result<(), GolemError>;

    fn handle(
        &mut self,
        incoming: Incoming<ReportUsage>,
        _ctx: &mut Context<Self>,
    ) -> Self::Result {
        let report = incoming.message;
        self.reported(&report.activity_id)?.usage = report.usage;
        Ok(())
    }
}

impl Handler<Incoming<ReportBatchEvent>> for ProviderActivityActor {
    type Result = Result<(), GolemError>;

    fn handle(
        &mut self,
        incoming: Incoming<ReportBatchEvent>,
        _ctx: &mut Context<Self>,
    ) -> Self::Result {
        let report = incoming.message;
        let hosted = self.reported(&report.activity_id)?;
        let batch_id = report.event.batch_id.clone();
        hosted
            .batches
            .modify(&batch_id, |batch| batch.events.push(report.event));
        Ok(())
    }
}

impl Handler<Incoming<ReportBatchResult>> for ProviderActivityActor {
    type Result = Result<(), GolemError>;

    fn handle(
        &mut self,
        incoming: Incoming<ReportBatchResult>,
        _ctx: &mut Context<Self>,
    ) -> Self::Result {
        let report = incoming.message;
        let hosted = self.reported(&report.activity_id)?;
        hosted.batches.modify(&report.batch_id, |batch| {
            batch.finished |= report.result.is_batch_finished;
            batch.results.push(report.result);
        });
        Ok(())
    }
}
