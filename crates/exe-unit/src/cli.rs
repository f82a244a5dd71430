//! The command line every exe-unit binary shares (the spawn contract in the
//! crate docs) and [`main`], which a binary calls with its runtime's
//! constructor: it parses the arguments, sets up tracing and signals and runs
//! [`crate::service::run`].

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use tokio_util::sync::CancellationToken;

use crate::activity::ActivityConfig;
use crate::agreement::{Agreement, AgreementError};
use crate::runtime::{Runtime, RuntimeError};

#[derive(Debug, Parser)]
#[command(
    version,
    about = "Golem exe unit: serves one activity for the provider agent"
)]
pub struct ExeUnitCli {
    #[command(subcommand)]
    pub command: ExeUnitCommand,
}

#[derive(Debug, Subcommand)]
pub enum ExeUnitCommand {
    /// Serve one activity over the daemon's bus socket until it ends.
    Run(RunArgs),
    /// Print the offer properties this exe unit contributes, as JSON.
    OfferTemplate,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// The activity id; the exe unit binds /local/exeunit/<ID>.
    #[arg(long, value_name = "ID")]
    pub activity_id: String,
    /// The agreement as JSON (the market API's Agreement).
    #[arg(long, value_name = "FILE")]
    pub agreement: PathBuf,
    /// The activity's own directory (volumes are created in it); created if missing.
    #[arg(long, value_name = "DIR")]
    pub work_dir: PathBuf,
    /// Cache shared by the provider's activities (packages by hash); created if missing.
    #[arg(long, value_name = "DIR")]
    pub cache_dir: PathBuf,
    /// The daemon's bus socket (`<data-dir>/bus.sock`).
    #[arg(long, value_name = "PATH")]
    pub bus_socket: PathBuf,
    /// Upper bound for one `run` command in seconds; the agreement's
    /// golem.srv.comp.expiration may shorten it.
    #[arg(long, value_name = "SECONDS", default_value_t = 1800)]
    pub max_run_time: u64,
    /// How many task packages the cache keeps when the runtime caches what it
    /// made of them (exe-unit-vm: images tagged golem-vm-cache:<sha3> and their
    /// package files); the least recently used beyond this are evicted at
    /// deploy unless a container still uses them. Default: the environment's
    /// GOLEM_CACHE_MAX_PACKAGES, else 10.
    #[arg(long, value_name = "N")]
    pub cache_max_packages: Option<usize>,
    /// Let transfers and task-package downloads reach loopback, private,
    /// link-local and other non-public addresses (the provider agent's
    /// `allow-private-transfers`); without it they reach public addresses only.
    #[arg(long)]
    pub allow_private_transfers: bool,
    /// Tracing filter, e.g. `info` or `golem_exe_unit=debug`.
    #[arg(long, default_value = "info")]
    pub log_level: String,
    #[arg(long, value_enum, default_value = "text")]
    pub log_format: LogFormat,
}

/// The environment variable an operator sets (for the provider agent, which
/// passes its environment on) instead of `--cache-max-packages`.
pub const ENV_CACHE_MAX_PACKAGES: &str = "GOLEM_CACHE_MAX_PACKAGES";
pub const DEFAULT_CACHE_MAX_PACKAGES: usize = 10;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{ENV_CACHE_MAX_PACKAGES}={0:?} is not a positive number")]
    CacheMaxPackages(String),
    #[error("activity id {0:?} must be non-empty and contain no '/'")]
    ActivityId(String),
    #[error(transparent)]
    Agreement(#[from] AgreementError),
    #[error("cannot create {path}: {source}")]
    Directory {
        path: String,
        source: std::io::Error,
    },
}

impl RunArgs {
    /// Read the agreement and prepare the directories.
    pub fn load(&self) -> Result<ActivityConfig, ConfigError> {
        if self.activity_id.is_empty() || self.activity_id.contains('/') {
            return Err(ConfigError::ActivityId(self.activity_id.clone()));
        }
        let cache_max_packages = match self.cache_max_packages {
            Some(count) => count,
            None => match std::env::var(ENV_CACHE_MAX_PACKAGES) {
                Ok(text) => text
                    .trim()
                    .parse()
                    .map_err(|_| ConfigError::CacheMaxPackages(text.clone()))?,
                Err(_) => DEFAULT_CACHE_MAX_PACKAGES,
            },
        }
        .max(1);
        let agreement = Agreement::load(&self.agreement)?;
        for directory in [&self.work_dir, &self.cache_dir] {
            std::fs::create_dir_all(directory).map_err(|source| ConfigError::Directory {
                path: directory.display().to_string(),
                source,
            })?;
        }
        Ok(ActivityConfig {
            activity_id: self.activity_id.clone(),
            agreement,
            work_dir: self.work_dir.clone(),
            cache_dir: self.cache_dir.clone(),
            bus_socket: self.bus_socket.clone(),
            // A year is "no limit" and keeps deadline arithmetic far from overflow.
            max_run_time: Duration::from_secs(self.max_run_time.min(365 * 86_400)),
            cache_max_packages,
            allow_private_transfers: self.allow_private_transfers,
        })
    }
}

fn init_tracing(args: &RunArgs) {
    let filter = tracing_subscriber::EnvFilter::try_new(&args.log_level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match args.log_format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// Transfer protocols the core implements, added to every runtime's template.
pub const TRANSFER_PROTOCOLS: &[&str] = &["http", "https"];

/// The runtime's offer properties plus what the core contributes
/// (`golem.activity.caps.transfer.protocol`).
pub fn offer_template<R: Runtime>() -> serde_json::Value {
    let mut template = R::offer_template();
    if let Some(properties) = template.as_object_mut() {
        properties
            .entry("golem.activity.caps.transfer.protocol")
            .or_insert_with(|| serde_json::json!(TRANSFER_PROTOCOLS));
    }
    template
}

/// The whole `main` of an exe-unit binary: `build` makes the runtime for an activity.
pub fn main<R: Runtime>(
    build: impl FnOnce(&ActivityConfig) -> Result<R, RuntimeError>,
) -> ExitCode {
    let cli = ExeUnitCli::parse();
    let args = match cli.command {
        ExeUnitCommand::OfferTemplate => {
            let mut template = match R::offer_template_checked() {
                Ok(template) => template,
                Err(error) => {
                    eprintln!("offer-template: {error}");
                    return ExitCode::FAILURE;
                }
            };
            if let Some(properties) = template.as_object_mut() {
                properties
                    .entry("golem.activity.caps.transfer.protocol")
                    .or_insert_with(|| serde_json::json!(TRANSFER_PROTOCOLS));
            }
            println!("{template}");
            return ExitCode::SUCCESS;
        }
        ExeUnitCommand::Run(args) => args,
    };
    init_tracing(&args);
    // Die with the provider agent that spawned us.
    if let Err(error) = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGTERM) {
        tracing::warn!(%error, "cannot set the parent-death signal");
    }
    let config = match args.load() {
        Ok(config) => config,
        Err(error) => {
            tracing::error!(%error, "invalid exe-unit arguments");
            report_failure(&error);
            return ExitCode::from(2);
        }
    };
    let runtime = match build(&config) {
        Ok(runtime) => runtime,
        Err(error) => {
            tracing::error!(%error, "cannot create the runtime");
            report_failure(&error);
            return ExitCode::FAILURE;
        }
    };
    let tokio_runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            tracing::error!(%error, "cannot start tokio");
            report_failure(&error);
            return ExitCode::FAILURE;
        }
    };
    let result = tokio_runtime.block_on(async move {
        let shutdown = CancellationToken::new();
        tokio::spawn(stop_on_signals(shutdown.clone()));
        crate::service::run(config, Arc::new(runtime), shutdown).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "exe unit failed");
            report_failure(&error);
            ExitCode::FAILURE
        }
    }
}

/// The spawn contract's last stderr line of a failing exe unit.
fn report_failure(error: &dyn std::fmt::Display) {
    let message = error.to_string().replace('\n', " ");
    eprintln!(
        "{}{message}",
        golem_model::activity_control::EXE_UNIT_FAILURE_PREFIX
    );
}

async fn stop_on_signals(shutdown: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut terminate), Ok(mut interrupt)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::warn!("cannot install signal handlers");
        return;
    };
    tokio::select! {
        _ = terminate.recv() => tracing::info!("SIGTERM received"),
        _ = interrupt.recv() => tracing::info!("SIGINT received"),
    }
    shutdown.cancel();
}
