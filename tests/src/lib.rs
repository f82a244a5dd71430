//! The end-to-end Sandbox: starts the real binaries (built beforehand with
//! `cargo build --workspace --bins`) in a temporary directory, waits until they
//! are ready, and tears them down on drop, also when a test panics. At teardown
//! it fails the test if a process logged an ERROR line it was not told to expect.
#![forbid(unsafe_code)]

pub mod abuse;
pub mod anvil;
pub mod bench;
pub mod browser;
pub mod demands;
pub mod docker;
pub mod http;
pub mod lab;
pub mod negotiation;
pub mod provider;
pub mod proxy;
pub mod requestor;
pub mod script;
pub mod standin;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use golem_client::GolemClient;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// Path of a workspace binary next to the test executable's target dir.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // <target>/<profile>/deps/<test-binary>
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target profile dir");
    let path = profile_dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: build the binaries first with `cargo build --workspace --bins` (scripts/test.sh does)",
        path.display()
    );
    path
}

/// A command running workspace binary `name`, inside network namespace
/// `netns` when given (`ip netns exec` execs it, so the child's pid is the
/// binary's).
pub fn binary_command(name: &str, netns: Option<&str>) -> Command {
    match netns {
        Some(netns) => {
            let mut command = Command::new("ip");
            command.args(["netns", "exec", netns]).arg(binary(name));
            command
        }
        None => Command::new(binary(name)),
    }
}

/// A sandbox of real processes in one temporary directory.
pub struct Sandbox {
    pub dir: tempfile::TempDir,
    daemons: Vec<DaemonProcess>,
}

impl Default for Sandbox {
    fn default() -> Self {
        Self::new()
    }
}

impl Sandbox {
    pub fn new() -> Self {
        Sandbox {
            dir: tempfile::Builder::new()
                .prefix("golem-sandbox-")
                .tempdir()
                .expect("temp dir"),
            daemons: Vec::new(),
        }
    }

    /// Start a daemon named `name` with its own data dir under the sandbox.
    pub fn daemon(&mut self, name: &str) -> anyhow::Result<&mut DaemonProcess> {
        self.daemon_with(name, &[])
    }

    /// Start a daemon with extra `golem-daemon run` arguments.
    pub fn daemon_with(
        &mut self,
        name: &str,
        extra_args: &[&str],
    ) -> anyhow::Result<&mut DaemonProcess> {
        let data_dir = self.dir.path().join(name);
        let process = DaemonProcess::start(name, &data_dir, extra_args)?;
        self.daemons.push(process);
        Ok(self.daemons.last_mut().expect("just pushed"))
    }

    /// Start a daemon inside network namespace `netns` with extra `run`
    /// arguments and environment variables.
    pub fn daemon_in_netns(
        &mut self,
        name: &str,
        extra_args: &[&str],
        env: &[(&str, &str)],
        netns: &str,
    ) -> anyhow::Result<&mut DaemonProcess> {
        let data_dir = self.dir.path().join(name);
        let process =
            DaemonProcess::start_in_netns_with_env(name, &data_dir, extra_args, env, netns)?;
        self.daemons.push(process);
        Ok(self.daemons.last_mut().expect("just pushed"))
    }

    /// The usual pair: provider daemon "p" (index 0) and requestor daemon "r"
    /// (index 1) bootstrapped from it over loopback.
    pub fn provider_and_requestor(&mut self) -> anyhow::Result<()> {
        let bootstrap = self.daemon("p")?.p2p_address()?;
        self.daemon_with("r", &["--bootstrap", &bootstrap])?;
        Ok(())
    }

    pub fn daemons(&mut self) -> &mut [DaemonProcess] {
        &mut self.daemons
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let mut unexpected = Vec::new();
        for daemon in &mut self.daemons {
            daemon.kill();
            unexpected.extend(daemon.unexpected_errors());
        }
        if !unexpected.is_empty() && !std::thread::panicking() {
            panic!(
                "processes logged unexpected ERROR lines:\n{}",
                unexpected.join("\n")
            );
        }
    }
}

/// One `golem-daemon run` process.
pub struct DaemonProcess {
    pub name: String,
    /// Arguments given to `run` at start, reused on restart.
    pub extra_args: Vec<String>,
    pub data_dir: PathBuf,
    pub app_key: String,
    pub api_url: String,
    log_path: PathBuf,
    child: Option<Child>,
    /// The network namespace it runs in (`ip netns exec`), kept for restarts.
    pub netns: Option<String>,
    /// Extra environment variables given at start, reused on restart.
    pub env: Vec<(String, String)>,
    /// Substrings of ERROR lines this test expects.
    pub allowed_errors: Vec<String>,
}

/// Lines of a JSON log whose level is ERROR.
fn error_lines(log: &str) -> impl Iterator<Item = &str> {
    log.lines()
        .filter(|line| line.contains("\"level\":\"ERROR\""))
}

impl DaemonProcess {
    /// Start `golem-daemon run` on free ports and wait until its REST API answers.
    pub fn start(
        name: &str,
        data_dir: &Path,
        extra_args: &[&str],
    ) -> anyhow::Result<DaemonProcess> {
        Self::start_with_env(name, data_dir, extra_args, &[])
    }

    /// [`start`](Self::start) with extra environment variables for the daemon.
    pub fn start_with_env(
        name: &str,
        data_dir: &Path,
        extra_args: &[&str],
        env: &[(&str, &str)],
    ) -> anyhow::Result<DaemonProcess> {
        Self::spawn(name, data_dir, extra_args, env, None)
    }

    /// Start the daemon inside the network namespace `netns` (`ip netns exec`).
    pub fn start_in_netns(
        name: &str,
        data_dir: &Path,
        extra_args: &[&str],
        netns: &str,
    ) -> anyhow::Result<DaemonProcess> {
        Self::spawn(name, data_dir, extra_args, &[], Some(netns))
    }

    /// [`start_in_netns`](Self::start_in_netns) with extra environment variables.
    pub fn start_in_netns_with_env(
        name: &str,
        data_dir: &Path,
        extra_args: &[&str],
        env: &[(&str, &str)],
        netns: &str,
    ) -> anyhow::Result<DaemonProcess> {
        Self::spawn(name, data_dir, extra_args, env, Some(netns))
    }

    fn spawn(
        name: &str,
        data_dir: &Path,
        extra_args: &[&str],
        env: &[(&str, &str)],
        netns: Option<&str>,
    ) -> anyhow::Result<DaemonProcess> {
        std::fs::create_dir_all(data_dir.parent().unwrap_or(data_dir))?;
        let log_path = data_dir.with_extension("log");
        let app_key = format!("{name}-appkey");
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)?;
        let child = binary_command("golem-daemon", netns)
            .arg("run")
            .arg("--data-dir")
            .arg(data_dir)
            .args([
                "--api-addr",
                "127.0.0.1:0",
                "--p2p-listen",
                "/ip4/127.0.0.1/tcp/0",
                "--log-format",
                "json",
            ])
            .args(extra_args)
            .env("GOLEM_AUTOCONF_APPKEY", &app_key)
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log_file))
            .spawn()
            .context("spawning golem-daemon")?;
        let mut process = DaemonProcess {
            name: name.to_string(),
            extra_args: extra_args.iter().map(|arg| arg.to_string()).collect(),
            data_dir: data_dir.to_path_buf(),
            app_key,
            api_url: String::new(),
            log_path,
            child: Some(child),
            netns: netns.map(str::to_string),
            env: env
                .iter()
                .map(|(name, value)| (name.to_string(), value.to_string()))
                .collect(),
            allowed_errors: Vec::new(),
        };
        process.api_url = process.wait_ready(Duration::from_secs(30))?;
        Ok(process)
    }

    /// Wait for this run's "REST API ready" log line and return the API URL.
    fn wait_ready(&mut self, timeout: Duration) -> anyhow::Result<String> {
        let deadline = Instant::now() + timeout;
        let already = self
            .log()
            .lines()
            .filter(|line| line.contains("REST API ready"))
            .count();
        loop {
            let log = self.log();
            if let Some(line) = log
                .lines()
                .filter(|line| line.contains("REST API ready"))
                .nth(already)
            {
                let entry: serde_json::Value =
                    serde_json::from_str(line).context("parsing the ready line")?;
                let addr = entry["api_addr"]
                    .as_str()
                    .ok_or_else(|| anyhow!("ready line without api_addr"))?;
                return Ok(format!("http://{addr}"));
            }
            if let Some(child) = self.child.as_mut() {
                if let Some(status) = child.try_wait()? {
                    bail!(
                        "golem-daemon {} exited with {status} before it was ready:\n{log}",
                        self.name
                    );
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "golem-daemon {} not ready within {timeout:?}:\n{log}",
                    self.name
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    pub fn client(&self) -> GolemClient {
        GolemClient::new(&self.api_url, &self.app_key)
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGTERM and wait for a clean exit; returns the exit code.
    pub fn stop(&mut self) -> anyhow::Result<i32> {
        let Some(mut child) = self.child.take() else {
            bail!("{} is not running", self.name)
        };
        kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM)?;
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = child.try_wait()? {
                return status
                    .code()
                    .ok_or_else(|| anyhow!("{} died by a signal", self.name));
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                bail!("{} did not stop within 15 s of SIGTERM", self.name);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Start again on the same data dir (after [`stop`](Self::stop) or [`kill`](Self::kill)).
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.kill();
        let args: Vec<&str> = self.extra_args.iter().map(String::as_str).collect();
        let env: Vec<(&str, &str)> = self
            .env
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_str()))
            .collect();
        let mut fresh = DaemonProcess::spawn(
            &self.name,
            &self.data_dir,
            &args,
            &env,
            self.netns.as_deref(),
        )?;
        self.api_url = std::mem::take(&mut fresh.api_url);
        self.child = fresh.child.take();
        Ok(())
    }

    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Run a `golem-daemon` management command on this daemon's data dir.
    pub fn cli(&self, args: &[&str]) -> anyhow::Result<std::process::Output> {
        daemon_cli(&self.data_dir, args)
    }

    /// `net status --json` of the running daemon.
    pub fn net_status(&self) -> anyhow::Result<serde_json::Value> {
        Ok(serde_json::from_str(&stdout_of(
            self.cli(&["net", "status", "--json"])?,
        )?)?)
    }

    /// The NodeId of this daemon.
    pub fn node_id(&self) -> anyhow::Result<String> {
        stdout_of(self.cli(&["id", "show"])?)
    }

    /// A full multiaddr (`.../p2p/<peer-id>`) other daemons can bootstrap from.
    pub fn p2p_address(&self) -> anyhow::Result<String> {
        let status = self.net_status()?;
        let listen = status["listen_addrs"][0]
            .as_str()
            .ok_or_else(|| anyhow!("no listen address"))?;
        let peer_id = status["peer_id"]
            .as_str()
            .ok_or_else(|| anyhow!("no peer id"))?;
        Ok(format!("{listen}/p2p/{peer_id}"))
    }

    /// A bus client connected to this daemon's socket.
    pub async fn bus(&self) -> anyhow::Result<golem_bus::BusClient> {
        Ok(golem_bus::BusClient::connect(&self.data_dir.join("bus.sock"), "e2e-test").await?)
    }

    fn unexpected_errors(&self) -> Vec<String> {
        let log = self.log();
        error_lines(&log)
            .filter(|line| {
                !self
                    .allowed_errors
                    .iter()
                    .any(|allowed| line.contains(allowed.as_str()))
            })
            .map(|line| format!("[{}] {line}", self.name))
            .collect()
    }
}

impl Drop for DaemonProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Poll `check` until it returns Some or `timeout` passes.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return Ok(value);
        }
        if Instant::now() > deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Run a command with a deadline; kill it and fail the test if it hangs.
pub fn output_within(mut command: Command, timeout: Duration) -> std::process::Output {
    let child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning the command");
    let pid = child.id();
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = sender.send(child.wait_with_output());
    });
    match receiver.recv_timeout(timeout) {
        Ok(output) => output.expect("waiting for the command"),
        Err(_) => {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
            panic!("command did not finish within {timeout:?}");
        }
    }
}

/// Run `golem-daemon ARGS --data-dir DIR` and capture its output.
pub fn daemon_cli(data_dir: &Path, args: &[&str]) -> anyhow::Result<std::process::Output> {
    Ok(Command::new(binary("golem-daemon"))
        .args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .output()?)
}

/// Stdout of a successful command, trimmed; an error with stderr otherwise.
pub fn stdout_of(output: std::process::Output) -> anyhow::Result<String> {
    if !output.status.success() {
        bail!(
            "command failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(String::from_utf8(output.stdout)?.trim().to_string())
}

/// The lines a child writes to `stream` (its piped stdout or stderr), read
/// by a thread of their own so a test can wait for them with a timeout.
pub fn lines_of(stream: impl std::io::Read + Send + 'static) -> std::sync::mpsc::Receiver<String> {
    use std::io::BufRead;
    let (lines_tx, lines) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stream)
            .lines()
            .map_while(Result::ok)
        {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    lines
}
