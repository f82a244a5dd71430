//! Service tests of the market: two daemon libraries in one process (a
//! provider node P and a requestor node R bootstrapped from P) driven through
//! their real REST APIs with the typed client.
#![allow(clippy::unwrap_used)] // test helpers panic on setup failure by design

use std::time::{Duration, Instant};

use golem_client::market::Side;
use golem_client::GolemClient;
use golem_daemon::config::DaemonConfig;
use golem_daemon::Node;
use golem_model::bus::BusMessage;
use golem_model::market::{
    AgreementApproved, AgreementOperationEvent, AgreementProposal, AgreementState, DemandOfferBase,
    MarketEvent, Proposal, ProposalState, Reason, Terminator, MARKET_PUBLIC_SERVICE,
};
use golem_model::ErrorCode;
use serde_json::json;

const APP_KEY: &str = "market-test-key";

fn test_config(data_dir: &std::path::Path, bootstrap: Option<&str>) -> DaemonConfig {
    DaemonConfig {
        data_dir: data_dir.to_path_buf(),
        api_addr: "127.0.0.1:0".parse().unwrap(),
        p2p_listen: vec!["/ip4/127.0.0.1/tcp/0".into()],
        bootstrap: bootstrap
            .map(|addr| vec![addr.to_string()])
            .unwrap_or_default(),
        api_workers: 1,
        autoconf_appkey: Some(APP_KEY.into()),
        ..DaemonConfig::default()
    }
}

async fn p2p_address(node: &Node) -> String {
    let status = node.net.status().await;
    format!("{}/p2p/{}", status.listen_addrs[0], status.peer_id)
}

/// Start a node, retrying while the previous instance on the same data dir
/// still holds the database (its last tasks finish within a few seconds).
async fn start(data_dir: &std::path::Path, bootstrap: Option<&str>) -> Node {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match golem_daemon::start(test_config(data_dir, bootstrap)).await {
            Ok(node) => return node,
            Err(error) if Instant::now() < deadline => {
                eprintln!("start failed, retrying: {error:#}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(error) => panic!("cannot start the node: {error:#}"),
        }
    }
}

fn client(node: &Node) -> GolemClient {
    GolemClient::new(&format!("http://{}", node.api_addr), APP_KEY)
}

fn offer(subnet: &str) -> DemandOfferBase {
    DemandOfferBase {
        // Nested on purpose: the daemon flattens it.
        properties: json!({
            "golem": {
                "node": {"debug": {"subnet": subnet}, "id": {"name": "provider-p"}},
                "inf": {"cpu": {"threads": 4}, "mem": {"gib": 8.0}},
                "runtime": {"name": "vm"},
                "com": {"pricing": {"model": "linear", "model.linear.coeffs": [0.1, 0.2, 0.0]}}
            }
        }),
        constraints: format!(
            "(&(golem.node.debug.subnet={subnet})\n\t(golem.srv.comp.expiration>0))"
        ),
    }
}

fn demand(subnet: &str) -> DemandOfferBase {
    DemandOfferBase {
        properties: json!({
            "golem.node.debug.subnet": subnet,
            // An hour ahead, as clients ask; the market refuses expiries beyond its cap.
            "golem.srv.comp.expiration": chrono::Utc::now().timestamp_millis() + 3_600_000,
            "golem.srv.caps.multi-activity": true,
        }),
        constraints: format!(
            "(&(golem.node.debug.subnet={subnet})\n\t(golem.inf.cpu.threads>=1)\n\t(golem.runtime.name=vm))"
        ),
    }
}

/// Poll a subscription until an event satisfies `pick`; fails after 20 s.
async fn next_event<T>(
    client: &GolemClient,
    side: Side,
    subscription: &str,
    what: &str,
    pick: impl Fn(&MarketEvent) -> Option<T>,
) -> T {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let events = client
            .market_events(side, subscription, 1.0, 10)
            .await
            .unwrap();
        if let Some(found) = events.iter().find_map(&pick) {
            return found;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
    }
}

fn proposal_in_state(state: ProposalState) -> impl Fn(&MarketEvent) -> Option<Proposal> {
    move |event| match event {
        MarketEvent::ProposalEvent { proposal, .. } if proposal.state == state => {
            Some(proposal.clone())
        }
        _ => None,
    }
}

struct Negotiated {
    offer_id: String,
    demand_id: String,
    /// The provider's Draft, as the requestor received it.
    draft: Proposal,
}

/// Offer on P, demand on R, R counters the Initial, P counters back: returns
/// once P's counter is sent (R has not collected the Draft yet).
async fn negotiate_until_provider_counters(
    provider: &GolemClient,
    requestor: &GolemClient,
    subnet: &str,
) -> (String, String, String) {
    let offer_id = provider.subscribe_offer(&offer(subnet)).await.unwrap();
    // The requestor learns P's offer when it connects to P (pull) or from the
    // broadcast; its demand may come first, then the match comes later.
    let demand_id = requestor.subscribe_demand(&demand(subnet)).await.unwrap();
    let initial = next_event(
        requestor,
        Side::Demands,
        &demand_id,
        "the Initial proposal",
        proposal_in_state(ProposalState::Initial),
    )
    .await;
    assert_eq!(
        initial.properties.get("golem.inf.cpu.threads"),
        Some(&json!(4))
    );
    assert_eq!(
        initial.properties.get("golem.node.debug.subnet"),
        Some(&json!(subnet))
    );
    assert!(initial.prev_proposal_id.is_none());

    let counter_id = requestor
        .counter_proposal(
            Side::Demands,
            &demand_id,
            &initial.proposal_id,
            &demand(subnet),
        )
        .await
        .unwrap();
    let on_provider = next_event(
        provider,
        Side::Offers,
        &offer_id,
        "the requestor's counter on P",
        proposal_in_state(ProposalState::Draft),
    )
    .await;
    assert_eq!(on_provider.proposal_id, counter_id);
    assert_eq!(
        on_provider.prev_proposal_id.as_deref(),
        Some(initial.proposal_id.as_str())
    );
    assert_eq!(
        on_provider.properties.get("golem.srv.caps.multi-activity"),
        Some(&json!(true))
    );
    let provider_counter = provider
        .counter_proposal(Side::Offers, &offer_id, &counter_id, &offer(subnet))
        .await
        .unwrap();
    // Countering the same proposal twice is refused.
    let again = provider
        .counter_proposal(Side::Offers, &offer_id, &counter_id, &offer(subnet))
        .await
        .unwrap_err();
    assert_eq!(again.status(), Some(409), "{again}");
    (offer_id, demand_id, provider_counter)
}

async fn negotiate(provider: &GolemClient, requestor: &GolemClient, subnet: &str) -> Negotiated {
    let (offer_id, demand_id, provider_counter) =
        negotiate_until_provider_counters(provider, requestor, subnet).await;
    let draft = next_event(
        requestor,
        Side::Demands,
        &demand_id,
        "the provider's Draft",
        proposal_in_state(ProposalState::Draft),
    )
    .await;
    assert_eq!(draft.proposal_id, provider_counter);
    Negotiated {
        offer_id,
        demand_id,
        draft,
    }
}

/// Create and confirm an agreement on R, approve it on P, wait on R.
async fn agree(provider: &GolemClient, requestor: &GolemClient, negotiated: &Negotiated) -> String {
    let agreement_id = requestor
        .create_agreement(&AgreementProposal::valid_for(
            &negotiated.draft.proposal_id,
            Duration::from_secs(3600),
        ))
        .await
        .unwrap();
    let created = requestor.agreement(&agreement_id).await.unwrap();
    assert_eq!(created.state, AgreementState::Proposal);
    assert_eq!(created.demand.demand_id, negotiated.demand_id);
    assert_eq!(created.offer.offer_id, negotiated.offer_id);
    assert_eq!(created.offer.properties, negotiated.draft.properties);

    requestor
        .confirm_agreement(&agreement_id, Some("session-r"))
        .await
        .unwrap();
    let on_provider = next_event(
        provider,
        Side::Offers,
        &negotiated.offer_id,
        "the AgreementEvent on P",
        |event| match event {
            MarketEvent::AgreementEvent { agreement, .. } => Some(agreement.clone()),
            _ => None,
        },
    )
    .await;
    assert_eq!(on_provider.agreement_id, agreement_id);
    assert_eq!(on_provider.state, AgreementState::Pending);
    assert_eq!(on_provider.demand.demand_id, negotiated.demand_id);
    assert_eq!(on_provider.offer.properties, created.offer.properties);
    assert_eq!(on_provider.demand.properties, created.demand.properties);

    // Not approved yet: a short wait times out with 408.
    let early = requestor
        .wait_for_approval(&agreement_id, 0.2)
        .await
        .unwrap_err();
    assert_eq!(early.status(), Some(408), "{early}");

    let waiter = {
        let requestor = requestor.clone();
        let agreement_id = agreement_id.clone();
        tokio::spawn(async move { requestor.wait_for_approval(&agreement_id, 15.0).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    provider
        .approve_agreement(&agreement_id, Some("session-p"))
        .await
        .unwrap();
    waiter.await.unwrap().unwrap();
    for client in [requestor, provider] {
        let agreement = client.agreement(&agreement_id).await.unwrap();
        assert_eq!(agreement.state, AgreementState::Approved);
        assert!(agreement.approved_date.is_some());
    }
    agreement_id
}

fn has_event(
    events: &[AgreementOperationEvent],
    agreement_id: &str,
    kind: fn(&AgreementOperationEvent) -> bool,
) -> bool {
    events
        .iter()
        .any(|event| event.agreement_id() == agreement_id && kind(event))
}

#[actix_rt::test]
async fn offer_to_terminated_agreement_across_two_nodes() {
    let provider_dir = tempfile::tempdir().unwrap();
    let requestor_dir = tempfile::tempdir().unwrap();
    let provider_node = start(provider_dir.path(), None).await;
    let requestor_node = start(
        requestor_dir.path(),
        Some(&p2p_address(&provider_node).await),
    )
    .await;
    let provider = client(&provider_node);
    let requestor = client(&requestor_node);

    let negotiated = negotiate(&provider, &requestor, "svc-flow").await;
    assert_eq!(negotiated.draft.issuer_id, provider_node.node_id);
    // Each event is delivered once.
    let rest = requestor
        .market_events(Side::Demands, &negotiated.demand_id, 0.0, 10)
        .await
        .unwrap();
    assert!(rest.is_empty(), "{rest:?}");
    // Both sides list their subscriptions.
    assert_eq!(
        provider.offers().await.unwrap()[0].offer_id,
        negotiated.offer_id
    );
    assert_eq!(
        requestor.demands().await.unwrap()[0].demand_id,
        negotiated.demand_id
    );

    let agreement_id = agree(&provider, &requestor, &negotiated).await;
    // The Draft was promoted: a second agreement on it is refused.
    let twice = requestor
        .create_agreement(&AgreementProposal::valid_for(
            &negotiated.draft.proposal_id,
            Duration::from_secs(60),
        ))
        .await
        .unwrap_err();
    assert_eq!(twice.status(), Some(409), "{twice}");

    let reason: Reason = serde_json::from_value(json!({
        "message": "work done",
        "golem.provider.code": "Finished"
    }))
    .unwrap();
    provider
        .terminate_agreement(&agreement_id, Some(&reason))
        .await
        .unwrap();
    for client in [&requestor, &provider] {
        let agreement = client.agreement(&agreement_id).await.unwrap();
        assert_eq!(agreement.state, AgreementState::Terminated);
        let events = client.agreement_events(None, 1.0, 100, None).await.unwrap();
        assert!(
            has_event(&events, &agreement_id, |event| matches!(
                event,
                AgreementOperationEvent::AgreementApprovedEvent { .. }
            )),
            "{events:?}"
        );
        let terminated = events
            .iter()
            .find_map(|event| match event {
                AgreementOperationEvent::AgreementTerminatedEvent {
                    terminator, reason, ..
                } => Some((*terminator, reason.clone())),
                _ => None,
            })
            .expect("a terminated event");
        assert_eq!(terminated.0, Terminator::Provider);
        let reason = terminated.1.unwrap();
        assert_eq!(reason.message, "work done");
        assert_eq!(reason.extra["golem.provider.code"], "Finished");
    }
    // Paging with afterTimestamp returns only later events.
    let all = requestor
        .agreement_events(None, 0.0, 100, None)
        .await
        .unwrap();
    let after = all[0].event_date().to_rfc3339();
    let later = requestor
        .agreement_events(Some(&after), 0.0, 100, None)
        .await
        .unwrap();
    assert_eq!(later.len(), all.len() - 1);
    // The session filter keeps the requestor's events apart.
    let session = requestor
        .agreement_events(None, 0.0, 100, Some("session-r"))
        .await
        .unwrap();
    assert_eq!(session.len(), all.len());
    let other_session = requestor
        .agreement_events(None, 0.2, 100, Some("other"))
        .await
        .unwrap();
    assert!(other_session.is_empty());

    // A terminated agreement cannot be terminated again, nor waited for.
    let again = requestor
        .terminate_agreement(&agreement_id, None)
        .await
        .unwrap_err();
    assert_eq!(again.status(), Some(410), "{again}");
    let gone = requestor
        .wait_for_approval(&agreement_id, 1.0)
        .await
        .unwrap_err();
    assert_eq!(gone.status(), Some(410), "{gone}");

    // Unsubscribing twice: 204 then 410; the events of a gone subscription are 404.
    requestor
        .unsubscribe(Side::Demands, &negotiated.demand_id)
        .await
        .unwrap();
    let twice = requestor
        .unsubscribe(Side::Demands, &negotiated.demand_id)
        .await
        .unwrap_err();
    assert_eq!(twice.status(), Some(410));
    let events = requestor
        .market_events(Side::Demands, &negotiated.demand_id, 0.0, 10)
        .await
        .unwrap_err();
    assert_eq!(events.status(), Some(404));

    requestor_node.stop().await;
    provider_node.stop().await;
}

#[actix_rt::test]
async fn bad_input_is_refused_with_400_and_the_parser_position() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path(), None).await;
    let client = client(&node);
    let bad = DemandOfferBase {
        properties: json!({"golem.node.debug.subnet": "x"}),
        constraints: "(&(golem.inf.mem.gib>=0.5)(golem.runtime.name=vm)".into(),
    };
    let error = client.subscribe_demand(&bad).await.unwrap_err();
    assert_eq!(error.status(), Some(400));
    assert!(
        error.to_string().contains("at position 49"),
        "the message says where: {error}"
    );
    let error = client.subscribe_offer(&bad).await.unwrap_err();
    assert_eq!(error.status(), Some(400), "{error}");

    let not_an_object = DemandOfferBase {
        properties: json!([1, 2]),
        constraints: "()".into(),
    };
    let error = client.subscribe_offer(&not_an_object).await.unwrap_err();
    assert_eq!(error.status(), Some(400));
    assert!(error.to_string().contains("json object"), "{error}");

    // maxEvents out of range.
    let demand_id = client.subscribe_demand(&demand("bad-input")).await.unwrap();
    let error = client
        .market_events(Side::Demands, &demand_id, 0.0, 1000)
        .await
        .unwrap_err();
    assert_eq!(error.status(), Some(400));
    // The long poll returns [] after its timeout, not before.
    let started = Instant::now();
    let events = client
        .market_events(Side::Demands, &demand_id, 0.3, 10)
        .await
        .unwrap();
    assert!(events.is_empty());
    assert!(started.elapsed() >= Duration::from_millis(290));
    node.stop().await;
}

#[actix_rt::test]
async fn foreign_ids_and_foreign_callers_are_refused() {
    let provider_dir = tempfile::tempdir().unwrap();
    let requestor_dir = tempfile::tempdir().unwrap();
    let provider_node = start(provider_dir.path(), None).await;
    let requestor_node = start(
        requestor_dir.path(),
        Some(&p2p_address(&provider_node).await),
    )
    .await;
    let provider = client(&provider_node);
    let requestor = client(&requestor_node);
    let negotiated = negotiate(&provider, &requestor, "svc-foreign").await;

    // P's offer subscription does not exist on R, and an offer is not a demand.
    let error = requestor
        .market_events(Side::Offers, &negotiated.offer_id, 0.0, 10)
        .await
        .unwrap_err();
    assert_eq!(error.status(), Some(404));
    let error = provider
        .market_events(Side::Demands, &negotiated.offer_id, 0.0, 10)
        .await
        .unwrap_err();
    assert_eq!(error.status(), Some(404));
    // A proposal of another subscription is not found through this one.
    let other_demand = requestor
        .subscribe_demand(&demand("svc-foreign-other"))
        .await
        .unwrap();
    let error = requestor
        .proposal(Side::Demands, &other_demand, &negotiated.draft.proposal_id)
        .await
        .unwrap_err();
    assert_eq!(error.status(), Some(404));
    let error = requestor
        .counter_proposal(
            Side::Demands,
            &other_demand,
            &negotiated.draft.proposal_id,
            &demand("svc-foreign"),
        )
        .await
        .unwrap_err();
    assert_eq!(error.status(), Some(404));
    // Our own proposal cannot be countered nor promoted.
    let own_id = negotiated.draft.prev_proposal_id.clone().unwrap();
    let error = requestor
        .counter_proposal(
            Side::Demands,
            &negotiated.demand_id,
            &own_id,
            &demand("svc-foreign"),
        )
        .await
        .unwrap_err();
    assert_eq!(error.status(), Some(400));
    let error = requestor
        .create_agreement(&AgreementProposal::valid_for(
            &own_id,
            Duration::from_secs(60),
        ))
        .await
        .unwrap_err();
    assert_eq!(error.status(), Some(400));
    // The provider's node holds no requestor side of the agreement.
    let agreement_id = requestor
        .create_agreement(&AgreementProposal::valid_for(
            &negotiated.draft.proposal_id,
            Duration::from_secs(600),
        ))
        .await
        .unwrap();
    let error = provider.agreement(&agreement_id).await.unwrap_err();
    assert_eq!(error.status(), Some(404));
    requestor
        .confirm_agreement(&agreement_id, None)
        .await
        .unwrap();
    let error = provider
        .confirm_agreement(&agreement_id, None)
        .await
        .unwrap_err();
    assert_eq!(error.status(), Some(404));
    let error = provider
        .wait_for_approval(&agreement_id, 0.1)
        .await
        .unwrap_err();
    assert_eq!(error.status(), Some(404));
    // ...and the requestor's node no provider side.
    let error = requestor
        .approve_agreement(&agreement_id, None)
        .await
        .unwrap_err();
    assert_eq!(error.status(), Some(404));

    // Over the bus: R may not approve on P's behalf (P's record is the
    // provider's, and R is not its provider), and P's own local components
    // cannot speak as a remote market.
    let forged = requestor_node
        .router
        .call(
            &format!("/net/{}{MARKET_PUBLIC_SERVICE}", provider_node.node_id),
            &AgreementApproved {
                agreement_id: agreement_id.clone(),
                approved_date: chrono::Utc::now(),
            },
        )
        .await
        .unwrap_err();
    assert_eq!(forged.code, ErrorCode::NotFound, "{forged:?}");
    let local = provider_node
        .router
        .call_raw(
            golem_bus::Caller::Local,
            MARKET_PUBLIC_SERVICE,
            AgreementApproved::NAME,
            serde_json::to_value(AgreementApproved {
                agreement_id: agreement_id.clone(),
                approved_date: chrono::Utc::now(),
            })
            .unwrap(),
        )
        .await
        .unwrap_err();
    assert_eq!(local.code, ErrorCode::Forbidden, "{local:?}");
    // Still pending on both sides.
    assert_eq!(
        requestor.agreement(&agreement_id).await.unwrap().state,
        AgreementState::Pending
    );
    // The requestor cancels; the provider learns it.
    requestor
        .cancel_agreement(&agreement_id, None)
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while provider.agreement(&agreement_id).await.unwrap().state != AgreementState::Cancelled {
        assert!(
            Instant::now() < deadline,
            "provider never saw the cancellation"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let error = provider
        .approve_agreement(&agreement_id, None)
        .await
        .unwrap_err();
    assert_eq!(error.status(), Some(410));

    requestor_node.stop().await;
    provider_node.stop().await;
}

#[actix_rt::test]
async fn requestor_restart_mid_flow_keeps_pending_events_and_agreement() {
    let provider_dir = tempfile::tempdir().unwrap();
    let requestor_dir = tempfile::tempdir().unwrap();
    let provider_node = start(provider_dir.path(), None).await;
    let bootstrap = p2p_address(&provider_node).await;
    let requestor_node = start(requestor_dir.path(), Some(&bootstrap)).await;
    let requestor_id = requestor_node.node_id;
    let provider = client(&provider_node);
    let (offer_id, demand_id, provider_counter) =
        negotiate_until_provider_counters(&provider, &client(&requestor_node), "svc-restart").await;

    // Restart R before it collected the provider's Draft.
    requestor_node.stop().await;
    let requestor_node = start(requestor_dir.path(), Some(&bootstrap)).await;
    assert_eq!(requestor_node.node_id, requestor_id);
    let requestor = client(&requestor_node);
    let draft = next_event(
        &requestor,
        Side::Demands,
        &demand_id,
        "the Draft kept across the restart",
        proposal_in_state(ProposalState::Draft),
    )
    .await;
    assert_eq!(draft.proposal_id, provider_counter);
    let negotiated = Negotiated {
        offer_id,
        demand_id,
        draft,
    };
    let agreement_id = agree(&provider, &requestor, &negotiated).await;

    // Restart R again: the approved agreement and its events are still there,
    // and R can still terminate it on P.
    requestor_node.stop().await;
    let requestor_node = start(requestor_dir.path(), Some(&bootstrap)).await;
    let requestor = client(&requestor_node);
    let agreement = requestor.agreement(&agreement_id).await.unwrap();
    assert_eq!(agreement.state, AgreementState::Approved);
    assert_eq!(agreement.app_session_id.as_deref(), Some("session-r"));
    let events = requestor
        .agreement_events(None, 0.0, 100, None)
        .await
        .unwrap();
    assert!(has_event(&events, &agreement_id, |event| matches!(
        event,
        AgreementOperationEvent::AgreementApprovedEvent { .. }
    )));
    requestor
        .terminate_agreement(&agreement_id, Some(&Reason::new("finished")))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let agreement = provider.agreement(&agreement_id).await.unwrap();
        if agreement.state == AgreementState::Terminated {
            break;
        }
        assert!(Instant::now() < deadline, "P never saw the termination");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let events = provider
        .agreement_events(None, 0.0, 100, None)
        .await
        .unwrap();
    assert!(has_event(&events, &agreement_id, |event| matches!(
        event,
        AgreementOperationEvent::AgreementTerminatedEvent {
            terminator: Terminator::Requestor,
            ..
        }
    )));
    requestor_node.stop().await;
    provider_node.stop().await;
}

/// The supervisor restarts a crashed market actor from sled: nothing the
/// requestor acknowledged is lost, the provider's view is untouched, and the
/// flow goes on (a terminate after the crash reaches the provider).
#[actix_rt::test]
async fn a_crashed_market_actor_restarts_from_sled_mid_agreement() {
    let provider_dir = tempfile::tempdir().unwrap();
    let requestor_dir = tempfile::tempdir().unwrap();
    let provider_node = start(provider_dir.path(), None).await;
    let bootstrap = p2p_address(&provider_node).await;
    let requestor_node = start(requestor_dir.path(), Some(&bootstrap)).await;
    let provider = client(&provider_node);
    let requestor = client(&requestor_node);
    let crash = |expected_restarts: u64| {
        let market = requestor_node.market.clone();
        async move {
            market.crash_for_test().await;
            let deadline = Instant::now() + Duration::from_secs(5);
            while market.restarts() < expected_restarts {
                assert!(
                    Instant::now() < deadline,
                    "the market actor never restarted"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    };

    // Mid-negotiation: R's actor dies before R collected the provider's Draft.
    let (offer_id, demand_id, provider_counter) =
        negotiate_until_provider_counters(&provider, &requestor, "svc-crash").await;
    crash(1).await;
    let draft = next_event(
        &requestor,
        Side::Demands,
        &demand_id,
        "the Draft kept across the crash",
        proposal_in_state(ProposalState::Draft),
    )
    .await;
    assert_eq!(draft.proposal_id, provider_counter);
    let negotiated = Negotiated {
        offer_id,
        demand_id,
        draft,
    };
    let agreement_id = agree(&provider, &requestor, &negotiated).await;

    // Right after the approval; a long-poll waiting on the actor meanwhile
    // outlives the restart, and the port reads the agreement without it.
    let waiting = {
        let requestor = requestor.clone();
        tokio::spawn(async move { requestor.agreement_events(None, 5.0, 100, None).await })
    };
    crash(2).await;
    waiting.await.unwrap().unwrap();
    let through_port =
        golem_daemon::ports::Agreements::agreement(&requestor_node.market, &agreement_id).unwrap();
    assert_eq!(through_port.state, AgreementState::Approved);

    let agreement = requestor.agreement(&agreement_id).await.unwrap();
    assert_eq!(agreement.state, AgreementState::Approved);
    assert_eq!(agreement.app_session_id.as_deref(), Some("session-r"));
    let listed = requestor
        .agreement_events(None, 0.0, 100, None)
        .await
        .unwrap();
    assert!(has_event(&listed, &agreement_id, |event| matches!(
        event,
        AgreementOperationEvent::AgreementApprovedEvent { .. }
    )));
    let on_provider = provider.agreement(&agreement_id).await.unwrap();
    assert_eq!(on_provider.state, AgreementState::Approved);

    requestor
        .terminate_agreement(&agreement_id, Some(&Reason::new("after the crash")))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let agreement = provider.agreement(&agreement_id).await.unwrap();
        if agreement.state == AgreementState::Terminated {
            break;
        }
        assert!(Instant::now() < deadline, "P never saw the termination");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(requestor_node.market.restarts(), 2);
    requestor_node.stop().await;
    provider_node.stop().await;
}

#[actix_rt::test]
async fn provider_and_requestor_on_one_node() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path(), None).await;
    let client = client(&node);
    let negotiated = negotiate(&client, &client, "svc-single").await;
    let agreement_id = agree(&client, &client, &negotiated).await;
    client
        .terminate_agreement(&agreement_id, None)
        .await
        .unwrap();
    assert_eq!(
        client.agreement(&agreement_id).await.unwrap().state,
        AgreementState::Terminated
    );
    node.stop().await;
}

#[actix_rt::test]
async fn rejections_reach_the_other_party() {
    let provider_dir = tempfile::tempdir().unwrap();
    let requestor_dir = tempfile::tempdir().unwrap();
    let provider_node = start(provider_dir.path(), None).await;
    let requestor_node = start(
        requestor_dir.path(),
        Some(&p2p_address(&provider_node).await),
    )
    .await;
    let provider = client(&provider_node);
    let requestor = client(&requestor_node);
    let negotiated = negotiate(&provider, &requestor, "svc-reject").await;

    // The provider rejects a confirmed agreement: the requestor's wait ends with 410.
    let agreement_id = requestor
        .create_agreement(&AgreementProposal::valid_for(
            &negotiated.draft.proposal_id,
            Duration::from_secs(600),
        ))
        .await
        .unwrap();
    requestor
        .confirm_agreement(&agreement_id, None)
        .await
        .unwrap();
    provider
        .reject_agreement(&agreement_id, Some(&Reason::new("busy")))
        .await
        .unwrap();
    let error = requestor
        .wait_for_approval(&agreement_id, 10.0)
        .await
        .unwrap_err();
    assert_eq!(error.status(), Some(410), "{error}");
    assert!(error.to_string().contains("Rejected"), "{error}");
    let events = requestor
        .agreement_events(None, 0.0, 100, None)
        .await
        .unwrap();
    assert!(events.iter().any(|event| matches!(
        event,
        AgreementOperationEvent::AgreementRejectedEvent { reason: Some(reason), .. }
            if reason.message == "busy"
    )));

    // A second demand negotiates again; the provider rejects the requestor's
    // counter and the requestor gets a ProposalRejectedEvent.
    let demand_id = requestor
        .subscribe_demand(&demand("svc-reject"))
        .await
        .unwrap();
    let initial = next_event(
        &requestor,
        Side::Demands,
        &demand_id,
        "the second Initial",
        proposal_in_state(ProposalState::Initial),
    )
    .await;
    let counter_id = requestor
        .counter_proposal(
            Side::Demands,
            &demand_id,
            &initial.proposal_id,
            &demand("svc-reject"),
        )
        .await
        .unwrap();
    next_event(
        &provider,
        Side::Offers,
        &negotiated.offer_id,
        "the second counter on P",
        proposal_in_state(ProposalState::Draft),
    )
    .await;
    provider
        .reject_proposal(
            Side::Offers,
            &negotiated.offer_id,
            &counter_id,
            Some(&Reason::new("too cheap")),
        )
        .await
        .unwrap();
    let rejected = next_event(
        &requestor,
        Side::Demands,
        &demand_id,
        "the rejection",
        |event| match event {
            MarketEvent::ProposalRejectedEvent {
                proposal_id,
                reason,
                ..
            } => Some((proposal_id.clone(), reason.clone())),
            _ => None,
        },
    )
    .await;
    assert_eq!(rejected.0, counter_id);
    assert_eq!(rejected.1.unwrap().message, "too cheap");
    let again = provider
        .reject_proposal(Side::Offers, &negotiated.offer_id, &counter_id, None)
        .await
        .unwrap_err();
    assert_eq!(again.status(), Some(410));

    requestor_node.stop().await;
    provider_node.stop().await;
}

/// Read SSE frames from `body` until `wanted` `event: offer` frames came
/// (or `within` passed); returns their data as JSON.
async fn sse_offers<B: AsRef<[u8]>>(
    body: &mut (impl futures::Stream<Item = reqwest::Result<B>> + Unpin),
    buffer: &mut String,
    wanted: usize,
    within: Duration,
) -> Vec<serde_json::Value> {
    use futures::StreamExt;
    let deadline = tokio::time::Instant::now() + within;
    let mut offers = Vec::new();
    while offers.len() < wanted {
        while let Some(end) = buffer.find("\n\n") {
            let frame: String = buffer.drain(..end + 2).collect();
            if frame.starts_with(':') {
                continue;
            }
            let mut lines = frame.lines();
            assert_eq!(lines.next(), Some("event: offer"), "{frame:?}");
            let data = lines.next().unwrap().strip_prefix("data: ").unwrap();
            offers.push(serde_json::from_str(data).unwrap());
        }
        if offers.len() >= wanted {
            break;
        }
        match tokio::time::timeout_at(deadline, body.next()).await {
            Ok(Some(chunk)) => {
                buffer.push_str(std::str::from_utf8(chunk.unwrap().as_ref()).unwrap())
            }
            Ok(None) | Err(_) => break,
        }
    }
    offers
}

#[actix_rt::test]
async fn scan_events_stream_as_sse_when_asked() {
    let provider_dir = tempfile::tempdir().unwrap();
    let requestor_dir = tempfile::tempdir().unwrap();
    let provider_node = start(provider_dir.path(), None).await;
    let requestor_node = start(
        requestor_dir.path(),
        Some(&p2p_address(&provider_node).await),
    )
    .await;
    let provider = client(&provider_node);
    let first_offer = provider.subscribe_offer(&offer("sse-scan")).await.unwrap();
    let http = reqwest::Client::new();
    let base = format!("http://{}/market-api/v1", requestor_node.api_addr);
    let scan: String = http
        .post(format!("{base}/scan"))
        .bearer_auth(APP_KEY)
        .json(&json!({"type": "offer", "constraints": "(golem.node.debug.subnet=sse-scan)"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let response = http
        .get(format!("{base}/scan/{scan}/events?timeout=60"))
        .bearer_auth(APP_KEY)
        .header("Accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"].to_str().unwrap(),
        "text/event-stream"
    );
    let mut body = Box::pin(response.bytes_stream());
    let mut buffer = String::new();
    let offers = sse_offers(&mut body, &mut buffer, 1, Duration::from_secs(30)).await;
    assert_eq!(offers.len(), 1, "the offer known at the start");
    assert_eq!(offers[0]["offerId"], first_offer.as_str());
    assert_eq!(
        offers[0]["properties"]["golem.node.debug.subnet"], "sse-scan",
        "flat properties, as in the JSON answer"
    );
    // One that arrives later comes down the same stream (an offer of the
    // scanning node itself: here a later offer of the other node was not
    // seen within 20 s even by a JSON long-poll, so it would test gossip).
    let second_offer = client(&requestor_node)
        .subscribe_offer(&offer("sse-scan"))
        .await
        .unwrap();
    let offers = sse_offers(&mut body, &mut buffer, 1, Duration::from_secs(30)).await;
    assert_eq!(offers.len(), 1, "the offer that arrived later");
    assert_eq!(offers[0]["offerId"], second_offer.as_str());
    assert_eq!(
        requestor_node.long_polls.open(),
        1,
        "the stream is a long-poll"
    );

    // Ending the scan ends the stream; so does the client leaving.
    http.delete(format!("{base}/scan/{scan}"))
        .bearer_auth(APP_KEY)
        .send()
        .await
        .unwrap();
    let rest = sse_offers(&mut body, &mut buffer, 1, Duration::from_secs(10)).await;
    assert!(rest.is_empty(), "{rest:?}");
    let deadline = Instant::now() + Duration::from_secs(1);
    while requestor_node.long_polls.open() > 0 {
        assert!(Instant::now() < deadline, "the stream still counts as open");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Without the header: the JSON array, as before.
    let scan: String = http
        .post(format!("{base}/scan"))
        .bearer_auth(APP_KEY)
        .json(&json!({"type": "offer", "constraints": "(golem.node.debug.subnet=sse-scan)"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let plain: serde_json::Value = http
        .get(format!("{base}/scan/{scan}/events?timeout=5"))
        .bearer_auth(APP_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(!plain.as_array().unwrap().is_empty(), "{plain}");
    requestor_node.stop().await;
    provider_node.stop().await;
}
