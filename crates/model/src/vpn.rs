//! The VPN (Net API) wire: what REST clients send and receive under
//! `/net-api/v1` and `/net-api/v2/vpn`, and the two bus messages members of a
//! network exchange at `/public/vpn/<networkId>` on every member node.
//!
//! Members carry bare IPv4 packets (no Ethernet frames: we own both ends), a
//! batch per call, as raw bytes in the call's attachment ([`PacketBatch`]):
//! the JSON payload names only the network. A node accepts packets only from
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

/// The network's MTU: the largest IP packet a member sends or takes, the
/// MTU of the requestor's stack and of every container's interface. 65,521
/// is the largest MTU a Linux TAP takes (65,535, the most an IPv4 packet and
/// a TUN's MTU can be, less the 14-byte Ethernet header), and containers under
/// gVisor get a TAP (its netstack reads Ethernet frames): one MTU for every
/// member, whatever its sandbox, so nothing on the way cuts or fragments a
/// packet; it also fits a [`PacketBatch`] entry's 2-byte length. Both ends
/// are ours (clients only see the WebSocket's byte stream), so the
/// original's guest MTU of 1,220 does not bind us; a large MTU means ~50
/// times fewer packets per stream, which is what a stream's throughput is
/// bound by (RFC 003, addendum).
pub const VPN_MTU: usize = 65_521;

/// The most packet bytes one [`VpnPackets`] call carries (both ends batch up
/// to this; four packets at the MTU, hundreds of small ones). Far below the
/// net's and the bus's frame limits, so a batch is never refused for its size.
pub const MAX_BATCH_BYTES: usize = 256 * 1024;

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
/// forget: the reply only says the batch was taken, not delivered. The
/// packets are the call's attachment, a [`PacketBatch`]; a call without one
/// carries no packet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VpnPackets {
    pub network_id: String,
}

/// The packets of one [`VpnPackets`] call as they travel in its attachment:
/// each packet is a 2-byte big-endian length followed by that many bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PacketBatch {
    bytes: Vec<u8>,
    count: usize,
}

impl PacketBatch {
    pub fn new() -> PacketBatch {
        PacketBatch::default()
    }

    /// A batch of `packets`, in order, leaving out any over [`VPN_MTU`].
    pub fn of<'a>(packets: impl IntoIterator<Item = &'a [u8]>) -> PacketBatch {
        let mut batch = PacketBatch::new();
        for packet in packets {
            let _ = batch.push(packet);
        }
        batch
    }

    /// Append `packet`; a packet over [`VPN_MTU`] cannot travel (its length
    /// does not fit the 2-byte prefix) and is refused, the batch unchanged.
    pub fn push(&mut self, packet: &[u8]) -> Result<(), OversizedPacket> {
        let length = u16::try_from(packet.len())
            .ok()
            .filter(|length| usize::from(*length) <= VPN_MTU)
            .ok_or(OversizedPacket {
                length: packet.len(),
            })?;
        self.bytes.reserve(2 + packet.len());
        self.bytes.extend_from_slice(&length.to_be_bytes());
        self.bytes.extend_from_slice(packet);
        self.count += 1;
        Ok(())
    }

    /// Whether the batch holds [`MAX_BATCH_BYTES`] or more: send it.
    pub fn is_full(&self) -> bool {
        self.bytes.len() >= MAX_BATCH_BYTES
    }

    /// Packets in the batch.
    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Bytes the batch takes in the attachment.
    pub fn encoded_len(&self) -> usize {
        self.bytes.len()
    }

    /// The attachment to send with [`VpnPackets`].
    pub fn into_attachment(self) -> Vec<u8> {
        self.bytes
    }
}

/// A packet larger than the network's MTU, refused by [`PacketBatch::push`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a vpn packet of {length} bytes exceeds the network's MTU of {VPN_MTU} bytes")]
pub struct OversizedPacket {
    pub length: usize,
}

/// The attachment ends inside a packet's length or bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("vpn packet batch cut short: {remaining} bytes left do not make a packet")]
pub struct TruncatedBatch {
    pub remaining: usize,
}

/// The packets of a [`VpnPackets`] attachment, in order; a truncated tail
/// yields one [`TruncatedBatch`] and ends the iteration.
pub fn split_packets(attachment: &[u8]) -> SplitPackets<'_> {
    SplitPackets { rest: attachment }
}

/// Iterator returned by [`split_packets`].
#[derive(Debug, Clone)]
pub struct SplitPackets<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for SplitPackets<'a> {
    type Item = Result<&'a [u8], TruncatedBatch>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let whole = match self.rest {
            [high, low, rest @ ..] => {
                let length = usize::from(u16::from_be_bytes([*high, *low]));
                rest.get(..length).map(|packet| (packet, &rest[length..]))
            }
            _ => None,
        };
        match whole {
            Some((packet, rest)) => {
                self.rest = rest;
                Some(Ok(packet))
            }
            None => {
                let remaining = self.rest.len();
                self.rest = &[];
                Some(Err(TruncatedBatch { remaining }))
            }
        }
    }
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

    #[test]
    fn packet_batches_split_back_into_their_packets() {
        let packets: [&[u8]; 3] = [b"first", b"", &[0xff; 1500]];
        let batch = PacketBatch::of(packets);
        assert_eq!(batch.len(), 3);
        assert_eq!(batch.encoded_len(), 3 * 2 + 5 + 1500);
        let attachment = batch.into_attachment();
        let split: Vec<&[u8]> = split_packets(&attachment)
            .collect::<Result<_, _>>()
            .unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(split, packets);
        assert_eq!(split_packets(&[]).count(), 0);
    }

    #[test]
    fn a_packet_over_the_mtu_is_refused_and_the_batch_kept() {
        let mut batch = PacketBatch::of([&[1u8; 1220][..]]);
        let largest = vec![2u8; VPN_MTU];
        assert_eq!(batch.push(&largest), Ok(()));
        let oversized = vec![3u8; VPN_MTU + 1];
        assert_eq!(
            batch.push(&oversized),
            Err(OversizedPacket {
                length: VPN_MTU + 1
            })
        );
        assert_eq!(batch.len(), 2);
        assert!(!batch.is_full());
        let attachment = batch.into_attachment();
        let split: Vec<&[u8]> = split_packets(&attachment)
            .collect::<Result<_, _>>()
            .unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(split, [&[1u8; 1220][..], &largest[..]]);
        let mut full = PacketBatch::new();
        while !full.is_full() {
            full.push(&largest)
                .unwrap_or_else(|error| panic!("{error}"));
        }
        assert_eq!(full.len(), MAX_BATCH_BYTES.div_ceil(VPN_MTU + 2));
    }

    #[test]
    fn a_cut_batch_yields_its_whole_packets_then_one_error() {
        let mut attachment = PacketBatch::of([&b"whole"[..]]).into_attachment();
        attachment.extend_from_slice(&[0, 9, 1, 2]); // says 9 bytes, has 2
        let mut split = split_packets(&attachment);
        assert_eq!(split.next(), Some(Ok(&b"whole"[..])));
        assert_eq!(split.next(), Some(Err(TruncatedBatch { remaining: 4 })));
        assert_eq!(split.next(), None);
        assert_eq!(
            split_packets(&[7]).collect::<Vec<_>>(),
            vec![Err(TruncatedBatch { remaining: 1 })]
        );
    }
}
