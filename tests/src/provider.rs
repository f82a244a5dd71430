//! The provider agent in end-to-end tests: [`ProviderAgent`] starts the real
//! `golem-provider run` against a running [`DaemonProcess`] (its API url and
//! app-key), with its own data dir, subnet, exe-unit restriction, presets
//! (prices) and extra `provider.toml` lines; it can be stopped, killed and
//! restarted on the same data dir, and exposes its JSON log and `status --json`.
//! On drop it kills the agent (its exe units get SIGTERM with it) and fails the
//! test if the agent logged an ERROR line it was not told to expect.
//!
//! ```no_run
//! # async fn example() -> anyhow::Result<()> {
//! use golem_tests::provider::{Preset, ProviderAgent, ProviderOptions};
//! use golem_tests::Sandbox;
//!
//! let mut sandbox = Sandbox::new();
//! let agent_dir = sandbox.path().join("p-agent");
//! let provider = sandbox.daemon("p")?;
//! let agent = ProviderAgent::start(
//!     provider,
//!     &agent_dir,
//!     ProviderOptions::new("my-test-subnet")
//!         .exe_units(&["wasmtime"])
//!         .preset(Preset::new("wasm", "wasmtime", "0.5", "0.01", "0.001")),
//! )?;
//! // The offer is subscribed once `start` returns; a requestor on another
//! // daemon with the same subnet (`golem.node.debug.subnet`) now sees it.
//! let status = agent.status()?;
//! assert_eq!(status["offers"].as_array().map(Vec::len), Some(1));
//! # Ok(()) }
//! ```

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::{binary_command, DaemonProcess};

/// The log line `golem-provider run` prints once its offers are subscribed.
pub const READY_LINE: &str = "provider agent ready";

/// A price list for one exe unit (`golem-provider preset create`). Amounts
/// are GLM as decimal strings; the offer's linear coeffs are
/// `[per_cpu_sec, per_duration_sec, start_fee]` for the usage vector
/// `[golem.usage.cpu_sec, golem.usage.duration_sec]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Preset {
    pub name: String,
    /// Runtime name of the exe unit: `wasmtime` or `vm`.
    pub exe_unit: String,
    pub start_fee: String,
    pub per_cpu_sec: String,
    pub per_duration_sec: String,
}

impl Preset {
    pub fn new(
        name: &str,
        exe_unit: &str,
        start_fee: &str,
        per_cpu_sec: &str,
        per_duration_sec: &str,
    ) -> Preset {
        Preset {
            name: name.into(),
            exe_unit: exe_unit.into(),
            start_fee: start_fee.into(),
            per_cpu_sec: per_cpu_sec.into(),
            per_duration_sec: per_duration_sec.into(),
        }
    }
}

/// How to start the agent; build with [`ProviderOptions::new`] and the setters.
#[derive(Debug, Clone, Default)]
pub struct ProviderOptions {
    /// `golem.node.debug.subnet` of the offers (`--subnet`).
    pub subnet: String,
    /// `golem.node.id.name` (`--node-name`); defaults to the data dir's name.
    pub node_name: Option<String>,
    /// Runtime names to offer (`--exe-units`); empty means every working one.
    pub exe_units: Vec<String>,
    /// Presets created with `golem-provider preset create` before the first start.
    pub presets: Vec<Preset>,
    /// `--max-agreements`.
    pub max_agreements: Option<u32>,
    /// Extra lines of `<data-dir>/provider.toml` (written before the first start),
    /// e.g. `"debit-note-interval-sec = 2\n"`.
    pub config_toml: String,
    /// Extra `golem-provider run` arguments.
    pub extra_args: Vec<String>,
    /// Extra environment variables of the agent.
    pub env: Vec<(String, String)>,
    /// Substrings of ERROR lines the test expects from the agent (also when it
    /// fails to start).
    pub allowed_errors: Vec<String>,
    /// `--allow-private-transfers`. [`ProviderOptions::new`] turns it on: the
    /// harness serves task packages and files on loopback (`FileServer`), which
    /// a provider refuses by default (the exploit tests that need it off use
    /// the stand-in agent's `StandinOptions`).
    pub allow_private_transfers: bool,
    /// The daemon's REST API as the agent reaches it, when not directly (e.g.
    /// through a [`ReplyTrap`](crate::proxy::ReplyTrap)); `--api-url`.
    pub api_url: Option<String>,
    /// The network namespace to run the agent in (`ip netns exec`): its
    /// daemon's, whose REST API listens on that namespace's loopback.
    pub netns: Option<String>,
}

impl ProviderOptions {
    pub fn new(subnet: &str) -> ProviderOptions {
        ProviderOptions {
            subnet: subnet.into(),
            allow_private_transfers: true,
            ..ProviderOptions::default()
        }
    }

    pub fn node_name(mut self, name: &str) -> Self {
        self.node_name = Some(name.into());
        self
    }

    pub fn exe_units(mut self, runtimes: &[&str]) -> Self {
        self.exe_units = runtimes.iter().map(|runtime| runtime.to_string()).collect();
        self
    }

    pub fn preset(mut self, preset: Preset) -> Self {
        self.presets.push(preset);
        self
    }

    pub fn max_agreements(mut self, max: u32) -> Self {
        self.max_agreements = Some(max);
        self
    }

    /// Append lines to `provider.toml`.
    pub fn config(mut self, toml: &str) -> Self {
        self.config_toml.push_str(toml);
        if !self.config_toml.ends_with('\n') {
            self.config_toml.push('\n');
        }
        self
    }

    pub fn arg(mut self, arg: &str) -> Self {
        self.extra_args.push(arg.into());
        self
    }

    pub fn allow_error(mut self, substring: &str) -> Self {
        self.allowed_errors.push(substring.into());
        self
    }

    pub fn env(mut self, name: &str, value: &str) -> Self {
        self.env.push((name.into(), value.into()));
        self
    }

    /// Run the agent inside network namespace `netns` (its daemon's).
    pub fn netns(mut self, netns: &str) -> Self {
        self.netns = Some(netns.into());
        self
    }

    /// Reach the daemon's REST API at `url` instead of its own address.
    pub fn api_url(mut self, url: &str) -> Self {
        self.api_url = Some(url.into());
        self
    }
}

/// One `golem-provider run` process beside a daemon.
pub struct ProviderAgent {
    pub data_dir: PathBuf,
    /// The daemon's `<data-dir>/bus.sock`; the agent is not told it (it asks
    /// the daemon), tests compare it with what the agent found.
    pub bus_socket: PathBuf,
    /// Where the agent reaches its daemon's REST API (the daemon's own URL
    /// unless [`ProviderOptions::api_url`] says otherwise); each (re)start
    /// uses the value it has then.
    pub api_url: String,
    pub app_key: String,
    pub options: ProviderOptions,
    log_path: PathBuf,
    child: Option<Child>,
    /// Substrings of ERROR lines this test expects.
    pub allowed_errors: Vec<String>,
}

impl ProviderAgent {
    /// Write the config and presets into `data_dir`, start `golem-provider run`
    /// against `daemon`, and wait (≤ 30 s) until its offers are subscribed.
    pub fn start(
        daemon: &DaemonProcess,
        data_dir: &Path,
        options: ProviderOptions,
    ) -> anyhow::Result<ProviderAgent> {
        std::fs::create_dir_all(data_dir)?;
        if !options.config_toml.is_empty() {
            std::fs::write(data_dir.join("provider.toml"), &options.config_toml)?;
        }
        let mut agent = ProviderAgent {
            data_dir: data_dir.to_path_buf(),
            bus_socket: daemon.data_dir.join("bus.sock"),
            api_url: options
                .api_url
                .clone()
                .unwrap_or_else(|| daemon.api_url.clone()),
            app_key: daemon.app_key.clone(),
            log_path: data_dir.join("agent.log"),
            allowed_errors: options.allowed_errors.clone(),
            options,
            child: None,
        };
        for preset in agent.options.presets.clone() {
            let output = agent.cli(&[
                "preset",
                "create",
                "--name",
                &preset.name,
                "--exe-unit",
                &preset.exe_unit,
                "--start-fee",
                &preset.start_fee,
                "--cpu-sec",
                &preset.per_cpu_sec,
                "--duration-sec",
                &preset.per_duration_sec,
            ])?;
            crate::stdout_of(output).context("creating a preset")?;
        }
        agent.spawn()?;
        Ok(agent)
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        let already = self.ready_lines();
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)?;
        let options = &self.options;
        let node_name = options.node_name.clone().unwrap_or_else(|| {
            self.data_dir
                .file_name()
                .map(|name| name.to_string_lossy().into_owned())
                .unwrap_or_else(|| "provider".into())
        });
        let mut command = binary_command("golem-provider", options.netns.as_deref());
        command
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(["--api-url", &self.api_url, "--app-key", &self.app_key])
            .args(["--log-format", "json"])
            .arg("run")
            .args(["--subnet", &options.subnet, "--node-name", &node_name]);
        if !options.exe_units.is_empty() {
            command.args(["--exe-units", &options.exe_units.join(",")]);
        }
        if let Some(max) = options.max_agreements {
            command.args(["--max-agreements", &max.to_string()]);
        }
        if options.allow_private_transfers {
            command.arg("--allow-private-transfers");
        }
        let child = command
            .args(&options.extra_args)
            .env("RUST_LOG", "info")
            // As the original's agent is started: the daemon's URL and app-key
            // only; the agent asks its daemon where the bus socket is.
            .env_remove("GOLEM_BUS_SOCKET")
            .env_remove("GOLEM_DATA_DIR")
            .envs(options.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log_file))
            .spawn()
            .context("spawning golem-provider")?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if self.ready_lines() > already {
                return Ok(());
            }
            if let Some(child) = self.child.as_mut() {
                if let Some(status) = child.try_wait()? {
                    self.child = None;
                    bail!(
                        "golem-provider exited with {status} before it was ready:\n{}",
                        self.log()
                    );
                }
            }
            if Instant::now() > deadline {
                bail!("golem-provider not ready within 30 s:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn ready_lines(&self) -> usize {
        self.log()
            .lines()
            .filter(|line| line.contains(READY_LINE))
            .count()
    }

    /// The agent's JSON log (one object per line), all runs appended.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Wait until a log line contains `needle`; returns that line.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> anyhow::Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(line) = self.log().lines().find(|line| line.contains(needle)) {
                return Ok(line.to_string());
            }
            if Instant::now() > deadline {
                bail!(
                    "no log line with {needle:?} within {timeout:?}:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGTERM and wait (≤ 15 s) for a clean exit; returns the exit code.
    pub fn stop(&mut self) -> anyhow::Result<i32> {
        let Some(mut child) = self.child.take() else {
            bail!("golem-provider is not running")
        };
        kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM)?;
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = child.try_wait()? {
                return status
                    .code()
                    .ok_or_else(|| anyhow::anyhow!("golem-provider died by a signal"));
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                bail!("golem-provider did not stop within 15 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL (no cleanup by the agent) and reap.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Start again on the same data dir with the same options (after
    /// [`stop`](Self::stop) or [`kill`](Self::kill); kills a running agent first).
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.kill();
        self.spawn()
    }

    /// Run `golem-provider ARGS` (e.g. `["preset", "list", "--json"]`) on this
    /// agent's data dir and daemon.
    pub fn cli(&self, args: &[&str]) -> anyhow::Result<std::process::Output> {
        Ok(
            binary_command("golem-provider", self.options.netns.as_deref())
                .arg("--data-dir")
                .arg(&self.data_dir)
                .args(["--api-url", &self.api_url, "--app-key", &self.app_key])
                .args(args)
                .output()?,
        )
    }

    /// `golem-provider status --json`: `offers`, `agreements`, `activities`, `earnings`.
    pub fn status(&self) -> anyhow::Result<serde_json::Value> {
        Ok(serde_json::from_str(&crate::stdout_of(
            self.cli(&["status", "--json"])?,
        )?)?)
    }

    fn unexpected_errors(&self) -> Vec<String> {
        self.log()
            .lines()
            .filter(|line| line.contains("\"level\":\"ERROR\""))
            .filter(|line| {
                !self
                    .allowed_errors
                    .iter()
                    .any(|allowed| line.contains(allowed.as_str()))
            })
            .map(|line| format!("[golem-provider] {line}"))
            .collect()
    }
}

impl Drop for ProviderAgent {
    fn drop(&mut self) {
        self.kill();
        let unexpected = self.unexpected_errors();
        if !unexpected.is_empty() && !std::thread::panicking() {
            panic!(
                "golem-provider logged unexpected ERROR lines:\n{}",
                unexpected.join("\n")
            );
        }
    }
}

/// Pids of live processes whose command line has an argument equal to `arg`
/// (e.g. an activity id: finds its exe unit, `--activity-id <id>`).
pub fn processes_with_arg(arg: &str) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
                return false;
            };
            let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .map(|stat| stat.contains(") Z "))
                .unwrap_or(true);
            !zombie
                && cmdline
                    .split(|byte| *byte == 0)
                    .any(|part| part == arg.as_bytes())
        })
        .collect()
}

/// Negotiate with the real provider agent as yapapi does: subscribe `demand`,
/// counter the agent's Initial offer, then turn its Draft into an approved
/// agreement (≤ 40 s, else panics with the agent's log). Returns the agreement id.
pub async fn negotiate_with_agent(
    requestor: &golem_client::GolemClient,
    demand: &golem_model::market::DemandOfferBase,
    agent: &ProviderAgent,
) -> String {
    match try_negotiate_with_agent(requestor, demand, agent).await {
        Ok(agreement_id) => agreement_id,
        Err(reason) => panic!("the agent rejected the demand: {reason}\n{}", agent.log()),
    }
}

/// [`negotiate_with_agent`] that returns the agent's rejection reason
/// instead of panicking on it.
#[allow(clippy::unwrap_used)] // a test step: any failure fails the test here
pub async fn try_negotiate_with_agent(
    requestor: &golem_client::GolemClient,
    demand: &golem_model::market::DemandOfferBase,
    agent: &ProviderAgent,
) -> Result<String, String> {
    use golem_client::market::Side;
    use golem_model::market::{AgreementProposal, MarketEvent, ProposalState};
    let demand_id = requestor.subscribe_demand(demand).await.unwrap();
    let mut countered = false;
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        assert!(
            Instant::now() < deadline,
            "negotiation did not finish; agent log:\n{}",
            agent.log()
        );
        let events = requestor
            .market_events(Side::Demands, &demand_id, 1.0, 10)
            .await
            .unwrap();
        for event in events {
            match event {
                MarketEvent::ProposalEvent { proposal, .. }
                    if proposal.state == ProposalState::Initial && !countered =>
                {
                    requestor
                        .counter_proposal(Side::Demands, &demand_id, &proposal.proposal_id, demand)
                        .await
                        .unwrap();
                    countered = true;
                }
                MarketEvent::ProposalEvent { proposal, .. }
                    if proposal.state == ProposalState::Draft =>
                {
                    let agreement_id = requestor
                        .create_agreement(&AgreementProposal::valid_for(
                            &proposal.proposal_id,
                            Duration::from_secs(3600),
                        ))
                        .await
                        .unwrap();
                    requestor
                        .confirm_agreement(&agreement_id, None)
                        .await
                        .unwrap();
                    requestor
                        .wait_for_approval(&agreement_id, 15.0)
                        .await
                        .unwrap();
                    let _ = requestor.unsubscribe(Side::Demands, &demand_id).await;
                    return Ok(agreement_id);
                }
                MarketEvent::ProposalRejectedEvent { reason, .. } => {
                    let _ = requestor.unsubscribe(Side::Demands, &demand_id).await;
                    return Err(reason.map(|reason| reason.message).unwrap_or_default());
                }
                _ => {}
            }
        }
    }
}
