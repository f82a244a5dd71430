//! Agreements: the requestor creates one from the provider's Draft, confirms it
//! (the provider gets it as an `AgreementEvent`), the provider approves or
//! rejects, the requestor may cancel before that, and either side terminates an
//! approved one. Each side keeps its own record under the same id (two records
//! on a node that trades with itself, told apart by [`Role`]), and records the
//! same `agreementEvents`.

use std::time::Duration;

use chrono::{DateTime, Utc};
use golem_model::market::{
    Agreement, AgreementApproved, AgreementCancelled, AgreementListEntry, AgreementOperationEvent,
    AgreementReceived, AgreementRejected, AgreementState, AgreementTerminated, Demand, MarketEvent,
    Offer, ProposalState, Reason, Terminator,
};
use golem_model::{ErrorCode, GolemError, NodeId};

use super::state::{now, AgreementRecord, ProposalRecord, Role, State};
use super::{new_id, Inner, MarketService};

fn gone(message: String) -> GolemError {
    GolemError::new(ErrorCode::Gone, message)
}

fn not_found(id: &str) -> GolemError {
    GolemError::not_found(format!("agreement {id} not found"))
}

/// The agreement both sides build from the same two proposal records: the
/// demand side from the requestor's last proposal, the offer side from the
/// provider's Draft.
fn build_agreement(
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

/// The message a client gets for an agreement in a final state.
fn final_state_error(id: &str, state: AgreementState) -> GolemError {
    gone(format!("agreement {id} is {state:?}"))
}

impl Inner {
    fn owned_agreement<'a>(
        &self,
        state: &'a State,
        owner: NodeId,
        role: Role,
        id: &str,
    ) -> Result<&'a AgreementRecord, GolemError> {
        let record = state
            .agreements
            .get(&(role, id.to_string()))
            .ok_or_else(|| not_found(id))?;
        let party = match role {
            Role::Requestor => record.agreement.demand.requestor_id,
            Role::Provider => record.agreement.offer.provider_id,
        };
        if party != owner {
            return Err(not_found(id));
        }
        Ok(record)
    }

    /// Our record of `id` in either role (the requestor's when we hold both).
    fn any_role(&self, state: &State, owner: NodeId, id: &str) -> Result<Role, GolemError> {
        [Role::Requestor, Role::Provider]
            .into_iter()
            .find(|role| self.owned_agreement(state, owner, *role, id).is_ok())
            .ok_or_else(|| not_found(id))
    }

    fn update_agreement(
        &self,
        state: &mut State,
        role: Role,
        id: &str,
        change: impl FnOnce(&mut AgreementRecord),
    ) -> Result<AgreementRecord, GolemError> {
        let record = state
            .agreements
            .get_mut(&(role, id.to_string()))
            .ok_or_else(|| not_found(id))?;
        change(record);
        let record = record.clone();
        self.db.save_agreement(&record)?;
        Ok(record)
    }

    fn record_event(
        &self,
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
        state.push_agreement_event(&self.db, role, session, make(date))
    }
}

/// Expire unconfirmed and unapproved agreements past their `validTo`.
pub(crate) fn expire_agreements(inner: &Inner, state: &mut State, current: DateTime<Utc>) -> bool {
    let expired: Vec<(Role, String)> = state
        .agreements
        .iter()
        .filter(|(_, record)| {
            matches!(
                record.agreement.state,
                AgreementState::Proposal | AgreementState::Pending
            ) && record.agreement.valid_to <= current
        })
        .map(|(key, _)| key.clone())
        .collect();
    for (role, id) in &expired {
        if let Err(error) = inner.update_agreement(state, *role, id, |record| {
            record.agreement.state = AgreementState::Expired
        }) {
            tracing::warn!(agreement_id = %id, %error, "expiring an agreement failed");
        }
    }
    !expired.is_empty()
}

impl MarketService {
    /// `POST /agreements`: promote the provider's Draft into an agreement.
    pub async fn create_agreement(
        &self,
        owner: NodeId,
        proposal_id: &str,
        valid_to: DateTime<Utc>,
    ) -> Result<String, GolemError> {
        let id = self.record_new_agreement(owner, proposal_id, valid_to)?;
        self.inner.bump_agreements();
        self.persist().await?;
        tracing::info!(agreement_id = %id, proposal_id, "agreement created");
        Ok(id)
    }

    fn record_new_agreement(
        &self,
        owner: NodeId,
        proposal_id: &str,
        valid_to: DateTime<Utc>,
    ) -> Result<String, GolemError> {
        let inner = &self.inner;
        let current = now();
        if valid_to <= current {
            return Err(GolemError::bad_request(format!(
                "validTo {valid_to} is not in the future"
            )));
        }
        let mut state = inner.lock();
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
                return Err(super::negotiation::expired_proposal(
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
        state.update_proposal(
            &inner.db,
            &offer_proposal.subscription_id,
            proposal_id,
            |record| record.proposal.state = ProposalState::Accepted,
        )?;
        state.save_agreement(
            &inner.db,
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

    pub fn get_agreement(&self, owner: NodeId, id: &str) -> Result<Agreement, GolemError> {
        let inner = &self.inner;
        {
            let state = inner.lock();
            if let Ok(role) = inner.any_role(&state, owner, id) {
                return Ok(inner
                    .owned_agreement(&state, owner, role, id)?
                    .agreement
                    .clone());
            }
        }
        // A final agreement compacted out of memory (retention.rs) is in sled.
        for role in [Role::Requestor, Role::Provider] {
            if let Some(record) = inner.db.load_agreement(role, id)? {
                let party = match role {
                    Role::Requestor => record.agreement.demand.requestor_id,
                    Role::Provider => record.agreement.offer.provider_id,
                };
                if party == owner {
                    return Ok(record.agreement);
                }
            }
        }
        Err(not_found(id))
    }

    pub fn list_agreements(
        &self,
        owner: NodeId,
        state_filter: Option<AgreementState>,
        app_session_id: Option<&str>,
        after: Option<DateTime<Utc>>,
        before: Option<DateTime<Utc>>,
    ) -> Vec<AgreementListEntry> {
        let inner = &self.inner;
        let state = inner.lock();
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

    /// `POST /agreements/{id}/confirm`: send the agreement to the provider.
    pub async fn confirm_agreement(
        &self,
        owner: NodeId,
        id: &str,
        app_session_id: Option<String>,
    ) -> Result<(), GolemError> {
        let inner = &self.inner;
        let (provider, message) = {
            let mut state = inner.lock();
            let record = inner.owned_agreement(&state, owner, Role::Requestor, id)?;
            if record.agreement.state != AgreementState::Proposal {
                return Err(gone(format!(
                    "agreement {id} is {:?}, not Proposal",
                    record.agreement.state
                )));
            }
            if record.agreement.valid_to <= now() {
                inner.update_agreement(&mut state, Role::Requestor, id, |record| {
                    record.agreement.state = AgreementState::Expired
                })?;
                return Err(gone(format!("agreement {id} has expired")));
            }
            let record = inner.update_agreement(&mut state, Role::Requestor, id, |record| {
                record.agreement.state = AgreementState::Pending;
                record.agreement.app_session_id = app_session_id;
            })?;
            let message = AgreementReceived {
                agreement_id: id.to_string(),
                proposal_id: record.offer_proposal_id.clone(),
                offer_id: record.agreement.offer.offer_id.clone(),
                valid_to: record.agreement.valid_to,
                timestamp: record.agreement.timestamp,
            };
            (record.agreement.offer.provider_id, message)
        };
        inner.bump_agreements();
        self.persist().await?;
        if let Err(error) = self.call_remote(provider, &message).await {
            let mut state = inner.lock();
            let _ = inner.update_agreement(&mut state, Role::Requestor, id, |record| {
                if record.agreement.state == AgreementState::Pending {
                    record.agreement.state = AgreementState::Proposal;
                }
            });
            drop(state);
            inner.bump_agreements();
            tracing::warn!(agreement_id = id, %provider, %error, "agreement not delivered to the provider");
            return Err(error);
        }
        tracing::info!(agreement_id = id, %provider, "agreement confirmed");
        Ok(())
    }

    /// `POST /agreements/{id}/wait`: until the provider approves (Ok), the
    /// agreement ends otherwise (410), or `timeout` passes (408).
    pub async fn wait_for_approval(
        &self,
        owner: NodeId,
        id: &str,
        timeout: Duration,
    ) -> Result<(), GolemError> {
        let inner = &self.inner;
        let deadline = tokio::time::Instant::now() + timeout;
        let mut changed = inner.agreements_changed.subscribe();
        loop {
            {
                let state = inner.lock();
                let record = inner.owned_agreement(&state, owner, Role::Requestor, id)?;
                match record.agreement.state {
                    AgreementState::Approved => return Ok(()),
                    AgreementState::Proposal => {
                        return Err(GolemError::conflict(format!(
                            "agreement {id} is not confirmed yet"
                        )))
                    }
                    AgreementState::Pending => {}
                    other => return Err(final_state_error(id, other)),
                }
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
        let inner = &self.inner;
        let requestor = {
            let state = inner.lock();
            let record = inner.owned_agreement(&state, owner, Role::Provider, id)?;
            match record.agreement.state {
                AgreementState::Pending => {}
                AgreementState::Approved => return Ok(()),
                other => return Err(final_state_error(id, other)),
            }
            if record.agreement.valid_to <= now() {
                return Err(gone(format!("agreement {id} has expired")));
            }
            record.agreement.demand.requestor_id
        };
        let approved_date = now();
        self.call_remote(
            requestor,
            &AgreementApproved {
                agreement_id: id.to_string(),
                approved_date,
            },
        )
        .await?;
        {
            let mut state = inner.lock();
            inner.update_agreement(&mut state, Role::Provider, id, |record| {
                record.agreement.state = AgreementState::Approved;
                record.agreement.approved_date = Some(approved_date);
                if app_session_id.is_some() {
                    record.agreement.app_session_id = app_session_id;
                }
            })?;
            inner.record_event(&mut state, Role::Provider, id, |event_date| {
                AgreementOperationEvent::AgreementApprovedEvent {
                    event_date,
                    agreement_id: id.to_string(),
                }
            })?;
        }
        inner.bump_agreements();
        self.persist().await?;
        tracing::info!(agreement_id = id, %requestor, "agreement approved");
        Ok(())
    }

    /// `POST /agreements/{id}/reject` (provider).
    pub async fn reject_agreement(
        &self,
        owner: NodeId,
        id: &str,
        reason: Option<Reason>,
    ) -> Result<(), GolemError> {
        let inner = &self.inner;
        let requestor = {
            let mut state = inner.lock();
            let record = inner.owned_agreement(&state, owner, Role::Provider, id)?;
            if record.agreement.state != AgreementState::Pending {
                return Err(final_state_error(id, record.agreement.state));
            }
            let requestor = record.agreement.demand.requestor_id;
            inner.update_agreement(&mut state, Role::Provider, id, |record| {
                record.agreement.state = AgreementState::Rejected;
                record.reason = reason.clone();
            })?;
            let event_reason = reason.clone();
            inner.record_event(&mut state, Role::Provider, id, |event_date| {
                AgreementOperationEvent::AgreementRejectedEvent {
                    event_date,
                    agreement_id: id.to_string(),
                    reason: event_reason,
                }
            })?;
            requestor
        };
        inner.bump_agreements();
        self.persist().await?;
        self.notify_remote(
            requestor,
            AgreementRejected {
                agreement_id: id.to_string(),
                reason,
            },
        )
        .await;
        Ok(())
    }

    /// `POST /agreements/{id}/cancel` (requestor, before approval).
    pub async fn cancel_agreement(
        &self,
        owner: NodeId,
        id: &str,
        reason: Option<Reason>,
    ) -> Result<(), GolemError> {
        let inner = &self.inner;
        let notify = {
            let mut state = inner.lock();
            let record = inner.owned_agreement(&state, owner, Role::Requestor, id)?;
            let was = record.agreement.state;
            if !matches!(was, AgreementState::Proposal | AgreementState::Pending) {
                return Err(final_state_error(id, was));
            }
            let provider = record.agreement.offer.provider_id;
            inner.update_agreement(&mut state, Role::Requestor, id, |record| {
                record.agreement.state = AgreementState::Cancelled;
                record.reason = reason.clone();
            })?;
            let event_reason = reason.clone();
            inner.record_event(&mut state, Role::Requestor, id, |event_date| {
                AgreementOperationEvent::AgreementCancelledEvent {
                    event_date,
                    agreement_id: id.to_string(),
                    reason: event_reason,
                }
            })?;
            (was == AgreementState::Pending).then_some(provider)
        };
        inner.bump_agreements();
        self.persist().await?;
        if let Some(provider) = notify {
            self.notify_remote(
                provider,
                AgreementCancelled {
                    agreement_id: id.to_string(),
                    reason,
                },
            )
            .await;
        }
        Ok(())
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
        let inner = &self.inner;
        let terminated_date = now();
        let (role, counterparty) = {
            let mut state = inner.lock();
            let role = inner.any_role(&state, owner, id)?;
            // A node trading with itself holds both records; end the one still running.
            let role = [role, Role::Provider]
                .into_iter()
                .find(|candidate| {
                    inner
                        .owned_agreement(&state, owner, *candidate, id)
                        .is_ok_and(|record| record.agreement.state == AgreementState::Approved)
                })
                .unwrap_or(role);
            let record = inner.owned_agreement(&state, owner, role, id)?;
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
            inner.update_agreement(&mut state, role, id, |record| {
                record.agreement.state = AgreementState::Terminated;
                record.terminator = Some(role.terminator());
                record.reason = reason.clone();
                record.terminated_date = Some(terminated_date);
            })?;
            let event_reason = reason.clone();
            inner.record_event(&mut state, role, id, |event_date| {
                AgreementOperationEvent::AgreementTerminatedEvent {
                    event_date,
                    agreement_id: id.to_string(),
                    terminator: role.terminator(),
                    signature: String::new(),
                    reason: event_reason,
                }
            })?;
            (role, counterparty)
        };
        inner.bump_agreements();
        self.persist().await?;
        let message = AgreementTerminated {
            agreement_id: id.to_string(),
            terminator: role.terminator(),
            terminated_date,
            reason,
        };
        if let Err(error) = self.call_remote(counterparty, &message).await {
            tracing::warn!(agreement_id = id, %counterparty, %error, "termination not delivered yet; retrying in the background");
            self.notify_remote(counterparty, message).await;
        }
        tracing::info!(agreement_id = id, terminator = ?role.terminator(), "agreement terminated");
        Ok(())
    }

    /// `GET|POST /agreements/{id}/terminate/reason`.
    pub fn termination_reason(
        &self,
        owner: NodeId,
        id: &str,
    ) -> Result<AgreementOperationEvent, GolemError> {
        let inner = &self.inner;
        let state = inner.lock();
        let role = inner.any_role(&state, owner, id)?;
        let record = inner.owned_agreement(&state, owner, role, id)?;
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

    /// `GET /agreementEvents`: events after `after`, long-polled.
    pub async fn collect_agreement_events(
        &self,
        after: Option<DateTime<Utc>>,
        app_session_id: Option<String>,
        timeout: Duration,
        max_events: usize,
    ) -> Vec<AgreementOperationEvent> {
        let inner = &self.inner;
        let deadline = tokio::time::Instant::now() + timeout;
        let mut changed = inner.agreements_changed.subscribe();
        loop {
            {
                let state = inner.lock();
                // Event dates strictly increase: the cursor is a binary search.
                let start = after.map_or(0, |after| {
                    state
                        .agreement_events
                        .partition_point(|record| record.event.event_date() <= after)
                });
                let events: Vec<AgreementOperationEvent> = state.agreement_events[start..]
                    .iter()
                    .filter(|record| {
                        app_session_id
                            .as_deref()
                            .is_none_or(|wanted| record.app_session_id.as_deref() == Some(wanted))
                    })
                    .take(max_events)
                    .map(|record| record.event.clone())
                    .collect();
                if !events.is_empty() {
                    return events;
                }
            }
            match tokio::time::timeout_at(deadline, changed.changed()).await {
                Ok(Ok(())) => continue,
                Ok(Err(_)) | Err(_) => return Vec::new(),
            }
        }
    }

    // ----- messages of the counterparty -----

    /// Provider side: a requestor confirmed an agreement on our Draft.
    pub(crate) fn on_agreement_received(
        &self,
        caller: NodeId,
        message: AgreementReceived,
    ) -> Result<(), GolemError> {
        let inner = &self.inner;
        let current = now();
        {
            let mut state = inner.lock();
            if state
                .agreements
                .contains_key(&(Role::Provider, message.agreement_id.clone()))
            {
                return Err(GolemError::conflict(format!(
                    "agreement {} is already known",
                    message.agreement_id
                )));
            }
            if message.valid_to <= current {
                return Err(gone(format!(
                    "agreement {} has expired",
                    message.agreement_id
                )));
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
                .ok_or_else(|| {
                    GolemError::not_found(format!("proposal {} not found", message.proposal_id))
                })?
                .clone();
            match state.proposal_state(&offer_proposal, current) {
                ProposalState::Draft => {}
                ProposalState::Expired => {
                    return Err(super::negotiation::expired_proposal(
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
                .clone()
                .ok_or_else(|| {
                    GolemError::bad_request("the proposal answers no demand proposal")
                })?;
            let demand_proposal = state
                .proposal(&message.offer_id, &demand_proposal_id)
                .ok_or_else(|| {
                    GolemError::not_found(format!("proposal {demand_proposal_id} not found"))
                })?
                .clone();
            let agreement = build_agreement(
                message.agreement_id.clone(),
                &demand_proposal,
                &offer_proposal,
                message.valid_to,
                message.timestamp,
                AgreementState::Pending,
            );
            state.update_proposal(
                &inner.db,
                &message.offer_id,
                &message.proposal_id,
                |record| record.proposal.state = ProposalState::Accepted,
            )?;
            state.save_agreement(
                &inner.db,
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
            state.push_event(
                &inner.db,
                &message.offer_id,
                MarketEvent::AgreementEvent {
                    event_date: current,
                    agreement,
                },
            )?;
        }
        inner.bump_events();
        inner.bump_agreements();
        Ok(())
    }

    /// Requestor side: the provider approved.
    pub(crate) fn on_agreement_approved(
        &self,
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
        &self,
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
        &self,
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
        &self,
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
        &self,
        caller: NodeId,
        step: CounterpartyStep<'_>,
        change: impl FnOnce(&mut AgreementRecord),
        event: impl FnOnce(DateTime<Utc>) -> AgreementOperationEvent,
    ) -> Result<(), GolemError> {
        let inner = &self.inner;
        let CounterpartyStep { role, id, from, to } = step;
        {
            let mut state = inner.lock();
            let current = counterparty_record(&state, role, id, caller)?
                .agreement
                .state;
            if current == to {
                return Ok(());
            }
            if !from.contains(&current) {
                return Err(final_state_error(id, current));
            }
            inner.update_agreement(&mut state, role, id, |record| {
                record.agreement.state = to;
                change(record);
            })?;
            inner.record_event(&mut state, role, id, event)?;
        }
        inner.bump_agreements();
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

/// Our record of `id` in `role`, if `caller` is its counterparty.
fn counterparty_record<'a>(
    state: &'a State,
    role: Role,
    id: &str,
    caller: NodeId,
) -> Result<&'a AgreementRecord, GolemError> {
    state
        .agreements
        .get(&(role, id.to_string()))
        .filter(|record| record.counterparty() == caller)
        .ok_or_else(|| not_found(id))
}
