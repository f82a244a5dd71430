//! The requestor in end-to-end tests: [`Network`] starts a requestor daemon and
//! N provider daemons, each with the real `golem-provider` on one
//! subnet, and runs the real `golem-requestor` binary against the requestor
//! daemon ([`Network::requestor`]); [`demo_job`] copies `examples/demo` (the
//! job of `scripts/demo.sh`) into a directory, optionally with more tasks.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::Context;

use crate::provider::{Preset, ProviderAgent, ProviderOptions};
use crate::{binary, Sandbox};

/// A requestor daemon (`sandbox.daemons()[0]`) and providers on one subnet.
pub struct Network {
    pub sandbox: Sandbox,
    pub subnet: String,
    /// One agent per provider daemon; `providers[i]` runs beside `sandbox.daemons()[i + 1]`.
    pub providers: Vec<ProviderAgent>,
}

impl Network {
    /// Start the requestor daemon and `count` providers named `provider-1`...,
    /// each with `preset` (WASM prices) and extra `provider.toml` lines.
    pub fn start(
        count: usize,
        subnet: &str,
        preset: Option<Preset>,
        config_toml: &str,
    ) -> anyhow::Result<Network> {
        Self::start_with_runtimes(count, subnet, &["wasmtime"], preset, config_toml)
    }

    /// [`start`](Self::start) with providers offering `runtimes` (`wasmtime`, `vm`).
    pub fn start_with_runtimes(
        count: usize,
        subnet: &str,
        runtimes: &[&str],
        preset: Option<Preset>,
        config_toml: &str,
    ) -> anyhow::Result<Network> {
        Self::start_each(count, subnet, runtimes, |_, options| {
            let options = options.max_agreements(4).config(config_toml);
            match &preset {
                Some(preset) => options.preset(preset.clone()),
                None => options,
            }
        })
    }

    /// Start the requestor daemon and `count` providers offering `runtimes`,
    /// each agent's options shaped by `configure(index from 1, options)`.
    pub fn start_each(
        count: usize,
        subnet: &str,
        runtimes: &[&str],
        configure: impl Fn(usize, ProviderOptions) -> ProviderOptions,
    ) -> anyhow::Result<Network> {
        let mut sandbox = Sandbox::new();
        sandbox.daemon("requestor")?;
        let bootstrap = sandbox.daemons()[0].p2p_address()?;
        let mut providers = Vec::new();
        for index in 1..=count {
            let name = format!("provider-{index}");
            let agent_dir = sandbox.path().join(format!("{name}-agent"));
            sandbox.daemon_with(&name, &["--bootstrap", &bootstrap])?;
            let daemon = &sandbox.daemons()[index];
            let options = configure(
                index,
                ProviderOptions::new(subnet)
                    .node_name(&name)
                    .exe_units(runtimes),
            );
            providers.push(
                ProviderAgent::start(daemon, &agent_dir, options)
                    .with_context(|| format!("starting golem-provider {name}"))?,
            );
        }
        Ok(Network {
            sandbox,
            subnet: subnet.to_string(),
            providers,
        })
    }

    /// Start one more requestor daemon (bootstrapped from the first);
    /// returns its index in `sandbox.daemons()` for [`Network::requestor_on`].
    pub fn add_requestor(&mut self, name: &str) -> anyhow::Result<usize> {
        let bootstrap = self.sandbox.daemons()[0].p2p_address()?;
        self.sandbox
            .daemon_with(name, &["--bootstrap", &bootstrap])?;
        Ok(self.sandbox.daemons().len() - 1)
    }

    /// `golem-requestor --subnet <subnet> ARGS` against the requestor daemon.
    pub fn requestor(&mut self, args: &[&str]) -> Command {
        self.requestor_on(0, args)
    }

    /// `golem-requestor --subnet <subnet> ARGS` against `sandbox.daemons()[daemon]`.
    pub fn requestor_on(&mut self, daemon: usize, args: &[&str]) -> Command {
        let daemon = &self.sandbox.daemons()[daemon];
        let mut command = Command::new(binary("golem-requestor"));
        command
            .env("YAGNA_API_URL", &daemon.api_url)
            .env("YAGNA_APPKEY", &daemon.app_key)
            .args(["--subnet", &self.subnet])
            .args(args)
            .stdin(Stdio::null());
        command
    }

    /// A client of the requestor daemon.
    pub fn requestor_client(&mut self) -> golem_client::GolemClient {
        self.sandbox.daemons()[0].client()
    }
}

/// The repository's root directory.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// Copy `examples/demo` into `dir` and, when `extra_tasks > 0`, append that many
/// tasks (`t0`, `t1`, ...) transforming copies of `alice.txt`; returns the job file.
pub fn demo_job(dir: &Path, extra_tasks: usize) -> anyhow::Result<PathBuf> {
    let source = repo_root().join("examples/demo");
    std::fs::create_dir_all(dir.join("inputs"))?;
    for name in ["transform.wat", "job.toml"] {
        std::fs::copy(source.join(name), dir.join(name))?;
    }
    for entry in std::fs::read_dir(source.join("inputs"))? {
        let entry = entry?;
        std::fs::copy(entry.path(), dir.join("inputs").join(entry.file_name()))?;
    }
    let job = dir.join("job.toml");
    if extra_tasks > 0 {
        let alice = std::fs::read(dir.join("inputs/alice.txt"))?;
        let mut text = std::fs::read_to_string(&job)?;
        for index in 0..extra_tasks {
            std::fs::write(dir.join(format!("inputs/t{index}.txt")), &alice)?;
            text.push_str(&format!(
                "\n[[task]]\nid = \"t{index}\"\nargs = [\"{{id}}.txt\", \"{{id}}.txt\"]\n"
            ));
        }
        std::fs::write(&job, text)?;
    }
    Ok(job)
}

/// Build a `FROM scratch` image holding a static busybox and `docker save` it
/// into `dir/image.tar`; `Err` says why not (no engine, no static busybox).
pub fn busybox_image(dir: &Path, tag: &str) -> Result<PathBuf, String> {
    let engine = Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .output()
        .map_err(|error| format!("no docker command: {error}"))?;
    if !engine.status.success() {
        return Err("no Docker engine answers".into());
    }
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .map(PathBuf::from)
        .find(|path| path.exists())
        .ok_or("no busybox binary (apt-get install busybox-static)")?;
    std::fs::create_dir_all(dir).map_err(|error| error.to_string())?;
    std::fs::copy(&busybox, dir.join("busybox")).map_err(|error| error.to_string())?;
    std::fs::write(
        dir.join("Dockerfile"),
        "FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\n",
    )
    .map_err(|error| error.to_string())?;
    let built = Command::new("docker")
        .args(["build", "-q", "-t", tag])
        .arg(dir)
        .output()
        .map_err(|error| error.to_string())?;
    if !built.status.success() {
        return Err(format!(
            "cannot build a busybox image (is busybox static?): {}",
            String::from_utf8_lossy(&built.stderr)
        ));
    }
    let tarball = dir.join("image.tar");
    let saved = Command::new("docker")
        .args(["save", tag, "-o"])
        .arg(&tarball)
        .output()
        .map_err(|error| error.to_string())?;
    if !saved.status.success() {
        return Err(String::from_utf8_lossy(&saved.stderr).into_owned());
    }
    Ok(tarball)
}
