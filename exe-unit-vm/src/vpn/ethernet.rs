//! Ethernet framing of the VPN interface under gVisor. gVisor's netstack
//! takes Ethernet links only (it reads and writes whole frames on the
//! interfaces it finds in the container's namespace), so there the
//! container's `vpn0` is a TAP device rather than a TUN, and the exe unit
//! speaks Ethernet on its fd: frames from the sandbox become IPv4 packets
//! for the members, members' packets become frames for the sandbox, and ARP
//! requests for any other address are answered with one made-up MAC that
//! stands for every peer ([`PEERS_MAC`]). The sandbox's own MAC is learned
//! from its frames; until then packets go to the broadcast address.
//!
//! It must never pass on anything but IPv4 from the sandbox, and never
//! answer ARP for the sandbox's own address.

use std::net::Ipv4Addr;
use std::sync::Mutex;

/// The MAC every peer answers with (locally administered, unicast).
pub const PEERS_MAC: [u8; 6] = [0x02, 0x67, 0x6c, 0x6d, 0x76, 0x70];
const BROADCAST_MAC: [u8; 6] = [0xff; 6];
const ETHERTYPE_IPV4: [u8; 2] = [0x08, 0x00];
const ETHERTYPE_ARP: [u8; 2] = [0x08, 0x06];
const HEADER_LEN: usize = 14;
/// ARP for IPv4 over Ethernet: htype 1, ptype IPv4, hlen 6, plen 4.
const ARP_IPV4_ETHERNET: [u8; 6] = [0x00, 0x01, 0x08, 0x00, 6, 4];
const ARP_REQUEST: [u8; 2] = [0x00, 0x01];
const ARP_REPLY: [u8; 2] = [0x00, 0x02];
const ARP_LEN: usize = 28;

/// What a frame from the sandbox amounts to.
#[derive(Debug, PartialEq, Eq)]
pub enum FromSandbox<'a> {
    /// An IPv4 packet for the members.
    Ipv4(&'a [u8]),
    /// An ARP request answered: write this frame back to the sandbox.
    Answer(Vec<u8>),
    /// Anything else (IPv6, ARP replies, ARP for our own address, runts).
    Ignored,
}

/// The Ethernet side of one VPN interface.
#[derive(Debug)]
pub struct EthernetLink {
    /// The container's address on the network: never answered for.
    own_ip: Ipv4Addr,
    /// The sandbox NIC's MAC, once seen.
    sandbox_mac: Mutex<Option<[u8; 6]>>,
}

impl EthernetLink {
    pub fn new(own_ip: Ipv4Addr) -> EthernetLink {
        EthernetLink {
            own_ip,
            sandbox_mac: Mutex::new(None),
        }
    }

    /// Read one frame the sandbox sent.
    pub fn from_sandbox<'a>(&self, frame: &'a [u8]) -> FromSandbox<'a> {
        if frame.len() < HEADER_LEN {
            return FromSandbox::Ignored;
        }
        let mut source = [0u8; 6];
        source.copy_from_slice(&frame[6..12]);
        let ethertype = [frame[12], frame[13]];
        let payload = &frame[HEADER_LEN..];
        if source[0] & 1 == 0 {
            *self
                .sandbox_mac
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(source);
        }
        if ethertype == ETHERTYPE_IPV4 {
            return FromSandbox::Ipv4(payload);
        }
        if ethertype != ETHERTYPE_ARP || payload.len() < ARP_LEN {
            return FromSandbox::Ignored;
        }
        if payload[..6] != ARP_IPV4_ETHERNET || payload[6..8] != ARP_REQUEST {
            return FromSandbox::Ignored;
        }
        let sender_mac = &payload[8..14];
        let sender_ip = &payload[14..18];
        let target_ip = &payload[24..28];
        // Our own address, and gratuitous ARP (the sandbox announcing itself).
        if target_ip == self.own_ip.octets() || target_ip == sender_ip {
            return FromSandbox::Ignored;
        }
        let mut answer = Vec::with_capacity(HEADER_LEN + ARP_LEN);
        answer.extend_from_slice(sender_mac);
        answer.extend_from_slice(&PEERS_MAC);
        answer.extend_from_slice(&ETHERTYPE_ARP);
        answer.extend_from_slice(&ARP_IPV4_ETHERNET);
        answer.extend_from_slice(&ARP_REPLY);
        answer.extend_from_slice(&PEERS_MAC);
        answer.extend_from_slice(target_ip);
        answer.extend_from_slice(sender_mac);
        answer.extend_from_slice(sender_ip);
        FromSandbox::Answer(answer)
    }

    /// The frame that carries a member's IPv4 `packet` to the sandbox.
    pub fn to_sandbox(&self, packet: &[u8]) -> Vec<u8> {
        let destination = self
            .sandbox_mac
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .unwrap_or(BROADCAST_MAC);
        let mut frame = Vec::with_capacity(HEADER_LEN + packet.len());
        frame.extend_from_slice(&destination);
        frame.extend_from_slice(&PEERS_MAC);
        frame.extend_from_slice(&ETHERTYPE_IPV4);
        frame.extend_from_slice(packet);
        frame
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const SANDBOX_MAC: [u8; 6] = [0x22, 0xb4, 0x36, 0xca, 0x43, 0x11];

    fn arp_request(sender: Ipv4Addr, target: Ipv4Addr) -> Vec<u8> {
        let mut frame = Vec::new();
        frame.extend_from_slice(&BROADCAST_MAC);
        frame.extend_from_slice(&SANDBOX_MAC);
        frame.extend_from_slice(&ETHERTYPE_ARP);
        frame.extend_from_slice(&ARP_IPV4_ETHERNET);
        frame.extend_from_slice(&ARP_REQUEST);
        frame.extend_from_slice(&SANDBOX_MAC);
        frame.extend_from_slice(&sender.octets());
        frame.extend_from_slice(&[0; 6]);
        frame.extend_from_slice(&target.octets());
        frame
    }

    #[test]
    fn arp_for_a_peer_is_answered_with_the_peers_mac() {
        let own = Ipv4Addr::new(192, 168, 0, 2);
        let link = EthernetLink::new(own);
        let peer = Ipv4Addr::new(192, 168, 0, 3);
        let FromSandbox::Answer(answer) = link.from_sandbox(&arp_request(own, peer)) else {
            panic!("not answered");
        };
        assert_eq!(answer.len(), 42);
        assert_eq!(answer[..6], SANDBOX_MAC, "to the asker");
        assert_eq!(answer[6..12], PEERS_MAC);
        assert_eq!(answer[12..14], ETHERTYPE_ARP);
        assert_eq!(answer[20..22], ARP_REPLY);
        assert_eq!(answer[22..28], PEERS_MAC, "sender hardware address");
        assert_eq!(answer[28..32], peer.octets(), "sender protocol address");
        assert_eq!(answer[32..38], SANDBOX_MAC);
        assert_eq!(answer[38..42], own.octets());
    }

    #[test]
    fn own_address_gratuitous_arp_and_other_frames_are_ignored() {
        let own = Ipv4Addr::new(192, 168, 0, 2);
        let link = EthernetLink::new(own);
        // Someone asking for our address, and the sandbox announcing itself.
        let other = Ipv4Addr::new(192, 168, 0, 9);
        assert_eq!(
            link.from_sandbox(&arp_request(other, own)),
            FromSandbox::Ignored
        );
        assert_eq!(
            link.from_sandbox(&arp_request(own, own)),
            FromSandbox::Ignored
        );
        // IPv6, a runt, a cut ARP.
        let mut ipv6 = vec![0u8; 60];
        ipv6[12..14].copy_from_slice(&[0x86, 0xdd]);
        assert_eq!(link.from_sandbox(&ipv6), FromSandbox::Ignored);
        assert_eq!(link.from_sandbox(&[0u8; 10]), FromSandbox::Ignored);
        let cut = arp_request(own, other);
        assert_eq!(link.from_sandbox(&cut[..30]), FromSandbox::Ignored);
    }

    #[test]
    fn ipv4_is_unwrapped_and_wrapped_to_the_learned_mac() {
        let link = EthernetLink::new(Ipv4Addr::new(10, 0, 0, 2));
        let packet = [0x45u8, 0, 0, 20, 1, 2, 3, 4];
        // Before the sandbox spoke: broadcast.
        let frame = link.to_sandbox(&packet);
        assert_eq!(frame[..6], BROADCAST_MAC);
        assert_eq!(frame[6..12], PEERS_MAC);
        assert_eq!(frame[12..14], ETHERTYPE_IPV4);
        assert_eq!(frame[14..], packet);
        // A frame from the sandbox: its packet, and its MAC learned.
        let mut from = Vec::new();
        from.extend_from_slice(&PEERS_MAC);
        from.extend_from_slice(&SANDBOX_MAC);
        from.extend_from_slice(&ETHERTYPE_IPV4);
        from.extend_from_slice(&packet);
        assert_eq!(link.from_sandbox(&from), FromSandbox::Ipv4(&packet[..]));
        assert_eq!(link.to_sandbox(&packet)[..6], SANDBOX_MAC);
    }
}
