//! Proposals: reading, countering and rejecting them locally, and taking in
//! the counterparty's counters and rejections. Both sides use the same
//! proposal ids; a record is found by its subscription, or, for a message of
//! the counterparty, by being ours and having that counterparty.

use golem_model::constraints::match_both_ways;
use golem_model::market::{
    DemandOfferBase, InitialProposalReceived, MarketEvent, Proposal, ProposalReceived,
    ProposalRejected, ProposalState, Reason,
};
use golem_model::properties::Properties;
use golem_model::{ErrorCode, GolemError, NodeId};

use chrono::{DateTime, Utc};

use super::state::{now, parse_constraint, ProposalRecord, Role, State};
use super::subscriptions::{
    check_subscription, owned_subscription, parse_body, SubscriptionKind, SubscriptionStatus,
};
use super::{new_id, MarketService};

fn gone(message: String) -> GolemError {
    GolemError::new(ErrorCode::Gone, message)
}

/// 410 for a proposal past its expiration (the original answers 410 Gone).
pub(crate) fn expired_proposal(proposal_id: &str, expiration: Option<DateTime<Utc>>) -> GolemError {
    match expiration {
        Some(expiration) => gone(format!(
            "proposal {proposal_id} has expired (negotiable until {})",
            expiration.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
        )),
        None => gone(format!("proposal {proposal_id} has expired")),
    }
}

/// 410 for a proposal whose subscription has expired.
fn expired_subscription(kind: SubscriptionKind, id: &str, expiration: DateTime<Utc>) -> GolemError {
    let what = match kind {
        SubscriptionKind::Offer => "offer",
        SubscriptionKind::Demand => "demand",
    };
    gone(format!(
        "{what} subscription {id} expired at {}; its proposals can no longer be negotiated",
        expiration.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    ))
}

fn role_of(kind: SubscriptionKind) -> Role {
    match kind {
        SubscriptionKind::Offer => Role::Provider,
        SubscriptionKind::Demand => Role::Requestor,
    }
}

/// Both-way match of a new proposal against the one it answers.
fn check_match(
    new_properties: &Properties,
    new_constraints: &str,
    previous: &Proposal,
    new_is_demand: bool,
) -> Result<(), GolemError> {
    let new_constraint = parse_constraint(new_constraints)?;
    let previous_constraint = parse_constraint(&previous.constraints)?;
    let outcome = if new_is_demand {
        match_both_ways(
            new_properties,
            &new_constraint,
            &previous.properties,
            &previous_constraint,
        )
    } else {
        match_both_ways(
            &previous.properties,
            &previous_constraint,
            new_properties,
            &new_constraint,
        )
    };
    if outcome.is_match() {
        return Ok(());
    }
    let details: Vec<String> = outcome
        .mismatches()
        .iter()
        .map(|mismatch| {
            format!(
                "{:?} constraint {:?}: {}",
                mismatch.side,
                mismatch.truth,
                mismatch.unmatched_clauses.join(" ")
            )
        })
        .collect();
    Err(GolemError::bad_request(format!(
        "proposal {} does not match: {}",
        previous.proposal_id,
        details.join("; ")
    )))
}

impl MarketService {
    pub fn get_proposal(
        &self,
        owner: NodeId,
        kind: SubscriptionKind,
        subscription_id: &str,
        proposal_id: &str,
    ) -> Result<Proposal, GolemError> {
        let state = self.inner.lock();
        let current = now();
        // An expired subscription's proposals stay readable (as Expired).
        owned_subscription(&state, owner, kind, subscription_id, current)?;
        state
            .proposal(subscription_id, proposal_id)
            .map(|record| state.proposal_view(record, current))
            .ok_or_else(|| GolemError::not_found(format!("proposal {proposal_id} not found")))
    }

    /// Counter `proposal_id` (the counterparty's) with our own proposal and
    /// send it; returns the new proposal's id once the counterparty has it.
    pub async fn counter_proposal(
        &self,
        owner: NodeId,
        kind: SubscriptionKind,
        subscription_id: &str,
        proposal_id: &str,
        body: DemandOfferBase,
    ) -> Result<String, GolemError> {
        let inner = &self.inner;
        let (properties, constraints) = parse_body(body)?;
        let role = role_of(kind);
        let (counterparty, message, new_id) = {
            let mut state = inner.lock();
            let current = now();
            let status = owned_subscription(&state, owner, kind, subscription_id, current)?;
            let previous = state
                .proposal(subscription_id, proposal_id)
                .ok_or_else(|| GolemError::not_found(format!("proposal {proposal_id} not found")))?
                .clone();
            if previous.ours {
                return Err(GolemError::bad_request(format!(
                    "proposal {proposal_id} is our own; only the other party's proposals can be countered"
                )));
            }
            match state.proposal_state(&previous, current) {
                ProposalState::Rejected => {
                    return Err(gone(format!("proposal {proposal_id} was rejected")))
                }
                ProposalState::Expired => {
                    return Err(expired_proposal(
                        proposal_id,
                        state.proposal_expiration(&previous),
                    ))
                }
                _ => {}
            }
            if let SubscriptionStatus::Expired(expiration) = status {
                return Err(expired_subscription(kind, subscription_id, expiration));
            }
            if previous.countered {
                return Err(GolemError::conflict(format!(
                    "proposal {proposal_id} has already been countered"
                )));
            }
            let is_initial = previous.proposal.state == ProposalState::Initial
                && previous.proposal.prev_proposal_id.is_none();
            if is_initial
                && !state
                    .offers
                    .get(&previous.offer_id)
                    .is_some_and(|offer| offer.is_live(current))
            {
                return Err(gone(format!(
                    "offer {} of proposal {proposal_id} is no longer subscribed",
                    previous.offer_id
                )));
            }
            check_match(
                &properties,
                &constraints,
                &previous.proposal,
                role == Role::Requestor,
            )?;
            let counter = ProposalRecord {
                subscription_id: subscription_id.to_string(),
                role,
                offer_id: previous.offer_id.clone(),
                demand_id: previous.demand_id.clone(),
                requestor_id: previous.requestor_id,
                provider_id: previous.provider_id,
                ours: true,
                countered: false,
                proposal: Proposal {
                    properties,
                    constraints,
                    proposal_id: new_id(),
                    issuer_id: inner.node_id,
                    state: ProposalState::Draft,
                    timestamp: current,
                    prev_proposal_id: Some(proposal_id.to_string()),
                },
                expiration: previous.expiration,
            };
            let message = if is_initial {
                CounterMessage::Initial(InitialProposalReceived {
                    offer_id: previous.offer_id.clone(),
                    demand_id: previous.demand_id.clone(),
                    initial_proposal_id: proposal_id.to_string(),
                    initial_timestamp: previous.proposal.timestamp,
                    proposal: counter.proposal.clone(),
                })
            } else {
                CounterMessage::Counter(ProposalReceived {
                    proposal: counter.proposal.clone(),
                })
            };
            let new_id = counter.proposal.proposal_id.clone();
            state.insert_proposal(&inner.db, counter)?;
            state.update_proposal(&inner.db, subscription_id, proposal_id, |record| {
                record.countered = true
            })?;
            (previous.counterparty(), message, new_id)
        };
        self.persist().await?;
        let sent = match &message {
            CounterMessage::Initial(message) => self.call_remote(counterparty, message).await,
            CounterMessage::Counter(message) => self.call_remote(counterparty, message).await,
        };
        if let Err(error) = sent {
            // Undo, so the client may counter again.
            let mut state = inner.lock();
            let _ = state.remove_proposal(&inner.db, subscription_id, &new_id);
            let _ = state.update_proposal(&inner.db, subscription_id, proposal_id, |record| {
                record.countered = false
            });
            tracing::warn!(%counterparty, proposal_id, %error, "counter-proposal not delivered");
            return Err(error);
        }
        tracing::debug!(proposal_id = %new_id, prev_proposal_id = proposal_id, "counter-proposal sent");
        Ok(new_id)
    }

    /// Reject the counterparty's proposal; the counterparty is told in the
    /// background (an Initial proposal was never seen by it, so it is not).
    pub async fn reject_proposal(
        &self,
        owner: NodeId,
        kind: SubscriptionKind,
        subscription_id: &str,
        proposal_id: &str,
        reason: Option<Reason>,
    ) -> Result<(), GolemError> {
        let inner = &self.inner;
        let (record, was_initial) = {
            let mut state = inner.lock();
            let current = now();
            let status = owned_subscription(&state, owner, kind, subscription_id, current)?;
            let record = state
                .proposal(subscription_id, proposal_id)
                .ok_or_else(|| GolemError::not_found(format!("proposal {proposal_id} not found")))?
                .clone();
            if record.ours {
                return Err(GolemError::bad_request(format!(
                    "proposal {proposal_id} is our own; only the other party's proposals can be rejected"
                )));
            }
            match state.proposal_state(&record, current) {
                ProposalState::Rejected => {
                    return Err(gone(format!("proposal {proposal_id} is already rejected")))
                }
                ProposalState::Expired => {
                    return Err(expired_proposal(
                        proposal_id,
                        state.proposal_expiration(&record),
                    ))
                }
                _ => {}
            }
            if let SubscriptionStatus::Expired(expiration) = status {
                return Err(expired_subscription(kind, subscription_id, expiration));
            }
            let was_initial = record.proposal.state == ProposalState::Initial;
            state.update_proposal(&inner.db, subscription_id, proposal_id, |record| {
                record.proposal.state = ProposalState::Rejected
            })?;
            (record, was_initial)
        };
        self.persist().await?;
        if !was_initial {
            self.notify_remote(
                record.counterparty(),
                ProposalRejected {
                    proposal_id: proposal_id.to_string(),
                    reason,
                },
            )
            .await;
        }
        Ok(())
    }

    /// A requestor's first counter to one of our offers.
    pub(crate) fn on_initial_proposal(
        &self,
        caller: NodeId,
        message: InitialProposalReceived,
    ) -> Result<(), GolemError> {
        let inner = &self.inner;
        let current = now();
        {
            let mut state = inner.lock();
            let offer = state
                .offers
                .get(&message.offer_id)
                .filter(|offer| offer.stored.local && offer.is_live(current))
                .ok_or_else(|| {
                    GolemError::not_found(format!("offer {} not found", message.offer_id))
                })?;
            let published = offer.stored.published.offer.clone();
            let offer_expiration = offer.stored.published.expiration;
            let offer_id = message.offer_id.clone();
            let initial_id = message.initial_proposal_id.clone();
            let counter_id = message.proposal.proposal_id.clone();
            if state.proposal(&offer_id, &initial_id).is_some()
                || state.proposal(&offer_id, &counter_id).is_some()
            {
                return Err(GolemError::conflict(format!(
                    "proposal {counter_id} is already known"
                )));
            }
            state
                .check_room(&inner.config.limits, &offer_id, 2)
                .inspect_err(|error| tracing::debug!(requestor = %caller, %error, "initial proposal refused"))?;
            let initial = Proposal {
                properties: published.properties.clone(),
                constraints: published.constraints.clone(),
                proposal_id: initial_id.clone(),
                issuer_id: inner.node_id,
                state: ProposalState::Initial,
                timestamp: message.initial_timestamp,
                prev_proposal_id: None,
            };
            check_match(
                &message.proposal.properties,
                &message.proposal.constraints,
                &initial,
                true,
            )?;
            let base = ProposalRecord {
                subscription_id: offer_id.clone(),
                role: Role::Provider,
                offer_id: offer_id.clone(),
                demand_id: message.demand_id.clone(),
                requestor_id: caller,
                provider_id: inner.node_id,
                ours: true,
                countered: true,
                proposal: initial,
                // The requestor's demand expiry is not known here; the
                // requestor enforces it on its side.
                expiration: Some(offer_expiration),
            };
            let received = Proposal {
                issuer_id: caller,
                state: ProposalState::Draft,
                prev_proposal_id: Some(initial_id),
                ..message.proposal
            };
            let counter = ProposalRecord {
                ours: false,
                countered: false,
                proposal: received.clone(),
                ..base.clone()
            };
            state.insert_proposal(&inner.db, base)?;
            state.insert_proposal(&inner.db, counter)?;
            state.push_event(
                &inner.db,
                &offer_id,
                MarketEvent::ProposalEvent {
                    event_date: current,
                    proposal: received,
                },
            )?;
        }
        inner.bump_events();
        Ok(())
    }

    /// The counterparty's counter to one of our proposals.
    pub(crate) fn on_proposal(
        &self,
        caller: NodeId,
        message: ProposalReceived,
    ) -> Result<(), GolemError> {
        let inner = &self.inner;
        let current = now();
        let previous_id = message.proposal.prev_proposal_id.clone().ok_or_else(|| {
            GolemError::bad_request("a counter-proposal must name the proposal it answers")
        })?;
        {
            let mut state = inner.lock();
            let previous = find_ours(&state, &previous_id, caller)?.clone();
            if state.proposal_state(&previous, current) == ProposalState::Expired {
                return Err(expired_proposal(
                    &previous_id,
                    state.proposal_expiration(&previous),
                ));
            }
            let kind = match previous.role {
                Role::Requestor => SubscriptionKind::Demand,
                Role::Provider => SubscriptionKind::Offer,
            };
            check_subscription(
                &state,
                inner.node_id,
                kind,
                &previous.subscription_id,
                current,
            )?;
            if previous.proposal.state == ProposalState::Rejected {
                return Err(gone(format!("proposal {previous_id} was rejected")));
            }
            if previous.countered {
                return Err(GolemError::conflict(format!(
                    "proposal {previous_id} has already been countered"
                )));
            }
            if state
                .proposal(&previous.subscription_id, &message.proposal.proposal_id)
                .is_some()
            {
                return Err(GolemError::conflict(format!(
                    "proposal {} is already known",
                    message.proposal.proposal_id
                )));
            }
            state
                .check_room(&inner.config.limits, &previous.subscription_id, 1)
                .inspect_err(|error| tracing::debug!(counterparty = %caller, %error, "counter-proposal refused"))?;
            check_match(
                &message.proposal.properties,
                &message.proposal.constraints,
                &previous.proposal,
                previous.role == Role::Provider,
            )?;
            let received = Proposal {
                issuer_id: caller,
                state: ProposalState::Draft,
                ..message.proposal
            };
            let record = ProposalRecord {
                ours: false,
                countered: false,
                proposal: received.clone(),
                ..previous.clone()
            };
            state.insert_proposal(&inner.db, record)?;
            state.update_proposal(
                &inner.db,
                &previous.subscription_id,
                &previous_id,
                |record| record.countered = true,
            )?;
            state.push_event(
                &inner.db,
                &previous.subscription_id,
                MarketEvent::ProposalEvent {
                    event_date: current,
                    proposal: received,
                },
            )?;
        }
        inner.bump_events();
        Ok(())
    }

    /// The counterparty rejected one of our proposals.
    pub(crate) fn on_proposal_rejected(
        &self,
        caller: NodeId,
        message: ProposalRejected,
    ) -> Result<(), GolemError> {
        let inner = &self.inner;
        {
            let mut state = inner.lock();
            let record = find_ours(&state, &message.proposal_id, caller)?.clone();
            if record.proposal.state == ProposalState::Rejected {
                return Ok(());
            }
            state.update_proposal(
                &inner.db,
                &record.subscription_id,
                &message.proposal_id,
                |record| record.proposal.state = ProposalState::Rejected,
            )?;
            state.push_event(
                &inner.db,
                &record.subscription_id,
                MarketEvent::ProposalRejectedEvent {
                    event_date: now(),
                    proposal_id: message.proposal_id.clone(),
                    reason: message.reason,
                },
            )?;
        }
        inner.bump_events();
        Ok(())
    }
}

enum CounterMessage {
    Initial(InitialProposalReceived),
    Counter(ProposalReceived),
}

/// Our own proposal `proposal_id` negotiated with `counterparty`.
fn find_ours<'a>(
    state: &'a State,
    proposal_id: &str,
    counterparty: NodeId,
) -> Result<&'a ProposalRecord, GolemError> {
    state
        .find_proposal(proposal_id, |record| {
            record.ours && record.counterparty() == counterparty
        })
        .ok_or_else(|| GolemError::not_found(format!("proposal {proposal_id} not found")))
}
