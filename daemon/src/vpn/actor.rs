//! The VPN actor: the one owner of the networks of this node (records,
//! stacks, bus bindings). It runs on the "vpn" service arbiter under a
//! [`golem_bus::actor::Supervised`]; a new instance loads the records back
//! from sled in [`Actor::started`] and starts a fresh stack for each (sockets
//! do not survive). Handlers change a record, write it through and answer
//! once the tree is flushed; `VpnControl` pushes to members are spawned and
//! never delay the answer. A network is visible only to its owner: anyone
//! else gets 404, as if it did not exist.

use std::collections::HashMap;
use std::net::SocketAddrV4;
use std::sync::{Arc, Mutex};

use actix::{Actor, Context, Handler, Message, ResponseFuture};
use golem_bus::Router;
use golem_model::bus::net_address;
use golem_model::vpn::{vpn_service, Network, NetworkAddress, NetworkNode, NewNetwork, VpnControl};
use golem_model::{GolemError, NodeId};

use super::address::{host_in, parse_new_network, parse_node_id};
use super::peers::PeerQueues;
use super::public;
use super::records::{Change, Db, NetworkRecord};
use super::stack::{self, Membership, StackHandle, VpnStats, VpnStatsSnapshot};

/// What every instance of the actor shares.
#[derive(Clone)]
pub struct Core {
    pub router: Router,
    pub db: Db,
    /// Records loaded by `start` (so a corrupt tree stops the daemon there),
    /// taken by the first instance; later ones load from sled.
    pub preloaded: Arc<Mutex<Option<Vec<NetworkRecord>>>>,
}

/// A network with its running stack. Dropping it stops the stack (its
/// WebSockets hear Closed) and unbinds its bus address.
struct LiveNetwork {
    record: NetworkRecord,
    stack: StackHandle,
    router: Router,
}

impl Drop for LiveNetwork {
    fn drop(&mut self) {
        self.stack.shutdown();
        self.router.unbind(&vpn_service(&self.record.id));
    }
}

pub struct VpnActor {
    core: Core,
    networks: HashMap<String, LiveNetwork>,
}

impl VpnActor {
    pub fn new(core: Core) -> VpnActor {
        VpnActor {
            core,
            networks: HashMap::new(),
        }
    }

    /// Start `record`'s stack and bind its bus address.
    fn launch(&mut self, record: NetworkRecord) -> Result<(), GolemError> {
        let id = record.id.clone();
        let stats = Arc::new(VpnStats::default());
        let peers = PeerQueues::new(&id, self.core.router.clone());
        let stack = stack::start(&id, Membership::of(&record), peers, stats);
        if let Err(error) = self
            .core
            .router
            .bind(&vpn_service(&id), public::endpoint(&id, stack.clone()))
        {
            stack.shutdown();
            return Err(GolemError::conflict(format!(
                "cannot serve network {id} on this node: {} (is an exe unit of this network running here?)",
                error.message
            )));
        }
        self.networks.insert(
            id,
            LiveNetwork {
                record,
                stack,
                router: self.core.router.clone(),
            },
        );
        Ok(())
    }

    fn network(&self, owner: NodeId, id: &str) -> Result<&LiveNetwork, GolemError> {
        match self.networks.get(id) {
            Some(network) if network.record.owner == owner => Ok(network),
            _ => Err(not_found(id)),
        }
    }

    fn network_mut(&mut self, owner: NodeId, id: &str) -> Result<&mut LiveNetwork, GolemError> {
        match self.networks.get_mut(id) {
            Some(network) if network.record.owner == owner => Ok(network),
            _ => Err(not_found(id)),
        }
    }

    /// Write `record` through, give its stack the membership and answer `value`
    /// once the tree is flushed.
    fn commit<T: Send + 'static>(
        &mut self,
        owner: NodeId,
        id: &str,
        change: impl FnOnce(&mut NetworkRecord) -> Result<(Change, Option<VpnControl>, T), GolemError>,
    ) -> ResponseFuture<Result<T, GolemError>> {
        let db = self.core.db.clone();
        let router = self.core.router.clone();
        let outcome = self.network_mut(owner, id).and_then(|network| {
            let mut record = network.record.clone();
            let (changed, control, value) = change(&mut record)?;
            if changed == Change::Changed {
                db.put(&record)?;
                network.record = record;
                network.stack.set_membership(&network.record);
            }
            if let Some(control) = control {
                push_control(&router, &network.record, control);
            }
            Ok(value)
        });
        persisted(&self.core.db, outcome)
    }
}

fn not_found(id: &str) -> GolemError {
    let shown: String = id.chars().take(64).collect();
    GolemError::not_found(format!("network {shown} not found"))
}

/// Answer `outcome` once the tree is flushed (an acknowledged change is on disk).
fn persisted<T: Send + 'static>(
    db: &Db,
    outcome: Result<T, GolemError>,
) -> ResponseFuture<Result<T, GolemError>> {
    let tree = db.tree.clone();
    Box::pin(async move {
        let value = outcome?;
        Db::flush(tree).await?;
        Ok(value)
    })
}

/// Send `control` to every member of `record` (and to the nodes it names
/// as removed), each call spawned: a node that is not up yet only misses it.
fn push_control(router: &Router, record: &NetworkRecord, control: VpnControl) {
    for node in record.members() {
        let router = router.clone();
        let control = control.clone();
        let address = net_address(node, &vpn_service(&record.id));
        let network_id = record.id.clone();
        actix_rt::spawn(async move {
            if let Err(error) = router.call(&address, &control).await {
                tracing::debug!(%network_id, %node, %error, "vpn control push failed (best effort)");
            }
        });
    }
}

fn add_nodes(record: &NetworkRecord) -> VpnControl {
    VpnControl::AddNodes {
        network_id: record.id.clone(),
        nodes: record.routing_table(),
    }
}

impl Actor for VpnActor {
    type Context = Context<Self>;

    fn started(&mut self, _ctx: &mut Context<Self>) {
        let preloaded = self
            .core
            .preloaded
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        let records = match preloaded {
            Some(records) => records,
            None => match self.core.db.load() {
                Ok(records) => records,
                Err(error) => {
                    tracing::error!(%error, "cannot load the vpn networks; serving none");
                    Vec::new()
                }
            },
        };
        let total = records.len();
        for record in records {
            let id = record.id.clone();
            if let Err(error) = self.launch(record) {
                tracing::error!(network_id = %id, %error, "cannot restore a vpn network");
            }
        }
        if total > 0 {
            tracing::info!(
                networks = total,
                "vpn networks restored (without their connections)"
            );
        }
    }

    fn stopped(&mut self, _ctx: &mut Context<Self>) {
        self.networks.clear();
    }
}

/// `POST /net`.
pub struct CreateNetwork {
    pub owner: NodeId,
    pub request: NewNetwork,
}
impl Message for CreateNetwork {
    type Result = Result<Network, GolemError>;
}

impl Handler<CreateNetwork> for VpnActor {
    type Result = ResponseFuture<Result<Network, GolemError>>;
    fn handle(&mut self, message: CreateNetwork, _: &mut Context<Self>) -> Self::Result {
        let outcome = parse_new_network(&message.request).and_then(|(subnet, gateway)| {
            let id = golem_model::ids::new_id();
            let record = NetworkRecord::new(id.clone(), message.owner, subnet, gateway);
            self.core.db.put(&record)?;
            let network = record.to_network();
            if let Err(error) = self.launch(record) {
                self.core.db.delete(&id)?;
                return Err(error);
            }
            tracing::info!(network_id = %id, ip = %network.ip, "vpn network created");
            Ok(network)
        });
        persisted(&self.core.db, outcome)
    }
}

/// `GET /net`: the owner's networks.
pub struct ListNetworks {
    pub owner: NodeId,
}
impl Message for ListNetworks {
    type Result = Result<Vec<Network>, GolemError>;
}

impl Handler<ListNetworks> for VpnActor {
    type Result = Result<Vec<Network>, GolemError>;
    fn handle(&mut self, message: ListNetworks, _: &mut Context<Self>) -> Self::Result {
        let mut networks: Vec<Network> = self
            .networks
            .values()
            .filter(|network| network.record.owner == message.owner)
            .map(|network| network.record.to_network())
            .collect();
        networks.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(networks)
    }
}

/// What a read of one network returns.
pub enum NetworkView {
    Network,
    Addresses,
    Nodes,
}

/// `GET /net/{id}`, `/addresses`, `/nodes`.
pub struct ReadNetwork {
    pub owner: NodeId,
    pub id: String,
    pub view: NetworkView,
}
impl Message for ReadNetwork {
    type Result = Result<serde_json::Value, GolemError>;
}

impl Handler<ReadNetwork> for VpnActor {
    type Result = Result<serde_json::Value, GolemError>;
    fn handle(&mut self, message: ReadNetwork, _: &mut Context<Self>) -> Self::Result {
        let record = &self.network(message.owner, &message.id)?.record;
        let value = match message.view {
            NetworkView::Network => serde_json::to_value(record.to_network()),
            NetworkView::Addresses => serde_json::to_value(record.address_list()),
            NetworkView::Nodes => serde_json::to_value(record.node_list()),
        };
        value.map_err(|error| GolemError::internal(error.to_string()))
    }
}

/// `DELETE /net/{id}`: its stack stops, its WebSockets close, and every
/// member hears `RemoveNodes` for all the network's addresses (best effort),
/// so exe units stop routing into a network that no longer exists.
pub struct DeleteNetwork {
    pub owner: NodeId,
    pub id: String,
}
impl Message for DeleteNetwork {
    type Result = Result<(), GolemError>;
}

impl Handler<DeleteNetwork> for VpnActor {
    type Result = ResponseFuture<Result<(), GolemError>>;
    fn handle(&mut self, message: DeleteNetwork, _: &mut Context<Self>) -> Self::Result {
        let record = self
            .network(message.owner, &message.id)
            .map(|network| network.record.clone());
        let outcome = record.and_then(|record| {
            self.core.db.delete(&message.id)?;
            self.networks.remove(&message.id);
            tracing::info!(network_id = %message.id, "vpn network removed");
            Ok(record)
        });
        let outcome = outcome.map(|record| {
            let control = VpnControl::RemoveNodes {
                network_id: record.id.clone(),
                ips: record.routing_table().into_keys().collect(),
            };
            push_control(&self.core.router, &record, control);
        });
        persisted(&self.core.db, outcome)
    }
}

/// `POST /net/{id}/addresses`.
pub struct AddAddress {
    pub owner: NodeId,
    pub id: String,
    pub address: NetworkAddress,
}
impl Message for AddAddress {
    type Result = Result<(), GolemError>;
}

impl Handler<AddAddress> for VpnActor {
    type Result = ResponseFuture<Result<(), GolemError>>;
    fn handle(&mut self, message: AddAddress, _: &mut Context<Self>) -> Self::Result {
        self.commit(message.owner, &message.id, |record| {
            let ip = host_in("ip", &message.address.ip, &record.subnet())?;
            let change = record.add_own_address(ip)?;
            Ok((change, Some(add_nodes(record)), ()))
        })
    }
}

/// `POST /net/{id}/nodes`: our own NodeId is an address of ours.
pub struct AddNode {
    pub owner: NodeId,
    pub id: String,
    pub node: NetworkNode,
}
impl Message for AddNode {
    type Result = Result<(), GolemError>;
}

impl Handler<AddNode> for VpnActor {
    type Result = ResponseFuture<Result<(), GolemError>>;
    fn handle(&mut self, message: AddNode, _: &mut Context<Self>) -> Self::Result {
        self.commit(message.owner, &message.id, |record| {
            let node = parse_node_id("id", &message.node.id)?;
            let ip = host_in("ip", &message.node.ip, &record.subnet())?;
            let change = record.add_node(node, ip)?;
            // Pushed on repeats too: yapapi re-adds every node once its
            // activities run, which is how a late exe unit gets the table.
            Ok((change, Some(add_nodes(record)), ()))
        })
    }
}

/// `DELETE /net/{id}/nodes/{nodeId}`: an unknown node is fine.
pub struct RemoveNode {
    pub owner: NodeId,
    pub id: String,
    pub node: String,
}
impl Message for RemoveNode {
    type Result = Result<(), GolemError>;
}

impl Handler<RemoveNode> for VpnActor {
    type Result = ResponseFuture<Result<(), GolemError>>;
    fn handle(&mut self, message: RemoveNode, _: &mut Context<Self>) -> Self::Result {
        let router = self.core.router.clone();
        self.commit(message.owner, &message.id, |record| {
            let node = parse_node_id("nodeId", &message.node)?;
            let removed = record.remove_node(node);
            if removed.is_empty() {
                return Ok((Change::Unchanged, None, ()));
            }
            let control = VpnControl::RemoveNodes {
                network_id: record.id.clone(),
                ips: removed.iter().map(ToString::to_string).collect(),
            };
            // The node that left hears it too (the others via commit).
            let address = net_address(node, &vpn_service(&record.id));
            let to_removed = control.clone();
            actix_rt::spawn(async move {
                let _ = router.call(&address, &to_removed).await;
            });
            Ok((Change::Changed, Some(control), ()))
        })
    }
}

/// The stack of a network, for `GET /tcp` (asked outside the actor).
pub struct StackOf {
    pub owner: NodeId,
    pub id: String,
}
impl Message for StackOf {
    type Result = Result<StackHandle, GolemError>;
}

impl Handler<StackOf> for VpnActor {
    type Result = Result<StackHandle, GolemError>;
    fn handle(&mut self, message: StackOf, _: &mut Context<Self>) -> Self::Result {
        Ok(self.network(message.owner, &message.id)?.stack.clone())
    }
}

/// Where a WebSocket's connection goes: checked against the network before
/// the upgrade (an address outside it: 400; no member there: 404).
pub struct ConnectTarget {
    pub owner: NodeId,
    pub id: String,
    pub ip: String,
    pub port: u16,
}
impl Message for ConnectTarget {
    type Result = Result<(StackHandle, SocketAddrV4), GolemError>;
}

impl Handler<ConnectTarget> for VpnActor {
    type Result = Result<(StackHandle, SocketAddrV4), GolemError>;
    fn handle(&mut self, message: ConnectTarget, _: &mut Context<Self>) -> Self::Result {
        let network = self.network(message.owner, &message.id)?;
        let record = &network.record;
        let ip = host_in("ip", &message.ip, &record.subnet())?;
        if record.own_addresses().contains(&ip) {
            return Err(GolemError::bad_request(format!(
                "invalid ip: {ip} is the requestor's own address in network {}",
                record.id
            )));
        }
        if !record.nodes.contains_key(&ip) {
            return Err(GolemError::not_found(format!(
                "no node of network {} has the address {ip}",
                record.id
            )));
        }
        Ok((network.stack.clone(), SocketAddrV4::new(ip, message.port)))
    }
}

/// The data-plane counters of a network (any owner: diagnostics and tests).
pub struct Stats {
    pub id: String,
}
impl Message for Stats {
    type Result = Result<VpnStatsSnapshot, GolemError>;
}

impl Handler<Stats> for VpnActor {
    type Result = Result<VpnStatsSnapshot, GolemError>;
    fn handle(&mut self, message: Stats, _: &mut Context<Self>) -> Self::Result {
        self.networks
            .get(&message.id)
            .map(|network| network.stack.stats.snapshot())
            .ok_or_else(|| not_found(&message.id))
    }
}

/// How many networks are live (answered once `started` has restored them).
pub struct CountNetworks;
impl Message for CountNetworks {
    type Result = usize;
}

impl Handler<CountNetworks> for VpnActor {
    type Result = usize;
    fn handle(&mut self, _: CountNetworks, _: &mut Context<Self>) -> usize {
        self.networks.len()
    }
}

/// Make the actor panic (fault injection for the restart test).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Crash;

impl Handler<Crash> for VpnActor {
    type Result = ();
    fn handle(&mut self, _: Crash, _: &mut Context<Self>) {
        panic!("vpn actor crash requested by a test");
    }
}
