//! Configuration of the agent, layered by `golem-settings`: defaults →
//! `<data-dir>/provider.toml` → environment → command-line flags. Two layered
//! structs: [`Connection`] (API, app-key, data dir: flags and environment, no
//! file, since the data dir says where the file is) and [`ProviderSettings`]
//! (the file's keys, the bus socket). A setting's environment name is
//! `GOLEM_PROVIDER_` + its key in SCREAMING_SNAKE, except the older names in
//! [`env_names`]. This is the only module that reads the environment.

use std::path::{Path, PathBuf};

use golem_settings::Layers;
use serde::{Deserialize, Serialize};

use crate::machine::Machine;

/// Environment names that are not derived from a key (older than the rule,
/// or shared with other programs), and the prefix of those that are.
pub mod env_names {
    /// Prefix of derived names: `subnet` is `GOLEM_PROVIDER_SUBNET`.
    pub const PREFIX: &str = "GOLEM_PROVIDER";
    /// `app-key`: app-key of the daemon's REST API (the original's name).
    pub const APP_KEY: &str = "YAGNA_APPKEY";
    /// `api-url`: base URL of the daemon's REST API (the original's name).
    pub const API_URL: &str = "YAGNA_API_URL";
    /// `bus-socket`: the daemon's bus socket handed to exe units.
    pub const BUS_SOCKET: &str = "GOLEM_BUS_SOCKET";
    /// `daemon-data-dir`: the daemon's data dir (its `bus.sock` is used when
    /// no socket is given); the daemon's own name for it.
    pub const DAEMON_DATA_DIR: &str = "GOLEM_DATA_DIR";
    /// Where exe-unit binaries are looked for after the agent's own directory.
    pub const PATH: &str = "PATH";
    /// Log filter (`info`, `golem_provider=debug`, ...).
    pub const RUST_LOG: &str = "RUST_LOG";
    /// `allow-docker-images`: `1` lets `docker:<ref>` task packages run on the
    /// VM exe unit; the agent also sets it, resolved, in each exe unit's
    /// environment (which reads this name).
    pub const ALLOW_DOCKER_IMAGES: &str = "GOLEM_ALLOW_DOCKER_IMAGES";
    /// `allow-private-transfers`: `true`/`false`, let exe units' transfers and
    /// package downloads reach loopback, private and link-local addresses.
    pub const ALLOW_PRIVATE_TRANSFERS: &str = "GOLEM_ALLOW_PRIVATE_TRANSFERS";
    /// `vm-sandbox`: `gvisor` or `runc`, where the VM exe unit runs
    /// containers; like `allow-docker-images`, the agent sets it in the exe
    /// unit's environment (which reads this name).
    pub const VM_SANDBOX: &str = "GOLEM_VM_SANDBOX";
    /// How the VM exe unit reads `outbound-hosts` (the agent sets it,
    /// resolved, in each exe unit's environment).
    pub const EXE_UNIT_OUTBOUND_HOSTS: &str = "GOLEM_OUTBOUND_HOSTS";
}

/// The values of `vm-sandbox`.
pub const VM_SANDBOXES: [&str; 2] = ["gvisor", "runc"];

pub const DEFAULT_API_URL: &str = "http://127.0.0.1:7465";
pub const CONFIG_FILE: &str = "provider.toml";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A value that does not parse, or a `provider.toml` that cannot be read.
    #[error(transparent)]
    Layers(#[from] golem_settings::SettingsError),
    #[error(
        "no app-key: pass --app-key or set {} (create one with `golem-daemon app-key create`)",
        env_names::APP_KEY
    )]
    NoAppKey,
    #[error("invalid setting {name}: {message}")]
    Invalid { name: &'static str, message: String },
}

/// The layered settings of `golem-provider run`: the keys of
/// `<data-dir>/provider.toml` (every one optional), the same keys from the
/// environment and the flags of `run`. Unset ones take defaults derived from
/// the machine in [`ProviderConfig::resolve`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct ProviderSettings {
    pub node_name: Option<String>,
    pub subnet: Option<String>,
    /// Runtime (`wasmtime`, `vm`) or binary names of the exe units to offer.
    #[serde(deserialize_with = "golem_settings::de::optional_comma_list")]
    pub exe_units: Option<Vec<String>>,
    pub cores: Option<u32>,
    pub threads: Option<u32>,
    pub mem_gib: Option<f64>,
    pub storage_gib: Option<f64>,
    /// Payment platforms accepted, e.g. `["dummy-local-tglm", "erc20-holesky-tglm"]`.
    #[serde(deserialize_with = "golem_settings::de::optional_comma_list")]
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
    /// An agreement whose requestor stops answering is terminated after this:
    /// no activity created this long after the approval, or a debit note
    /// not delivered to the requestor's daemon this long after it was sent.
    pub requestor_timeout_sec: Option<u64>,
    /// Let `docker:<ref>` task packages run any image the engine holds or
    /// pulls (default: refused).
    pub allow_docker_images: Option<bool>,
    /// Let exe units' transfers and package downloads reach non-public
    /// addresses (loopback, private, link-local, metadata); default false.
    pub allow_private_transfers: Option<bool>,
    /// Where the VM exe unit runs containers: `gvisor` (images run as on
    /// the original, inside gVisor's kernel) or `runc` (the host's kernel,
    /// so images run hardened); unset, gVisor when the engine has it.
    pub vm_sandbox: Option<String>,
    /// Serve the dashboard on this address (`true`: the default one); unset,
    /// no dashboard.
    pub dashboard: Option<String>,
    /// Let the dashboard bind a non-loopback address.
    pub dashboard_allow_remote: Option<bool>,
    /// `name=IPv4` pairs: where payload manifests' hosts resolve before the
    /// host's resolver is asked (e.g. a test network's names).
    #[serde(deserialize_with = "golem_settings::de::optional_comma_list")]
    pub outbound_hosts: Option<Vec<String>>,
    /// The daemon's bus socket handed to exe units; unset, the agent asks its
    /// daemon (`agent::locate_bus_socket`).
    pub bus_socket: Option<PathBuf>,
    /// The daemon's data dir, whose `bus.sock` is used when `bus-socket` is
    /// not set.
    pub daemon_data_dir: Option<PathBuf>,
}

impl ProviderSettings {
    /// Layer `<data-dir>/provider.toml` (a missing file is an empty one), the
    /// environment read through `env` and `flags` (`run`'s, serialized).
    pub fn load(
        data_dir: &Path,
        flags: &impl Serialize,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<ProviderSettings, ConfigError> {
        Ok(Self::layers(env)
            .optional_file(&data_dir.join(CONFIG_FILE))
            .flags(flags)
            .load()?)
    }

    /// The file and the environment, without flags (what the management
    /// commands see).
    pub fn load_without_flags(
        data_dir: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<ProviderSettings, ConfigError> {
        #[derive(Serialize)]
        struct NoFlags {}
        Self::load(data_dir, &NoFlags {}, env)
    }

    /// `path` alone, as a provider.toml (no environment, no flags): to
    /// check a file before it replaces the real one.
    pub fn load_file(path: &Path) -> Result<ProviderSettings, ConfigError> {
        Ok(Self::layers(&|_| None).optional_file(path).load()?)
    }

    fn layers(env: &dyn Fn(&str) -> Option<String>) -> Layers<'_> {
        Layers::new(env_names::PREFIX, env)
            .env_names("allow-docker-images", [env_names::ALLOW_DOCKER_IMAGES])
            .env_names(
                "allow-private-transfers",
                [env_names::ALLOW_PRIVATE_TRANSFERS],
            )
            .env_names("vm-sandbox", [env_names::VM_SANDBOX])
            .env_names("bus-socket", [env_names::BUS_SOCKET])
            .env_names("daemon-data-dir", [env_names::DAEMON_DATA_DIR])
    }

    /// Every environment variable these settings answer to, with its key.
    pub fn env_table() -> Result<Vec<golem_settings::EnvName>, ConfigError> {
        Ok(Self::layers(&|_| None).env_table::<ProviderSettings>()?)
    }
}

/// Connection settings shared by every subcommand: flags, then the
/// environment, then the defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct Connection {
    pub api_url: String,
    pub app_key: Option<String>,
    /// The agent's own data dir (config, presets, state, work dirs).
    pub data_dir: PathBuf,
}

impl Default for Connection {
    fn default() -> Self {
        Connection {
            api_url: DEFAULT_API_URL.to_string(),
            app_key: None,
            data_dir: default_data_dir(),
        }
    }
}

impl Connection {
    /// Layer the environment read through `env` and `flags` (the global ones, serialized).
    pub fn load(
        flags: &impl Serialize,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Connection, ConfigError> {
        Ok(Self::layers(env).flags(flags).load()?)
    }

    fn layers(env: &dyn Fn(&str) -> Option<String>) -> Layers<'_> {
        Layers::new(env_names::PREFIX, env)
            .env_names("api-url", [env_names::API_URL])
            .env_names("app-key", [env_names::APP_KEY])
    }

    /// Every environment variable these settings answer to, with its key.
    pub fn env_table() -> Result<Vec<golem_settings::EnvName>, ConfigError> {
        Ok(Self::layers(&|_| None).env_table::<Connection>()?)
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
    /// A cap on simultaneous agreements; `None` (the default) lets the
    /// demands' claims on threads and memory decide (`capacity.rs`).
    pub max_agreements: Option<u32>,
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
    /// See [`ProviderSettings::requestor_timeout_sec`].
    pub requestor_timeout_sec: u64,
    /// Whether the VM exe unit runs `docker:<ref>` packages (images by
    /// reference, which could be any image the provider's engine holds).
    pub allow_docker_images: bool,
    /// Requestors' transfers and package downloads run on this host's
    /// network: only when this is on may they reach loopback, private
    /// (RFC 1918, fc00::/7, CGNAT) or link-local (cloud metadata) addresses.
    pub allow_private_transfers: bool,
    /// `gvisor` or `runc` when the provider chose (one of [`VM_SANDBOXES`]);
    /// `None`: the VM exe unit's default (gVisor when the engine has it).
    pub vm_sandbox: Option<String>,
    /// The dashboard's address, when it is served.
    pub dashboard: Option<crate::dashboard::DashboardConfig>,
    /// `name=IPv4` pairs for manifest hosts, checked (see `outbound-hosts`).
    pub outbound_hosts: Vec<String>,
}

/// Test platforms offered when none are configured; mainnet ones only when configured.
pub const DEFAULT_PLATFORMS: [&str; 2] = ["dummy-local-tglm", "erc20-holesky-tglm"];

impl ProviderConfig {
    /// Fill what `settings` leaves unset with defaults, capping resources by
    /// `machine`, and check the values.
    pub fn resolve(
        data_dir: &Path,
        settings: ProviderSettings,
        machine: &Machine,
    ) -> Result<ProviderConfig, ConfigError> {
        // Only an explicit choice here; without one the agent asks its daemon
        // where the socket is (`agent::locate_bus_socket`).
        let bus_socket = settings.bus_socket.clone().or_else(|| {
            let daemon_data_dir = settings.daemon_data_dir.as_ref()?;
            Some(daemon_data_dir.join("bus.sock"))
        });
        let node_name = settings
            .node_name
            .clone()
            .unwrap_or_else(|| machine.hostname.clone());
        let subnet = settings
            .subnet
            .clone()
            .unwrap_or_else(|| "public".to_string());
        let exe_units = settings.exe_units.clone();
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
        let cores = settings
            .cores
            .unwrap_or(machine.cores)
            .clamp(1, machine.cores.max(1));
        let threads = settings
            .threads
            .unwrap_or(machine.threads)
            .clamp(1, machine.threads.max(1));
        let mem_gib = round2(
            settings
                .mem_gib
                .unwrap_or(machine.mem_gib * 0.75)
                .min(machine.mem_gib),
        );
        let storage_gib = round2(
            settings
                .storage_gib
                .unwrap_or(machine.storage_gib * 0.75)
                .min(machine.storage_gib),
        );
        if mem_gib <= 0.0 || !mem_gib.is_finite() {
            return Err(ConfigError::Invalid {
                name: "mem-gib",
                message: format!("{mem_gib} GiB: offer a positive amount of memory"),
            });
        }
        let allow_docker_images = settings.allow_docker_images.unwrap_or(false);
        let platforms = settings
            .platforms
            .clone()
            .unwrap_or_else(|| DEFAULT_PLATFORMS.iter().map(|p| p.to_string()).collect());
        if platforms.is_empty() {
            return Err(ConfigError::Invalid {
                name: "platforms",
                message: "empty: accept at least one payment platform".into(),
            });
        }
        let allow_private_transfers = settings.allow_private_transfers.unwrap_or(false);
        let vm_sandbox = match settings.vm_sandbox.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(value) => {
                let value = value.to_ascii_lowercase();
                if !VM_SANDBOXES.contains(&value.as_str()) {
                    return Err(ConfigError::Invalid {
                        name: "vm-sandbox",
                        message: format!("{value:?}: use gvisor or runc"),
                    });
                }
                Some(value)
            }
        };
        let dashboard = crate::dashboard::DashboardConfig::resolve(
            settings.dashboard.as_deref(),
            settings.dashboard_allow_remote.unwrap_or(false),
        )
        .map_err(|message| ConfigError::Invalid {
            name: "dashboard",
            message,
        })?;
        let outbound_hosts: Vec<String> = settings
            .outbound_hosts
            .clone()
            .unwrap_or_default()
            .into_iter()
            .map(|pair| pair.trim().to_string())
            .filter(|pair| !pair.is_empty())
            .collect();
        for pair in &outbound_hosts {
            let fine = pair.split_once('=').is_some_and(|(name, ip)| {
                !name.is_empty()
                    && !name.contains(char::is_whitespace)
                    && ip.parse::<std::net::Ipv4Addr>().is_ok()
            });
            if !fine {
                return Err(ConfigError::Invalid {
                    name: "outbound-hosts",
                    message: format!(
                        "{pair:?}: give name=IPv4 pairs, e.g. api.example.test=10.0.0.2"
                    ),
                });
            }
        }
        let config = ProviderConfig {
            dashboard,
            outbound_hosts,
            vm_sandbox,
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
            max_agreements: settings.max_agreements,
            min_expiration_sec: settings.min_expiration_sec.unwrap_or(60),
            max_expiration_sec: settings.max_expiration_sec.unwrap_or(30 * 24 * 3600),
            debit_note_interval_sec: settings.debit_note_interval_sec.unwrap_or(120),
            min_debit_note_interval_sec: settings.min_debit_note_interval_sec.unwrap_or(1),
            max_debit_note_interval_sec: settings.max_debit_note_interval_sec.unwrap_or(3600),
            payment_timeout_sec: settings.payment_timeout_sec.unwrap_or(24 * 3600),
            min_payment_timeout_sec: settings.min_payment_timeout_sec.unwrap_or(1),
            max_payment_timeout_sec: settings.max_payment_timeout_sec.unwrap_or(7 * 24 * 3600),
            accept_timeout_sec: settings.debit_note_accept_timeout_sec.unwrap_or(240),
            min_accept_timeout_sec: settings.min_debit_note_accept_timeout_sec.unwrap_or(1),
            max_accept_timeout_sec: settings
                .max_debit_note_accept_timeout_sec
                .unwrap_or(24 * 3600),
            keep_work_dirs: settings.keep_work_dirs.unwrap_or(false),
            exe_unit_start_timeout_sec: settings.exe_unit_start_timeout_sec.unwrap_or(30),
            requestor_timeout_sec: settings.requestor_timeout_sec.unwrap_or(90).max(1),
            allow_docker_images,
        };
        if config.max_agreements == Some(0) {
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
    use crate::cli::{Cli, Command};
    use clap::Parser;

    fn machine() -> Machine {
        Machine {
            hostname: "box".into(),
            cores: 2,
            threads: 4,
            mem_gib: 8.0,
            storage_gib: 100.0,
        }
    }

    use golem_settings::env_of;

    /// `golem-provider [global flags] run [flags]` resolved against a data
    /// dir holding `toml` as provider.toml, with `env` as the environment.
    fn resolve(
        toml: &str,
        env: &[(&str, &str)],
        flags: &[&str],
    ) -> Result<ProviderConfig, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(CONFIG_FILE), toml).unwrap();
        let args = ["golem-provider", "run"].iter().chain(flags);
        let cli = Cli::try_parse_from(args).unwrap();
        let Command::Run(run) = &cli.command else {
            panic!("not run")
        };
        let env = env_of(env);
        let settings = ProviderSettings::load(dir.path(), run, &env)?;
        ProviderConfig::resolve(dir.path(), settings, &machine())
    }

    fn connection(env: &[(&str, &str)], flags: &[&str]) -> Connection {
        let args = ["golem-provider"].iter().chain(flags).chain(&["status"]);
        let cli = Cli::try_parse_from(args).unwrap();
        Connection::load(&cli.connection, &env_of(env)).unwrap()
    }

    /// One setting as issue 18 found it; `""` and `&[]` where it has no such form.
    struct Setting {
        env: &'static str,
        value: &'static str,
        flag: &'static [&'static str],
        toml: &'static str,
        read: fn(&ProviderConfig) -> String,
        expected: &'static str,
    }

    /// The contract: every environment name, flag and provider.toml key of
    /// `golem-provider run`. Add, never rename.
    #[rustfmt::skip]
    fn contract() -> Vec<Setting> {
        vec![
            Setting { env: "GOLEM_PROVIDER_SUBNET", value: "s1", flag: &["--subnet", "s1"], toml: "subnet = \"s1\"", read: |c| c.subnet.clone(), expected: "s1" },
            Setting { env: "GOLEM_PROVIDER_NODE_NAME", value: "n1", flag: &["--node-name", "n1"], toml: "node-name = \"n1\"", read: |c| c.node_name.clone(), expected: "n1" },
            Setting { env: "GOLEM_PROVIDER_EXE_UNITS", value: "wasmtime, vm", flag: &["--exe-units", "wasmtime,vm"], toml: "exe-units = [\"wasmtime\", \"vm\"]", read: |c| format!("{:?}", c.exe_units), expected: "Some([\"wasmtime\", \"vm\"])" },
            Setting { env: "GOLEM_BUS_SOCKET", value: "/s/bus.sock", flag: &["--bus-socket", "/s/bus.sock"], toml: "", read: |c| format!("{:?}", c.bus_socket), expected: "Some(\"/s/bus.sock\")" },
            Setting { env: "GOLEM_DATA_DIR", value: "/daemon", flag: &[], toml: "", read: |c| format!("{:?}", c.bus_socket), expected: "Some(\"/daemon/bus.sock\")" },
            Setting { env: "GOLEM_ALLOW_DOCKER_IMAGES", value: "1", flag: &["--allow-docker-images"], toml: "allow-docker-images = true", read: |c| c.allow_docker_images.to_string(), expected: "true" },
            Setting { env: "GOLEM_ALLOW_PRIVATE_TRANSFERS", value: "true", flag: &["--allow-private-transfers"], toml: "allow-private-transfers = true", read: |c| c.allow_private_transfers.to_string(), expected: "true" },
            Setting { env: "GOLEM_VM_SANDBOX", value: "runc", flag: &["--vm-sandbox", "runc"], toml: "vm-sandbox = \"runc\"", read: |c| format!("{:?}", c.vm_sandbox), expected: "Some(\"runc\")" },
            Setting { env: "GOLEM_PROVIDER_DASHBOARD", value: "127.0.0.1:7999", flag: &["--dashboard", "127.0.0.1:7999"], toml: "dashboard = \"127.0.0.1:7999\"", read: |c| format!("{:?}", c.dashboard.as_ref().map(|d| d.address.to_string())), expected: "Some(\"127.0.0.1:7999\")" },
            Setting { env: "GOLEM_PROVIDER_DASHBOARD", value: "true", flag: &["--dashboard"], toml: "dashboard = true", read: |c| format!("{:?}", c.dashboard.as_ref().map(|d| d.address.to_string())), expected: "Some(\"127.0.0.1:7466\")" },
            Setting { env: "GOLEM_PROVIDER_OUTBOUND_HOSTS", value: "a.test=10.0.0.2", flag: &["--outbound-hosts", "a.test=10.0.0.2"], toml: "outbound-hosts = [\"a.test=10.0.0.2\"]", read: |c| c.outbound_hosts.join(","), expected: "a.test=10.0.0.2" },
            Setting { env: "", value: "", flag: &["--cores", "1"], toml: "cores = 1", read: |c| c.cores.to_string(), expected: "1" },
            Setting { env: "", value: "", flag: &["--threads", "3"], toml: "threads = 3", read: |c| c.threads.to_string(), expected: "3" },
            Setting { env: "", value: "", flag: &["--mem-gib", "2.5"], toml: "mem-gib = 2.5", read: |c| c.mem_gib.to_string(), expected: "2.5" },
            Setting { env: "", value: "", flag: &["--storage-gib", "9"], toml: "storage-gib = 9.0", read: |c| c.storage_gib.to_string(), expected: "9" },
            Setting { env: "", value: "", flag: &["--platforms", "a,b"], toml: "platforms = [\"a\", \"b\"]", read: |c| c.platforms.join(","), expected: "a,b" },
            Setting { env: "", value: "", flag: &["--max-agreements", "4"], toml: "max-agreements = 4", read: |c| format!("{:?}", c.max_agreements), expected: "Some(4)" },
            Setting { env: "", value: "", flag: &[], toml: "min-expiration-sec = 61", read: |c| c.min_expiration_sec.to_string(), expected: "61" },
            Setting { env: "", value: "", flag: &[], toml: "max-expiration-sec = 62", read: |c| c.max_expiration_sec.to_string(), expected: "62" },
            Setting { env: "", value: "", flag: &[], toml: "debit-note-interval-sec = 63", read: |c| c.debit_note_interval_sec.to_string(), expected: "63" },
            Setting { env: "", value: "", flag: &[], toml: "min-debit-note-interval-sec = 64", read: |c| c.min_debit_note_interval_sec.to_string(), expected: "64" },
            Setting { env: "", value: "", flag: &[], toml: "max-debit-note-interval-sec = 65", read: |c| c.max_debit_note_interval_sec.to_string(), expected: "65" },
            Setting { env: "", value: "", flag: &[], toml: "payment-timeout-sec = 66", read: |c| c.payment_timeout_sec.to_string(), expected: "66" },
            Setting { env: "", value: "", flag: &[], toml: "min-payment-timeout-sec = 67", read: |c| c.min_payment_timeout_sec.to_string(), expected: "67" },
            Setting { env: "", value: "", flag: &[], toml: "max-payment-timeout-sec = 68", read: |c| c.max_payment_timeout_sec.to_string(), expected: "68" },
            Setting { env: "", value: "", flag: &[], toml: "debit-note-accept-timeout-sec = 69", read: |c| c.accept_timeout_sec.to_string(), expected: "69" },
            Setting { env: "", value: "", flag: &[], toml: "min-debit-note-accept-timeout-sec = 70", read: |c| c.min_accept_timeout_sec.to_string(), expected: "70" },
            Setting { env: "", value: "", flag: &[], toml: "max-debit-note-accept-timeout-sec = 71", read: |c| c.max_accept_timeout_sec.to_string(), expected: "71" },
            Setting { env: "", value: "", flag: &[], toml: "keep-work-dirs = true", read: |c| c.keep_work_dirs.to_string(), expected: "true" },
            Setting { env: "", value: "", flag: &[], toml: "exe-unit-start-timeout-sec = 72", read: |c| c.exe_unit_start_timeout_sec.to_string(), expected: "72" },
            Setting { env: "", value: "", flag: &[], toml: "requestor-timeout-sec = 73", read: |c| c.requestor_timeout_sec.to_string(), expected: "73" },
        ]
    }

    #[test]
    fn every_env_name_toml_key_and_flag_sets_its_setting() {
        let defaults = resolve("", &[], &[]).unwrap();
        let table = ProviderSettings::env_table().unwrap();
        for setting in contract() {
            let what = format!("{} {:?} {}", setting.env, setting.flag, setting.toml);
            assert_ne!(
                (setting.read)(&defaults),
                setting.expected,
                "{what}: pick a non-default sample"
            );
            if !setting.env.is_empty() {
                let config = resolve("", &[(setting.env, setting.value)], &[]).unwrap();
                assert_eq!(
                    (setting.read)(&config),
                    setting.expected,
                    "env {}",
                    setting.env
                );
                assert!(
                    table.iter().any(|entry| entry.name == setting.env),
                    "{} listed",
                    setting.env
                );
            }
            if !setting.flag.is_empty() {
                let config = resolve("", &[], setting.flag).unwrap();
                assert_eq!(
                    (setting.read)(&config),
                    setting.expected,
                    "flag {:?}",
                    setting.flag
                );
            }
            if !setting.toml.is_empty() {
                let config = resolve(setting.toml, &[], &[]).unwrap();
                assert_eq!(
                    (setting.read)(&config),
                    setting.expected,
                    "provider.toml {}",
                    setting.toml
                );
            }
        }
        // The connection: flags and environment only.
        let from_env = connection(
            &[
                ("YAGNA_APPKEY", "k1"),
                ("YAGNA_API_URL", "http://127.0.0.1:1"),
                ("GOLEM_PROVIDER_DATA_DIR", "/p"),
            ],
            &[],
        );
        assert_eq!(from_env.app_key.as_deref(), Some("k1"));
        assert_eq!(from_env.api_url, "http://127.0.0.1:1");
        assert_eq!(from_env.data_dir, PathBuf::from("/p"));
        let from_flags = connection(
            &[
                ("YAGNA_APPKEY", "k1"),
                ("YAGNA_API_URL", "http://127.0.0.1:1"),
                ("GOLEM_PROVIDER_DATA_DIR", "/p"),
            ],
            &[
                "--app-key",
                "k2",
                "--api-url",
                "http://127.0.0.1:2",
                "--data-dir",
                "/q",
            ],
        );
        assert_eq!(from_flags.app_key.as_deref(), Some("k2"));
        assert_eq!(from_flags.api_url, "http://127.0.0.1:2");
        assert_eq!(from_flags.data_dir, PathBuf::from("/q"));
        let defaults = connection(&[], &[]);
        assert_eq!(defaults.api_url, DEFAULT_API_URL);
        assert!(matches!(defaults.app_key(), Err(ConfigError::NoAppKey)));
        assert!(defaults.data_dir.ends_with("golem-provider"));
        let names: Vec<String> = Connection::env_table()
            .unwrap()
            .into_iter()
            .map(|entry| entry.name)
            .collect();
        for name in ["YAGNA_APPKEY", "YAGNA_API_URL", "GOLEM_PROVIDER_DATA_DIR"] {
            assert!(names.iter().any(|known| known == name), "{name}");
        }
    }

    #[test]
    fn a_remote_dashboard_needs_the_allow_remote_setting_in_any_layer() {
        let remote = |config: ProviderConfig| config.dashboard.map(|d| d.remote);
        let error = resolve("", &[], &["--dashboard", "0.0.0.0:7466"]).unwrap_err();
        assert!(
            error.to_string().contains("--dashboard-allow-remote"),
            "{error}"
        );
        let flags = &["--dashboard", "0.0.0.0:7466", "--dashboard-allow-remote"];
        assert_eq!(remote(resolve("", &[], flags).unwrap()), Some(true));
        let env = [("GOLEM_PROVIDER_DASHBOARD_ALLOW_REMOTE", "true")];
        let from_env = resolve("", &env, &["--dashboard", "0.0.0.0:7466"]).unwrap();
        assert_eq!(remote(from_env), Some(true));
        let toml = "dashboard = \"0.0.0.0:7466\"\ndashboard-allow-remote = true\n";
        assert_eq!(remote(resolve(toml, &[], &[]).unwrap()), Some(true));
        let table = ProviderSettings::env_table().unwrap();
        assert!(table
            .iter()
            .any(|entry| entry.name == "GOLEM_PROVIDER_DASHBOARD_ALLOW_REMOTE"));
    }

    #[test]
    fn defaults_then_file_then_env_then_flags() {
        let toml = "subnet = \"file\"\nnode-name = \"file\"\nallow-docker-images = true\nallow-private-transfers = true\n";
        let env = [
            ("GOLEM_PROVIDER_SUBNET", "env"),
            ("GOLEM_BUS_SOCKET", "/env.sock"),
            ("GOLEM_DATA_DIR", "/daemon"),
        ];
        let config = resolve(
            toml,
            &env,
            &["--subnet", "flag", "--allow-docker-images", "false"],
        )
        .unwrap();
        assert_eq!(config.subnet, "flag");
        assert_eq!(config.node_name, "file");
        assert!(
            !config.allow_docker_images,
            "an explicit false flag wins over the file"
        );
        assert!(
            config.allow_private_transfers,
            "the switch not given leaves the file's value"
        );
        assert_eq!(
            config.bus_socket,
            Some(PathBuf::from("/env.sock")),
            "GOLEM_BUS_SOCKET before GOLEM_DATA_DIR"
        );
        let config = resolve(toml, &env, &[]).unwrap();
        assert_eq!(config.subnet, "env");
        assert!(config.allow_docker_images);
        let config = resolve("", &[], &[]).unwrap();
        assert_eq!(config.subnet, "public");
        assert_eq!(config.node_name, "box");
        assert_eq!(config.bus_socket, None, "asked of the daemon");
        assert!(
            !config.allow_docker_images && !config.allow_private_transfers,
            "off unless asked for"
        );
    }

    #[test]
    fn defaults_are_derived_from_the_machine_and_capped() {
        let config = resolve("threads = 64\nmem-gib = 2.5\n", &[], &[]).unwrap();
        assert_eq!(config.threads, 4, "capped by the machine");
        assert_eq!(config.cores, 2);
        assert_eq!(config.mem_gib, 2.5);
        assert_eq!(config.storage_gib, 75.0);
        assert_eq!(config.platforms, DEFAULT_PLATFORMS);
    }

    #[test]
    fn bad_values_are_refused_with_their_name() {
        let error = resolve("tread = 3\n", &[], &[]).unwrap_err().to_string();
        assert!(
            error.contains("tread") && error.contains(CONFIG_FILE),
            "{error}"
        );
        let error = resolve("", &[], &["--max-agreements", "0"])
            .unwrap_err()
            .to_string();
        assert!(error.contains("max-agreements"), "{error}");
        let error = resolve("", &[], &["--outbound-hosts", "a.test=::1"])
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("outbound-hosts") && error.contains("name=IPv4"),
            "{error}"
        );
        for (name, value) in [
            ("GOLEM_ALLOW_DOCKER_IMAGES", "maybe"),
            ("GOLEM_ALLOW_PRIVATE_TRANSFERS", "nope"),
            ("GOLEM_PROVIDER_CORES", "many"),
        ] {
            let error = resolve("", &[(name, value)], &[]).unwrap_err().to_string();
            assert!(error.contains(name) && error.contains(value), "{error}");
        }
    }
}
