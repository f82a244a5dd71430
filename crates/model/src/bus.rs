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

/// The address of `node`'s public service `public_service` (`/public/...`)
/// as any node calls it: `/net/<node>/public/...`. The one place that
/// assembles such an address (re-exported as `golem_bus::address::net_address`).
pub fn net_address(node: crate::NodeId, public_service: &str) -> String {
    debug_assert!(public_service.starts_with("/public/"), "{public_service}");
    format!("/net/{node}{public_service}")
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

/// Bus endpoint of the daemon's net service.
pub const NET_SERVICE: &str = "/local/net";

/// Ask for the net status (NodeId, PeerId, listen addresses, peers, relay state).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GetNetStatus;
impl BusMessage for GetNetStatus {
    const NAME: &'static str = "GetNetStatus";
    type Reply = serde_json::Value;
}

/// Public endpoint of the net service, reachable by other nodes.
pub const NET_PUBLIC_SERVICE: &str = "/public/net";

/// Sent to another node's `/public/net`: it answers who it is and who called.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PingNode;
impl BusMessage for PingNode {
    const NAME: &'static str = "PingNode";
    type Reply = PongNode;
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PongNode {
    /// The node that answered.
    pub node_id: crate::NodeId,
    /// The caller as the answering node authenticated it.
    pub caller: crate::NodeId,
}

/// Ask the local net service to ping `node` and time the round trip.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PingRemote {
    pub node_id: crate::NodeId,
}
impl BusMessage for PingRemote {
    const NAME: &'static str = "PingRemote";
    type Reply = PingResult;
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PingResult {
    pub node_id: crate::NodeId,
    /// What the remote saw as our NodeId (proves the authenticated identity).
    pub seen_as: crate::NodeId,
    pub round_trip_us: u64,
}

/// Publish a broadcast on `topic` through the local net service.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PublishBroadcast {
    pub topic: String,
    pub payload: String,
}
impl BusMessage for PublishBroadcast {
    const NAME: &'static str = "PublishBroadcast";
    type Reply = ();
}

/// Subscribe to `topic`: a stream call whose items are [`ReceivedBroadcast`]s.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SubscribeBroadcasts {
    pub topic: String,
}
impl BusMessage for SubscribeBroadcasts {
    const NAME: &'static str = "SubscribeBroadcasts";
    type Reply = ReceivedBroadcast;
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceivedBroadcast {
    pub origin: crate::NodeId,
    pub topic: String,
    pub payload: String,
}
