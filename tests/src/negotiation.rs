//! Market negotiation as the end-to-end tests need it around other features:
//! a provider side that counters every Draft and approves every agreement, and
//! a requestor side that takes the first offer to an Approved agreement.

use std::time::{Duration, Instant};

use golem_client::market::Side;
use golem_client::GolemClient;
use golem_model::market::{AgreementProposal, DemandOfferBase, MarketEvent, ProposalState};

/// Play the provider agent's negotiation on `offer_id` until the daemon goes away:
/// counter each Draft with `offer`, approve each agreement. Errors are ignored
/// (the requestor side's assertions catch a negotiation that does not finish).
pub fn spawn_provider_negotiator(client: GolemClient, offer_id: String, offer: DemandOfferBase) {
    tokio::spawn(async move {
        loop {
            let Ok(events) = client.market_events(Side::Offers, &offer_id, 1.0, 10).await else {
                return;
            };
            for event in events {
                match event {
                    MarketEvent::ProposalEvent { proposal, .. }
                        if proposal.state == ProposalState::Draft =>
                    {
                        let _ = client
                            .counter_proposal(
                                Side::Offers,
                                &offer_id,
                                &proposal.proposal_id,
                                &offer,
                            )
                            .await;
                    }
                    MarketEvent::AgreementEvent { agreement, .. } => {
                        let _ = client
                            .approve_agreement(&agreement.agreement_id, None)
                            .await;
                    }
                    _ => {}
                }
            }
        }
    });
}

/// Wait (up to 10 s) until the provider's node shows `agreement_id` Approved:
/// it records its approval once the requestor has acknowledged it.
pub async fn wait_approved(provider: &GolemClient, agreement_id: &str) {
    crate::eventually(
        Duration::from_secs(10),
        "the provider's agreement approved",
        || async {
            let agreement = provider.agreement(agreement_id).await.ok()?;
            (agreement.state == golem_model::market::AgreementState::Approved).then_some(())
        },
    )
    .await
    .expect("the provider approves the agreement");
}

/// Subscribe `demand`, counter the first Initial offer, turn the provider's Draft
/// into an agreement, confirm it and wait until it is Approved. Returns its id.
pub async fn negotiate_agreement(requestor: &GolemClient, demand: &DemandOfferBase) -> String {
    let demand_id = requestor
        .subscribe_demand(demand)
        .await
        .expect("subscribe the demand");
    let mut wanted = ProposalState::Initial;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        assert!(Instant::now() < deadline, "negotiation did not finish");
        let events = requestor
            .market_events(Side::Demands, &demand_id, 1.0, 10)
            .await
            .expect("demand events");
        for event in events {
            let MarketEvent::ProposalEvent { proposal, .. } = event else {
                continue;
            };
            if proposal.state != wanted {
                continue;
            }
            if wanted == ProposalState::Initial {
                requestor
                    .counter_proposal(Side::Demands, &demand_id, &proposal.proposal_id, demand)
                    .await
                    .expect("counter the offer");
                wanted = ProposalState::Draft;
                continue;
            }
            let agreement_id = requestor
                .create_agreement(&AgreementProposal::valid_for(
                    &proposal.proposal_id,
                    Duration::from_secs(3600),
                ))
                .await
                .expect("create the agreement");
            requestor
                .confirm_agreement(&agreement_id, None)
                .await
                .expect("confirm the agreement");
            requestor
                .wait_for_approval(&agreement_id, 15.0)
                .await
                .expect("the provider approves");
            return agreement_id;
        }
    }
}
