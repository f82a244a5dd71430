//! Where the requestor finds its daemon: `--api-url`/`--app-key` flags, else the
//! environment (`YAGNA_API_URL`, `YAGNA_APPKEY`, as yapapi reads them), else the
//! daemon's default address. The only module that reads the environment.

/// Environment variable names the CLI reads.
pub mod env_names {
    pub const API_URL: &str = "YAGNA_API_URL";
    pub const APP_KEY: &str = "YAGNA_APPKEY";
    /// Also honoured: the daemon's own autoconf key, handy in scripts.
    pub const AUTOCONF_APPKEY: &str = "GOLEM_AUTOCONF_APPKEY";
    /// Address the requestor's file server binds (default `127.0.0.1:0`).
    pub const FILES_ADDR: &str = "GOLEM_REQUESTOR_FILES_ADDR";
    /// The daemon's bus socket: when set, task files move with gftp.
    pub const BUS_SOCKET: &str = "GOLEM_BUS_SOCKET";
    /// Largest upload (MiB) one slot of the file server takes (default 1024).
    pub const MAX_UPLOAD_MIB: &str = "GOLEM_REQUESTOR_MAX_UPLOAD_MIB";
}

/// The file server's per-upload limit unless configured, in MiB.
pub const DEFAULT_MAX_UPLOAD_MIB: u64 = crate::files::DEFAULT_MAX_UPLOAD_BYTES >> 20;

pub const DEFAULT_API_URL: &str = "http://127.0.0.1:7465";

/// Connection settings after flags and environment are layered.
#[derive(Debug, Clone)]
pub struct Connection {
    pub api_url: String,
    pub app_key: String,
    pub files_addr: String,
    pub bus_socket: Option<std::path::PathBuf>,
    /// The most bytes one upload to the file server may carry (413 beyond).
    pub max_upload_bytes: u64,
}

impl Connection {
    /// Flags win over the environment; the app-key is required.
    pub fn resolve(
        api_url: Option<String>,
        app_key: Option<String>,
        bus_socket: Option<std::path::PathBuf>,
        max_upload_mib: Option<u64>,
    ) -> Result<Connection, crate::RequestorError> {
        let env = |name: &str| std::env::var(name).ok().filter(|value| !value.is_empty());
        let api_url = api_url
            .or_else(|| env(env_names::API_URL))
            .unwrap_or_else(|| DEFAULT_API_URL.to_string());
        let app_key = app_key
            .or_else(|| env(env_names::APP_KEY))
            .or_else(|| env(env_names::AUTOCONF_APPKEY))
            .ok_or_else(|| {
                crate::RequestorError::Usage(format!(
                    "no app-key: pass --app-key or set {} (create one with `golem-daemon app-key create NAME`)",
                    env_names::APP_KEY
                ))
            })?;
        let files_addr = env(env_names::FILES_ADDR).unwrap_or_else(|| "127.0.0.1:0".to_string());
        let bus_socket = bus_socket.or_else(|| env(env_names::BUS_SOCKET).map(Into::into));
        let max_upload_mib = match max_upload_mib {
            Some(mib) => mib,
            None => match env(env_names::MAX_UPLOAD_MIB) {
                Some(text) => text.trim().parse().map_err(|_| {
                    crate::RequestorError::Usage(format!(
                        "{}={text:?} is not a whole number of MiB",
                        env_names::MAX_UPLOAD_MIB
                    ))
                })?,
                None => DEFAULT_MAX_UPLOAD_MIB,
            },
        };
        Ok(Connection {
            api_url,
            app_key,
            files_addr,
            bus_socket,
            max_upload_bytes: max_upload_mib.saturating_mul(1 << 20),
        })
    }
}
