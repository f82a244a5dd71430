//! The composed libp2p behaviour of a Golem node and how each part is tuned.
//!
//! Kademlia runs in server mode (nodes on private networks and loopback have
//! no confirmed external address, and automatic mode would make them invisible)
//! and is keyed by PeerId; each node also announces itself as the provider of
//! its NodeId key so that a NodeId never seen before can be resolved to a
//! PeerId (the answer is checked against the PeerId's own key). Gossipsub signs
//! every message with the origin's key, validates strictly and floods its own
//! publications to every subscribed peer, with a short heartbeat so meshes form
//! quickly on small networks.

use std::num::NonZeroUsize;
use std::time::Duration;

use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::swarm::NetworkBehaviour;
use libp2p::{
    connection_limits, dcutr, gossipsub, identify, identity::Keypair, kad, ping, relay,
    request_response, StreamProtocol,
};

use crate::config::NetConfig;
use crate::error::NetError;
use crate::protocol::{FrameCodec, CALL_PROTOCOL, ENVELOPE_OVERHEAD};

/// Protocol name of the Golem DHT (kept apart from the public IPFS DHT).
pub const KAD_PROTOCOL: StreamProtocol = StreamProtocol::new("/golem/kad/1");
/// Protocol version announced through identify.
pub const IDENTIFY_PROTOCOL: &str = "/golem/1";

#[derive(NetworkBehaviour)]
pub(crate) struct Behaviour {
    pub(crate) limits: connection_limits::Behaviour,
    pub(crate) identify: identify::Behaviour,
    pub(crate) ping: ping::Behaviour,
    pub(crate) kad: kad::Behaviour<kad::store::MemoryStore>,
    pub(crate) gossipsub: gossipsub::Behaviour,
    pub(crate) calls: request_response::Behaviour<FrameCodec>,
    pub(crate) relay_client: relay::client::Behaviour,
    pub(crate) relay_server: Toggle<relay::Behaviour>,
    pub(crate) dcutr: dcutr::Behaviour,
}

impl Behaviour {
    pub(crate) fn new(
        key: &Keypair,
        relay_client: relay::client::Behaviour,
        config: &NetConfig,
    ) -> Result<Self, NetError> {
        let peer_id = key.public().to_peer_id();

        let limits = connection_limits::Behaviour::new(
            connection_limits::ConnectionLimits::default()
                .with_max_established(Some(config.max_connections))
                .with_max_established_per_peer(Some(config.max_connections_per_peer))
                .with_max_pending_incoming(Some(config.max_connections))
                .with_max_pending_outgoing(Some(config.max_connections)),
        );

        let identify = identify::Behaviour::new(
            identify::Config::new(IDENTIFY_PROTOCOL.to_string(), key.public())
                .with_agent_version(config.agent_version.clone())
                .with_push_listen_addr_updates(true)
                .with_interval(Duration::from_secs(60)),
        );

        let ping = ping::Behaviour::new(
            ping::Config::new()
                .with_interval(config.ping_interval)
                .with_timeout(config.ping_interval.max(Duration::from_secs(5))),
        );

        let mut kad_config = kad::Config::new(KAD_PROTOCOL);
        kad_config
            .set_query_timeout(config.kad_query_timeout)
            // The node walks the DHT itself, at jittered times.
            .set_periodic_bootstrap_interval(None)
            .set_provider_record_ttl(Some(Duration::from_secs(24 * 3600)))
            .set_provider_publication_interval(Some(Duration::from_secs(3600)))
            .set_parallelism(NonZeroUsize::new(3).unwrap_or(NonZeroUsize::MIN));
        let mut kad =
            kad::Behaviour::with_config(peer_id, kad::store::MemoryStore::new(peer_id), kad_config);
        kad.set_mode(Some(kad::Mode::Server));

        let max_transmit = max_transmit(config);
        let gossip_config = gossip_config(config)?;
        let gossipsub = gossipsub::Behaviour::new(
            gossipsub::MessageAuthenticity::Signed(key.clone()),
            gossip_config,
        )
        .map_err(|error| NetError::Config(format!("gossipsub: {error}")))?;

        let calls = request_response::Behaviour::with_codec(
            FrameCodec::new(max_transmit),
            [(CALL_PROTOCOL, request_response::ProtocolSupport::Full)],
            request_response::Config::default()
                .with_request_timeout(config.call_timeout)
                .with_max_concurrent_streams(256),
        );

        let relay_server = Toggle::from(
            config
                .relay_server
                .then(|| relay::Behaviour::new(peer_id, relay::Config::default())),
        );

        Ok(Behaviour {
            limits,
            identify,
            ping,
            kad,
            gossipsub,
            calls,
            relay_client,
            relay_server,
            dcutr: dcutr::Behaviour::new(peer_id),
        })
    }
}

/// Largest frame on the wire, broadcast or call: a payload of
/// `max_message_size` in its envelope.
fn max_transmit(config: &NetConfig) -> usize {
    config.max_message_size + ENVELOPE_OVERHEAD
}

/// Messages above this size make their receiver tell its mesh peers not to
/// send them the same one (gossipsub 1.2's IDONTWANT). gossipsub sends that
/// notice for every copy received, duplicates included, to every mesh peer,
/// and its default threshold (1 kB) caught every offer broadcast: in the
/// settled 100-node lab with 20 providers each node sent ~50 notices per
/// offer broadcast, queues overflowed ("Send Queue full", 20,000 warnings
/// in four minutes on one node) and the idle lab kept a load average of 150
/// on 2 cores. Over 50 ms links a notice rarely arrives before the copy it
/// would stop, so only large broadcasts (many offers at once) still send it.
pub(crate) const IDONTWANT_THRESHOLD: usize = 64 * 1024;

/// The gossipsub settings of a node: a short heartbeat so meshes form fast,
/// flood publishing, and a small queue per peer ([`NetConfig::gossip_queue_len`]).
fn gossip_config(config: &NetConfig) -> Result<gossipsub::Config, NetError> {
    gossipsub::ConfigBuilder::default()
        .heartbeat_interval(config.gossip_heartbeat)
        .heartbeat_initial_delay(Duration::from_millis(100))
        .validation_mode(gossipsub::ValidationMode::Strict)
        .flood_publish(true)
        .mesh_n(6)
        .mesh_n_low(4)
        .mesh_n_high(12)
        .mesh_outbound_min(2)
        .gossip_lazy(6)
        .history_gossip(3)
        .duplicate_cache_time(Duration::from_secs(120))
        .max_transmit_size(max_transmit(config))
        .connection_handler_queue_len(config.gossip_queue_len)
        .idontwant_message_size_threshold(IDONTWANT_THRESHOLD)
        .build()
        .map_err(|error| NetError::Config(format!("gossipsub: {error}")))
}

#[cfg(test)]
mod gossip_config_tests {
    use super::*;

    #[test]
    fn a_peer_gets_the_configured_gossip_queue_not_gossipsubs_five_thousand() {
        let defaults = gossip_config(&NetConfig::default()).unwrap();
        assert_eq!(
            defaults.connection_handler_queue_len(),
            crate::config::GOSSIP_QUEUE_LEN
        );
        let per_peer_bytes = defaults.connection_handler_queue_len() / 2 * 260;
        assert!(
            per_peer_bytes <= 128 * 1024,
            "{per_peer_bytes} bytes resident per peer"
        );
        assert_eq!(
            defaults.idontwant_message_size_threshold(),
            IDONTWANT_THRESHOLD,
            "an offer broadcast of a few kB sends no IDONTWANT"
        );
        let custom = NetConfig {
            gossip_queue_len: 64,
            ..NetConfig::default()
        };
        assert_eq!(
            gossip_config(&custom)
                .unwrap()
                .connection_handler_queue_len(),
            64
        );
    }
}
