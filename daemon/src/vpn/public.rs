//! `/public/vpn/<networkId>` on the requestor's node: where members send the
//! network's packets. The handler decodes the batch and hands it to the
//! stack without waiting (the stack drops what non-members send), and
//! answers at once. The owner takes no `VpnControl`: it is the one who sends it.

use base64::Engine;
use golem_bus::{Caller, ServiceEndpoint};
use golem_model::vpn::{VpnControl, VpnPackets};
use golem_model::GolemError;

use super::stack::StackHandle;

/// Packets per call at most; a larger batch is refused.
const MAX_PACKETS_PER_CALL: usize = 4096;

pub fn endpoint(network_id: &str, stack: StackHandle) -> ServiceEndpoint {
    let network_id = network_id.to_string();
    ServiceEndpoint::new()
        .on(move |caller, batch: VpnPackets| {
            let outcome = take_packets(&network_id, &stack, caller, batch);
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
    batch: VpnPackets,
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
    if batch.packets.len() > MAX_PACKETS_PER_CALL {
        return Err(GolemError::bad_request(format!(
            "a batch holds at most {MAX_PACKETS_PER_CALL} packets"
        )));
    }
    let engine = base64::engine::general_purpose::STANDARD;
    let packets: Vec<Vec<u8>> = batch
        .packets
        .iter()
        .filter_map(|packet| engine.decode(packet).ok())
        .collect();
    let malformed = batch.packets.len() - packets.len();
    if malformed > 0 {
        stack
            .stats
            .dropped_invalid
            .fetch_add(malformed as u64, std::sync::atomic::Ordering::Relaxed);
    }
    stack.ingress(node, packets);
    Ok(())
}
