//! The public face of a running node: [`NetHandle`] (cheap to clone) sends
//! commands to the swarm task, plus the types exchanged with services
//! ([`InboundCall`], [`Broadcast`]) and the serializable [`NetStatus`].

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::stream::{BoxStream, Stream};
use golem_model::{GolemError, NodeId};
use libp2p::PeerId;
use serde::Serialize;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::protocol::{encode_request, StreamChunk, WireCall, WirePull, WireReply, WireRequest};

/// A bus call that arrived from another node. `caller` is derived from the
/// authenticated connection, never from the message itself; `address` always
/// starts with `/public/`.
#[derive(Debug, Clone)]
pub struct InboundCall {
    pub caller: NodeId,
    pub address: String,
    pub message: String,
    pub payload: Value,
    /// Raw bytes that came after the call's JSON (see [`crate::protocol`]).
    pub attachment: Vec<u8>,
}

/// Serves the calls of other nodes (the daemon routes them to its bus).
pub type InboundHandler =
    Arc<dyn Fn(InboundCall) -> BoxFuture<'static, Result<Value, GolemError>> + Send + Sync>;

/// Serves reply-stream calls of other nodes ([`NetHandle::call_stream`]).
/// Without one, stream calls get the [`InboundHandler`]'s answer as a
/// one-item stream.
pub type InboundStreamHandler =
    Arc<dyn Fn(InboundCall) -> BoxStream<'static, Result<Value, GolemError>> + Send + Sync>;

/// A gossip message received on a subscribed topic; `origin` is the NodeId of
/// the key that signed it (the publisher), not of the peer that relayed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Broadcast {
    pub origin: NodeId,
    pub topic: String,
    pub payload: Vec<u8>,
}

/// A snapshot of the node's network state, as shown by status endpoints.
#[derive(Debug, Clone, Serialize)]
pub struct NetStatus {
    pub node_id: NodeId,
    pub peer_id: String,
    /// Addresses actually bound (ephemeral ports resolved).
    pub listen_addrs: Vec<String>,
    pub external_addrs: Vec<String>,
    pub connected: Vec<PeerStatus>,
    /// Peers in the Kademlia routing table.
    pub known_peers: Vec<PeerStatus>,
    pub topics: Vec<TopicStatus>,
    pub relay: RelayStatus,
}

/// One peer as seen by this node.
#[derive(Debug, Clone, Serialize)]
pub struct PeerStatus {
    pub peer_id: String,
    /// `None` for peers without a secp256k1 identity.
    pub node_id: Option<NodeId>,
    pub addrs: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
}

/// A gossip topic this node subscribes to or knows peers of.
#[derive(Debug, Clone, Serialize)]
pub struct TopicStatus {
    pub topic: String,
    pub subscribed: bool,
    /// Connected peers subscribed to the topic.
    pub peers: Vec<NodeId>,
    /// Peers in this node's gossip mesh for the topic.
    pub mesh_peers: Vec<NodeId>,
}

/// Circuit relay state.
#[derive(Debug, Clone, Serialize)]
pub struct RelayStatus {
    /// Whether this node relays for others.
    pub server: bool,
    /// Relays that accepted a reservation for this node.
    pub reservations: Vec<String>,
    /// `/p2p-circuit` addresses this node is reachable at.
    pub relayed_addrs: Vec<String>,
}

pub(crate) enum Command {
    Call {
        to: NodeId,
        address: String,
        message: String,
        request: Vec<u8>,
        deadline: Instant,
        reply: oneshot::Sender<WireReply>,
    },
    Publish {
        topic: String,
        payload: Vec<u8>,
        reply: oneshot::Sender<Result<(), GolemError>>,
    },
    Subscribe {
        topic: String,
        sender: mpsc::Sender<Broadcast>,
        reply: oneshot::Sender<Result<(), GolemError>>,
    },
    Status {
        reply: oneshot::Sender<NetStatus>,
    },
    ConnectedNodes {
        reply: oneshot::Sender<Vec<NodeId>>,
    },
    Shutdown {
        reply: oneshot::Sender<()>,
    },
}

/// A running network node. Clones share the node; it stops on
/// [`NetHandle::shutdown`] or when the last clone is dropped.
#[derive(Clone)]
pub struct NetHandle {
    pub(crate) commands: mpsc::Sender<Command>,
    pub(crate) node_id: NodeId,
    pub(crate) peer_id: PeerId,
    pub(crate) call_timeout: Duration,
    pub(crate) max_frame: usize,
    pub(crate) subscription_queue: usize,
}

fn stopped() -> GolemError {
    GolemError::unavailable("the network layer is stopped")
}

impl NetHandle {
    /// This node's NodeId.
    pub fn local_node_id(&self) -> NodeId {
        self.node_id
    }

    /// This node's libp2p PeerId.
    pub fn local_peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// Call `message` at `address` (a `/public/...` bus address) on node `to`,
    /// within the configured call timeout (lookup and dial included).
    pub async fn call(
        &self,
        to: NodeId,
        address: &str,
        message: &str,
        payload: Value,
    ) -> Result<Value, GolemError> {
        self.call_with_timeout(to, address, message, payload, self.call_timeout)
            .await
    }

    /// [`NetHandle::call`] with an explicit timeout.
    pub async fn call_with_timeout(
        &self,
        to: NodeId,
        address: &str,
        message: &str,
        payload: Value,
        timeout: Duration,
    ) -> Result<Value, GolemError> {
        self.call_once(to, address, message, payload, Vec::new(), timeout)
            .await
    }

    /// [`NetHandle::call`] carrying `attachment`, raw bytes sent after the
    /// call's JSON (the callee's bus endpoint gets them as they are).
    pub async fn call_with_attachment(
        &self,
        to: NodeId,
        address: &str,
        message: &str,
        payload: Value,
        attachment: Vec<u8>,
    ) -> Result<Value, GolemError> {
        self.call_once(to, address, message, payload, attachment, self.call_timeout)
            .await
    }

    async fn call_once(
        &self,
        to: NodeId,
        address: &str,
        message: &str,
        payload: Value,
        attachment: Vec<u8>,
        timeout: Duration,
    ) -> Result<Value, GolemError> {
        let call = WireCall {
            address: address.to_string(),
            message: message.to_string(),
            payload,
            stream: false,
            attachment,
        };
        self.request(to, address, message, &WireRequest::Call(call), timeout)
            .await
    }

    /// Call `message` at `address` on node `to` and receive a stream of
    /// replies (served by the remote's [`InboundStreamHandler`]). Items are
    /// pulled chunk by chunk, each pull bounded by the call timeout; the
    /// stream ends after the remote's last item or after the first error of
    /// the exchange itself. Dropping it early lets the remote expire it.
    pub async fn call_stream(
        &self,
        to: NodeId,
        address: &str,
        message: &str,
        payload: Value,
    ) -> Result<impl Stream<Item = Result<Value, GolemError>> + Send + 'static, GolemError> {
        let call = WireCall {
            address: address.to_string(),
            message: message.to_string(),
            payload,
            stream: true,
            attachment: Vec::new(),
        };
        let first = self
            .request(
                to,
                address,
                message,
                &WireRequest::Call(call),
                self.call_timeout,
            )
            .await?;
        let chunk = decode_chunk(to, first)?;
        let state = PullState {
            handle: self.clone(),
            to,
            address: address.to_string(),
            message: message.to_string(),
            stream: chunk.stream,
            buffer: chunk.items.into(),
            end: chunk.end,
        };
        Ok(futures::stream::unfold(state, |mut state| async move {
            loop {
                if let Some(item) = state.buffer.pop_front() {
                    return Some((item, state));
                }
                if state.end {
                    return None;
                }
                let pull = WireRequest::Pull(WirePull {
                    pull: state.stream,
                    cancel: false,
                });
                let timeout = state.handle.call_timeout;
                let answer = state
                    .handle
                    .request(state.to, &state.address, &state.message, &pull, timeout)
                    .await;
                match answer.and_then(|value| decode_chunk(state.to, value)) {
                    Ok(chunk) => {
                        state.buffer.extend(chunk.items);
                        state.end = chunk.end;
                    }
                    Err(error) => {
                        state.end = true;
                        return Some((Err(error), state));
                    }
                }
            }
        }))
    }

    /// Send one request frame and wait for its answer, at most `timeout`.
    async fn request(
        &self,
        to: NodeId,
        address: &str,
        message: &str,
        request: &WireRequest,
        timeout: Duration,
    ) -> Result<Value, GolemError> {
        let request = encode_request(request).map_err(|error| {
            GolemError::internal(format!(
                "cannot encode call {message} to {address}: {error}"
            ))
        })?;
        if request.len() > self.max_frame {
            return Err(GolemError::new(
                golem_model::ErrorCode::PayloadTooLarge,
                format!(
                    "call {message} to {address} on node {to} is {} bytes, over the limit of {}",
                    request.len(),
                    self.max_frame
                ),
            ));
        }
        let deadline = Instant::now() + timeout;
        let (reply, answer) = oneshot::channel();
        let command = Command::Call {
            to,
            address: address.to_string(),
            message: message.to_string(),
            request,
            deadline,
            reply,
        };
        self.commands.send(command).await.map_err(|_| stopped())?;
        // The node fails the call itself at `deadline`; this is only a safety net.
        match tokio::time::timeout_at(deadline + Duration::from_secs(1), answer).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(stopped()),
            Err(_) => Err(GolemError::timeout(format!(
                "call {message} to {address} on node {to} got no answer within {timeout:?}"
            ))),
        }
    }

    /// Broadcast `payload` to the nodes subscribed to `topic`, signed by this
    /// node. Fails with Unavailable when no peer subscribes to the topic yet.
    pub async fn publish(&self, topic: &str, payload: Vec<u8>) -> Result<(), GolemError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::Publish {
                topic: topic.to_string(),
                payload,
                reply,
            })
            .await
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }

    /// Receive the broadcasts of other nodes on `topic` (never our own). Several
    /// subscriptions to one topic each get every message; dropping the receiver
    /// ends the subscription.
    pub async fn subscribe(&self, topic: &str) -> Result<mpsc::Receiver<Broadcast>, GolemError> {
        let (sender, receiver) = mpsc::channel(self.subscription_queue.max(1));
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::Subscribe {
                topic: topic.to_string(),
                sender,
                reply,
            })
            .await
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())??;
        Ok(receiver)
    }

    /// Ask the swarm task a question; `None` once the node is stopped.
    async fn ask<T>(&self, command: impl FnOnce(oneshot::Sender<T>) -> Command) -> Option<T> {
        let (reply, answer) = oneshot::channel();
        self.commands.send(command(reply)).await.ok()?;
        answer.await.ok()
    }

    /// A snapshot of the node's network state; `None` once the node is stopped.
    pub async fn try_status(&self) -> Option<NetStatus> {
        self.ask(|reply| Command::Status { reply }).await
    }

    /// The NodeIds of the peers connected now (empty once the node is
    /// stopped): what a periodic check needs, without the encoded addresses
    /// and DHT table of [`NetHandle::status`].
    pub async fn connected_nodes(&self) -> Vec<NodeId> {
        self.ask(|reply| Command::ConnectedNodes { reply })
            .await
            .unwrap_or_default()
    }

    /// A snapshot of the node's network state (empty once the node is stopped).
    pub async fn status(&self) -> NetStatus {
        match self.try_status().await {
            Some(status) => status,
            None => NetStatus {
                node_id: self.node_id,
                peer_id: self.peer_id.to_string(),
                listen_addrs: Vec::new(),
                external_addrs: Vec::new(),
                connected: Vec::new(),
                known_peers: Vec::new(),
                topics: Vec::new(),
                relay: RelayStatus {
                    server: false,
                    reservations: Vec::new(),
                    relayed_addrs: Vec::new(),
                },
            },
        }
    }

    /// Stop the node: close listeners and connections. Returns once the swarm
    /// is dropped (its ports are free again). Other clones then fail with
    /// Unavailable.
    pub async fn shutdown(self) {
        let (reply, answer) = oneshot::channel();
        if self
            .commands
            .send(Command::Shutdown { reply })
            .await
            .is_ok()
        {
            let _ = answer.await;
        }
    }
}

struct PullState {
    handle: NetHandle,
    to: NodeId,
    address: String,
    message: String,
    stream: u64,
    buffer: VecDeque<WireReply>,
    end: bool,
}

fn decode_chunk(from: NodeId, value: Value) -> Result<StreamChunk, GolemError> {
    serde_json::from_value(value).map_err(|error| {
        GolemError::internal(format!(
            "malformed reply stream chunk from node {from}: {error}"
        ))
    })
}

impl std::fmt::Debug for NetHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetHandle")
            .field("node_id", &self.node_id)
            .field("peer_id", &self.peer_id)
            .finish()
    }
}
