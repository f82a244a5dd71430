//! How an agreement ends: the provider rejects a Pending one, the requestor
//! cancels one before approval (each told to the counterparty through the
//! outbox), or either side terminates an approved one (told at once, and
//! through the outbox when the counterparty cannot be reached).

use actix::{ActorFutureExt, Context, Handler, Message, ResponseActFuture, ResponseFuture};
use golem_model::market::{
    AgreementCancelled, AgreementOperationEvent, AgreementRejected, AgreementState,
    AgreementTerminated, Reason,
};
use golem_model::{GolemError, NodeId};

use super::actor::MarketActor;
use super::agreement_records::{record_event, update_agreement};
use super::errors::final_state_error;
use super::ownership::{any_role, owned_agreement};
use super::records::{now, Role};
use super::MarketService;

/// `POST /agreements/{id}/reject` (provider) or `/cancel` (requestor).
#[derive(Message)]
#[rtype(result = "Result<(), GolemError>")]
pub(crate) struct RefuseAgreement {
    pub owner: NodeId,
    pub id: String,
    pub role: Role,
    pub reason: Option<Reason>,
}

/// `POST /agreements/{id}/terminate`.
#[derive(Message)]
#[rtype(result = "Result<(), GolemError>")]
pub(crate) struct TerminateAgreement {
    pub owner: NodeId,
    pub id: String,
    pub reason: Option<Reason>,
}

/// `GET|POST /agreements/{id}/terminate/reason`.
#[derive(Message)]
#[rtype(result = "Result<AgreementOperationEvent, GolemError>")]
pub(crate) struct TerminationReason {
    pub owner: NodeId,
    pub id: String,
}

impl MarketService {
    /// `POST /agreements/{id}/reject` (provider).
    pub async fn reject_agreement(
        &self,
        owner: NodeId,
        id: &str,
        reason: Option<Reason>,
    ) -> Result<(), GolemError> {
        let id = id.to_string();
        let role = Role::Provider;
        self.ask(RefuseAgreement {
            owner,
            id,
            role,
            reason,
        })
        .await
    }

    /// `POST /agreements/{id}/cancel` (requestor, before approval).
    pub async fn cancel_agreement(
        &self,
        owner: NodeId,
        id: &str,
        reason: Option<Reason>,
    ) -> Result<(), GolemError> {
        let id = id.to_string();
        let role = Role::Requestor;
        self.ask(RefuseAgreement {
            owner,
            id,
            role,
            reason,
        })
        .await
    }

    /// `POST /agreements/{id}/terminate` (either side, once approved). The
    /// local record ends at once; the counterparty is told right away and, if
    /// unreachable, again in the background.
    pub async fn terminate_agreement(
        &self,
        owner: NodeId,
        id: &str,
        reason: Option<Reason>,
    ) -> Result<(), GolemError> {
        let id = id.to_string();
        self.ask(TerminateAgreement { owner, id, reason }).await
    }

    /// `GET|POST /agreements/{id}/terminate/reason`.
    pub async fn termination_reason(
        &self,
        owner: NodeId,
        id: &str,
    ) -> Result<AgreementOperationEvent, GolemError> {
        let id = id.to_string();
        self.ask(TerminationReason { owner, id }).await
    }
}

impl MarketActor {
    /// Reject (provider, Pending) or cancel (requestor, before approval) our
    /// record; the counterparty to tell, if it has seen the agreement.
    fn refuse(&mut self, message: &RefuseAgreement) -> Result<Option<NodeId>, GolemError> {
        let RefuseAgreement {
            owner,
            id,
            role,
            reason,
        } = message;
        let (owner, role, id) = (*owner, *role, id.as_str());
        let db = &self.core.db;
        let state = &mut self.state;
        let record = owned_agreement(state, owner, role, id)?;
        let was = record.agreement.state;
        let allowed = match role {
            Role::Provider => was == AgreementState::Pending,
            Role::Requestor => matches!(was, AgreementState::Proposal | AgreementState::Pending),
        };
        if !allowed {
            return Err(final_state_error(id, was));
        }
        let counterparty = record.counterparty();
        let to = match role {
            Role::Provider => AgreementState::Rejected,
            Role::Requestor => AgreementState::Cancelled,
        };
        update_agreement(db, state, role, id, |record| {
            record.agreement.state = to;
            record.reason = reason.clone();
        })?;
        let reason = reason.clone();
        record_event(db, state, role, id, |event_date| match role {
            Role::Provider => AgreementOperationEvent::AgreementRejectedEvent {
                event_date,
                agreement_id: id.to_string(),
                reason,
            },
            Role::Requestor => AgreementOperationEvent::AgreementCancelledEvent {
                event_date,
                agreement_id: id.to_string(),
                reason,
            },
        })?;
        self.core.signals.bump_agreements();
        Ok((role == Role::Provider || was == AgreementState::Pending).then_some(counterparty))
    }

    /// End our approved record of `id`; the notice for the counterparty.
    fn mark_terminated(
        &mut self,
        owner: NodeId,
        id: &str,
        reason: Option<Reason>,
    ) -> Result<(NodeId, AgreementTerminated), GolemError> {
        let terminated_date = now();
        let db = &self.core.db;
        let state = &mut self.state;
        let role = any_role(state, owner, id)?;
        // A node trading with itself holds both records; end the one still running.
        let role = [role, Role::Provider]
            .into_iter()
            .find(|candidate| {
                owned_agreement(state, owner, *candidate, id)
                    .is_ok_and(|record| record.agreement.state == AgreementState::Approved)
            })
            .unwrap_or(role);
        let record = owned_agreement(state, owner, role, id)?;
        match record.agreement.state {
            AgreementState::Approved => {}
            AgreementState::Proposal | AgreementState::Pending => {
                return Err(GolemError::conflict(format!(
                    "agreement {id} is not approved yet ({:?})",
                    record.agreement.state
                )))
            }
            other => return Err(final_state_error(id, other)),
        }
        let counterparty = record.counterparty();
        update_agreement(db, state, role, id, |record| {
            record.agreement.state = AgreementState::Terminated;
            record.terminator = Some(role.terminator());
            record.reason = reason.clone();
            record.terminated_date = Some(terminated_date);
        })?;
        let event_reason = reason.clone();
        record_event(db, state, role, id, |event_date| {
            AgreementOperationEvent::AgreementTerminatedEvent {
                event_date,
                agreement_id: id.to_string(),
                terminator: role.terminator(),
                signature: String::new(),
                reason: event_reason,
            }
        })?;
        self.core.signals.bump_agreements();
        tracing::info!(agreement_id = id, terminator = ?role.terminator(), "agreement terminated");
        let message = AgreementTerminated {
            agreement_id: id.to_string(),
            terminator: role.terminator(),
            terminated_date,
            reason,
        };
        Ok((counterparty, message))
    }

    fn termination_reason(
        &self,
        owner: NodeId,
        id: &str,
    ) -> Result<AgreementOperationEvent, GolemError> {
        let role = any_role(&self.state, owner, id)?;
        let record = owned_agreement(&self.state, owner, role, id)?;
        let (Some(terminator), Some(date)) = (record.terminator, record.terminated_date) else {
            return Err(GolemError::not_found(format!(
                "agreement {id} is not terminated"
            )));
        };
        Ok(AgreementOperationEvent::AgreementTerminatedEvent {
            event_date: date,
            agreement_id: id.to_string(),
            terminator,
            signature: String::new(),
            reason: record.reason.clone(),
        })
    }
}

impl Handler<RefuseAgreement> for MarketActor {
    type Result = ResponseFuture<Result<(), GolemError>>;

    /// Record the rejection or cancellation and queue its notice.
    fn handle(&mut self, message: RefuseAgreement, ctx: &mut Context<Self>) -> Self::Result {
        let refused = self.refuse(&message).map(|counterparty| {
            let Some(counterparty) = counterparty else {
                return;
            };
            let RefuseAgreement {
                id: agreement_id,
                role,
                reason,
                ..
            } = message;
            match role {
                Role::Provider => {
                    let notice = AgreementRejected {
                        agreement_id,
                        reason,
                    };
                    self.notify_remote(ctx, counterparty, notice)
                }
                Role::Requestor => {
                    let notice = AgreementCancelled {
                        agreement_id,
                        reason,
                    };
                    self.notify_remote(ctx, counterparty, notice)
                }
            }
        });
        self.core.after_flush(refused)
    }
}

impl Handler<TerminateAgreement> for MarketActor {
    type Result = ResponseActFuture<Self, Result<(), GolemError>>;

    /// End the record, flush, tell the counterparty; if it cannot be reached
    /// the notice goes to the outbox.
    fn handle(&mut self, message: TerminateAgreement, _ctx: &mut Context<Self>) -> Self::Result {
        let TerminateAgreement { owner, id, reason } = message;
        let (counterparty, notice) = match self.mark_terminated(owner, &id, reason) {
            Ok(terminated) => terminated,
            Err(error) => return Box::pin(actix::fut::ready(Err(error))),
        };
        let flush = self.core.flush();
        let call = self.core.call_remote(counterparty, notice.clone());
        let delivery = async move {
            flush.await?;
            Ok::<_, GolemError>(call.await)
        };
        Box::pin(
            actix::fut::wrap_future(delivery)
                .map(move |sent, actor: &mut MarketActor, ctx| {
                    if let Err(error) = sent? {
                        tracing::warn!(agreement_id = %id, %counterparty, %error, "termination not delivered yet; retrying in the background");
                        actor.notify_remote(ctx, counterparty, notice);
                        return Ok(Some(actor.core.flush()));
                    }
                    Ok(None)
                })
                .then(|flush: Result<_, GolemError>, _, _| {
                    actix::fut::wrap_future(async move {
                        match flush? {
                            Some(flush) => flush.await,
                            None => Ok(()),
                        }
                    })
                }),
        )
    }
}

impl Handler<TerminationReason> for MarketActor {
    type Result = Result<AgreementOperationEvent, GolemError>;

    fn handle(&mut self, message: TerminationReason, _ctx: &mut Context<Self>) -> Self::Result {
        self.termination_reason(message.owner, &message.id)
    }
}
