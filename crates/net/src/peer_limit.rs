//! Which connections to close when a node holds more peers than it wants.
//!
//! Every connection costs memory and a share of the node's chatter (about
//! 0.7 MiB and a gossip stream each, measured in the scale lab), and none
//! closes on its own: gossipsub keeps a long-lived stream to every peer that
//! speaks it, so libp2p's idle timeout never fires, and the DHT's random walks
//! end up connecting every node to nearly every other. Above a target count the
//! node closes the peers it used least recently, never one it relies on: a
//! gossip mesh peer, a bootstrap node, a relay, a peer with a call in flight or
//! waiting, or one used (or connected) within a grace period. Pure selection:
//! the node gathers the facts, asks [`peers_to_close`] and disconnects.

use std::time::Duration;

use libp2p::PeerId;
use tokio::time::Instant;

/// What the selection needs to know of one connected peer.
#[derive(Debug, Clone, Copy)]
pub struct ConnectedPeer {
    pub peer: PeerId,
    /// The last call to or from it, or when it connected.
    pub last_used: Instant,
    /// A mesh, bootstrap or relay peer, or one with a call in flight.
    pub protected: bool,
}

/// The peers to disconnect so that at most `target` stay connected, least
/// recently used first, skipping protected peers and those used within
/// `grace`. A target of 0 keeps everything. Protected peers count towards the
/// target, so a node with many of them closes all its other idle peers.
pub fn peers_to_close(
    connected: &[ConnectedPeer],
    target: usize,
    grace: Duration,
    now: Instant,
) -> Vec<PeerId> {
    if target == 0 || connected.len() <= target {
        return Vec::new();
    }
    let excess = connected.len() - target;
    let mut candidates: Vec<&ConnectedPeer> = connected
        .iter()
        .filter(|peer| !peer.protected && now.saturating_duration_since(peer.last_used) >= grace)
        .collect();
    candidates.sort_by_key(|peer| peer.last_used);
    candidates
        .into_iter()
        .take(excess)
        .map(|peer| peer.peer)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peers(now: Instant, ages_secs: &[(u64, bool)]) -> Vec<ConnectedPeer> {
        ages_secs
            .iter()
            .map(|&(age, protected)| ConnectedPeer {
                peer: PeerId::random(),
                last_used: now - Duration::from_secs(age),
                protected,
            })
            .collect()
    }

    #[test]
    fn nothing_is_closed_at_or_below_the_target_or_without_one() {
        let now = Instant::now();
        let connected = peers(now, &[(100, false), (200, false), (300, false)]);
        let grace = Duration::from_secs(10);
        assert!(peers_to_close(&connected, 3, grace, now).is_empty());
        assert!(peers_to_close(&connected, 5, grace, now).is_empty());
        assert!(peers_to_close(&connected, 0, grace, now).is_empty());
    }

    #[test]
    fn the_least_recently_used_go_first_down_to_the_target() {
        let now = Instant::now();
        let connected = peers(
            now,
            &[(100, false), (300, false), (200, false), (400, false)],
        );
        let closed = peers_to_close(&connected, 2, Duration::from_secs(10), now);
        assert_eq!(closed, vec![connected[3].peer, connected[1].peer]);
    }

    #[test]
    fn protected_and_recently_used_peers_stay_even_above_the_target() {
        let now = Instant::now();
        // Oldest is protected, one is inside the grace period: of the five,
        // only the two unprotected, idle ones may go, although the target asks
        // for four to go.
        let connected = peers(
            now,
            &[
                (900, true),
                (5, false),
                (300, false),
                (800, true),
                (200, false),
            ],
        );
        let closed = peers_to_close(&connected, 1, Duration::from_secs(10), now);
        assert_eq!(closed, vec![connected[2].peer, connected[4].peer]);
    }
}
