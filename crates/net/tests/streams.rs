//! Reply streams: many items pulled chunk by chunk, errors inside the stream,
//! the unary fallback, and the `/public/` rule for stream calls.

mod common;

use std::time::Duration;

use common::{config, secret};
use futures::StreamExt;
use golem_model::{ErrorCode, GolemError};
use golem_net::{InboundCall, InboundStreamHandler, NetHandle};
use serde_json::{json, Value};

fn counting_handler() -> InboundStreamHandler {
    std::sync::Arc::new(|call: InboundCall| {
        let n = call.payload.as_u64().unwrap_or(0);
        let fail = call.message == "CountThenFail";
        let caller = call.caller;
        futures::stream::iter(0..n)
            .then(move |i| async move {
                if i % 50 == 0 {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Ok(json!({"i": i, "caller": caller}))
            })
            .chain(futures::stream::iter(
                fail.then(|| Err(GolemError::conflict("stopped on purpose"))),
            ))
            .boxed()
    })
}

async fn pair() -> (NetHandle, NetHandle) {
    let handler =
        golem_net::handler(|call: InboundCall| async move { Ok(json!({"unary": call.payload})) });
    let server = golem_net::start_with_streams(
        secret(),
        config(Vec::new()),
        handler.clone(),
        Some(counting_handler()),
    )
    .await
    .expect("server");
    let status = server.status().await;
    let addr: golem_net::Multiaddr = status.listen_addrs[0].parse().expect("addr");
    let addr = addr.with(golem_net::libp2p::multiaddr::Protocol::P2p(
        server.local_peer_id(),
    ));
    let client = golem_net::start(secret(), config(vec![addr]), handler)
        .await
        .expect("client");
    (server, client)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_reply_stream_arrives_in_order() {
    common::init_tracing();
    let (server, client) = pair().await;
    let items: Vec<Result<Value, GolemError>> = client
        .call_stream(server.local_node_id(), "/public/exec", "Count", json!(500))
        .await
        .expect("stream opened")
        .collect()
        .await;
    assert_eq!(items.len(), 500);
    for (i, item) in items.into_iter().enumerate() {
        let item = item.expect("item");
        assert_eq!(item["i"], json!(i));
        assert_eq!(item["caller"], json!(client.local_node_id()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_inside_a_stream_and_empty_streams() {
    common::init_tracing();
    let (server, client) = pair().await;
    let items: Vec<_> = client
        .call_stream(
            server.local_node_id(),
            "/public/exec",
            "CountThenFail",
            json!(3),
        )
        .await
        .expect("stream opened")
        .collect()
        .await;
    assert_eq!(items.len(), 4);
    assert_eq!(
        items[3].clone().map_err(|e| e.code),
        Err(ErrorCode::Conflict)
    );

    let empty: Vec<_> = client
        .call_stream(server.local_node_id(), "/public/exec", "Count", json!(0))
        .await
        .expect("stream opened")
        .collect()
        .await;
    assert!(empty.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_calls_fall_back_to_the_unary_handler_and_obey_the_public_rule() {
    common::init_tracing();
    let (server, client) = pair().await;
    // The client has no stream handler: the server calls it and gets one item.
    let items: Vec<_> = server
        .call_stream(client.local_node_id(), "/public/x", "X", json!(5))
        .await
        .expect("stream opened")
        .collect()
        .await;
    assert_eq!(items.len(), 1);
    assert_eq!(items[0].clone().expect("ok"), json!({"unary": 5}));

    let refused = client
        .call_stream(server.local_node_id(), "/local/exec", "Count", json!(3))
        .await;
    assert_eq!(refused.err().map(|e| e.code), Some(ErrorCode::Forbidden));
}
