//! The GSB-like bus. Addresses are paths: `/local/...` is reachable only inside
//! the node, `/public/...` also from other nodes, and `/net/<nodeId>/...` is
//! routed to another node by whoever binds the `/net/` prefix (the net service).
//!
//! A [`Router`] is an ordinary value (never a global) that maps addresses to
//! [`Endpoint`]s. The [`server`] exposes a router on a Unix socket so that other
//! processes (exe units, CLIs) can call addresses and bind their own; the
//! [`client`] is their side of that socket. Frames are length-prefixed JSON and a
//! connection opens with a `Hello` carrying [`frame::PROTOCOL_VERSION`].
//!
//! This crate must not know any service: it moves calls, it never interprets them.
#![forbid(unsafe_code)]

pub mod actor;
pub mod address;
pub mod client;
mod connection;
pub mod endpoint;
pub mod frame;
pub mod router;
pub mod server;

pub use actor::{ActorAddress, Incoming, ServiceArbiter, Supervised};
pub use address::Address;
pub use client::BusClient;
pub use endpoint::{BusCall, Caller, Endpoint, ReplyStream, ServiceEndpoint};
pub use router::Router;
