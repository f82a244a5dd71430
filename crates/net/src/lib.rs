//! `golem-net`: the libp2p layer of a Golem node.
//!
//! A node's libp2p identity is its secp256k1 node key, so every peer's
//! [`NodeId`](golem_model::NodeId) follows from its authenticated PeerId
//! ([`node_id_of_peer`]). On top of TCP + noise + yamux (optionally through
//! circuit relays, with DCUtR hole punching) the node runs identify, ping,
//! Kademlia (peer and NodeId discovery from any bootstrap node), gossipsub
//! (signed broadcasts per topic) and a request-response protocol carrying
//! remote bus calls, of which only `/public/...` addresses are ever served.
//! Calls may also return a reply stream ([`NetHandle::call_stream`]), pulled
//! chunk by chunk over the same protocol.
//!
//! [`start`] spawns the node on the current tokio runtime and returns a
//! [`NetHandle`]; there is no global state, so many nodes can share a process.
#![forbid(unsafe_code)]

mod behaviour;
mod config;
mod dht_walk;
mod error;
mod handle;
mod identity;
mod node;
mod peer_limit;
mod ping_strikes;
pub mod protocol;

pub use config::NetConfig;
pub use error::NetError;
pub use handle::{
    Broadcast, InboundCall, InboundHandler, InboundStreamHandler, NetHandle, NetStatus, PeerStatus,
    RelayStatus, TopicStatus,
};
pub use identity::{
    keypair_from_secret, node_id_of_peer, node_id_of_public_key, node_id_of_secret,
    peer_id_of_secret,
};
/// The libp2p version this crate is built on, for callers that need its types.
pub use libp2p;
pub use libp2p::{Multiaddr, PeerId};
pub use node::{start, start_with_streams};

/// Wrap an async closure as an [`InboundHandler`].
pub fn handler<F, Fut>(f: F) -> InboundHandler
where
    F: Fn(InboundCall) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<serde_json::Value, golem_model::GolemError>>
        + Send
        + 'static,
{
    std::sync::Arc::new(move |call| Box::pin(f(call)))
}
