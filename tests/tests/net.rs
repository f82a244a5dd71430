//! End-to-end tests of the net: real `golem-daemon` processes on loopback that
//! know only one bootstrap node, calling and broadcasting through libp2p.
#![allow(clippy::unwrap_used)] // test helpers panic on setup failure by design

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures::StreamExt;
use golem_model::bus::{
    PingRemote, PublishBroadcast, ReceivedBroadcast, SubscribeBroadcasts, NET_SERVICE,
};
use golem_model::identity::{GetIdentity, IDENTITY_SERVICE};
use golem_model::{ErrorCode, NodeId};
use golem_tests::{eventually, Sandbox};

/// Start `count` daemons; all but the first know only the first as bootstrap.
fn network(sandbox: &mut Sandbox, count: usize) -> Vec<NodeId> {
    sandbox.daemon("n1").unwrap();
    let bootstrap = sandbox.daemons()[0].p2p_address().unwrap();
    for index in 2..=count {
        sandbox
            .daemon_with(&format!("n{index}"), &["--bootstrap", &bootstrap])
            .unwrap();
    }
    sandbox
        .daemons()
        .iter()
        .map(|daemon| daemon.node_id().unwrap().parse().unwrap())
        .collect()
}

#[tokio::test]
async fn five_daemons_with_one_bootstrap_reach_each_other_and_survive_a_restart() {
    let mut sandbox = Sandbox::new();
    let nodes = network(&mut sandbox, 5);
    let (n2, n3, n5) = (nodes[1], nodes[2], nodes[4]);

    // Node 2 and node 5 never bootstrapped from each other: the call goes through
    // Kademlia discovery, and node 5 sees node 2's authenticated NodeId.
    let bus2 = sandbox.daemons()[1].bus().await.unwrap();
    let result = bus2
        .call(NET_SERVICE, &PingRemote { node_id: n5 })
        .await
        .unwrap();
    assert_eq!(result.node_id, n5);
    assert_eq!(result.seen_as, n2);

    // Every node reaches every other node.
    for (from_index, _) in nodes.iter().enumerate() {
        let bus = sandbox.daemons()[from_index].bus().await.unwrap();
        for (to_index, to) in nodes.iter().enumerate() {
            if from_index == to_index {
                continue;
            }
            let pong = bus.call(NET_SERVICE, &PingRemote { node_id: *to }).await;
            assert_eq!(
                pong.unwrap().node_id,
                *to,
                "n{} -> n{}",
                from_index + 1,
                to_index + 1
            );
        }
    }

    // `/local/...` of another node is never reachable.
    let refused = bus2
        .call(&format!("/net/{n3}/local/identity"), &GetIdentity)
        .await
        .unwrap_err();
    assert_eq!(refused.code, ErrorCode::Forbidden, "{refused:?}");
    // Our own identity service stays reachable locally.
    assert_eq!(bus2.call(IDENTITY_SERVICE, &GetIdentity).await.unwrap(), n2);

    // Kill node 3 hard and restart it on a new port: the others find it again.
    let daemon3 = &mut sandbox.daemons()[2];
    daemon3.kill();
    daemon3.restart().unwrap();
    let bus5 = sandbox.daemons()[4].bus().await.unwrap();
    let pong = eventually(
        Duration::from_secs(30),
        "node 5 to reach restarted node 3",
        || {
            let bus5 = bus5.clone();
            async move {
                bus5.call(NET_SERVICE, &PingRemote { node_id: n3 })
                    .await
                    .ok()
            }
        },
    )
    .await
    .unwrap();
    assert_eq!(pong.seen_as, nodes[4]);
}

#[tokio::test]
async fn a_broadcast_reaches_every_other_node_exactly_once() {
    let mut sandbox = Sandbox::new();
    let nodes = network(&mut sandbox, 5);
    let topic = "e2e-broadcast";

    let mut receivers = Vec::new();
    for daemon in sandbox.daemons().iter() {
        let bus = daemon.bus().await.unwrap();
        let stream = bus.call_stream_raw(
            NET_SERVICE,
            "SubscribeBroadcasts",
            serde_json::to_value(SubscribeBroadcasts {
                topic: topic.into(),
            })
            .unwrap(),
        );
        receivers.push((bus, stream));
    }
    let publisher = sandbox.daemons()[1].bus().await.unwrap();

    // Warm up: subscriptions spread through the mesh within a few heartbeats (longer
    // on a loaded machine). Publish warm-ups until every node has received one.
    let mut ready = vec![false; receivers.len()];
    ready[1] = true; // the publisher does not receive its own broadcasts
    let warm_up_deadline = Instant::now() + Duration::from_secs(60);
    let mut attempt = 0;
    while ready.iter().any(|ready| !ready) {
        assert!(
            Instant::now() < warm_up_deadline,
            "the gossip mesh never reached every node: {ready:?}"
        );
        attempt += 1;
        let _ = publisher
            .call(
                NET_SERVICE,
                &PublishBroadcast {
                    topic: topic.into(),
                    payload: format!("warm-up-{attempt}"),
                },
            )
            .await;
        for (index, (_bus, stream)) in receivers.iter_mut().enumerate() {
            while let Ok(Some(Ok(_))) =
                tokio::time::timeout(Duration::from_millis(200), stream.next()).await
            {
                ready[index] = true;
            }
        }
    }
    // Drain late warm-ups, then publish the one broadcast this test is about.
    for (_bus, stream) in receivers.iter_mut() {
        while let Ok(Some(_)) =
            tokio::time::timeout(Duration::from_millis(300), stream.next()).await
        {}
    }
    let delivered_payload = "the-broadcast".to_string();
    publisher
        .call(
            NET_SERVICE,
            &PublishBroadcast {
                topic: topic.into(),
                payload: delivered_payload.clone(),
            },
        )
        .await
        .unwrap();

    let mut received: HashMap<usize, Vec<ReceivedBroadcast>> = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    for (index, (_bus, stream)) in receivers.iter_mut().enumerate() {
        if index == 1 {
            continue;
        }
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let item = tokio::time::timeout(remaining, stream.next()).await;
            let broadcast: ReceivedBroadcast =
                serde_json::from_value(item.expect("broadcast in time").unwrap().unwrap()).unwrap();
            let is_it = broadcast.payload == delivered_payload;
            received.entry(index).or_default().push(broadcast);
            if is_it {
                break;
            }
        }
    }
    // No duplicates follow.
    tokio::time::sleep(Duration::from_secs(1)).await;
    for (index, (_bus, stream)) in receivers.iter_mut().enumerate() {
        while let Ok(Some(Ok(extra))) =
            tokio::time::timeout(Duration::from_millis(50), stream.next()).await
        {
            let extra: ReceivedBroadcast = serde_json::from_value(extra).unwrap();
            received.entry(index).or_default().push(extra);
        }
    }
    for (index, node) in nodes.iter().enumerate() {
        let got = received.remove(&index).unwrap_or_default();
        if index == 1 {
            assert!(
                got.is_empty(),
                "the publisher received its own broadcast: {got:?}"
            );
            continue;
        }
        let matching: Vec<_> = got
            .iter()
            .filter(|b| b.payload == delivered_payload)
            .collect();
        assert_eq!(matching.len(), 1, "node {node} got {got:?}");
        assert_eq!(matching[0].origin, nodes[1]);
    }
}

#[tokio::test]
async fn an_unknown_node_fails_within_the_timeout_with_a_clear_error() {
    let sandbox = Sandbox::new();
    // The timeout is configurable (default 10 s); this node uses 1.5 s.
    let data_dir = sandbox.path().join("short-timeout");
    let mut short = golem_tests::DaemonProcess::start_with_env(
        "short-timeout",
        &data_dir,
        &[],
        &[("GOLEM_NET_CALL_TIMEOUT_MS", "1500")],
    )
    .unwrap();
    let bus = short.bus().await.unwrap();
    let unknown: NodeId = "0x1111111111111111111111111111111111111111"
        .parse()
        .unwrap();
    let started = Instant::now();
    let error = bus
        .call(NET_SERVICE, &PingRemote { node_id: unknown })
        .await
        .unwrap_err();
    let elapsed = started.elapsed();
    assert!(elapsed < Duration::from_secs(5), "took {elapsed:?}");
    assert!(
        matches!(
            error.code,
            ErrorCode::Timeout
                | ErrorCode::Unavailable
                | ErrorCode::NotFound
                | ErrorCode::NoEndpoint
        ),
        "{error:?}"
    );
    assert!(
        error
            .message
            .contains("0x1111111111111111111111111111111111111111"),
        "{}",
        error.message
    );
    short.stop().unwrap();
}
