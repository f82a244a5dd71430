//! [`NetConfig`]: listen and bootstrap addresses, timeouts, limits and the
//! relay switches of a node. Defaults suit both a daemon and loopback tests.

use std::time::Duration;

use libp2p::Multiaddr;

/// Configuration of one network node.
#[derive(Debug, Clone)]
pub struct NetConfig {
    /// Addresses to listen on, e.g. `/ip4/0.0.0.0/tcp/11500` (`tcp/0` picks a port).
    pub listen: Vec<Multiaddr>,
    /// Nodes to join the network through, with or without `/p2p/<peer-id>`.
    pub bootstrap: Vec<Multiaddr>,
    /// Upper bound of a remote call, lookup and dial included.
    pub call_timeout: Duration,
    /// Maximum number of established connections (inbound + outbound).
    pub max_connections: u32,
    /// Maximum established connections per peer.
    pub max_connections_per_peer: u32,
    /// Act as a circuit relay (v2) for nodes behind NAT. Meant for nodes with a
    /// public address: unless `external_addrs` is set, the bound listen
    /// addresses are announced as external (relay clients need them).
    pub relay_server: bool,
    /// Relays (`.../p2p/<relay-peer-id>`) to reserve a slot on, so that nodes
    /// behind NAT become reachable through `/p2p-circuit` addresses.
    pub relays: Vec<Multiaddr>,
    /// Addresses this node is known to be reachable at from the outside
    /// (announced to peers, used by the relay server in reservations).
    pub external_addrs: Vec<Multiaddr>,
    /// Largest request, response or broadcast payload, in bytes.
    pub max_message_size: usize,
    /// How often to ping each connection; a connection whose ping fails is closed.
    pub ping_interval: Duration,
    /// Connected peers a node keeps: above this many, the least recently used
    /// peers that are not gossip mesh peers, bootstrap nodes or relays and carry
    /// no call are disconnected (they are dialed again when needed). 0 keeps
    /// every connection.
    pub target_peers: usize,
    /// A peer used (or connected) within this long is never closed for
    /// `target_peers`.
    pub peer_idle_grace: Duration,
    /// A peer that has carried no call since it connected (what a DHT walk,
    /// ours or the peer's, leaves behind) is kept only this long for
    /// `target_peers`.
    pub peer_uncalled_grace: Duration,
    /// Connections with no protocol in use are closed after this long.
    pub idle_connection_timeout: Duration,
    /// How often to refresh the DHT routing table, give or take a quarter at
    /// random for each walk (whose lookups are paced: [`crate::dht_walk`]).
    pub kad_bootstrap_interval: Duration,
    /// Timeout of a single DHT query.
    pub kad_query_timeout: Duration,
    /// Gossipsub heartbeat: mesh maintenance and lazy gossip period.
    pub gossip_heartbeat: Duration,
    /// Gossip messages queued per connected peer (half of them for
    /// publishing and forwarding, the other half-size queue of control
    /// messages is unbounded). gossipsub allocates and touches every slot of
    /// that queue when a peer connects (~260 bytes a slot), so its default of
    /// 5,000 costs ~0.6 MiB of resident heap per peer: at 100 nodes, 34 peers
    /// held 22 MiB. When a peer's queue is full, further messages to it are
    /// dropped; lazy gossip and the next announcement repair that.
    pub gossip_queue_len: usize,
    /// Capacity of each broadcast subscription queue; extra messages are dropped.
    pub subscription_queue: usize,
    /// Agent version announced through identify.
    pub agent_version: String,
    /// Told when connections have closed in a burst (the peer target's
    /// pruning of the start-up walk's ~N connections, a lost network): the
    /// allocator then gives the pages they freed back to the system. `None`
    /// keeps them (tests, embedders with their own allocator policy).
    pub heap_release: Option<golem_heap_trim::HeapRelease>,
}

impl Default for NetConfig {
    fn default() -> Self {
        NetConfig {
            listen: Vec::new(),
            bootstrap: Vec::new(),
            call_timeout: Duration::from_secs(30),
            max_connections: 256,
            max_connections_per_peer: 4,
            relay_server: false,
            relays: Vec::new(),
            external_addrs: Vec::new(),
            max_message_size: 4 * 1024 * 1024,
            ping_interval: Duration::from_secs(10),
            target_peers: 12,
            peer_idle_grace: Duration::from_secs(60),
            peer_uncalled_grace: Duration::from_secs(3),
            idle_connection_timeout: Duration::from_secs(300),
            // A paced walk dials ~160 peers anew (its lookups' peers are let
            // go between steps): every 300 s that cost a 100-node lab a
            // third of a core while the walks ran, and a job beside them
            // 42 tasks/s instead of 67.
            kad_bootstrap_interval: Duration::from_secs(600),
            kad_query_timeout: Duration::from_secs(10),
            gossip_heartbeat: Duration::from_millis(500),
            gossip_queue_len: GOSSIP_QUEUE_LEN,
            subscription_queue: 1024,
            agent_version: concat!("golem-net/", env!("CARGO_PKG_VERSION")).to_string(),
            heap_release: None,
        }
    }
}

/// Default of [`NetConfig::gossip_queue_len`]: 128 messages waiting for one
/// slow peer (~33 KB resident per peer). The market sends all of a node's
/// offers of a subnet as one broadcast, so an announcement is a message or
/// two per subnet; a DHT walk connects to most of a 100-node network for a
/// few seconds, and at 512 each of those ~90 peers held ~66 KB.
pub const GOSSIP_QUEUE_LEN: usize = 256;

impl NetConfig {
    /// A node listening on an ephemeral loopback TCP port: handy for tests.
    pub fn loopback() -> Self {
        NetConfig {
            listen: vec![Multiaddr::from(std::net::Ipv4Addr::LOCALHOST)
                .with(libp2p::multiaddr::Protocol::Tcp(0))],
            ..NetConfig::default()
        }
    }
}
