//! End-to-end test of the market's persistent outbox: a termination sent while
//! the provider's daemon is down is stored, survives a restart of the
//! requestor's daemon, and reaches the provider once it is back. The
//! requestor's retry timing comes from a `[market]` config file section.
#![allow(clippy::unwrap_used)] // test helpers panic on setup failure by design

use std::time::{Duration, Instant};

use golem_client::market::Side;
use golem_client::GolemClient;
use golem_model::market::{
    AgreementProposal, AgreementState, DemandOfferBase, MarketEvent, Proposal, ProposalState,
    Reason, Terminator,
};
use golem_tests::Sandbox;
use serde_json::json;

fn offer(subnet: &str) -> DemandOfferBase {
    DemandOfferBase {
        properties: json!({
            "golem.node.debug.subnet": subnet,
            "golem.inf.cpu.threads": 2,
            "golem.runtime.name": "vm",
        }),
        constraints: format!("(golem.node.debug.subnet={subnet})"),
    }
}

fn demand(subnet: &str) -> DemandOfferBase {
    DemandOfferBase {
        properties: json!({"golem.node.debug.subnet": subnet}),
        constraints: format!("(&(golem.node.debug.subnet={subnet})(golem.runtime.name=vm))"),
    }
}

async fn next_proposal(
    client: &GolemClient,
    side: Side,
    id: &str,
    state: ProposalState,
) -> Proposal {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        for event in client.market_events(side, id, 1.0, 10).await.unwrap() {
            if let MarketEvent::ProposalEvent { proposal, .. } = event {
                if proposal.state == state {
                    return proposal;
                }
            }
        }
        assert!(Instant::now() < deadline, "no {state:?} proposal on {id}");
    }
}

#[tokio::test]
async fn a_termination_to_a_stopped_provider_is_delivered_after_both_restart() {
    let mut sandbox = Sandbox::new();
    let config = sandbox.path().join("r.toml");
    std::fs::write(
        &config,
        "[market]\nremote-timeout-ms = 1000\noutbox-retry-initial-ms = 100\noutbox-retry-max-ms = 400\n",
    )
    .unwrap();
    sandbox.daemon("b").unwrap();
    let bootstrap = sandbox.daemons()[0].p2p_address().unwrap();
    sandbox
        .daemon_with("p", &["--bootstrap", &bootstrap])
        .unwrap();
    sandbox
        .daemon_with(
            "r",
            &[
                "--bootstrap",
                &bootstrap,
                "--config",
                config.to_str().unwrap(),
            ],
        )
        .unwrap();
    let provider = sandbox.daemons()[1].client();
    let requestor = sandbox.daemons()[2].client();
    let subnet = "e2e-outbox";

    // Negotiate an Approved agreement.
    let offer_id = provider.subscribe_offer(&offer(subnet)).await.unwrap();
    let demand_id = requestor.subscribe_demand(&demand(subnet)).await.unwrap();
    let initial = next_proposal(
        &requestor,
        Side::Demands,
        &demand_id,
        ProposalState::Initial,
    )
    .await;
    let counter_id = requestor
        .counter_proposal(
            Side::Demands,
            &demand_id,
            &initial.proposal_id,
            &demand(subnet),
        )
        .await
        .unwrap();
    next_proposal(&provider, Side::Offers, &offer_id, ProposalState::Draft).await;
    let draft_id = provider
        .counter_proposal(Side::Offers, &offer_id, &counter_id, &offer(subnet))
        .await
        .unwrap();
    next_proposal(&requestor, Side::Demands, &demand_id, ProposalState::Draft).await;
    let agreement_id = requestor
        .create_agreement(&AgreementProposal::valid_for(
            &draft_id,
            Duration::from_secs(3600),
        ))
        .await
        .unwrap();
    requestor
        .confirm_agreement(&agreement_id, None)
        .await
        .unwrap();
    let waiter = {
        let requestor = requestor.clone();
        let agreement_id = agreement_id.clone();
        tokio::spawn(async move { requestor.wait_for_approval(&agreement_id, 15.0).await })
    };
    provider
        .approve_agreement(&agreement_id, None)
        .await
        .unwrap();
    waiter.await.unwrap().unwrap();
    assert_eq!(
        requestor.agreement(&agreement_id).await.unwrap().state,
        AgreementState::Approved
    );

    // The provider's daemon goes down; the requestor terminates anyway.
    sandbox.daemons()[1].stop().unwrap();
    let reason: Reason =
        serde_json::from_value(json!({"message": "done while you were away"})).unwrap();
    requestor
        .terminate_agreement(&agreement_id, Some(&reason))
        .await
        .unwrap();
    assert_eq!(
        requestor.agreement(&agreement_id).await.unwrap().state,
        AgreementState::Terminated
    );

    // The undelivered notice survives a restart of the requestor's daemon...
    sandbox.daemons()[2].stop().unwrap();
    sandbox.daemons()[2].restart().unwrap();
    assert!(
        sandbox.daemons()[2]
            .log()
            .contains("undelivered_notices\":1"),
        "the restarted requestor did not reload its undelivered notice"
    );
    // ...and reaches the provider once it is back.
    let delivered_before = delivered_notices(&sandbox.daemons()[2].log());
    sandbox.daemons()[1].restart().unwrap();
    let provider = sandbox.daemons()[1].client();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let agreement = provider.agreement(&agreement_id).await.unwrap();
        if agreement.state == AgreementState::Terminated {
            break;
        }
        assert_eq!(agreement.state, AgreementState::Approved);
        assert!(
            Instant::now() < deadline,
            "the provider never received the termination"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let events = provider
        .agreement_events(None, 1.0, 100, None)
        .await
        .unwrap();
    assert!(
        events.iter().any(|event| matches!(
            event,
            golem_model::market::AgreementOperationEvent::AgreementTerminatedEvent {
                terminator: Terminator::Requestor,
                reason: Some(reason),
                ..
            } if reason.message == "done while you were away"
        )),
        "no termination event on the provider: {events:?}"
    );
    // Delivered once: the outbox is empty after the next restart (once the
    // requestor has taken the provider's answer: the provider may show the
    // termination before that answer is back).
    let deadline = Instant::now() + Duration::from_secs(30);
    while delivered_notices(&sandbox.daemons()[2].log()) == delivered_before {
        assert!(
            Instant::now() < deadline,
            "the requestor never saw its notice delivered"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    sandbox.daemons()[2].stop().unwrap();
    sandbox.daemons()[2].restart().unwrap();
    let log = sandbox.daemons()[2].log();
    assert!(
        log.matches("undelivered_notices\":0").count() >= 2,
        "the delivered notice was not removed from the outbox; the starts logged: {:?}",
        log.lines()
            .filter(|line| line.contains("undelivered_notices"))
            .collect::<Vec<_>>()
    );
}

/// How many market notices a daemon's log says were delivered.
fn delivered_notices(log: &str) -> usize {
    log.matches("market notice delivered").count()
}
