//! Bus message declarations. A message type names itself and its reply in one
//! place ([`BusMessage`]); failures always travel as the shared
//! [`crate::GolemError`], so a caller knows the whole contract from the type.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// A request that can be sent over the bus to an endpoint address.
pub trait BusMessage: Serialize + DeserializeOwned + Send + 'static {
    /// The message's name on its endpoint; an endpoint dispatches on it.
    const NAME: &'static str;
    /// What a successful call returns. Errors are always [`crate::GolemError`].
    type Reply: Serialize + DeserializeOwned + Send + 'static;
}

/// Bus endpoint served by the router itself (answers [`Ping`]).
pub const ROUTER_SERVICE: &str = "/local/bus";

/// Liveness and latency probe: the router echoes the payload back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ping {
    pub payload: String,
}
impl BusMessage for Ping {
    const NAME: &'static str = "Ping";
    type Reply = String;
}
