//! `/public/market`: what other nodes' markets may ask of ours. Every handler
//! takes the caller as the net authenticated it and acts only where that node
//! is the counterparty; local callers are refused (they use the REST API).
//! Each message is handled by the market actor (`on_actor`); its answer
//! goes back once the change is flushed.
//! Every id a message carries is checked for its shape
//! ([`golem_model::ids::check_id`]) before it reaches the state or sled keys.

use actix::{Context, Handler, ResponseFuture};
use golem_bus::actor::{Incoming, Supervised};
use golem_bus::{Caller, ServiceEndpoint};
use golem_model::ids::check_id;
use golem_model::market::Proposal;
use golem_model::market::{
    AgreementApproved, AgreementCancelled, AgreementReceived, AgreementRejected,
    AgreementTerminated, GetOwnOffers, InitialProposalReceived, ProposalReceived, ProposalRejected,
};
use golem_model::{GolemError, NodeId};

use golem_model::market::OfferBroadcast;

use super::actor::MarketActor;
use super::matching::own_offers;

fn remote(caller: Caller) -> Result<NodeId, GolemError> {
    match caller {
        Caller::Remote(node) => Ok(node),
        Caller::Local => Err(GolemError::forbidden(
            "the public market endpoint serves other nodes only",
        )),
    }
}

/// Refuse a message whose ids are malformed (BadRequest naming the field).
fn check_ids<'a>(ids: impl IntoIterator<Item = (&'static str, &'a str)>) -> Result<(), GolemError> {
    ids.into_iter()
        .try_for_each(|(what, id)| check_id(what, id))
}

fn proposal_ids(proposal: &Proposal) -> Vec<(&'static str, &str)> {
    let mut ids = vec![("proposal id", proposal.proposal_id.as_str())];
    if let Some(previous) = &proposal.prev_proposal_id {
        ids.push(("previous proposal id", previous.as_str()));
    }
    ids
}

/// `/public/market`, every message bound to the market actor.
pub(crate) fn endpoint(actor: Supervised<MarketActor>) -> ServiceEndpoint {
    ServiceEndpoint::new()
        .on_actor::<GetOwnOffers, _, _>(actor.clone())
        .on_actor::<InitialProposalReceived, _, _>(actor.clone())
        .on_actor::<ProposalReceived, _, _>(actor.clone())
        .on_actor::<ProposalRejected, _, _>(actor.clone())
        .on_actor::<AgreementReceived, _, _>(actor.clone())
        .on_actor::<AgreementApproved, _, _>(actor.clone())
        .on_actor::<AgreementRejected, _, _>(actor.clone())
        .on_actor::<AgreementCancelled, _, _>(actor.clone())
        .on_actor::<AgreementTerminated, _, _>(actor)
}

impl Handler<Incoming<GetOwnOffers>> for MarketActor {
    type Result = Result<OfferBroadcast, GolemError>;

    fn handle(&mut self, _: Incoming<GetOwnOffers>, _ctx: &mut Context<Self>) -> Self::Result {
        Ok(own_offers(&self.state, None, None))
    }
}

impl Handler<Incoming<InitialProposalReceived>> for MarketActor {
    type Result = ResponseFuture<Result<(), GolemError>>;

    fn handle(
        &mut self,
        incoming: Incoming<InitialProposalReceived>,
        _ctx: &mut Context<Self>,
    ) -> Self::Result {
        let message = incoming.message;
        let taken = check_ids(
            [
                ("offer id", message.offer_id.as_str()),
                ("demand id", message.demand_id.as_str()),
                ("initial proposal id", message.initial_proposal_id.as_str()),
            ]
            .into_iter()
            .chain(proposal_ids(&message.proposal)),
        )
        .and_then(|()| remote(incoming.caller))
        .and_then(|caller| self.on_initial_proposal(caller, message));
        self.core.after_flush(taken)
    }
}

impl Handler<Incoming<ProposalReceived>> for MarketActor {
    type Result = ResponseFuture<Result<(), GolemError>>;

    fn handle(
        &mut self,
        incoming: Incoming<ProposalReceived>,
        _ctx: &mut Context<Self>,
    ) -> Self::Result {
        let message = incoming.message;
        let taken = check_ids(proposal_ids(&message.proposal))
            .and_then(|()| remote(incoming.caller))
            .and_then(|caller| self.on_proposal(caller, message));
        self.core.after_flush(taken)
    }
}

impl Handler<Incoming<ProposalRejected>> for MarketActor {
    type Result = ResponseFuture<Result<(), GolemError>>;

    fn handle(
        &mut self,
        incoming: Incoming<ProposalRejected>,
        _ctx: &mut Context<Self>,
    ) -> Self::Result {
        let message = incoming.message;
        let taken = check_id("proposal id", &message.proposal_id)
            .and_then(|()| remote(incoming.caller))
            .and_then(|caller| self.on_proposal_rejected(caller, message));
        self.core.after_flush(taken)
    }
}

impl Handler<Incoming<AgreementReceived>> for MarketActor {
    type Result = ResponseFuture<Result<(), GolemError>>;

    fn handle(
        &mut self,
        incoming: Incoming<AgreementReceived>,
        _ctx: &mut Context<Self>,
    ) -> Self::Result {
        let message = incoming.message;
        let taken = check_ids([
            ("agreement id", message.agreement_id.as_str()),
            ("proposal id", message.proposal_id.as_str()),
            ("offer id", message.offer_id.as_str()),
        ])
        .and_then(|()| remote(incoming.caller))
        .and_then(|caller| self.on_agreement_received(caller, message));
        self.core.after_flush(taken)
    }
}

impl Handler<Incoming<AgreementApproved>> for MarketActor {
    type Result = ResponseFuture<Result<(), GolemError>>;

    fn handle(
        &mut self,
        incoming: Incoming<AgreementApproved>,
        _ctx: &mut Context<Self>,
    ) -> Self::Result {
        let message = incoming.message;
        let taken = check_id("agreement id", &message.agreement_id)
            .and_then(|()| remote(incoming.caller))
            .and_then(|caller| self.on_agreement_approved(caller, message));
        self.core.after_flush(taken)
    }
}

impl Handler<Incoming<AgreementRejected>> for MarketActor {
    type Result = ResponseFuture<Result<(), GolemError>>;

    fn handle(
        &mut self,
        incoming: Incoming<AgreementRejected>,
        _ctx: &mut Context<Self>,
    ) -> Self::Result {
        let message = incoming.message;
        let taken = check_id("agreement id", &message.agreement_id)
            .and_then(|()| remote(incoming.caller))
            .and_then(|caller| self.on_agreement_rejected(caller, message));
        self.core.after_flush(taken)
    }
}

impl Handler<Incoming<AgreementCancelled>> for MarketActor {
    type Result = ResponseFuture<Result<(), GolemError>>;

    fn handle(
        &mut self,
        incoming: Incoming<AgreementCancelled>,
        _ctx: &mut Context<Self>,
    ) -> Self::Result {
        let message = incoming.message;
        let taken = check_id("agreement id", &message.agreement_id)
            .and_then(|()| remote(incoming.caller))
            .and_then(|caller| self.on_agreement_cancelled(caller, message));
        self.core.after_flush(taken)
    }
}

impl Handler<Incoming<AgreementTerminated>> for MarketActor {
    type Result = ResponseFuture<Result<(), GolemError>>;

    fn handle(
        &mut self,
        incoming: Incoming<AgreementTerminated>,
        _ctx: &mut Context<Self>,
    ) -> Self::Result {
        let message = incoming.message;
        let taken = check_id("agreement id", &message.agreement_id)
            .and_then(|()| remote(incoming.caller))
            .and_then(|caller| self.on_agreement_terminated(caller, message));
        self.core.after_flush(taken)
    }
}
