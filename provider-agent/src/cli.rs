//! The command line: `run`, `preset list|create|update|remove|activate|deactivate`,
//! `status`, `config get|set` ([`crate::config_command`]), `exe-unit list`
//! ([`crate::exe_unit_command`]), `clean` ([`crate::clean`]);
//! global connection flags; logging setup. Errors end here (anyhow) as one
//! line on stderr and a non-zero exit code.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};
use golem_client::GolemClient;

use serde::Serialize;

use crate::config::{self, Connection, ProviderConfig, ProviderSettings};
use crate::machine::Machine;
use crate::presets::{self, parse_price, Preset};

#[derive(Debug, Parser)]
#[command(
    name = "golem-provider",
    version,
    about = "The Golem provider agent: offers this machine's resources on the Golem network",
    long_about = "The Golem provider agent: offers this machine's resources on the Golem network.\n\n\
It talks to the local golem-daemon over its REST API with an app-key (--app-key / YAGNA_APPKEY, \
--api-url / YAGNA_API_URL), subscribes one offer per working exe unit (exe-unit-wasm → wasmtime, \
exe-unit-vm → vm, found beside this binary or on PATH), answers demands by its policy, runs \
activities in exe-unit processes and bills them with debit notes and invoices.\n\n\
Its data dir (--data-dir / GOLEM_PROVIDER_DATA_DIR) holds provider.toml (settings), presets.toml \
(prices, see `preset`), state.json (agreements being billed, so that a restart still invoices), \
the activities' work dirs, and the outbound rules for payload manifests: rules.json (see `rule`), \
domain_whitelist.json (see `whitelist`) and cert-dir/ (see `keystore`)."
)]
pub struct Cli {
    #[command(flatten)]
    pub connection: ConnectionArgs,
    /// Log filter, e.g. `info` or `golem_provider=debug` [env: RUST_LOG] [default: info]
    #[arg(long, global = true, value_name = "FILTER")]
    pub log_level: Option<String>,
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

/// The connection flags of every subcommand, the last layer of
/// [`Connection`] (serialized with its keys).
#[derive(Debug, Clone, Default, Args, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct ConnectionArgs {
    /// The agent's data dir [env: GOLEM_PROVIDER_DATA_DIR] [default: ~/.local/share/golem-provider]
    #[arg(long, global = true, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// The daemon's REST API [env: YAGNA_API_URL] [default: http://127.0.0.1:7465]
    #[arg(long, global = true, value_name = "URL")]
    pub api_url: Option<String>,
    /// App-key of the daemon's REST API [env: YAGNA_APPKEY]
    #[arg(long, global = true, value_name = "KEY")]
    pub app_key: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the agent until SIGTERM/SIGINT: subscribe offers, negotiate, run activities, bill.
    ///
    /// With no configuration it offers every exe unit that works here on subnet
    /// `public`, for the test platforms dummy-local-tglm and erc20-holesky-tglm,
    /// with resources derived from (and capped by) this machine. Flags override
    /// provider.toml, which overrides the defaults.
    Run(RunArgs),
    /// Manage presets: the linear prices of each exe unit.
    #[command(subcommand)]
    Preset(PresetCommand),
    /// Manage the domain whitelist of outbound rules (domain_whitelist.json).
    #[command(subcommand)]
    Whitelist(crate::outbound::commands::WhitelistCommand),
    /// Manage the X.509 certificates trusted for signed payload manifests (cert-dir/).
    #[command(subcommand)]
    Keystore(crate::outbound::commands::KeystoreCommand),
    /// Show or change the outbound rules for payload manifests (rules.json).
    #[command(subcommand)]
    Rule(crate::outbound::commands::RuleCommand),
    /// Show offers, agreements, activities and earnings.
    Status {
        /// Print JSON (for scripts) instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Read and change the settings in provider.toml; a running agent re-subscribes its offers.
    #[command(subcommand)]
    Config(crate::config_command::ConfigCommand),
    /// The exe units this agent knows and whether they are offered.
    #[command(subcommand)]
    ExeUnit(crate::exe_unit_command::ExeUnitCommand),
    /// Remove old work dirs of ended activities and downloaded packages.
    Clean(crate::clean::CleanArgs),
}

/// The flags of `run`, the last layer of [`ProviderSettings`] (serialized
/// with its keys; each flag's key is its long name).
#[derive(Debug, Args, Default, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct RunArgs {
    /// Subnet of the offers (`golem.node.debug.subnet`) [env: GOLEM_PROVIDER_SUBNET] [default: public]
    #[arg(long)]
    pub subnet: Option<String>,
    /// Node name in the offers (`golem.node.id.name`) [env: GOLEM_PROVIDER_NODE_NAME] [default: hostname]
    #[arg(long)]
    pub node_name: Option<String>,
    /// Only these exe units, by runtime or binary name, comma-separated (e.g. `wasmtime`) [env: GOLEM_PROVIDER_EXE_UNITS]
    #[arg(long, value_delimiter = ',')]
    pub exe_units: Option<Vec<String>>,
    /// CPU cores to offer (capped by the machine).
    #[arg(long)]
    pub cores: Option<u32>,
    /// CPU threads to offer (capped by the machine).
    #[arg(long)]
    pub threads: Option<u32>,
    /// Memory to offer, GiB (capped by the machine) [default: 75% of it]
    #[arg(long)]
    pub mem_gib: Option<f64>,
    /// Storage to offer, GiB (capped by the free space) [default: 75% of it]
    #[arg(long)]
    pub storage_gib: Option<f64>,
    /// Payment platforms accepted, comma-separated; mainnet ones only when listed here or in provider.toml.
    #[arg(long, value_delimiter = ',')]
    pub platforms: Option<Vec<String>>,
    /// A cap on agreements at the same time [default: none: as many as the threads and memory
    /// the demands ask for (golem.inf.cpu.threads, golem.inf.mem.gib) fit in this provider's]
    #[arg(long)]
    pub max_agreements: Option<u32>,
    /// The daemon's bus socket handed to exe units [env: GOLEM_BUS_SOCKET, else $GOLEM_DATA_DIR/bus.sock,
    /// else asked of the daemon at start]; the agent refuses to start when it cannot reach it
    #[arg(long, value_name = "PATH")]
    pub bus_socket: Option<PathBuf>,
    /// Let `docker:<ref>` task packages run on the VM exe unit: a requestor may then run any image this machine's engine holds or can pull [env: GOLEM_ALLOW_DOCKER_IMAGES] [provider.toml: allow-docker-images] [default: refused]
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub allow_docker_images: Option<bool>,
    /// Let requestors' transfers and package downloads reach loopback, private and link-local
    /// addresses of this host's network (e.g. a loopback test network) [env: GOLEM_ALLOW_PRIVATE_TRANSFERS] [default: false]
    #[arg(long)]
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub allow_private_transfers: bool,
    /// Where the VM exe unit runs containers: `gvisor` (images run as on the original: root, writable root,
    /// inside gVisor's kernel) or `runc` (the host's kernel; images run hardened) [env: GOLEM_VM_SANDBOX]
    /// [provider.toml: vm-sandbox] [default: gvisor when the engine has runsc, else runc]
    #[arg(long, value_name = "gvisor|runc")]
    pub vm_sandbox: Option<String>,
    /// Serve the provider's dashboard (a web page and its JSON API) on ADDR [env: GOLEM_PROVIDER_DASHBOARD]
    /// [provider.toml: dashboard] [default: off; 127.0.0.1:7466 when given without a value]
    #[arg(long, num_args = 0..=1, default_missing_value = crate::dashboard::DEFAULT_ADDRESS, value_name = "ADDR")]
    pub dashboard: Option<String>,
    /// Let --dashboard bind an address other machines reach (the page is then guarded by the
    /// app-key only, over plain HTTP) [env: GOLEM_PROVIDER_DASHBOARD_ALLOW_REMOTE] [provider.toml: dashboard-allow-remote]
    #[arg(long)]
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub dashboard_allow_remote: bool,
    /// Where payload manifests' hosts resolve for outbound access, before this host's resolver:
    /// name=IPv4 pairs, comma-separated [env: GOLEM_PROVIDER_OUTBOUND_HOSTS] [provider.toml: outbound-hosts]
    #[arg(long, value_delimiter = ',', value_name = "NAME=IPV4")]
    pub outbound_hosts: Option<Vec<String>>,
}

#[derive(Debug, Subcommand)]
pub enum PresetCommand {
    /// List presets (and the default price of exe units without one).
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Create a preset: the price of one exe unit, in GLM.
    Create {
        #[arg(long)]
        name: String,
        /// Runtime name of the exe unit: `wasmtime` or `vm`.
        #[arg(long)]
        exe_unit: String,
        /// Paid once per activity.
        #[arg(long, default_value = "0")]
        start_fee: String,
        /// Per second of CPU time (`golem.usage.cpu_sec`).
        #[arg(long, default_value = "0")]
        cpu_sec: String,
        /// Per second of activity duration (`golem.usage.duration_sec`).
        #[arg(long, default_value = "0")]
        duration_sec: String,
    },
    /// Change fields of a preset.
    Update {
        #[arg(long)]
        name: String,
        #[arg(long)]
        exe_unit: Option<String>,
        #[arg(long)]
        start_fee: Option<String>,
        #[arg(long)]
        cpu_sec: Option<String>,
        #[arg(long)]
        duration_sec: Option<String>,
    },
    /// Remove a preset.
    Remove {
        #[arg(long)]
        name: String,
    },
    /// Offer a preset again (a running agent subscribes its offer within seconds).
    Activate {
        /// The preset's name (`preset list` shows them).
        name: String,
        /// Print the preset as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Stop offering a preset, keeping it (live agreements made with it go on).
    Deactivate {
        /// The preset's name (`preset list` shows them).
        name: String,
        /// Print the preset as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Parse the command line, run the command, and return the exit code.
pub fn run() -> i32 {
    let cli = Cli::parse();
    init_logging(cli.log_level.clone(), cli.log_format);
    match execute(cli) {
        Ok(()) => 0,
        Err(error) => {
            tracing::error!("{error:#}");
            eprintln!("golem-provider: {error:#}");
            1
        }
    }
}

fn init_logging(level: Option<String>, format: LogFormat) {
    let filter = level
        .or_else(config::log_filter_from_env)
        .unwrap_or_else(|| "info".into());
    let filter = tracing_subscriber::EnvFilter::try_new(&filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .try_init(),
        LogFormat::Text => builder.with_target(false).try_init(),
    };
}

fn execute(cli: Cli) -> anyhow::Result<()> {
    let connection = Connection::load(&cli.connection, &process_env)?;
    match cli.command {
        Command::Run(args) => run_agent(connection, args),
        Command::Preset(command) => preset(&connection, command),
        Command::Status { json } => status(&connection, json),
        Command::Config(command) => {
            crate::config_command::execute(&connection.data_dir, command, &process_env)
        }
        Command::ExeUnit(command) => runtime()?.block_on(crate::exe_unit_command::execute(
            &connection.data_dir,
            command,
            &process_env,
        )),
        Command::Clean(args) => crate::clean::execute(&connection.data_dir, args),
        Command::Whitelist(command) => {
            crate::outbound::commands::whitelist(&connection.data_dir, command)
        }
        Command::Keystore(command) => {
            crate::outbound::commands::keystore(&connection.data_dir, command)
        }
        Command::Rule(command) => crate::outbound::commands::rule(&connection.data_dir, command),
    }
}

/// The process environment, the one the config layers read in production.
fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn run_agent(connection: Connection, args: RunArgs) -> anyhow::Result<()> {
    let app_key = connection.app_key()?.to_string();
    let settings = ProviderSettings::load(&connection.data_dir, &args, &process_env)?;
    let machine = Machine::probe(&connection.data_dir);
    let config = ProviderConfig::resolve(&connection.data_dir, settings, &machine)?;
    tracing::info!(data_dir = %config.data_dir.display(), cores = config.cores, threads = config.threads,
        mem_gib = config.mem_gib, storage_gib = config.storage_gib, platforms = ?config.platforms,
        allow_private_transfers = config.allow_private_transfers, "golem-provider starting");
    let client = GolemClient::new(&connection.api_url, &app_key);
    // A change of provider.toml is read through the same layers, with the
    // same flags, so that a flag still wins over the file.
    let data_dir = connection.data_dir.clone();
    let reload_config: crate::agent::ReloadConfig = Box::new(move || {
        let settings = ProviderSettings::load(&data_dir, &args, &process_env)?;
        ProviderConfig::resolve(&data_dir, settings, &machine)
    });
    runtime()?.block_on(crate::agent::run(config, reload_config, client))?;
    Ok(())
}

fn preset(connection: &Connection, command: PresetCommand) -> anyhow::Result<()> {
    let dir = &connection.data_dir;
    match command {
        PresetCommand::List { json } => {
            let presets = presets::load(dir)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&presets)?);
                return Ok(());
            }
            println!(
                "{:<20} {:<10} {:>14} {:>14} {:>14}",
                "NAME", "EXE UNIT", "START FEE", "PER CPU-SEC", "PER SEC"
            );
            for preset in &presets {
                println!(
                    "{:<20} {:<10} {:>14} {:>14} {:>14}{}",
                    preset.name,
                    preset.exe_unit,
                    preset.start_fee,
                    preset.cpu_sec,
                    preset.duration_sec,
                    if preset.active { "" } else { "  (inactive)" }
                );
            }
            for (_, runtime) in crate::exe_units::KNOWN {
                if !presets.iter().any(|preset| preset.exe_unit == runtime) {
                    let preset = Preset::default_for(runtime);
                    println!(
                        "{:<20} {:<10} {:>14} {:>14} {:>14}  (default, no preset)",
                        preset.name,
                        preset.exe_unit,
                        preset.start_fee,
                        preset.cpu_sec,
                        preset.duration_sec
                    );
                }
            }
        }
        PresetCommand::Create {
            name,
            exe_unit,
            start_fee,
            cpu_sec,
            duration_sec,
        } => {
            let preset = Preset {
                name: name.clone(),
                exe_unit,
                start_fee: parse_price("--start-fee", &start_fee)?,
                cpu_sec: parse_price("--cpu-sec", &cpu_sec)?,
                duration_sec: parse_price("--duration-sec", &duration_sec)?,
                active: true,
            };
            presets::create(dir, preset)?;
            println!("preset {name} created; a running agent offers it within seconds");
        }
        PresetCommand::Update {
            name,
            exe_unit,
            start_fee,
            cpu_sec,
            duration_sec,
        } => {
            let price = |field, value: Option<String>| -> anyhow::Result<_> {
                Ok(value.map(|v| parse_price(field, &v)).transpose()?)
            };
            let updated = presets::update(
                dir,
                &name,
                exe_unit,
                price("--start-fee", start_fee)?,
                price("--cpu-sec", cpu_sec)?,
                price("--duration-sec", duration_sec)?,
            )?;
            println!(
                "preset {} updated: {} start fee {}, per cpu-sec {}, per sec {}",
                updated.name,
                updated.exe_unit,
                updated.start_fee,
                updated.cpu_sec,
                updated.duration_sec
            );
        }
        PresetCommand::Remove { name } => {
            presets::remove(dir, &name)?;
            println!("preset {name} removed");
        }
        PresetCommand::Activate { name, json } => set_preset_active(dir, &name, true, json)?,
        PresetCommand::Deactivate { name, json } => set_preset_active(dir, &name, false, json)?,
    }
    Ok(())
}

fn set_preset_active(
    dir: &std::path::Path,
    name: &str,
    active: bool,
    json: bool,
) -> anyhow::Result<()> {
    let preset = presets::set_active(dir, name, active)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&preset)?);
    } else if active {
        println!("preset {name} active: a running agent subscribes its offer within seconds");
    } else {
        println!("preset {name} inactive: a running agent unsubscribes its offer within seconds; live agreements go on");
    }
    Ok(())
}

fn status(connection: &Connection, json: bool) -> anyhow::Result<()> {
    let mut state = crate::state::read(&connection.data_dir.join(crate::state::STATE_FILE))?;
    // Finished agreements live in the archive; status lists them too.
    for agreement in crate::state::read_archive(&connection.data_dir) {
        state
            .agreements
            .entry(agreement.agreement_id.clone())
            .or_insert(agreement);
    }
    let client = connection
        .app_key
        .as_deref()
        .map(|key| GolemClient::new(&connection.api_url, key));
    let document = runtime()?.block_on(crate::status::status(&state, client.as_ref()));
    if json {
        println!("{}", serde_json::to_string_pretty(&document)?);
    } else {
        print!("{}", crate::status::render(&document));
    }
    Ok(())
}
