//! Proposals: reading, countering and rejecting them locally, and taking in
//! the counterparty's counters and rejections. Both sides use the same
//! proposal ids; a record is found by its subscription, or, for a message of
//! the counterparty, by being ours and having that counterparty.

use actix::{ActorFutureExt, Context, Handler, Message, ResponseActFuture, ResponseFuture};
use chrono::{DateTime, Utc};
use golem_model::constraints::match_both_ways;
use golem_model::market::{
    DemandOfferBase, InitialProposalReceived, MarketEvent, Proposal, ProposalReceived,
    ProposalRejected, ProposalState, Reason,
};
use golem_model::properties::Properties;
use golem_model::{GolemError, NodeId};

use super::actor::MarketActor;
use super::errors::{expired_proposal, expired_subscription, gone, proposal_not_found};
use super::ownership::{
    check_subscription, owned_subscription, SubscriptionKind, SubscriptionStatus,
};
use super::records::{now, parse_body, parse_constraint, ProposalRecord, Role};
use super::state::State;
use super::MarketService;

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

/// `GET /offers|demands/{id}/proposals/{proposalId}`.
#[derive(Message)]
#[rtype(result = "Result<Proposal, GolemError>")]
pub(crate) struct GetProposal {
    pub owner: NodeId,
    pub kind: SubscriptionKind,
    pub subscription_id: String,
    pub proposal_id: String,
}

/// `POST /offers|demands/{id}/proposals/{proposalId}`: answers the new
/// proposal's id once the counterparty has it.
#[derive(Message)]
#[rtype(result = "Result<String, GolemError>")]
pub(crate) struct CounterProposal {
    pub owner: NodeId,
    pub kind: SubscriptionKind,
    pub subscription_id: String,
    pub proposal_id: String,
    pub body: DemandOfferBase,
}

/// `POST /offers|demands/{id}/proposals/{proposalId}/reject`.
#[derive(Message)]
#[rtype(result = "Result<(), GolemError>")]
pub(crate) struct RejectProposal {
    pub owner: NodeId,
    pub kind: SubscriptionKind,
    pub subscription_id: String,
    pub proposal_id: String,
    pub reason: Option<Reason>,
}

impl MarketService {
    pub async fn get_proposal(
        &self,
        owner: NodeId,
        kind: SubscriptionKind,
        subscription_id: &str,
        proposal_id: &str,
    ) -> Result<Proposal, GolemError> {
        self.ask(GetProposal {
            owner,
            kind,
            subscription_id: subscription_id.to_string(),
            proposal_id: proposal_id.to_string(),
        })
        .await
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
        self.ask(CounterProposal {
            owner,
            kind,
            subscription_id: subscription_id.to_string(),
            proposal_id: proposal_id.to_string(),
            body,
        })
        .await
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
        self.ask(RejectProposal {
            owner,
            kind,
            subscription_id: subscription_id.to_string(),
            proposal_id: proposal_id.to_string(),
            reason,
        })
        .await
    }
}

impl Handler<GetProposal> for MarketActor {
    type Result = Result<Proposal, GolemError>;

    fn handle(&mut self, message: GetProposal, _ctx: &mut Context<Self>) -> Self::Result {
        let state = &self.state;
        let current = now();
        let GetProposal {
            owner,
            kind,
            subscription_id,
            proposal_id,
        } = message;
        // An expired subscription's proposals stay readable (as Expired).
        owned_subscription(state, owner, kind, &subscription_id, current)?;
        state
            .proposal(&subscription_id, &proposal_id)
            .map(|record| state.proposal_view(record, current))
            .ok_or_else(|| proposal_not_found(&proposal_id))
    }
}

/// A counter-proposal recorded here, waiting to be delivered.
struct Countered {
    counterparty: NodeId,
    message: CounterMessage,
    new_id: String,
}

impl MarketActor {
    /// The counterparty's proposal `proposal_id` of our subscription, if it
    /// may still be answered (countered or rejected).
    fn answerable(
        &self,
        owner: NodeId,
        kind: SubscriptionKind,
        subscription_id: &str,
        proposal_id: &str,
        what: &str,
    ) -> Result<ProposalRecord, GolemError> {
        let state = &self.state;
        let current = now();
        let status = owned_subscription(state, owner, kind, subscription_id, current)?;
        let previous = state
            .proposal(subscription_id, proposal_id)
            .ok_or_else(|| proposal_not_found(proposal_id))?
            .clone();
        if previous.ours {
            return Err(GolemError::bad_request(format!(
                "proposal {proposal_id} is our own; only the other party's proposals can be {what}"
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
        Ok(previous)
    }

    /// Record our counter to `message.proposal_id` (marking that one
    /// countered); what to send comes back.
    fn record_counter(&mut self, message: CounterProposal) -> Result<Countered, GolemError> {
        let CounterProposal {
            owner,
            kind,
            subscription_id,
            proposal_id,
            body,
        } = message;
        let (properties, constraints) = parse_body(body)?;
        let role = kind.role();
        let current = now();
        let previous = self.answerable(owner, kind, &subscription_id, &proposal_id, "countered")?;
        if previous.countered {
            return Err(GolemError::conflict(format!(
                "proposal {proposal_id} has already been countered"
            )));
        }
        let is_initial = previous.proposal.state == ProposalState::Initial
            && previous.proposal.prev_proposal_id.is_none();
        if is_initial
            && !self
                .state
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
            subscription_id: subscription_id.clone(),
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
                proposal_id: golem_model::ids::new_id(),
                issuer_id: self.core.node_id,
                state: ProposalState::Draft,
                timestamp: current,
                prev_proposal_id: Some(proposal_id.clone()),
            },
            expiration: previous.expiration,
        };
        let message = counter_message(&previous, &counter.proposal, is_initial);
        let new_id = counter.proposal.proposal_id.clone();
        let db = &self.core.db;
        self.state.insert_proposal(db, counter)?;
        self.state
            .update_proposal(db, &subscription_id, &proposal_id, |record| {
                record.countered = true
            })?;
        Ok(Countered {
            counterparty: previous.counterparty(),
            message,
            new_id,
        })
    }

    /// The counter was not delivered: undo it, so the client may counter again.
    fn undo_counter(&mut self, subscription_id: &str, proposal_id: &str, new_id: &str) {
        let db = &self.core.db;
        let _ = self.state.remove_proposal(db, subscription_id, new_id);
        let _ = self
            .state
            .update_proposal(db, subscription_id, proposal_id, |record| {
                record.countered = false
            });
    }

    /// Mark the counterparty's proposal rejected; true when the counterparty
    /// must be told (it never saw an Initial proposal).
    fn record_rejection(
        &mut self,
        message: &RejectProposal,
    ) -> Result<(ProposalRecord, bool), GolemError> {
        let RejectProposal {
            owner,
            kind,
            subscription_id,
            proposal_id,
            ..
        } = message;
        let record = self.answerable(*owner, *kind, subscription_id, proposal_id, "rejected")?;
        let was_initial = record.proposal.state == ProposalState::Initial;
        self.state
            .update_proposal(&self.core.db, subscription_id, proposal_id, |record| {
                record.proposal.state = ProposalState::Rejected
            })?;
        Ok((record, !was_initial))
    }
}

impl Handler<CounterProposal> for MarketActor {
    type Result = ResponseActFuture<Self, Result<String, GolemError>>;

    /// Record the counter, flush, send it; undo when it is not delivered.
    fn handle(&mut self, message: CounterProposal, _ctx: &mut Context<Self>) -> Self::Result {
        let subscription_id = message.subscription_id.clone();
        let proposal_id = message.proposal_id.clone();
        let countered = match self.record_counter(message) {
            Ok(countered) => countered,
            Err(error) => return Box::pin(actix::fut::ready(Err(error))),
        };
        let Countered {
            counterparty,
            message,
            new_id,
        } = countered;
        let flush = self.core.flush();
        let send = match message {
            CounterMessage::Initial(message) => {
                let call = self.core.call_remote(counterparty, message);
                Box::pin(async move { call.await.map(drop) }) as ResponseFuture<_>
            }
            CounterMessage::Counter(message) => {
                let call = self.core.call_remote(counterparty, message);
                Box::pin(async move { call.await.map(drop) })
            }
        };
        let delivery = async move {
            flush.await?;
            send.await
        };
        Box::pin(actix::fut::wrap_future(delivery).map(
            move |sent, actor: &mut MarketActor, _ctx| match sent {
                Ok(()) => {
                    tracing::debug!(proposal_id = %new_id, prev_proposal_id = %proposal_id, "counter-proposal sent");
                    Ok(new_id)
                }
                Err(error) => {
                    actor.undo_counter(&subscription_id, &proposal_id, &new_id);
                    tracing::warn!(%counterparty, %proposal_id, %error, "counter-proposal not delivered");
                    Err(error)
                }
            },
        ))
    }
}

impl Handler<RejectProposal> for MarketActor {
    type Result = ResponseFuture<Result<(), GolemError>>;

    fn handle(&mut self, message: RejectProposal, ctx: &mut Context<Self>) -> Self::Result {
        let rejected = self.record_rejection(&message).map(|(record, tell)| {
            if tell {
                let notice = ProposalRejected {
                    proposal_id: message.proposal_id,
                    reason: message.reason,
                };
                self.notify_remote(ctx, record.counterparty(), notice);
            }
        });
        self.core.after_flush(rejected)
    }
}

impl MarketActor {
    /// A requestor's first counter to one of our offers: we record the
    /// Initial proposal it answers (the requestor made it from our offer) and
    /// its counter, and queue the counter as an event on the offer.
    pub(crate) fn on_initial_proposal(
        &mut self,
        caller: NodeId,
        message: InitialProposalReceived,
    ) -> Result<(), GolemError> {
        let current = now();
        let initial = self.initial_of_counter(caller, &message, current)?;
        let offer_id = message.offer_id;
        let received = Proposal {
            issuer_id: caller,
            state: ProposalState::Draft,
            prev_proposal_id: Some(message.initial_proposal_id),
            ..message.proposal
        };
        let counter = ProposalRecord {
            ours: false,
            countered: false,
            proposal: received.clone(),
            ..initial.clone()
        };
        let state = &mut self.state;
        let db = &self.core.db;
        state.insert_proposal(db, initial)?;
        state.insert_proposal(db, counter)?;
        let event = MarketEvent::ProposalEvent {
            event_date: current,
            proposal: received,
        };
        state.push_event(db, &offer_id, event)?;
        self.core.signals.bump_events();
        Ok(())
    }

    /// The record of the Initial proposal a requestor's first counter
    /// answers, if the counter may be taken: our offer is live, neither id is
    /// known, the offer has room, and the counter matches it.
    fn initial_of_counter(
        &self,
        caller: NodeId,
        message: &InitialProposalReceived,
        current: DateTime<Utc>,
    ) -> Result<ProposalRecord, GolemError> {
        let state = &self.state;
        let offer_id = &message.offer_id;
        let offer = state
            .offers
            .get(offer_id)
            .filter(|offer| offer.stored.local && offer.is_live(current))
            .ok_or_else(|| GolemError::not_found(format!("offer {offer_id} not found")))?;
        let published = &offer.stored.published.offer;
        let initial_id = &message.initial_proposal_id;
        let counter_id = &message.proposal.proposal_id;
        if state.proposal(offer_id, initial_id).is_some()
            || state.proposal(offer_id, counter_id).is_some()
        {
            return Err(GolemError::conflict(format!(
                "proposal {counter_id} is already known"
            )));
        }
        state
            .check_room(&self.core.config.limits, offer_id, 2)
            .inspect_err(
                |error| tracing::debug!(requestor = %caller, %error, "initial proposal refused"),
            )?;
        let initial = Proposal {
            properties: published.properties.clone(),
            constraints: published.constraints.clone(),
            proposal_id: initial_id.clone(),
            issuer_id: self.core.node_id,
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
        Ok(ProposalRecord {
            subscription_id: offer_id.clone(),
            role: Role::Provider,
            offer_id: offer_id.clone(),
            demand_id: message.demand_id.clone(),
            requestor_id: caller,
            provider_id: self.core.node_id,
            ours: true,
            countered: true,
            proposal: initial,
            // The requestor's demand expiry is not known here; the
            // requestor enforces it on its side.
            expiration: Some(offer.stored.published.expiration),
        })
    }

    /// The counterparty's counter to one of our proposals.
    pub(crate) fn on_proposal(
        &mut self,
        caller: NodeId,
        message: ProposalReceived,
    ) -> Result<(), GolemError> {
        let current = now();
        let previous = self.counterable(caller, &message.proposal, current)?;
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
        let state = &mut self.state;
        let db = &self.core.db;
        let subscription_id = &previous.subscription_id;
        state.insert_proposal(db, record)?;
        state.update_proposal(
            db,
            subscription_id,
            &previous.proposal.proposal_id,
            |record| record.countered = true,
        )?;
        let event = MarketEvent::ProposalEvent {
            event_date: current,
            proposal: received,
        };
        state.push_event(db, subscription_id, event)?;
        self.core.signals.bump_events();
        Ok(())
    }

    /// Our proposal that `counter` (from `caller`) answers, if it may still
    /// be countered and the counter matches it.
    fn counterable(
        &self,
        caller: NodeId,
        counter: &Proposal,
        current: DateTime<Utc>,
    ) -> Result<ProposalRecord, GolemError> {
        let state = &self.state;
        let previous_id = counter.prev_proposal_id.as_deref().ok_or_else(|| {
            GolemError::bad_request("a counter-proposal must name the proposal it answers")
        })?;
        let previous = find_ours(state, previous_id, caller)?;
        if state.proposal_state(previous, current) == ProposalState::Expired {
            return Err(expired_proposal(
                previous_id,
                state.proposal_expiration(previous),
            ));
        }
        let kind = SubscriptionKind::of_role(previous.role);
        let subscription_id = &previous.subscription_id;
        check_subscription(state, self.core.node_id, kind, subscription_id, current)?;
        if previous.proposal.state == ProposalState::Rejected {
            return Err(gone(format!("proposal {previous_id} was rejected")));
        }
        if previous.countered {
            return Err(GolemError::conflict(format!(
                "proposal {previous_id} has already been countered"
            )));
        }
        if state
            .proposal(subscription_id, &counter.proposal_id)
            .is_some()
        {
            return Err(GolemError::conflict(format!(
                "proposal {} is already known",
                counter.proposal_id
            )));
        }
        state
            .check_room(&self.core.config.limits, subscription_id, 1)
            .inspect_err(
                |error| tracing::debug!(counterparty = %caller, %error, "counter-proposal refused"),
            )?;
        check_match(
            &counter.properties,
            &counter.constraints,
            &previous.proposal,
            previous.role == Role::Provider,
        )?;
        Ok(previous.clone())
    }

    /// The counterparty rejected one of our proposals.
    pub(crate) fn on_proposal_rejected(
        &mut self,
        caller: NodeId,
        message: ProposalRejected,
    ) -> Result<(), GolemError> {
        {
            let state = &mut self.state;
            let record = find_ours(state, &message.proposal_id, caller)?.clone();
            if record.proposal.state == ProposalState::Rejected {
                return Ok(());
            }
            state.update_proposal(
                &self.core.db,
                &record.subscription_id,
                &message.proposal_id,
                |record| record.proposal.state = ProposalState::Rejected,
            )?;
            state.push_event(
                &self.core.db,
                &record.subscription_id,
                MarketEvent::ProposalRejectedEvent {
                    event_date: now(),
                    proposal_id: message.proposal_id.clone(),
                    reason: message.reason,
                },
            )?;
        }
        self.core.signals.bump_events();
        Ok(())
    }
}

/// What tells the counterparty of our `counter` to `previous`: the first
/// counter to an Initial proposal carries what the provider needs to record
/// that Initial proposal too.
fn counter_message(
    previous: &ProposalRecord,
    counter: &Proposal,
    is_initial: bool,
) -> CounterMessage {
    if is_initial {
        CounterMessage::Initial(InitialProposalReceived {
            offer_id: previous.offer_id.clone(),
            demand_id: previous.demand_id.clone(),
            initial_proposal_id: previous.proposal.proposal_id.clone(),
            initial_timestamp: previous.proposal.timestamp,
            proposal: counter.clone(),
        })
    } else {
        CounterMessage::Counter(ProposalReceived {
            proposal: counter.clone(),
        })
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
        .ok_or_else(|| proposal_not_found(proposal_id))
}
