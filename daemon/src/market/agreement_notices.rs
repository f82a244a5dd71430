//! What the other party of an agreement tells us, each a `/public/market`
//! message handled by the market actor (see `public.rs`): a requestor's
//! confirmed agreement on our Draft (provider side), the provider's approval
//! or rejection (requestor side), the requestor's cancellation, and either
//! side's termination. A repeated message is acknowledged without a second
//! event; a message about a record in another state answers 410.

use chrono::{DateTime, Utc};
use golem_model::market::{
    AgreementApproved, AgreementCancelled, AgreementOperationEvent, AgreementReceived,
    AgreementRejected, AgreementState, AgreementTerminated, MarketEvent, ProposalState, Terminator,
};
use golem_model::{GolemError, NodeId};

use super::actor::MarketActor;
use super::agreement_records::{build_agreement, record_event, update_agreement};
use super::errors::{expired_proposal, final_state_error, gone, proposal_not_found};
use super::ownership::counterparty_record;
use super::records::{now, AgreementRecord, ProposalRecord, Role};

impl MarketActor {
    /// Provider side: a requestor confirmed an agreement on our Draft.
    pub(crate) fn on_agreement_received(
        &mut self,
        caller: NodeId,
        message: AgreementReceived,
    ) -> Result<(), GolemError> {
        let current = now();
        let (demand_proposal, offer_proposal) =
            self.received_agreement_basis(caller, &message, current)?;
        let agreement = build_agreement(
            message.agreement_id.clone(),
            &demand_proposal,
            &offer_proposal,
            message.valid_to,
            message.timestamp,
            AgreementState::Pending,
        );
        let state = &mut self.state;
        let db = &self.core.db;
        state.update_proposal(db, &message.offer_id, &message.proposal_id, |record| {
            record.proposal.state = ProposalState::Accepted
        })?;
        state.save_agreement(
            db,
            AgreementRecord {
                role: Role::Provider,
                agreement: agreement.clone(),
                subscription_id: message.offer_id.clone(),
                offer_proposal_id: message.proposal_id.clone(),
                terminator: None,
                reason: None,
                terminated_date: None,
            },
        )?;
        let event = MarketEvent::AgreementEvent {
            event_date: current,
            agreement,
        };
        state.push_event(db, &message.offer_id, event)?;
        self.core.signals.bump_events();
        self.core.signals.bump_agreements();
        Ok(())
    }

    /// The two proposal records (the requestor's last, our Draft) a new
    /// agreement from `caller` promotes, if it may: unknown yet, unexpired,
    /// on a live offer of ours and a Draft we gave `caller`.
    fn received_agreement_basis(
        &self,
        caller: NodeId,
        message: &AgreementReceived,
        current: DateTime<Utc>,
    ) -> Result<(ProposalRecord, ProposalRecord), GolemError> {
        let state = &self.state;
        let id = &message.agreement_id;
        if state.agreements.contains_key(&(Role::Provider, id.clone())) {
            return Err(GolemError::conflict(format!(
                "agreement {id} is already known"
            )));
        }
        if message.valid_to <= current {
            return Err(gone(format!("agreement {id} has expired")));
        }
        let offer_live = state
            .offers
            .get(&message.offer_id)
            .is_some_and(|offer| offer.stored.local && offer.is_live(current));
        if !offer_live {
            return Err(GolemError::not_found(format!(
                "offer {} not found",
                message.offer_id
            )));
        }
        let offer_proposal = state
            .proposal(&message.offer_id, &message.proposal_id)
            .filter(|record| record.ours && record.requestor_id == caller)
            .ok_or_else(|| proposal_not_found(&message.proposal_id))?
            .clone();
        match state.proposal_state(&offer_proposal, current) {
            ProposalState::Draft => {}
            ProposalState::Expired => {
                return Err(expired_proposal(
                    &message.proposal_id,
                    state.proposal_expiration(&offer_proposal),
                ))
            }
            other => {
                return Err(gone(format!(
                    "proposal {} is {other:?}",
                    message.proposal_id
                )))
            }
        }
        let demand_proposal_id = offer_proposal
            .proposal
            .prev_proposal_id
            .as_deref()
            .ok_or_else(|| GolemError::bad_request("the proposal answers no demand proposal"))?;
        let demand_proposal = state
            .proposal(&message.offer_id, demand_proposal_id)
            .ok_or_else(|| proposal_not_found(demand_proposal_id))?
            .clone();
        Ok((demand_proposal, offer_proposal))
    }

    /// Requestor side: the provider approved.
    pub(crate) fn on_agreement_approved(
        &mut self,
        caller: NodeId,
        message: AgreementApproved,
    ) -> Result<(), GolemError> {
        let id = message.agreement_id.as_str();
        self.counterparty_step(
            caller,
            CounterpartyStep {
                role: Role::Requestor,
                id,
                from: &[AgreementState::Pending],
                to: AgreementState::Approved,
            },
            |record| record.agreement.approved_date = Some(message.approved_date),
            |event_date| AgreementOperationEvent::AgreementApprovedEvent {
                event_date,
                agreement_id: id.to_string(),
            },
        )
    }

    /// Requestor side: the provider rejected.
    pub(crate) fn on_agreement_rejected(
        &mut self,
        caller: NodeId,
        message: AgreementRejected,
    ) -> Result<(), GolemError> {
        let id = message.agreement_id.as_str();
        let reason = message.reason.clone();
        self.counterparty_step(
            caller,
            CounterpartyStep {
                role: Role::Requestor,
                id,
                from: &[AgreementState::Pending],
                to: AgreementState::Rejected,
            },
            |record| record.reason = message.reason.clone(),
            |event_date| AgreementOperationEvent::AgreementRejectedEvent {
                event_date,
                agreement_id: id.to_string(),
                reason,
            },
        )
    }

    /// Provider side: the requestor cancelled before our approval.
    pub(crate) fn on_agreement_cancelled(
        &mut self,
        caller: NodeId,
        message: AgreementCancelled,
    ) -> Result<(), GolemError> {
        let id = message.agreement_id.as_str();
        let reason = message.reason.clone();
        self.counterparty_step(
            caller,
            CounterpartyStep {
                role: Role::Provider,
                id,
                from: &[AgreementState::Pending, AgreementState::Proposal],
                to: AgreementState::Cancelled,
            },
            |record| record.reason = message.reason.clone(),
            |event_date| AgreementOperationEvent::AgreementCancelledEvent {
                event_date,
                agreement_id: id.to_string(),
                reason,
            },
        )
    }

    /// Either side: the other terminated.
    pub(crate) fn on_agreement_terminated(
        &mut self,
        caller: NodeId,
        message: AgreementTerminated,
    ) -> Result<(), GolemError> {
        let id = message.agreement_id.as_str();
        let role = match message.terminator {
            Terminator::Requestor => Role::Provider,
            Terminator::Provider => Role::Requestor,
        };
        let reason = message.reason.clone();
        self.counterparty_step(
            caller,
            CounterpartyStep {
                role,
                id,
                from: &[AgreementState::Approved],
                to: AgreementState::Terminated,
            },
            |record| {
                record.terminator = Some(message.terminator);
                record.reason = message.reason.clone();
                record.terminated_date = Some(message.terminated_date);
            },
            |event_date| AgreementOperationEvent::AgreementTerminatedEvent {
                event_date,
                agreement_id: id.to_string(),
                terminator: message.terminator,
                signature: String::new(),
                reason,
            },
        )
    }

    /// One move of our `step.role` record of an agreement, told by the
    /// counterparty `caller`: from one of `step.from` to `step.to`, with
    /// `change` applied and the event `event` makes recorded. A repeated
    /// message (the record is already `step.to`) is acknowledged without a
    /// second event; any other state is final and answers 410.
    fn counterparty_step(
        &mut self,
        caller: NodeId,
        step: CounterpartyStep<'_>,
        change: impl FnOnce(&mut AgreementRecord),
        event: impl FnOnce(DateTime<Utc>) -> AgreementOperationEvent,
    ) -> Result<(), GolemError> {
        let CounterpartyStep { role, id, from, to } = step;
        {
            let state = &mut self.state;
            let db = &self.core.db;
            let current = counterparty_record(state, role, id, caller)?
                .agreement
                .state;
            if current == to {
                return Ok(());
            }
            if !from.contains(&current) {
                return Err(final_state_error(id, current));
            }
            update_agreement(db, state, role, id, |record| {
                record.agreement.state = to;
                change(record);
            })?;
            record_event(db, state, role, id, event)?;
        }
        self.core.signals.bump_agreements();
        Ok(())
    }
}

/// Which record a counterparty's message moves, and between which states.
struct CounterpartyStep<'a> {
    role: Role,
    id: &'a str,
    from: &'a [AgreementState],
    to: AgreementState,
}
