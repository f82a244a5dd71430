//! VPN service, the requestor side of the Net API (`/net-api/v1`,
//! `/net-api/v2/vpn`): the virtual networks this node's requestors create,
//! each with its member table (IP -> NodeId), the requestor's own addresses,
//! and a user-space TCP/IP stack ([`stack`], smoltcp) whose TCP connections
//! are the WebSockets of `GET /net/{id}/tcp/{ip}/{port}`.
//!
//! It owns the networks' records (sled tree `vpn`, surviving restarts), the
//! stacks (not persisted: a restart closes connections) and, for each
//! network, the bus address `/public/vpn/<networkId>` where members send
//! packets. Members are reached at `/net/<node>/public/vpn/<networkId>`:
//! packets ([`golem_model::vpn::VpnPackets`]) through one ordered queue per
//! member ([`peers`]), membership changes ([`golem_model::vpn::VpnControl`])
//! pushed best-effort whenever nodes or addresses change.
//!
//! It must never show or touch a network to anyone but the identity that
//! created it (others get 404), never take packets from a node that is not a
//! member (or for an address that is not that member's), and never await the
//! network inside a stack's loop or the actor.
//!
//! Layout: [`actor::VpnActor`] (control plane: records, bindings, pushes) on
//! the "vpn" service arbiter; one stack task per network beside it (data
//! plane); the REST routes and the WebSocket pump in [`rest`].

pub mod actor;
pub mod address;
pub mod peers;
pub mod public;
pub mod records;
pub mod rest;
pub mod stack;

use std::sync::{Arc, Mutex};

use golem_bus::actor::{deliver, ServiceArbiter, Supervised};
use golem_bus::Router;
use golem_model::GolemError;

use self::actor::{Core, VpnActor};
use self::records::Db;
pub use self::stack::VpnStatsSnapshot;
use crate::store::Store;

/// Handle to the VPN service. Cheap to clone.
#[derive(Clone)]
pub struct VpnService {
    actor: Supervised<VpnActor>,
    arbiter: ServiceArbiter,
}

/// Load the networks (a corrupt tree stops the daemon here) and start the
/// actor, which starts their stacks and binds their bus addresses; returns
/// once it has (so members' packets find their address as soon as we answer).
pub async fn start(store: &Store, router: &Router) -> anyhow::Result<VpnService> {
    let db = Db {
        tree: store.tree(records::TREE)?,
    };
    let records = db.load()?;
    let core = Core {
        router: router.clone(),
        db,
        preloaded: Arc::new(Mutex::new(Some(records))),
    };
    let arbiter = ServiceArbiter::current_or_spawn("vpn")?;
    let actor = Supervised::start("vpn", arbiter.handle(), move || VpnActor::new(core.clone()));
    let networks = deliver(&actor, actor::CountNetworks).await?;
    tracing::debug!(networks, "vpn service started");
    Ok(VpnService { actor, arbiter })
}

impl VpnService {
    /// Send `message` to the actor and unwrap its answer.
    pub async fn ask<M, T>(&self, message: M) -> Result<T, GolemError>
    where
        M: actix::Message<Result = Result<T, GolemError>> + Send + 'static,
        VpnActor: actix::Handler<M>,
        T: Send + 'static,
    {
        deliver(&self.actor, message).await?
    }

    /// The data-plane counters of network `id`.
    pub async fn stats(&self, id: &str) -> Result<VpnStatsSnapshot, GolemError> {
        self.ask(actor::Stats { id: id.to_string() }).await
    }

    /// How many times the actor was started again after dying.
    pub fn restarts(&self) -> u64 {
        self.actor.restarts()
    }

    /// Make the actor panic (fault injection for tests).
    #[doc(hidden)]
    pub async fn crash_for_test(&self) {
        let _ = deliver(&self.actor, actor::Crash).await;
    }

    /// Stop the actor (its stacks end, their WebSockets close) and its thread.
    pub async fn stop(self) {
        self.actor.stop();
        self.arbiter.stop_from_async("vpn").await;
    }
}
