//! Helpers shared by the integration tests: random node secrets, loopback
//! configurations, recording handlers and polling.
#![allow(dead_code)]

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use golem_model::{GolemError, NodeId};
use golem_net::{InboundCall, InboundHandler, Multiaddr, NetConfig, NetHandle};
use rand::RngCore;
use serde_json::{json, Value};

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// A random, valid secp256k1 secret.
pub fn secret() -> [u8; 32] {
    loop {
        let mut bytes = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut bytes);
        if golem_net::keypair_from_secret(bytes).is_ok() {
            return bytes;
        }
    }
}

pub fn config(bootstrap: Vec<Multiaddr>) -> NetConfig {
    NetConfig {
        bootstrap,
        call_timeout: Duration::from_secs(5),
        kad_query_timeout: Duration::from_secs(2),
        gossip_heartbeat: Duration::from_millis(100),
        ..NetConfig::loopback()
    }
}

/// Calls seen by a node's handler.
pub type Seen = Arc<Mutex<Vec<InboundCall>>>;

/// Replies `{"node": <own id>, "caller": ..., "echo": payload}`; message
/// `Missing` fails with NotFound; message `Big` replies with `payload` bytes.
pub fn recording_handler(own: Arc<Mutex<Option<NodeId>>>, seen: Seen) -> InboundHandler {
    golem_net::handler(move |call: InboundCall| {
        let own = own.lock().ok().and_then(|own| *own);
        if let Ok(mut seen) = seen.lock() {
            seen.push(call.clone());
        }
        async move {
            match call.message.as_str() {
                "Missing" => Err(GolemError::not_found(format!(
                    "nothing at {}",
                    call.address
                ))),
                "Big" => {
                    let len = call.payload.as_u64().unwrap_or(0) as usize;
                    Ok(Value::String("x".repeat(len)))
                }
                _ => Ok(json!({ "node": own, "caller": call.caller, "echo": call.payload })),
            }
        }
    })
}

pub struct TestNode {
    pub secret: [u8; 32],
    pub handle: NetHandle,
    pub seen: Seen,
}

impl TestNode {
    pub async fn start(secret: [u8; 32], config: NetConfig) -> TestNode {
        let own = Arc::new(Mutex::new(None));
        let seen: Seen = Arc::default();
        let handle = golem_net::start(secret, config, recording_handler(own.clone(), seen.clone()))
            .await
            .expect("node starts");
        if let Ok(mut own) = own.lock() {
            *own = Some(handle.local_node_id());
        }
        TestNode {
            secret,
            handle,
            seen,
        }
    }

    pub fn id(&self) -> NodeId {
        self.handle.local_node_id()
    }

    /// First bound address, with or without `/p2p/<peer-id>`.
    pub async fn addr(&self, with_peer_id: bool) -> Multiaddr {
        let status = self.handle.status().await;
        let addr: Multiaddr = status
            .listen_addrs
            .first()
            .expect("bound address")
            .parse()
            .expect("multiaddr");
        if with_peer_id {
            addr.with(golem_net::libp2p::multiaddr::Protocol::P2p(
                self.handle.local_peer_id(),
            ))
        } else {
            addr
        }
    }

    pub fn seen_count(&self) -> usize {
        self.seen.lock().map(|seen| seen.len()).unwrap_or(0)
    }
}

/// Start a bootstrap node and `n - 1` nodes knowing only it (alternately with
/// and without its peer id).
pub async fn network(n: usize) -> Vec<TestNode> {
    let first = TestNode::start(secret(), config(Vec::new())).await;
    let with_id = first.addr(true).await;
    let without_id = first.addr(false).await;
    let mut nodes = vec![first];
    for index in 1..n {
        let bootstrap = if index % 2 == 1 {
            with_id.clone()
        } else {
            without_id.clone()
        };
        nodes.push(TestNode::start(secret(), config(vec![bootstrap])).await);
    }
    nodes
}

/// Poll `check` every 20 ms until it holds or `timeout` passes.
pub async fn wait_until<F, Fut>(timeout: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
