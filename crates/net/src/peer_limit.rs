//! Which connections to close when a node holds more peers than it wants.
//!
//! Every connection costs memory and a share of the node's chatter (about
//! 0.7 MiB and a gossip stream each, measured in the scale lab), and none
//! closes on its own: gossipsub keeps a long-lived stream to every peer that
//! speaks it, so libp2p's idle timeout never fires, and the DHT's random walks
//! end up connecting every node to nearly every other. Above a target count the
//! node closes the peers it used least recently, never one it relies on: a
//! gossip mesh peer, a bootstrap node, a relay, a peer with a call in flight or
//! waiting, or one used (or connected) within a grace period. That grace is
//! short for a peer that has carried no call since it connected: such
//! connections are what the DHT's walks leave behind (a walk touches most of
//! a small network), and keeping each of them for the long grace held ~90
//! peers per node at 100 nodes. Pure selection: the node gathers the facts,
//! asks [`peers_to_close`] and disconnects.

use std::time::Duration;

use libp2p::PeerId;
use tokio::time::Instant;

/// What the selection needs to know of one connected peer.
#[derive(Debug, Clone, Copy)]
pub struct ConnectedPeer {
    pub peer: PeerId,
    /// The last call to or from it, or when it connected.
    pub last_used: Instant,
    /// Whether a call went to or came from it since it connected.
    pub called: bool,
    /// A mesh, bootstrap or relay peer, or one with a call in flight.
    pub protected: bool,
}

/// How long a connected peer is kept whatever the target.
#[derive(Debug, Clone, Copy)]
pub struct Grace {
    /// After its last call.
    pub called: Duration,
    /// After it connected, for a peer that has carried no call since.
    pub uncalled: Duration,
}

impl Grace {
    fn of(&self, peer: &ConnectedPeer) -> Duration {
        if peer.called {
            self.called
        } else {
            self.uncalled
        }
    }

    /// The shorter of the two: how often the target is worth checking.
    pub fn shortest(&self) -> Duration {
        self.called.min(self.uncalled)
    }
}

/// The peers to disconnect so that at most `target` stay connected, least
/// recently used first, skipping protected peers and those still within their
/// `grace`. A target of 0 keeps everything. Protected peers count towards the
/// target, so a node with many of them closes all its other idle peers.
pub fn peers_to_close(
    connected: &[ConnectedPeer],
    target: usize,
    grace: Grace,
    now: Instant,
) -> Vec<PeerId> {
    if target == 0 || connected.len() <= target {
        return Vec::new();
    }
    let excess = connected.len() - target;
    let mut candidates: Vec<&ConnectedPeer> = connected
        .iter()
        .filter(|peer| {
            !peer.protected && now.saturating_duration_since(peer.last_used) >= grace.of(peer)
        })
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
                called: true,
                protected,
            })
            .collect()
    }

    fn grace(secs: u64) -> Grace {
        Grace {
            called: Duration::from_secs(secs),
            uncalled: Duration::from_secs(secs),
        }
    }

    #[test]
    fn nothing_is_closed_at_or_below_the_target_or_without_one() {
        let now = Instant::now();
        let connected = peers(now, &[(100, false), (200, false), (300, false)]);
        let grace = grace(10);
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
        let closed = peers_to_close(&connected, 2, grace(10), now);
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
        let closed = peers_to_close(&connected, 1, grace(10), now);
        assert_eq!(closed, vec![connected[2].peer, connected[4].peer]);
    }

    #[test]
    fn a_peer_that_carried_no_call_goes_after_the_shorter_grace() {
        let now = Instant::now();
        // Two peers connected 15 s ago: one a DHT walk left behind, one that
        // has carried a call since; and a protected one. The target of 1 asks
        // for two to go, but only the first is past its grace (10 s without
        // a call, 60 s after one).
        let mut connected = peers(now, &[(15, false), (15, false), (100, true)]);
        connected[0].called = false;
        let grace = Grace {
            called: Duration::from_secs(60),
            uncalled: Duration::from_secs(10),
        };
        assert_eq!(
            peers_to_close(&connected, 1, grace, now),
            vec![connected[0].peer]
        );
        assert_eq!(grace.shortest(), Duration::from_secs(10));
        // Checked 6 s earlier, when it was 9 s old, it stayed too.
        assert!(peers_to_close(&connected, 1, grace, now - Duration::from_secs(6)).is_empty());
    }
}
