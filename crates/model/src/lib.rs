//! Wire types shared by every Golem component: the closed [`ErrorCode`] and the
//! [`GolemError`] carried over REST and the bus, node identities, REST DTOs and
//! bus messages (each declares its reply type next to itself).
//!
//! This crate must never do IO: no sockets, files, actix or sled. Anything here
//! can be used by the daemon, the agents, the exe units and the tests alike.
#![forbid(unsafe_code)]

pub mod activity;
pub mod activity_control;
pub mod bus;
pub mod constraints;
pub mod error;
pub mod gftp;
pub mod identity;
pub mod ids;
pub mod manifest;
pub mod market;
pub mod payment;
pub mod pricing;
pub mod properties;
pub mod vpn;

pub use error::{ErrorCode, GolemError};
pub use identity::NodeId;
