//! The VPN (Net API) wire: what REST clients send and receive under
//! `/net-api/v1` and `/net-api/v2/vpn`, and the two bus messages members of a
//! network exchange at `/public/vpn/<networkId>` on every member node.
//!
//! Members carry bare IPv4 packets (no Ethernet frames: we own both ends), a
//! batch per call, base64 in the JSON payload. A node accepts packets only from
//! nodes it knows as members of that network, and `VpnControl` only from the
//! network's owner (the requestor that created it).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::bus::BusMessage;
use crate::NodeId;

/// The public bus service of network `network_id` on a member node.
pub fn vpn_service(network_id: &str) -> String {
    format!("/public/vpn/{network_id}")
}

/// The largest IP packet a member sends (the guest MTU of the original).
pub const VPN_MTU: usize = 1220;

/// `POST /net` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NewNetwork {
    /// Network address, optionally with a prefix (`192.168.0.0/24`).
    pub ip: String,
    /// Dotted mask; /24 when absent and `ip` has no prefix.
    #[serde(default)]
    pub mask: Option<String>,
    /// The requestor's own address; the first host when absent.
    #[serde(default)]
    pub gateway: Option<String>,
}

/// A network as the Net API returns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Network {
    /// 32 hex digits.
    pub id: String,
    /// `address/prefix`, e.g. `192.168.0.0/24`.
    pub ip: String,
    pub mask: String,
    pub gateway: String,
}

/// `POST /net/{id}/addresses` body and `GET` item: an address of the requestor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkAddress {
    pub ip: String,
}

/// `POST /net/{id}/nodes` body and `GET` item: a member node and its address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkNode {
    pub id: String,
    pub ip: String,
}

/// `GET /net/{id}/tcp` item: a TCP connection of the requestor's stack in the
/// network (one per open WebSocket). `protocol` is the IP protocol number (6).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkConnection {
    pub protocol: u16,
    pub local_ip: String,
    pub local_port: u16,
    pub remote_ip: String,
    pub remote_port: u16,
}

/// IP packets for the network's interface on the receiving node. Fire and
/// forget: the reply only says the batch was taken, not delivered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VpnPackets {
    pub network_id: String,
    /// Each item is one IPv4 packet, base64 (standard alphabet, padded).
    pub packets: Vec<String>,
}
impl BusMessage for VpnPackets {
    const NAME: &'static str = "VpnPackets";
    type Reply = ();
}

/// Membership changes the network's owner pushes to every member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all_fields = "camelCase")]
pub enum VpnControl {
    /// New or changed members: IP -> NodeId.
    AddNodes {
        network_id: String,
        nodes: BTreeMap<String, NodeId>,
    },
    /// Members that left, by IP.
    RemoveNodes {
        network_id: String,
        ips: Vec<String>,
    },
}
impl BusMessage for VpnControl {
    const NAME: &'static str = "VpnControl";
    type Reply = ();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_messages_name_their_kind() {
        let node: NodeId = "0x1111111111111111111111111111111111111111"
            .parse()
            .unwrap_or_else(|error| panic!("{error:?}"));
        let add = VpnControl::AddNodes {
            network_id: "n".into(),
            nodes: BTreeMap::from([("192.168.0.2".to_string(), node)]),
        };
        let json = serde_json::to_value(&add).unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(json["kind"], "AddNodes");
        assert_eq!(json["networkId"], "n");
        assert_eq!(
            json["nodes"]["192.168.0.2"],
            "0x1111111111111111111111111111111111111111"
        );
        assert_eq!(vpn_service("abc"), "/public/vpn/abc");
    }
}
