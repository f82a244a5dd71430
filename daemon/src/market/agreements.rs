//! Agreements as our clients drive them: the requestor creates one from the
//! provider's Draft, confirms it (the provider gets it as an `AgreementEvent`),
//! the provider approves or rejects, the requestor may cancel before that, and
//! either side terminates an approved one. Each side keeps its own record
//! under the same id (two records on a node that trades with itself, told
//! apart by [`Role`]), and records the same `agreementEvents`. What the
//! counterparty tells us is in `agreement_notices.rs`; how an agreement ends
//! early (rejected, cancelled) or late (terminated) in `agreement_endings.rs`.
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
    Agreement, AgreementApproved, AgreementListEntry, AgreementOperationEvent, AgreementReceived,
    AgreementState, ProposalState,
};
use golem_model::{GolemError, NodeId};

use super::actor::MarketActor;
use super::agreement_records::{build_agreement, record_event, update_agreement};
use super::errors::{
    agreement_not_found, expired_proposal, final_state_error, gone, proposal_not_found,
};
use super::ownership::owned_agreement;
use super::records::{now, AgreementRecord, ProposalRecord, Role};
use super::MarketService;

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
        crate::long_poll::until_found(deadline, &mut changed, || {
            self.look(deadline, || AgreementEventsAfter {
                after,
                app_session_id: app_session_id.clone(),
                max,
            })
        })
        .await
    }
}

impl MarketActor {
    /// Promote the provider's Draft `proposal_id` into a new agreement of ours.
    fn record_new_agreement(
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
        let (demand_proposal, offer_proposal) =
            self.promotable_draft(owner, proposal_id, current)?;
        let id = format!("{}{}", new_id(), new_id());
        let agreement = build_agreement(
            id.clone(),
            &demand_proposal,
            &offer_proposal,
            valid_to,
            current,
            AgreementState::Proposal,
        );
        let state = &mut self.state;
        let db = &self.core.db;
        let subscription_id = &offer_proposal.subscription_id;
        state.update_proposal(db, subscription_id, proposal_id, |record| {
            record.proposal.state = ProposalState::Accepted
        })?;
        state.save_agreement(
            db,
            AgreementRecord {
                role: Role::Requestor,
                agreement,
                subscription_id: subscription_id.clone(),
                offer_proposal_id: proposal_id.to_string(),
                terminator: None,
                reason: None,
                terminated_date: None,
            },
        )?;
        Ok(id)
    }

    /// The provider's Draft `proposal_id` on a demand of `owner` and the
    /// demand proposal it answers, if the Draft may be promoted now.
    fn promotable_draft(
        &self,
        owner: NodeId,
        proposal_id: &str,
        current: DateTime<Utc>,
    ) -> Result<(ProposalRecord, ProposalRecord), GolemError> {
        let state = &self.state;
        let offer_proposal = state
            .find_proposal(proposal_id, |record| {
                record.role == Role::Requestor && record.requestor_id == owner
            })
            .ok_or_else(|| proposal_not_found(proposal_id))?;
        if offer_proposal.ours {
            return Err(GolemError::bad_request(format!(
                "proposal {proposal_id} is our own; an agreement promotes the provider's Draft"
            )));
        }
        match state.proposal_state(offer_proposal, current) {
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
                    state.proposal_expiration(offer_proposal),
                ))
            }
        }
        let demand_proposal_id = offer_proposal
            .proposal
            .prev_proposal_id
            .as_deref()
            .ok_or_else(|| GolemError::conflict("proposal has no negotiation behind it"))?;
        let demand_proposal = state
            .proposal(&offer_proposal.subscription_id, demand_proposal_id)
            .ok_or_else(|| proposal_not_found(demand_proposal_id))?;
        Ok((demand_proposal.clone(), offer_proposal.clone()))
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

impl Handler<AgreementEventsAfter> for MarketActor {
    type Result = Result<Vec<AgreementOperationEvent>, GolemError>;

    fn handle(&mut self, message: AgreementEventsAfter, _ctx: &mut Context<Self>) -> Self::Result {
        Ok(self.agreement_events_after(&message))
    }
}
