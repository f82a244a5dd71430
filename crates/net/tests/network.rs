//! End-to-end behaviour of several real libp2p nodes on loopback in one
//! process: discovery through a single bootstrap node, remote calls and their
//! errors, the `/public/` rule, broadcasts and restarts.

mod common;

use std::time::{Duration, Instant};

use common::{config, network, secret, wait_until, TestNode};
use golem_model::{ErrorCode, NodeId};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_nodes_find_each_other_through_one_bootstrap_node() {
    common::init_tracing();
    let nodes = network(5).await;
    let ids: Vec<NodeId> = nodes.iter().map(TestNode::id).collect();

    // Node 2 calls node 5: they were never given each other's address.
    let reply = nodes[1]
        .handle
        .call(ids[4], "/public/echo", "Echo", json!({"n": 42}))
        .await
        .expect("node 2 reaches node 5");
    assert_eq!(reply["node"], json!(ids[4]));
    assert_eq!(reply["caller"], json!(ids[1]));
    assert_eq!(reply["echo"], json!({"n": 42}));
    let seen = nodes[4].seen.lock().expect("lock").clone();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].caller, ids[1]);
    assert_eq!(seen[0].address, "/public/echo");

    // Every node reaches every other one.
    for (from, node) in nodes.iter().enumerate() {
        for (to, id) in ids.iter().enumerate() {
            if from != to {
                let reply = node
                    .handle
                    .call(*id, "/public/echo", "Echo", json!(null))
                    .await;
                let reply =
                    reply.unwrap_or_else(|e| panic!("node {} -> node {}: {e:?}", from + 1, to + 1));
                assert_eq!(reply["caller"], json!(ids[from]));
            }
        }
    }

    // And each ends up knowing all the others in its routing table.
    for node in &nodes {
        let found = wait_until(Duration::from_secs(5), || async {
            let status = node.handle.status().await;
            ids.iter().filter(|id| **id != node.id()).all(|id| {
                status
                    .known_peers
                    .iter()
                    .any(|peer| peer.node_id == Some(*id))
            })
        })
        .await;
        assert!(
            found,
            "node {} does not know every peer: {:?}",
            node.id(),
            node.handle.status().await.known_peers
        );
    }
    for node in nodes {
        node.handle.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broadcast_reaches_every_subscriber_exactly_once() {
    common::init_tracing();
    let nodes = network(5).await;
    let topic = "golem/market/subnet-test";
    let mut receivers = Vec::new();
    for node in &nodes {
        receivers.push(node.handle.subscribe(topic).await.expect("subscribe"));
    }
    let publisher = &nodes[1];
    // Wait until the publisher sees the other four subscribed.
    let ready = wait_until(Duration::from_secs(8), || async {
        let status = publisher.handle.status().await;
        status
            .topics
            .iter()
            .any(|t| t.topic == topic && t.peers.len() == 4)
    })
    .await;
    assert!(
        ready,
        "subscriptions did not propagate: {:?}",
        publisher.handle.status().await.topics
    );

    publisher
        .handle
        .publish(topic, b"offer #1".to_vec())
        .await
        .expect("publish");
    for (index, receiver) in receivers.iter_mut().enumerate() {
        if index == 1 {
            continue;
        }
        let message = tokio::time::timeout(Duration::from_secs(5), receiver.recv())
            .await
            .unwrap_or_else(|_| panic!("node {} got nothing", index + 1))
            .expect("subscription open");
        assert_eq!(message.origin, publisher.id());
        assert_eq!(message.topic, topic);
        assert_eq!(message.payload, b"offer #1");
    }
    // No duplicates, and the publisher does not hear itself.
    tokio::time::sleep(Duration::from_millis(500)).await;
    for receiver in receivers.iter_mut() {
        assert!(
            receiver.try_recv().is_err(),
            "duplicate or echoed broadcast"
        );
    }
    for node in nodes {
        node.handle.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_public_addresses_are_refused_without_reaching_the_handler() {
    common::init_tracing();
    let nodes = network(2).await;
    let target = nodes[0].id();
    for address in [
        "/local/identity",
        "/private/x",
        "/public/../local/identity",
        "public/market",
    ] {
        let error = nodes[1]
            .handle
            .call(target, address, "GetIdentity", json!(null))
            .await
            .expect_err("refused");
        assert_eq!(error.code, ErrorCode::Forbidden, "{address}: {error:?}");
        assert!(error.message.contains("not public"), "{error:?}");
    }
    assert_eq!(nodes[0].seen_count(), 0, "the handler was invoked");
    // The connection is still fine for public calls.
    nodes[1]
        .handle
        .call(target, "/public/echo", "Echo", json!(1))
        .await
        .expect("public call works");
    assert_eq!(nodes[0].seen_count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calling_an_unknown_node_fails_within_the_timeout() {
    common::init_tracing();
    let nodes = network(3).await;
    let unknown = golem_net::node_id_of_secret(secret()).expect("node id");
    let started = Instant::now();
    let error = nodes[1]
        .handle
        .call_with_timeout(
            unknown,
            "/public/echo",
            "Echo",
            json!(null),
            Duration::from_secs(2),
        )
        .await
        .expect_err("nobody answers");
    let elapsed = started.elapsed();
    assert!(elapsed <= Duration::from_millis(2300), "took {elapsed:?}");
    assert!(
        matches!(error.code, ErrorCode::Unavailable | ErrorCode::Timeout),
        "{error:?}"
    );
    assert!(error.message.contains(&unknown.to_string()), "{error:?}");

    // Also with the default timeout of the node's configuration.
    let node = TestNode::start(
        secret(),
        golem_net::NetConfig {
            call_timeout: Duration::from_secs(1),
            ..config(Vec::new())
        },
    )
    .await;
    let started = Instant::now();
    let error = node
        .handle
        .call(unknown, "/public/echo", "Echo", json!(null))
        .await
        .expect_err("alone");
    assert!(
        started.elapsed() <= Duration::from_millis(1300),
        "took {:?}",
        started.elapsed()
    );
    assert!(error.message.contains(&unknown.to_string()), "{error:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handler_errors_travel_back_unchanged() {
    common::init_tracing();
    let nodes = network(2).await;
    let error = nodes[1]
        .handle
        .call(nodes[0].id(), "/public/agreement", "Missing", json!(null))
        .await
        .expect_err("not found");
    assert_eq!(error.code, ErrorCode::NotFound);
    assert_eq!(error.message, "nothing at /public/agreement");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_is_reached_again() {
    common::init_tracing();
    let mut nodes = network(3).await;
    let (caller, target_id) = (nodes[2].handle.clone(), nodes[1].id());
    caller
        .call(target_id, "/public/echo", "Echo", json!(1))
        .await
        .expect("before restart");

    let old = nodes.remove(1);
    let (secret, old_addr) = (old.secret, old.addr(false).await);
    old.handle.shutdown().await;
    let bootstrap = nodes[0].addr(true).await;
    let restarted = TestNode::start(secret, config(vec![bootstrap])).await;
    assert_eq!(restarted.id(), target_id);
    assert_ne!(restarted.addr(false).await, old_addr, "expected a new port");

    let reached = wait_until(Duration::from_secs(8), || async {
        caller
            .call_with_timeout(
                target_id,
                "/public/echo",
                "Echo",
                json!(2),
                Duration::from_secs(2),
            )
            .await
            .is_ok()
    })
    .await;
    assert!(reached, "restarted node not reached again");
    assert_eq!(restarted.seen_count(), 1);
    // The bootstrap node reaches it too.
    nodes[0]
        .handle
        .call(target_id, "/public/echo", "Echo", json!(3))
        .await
        .expect("bootstrap node reaches it");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_reports_bound_addresses_and_peers() {
    common::init_tracing();
    let nodes = network(2).await;
    let connected = wait_until(Duration::from_secs(5), || async {
        nodes[1]
            .handle
            .status()
            .await
            .connected
            .iter()
            .any(|p| p.node_id == Some(nodes[0].id()))
    })
    .await;
    assert!(connected, "bootstrap connection missing");
    let status = nodes[1].handle.status().await;
    assert_eq!(status.node_id, nodes[1].id());
    assert!(status
        .listen_addrs
        .iter()
        .all(|a| a.starts_with("/ip4/127.0.0.1/tcp/") && !a.ends_with("/tcp/0")));
    assert!(status
        .connected
        .iter()
        .any(|p| p.node_id == Some(nodes[0].id())));
    let json = serde_json::to_value(&status).expect("serializes");
    assert!(json["peer_id"].is_string());
    let mut from_status: Vec<NodeId> = status.connected.iter().filter_map(|p| p.node_id).collect();
    let mut cheap = nodes[1].handle.connected_nodes().await;
    from_status.sort_by_key(|id| id.to_string());
    cheap.sort_by_key(|id| id.to_string());
    assert_eq!(
        cheap, from_status,
        "connected_nodes is the status's connected NodeIds"
    );
    let handle = nodes[1].handle.clone();
    nodes.into_iter().for_each(drop);
    handle.clone().shutdown().await;
    assert!(
        handle.connected_nodes().await.is_empty(),
        "a stopped node has no connected peers"
    );
    let error = handle
        .call(NodeId::from_bytes([1; 20]), "/public/x", "X", json!(null))
        .await
        .expect_err("stopped");
    assert_eq!(error.code, ErrorCode::Unavailable);
}
