//! The daemon's one typed configuration, layered defaults → TOML file
//! (`--config` or `GOLEM_CONFIG`) → environment → command line by
//! `golem-settings`, all resolved before any port is bound. A setting is a
//! field of [`DaemonConfig`] (or of its `[market]`, `[activity]`, `[payment]`, `[api]`
//! sections) and, when it has a flag, a field of [`CliOverrides`]; its
//! environment name is derived from its key (`GOLEM_` + key in SCREAMING_SNAKE,
//! `market.remote-timeout-ms` → `GOLEM_MARKET_REMOTE_TIMEOUT_MS`) except the
//! few older names declared in [`DaemonConfig::layers`].
//! [`DaemonConfig::env_table`] lists every name. Nothing else in the daemon
//! reads the environment.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use golem_settings::Layers;
use serde::{Deserialize, Serialize};

/// Environment names that are not derived from a key, and the prefix of
/// those that are.
pub mod env_names {
    /// Prefix of every derived name: the setting `a.b-c` is `GOLEM_A_B_C`.
    pub const PREFIX: &str = "GOLEM";
    /// The config file; not a setting, it says where the file layer is.
    pub const CONFIG: &str = "GOLEM_CONFIG";
    /// `autoconf-appkey`: registers this exact app-key at start (for scripts).
    pub const AUTOCONF_APPKEY: &str = "GOLEM_AUTOCONF_APPKEY";
    /// The original daemon's name for the same thing, accepted for drop-in
    /// use after `GOLEM_AUTOCONF_APPKEY`.
    pub const YAGNA_AUTOCONF_APPKEY: &str = "YAGNA_AUTOCONF_APPKEY";
    /// Not a setting: the datagram socket systemd listens on for readiness
    /// (`Type=notify` units); `READY=1` goes there once the REST API listens.
    pub const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";
    /// Not a setting: glibc's own cap on malloc arenas. When set, glibc has
    /// applied it and the daemon leaves it (else it caps them at
    /// `golem_heap_trim::DAEMON_ARENAS`).
    pub const MALLOC_ARENA_MAX: &str = "MALLOC_ARENA_MAX";
    /// Per erc20 network: `GOLEM_ERC20_<NETWORK>_<FIELD>` for the key
    /// `payment.erc20.<network>.<field>` (e.g. `GOLEM_ERC20_HOLESKY_RPC_URL`).
    /// Older than the derivation rule, which would say
    /// `GOLEM_PAYMENT_ERC20_HOLESKY_RPC_URL`.
    pub fn erc20(network: &str, field: &str) -> String {
        format!("GOLEM_ERC20_{}_{field}", network.to_uppercase())
    }

    // Names spelled by the service tests (market, payment); the loader derives
    // them, and `config::tests::every_env_name_sets_its_setting` checks each.
    #[cfg(test)]
    pub const ERC20_TOKEN: &str = "TOKEN";
    #[cfg(test)]
    pub const MARKET_SUBSCRIPTION_TTL_SECS: &str = "GOLEM_MARKET_SUBSCRIPTION_TTL_SECS";
    #[cfg(test)]
    pub const MARKET_ANNOUNCE_INTERVAL_MS: &str = "GOLEM_MARKET_ANNOUNCE_INTERVAL_MS";
    #[cfg(test)]
    pub const MARKET_REMOTE_TIMEOUT_MS: &str = "GOLEM_MARKET_REMOTE_TIMEOUT_MS";
    #[cfg(test)]
    pub const MARKET_SWEEP_INTERVAL_MS: &str = "GOLEM_MARKET_SWEEP_INTERVAL_MS";
    #[cfg(test)]
    pub const MARKET_OUTBOX_RETRY_MAX_MS: &str = "GOLEM_MARKET_OUTBOX_RETRY_MAX_MS";
    #[cfg(test)]
    pub const MARKET_MAX_EVENTS_PER_SUBSCRIPTION: &str = "GOLEM_MARKET_MAX_EVENTS_PER_SUBSCRIPTION";
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Plain,
    Json,
}

/// Everything `golem-daemon run` needs, fully resolved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct DaemonConfig {
    /// Where the identity key, sled database and bus socket live.
    pub data_dir: PathBuf,
    /// REST API listen address; port 0 picks a free port (tests).
    pub api_addr: SocketAddr,
    /// libp2p listen multiaddrs.
    pub p2p_listen: Vec<String>,
    /// libp2p bootstrap multiaddrs, with or without `/p2p/<peer-id>`.
    pub bootstrap: Vec<String>,
    pub log_format: LogFormat,
    /// Largest accepted REST request body in bytes; larger ones get 413.
    pub api_body_limit: usize,
    /// actix-web worker threads; 0 means one per CPU.
    pub api_workers: usize,
    /// An app-key to register at start, so scripts know a key in advance.
    pub autoconf_appkey: Option<String>,
    /// Relay for nodes behind NAT (meant for nodes with a public address).
    pub relay_server: bool,
    /// Relays to reserve a slot on, so that this node is reachable behind NAT.
    pub relays: Vec<String>,
    /// Addresses at which other nodes can reach this one (announced to peers).
    pub external_addrs: Vec<String>,
    /// Upper bound of a call to another node, lookup and dial included.
    pub net_call_timeout_ms: u64,
    /// Connected peers to keep; above it idle, non-mesh peers are disconnected (0: no limit).
    pub net_target_peers: usize,
    /// Gossip heartbeat (mesh upkeep and lazy gossip) in ms.
    pub net_gossip_heartbeat_ms: u64,
    /// sled's page cache in MiB (its count of serialized bytes; the heap holds more).
    pub store_cache_mib: u64,
    /// Payment drivers: `[payment.erc20.<network>]` with rpc-url, chain-id, token, confirmations, max-fee-per-gas (gwei).
    pub payment: crate::payment::PaymentConfig,
    /// Market tunables: `[market]` with subscription-ttl-secs, remote-timeout-ms, ...
    pub market: crate::market::MarketSettings,
    /// Activity limits: `[activity]` with max-per-agreement.
    pub activity: crate::activity::ActivitySettings,
    /// REST API limits and CORS: `[api]` with max-long-polls-per-key, allow-origin.
    pub api: crate::api::ApiSettings,
    /// What is kept of finished work: `[retention]` with memory-count, memory-secs, events-count, events-secs, history-secs, history-count.
    pub retention: crate::retention::RetentionSettings,
}

pub fn default_data_dir() -> PathBuf {
    dirs::data_local_dir()
        .unwrap_or_else(|| PathBuf::from("."))
        .join("golem-daemon")
}

impl Default for DaemonConfig {
    fn default() -> Self {
        DaemonConfig {
            data_dir: default_data_dir(),
            api_addr: SocketAddr::from(([127, 0, 0, 1], 7465)),
            p2p_listen: vec!["/ip4/0.0.0.0/tcp/11500".to_string()],
            bootstrap: Vec::new(),
            log_format: LogFormat::Plain,
            api_body_limit: 4 * 1024 * 1024,
            api_workers: 0,
            autoconf_appkey: None,
            relay_server: false,
            relays: Vec::new(),
            external_addrs: Vec::new(),
            net_call_timeout_ms: 10_000,
            net_target_peers: golem_net::NetConfig::default().target_peers,
            net_gossip_heartbeat_ms: golem_net::NetConfig::default().gossip_heartbeat.as_millis()
                as u64,
            store_cache_mib: crate::store::DEFAULT_CACHE_MIB,
            payment: crate::payment::PaymentConfig::default(),
            market: crate::market::MarketSettings::default(),
            activity: crate::activity::ActivitySettings::default(),
            api: crate::api::ApiSettings::default(),
            retention: crate::retention::RetentionSettings::default(),
        }
    }
}

/// A value that does not parse (naming the variable, file or flag) or a config
/// file that cannot be read.
pub use golem_settings::SettingsError as ConfigError;

/// The flags of `golem-daemon run` (plus the global `--config` and
/// `--data-dir`, which `cli` copies in), the last layer. Serialized with the
/// keys of [`DaemonConfig`]; a flag not given serializes to nothing.
#[derive(Debug, Clone, Default, PartialEq, clap::Args, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct CliOverrides {
    /// `--config`: where the file layer is (not a setting itself).
    #[arg(skip)]
    #[serde(skip)]
    pub config_file: Option<PathBuf>,
    /// `--data-dir` (a global flag).
    #[arg(skip)]
    pub data_dir: Option<PathBuf>,
    /// REST API listen address [env: GOLEM_API_ADDR] [default: 127.0.0.1:7465]
    #[arg(long, value_name = "ADDR")]
    pub api_addr: Option<SocketAddr>,
    /// libp2p listen multiaddr, repeatable [env: GOLEM_P2P_LISTEN, comma-separated] [default: /ip4/0.0.0.0/tcp/11500]
    #[arg(long = "p2p-listen", value_name = "MULTIADDR")]
    pub p2p_listen: Vec<String>,
    /// Bootstrap peer multiaddr, with or without /p2p/<peer-id>, repeatable [env: GOLEM_BOOTSTRAP]
    #[arg(long = "bootstrap", value_name = "MULTIADDR")]
    pub bootstrap: Vec<String>,
    /// Log format on stderr [env: GOLEM_LOG_FORMAT] [default: plain]
    #[arg(long, value_enum, value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,
    /// Relay connections for nodes behind NAT (for nodes with a public address) [env: GOLEM_RELAY_SERVER]
    #[arg(long)]
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub relay_server: bool,
    /// Relay multiaddr (with /p2p/<peer-id>) to become reachable through, repeatable [env: GOLEM_RELAYS]
    #[arg(long = "relay", value_name = "MULTIADDR")]
    pub relays: Vec<String>,
    /// Address other nodes can reach this one at, repeatable [env: GOLEM_EXTERNAL_ADDRS]
    #[arg(long = "external-addr", value_name = "MULTIADDR")]
    pub external_addrs: Vec<String>,
    /// Connected peers to keep; above it the least recently used idle peers that are not gossip mesh, bootstrap or relay peers are disconnected, 0 keeps all [env: GOLEM_NET_TARGET_PEERS] [default: 12]
    #[arg(long = "net-target-peers", value_name = "COUNT")]
    pub net_target_peers: Option<usize>,
    /// Gossip heartbeat in ms: how often each offer topic's mesh is tended and message ids are gossiped to a few other peers (each beat sends a little to several peers, so on many idle nodes it adds up) [env: GOLEM_NET_GOSSIP_HEARTBEAT_MS] [default: 500]
    #[arg(long = "net-gossip-heartbeat-ms", value_name = "MS")]
    pub net_gossip_heartbeat_ms: Option<u64>,
    /// sled's page cache in MiB, counted as sled counts it (serialized bytes; the heap holds about twice) [env: GOLEM_STORE_CACHE_MIB] [default: 8]
    #[arg(long = "store-cache-mib", value_name = "MIB")]
    pub store_cache_mib: Option<u64>,
    /// `--market-*`: the `[market]` section (file key `market.<name>`, env `GOLEM_MARKET_<NAME>`).
    #[command(flatten)]
    pub market: crate::market::MarketOverrides,
    /// `--retention-*`: the `[retention]` section (file key `retention.<name>`, env `GOLEM_RETENTION_<NAME>`).
    #[command(flatten)]
    pub retention: crate::retention::RetentionOverrides,
    /// Activities one agreement may create on this provider over its life [env: GOLEM_ACTIVITY_MAX_PER_AGREEMENT] [default: 100]
    #[arg(long = "activity-max-per-agreement", value_name = "COUNT")]
    #[serde(rename = "activity.max-per-agreement")]
    pub activity_max_per_agreement: Option<usize>,
    /// Long-polls one app-key may hold open at once; more get 429 [env: GOLEM_API_MAX_LONG_POLLS_PER_KEY] [default: 100]
    #[arg(long = "api-max-long-polls-per-key", value_name = "COUNT")]
    #[serde(rename = "api.max-long-polls-per-key")]
    pub api_max_long_polls_per_key: Option<usize>,
    /// Browser origin let in by CORS (scheme://host[:port], * for any), repeatable [env: GOLEM_API_ALLOW_ORIGIN, comma-separated]
    #[arg(long = "api-allow-origin", value_name = "ORIGIN")]
    #[serde(rename = "api.allow-origin")]
    pub api_allow_origin: Vec<String>,
}

impl DaemonConfig {
    /// Layer defaults, the TOML file (from `--config` or `GOLEM_CONFIG`), the
    /// environment (read through `env`, so tests can pass a fake one) and `cli`.
    pub fn load(
        cli: &CliOverrides,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let config_file = cli
            .config_file
            .clone()
            .or_else(|| env(env_names::CONFIG).map(PathBuf::from));
        let mut layers = Self::layers(&env)?.flags(cli);
        if let Some(path) = &config_file {
            layers = layers.file(path);
        }
        layers.load()
    }

    /// Read only the TOML file (defaults beneath it).
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        Layers::new(env_names::PREFIX, &|_| None).file(path).load()
    }

    /// The daemon's layers: derived environment names plus the older ones.
    fn layers<'a>(env: &'a dyn Fn(&str) -> Option<String>) -> Result<Layers<'a>, ConfigError> {
        let mut layers = Layers::new(env_names::PREFIX, env).env_names(
            "autoconf-appkey",
            [env_names::AUTOCONF_APPKEY, env_names::YAGNA_AUTOCONF_APPKEY],
        );
        // Network entries are not in the defaults (the map starts empty), so
        // each built-in network's fields are declared, under their old names.
        let fields = golem_settings::keys_of(&crate::payment::Erc20NetworkOverride::default())?;
        for network in crate::payment::erc20::network_names() {
            for field in &fields {
                layers = layers.env_names(
                    format!("payment.erc20.{network}.{field}"),
                    [env_names::erc20(
                        network,
                        &golem_settings::env_name("", field),
                    )],
                );
            }
        }
        Ok(layers)
    }

    /// Every environment variable the daemon's settings answer to, with its key.
    pub fn env_table() -> Result<Vec<golem_settings::EnvName>, ConfigError> {
        Self::layers(&|_| None)?.env_table::<DaemonConfig>()
    }

    /// Path of the bus socket inside the data dir.
    pub fn bus_socket_path(&self) -> PathBuf {
        bus_socket_path(&self.data_dir)
    }
}

pub fn bus_socket_path(data_dir: &Path) -> PathBuf {
    data_dir.join("bus.sock")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use clap::Parser;

    use golem_settings::env_of;

    fn with_file(text: &str) -> (tempfile::TempDir, CliOverrides) {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("daemon.toml");
        std::fs::write(&file, text).unwrap();
        let cli = CliOverrides {
            config_file: Some(file),
            ..Default::default()
        };
        (dir, cli)
    }

    /// One setting as issue 18 found it: its environment name and value, its
    /// flag, its TOML form, and how to read it back.
    struct Setting {
        env: &'static str,
        value: &'static str,
        flag: &'static [&'static str],
        toml: &'static str,
        read: fn(&DaemonConfig) -> String,
        expected: &'static str,
    }

    /// The contract: every name that scripts, tests and other tools use.
    /// Changing one of these breaks them; add, never rename.
    #[rustfmt::skip]
    fn contract() -> Vec<Setting> {
        vec![
            Setting { env: "GOLEM_DATA_DIR", value: "/d", flag: &["--data-dir", "/d"], toml: "data-dir = \"/d\"", read: |c| c.data_dir.display().to_string(), expected: "/d" },
            Setting { env: "GOLEM_API_ADDR", value: "127.0.0.1:1234", flag: &["--api-addr", "127.0.0.1:1234"], toml: "api-addr = \"127.0.0.1:1234\"", read: |c| c.api_addr.to_string(), expected: "127.0.0.1:1234" },
            Setting { env: "GOLEM_P2P_LISTEN", value: "/ip4/1.1.1.1/tcp/1, /ip4/2.2.2.2/tcp/2", flag: &["--p2p-listen", "/ip4/1.1.1.1/tcp/1", "--p2p-listen", "/ip4/2.2.2.2/tcp/2"], toml: "p2p-listen = [\"/ip4/1.1.1.1/tcp/1\", \"/ip4/2.2.2.2/tcp/2\"]", read: |c| c.p2p_listen.join(","), expected: "/ip4/1.1.1.1/tcp/1,/ip4/2.2.2.2/tcp/2" },
            Setting { env: "GOLEM_BOOTSTRAP", value: "/ip4/3.3.3.3/tcp/3", flag: &["--bootstrap", "/ip4/3.3.3.3/tcp/3"], toml: "bootstrap = [\"/ip4/3.3.3.3/tcp/3\"]", read: |c| c.bootstrap.join(","), expected: "/ip4/3.3.3.3/tcp/3" },
            Setting { env: "GOLEM_LOG_FORMAT", value: "json", flag: &["--log-format", "json"], toml: "log-format = \"json\"", read: |c| format!("{:?}", c.log_format), expected: "Json" },
            Setting { env: "GOLEM_API_BODY_LIMIT", value: "1234", flag: &[], toml: "api-body-limit = 1234", read: |c| c.api_body_limit.to_string(), expected: "1234" },
            Setting { env: "GOLEM_API_WORKERS", value: "3", flag: &[], toml: "api-workers = 3", read: |c| c.api_workers.to_string(), expected: "3" },
            Setting { env: "GOLEM_AUTOCONF_APPKEY", value: " key-1 ", flag: &[], toml: "autoconf-appkey = \"key-1\"", read: |c| format!("{:?}", c.autoconf_appkey), expected: "Some(\"key-1\")" },
            Setting { env: "YAGNA_AUTOCONF_APPKEY", value: "key-1", flag: &[], toml: "autoconf-appkey = \"key-1\"", read: |c| format!("{:?}", c.autoconf_appkey), expected: "Some(\"key-1\")" },
            Setting { env: "GOLEM_RELAY_SERVER", value: "true", flag: &["--relay-server"], toml: "relay-server = true", read: |c| c.relay_server.to_string(), expected: "true" },
            Setting { env: "GOLEM_RELAYS", value: "/ip4/4.4.4.4/tcp/4/p2p/x", flag: &["--relay", "/ip4/4.4.4.4/tcp/4/p2p/x"], toml: "relays = [\"/ip4/4.4.4.4/tcp/4/p2p/x\"]", read: |c| c.relays.join(","), expected: "/ip4/4.4.4.4/tcp/4/p2p/x" },
            Setting { env: "GOLEM_EXTERNAL_ADDRS", value: "/ip4/5.5.5.5/tcp/5", flag: &["--external-addr", "/ip4/5.5.5.5/tcp/5"], toml: "external-addrs = [\"/ip4/5.5.5.5/tcp/5\"]", read: |c| c.external_addrs.join(","), expected: "/ip4/5.5.5.5/tcp/5" },
            Setting { env: "GOLEM_NET_CALL_TIMEOUT_MS", value: "1500", flag: &[], toml: "net-call-timeout-ms = 1500", read: |c| c.net_call_timeout_ms.to_string(), expected: "1500" },
            Setting { env: "GOLEM_NET_TARGET_PEERS", value: "7", flag: &["--net-target-peers", "7"], toml: "net-target-peers = 7", read: |c| c.net_target_peers.to_string(), expected: "7" },
            Setting { env: "GOLEM_NET_GOSSIP_HEARTBEAT_MS", value: "700", flag: &["--net-gossip-heartbeat-ms", "700"], toml: "net-gossip-heartbeat-ms = 700", read: |c| c.net_gossip_heartbeat_ms.to_string(), expected: "700" },
            Setting { env: "GOLEM_STORE_CACHE_MIB", value: "3", flag: &["--store-cache-mib", "3"], toml: "store-cache-mib = 3", read: |c| c.store_cache_mib.to_string(), expected: "3" },
            Setting { env: "GOLEM_MARKET_SUBSCRIPTION_TTL_SECS", value: "11", flag: &["--market-subscription-ttl-secs", "11"], toml: "[market]\nsubscription-ttl-secs = 11", read: |c| c.market.subscription_ttl_secs.to_string(), expected: "11" },
            Setting { env: "GOLEM_MARKET_ANNOUNCE_INTERVAL_MS", value: "12", flag: &["--market-announce-interval-ms", "12"], toml: "[market]\nannounce-interval-ms = 12", read: |c| c.market.announce_interval_ms.to_string(), expected: "12" },
            Setting { env: "GOLEM_MARKET_PEER_CHECK_INTERVAL_MS", value: "13", flag: &["--market-peer-check-interval-ms", "13"], toml: "[market]\npeer-check-interval-ms = 13", read: |c| c.market.peer_check_interval_ms.to_string(), expected: "13" },
            Setting { env: "GOLEM_MARKET_REMOTE_TIMEOUT_MS", value: "14", flag: &["--market-remote-timeout-ms", "14"], toml: "[market]\nremote-timeout-ms = 14", read: |c| c.market.remote_timeout_ms.to_string(), expected: "14" },
            Setting { env: "GOLEM_MARKET_SWEEP_INTERVAL_MS", value: "15", flag: &["--market-sweep-interval-ms", "15"], toml: "[market]\nsweep-interval-ms = 15", read: |c| c.market.sweep_interval_ms.to_string(), expected: "15" },
            Setting { env: "GOLEM_MARKET_OUTBOX_RETRY_INITIAL_MS", value: "16", flag: &["--market-outbox-retry-initial-ms", "16"], toml: "[market]\noutbox-retry-initial-ms = 16", read: |c| c.market.outbox_retry_initial_ms.to_string(), expected: "16" },
            Setting { env: "GOLEM_MARKET_OUTBOX_RETRY_MAX_MS", value: "17", flag: &["--market-outbox-retry-max-ms", "17"], toml: "[market]\noutbox-retry-max-ms = 17", read: |c| c.market.outbox_retry_max_ms.to_string(), expected: "17" },
            Setting { env: "GOLEM_MARKET_MAX_OFFERS_PER_NODE", value: "18", flag: &["--market-max-offers-per-node", "18"], toml: "[market]\nmax-offers-per-node = 18", read: |c| c.market.max_offers_per_node.to_string(), expected: "18" },
            Setting { env: "GOLEM_MARKET_MAX_OFFERS", value: "19", flag: &["--market-max-offers", "19"], toml: "[market]\nmax-offers = 19", read: |c| c.market.max_offers.to_string(), expected: "19" },
            Setting { env: "GOLEM_MARKET_MAX_EXPIRATION_SECS", value: "20", flag: &["--market-max-expiration-secs", "20"], toml: "[market]\nmax-expiration-secs = 20", read: |c| c.market.max_expiration_secs.to_string(), expected: "20" },
            Setting { env: "GOLEM_MARKET_MAX_PROPOSALS_PER_SUBSCRIPTION", value: "21", flag: &["--market-max-proposals-per-subscription", "21"], toml: "[market]\nmax-proposals-per-subscription = 21", read: |c| c.market.max_proposals_per_subscription.to_string(), expected: "21" },
            Setting { env: "GOLEM_MARKET_MAX_EVENTS_PER_SUBSCRIPTION", value: "22", flag: &["--market-max-events-per-subscription", "22"], toml: "[market]\nmax-events-per-subscription = 22", read: |c| c.market.max_events_per_subscription.to_string(), expected: "22" },
            Setting { env: "GOLEM_API_MAX_LONG_POLLS_PER_KEY", value: "24", flag: &["--api-max-long-polls-per-key", "24"], toml: "[api]\nmax-long-polls-per-key = 24", read: |c| c.api.max_long_polls_per_key.to_string(), expected: "24" },
            Setting { env: "GOLEM_API_ALLOW_ORIGIN", value: "http://a.example, http://b.example:8080", flag: &["--api-allow-origin", "http://a.example", "--api-allow-origin", "http://b.example:8080"], toml: "[api]\nallow-origin = [\"http://a.example\", \"http://b.example:8080\"]", read: |c| c.api.allow_origin.join(","), expected: "http://a.example,http://b.example:8080" },
            Setting { env: "GOLEM_ACTIVITY_MAX_PER_AGREEMENT", value: "23", flag: &["--activity-max-per-agreement", "23"], toml: "[activity]\nmax-per-agreement = 23", read: |c| c.activity.max_per_agreement.to_string(), expected: "23" },
            Setting { env: "GOLEM_RETENTION_MEMORY_COUNT", value: "31", flag: &["--retention-memory-count", "31"], toml: "[retention]\nmemory-count = 31", read: |c| c.retention.memory_count.to_string(), expected: "31" },
            Setting { env: "GOLEM_RETENTION_MEMORY_SECS", value: "32", flag: &["--retention-memory-secs", "32"], toml: "[retention]\nmemory-secs = 32", read: |c| c.retention.memory_secs.to_string(), expected: "32" },
            Setting { env: "GOLEM_RETENTION_EVENTS_COUNT", value: "33", flag: &["--retention-events-count", "33"], toml: "[retention]\nevents-count = 33", read: |c| c.retention.events_count.to_string(), expected: "33" },
            Setting { env: "GOLEM_RETENTION_EVENTS_SECS", value: "34", flag: &["--retention-events-secs", "34"], toml: "[retention]\nevents-secs = 34", read: |c| c.retention.events_secs.to_string(), expected: "34" },
            Setting { env: "GOLEM_RETENTION_HISTORY_SECS", value: "35", flag: &["--retention-history-secs", "35"], toml: "[retention]\nhistory-secs = 35", read: |c| c.retention.history_secs.to_string(), expected: "35" },
            Setting { env: "GOLEM_RETENTION_HISTORY_COUNT", value: "36", flag: &["--retention-history-count", "36"], toml: "[retention]\nhistory-count = 36", read: |c| c.retention.history_count.to_string(), expected: "36" },
            Setting { env: "GOLEM_ERC20_HOLESKY_RPC_URL", value: "http://127.0.0.1:8545", flag: &[], toml: "[payment.erc20.holesky]\nrpc-url = \"http://127.0.0.1:8545\"", read: |c| format!("{:?}", c.payment .erc20 .get("holesky").and_then(|n| n.rpc_url.clone())), expected: "Some(\"http://127.0.0.1:8545\")" },
            Setting { env: "GOLEM_ERC20_SEPOLIA_CHAIN_ID", value: "0x7a69", flag: &[], toml: "[payment.erc20.sepolia]\nchain-id = 31337", read: |c| format!("{:?}", c.payment .erc20 .get("sepolia").and_then(|n| n.chain_id)), expected: "Some(31337)" },
            Setting { env: "GOLEM_ERC20_AMOY_TOKEN", value: "0xabc", flag: &[], toml: "[payment.erc20.amoy]\ntoken = \"0xabc\"", read: |c| format!("{:?}", c.payment.erc20.get("amoy").and_then(|n| n.token.clone())), expected: "Some(\"0xabc\")" },
            Setting { env: "GOLEM_ERC20_MAINNET_CONFIRMATIONS", value: "3", flag: &[], toml: "[payment.erc20.mainnet]\nconfirmations = 3", read: |c| format!("{:?}", c.payment .erc20 .get("mainnet").and_then(|n| n.confirmations)), expected: "Some(3)" },
            Setting { env: "GOLEM_ERC20_POLYGON_MAX_FEE_PER_GAS", value: "650", flag: &[], toml: "[payment.erc20.polygon]\nmax-fee-per-gas = 650", read: |c| format!("{:?}", c.payment.erc20.get("polygon").and_then(|n| n.max_fee_per_gas)), expected: "Some(650)" },
        ]
    }

    fn parse_run(flags: &[&str]) -> CliOverrides {
        let args = ["golem-daemon", "run"].iter().chain(flags);
        let cli = crate::cli::Cli::try_parse_from(args).unwrap();
        let crate::cli::Command::Run(run) = &cli.command else {
            panic!("not run");
        };
        crate::cli::overrides(&cli.global, Some(run))
    }

    #[test]
    fn every_env_name_toml_key_and_flag_sets_its_setting() {
        let defaults = DaemonConfig::default();
        for setting in contract() {
            let name = setting.env;
            assert_ne!(
                (setting.read)(&defaults),
                setting.expected,
                "{name}: pick a non-default sample"
            );
            let from_env =
                DaemonConfig::load(&CliOverrides::default(), env_of(&[(name, setting.value)]))
                    .unwrap_or_else(|error| panic!("{name}: {error}"));
            assert_eq!((setting.read)(&from_env), setting.expected, "env {name}");
            let (_dir, cli) = with_file(setting.toml);
            let from_file = DaemonConfig::load(&cli, env_of(&[]))
                .unwrap_or_else(|error| panic!("{}: {error}", setting.toml));
            assert_eq!(
                (setting.read)(&from_file),
                setting.expected,
                "file {}",
                setting.toml
            );
            if !setting.flag.is_empty() {
                let from_flag = DaemonConfig::load(&parse_run(setting.flag), env_of(&[])).unwrap();
                assert_eq!(
                    (setting.read)(&from_flag),
                    setting.expected,
                    "flag {:?}",
                    setting.flag
                );
            }
        }
        // Every erc20 network keeps its GOLEM_ERC20_<NETWORK>_<FIELD> names.
        let table = DaemonConfig::env_table().unwrap();
        for network in crate::payment::erc20::network_names() {
            for field in [
                "RPC_URL",
                "CHAIN_ID",
                "TOKEN",
                "CONFIRMATIONS",
                "MAX_FEE_PER_GAS",
            ] {
                let name = env_names::erc20(network, field);
                assert!(table.iter().any(|entry| entry.name == name), "{name}");
            }
        }
        for setting in contract() {
            assert!(
                table.iter().any(|entry| entry.name == setting.env),
                "{} listed",
                setting.env
            );
        }
    }

    #[test]
    fn config_file_comes_from_the_flag_or_golem_config() {
        let (_dir, cli) = with_file("api-workers = 5\n");
        let path = cli.config_file.clone().unwrap();
        let path = path.to_str().unwrap();
        let from_env = DaemonConfig::load(
            &CliOverrides::default(),
            env_of(&[(env_names::CONFIG, path)]),
        )
        .unwrap();
        assert_eq!(from_env.api_workers, 5);
        let flag = parse_run(&[]);
        assert_eq!(flag.config_file, None);
        let cli =
            crate::cli::Cli::try_parse_from(["golem-daemon", "--config", path, "run"]).unwrap();
        let crate::cli::Command::Run(run) = &cli.command else {
            panic!("not run")
        };
        let from_flag =
            DaemonConfig::load(&crate::cli::overrides(&cli.global, Some(run)), env_of(&[]))
                .unwrap();
        assert_eq!(from_flag.api_workers, 5);
    }

    #[test]
    fn defaults_apply_with_nothing_given() {
        let config = DaemonConfig::load(&CliOverrides::default(), env_of(&[])).unwrap();
        assert_eq!(config, DaemonConfig::default());
        assert_eq!(config.api_addr.to_string(), "127.0.0.1:7465");
        assert_eq!(config.p2p_listen, vec!["/ip4/0.0.0.0/tcp/11500"]);
        assert!(config.data_dir.ends_with("golem-daemon"));
        assert_eq!(config.autoconf_appkey, None);
        assert_eq!(config.activity.max_per_agreement, 100);
    }

    #[test]
    fn defaults_then_file_then_env_then_flags() {
        let (_dir, cli) = with_file(
            "data-dir = \"/from/file\"\napi-addr = \"127.0.0.1:1111\"\nbootstrap = [\"/ip4/1.2.3.4/tcp/1\"]\nrelay-server = true\n[market]\nsweep-interval-ms = 300\nremote-timeout-ms = 301\n[activity]\nmax-per-agreement = 5\n",
        );
        let from_file = DaemonConfig::load(&cli, env_of(&[])).unwrap();
        assert_eq!(from_file.data_dir, PathBuf::from("/from/file"));
        assert_eq!(from_file.api_addr.port(), 1111);
        assert_eq!(from_file.market.sweep_interval_ms, 300);
        assert_eq!(
            from_file.market.announce_interval_ms, 30_000,
            "default kept"
        );

        let env = env_of(&[
            ("GOLEM_API_ADDR", "127.0.0.1:2222"),
            ("GOLEM_BOOTSTRAP", "/ip4/5.6.7.8/tcp/2, /ip4/9.9.9.9/tcp/3"),
            ("GOLEM_MARKET_REMOTE_TIMEOUT_MS", "1500"),
            ("GOLEM_ACTIVITY_MAX_PER_AGREEMENT", "7"),
        ]);
        let from_env = DaemonConfig::load(&cli, &env).unwrap();
        assert_eq!(from_env.data_dir, PathBuf::from("/from/file"));
        assert_eq!(from_env.api_addr.port(), 2222);
        assert_eq!(
            from_env.bootstrap,
            vec!["/ip4/5.6.7.8/tcp/2", "/ip4/9.9.9.9/tcp/3"]
        );
        assert_eq!(from_env.market.remote_timeout_ms, 1500);
        assert_eq!(from_env.market.sweep_interval_ms, 300);
        assert_eq!(from_env.activity.max_per_agreement, 7);

        let cli = CliOverrides {
            api_addr: Some("127.0.0.1:3333".parse().unwrap()),
            data_dir: Some("/from/cli".into()),
            activity_max_per_agreement: Some(9),
            market: crate::market::MarketOverrides {
                remote_timeout_ms: Some(900),
                ..Default::default()
            },
            ..cli
        };
        let from_cli = DaemonConfig::load(&cli, &env).unwrap();
        assert_eq!(from_cli.api_addr.port(), 3333);
        assert_eq!(from_cli.data_dir, PathBuf::from("/from/cli"));
        assert_eq!(from_cli.market.remote_timeout_ms, 900);
        assert_eq!(from_cli.activity.max_per_agreement, 9);
        assert_eq!(
            from_cli.bootstrap,
            vec!["/ip4/5.6.7.8/tcp/2", "/ip4/9.9.9.9/tcp/3"],
            "no flag: env stays"
        );
        assert!(
            from_cli.relay_server,
            "a switch not given leaves the file's value"
        );
    }

    #[test]
    fn golem_autoconf_wins_over_yagna_name_and_blank_is_unset() {
        let env = env_of(&[
            (env_names::AUTOCONF_APPKEY, "ours"),
            (env_names::YAGNA_AUTOCONF_APPKEY, "theirs"),
        ]);
        let config = DaemonConfig::load(&CliOverrides::default(), env).unwrap();
        assert_eq!(config.autoconf_appkey.as_deref(), Some("ours"));
        let blank = env_of(&[(env_names::AUTOCONF_APPKEY, "  ")]);
        let config = DaemonConfig::load(&CliOverrides::default(), blank).unwrap();
        assert_eq!(config.autoconf_appkey, None);
    }

    #[test]
    fn bad_values_name_the_variable_or_the_file() {
        for (name, value) in [
            ("GOLEM_API_ADDR", "nope"),
            ("GOLEM_LOG_FORMAT", "xml"),
            ("GOLEM_RELAY_SERVER", "maybe"),
            ("GOLEM_MARKET_SWEEP_INTERVAL_MS", "soon"),
            ("GOLEM_ERC20_HOLESKY_CHAIN_ID", "x"),
        ] {
            let error = DaemonConfig::load(&CliOverrides::default(), env_of(&[(name, value)]))
                .unwrap_err()
                .to_string();
            assert!(error.contains(name) && error.contains(value), "{error}");
        }
        let (_dir, cli) = with_file("no-such-key = 1\n");
        let error = DaemonConfig::load(&cli, env_of(&[]))
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("no-such-key") && error.contains("daemon.toml"),
            "{error}"
        );
        let (_dir, cli) = with_file("[market]\nremote-timeout-ms = \"soon\"\n");
        let error = DaemonConfig::load(&cli, env_of(&[]))
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("remote-timeout-ms") && error.contains("daemon.toml"),
            "{error}"
        );
        let cli = CliOverrides {
            config_file: Some("/nonexistent/daemon.toml".into()),
            ..Default::default()
        };
        let error = DaemonConfig::load(&cli, env_of(&[]))
            .unwrap_err()
            .to_string();
        assert!(error.contains("/nonexistent/daemon.toml"), "{error}");
    }
}
