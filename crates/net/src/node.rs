//! The swarm task: one tokio task per node owns the libp2p `Swarm` and serves
//! the commands of its [`NetHandle`]s, the swarm's events, the answers of
//! inbound handlers and a maintenance tick (short only while calls wait for
//! their peer).
//!
//! A call to a NodeId waits in `waiting` until a connection to its peer exists:
//! a NodeId seen before maps to its PeerId (so a dial plus a Kademlia
//! `FIND_NODE` for that PeerId find its current addresses, e.g. after a
//! restart on a new port); a NodeId never seen is first resolved through the
//! provider record each node publishes under its NodeId (answers are checked
//! against the PeerId's key). Lookups are retried until the call's deadline,
//! where the call fails with a clear error; sent calls are bounded by the same
//! deadline. Inbound calls are only served for `/public/...` addresses, with
//! the caller's NodeId derived from the authenticated connection.

use std::collections::{HashMap, HashSet};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use golem_model::{ErrorCode, GolemError, NodeId};
use libp2p::core::transport::ListenerId;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::{ConnectionId, SwarmEvent};
use libp2p::{
    gossipsub, identify, kad, noise, ping, relay, request_response, tcp, yamux, Multiaddr, PeerId,
    Swarm,
};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::behaviour::{Behaviour, BehaviourEvent, KAD_PROTOCOL};
use crate::config::NetConfig;
use crate::dht_walk::{DhtWalk, WalkStep};
use crate::error::NetError;
use crate::handle::{
    Broadcast, Command, InboundCall, InboundHandler, InboundStreamHandler, NetHandle, NetStatus,
    PeerStatus, RelayStatus, TopicStatus,
};
use crate::identity::{keypair_from_secret, node_id_of_public_key, PeerTable};
use crate::peer_limit::{peers_to_close, ConnectedPeer, Grace};
use crate::ping_strikes::{PingStrikes, PING_FAILURES_BEFORE_CLOSE};
use crate::protocol::{
    decode_request, StreamChunk, WirePull, WireReply, WireRequest, ENVELOPE_OVERHEAD,
};
use golem_heap_trim::BurstEnd;

/// How long to wait before retrying a lookup that did not find the node.
const LOOKUP_RETRY: Duration = Duration::from_millis(300);
/// How often to redial the bootstrap nodes while no peer is connected.
const BOOTSTRAP_REDIAL: Duration = Duration::from_secs(3);
/// Period of the maintenance tick (deadlines, retries, redials) while a call
/// waits for its peer to be found: lookups are retried [`LOOKUP_RETRY`] after
/// they fail, so the tick must be finer than that.
const BUSY_TICK: Duration = Duration::from_millis(25);
/// Period of the maintenance tick when no call waits for a peer: what is left
/// to do (deadlines of sent calls, idle streams, relays, the peer target,
/// bootstrap redials) bears a quarter of a second. An idle node woke 40 times
/// a second for the busy tick; a hundred of them in the lab share two cores.
const IDLE_TICK: Duration = Duration::from_millis(250);
/// How often the connected peers are checked against the target count.
const PEER_LIMIT_CHECK: Duration = Duration::from_secs(5);
/// Items a reply stream produces ahead of the caller's pulls.
const STREAM_BUFFER: usize = 64;
/// Open connections that make a burst worth giving memory back after: the
/// start-up walk connects to most of a lab (39 of 40) and the peer target
/// closes all but ~12 a minute later, leaving ~17 MiB free in the heap.
const BURST_CONNECTIONS: usize = 16;

/// Start a node: build the swarm from `secret`, bind `config.listen` (the
/// bound addresses are known when this returns), dial the bootstrap nodes and
/// spawn the swarm task. Must be called within a tokio runtime.
pub async fn start(
    secret: [u8; 32],
    config: NetConfig,
    inbound: InboundHandler,
) -> Result<NetHandle, NetError> {
    start_with_streams(secret, config, inbound, None).await
}

/// [`start`] with a handler for reply-stream calls ([`NetHandle::call_stream`]).
pub async fn start_with_streams(
    secret: [u8; 32],
    config: NetConfig,
    inbound: InboundHandler,
    stream_handler: Option<InboundStreamHandler>,
) -> Result<NetHandle, NetError> {
    let keypair = keypair_from_secret(secret)?;
    let local_node_id = node_id_of_public_key(&keypair.public())
        .ok_or_else(|| NetError::InvalidSecret("not a secp256k1 key".into()))?;
    if config.max_message_size == 0 || config.max_connections == 0 {
        return Err(NetError::Config(
            "max_message_size and max_connections must be positive".into(),
        ));
    }
    let max_frame = config.max_message_size + ENVELOPE_OVERHEAD;

    let behaviour_config = config.clone();
    let mut swarm = libp2p::SwarmBuilder::with_existing_identity(keypair)
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )
        .map_err(|error| NetError::Transport(error.to_string()))?
        .with_relay_client(noise::Config::new, yamux::Config::default)
        .map_err(|error| NetError::Transport(error.to_string()))?
        .with_behaviour(|key, relay_client| {
            Behaviour::new(key, relay_client, &behaviour_config)
                .map_err(|error| Box::new(error) as Box<dyn std::error::Error + Send + Sync>)
        })
        .map_err(|error| NetError::Config(error.to_string()))?
        .with_swarm_config(|swarm_config| {
            swarm_config
                .with_idle_connection_timeout(config.idle_connection_timeout)
                // A new stream (one per remote call) sends its protocol and its
                // first bytes together instead of waiting a round trip for the
                // protocol's confirmation: a call costs one round trip, not two.
                // Every stream offers exactly one protocol, which lazy
                // negotiation needs; V1 listeners understand it.
                .with_substream_upgrade_protocol_override(libp2p::core::upgrade::Version::V1Lazy)
        })
        .build();
    let local_peer_id = *swarm.local_peer_id();

    let mut listeners = HashSet::new();
    for addr in &config.listen {
        let listener = swarm
            .listen_on(addr.clone())
            .map_err(|error| NetError::Listen {
                addr: addr.clone(),
                reason: error.to_string(),
            })?;
        listeners.insert(listener);
    }
    for addr in &config.external_addrs {
        swarm.add_external_address(addr.clone());
    }

    let (commands_tx, commands) = mpsc::channel(1024);
    let (responses_tx, responses) = mpsc::unbounded_channel();
    let mut node = Node {
        swarm,
        local_node_id,
        local_peer_id,
        max_frame,
        inbound,
        stream_handler,
        streams: HashMap::new(),
        next_stream: 0,
        commands,
        responses_tx,
        responses,
        table: PeerTable::default(),
        peers: HashMap::new(),
        waiting: HashMap::new(),
        in_flight: HashMap::new(),
        lookups: HashMap::new(),
        topics: HashMap::new(),
        listen_addrs: Vec::new(),
        bootstrap: config.bootstrap.clone(),
        last_bootstrap_dial: Instant::now(),
        bootstrap_peers: config
            .bootstrap
            .iter()
            .filter_map(|addr| split_peer(addr).1)
            .collect(),
        last_peer_limit_check: Instant::now(),
        dht_walk: DhtWalk::new(config.kad_bootstrap_interval, Instant::now()),
        providing: false,
        reservations: HashSet::new(),
        relays: Vec::new(),
        last_relay_check: Instant::now(),
        last_maintenance: Instant::now(),
        ping_strikes: PingStrikes::default(),
        connection_burst: BurstEnd::new(BURST_CONNECTIONS, 2),
        config,
    };

    // Wait until each listener reports its bound address (or fails).
    let startup_deadline = Instant::now() + Duration::from_secs(5);
    while !listeners.is_empty() {
        let event =
            match tokio::time::timeout_at(startup_deadline, node.swarm.select_next_some()).await {
                Ok(event) => event,
                Err(_) => break,
            };
        match &event {
            SwarmEvent::NewListenAddr { listener_id, .. } => {
                listeners.remove(listener_id);
            }
            SwarmEvent::ListenerClosed { listener_id, .. }
            | SwarmEvent::ListenerError { listener_id, .. } => {
                listeners.remove(listener_id);
            }
            _ => {}
        }
        node.on_swarm_event(event);
    }
    if node.listen_addrs.is_empty() && !node.config.listen.is_empty() {
        return Err(NetError::NoListenAddress(node.config.listen.clone()));
    }

    for relay_addr in node.config.relays.clone() {
        match split_peer(&relay_addr).1 {
            Some(peer) => node.relays.push(Relay {
                peer,
                addr: relay_addr,
                listener: None,
            }),
            _ => tracing::warn!(relay = %relay_addr, "relay address lacks /p2p/<peer-id>: ignored"),
        }
    }
    node.maintain_relays();
    let key = provider_key(&local_node_id);
    if let Err(error) = node.swarm.behaviour_mut().kad.start_providing(key) {
        tracing::warn!(%error, "cannot store own provider record");
    }
    node.dial_bootstrap();

    tracing::info!(node_id = %local_node_id, peer_id = %local_peer_id, "network node started");
    let handle = NetHandle {
        commands: commands_tx,
        node_id: local_node_id,
        peer_id: local_peer_id,
        call_timeout: node.config.call_timeout,
        max_frame,
        subscription_queue: node.config.subscription_queue,
    };
    tokio::spawn(async move {
        let node_id = node.local_node_id;
        let shutdown_reply = node.run().await;
        tracing::info!(%node_id, "network node stopped");
        if let Some(reply) = shutdown_reply {
            let _ = reply.send(());
        }
    });
    Ok(handle)
}

/// Kademlia key under which a node provides itself, so its NodeId resolves.
fn provider_key(node_id: &NodeId) -> kad::RecordKey {
    let mut key = b"/golem/node/".to_vec();
    key.extend_from_slice(node_id.as_bytes());
    kad::RecordKey::new(&key)
}

/// `addr` without a trailing `/p2p/<peer-id>`, and that peer id if it had one.
fn split_peer(addr: &Multiaddr) -> (Multiaddr, Option<PeerId>) {
    let mut plain = addr.clone();
    match plain.pop() {
        Some(Protocol::P2p(peer)) => (plain, Some(peer)),
        _ => (addr.clone(), None),
    }
}

/// Remote addresses are only meaningful when they exist and are reachable;
/// loopback addresses of a peer are kept only when we reach it over loopback.
fn is_loopback(addr: &Multiaddr) -> bool {
    addr.iter().any(|protocol| match protocol {
        Protocol::Ip4(ip) => ip.is_loopback(),
        Protocol::Ip6(ip) => ip.is_loopback(),
        _ => false,
    })
}

/// Whether a remote may call `address`: only `/public/...`, without `.`/`..`
/// segments that could climb out of it.
pub(crate) fn is_public_address(address: &str) -> bool {
    address.starts_with("/public/")
        && address.len() > "/public/".len()
        && !address.split('/').any(|s| s == "." || s == "..")
}

fn encode_reply(result: &WireReply, max_frame: usize, max_message_size: usize) -> Vec<u8> {
    let encoded = serde_json::to_vec(result).map_err(|error| error.to_string());
    match encoded {
        Ok(bytes) if bytes.len() <= max_frame => bytes,
        Ok(bytes) => {
            let error = GolemError::new(
                ErrorCode::PayloadTooLarge,
                format!(
                    "reply of {} bytes exceeds the limit of {max_message_size} bytes",
                    bytes.len()
                ),
            );
            serde_json::to_vec(&WireReply::Err(error)).unwrap_or_default()
        }
        Err(error) => serde_json::to_vec(&WireReply::Err(GolemError::internal(format!(
            "cannot encode reply: {error}"
        ))))
        .unwrap_or_default(),
    }
}

struct PendingCall {
    address: String,
    message: String,
    request: Vec<u8>,
    deadline: Instant,
    reply: oneshot::Sender<WireReply>,
    /// How many times it was sent on a connection that closed before any
    /// answer (at most [`MAX_RESENDS`]).
    resends: u8,
}

/// Calls up to this size are sent once more when their connection closes
/// before any answer (the other side let go of it as idle while the call was
/// on its way: it never read it). Bigger ones (gftp chunks) fail as before;
/// the copy is kept only while the call is in flight.
const RESEND_MAX_BYTES: usize = 64 * 1024;

/// How many times a call is sent again after its connection closed before
/// any answer. More than once: while the peer limit trims a burst of
/// connections, two or more connections to one peer can close in a row.
const MAX_RESENDS: u8 = 3;

/// The copy of a call's request kept while it is in flight, to send again if
/// its connection closes before any answer: none once it was sent again
/// [`MAX_RESENDS`] times, nor for a request over [`RESEND_MAX_BYTES`].
fn copy_for_resend(resends: u8, request: &[u8]) -> Option<Vec<u8>> {
    (resends < MAX_RESENDS && request.len() <= RESEND_MAX_BYTES).then(|| request.to_vec())
}

#[derive(Default)]
struct Waiting {
    calls: Vec<PendingCall>,
    lookup: Option<kad::QueryId>,
    retry_at: Option<Instant>,
    last_error: Option<String>,
}

struct InFlight {
    node_id: NodeId,
    address: String,
    message: String,
    deadline: Instant,
    reply: oneshot::Sender<WireReply>,
    /// The request, to send once more if its connection closes before any
    /// answer ([`RESEND_MAX_BYTES`]); `None` once resent [`MAX_RESENDS`]
    /// times or when too big.
    resend: Option<Vec<u8>>,
    resends: u8,
}

#[derive(Clone, Copy)]
enum Lookup {
    Providers(NodeId),
    Peer(NodeId, PeerId),
}

#[derive(Default)]
struct PeerState {
    connections: HashMap<ConnectionId, Multiaddr>,
    listen_addrs: Vec<Multiaddr>,
    agent: Option<String>,
    /// When its current connections began (the first of them).
    connected_at: Option<Instant>,
    /// The last call to or from the peer.
    last_call: Option<Instant>,
}

impl PeerState {
    /// Whether a call went to or came from the peer since it connected.
    fn called(&self) -> bool {
        match (self.last_call, self.connected_at) {
            (Some(call), Some(connected)) => call >= connected,
            (Some(_), None) => true,
            (None, _) => false,
        }
    }

    /// The last call, or when it connected if that came later.
    fn last_used(&self) -> Option<Instant> {
        self.last_call.max(self.connected_at)
    }
}

type SharedReceiver = Arc<tokio::sync::Mutex<mpsc::Receiver<WireReply>>>;

/// A reply stream being served, keyed by (caller, stream id).
struct ReplyStream {
    receiver: SharedReceiver,
    last_used: Instant,
}

struct Subscription {
    name: String,
    senders: Vec<mpsc::Sender<Broadcast>>,
}

type InboundDone = (request_response::ResponseChannel<Vec<u8>>, Vec<u8>);

struct Node {
    swarm: Swarm<Behaviour>,
    config: NetConfig,
    local_node_id: NodeId,
    local_peer_id: PeerId,
    max_frame: usize,
    inbound: InboundHandler,
    stream_handler: Option<InboundStreamHandler>,
    streams: HashMap<(NodeId, u64), ReplyStream>,
    next_stream: u64,
    commands: mpsc::Receiver<Command>,
    responses_tx: mpsc::UnboundedSender<InboundDone>,
    responses: mpsc::UnboundedReceiver<InboundDone>,
    table: PeerTable,
    peers: HashMap<PeerId, PeerState>,
    waiting: HashMap<NodeId, Waiting>,
    in_flight: HashMap<request_response::OutboundRequestId, InFlight>,
    lookups: HashMap<kad::QueryId, Lookup>,
    topics: HashMap<gossipsub::TopicHash, Subscription>,
    listen_addrs: Vec<Multiaddr>,
    bootstrap: Vec<Multiaddr>,
    last_bootstrap_dial: Instant,
    /// Peers reached through a bootstrap address (never closed for the peer limit).
    bootstrap_peers: HashSet<PeerId>,
    last_peer_limit_check: Instant,
    /// When to walk the DHT next ([`NetConfig::kad_bootstrap_interval`],
    /// jittered), and the steps of the walk under way.
    dht_walk: DhtWalk,
    providing: bool,
    reservations: HashSet<PeerId>,
    relays: Vec<Relay>,
    last_relay_check: Instant,
    /// When the maintenance tick last ran.
    last_maintenance: Instant,
    /// Failed pings in a row per connection (closed after a few, not one).
    ping_strikes: PingStrikes,
    /// When a burst of established connections has ended (at half its
    /// peak): then `config.heap_release` is asked to trim.
    connection_burst: BurstEnd,
}

/// A relay this node keeps a reservation on (listening through it).
struct Relay {
    peer: PeerId,
    addr: Multiaddr,
    listener: Option<ListenerId>,
}

impl Node {
    /// Serve until shut down (returns the shutdown acknowledgement to send once
    /// the swarm is dropped) or until every handle is gone.
    async fn run(mut self) -> Option<oneshot::Sender<()>> {
        let tick = tokio::time::sleep(IDLE_TICK);
        tokio::pin!(tick);
        loop {
            // The next tick follows the last one by the period that fits now:
            // a call that starts waiting for its peer brings it forward.
            let due = self.last_maintenance + self.tick_period();
            if due != tick.deadline() {
                tick.as_mut().reset(due);
            }
            tokio::select! {
                command = self.commands.recv() => match command {
                    Some(Command::Shutdown { reply }) => {
                        self.fail_everything("the network layer is shutting down");
                        return Some(reply);
                    }
                    Some(command) => self.on_command(command),
                    None => {
                        self.fail_everything("the network layer is shutting down");
                        return None;
                    }
                },
                event = self.swarm.select_next_some() => self.on_swarm_event(event),
                Some((channel, bytes)) = self.responses.recv() => {
                    if self.swarm.behaviour_mut().calls.send_response(channel, bytes).is_err() {
                        tracing::debug!("caller went away before the reply could be sent");
                    }
                }
                _ = &mut tick => {
                    self.maintain();
                    self.last_maintenance = Instant::now();
                }
            }
        }
    }

    /// How long until the next maintenance: short while calls wait for a peer.
    fn tick_period(&self) -> Duration {
        if self.waiting.is_empty() {
            IDLE_TICK
        } else {
            BUSY_TICK
        }
    }

    fn fail_everything(&mut self, reason: &str) {
        for (_, waiting) in self.waiting.drain() {
            for call in waiting.calls {
                let _ = call.reply.send(Err(GolemError::unavailable(reason)));
            }
        }
        for (_, in_flight) in self.in_flight.drain() {
            let _ = in_flight.reply.send(Err(GolemError::unavailable(reason)));
        }
    }

    // ---------------------------------------------------------------- commands

    fn on_command(&mut self, command: Command) {
        match command {
            Command::Call {
                to,
                address,
                message,
                request,
                deadline,
                reply,
            } => self.start_call(
                to,
                PendingCall {
                    address,
                    message,
                    request,
                    deadline,
                    reply,
                    resends: 0,
                },
            ),
            Command::Publish {
                topic,
                payload,
                reply,
            } => {
                let _ = reply.send(self.publish(&topic, payload));
            }
            Command::Subscribe {
                topic,
                sender,
                reply,
            } => {
                let _ = reply.send(self.subscribe(topic, sender));
            }
            Command::Status { reply } => {
                let _ = reply.send(self.status());
            }
            Command::ConnectedNodes { reply } => {
                let connected = self
                    .connected_peers()
                    .filter_map(|(peer, _)| self.table.node_of(peer))
                    .collect();
                let _ = reply.send(connected);
            }
            Command::Shutdown { .. } => {}
        }
    }

    fn start_call(&mut self, to: NodeId, pending: PendingCall) {
        if to == self.local_node_id {
            let caller = self.local_node_id;
            self.serve_locally(caller, pending);
            return;
        }
        if let Some(peer) = self.table.peer_of(&to) {
            if self.swarm.is_connected(&peer) {
                self.send_call(to, peer, pending);
                return;
            }
        }
        tracing::debug!(node_id = %to, "calling a node that is not connected: looking it up");
        self.waiting.entry(to).or_default().calls.push(pending);
        self.resolve(to);
    }

    /// A call to ourselves is served like a remote one, without the network.
    fn serve_locally(&mut self, caller: NodeId, pending: PendingCall) {
        let answer = self.serve(caller, &pending.request);
        let reply = pending.reply;
        tokio::spawn(async move {
            let _ = reply.send(answer.await);
        });
    }

    fn send_call(&mut self, node_id: NodeId, peer: PeerId, pending: PendingCall) {
        if pending.reply.is_closed() {
            return;
        }
        let PendingCall {
            address,
            message,
            request,
            deadline,
            reply,
            resends,
        } = pending;
        let resend = copy_for_resend(resends, &request);
        let request_id = self
            .swarm
            .behaviour_mut()
            .calls
            .send_request(&peer, request);
        tracing::trace!(%node_id, %peer, %address, %message, "call sent");
        self.used(&peer);
        self.in_flight.insert(
            request_id,
            InFlight {
                node_id,
                address,
                message,
                deadline,
                reply,
                resend,
                resends,
            },
        );
    }

    /// Find a way to the peer of `node_id` for its waiting calls.
    fn resolve(&mut self, node_id: NodeId) {
        let Some(waiting) = self.waiting.get(&node_id) else {
            return;
        };
        if waiting.lookup.is_some() {
            return;
        }
        let query = match self.table.peer_of(&node_id) {
            Some(peer) => {
                if self.swarm.is_connected(&peer) {
                    self.flush(node_id, peer);
                    return;
                }
                let opts = DialOpts::peer_id(peer)
                    .condition(PeerCondition::DisconnectedAndNotDialing)
                    .build();
                if let Err(error) = self.swarm.dial(opts) {
                    tracing::debug!(%node_id, %peer, %error, "no direct dial possible yet");
                }
                let query = self.swarm.behaviour_mut().kad.get_closest_peers(peer);
                self.lookups.insert(query, Lookup::Peer(node_id, peer));
                query
            }
            None => {
                let query = self
                    .swarm
                    .behaviour_mut()
                    .kad
                    .get_providers(provider_key(&node_id));
                self.lookups.insert(query, Lookup::Providers(node_id));
                query
            }
        };
        if let Some(waiting) = self.waiting.get_mut(&node_id) {
            waiting.lookup = Some(query);
            waiting.retry_at = None;
        }
    }

    /// Send the waiting calls of `node_id` now that `peer` is connected.
    fn flush(&mut self, node_id: NodeId, peer: PeerId) {
        let Some(waiting) = self.waiting.remove(&node_id) else {
            return;
        };
        if let Some(query) = waiting.lookup {
            self.lookups.remove(&query);
            if let Some(mut running) = self.swarm.behaviour_mut().kad.query_mut(&query) {
                running.finish();
            }
        }
        for pending in waiting.calls {
            self.send_call(node_id, peer, pending);
        }
    }

    /// A lookup ended without a connection: try again later (until deadline).
    fn lookup_failed(&mut self, node_id: NodeId, query: kad::QueryId, reason: String) {
        if let Some(waiting) = self.waiting.get_mut(&node_id) {
            if waiting.lookup == Some(query) {
                waiting.lookup = None;
                waiting.retry_at = Some(Instant::now() + LOOKUP_RETRY);
                waiting.last_error = Some(reason);
            }
        }
    }

    /// A new peer became known: serve calls that were waiting for its NodeId.
    fn on_peer_learned(&mut self, peer: PeerId) {
        let Some(node_id) = self.table.learn(&peer) else {
            return;
        };
        let Some(waiting) = self.waiting.get_mut(&node_id) else {
            return;
        };
        if self.swarm.is_connected(&peer) {
            self.flush(node_id, peer);
            return;
        }
        if let Some(query) = waiting.lookup {
            if matches!(self.lookups.get(&query), Some(Lookup::Providers(_))) {
                waiting.lookup = None;
                self.lookups.remove(&query);
                self.resolve(node_id);
            }
        }
    }

    fn publish(&mut self, topic: &str, payload: Vec<u8>) -> Result<(), GolemError> {
        if payload.len() > self.config.max_message_size {
            return Err(GolemError::new(
                ErrorCode::PayloadTooLarge,
                format!(
                    "broadcast of {} bytes exceeds the limit of {} bytes",
                    payload.len(),
                    self.config.max_message_size
                ),
            ));
        }
        let topic_hash = gossipsub::IdentTopic::new(topic);
        match self
            .swarm
            .behaviour_mut()
            .gossipsub
            .publish(topic_hash, payload)
        {
            Ok(id) => {
                tracing::debug!(%topic, message_id = %id, "broadcast published");
                Ok(())
            }
            Err(gossipsub::PublishError::NoPeersSubscribedToTopic) => Err(GolemError::unavailable(
                format!("no peer subscribes to topic {topic} yet"),
            )),
            Err(gossipsub::PublishError::Duplicate) => Err(GolemError::conflict(format!(
                "the same broadcast was already published on topic {topic}"
            ))),
            Err(gossipsub::PublishError::MessageTooLarge) => Err(GolemError::new(
                ErrorCode::PayloadTooLarge,
                format!("broadcast on topic {topic} is too large"),
            )),
            Err(error) => Err(GolemError::unavailable(format!(
                "cannot publish on topic {topic}: {error}"
            ))),
        }
    }

    fn subscribe(
        &mut self,
        topic: String,
        sender: mpsc::Sender<Broadcast>,
    ) -> Result<(), GolemError> {
        let ident = gossipsub::IdentTopic::new(topic.clone());
        let hash = ident.hash();
        if let Some(subscription) = self.topics.get_mut(&hash) {
            subscription.senders.push(sender);
            return Ok(());
        }
        self.swarm
            .behaviour_mut()
            .gossipsub
            .subscribe(&ident)
            .map_err(|error| {
                GolemError::internal(format!("cannot subscribe to topic {topic}: {error}"))
            })?;
        tracing::debug!(%topic, "subscribed");
        self.topics.insert(
            hash,
            Subscription {
                name: topic,
                senders: vec![sender],
            },
        );
        Ok(())
    }

    fn status(&mut self) -> NetStatus {
        let node_of = |table: &PeerTable, peer: &PeerId| table.node_of(peer);
        let mut connected: Vec<PeerStatus> = self
            .connected_peers()
            .map(|(peer, state)| PeerStatus {
                peer_id: peer.to_string(),
                node_id: node_of(&self.table, peer),
                addrs: state
                    .connections
                    .values()
                    .chain(state.listen_addrs.iter())
                    .map(|a| a.to_string())
                    .collect(),
                agent: state.agent.clone(),
            })
            .collect();
        connected.sort_by(|a, b| a.peer_id.cmp(&b.peer_id));
        let mut known_peers = Vec::new();
        for bucket in self.swarm.behaviour_mut().kad.kbuckets() {
            for entry in bucket.iter() {
                let peer = *entry.node.key.preimage();
                known_peers.push(PeerStatus {
                    peer_id: peer.to_string(),
                    node_id: node_of(&self.table, &peer),
                    addrs: entry.node.value.iter().map(|a| a.to_string()).collect(),
                    agent: None,
                });
            }
        }
        let gossipsub = &self.swarm.behaviour().gossipsub;
        let mut topic_peers: HashMap<gossipsub::TopicHash, Vec<NodeId>> = HashMap::new();
        for (peer, topics) in gossipsub.all_peers() {
            if let Some(node_id) = node_of(&self.table, peer) {
                for topic in topics {
                    topic_peers.entry(topic.clone()).or_default().push(node_id);
                }
            }
        }
        let mut topics: Vec<TopicStatus> = topic_peers
            .keys()
            .chain(self.topics.keys())
            .collect::<HashSet<_>>()
            .into_iter()
            .map(|hash| TopicStatus {
                topic: self
                    .topics
                    .get(hash)
                    .map(|s| s.name.clone())
                    .unwrap_or_else(|| hash.to_string()),
                subscribed: self.topics.contains_key(hash),
                peers: topic_peers.get(hash).cloned().unwrap_or_default(),
                mesh_peers: gossipsub
                    .mesh_peers(hash)
                    .filter_map(|peer| node_of(&self.table, peer))
                    .collect(),
            })
            .collect();
        topics.sort_by(|a, b| a.topic.cmp(&b.topic));
        let relayed_addrs = self
            .listen_addrs
            .iter()
            .filter(|addr| addr.iter().any(|p| matches!(p, Protocol::P2pCircuit)))
            .map(|a| a.to_string())
            .collect();
        NetStatus {
            node_id: self.local_node_id,
            peer_id: self.local_peer_id.to_string(),
            listen_addrs: self.listen_addrs.iter().map(|a| a.to_string()).collect(),
            external_addrs: self
                .swarm
                .external_addresses()
                .map(|a| a.to_string())
                .collect(),
            connected,
            known_peers,
            topics,
            relay: RelayStatus {
                server: self.config.relay_server,
                reservations: self.reservations.iter().map(|p| p.to_string()).collect(),
                relayed_addrs,
            },
        }
    }

    // ------------------------------------------------------------- maintenance

    fn maintain(&mut self) {
        let now = Instant::now();
        let timeout = self.config.call_timeout;
        let mut retry = Vec::new();
        for (node_id, waiting) in self.waiting.iter_mut() {
            let peer = self.table.peer_of(node_id);
            let (expired, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut waiting.calls)
                .into_iter()
                .filter(|pending| !pending.reply.is_closed())
                .partition(|pending| pending.deadline <= now);
            waiting.calls = kept;
            for pending in expired {
                let reason = match (peer, &waiting.last_error) {
                    (None, _) => format!("node {node_id} not found in the network"),
                    (Some(_), Some(error)) => format!("node {node_id} is unreachable ({error})"),
                    (Some(_), None) => format!("node {node_id} is unreachable"),
                };
                tracing::debug!(%node_id, address = %pending.address, %reason, "call failed");
                let _ = pending.reply.send(Err(GolemError::unavailable(format!(
                    "{reason}: call {} to {} gave up after {timeout:?}",
                    pending.message, pending.address
                ))));
            }
            if !waiting.calls.is_empty()
                && waiting.lookup.is_none()
                && waiting.retry_at.is_some_and(|at| at <= now)
            {
                retry.push(*node_id);
            }
        }
        let mut abandoned = Vec::new();
        self.waiting.retain(|_, waiting| {
            if waiting.calls.is_empty() {
                abandoned.extend(waiting.lookup);
                false
            } else {
                true
            }
        });
        for query in abandoned {
            self.lookups.remove(&query);
        }
        for node_id in retry {
            self.resolve(node_id);
        }

        let expired: Vec<_> = self
            .in_flight
            .iter()
            .filter(|(_, in_flight)| in_flight.deadline <= now || in_flight.reply.is_closed())
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            if let Some(in_flight) = self.in_flight.remove(&id) {
                let _ = in_flight.reply.send(Err(GolemError::timeout(format!(
                    "node {} did not answer call {} to {} within {timeout:?}",
                    in_flight.node_id, in_flight.message, in_flight.address
                ))));
            }
        }

        let idle = self.config.call_timeout * 2;
        self.streams.retain(|_, stream| {
            let finished = stream
                .receiver
                .try_lock()
                .is_ok_and(|receiver| receiver.is_closed() && receiver.is_empty());
            !finished && stream.last_used.elapsed() < idle
        });

        if self.last_relay_check.elapsed() >= BOOTSTRAP_REDIAL {
            self.maintain_relays();
        }

        if self.last_peer_limit_check.elapsed()
            >= PEER_LIMIT_CHECK.min(self.peer_grace().shortest())
        {
            self.limit_peers();
        }

        if self.dht_walk.walk_due(Instant::now()) {
            self.walk_dht();
        }
        if let Some(step) = self.dht_walk.step_due(Instant::now()) {
            self.run_walk_step(step);
        }

        if self
            .peers
            .values()
            .all(|state| state.connections.is_empty())
            && !self.bootstrap.is_empty()
            && self.last_bootstrap_dial.elapsed() >= BOOTSTRAP_REDIAL
        {
            self.dial_bootstrap();
        }
    }

    /// Once a burst of connections has closed, ask for the heap pages they
    /// freed to be given back (on the release thread, after the closing ends).
    fn release_heap_after_a_burst(&mut self) {
        let peak = self.connection_burst.peak();
        let open = self.open_connections();
        if self.connection_burst.closed(open) {
            if let Some(heap_release) = &self.config.heap_release {
                tracing::debug!(
                    peak,
                    open,
                    "a burst of connections closed: releasing the heap's free pages"
                );
                heap_release.request();
            }
        }
    }

    /// The peers with at least one established connection.
    fn connected_peers(&self) -> impl Iterator<Item = (&PeerId, &PeerState)> {
        self.peers
            .iter()
            .filter(|(_, state)| !state.connections.is_empty())
    }

    /// Established connections, to every peer.
    fn open_connections(&self) -> usize {
        self.peers
            .values()
            .map(|state| state.connections.len())
            .sum()
    }

    /// A call went to or came from `peer`: it is in use.
    fn used(&mut self, peer: &PeerId) {
        if let Some(state) = self.peers.get_mut(peer) {
            state.last_call = Some(Instant::now());
        }
    }

    /// Whether `remote` is one of the configured bootstrap addresses (with or
    /// without its `/p2p/` part).
    fn is_bootstrap_address(&self, remote: &Multiaddr) -> bool {
        self.bootstrap
            .iter()
            .any(|addr| addr == remote || split_peer(addr).0 == *remote)
    }

    /// How long connected peers are kept whatever the target.
    fn peer_grace(&self) -> Grace {
        Grace {
            called: self.config.peer_idle_grace,
            uncalled: self.config.peer_uncalled_grace,
        }
    }

    /// Start refreshing the DHT routing table (see [`crate::dht_walk`]: its
    /// steps then run on the maintenance tick).
    fn walk_dht(&mut self) {
        if !self.providing {
            // Not in the DHT yet: the first identified peer starts the walk.
            return;
        }
        let closest_bucket = self
            .swarm
            .behaviour_mut()
            .kad
            .kbuckets()
            .next()
            .and_then(|bucket| bucket.range().0.ilog2());
        self.dht_walk
            .start(self.local_peer_id, closest_bucket, Instant::now());
        tracing::debug!(steps = self.dht_walk.remaining(), "DHT walk started");
    }

    fn run_walk_step(&mut self, step: WalkStep) {
        let kad = &mut self.swarm.behaviour_mut().kad;
        match step {
            WalkStep::Lookup(key) => {
                kad.get_closest_peers(key);
            }
            WalkStep::Provide => {
                if let Err(error) = kad.start_providing(provider_key(&self.local_node_id)) {
                    tracing::warn!(%error, "cannot announce own provider record");
                }
            }
        }
    }

    /// Above `target_peers` connected peers, close the least recently used
    /// ones the node does not rely on (see [`crate::peer_limit`]).
    fn limit_peers(&mut self) {
        self.last_peer_limit_check = Instant::now();
        let target = self.config.target_peers;
        let connected_count = self.connected_peers().count();
        if target == 0 || connected_count <= target {
            return;
        }
        let mut protected: HashSet<PeerId> = self
            .swarm
            .behaviour()
            .gossipsub
            .all_mesh_peers()
            .copied()
            .collect();
        protected.extend(self.bootstrap_peers.iter().copied());
        protected.extend(self.relays.iter().map(|relay| relay.peer));
        protected.extend(self.reservations.iter().copied());
        let busy_nodes = self
            .in_flight
            .values()
            .map(|in_flight| in_flight.node_id)
            .chain(self.waiting.keys().copied())
            .chain(self.streams.keys().map(|(caller, _)| *caller));
        protected.extend(busy_nodes.filter_map(|node_id| self.table.peer_of(&node_id)));
        let now = Instant::now();
        let connected: Vec<ConnectedPeer> = self
            .connected_peers()
            .map(|(peer, state)| ConnectedPeer {
                peer: *peer,
                last_used: state.last_used().unwrap_or(now),
                called: state.called(),
                protected: protected.contains(peer),
            })
            .collect();
        let closing = peers_to_close(&connected, target, self.peer_grace(), now);
        if !closing.is_empty() {
            tracing::debug!(
                connected = connected.len(),
                target,
                closing = closing.len(),
                "closing idle connections above the peer target"
            );
        }
        for peer in closing {
            let _ = self.swarm.disconnect_peer_id(peer);
        }
    }

    /// Listen through each configured relay once connected to it (dialing it
    /// otherwise); a closed relay listener is reopened here later.
    fn maintain_relays(&mut self) {
        self.last_relay_check = Instant::now();
        for index in 0..self.relays.len() {
            let (peer, addr) = (self.relays[index].peer, self.relays[index].addr.clone());
            if self.relays[index].listener.is_some() {
                continue;
            }
            if self.swarm.is_connected(&peer) {
                match self
                    .swarm
                    .listen_on(addr.clone().with(Protocol::P2pCircuit))
                {
                    Ok(listener) => self.relays[index].listener = Some(listener),
                    Err(error) => {
                        tracing::warn!(relay = %addr, %error, "cannot listen through relay")
                    }
                }
            } else {
                let opts = DialOpts::peer_id(peer)
                    .addresses(vec![addr.clone()])
                    .condition(PeerCondition::DisconnectedAndNotDialing)
                    .build();
                if let Err(error) = self.swarm.dial(opts) {
                    tracing::debug!(relay = %addr, %error, "relay not dialed");
                }
            }
        }
    }

    fn dial_bootstrap(&mut self) {
        self.last_bootstrap_dial = Instant::now();
        for addr in self.bootstrap.clone() {
            let (plain, peer) = split_peer(&addr);
            let opts = match peer {
                Some(peer) if peer == self.local_peer_id => continue,
                Some(peer) => {
                    self.swarm.behaviour_mut().kad.add_address(&peer, plain);
                    DialOpts::peer_id(peer)
                        .addresses(vec![addr.clone()])
                        .condition(PeerCondition::DisconnectedAndNotDialing)
                        .build()
                }
                None => DialOpts::unknown_peer_id().address(addr.clone()).build(),
            };
            if let Err(error) = self.swarm.dial(opts) {
                tracing::warn!(bootstrap = %addr, %error, "cannot dial bootstrap node");
            }
        }
    }

    // ------------------------------------------------------------ swarm events

    fn on_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::NewListenAddr { address, .. } => {
                tracing::info!(node_id = %self.local_node_id, %address, "listening");
                // A relay must tell its clients where it is reachable; unless
                // told otherwise, a relay server takes its bound addresses.
                let relayed = address.iter().any(|p| matches!(p, Protocol::P2pCircuit));
                if self.config.relay_server && self.config.external_addrs.is_empty() && !relayed {
                    self.swarm.add_external_address(address.clone());
                }
                if !self.listen_addrs.contains(&address) {
                    self.listen_addrs.push(address);
                }
            }
            SwarmEvent::ExpiredListenAddr { address, .. } => {
                tracing::info!(%address, "listen address expired");
                self.listen_addrs.retain(|a| a != &address);
            }
            SwarmEvent::ListenerClosed {
                listener_id,
                addresses,
                reason,
            } => {
                tracing::warn!(?addresses, ?reason, "listener closed");
                for relay in self
                    .relays
                    .iter_mut()
                    .filter(|relay| relay.listener == Some(listener_id))
                {
                    relay.listener = None;
                    self.reservations.remove(&relay.peer);
                }
                self.listen_addrs.retain(|a| !addresses.contains(a));
            }
            SwarmEvent::ListenerError { error, .. } => tracing::warn!(%error, "listener error"),
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                ..
            } => {
                let remote = endpoint.get_remote_address().clone();
                tracing::debug!(peer = %peer_id, node_id = ?self.table.node_of(&peer_id), %remote, "connection established");
                if endpoint.is_dialer() && self.is_bootstrap_address(&remote) {
                    self.bootstrap_peers.insert(peer_id);
                }
                let state = self.peers.entry(peer_id).or_default();
                if state.connections.is_empty() {
                    state.connected_at = Some(Instant::now());
                }
                state.connections.insert(connection_id, remote);
                let open = self.open_connections();
                self.connection_burst.opened(open);
                if self
                    .relays
                    .iter()
                    .any(|relay| relay.peer == peer_id && relay.listener.is_none())
                {
                    self.maintain_relays();
                }
                self.on_peer_learned(peer_id);
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                connection_id,
                num_established,
                cause,
                ..
            } => {
                tracing::debug!(peer = %peer_id, ?cause, remaining = num_established, "connection closed");
                self.ping_strikes.closed(connection_id);
                if let Some(state) = self.peers.get_mut(&peer_id) {
                    state.connections.remove(&connection_id);
                }
                self.release_heap_after_a_burst();
            }
            SwarmEvent::OutgoingConnectionError { peer_id, error, .. } => {
                tracing::debug!(peer = ?peer_id, %error, "dial failed");
                if let Some(peer) = peer_id {
                    if let Some(node_id) = self.table.node_of(&peer) {
                        if let Some(waiting) = self.waiting.get_mut(&node_id) {
                            waiting.last_error = Some(format!("dial failed: {error}"));
                            if waiting.lookup.is_none() && waiting.retry_at.is_none() {
                                waiting.retry_at = Some(Instant::now() + LOOKUP_RETRY);
                            }
                        }
                    }
                }
            }
            SwarmEvent::IncomingConnectionError {
                send_back_addr,
                error,
                ..
            } => {
                tracing::debug!(%send_back_addr, %error, "incoming connection failed");
            }
            SwarmEvent::ExternalAddrConfirmed { address } => {
                tracing::info!(%address, "external address confirmed")
            }
            SwarmEvent::Behaviour(event) => self.on_behaviour_event(event),
            _ => {}
        }
    }

    fn on_behaviour_event(&mut self, event: BehaviourEvent) {
        match event {
            BehaviourEvent::Identify(event) => self.on_identify(event),
            BehaviourEvent::Ping(ping::Event {
                peer,
                connection,
                result,
            }) => match result {
                Err(ping::Failure::Unsupported) => {
                    tracing::debug!(%peer, "peer does not answer pings")
                }
                Err(error) => {
                    if self.ping_strikes.failed(connection) {
                        tracing::warn!(%peer, %error, failures = PING_FAILURES_BEFORE_CLOSE,
                            "pings failed in a row: closing the connection");
                        self.swarm.close_connection(connection);
                    } else {
                        tracing::debug!(%peer, %error, "ping failed");
                    }
                }
                Ok(rtt) => {
                    self.ping_strikes.answered(connection);
                    tracing::trace!(%peer, ?rtt, "ping");
                }
            },
            BehaviourEvent::Kad(event) => self.on_kad(event),
            BehaviourEvent::Gossipsub(event) => self.on_gossip(event),
            BehaviourEvent::Calls(event) => self.on_calls(event),
            BehaviourEvent::RelayClient(event) => match event {
                relay::client::Event::ReservationReqAccepted {
                    relay_peer_id,
                    renewal,
                    ..
                } => {
                    tracing::info!(relay = %relay_peer_id, renewal, "relay reservation accepted");
                    self.reservations.insert(relay_peer_id);
                }
                other => tracing::debug!(event = ?other, "relay client"),
            },
            BehaviourEvent::RelayServer(event) => tracing::debug!(?event, "relay server"),
            BehaviourEvent::Dcutr(event) => tracing::debug!(?event, "hole punching"),
            BehaviourEvent::Limits(never) => match never {},
        }
    }

    fn on_identify(&mut self, event: identify::Event) {
        let (peer_id, info) = match event {
            identify::Event::Received { peer_id, info, .. }
            | identify::Event::Pushed { peer_id, info, .. } => (peer_id, info),
            _ => return,
        };
        if info.public_key.to_peer_id() != peer_id {
            return;
        }
        let over_loopback = self
            .peers
            .get(&peer_id)
            .is_some_and(|state| state.connections.values().any(is_loopback));
        let addrs: Vec<Multiaddr> = info
            .listen_addrs
            .into_iter()
            .filter(|addr| over_loopback || !is_loopback(addr))
            .collect();
        let speaks_kad = info.protocols.contains(&KAD_PROTOCOL);
        tracing::debug!(peer = %peer_id, agent = %info.agent_version, ?addrs, speaks_kad, "peer identified");
        let state = self.peers.entry(peer_id).or_default();
        state.listen_addrs = addrs.clone();
        state.agent = Some(info.agent_version);
        if speaks_kad {
            let kad = &mut self.swarm.behaviour_mut().kad;
            for addr in addrs {
                kad.add_address(&peer_id, addr);
            }
            if !self.providing {
                // First peer in the routing table: join the DHT and announce ourselves.
                self.providing = true;
                if let Err(error) = self.swarm.behaviour_mut().kad.bootstrap() {
                    tracing::debug!(%error, "kademlia bootstrap not possible yet");
                }
            }
        }
        self.on_peer_learned(peer_id);
    }

    fn on_kad(&mut self, event: kad::Event) {
        match event {
            kad::Event::RoutingUpdated {
                peer, is_new_peer, ..
            } => {
                if is_new_peer {
                    tracing::trace!(%peer, "peer added to the routing table");
                }
                self.on_peer_learned(peer);
            }
            kad::Event::OutboundQueryProgressed {
                id, result, step, ..
            } => {
                let lookup = if step.last {
                    self.lookups.remove(&id)
                } else {
                    self.lookups.get(&id).copied()
                };
                match result {
                    kad::QueryResult::Bootstrap(result) => {
                        if step.last {
                            tracing::debug!(ok = result.is_ok(), "kademlia bootstrap round done");
                            let key = provider_key(&self.local_node_id);
                            if let Err(error) = self.swarm.behaviour_mut().kad.start_providing(key)
                            {
                                tracing::warn!(%error, "cannot announce own provider record");
                            }
                        }
                    }
                    kad::QueryResult::GetClosestPeers(result) => {
                        let Some(Lookup::Peer(node_id, peer)) = lookup else {
                            return;
                        };
                        let peers = match result {
                            Ok(ok) => ok.peers,
                            Err(kad::GetClosestPeersError::Timeout { peers, .. }) => peers,
                        };
                        let found = peers.into_iter().find(|info| info.peer_id == peer);
                        match found {
                            Some(info)
                                if !info.addrs.is_empty() && !self.swarm.is_connected(&peer) =>
                            {
                                tracing::debug!(%node_id, %peer, addrs = ?info.addrs, "node found: dialing");
                                let opts = DialOpts::peer_id(peer)
                                    .addresses(info.addrs)
                                    .condition(PeerCondition::Disconnected)
                                    .build();
                                if let Err(error) = self.swarm.dial(opts) {
                                    tracing::debug!(%node_id, %error, "dial refused");
                                }
                                self.lookup_failed(node_id, id, "dial in progress".into());
                            }
                            Some(_) if self.swarm.is_connected(&peer) => self.flush(node_id, peer),
                            _ => self.lookup_failed(
                                node_id,
                                id,
                                "no address found in the DHT".into(),
                            ),
                        }
                    }
                    kad::QueryResult::GetProviders(result) => {
                        let Some(Lookup::Providers(node_id)) = lookup else {
                            return;
                        };
                        match result {
                            Ok(kad::GetProvidersOk::FoundProviders { providers, .. }) => {
                                let offered = providers.len();
                                let genuine = providers
                                    .into_iter()
                                    .find(|p| self.table.node_of(p) == Some(node_id));
                                match genuine {
                                    Some(peer) => {
                                        tracing::debug!(%node_id, %peer, "node id resolved");
                                        self.table.learn(&peer);
                                        if let Some(waiting) = self.waiting.get_mut(&node_id) {
                                            if waiting.lookup == Some(id) {
                                                waiting.lookup = None;
                                            }
                                        }
                                        self.lookups.remove(&id);
                                        if let Some(mut query) =
                                            self.swarm.behaviour_mut().kad.query_mut(&id)
                                        {
                                            query.finish();
                                        }
                                        self.resolve(node_id);
                                    }
                                    // Records under a NodeId whose key does not derive it are forged.
                                    None if offered > 0 => {
                                        tracing::warn!(%node_id, offered, "ignoring provider records of other keys")
                                    }
                                    None => {}
                                }
                            }
                            Ok(kad::GetProvidersOk::FinishedWithNoAdditionalRecord { .. }) => {
                                if step.last {
                                    self.lookup_failed(node_id, id, "not found in the DHT".into());
                                }
                            }
                            Err(error) => self.lookup_failed(node_id, id, error.to_string()),
                        }
                    }
                    kad::QueryResult::StartProviding(result) => {
                        tracing::debug!(ok = result.is_ok(), "own provider record announced");
                    }
                    other => tracing::trace!(result = ?other, "kademlia query progressed"),
                }
            }
            other => tracing::trace!(event = ?other, "kademlia"),
        }
    }

    fn on_gossip(&mut self, event: gossipsub::Event) {
        match event {
            gossipsub::Event::Message {
                message,
                propagation_source,
                ..
            } => {
                let Some(origin) = message
                    .source
                    .as_ref()
                    .and_then(|peer| self.table.node_of(peer))
                else {
                    tracing::warn!(via = %propagation_source, "dropping broadcast without a secp256k1 origin");
                    return;
                };
                let Some(subscription) = self.topics.get_mut(&message.topic) else {
                    return;
                };
                let broadcast = Broadcast {
                    origin,
                    topic: subscription.name.clone(),
                    payload: message.data,
                };
                subscription.senders.retain(|sender| match sender.try_send(broadcast.clone()) {
                    Ok(()) => true,
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        tracing::warn!(topic = %broadcast.topic, %origin, "subscriber too slow: broadcast dropped");
                        true
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => false,
                });
                if subscription.senders.is_empty() {
                    let topic = subscription.name.clone();
                    self.topics.remove(&message.topic);
                    self.swarm
                        .behaviour_mut()
                        .gossipsub
                        .unsubscribe(&gossipsub::IdentTopic::new(topic));
                }
            }
            gossipsub::Event::Subscribed { peer_id, topic } => {
                tracing::trace!(peer = %peer_id, %topic, "peer subscribed")
            }
            other => tracing::trace!(event = ?other, "gossipsub"),
        }
    }

    fn on_calls(&mut self, event: request_response::Event<Vec<u8>, Vec<u8>>) {
        match event {
            request_response::Event::Message { peer, message, .. } => {
                match message {
                    request_response::Message::Request {
                        request, channel, ..
                    } => self.on_inbound_call(peer, request, channel),
                    request_response::Message::Response {
                        request_id,
                        response,
                    } => {
                        // The answer counts as use too: a call sent while
                        // the connection was still being dialed predates it.
                        self.used(&peer);
                        let Some(in_flight) = self.in_flight.remove(&request_id) else {
                            return;
                        };
                        let reply = serde_json::from_slice::<WireReply>(&response).unwrap_or_else(|error| {
                        tracing::warn!(node_id = %in_flight.node_id, %error, "malformed reply");
                        Err(GolemError::internal(format!("malformed reply from node {}: {error}", in_flight.node_id)))
                    });
                        let _ = in_flight.reply.send(reply);
                    }
                }
            }
            request_response::Event::OutboundFailure {
                request_id,
                error,
                peer,
                ..
            } => {
                let Some(in_flight) = self.in_flight.remove(&request_id) else {
                    return;
                };
                let node_id = in_flight.node_id;
                if let (request_response::OutboundFailure::ConnectionClosed, Some(request)) =
                    (&error, in_flight.resend)
                {
                    if Instant::now() < in_flight.deadline && !in_flight.reply.is_closed() {
                        tracing::debug!(%peer, %node_id, message = %in_flight.message, resends = in_flight.resends + 1, "connection closed before the answer: sending the call again");
                        self.start_call(
                            node_id,
                            PendingCall {
                                address: in_flight.address,
                                message: in_flight.message,
                                request,
                                deadline: in_flight.deadline,
                                reply: in_flight.reply,
                                resends: in_flight.resends + 1,
                            },
                        );
                        return;
                    }
                }
                let what = format!(
                    "call {} to {} on node {node_id}",
                    in_flight.message, in_flight.address
                );
                tracing::debug!(%peer, %node_id, %error, "call failed");
                let error = match error {
                    request_response::OutboundFailure::Timeout => {
                        GolemError::timeout(format!("{what} got no answer in time"))
                    }
                    request_response::OutboundFailure::DialFailure => GolemError::unavailable(
                        format!("{what} failed: node {node_id} is unreachable"),
                    ),
                    request_response::OutboundFailure::ConnectionClosed => GolemError::unavailable(
                        format!("{what} failed: connection closed before the answer"),
                    ),
                    request_response::OutboundFailure::UnsupportedProtocols => {
                        GolemError::unavailable(format!(
                            "{what} failed: node {node_id} does not serve remote calls"
                        ))
                    }
                    request_response::OutboundFailure::Io(error) => {
                        GolemError::unavailable(format!("{what} failed: stream error: {error}"))
                    }
                };
                let _ = in_flight.reply.send(Err(error));
            }
            request_response::Event::InboundFailure { peer, error, .. } => {
                tracing::warn!(%peer, node_id = ?self.table.node_of(&peer), %error, "inbound call failed (refused frame or stream error)");
            }
            request_response::Event::ResponseSent { .. } => {}
        }
    }

    fn on_inbound_call(
        &mut self,
        peer: PeerId,
        request: Vec<u8>,
        channel: request_response::ResponseChannel<Vec<u8>>,
    ) {
        self.used(&peer);
        let answer = match self.table.learn(&peer) {
            Some(caller) => self.serve(caller, &request),
            None => {
                tracing::warn!(%peer, "call refused: peer has no secp256k1 identity");
                futures::future::ready(Err(GolemError::forbidden(
                    "callers must have a secp256k1 node identity",
                )))
                .boxed()
            }
        };
        let done = self.responses_tx.clone();
        let (max_frame, max_message_size) = (self.max_frame, self.config.max_message_size);
        tokio::spawn(async move {
            let reply = answer.await;
            let _ = done.send((channel, encode_reply(&reply, max_frame, max_message_size)));
        });
    }

    /// Serve one request frame of `caller` (already authenticated): parse it,
    /// enforce the `/public/` rule, then run the handler or the reply stream.
    fn serve(&mut self, caller: NodeId, request: &[u8]) -> BoxFuture<'static, WireReply> {
        let refuse = |error: GolemError| futures::future::ready(Err(error)).boxed();
        let request = match decode_request(request) {
            Ok(request) => request,
            Err(error) => {
                tracing::warn!(%caller, %error, bytes = request.len(), "malformed call refused");
                return refuse(GolemError::bad_request(format!("malformed call: {error}")));
            }
        };
        let call = match request {
            WireRequest::Call(call) => call,
            WireRequest::Pull(pull) => return self.pull(caller, pull),
        };
        if !is_public_address(&call.address) {
            tracing::warn!(%caller, address = %call.address, message = %call.message, "remote call to a non-public address refused");
            return refuse(GolemError::forbidden(format!(
                "address {} is not public",
                call.address
            )));
        }
        tracing::debug!(%caller, address = %call.address, message = %call.message, stream = call.stream, "inbound call");
        let inbound = InboundCall {
            caller,
            address: call.address,
            message: call.message,
            payload: call.payload,
            attachment: call.attachment,
        };
        if !call.stream {
            let handler = self.inbound.clone();
            return async move {
                AssertUnwindSafe(handler(inbound))
                    .catch_unwind()
                    .await
                    .unwrap_or_else(|_| {
                        Err(GolemError::internal("the handler of the call panicked"))
                    })
            }
            .boxed();
        }

        let items = match &self.stream_handler {
            Some(handler) => handler(inbound),
            None => {
                let handler = self.inbound.clone();
                futures::stream::once(async move { handler(inbound).await }).boxed()
            }
        };
        let (sender, receiver) = mpsc::channel(STREAM_BUFFER);
        tokio::spawn(async move {
            let mut items = AssertUnwindSafe(items).catch_unwind();
            while let Some(item) = items.next().await {
                let item = item
                    .unwrap_or_else(|_| Err(GolemError::internal("the stream handler panicked")));
                if sender.send(item).await.is_err() {
                    break; // expired or cancelled: stop producing
                }
            }
        });
        self.next_stream += 1;
        let id = self.next_stream;
        let receiver = Arc::new(tokio::sync::Mutex::new(receiver));
        self.streams.insert(
            (caller, id),
            ReplyStream {
                receiver: receiver.clone(),
                last_used: Instant::now(),
            },
        );
        next_chunk(
            id,
            receiver,
            self.stream_wait(),
            self.config.max_message_size,
        )
        .boxed()
    }

    fn pull(&mut self, caller: NodeId, pull: WirePull) -> BoxFuture<'static, WireReply> {
        let key = (caller, pull.pull);
        if pull.cancel {
            self.streams.remove(&key);
            let chunk = StreamChunk {
                stream: pull.pull,
                items: Vec::new(),
                end: true,
            };
            return futures::future::ready(chunk_reply(chunk)).boxed();
        }
        let Some(stream) = self.streams.get_mut(&key) else {
            return futures::future::ready(Err(GolemError::not_found(format!(
                "no reply stream {}",
                pull.pull
            ))))
            .boxed();
        };
        stream.last_used = Instant::now();
        next_chunk(
            pull.pull,
            stream.receiver.clone(),
            self.stream_wait(),
            self.config.max_message_size,
        )
        .boxed()
    }

    /// How long a pull waits for the next item before answering with none.
    fn stream_wait(&self) -> Duration {
        (self.config.call_timeout / 2).min(Duration::from_secs(10))
    }
}

/// Collect the next chunk of a reply stream: wait up to `wait` for one item,
/// then take whatever else is ready, within `budget` bytes.
async fn next_chunk(id: u64, receiver: SharedReceiver, wait: Duration, budget: usize) -> WireReply {
    let mut receiver = receiver.lock().await;
    let mut chunk = StreamChunk {
        stream: id,
        items: Vec::new(),
        end: false,
    };
    match tokio::time::timeout(wait, receiver.recv()).await {
        Ok(Some(item)) => chunk.items.push(item),
        Ok(None) => chunk.end = true,
        Err(_) => return chunk_reply(chunk),
    }
    let mut size = 0;
    while !chunk.end && size < budget / 2 {
        match receiver.try_recv() {
            Ok(item) => {
                size += serde_json::to_vec(&item)
                    .map(|bytes| bytes.len())
                    .unwrap_or(0);
                chunk.items.push(item);
            }
            Err(mpsc::error::TryRecvError::Empty) => break,
            Err(mpsc::error::TryRecvError::Disconnected) => chunk.end = true,
        }
    }
    chunk_reply(chunk)
}

fn chunk_reply(chunk: StreamChunk) -> WireReply {
    serde_json::to_value(chunk)
        .map_err(|error| GolemError::internal(format!("cannot encode stream chunk: {error}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_is_sent_again_three_times_at_most_and_only_when_small() {
        let request = vec![7u8; 100];
        // Each failure's in-flight record carries the count it was sent with;
        // a fourth connection closing fails the call.
        let copies: Vec<bool> = (0..=MAX_RESENDS + 1)
            .map(|resends| copy_for_resend(resends, &request).is_some())
            .collect();
        assert_eq!(copies, [true, true, true, false, false]);
        assert_eq!(copy_for_resend(0, &request).as_deref(), Some(&request[..]));
        assert!(copy_for_resend(0, &vec![0u8; RESEND_MAX_BYTES]).is_some());
        assert!(copy_for_resend(0, &vec![0u8; RESEND_MAX_BYTES + 1]).is_none());
    }

    #[test]
    fn a_trailing_peer_id_is_split_off_an_address() {
        let plain: Multiaddr = "/ip4/10.0.0.1/tcp/11500".parse().unwrap();
        let peer = PeerId::random();
        let with_peer = plain.clone().with(Protocol::P2p(peer));
        assert_eq!(split_peer(&with_peer), (plain.clone(), Some(peer)));
        assert_eq!(split_peer(&plain), (plain, None));
    }

    #[test]
    fn only_public_addresses_are_served() {
        assert!(is_public_address("/public/market"));
        assert!(is_public_address("/public/activity/exec"));
        for refused in [
            "/local/identity",
            "/public",
            "/public/",
            "public/market",
            "/public/../local/identity",
            "/publicx/a",
            "",
        ] {
            assert!(!is_public_address(refused), "{refused} accepted");
        }
    }

    #[test]
    fn oversized_replies_become_errors() {
        let reply = encode_reply(&Ok(serde_json::json!("x".repeat(100))), 50, 10);
        let decoded: WireReply = serde_json::from_slice(&reply).expect("valid reply");
        assert_eq!(decoded.map_err(|e| e.code), Err(ErrorCode::PayloadTooLarge));
    }
}
