//! Market service: the Golem Market API (`/market-api/v1`) of this node.
//!
//! It owns offers and demands subscribed here, the catalogue of offers learnt
//! from other nodes, the negotiations (proposals) and agreements this node is a
//! party to, and their event queues. It must never act on another node's
//! negotiation or agreement unless that node is the counterparty, and never
//! block one counterparty's traffic on another's.
//!
//! How it works:
//! - **Discovery.** Our offers are broadcast on a per-subnet gossip topic
//!   ([`golem_model::market::offers_topic`]) when subscribed or unsubscribed and
//!   re-announced every [`MarketConfig::announce_interval`]; a node also asks
//!   every peer it newly connects to for that peer's own offers
//!   ([`golem_model::market::GetOwnOffers`]). An offer is accepted only from its
//!   provider (broadcast origin or answering node), unexpired, and not after an
//!   unsubscription of it (tombstones), so forged and replayed ones are dropped.
//! - **Matching** is local: a demand is matched both ways against every live
//!   offer of its subnet at once, and every offer that arrives later against
//!   every live demand. A match is an `Initial` proposal event on the demand.
//! - **Negotiation and agreements** travel as bus calls to
//!   `/net/<counterparty>/public/market` (see the messages in
//!   `golem_model::market`); the net authenticates the caller. Both parties keep
//!   the same proposal and agreement ids.
//!
//! Concurrency: the service is an `Arc`-shared handle, not an actor. All state
//! sits behind one `std::sync::Mutex` that is only held for in-memory updates
//! and their sled write-through (microseconds), never across an `.await`. Remote
//! calls are made after the lock is released, each in the task of the request
//! that needs it (or a spawned task for fire-and-forget notices), with
//! [`MarketConfig::remote_timeout`]; so a slow or dead counterparty only delays
//! the requests addressed to it. Long-polls wait on `tokio::sync::watch`
//! counters bumped on every new event, never on sleeps.

mod agreements;
mod negotiation;
mod propagation;
mod public;
pub mod rest;
pub use subscriptions::SubscriptionKind;
mod state;
mod subscriptions;

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use golem_bus::Router;
use golem_model::bus::BusMessage;
use golem_model::market::MARKET_PUBLIC_SERVICE;
use golem_model::{GolemError, NodeId};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use self::state::{Db, State};
use crate::net::NetService;
use crate::store::Store;

/// Tunables of the market (defaults match the original where it has one).
#[derive(Debug, Clone)]
pub struct MarketConfig {
    /// Lifetime of an offer or demand subscription (yagna: 1 h).
    pub subscription_ttl: chrono::Duration,
    /// How often our live offers are broadcast again.
    pub announce_interval: Duration,
    /// How often connected peers are checked for newcomers to ask for offers.
    pub peer_check_interval: Duration,
    /// Bound of every call to another node's market.
    pub remote_timeout: Duration,
    /// How often expired subscriptions, offers and agreements are swept.
    pub sweep_interval: Duration,
}

impl Default for MarketConfig {
    fn default() -> Self {
        MarketConfig {
            subscription_ttl: chrono::Duration::hours(1),
            announce_interval: Duration::from_secs(5),
            peer_check_interval: Duration::from_millis(500),
            remote_timeout: Duration::from_secs(4),
            sweep_interval: Duration::from_secs(1),
        }
    }
}

/// Handle to the market service. Cheap to clone.
#[derive(Clone)]
pub struct MarketService {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    node_id: NodeId,
    router: Router,
    net: NetService,
    config: MarketConfig,
    db: Db,
    state: Mutex<State>,
    /// Bumped whenever a subscription event is queued or a subscription ends.
    events_changed: watch::Sender<u64>,
    /// Bumped whenever an agreement changes or an agreement event is recorded.
    agreements_changed: watch::Sender<u64>,
    /// Gossip topics we listen on, by subnet.
    topics: Mutex<std::collections::HashSet<Option<String>>>,
    shutdown: CancellationToken,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

/// Load the market's records, bind `/public/market`, listen for offers and
/// start the periodic work.
pub async fn start(
    node_id: NodeId,
    store: &Store,
    router: &Router,
    net: &NetService,
    config: MarketConfig,
) -> anyhow::Result<MarketService> {
    let tree = store.tree(state::TREE)?;
    let db = Db { tree };
    let state = db.load()?;
    let (events_changed, _) = watch::channel(0);
    let (agreements_changed, _) = watch::channel(0);
    tracing::info!(
        offers = state.offers.len(),
        demands = state.demands.len(),
        agreements = state.agreements.len(),
        "market state loaded"
    );
    let service = MarketService {
        inner: Arc::new(Inner {
            node_id,
            router: router.clone(),
            net: net.clone(),
            config,
            db,
            state: Mutex::new(state),
            events_changed,
            agreements_changed,
            topics: Mutex::new(Default::default()),
            shutdown: CancellationToken::new(),
            tasks: Mutex::new(Vec::new()),
        }),
    };
    router.bind(MARKET_PUBLIC_SERVICE, public::endpoint(service.clone()))?;
    service.start_background().await;
    Ok(service)
}

impl MarketService {
    pub fn node_id(&self) -> NodeId {
        self.inner.node_id
    }

    /// Stop the background tasks (the REST API and the bus must be stopped first).
    pub async fn stop(self) {
        self.inner.shutdown.cancel();
        let tasks = std::mem::take(&mut *self.inner.tasks_lock());
        for task in tasks {
            let _ = task.await;
        }
        if let Err(error) = self.inner.db.tree.flush_async().await {
            tracing::warn!(%error, "flushing the market tree failed");
        }
    }

    /// Make every change so far durable. Awaited before acknowledging a
    /// negotiation or agreement step (to a client or to the counterparty), so
    /// a crash right after cannot forget what the other side was told.
    /// Subscriptions and event deliveries ride on sled's periodic flush: after a
    /// crash a client may see a 404 (and re-subscribe) or an event again.
    async fn persist(&self) -> Result<(), GolemError> {
        self.inner
            .db
            .tree
            .flush_async()
            .await
            .map(|_| ())
            .map_err(|error| {
                GolemError::internal(format!("cannot persist the market state: {error}"))
            })
    }

    fn spawn_task(&self, future: impl std::future::Future<Output = ()> + Send + 'static) {
        let shutdown = self.inner.shutdown.clone();
        let handle = tokio::spawn(async move {
            tokio::select! {
                _ = shutdown.cancelled() => {}
                _ = future => {}
            }
        });
        let mut tasks = self.inner.tasks_lock();
        tasks.retain(|task| !task.is_finished());
        tasks.push(handle);
    }

    /// Call the market of `node` with the configured timeout.
    async fn call_remote<M: BusMessage>(
        &self,
        node: NodeId,
        message: &M,
    ) -> Result<M::Reply, GolemError> {
        let address = format!("/net/{node}{MARKET_PUBLIC_SERVICE}");
        match tokio::time::timeout(
            self.inner.config.remote_timeout,
            self.inner.router.call(&address, message),
        )
        .await
        {
            Ok(reply) => reply,
            Err(_) => Err(GolemError::timeout(format!(
                "node {node} did not answer {} within {:?}",
                M::NAME,
                self.inner.config.remote_timeout
            ))),
        }
    }

    /// Send `message` to `node` in the background, retrying a few times; for
    /// notices whose delivery must not hold up the local caller.
    fn notify_remote<M: BusMessage + Clone + Sync>(&self, node: NodeId, message: M) {
        let service = self.clone();
        self.spawn_task(async move {
            for attempt in 1..=3u32 {
                match service.call_remote(node, &message).await {
                    Ok(_) => return,
                    Err(error) => {
                        tracing::warn!(%node, message = M::NAME, attempt, %error, "notifying the counterparty failed");
                        tokio::time::sleep(Duration::from_secs(u64::from(attempt))).await;
                    }
                }
            }
        });
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Every update completes under the lock, so a panicked holder leaves
        // consistent state behind.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn tasks_lock(&self) -> MutexGuard<'_, Vec<JoinHandle<()>>> {
        self.tasks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn bump_events(&self) {
        self.events_changed.send_modify(|version| *version += 1);
    }

    fn bump_agreements(&self) {
        self.agreements_changed.send_modify(|version| *version += 1);
    }
}

/// A fresh random id: 32 lowercase hex digits.
pub(crate) fn new_id() -> String {
    hex::encode(rand::random::<[u8; 16]>())
}
