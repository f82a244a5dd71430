//! Configuration of the agent, layered defaults → `<data-dir>/provider.toml` →
//! environment → command-line flags. This is the only module that reads the
//! environment; every variable name is a constant in [`env_names`].

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::machine::Machine;

/// Every environment variable the agent reads.
pub mod env_names {
    /// App-key of the daemon's REST API (the original's name).
    pub const APP_KEY: &str = "YAGNA_APPKEY";
    /// Base URL of the daemon's REST API (the original's name).
    pub const API_URL: &str = "YAGNA_API_URL";
    /// The agent's own data dir (config, presets, state, work dirs).
    pub const DATA_DIR: &str = "GOLEM_PROVIDER_DATA_DIR";
    /// The daemon's bus socket handed to exe units.
    pub const BUS_SOCKET: &str = "GOLEM_BUS_SOCKET";
    /// The daemon's data dir (its `bus.sock` is used when no socket is given).
    pub const DAEMON_DATA_DIR: &str = "GOLEM_DATA_DIR";
    /// Subnet of the offers.
    pub const SUBNET: &str = "GOLEM_PROVIDER_SUBNET";
    /// Comma-separated runtime or binary names of the exe units to offer.
    pub const EXE_UNITS: &str = "GOLEM_PROVIDER_EXE_UNITS";
    /// `golem.node.id.name` of the offers.
    pub const NODE_NAME: &str = "GOLEM_PROVIDER_NODE_NAME";
    /// Where exe-unit binaries are looked for after the agent's own directory.
    pub const PATH: &str = "PATH";
    /// Log filter (`info`, `golem_provider=debug`, ...).
    pub const RUST_LOG: &str = "RUST_LOG";
    /// `1` lets `docker:<ref>` task packages run on the VM exe unit; the agent
    /// also sets it, resolved, in each exe unit's environment.
    pub const ALLOW_DOCKER_IMAGES: &str = "GOLEM_ALLOW_DOCKER_IMAGES";
    /// `true`/`false`: let exe units' transfers and package downloads reach
    /// loopback, private and link-local addresses.
    pub const ALLOW_PRIVATE_TRANSFERS: &str = "GOLEM_ALLOW_PRIVATE_TRANSFERS";
}

pub const DEFAULT_API_URL: &str = "http://127.0.0.1:7465";
pub const CONFIG_FILE: &str = "provider.toml";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid {path}: {message} (fix the file or remove it to use the defaults)")]
    Parse { path: PathBuf, message: String },
    #[error(
        "no app-key: pass --app-key or set {} (create one with `golem-daemon app-key create`)",
        env_names::APP_KEY
    )]
    NoAppKey,
    #[error("invalid setting {name}: {message}")]
    Invalid { name: &'static str, message: String },
}

/// `<data-dir>/provider.toml`; every key is optional.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct FileConfig {
    pub node_name: Option<String>,
    pub subnet: Option<String>,
    /// Runtime (`wasmtime`, `vm`) or binary names of the exe units to offer.
    pub exe_units: Option<Vec<String>>,
    pub cores: Option<u32>,
    pub threads: Option<u32>,
    pub mem_gib: Option<f64>,
    pub storage_gib: Option<f64>,
    /// Payment platforms accepted, e.g. `["dummy-local-tglm", "erc20-holesky-tglm"]`.
    pub platforms: Option<Vec<String>>,
    pub max_agreements: Option<u32>,
    pub min_expiration_sec: Option<u64>,
    pub max_expiration_sec: Option<u64>,
    pub debit_note_interval_sec: Option<u64>,
    pub min_debit_note_interval_sec: Option<u64>,
    pub max_debit_note_interval_sec: Option<u64>,
    pub payment_timeout_sec: Option<u64>,
    pub min_payment_timeout_sec: Option<u64>,
    pub max_payment_timeout_sec: Option<u64>,
    pub debit_note_accept_timeout_sec: Option<u64>,
    pub min_debit_note_accept_timeout_sec: Option<u64>,
    pub max_debit_note_accept_timeout_sec: Option<u64>,
    /// Keep activities' work dirs after they end (default: removed).
    pub keep_work_dirs: Option<bool>,
    /// An exe unit that has not reported Initialized within this is killed.
    pub exe_unit_start_timeout_sec: Option<u64>,
    /// Let `docker:<ref>` task packages run any image the engine holds or
    /// pulls (default: refused).
    pub allow_docker_images: Option<bool>,
    /// Let exe units' transfers and package downloads reach non-public
    /// addresses (loopback, private, link-local, metadata); default false.
    pub allow_private_transfers: Option<bool>,
}

/// Flags of `golem-provider run` that override the file and the environment.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub node_name: Option<String>,
    pub subnet: Option<String>,
    pub exe_units: Option<Vec<String>>,
    pub cores: Option<u32>,
    pub threads: Option<u32>,
    pub mem_gib: Option<f64>,
    pub storage_gib: Option<f64>,
    pub platforms: Option<Vec<String>>,
    pub max_agreements: Option<u32>,
    pub bus_socket: Option<PathBuf>,
    pub allow_docker_images: Option<bool>,
    /// `--allow-private-transfers` (only ever turns it on).
    pub allow_private_transfers: Option<bool>,
}

/// Connection settings shared by every subcommand.
#[derive(Debug, Clone)]
pub struct Connection {
    pub api_url: String,
    pub app_key: Option<String>,
    pub data_dir: PathBuf,
}

impl Connection {
    /// Flags win over the environment, which wins over the defaults.
    pub fn resolve(
        api_url: Option<String>,
        app_key: Option<String>,
        data_dir: Option<PathBuf>,
    ) -> Connection {
        let env = |name: &str| std::env::var(name).ok().filter(|value| !value.is_empty());
        Connection {
            api_url: api_url
                .or_else(|| env(env_names::API_URL))
                .unwrap_or_else(|| DEFAULT_API_URL.to_string()),
            app_key: app_key.or_else(|| env(env_names::APP_KEY)),
            data_dir: data_dir
                .or_else(|| env(env_names::DATA_DIR).map(PathBuf::from))
                .unwrap_or_else(default_data_dir),
        }
    }

    pub fn app_key(&self) -> Result<&str, ConfigError> {
        self.app_key.as_deref().ok_or(ConfigError::NoAppKey)
    }
}

pub fn default_data_dir() -> PathBuf {
    dirs::data_local_dir()
        .unwrap_or_else(|| PathBuf::from("."))
        .join("golem-provider")
}

/// The resolved configuration of `golem-provider run`.
#[derive(Debug, Clone)]
pub struct ProviderConfig {
    pub data_dir: PathBuf,
    /// The daemon's bus socket when chosen by flag or env; `None` asks the daemon.
    pub bus_socket: Option<PathBuf>,
    pub node_name: String,
    pub subnet: String,
    pub exe_units: Option<Vec<String>>,
    /// Directories searched for exe-unit binaries, in order.
    pub search_path: Vec<PathBuf>,
    pub cores: u32,
    pub threads: u32,
    pub mem_gib: f64,
    pub storage_gib: f64,
    pub platforms: Vec<String>,
    pub max_agreements: u32,
    pub min_expiration_sec: u64,
    pub max_expiration_sec: u64,
    pub debit_note_interval_sec: u64,
    pub min_debit_note_interval_sec: u64,
    pub max_debit_note_interval_sec: u64,
    pub payment_timeout_sec: u64,
    pub min_payment_timeout_sec: u64,
    pub max_payment_timeout_sec: u64,
    pub accept_timeout_sec: u64,
    pub min_accept_timeout_sec: u64,
    pub max_accept_timeout_sec: u64,
    pub keep_work_dirs: bool,
    pub exe_unit_start_timeout_sec: u64,
    /// Whether the VM exe unit runs `docker:<ref>` packages (images by
    /// reference, which could be any image the provider's engine holds).
    pub allow_docker_images: bool,
    /// Requestors' transfers and package downloads run on this host's
    /// network: only when this is on may they reach loopback, private
    /// (RFC 1918, fc00::/7, CGNAT) or link-local (cloud metadata) addresses.
    pub allow_private_transfers: bool,
}

/// Test platforms offered when none are configured; mainnet ones only when configured.
pub const DEFAULT_PLATFORMS: [&str; 2] = ["dummy-local-tglm", "erc20-holesky-tglm"];

/// Read `<data-dir>/provider.toml` (a missing file is an empty one).
pub fn read_file(data_dir: &Path) -> Result<FileConfig, ConfigError> {
    let path = data_dir.join(CONFIG_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            return Ok(FileConfig::default())
        }
        Err(source) => return Err(ConfigError::Read { path, source }),
    };
    toml::from_str(&text).map_err(|error| ConfigError::Parse {
        path,
        message: error.to_string(),
    })
}

fn split_list(text: &str) -> Vec<String> {
    text.split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(String::from)
        .collect()
}

impl ProviderConfig {
    /// Layer the file, the environment and `overrides` over the defaults, capping
    /// resources by `machine`.
    pub fn resolve(
        data_dir: &Path,
        file: FileConfig,
        overrides: Overrides,
        machine: &Machine,
    ) -> Result<ProviderConfig, ConfigError> {
        let env = |name: &str| std::env::var(name).ok().filter(|value| !value.is_empty());
        // Only an explicit choice here; without one the agent asks its daemon
        // where the socket is (`agent::locate_bus_socket`).
        let bus_socket = overrides
            .bus_socket
            .or_else(|| env(env_names::BUS_SOCKET).map(PathBuf::from))
            .or_else(|| {
                env(env_names::DAEMON_DATA_DIR).map(|dir| PathBuf::from(dir).join("bus.sock"))
            });
        let node_name = overrides
            .node_name
            .or_else(|| env(env_names::NODE_NAME))
            .or(file.node_name)
            .unwrap_or_else(|| machine.hostname.clone());
        let subnet = overrides
            .subnet
            .or_else(|| env(env_names::SUBNET))
            .or(file.subnet)
            .unwrap_or_else(|| "public".to_string());
        let exe_units = overrides
            .exe_units
            .or_else(|| env(env_names::EXE_UNITS).map(|text| split_list(&text)))
            .or(file.exe_units);
        let mut search_path = Vec::new();
        if let Some(dir) = std::env::current_exe()
            .ok()
            .and_then(|exe| exe.parent().map(Path::to_path_buf))
        {
            search_path.push(dir);
        }
        if let Some(path) = std::env::var_os(env_names::PATH) {
            search_path.extend(std::env::split_paths(&path));
        }
        let cores = overrides
            .cores
            .or(file.cores)
            .unwrap_or(machine.cores)
            .clamp(1, machine.cores.max(1));
        let threads = overrides
            .threads
            .or(file.threads)
            .unwrap_or(machine.threads)
            .clamp(1, machine.threads.max(1));
        let mem_gib = round2(
            overrides
                .mem_gib
                .or(file.mem_gib)
                .unwrap_or(machine.mem_gib * 0.75)
                .min(machine.mem_gib),
        );
        let storage_gib = round2(
            overrides
                .storage_gib
                .or(file.storage_gib)
                .unwrap_or(machine.storage_gib * 0.75)
                .min(machine.storage_gib),
        );
        if mem_gib <= 0.0 || !mem_gib.is_finite() {
            return Err(ConfigError::Invalid {
                name: "mem-gib",
                message: format!("{mem_gib} GiB: offer a positive amount of memory"),
            });
        }
        let allow_docker_images = match overrides.allow_docker_images {
            Some(allowed) => allowed,
            None => match env(env_names::ALLOW_DOCKER_IMAGES) {
                Some(value) => parse_switch(&value).ok_or_else(|| ConfigError::Invalid {
                    name: "allow-docker-images",
                    message: format!(
                        "{}={value:?}: use 1 or 0, true or false",
                        env_names::ALLOW_DOCKER_IMAGES
                    ),
                })?,
                None => file.allow_docker_images.unwrap_or(false),
            },
        };
        let platforms = overrides
            .platforms
            .or(file.platforms)
            .unwrap_or_else(|| DEFAULT_PLATFORMS.iter().map(|p| p.to_string()).collect());
        if platforms.is_empty() {
            return Err(ConfigError::Invalid {
                name: "platforms",
                message: "empty: accept at least one payment platform".into(),
            });
        }
        let allow_private_transfers = match overrides.allow_private_transfers {
            Some(allow) => allow,
            None => match env(env_names::ALLOW_PRIVATE_TRANSFERS) {
                Some(text) => parse_switch(&text).ok_or_else(|| ConfigError::Invalid {
                    name: env_names::ALLOW_PRIVATE_TRANSFERS,
                    message: format!("{text:?}: use true or false"),
                })?,
                None => file.allow_private_transfers.unwrap_or(false),
            },
        };
        let config = ProviderConfig {
            allow_private_transfers,
            data_dir: data_dir.to_path_buf(),
            bus_socket,
            node_name,
            subnet,
            exe_units,
            search_path,
            cores,
            threads,
            mem_gib,
            storage_gib,
            platforms,
            max_agreements: overrides
                .max_agreements
                .or(file.max_agreements)
                .unwrap_or(1),
            min_expiration_sec: file.min_expiration_sec.unwrap_or(60),
            max_expiration_sec: file.max_expiration_sec.unwrap_or(30 * 24 * 3600),
            debit_note_interval_sec: file.debit_note_interval_sec.unwrap_or(120),
            min_debit_note_interval_sec: file.min_debit_note_interval_sec.unwrap_or(1),
            max_debit_note_interval_sec: file.max_debit_note_interval_sec.unwrap_or(3600),
            payment_timeout_sec: file.payment_timeout_sec.unwrap_or(24 * 3600),
            min_payment_timeout_sec: file.min_payment_timeout_sec.unwrap_or(1),
            max_payment_timeout_sec: file.max_payment_timeout_sec.unwrap_or(7 * 24 * 3600),
            accept_timeout_sec: file.debit_note_accept_timeout_sec.unwrap_or(240),
            min_accept_timeout_sec: file.min_debit_note_accept_timeout_sec.unwrap_or(1),
            max_accept_timeout_sec: file.max_debit_note_accept_timeout_sec.unwrap_or(24 * 3600),
            keep_work_dirs: file.keep_work_dirs.unwrap_or(false),
            exe_unit_start_timeout_sec: file.exe_unit_start_timeout_sec.unwrap_or(30),
            allow_docker_images,
        };
        if config.max_agreements == 0 {
            return Err(ConfigError::Invalid {
                name: "max-agreements",
                message: "0: allow at least one agreement".into(),
            });
        }
        if config.min_expiration_sec > config.max_expiration_sec {
            return Err(ConfigError::Invalid {
                name: "min-expiration-sec",
                message: "greater than max-expiration-sec".into(),
            });
        }
        Ok(config)
    }

    /// Where activities' work dirs live.
    pub fn work_root(&self) -> PathBuf {
        self.data_dir.join("work")
    }

    /// The package cache shared by all activities.
    pub fn cache_dir(&self) -> PathBuf {
        self.data_dir.join("cache")
    }
}

/// `1`/`true`/`yes`/`on` or `0`/`false`/`no`/`off`, any case.
fn parse_switch(value: &str) -> Option<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Some(true),
        "0" | "false" | "no" | "off" => Some(false),
        _ => None,
    }
}

fn round2(value: f64) -> f64 {
    (value * 100.0).floor() / 100.0
}

/// The log filter from `RUST_LOG`, if set.
pub fn log_filter_from_env() -> Option<String> {
    std::env::var(env_names::RUST_LOG)
        .ok()
        .filter(|value| !value.is_empty())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn machine() -> Machine {
        Machine {
            hostname: "box".into(),
            cores: 2,
            threads: 4,
            mem_gib: 8.0,
            storage_gib: 100.0,
        }
    }

    #[test]
    fn defaults_are_derived_from_the_machine_and_capped() {
        let file: FileConfig = toml::from_str("threads = 64\nmem-gib = 2.5\n").unwrap();
        let config =
            ProviderConfig::resolve(Path::new("/tmp/x"), file, Overrides::default(), &machine())
                .unwrap();
        assert_eq!(config.threads, 4, "capped by the machine");
        assert_eq!(config.cores, 2);
        assert_eq!(config.mem_gib, 2.5);
        assert_eq!(config.storage_gib, 75.0);
        assert_eq!(config.platforms, DEFAULT_PLATFORMS);
        assert!(!config.allow_private_transfers, "off unless asked for");
        let file: FileConfig = toml::from_str("allow-private-transfers = true\n").unwrap();
        let config =
            ProviderConfig::resolve(Path::new("/tmp/x"), file, Overrides::default(), &machine())
                .unwrap();
        assert!(config.allow_private_transfers);
        assert_eq!(parse_switch("TRUE"), Some(true));
        assert_eq!(parse_switch("nope"), None);
    }

    #[test]
    fn flags_win_over_the_file_and_bad_values_are_refused() {
        let file: FileConfig = toml::from_str("subnet = \"from-file\"\n").unwrap();
        let overrides = Overrides {
            subnet: Some("from-flag".into()),
            ..Overrides::default()
        };
        let config =
            ProviderConfig::resolve(Path::new("/tmp/x"), file, overrides, &machine()).unwrap();
        assert_eq!(config.subnet, "from-flag");
        let error = toml::from_str::<FileConfig>("tread = 3\n").unwrap_err();
        assert!(error.to_string().contains("tread"), "{error}");
        let overrides = Overrides {
            max_agreements: Some(0),
            ..Overrides::default()
        };
        let error = ProviderConfig::resolve(
            Path::new("/tmp/x"),
            FileConfig::default(),
            overrides,
            &machine(),
        )
        .unwrap_err();
        assert!(error.to_string().contains("max-agreements"), "{error}");
    }

    #[test]
    fn docker_images_are_off_unless_the_file_or_a_flag_allows_them() {
        let resolve = |file: &str, flag: Option<bool>| {
            let file: FileConfig = toml::from_str(file).unwrap();
            let overrides = Overrides {
                allow_docker_images: flag,
                ..Overrides::default()
            };
            ProviderConfig::resolve(Path::new("/tmp/x"), file, overrides, &machine())
                .unwrap()
                .allow_docker_images
        };
        assert!(!resolve("", None));
        assert!(resolve("allow-docker-images = true\n", None));
        assert!(resolve("", Some(true)));
        assert!(!resolve("allow-docker-images = true\n", Some(false)));
        assert_eq!(parse_switch("YES"), Some(true));
        assert_eq!(parse_switch("nope"), None);
    }
}
