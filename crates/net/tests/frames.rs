//! A raw libp2p peer (not a golem-net node) sends hostile frames to a node:
//! malformed JSON gets a BadRequest answer, an oversized frame is refused
//! (stream dropped), and the node keeps serving afterwards. Oversized calls
//! and replies through the API fail with PayloadTooLarge.

mod common;

use std::time::Duration;

use common::{config, network, secret, TestNode};
use futures::StreamExt;
use golem_model::{ErrorCode, GolemError};
use golem_net::libp2p::{self, request_response, swarm::SwarmEvent, Multiaddr, PeerId, Swarm};
use golem_net::protocol::{FrameCodec, WireReply, CALL_PROTOCOL};
use serde_json::json;

type RawPeer = Swarm<request_response::Behaviour<FrameCodec>>;

fn raw_peer() -> RawPeer {
    let keypair = golem_net::keypair_from_secret(secret()).expect("keypair");
    libp2p::SwarmBuilder::with_existing_identity(keypair)
        .with_tokio()
        .with_tcp(
            libp2p::tcp::Config::default(),
            libp2p::noise::Config::new,
            libp2p::yamux::Config::default,
        )
        .expect("tcp")
        .with_behaviour(|_| {
            request_response::Behaviour::with_codec(
                FrameCodec::new(16 * 1024 * 1024),
                [(CALL_PROTOCOL, request_response::ProtocolSupport::Outbound)],
                request_response::Config::default().with_request_timeout(Duration::from_secs(5)),
            )
        })
        .expect("behaviour")
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(30)))
        .build()
}

/// Send one raw frame and wait for its outcome: the reply bytes or the failure.
async fn exchange(peer: &mut RawPeer, target: PeerId, frame: Vec<u8>) -> Result<Vec<u8>, String> {
    let id = peer.behaviour_mut().send_request(&target, frame);
    let outcome = tokio::time::timeout(Duration::from_secs(8), async {
        loop {
            match peer.select_next_some().await {
                SwarmEvent::Behaviour(request_response::Event::Message {
                    message:
                        request_response::Message::Response {
                            request_id,
                            response,
                        },
                    ..
                }) if request_id == id => return Ok(response),
                SwarmEvent::Behaviour(request_response::Event::OutboundFailure {
                    request_id,
                    error,
                    ..
                }) if request_id == id => return Err(error.to_string()),
                _ => {}
            }
        }
    })
    .await;
    outcome.unwrap_or_else(|_| Err("no outcome".into()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_oversized_frames_are_refused_and_the_node_survives() {
    common::init_tracing();
    let node = TestNode::start(
        secret(),
        golem_net::NetConfig {
            max_message_size: 1024,
            ..config(Vec::new())
        },
    )
    .await;
    let addr: Multiaddr = node.addr(true).await;
    let target = node.handle.local_peer_id();
    let mut peer = raw_peer();
    peer.dial(addr).expect("dial");

    let reply = exchange(&mut peer, target, b"{not json".to_vec())
        .await
        .expect("an answer");
    let reply: WireReply = serde_json::from_slice(&reply).expect("a reply frame");
    assert_eq!(reply.map_err(|e| e.code), Err(ErrorCode::BadRequest));

    // Way over the node's frame limit (1 KiB payload + 64 KiB envelope).
    let outcome = exchange(&mut peer, target, vec![b'x'; 512 * 1024]).await;
    assert!(
        outcome.is_err(),
        "oversized frame was answered: {outcome:?}"
    );

    // The node still serves well-formed calls, from this peer too.
    let call =
        serde_json::to_vec(&json!({"address": "/public/echo", "message": "Echo", "payload": 7}))
            .expect("json");
    let reply = exchange(&mut peer, target, call).await.expect("an answer");
    let reply: WireReply = serde_json::from_slice(&reply).expect("a reply frame");
    assert_eq!(reply.expect("ok")["echo"], json!(7));

    let call = serde_json::to_vec(
        &json!({"address": "/local/identity", "message": "Get", "payload": null}),
    )
    .expect("json");
    let reply: WireReply =
        serde_json::from_slice(&exchange(&mut peer, target, call).await.expect("answer"))
            .expect("frame");
    assert_eq!(reply.map_err(|e| e.code), Err(ErrorCode::Forbidden));
    assert_eq!(node.seen_count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_calls_and_replies_fail_with_payload_too_large() {
    common::init_tracing();
    let small = golem_net::NetConfig {
        max_message_size: 1024,
        ..config(Vec::new())
    };
    let server = TestNode::start(secret(), small.clone()).await;
    let client = TestNode::start(
        secret(),
        golem_net::NetConfig {
            bootstrap: vec![server.addr(true).await],
            ..small
        },
    )
    .await;

    let big = json!("y".repeat(200 * 1024));
    let error: GolemError = client
        .handle
        .call(server.id(), "/public/echo", "Echo", big)
        .await
        .expect_err("too large");
    assert_eq!(error.code, ErrorCode::PayloadTooLarge);

    let error = client
        .handle
        .call(server.id(), "/public/echo", "Big", json!(200 * 1024))
        .await
        .expect_err("too large");
    assert_eq!(error.code, ErrorCode::PayloadTooLarge, "{error:?}");

    let error = client
        .handle
        .publish("t", vec![0; 2048])
        .await
        .expect_err("too large");
    assert_eq!(error.code, ErrorCode::PayloadTooLarge);
    client
        .handle
        .call(server.id(), "/public/echo", "Echo", json!("small"))
        .await
        .expect("small call works");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_to_self_obey_the_same_rules() {
    let nodes = network(1).await;
    let me = nodes[0].id();
    let reply = nodes[0]
        .handle
        .call(me, "/public/echo", "Echo", json!(1))
        .await
        .expect("self call");
    assert_eq!(reply["caller"], json!(me));
    let error = nodes[0]
        .handle
        .call(me, "/local/x", "X", json!(1))
        .await
        .expect_err("forbidden");
    assert_eq!(error.code, ErrorCode::Forbidden);
}
