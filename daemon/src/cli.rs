//! The `golem-daemon` command line: `run` starts a node; `app-key` and `id`
//! manage the node's identity whether or not the daemon runs (over the bus
//! socket when it does, by opening the store directly when it does not).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use golem_bus::client::ConnectError;
use golem_bus::BusClient;
use golem_model::bus::{GetNetStatus, PingRemote, NET_SERVICE};
use golem_model::identity::{
    AppKeyInfo, CreateAppKey, DropAppKey, GetIdentity, ListAppKeys, IDENTITY_SERVICE,
};
use golem_model::NodeId;
use tokio_util::sync::CancellationToken;

use crate::config::{self, CliOverrides, DaemonConfig, LogFormat};

#[derive(Debug, Parser)]
#[command(
    name = "golem-daemon",
    version,
    about = "A node of the Golem network: identity, p2p net, market, activity and payment services behind the Golem REST API",
    after_help = "Every option can also be set in the TOML file given by --config (GOLEM_CONFIG), keys as the \
                  long options (api-addr, [market] remote-timeout-ms, ...), and by the environment variable GOLEM_<KEY> \
                  (GOLEM_DATA_DIR, GOLEM_API_ADDR, GOLEM_MARKET_REMOTE_TIMEOUT_MS, ...; lists comma-separated). \
                  The command line wins over the environment, which wins over the file."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Args)]
pub struct GlobalArgs {
    /// Directory holding the identity key, the database and the bus socket
    /// [env: GOLEM_DATA_DIR] [default: ~/.local/share/golem-daemon]
    #[arg(long, global = true, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// TOML configuration file (keys as the long options: data-dir, api-addr, ...) [env: GOLEM_CONFIG]
    #[arg(long = "config", global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
// Parsed once per process: the size of `run`'s flags does not matter.
#[allow(clippy::large_enum_variant)]
pub enum Command {
    /// Start the node and serve until SIGINT or SIGTERM
    Run(CliOverrides),
    /// Manage the app-keys that authorize REST clients
    #[command(subcommand)]
    AppKey(AppKeyCommand),
    /// Show the node's identity
    #[command(subcommand)]
    Id(IdCommand),
    /// Inspect the p2p network of the running daemon
    #[command(subcommand)]
    Net(NetCommand),
    /// Payments: status, accounts, drivers, allocations, test funds
    #[command(subcommand)]
    Payment(crate::payment::cli::PaymentCommand),
}

#[derive(Debug, Subcommand)]
pub enum NetCommand {
    /// NodeId, PeerId, bound listen addresses, connected and known peers, relay state
    Status {
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
    },
    /// Call another node over the network and print the round-trip time
    Ping {
        /// NodeId (0x + 40 hex digits) of the node to ping
        node_id: NodeId,
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum AppKeyCommand {
    /// Create an app-key and print only the key on stdout
    Create { name: String },
    /// List app-keys
    List {
        /// Print JSON instead of a table
        #[arg(long)]
        json: bool,
    },
    /// Remove an app-key; clients using it get 401 from then on
    Drop { name: String },
}

#[derive(Debug, Subcommand)]
pub enum IdCommand {
    /// Print the node's NodeId (its Ethereum address)
    Show {
        /// Print JSON instead of the bare NodeId
        #[arg(long)]
        json: bool,
    },
}

/// Layer the configuration for this invocation from the real environment.
pub fn load_config(
    global: &GlobalArgs,
    run: Option<&CliOverrides>,
) -> anyhow::Result<DaemonConfig> {
    Ok(DaemonConfig::load(&overrides(global, run), |name| {
        std::env::var(name).ok()
    })?)
}

/// The flag layer: `run`'s flags (none for the other commands) and the
/// global `--config` and `--data-dir`.
pub fn overrides(global: &GlobalArgs, run: Option<&CliOverrides>) -> CliOverrides {
    CliOverrides {
        config_file: global.config.clone(),
        data_dir: global.data_dir.clone(),
        ..run.cloned().unwrap_or_default()
    }
}

pub fn init_tracing(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sled=warn,actix_server=warn,actix_web=warn"));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Plain => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

/// `golem-daemon run`: start the node and stop it cleanly on SIGINT/SIGTERM.
pub fn run_until_signal(config: DaemonConfig) -> anyhow::Result<()> {
    // Before any worker thread exists (see golem_heap_trim::DAEMON_ARENAS);
    // an operator's MALLOC_ARENA_MAX, which glibc applied itself, stays.
    if std::env::var_os(config::env_names::MALLOC_ARENA_MAX).is_none() {
        golem_heap_trim::limit_arenas(golem_heap_trim::DAEMON_ARENAS);
    }
    actix_rt::System::new().block_on(async move {
        let shutdown = CancellationToken::new();
        let on_signal = shutdown.clone();
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!("shutdown signal received");
            on_signal.cancel();
        });
        let service_manager = crate::systemd_notify::SystemdNotifier::from_env_value(
            std::env::var(config::env_names::NOTIFY_SOCKET)
                .ok()
                .as_deref(),
        );
        crate::run(config, shutdown, service_manager).await
    })
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut terminate) = signal(SignalKind::terminate()) else {
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    tokio::select! {
        _ = terminate.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

/// The identity operations the management commands perform.
enum IdentityRequest {
    Create(String),
    List,
    Drop(String),
    Show,
}

enum IdentityAnswer {
    Created(AppKeyInfo),
    Listed(Vec<AppKeyInfo>),
    Dropped,
    Shown(NodeId),
}

async fn over_bus(client: &BusClient, request: &IdentityRequest) -> anyhow::Result<IdentityAnswer> {
    Ok(match request {
        IdentityRequest::Create(name) => IdentityAnswer::Created(
            client
                .call(IDENTITY_SERVICE, &CreateAppKey { name: name.clone() })
                .await?,
        ),
        IdentityRequest::List => {
            IdentityAnswer::Listed(client.call(IDENTITY_SERVICE, &ListAppKeys).await?)
        }
        IdentityRequest::Drop(name) => {
            client
                .call(IDENTITY_SERVICE, &DropAppKey { name: name.clone() })
                .await?;
            IdentityAnswer::Dropped
        }
        IdentityRequest::Show => {
            IdentityAnswer::Shown(client.call(IDENTITY_SERVICE, &GetIdentity).await?)
        }
    })
}

fn directly(data_dir: &Path, request: &IdentityRequest) -> anyhow::Result<IdentityAnswer> {
    crate::store::make_private(data_dir)
        .with_context(|| format!("cannot create the data directory {}", data_dir.display()))?;
    let store = crate::store::Store::open(data_dir).context(
        "no daemon answers on the bus socket and the database cannot be opened (is a daemon still starting?)",
    )?;
    let identity = crate::identity::start(data_dir, &store, None)?;
    crate::store::make_private(data_dir)?;
    Ok(match request {
        IdentityRequest::Create(name) => IdentityAnswer::Created(identity.create_app_key(name)?),
        IdentityRequest::List => IdentityAnswer::Listed(identity.list_app_keys()?),
        IdentityRequest::Drop(name) => {
            identity.drop_app_key(name)?;
            IdentityAnswer::Dropped
        }
        IdentityRequest::Show => IdentityAnswer::Shown(identity.node_id()),
    })
}

async fn perform(data_dir: &Path, request: IdentityRequest) -> anyhow::Result<IdentityAnswer> {
    let socket = config::bus_socket_path(data_dir);
    match BusClient::connect(&socket, "golem-daemon-cli").await {
        Ok(client) => over_bus(&client, &request).await,
        Err(ConnectError::Socket { .. }) => directly(data_dir, &request),
        Err(error) => bail!(error),
    }
}

/// Run a management command (everything but `run`).
pub fn execute(global: &GlobalArgs, command: Command) -> anyhow::Result<()> {
    let config = load_config(global, None)?;
    let (request, json) = match command {
        Command::Run(_) => bail!("`run` is started through run_until_signal"),
        Command::Payment(command) => return crate::payment::cli::execute(&config, command),
        Command::Net(NetCommand::Status { json }) => return net_status(&config.data_dir, json),
        Command::Net(NetCommand::Ping { node_id, json }) => {
            return net_ping(&config.data_dir, node_id, json)
        }
        Command::AppKey(AppKeyCommand::Create { name }) => (IdentityRequest::Create(name), false),
        Command::AppKey(AppKeyCommand::List { json }) => (IdentityRequest::List, json),
        Command::AppKey(AppKeyCommand::Drop { name }) => (IdentityRequest::Drop(name), false),
        Command::Id(IdCommand::Show { json }) => (IdentityRequest::Show, json),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let answer = runtime.block_on(perform(&config.data_dir, request))?;
    match answer {
        IdentityAnswer::Created(info) => println!("{}", info.key),
        IdentityAnswer::Listed(keys) if json => {
            println!("{}", serde_json::to_string_pretty(&keys)?)
        }
        IdentityAnswer::Listed(keys) => print_app_key_table(&keys),
        IdentityAnswer::Dropped => eprintln!("app-key dropped"),
        IdentityAnswer::Shown(node_id) if json => {
            println!("{}", serde_json::json!({ "nodeId": node_id }))
        }
        IdentityAnswer::Shown(node_id) => println!("{node_id}"),
    }
    Ok(())
}

/// Connect to the running daemon's bus; the network exists only while it runs.
async fn connect_running(data_dir: &Path) -> anyhow::Result<BusClient> {
    let socket = config::bus_socket_path(data_dir);
    BusClient::connect(&socket, "golem-daemon-cli")
        .await
        .context("the p2p network runs inside the daemon: start it with `golem-daemon run`")
}

fn net_ping(data_dir: &Path, node_id: NodeId, json: bool) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let result = runtime.block_on(async {
        let client = connect_running(data_dir).await?;
        anyhow::Ok(client.call(NET_SERVICE, &PingRemote { node_id }).await?)
    })?;
    if json {
        println!("{}", serde_json::to_string(&result)?);
    } else {
        println!(
            "{} answered in {:.3} ms",
            result.node_id,
            result.round_trip_us as f64 / 1000.0
        );
    }
    Ok(())
}

/// `net status`: needs the running daemon (the network exists only while it runs).
fn net_status(data_dir: &Path, json: bool) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let status = runtime.block_on(async {
        let client = connect_running(data_dir).await?;
        anyhow::Ok(client.call(NET_SERVICE, &GetNetStatus).await?)
    })?;
    if json {
        println!("{}", serde_json::to_string_pretty(&status)?);
        return Ok(());
    }
    let text = |value: &serde_json::Value| value.as_str().unwrap_or("-").to_string();
    let list = |value: &serde_json::Value| -> Vec<serde_json::Value> {
        value.as_array().cloned().unwrap_or_default()
    };
    println!("node id:     {}", text(&status["node_id"]));
    println!("peer id:     {}", text(&status["peer_id"]));
    for addr in list(&status["listen_addrs"]) {
        println!("listening:   {}", text(&addr));
    }
    let connected = list(&status["connected"]);
    println!("connected:   {} peer(s)", connected.len());
    for peer in &connected {
        println!(
            "  {}  {}  {}",
            text(&peer["node_id"]),
            text(&peer["peer_id"]),
            list(&peer["addrs"])
                .iter()
                .map(text)
                .collect::<Vec<_>>()
                .join(" ")
        );
    }
    println!("known peers: {}", list(&status["known_peers"]).len());
    let relay = &status["relay"];
    println!(
        "relay:       server={} reservations={} relayed-addrs={}",
        relay["server"].as_bool().unwrap_or(false),
        list(&relay["reservations"]).len(),
        list(&relay["relayed_addrs"]).len()
    );
    Ok(())
}

fn print_app_key_table(keys: &[AppKeyInfo]) {
    if keys.is_empty() {
        eprintln!("no app-keys yet; create one with `golem-daemon app-key create NAME`");
        return;
    }
    let name_width = keys
        .iter()
        .map(|key| key.name.len())
        .max()
        .unwrap_or(4)
        .max(4);
    println!(
        "{:<name_width$}  {:<32}  {:<42}  CREATED",
        "NAME", "KEY", "IDENTITY"
    );
    for key in keys {
        println!(
            "{:<name_width$}  {:<32}  {:<42}  {}",
            key.name,
            key.key,
            key.identity.to_string(),
            key.created.format("%Y-%m-%d %H:%M:%S")
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn market_flags_reach_the_market_overrides() {
        let cli = Cli::try_parse_from([
            "golem-daemon",
            "run",
            "--market-subscription-ttl-secs",
            "7",
            "--market-outbox-retry-max-ms",
            "100",
        ])
        .unwrap_or_else(|error| panic!("parse: {error}"));
        let Command::Run(run) = cli.command else {
            panic!("not the run command");
        };
        assert_eq!(
            run.market,
            crate::market::MarketOverrides {
                subscription_ttl_secs: Some(7),
                outbox_retry_max_ms: Some(100),
                ..Default::default()
            }
        );
        let error =
            Cli::try_parse_from(["golem-daemon", "run", "--market-remote-timeout-ms", "soon"])
                .err()
                .map(|error| error.to_string())
                .unwrap_or_default();
        assert!(error.contains("--market-remote-timeout-ms"), "{error}");
    }
}
