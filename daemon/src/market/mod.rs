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
//!   each peer, the first time it connects, for that peer's own offers
//!   ([`golem_model::market::GetOwnOffers`]; not again on reconnects). An offer is accepted only from its
//!   provider (broadcast origin or answering node), unexpired, and not after an
//!   unsubscription of it (tombstones), so forged and replayed ones are dropped.
//! - **Matching** is local: a demand is matched both ways against every live
//!   offer of its subnet at once, and every offer that arrives later against
//!   every live demand. A match is an `Initial` proposal event on the demand.
//!   Offers are held in their compact [`golem_model::constraints::MatchForm`]
//!   and demands' constraints compiled once, both against the state's own
//!   [`golem_model::constraints::KeyTable`], so one demand scans 100,000
//!   offers in under 50 ms.
//! - **Negotiation and agreements** travel as bus calls to
//!   `/net/<counterparty>/public/market` (see the messages in
//!   `golem_model::market`); the net authenticates the caller. Both parties keep
//!   the same proposal and agreement ids.
//!
//! Concurrency: the service is an Actix actor ([`actor::MarketActor`]) on its
//! own service thread, supervised: it owns all state, changes it in its
//! handlers (microseconds) and writes it through to sled, and answers once the
//! tree is flushed. Remote calls never run while the state is borrowed: a
//! handler returns a future that makes the call and applies its outcome to
//! the actor when it comes back, with [`MarketConfig::remote_timeout`]; so a
//! slow or dead counterparty only delays the requests addressed to it.
//! Notices that need no answer (rejections, cancellations, terminations) go
//! through the persistent outbox (`outbox.rs`), retried by the actor's timer
//! with bounded backoff until delivered, also after a restart. Long-polls wait
//! on `tokio::sync::watch` counters outside the actor, never on sleeps.
//! Other services read agreements through [`AgreementsView`], straight from
//! sled, without a message to the actor.

mod actor;
mod agreement_endings;
mod agreement_notices;
mod agreement_records;
mod agreements;
mod agreements_view;
mod db;
mod errors;
mod event_queues;
mod expiry;
mod matching;
mod negotiation;
mod outbox;
mod outbox_delivery;
mod ownership;
mod propagation;
mod public;
mod records;
pub mod rest;
mod retention;
mod scan;
mod scan_iterators;
pub mod settings;
mod state;
mod subscriptions;

pub use actor::MarketActor;
pub use agreements_view::AgreementsView;
pub use ownership::SubscriptionKind;
pub use settings::{
    MarketConfig, MarketLimits, MarketOverrides, MarketSettings, MarketSettingsError,
};

use std::sync::{Arc, Mutex};
use std::time::Duration;

use golem_bus::actor::{deliver, tell, ServiceArbiter, Supervised};
use golem_bus::Router;
use golem_model::{GolemError, NodeId};

use self::actor::{Core, Signals};
use self::db::Db;
use self::event_queues::EventQueues;
use crate::net::NetService;
use crate::store::Store;

/// Handle to the market service: the supervised actor, the counters its
/// long-polls wait on, and the read-only view of its agreements. Cheap to clone.
#[derive(Clone)]
pub struct MarketService {
    node_id: NodeId,
    actor: Supervised<MarketActor>,
    signals: Arc<Signals>,
    /// The subscriptions' event queues (long-polls take from them directly).
    events: EventQueues,
    /// The market's tree (delivered events are deleted from it).
    db: Db,
    agreements: AgreementsView,
    /// Payment's open invoices, once [`MarketService::set_open_invoices`] ran.
    open_invoices: actor::OpenInvoicesPort,
    /// The service thread, stopped by [`MarketService::stop`].
    arbiter: ServiceArbiter,
    /// Parses and checks new subscriptions on the caller's thread.
    new_subscriptions: subscriptions::NewSubscriptions,
}

/// Load the market's records, start its actor on the "market" service thread,
/// bind `/public/market` and listen for offers.
pub async fn start(
    node_id: NodeId,
    store: &Store,
    router: &Router,
    net: &NetService,
    config: MarketConfig,
) -> anyhow::Result<MarketService> {
    let db = Db {
        tree: store.tree(db::TREE)?,
    };
    // Loaded here so that a corrupt store stops the daemon at start.
    let events = EventQueues::default();
    let (state, outbox) = actor::load_records(&db, &config, &events)?;
    actor::log_loaded("market state loaded", &state, &outbox);
    let preloaded = Arc::new(Mutex::new(Some((state, outbox))));
    let signals = Arc::new(Signals::new());
    let open_invoices = actor::OpenInvoicesPort::default();
    let new_subscriptions = subscriptions::NewSubscriptions {
        node_id,
        subscription_ttl: config.subscription_ttl,
        limits: config.limits,
    };
    let core = Core {
        node_id,
        router: router.clone(),
        net: net.clone(),
        config,
        db: db.clone(),
        signals: signals.clone(),
        events: events.clone(),
        open_invoices: open_invoices.clone(),
    };
    let arbiter = ServiceArbiter::current_or_spawn("market")?;
    let actor = Supervised::start("market", arbiter.handle(), move || {
        MarketActor::new(core.clone(), preloaded.clone())
    });
    router.bind(
        golem_model::market::MARKET_PUBLIC_SERVICE,
        public::endpoint(actor.clone()),
    )?;
    Ok(MarketService {
        node_id,
        actor,
        signals,
        events,
        agreements: AgreementsView::new(db.tree.clone()),
        db,
        open_invoices,
        arbiter,
        new_subscriptions,
    })
}

impl MarketService {
    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    /// Where the retention asks whether payment still bills an agreement
    /// (payment starts after the market); the first call wins.
    pub fn set_open_invoices(&self, port: Arc<dyn crate::ports::OpenInvoices>) {
        let _ = self.open_invoices.set(port);
    }

    /// The agreements as committed to sled (what other services read).
    pub fn agreements(&self) -> &AgreementsView {
        &self.agreements
    }

    /// Stop the actor and its thread (the REST API and the bus must be stopped
    /// first), then flush the tree.
    pub async fn stop(self) {
        self.actor.stop();
        self.arbiter.stop_from_async("market").await;
        if let Err(error) = self.agreements.flush().await {
            tracing::warn!(%error, "flushing the market tree failed");
        }
    }

    /// How many times the market actor was started again after dying.
    pub fn restarts(&self) -> u64 {
        self.actor.restarts()
    }

    /// Make the market actor panic (fault injection for tests).
    #[doc(hidden)]
    pub async fn crash_for_test(&self) {
        let _ = deliver(&self.actor, actor::Crash).await;
    }

    /// One look of a long-poll: like [`MarketService::ask`], but while the
    /// actor is being restarted it looks again (until `deadline`), so a
    /// waiting client does not notice the restart.
    async fn look<M, T>(
        &self,
        deadline: tokio::time::Instant,
        message: impl Fn() -> M,
    ) -> Result<T, GolemError>
    where
        M: actix::Message<Result = Result<T, GolemError>> + Send + 'static,
        MarketActor: actix::Handler<M>,
        T: Send + 'static,
    {
        loop {
            match self.ask(message()).await {
                Err(error)
                    if error.code == golem_model::ErrorCode::Unavailable
                        && tokio::time::Instant::now() < deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                answer => return answer,
            }
        }
    }

    /// Send `message` to the actor and unwrap its answer.
    async fn ask<M, T>(&self, message: M) -> Result<T, GolemError>
    where
        M: actix::Message<Result = Result<T, GolemError>> + Send + 'static,
        MarketActor: actix::Handler<M>,
        T: Send + 'static,
    {
        deliver(&self.actor, message).await?
    }

    /// Hand `message` to the actor without waiting for its answer.
    fn tell<M>(&self, message: M) -> Result<(), GolemError>
    where
        M: actix::Message + Send + 'static,
        M::Result: Send,
        MarketActor: actix::Handler<M>,
    {
        tell(&self.actor, message)
    }
}

impl crate::ports::Agreements for MarketService {
    fn agreement(&self, id: &str) -> Result<golem_model::market::Agreement, GolemError> {
        self.agreements.agreement(self.node_id, id)
    }
}
