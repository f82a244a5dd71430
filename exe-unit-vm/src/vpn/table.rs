//! The member table of one network on this activity: IP -> NodeId of the
//! other members, from `deploy.net.nodes`, changed by the owner's
//! `VpnControl` and by what members send (an address a member sends from that
//! nobody holds yet is learned). It decides, per packet, whether ingress is
//! taken and where egress goes. Pure: no IO, no clock.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use golem_model::vpn::VpnControl;
use golem_model::NodeId;

use super::network::VpnNetwork;

/// The IPv4 header fields the relay looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Header {
    pub source: Ipv4Addr,
    pub destination: Ipv4Addr,
}

/// Source and destination of an IPv4 packet; `None` for anything else
/// (IPv6, truncated, a length field that disagrees with the bytes).
pub fn parse_ipv4(packet: &[u8]) -> Option<Ipv4Header> {
    if packet.len() < 20 || packet[0] >> 4 != 4 {
        return None;
    }
    let header_len = usize::from(packet[0] & 0x0f) * 4;
    let total_len = usize::from(u16::from_be_bytes([packet[2], packet[3]]));
    if header_len < 20 || total_len < header_len || total_len > packet.len() {
        return None;
    }
    let address =
        |at: usize| Ipv4Addr::new(packet[at], packet[at + 1], packet[at + 2], packet[at + 3]);
    Some(Ipv4Header {
        source: address(12),
        destination: address(16),
    })
}

/// What becomes of a packet a member sent us.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ingress {
    /// Write it to the interface.
    Deliver,
    /// Write it, and its source is now known to be the sender's.
    DeliverAndLearn,
    /// Not an IPv4 packet.
    Malformed,
    /// Not for our address (nor a broadcast of the network).
    NotForUs,
    /// From an address outside the network, or from ours.
    ForeignSource,
    /// From an address another member holds.
    Spoofed,
}

/// Where a packet the payload sent goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Egress {
    To(NodeId),
    /// Not an IPv4 packet (IPv6 neighbour chatter and the like).
    Malformed,
    /// Not sent from our address.
    ForeignSource,
    /// Broadcast or multicast: dropped (no member expects them; see the module docs).
    Broadcast,
    /// No member holds the destination.
    NoRoute,
}

/// Why a `VpnControl` was not applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    #[error("VpnControl for network {0} reached network {1}")]
    OtherNetwork(String, String),
    #[error("{0:?} is not an address of the network")]
    BadAddress(String),
}

#[derive(Debug, Clone)]
pub struct Members {
    network_id: String,
    address: Ipv4Addr,
    prefix: u8,
    own_ip: Ipv4Addr,
    own_node: Option<NodeId>,
    /// The network's owner (the agreement's requestor): a member even
    /// before any of its addresses is known.
    owner: Option<NodeId>,
    by_ip: BTreeMap<Ipv4Addr, NodeId>,
}

impl Members {
    /// The table of `network`; `own_node` is this provider's NodeId (never a
    /// peer), `owner` the agreement's requestor.
    pub fn new(network: &VpnNetwork, own_node: Option<NodeId>, owner: Option<NodeId>) -> Members {
        Members {
            network_id: network.id.clone(),
            address: network.address,
            prefix: network.prefix,
            own_ip: network.node_ip,
            own_node,
            owner: owner.filter(|owner| Some(*owner) != own_node),
            by_ip: network.members.clone(),
        }
    }

    fn in_network(&self, ip: Ipv4Addr) -> bool {
        super::network::contains(self.address, self.prefix, ip)
    }

    fn is_broadcast(&self, ip: Ipv4Addr) -> bool {
        ip.is_broadcast()
            || ip.is_multicast()
            || ip == super::network::broadcast(self.address, self.prefix)
    }

    /// Whether `node` holds an address of the network, or owns it: only
    /// members may send packets.
    pub fn is_member(&self, node: NodeId) -> bool {
        Some(node) == self.owner || self.by_ip.values().any(|held| *held == node)
    }

    pub fn node_of(&self, ip: Ipv4Addr) -> Option<NodeId> {
        self.by_ip.get(&ip).copied()
    }

    pub fn len(&self) -> usize {
        self.by_ip.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_ip.is_empty()
    }

    /// Route a packet the payload wrote to the interface.
    pub fn egress(&self, packet: &[u8]) -> Egress {
        let Some(header) = parse_ipv4(packet) else {
            return Egress::Malformed;
        };
        if header.source != self.own_ip {
            return Egress::ForeignSource;
        }
        if self.is_broadcast(header.destination) {
            return Egress::Broadcast;
        }
        match self.by_ip.get(&header.destination) {
            Some(node) => Egress::To(*node),
            None => Egress::NoRoute,
        }
    }

    /// Admit a packet `sender` sent (the sender is known to be a member:
    /// check [`Members::is_member`] first); learns a source address that no
    /// member holds yet.
    pub fn ingress(&mut self, sender: NodeId, packet: &[u8]) -> Ingress {
        let Some(header) = parse_ipv4(packet) else {
            return Ingress::Malformed;
        };
        if header.destination != self.own_ip && !self.is_broadcast(header.destination) {
            return Ingress::NotForUs;
        }
        let source = header.source;
        if !self.in_network(source) || source == self.own_ip || self.is_broadcast(source) {
            return Ingress::ForeignSource;
        }
        match self.by_ip.get(&source) {
            Some(holder) if *holder == sender => Ingress::Deliver,
            Some(_) => Ingress::Spoofed,
            None => {
                self.by_ip.insert(source, sender);
                Ingress::DeliverAndLearn
            }
        }
    }

    /// Apply the owner's membership change (the caller checked it comes
    /// from the owner). Entries for our own address or node are skipped.
    pub fn apply(&mut self, control: &VpnControl) -> Result<(), ControlError> {
        match control {
            VpnControl::AddNodes { network_id, nodes } => {
                self.check_network(network_id)?;
                let mut parsed = Vec::with_capacity(nodes.len());
                for (ip, node) in nodes {
                    let ip = self.parse_member_ip(ip)?;
                    parsed.push((ip, *node));
                }
                for (ip, node) in parsed {
                    if ip != self.own_ip && Some(node) != self.own_node {
                        self.by_ip.insert(ip, node);
                    }
                }
            }
            VpnControl::RemoveNodes { network_id, ips } => {
                self.check_network(network_id)?;
                for ip in ips {
                    let ip = self.parse_member_ip(ip)?;
                    self.by_ip.remove(&ip);
                }
            }
        }
        Ok(())
    }

    fn check_network(&self, network_id: &str) -> Result<(), ControlError> {
        if network_id == self.network_id {
            Ok(())
        } else {
            Err(ControlError::OtherNetwork(
                network_id.to_string(),
                self.network_id.clone(),
            ))
        }
    }

    fn parse_member_ip(&self, text: &str) -> Result<Ipv4Addr, ControlError> {
        text.parse::<Ipv4Addr>()
            .ok()
            .filter(|ip| self.in_network(*ip) && !self.is_broadcast(*ip) && *ip != self.address)
            .ok_or_else(|| ControlError::BadAddress(text.to_string()))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    pub(crate) fn node(byte: u8) -> NodeId {
        NodeId::from_bytes([byte; 20])
    }

    /// A minimal IPv4 packet (UDP, no payload) from `source` to `destination`.
    pub(crate) fn packet(source: [u8; 4], destination: [u8; 4]) -> Vec<u8> {
        let mut bytes = vec![0x45, 0, 0, 28, 0, 0, 0x40, 0, 64, 17, 0, 0];
        bytes.extend_from_slice(&source);
        bytes.extend_from_slice(&destination);
        bytes.extend_from_slice(&[0, 1, 0, 2, 0, 8, 0, 0]);
        bytes
    }

    fn members() -> Members {
        let network = VpnNetwork {
            id: "net".into(),
            address: Ipv4Addr::new(192, 168, 0, 0),
            prefix: 24,
            node_ip: Ipv4Addr::new(192, 168, 0, 2),
            gateway: None,
            members: BTreeMap::from([
                (Ipv4Addr::new(192, 168, 0, 1), node(1)),
                (Ipv4Addr::new(192, 168, 0, 3), node(3)),
            ]),
        };
        Members::new(&network, Some(node(2)), Some(node(1)))
    }

    #[test]
    fn headers_are_read_only_from_whole_ipv4_packets() {
        let header = parse_ipv4(&packet([10, 0, 0, 1], [10, 0, 0, 2])).unwrap();
        assert_eq!(header.source, Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(header.destination, Ipv4Addr::new(10, 0, 0, 2));
        let mut v6 = packet([10, 0, 0, 1], [10, 0, 0, 2]);
        v6[0] = 0x60;
        assert_eq!(parse_ipv4(&v6), None);
        assert_eq!(
            parse_ipv4(&packet([10, 0, 0, 1], [10, 0, 0, 2])[..19]),
            None
        );
        let mut long = packet([10, 0, 0, 1], [10, 0, 0, 2]);
        long[3] = 200;
        assert_eq!(parse_ipv4(&long), None);
    }

    #[test]
    fn egress_goes_to_the_member_holding_the_destination() {
        let table = members();
        assert_eq!(
            table.egress(&packet([192, 168, 0, 2], [192, 168, 0, 3])),
            Egress::To(node(3))
        );
        assert_eq!(
            table.egress(&packet([192, 168, 0, 2], [192, 168, 0, 1])),
            Egress::To(node(1))
        );
        assert_eq!(
            table.egress(&packet([192, 168, 0, 2], [192, 168, 0, 9])),
            Egress::NoRoute
        );
        assert_eq!(
            table.egress(&packet([192, 168, 0, 2], [8, 8, 8, 8])),
            Egress::NoRoute
        );
        // Only our own address may send.
        assert_eq!(
            table.egress(&packet([192, 168, 0, 7], [192, 168, 0, 3])),
            Egress::ForeignSource
        );
        assert_eq!(
            table.egress(&packet([192, 168, 0, 2], [192, 168, 0, 255])),
            Egress::Broadcast
        );
        assert_eq!(
            table.egress(&packet([192, 168, 0, 2], [224, 0, 0, 1])),
            Egress::Broadcast
        );
        assert_eq!(table.egress(&[0x60; 40]), Egress::Malformed);
    }

    #[test]
    fn members_only_and_no_spoofing() {
        let mut table = members();
        assert!(table.is_member(node(1)));
        assert!(table.is_member(node(3)));
        assert!(!table.is_member(node(9)));
        assert!(!table.is_member(node(2)), "we are not our own peer");
        // The owner is a member before any address of its is known; the
        // address it sends from is then learned as its own.
        let mut without_owner_address = members();
        without_owner_address
            .apply(&VpnControl::RemoveNodes {
                network_id: "net".into(),
                ips: vec!["192.168.0.1".into()],
            })
            .unwrap();
        assert!(without_owner_address.is_member(node(1)));
        assert_eq!(
            without_owner_address.ingress(node(1), &packet([192, 168, 0, 1], [192, 168, 0, 2])),
            Ingress::DeliverAndLearn
        );
        assert_eq!(
            table.ingress(node(3), &packet([192, 168, 0, 3], [192, 168, 0, 2])),
            Ingress::Deliver
        );
        // Node 3 sending as the requestor's address: spoofed.
        assert_eq!(
            table.ingress(node(3), &packet([192, 168, 0, 1], [192, 168, 0, 2])),
            Ingress::Spoofed
        );
        assert_eq!(
            table.ingress(node(3), &packet([192, 168, 0, 3], [192, 168, 0, 4])),
            Ingress::NotForUs
        );
        assert_eq!(
            table.ingress(node(3), &packet([10, 0, 0, 3], [192, 168, 0, 2])),
            Ingress::ForeignSource
        );
        assert_eq!(
            table.ingress(node(3), &packet([192, 168, 0, 2], [192, 168, 0, 2])),
            Ingress::ForeignSource
        );
        // A member's new address is learned, then routed to it and owned by it.
        assert_eq!(
            table.ingress(node(3), &packet([192, 168, 0, 30], [192, 168, 0, 2])),
            Ingress::DeliverAndLearn
        );
        assert_eq!(
            table.egress(&packet([192, 168, 0, 2], [192, 168, 0, 30])),
            Egress::To(node(3))
        );
        assert_eq!(
            table.ingress(node(1), &packet([192, 168, 0, 30], [192, 168, 0, 2])),
            Ingress::Spoofed
        );
    }

    #[test]
    fn the_owner_adds_and_removes_members() {
        let mut table = members();
        let add = VpnControl::AddNodes {
            network_id: "net".into(),
            nodes: BTreeMap::from([
                ("192.168.0.4".to_string(), node(4)),
                // Our own address and node stay ours.
                ("192.168.0.2".to_string(), node(9)),
                ("192.168.0.5".to_string(), node(2)),
            ]),
        };
        table.apply(&add).unwrap();
        assert!(table.is_member(node(4)));
        assert_eq!(table.node_of(Ipv4Addr::new(192, 168, 0, 2)), None);
        assert_eq!(table.node_of(Ipv4Addr::new(192, 168, 0, 5)), None);
        assert_eq!(
            table.egress(&packet([192, 168, 0, 2], [192, 168, 0, 4])),
            Egress::To(node(4))
        );
        table
            .apply(&VpnControl::RemoveNodes {
                network_id: "net".into(),
                ips: vec!["192.168.0.4".into()],
            })
            .unwrap();
        assert!(!table.is_member(node(4)));
        assert_eq!(
            table.egress(&packet([192, 168, 0, 2], [192, 168, 0, 4])),
            Egress::NoRoute
        );
        // Another network's control, or addresses outside this one: nothing changes.
        let other = VpnControl::AddNodes {
            network_id: "other".into(),
            nodes: BTreeMap::from([("192.168.0.6".to_string(), node(6))]),
        };
        assert!(table.apply(&other).is_err());
        let outside = VpnControl::AddNodes {
            network_id: "net".into(),
            nodes: BTreeMap::from([
                ("192.168.0.7".to_string(), node(7)),
                ("10.0.0.1".to_string(), node(6)),
            ]),
        };
        assert!(table.apply(&outside).is_err());
        assert!(!table.is_member(node(7)), "a bad batch applies nothing");
        assert_eq!(table.len(), 2);
    }
}
