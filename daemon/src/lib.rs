//! `golem-daemon`: one node of the Golem network. [`start`] wires the services in
//! one visible order (store → identity → bus → net → market → activity → payment → vpn → REST API) and returns a [`Node`]
//! handle; [`run`] keeps it up until a shutdown token fires. Every dependency is
//! passed explicitly, so several nodes can run inside one test process.
#![forbid(unsafe_code)]

pub mod activity;
pub mod api;
pub mod bus;
pub mod cli;
pub mod config;
pub mod identity;
pub mod long_poll;
pub mod market;
pub mod net;
pub mod outbox;
pub mod payment;
pub mod ports;
pub mod retention;
pub mod store;
pub mod systemd_notify;
pub mod vpn;

use std::net::{SocketAddr, TcpListener};
use std::time::Instant;

use anyhow::Context;
use golem_bus::Router;
use golem_model::NodeId;
use tokio_util::sync::CancellationToken;

pub use config::DaemonConfig;

/// The yagna version we answer on `/version/get` (clients gate features on it).
pub const COMPATIBLE_YAGNA_VERSION: &str = "0.16.0";

/// A running node.
pub struct Node {
    pub node_id: NodeId,
    pub api_addr: SocketAddr,
    pub router: Router,
    pub net: net::NetService,
    pub market: market::MarketService,
    pub activity: activity::ActivityService,
    pub payment: payment::PaymentService,
    pub vpn: vpn::VpnService,
    /// Open REST long-polls per app-key (what tests and benchmarks read).
    pub long_polls: api::long_polls::LongPolls,
    shutdown: CancellationToken,
    store: store::Store,
    api: api::ApiServer,
    bus: bus::BusServer,
}

/// Start every service of the node; returns once the REST API accepts connections.
pub async fn start(config: DaemonConfig) -> anyhow::Result<Node> {
    let started = Instant::now();
    let data_dir = &config.data_dir;
    store::make_private(data_dir).with_context(|| {
        format!(
            "cannot create the data directory {} or make it private (choose another with --data-dir)",
            data_dir.display()
        )
    })?;
    let store = store::Store::open_with_cache(data_dir, config.store_cache_mib)
        .context("opening the store")?;
    let identity = identity::start(data_dir, &store, config.autoconf_appkey.as_deref())
        .context("starting the identity service")?;
    // Again, for the files sled and the identity service have just created
    // (the binary's umask covers them, a library caller's may not).
    store::make_private(data_dir).context("making the data directory private")?;
    let node_id = identity.node_id();
    let span = tracing::info_span!("node", %node_id);
    let _entered = span.enter();

    let shutdown = CancellationToken::new();
    let router = Router::new();
    bus::bind_services(&router, &identity).context("binding services on the bus")?;
    let bus = bus::start(
        &config.bus_socket_path(),
        router.clone(),
        node_id,
        shutdown.clone(),
    )
    .with_context(|| {
        format!(
            "serving the bus socket {}",
            config.bus_socket_path().display()
        )
    })?;

    // One thread gives freed heap pages back after bursts (closed
    // connections, ended long-polls) for the whole node.
    let heap_release = golem_heap_trim::HeapRelease::start();
    let net = net::start(
        net_config(&config, heap_release.clone())?,
        identity.secret_bytes(),
        &router,
    )
    .await
    .context("starting the net service")?;
    let retention = config.retention.to_policy().context(
        "invalid [retention] settings: fix the config file, GOLEM_RETENTION_* variables or --retention-* flags",
    )?;
    let mut market_config = config
        .market
        .to_config()
        .context("invalid [market] settings: fix the config file or GOLEM_MARKET_* variables")?;
    market_config.retention = retention;
    let market = market::start(node_id, &store, &router, &net, market_config)
        .await
        .context("starting the market service")?;
    let activity = activity::start(
        node_id,
        &store,
        &router,
        std::sync::Arc::new(market.clone()),
        &config.activity,
        &retention,
    )
    .context("starting the activity service")?;
    let payment = payment::start_with(
        node_id,
        &store,
        &router,
        std::sync::Arc::new(market.clone()),
        std::sync::Arc::new(activity.records.clone()),
        std::sync::Arc::new(activity.records.clone()),
        &config.payment,
        identity.secret_bytes(),
        retention,
    )
    .context("starting the payment service")?;
    market.set_open_invoices(std::sync::Arc::new(payment::InvoiceRecords::open(&store)?));
    let vpn = vpn::start(&store, &router)
        .await
        .context("starting the vpn service")?;

    if config.api.max_long_polls_per_key == 0 {
        anyhow::bail!(
            "api setting max-long-polls-per-key must be greater than zero (GOLEM_API_MAX_LONG_POLLS_PER_KEY, --api-max-long-polls-per-key)"
        );
    }
    let long_polls =
        api::long_polls::LongPolls::new(config.api.max_long_polls_per_key, heap_release);
    let listener = TcpListener::bind(config.api_addr)
        .with_context(|| format!("cannot listen for the REST API on {}", config.api_addr))?;
    let api = api::start(
        listener,
        config.api_workers,
        config.api_body_limit,
        api::ApiDeps {
            identity,
            net: net.clone(),
            market: market.clone(),
            activity: activity.clone(),
            payment: payment.clone(),
            vpn: vpn.clone(),
            gsb: api::gsb::GsbApi::new(router.clone()),
            bus: api::local::BusLocation {
                socket: bus.socket_path.clone(),
            },
            long_polls: long_polls.clone(),
            allowed_origins: api::cors::AllowedOrigins::new(&config.api.allow_origin),
        },
    )
    .context("starting the REST API")?;
    tracing::info!(
        api_addr = %api.local_addr,
        bus_socket = %bus.socket_path.display(),
        startup_ms = started.elapsed().as_millis() as u64,
        "REST API ready"
    );
    Ok(Node {
        node_id,
        api_addr: api.local_addr,
        router,
        net,
        market,
        activity,
        payment,
        vpn,
        long_polls,
        shutdown,
        store,
        api,
        bus,
    })
}

impl Node {
    /// Stop in reverse order of start and close the store: once this
    /// returns, the data dir may be opened by the next node.
    pub async fn stop(self) {
        let Node {
            node_id,
            api_addr: _,
            router,
            net,
            market,
            activity,
            payment,
            vpn,
            long_polls,
            shutdown,
            store,
            api,
            bus,
        } = self;
        shutdown.cancel();
        api.stop().await;
        bus.stop().await;
        vpn.stop().await;
        payment.stop();
        activity.stop();
        market.stop().await;
        net.stop().await;
        router.unbind_all();
        // The services' handles hold trees of the store: gone before it closes.
        drop((router, activity, payment, long_polls));
        // Returns once the data dir is free for the next node to open.
        if let Err(error) = store.close().await {
            tracing::error!(%error, "closing the store at shutdown failed");
        }
        tracing::info!(%node_id, "node stopped");
    }
}

/// The gossip heartbeat setting as a period; 0 is refused with the
/// setting's names.
fn gossip_heartbeat(millis: u64) -> anyhow::Result<std::time::Duration> {
    if millis == 0 {
        anyhow::bail!(
            "net-gossip-heartbeat-ms (GOLEM_NET_GOSSIP_HEARTBEAT_MS, --net-gossip-heartbeat-ms) \
             is 0: give the gossip heartbeat in milliseconds, e.g. 1000"
        );
    }
    Ok(std::time::Duration::from_millis(millis))
}

/// The p2p settings of `config` for `golem-net`.
fn net_config(
    config: &DaemonConfig,
    heap_release: golem_heap_trim::HeapRelease,
) -> anyhow::Result<golem_net::NetConfig> {
    fn multiaddrs(option: &str, values: &[String]) -> anyhow::Result<Vec<golem_net::Multiaddr>> {
        values
            .iter()
            .map(|value| {
                value.parse().with_context(|| {
                    format!("invalid {option} address {value:?}: expected a multiaddr like /ip4/127.0.0.1/tcp/11500")
                })
            })
            .collect()
    }
    Ok(golem_net::NetConfig {
        listen: multiaddrs("--p2p-listen", &config.p2p_listen)?,
        bootstrap: multiaddrs("--bootstrap", &config.bootstrap)?,
        relays: multiaddrs("relays", &config.relays)?,
        external_addrs: multiaddrs("external-addrs", &config.external_addrs)?,
        relay_server: config.relay_server,
        call_timeout: std::time::Duration::from_millis(config.net_call_timeout_ms),
        target_peers: config.net_target_peers,
        gossip_heartbeat: gossip_heartbeat(config.net_gossip_heartbeat_ms)?,
        agent_version: format!("golem-daemon/{}", env!("CARGO_PKG_VERSION")),
        heap_release: Some(heap_release),
        ..golem_net::NetConfig::default()
    })
}

/// Run a node until `shutdown` is cancelled, telling the service manager
/// (systemd's `NOTIFY_SOCKET`, when given) once the REST API listens.
pub async fn run(
    config: DaemonConfig,
    shutdown: CancellationToken,
    service_manager: Option<systemd_notify::SystemdNotifier>,
) -> anyhow::Result<()> {
    let node = start(config).await?;
    if let Some(manager) = &service_manager {
        manager.ready(node.api_addr);
    }
    shutdown.cancelled().await;
    if let Some(manager) = &service_manager {
        manager.stopping();
    }
    node.stop().await;
    Ok(())
}

#[cfg(test)]
mod net_settings_tests {
    #[test]
    fn a_gossip_heartbeat_of_zero_is_refused_with_the_settings_names() {
        let error = super::gossip_heartbeat(0).expect_err("0 ms refused");
        let message = error.to_string();
        assert!(
            message.contains("GOLEM_NET_GOSSIP_HEARTBEAT_MS"),
            "{message}"
        );
        assert!(message.contains("--net-gossip-heartbeat-ms"), "{message}");
        assert_eq!(
            super::gossip_heartbeat(700).ok(),
            Some(std::time::Duration::from_millis(700))
        );
    }
}
