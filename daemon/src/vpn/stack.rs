//! The requestor's user-space TCP/IP stack of one network: smoltcp with
//! `Medium::Ip` (bare IPv4 packets), MTU [`VPN_MTU`], the requestor's
//! addresses on its interface, and active TCP sockets only, one per
//! WebSocket.
//!
//! One task per network owns the interface and its sockets and takes
//! [`StackCommand`]s (ingress packets, connects, writes, closes, membership)
//! from a channel; everything else holds a cheap [`StackHandle`]. Egress
//! packets are routed by destination address to the member's NodeId and
//! queued on that peer's send queue ([`super::peers`]); the loop never awaits
//! the network. Ingress is accepted only from member nodes, for the addresses
//! they hold: anything else is counted in [`VpnStats`] and dropped, and
//! nothing is learnt from it.
//!
//! Back-pressure: a WebSocket's write is acknowledged once it is wholly in
//! the socket's send buffer (so a client cannot queue without bound), and
//! received data leaves the socket's receive buffer only when the WebSocket's
//! channel has room (so TCP's window slows the sender).

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use golem_model::vpn::{NetworkConnection, VPN_MTU};
use golem_model::{GolemError, NodeId};
use serde::Serialize;
use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::phy::{Device, DeviceCapabilities, Medium};
use smoltcp::socket::tcp;
use smoltcp::time::Instant as SmolInstant;
use smoltcp::wire::{
    HardwareAddress, IpAddress, IpCidr, IpListenEndpoint, IpProtocol, Ipv4Packet, TcpPacket,
};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use super::peers::PeerQueues;

/// How long a connect may take before the WebSocket is refused (as the original).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a socket we closed may wait for the other side's FIN.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(30);
/// TCP buffers per socket, each way: 16 segments at the MTU, so that a
/// window holds many of them (64 KiB held one; 1 MiB measured faster than
/// 256 and 512 KiB on `scripts/bench/vpn.sh`, docs/benchmarks.md). Pages of
/// an idle connection's buffers are never touched, so they cost no memory.
const SOCKET_BUFFER: usize = 1024 * 1024;
/// Commands queued before ingress batches are dropped (and writers wait).
const COMMAND_QUEUE: usize = 1024;
/// Received chunks queued towards one WebSocket before TCP's window closes.
const EVENT_QUEUE: usize = 16;
/// Ingress packets waiting for the interface before more are dropped.
const MAX_RX_QUEUE: usize = 4096;
/// Ingress bytes waiting for the interface before more packets are dropped
/// (128 packets at the MTU): with large packets the count alone would let
/// one member park a quarter of a GiB here between two polls.
const MAX_RX_QUEUE_BYTES: usize = 8 << 20;
/// Egress polls per wake-up at most (see [`Stack::poll`]).
const MAX_EGRESS_ROUNDS: usize = 512;
/// Packets one wake-up hands to the peers' queues at most (a peer's queue
/// holds [`super::peers`]' 2048).
const MAX_EGRESS_PER_POLL: usize = 1024;
/// How often a loop with a blocked reader looks again.
const BLOCKED_RETRY: Duration = Duration::from_millis(5);
/// At most one warning about dropped packets per this interval.
const WARN_INTERVAL: Duration = Duration::from_secs(10);
/// Ephemeral ports of outbound connections.
const EPHEMERAL_PORTS: std::ops::RangeInclusive<u16> = 49152..=65535;
/// The IP protocol number of TCP, as `GET /tcp` reports it.
const TCP_PROTOCOL: u16 = 6;

/// Counters of one network's data plane (for logs, tests and diagnostics).
#[derive(Debug, Default)]
pub struct VpnStats {
    pub ingress_packets: AtomicU64,
    /// Batches from nodes that are not members of the network.
    pub dropped_non_member: AtomicU64,
    /// Packets from a member whose source address is not one of its own.
    pub dropped_spoofed: AtomicU64,
    /// Malformed or oversized.
    pub dropped_invalid: AtomicU64,
    pub egress_packets: AtomicU64,
    /// Egress packets whose destination is no member's address.
    pub dropped_unroutable: AtomicU64,
    /// Egress packets dropped because a peer's queue was full.
    pub dropped_queue_full: AtomicU64,
    /// Ingress batches' packets dropped because the stack's command queue
    /// was full (a member sends faster than the stack takes them).
    pub dropped_ingress_full: AtomicU64,
    /// TCP segments the stack sent again (their sequence lies below the
    /// highest it had sent on that connection): smoltcp's retransmission
    /// timer or fast retransmit fired, so something was lost or late.
    pub retransmitted_segments: AtomicU64,
}

/// A copy of [`VpnStats`] at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VpnStatsSnapshot {
    pub ingress_packets: u64,
    pub dropped_non_member: u64,
    pub dropped_spoofed: u64,
    pub dropped_invalid: u64,
    pub egress_packets: u64,
    pub dropped_unroutable: u64,
    pub dropped_queue_full: u64,
    pub dropped_ingress_full: u64,
    pub retransmitted_segments: u64,
}

impl VpnStats {
    pub fn snapshot(&self) -> VpnStatsSnapshot {
        let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        VpnStatsSnapshot {
            ingress_packets: read(&self.ingress_packets),
            dropped_non_member: read(&self.dropped_non_member),
            dropped_spoofed: read(&self.dropped_spoofed),
            dropped_invalid: read(&self.dropped_invalid),
            egress_packets: read(&self.egress_packets),
            dropped_unroutable: read(&self.dropped_unroutable),
            dropped_queue_full: read(&self.dropped_queue_full),
            dropped_ingress_full: read(&self.dropped_ingress_full),
            retransmitted_segments: read(&self.retransmitted_segments),
        }
    }
}

fn count(counter: &AtomicU64, by: usize) {
    counter.fetch_add(by as u64, Ordering::Relaxed);
}

pub type ConnectionId = u64;

/// What a WebSocket hears from its TCP connection.
#[derive(Debug)]
pub enum ConnectionEvent {
    Data(Bytes),
    /// The connection ended (the remote's FIN after all its data, a reset,
    /// or the network's removal); no event follows.
    Closed(String),
}

/// Who is in the network, as the stack routes and filters by it.
#[derive(Debug, Clone, Default)]
pub struct Membership {
    /// Member addresses -> nodes.
    pub nodes: HashMap<Ipv4Addr, NodeId>,
    /// The requestor's addresses.
    pub own: Vec<Ipv4Addr>,
    pub prefix: u8,
    /// The source address of outbound connections.
    pub source: Option<Ipv4Addr>,
}

impl Membership {
    pub fn of(record: &super::records::NetworkRecord) -> Membership {
        Membership {
            nodes: record.nodes.iter().map(|(ip, node)| (*ip, *node)).collect(),
            own: record.own_addresses(),
            prefix: record.prefix,
            source: Some(record.source_address()),
        }
    }
}

/// What the stack's task is asked to do.
pub enum StackCommand {
    Ingress {
        caller: NodeId,
        packets: Vec<Vec<u8>>,
    },
    Connect {
        remote: SocketAddrV4,
        events: mpsc::Sender<ConnectionEvent>,
        reply: oneshot::Sender<Result<(ConnectionId, SocketAddrV4), GolemError>>,
    },
    Write {
        connection: ConnectionId,
        data: Bytes,
        written: oneshot::Sender<Result<(), GolemError>>,
    },
    /// Send FIN at once (the WebSocket's client closed or went away).
    Close { connection: ConnectionId },
    ListConnections {
        reply: oneshot::Sender<Vec<NetworkConnection>>,
    },
}

/// The way to one network's stack task. Cheap to clone.
#[derive(Clone)]
pub struct StackHandle {
    network_id: Arc<str>,
    commands: mpsc::Sender<StackCommand>,
    /// The latest membership wins; the stack applies it before its next poll.
    membership: Arc<watch::Sender<Membership>>,
    shutdown: CancellationToken,
    pub stats: Arc<VpnStats>,
}

fn stack_gone(network_id: &str) -> GolemError {
    GolemError::not_found(format!("network {network_id} was removed"))
}

impl StackHandle {
    /// Hand ingress packets of `caller` to the stack without waiting; a full
    /// queue drops them (IP may lose packets; TCP retransmits).
    pub fn ingress(&self, caller: NodeId, packets: Vec<Vec<u8>>) {
        let count_of = packets.len();
        if let Err(error) = self
            .commands
            .try_send(StackCommand::Ingress { caller, packets })
        {
            if matches!(error, mpsc::error::TrySendError::Full(_)) {
                count(&self.stats.dropped_ingress_full, count_of);
            }
        }
    }

    /// Give the stack the record's membership.
    pub fn set_membership(&self, record: &super::records::NetworkRecord) {
        self.membership.send_replace(Membership::of(record));
    }

    /// Open a TCP connection to `remote`; resolves once it is established,
    /// refused (Unavailable) or timed out (Timeout, after [`CONNECT_TIMEOUT`]).
    pub async fn connect(&self, remote: SocketAddrV4) -> Result<TcpConnection, GolemError> {
        let (events_tx, events) = mpsc::channel(EVENT_QUEUE);
        let (reply, replied) = oneshot::channel();
        self.commands
            .send(StackCommand::Connect {
                remote,
                events: events_tx,
                reply,
            })
            .await
            .map_err(|_| stack_gone(&self.network_id))?;
        let (id, local) = replied.await.map_err(|_| stack_gone(&self.network_id))??;
        Ok(TcpConnection {
            id,
            local,
            remote,
            events,
            stack: self.clone(),
        })
    }

    pub async fn connections(&self) -> Vec<NetworkConnection> {
        let (reply, replied) = oneshot::channel();
        if self
            .commands
            .send(StackCommand::ListConnections { reply })
            .await
            .is_err()
        {
            return Vec::new();
        }
        replied.await.unwrap_or_default()
    }

    /// End the stack: every connection's WebSocket hears Closed.
    pub fn shutdown(&self) {
        self.shutdown.cancel();
    }
}

/// One TCP connection of the stack, as a WebSocket drives it. Dropping it
/// closes the connection (FIN).
pub struct TcpConnection {
    id: ConnectionId,
    pub local: SocketAddrV4,
    pub remote: SocketAddrV4,
    pub events: mpsc::Receiver<ConnectionEvent>,
    stack: StackHandle,
}

impl TcpConnection {
    /// Queue `data`; the receiver resolves once it is all in the socket's
    /// send buffer (or the connection is gone).
    pub fn write(&self, data: Bytes) -> oneshot::Receiver<Result<(), GolemError>> {
        let (written, receiver) = oneshot::channel();
        let command = StackCommand::Write {
            connection: self.id,
            data,
            written,
        };
        send_soon(&self.stack.commands, command);
        receiver
    }
}

impl Drop for TcpConnection {
    fn drop(&mut self) {
        let command = StackCommand::Close {
            connection: self.id,
        };
        send_soon(&self.stack.commands, command);
    }
}

/// Queue `command` without waiting; when the queue is full (rare: it holds
/// [`COMMAND_QUEUE`] commands), a task waits for room. A stack that is gone
/// takes nothing.
fn send_soon(commands: &mpsc::Sender<StackCommand>, command: StackCommand) {
    if let Err(mpsc::error::TrySendError::Full(command)) = commands.try_send(command) {
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let commands = commands.clone();
            runtime.spawn(async move {
                let _ = commands.send(command).await;
            });
        }
    }
}

/// Start the stack task of network `network_id` on the current (Actix or
/// tokio) thread.
pub fn start(
    network_id: &str,
    membership: Membership,
    peers: PeerQueues,
    stats: Arc<VpnStats>,
) -> StackHandle {
    let (commands_tx, commands) = mpsc::channel(COMMAND_QUEUE);
    let (membership_tx, membership_rx) = watch::channel(membership);
    let shutdown = CancellationToken::new();
    let handle = StackHandle {
        network_id: Arc::from(network_id),
        commands: commands_tx,
        membership: Arc::new(membership_tx),
        shutdown: shutdown.clone(),
        stats: stats.clone(),
    };
    let stack = Stack::new(network_id, peers, stats);
    actix_rt::spawn(stack.run(commands, membership_rx, shutdown));
    handle
}

/// Packets in and out of the interface, as smoltcp's device.
/// smoltcp's device for bare IP packets in memory: what arrived waits in
/// `rx`, what the stack sends piles up in `tx` (MTU [`VPN_MTU`]). Public so
/// tests can stand up a member's stack the same way.
#[derive(Default)]
pub struct PacketQueue {
    pub rx: VecDeque<Vec<u8>>,
    pub tx: Vec<Vec<u8>>,
}

pub struct RxToken(Vec<u8>);
pub struct TxToken<'a>(&'a mut Vec<Vec<u8>>);

impl smoltcp::phy::RxToken for RxToken {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

impl smoltcp::phy::TxToken for TxToken<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut packet = vec![0; len];
        let result = f(&mut packet);
        self.0.push(packet);
        result
    }
}

impl Device for PacketQueue {
    type RxToken<'a> = RxToken;
    type TxToken<'a> = TxToken<'a>;

    fn receive(&mut self, _: SmolInstant) -> Option<(RxToken, TxToken<'_>)> {
        let packet = self.rx.pop_front()?;
        Some((RxToken(packet), TxToken(&mut self.tx)))
    }

    fn transmit(&mut self, _: SmolInstant) -> Option<TxToken<'_>> {
        Some(TxToken(&mut self.tx))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut capabilities = DeviceCapabilities::default();
        capabilities.medium = Medium::Ip;
        capabilities.max_transmission_unit = VPN_MTU;
        capabilities
    }
}

enum Phase {
    Connecting {
        reply: oneshot::Sender<Result<(ConnectionId, SocketAddrV4), GolemError>>,
        deadline: tokio::time::Instant,
    },
    Open,
    /// We sent (or will send) FIN; waiting for the other side's.
    Closing {
        deadline: tokio::time::Instant,
    },
}

struct PendingWrite {
    data: Bytes,
    offset: usize,
    written: oneshot::Sender<Result<(), GolemError>>,
}

struct Connection {
    socket: SocketHandle,
    local: SocketAddrV4,
    remote: SocketAddrV4,
    events: mpsc::Sender<ConnectionEvent>,
    phase: Phase,
    pending: Option<PendingWrite>,
    /// Closed was sent to the WebSocket.
    told_closed: bool,
    /// What went through it, for the log line at its end.
    traffic: ConnectionTraffic,
}

/// One connection's traffic as the stack saw it. Retransmissions are
/// counted here because smoltcp does not say when its timers fire: a
/// segment whose sequence lies below the highest already sent is one.
#[derive(Debug)]
struct ConnectionTraffic {
    opened: std::time::Instant,
    /// Bytes the WebSocket wrote into the socket.
    written: u64,
    /// Bytes read from the socket towards the WebSocket.
    read: u64,
    /// Segments that carried data, SYN or FIN.
    segments: u64,
    retransmitted: u64,
    /// The sequence number after the highest segment sent so far.
    highest_end: Option<u32>,
}

impl ConnectionTraffic {
    fn new() -> ConnectionTraffic {
        ConnectionTraffic {
            opened: std::time::Instant::now(),
            written: 0,
            read: 0,
            segments: 0,
            retransmitted: 0,
            highest_end: None,
        }
    }

    /// Note a segment of `length` sequence numbers (payload, SYN and FIN)
    /// from `sequence` on; true when it was sent before.
    fn observe_segment(&mut self, sequence: u32, length: u32) -> bool {
        if length == 0 {
            return false;
        }
        self.segments += 1;
        let end = sequence.wrapping_add(length);
        // Sequence numbers wrap: compare by the sign of the distance.
        let before = |a: u32, b: u32| (a.wrapping_sub(b) as i32) < 0;
        let again = self
            .highest_end
            .is_some_and(|highest| before(sequence, highest));
        if again {
            self.retransmitted += 1;
        }
        if self.highest_end.is_none_or(|highest| before(highest, end)) {
            self.highest_end = Some(end);
        }
        again
    }
}

/// The local port, sequence number and sequence length of a TCP segment
/// in an IPv4 packet the stack sent.
fn tcp_segment(packet: &[u8]) -> Option<(u16, u32, u32)> {
    let ipv4 = Ipv4Packet::new_checked(packet).ok()?;
    if ipv4.next_header() != IpProtocol::Tcp {
        return None;
    }
    let tcp = TcpPacket::new_checked(ipv4.payload()).ok()?;
    let length = tcp.payload().len() as u32 + u32::from(tcp.syn()) + u32::from(tcp.fin());
    Some((tcp.src_port(), tcp.seq_number().0 as u32, length))
}

struct Stack {
    network_id: String,
    iface: Interface,
    device: PacketQueue,
    sockets: SocketSet<'static>,
    /// Member addresses -> nodes; the only place ingress and egress trust.
    nodes: HashMap<Ipv4Addr, NodeId>,
    members: HashSet<NodeId>,
    source: Option<Ipv4Addr>,
    connections: HashMap<ConnectionId, Connection>,
    next_connection: ConnectionId,
    next_port: u16,
    peers: PeerQueues,
    stats: Arc<VpnStats>,
    last_warning: Option<std::time::Instant>,
    /// Some reader had no room: look again soon.
    blocked: bool,
    /// Bytes in `device.rx` (each poll takes them all).
    rx_queued_bytes: usize,
}

fn now() -> SmolInstant {
    SmolInstant::now()
}

impl Stack {
    fn new(network_id: &str, peers: PeerQueues, stats: Arc<VpnStats>) -> Stack {
        let mut device = PacketQueue::default();
        let mut config = Config::new(HardwareAddress::Ip);
        config.random_seed = rand::random();
        let iface = Interface::new(config, &mut device, now());
        Stack {
            network_id: network_id.to_string(),
            iface,
            device,
            sockets: SocketSet::new(Vec::new()),
            nodes: HashMap::new(),
            members: HashSet::new(),
            source: None,
            connections: HashMap::new(),
            next_connection: 1,
            next_port: *EPHEMERAL_PORTS.start(),
            peers,
            stats,
            last_warning: None,
            blocked: false,
            rx_queued_bytes: 0,
        }
    }

    async fn run(
        mut self,
        mut commands: mpsc::Receiver<StackCommand>,
        mut membership: watch::Receiver<Membership>,
        shutdown: CancellationToken,
    ) {
        tracing::debug!(network_id = %self.network_id, "vpn stack started");
        let first = membership.borrow_and_update().clone();
        self.apply_membership(first);
        loop {
            let delay = self.next_wake();
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                changed = membership.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    let latest = membership.borrow_and_update().clone();
                    self.apply_membership(latest);
                }
                command = commands.recv() => match command {
                    Some(command) => self.apply(command),
                    None => break,
                },
                // More to send now: let other tasks run, but do not wait
                // for the timer's next millisecond tick.
                () = tokio::task::yield_now(), if delay.is_zero() => {}
                () = tokio::time::sleep(delay), if !delay.is_zero() => {}
            }
            // Take what else is queued before polling once for all of it.
            for _ in 0..COMMAND_QUEUE {
                match commands.try_recv() {
                    Ok(command) => self.apply(command),
                    Err(_) => break,
                }
            }
            self.poll();
        }
        self.close_all("the network was removed");
        tracing::debug!(network_id = %self.network_id, "vpn stack stopped");
    }

    fn next_wake(&mut self) -> Duration {
        let mut delay = self
            .iface
            .poll_delay(now(), &self.sockets)
            .map(Duration::from)
            .unwrap_or(Duration::from_secs(1))
            .min(Duration::from_secs(1));
        if self.blocked {
            delay = delay.min(BLOCKED_RETRY);
        }
        let instant_now = tokio::time::Instant::now();
        for connection in self.connections.values() {
            let deadline = match &connection.phase {
                Phase::Connecting { deadline, .. } | Phase::Closing { deadline } => *deadline,
                Phase::Open => continue,
            };
            delay = delay.min(deadline.saturating_duration_since(instant_now));
        }
        delay
    }

    fn apply(&mut self, command: StackCommand) {
        match command {
            StackCommand::Ingress { caller, packets } => self.ingress(caller, packets),
            StackCommand::Connect {
                remote,
                events,
                reply,
            } => self.connect(remote, events, reply),
            StackCommand::Write {
                connection,
                data,
                written,
            } => match self.connections.get_mut(&connection) {
                Some(open) if open.pending.is_none() && matches!(open.phase, Phase::Open) => {
                    open.pending = Some(PendingWrite {
                        data,
                        offset: 0,
                        written,
                    });
                }
                Some(_) => {
                    let _ = written.send(Err(GolemError::conflict(
                        "the connection is closing or has a write in progress",
                    )));
                }
                None => {
                    let _ = written.send(Err(connection_closed()));
                }
            },
            StackCommand::Close { connection } => {
                if let Some(open) = self.connections.get_mut(&connection) {
                    let socket = self.sockets.get_mut::<tcp::Socket>(open.socket);
                    match open.phase {
                        Phase::Closing { .. } => {}
                        _ => {
                            socket.close();
                            open.phase = Phase::Closing {
                                deadline: tokio::time::Instant::now() + CLOSE_TIMEOUT,
                            };
                        }
                    }
                    if let Some(pending) = open.pending.take() {
                        let _ = pending.written.send(Err(connection_closed()));
                    }
                }
            }
            StackCommand::ListConnections { reply } => {
                let _ = reply.send(self.list_connections());
            }
        }
    }

    fn apply_membership(&mut self, membership: Membership) {
        self.members = membership.nodes.values().copied().collect();
        self.nodes = membership.nodes;
        self.source = membership.source;
        self.set_addresses(membership.own, membership.prefix);
        self.peers.retain(&self.members);
    }

    fn set_addresses(&mut self, own: Vec<Ipv4Addr>, prefix: u8) {
        self.iface.update_ip_addrs(|cidrs| {
            cidrs.clear();
            for address in own.iter().take(super::records::MAX_OWN_ADDRESSES) {
                // The network's prefix: its members are on-link (Medium::Ip
                // needs no neighbours); which member gets a packet is ours to say.
                let _ = cidrs.push(IpCidr::new(IpAddress::Ipv4(*address), prefix));
            }
        });
    }

    fn ingress(&mut self, caller: NodeId, packets: Vec<Vec<u8>>) {
        if !self.members.contains(&caller) {
            count(&self.stats.dropped_non_member, packets.len());
            self.warn_dropped(caller, "not a member of the network");
            return;
        }
        for packet in packets {
            let source = match Ipv4Packet::new_checked(&packet[..]) {
                Ok(ipv4) if packet.len() <= VPN_MTU => ipv4.src_addr(),
                _ => {
                    count(&self.stats.dropped_invalid, 1);
                    continue;
                }
            };
            if self.nodes.get(&source) != Some(&caller) {
                count(&self.stats.dropped_spoofed, 1);
                self.warn_dropped(caller, "a source address that is not the node's");
                continue;
            }
            if self.device.rx.len() >= MAX_RX_QUEUE
                || self.rx_queued_bytes + packet.len() > MAX_RX_QUEUE_BYTES
            {
                count(&self.stats.dropped_ingress_full, 1);
                continue;
            }
            count(&self.stats.ingress_packets, 1);
            self.rx_queued_bytes += packet.len();
            self.device.rx.push_back(packet);
        }
    }

    fn warn_dropped(&mut self, caller: NodeId, why: &str) {
        let due = self
            .last_warning
            .is_none_or(|last| last.elapsed() >= WARN_INTERVAL);
        if due {
            self.last_warning = Some(std::time::Instant::now());
            let stats = self.stats.snapshot();
            tracing::warn!(
                network_id = %self.network_id,
                %caller,
                dropped_non_member = stats.dropped_non_member,
                dropped_spoofed = stats.dropped_spoofed,
                "dropped vpn packets from {why} (one warning per 10 s)"
            );
        }
    }

    fn connect(
        &mut self,
        remote: SocketAddrV4,
        events: mpsc::Sender<ConnectionEvent>,
        reply: oneshot::Sender<Result<(ConnectionId, SocketAddrV4), GolemError>>,
    ) {
        let Some(source) = self.source else {
            let _ = reply.send(Err(GolemError::unavailable(
                "the network's stack has no address yet",
            )));
            return;
        };
        let Some(port) = self.free_port() else {
            let _ = reply.send(Err(GolemError::unavailable(
                "no free local port for another connection in this network",
            )));
            return;
        };
        let mut socket = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0; SOCKET_BUFFER]),
            tcp::SocketBuffer::new(vec![0; SOCKET_BUFFER]),
        );
        socket.set_nagle_enabled(false);
        let local = SocketAddrV4::new(source, port);
        if let Err(error) = socket.connect(
            self.iface.context(),
            (IpAddress::Ipv4(*remote.ip()), remote.port()),
            IpListenEndpoint {
                addr: Some(IpAddress::Ipv4(source)),
                port,
            },
        ) {
            let _ = reply.send(Err(GolemError::bad_request(format!(
                "cannot connect to {remote}: {error}"
            ))));
            return;
        }
        let handle = self.sockets.add(socket);
        let id = self.next_connection;
        self.next_connection += 1;
        self.connections.insert(
            id,
            Connection {
                socket: handle,
                local,
                remote,
                events,
                phase: Phase::Connecting {
                    reply,
                    deadline: tokio::time::Instant::now() + CONNECT_TIMEOUT,
                },
                pending: None,
                told_closed: false,
                traffic: ConnectionTraffic::new(),
            },
        );
    }

    fn free_port(&mut self) -> Option<u16> {
        let used: HashSet<u16> = self
            .connections
            .values()
            .map(|connection| connection.local.port())
            .collect();
        let span = usize::from(EPHEMERAL_PORTS.end() - EPHEMERAL_PORTS.start()) + 1;
        for _ in 0..span {
            let port = self.next_port;
            self.next_port = if port == *EPHEMERAL_PORTS.end() {
                *EPHEMERAL_PORTS.start()
            } else {
                port + 1
            };
            if !used.contains(&port) {
                return Some(port);
            }
        }
        None
    }

    fn list_connections(&self) -> Vec<NetworkConnection> {
        let mut list: Vec<NetworkConnection> = self
            .connections
            .values()
            .filter(|connection| matches!(connection.phase, Phase::Open))
            .map(|connection| NetworkConnection {
                protocol: TCP_PROTOCOL,
                local_ip: connection.local.ip().to_string(),
                local_port: connection.local.port(),
                remote_ip: connection.remote.ip().to_string(),
                remote_port: connection.remote.port(),
            })
            .collect();
        list.sort_by_key(|connection| connection.local_port);
        list
    }

    /// Run the interface, move data between sockets and WebSockets, and hand
    /// egress to the peers' queues.
    ///
    /// smoltcp 0.12 sent at most one segment per socket per poll (0.14
    /// sends what the window allows), and a write refills the send buffer
    /// as segments leave it, so the egress poll is repeated while segments
    /// come out or data moves, up to [`MAX_EGRESS_ROUNDS`] and
    /// [`MAX_EGRESS_PER_POLL`] packets. Polling once per wake-up capped one
    /// stream at about a segment per timer tick.
    fn poll(&mut self) {
        self.poll_interface();
        self.route_egress();
    }

    /// [`Self::poll`] without handing what it sent to the peers: the
    /// packets stay in `device.tx`.
    fn poll_interface(&mut self) {
        // Takes every packet waiting in `device.rx`.
        self.iface.poll(now(), &mut self.device, &mut self.sockets);
        self.rx_queued_bytes = 0;
        for _ in 0..MAX_EGRESS_ROUNDS {
            let queued = self.device.tx.len();
            let moved = self.service_connections();
            self.iface
                .poll_egress(now(), &mut self.device, &mut self.sockets);
            let sent = self.device.tx.len() > queued;
            if !(moved || sent) || self.device.tx.len() >= MAX_EGRESS_PER_POLL {
                break;
            }
        }
    }

    /// True when something was written into a socket or read out of one.
    fn service_connections(&mut self) -> bool {
        let mut moved = false;
        self.blocked = false;
        let instant_now = tokio::time::Instant::now();
        let mut finished = Vec::new();
        for (id, connection) in self.connections.iter_mut() {
            let socket = self.sockets.get_mut::<tcp::Socket>(connection.socket);
            if let Phase::Connecting { deadline, .. } = &connection.phase {
                let outcome = match socket.state() {
                    tcp::State::SynSent | tcp::State::SynReceived if instant_now < *deadline => {
                        continue
                    }
                    tcp::State::SynSent | tcp::State::SynReceived => {
                        socket.abort();
                        Err(GolemError::timeout(format!(
                            "connecting to {} timed out after {} s",
                            connection.remote,
                            CONNECT_TIMEOUT.as_secs()
                        )))
                    }
                    tcp::State::Closed => Err(GolemError::unavailable(format!(
                        "{} refused the connection",
                        connection.remote
                    ))),
                    _ => Ok((*id, connection.local)),
                };
                let Phase::Connecting { reply, .. } =
                    std::mem::replace(&mut connection.phase, Phase::Open)
                else {
                    continue;
                };
                let failed = outcome.is_err();
                if reply.send(outcome).is_err() || failed {
                    // Refused, timed out, or nobody waits any more.
                    socket.abort();
                    connection.told_closed = true;
                    finished.push(*id);
                    continue;
                }
            }
            moved |= Self::write_pending(socket, connection);
            moved |= Self::read_available(socket, connection, &mut self.blocked);
            if Self::is_finished(socket, connection, instant_now) {
                finished.push(*id);
            }
        }
        for id in finished {
            if let Some(connection) = self.connections.remove(&id) {
                self.log_closed(id, &connection);
                if let Some(pending) = connection.pending {
                    let _ = pending.written.send(Err(connection_closed()));
                }
                self.sockets.remove(connection.socket);
            }
        }
        moved
    }

    /// One line per connection at its end: what went through it, and how
    /// many segments smoltcp had to send again (a stall's signature).
    fn log_closed(&self, id: ConnectionId, connection: &Connection) {
        let traffic = &connection.traffic;
        tracing::info!(
            network_id = %self.network_id,
            connection = id,
            remote = %connection.remote,
            written = traffic.written,
            read = traffic.read,
            segments = traffic.segments,
            retransmitted = traffic.retransmitted,
            open_ms = traffic.opened.elapsed().as_millis() as u64,
            "vpn tcp connection closed"
        );
    }

    fn write_pending(socket: &mut tcp::Socket, connection: &mut Connection) -> bool {
        let Some(pending) = connection.pending.as_mut() else {
            return false;
        };
        if !socket.may_send() {
            if let Some(pending) = connection.pending.take() {
                let _ = pending.written.send(Err(connection_closed()));
            }
            return false;
        }
        let Ok(sent) = socket.send_slice(&pending.data[pending.offset..]) else {
            return false;
        };
        pending.offset += sent;
        connection.traffic.written += sent as u64;
        if pending.offset == pending.data.len() {
            if let Some(pending) = connection.pending.take() {
                let _ = pending.written.send(Ok(()));
            }
        }
        sent > 0
    }

    fn read_available(
        socket: &mut tcp::Socket,
        connection: &mut Connection,
        blocked: &mut bool,
    ) -> bool {
        let mut moved = false;
        while socket.can_recv() {
            if connection.told_closed || connection.events.is_closed() {
                // Nobody listens: discard, so the window stays open for the FIN.
                let _ = socket.recv(|buffer| (buffer.len(), ()));
                moved = true;
                continue;
            }
            let Ok(permit) = connection.events.try_reserve() else {
                *blocked = true;
                break;
            };
            match socket.recv(|buffer| (buffer.len(), Bytes::copy_from_slice(buffer))) {
                Ok(data) if !data.is_empty() => {
                    connection.traffic.read += data.len() as u64;
                    permit.send(ConnectionEvent::Data(data));
                    moved = true;
                }
                _ => break,
            }
        }
        moved
    }

    /// Tell the WebSocket once the other side is done (after all its data),
    /// and say when the socket can go.
    fn is_finished(
        socket: &mut tcp::Socket,
        connection: &mut Connection,
        instant_now: tokio::time::Instant,
    ) -> bool {
        let remote_done = !socket.may_recv() && !socket.can_recv();
        if remote_done && !connection.told_closed {
            let reason = match socket.state() {
                tcp::State::Closed => "the connection was reset or timed out",
                _ => "the remote side closed the connection",
            };
            match connection
                .events
                .try_send(ConnectionEvent::Closed(reason.to_string()))
            {
                Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => connection.told_closed = true,
                Err(mpsc::error::TrySendError::Full(_)) => {}
            }
        }
        match (&connection.phase, socket.state()) {
            (_, tcp::State::Closed) => connection.told_closed,
            (_, tcp::State::TimeWait) => true,
            (Phase::Closing { deadline }, _) if instant_now >= *deadline => {
                socket.abort();
                true
            }
            _ => false,
        }
    }

    /// Hand every packet the interface sent to the queue of the member that
    /// holds its destination.
    fn route_egress(&mut self) {
        let sent = std::mem::take(&mut self.device.tx);
        for packet in sent {
            self.observe_egress(&packet);
            let destination = match Ipv4Packet::new_checked(&packet[..]) {
                Ok(ipv4) => ipv4.dst_addr(),
                Err(_) => continue,
            };
            match self.nodes.get(&destination) {
                Some(node) => {
                    if self.peers.send(*node, packet) {
                        count(&self.stats.egress_packets, 1);
                    } else {
                        count(&self.stats.dropped_queue_full, 1);
                    }
                }
                None => count(&self.stats.dropped_unroutable, 1),
            }
        }
    }

    /// Count a TCP segment the interface sent on its connection's traffic
    /// (and a retransmission in the network's stats).
    fn observe_egress(&mut self, packet: &[u8]) {
        let Some((port, sequence, length)) = tcp_segment(packet) else {
            return;
        };
        let connection = self
            .connections
            .values_mut()
            .find(|connection| connection.local.port() == port);
        if let Some(connection) = connection {
            if connection.traffic.observe_segment(sequence, length) {
                count(&self.stats.retransmitted_segments, 1);
            }
        }
    }

    /// Every WebSocket hears Closed; sockets are reset (best effort).
    fn close_all(&mut self, reason: &str) {
        let connections: Vec<_> = self.connections.drain().collect();
        for (id, connection) in connections {
            self.log_closed(id, &connection);
            let socket = self.sockets.get_mut::<tcp::Socket>(connection.socket);
            socket.abort();
            match connection.phase {
                Phase::Connecting { reply, .. } => {
                    let _ = reply.send(Err(GolemError::not_found(reason.to_string())));
                }
                _ => {
                    let _ = connection
                        .events
                        .try_send(ConnectionEvent::Closed(reason.to_string()));
                }
            }
            if let Some(pending) = connection.pending {
                let _ = pending.written.send(Err(connection_closed()));
            }
        }
        self.iface.poll(now(), &mut self.device, &mut self.sockets);
        self.route_egress();
    }
}

fn connection_closed() -> GolemError {
    GolemError::new(golem_model::ErrorCode::Gone, "the connection is closed")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const OWN: Ipv4Addr = Ipv4Addr::new(192, 168, 0, 1);
    const REMOTE: Ipv4Addr = Ipv4Addr::new(192, 168, 0, 2);

    /// A smoltcp host at [`REMOTE`] listening on port 7 with a large window.
    struct Remote {
        iface: Interface,
        device: PacketQueue,
        sockets: SocketSet<'static>,
    }

    impl Remote {
        fn new() -> Remote {
            let mut device = PacketQueue::default();
            let mut iface = Interface::new(Config::new(HardwareAddress::Ip), &mut device, now());
            iface.update_ip_addrs(|cidrs| {
                cidrs
                    .push(IpCidr::new(IpAddress::Ipv4(REMOTE), 24))
                    .unwrap();
            });
            let mut socket = tcp::Socket::new(
                tcp::SocketBuffer::new(vec![0; 4 << 20]),
                tcp::SocketBuffer::new(vec![0; 1 << 16]),
            );
            socket.set_ack_delay(None);
            socket.listen(7).unwrap();
            let mut sockets = SocketSet::new(Vec::new());
            sockets.add(socket);
            Remote {
                iface,
                device,
                sockets,
            }
        }
    }

    /// The stack's interface without its queues: what a poll sent goes to
    /// no member (counted as unroutable) unless the test takes it first.
    fn stack() -> Stack {
        let mut stack = Stack::new(
            "net",
            PeerQueues::new("net", golem_bus::Router::new()),
            Arc::new(VpnStats::default()),
        );
        stack.apply_membership(Membership {
            nodes: HashMap::new(),
            own: vec![OWN],
            prefix: 24,
            source: Some(OWN),
        });
        stack
    }

    /// Move packets both ways until neither side sends any.
    fn shuttle(stack: &mut Stack, remote: &mut Remote) {
        for _ in 0..100 {
            stack
                .iface
                .poll(now(), &mut stack.device, &mut stack.sockets);
            stack.service_connections();
            let out: Vec<_> = stack.device.tx.drain(..).collect();
            let sent = !out.is_empty();
            remote.device.rx.extend(out);
            remote
                .iface
                .poll(now(), &mut remote.device, &mut remote.sockets);
            let back: Vec<_> = remote.device.tx.drain(..).collect();
            let answered = !back.is_empty();
            stack.device.rx.extend(back);
            if !sent && !answered {
                return;
            }
        }
    }

    #[test]
    fn segments_sent_again_are_counted_as_retransmissions_across_the_wrap() {
        let mut traffic = ConnectionTraffic::new();
        let start = u32::MAX - 100;
        assert!(!traffic.observe_segment(start, 1), "the SYN");
        assert!(!traffic.observe_segment(start.wrapping_add(1), 1000));
        assert!(!traffic.observe_segment(start.wrapping_add(1001), 1000));
        assert!(
            !traffic.observe_segment(start, 0),
            "a bare ACK is no segment"
        );
        // Go-back-N after a timeout: both data segments again.
        assert!(traffic.observe_segment(start.wrapping_add(1), 1000));
        assert!(traffic.observe_segment(start.wrapping_add(1001), 1000));
        assert!(!traffic.observe_segment(start.wrapping_add(2001), 1000));
        assert_eq!((traffic.segments, traffic.retransmitted), (6, 2));
    }

    /// A connection of `stack` to the remote's port 7, established.
    fn connected(stack: &mut Stack, remote: &mut Remote) -> ConnectionId {
        let (events, _) = mpsc::channel(EVENT_QUEUE);
        let (reply, mut replied) = oneshot::channel();
        stack.connect(SocketAddrV4::new(REMOTE, 7), events, reply);
        shuttle(stack, remote);
        replied.try_recv().unwrap().unwrap().0
    }

    /// Queue `data` on `connection` (its acknowledgement is not awaited).
    fn write(stack: &mut Stack, connection: ConnectionId, data: Bytes) {
        let (written, _) = oneshot::channel();
        stack.apply(StackCommand::Write {
            connection,
            data,
            written,
        });
    }

    /// Poll the stack and take what it sent, counted as route_egress counts it.
    fn sent(stack: &mut Stack) -> Vec<Vec<u8>> {
        stack.poll_interface();
        let out = std::mem::take(&mut stack.device.tx);
        for packet in &out {
            stack.observe_egress(packet);
        }
        out
    }

    /// Hand `packets` to the remote; what it answers.
    fn answers(remote: &mut Remote, packets: &[Vec<u8>]) -> Vec<Vec<u8>> {
        remote.device.rx.extend(packets.iter().cloned());
        remote
            .iface
            .poll(now(), &mut remote.device, &mut remote.sockets);
        remote.device.tx.drain(..).collect()
    }

    /// The stalls of `scripts/bench/vpn.sh` (session 12, RFC 003's
    /// addendum): a window acknowledged part by part, each part in time but
    /// the whole later than smoltcp 0.12's 10 ms timeout. 0.12 restarted
    /// its timer only once everything was acknowledged, so it sent the
    /// whole window again; the timer must restart on every acknowledgement
    /// of new data (RFC 6298, 5.3).
    #[test]
    fn a_window_acknowledged_late_but_steadily_is_not_sent_again() {
        let (mut stack, mut remote) = (stack(), Remote::new());
        let connection = connected(&mut stack, &mut remote);
        // Quick round trips first: the stack's estimate of the round trip
        // (and its retransmission timeout) becomes that of a fast path.
        for _ in 0..50 {
            write(&mut stack, connection, Bytes::from_static(b"x"));
            shuttle(&mut stack, &mut remote);
        }
        write(
            &mut stack,
            connection,
            Bytes::from(vec![7u8; SOCKET_BUFFER]),
        );
        let window = sent(&mut stack);
        assert!(window.len() >= 8, "{} segments", window.len());
        let (first, second) = window.split_at(window.len() / 2);
        for part in [first, second] {
            let acknowledgements = answers(&mut remote, part);
            std::thread::sleep(Duration::from_millis(40));
            stack.device.rx.extend(acknowledgements);
            sent(&mut stack);
        }
        assert_eq!(stack.stats.snapshot().retransmitted_segments, 0);
        let socket = stack.connections[&connection].socket;
        assert_eq!(stack.sockets.get::<tcp::Socket>(socket).send_queue(), 0);
    }

    #[test]
    fn the_stack_counts_a_segment_it_sends_again() {
        let (mut stack, mut remote) = (stack(), Remote::new());
        let connection = connected(&mut stack, &mut remote);
        write(&mut stack, connection, Bytes::from_static(b"lost"));
        stack.poll();
        assert_eq!(stack.stats.snapshot().retransmitted_segments, 0);
        // The segment never reaches the remote: smoltcp's timer sends it again.
        std::thread::sleep(Duration::from_millis(1100));
        stack.poll();
        assert_eq!(stack.stats.snapshot().retransmitted_segments, 1);
    }

    #[test]
    fn ingress_waiting_for_a_poll_is_bounded_in_bytes() {
        let mut stack = stack();
        let member: NodeId = "0x2222222222222222222222222222222222222222"
            .parse()
            .unwrap();
        stack.apply_membership(Membership {
            nodes: HashMap::from([(REMOTE, member)]),
            own: vec![OWN],
            prefix: 24,
            source: Some(OWN),
        });
        // TCP with a bad checksum: the interface drops it without an answer.
        let repr = smoltcp::wire::Ipv4Repr {
            src_addr: REMOTE,
            dst_addr: OWN,
            next_header: smoltcp::wire::IpProtocol::Tcp,
            payload_len: VPN_MTU - 20,
            hop_limit: 64,
        };
        let mut largest = vec![0; VPN_MTU];
        repr.emit(
            &mut Ipv4Packet::new_unchecked(&mut largest[..]),
            &smoltcp::phy::ChecksumCapabilities::default(),
        );
        let fit = MAX_RX_QUEUE_BYTES / VPN_MTU;
        stack.ingress(member, vec![largest.clone(); fit + 10]);
        let stats = stack.stats.snapshot();
        assert_eq!(stats.ingress_packets, fit as u64);
        assert_eq!(stats.dropped_ingress_full, 10);
        // A poll takes them all, and the queue has room again.
        stack.poll();
        stack.ingress(member, vec![largest; 1]);
        assert_eq!(stack.stats.snapshot().ingress_packets, fit as u64 + 1);
    }

    #[test]
    fn one_poll_sends_all_a_write_the_window_allows() {
        let (mut stack, mut remote) = (stack(), Remote::new());
        let connection = connected(&mut stack, &mut remote);
        // A first byte, so that the remote's ACK opens its scaled window
        // (a SYN's window is at most 64 KiB: one segment at our MTU).
        write(&mut stack, connection, Bytes::from_static(b"x"));
        stack.service_connections();
        shuttle(&mut stack, &mut remote);
        let before = stack.stats.snapshot().dropped_unroutable;
        let (written, mut acknowledged) = oneshot::channel();
        stack.apply(StackCommand::Write {
            connection,
            data: Bytes::from(vec![7u8; SOCKET_BUFFER]),
            written,
        });
        stack.poll();
        // One poll: the whole buffer leaves in MSS-sized segments (it used to
        // be one or two per poll, a segment per timer tick).
        let segments = stack.stats.snapshot().dropped_unroutable - before;
        let mss = (VPN_MTU - 40) as u64;
        assert!(
            segments >= SOCKET_BUFFER as u64 / mss,
            "{segments} segments in one poll"
        );
        assert_eq!(acknowledged.try_recv().unwrap(), Ok(()));
    }
}
