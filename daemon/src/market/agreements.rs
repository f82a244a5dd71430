//! Agreements as our clients drive them: the requestor creates one from the
//! provider's Draft, confirms it (the provider gets it as an `AgreementEvent`),
//! the provider approves or rejects, the requestor may cancel before that, and
//! either side terminates an approved one. Each side keeps its own record
//! under the same id (two records on a node that trades with itself, told
//! apart by [`Role`]), and records the same `agreementEvents`. What the
//! counterparty tells us is in `agreement_notices.rs`.
//!
//! Every step is a message to the market actor; a step that tells the
//! counterparty and waits for its answer (confirm, approve, terminate) makes
//! that call in a future that does not borrow the state, and the outcome is
//! applied when it returns, after checking the record is still where the step
//! left it (another message may have moved it meanwhile).

use std::time::Duration;

use actix::{ActorFutureExt, Context, Handler, Message, ResponseActFuture, ResponseFuture};
use chrono::{DateTime, Utc};
use golem_model::ids::new_id;
use golem_model::market::{
    Agreement, AgreementApproved, AgreementCancelled, AgreementListEntry, AgreementOperationEvent,
    AgreementReceived, AgreementRejected, AgreementState, AgreementTerminated, Demand, Offer,
    ProposalState, Reason,
};
use golem_model::{GolemError, NodeId};

use super::actor::MarketActor;
use super::db::Db;
use super::errors::{agreement_not_found, expired_proposal, final_state_error, gone};
use super::ownership::{any_role, owned_agreement};
use super::records::{now, AgreementRecord, ProposalRecord, Role};
use super::state::State;
use super::MarketService;

/// The agreement both sides build from the same two proposal records: the
/// demand side from the requestor's last proposal, the offer side from the
/// provider's Draft.
pub(crate) fn build_agreement(
    id: String,
    demand_proposal: &ProposalRecord,
    offer_proposal: &ProposalRecord,
    valid_to: DateTime<Utc>,
    timestamp: DateTime<Utc>,
    state: AgreementState,
) -> Agreement {
    Agreement {
        agreement_id: id,
        demand: Demand {
            properties: demand_proposal.proposal.properties.clone(),
            constraints: demand_proposal.proposal.constraints.clone(),
            demand_id: offer_proposal.demand_id.clone(),
            requestor_id: offer_proposal.requestor_id,
            timestamp: demand_proposal.proposal.timestamp,
        },
        offer: Offer {
            properties: offer_proposal.proposal.properties.clone(),
            constraints: offer_proposal.proposal.constraints.clone(),
            offer_id: offer_proposal.offer_id.clone(),
            provider_id: offer_proposal.provider_id,
            timestamp: offer_proposal.proposal.timestamp,
        },
        valid_to,
        approved_date: None,
        state,
        timestamp,
        app_session_id: None,
        proposed_signature: None,
        approved_signature: None,
        committed_signature: None,
    }
}

/// Change our record of `id` in `role` and write it through.
pub(crate) fn update_agreement(
    db: &Db,
    state: &mut State,
    role: Role,
    id: &str,
    change: impl FnOnce(&mut AgreementRecord),
) -> Result<AgreementRecord, GolemError> {
    let record = state
        .agreements
        .get_mut(&(role, id.to_string()))
        .ok_or_else(|| agreement_not_found(id))?;
    change(record);
    let record = record.clone();
    db.save_agreement(&record)?;
    Ok(record)
}

/// Record an agreement event of our record of `id` in `role`.
pub(crate) fn record_event(
    db: &Db,
    state: &mut State,
    role: Role,
    id: &str,
    make: impl FnOnce(DateTime<Utc>) -> AgreementOperationEvent,
) -> Result<(), GolemError> {
    let session = state
        .agreements
        .get(&(role, id.to_string()))
        .and_then(|record| record.agreement.app_session_id.clone());
    let date = state.next_agreement_event_date();
    state.push_agreement_event(db, role, session, make(date))
}

/// `POST /agreements`: promote the provider's Draft.
#[derive(Message)]
#[rtype(result = "Result<String, GolemError>")]
pub(crate) struct CreateAgreement {
    pub owner: NodeId,
    pub proposal_id: String,
    pub valid_to: DateTime<Utc>,
}

/// `GET /agreements`.
#[derive(Message)]
#[rtype(result = "Result<Vec<AgreementListEntry>, GolemError>")]
pub(crate) struct ListAgreements {
    pub owner: NodeId,
    pub state: Option<AgreementState>,
    pub app_session_id: Option<String>,
    pub after: Option<DateTime<Utc>>,
    pub before: Option<DateTime<Utc>>,
}

/// `POST /agreements/{id}/confirm`.
#[derive(Message)]
#[rtype(result = "Result<(), GolemError>")]
pub(crate) struct ConfirmAgreement {
    pub owner: NodeId,
    pub id: String,
    pub app_session_id: Option<String>,
}

/// The state of our requestor record (what `/wait` looks at).
#[derive(Message)]
#[rtype(result = "Result<AgreementState, GolemError>")]
pub(crate) struct RequestorAgreementState {
    pub owner: NodeId,
    pub id: String,
}

/// `POST /agreements/{id}/approve`.
#[derive(Message)]
#[rtype(result = "Result<(), GolemError>")]
pub(crate) struct ApproveAgreement {
    pub owner: NodeId,
    pub id: String,
    pub app_session_id: Option<String>,
}

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

/// One look of `GET /agreementEvents`.
#[derive(Message)]
#[rtype(result = "Result<Vec<AgreementOperationEvent>, GolemError>")]
pub(crate) struct AgreementEventsAfter {
    pub after: Option<DateTime<Utc>>,
    pub app_session_id: Option<String>,
    pub max: usize,
}

impl MarketService {
    /// `POST /agreements`: promote the provider's Draft into an agreement.
    pub async fn create_agreement(
        &self,
        owner: NodeId,
        proposal_id: &str,
        valid_to: DateTime<Utc>,
    ) -> Result<String, GolemError> {
        let proposal_id = proposal_id.to_string();
        self.ask(CreateAgreement {
            owner,
            proposal_id,
            valid_to,
        })
        .await
    }

    /// Agreement `id` of `owner`, read from sled (no message to the actor).
    pub fn get_agreement(&self, owner: NodeId, id: &str) -> Result<Agreement, GolemError> {
        self.agreements.agreement(owner, id)
    }

    pub async fn list_agreements(
        &self,
        owner: NodeId,
        state: Option<AgreementState>,
        app_session_id: Option<&str>,
        after: Option<DateTime<Utc>>,
        before: Option<DateTime<Utc>>,
    ) -> Result<Vec<AgreementListEntry>, GolemError> {
        let app_session_id = app_session_id.map(str::to_string);
        self.ask(ListAgreements {
            owner,
            state,
            app_session_id,
            after,
            before,
        })
        .await
    }

    /// `POST /agreements/{id}/confirm`: send the agreement to the provider.
    pub async fn confirm_agreement(
        &self,
        owner: NodeId,
        id: &str,
        app_session_id: Option<String>,
    ) -> Result<(), GolemError> {
        let id = id.to_string();
        self.ask(ConfirmAgreement {
            owner,
            id,
            app_session_id,
        })
        .await
    }

    /// `POST /agreements/{id}/wait`: until the provider approves (Ok), the
    /// agreement ends otherwise (410), or `timeout` passes (408). Waits
    /// outside the actor, looking again whenever an agreement changes.
    pub async fn wait_for_approval(
        &self,
        owner: NodeId,
        id: &str,
        timeout: Duration,
    ) -> Result<(), GolemError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut changed = self.signals.agreements.subscribe();
        loop {
            let state = self
                .look(deadline, || RequestorAgreementState {
                    owner,
                    id: id.to_string(),
                })
                .await?;
            match state {
                AgreementState::Approved => return Ok(()),
                AgreementState::Proposal => {
                    return Err(GolemError::conflict(format!(
                        "agreement {id} is not confirmed yet"
                    )))
                }
                AgreementState::Pending => {}
                other => return Err(final_state_error(id, other)),
            }
            match tokio::time::timeout_at(deadline, changed.changed()).await {
                Ok(Ok(())) => continue,
                Ok(Err(_)) | Err(_) => {
                    return Err(GolemError::timeout(format!(
                        "agreement {id} not approved within {timeout:?}"
                    )))
                }
            }
        }
    }

    /// `POST /agreements/{id}/approve`: tell the requestor, then record Approved.
    pub async fn approve_agreement(
        &self,
        owner: NodeId,
        id: &str,
        app_session_id: Option<String>,
    ) -> Result<(), GolemError> {
        let id = id.to_string();
        self.ask(ApproveAgreement {
            owner,
            id,
            app_session_id,
        })
        .await
    }

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

    /// `GET /agreementEvents`: events after `after`, long-polled outside the actor.
    pub async fn collect_agreement_events(
        &self,
        after: Option<DateTime<Utc>>,
        app_session_id: Option<String>,
        timeout: Duration,
        max: usize,
    ) -> Result<Vec<AgreementOperationEvent>, GolemError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut changed = self.signals.agreements.subscribe();
        loop {
            let events = self
                .look(deadline, || AgreementEventsAfter {
                    after,
                    app_session_id: app_session_id.clone(),
                    max,
                })
                .await?;
            if !events.is_empty() {
                return Ok(events);
            }
            match tokio::time::timeout_at(deadline, changed.changed()).await {
                Ok(Ok(())) => continue,
                Ok(Err(_)) | Err(_) => return Ok(Vec::new()),
            }
        }
    }
}

impl MarketActor {
    pub(crate) fn record_new_agreement(
        &mut self,
        owner: NodeId,
        proposal_id: &str,
        valid_to: DateTime<Utc>,
    ) -> Result<String, GolemError> {
        let current = now();
        if valid_to <= current {
            return Err(GolemError::bad_request(format!(
                "validTo {valid_to} is not in the future"
            )));
        }
        let state = &mut self.state;
        let db = &self.core.db;
        let offer_proposal = state
            .find_proposal(proposal_id, |record| {
                record.role == Role::Requestor && record.requestor_id == owner
            })
            .ok_or_else(|| GolemError::not_found(format!("proposal {proposal_id} not found")))?
            .clone();
        if offer_proposal.ours {
            return Err(GolemError::bad_request(format!(
                "proposal {proposal_id} is our own; an agreement promotes the provider's Draft"
            )));
        }
        match state.proposal_state(&offer_proposal, current) {
            ProposalState::Draft => {}
            ProposalState::Initial => {
                return Err(GolemError::conflict(format!(
                    "proposal {proposal_id} has not been negotiated yet (Initial)"
                )))
            }
            ProposalState::Accepted => {
                return Err(GolemError::conflict(format!(
                    "proposal {proposal_id} is already promoted to an agreement"
                )))
            }
            ProposalState::Rejected => {
                return Err(gone(format!("proposal {proposal_id} was rejected")))
            }
            ProposalState::Expired => {
                return Err(expired_proposal(
                    proposal_id,
                    state.proposal_expiration(&offer_proposal),
                ))
            }
        }
        let demand_proposal_id = offer_proposal
            .proposal
            .prev_proposal_id
            .clone()
            .ok_or_else(|| GolemError::conflict("proposal has no negotiation behind it"))?;
        let demand_proposal = state
            .proposal(&offer_proposal.subscription_id, &demand_proposal_id)
            .ok_or_else(|| {
                GolemError::not_found(format!("proposal {demand_proposal_id} not found"))
            })?
            .clone();
        let id = format!("{}{}", new_id(), new_id());
        let agreement = build_agreement(
            id.clone(),
            &demand_proposal,
            &offer_proposal,
            valid_to,
            current,
            AgreementState::Proposal,
        );
        state.update_proposal(db, &offer_proposal.subscription_id, proposal_id, |record| {
            record.proposal.state = ProposalState::Accepted
        })?;
        state.save_agreement(
            db,
            AgreementRecord {
                role: Role::Requestor,
                agreement,
                subscription_id: offer_proposal.subscription_id.clone(),
                offer_proposal_id: proposal_id.to_string(),
                terminator: None,
                reason: None,
                terminated_date: None,
            },
        )?;
        Ok(id)
    }

    fn list_agreements(
        &self,
        owner: NodeId,
        state_filter: Option<AgreementState>,
        app_session_id: Option<&str>,
        after: Option<DateTime<Utc>>,
        before: Option<DateTime<Utc>>,
    ) -> Vec<AgreementListEntry> {
        let state = &self.state;
        let mut entries: Vec<AgreementListEntry> = state
            .agreements
            .values()
            .filter(|record| match record.role {
                Role::Requestor => record.agreement.demand.requestor_id == owner,
                Role::Provider => record.agreement.offer.provider_id == owner,
            })
            .filter(|record| state_filter.is_none_or(|wanted| record.agreement.state == wanted))
            .filter(|record| {
                app_session_id
                    .is_none_or(|wanted| record.agreement.app_session_id.as_deref() == Some(wanted))
            })
            .filter(|record| after.is_none_or(|after| record.agreement.timestamp > after))
            .filter(|record| before.is_none_or(|before| record.agreement.timestamp < before))
            .map(|record| AgreementListEntry {
                id: record.agreement.agreement_id.clone(),
                timestamp: record.agreement.timestamp,
                approved_date: record.agreement.approved_date,
                role: record.role.as_str().to_string(),
            })
            .collect();
        entries.sort_by_key(|entry| entry.timestamp);
        entries
    }

    /// Our requestor record of `id` becomes Pending; the message for the provider.
    fn mark_confirmed(
        &mut self,
        owner: NodeId,
        id: &str,
        app_session_id: Option<String>,
    ) -> Result<(NodeId, AgreementReceived), GolemError> {
        let db = &self.core.db;
        let state = &mut self.state;
        let record = owned_agreement(state, owner, Role::Requestor, id)?;
        if record.agreement.state != AgreementState::Proposal {
            return Err(gone(format!(
                "agreement {id} is {:?}, not Proposal",
                record.agreement.state
            )));
        }
        if record.agreement.valid_to <= now() {
            update_agreement(db, state, Role::Requestor, id, |record| {
                record.agreement.state = AgreementState::Expired
            })?;
            return Err(gone(format!("agreement {id} has expired")));
        }
        let record = update_agreement(db, state, Role::Requestor, id, |record| {
            record.agreement.state = AgreementState::Pending;
            record.agreement.app_session_id = app_session_id;
        })?;
        self.core.signals.bump_agreements();
        let message = AgreementReceived {
            agreement_id: id.to_string(),
            proposal_id: record.offer_proposal_id.clone(),
            offer_id: record.agreement.offer.offer_id.clone(),
            valid_to: record.agreement.valid_to,
            timestamp: record.agreement.timestamp,
        };
        Ok((record.agreement.offer.provider_id, message))
    }

    /// The provider did not take the agreement: back to Proposal (unless
    /// something else moved it meanwhile).
    fn unconfirm(&mut self, id: &str) {
        let _ = update_agreement(
            &self.core.db,
            &mut self.state,
            Role::Requestor,
            id,
            |record| {
                if record.agreement.state == AgreementState::Pending {
                    record.agreement.state = AgreementState::Proposal;
                }
            },
        );
        self.core.signals.bump_agreements();
    }

    /// The requestor of our Pending provider record `id`, if it may be
    /// approved now; `None` when it already is.
    fn approvable(&self, owner: NodeId, id: &str) -> Result<Option<NodeId>, GolemError> {
        let record = owned_agreement(&self.state, owner, Role::Provider, id)?;
        match record.agreement.state {
            AgreementState::Pending => {}
            AgreementState::Approved => return Ok(None),
            other => return Err(final_state_error(id, other)),
        }
        if record.agreement.valid_to <= now() {
            return Err(gone(format!("agreement {id} has expired")));
        }
        Ok(Some(record.agreement.demand.requestor_id))
    }

    /// The requestor took our approval: record it (once).
    fn mark_approved(
        &mut self,
        id: &str,
        approved_date: DateTime<Utc>,
        app_session_id: Option<String>,
    ) -> Result<(), GolemError> {
        let db = &self.core.db;
        let state = &mut self.state;
        let current = state
            .agreements
            .get(&(Role::Provider, id.to_string()))
            .map(|record| record.agreement.state)
            .ok_or_else(|| agreement_not_found(id))?;
        match current {
            AgreementState::Pending => {}
            AgreementState::Approved => return Ok(()),
            other => return Err(final_state_error(id, other)),
        }
        update_agreement(db, state, Role::Provider, id, |record| {
            record.agreement.state = AgreementState::Approved;
            record.agreement.approved_date = Some(approved_date);
            if app_session_id.is_some() {
                record.agreement.app_session_id = app_session_id;
            }
        })?;
        record_event(db, state, Role::Provider, id, |event_date| {
            AgreementOperationEvent::AgreementApprovedEvent {
                event_date,
                agreement_id: id.to_string(),
            }
        })?;
        self.core.signals.bump_agreements();
        Ok(())
    }

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

    fn agreement_events_after(
        &self,
        message: &AgreementEventsAfter,
    ) -> Vec<AgreementOperationEvent> {
        let events = &self.state.agreement_events;
        // Event dates strictly increase: the cursor is a binary search.
        let start = message.after.map_or(0, |after| {
            events.partition_point(|record| record.event.event_date() <= after)
        });
        events[start..]
            .iter()
            .filter(|record| {
                message
                    .app_session_id
                    .as_deref()
                    .is_none_or(|wanted| record.app_session_id.as_deref() == Some(wanted))
            })
            .take(message.max)
            .map(|record| record.event.clone())
            .collect()
    }
}

impl Handler<CreateAgreement> for MarketActor {
    type Result = ResponseFuture<Result<String, GolemError>>;

    fn handle(&mut self, message: CreateAgreement, _ctx: &mut Context<Self>) -> Self::Result {
        let created =
            self.record_new_agreement(message.owner, &message.proposal_id, message.valid_to);
        if let Ok(id) = &created {
            self.core.signals.bump_agreements();
            tracing::info!(agreement_id = %id, proposal_id = %message.proposal_id, "agreement created");
        }
        self.core.after_flush(created)
    }
}

impl Handler<ListAgreements> for MarketActor {
    type Result = Result<Vec<AgreementListEntry>, GolemError>;

    fn handle(&mut self, message: ListAgreements, _ctx: &mut Context<Self>) -> Self::Result {
        Ok(self.list_agreements(
            message.owner,
            message.state,
            message.app_session_id.as_deref(),
            message.after,
            message.before,
        ))
    }
}

impl Handler<ConfirmAgreement> for MarketActor {
    type Result = ResponseActFuture<Self, Result<(), GolemError>>;

    /// Pending, flushed, then sent; back to Proposal when the provider does
    /// not take it.
    fn handle(&mut self, message: ConfirmAgreement, _ctx: &mut Context<Self>) -> Self::Result {
        let id = message.id;
        let (provider, notice) =
            match self.mark_confirmed(message.owner, &id, message.app_session_id) {
                Ok(confirmed) => confirmed,
                Err(error) => return Box::pin(actix::fut::ready(Err(error))),
            };
        let flush = self.core.flush();
        let call = self.core.call_remote(provider, notice);
        let delivery = async move {
            flush.await?;
            call.await
        };
        Box::pin(actix::fut::wrap_future(delivery).map(
            move |sent, actor: &mut MarketActor, _ctx| match sent {
                Ok(()) => {
                    tracing::info!(agreement_id = %id, %provider, "agreement confirmed");
                    Ok(())
                }
                Err(error) => {
                    actor.unconfirm(&id);
                    tracing::warn!(agreement_id = %id, %provider, %error, "agreement not delivered to the provider");
                    Err(error)
                }
            },
        ))
    }
}

impl Handler<RequestorAgreementState> for MarketActor {
    type Result = Result<AgreementState, GolemError>;

    fn handle(
        &mut self,
        message: RequestorAgreementState,
        _ctx: &mut Context<Self>,
    ) -> Self::Result {
        owned_agreement(&self.state, message.owner, Role::Requestor, &message.id)
            .map(|record| record.agreement.state)
    }
}

impl Handler<ApproveAgreement> for MarketActor {
    type Result = ResponseActFuture<Self, Result<(), GolemError>>;

    /// Tell the requestor; once it took it, record Approved and answer when flushed.
    fn handle(&mut self, message: ApproveAgreement, _ctx: &mut Context<Self>) -> Self::Result {
        let ApproveAgreement {
            owner,
            id,
            app_session_id,
        } = message;
        let requestor = match self.approvable(owner, &id) {
            Ok(Some(requestor)) => requestor,
            Ok(None) => return Box::pin(actix::fut::ready(Ok(()))),
            Err(error) => return Box::pin(actix::fut::ready(Err(error))),
        };
        let approved_date = now();
        let call = self.core.call_remote(
            requestor,
            AgreementApproved {
                agreement_id: id.clone(),
                approved_date,
            },
        );
        Box::pin(
            actix::fut::wrap_future(call)
                .map(move |told, actor: &mut MarketActor, _ctx| {
                    told?;
                    actor.mark_approved(&id, approved_date, app_session_id)?;
                    tracing::info!(agreement_id = %id, %requestor, "agreement approved");
                    Ok(actor.core.flush())
                })
                .then(|flush: Result<_, GolemError>, _, _| {
                    actix::fut::wrap_future(async move { flush?.await })
                }),
        )
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

impl Handler<AgreementEventsAfter> for MarketActor {
    type Result = Result<Vec<AgreementOperationEvent>, GolemError>;

    fn handle(&mut self, message: AgreementEventsAfter, _ctx: &mut Context<Self>) -> Self::Result {
        Ok(self.agreement_events_after(&message))
    }
}
