//! The daemon's one typed configuration, layered defaults → TOML file →
//! environment → command line, all resolved before any port is bound. Every
//! environment name the daemon reads is a constant in [`env_names`]; nothing
//! else in the daemon reads the environment.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Environment variable names (the only place they are spelled).
pub mod env_names {
    pub const DATA_DIR: &str = "GOLEM_DATA_DIR";
    pub const CONFIG: &str = "GOLEM_CONFIG";
    pub const API_ADDR: &str = "GOLEM_API_ADDR";
    /// Comma-separated multiaddrs.
    pub const P2P_LISTEN: &str = "GOLEM_P2P_LISTEN";
    /// Comma-separated multiaddrs.
    pub const BOOTSTRAP: &str = "GOLEM_BOOTSTRAP";
    pub const LOG_FORMAT: &str = "GOLEM_LOG_FORMAT";
    pub const API_BODY_LIMIT: &str = "GOLEM_API_BODY_LIMIT";
    pub const API_WORKERS: &str = "GOLEM_API_WORKERS";
    /// `true` to relay for nodes behind NAT.
    pub const RELAY_SERVER: &str = "GOLEM_RELAY_SERVER";
    /// Comma-separated relay multiaddrs (with `/p2p/<peer-id>`) to reserve a slot on.
    pub const RELAYS: &str = "GOLEM_RELAYS";
    /// Comma-separated addresses this node is reachable at from outside.
    pub const EXTERNAL_ADDRS: &str = "GOLEM_EXTERNAL_ADDRS";
    pub const NET_CALL_TIMEOUT_MS: &str = "GOLEM_NET_CALL_TIMEOUT_MS";
    /// Registers this exact app-key at start (for scripts).
    pub const AUTOCONF_APPKEY: &str = "GOLEM_AUTOCONF_APPKEY";
    /// The original daemon's name for the same thing, accepted for drop-in use.
    pub const YAGNA_AUTOCONF_APPKEY: &str = "YAGNA_AUTOCONF_APPKEY";
    /// Per erc20 network: `GOLEM_ERC20_<NETWORK>_<FIELD>` with FIELD one of
    /// `ERC20_FIELDS` (e.g. `GOLEM_ERC20_HOLESKY_RPC_URL`).
    pub fn erc20(network: &str, field: &str) -> String {
        format!("GOLEM_ERC20_{}_{field}", network.to_uppercase())
    }
    pub const ERC20_RPC_URL: &str = "RPC_URL";
    pub const ERC20_CHAIN_ID: &str = "CHAIN_ID";
    pub const ERC20_TOKEN: &str = "TOKEN";
    pub const ERC20_CONFIRMATIONS: &str = "CONFIRMATIONS";
    /// `[market]` overrides (see `crate::market::MarketSettings`).
    pub const MARKET_SUBSCRIPTION_TTL_SECS: &str = "GOLEM_MARKET_SUBSCRIPTION_TTL_SECS";
    pub const MARKET_ANNOUNCE_INTERVAL_MS: &str = "GOLEM_MARKET_ANNOUNCE_INTERVAL_MS";
    pub const MARKET_PEER_CHECK_INTERVAL_MS: &str = "GOLEM_MARKET_PEER_CHECK_INTERVAL_MS";
    pub const MARKET_REMOTE_TIMEOUT_MS: &str = "GOLEM_MARKET_REMOTE_TIMEOUT_MS";
    pub const MARKET_SWEEP_INTERVAL_MS: &str = "GOLEM_MARKET_SWEEP_INTERVAL_MS";
    pub const MARKET_OUTBOX_RETRY_INITIAL_MS: &str = "GOLEM_MARKET_OUTBOX_RETRY_INITIAL_MS";
    pub const MARKET_OUTBOX_RETRY_MAX_MS: &str = "GOLEM_MARKET_OUTBOX_RETRY_MAX_MS";
    pub const MARKET_MAX_OFFERS_PER_NODE: &str = "GOLEM_MARKET_MAX_OFFERS_PER_NODE";
    pub const MARKET_MAX_OFFERS: &str = "GOLEM_MARKET_MAX_OFFERS";
    pub const MARKET_MAX_EXPIRATION_SECS: &str = "GOLEM_MARKET_MAX_EXPIRATION_SECS";
    pub const MARKET_MAX_PROPOSALS_PER_SUBSCRIPTION: &str =
        "GOLEM_MARKET_MAX_PROPOSALS_PER_SUBSCRIPTION";
    pub const MARKET_MAX_EVENTS_PER_SUBSCRIPTION: &str = "GOLEM_MARKET_MAX_EVENTS_PER_SUBSCRIPTION";
    /// `[activity]` overrides (see `crate::activity::ActivitySettings`).
    pub const ACTIVITY_MAX_PER_AGREEMENT: &str = "GOLEM_ACTIVITY_MAX_PER_AGREEMENT";
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
    /// Payment drivers: `[payment.erc20.<network>]` with rpc-url, chain-id, token, confirmations.
    pub payment: crate::payment::PaymentConfig,
    /// Market tunables: `[market]` with subscription-ttl-secs, remote-timeout-ms, ...
    pub market: crate::market::MarketSettings,
    /// Activity limits: `[activity]` with max-per-agreement.
    pub activity: crate::activity::ActivitySettings,
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
            payment: crate::payment::PaymentConfig::default(),
            market: crate::market::MarketSettings::default(),
            activity: crate::activity::ActivitySettings::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    ReadFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config file {path}: {message}")]
    ParseFile { path: PathBuf, message: String },
    #[error("invalid value {value:?} for {name}: {message}")]
    InvalidValue {
        name: String,
        value: String,
        message: String,
    },
}

/// Values given on the command line; `None`/empty means "not given".
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CliOverrides {
    pub config_file: Option<PathBuf>,
    pub data_dir: Option<PathBuf>,
    pub api_addr: Option<SocketAddr>,
    pub p2p_listen: Vec<String>,
    pub bootstrap: Vec<String>,
    pub log_format: Option<LogFormat>,
    pub relay_server: bool,
    pub relays: Vec<String>,
    pub external_addrs: Vec<String>,
    /// `--market-*` flags.
    pub market: crate::market::MarketOverrides,
    /// `--activity-max-per-agreement`.
    pub activity_max_per_agreement: Option<usize>,
}

fn parse_env<T: std::str::FromStr>(name: &str, value: String) -> Result<T, ConfigError>
where
    T::Err: std::fmt::Display,
{
    value
        .trim()
        .parse()
        .map_err(|error: T::Err| ConfigError::InvalidValue {
            name: name.to_string(),
            value,
            message: error.to_string(),
        })
}

fn split_list(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(String::from)
        .collect()
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
        let mut config = match &config_file {
            Some(path) => Self::from_file(path)?,
            None => DaemonConfig::default(),
        };
        config.apply_env(&env)?;
        config.apply_cli(cli);
        Ok(config)
    }

    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::ReadFile {
            path: path.to_path_buf(),
            source,
        })?;
        toml::from_str(&text).map_err(|error| ConfigError::ParseFile {
            path: path.to_path_buf(),
            message: error.to_string(),
        })
    }

    fn apply_env(&mut self, env: &impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        let market = [
            (
                env_names::MARKET_SUBSCRIPTION_TTL_SECS,
                &mut self.market.subscription_ttl_secs,
            ),
            (
                env_names::MARKET_ANNOUNCE_INTERVAL_MS,
                &mut self.market.announce_interval_ms,
            ),
            (
                env_names::MARKET_PEER_CHECK_INTERVAL_MS,
                &mut self.market.peer_check_interval_ms,
            ),
            (
                env_names::MARKET_REMOTE_TIMEOUT_MS,
                &mut self.market.remote_timeout_ms,
            ),
            (
                env_names::MARKET_SWEEP_INTERVAL_MS,
                &mut self.market.sweep_interval_ms,
            ),
            (
                env_names::MARKET_OUTBOX_RETRY_INITIAL_MS,
                &mut self.market.outbox_retry_initial_ms,
            ),
            (
                env_names::MARKET_OUTBOX_RETRY_MAX_MS,
                &mut self.market.outbox_retry_max_ms,
            ),
            (
                env_names::MARKET_MAX_OFFERS_PER_NODE,
                &mut self.market.max_offers_per_node,
            ),
            (env_names::MARKET_MAX_OFFERS, &mut self.market.max_offers),
            (
                env_names::MARKET_MAX_EXPIRATION_SECS,
                &mut self.market.max_expiration_secs,
            ),
            (
                env_names::MARKET_MAX_PROPOSALS_PER_SUBSCRIPTION,
                &mut self.market.max_proposals_per_subscription,
            ),
            (
                env_names::MARKET_MAX_EVENTS_PER_SUBSCRIPTION,
                &mut self.market.max_events_per_subscription,
            ),
        ];
        for (name, field) in market {
            if let Some(value) = env(name) {
                *field = parse_env(name, value)?;
            }
        }
        if let Some(value) = env(env_names::ACTIVITY_MAX_PER_AGREEMENT) {
            self.activity.max_per_agreement =
                parse_env(env_names::ACTIVITY_MAX_PER_AGREEMENT, value)?;
        }
        if let Some(value) = env(env_names::DATA_DIR) {
            self.data_dir = PathBuf::from(value);
        }
        if let Some(value) = env(env_names::API_ADDR) {
            self.api_addr = parse_env(env_names::API_ADDR, value)?;
        }
        if let Some(value) = env(env_names::P2P_LISTEN) {
            self.p2p_listen = split_list(&value);
        }
        if let Some(value) = env(env_names::BOOTSTRAP) {
            self.bootstrap = split_list(&value);
        }
        if let Some(value) = env(env_names::LOG_FORMAT) {
            self.log_format = match value.trim() {
                "plain" => LogFormat::Plain,
                "json" => LogFormat::Json,
                _ => {
                    return Err(ConfigError::InvalidValue {
                        name: env_names::LOG_FORMAT.into(),
                        value,
                        message: "expected plain or json".into(),
                    })
                }
            };
        }
        if let Some(value) = env(env_names::API_BODY_LIMIT) {
            self.api_body_limit = parse_env(env_names::API_BODY_LIMIT, value)?;
        }
        if let Some(value) = env(env_names::API_WORKERS) {
            self.api_workers = parse_env(env_names::API_WORKERS, value)?;
        }
        if let Some(value) = env(env_names::RELAY_SERVER) {
            self.relay_server = parse_env(env_names::RELAY_SERVER, value)?;
        }
        if let Some(value) = env(env_names::RELAYS) {
            self.relays = split_list(&value);
        }
        if let Some(value) = env(env_names::EXTERNAL_ADDRS) {
            self.external_addrs = split_list(&value);
        }
        if let Some(value) = env(env_names::NET_CALL_TIMEOUT_MS) {
            self.net_call_timeout_ms = parse_env(env_names::NET_CALL_TIMEOUT_MS, value)?;
        }
        if let Some(value) =
            env(env_names::AUTOCONF_APPKEY).or_else(|| env(env_names::YAGNA_AUTOCONF_APPKEY))
        {
            if !value.trim().is_empty() {
                self.autoconf_appkey = Some(value.trim().to_string());
            }
        }
        for network in crate::payment::erc20::network_names() {
            let name = |field| env_names::erc20(network, field);
            let mut changes = self.payment.erc20.get(network).cloned().unwrap_or_default();
            let mut changed = false;
            if let Some(value) = env(&name(env_names::ERC20_RPC_URL)) {
                changes.rpc_url = Some(value.trim().to_string());
                changed = true;
            }
            if let Some(value) = env(&name(env_names::ERC20_TOKEN)) {
                changes.token = Some(value.trim().to_string());
                changed = true;
            }
            if let Some(value) = env(&name(env_names::ERC20_CHAIN_ID)) {
                let value = value.trim();
                let parsed = match value.strip_prefix("0x") {
                    Some(hex) => u64::from_str_radix(hex, 16).map_err(|error| error.to_string()),
                    None => value.parse::<u64>().map_err(|error| error.to_string()),
                };
                changes.chain_id = Some(parsed.map_err(|message| ConfigError::InvalidValue {
                    name: name(env_names::ERC20_CHAIN_ID),
                    value: value.to_string(),
                    message,
                })?);
                changed = true;
            }
            if let Some(value) = env(&name(env_names::ERC20_CONFIRMATIONS)) {
                changes.confirmations =
                    Some(parse_env(&name(env_names::ERC20_CONFIRMATIONS), value)?);
                changed = true;
            }
            if changed {
                self.payment.erc20.insert(network.to_string(), changes);
            }
        }
        Ok(())
    }

    fn apply_cli(&mut self, cli: &CliOverrides) {
        if let Some(data_dir) = &cli.data_dir {
            self.data_dir = data_dir.clone();
        }
        if let Some(api_addr) = cli.api_addr {
            self.api_addr = api_addr;
        }
        if !cli.p2p_listen.is_empty() {
            self.p2p_listen = cli.p2p_listen.clone();
        }
        if !cli.bootstrap.is_empty() {
            self.bootstrap = cli.bootstrap.clone();
        }
        if let Some(log_format) = cli.log_format {
            self.log_format = log_format;
        }
        if cli.relay_server {
            self.relay_server = true;
        }
        if !cli.relays.is_empty() {
            self.relays = cli.relays.clone();
        }
        if !cli.external_addrs.is_empty() {
            self.external_addrs = cli.external_addrs.clone();
        }
        cli.market.apply_to(&mut self.market);
        if let Some(limit) = cli.activity_max_per_agreement {
            self.activity.max_per_agreement = limit;
        }
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
    use super::*;
    use std::collections::HashMap;

    fn fake_env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn defaults_apply_with_nothing_given() {
        let config = DaemonConfig::load(&CliOverrides::default(), fake_env(&[])).unwrap();
        assert_eq!(config.api_addr.to_string(), "127.0.0.1:7465");
        assert_eq!(config.p2p_listen, vec!["/ip4/0.0.0.0/tcp/11500"]);
        assert!(config.data_dir.ends_with("golem-daemon"));
        assert_eq!(config.autoconf_appkey, None);
    }

    #[test]
    fn file_then_env_then_cli_each_override_the_previous_layer() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("daemon.toml");
        std::fs::write(
            &file,
            "data-dir = \"/from/file\"\napi-addr = \"127.0.0.1:1111\"\nbootstrap = [\"/ip4/1.2.3.4/tcp/1\"]\nlog-format = \"json\"\n",
        )
        .unwrap();
        let cli = CliOverrides {
            config_file: Some(file.clone()),
            ..Default::default()
        };

        let from_file = DaemonConfig::load(&cli, fake_env(&[])).unwrap();
        assert_eq!(from_file.data_dir, PathBuf::from("/from/file"));
        assert_eq!(from_file.api_addr.port(), 1111);
        assert_eq!(from_file.log_format, LogFormat::Json);

        let env = fake_env(&[
            (env_names::API_ADDR, "127.0.0.1:2222"),
            (
                env_names::BOOTSTRAP,
                "/ip4/5.6.7.8/tcp/2, /ip4/9.9.9.9/tcp/3",
            ),
            (env_names::YAGNA_AUTOCONF_APPKEY, "yagna-key"),
        ]);
        let from_env = DaemonConfig::load(&cli, &env).unwrap();
        assert_eq!(from_env.data_dir, PathBuf::from("/from/file"));
        assert_eq!(from_env.api_addr.port(), 2222);
        assert_eq!(
            from_env.bootstrap,
            vec!["/ip4/5.6.7.8/tcp/2", "/ip4/9.9.9.9/tcp/3"]
        );
        assert_eq!(from_env.autoconf_appkey.as_deref(), Some("yagna-key"));

        let cli = CliOverrides {
            api_addr: Some("127.0.0.1:3333".parse().unwrap()),
            data_dir: Some("/from/cli".into()),
            ..cli
        };
        let from_cli = DaemonConfig::load(&cli, &env).unwrap();
        assert_eq!(from_cli.api_addr.port(), 3333);
        assert_eq!(from_cli.data_dir, PathBuf::from("/from/cli"));
        assert_eq!(
            from_cli.bootstrap,
            vec!["/ip4/5.6.7.8/tcp/2", "/ip4/9.9.9.9/tcp/3"]
        );
    }

    #[test]
    fn net_settings_come_from_env_and_cli() {
        let env = fake_env(&[
            (env_names::NET_CALL_TIMEOUT_MS, "1500"),
            (env_names::RELAY_SERVER, "true"),
            (env_names::RELAYS, "/ip4/10.0.0.1/tcp/1/p2p/x"),
        ]);
        let config = DaemonConfig::load(&CliOverrides::default(), &env).unwrap();
        assert_eq!(config.net_call_timeout_ms, 1500);
        assert!(config.relay_server);
        assert_eq!(config.relays, vec!["/ip4/10.0.0.1/tcp/1/p2p/x"]);
        let cli = CliOverrides {
            external_addrs: vec!["/ip4/1.1.1.1/tcp/2".into()],
            ..Default::default()
        };
        let config = DaemonConfig::load(&cli, &env).unwrap();
        assert_eq!(config.external_addrs, vec!["/ip4/1.1.1.1/tcp/2"]);
    }

    #[test]
    fn golem_autoconf_wins_over_yagna_name() {
        let env = fake_env(&[
            (env_names::AUTOCONF_APPKEY, "ours"),
            (env_names::YAGNA_AUTOCONF_APPKEY, "theirs"),
        ]);
        let config = DaemonConfig::load(&CliOverrides::default(), env).unwrap();
        assert_eq!(config.autoconf_appkey.as_deref(), Some("ours"));
    }

    #[test]
    fn bad_values_name_the_variable() {
        let error = DaemonConfig::load(
            &CliOverrides::default(),
            fake_env(&[(env_names::API_ADDR, "nope")]),
        )
        .unwrap_err();
        assert!(error.to_string().contains("GOLEM_API_ADDR"), "{error}");
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("bad.toml");
        std::fs::write(&file, "no-such-key = 1\n").unwrap();
        let cli = CliOverrides {
            config_file: Some(file),
            ..Default::default()
        };
        let error = DaemonConfig::load(&cli, fake_env(&[])).unwrap_err();
        assert!(error.to_string().contains("no-such-key"), "{error}");
    }

    #[test]
    fn the_activity_cap_comes_from_file_env_and_cli() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("daemon.toml");
        std::fs::write(&file, "[activity]\nmax-per-agreement = 5\n").unwrap();
        let cli = CliOverrides {
            config_file: Some(file),
            ..Default::default()
        };
        let from_file = DaemonConfig::load(&cli, fake_env(&[])).unwrap();
        assert_eq!(from_file.activity.max_per_agreement, 5);
        let env = fake_env(&[(env_names::ACTIVITY_MAX_PER_AGREEMENT, "7")]);
        assert_eq!(
            DaemonConfig::load(&cli, &env)
                .unwrap()
                .activity
                .max_per_agreement,
            7
        );
        let cli = CliOverrides {
            activity_max_per_agreement: Some(9),
            ..cli
        };
        assert_eq!(
            DaemonConfig::load(&cli, &env)
                .unwrap()
                .activity
                .max_per_agreement,
            9
        );
        assert_eq!(
            DaemonConfig::load(&CliOverrides::default(), fake_env(&[]))
                .unwrap()
                .activity
                .max_per_agreement,
            100
        );
    }
}
