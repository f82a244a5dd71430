//! The [`Runtime`] trait: everything a kind of exe unit (WASM, VM) implements.
//! The core owns the bus, the state machine, capture, transfers, package
//! download and usage; a runtime only deploys a verified package, starts it,
//! runs entry points and stops them.

use std::path::PathBuf;
use std::time::Duration;

use std::collections::BTreeMap;

use async_trait::async_trait;
use golem_model::activity::{DeployNetwork, DeployVolumes};
use tokio::sync::mpsc;

/// A runtime failure; its message becomes the command's Error result verbatim,
/// so it should say what went wrong in the requestor's terms.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct RuntimeError(pub String);

impl RuntimeError {
    pub fn new(message: impl Into<String>) -> Self {
        RuntimeError(message.into())
    }
}

/// What `deploy` gets: the package, already downloaded and hash-checked by the core.
#[derive(Debug, Clone)]
pub struct DeployRequest {
    /// The verified task package in the cache dir (a zip or a bare `.wasm`, an image...).
    pub package: PathBuf,
    /// Where the package came from (the URL part of the task package); its
    /// file name can name a bare module.
    pub package_url: String,
    /// The activity's own directory; volumes live under it.
    pub work_dir: PathBuf,
    /// Shared across activities of this provider (compiled modules, images).
    pub cache_dir: PathBuf,
    /// Volumes the requestor asked for in `deploy.volumes`, if any.
    pub volumes: Option<DeployVolumes>,
    pub env: Vec<(String, String)>,
    /// How this activity's package may be fetched, for a runtime that fetches
    /// it itself ([`Runtime::accepts_package_reference`]): pass it to
    /// [`crate::package::fetch_with_policy`].
    pub fetch_policy: crate::package::FetchPolicy,
    /// `deploy.net`: the VPNs the requestor attaches the activity to. A
    /// runtime without network interfaces refuses a non-empty list.
    pub net: Vec<DeployNetwork>,
    /// `deploy.hosts`: name -> IP, for the payload's `/etc/hosts`.
    pub hosts: BTreeMap<String, String>,
    /// `deploy.hostname`.
    pub hostname: Option<String>,
}

/// How a runtime may use a volume (the manifest's mount-point kind).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VolumeAccess {
    ReadOnly,
    ReadWrite,
    WriteOnly,
}

/// A directory of the work dir seen by the payload at `guest_path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Volume {
    /// Absolute path inside the container, e.g. `/golem/output`.
    pub guest_path: String,
    /// Directory under the activity's work dir.
    pub host_path: PathBuf,
    pub access: VolumeAccess,
}

/// The result of `deploy`: the volumes that `container:` transfers may reach.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Deployment {
    pub volumes: Vec<Volume>,
}

/// One `run` command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunRequest {
    pub entry_point: String,
    pub args: Vec<String>,
    /// Wall-time limit from the agreement; the runtime stops the command with
    /// an error when it is reached (the core also kills it a little later).
    pub time_limit: Option<Duration>,
}

/// A chunk of the payload's output, in the order it was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutputChunk {
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
}

/// Where a running command writes its output. Bounded: a runtime that writes
/// faster than the core captures waits (`blocking_send` from a worker thread).
pub type OutputSender = mpsc::Sender<OutputChunk>;

/// How many chunks may wait between a runtime and the core.
pub const OUTPUT_CHANNEL_CAPACITY: usize = 64;

#[async_trait]
pub trait Runtime: Send + Sync + 'static {
    /// Offer properties this runtime contributes (`golem.runtime.name`, version,
    /// capabilities), printed by `<exe-unit> offer-template`.
    fn offer_template() -> serde_json::Value
    where
        Self: Sized;

    /// [`Runtime::offer_template`], or an error when this runtime cannot serve
    /// on this machine (e.g. no container engine); `offer-template` then exits 1
    /// with the message so the provider agent does not offer the runtime.
    fn offer_template_checked() -> Result<serde_json::Value, RuntimeError>
    where
        Self: Sized,
    {
        Ok(Self::offer_template())
    }

    /// Whether this runtime resolves `task_package` itself (e.g. `docker:<ref>`,
    /// or a `hash:sha3:<hex>:<url>` it fetches with
    /// [`crate::package::fetch_with_policy`] with `fetch_policy` to process while it downloads)
    /// instead of the core downloading it first; `deploy` then gets an empty
    /// `package` path and the whole task package as `package_url`.
    fn accepts_package_reference(&self, _task_package: &str) -> bool {
        false
    }

    /// Called once, when the exe unit is on the daemon's bus and before any
    /// command: a runtime that serves bus addresses of its own (the VM
    /// unit's VPN at `/public/vpn/<networkId>`) keeps a clone of `bus`.
    fn attach_bus(&self, _bus: &golem_bus::BusClient) {}

    /// Prepare the package: validate it and set up its volumes under the work dir.
    async fn deploy(&self, request: DeployRequest) -> Result<Deployment, RuntimeError>;

    /// Start the deployed payload (for runtimes with a long-lived payload).
    async fn start(&self, args: Vec<String>) -> Result<(), RuntimeError>;

    /// Run an entry point to completion, streaming its output through `output`;
    /// returns its exit code. A non-zero code is reported as an Error result.
    async fn run(&self, request: RunRequest, output: OutputSender) -> Result<i32, RuntimeError>;

    /// Stop the command running now, if any; its `run` then returns an error.
    async fn kill(&self) -> Result<(), RuntimeError>;

    /// Release everything; called once before the exe unit exits.
    async fn shutdown(&self) -> Result<(), RuntimeError>;

    /// CPU seconds used by the payload so far, when the runtime measures it
    /// itself (e.g. a container); `None` makes the core count this process and
    /// its children.
    fn cpu_seconds(&self) -> Option<f64> {
        None
    }
}

/// Create one directory per mount point under `work_dir` (`vol-<n>`) and
/// describe them as volumes; for runtimes whose package names its mount points.
pub fn prepare_volumes(
    work_dir: &std::path::Path,
    mount_points: &[(String, VolumeAccess)],
) -> std::io::Result<Vec<Volume>> {
    let root = work_dir.join("volumes");
    mount_points
        .iter()
        .enumerate()
        .map(|(index, (guest_path, access))| {
            let host_path = root.join(format!("vol-{index}"));
            std::fs::create_dir_all(&host_path)?;
            Ok(Volume {
                guest_path: guest_path.clone(),
                host_path,
                access: *access,
            })
        })
        .collect()
}
