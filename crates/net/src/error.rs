//! Start-up errors of the network layer. Runtime failures of calls and
//! broadcasts are reported as [`golem_model::GolemError`] instead, so they can
//! travel over the bus unchanged.

use libp2p::Multiaddr;

/// Why [`crate::start`] could not bring the node up.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("invalid node secret: {0}")]
    InvalidSecret(String),
    #[error("invalid network configuration: {0}")]
    Config(String),
    #[error("could not build the libp2p transport: {0}")]
    Transport(String),
    #[error("could not listen on {addr}: {reason}")]
    Listen { addr: Multiaddr, reason: String },
    #[error("no listen address could be bound (tried {0:?})")]
    NoListenAddress(Vec<Multiaddr>),
}
