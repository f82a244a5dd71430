//! Node identities on the wire: the libp2p keypair is built from the node's
//! 32-byte secp256k1 secret, and a peer's [`NodeId`] (the Ethereum address of
//! its key) is always *derived* from its authenticated [`PeerId`], whose
//! secp256k1 public key is inlined in the identity multihash. Nothing a peer
//! says in a message can change which NodeId it speaks for.

use std::collections::HashMap;

use golem_model::NodeId;
use libp2p::identity::{secp256k1, Keypair, PublicKey};
use libp2p::PeerId;

use crate::error::NetError;

/// Multihash code of the `identity` hash, used by PeerIds of small keys.
const IDENTITY_MULTIHASH: u64 = 0x00;

/// The libp2p keypair of a node whose secp256k1 secret is `secret`.
pub fn keypair_from_secret(secret: [u8; 32]) -> Result<Keypair, NetError> {
    let mut bytes = secret;
    let secret_key = secp256k1::SecretKey::try_from_bytes(&mut bytes)
        .map_err(|error| NetError::InvalidSecret(error.to_string()))?;
    Ok(Keypair::from(secp256k1::Keypair::from(secret_key)))
}

/// The PeerId of the node whose secp256k1 secret is `secret`.
pub fn peer_id_of_secret(secret: [u8; 32]) -> Result<PeerId, NetError> {
    Ok(keypair_from_secret(secret)?.public().to_peer_id())
}

/// The NodeId of the node whose secp256k1 secret is `secret`.
pub fn node_id_of_secret(secret: [u8; 32]) -> Result<NodeId, NetError> {
    let keypair = keypair_from_secret(secret)?;
    node_id_of_public_key(&keypair.public())
        .ok_or_else(|| NetError::InvalidSecret("not a secp256k1 key".into()))
}

/// The NodeId of a libp2p public key, `None` unless it is a secp256k1 key.
pub fn node_id_of_public_key(public_key: &PublicKey) -> Option<NodeId> {
    let secp = public_key.clone().try_into_secp256k1().ok()?;
    Some(NodeId::from_uncompressed_public_key(
        &secp.to_bytes_uncompressed(),
    ))
}

/// The NodeId a peer speaks for: the Ethereum address of the secp256k1 public
/// key inlined in its PeerId. `None` for peers of any other key type (or whose
/// key is hashed rather than inlined), which therefore cannot call us.
pub fn node_id_of_peer(peer: &PeerId) -> Option<NodeId> {
    let multihash = peer.as_ref();
    if multihash.code() != IDENTITY_MULTIHASH {
        return None;
    }
    let public_key = PublicKey::try_decode_protobuf(multihash.digest()).ok()?;
    node_id_of_public_key(&public_key)
}

/// NodeId ↔ PeerId of every peer seen (connected, identified or found in the
/// DHT). Entries are only ever inserted from [`node_id_of_peer`], so the
/// mapping is exactly the cryptographic one.
#[derive(Debug, Default)]
pub(crate) struct PeerTable {
    by_node: HashMap<NodeId, PeerId>,
    by_peer: HashMap<PeerId, NodeId>,
}

impl PeerTable {
    /// Record `peer`; returns its NodeId when it has a secp256k1 identity.
    pub(crate) fn learn(&mut self, peer: &PeerId) -> Option<NodeId> {
        if let Some(node_id) = self.by_peer.get(peer) {
            return Some(*node_id);
        }
        let node_id = node_id_of_peer(peer)?;
        self.by_node.insert(node_id, *peer);
        self.by_peer.insert(*peer, node_id);
        Some(node_id)
    }

    pub(crate) fn peer_of(&self, node_id: &NodeId) -> Option<PeerId> {
        self.by_node.get(node_id).copied()
    }

    pub(crate) fn node_of(&self, peer: &PeerId) -> Option<NodeId> {
        self.by_peer
            .get(peer)
            .copied()
            .or_else(|| node_id_of_peer(peer))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_id_of_peer_matches_the_secret() {
        let secret = [7u8; 32];
        let peer = peer_id_of_secret(secret).expect("valid secret");
        let from_peer = node_id_of_peer(&peer).expect("secp256k1 peer");
        assert_eq!(Some(from_peer), node_id_of_secret(secret).ok());
    }

    #[test]
    fn known_vector() {
        // Private key 1: its Ethereum address is well known.
        let mut secret = [0u8; 32];
        secret[31] = 1;
        let peer = peer_id_of_secret(secret).expect("valid secret");
        let node_id = node_id_of_peer(&peer).expect("secp256k1 peer");
        assert_eq!(
            node_id.to_string(),
            "0x7e5f4552091a69125d5dfcb7b8c2659029395bdf"
        );
    }

    #[test]
    fn zero_secret_is_refused_and_random_peer_has_no_node_id() {
        assert!(keypair_from_secret([0u8; 32]).is_err());
        assert_eq!(node_id_of_peer(&PeerId::random()), None);
    }

    #[test]
    fn table_maps_both_ways() {
        let peer = peer_id_of_secret([9u8; 32]).expect("valid secret");
        let mut table = PeerTable::default();
        let node_id = table.learn(&peer).expect("secp256k1 peer");
        assert_eq!(table.peer_of(&node_id), Some(peer));
        assert_eq!(table.node_of(&peer), Some(node_id));
        assert_eq!(table.learn(&PeerId::random()), None);
    }
}
