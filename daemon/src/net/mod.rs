//! Net service: runs the node's libp2p layer (`golem-net`) with the node key as
//! its identity, and connects it to the bus both ways. Calls to
//! `/net/<nodeId>/public/...` on the router go to that node (or straight back
//! into this router when `nodeId` is our own); calls arriving from other nodes
//! are delivered to this router as `Caller::Remote(<their NodeId>)`, so the
//! router's visibility rule keeps `/local/...` out of reach. Services use
//! [`NetService::publish`]/[`NetService::subscribe`] for broadcasts.
//!
//! The swarm runs in its own tokio task behind `golem_net::NetHandle` (RFC
//! 001); the control messages of `/local/net` and `/public/net` are handled by
//! [`NetActor`] on the service thread "net" (RFC 002), while calls to other
//! nodes go from the `/net/` prefix straight to the swarm's handle, with no
//! mailbox hop. This module must not hold per-peer state of its own.

use actix::{Actor, Handler, ResponseFuture};
use anyhow::Context;
use futures::stream::{self, StreamExt};
use golem_bus::{
    Address, BusCall, Caller, Endpoint, Incoming, ReplyStream, Router, ServiceArbiter,
    ServiceEndpoint, Supervised,
};
use golem_model::bus::{
    GetNetStatus, PingNode, PingRemote, PingResult, PongNode, PublishBroadcast, ReceivedBroadcast,
    SubscribeBroadcasts, NET_PUBLIC_SERVICE, NET_SERVICE,
};
use golem_model::{GolemError, NodeId};
use golem_net::{Broadcast, InboundCall, NetConfig, NetHandle, NetStatus};
use tokio::sync::mpsc;

/// Handle to the net service. Cheap to clone.
#[derive(Clone)]
pub struct NetService {
    handle: NetHandle,
    actor: Supervised<NetActor>,
    arbiter: ServiceArbiter,
}

/// The net service's actor: answers the control messages (status, pings,
/// broadcasts) of local components and other nodes. It keeps no state beyond
/// the swarm's handle and the router; a restart costs nothing.
pub struct NetActor {
    handle: NetHandle,
    router: Router,
}

impl Actor for NetActor {
    type Context = actix::Context<Self>;
}

impl Handler<Incoming<GetNetStatus>> for NetActor {
    type Result = ResponseFuture<Result<serde_json::Value, GolemError>>;
    fn handle(&mut self, _: Incoming<GetNetStatus>, _: &mut Self::Context) -> Self::Result {
        let handle = self.handle.clone();
        Box::pin(async move {
            serde_json::to_value(handle.status().await)
                .map_err(|error| GolemError::internal(error.to_string()))
        })
    }
}

impl Handler<Incoming<PingRemote>> for NetActor {
    type Result = ResponseFuture<Result<PingResult, GolemError>>;
    fn handle(&mut self, incoming: Incoming<PingRemote>, _: &mut Self::Context) -> Self::Result {
        let router = self.router.clone();
        let node_id = incoming.message.node_id;
        Box::pin(async move {
            let started = std::time::Instant::now();
            let address = golem_bus::address::net_address(node_id, NET_PUBLIC_SERVICE);
            let pong = router.call(&address, &PingNode).await?;
            Ok(PingResult {
                node_id: pong.node_id,
                seen_as: pong.caller,
                round_trip_us: started.elapsed().as_micros() as u64,
            })
        })
    }
}

impl Handler<Incoming<PingNode>> for NetActor {
    type Result = Result<PongNode, GolemError>;
    /// Who answered and who asked (a local caller is this node itself).
    fn handle(&mut self, incoming: Incoming<PingNode>, _: &mut Self::Context) -> Self::Result {
        let node_id = self.handle.local_node_id();
        let caller = match incoming.caller {
            Caller::Remote(caller) => caller,
            Caller::Local => node_id,
        };
        Ok(PongNode { node_id, caller })
    }
}

impl Handler<Incoming<PublishBroadcast>> for NetActor {
    type Result = ResponseFuture<Result<(), GolemError>>;
    fn handle(
        &mut self,
        incoming: Incoming<PublishBroadcast>,
        _: &mut Self::Context,
    ) -> Self::Result {
        let handle = self.handle.clone();
        let message = incoming.message;
        Box::pin(async move {
            handle
                .publish(&message.topic, message.payload.into_bytes())
                .await
        })
    }
}

/// Start libp2p with `net_config` and bind `/net/`, `/local/net` and
/// `/public/net` on `router`.
pub async fn start(
    net_config: NetConfig,
    secret: [u8; 32],
    router: &Router,
) -> anyhow::Result<NetService> {
    let inbound_router = router.clone();
    let inbound = golem_net::handler(move |call: InboundCall| {
        let router = inbound_router.clone();
        async move {
            router
                .call_once(BusCall {
                    caller: Caller::Remote(call.caller),
                    address: call.address,
                    message: call.message,
                    payload: call.payload,
                    attachment: call.attachment,
                    stream: false,
                })
                .await
        }
    });
    let stream_router = router.clone();
    let stream_handler: golem_net::InboundStreamHandler =
        std::sync::Arc::new(move |call: InboundCall| {
            stream_router.call_stream_raw(BusCall {
                caller: Caller::Remote(call.caller),
                address: call.address,
                message: call.message,
                payload: call.payload,
                attachment: call.attachment,
                stream: true,
            })
        });
    let handle = golem_net::start_with_streams(secret, net_config, inbound, Some(stream_handler))
        .await
        .context("starting the p2p network (check --p2p-listen)")?;
    let arbiter =
        ServiceArbiter::current_or_spawn("net").context("starting the net service thread")?;
    let actor_handle = handle.clone();
    let actor_router = router.clone();
    let actor = Supervised::start("net", arbiter.handle(), move || NetActor {
        handle: actor_handle.clone(),
        router: actor_router.clone(),
    });
    let service = NetService {
        handle,
        actor,
        arbiter,
    };

    router.bind_prefix(
        "/net/",
        RemoteEndpoint {
            net: service.handle.clone(),
            router: router.clone(),
        },
    )?;
    router.bind(NET_SERVICE, service.local_endpoint())?;
    router.bind(NET_PUBLIC_SERVICE, service.public_endpoint())?;
    let status = service.status().await;
    tracing::info!(listen_addrs = ?status.listen_addrs, peer_id = %status.peer_id, "p2p network listening");
    Ok(service)
}

impl NetService {
    pub fn node_id(&self) -> NodeId {
        self.handle.local_node_id()
    }

    pub async fn status(&self) -> NetStatus {
        self.handle.status().await
    }

    /// The NodeIds of the peers connected now (cheap: no addresses encoded).
    pub async fn connected_nodes(&self) -> Vec<NodeId> {
        self.handle.connected_nodes().await
    }

    /// Broadcast `payload` on `topic` to every subscribed node (not to ourselves).
    pub async fn publish(&self, topic: &str, payload: Vec<u8>) -> Result<(), GolemError> {
        self.handle.publish(topic, payload).await
    }

    /// Receive broadcasts of other nodes on `topic`.
    pub async fn subscribe(&self, topic: &str) -> Result<mpsc::Receiver<Broadcast>, GolemError> {
        self.handle.subscribe(topic).await
    }

    /// `/public/net`: answers pings of other nodes with who answered and who asked.
    fn public_endpoint(&self) -> ServiceEndpoint {
        ServiceEndpoint::new().on_actor::<PingNode, _, _>(self.actor.clone())
    }

    /// `/local/net`: status, ping of another node, and broadcasts for local
    /// components. A subscription is a stream from the swarm, served directly.
    fn local_endpoint(&self) -> ServiceEndpoint {
        let subscribe_service = self.clone();
        ServiceEndpoint::new()
            .on_actor::<GetNetStatus, _, _>(self.actor.clone())
            .on_actor::<PingRemote, _, _>(self.actor.clone())
            .on_actor::<PublishBroadcast, _, _>(self.actor.clone())
            .on_stream(move |_caller, message: SubscribeBroadcasts| {
                let service = subscribe_service.clone();
                stream::once(async move { service.subscribe(&message.topic).await }).flat_map(
                    |subscribed| match subscribed {
                        Ok(receiver) => tokio_stream_of(receiver)
                            .map(|broadcast| {
                                Ok(ReceivedBroadcast {
                                    origin: broadcast.origin,
                                    topic: broadcast.topic,
                                    payload: String::from_utf8_lossy(&broadcast.payload)
                                        .into_owned(),
                                })
                            })
                            .boxed(),
                        Err(error) => stream::once(async move { Err(error) }).boxed(),
                    },
                )
            })
    }

    pub async fn stop(self) {
        self.actor.stop();
        self.arbiter.stop_from_async("net").await;
        self.handle.shutdown().await;
    }
}

fn tokio_stream_of<T: Send + 'static>(
    mut receiver: mpsc::Receiver<T>,
) -> impl futures::Stream<Item = T> + Send {
    stream::poll_fn(move |context| receiver.poll_recv(context))
}

/// The `/net/` prefix endpoint: delivers `/net/<node>/<rest>` to `<node>`.
struct RemoteEndpoint {
    net: NetHandle,
    router: Router,
}

impl Endpoint for RemoteEndpoint {
    fn handle(&self, call: BusCall) -> ReplyStream {
        let (node, rest) = match Address::parse(&call.address) {
            Ok(Address::Remote { node, rest }) => (node, rest.to_string()),
            Ok(_) => {
                let error =
                    GolemError::bad_request(format!("{} is not a /net/ address", call.address));
                return stream::once(async move { Err(error) }).boxed();
            }
            Err(error) => return stream::once(async move { Err(error) }).boxed(),
        };
        let own_node = self.net.local_node_id();
        if node == own_node {
            // A call to ourselves takes the same path as a remote one would, minus the wire.
            return self.router.call_stream_raw(BusCall {
                caller: Caller::Remote(own_node),
                address: rest,
                message: call.message,
                payload: call.payload,
                attachment: call.attachment,
                stream: call.stream,
            });
        }
        let net = self.net.clone();
        if call.stream {
            return stream::once(async move {
                net.call_stream(node, &rest, &call.message, call.payload)
                    .await
            })
            .flat_map(|opened| match opened {
                Ok(items) => items.boxed(),
                Err(error) => stream::once(async move { Err(error) }).boxed(),
            })
            .boxed();
        }
        stream::once(async move {
            net.call_with_attachment(node, &rest, &call.message, call.payload, call.attachment)
                .await
        })
        .boxed()
    }
}
