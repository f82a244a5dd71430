//! The VM unit's side of a VPN (design note `vpn.md` §5 option A): the
//! activity's container gets a TUN interface in its own network namespace
//! ([`interface`]) and the exe unit relays IPv4 packets between that
//! interface's fd and the other members over the bus.
//!
//! - **Bus.** [`VpnMember::join`] binds `/public/vpn/<networkId>` on the
//!   daemon's bus at `deploy` (a second binding on one daemon — two
//!   activities of one network, or its requestor on the same node — fails
//!   `deploy` with Conflict); [`VpnMember::leave`] unbinds it and closes the
//!   fd. Members send `VpnPackets` to `/net/<node>/public/vpn/<networkId>`,
//!   the packets as raw bytes in the call's attachment ([`PacketBatch`]).
//! - **Ingress.** `VpnPackets` are taken only from a remote caller that
//!   holds an address in the member table ([`table::Members`]) or is the
//!   agreement's requestor (the network's owner); from anyone
//!   else the call is refused with Forbidden, counted and logged. Packets must
//!   be for our address (or a broadcast of the network) and from an address
//!   of the network the sender holds, or that nobody holds yet (it is then
//!   learned as the sender's).
//! - **Control.** `VpnControl` is taken only from the agreement's requestor
//!   (the network's owner); from anyone else it is refused with Forbidden.
//! - **Egress.** One task reads the interface; packets not from our address
//!   are dropped, broadcast and multicast too (no member of ours expects
//!   them: the requestor's stack and other containers talk unicast), and the
//!   rest go by destination to the member holding it, through one ordered
//!   queue per peer whose task sends what accumulated while its previous call
//!   was in flight as one batch. Nothing awaits per packet; a full queue drops.
//!
//! Every drop is counted in [`Counters`]; the totals are logged when the
//! member leaves. Under gVisor the interface carries Ethernet frames and
//! [`ethernet`] translates (and answers the sandbox's ARP).

pub mod ethernet;
pub mod interface;
pub mod network;
pub mod table;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use golem_bus::{BusClient, Caller, ServiceEndpoint};
use golem_model::bus::net_address;
use golem_model::vpn::{split_packets, vpn_service, PacketBatch, VpnControl, VpnPackets, VPN_MTU};
use golem_model::{ErrorCode, GolemError, NodeId};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;

use self::ethernet::{EthernetLink, FromSandbox};
use self::interface::{Framing, InterfaceConfig};
use self::network::VpnNetwork;
use self::table::{Egress, Ingress, Members};

/// Packets that may wait for one peer while a call to it is in flight.
pub const PEER_QUEUE_PACKETS: usize = 1024;
/// Bytes that may wait for one peer (128 packets at the MTU; the packet
/// count alone would let the payload park 64 MiB per peer in the exe unit).
pub const PEER_QUEUE_BYTES: usize = 8 << 20;

/// A queued packet holds its bytes' share of its queue until it is batched.
type QueuedPacket = (Vec<u8>, OwnedSemaphorePermit);

/// What happened to packets and calls, for logs and tests.
#[derive(Debug, Default)]
pub struct Counters {
    /// Packets written to the interface.
    pub delivered: AtomicU64,
    /// Packets in calls refused because the caller is not a member.
    pub refused_non_member: AtomicU64,
    /// Members' packets dropped (malformed, not for us, spoofed, not started).
    pub dropped_ingress: AtomicU64,
    /// `VpnControl` calls refused because the caller is not the owner.
    pub refused_control: AtomicU64,
    /// Packets sent to peers (the call succeeded).
    pub sent: AtomicU64,
    /// Packets the payload wrote that went nowhere (foreign source,
    /// broadcast, no route, queue full).
    pub dropped_egress: AtomicU64,
    /// Packets in calls to peers that failed.
    pub send_failed: AtomicU64,
}

impl Counters {
    fn add(counter: &AtomicU64, count: u64) -> u64 {
        counter.fetch_add(count, Ordering::Relaxed) + count
    }

    fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Log the 1st, 2nd, 4th, 8th... occurrence only: a flood stays a few lines.
fn worth_logging(count: u64) -> bool {
    count.is_power_of_two()
}

struct Shared {
    network: VpnNetwork,
    /// The agreement's requestor: the only node whose `VpnControl` is taken.
    owner: Option<NodeId>,
    members: Mutex<Members>,
    device: Mutex<Option<Arc<tun::AsyncDevice>>>,
    /// Set when the interface carries Ethernet frames (under gVisor).
    ethernet: Mutex<Option<Arc<EthernetLink>>>,
    counters: Counters,
}

/// This activity as a member of one network.
pub struct VpnMember {
    shared: Arc<Shared>,
    bus: BusClient,
    address: String,
    egress: Mutex<Option<JoinHandle<()>>>,
}

impl VpnMember {
    /// Bind the network's address on the daemon's bus. `owner` is the
    /// agreement's requestor, `own_node` this provider.
    pub async fn join(
        bus: BusClient,
        network: VpnNetwork,
        owner: Option<NodeId>,
        own_node: Option<NodeId>,
    ) -> Result<VpnMember, String> {
        let address = vpn_service(&network.id);
        let shared = Arc::new(Shared {
            members: Mutex::new(Members::new(&network, own_node, owner)),
            network,
            owner,
            device: Mutex::new(None),
            ethernet: Mutex::new(None),
            counters: Counters::default(),
        });
        bus.bind(&address, endpoint(shared.clone()))
            .await
            .map_err(|error| match error.code {
                ErrorCode::Conflict => format!(
                    "network {} already has a member on this node (another activity of this provider, or its requestor): one node holds one address per network",
                    shared.network.id
                ),
                _ => format!("cannot bind {address} on the bus: {error}"),
            })?;
        tracing::info!(network = %shared.network.id, %address, node_ip = %shared.network.node_ip, members = lock(&shared.members).len(), "VPN member joined");
        Ok(VpnMember {
            shared,
            bus,
            address,
            egress: Mutex::new(None),
        })
    }

    pub fn network(&self) -> &VpnNetwork {
        &self.shared.network
    }

    pub fn counters(&self) -> &Counters {
        &self.shared.counters
    }

    /// Give the network namespace of process `pid` (the container's init,
    /// or under gVisor the holder of its namespace) the interface carrying
    /// `framing`, and start relaying.
    pub async fn attach(&self, pid: u32, framing: Framing) -> Result<(), String> {
        let config = InterfaceConfig {
            address: self.shared.network.node_ip,
            mask: self.shared.network.mask(),
            framing,
        };
        let device = tokio::task::spawn_blocking(move || interface::create_in_process(pid, config))
            .await
            .map_err(|error| format!("the interface task failed: {error}"))??;
        let device = Arc::new(
            tun::AsyncDevice::new(device)
                .map_err(|error| format!("cannot poll the interface: {error}"))?,
        );
        *lock(&self.shared.device) = Some(device.clone());
        *lock(&self.shared.ethernet) = match framing {
            Framing::Ip => None,
            Framing::Ethernet => Some(Arc::new(EthernetLink::new(config.address))),
        };
        let task = tokio::spawn(egress(self.shared.clone(), device, self.bus.clone()));
        if let Some(old) = lock(&self.egress).replace(task) {
            old.abort();
        }
        tracing::info!(network = %self.shared.network.id, pid, interface = interface::INTERFACE_NAME, address = %config.address, mask = %config.mask, ?framing, "VPN interface up");
        Ok(())
    }

    /// Stop relaying, close the interface's fd and unbind the address.
    pub async fn leave(&self) {
        if let Some(task) = lock(&self.egress).take() {
            task.abort();
        }
        lock(&self.shared.device).take();
        if !self.bus.is_closed() {
            if let Err(error) = self.bus.unbind(&self.address).await {
                tracing::warn!(address = %self.address, %error, "cannot unbind the VPN address");
            }
        }
        let counters = &self.shared.counters;
        tracing::info!(
            network = %self.shared.network.id,
            delivered = Counters::get(&counters.delivered),
            refused_non_member = Counters::get(&counters.refused_non_member),
            dropped_ingress = Counters::get(&counters.dropped_ingress),
            refused_control = Counters::get(&counters.refused_control),
            sent = Counters::get(&counters.sent),
            dropped_egress = Counters::get(&counters.dropped_egress),
            send_failed = Counters::get(&counters.send_failed),
            "VPN member left"
        );
    }
}

fn endpoint(shared: Arc<Shared>) -> ServiceEndpoint {
    let control = shared.clone();
    ServiceEndpoint::new()
        .on_with_attachment(move |caller, message: VpnPackets, attachment| {
            ingress(shared.clone(), caller, message, attachment)
        })
        .on(move |caller, message: VpnControl| {
            let shared = control.clone();
            async move { apply_control(&shared, caller, &message) }
        })
}

async fn ingress(
    shared: Arc<Shared>,
    caller: Caller,
    message: VpnPackets,
    attachment: Vec<u8>,
) -> Result<(), GolemError> {
    let counters = &shared.counters;
    let network_id = &shared.network.id;
    if message.network_id != *network_id {
        return Err(GolemError::bad_request(format!(
            "packets for network {} reached network {network_id}",
            message.network_id
        )));
    }
    let sender = match caller {
        Caller::Remote(node) if lock(&shared.members).is_member(node) => node,
        _ => {
            let count = split_packets(&attachment).count() as u64;
            let total = Counters::add(&counters.refused_non_member, count.max(1));
            if worth_logging(total) || total == count {
                tracing::warn!(network = %network_id, ?caller, packets = count, refused_total = total, "VPN packets from a non-member refused");
            }
            return Err(GolemError::forbidden(format!(
                "{caller:?} is not a member of network {network_id}"
            )));
        }
    };
    let mut deliver = Vec::new();
    {
        let mut members = lock(&shared.members);
        for packet in split_packets(&attachment) {
            let verdict = match packet {
                Ok(bytes) if bytes.len() <= VPN_MTU => {
                    let verdict = members.ingress(sender, bytes);
                    if matches!(verdict, Ingress::Deliver | Ingress::DeliverAndLearn) {
                        deliver.push(bytes);
                    }
                    verdict
                }
                _ => Ingress::Malformed,
            };
            match verdict {
                Ingress::Deliver => {}
                Ingress::DeliverAndLearn => {
                    tracing::info!(network = %network_id, node = %sender, "learned a member's address from its packets");
                }
                dropped => {
                    let total = Counters::add(&counters.dropped_ingress, 1);
                    if worth_logging(total) {
                        tracing::info!(network = %network_id, node = %sender, reason = ?dropped, dropped_total = total, "VPN packet from a member dropped");
                    }
                }
            }
        }
    }
    let device = lock(&shared.device).clone();
    let Some(device) = device else {
        Counters::add(&counters.dropped_ingress, deliver.len() as u64);
        return Ok(());
    };
    let ethernet = lock(&shared.ethernet).clone();
    for packet in deliver {
        let written = match &ethernet {
            Some(link) => device.send(&link.to_sandbox(packet)).await,
            None => device.send(packet).await,
        };
        match written {
            Ok(_) => {
                Counters::add(&counters.delivered, 1);
            }
            Err(error) => {
                let total = Counters::add(&counters.dropped_ingress, 1);
                if worth_logging(total) {
                    tracing::warn!(network = %network_id, %error, "cannot write a packet to the VPN interface");
                }
            }
        }
    }
    Ok(())
}

fn apply_control(shared: &Shared, caller: Caller, message: &VpnControl) -> Result<(), GolemError> {
    let network_id = &shared.network.id;
    match caller {
        Caller::Remote(node) if Some(node) == shared.owner => {}
        _ => {
            let total = Counters::add(&shared.counters.refused_control, 1);
            if worth_logging(total) {
                tracing::warn!(network = %network_id, ?caller, refused_total = total, "VpnControl from a node other than the requestor refused");
            }
            return Err(GolemError::forbidden(format!(
                "only the requestor that owns network {network_id} may change its members"
            )));
        }
    }
    lock(&shared.members)
        .apply(message)
        .map_err(|error| GolemError::bad_request(error.to_string()))?;
    tracing::info!(network = %network_id, control = ?message, "VPN members changed by the requestor");
    Ok(())
}

/// Read the interface and hand each packet to its peer's queue.
async fn egress(shared: Arc<Shared>, device: Arc<tun::AsyncDevice>, bus: BusClient) {
    let counters = &shared.counters;
    let mut queues: HashMap<NodeId, (mpsc::Sender<QueuedPacket>, Arc<Semaphore>)> = HashMap::new();
    let mut buffer = vec![0u8; 65536];
    loop {
        let length = match device.recv(&mut buffer).await {
            Ok(length) => length,
            Err(error) => {
                tracing::warn!(network = %shared.network.id, %error, "cannot read the VPN interface; relaying stops");
                return;
            }
        };
        let ethernet = lock(&shared.ethernet).clone();
        let packet = match ethernet
            .as_deref()
            .map(|link| link.from_sandbox(&buffer[..length]))
        {
            None => &buffer[..length],
            Some(FromSandbox::Ipv4(packet)) => packet,
            Some(FromSandbox::Answer(frame)) => {
                if let Err(error) = device.send(&frame).await {
                    tracing::debug!(network = %shared.network.id, %error, "cannot answer the sandbox's ARP");
                }
                continue;
            }
            Some(FromSandbox::Ignored) => continue,
        };
        let route = lock(&shared.members).egress(packet);
        let dropped = match route {
            Egress::To(node) => {
                let (queue, room) = queues.entry(node).or_insert_with(|| {
                    let (queue, queued) = mpsc::channel(PEER_QUEUE_PACKETS);
                    tokio::spawn(send_to_peer(shared.clone(), bus.clone(), node, queued));
                    (queue, Arc::new(Semaphore::new(PEER_QUEUE_BYTES)))
                });
                let queued = room
                    .clone()
                    .try_acquire_many_owned(length as u32)
                    .ok()
                    .and_then(|room| queue.try_send((packet.to_vec(), room)).ok());
                match queued {
                    Some(()) => continue,
                    None => Egress::To(node),
                }
            }
            other => other,
        };
        let total = Counters::add(&counters.dropped_egress, 1);
        if worth_logging(total) {
            tracing::debug!(network = %shared.network.id, reason = ?dropped, dropped_total = total, "packet from the payload dropped");
        }
    }
}

/// One peer's ordered queue: send what accumulated as one batch, wait for the
/// reply, repeat. Ends when the egress task (the sender side) is gone.
async fn send_to_peer(
    shared: Arc<Shared>,
    bus: BusClient,
    node: NodeId,
    mut queued: mpsc::Receiver<QueuedPacket>,
) {
    let address = net_address(node, &vpn_service(&shared.network.id));
    let counters = &shared.counters;
    let message = VpnPackets {
        network_id: shared.network.id.clone(),
    };
    while let Some(first) = queued.recv().await {
        let mut batch = PacketBatch::new();
        let mut next = Some(first);
        while let Some((packet, _room)) = next.take() {
            if let Err(error) = batch.push(&packet) {
                let total = Counters::add(&counters.dropped_egress, 1);
                if worth_logging(total) {
                    tracing::warn!(network = %shared.network.id, %node, %error, dropped_total = total, "packet from the payload dropped");
                }
            }
            if !batch.is_full() {
                next = queued.try_recv().ok();
            }
        }
        if batch.is_empty() {
            continue;
        }
        let count = batch.len() as u64;
        match bus
            .call_with_attachment(&address, &message, batch.into_attachment())
            .await
        {
            Ok(()) => {
                Counters::add(&counters.sent, count);
            }
            Err(error) => {
                let total = Counters::add(&counters.send_failed, count);
                if worth_logging(total) || total == count {
                    tracing::warn!(network = %shared.network.id, %node, %error, failed_total = total, "VPN packets not delivered to a member");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::collections::BTreeMap;
    use std::net::Ipv4Addr;

    use futures::StreamExt;
    use golem_bus::{BusCall, Endpoint};

    use super::table::tests::{node, packet};
    use super::*;

    /// Member 1 is the owner (requestor), 3 another provider; we are 2.
    fn shared() -> Arc<Shared> {
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
        Arc::new(Shared {
            members: Mutex::new(Members::new(&network, Some(node(2)), Some(node(1)))),
            network,
            owner: Some(node(1)),
            device: Mutex::new(None),
            ethernet: Mutex::new(None),
            counters: Counters::default(),
        })
    }

    async fn call<M: golem_model::bus::BusMessage>(
        shared: &Arc<Shared>,
        caller: Caller,
        message: &M,
    ) -> Result<serde_json::Value, GolemError> {
        call_with(shared, caller, message, Vec::new()).await
    }

    async fn call_with<M: golem_model::bus::BusMessage>(
        shared: &Arc<Shared>,
        caller: Caller,
        message: &M,
        attachment: Vec<u8>,
    ) -> Result<serde_json::Value, GolemError> {
        let call = BusCall {
            caller,
            address: vpn_service("net"),
            message: M::NAME.to_string(),
            payload: serde_json::to_value(message).unwrap(),
            attachment,
            stream: false,
        };
        endpoint(shared.clone()).handle(call).next().await.unwrap()
    }

    fn batch(network_id: &str) -> VpnPackets {
        VpnPackets {
            network_id: network_id.into(),
        }
    }

    /// One packet from `from` to us, as a `VpnPackets` attachment.
    fn packets(from: [u8; 4]) -> Vec<u8> {
        PacketBatch::of([&packet(from, [192, 168, 0, 2])[..]]).into_attachment()
    }

    /// A `VpnPackets` call of `caller` carrying `attachment`.
    async fn send(
        shared: &Arc<Shared>,
        caller: Caller,
        network_id: &str,
        attachment: Vec<u8>,
    ) -> Result<serde_json::Value, GolemError> {
        call_with(shared, caller, &batch(network_id), attachment).await
    }

    #[tokio::test]
    async fn packets_from_non_members_are_refused_and_counted() {
        let shared = shared();
        for caller in [Caller::Remote(node(9)), Caller::Local] {
            let refused = send(&shared, caller, "net", packets([192, 168, 0, 9])).await;
            assert_eq!(refused.unwrap_err().code, ErrorCode::Forbidden);
        }
        assert_eq!(Counters::get(&shared.counters.refused_non_member), 2);
        assert!(!lock(&shared.members).is_member(node(9)), "nothing learned");
        // A member's packet is taken (dropped here: no interface yet).
        send(
            &shared,
            Caller::Remote(node(3)),
            "net",
            packets([192, 168, 0, 3]),
        )
        .await
        .unwrap();
        assert_eq!(Counters::get(&shared.counters.refused_non_member), 2);
        assert_eq!(Counters::get(&shared.counters.dropped_ingress), 1);
        let other_network = packets([192, 168, 0, 3]);
        let refused = send(&shared, Caller::Remote(node(3)), "other", other_network).await;
        assert_eq!(refused.unwrap_err().code, ErrorCode::BadRequest);
    }

    #[tokio::test]
    async fn overlong_and_cut_packets_of_a_member_are_dropped_and_counted() {
        let shared = shared();
        // Its IPv4 header claims more bytes than the packet has.
        let mut overlong = packet([192, 168, 0, 3], [192, 168, 0, 2]);
        overlong[2..4].copy_from_slice(&u16::MAX.to_be_bytes());
        let mut attachment = PacketBatch::of([&overlong[..]]).into_attachment();
        attachment.extend_from_slice(&[0x05, 0xdc, 0x45]); // says 1500 bytes, has 1
        send(&shared, Caller::Remote(node(3)), "net", attachment)
            .await
            .unwrap();
        assert_eq!(Counters::get(&shared.counters.dropped_ingress), 2);
        assert_eq!(Counters::get(&shared.counters.delivered), 0);
        assert!(lock(&shared.members).is_member(node(3)), "still a member");
    }

    #[test]
    fn the_largest_packet_is_routed_whole() {
        let shared = shared();
        let mut largest = packet([192, 168, 0, 3], [192, 168, 0, 2]);
        largest[2..4].copy_from_slice(&(VPN_MTU as u16).to_be_bytes());
        largest.resize(VPN_MTU, 7);
        assert_eq!(
            lock(&shared.members).ingress(node(3), &largest),
            Ingress::Deliver
        );
        let mut reply = packet([192, 168, 0, 2], [192, 168, 0, 3]);
        reply[2..4].copy_from_slice(&(VPN_MTU as u16).to_be_bytes());
        reply.resize(VPN_MTU, 7);
        assert_eq!(lock(&shared.members).egress(&reply), Egress::To(node(3)));
    }

    #[tokio::test]
    async fn only_the_owner_changes_members() {
        let shared = shared();
        let add = VpnControl::AddNodes {
            network_id: "net".into(),
            nodes: BTreeMap::from([("192.168.0.9".to_string(), node(9))]),
        };
        for caller in [
            Caller::Remote(node(3)),
            Caller::Remote(node(9)),
            Caller::Local,
        ] {
            let refused = call(&shared, caller, &add).await;
            assert_eq!(
                refused.unwrap_err().code,
                ErrorCode::Forbidden,
                "{caller:?}"
            );
        }
        assert_eq!(Counters::get(&shared.counters.refused_control), 3);
        assert!(!lock(&shared.members).is_member(node(9)));
        call(&shared, Caller::Remote(node(1)), &add).await.unwrap();
        assert!(lock(&shared.members).is_member(node(9)));
        // Now node 9's packets are taken.
        send(
            &shared,
            Caller::Remote(node(9)),
            "net",
            packets([192, 168, 0, 9]),
        )
        .await
        .unwrap();
    }
}
