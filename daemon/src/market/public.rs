//! `/public/market`: what other nodes' markets may ask of ours. Every handler
//! takes the caller as the net authenticated it and acts only where that node
//! is the counterparty; local callers are refused (they use the REST API).
//! Every id a message carries is checked for its shape
//! ([`golem_model::ids::check_id`]) before it reaches the state or sled keys.

use golem_bus::{Caller, ServiceEndpoint};
use golem_model::ids::check_id;
use golem_model::market::Proposal;
use golem_model::market::{
    AgreementApproved, AgreementCancelled, AgreementReceived, AgreementRejected,
    AgreementTerminated, GetOwnOffers, InitialProposalReceived, ProposalReceived, ProposalRejected,
};
use golem_model::{GolemError, NodeId};

use super::MarketService;

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

pub(crate) fn endpoint(service: MarketService) -> ServiceEndpoint {
    let get_offers = service.clone();
    let initial = service.clone();
    let counter = service.clone();
    let rejected = service.clone();
    let agreement = service.clone();
    let approved = service.clone();
    let agreement_rejected = service.clone();
    let cancelled = service.clone();
    let terminated = service;
    ServiceEndpoint::new()
        .on(move |_caller, _: GetOwnOffers| {
            let service = get_offers.clone();
            async move { Ok(service.own_offers(None, None)) }
        })
        .on(move |caller, message: InitialProposalReceived| {
            let service = initial.clone();
            async move {
                check_ids(
                    [
                        ("offer id", message.offer_id.as_str()),
                        ("demand id", message.demand_id.as_str()),
                        ("initial proposal id", message.initial_proposal_id.as_str()),
                    ]
                    .into_iter()
                    .chain(proposal_ids(&message.proposal)),
                )?;
                service.on_initial_proposal(remote(caller)?, message)?;
                service.persist().await
            }
        })
        .on(move |caller, message: ProposalReceived| {
            let service = counter.clone();
            async move {
                check_ids(proposal_ids(&message.proposal))?;
                service.on_proposal(remote(caller)?, message)?;
                service.persist().await
            }
        })
        .on(move |caller, message: ProposalRejected| {
            let service = rejected.clone();
            async move {
                check_id("proposal id", &message.proposal_id)?;
                service.on_proposal_rejected(remote(caller)?, message)?;
                service.persist().await
            }
        })
        .on(move |caller, message: AgreementReceived| {
            let service = agreement.clone();
            async move {
                check_ids([
                    ("agreement id", message.agreement_id.as_str()),
                    ("proposal id", message.proposal_id.as_str()),
                    ("offer id", message.offer_id.as_str()),
                ])?;
                service.on_agreement_received(remote(caller)?, message)?;
                service.persist().await
            }
        })
        .on(move |caller, message: AgreementApproved| {
            let service = approved.clone();
            async move {
                check_id("agreement id", &message.agreement_id)?;
                service.on_agreement_approved(remote(caller)?, message)?;
                service.persist().await
            }
        })
        .on(move |caller, message: AgreementRejected| {
            let service = agreement_rejected.clone();
            async move {
                check_id("agreement id", &message.agreement_id)?;
                service.on_agreement_rejected(remote(caller)?, message)?;
                service.persist().await
            }
        })
        .on(move |caller, message: AgreementCancelled| {
            let service = cancelled.clone();
            async move {
                check_id("agreement id", &message.agreement_id)?;
                service.on_agreement_cancelled(remote(caller)?, message)?;
                service.persist().await
            }
        })
        .on(move |caller, message: AgreementTerminated| {
            let service = terminated.clone();
            async move {
                check_id("agreement id", &message.agreement_id)?;
                service.on_agreement_terminated(remote(caller)?, message)?;
                service.persist().await
            }
        })
}
