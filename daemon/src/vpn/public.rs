//! `/public/vpn/<networkId>` on the requestor's node: where members send the
//! network's packets. The handler splits the call's attachment (a
//! [`golem_model::vpn::PacketBatch`]) into packets and hands them to the
//! stack without waiting (the stack drops what non-members send), and
//! answers at once. The owner takes no `VpnControl`: it is the one who sends it.

use golem_bus::{Caller, ServiceEndpoint};
use golem_model::vpn::{split_packets, VpnControl, VpnPackets};
use golem_model::GolemError;

use super::stack::StackHandle;

/// Packets per call at most; a larger batch is refused.
const MAX_PACKETS_PER_CALL: usize = 4096;

pub fn endpoint(network_id: &str, stack: StackHandle) -> ServiceEndpoint {
    let network_id = network_id.to_string();
    ServiceEndpoint::new()
        .on_with_attachment(move |caller, batch: VpnPackets, attachment| {
            let outcome = take_packets(&network_id, &stack, caller, &batch, &attachment);
            async move { outcome }
        })
        .on(|_caller, _control: VpnControl| async {
            Err::<(), _>(GolemError::forbidden(
                "this node owns the network; it sends VpnControl and takes none",
            ))
        })
}

fn take_packets(
    network_id: &str,
    stack: &StackHandle,
    caller: Caller,
    batch: &VpnPackets,
    attachment: &[u8],
) -> Result<(), GolemError> {
    let Caller::Remote(node) = caller else {
        return Err(GolemError::forbidden(
            "vpn packets come from other nodes only",
        ));
    };
    if batch.network_id != network_id {
        return Err(GolemError::bad_request(format!(
            "packets for network {} sent to network {network_id}",
            batch.network_id
        )));
    }
    let mut packets = Vec::new();
    let mut truncated = false;
    for packet in split_packets(attachment) {
        match packet {
            Ok(packet) => packets.push(packet.to_vec()),
            Err(_) => truncated = true,
        }
        if packets.len() > MAX_PACKETS_PER_CALL {
            return Err(GolemError::bad_request(format!(
                "a batch holds at most {MAX_PACKETS_PER_CALL} packets"
            )));
        }
    }
    if truncated {
        // The whole packets before the cut are still the member's.
        stack
            .stats
            .dropped_invalid
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    if !packets.is_empty() {
        stack.ingress(node, packets);
    }
    Ok(())
}
