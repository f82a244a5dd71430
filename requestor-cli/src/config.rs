//! Where the requestor finds its daemon and how it serves task files, layered
//! by `golem-settings`: defaults → `requestor.toml` (`--config`, else
//! `GOLEM_REQUESTOR_CONFIG`, else `<config dir>/golem-requestor/requestor.toml`
//! when it exists) → environment → flags. A setting is a field of
//! [`RequestorSettings`] and, with a flag, of `cli::ConnectionArgs`; its
//! environment name is `GOLEM_REQUESTOR_` + its key in SCREAMING_SNAKE, except
//! the names shared with yapapi and the daemon in [`env_names`]. The only
//! module that reads the environment.

use std::path::PathBuf;

use golem_settings::Layers;
use serde::{Deserialize, Serialize};

/// Environment names that are not derived from a key (yapapi's and the
/// daemon's), and the prefix of those that are.
pub mod env_names {
    /// Prefix of derived names: `max-upload-mib` is `GOLEM_REQUESTOR_MAX_UPLOAD_MIB`.
    pub const PREFIX: &str = "GOLEM_REQUESTOR";
    /// `api-url`, as yapapi reads it.
    pub const API_URL: &str = "YAGNA_API_URL";
    /// `app-key`, as yapapi reads it.
    pub const APP_KEY: &str = "YAGNA_APPKEY";
    /// Also honoured for `app-key`, after `YAGNA_APPKEY`: the daemon's own
    /// autoconf key, handy in scripts.
    pub const AUTOCONF_APPKEY: &str = "GOLEM_AUTOCONF_APPKEY";
    /// `bus-socket`: the daemon's bus socket; when set, task files move with gftp.
    pub const BUS_SOCKET: &str = "GOLEM_BUS_SOCKET";
    /// The settings file, when `--config` does not name one.
    pub const CONFIG: &str = "GOLEM_REQUESTOR_CONFIG";
}

/// `<config dir>/golem-requestor/requestor.toml` (`~/.config/...` on Linux):
/// read when it exists and no other file is named.
pub fn default_config_file() -> PathBuf {
    dirs::config_dir()
        .unwrap_or_else(std::env::temp_dir)
        .join("golem-requestor")
        .join("requestor.toml")
}

/// How providers get the task packages this requestor publishes from local
/// files: the `package-transport` setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PackageTransport {
    /// `gftp://<nodeId>/<hash>`, served by this requestor over its daemon's
    /// bus and fetched by providers through theirs, as the original's exe
    /// units fetch packages: it works wherever the two nodes reach each other
    /// over the network, so it is the default.
    Gftp,
    /// The built-in HTTP server on `files-addr` (127.0.0.1 unless set):
    /// only providers that reach that address can fetch.
    Http,
}

impl PackageTransport {
    pub fn parse(text: &str) -> Option<PackageTransport> {
        match text.trim().to_ascii_lowercase().as_str() {
            "gftp" => Some(PackageTransport::Gftp),
            "http" => Some(PackageTransport::Http),
            _ => None,
        }
    }
}

/// The file server's per-upload limit unless configured, in MiB.
pub const DEFAULT_MAX_UPLOAD_MIB: u64 = crate::files::DEFAULT_MAX_UPLOAD_BYTES >> 20;

pub const DEFAULT_API_URL: &str = "http://127.0.0.1:7465";

/// The layered settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct RequestorSettings {
    /// The daemon's REST API.
    pub api_url: String,
    /// Required; its absence is reported by [`Connection::load`].
    pub app_key: Option<String>,
    /// Address the requestor's file server binds (env only).
    pub files_addr: String,
    /// The daemon's bus socket: when set, task files move with gftp.
    pub bus_socket: Option<PathBuf>,
    /// Largest upload (MiB) one slot of the file server takes.
    pub max_upload_mib: u64,
    /// Where each run keeps its journal of what to end if it dies
    /// (`crate::leftovers`).
    pub sessions_dir: PathBuf,
    /// `gftp` or `http`: how providers fetch task packages published from
    /// local files ([`PackageTransport`]; unset: gftp).
    pub package_transport: Option<String>,
}

/// `<local data dir>/golem-requestor/sessions` (`~/.local/share/...` on Linux).
pub fn default_sessions_dir() -> PathBuf {
    dirs::data_local_dir()
        .unwrap_or_else(std::env::temp_dir)
        .join("golem-requestor")
        .join("sessions")
}

impl Default for RequestorSettings {
    fn default() -> Self {
        RequestorSettings {
            api_url: DEFAULT_API_URL.to_string(),
            app_key: None,
            files_addr: "127.0.0.1:0".to_string(),
            bus_socket: None,
            max_upload_mib: DEFAULT_MAX_UPLOAD_MIB,
            sessions_dir: default_sessions_dir(),
            package_transport: None,
        }
    }
}

impl RequestorSettings {
    /// Layer the settings file, the environment read through `env` and
    /// `flags` over the defaults. `config_file` is `--config`: a file it
    /// names must exist; without it `GOLEM_REQUESTOR_CONFIG` names one, else
    /// [`default_config_file`] is read when it exists.
    pub fn load(
        flags: &impl Serialize,
        config_file: Option<&std::path::Path>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<RequestorSettings, golem_settings::SettingsError> {
        let named = config_file.map(std::path::Path::to_path_buf).or_else(|| {
            env(env_names::CONFIG)
                .filter(|value| !value.trim().is_empty())
                .map(PathBuf::from)
        });
        let layers = match &named {
            Some(path) => Self::layers(env).file(path),
            None => Self::layers(env).optional_file(&default_config_file()),
        };
        layers.flags(flags).load()
    }

    fn layers(env: &dyn Fn(&str) -> Option<String>) -> Layers<'_> {
        Layers::new(env_names::PREFIX, env)
            .env_names("api-url", [env_names::API_URL])
            .env_names("app-key", [env_names::APP_KEY, env_names::AUTOCONF_APPKEY])
            .env_names("bus-socket", [env_names::BUS_SOCKET])
    }

    /// Every environment variable these settings answer to, with its key.
    pub fn env_table() -> Result<Vec<golem_settings::EnvName>, golem_settings::SettingsError> {
        Self::layers(&|_| None).env_table::<RequestorSettings>()
    }
}

/// Connection settings after flags and environment are layered.
#[derive(Debug, Clone)]
pub struct Connection {
    pub api_url: String,
    pub app_key: String,
    pub files_addr: String,
    pub bus_socket: Option<PathBuf>,
    /// The most bytes one upload to the file server may carry (413 beyond).
    pub max_upload_bytes: u64,
    pub sessions_dir: PathBuf,
    pub package_transport: PackageTransport,
}

impl Connection {
    /// Flags win over the environment, which wins over the settings file
    /// (`config_file`: `--config`); the app-key is required.
    pub fn load(
        flags: &impl Serialize,
        config_file: Option<&std::path::Path>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Connection, crate::RequestorError> {
        let settings = RequestorSettings::load(flags, config_file, env)
            .map_err(|error| crate::RequestorError::Usage(error.to_string()))?;
        let package_transport = match settings.package_transport.as_deref() {
            None => PackageTransport::Gftp,
            Some(text) => PackageTransport::parse(text).ok_or_else(|| {
                crate::RequestorError::Usage(format!(
                    "package-transport is {text:?}; use gftp (providers fetch packages through \
                     the daemons, across machines) or http (the built-in file server on \
                     files-addr, for providers that reach it) [--package-transport, {}, \
                     requestor.toml]",
                    golem_settings::env_name(env_names::PREFIX, "package-transport")
                ))
            })?,
        };
        let app_key = settings.app_key.ok_or_else(|| {
            crate::RequestorError::Usage(format!(
                "no app-key: pass --app-key or set {} (create one with `golem-daemon app-key create NAME`)",
                env_names::APP_KEY
            ))
        })?;
        Ok(Connection {
            api_url: settings.api_url,
            app_key,
            files_addr: settings.files_addr,
            bus_socket: settings.bus_socket,
            max_upload_bytes: settings.max_upload_mib.saturating_mul(1 << 20),
            sessions_dir: settings.sessions_dir,
            package_transport,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::cli::Cli;
    use clap::Parser;

    use golem_settings::env_of;

    /// `golem-requestor [flags] offers` with `env` as the environment.
    fn load(env: &[(&str, &str)], flags: &[&str]) -> Result<Connection, crate::RequestorError> {
        let args = ["golem-requestor"].iter().chain(flags).chain(&["offers"]);
        let cli = Cli::try_parse_from(args).unwrap();
        Connection::load(
            &cli.common.connection,
            cli.common.connection.config.as_deref(),
            &env_of(env),
        )
    }

    /// The contract: `(env name, env value, flag, flag value, read, expected)`
    /// for every setting as issue 18 found it. Add, never rename.
    #[rustfmt::skip]
    #[allow(clippy::type_complexity)]
    fn contract() -> Vec<(&'static str, &'static str, &'static str, fn(&Connection) -> String, &'static str)> {
        vec![
            ("YAGNA_API_URL", "http://127.0.0.1:1", "--api-url", |c| c.api_url.clone(), "http://127.0.0.1:1"),
            ("YAGNA_APPKEY", "k1", "--app-key", |c| c.app_key.clone(), "k1"),
            ("GOLEM_AUTOCONF_APPKEY", "k1", "", |c| c.app_key.clone(), "k1"),
            ("GOLEM_REQUESTOR_FILES_ADDR", "127.0.0.1:9", "", |c| c.files_addr.clone(), "127.0.0.1:9"),
            ("GOLEM_BUS_SOCKET", "/s.sock", "--bus-socket", |c| format!("{:?}", c.bus_socket), "Some(\"/s.sock\")"),
            ("GOLEM_REQUESTOR_MAX_UPLOAD_MIB", "2", "--max-upload-mib", |c| c.max_upload_bytes.to_string(), "2097152"),
            ("GOLEM_REQUESTOR_SESSIONS_DIR", "/sessions", "--sessions-dir", |c| c.sessions_dir.display().to_string(), "/sessions"),
            ("GOLEM_REQUESTOR_PACKAGE_TRANSPORT", "http", "--package-transport", |c| format!("{:?}", c.package_transport), "Http"),
        ]
    }

    #[test]
    fn every_env_name_and_flag_sets_its_setting() {
        let table = RequestorSettings::env_table().unwrap();
        let defaults = load(&[("YAGNA_APPKEY", "k0")], &[]).unwrap();
        for (name, value, flag, read, expected) in contract() {
            assert_ne!(
                read(&defaults),
                expected,
                "{name}: pick a non-default sample"
            );
            let key = ("YAGNA_APPKEY", "k0");
            let env = if name == "YAGNA_APPKEY" || name == "GOLEM_AUTOCONF_APPKEY" {
                vec![(name, value)]
            } else {
                vec![key, (name, value)]
            };
            let from_env = load(&env, &[]).unwrap_or_else(|error| panic!("{name}: {error}"));
            assert_eq!(read(&from_env), expected, "env {name}");
            assert!(
                table.iter().any(|entry| entry.name == name),
                "{name} listed"
            );
            if !flag.is_empty() {
                let from_flag = load(&[key], &[flag, value]).unwrap();
                assert_eq!(read(&from_flag), expected, "flag {flag}");
            }
        }
    }

    #[test]
    fn defaults_then_env_then_flags() {
        let defaults = load(&[("YAGNA_APPKEY", "k")], &[]).unwrap();
        assert_eq!(defaults.api_url, DEFAULT_API_URL);
        assert_eq!(defaults.files_addr, "127.0.0.1:0");
        assert_eq!(defaults.bus_socket, None);
        assert_eq!(defaults.max_upload_bytes, DEFAULT_MAX_UPLOAD_MIB << 20);
        let env = [
            ("YAGNA_APPKEY", "env"),
            ("GOLEM_AUTOCONF_APPKEY", "autoconf"),
            ("GOLEM_REQUESTOR_MAX_UPLOAD_MIB", "3"),
            ("YAGNA_API_URL", "http://127.0.0.1:1"),
        ];
        let from_env = load(&env, &[]).unwrap();
        assert_eq!(
            from_env.app_key, "env",
            "YAGNA_APPKEY before GOLEM_AUTOCONF_APPKEY"
        );
        assert_eq!(from_env.max_upload_bytes, 3 << 20);
        let from_flags = load(&env, &["--app-key", "flag", "--max-upload-mib", "4"]).unwrap();
        assert_eq!(from_flags.app_key, "flag");
        assert_eq!(from_flags.max_upload_bytes, 4 << 20);
        assert_eq!(from_flags.api_url, "http://127.0.0.1:1");
    }

    /// `package-transport`: gftp unless set; file, then env, then flag.
    #[test]
    fn package_transport_layers_file_env_and_flag() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("requestor.toml");
        std::fs::write(&file, "package-transport = \"http\"\n").unwrap();
        let file = file.to_str().unwrap();
        let key = ("YAGNA_APPKEY", "k");
        let transport =
            |env: &[(&str, &str)], flags: &[&str]| load(env, flags).unwrap().package_transport;
        assert_eq!(transport(&[key], &[]), PackageTransport::Gftp);
        assert_eq!(
            transport(&[key], &["--config", file]),
            PackageTransport::Http
        );
        assert_eq!(
            transport(&[key, ("GOLEM_REQUESTOR_CONFIG", file)], &[]),
            PackageTransport::Http
        );
        let env_over_file = [key, ("GOLEM_REQUESTOR_PACKAGE_TRANSPORT", "gftp")];
        assert_eq!(
            transport(&env_over_file, &["--config", file]),
            PackageTransport::Gftp
        );
        let flag_over_env = [key, ("GOLEM_REQUESTOR_PACKAGE_TRANSPORT", "http")];
        assert_eq!(
            transport(&flag_over_env, &["--package-transport", "GFTP"]),
            PackageTransport::Gftp
        );
        // A named file that is missing is an error, not silence.
        let missing = dir.path().join("missing.toml");
        let error = load(&[key], &["--config", missing.to_str().unwrap()])
            .unwrap_err()
            .to_string();
        assert!(error.contains("missing.toml"), "{error}");
    }

    #[test]
    fn a_bad_package_transport_names_the_choices_and_the_setting() {
        let error = load(&[("YAGNA_APPKEY", "k")], &["--package-transport", "ftp"])
            .unwrap_err()
            .to_string();
        for wanted in [
            "\"ftp\"",
            "gftp",
            "http",
            "GOLEM_REQUESTOR_PACKAGE_TRANSPORT",
        ] {
            assert!(error.contains(wanted), "{wanted}: {error}");
        }
    }

    #[test]
    fn a_missing_key_or_a_bad_value_is_explained() {
        let error = load(&[], &[]).unwrap_err().to_string();
        assert!(
            error.contains("no app-key") && error.contains("YAGNA_APPKEY"),
            "{error}"
        );
        let error = load(
            &[
                ("YAGNA_APPKEY", "k"),
                ("GOLEM_REQUESTOR_MAX_UPLOAD_MIB", "lots"),
            ],
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(
            error.contains("GOLEM_REQUESTOR_MAX_UPLOAD_MIB") && error.contains("lots"),
            "{error}"
        );
    }
}
