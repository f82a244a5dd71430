//! Egress of one network: an ordered send queue per member node. The stack
//! drops a packet into the member's queue and goes on; the queue's task sends
//! one [`VpnPackets`] call at a time to `/net/<node>/public/vpn/<id>`, and
//! batches whatever accumulated while the previous call was in flight (up to
//! [`golem_model::vpn::MAX_BATCH_BYTES`]). A full queue drops packets (IP may
//! lose them; TCP retransmits). A node that leaves the network loses its queue.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use golem_bus::{Caller, Router};
use golem_model::bus::net_address;
use golem_model::vpn::{vpn_service, PacketBatch, VpnPackets};
use golem_model::NodeId;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

/// Packets waiting for one peer before new ones are dropped.
const PEER_QUEUE: usize = 2048;
/// Bytes waiting for one peer before new packets are dropped (128 packets
/// at the MTU; the packet count alone would allow 128 MiB).
const PEER_QUEUE_BYTES: usize = 8 << 20;

/// A queued packet holds its bytes' share of the queue until it is batched.
type QueuedPacket = (Vec<u8>, OwnedSemaphorePermit);

struct PeerQueue {
    packets: mpsc::Sender<QueuedPacket>,
    room: Arc<Semaphore>,
}

/// The send queues of one network's members.
pub struct PeerQueues {
    network_id: String,
    router: Router,
    queues: HashMap<NodeId, PeerQueue>,
}

impl PeerQueues {
    pub fn new(network_id: &str, router: Router) -> PeerQueues {
        PeerQueues {
            network_id: network_id.to_string(),
            router,
            queues: HashMap::new(),
        }
    }

    /// Queue `packet` for `node`; false when its queue is full.
    pub fn send(&mut self, node: NodeId, packet: Vec<u8>) -> bool {
        let queue = self.queues.entry(node).or_insert_with(|| {
            let (sender, receiver) = mpsc::channel(PEER_QUEUE);
            let address = net_address(node, &vpn_service(&self.network_id));
            actix_rt::spawn(send_queue(
                self.router.clone(),
                address,
                self.network_id.clone(),
                node,
                receiver,
            ));
            PeerQueue {
                packets: sender,
                room: Arc::new(Semaphore::new(PEER_QUEUE_BYTES)),
            }
        });
        let Ok(room) = queue
            .room
            .clone()
            .try_acquire_many_owned(packet.len() as u32)
        else {
            return false;
        };
        queue.packets.try_send((packet, room)).is_ok()
    }

    /// Drop the queues of nodes that are no longer members (their tasks
    /// end once they have sent what they hold).
    pub fn retain(&mut self, members: &HashSet<NodeId>) {
        self.queues.retain(|node, _| members.contains(node));
    }
}

async fn send_queue(
    router: Router,
    address: String,
    network_id: String,
    node: NodeId,
    mut queue: mpsc::Receiver<QueuedPacket>,
) {
    let mut failures: u64 = 0;
    let message = VpnPackets {
        network_id: network_id.clone(),
    };
    while let Some(first) = queue.recv().await {
        let mut batch = PacketBatch::new();
        let mut next = Some(first);
        while let Some((packet, _room)) = next.take() {
            if let Err(error) = batch.push(&packet) {
                // The stack's MTU is the wire's: this is a bug, not traffic.
                tracing::warn!(%network_id, %node, %error, "vpn packet dropped");
            }
            if !batch.is_full() {
                next = queue.try_recv().ok();
            }
        }
        if batch.is_empty() {
            continue;
        }
        let attachment = batch.into_attachment();
        match router
            .call_with_attachment(Caller::Local, &address, &message, attachment)
            .await
        {
            Ok(()) => failures = 0,
            Err(error) => {
                failures += 1;
                // Once per streak at debug level is enough: TCP retries, and
                // the WebSocket times out if the node stays away.
                if failures == 1 {
                    tracing::debug!(%network_id, %node, %error, "sending vpn packets failed");
                }
            }
        }
    }
}
