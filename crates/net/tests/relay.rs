//! Circuit relay: a node without any listen address reserves a slot on a
//! relay server and is then called by a third node through the relay.

mod common;

use std::time::Duration;

use common::{config, secret, wait_until, TestNode};
use golem_net::NetConfig;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_behind_a_relay_is_reachable() {
    common::init_tracing();
    let relay = TestNode::start(
        secret(),
        NetConfig {
            relay_server: true,
            ..config(Vec::new())
        },
    )
    .await;
    let relay_addr = relay.addr(true).await;
    let hidden = TestNode::start(
        secret(),
        NetConfig {
            listen: Vec::new(),
            relays: vec![relay_addr.clone()],
            ..config(vec![relay_addr.clone()])
        },
    )
    .await;
    let reserved = wait_until(Duration::from_secs(5), || async {
        let status = hidden.handle.status().await;
        !status.relay.reservations.is_empty() && !status.relay.relayed_addrs.is_empty()
    })
    .await;
    assert!(
        reserved,
        "no reservation: {:?}",
        hidden.handle.status().await.relay
    );
    assert!(relay.handle.status().await.relay.server);

    let caller = TestNode::start(secret(), config(vec![relay_addr])).await;
    let hidden_id = hidden.id();
    let reached = wait_until(Duration::from_secs(8), || async {
        caller
            .handle
            .call_with_timeout(
                hidden_id,
                "/public/echo",
                "Echo",
                json!(1),
                Duration::from_secs(2),
            )
            .await
            .is_ok()
    })
    .await;
    assert!(reached, "node behind the relay not reached");
    let seen = hidden.seen.lock().expect("lock").clone();
    assert_eq!(seen.last().map(|call| call.caller), Some(caller.id()));
}
