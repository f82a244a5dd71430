//! The market actor: the one owner of the market's [`State`], its outbox and
//! its scan iterators. It runs on its own service thread ("market") under a
//! [`golem_bus::actor::Supervised`] supervisor; a new instance (after a panic)
//! loads everything back from sled in [`Actor::started`].
//!
//! What it schedules there: the sweep (expiry every
//! [`MarketConfig::sweep_interval`], retention every
//! [`super::retention::COMPACTION_PERIOD`]), the re-broadcast of our offers
//! (every [`MarketConfig::announce_interval`]), the check for newly connected
//! peers, and the outbox's retries. Handlers change the state synchronously
//! and write it through to sled; a handler that must talk to another node
//! returns a future that does not borrow the state (`wrap_future(..).map(..)`
//! applies the outcome when the answer comes back), so one slow counterparty
//! never holds up the mailbox.

use std::collections::HashSet;
use std::future::Future;
use std::sync::{Arc, Mutex};

use actix::{Actor, AsyncContext, Context, Handler, Message, ResponseFuture, SpawnHandle};
use golem_bus::Router;
use golem_model::bus::BusMessage;
use golem_model::market::MARKET_PUBLIC_SERVICE;
use golem_model::{GolemError, NodeId};
use tokio::sync::watch;

use super::db::Db;
use super::event_queues::EventQueues;
use super::scan_iterators::Scans;
use super::settings::MarketConfig;
use super::state::State;
use crate::net::NetService;
use crate::outbox::Outbox;

/// Counters bumped on every change a long-poll may wait for. Shared by every
/// instance of the actor and the handle, so a waiting client outlives a restart.
pub(crate) struct Signals {
    /// A subscription event is queued or a subscription ends.
    pub events: watch::Sender<u64>,
    /// An agreement changes or an agreement event is recorded.
    pub agreements: watch::Sender<u64>,
    /// An offer or demand becomes known or a scan iterator ends.
    pub catalogue: watch::Sender<u64>,
}

impl Signals {
    pub(crate) fn new() -> Signals {
        Signals {
            events: watch::channel(0).0,
            agreements: watch::channel(0).0,
            catalogue: watch::channel(0).0,
        }
    }

    pub(crate) fn bump_events(&self) {
        self.events.send_modify(|version| *version += 1);
    }

    pub(crate) fn bump_agreements(&self) {
        self.agreements.send_modify(|version| *version += 1);
    }

    pub(crate) fn bump_catalogue(&self) {
        self.catalogue.send_modify(|version| *version += 1);
    }
}

/// What every step of the market uses besides its state: who we are, how to
/// reach others, the settings and the tree. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Core {
    pub node_id: NodeId,
    pub router: Router,
    pub net: NetService,
    pub config: MarketConfig,
    pub db: Db,
    pub signals: Arc<Signals>,
    /// Shared with the long-polls and kept across restarts (see `event_queues`).
    pub events: EventQueues,
    /// Payment's open invoices, set once payment has started (it starts
    /// after the market); until then no terminated agreement leaves sled.
    pub open_invoices: OpenInvoicesPort,
}

/// The late-bound [`OpenInvoices`](crate::ports::OpenInvoices) port.
pub(crate) type OpenInvoicesPort = Arc<std::sync::OnceLock<Arc<dyn crate::ports::OpenInvoices>>>;

impl Core {
    /// Call the market of `node` with the configured timeout. The future owns
    /// what it needs, so a handler can return it without borrowing the actor.
    pub(crate) fn call_remote<M: BusMessage>(
        &self,
        node: NodeId,
        message: M,
    ) -> impl Future<Output = Result<M::Reply, GolemError>> + 'static {
        let router = self.router.clone();
        let timeout = self.config.remote_timeout;
        async move {
            let address = golem_bus::address::net_address(node, MARKET_PUBLIC_SERVICE);
            match tokio::time::timeout(timeout, router.call(&address, &message)).await {
                Ok(reply) => reply,
                Err(_) => Err(GolemError::timeout(format!(
                    "node {node} did not answer {} within {timeout:?}",
                    M::NAME
                ))),
            }
        }
    }

    /// A future that makes every change so far durable. Awaited before a
    /// negotiation or agreement step is acknowledged (to a client or to the
    /// counterparty), so a crash right after cannot forget what the other side
    /// was told. Subscriptions and event deliveries ride on sled's periodic
    /// flush instead: after a crash a client may see a 404 or an event again.
    pub(crate) fn flush(&self) -> impl Future<Output = Result<(), GolemError>> + 'static {
        let tree = self.db.tree.clone();
        async move {
            crate::store::flush_tree(tree).await.map_err(|error| {
                GolemError::internal(format!("cannot persist the market state: {error}"))
            })
        }
    }

    /// `result`, answered once the tree is flushed (at once when it is an error).
    pub(crate) fn after_flush<T: Send + 'static>(
        &self,
        result: Result<T, GolemError>,
    ) -> ResponseFuture<Result<T, GolemError>> {
        let flush = self.flush();
        Box::pin(async move {
            let value = result?;
            flush.await?;
            Ok(value)
        })
    }
}

/// The records loaded by `start` for the first instance (later ones load again).
pub(crate) type Preloaded = Arc<Mutex<Option<(State, Outbox)>>>;

/// The market service's actor (see the module doc).
pub struct MarketActor {
    pub(crate) core: Core,
    pub(crate) state: State,
    pub(crate) outbox: Outbox,
    /// Scan iterators (in memory only, as in the original).
    pub(crate) scans: Scans,
    /// Gossip topics we listen on, by subnet.
    pub(crate) topics: HashSet<Option<String>>,
    /// The peers already asked for their offers (each peer connected at a
    /// check and not in it is asked).
    pub(crate) pulled: super::propagation::PulledPeers,
    /// The timer of the outbox's next retry.
    pub(crate) outbox_timer: Option<SpawnHandle>,
    /// The timer of the next try of an announcement no peer took (none
    /// listened on its topic yet), and how many tries in a row failed.
    pub(crate) announce_retry: Option<SpawnHandle>,
    pub(crate) announce_failures: u32,
    preloaded: Preloaded,
}

impl MarketActor {
    pub(crate) fn new(core: Core, preloaded: Preloaded) -> MarketActor {
        let outbox = super::outbox::empty(&core.config);
        MarketActor {
            core,
            state: State::default(),
            outbox,
            scans: Scans::default(),
            topics: HashSet::new(),
            pulled: Default::default(),
            outbox_timer: None,
            announce_retry: None,
            announce_failures: 0,
            preloaded,
        }
    }

    /// The state `start` loaded, or the state in sled now (after a restart).
    fn load(&mut self) {
        let preloaded = self
            .preloaded
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        let restarted = preloaded.is_none();
        let loaded = match preloaded {
            Some(loaded) => Ok(loaded),
            None => load_records(&self.core.db, &self.core.config, &self.core.events),
        };
        match loaded {
            Ok((state, outbox)) => {
                self.state = state;
                self.outbox = outbox;
                if restarted {
                    log_loaded(
                        "market state loaded again after a restart",
                        &self.state,
                        &self.outbox,
                    );
                }
            }
            Err(error) => {
                tracing::error!(%error, "the market could not load its records; it starts empty");
                self.core.events.clear();
                self.state = State {
                    events: self.core.events.clone(),
                    ..State::default()
                };
            }
        }
        let window = self.core.config.retention.memory_count;
        crate::retention::presize_window(&mut self.state.agreements, window);
        crate::retention::presize_window(&mut self.state.finished_agreements, window);
        // Whoever waited on the old instance looks again.
        self.core.signals.bump_events();
        self.core.signals.bump_agreements();
        self.core.signals.bump_catalogue();
    }
}

/// What a load found (`start` logs it before the daemon is ready).
pub(crate) fn log_loaded(what: &'static str, state: &State, outbox: &Outbox) {
    tracing::info!(
        offers = state.offers.len(),
        demands = state.demands.len(),
        agreements = state.agreements.len(),
        undelivered_notices = outbox.len(),
        "{what}"
    );
}

/// Everything the market keeps in sled.
pub(crate) fn load_records(
    db: &Db,
    config: &MarketConfig,
    events: &EventQueues,
) -> Result<(State, Outbox), GolemError> {
    Ok((
        State::load(db, events)?,
        super::outbox::load(&db.tree, config)?,
    ))
}

impl Actor for MarketActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.load();
        self.listen_to_interesting_subnets(ctx);
        let config = self.core.config.clone();
        self.sweep();
        ctx.run_interval(config.sweep_interval, |actor, _| actor.sweep());
        self.announce(ctx, None, None);
        ctx.run_interval(config.announce_interval, |actor, ctx| {
            actor.announce(ctx, None, None)
        });
        ctx.run_interval(config.peer_check_interval, |actor, ctx| {
            actor.check_peers(ctx)
        });
        self.run_outbox(ctx);
    }
}

/// Fault injection for tests: the handler panics, as a bug would.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Crash;

impl Handler<Crash> for MarketActor {
    type Result = ();

    fn handle(&mut self, _: Crash, _ctx: &mut Context<Self>) {
        panic!("market actor crash requested by a test");
    }
}
