//! Configuration of the `gftp` binary: the command line, and where the
//! daemon's bus socket is. This is the only module of the crate that reads
//! the environment; every name it reads is in [`env_names`].
//!
//! The socket is, first match wins: `--bus-socket`, `--data-dir`/bus.sock,
//! `GSB_URL=unix:<path>` (the original's variable), `GOLEM_BUS_SOCKET`,
//! `GOLEM_DATA_DIR`/bus.sock, then the daemon's default data dir.

use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand};

use crate::service::TransferConfig;

/// Environment variables the `gftp` binary reads.
pub mod env_names {
    /// The original's bus URL; only `unix:<path>` is understood.
    pub const GSB_URL: &str = "GSB_URL";
    pub const BUS_SOCKET: &str = "GOLEM_BUS_SOCKET";
    pub const DATA_DIR: &str = "GOLEM_DATA_DIR";
    /// Bytes per chunk of downloads and uploads.
    pub const CHUNK_SIZE: &str = "GFTP_CHUNK_SIZE";
    /// Chunks in flight at once.
    pub const IN_FLIGHT: &str = "GFTP_IN_FLIGHT";
    /// Log filter (tracing `EnvFilter` syntax); logs go to stderr.
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
    pub fn load(cli: &Cli) -> Result<GftpConfig, String> {
        GftpConfig::from_sources(cli, |name| std::env::var(name).ok())
    }

    /// Build the config from the command line and `env` (a fake in tests).
    pub fn from_sources(
        cli: &Cli,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<GftpConfig, String> {
        let env = |name: &str| env(name).filter(|value| !value.trim().is_empty());
        let bus_socket = if let Some(socket) = &cli.bus_socket {
            socket.clone()
        } else if let Some(dir) = &cli.data_dir {
            dir.join(BUS_SOCKET_FILE)
        } else if let Some(url) = env(env_names::GSB_URL) {
            socket_of_gsb_url(&url)?
        } else if let Some(socket) = env(env_names::BUS_SOCKET) {
            PathBuf::from(socket)
        } else if let Some(dir) = env(env_names::DATA_DIR) {
            Path::new(&dir).join(BUS_SOCKET_FILE)
        } else {
            default_data_dir().join(BUS_SOCKET_FILE)
        };
        let mut transfer = TransferConfig::default();
        if let Some(value) = env(env_names::CHUNK_SIZE) {
            transfer.chunk_size = parse_positive(env_names::CHUNK_SIZE, &value)?;
        }
        if let Some(value) = env(env_names::IN_FLIGHT) {
            transfer.in_flight = parse_positive(env_names::IN_FLIGHT, &value)? as usize;
        }
        Ok(GftpConfig {
            bus_socket,
            transfer,
            log_filter: env(env_names::LOG).unwrap_or_else(|| "warn".to_string()),
        })
    }
}

fn parse_positive(name: &str, value: &str) -> Result<u64, String> {
    value
        .trim()
        .parse::<u64>()
        .ok()
        .filter(|number| *number > 0)
        .ok_or_else(|| format!("{name}={value:?} must be a positive integer"))
}

fn socket_of_gsb_url(url: &str) -> Result<PathBuf, String> {
    let path = url
        .strip_prefix("unix://")
        .or_else(|| url.strip_prefix("unix:"))
        .ok_or_else(|| {
            format!(
                "{}={url:?} is not supported: the golem-daemon bus is a unix socket; use unix:<path> or --data-dir",
                env_names::GSB_URL
            )
        })?;
    Ok(PathBuf::from(path))
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
        let only_dir = |name: &str| (name == env_names::DATA_DIR).then(|| "/d".to_string());
        let config = GftpConfig::from_sources(&cli(&["server"]), only_dir).unwrap();
        assert_eq!(config.bus_socket, PathBuf::from("/d/bus.sock"));
    }

    #[test]
    fn bad_values_are_explained() {
        let tcp = |name: &str| (name == env_names::GSB_URL).then(|| "tcp://127.0.0.1:7464".into());
        let error = GftpConfig::from_sources(&cli(&["server"]), tcp).unwrap_err();
        assert!(error.contains("unix:<path>"), "{error}");
        let zero = |name: &str| (name == env_names::CHUNK_SIZE).then(|| "0".into());
        let error = GftpConfig::from_sources(&cli(&["server"]), zero).unwrap_err();
        assert!(error.contains("positive"), "{error}");
    }
}
