//! End-to-end test of subscription expiry with a real daemon whose
//! subscription lifetime is set to one second by a `[market]` config section:
//! as in the original, events of an expired subscription answer 404, its
//! unsubscription 410, an unknown id 404, and it leaves the listings.
#![allow(clippy::unwrap_used)] // test helpers panic on setup failure by design

use std::time::Duration;

use golem_client::market::Side;
use golem_model::market::{DemandOfferBase, MarketEvent, ProposalState};
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
