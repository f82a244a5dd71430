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
//!   Offers are held in their compact [`golem_model::constraints::MatchForm`]
//!   and demands' constraints compiled once, both against the state's own
//!   [`golem_model::constraints::KeyTable`], so one demand scans 100,000
//!   offers in under 50 ms.
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
//! the requests addressed to it. Notices that need no answer (rejections,
//! cancellations, terminations) go through the persistent outbox (`outbox.rs`), retried
//! with bounded backoff until delivered, also after a restart. Long-polls wait on `tokio::sync::watch`
//! counters bumped on every new event, never on sleeps.

mod agreements;
mod negotiation;
mod outbox;
mod propagation;
mod public;
pub mod rest;
mod retention;
mod scan;
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
    /// First retry delay of an undelivered notice; doubles on each failure.
    pub outbox_retry_initial: Duration,
    /// Largest retry delay of an undelivered notice.
    pub outbox_retry_max: Duration,
    /// What other nodes (and local clients) may make this market hold.
    pub limits: MarketLimits,
}

/// Quotas on what the market keeps, so that no peer can fill its memory or
/// disk. A refusal names the limit and the `[market]` setting that sets it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MarketLimits {
    /// Offers of one other node kept at once; more from it are dropped
    /// (logged at debug, not stored) until some expire or are unsubscribed.
    pub max_offers_per_node: usize,
    /// Offers of all other nodes kept at once (and unsubscription tombstones).
    pub max_offers: usize,
    /// Furthest expiry of an offer or demand: a local subscription asking for
    /// more (`golem.srv.comp.expiration`) is refused with 400, a remote
    /// offer's expiry is cut to it.
    pub max_expiration: chrono::Duration,
    /// Proposals one subscription holds; a new one beyond it is refused
    /// (Conflict to the node that sent it, skipped when matching).
    pub max_proposals_per_subscription: usize,
    /// Undelivered events one subscription holds; a proposal that would add
    /// one more is refused the same way, until the client takes its events.
    pub max_events_per_subscription: usize,
}

impl Default for MarketConfig {
    fn default() -> Self {
        MarketSettings::default()
            .to_config()
            .unwrap_or_else(|_| unreachable!("the default market settings are valid"))
    }
}

/// The `[market]` section of the daemon config file (kebab-case keys, every
/// one optional) and its environment overrides (`GOLEM_MARKET_<KEY>`, names
/// derived by `crate::config`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct MarketSettings {
    pub subscription_ttl_secs: u64,
    pub announce_interval_ms: u64,
    pub peer_check_interval_ms: u64,
    pub remote_timeout_ms: u64,
    pub sweep_interval_ms: u64,
    pub outbox_retry_initial_ms: u64,
    pub outbox_retry_max_ms: u64,
    /// See [`MarketLimits`].
    pub max_offers_per_node: u64,
    pub max_offers: u64,
    pub max_expiration_secs: u64,
    pub max_proposals_per_subscription: u64,
    pub max_events_per_subscription: u64,
}

impl Default for MarketSettings {
    fn default() -> Self {
        MarketSettings {
            subscription_ttl_secs: 3600,
            announce_interval_ms: 5_000,
            peer_check_interval_ms: 500,
            remote_timeout_ms: 4_000,
            sweep_interval_ms: 1_000,
            outbox_retry_initial_ms: 500,
            outbox_retry_max_ms: 30_000,
            max_offers_per_node: 1_000,
            max_offers: 100_000,
            max_expiration_secs: 30 * 24 * 3600,
            max_proposals_per_subscription: 10_000,
            max_events_per_subscription: 10_000,
        }
    }
}

/// `[market]` values given on the command line (`golem-daemon run
/// --market-...`); `None` leaves the file's or environment's value. Serialized
/// with the `[market]` keys as the flag layer of `crate::config`.
#[derive(Debug, Clone, Default, PartialEq, Eq, clap::Args, serde::Serialize)]
#[command(next_help_heading = "Market")]
#[serde(rename_all = "kebab-case")]
pub struct MarketOverrides {
    /// Lifetime of an offer or demand subscription [env: GOLEM_MARKET_SUBSCRIPTION_TTL_SECS] [default: 3600]
    #[arg(long = "market-subscription-ttl-secs", value_name = "SECS")]
    pub subscription_ttl_secs: Option<u64>,
    /// How often this node's live offers are broadcast again [env: GOLEM_MARKET_ANNOUNCE_INTERVAL_MS] [default: 5000]
    #[arg(long = "market-announce-interval-ms", value_name = "MS")]
    pub announce_interval_ms: Option<u64>,
    /// How often connected peers are checked for newcomers to ask for offers [env: GOLEM_MARKET_PEER_CHECK_INTERVAL_MS] [default: 500]
    #[arg(long = "market-peer-check-interval-ms", value_name = "MS")]
    pub peer_check_interval_ms: Option<u64>,
    /// Bound of every call to another node's market [env: GOLEM_MARKET_REMOTE_TIMEOUT_MS] [default: 4000]
    #[arg(long = "market-remote-timeout-ms", value_name = "MS")]
    pub remote_timeout_ms: Option<u64>,
    /// How often expired subscriptions, offers, agreements and scans are swept [env: GOLEM_MARKET_SWEEP_INTERVAL_MS] [default: 1000]
    #[arg(long = "market-sweep-interval-ms", value_name = "MS")]
    pub sweep_interval_ms: Option<u64>,
    /// First retry delay of an undelivered notice [env: GOLEM_MARKET_OUTBOX_RETRY_INITIAL_MS] [default: 500]
    #[arg(long = "market-outbox-retry-initial-ms", value_name = "MS")]
    pub outbox_retry_initial_ms: Option<u64>,
    /// Largest retry delay of an undelivered notice [env: GOLEM_MARKET_OUTBOX_RETRY_MAX_MS] [default: 30000]
    #[arg(long = "market-outbox-retry-max-ms", value_name = "MS")]
    pub outbox_retry_max_ms: Option<u64>,
    /// Offers of one other node kept at once; more are dropped [env: GOLEM_MARKET_MAX_OFFERS_PER_NODE] [default: 1000]
    #[arg(long = "market-max-offers-per-node", value_name = "COUNT")]
    pub max_offers_per_node: Option<u64>,
    /// Offers of all other nodes kept at once [env: GOLEM_MARKET_MAX_OFFERS] [default: 100000]
    #[arg(long = "market-max-offers", value_name = "COUNT")]
    pub max_offers: Option<u64>,
    /// Furthest expiry of an offer or demand (golem.srv.comp.expiration beyond it: 400; remote offers cut to it) [env: GOLEM_MARKET_MAX_EXPIRATION_SECS] [default: 2592000]
    #[arg(long = "market-max-expiration-secs", value_name = "SECS")]
    pub max_expiration_secs: Option<u64>,
    /// Proposals one subscription holds; more are refused [env: GOLEM_MARKET_MAX_PROPOSALS_PER_SUBSCRIPTION] [default: 10000]
    #[arg(long = "market-max-proposals-per-subscription", value_name = "COUNT")]
    pub max_proposals_per_subscription: Option<u64>,
    /// Undelivered events one subscription holds; proposals beyond are refused [env: GOLEM_MARKET_MAX_EVENTS_PER_SUBSCRIPTION] [default: 10000]
    #[arg(long = "market-max-events-per-subscription", value_name = "COUNT")]
    pub max_events_per_subscription: Option<u64>,
}

impl MarketOverrides {
    /// Replace the settings given here.
    pub fn apply_to(&self, settings: &mut MarketSettings) {
        let pairs = [
            (
                self.subscription_ttl_secs,
                &mut settings.subscription_ttl_secs,
            ),
            (
                self.announce_interval_ms,
                &mut settings.announce_interval_ms,
            ),
            (
                self.peer_check_interval_ms,
                &mut settings.peer_check_interval_ms,
            ),
            (self.remote_timeout_ms, &mut settings.remote_timeout_ms),
            (self.sweep_interval_ms, &mut settings.sweep_interval_ms),
            (
                self.outbox_retry_initial_ms,
                &mut settings.outbox_retry_initial_ms,
            ),
            (self.outbox_retry_max_ms, &mut settings.outbox_retry_max_ms),
            (self.max_offers_per_node, &mut settings.max_offers_per_node),
            (self.max_offers, &mut settings.max_offers),
            (self.max_expiration_secs, &mut settings.max_expiration_secs),
            (
                self.max_proposals_per_subscription,
                &mut settings.max_proposals_per_subscription,
            ),
            (
                self.max_events_per_subscription,
                &mut settings.max_events_per_subscription,
            ),
        ];
        for (given, field) in pairs {
            if let Some(value) = given {
                *field = value;
            }
        }
    }
}

/// A `[market]` setting that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("market setting {name} = {value} is invalid: {message}")]
pub struct MarketSettingsError {
    pub name: &'static str,
    pub value: u64,
    pub message: &'static str,
}

impl MarketSettings {
    /// Checks the values (every interval, timeout and limit must be positive,
    /// the subscription lifetime within the expiration cap, the cap at most
    /// ten years) and converts them.
    pub fn to_config(&self) -> Result<MarketConfig, MarketSettingsError> {
        let positive = |name: &'static str, value: u64| {
            if value == 0 {
                Err(MarketSettingsError {
                    name,
                    value,
                    message: "it must be greater than zero",
                })
            } else {
                Ok(value)
            }
        };
        let ten_years = |name: &'static str, value: u64| {
            let secs = positive(name, value)?;
            i64::try_from(secs)
                .ok()
                .filter(|secs| *secs <= 10 * 366 * 24 * 3600)
                .map(chrono::Duration::seconds)
                .ok_or(MarketSettingsError {
                    name,
                    value: secs,
                    message: "it must be at most ten years",
                })
        };
        let subscription_ttl = ten_years("subscription-ttl-secs", self.subscription_ttl_secs)?;
        let max_expiration = ten_years("max-expiration-secs", self.max_expiration_secs)?;
        if subscription_ttl > max_expiration {
            return Err(MarketSettingsError {
                name: "subscription-ttl-secs",
                value: self.subscription_ttl_secs,
                message: "it must not exceed max-expiration-secs",
            });
        }
        let count = |name, value| {
            positive(name, value).map(|value| usize::try_from(value).unwrap_or(usize::MAX))
        };
        let limits = MarketLimits {
            max_offers_per_node: count("max-offers-per-node", self.max_offers_per_node)?,
            max_offers: count("max-offers", self.max_offers)?,
            max_expiration,
            max_proposals_per_subscription: count(
                "max-proposals-per-subscription",
                self.max_proposals_per_subscription,
            )?,
            max_events_per_subscription: count(
                "max-events-per-subscription",
                self.max_events_per_subscription,
            )?,
        };
        let millis = |name, value| positive(name, value).map(Duration::from_millis);
        let outbox_retry_initial = millis("outbox-retry-initial-ms", self.outbox_retry_initial_ms)?;
        let outbox_retry_max = millis("outbox-retry-max-ms", self.outbox_retry_max_ms)?;
        if outbox_retry_max < outbox_retry_initial {
            return Err(MarketSettingsError {
                name: "outbox-retry-max-ms",
                value: self.outbox_retry_max_ms,
                message: "it must not be below outbox-retry-initial-ms",
            });
        }
        Ok(MarketConfig {
            subscription_ttl,
            announce_interval: millis("announce-interval-ms", self.announce_interval_ms)?,
            peer_check_interval: millis("peer-check-interval-ms", self.peer_check_interval_ms)?,
            remote_timeout: millis("remote-timeout-ms", self.remote_timeout_ms)?,
            sweep_interval: millis("sweep-interval-ms", self.sweep_interval_ms)?,
            outbox_retry_initial,
            outbox_retry_max,
            limits,
        })
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
    /// Bumped whenever an offer or demand becomes known or a scan iterator ends.
    catalogue_changed: watch::Sender<u64>,
    /// Gossip topics we listen on, by subnet.
    topics: Mutex<std::collections::HashSet<Option<String>>>,
    /// Notices waiting for their counterparty (see [`outbox`]).
    outbox: Mutex<outbox::Outbox>,
    /// Woken when a notice is queued or its delivery attempt ends.
    outbox_changed: tokio::sync::Notify,
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
    let outbox = outbox::Outbox::load(&db.tree)?;
    let (events_changed, _) = watch::channel(0);
    let (agreements_changed, _) = watch::channel(0);
    let (catalogue_changed, _) = watch::channel(0);
    tracing::info!(
        offers = state.offers.len(),
        demands = state.demands.len(),
        agreements = state.agreements.len(),
        undelivered_notices = outbox.len(),
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
            catalogue_changed,
            topics: Mutex::new(Default::default()),
            outbox: Mutex::new(outbox),
            outbox_changed: tokio::sync::Notify::new(),
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
        let address = golem_bus::address::net_address(node, MARKET_PUBLIC_SERVICE);
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
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Every update completes under the lock, so a panicked holder leaves
        // consistent state behind.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn outbox_lock(&self) -> MutexGuard<'_, outbox::Outbox> {
        self.outbox
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

    fn bump_catalogue(&self) {
        self.catalogue_changed.send_modify(|version| *version += 1);
    }
}

pub(crate) use golem_model::ids::new_id;

impl crate::ports::Agreements for MarketService {
    fn agreement(&self, id: &str) -> Result<golem_model::market::Agreement, GolemError> {
        self.get_agreement(self.node_id(), id)
    }
}

#[cfg(test)]
mod settings_tests {
    use super::*;
    use crate::config::{env_names, CliOverrides, DaemonConfig};

    fn load(file: &str, env: &[(&str, &str)]) -> Result<DaemonConfig, crate::config::ConfigError> {
        let dir = tempfile::tempdir().unwrap_or_else(|error| panic!("tempdir: {error}"));
        let path = dir.path().join("daemon.toml");
        std::fs::write(&path, file).unwrap_or_else(|error| panic!("write: {error}"));
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect();
        let cli = CliOverrides {
            config_file: Some(path),
            ..Default::default()
        };
        DaemonConfig::load(&cli, move |name: &str| {
            env.iter()
                .find(|(candidate, _)| candidate == name)
                .map(|(_, value)| value.clone())
        })
    }

    #[test]
    fn market_section_and_env_set_the_market_config() {
        let config = load(
            "[market]\nsubscription-ttl-secs = 120\nremote-timeout-ms = 750\n",
            &[
                (env_names::MARKET_REMOTE_TIMEOUT_MS, "1500"),
                (env_names::MARKET_OUTBOX_RETRY_MAX_MS, "2000"),
            ],
        )
        .unwrap_or_else(|error| panic!("config: {error}"));
        let market = config
            .market
            .to_config()
            .unwrap_or_else(|error| panic!("market: {error}"));
        assert_eq!(market.subscription_ttl, chrono::Duration::seconds(120));
        assert_eq!(market.remote_timeout, Duration::from_millis(1500));
        assert_eq!(market.outbox_retry_max, Duration::from_secs(2));
        assert_eq!(
            market.announce_interval,
            MarketConfig::default().announce_interval
        );
    }

    #[test]
    fn command_line_market_flags_win_over_env_and_file() {
        let dir = tempfile::tempdir().unwrap_or_else(|error| panic!("tempdir: {error}"));
        let path = dir.path().join("daemon.toml");
        std::fs::write(
            &path,
            "[market]\nsubscription-ttl-secs = 120\nsweep-interval-ms = 300\n",
        )
        .unwrap_or_else(|error| panic!("write: {error}"));
        let cli = CliOverrides {
            config_file: Some(path),
            market: MarketOverrides {
                subscription_ttl_secs: Some(7),
                remote_timeout_ms: Some(900),
                ..Default::default()
            },
            ..Default::default()
        };
        let env = |name: &str| {
            [
                (env_names::MARKET_SUBSCRIPTION_TTL_SECS, "60"),
                (env_names::MARKET_REMOTE_TIMEOUT_MS, "1500"),
                (env_names::MARKET_ANNOUNCE_INTERVAL_MS, "2500"),
            ]
            .into_iter()
            .find(|(candidate, _)| *candidate == name)
            .map(|(_, value)| value.to_string())
        };
        let config =
            DaemonConfig::load(&cli, env).unwrap_or_else(|error| panic!("config: {error}"));
        assert_eq!(
            config.market.subscription_ttl_secs, 7,
            "the flag wins over env and file"
        );
        assert_eq!(
            config.market.remote_timeout_ms, 900,
            "the flag wins over env"
        );
        assert_eq!(
            config.market.announce_interval_ms, 2500,
            "env wins over the default"
        );
        assert_eq!(
            config.market.sweep_interval_ms, 300,
            "the file's value stays"
        );
        assert_eq!(
            config.market.outbox_retry_max_ms,
            MarketSettings::default().outbox_retry_max_ms
        );
    }

    #[test]
    fn bad_market_settings_are_refused_with_their_name() {
        let error = load("[market]\nno-such-setting = 1\n", &[])
            .err()
            .map(|error| error.to_string())
            .unwrap_or_default();
        assert!(error.contains("no-such-setting"), "{error}");
        let error = load("", &[(env_names::MARKET_SWEEP_INTERVAL_MS, "soon")])
            .err()
            .map(|error| error.to_string())
            .unwrap_or_default();
        assert!(error.contains("GOLEM_MARKET_SWEEP_INTERVAL_MS"), "{error}");
        let zero = MarketSettings {
            remote_timeout_ms: 0,
            ..MarketSettings::default()
        };
        let error = zero
            .to_config()
            .err()
            .map(|error| error.to_string())
            .unwrap_or_default();
        assert!(
            error.contains("remote-timeout-ms") && error.contains("greater than zero"),
            "{error}"
        );
        let inverted = MarketSettings {
            outbox_retry_initial_ms: 5_000,
            outbox_retry_max_ms: 1_000,
            ..MarketSettings::default()
        };
        assert!(inverted.to_config().is_err());
    }

    #[test]
    fn limits_come_from_the_file_env_and_flags_and_must_be_consistent() {
        let config = load(
            "[market]\nmax-offers-per-node = 7\nmax-expiration-secs = 7200\n",
            &[(env_names::MARKET_MAX_EVENTS_PER_SUBSCRIPTION, "30")],
        )
        .unwrap_or_else(|error| panic!("config: {error}"));
        let limits = config
            .market
            .to_config()
            .unwrap_or_else(|error| panic!("market: {error}"))
            .limits;
        assert_eq!(limits.max_offers_per_node, 7);
        assert_eq!(limits.max_expiration, chrono::Duration::seconds(7200));
        assert_eq!(limits.max_events_per_subscription, 30);
        assert_eq!(limits.max_offers, 100_000);
        let mut settings = MarketSettings::default();
        MarketOverrides {
            max_proposals_per_subscription: Some(3),
            ..Default::default()
        }
        .apply_to(&mut settings);
        assert_eq!(settings.max_proposals_per_subscription, 3);
        let too_long_ttl = MarketSettings {
            subscription_ttl_secs: 7201,
            max_expiration_secs: 7200,
            ..MarketSettings::default()
        };
        let error = too_long_ttl
            .to_config()
            .err()
            .map(|error| error.to_string())
            .unwrap_or_default();
        assert!(error.contains("max-expiration-secs"), "{error}");
        let zero = MarketSettings {
            max_offers: 0,
            ..MarketSettings::default()
        };
        assert!(zero.to_config().is_err());
    }
}
