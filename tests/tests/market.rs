//! End-to-end tests of the market: real `golem-daemon` processes negotiating
//! over libp2p through the Golem Market REST API.
#![allow(clippy::unwrap_used)] // test helpers panic on setup failure by design

use std::collections::HashMap;
use std::time::{Duration, Instant};

use golem_client::market::Side;
use golem_client::GolemClient;
use golem_model::market::{
    AgreementOperationEvent, AgreementProposal, AgreementState, DemandOfferBase, MarketEvent,
    Proposal, ProposalState, Reason, Terminator,
};
use golem_tests::Sandbox;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::json;

fn offer(subnet: &str, name: &str) -> DemandOfferBase {
    DemandOfferBase {
        properties: json!({
            "golem.node.debug.subnet": subnet,
            "golem.node.id.name": name,
            "golem.inf.cpu.threads": 2,
            "golem.runtime.name": "vm",
            "golem.com.pricing.model": "linear",
            "golem.com.pricing.model.linear.coeffs": [0.1, 0.1, 0.0],
            "golem.com.usage.vector": ["golem.usage.cpu_sec", "golem.usage.duration_sec"],
        }),
        constraints: format!("(&(golem.node.debug.subnet={subnet})(golem.srv.comp.expiration>0))"),
    }
}

fn demand(subnet: &str) -> DemandOfferBase {
    DemandOfferBase {
        properties: json!({
            // An hour ahead, as clients ask; the market refuses expiries beyond its cap.
            "golem": {"node": {"debug": {"subnet": subnet}}, "srv": {"comp": {"expiration": chrono::Utc::now().timestamp_millis() + 3_600_000}}},
        }),
        constraints: format!(
            "(&(golem.node.debug.subnet={subnet})\n\t(golem.inf.cpu.threads>=1)\n\t(golem.runtime.name=vm))"
        ),
    }
}

async fn next_proposal(
    client: &GolemClient,
    side: Side,
    subscription: &str,
    state: ProposalState,
) -> Proposal {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        for event in client
            .market_events(side, subscription, 1.0, 10)
            .await
            .unwrap()
        {
            if let MarketEvent::ProposalEvent { proposal, .. } = event {
                if proposal.state == state {
                    return proposal;
                }
            }
        }
        assert!(
            Instant::now() < deadline,
            "no {state:?} proposal on {subscription}"
        );
    }
}

async fn next_agreement_event(client: &GolemClient, offer_id: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        for event in client
            .market_events(Side::Offers, offer_id, 1.0, 10)
            .await
            .unwrap()
        {
            if let MarketEvent::AgreementEvent { agreement, .. } = event {
                assert_eq!(agreement.state, AgreementState::Pending);
                return agreement.agreement_id;
            }
        }
        assert!(Instant::now() < deadline, "no AgreementEvent on {offer_id}");
    }
}

#[tokio::test]
async fn two_daemons_negotiate_an_agreement_and_survive_a_requestor_restart() {
    let mut sandbox = Sandbox::new();
    sandbox.provider_and_requestor().unwrap();
    let provider = sandbox.daemons()[0].client();
    let provider_id = sandbox.daemons()[0].node_id().unwrap();
    let requestor = sandbox.daemons()[1].client();
    let subnet = "e2e-pair";

    let offer_id = provider.subscribe_offer(&offer(subnet, "p")).await.unwrap();
    let demand_id = requestor.subscribe_demand(&demand(subnet)).await.unwrap();
    let initial = next_proposal(
        &requestor,
        Side::Demands,
        &demand_id,
        ProposalState::Initial,
    )
    .await;
    assert_eq!(initial.issuer_id.to_string(), provider_id);
    assert_eq!(
        initial.properties.get("golem.node.id.name"),
        Some(&json!("p"))
    );

    let counter_id = requestor
        .counter_proposal(
            Side::Demands,
            &demand_id,
            &initial.proposal_id,
            &demand(subnet),
        )
        .await
        .unwrap();
    let received = next_proposal(&provider, Side::Offers, &offer_id, ProposalState::Draft).await;
    assert_eq!(received.proposal_id, counter_id);
    // The nested demand arrived flat.
    assert_eq!(
        received.properties.get("golem.node.debug.subnet"),
        Some(&json!(subnet))
    );
    let draft_id = provider
        .counter_proposal(Side::Offers, &offer_id, &counter_id, &offer(subnet, "p"))
        .await
        .unwrap();

    // Restart the requestor before it collects the Draft: the event waits for it.
    sandbox.daemons()[1].restart().unwrap();
    let requestor = sandbox.daemons()[1].client();
    let draft = next_proposal(&requestor, Side::Demands, &demand_id, ProposalState::Draft).await;
    assert_eq!(draft.proposal_id, draft_id);
    assert_eq!(draft.prev_proposal_id.as_deref(), Some(counter_id.as_str()));

    let agreement_id = requestor
        .create_agreement(&AgreementProposal::valid_for(
            &draft_id,
            Duration::from_secs(3600),
        ))
        .await
        .unwrap();
    requestor
        .confirm_agreement(&agreement_id, Some("e2e-session"))
        .await
        .unwrap();
    assert_eq!(
        next_agreement_event(&provider, &offer_id).await,
        agreement_id
    );
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
    let on_requestor = requestor.agreement(&agreement_id).await.unwrap();
    let on_provider = provider.agreement(&agreement_id).await.unwrap();
    assert_eq!(on_requestor.state, AgreementState::Approved);
    assert_eq!(on_provider.state, AgreementState::Approved);
    assert_eq!(on_requestor.demand, on_provider.demand);
    assert_eq!(on_requestor.offer, on_provider.offer);
    assert_eq!(on_requestor.valid_to, on_provider.valid_to);
    assert_eq!(on_requestor.demand.demand_id, demand_id);

    // Restart the requestor again: the approved agreement is intact.
    sandbox.daemons()[1].restart().unwrap();
    let requestor = sandbox.daemons()[1].client();
    assert_eq!(
        requestor.agreement(&agreement_id).await.unwrap().state,
        AgreementState::Approved
    );
    let reason: Reason = serde_json::from_value(json!({
        "message": "Successfully finished all work",
        "golem.requestor.code": "Success"
    }))
    .unwrap();
    requestor
        .terminate_agreement(&agreement_id, Some(&reason))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while provider.agreement(&agreement_id).await.unwrap().state != AgreementState::Terminated {
        assert!(
            Instant::now() < deadline,
            "the provider never saw the termination"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for client in [&requestor, &provider] {
        let events = client.agreement_events(None, 1.0, 100, None).await.unwrap();
        let kinds: Vec<&str> = events
            .iter()
            .map(|event| match event {
                AgreementOperationEvent::AgreementApprovedEvent { .. } => "approved",
                AgreementOperationEvent::AgreementTerminatedEvent {
                    terminator: Terminator::Requestor,
                    reason: Some(reason),
                    ..
                } if reason.extra["golem.requestor.code"] == "Success" => "terminated",
                _ => "other",
            })
            .collect();
        assert_eq!(kinds, ["approved", "terminated"]);
    }
    requestor
        .unsubscribe(Side::Demands, &demand_id)
        .await
        .unwrap();
    provider.unsubscribe(Side::Offers, &offer_id).await.unwrap();
}

/// The provider side of an agent: counter every Draft the requestor sends and
/// approve every agreement.
async fn provider_agent(client: GolemClient, offer_id: String, subnet: String) {
    loop {
        let Ok(events) = client.market_events(Side::Offers, &offer_id, 2.0, 10).await else {
            return;
        };
        for event in events {
            match event {
                MarketEvent::ProposalEvent { proposal, .. } => {
                    client
                        .counter_proposal(
                            Side::Offers,
                            &offer_id,
                            &proposal.proposal_id,
                            &offer(&subnet, "agent"),
                        )
                        .await
                        .unwrap();
                }
                MarketEvent::AgreementEvent { agreement, .. } => {
                    client
                        .approve_agreement(&agreement.agreement_id, None)
                        .await
                        .unwrap();
                }
                MarketEvent::ProposalRejectedEvent { .. } => {}
            }
        }
    }
}

#[tokio::test]
async fn nine_providers_reach_agreements_while_a_tenth_never_answers() {
    let mut sandbox = Sandbox::new();
    // The claim: the nine negotiations do not wait for the frozen provider,
    // i.e. they all end while the requestor's call to it is still pending.
    // That call ends at the market's timeout (4 s by default, set here far
    // above what nine negotiations take) or, earlier, when the net layer's
    // ping (every 10 s) gives the frozen peer's connection up; the net call
    // timeout is raised above the market's so that it is not what ends it.
    let remote_timeout = Duration::from_secs(20);
    let config = sandbox.path().join("requestor.toml");
    std::fs::write(
        &config,
        format!(
            "net-call-timeout-ms = {}\n[market]\nremote-timeout-ms = {}\n",
            remote_timeout.as_millis() * 2,
            remote_timeout.as_millis()
        ),
    )
    .unwrap();
    sandbox
        .daemon_with("r", &["--config", config.to_str().unwrap()])
        .unwrap();
    let bootstrap = sandbox.daemons()[0].p2p_address().unwrap();
    // The providers get the same generous timeouts: their counters to the
    // requestor are not what this test measures, and a slow disk (sled
    // flushes) on a loaded machine must not fail them.
    for index in 1..=10 {
        sandbox
            .daemon_with(
                &format!("p{index}"),
                &[
                    "--bootstrap",
                    &bootstrap,
                    "--config",
                    config.to_str().unwrap(),
                ],
            )
            .unwrap();
    }
    // The requestor logs warnings about the frozen provider; no errors expected.
    let subnet = "e2e-ten";
    let requestor = sandbox.daemons()[0].client();
    let mut provider_of: HashMap<String, usize> = HashMap::new();
    let mut agents = Vec::new();
    for index in 1..=10 {
        let daemon = &sandbox.daemons()[index];
        let client = daemon.client();
        let offer_id = client
            .subscribe_offer(&offer(subnet, &daemon.name))
            .await
            .unwrap();
        provider_of.insert(daemon.node_id().unwrap(), index);
        if index != 10 {
            agents.push(tokio::spawn(provider_agent(
                client,
                offer_id,
                subnet.to_string(),
            )));
        }
    }

    let demand_id = requestor.subscribe_demand(&demand(subnet)).await.unwrap();
    let mut initials: Vec<Proposal> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while initials.len() < 10 {
        assert!(
            Instant::now() < deadline,
            "only {} offers matched",
            initials.len()
        );
        for event in requestor
            .market_events(Side::Demands, &demand_id, 1.0, 20)
            .await
            .unwrap()
        {
            if let MarketEvent::ProposalEvent { proposal, .. } = event {
                assert_eq!(proposal.state, ProposalState::Initial);
                initials.push(proposal);
            }
        }
    }

    // Freeze the tenth provider's daemon: its connection stays open, but it
    // never answers again.
    let frozen = &sandbox.daemons()[10];
    let frozen_pid = Pid::from_raw(frozen.pid().unwrap() as i32);
    kill(frozen_pid, Signal::SIGSTOP).unwrap();

    let started = Instant::now();
    let mut counters = Vec::new();
    for initial in &initials {
        let requestor = requestor.clone();
        let demand_id = demand_id.clone();
        let proposal_id = initial.proposal_id.clone();
        let index = provider_of[&initial.issuer_id.to_string()];
        counters.push(tokio::spawn(async move {
            let result = requestor
                .counter_proposal(Side::Demands, &demand_id, &proposal_id, &demand(subnet))
                .await;
            (
                index,
                result.map_err(|error| (error.status(), error.to_string())),
                started.elapsed(),
            )
        }));
    }

    let frozen_at = initials
        .iter()
        .position(|initial| provider_of[&initial.issuer_id.to_string()] == 10)
        .unwrap();
    let frozen_counter = counters.remove(frozen_at);

    // Turn every Draft into an approved agreement, one task per provider,
    // while the counter to the frozen provider is still waiting.
    let mut approvals = Vec::new();
    let mut approved_by = Vec::new();
    while approved_by.len() < 9 {
        assert!(
            !frozen_counter.is_finished(),
            "the counter to the frozen provider ended after {:?}, before the nine were approved (only {approved_by:?})",
            started.elapsed()
        );
        for event in requestor
            .market_events(Side::Demands, &demand_id, 0.5, 20)
            .await
            .unwrap()
        {
            if let MarketEvent::ProposalEvent { proposal, .. } = event {
                assert_eq!(proposal.state, ProposalState::Draft);
                let requestor = requestor.clone();
                let index = provider_of[&proposal.issuer_id.to_string()];
                approvals.push(tokio::spawn(async move {
                    let agreement_id = requestor
                        .create_agreement(&AgreementProposal::valid_for(
                            &proposal.proposal_id,
                            Duration::from_secs(600),
                        ))
                        .await
                        .unwrap();
                    requestor
                        .confirm_agreement(&agreement_id, None)
                        .await
                        .unwrap();
                    requestor
                        .wait_for_approval(&agreement_id, 10.0)
                        .await
                        .unwrap();
                    (index, started.elapsed())
                }));
            }
        }
        while let Some(done) = approvals.iter().position(|task| task.is_finished()) {
            approved_by.push(approvals.remove(done).await.unwrap());
        }
    }
    let last_approval = approved_by.iter().map(|(_, at)| *at).max().unwrap();
    let mut approved: Vec<usize> = approved_by.iter().map(|(index, _)| *index).collect();
    approved.sort();
    assert_eq!(approved, (1..=9).collect::<Vec<_>>());
    // Nobody waited on the frozen provider: its counter is still pending.
    assert!(
        !frozen_counter.is_finished(),
        "the frozen provider's counter ended before the nine approvals ({last_approval:?})"
    );
    for counter in counters {
        let (index, result, _) = counter.await.unwrap();
        assert!(result.is_ok(), "counter to p{index} failed: {result:?}");
    }

    // The counter to the frozen provider fails as a timeout, no later than
    // the market's timeout (plus slack for a loaded machine).
    let (index, result, failed_at) = frozen_counter.await.unwrap();
    assert_eq!(index, 10);
    let (status, message) = result.expect_err("the frozen provider answered?");
    assert_eq!(status, Some(408), "{message}");
    assert!(
        failed_at < remote_timeout + Duration::from_secs(5),
        "the counter to the frozen provider took {failed_at:?}"
    );
    assert!(last_approval < failed_at);
    eprintln!(
        "nine providers approved within {last_approval:?}; the frozen one failed after {failed_at:?}"
    );

    kill(frozen_pid, Signal::SIGCONT).unwrap();
    for agent in agents {
        agent.abort();
    }
}

fn percentile(samples: &mut [Duration], fraction: f64) -> Duration {
    samples.sort();
    let index = ((samples.len() as f64 - 1.0) * fraction).round() as usize;
    samples[index]
}

fn report(name: &str, samples: &mut [Duration]) {
    let median = percentile(samples, 0.5);
    let p90 = percentile(samples, 0.9);
    let max = *samples.iter().max().unwrap();
    println!(
        "| {name:<58} | {:>4} | {:>9.3} | {:>9.3} | {:>9.3} |",
        samples.len(),
        median.as_secs_f64() * 1e3,
        p90.as_secs_f64() * 1e3,
        max.as_secs_f64() * 1e3
    );
}

/// Time from `POST /demands` to the first event, the offer being known.
async fn demand_to_first_proposal(
    requestor: &GolemClient,
    subnet: &str,
    rounds: usize,
) -> Vec<Duration> {
    let mut samples = Vec::new();
    for _ in 0..rounds {
        let started = Instant::now();
        let demand_id = requestor.subscribe_demand(&demand(subnet)).await.unwrap();
        let events = requestor
            .market_events(Side::Demands, &demand_id, 5.0, 1)
            .await
            .unwrap();
        samples.push(started.elapsed());
        assert_eq!(events.len(), 1);
        requestor
            .unsubscribe(Side::Demands, &demand_id)
            .await
            .unwrap();
    }
    samples
}

/// Measurements behind `scripts/bench/market.sh` (run with `--ignored`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run through scripts/bench/market.sh"]
async fn bench_market_latencies() {
    let rounds: usize = std::env::var("MARKET_BENCH_ROUNDS")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(30);
    let mut sandbox = Sandbox::new();
    sandbox.provider_and_requestor().unwrap();
    let provider = sandbox.daemons()[0].client();
    let requestor = sandbox.daemons()[1].client();
    println!(
        "| {:<58} | {:>4} | {:>9} | {:>9} | {:>9} |",
        "measure", "n", "median ms", "p90 ms", "max ms"
    );
    println!(
        "|{:-<60}|{:-<6}|{:-<11}|{:-<11}|{:-<11}|",
        "", "", "", "", ""
    );

    // One node: provider and requestor on P.
    let offer_id = provider
        .subscribe_offer(&offer("bench-one", "p"))
        .await
        .unwrap();
    report(
        "demand -> first proposal, one node",
        &mut demand_to_first_proposal(&provider, "bench-one", rounds).await,
    );
    provider.unsubscribe(Side::Offers, &offer_id).await.unwrap();

    // Two daemons, the offer already known on R.
    let offer_id = provider
        .subscribe_offer(&offer("bench-two", "p"))
        .await
        .unwrap();
    let warmup = requestor
        .subscribe_demand(&demand("bench-two"))
        .await
        .unwrap();
    next_proposal(&requestor, Side::Demands, &warmup, ProposalState::Initial).await;
    requestor.unsubscribe(Side::Demands, &warmup).await.unwrap();
    report(
        "demand -> first proposal, two daemons, offer known",
        &mut demand_to_first_proposal(&requestor, "bench-two", rounds).await,
    );

    // Offer subscribed on P -> visible as a proposal on R (broadcast).
    let demand_id = requestor
        .subscribe_demand(&demand("bench-spread"))
        .await
        .unwrap();
    // Let R's subscription to the subnet's topic reach P's mesh.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut samples = Vec::new();
    for _ in 0..rounds {
        let poll = {
            let requestor = requestor.clone();
            let demand_id = demand_id.clone();
            tokio::spawn(async move {
                let events = requestor
                    .market_events(Side::Demands, &demand_id, 10.0, 1)
                    .await
                    .unwrap();
                (Instant::now(), events)
            })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        let started = Instant::now();
        let spread_offer = provider
            .subscribe_offer(&offer("bench-spread", "p"))
            .await
            .unwrap();
        let (seen, events) = poll.await.unwrap();
        assert_eq!(events.len(), 1, "{events:?}");
        samples.push(seen - started);
        provider
            .unsubscribe(Side::Offers, &spread_offer)
            .await
            .unwrap();
    }
    report("offer on P -> proposal on R", &mut samples);

    // Counter -> Draft -> agreement Approved, with an instant provider agent.
    let agent = tokio::spawn(provider_agent(
        provider.clone(),
        offer_id.clone(),
        "bench-two".to_string(),
    ));
    let mut samples = Vec::new();
    for _ in 0..rounds {
        let demand_id = requestor
            .subscribe_demand(&demand("bench-two"))
            .await
            .unwrap();
        let initial = next_proposal(
            &requestor,
            Side::Demands,
            &demand_id,
            ProposalState::Initial,
        )
        .await;
        let started = Instant::now();
        requestor
            .counter_proposal(
                Side::Demands,
                &demand_id,
                &initial.proposal_id,
                &demand("bench-two"),
            )
            .await
            .unwrap();
        let draft =
            next_proposal(&requestor, Side::Demands, &demand_id, ProposalState::Draft).await;
        let agreement_id = requestor
            .create_agreement(&AgreementProposal::valid_for(
                &draft.proposal_id,
                Duration::from_secs(600),
            ))
            .await
            .unwrap();
        requestor
            .confirm_agreement(&agreement_id, None)
            .await
            .unwrap();
        requestor
            .wait_for_approval(&agreement_id, 10.0)
            .await
            .unwrap();
        samples.push(started.elapsed());
        requestor
            .terminate_agreement(&agreement_id, None)
            .await
            .unwrap();
        requestor
            .unsubscribe(Side::Demands, &demand_id)
            .await
            .unwrap();
    }
    report("counter -> Draft -> Approved, two daemons", &mut samples);
    agent.abort();
}
