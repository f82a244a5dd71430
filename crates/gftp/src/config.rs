//! Configuration of the `gftp` binary: the command line, and where the
//! daemon's bus socket is, layered by `golem-settings` (defaults →
//! environment → flags; no file). A setting is a field of [`GftpSettings`];
//! its environment name is `GFTP_` + its key in SCREAMING_SNAKE, except the
//! names shared with the original and the daemon in [`env_names`]. This is the
//! only module of the crate that reads the environment.
//!
//! The socket is, first match wins: `--bus-socket`, `--data-dir`/bus.sock,
//! `GSB_URL=unix:<path>` (the original's variable), `GOLEM_BUS_SOCKET`,
//! `GOLEM_DATA_DIR`/bus.sock, then the daemon's default data dir.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use golem_settings::{Layers, SettingsError};
use serde::{Deserialize, Deserializer, Serialize};

use crate::service::TransferConfig;

/// Environment names that are not derived from a key, and the prefix of
/// those that are.
pub mod env_names {
    /// Prefix of derived names: `chunk-size` is `GFTP_CHUNK_SIZE`.
    pub const PREFIX: &str = "GFTP";
    /// `bus-socket`, the original's bus URL; only `unix:<path>` is understood.
    pub const GSB_URL: &str = "GSB_URL";
    /// `bus-socket`, after `GSB_URL`.
    pub const BUS_SOCKET: &str = "GOLEM_BUS_SOCKET";
    /// `data-dir`: the daemon's data dir, as the daemon names it.
    pub const DATA_DIR: &str = "GOLEM_DATA_DIR";
    /// `log-filter` (tracing `EnvFilter` syntax); logs go to stderr.
    pub const LOG: &str = "RUST_LOG";
}

/// The name of the socket file inside a daemon's data dir.
pub const BUS_SOCKET_FILE: &str = "bus.sock";

#[derive(Debug, Parser)]
#[command(
    name = "gftp",
    version,
    about = "Golem file transfer: publish, receive, download and upload files over the Golem network"
)]
pub struct Cli {
    /// The daemon's data dir; its bus socket is `<data-dir>/bus.sock`.
    #[arg(long, global = true, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// The daemon's bus socket (overrides --data-dir).
    #[arg(long, global = true, value_name = "PATH")]
    pub bus_socket: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Speak line-based JSON-RPC 2.0 on stdin/stdout (what yapapi runs).
    Server,
    /// Print the version.
    Version,
    /// Publish files and serve them until interrupted (prints one URL per file).
    Publish {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Open an upload slot, print its URL and wait until an upload completes.
    Receive { output_file: PathBuf },
    /// Download a gftp:// URL into a local file (its sha3 is checked).
    Download { url: String, output_file: PathBuf },
    /// Upload a local file to a gftp:// upload slot.
    Upload { file: PathBuf, url: String },
}

/// The layered settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct GftpSettings {
    /// The daemon's bus socket, a path or `unix:<path>`.
    #[serde(deserialize_with = "socket_of_bus_url")]
    pub bus_socket: Option<PathBuf>,
    /// The daemon's data dir, whose `bus.sock` is used when `bus-socket` is not set.
    pub data_dir: Option<PathBuf>,
    /// Bytes per chunk of downloads and uploads.
    pub chunk_size: u64,
    /// Chunks in flight at once.
    pub in_flight: usize,
    /// Log filter; logs go to stderr.
    pub log_filter: String,
}

impl Default for GftpSettings {
    fn default() -> Self {
        let transfer = TransferConfig::default();
        GftpSettings {
            bus_socket: None,
            data_dir: None,
            chunk_size: transfer.chunk_size,
            in_flight: transfer.in_flight,
            log_filter: "warn".to_string(),
        }
    }
}

/// The flag layer: `--bus-socket`, else `--data-dir`'s socket, so that either
/// flag wins over every variable.
#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
struct Flags {
    bus_socket: Option<PathBuf>,
}

impl GftpSettings {
    fn layers(env: &dyn Fn(&str) -> Option<String>) -> Layers<'_> {
        Layers::new(env_names::PREFIX, env)
            .env_names("bus-socket", [env_names::GSB_URL, env_names::BUS_SOCKET])
            .env_names("data-dir", [env_names::DATA_DIR])
            .env_names("log-filter", [env_names::LOG])
    }

    /// Every environment variable these settings answer to, with its key.
    pub fn env_table() -> Result<Vec<golem_settings::EnvName>, SettingsError> {
        Self::layers(&|_| None).env_table::<GftpSettings>()
    }
}

/// A setting that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(transparent)]
    Layers(#[from] SettingsError),
    #[error("{name} must be a positive integer")]
    NotPositive { name: String },
}

/// Everything the binary needs besides its command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GftpConfig {
    pub bus_socket: PathBuf,
    pub transfer: TransferConfig,
    pub log_filter: String,
}

/// The daemon's default data dir (as `golem-daemon` computes it).
pub fn default_data_dir() -> PathBuf {
    dirs::data_local_dir()
        .unwrap_or_else(|| PathBuf::from("."))
        .join("golem-daemon")
}

impl GftpConfig {
    /// Build the config from the command line and the process environment.
    pub fn load(cli: &Cli) -> Result<GftpConfig, ConfigError> {
        GftpConfig::from_sources(cli, |name| std::env::var(name).ok())
    }

    /// Build the config from the command line and `env` (a fake in tests).
    pub fn from_sources(
        cli: &Cli,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<GftpConfig, ConfigError> {
        let flags = Flags {
            bus_socket: cli
                .bus_socket
                .clone()
                .or_else(|| Some(cli.data_dir.as_ref()?.join(BUS_SOCKET_FILE))),
        };
        let layers = GftpSettings::layers(&env);
        let positive = |key: &str, value: u64| {
            if value == 0 {
                Err(ConfigError::NotPositive {
                    name: layers.env_names_of(key).join("/"),
                })
            } else {
                Ok(value)
            }
        };
        let settings: GftpSettings = GftpSettings::layers(&env).flags(&flags).load()?;
        let transfer = TransferConfig {
            chunk_size: positive("chunk-size", settings.chunk_size)?,
            in_flight: positive("in-flight", settings.in_flight as u64)? as usize,
        };
        let bus_socket = settings.bus_socket.unwrap_or_else(|| {
            settings
                .data_dir
                .unwrap_or_else(default_data_dir)
                .join(BUS_SOCKET_FILE)
        });
        Ok(GftpConfig {
            bus_socket,
            transfer,
            log_filter: settings.log_filter,
        })
    }
}

/// A socket path, or the original's bus URL `unix:<path>` / `unix://<path>`.
fn socket_of_bus_url<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<PathBuf>, D::Error> {
    let Some(text) = Option::<String>::deserialize(deserializer)? else {
        return Ok(None);
    };
    if let Some(path) = text
        .strip_prefix("unix://")
        .or_else(|| text.strip_prefix("unix:"))
    {
        return Ok(Some(PathBuf::from(path)));
    }
    if text.contains("://") {
        return Err(serde::de::Error::custom(format!(
            "{text:?} is not supported: the golem-daemon bus is a unix socket; use unix:<path> or --data-dir"
        )));
    }
    Ok(Some(PathBuf::from(text)))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn cli(args: &[&str]) -> Cli {
        Cli::parse_from(std::iter::once("gftp").chain(args.iter().copied()))
    }

    #[test]
    fn socket_precedence() {
        let env = |name: &str| match name {
            env_names::DATA_DIR => Some("/env/dir".to_string()),
            env_names::GSB_URL => Some("unix:/gsb/sock".to_string()),
            env_names::BUS_SOCKET => Some("/golem/sock".to_string()),
            _ => None,
        };
        let config = GftpConfig::from_sources(&cli(&["server"]), env).unwrap();
        assert_eq!(config.bus_socket, PathBuf::from("/gsb/sock"));
        let config =
            GftpConfig::from_sources(&cli(&["--data-dir", "/cli", "server"]), env).unwrap();
        assert_eq!(config.bus_socket, PathBuf::from("/cli/bus.sock"));
        let config =
            GftpConfig::from_sources(&cli(&["server", "--bus-socket", "/s"]), env).unwrap();
        assert_eq!(config.bus_socket, PathBuf::from("/s"));
        let no_gsb = |name: &str| (name != env_names::GSB_URL).then(|| env(name)).flatten();
        let config = GftpConfig::from_sources(&cli(&["server"]), no_gsb).unwrap();
        assert_eq!(config.bus_socket, PathBuf::from("/golem/sock"));
        let only_dir = |name: &str| (name == env_names::DATA_DIR).then(|| "/d".to_string());
        let config = GftpConfig::from_sources(&cli(&["server"]), only_dir).unwrap();
        assert_eq!(config.bus_socket, PathBuf::from("/d/bus.sock"));
        let nothing = GftpConfig::from_sources(&cli(&["server"]), |_| None).unwrap();
        assert_eq!(nothing.bus_socket, default_data_dir().join(BUS_SOCKET_FILE));
        assert_eq!(nothing.transfer, TransferConfig::default());
        assert_eq!(nothing.log_filter, "warn");
    }

    /// The contract: every environment name as issue 18 found it. Add, never rename.
    #[test]
    fn every_env_name_sets_its_setting() {
        let table = GftpSettings::env_table().unwrap();
        for name in [
            "GSB_URL",
            "GOLEM_BUS_SOCKET",
            "GOLEM_DATA_DIR",
            "GFTP_CHUNK_SIZE",
            "GFTP_IN_FLIGHT",
            "RUST_LOG",
        ] {
            assert!(
                table.iter().any(|entry| entry.name == name),
                "{name} listed"
            );
        }
        let load = |name: &'static str, value: &'static str| {
            GftpConfig::from_sources(&cli(&["server"]), move |asked: &str| {
                (asked == name).then(|| value.to_string())
            })
            .unwrap()
        };
        assert_eq!(load("GFTP_CHUNK_SIZE", "4096").transfer.chunk_size, 4096);
        assert_eq!(load("GFTP_IN_FLIGHT", "3").transfer.in_flight, 3);
        assert_eq!(load("RUST_LOG", "debug").log_filter, "debug");
        assert_eq!(
            load("GSB_URL", "unix:///a/sock").bus_socket,
            PathBuf::from("/a/sock")
        );
        assert_eq!(
            load("GOLEM_BUS_SOCKET", "/b/sock").bus_socket,
            PathBuf::from("/b/sock")
        );
        assert_eq!(
            load("GOLEM_DATA_DIR", "/c").bus_socket,
            PathBuf::from("/c/bus.sock")
        );
    }

    #[test]
    fn bad_values_are_explained() {
        let tcp = |name: &str| (name == env_names::GSB_URL).then(|| "tcp://127.0.0.1:7464".into());
        let error = GftpConfig::from_sources(&cli(&["server"]), tcp)
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("unix:<path>") && error.contains("GSB_URL"),
            "{error}"
        );
        let zero = |name: &str| (name == "GFTP_CHUNK_SIZE").then(|| "0".into());
        let error = GftpConfig::from_sources(&cli(&["server"]), zero)
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("positive") && error.contains("GFTP_CHUNK_SIZE"),
            "{error}"
        );
        let word = |name: &str| (name == "GFTP_IN_FLIGHT").then(|| "many".into());
        let error = GftpConfig::from_sources(&cli(&["server"]), word)
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("GFTP_IN_FLIGHT") && error.contains("many"),
            "{error}"
        );
    }
}
