//! End-to-end tests of expiry with a real daemon whose subscription lifetime
//! is cut to seconds (by a `[market]` config section, or the
//! `--market-subscription-ttl-secs` flag): as in the original, events of an
//! expired subscription answer 404, its unsubscription 410, an unknown id 404,
//! and it leaves the listings; proposals become Expired with their demand's
//! or offer's expiry, and countering one or promoting it into an agreement
//! answers 410.
#![allow(clippy::unwrap_used)] // test helpers panic on setup failure by design

use std::time::Duration;

use golem_client::market::Side;
use golem_client::GolemClient;
use golem_model::market::{
    AgreementProposal, DemandOfferBase, MarketEvent, Proposal, ProposalState,
};
use golem_tests::Sandbox;
use serde_json::json;

fn body(subnet: &str, constraints: &str) -> DemandOfferBase {
    DemandOfferBase {
        properties: json!({"golem.node.debug.subnet": subnet, "golem.runtime.name": "vm"}),
        constraints: constraints.to_string(),
    }
}

#[tokio::test]
async fn expired_subscriptions_answer_404_on_events_and_410_on_unsubscribe() {
    let mut sandbox = Sandbox::new();
    let config = sandbox.path().join("short.toml");
    std::fs::write(
        &config,
        "[market]\nsubscription-ttl-secs = 2\nsweep-interval-ms = 100\n",
    )
    .unwrap();
    sandbox
        .daemon_with("n", &["--config", config.to_str().unwrap()])
        .unwrap();
    let client = sandbox.daemons()[0].client();
    let subnet = "e2e-expiry";
    let offer_id = client.subscribe_offer(&body(subnet, "()")).await.unwrap();
    let demand_id = client
        .subscribe_demand(&body(subnet, "(golem.runtime.name=vm)"))
        .await
        .unwrap();
    let events = client
        .market_events(Side::Demands, &demand_id, 1.0, 10)
        .await
        .unwrap();
    assert!(
        events.iter().any(|event| matches!(
            event,
            MarketEvent::ProposalEvent { proposal, .. } if proposal.state == ProposalState::Initial
        )),
        "the live demand got no proposal: {events:?}"
    );
    assert!(client
        .offers()
        .await
        .unwrap()
        .iter()
        .any(|offer| offer.offer_id == offer_id));

    tokio::time::sleep(Duration::from_millis(2_500)).await;

    for (side, id) in [(Side::Demands, &demand_id), (Side::Offers, &offer_id)] {
        let error = client.market_events(side, id, 0.1, 10).await.unwrap_err();
        assert_eq!(error.status(), Some(404), "events of expired {id}: {error}");
    }
    assert!(!client
        .offers()
        .await
        .unwrap()
        .iter()
        .any(|offer| offer.offer_id == offer_id));
    assert!(!client
        .demands()
        .await
        .unwrap()
        .iter()
        .any(|demand| demand.demand_id == demand_id));
    for (side, id) in [(Side::Demands, &demand_id), (Side::Offers, &offer_id)] {
        let error = client.unsubscribe(side, id).await.unwrap_err();
        assert_eq!(
            error.status(),
            Some(410),
            "unsubscribing expired {id}: {error}"
        );
        assert!(error.to_string().contains("expired"), "{error}");
    }
    let error = client
        .unsubscribe(Side::Offers, "0123456789abcdef0123456789abcdef")
        .await
        .unwrap_err();
    assert_eq!(error.status(), Some(404), "{error}");

    // A fresh subscription on the same node is live again.
    let again = client.subscribe_offer(&body(subnet, "()")).await.unwrap();
    client.unsubscribe(Side::Offers, &again).await.unwrap();
}

async fn next_proposal(client: &GolemClient, side: Side, subscription: &str) -> Proposal {
    for _ in 0..20 {
        for event in client
            .market_events(side, subscription, 0.5, 10)
            .await
            .unwrap()
        {
            if let MarketEvent::ProposalEvent { proposal, .. } = event {
                return proposal;
            }
        }
    }
    panic!("no proposal on {subscription}");
}

fn assert_gone_expired(result: Result<String, golem_client::ClientError>, what: &str) {
    let error = result.err().unwrap_or_else(|| panic!("{what} succeeded"));
    assert_eq!(error.status(), Some(410), "{what}: {error}");
    assert!(error.to_string().contains("expired"), "{what}: {error}");
}

#[tokio::test]
async fn proposals_expire_with_the_offer_or_the_demand_and_answer_410() {
    let mut sandbox = Sandbox::new();
    // The lifetime comes from the command line this time.
    sandbox
        .daemon_with(
            "n",
            &[
                "--market-subscription-ttl-secs",
                "4",
                "--market-sweep-interval-ms",
                "100",
            ],
        )
        .unwrap();
    let client = sandbox.daemons()[0].client();
    let subnet = "e2e-proposal-expiry";
    let offer_subscribed = std::time::Instant::now();
    let offer_id = client.subscribe_offer(&body(subnet, "()")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(2_000)).await;
    // The demand outlives the offer by two seconds.
    let demand_id = client
        .subscribe_demand(&body(subnet, "(golem.runtime.name=vm)"))
        .await
        .unwrap();

    // Negotiate with ourselves up to the provider's Draft.
    let initial = next_proposal(&client, Side::Demands, &demand_id).await;
    assert_eq!(initial.state, ProposalState::Initial);
    let demand_draft = client
        .counter_proposal(
            Side::Demands,
            &demand_id,
            &initial.proposal_id,
            &body(subnet, "()"),
        )
        .await
        .unwrap();
    let on_offer = next_proposal(&client, Side::Offers, &offer_id).await;
    assert_eq!(on_offer.proposal_id, demand_draft);
    let offer_draft = client
        .counter_proposal(Side::Offers, &offer_id, &demand_draft, &body(subnet, "()"))
        .await
        .unwrap();
    let draft = next_proposal(&client, Side::Demands, &demand_id).await;
    assert_eq!(
        (draft.proposal_id.as_str(), draft.state),
        (offer_draft.as_str(), ProposalState::Draft)
    );

    // The offer expires; the demand is still live.
    let offer_expired = offer_subscribed + Duration::from_millis(4_300);
    tokio::time::sleep(offer_expired.saturating_duration_since(std::time::Instant::now())).await;
    client
        .market_events(Side::Demands, &demand_id, 0.1, 10)
        .await
        .unwrap();
    let seen = client
        .proposal(Side::Demands, &demand_id, &offer_draft)
        .await
        .unwrap();
    assert_eq!(seen.state, ProposalState::Expired);
    let valid_to = chrono::Utc::now() + chrono::Duration::hours(1);
    assert_gone_expired(
        client
            .create_agreement(&AgreementProposal {
                proposal_id: offer_draft.clone(),
                valid_to,
            })
            .await,
        "an agreement from the expired Draft",
    );
    assert_gone_expired(
        client
            .counter_proposal(Side::Demands, &demand_id, &offer_draft, &body(subnet, "()"))
            .await,
        "countering the expired Draft",
    );
    // The provider's view: its offer expired, so the requestor's Draft did too.
    let seen = client
        .proposal(Side::Offers, &offer_id, &demand_draft)
        .await
        .unwrap();
    assert_eq!(seen.state, ProposalState::Expired);
    let error = client
        .reject_proposal(Side::Offers, &offer_id, &demand_draft, None)
        .await
        .unwrap_err();
    assert_eq!(error.status(), Some(410), "{error}");

    // Once the demand expires too, its events are 404 but its proposals still read as Expired.
    tokio::time::sleep(Duration::from_millis(2_200)).await;
    let error = client
        .market_events(Side::Demands, &demand_id, 0.1, 10)
        .await
        .unwrap_err();
    assert_eq!(error.status(), Some(404), "{error}");
    let seen = client
        .proposal(Side::Demands, &demand_id, &initial.proposal_id)
        .await
        .unwrap();
    assert_eq!(seen.state, ProposalState::Expired);
    assert_gone_expired(
        client
            .counter_proposal(
                Side::Demands,
                &demand_id,
                &initial.proposal_id,
                &body(subnet, "()"),
            )
            .await,
        "countering the expired Initial",
    );
}
