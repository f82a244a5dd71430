//! End-to-end tests of expiry with a real daemon whose subscription lifetime
//! is cut to seconds (by a `[market]` config section, or the
//! `--market-subscription-ttl-secs` flag): as in the original, events of an
//! expired subscription answer 404, its unsubscription 410, an unknown id 404,
//! and it leaves the listings; proposals become Expired with their demand's
//! or offer's expiry, and countering one or promoting it into an agreement
//! answers 410.
#![allow(clippy::unwrap_used)] // test helpers panic on setup failure by design

use std::future::Future;
use std::time::{Duration, Instant};

use golem_client::market::Side;
use golem_client::GolemClient;
use golem_model::market::{
    AgreementProposal, DemandOfferBase, MarketEvent, Proposal, ProposalState,
};
use golem_tests::Sandbox;
use serde_json::json;

/// How long past its lifetime a subscription may take to read as expired: the
/// sweep runs every 100 ms, the rest is slack for a loaded machine.
const EXPIRY_SLACK: Duration = Duration::from_secs(10);

/// Poll `check` every 50 ms until it holds and return when it first did;
/// panics when `deadline` passes first.
async fn held_at<F, Fut>(deadline: Instant, what: &str, mut check: F) -> Instant
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    loop {
        if check().await {
            return Instant::now();
        }
        assert!(Instant::now() < deadline, "{what}: not by the deadline");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

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
    let lifetime = Duration::from_secs(2);
    std::fs::write(
        &config,
        format!(
            "[market]\nsubscription-ttl-secs = {}\nsweep-interval-ms = 100\n",
            lifetime.as_secs()
        ),
    )
    .unwrap();
    sandbox
        .daemon_with("n", &["--config", config.to_str().unwrap()])
        .unwrap();
    let client = sandbox.daemons()[0].client();
    let subnet = "e2e-expiry";
    let subscribed = Instant::now();
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

    // Wait for the demand (subscribed last) to expire: its events answer 404,
    // and not before its lifetime has passed.
    let expired = held_at(
        subscribed + lifetime + EXPIRY_SLACK,
        "the demand expires",
        || async {
            client
                .market_events(Side::Demands, &demand_id, 0.1, 10)
                .await
                .is_err_and(|error| error.status() == Some(404))
        },
    )
    .await;
    assert!(
        expired >= subscribed + lifetime,
        "expired after {:?}, before its {lifetime:?} lifetime",
        expired - subscribed
    );
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
    // The lifetime comes from the command line this time. The demand is
    // subscribed `gap` after the offer, so it outlives it by `gap`: the
    // negotiation must fit in `lifetime - gap`, the checks on the expired
    // offer in `gap`.
    let lifetime = Duration::from_secs(6);
    let gap = Duration::from_secs(3);
    sandbox
        .daemon_with(
            "n",
            &[
                "--market-subscription-ttl-secs",
                &lifetime.as_secs().to_string(),
                "--market-sweep-interval-ms",
                "100",
            ],
        )
        .unwrap();
    let client = sandbox.daemons()[0].client();
    let subnet = "e2e-proposal-expiry";
    let offer_subscribed = Instant::now();
    let offer_id = client.subscribe_offer(&body(subnet, "()")).await.unwrap();
    tokio::time::sleep(gap).await;
    let demand_subscribed = Instant::now();
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

    assert!(
        Instant::now() < offer_subscribed + lifetime,
        "the negotiation outlasted the offer's {lifetime:?} lifetime: too slow to test"
    );
    assert_eq!(
        client
            .proposal(Side::Demands, &demand_id, &offer_draft)
            .await
            .unwrap()
            .state,
        ProposalState::Draft
    );

    // The offer expires (the Draft reads Expired, not before the offer's
    // lifetime has passed); the demand is still live.
    let expired = held_at(
        offer_subscribed + lifetime + EXPIRY_SLACK,
        "the Draft expires with its offer",
        || async {
            client
                .proposal(Side::Demands, &demand_id, &offer_draft)
                .await
                .unwrap()
                .state
                == ProposalState::Expired
        },
    )
    .await;
    assert!(
        expired >= offer_subscribed + lifetime,
        "the Draft expired after {:?}, before the offer's {lifetime:?} lifetime",
        expired - offer_subscribed
    );
    client
        .market_events(Side::Demands, &demand_id, 0.1, 10)
        .await
        .unwrap();
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
    assert!(
        Instant::now() < demand_subscribed + lifetime,
        "the checks on the expired offer outlasted the demand: too slow to test"
    );

    // Once the demand expires too (not before its lifetime), its events are
    // 404 but its proposals still read as Expired.
    let expired = held_at(
        demand_subscribed + lifetime + EXPIRY_SLACK,
        "the demand expires",
        || async {
            client
                .market_events(Side::Demands, &demand_id, 0.1, 10)
                .await
                .is_err_and(|error| error.status() == Some(404))
        },
    )
    .await;
    assert!(
        expired >= demand_subscribed + lifetime,
        "the demand expired after {:?}, before its {lifetime:?} lifetime",
        expired - demand_subscribed
    );
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
