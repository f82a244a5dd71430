//! [`VmRuntime`]: the `vm` runtime. `deploy` loads (or finds) the image and
//! creates the activity's container from its id with its volumes, in the
//! provider's sandbox ([`Sandbox`]): under gVisor (the default) the image runs
//! as it does on the original (its user or root, a writable root kept in the
//! sandbox's memory, Docker's default capabilities, its `WORKDIR`); under runc
//! it runs hardened (uid 65534 unless it names a user, read-only root, no
//! capabilities). Both keep the agreement's memory, CPU and pids limits, the
//! work dir 0700 and the volumes on a `nosuid,nodev` mount. `start` starts
//! it (a static busybox `sleep` under docker's init keeps it up) and, when
//! asked with `--start-entrypoint`, the image's entry point; each `run`
//! is a `docker exec` of `entry_point args` whose stdout/stderr are streamed to
//! the core; usage comes from the engine's stats; `shutdown` removes the
//! container. Creating the runtime removes containers left by dead exe units.
//! With `deploy.net` the activity joins its network at `deploy` (see
//! [`crate::vpn`]), the container gets `hostname` and a generated read-only
//! `/etc/hosts`, and `start` gives it its VPN interface.
//! The runtime fetches `hash:` packages itself (through the core's package
//! cache) so that a tarball loads while it downloads, and bounds its image
//! cache at deploy (see [`crate::cache`]).

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use bollard::container::LogOutput;
use bollard::exec::{CreateExecOptions, StartExecResults};
use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{CreateContainerOptions, RemoveContainerOptions, StatsOptions};
use bollard::Docker;
use futures::StreamExt;
use golem_bus::BusClient;
use golem_exe_unit::package::{self, PackageLocation};
use golem_exe_unit::runtime::prepare_volumes;
use golem_exe_unit::{
    ActivityConfig, DeployRequest, Deployment, OutputChunk, OutputSender, RunRequest, Runtime,
    RuntimeError, VolumeAccess,
};
use tokio::sync::OnceCell;

use crate::cache::ImageCache;
use crate::config::{env_names, Sandbox, VmConfig, GVISOR_NETWORKED_RUNTIME, GVISOR_RUNTIME};
use crate::engine::{
    self, LABEL_ACTIVITY, LABEL_AGREEMENT, LABEL_KIND, LABEL_KIND_VALUE, LABEL_NODE,
};
use crate::image::{self, engine_message, DOCKER_REFERENCE_PREFIX};
use crate::outbound::{FilterHook, OutboundGrant, CONTAINER_INTERFACE};
use crate::vpn::interface::Framing;
use crate::vpn::network::{hosts_file, VpnNetwork};
use crate::vpn::VpnMember;

pub const RUNTIME_NAME: &str = "vm";
/// Offer property: the provider lets containers reach the network when the
/// demand asks for it with the same property.
pub const NETWORK_PROPERTY: &str = "golem.runtime.vm.network";
/// Offer property: CPU threads the provider gives an activity (a CPU limit).
pub const CPU_THREADS_PROPERTY: &str = "golem.inf.cpu.threads";
/// The volumes every container has, besides those its image declares.
pub const GOLEM_VOLUMES: &[&str] = &["/golem/input", "/golem/output", "/golem/work"];
/// A static busybox on the provider; mounted read-only to keep the container up.
pub const HOST_BUSYBOX: &str = "/bin/busybox";
const GUEST_BUSYBOX: &str = "/.golem/busybox";
/// Under gVisor, a small tmpfs where each run's wrapper leaves its pid: the
/// host pid the engine knows is `runsc exec`'s, and killing it leaves the
/// command running inside the sandbox.
const GUEST_RUN_DIR: &str = "/.golem-run";
const RUN_DIR_OPTIONS: &str = "rw,nosuid,nodev,noexec,size=64k,mode=1777";
/// `sh -c` script of a run under gVisor: note the pid, become the command.
const RUN_WRAPPER: &str = "echo $$ > /.golem-run/pid && exec \"$@\"";
/// `sh -c` script that kills the run noted by [`RUN_WRAPPER`] with its
/// process group (a run is its exec's session and group leader; its
/// children stay in the group unless they leave it).
const KILL_RUN: &str = "P=$(cat /.golem-run/pid); \
    M=$(for s in /proc/[0-9]*/stat; do read -r p c st pp g rest < $s; [ \"$g\" = \"$P\" ] && echo $p; done); \
    kill -9 $M";
/// Where the generated hosts file is mounted.
const GUEST_HOSTS: &str = "/etc/hosts";
/// The offer capability of a runtime that gives containers a VPN interface.
pub const VPN_CAPABILITY: &str = "vpn";
/// The user a container runs as when its image names none (`nobody`).
pub const DEFAULT_USER: &str = "65534:65534";
pub const PIDS_LIMIT: i64 = 128;
/// The pids limit under gVisor. There it counts the sandbox kernel's host
/// threads, not the image's processes (gVisor's tasks are not host
/// processes): 128 threads end a sandbox running a few hundred processes. A
/// fork bomb inside is bounded by this (the sandbox ends when its kernel
/// cannot get a thread) and by the memory limit.
pub const GVISOR_PIDS_LIMIT: i64 = 1024;
/// Offer property: the sandbox containers run in, `gvisor` or `runc`.
pub const SANDBOX_PROPERTY: &str = "golem.runtime.vm.sandbox";
/// The offer capability of a runtime that starts the image's entry point on
/// `start` when its arguments hold [`START_ENTRYPOINT_ARG`] (the original's).
pub const START_ENTRYPOINT_CAPABILITY: &str = "start-entrypoint";
pub const START_ENTRYPOINT_ARG: &str = "--start-entrypoint";
pub const TMPFS_OPTIONS: &str = "rw,nosuid,nodev,size=64m";
/// The VPN's network holder under gVisor runs one `sleep` (and docker's init).
const NETWORK_HOLDER_PIDS: i64 = 8;
const NETWORK_HOLDER_MEMORY_BYTES: i64 = 16 << 20;
/// Memory limit when the agreement sets none.
pub const DEFAULT_MEMORY_BYTES: i64 = 1 << 30;
/// The smallest memory limit the engine accepts.
const MIN_MEMORY_BYTES: i64 = 6 << 20;
const STATS_PERIOD: Duration = Duration::from_secs(1);

/// The limits and grants of this activity's agreement.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    pub memory_bytes: i64,
    pub nano_cpus: Option<i64>,
    pub pids: i64,
    pub network: bool,
}

impl Limits {
    pub fn from_agreement(agreement: &golem_exe_unit::Agreement) -> Limits {
        let memory_bytes = agreement
            .memory_limit_bytes()
            .map(|bytes| i64::try_from(bytes).unwrap_or(i64::MAX))
            .unwrap_or(DEFAULT_MEMORY_BYTES)
            .max(MIN_MEMORY_BYTES);
        let nano_cpus = agreement
            .offer
            .get(CPU_THREADS_PROPERTY)
            .and_then(serde_json::Value::as_f64)
            .filter(|threads| threads.is_finite() && *threads > 0.0)
            // The engine refuses more CPUs than the machine has.
            .map(|threads| {
                let available = std::thread::available_parallelism()
                    .map(|count| count.get() as f64)
                    .unwrap_or(1.0);
                (threads.min(available) * 1e9) as i64
            });
        let granted = |properties: &golem_model::properties::Properties| {
            properties
                .get(NETWORK_PROPERTY)
                .and_then(serde_json::Value::as_bool)
                == Some(true)
        };
        Limits {
            memory_bytes,
            nano_cpus,
            pids: PIDS_LIMIT,
            network: granted(&agreement.offer) && granted(&agreement.demand),
        }
    }

    /// The pids limit the container gets in `sandbox` (gVisor's counts its
    /// kernel's host threads: see [`GVISOR_PIDS_LIMIT`]).
    fn pids_in(&self, sandbox: Sandbox) -> i64 {
        match sandbox {
            Sandbox::Gvisor => GVISOR_PIDS_LIMIT.max(self.pids),
            Sandbox::Runc => self.pids,
        }
    }
}

/// The activity's container once deployed.
#[derive(Debug, Clone)]
struct Container {
    id: String,
    env: Vec<String>,
    /// Where runs start: the image's `WORKDIR` under gVisor (else
    /// `/golem/work`), always `/golem/work` under runc.
    working_dir: String,
    /// The image's `ENTRYPOINT` + `CMD`, for `--start-entrypoint`.
    image_command: Vec<String>,
    /// Runs go through [`RUN_WRAPPER`] (gVisor with the host's busybox
    /// mounted), so that `kill` can reach them inside the sandbox.
    wrapped_runs: bool,
    sandbox: Sandbox,
    /// Under gVisor with a VPN: the runc container whose network namespace
    /// (holding the VPN's TAP) this one joined; removed with it.
    network_holder: Option<String>,
}

impl Container {
    /// Where the outbound filter sees this container's packets.
    fn filter_hook(&self) -> FilterHook {
        match self.sandbox {
            Sandbox::Gvisor => FilterHook::DeviceEgress {
                device: CONTAINER_INTERFACE,
                sender: None,
            },
            Sandbox::Runc => FilterHook::Inet,
        }
    }
}

/// Where an activity's container runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Placement {
    sandbox: Sandbox,
    /// Under gVisor, whether with gVisor's own network stack (the engine's
    /// [`GVISOR_NETWORKED_RUNTIME`]); otherwise it has loopback only.
    gvisor_netstack: bool,
}

pub struct VmRuntime {
    activity_id: String,
    agreement_id: String,
    /// The provider's node id, from the agreement.
    node_id: String,
    /// The requestor's node id, from the agreement: the owner of its networks.
    requestor_id: String,
    cache_max_images: usize,
    config: VmConfig,
    limits: Limits,
    docker: OnceCell<Docker>,
    container: Mutex<Option<Container>>,
    /// The exec running now (its id), for `kill`.
    running: Mutex<Option<String>>,
    killed: AtomicBool,
    /// Container CPU time in nanoseconds, refreshed from the engine's stats.
    cpu_nanos: Arc<AtomicU64>,
    stats_task: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// The daemon's bus, for the VPN's address.
    bus: OnceLock<BusClient>,
    /// The network this activity joined at deploy.
    vpn: Mutex<Option<Arc<VpnMember>>>,
    /// The `nosuid,nodev` mount over the volumes' root, removed at shutdown.
    volumes_mount: Mutex<Option<std::path::PathBuf>>,
    /// The manifest's outbound targets, when the demand asks for outbound access.
    outbound_targets: Option<Vec<golem_model::manifest::OutboundTarget>>,
    /// The outbound access resolved at deploy, enforced from `start`.
    outbound: Mutex<Option<OutboundGrant>>,
    /// The container's init pid once the filter is loaded: its counters are
    /// read at shutdown.
    outbound_pid: Mutex<Option<u32>>,
}

/// Create the container `name` from `body`.
async fn create_named(
    docker: &Docker,
    name: &str,
    body: ContainerCreateBody,
) -> Result<bollard::models::ContainerCreateResponse, bollard::errors::Error> {
    docker
        .create_container(
            Some(CreateContainerOptions {
                name: Some(name.to_string()),
                ..Default::default()
            }),
            body,
        )
        .await
}

/// The engine's view of container `id`.
async fn inspect_by_id(
    docker: &Docker,
    id: &str,
) -> Result<bollard::models::ContainerInspectResponse, RuntimeError> {
    docker
        .inspect_container(
            id,
            None::<bollard::query_parameters::InspectContainerOptions>,
        )
        .await
        .map_err(engine_error("cannot inspect the container"))
}

/// Start the created container `id`.
async fn start_by_id(docker: &Docker, id: &str) -> Result<(), bollard::errors::Error> {
    docker
        .start_container(id, None::<bollard::query_parameters::StartContainerOptions>)
        .await
}

/// Remove container `id` (force), logging a failure: for cleanups whose
/// failure must not hide the error that caused them.
async fn remove_container(docker: &Docker, id: &str) {
    let removed = docker
        .remove_container(
            id,
            Some(RemoveContainerOptions {
                force: true,
                ..Default::default()
            }),
        )
        .await;
    if let Err(error) = removed {
        tracing::warn!(container = %id, error = %engine_message(&error), "cannot remove the container");
    }
}

/// The error of an engine call, "`what`: <the engine's message>".
fn engine_error(
    what: impl std::fmt::Display,
) -> impl FnOnce(bollard::errors::Error) -> RuntimeError {
    move |error| RuntimeError::new(format!("{what}: {}", engine_message(&error)))
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl VmRuntime {
    /// A run that ended because its container did (most often the memory limit).
    fn ended_with_container(&self, entry_point: &str, reason: &str) -> RuntimeError {
        RuntimeError::new(format!(
            "{entry_point} ended with the container: {reason} (memory limit {} MiB)",
            self.limits.memory_bytes >> 20
        ))
    }

    /// A runtime for this activity with the default settings (no
    /// `docker:<ref>` packages); first removes containers of dead exe units.
    pub fn new(config: &ActivityConfig) -> Result<VmRuntime, RuntimeError> {
        VmRuntime::with_config(config, VmConfig::default())
    }

    /// A runtime for this activity with the VM unit's own settings.
    pub fn with_config(
        config: &ActivityConfig,
        vm_config: VmConfig,
    ) -> Result<VmRuntime, RuntimeError> {
        remove_leftovers_now();
        let outbound_targets =
            crate::outbound::requested_targets(&config.agreement).map_err(RuntimeError::new)?;
        Ok(VmRuntime {
            outbound_targets,
            outbound: Mutex::new(None),
            outbound_pid: Mutex::new(None),
            activity_id: config.activity_id.clone(),
            agreement_id: config.agreement.agreement_id.clone(),
            node_id: config.agreement.provider_id.clone(),
            requestor_id: config.agreement.requestor_id.clone(),
            cache_max_images: config.cache_max_packages,
            config: vm_config,
            limits: Limits::from_agreement(&config.agreement),
            docker: OnceCell::new(),
            container: Mutex::new(None),
            running: Mutex::new(None),
            killed: AtomicBool::new(false),
            cpu_nanos: Arc::new(AtomicU64::new(0)),
            stats_task: Mutex::new(None),
            bus: OnceLock::new(),
            vpn: Mutex::new(None),
            volumes_mount: Mutex::new(None),
        })
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    async fn docker(&self) -> Result<&Docker, RuntimeError> {
        self.docker
            .get_or_try_init(|| async { engine::connect().await })
            .await
            .map_err(|error| RuntimeError::new(error.to_string()))
    }

    /// The sandbox of this activity's container: the provider's choice (else
    /// gVisor when the engine has it). A container that networks (outbound
    /// access, the network property) runs under gVisor with its own netstack
    /// when the engine has [`GVISOR_NETWORKED_RUNTIME`] (and, for outbound,
    /// the kernel has the hook the filter needs there), else under runc; a
    /// container with a VPN interface runs under runc (gVisor's netstack
    /// does not take the TUN the exe unit makes in the container's
    /// namespace).
    async fn choose_sandbox(
        &self,
        docker: &Docker,
        vpn: bool,
        outbound: bool,
    ) -> Result<Placement, RuntimeError> {
        let runtimes = engine::runtimes(docker)
            .await
            .map_err(|error| RuntimeError::new(error.to_string()))?;
        let (sandbox, warning) =
            Sandbox::resolve(self.config.sandbox, &runtimes).map_err(RuntimeError::new)?;
        if let Some(warning) = warning {
            tracing::warn!(sandbox = sandbox.as_str(), "{warning}");
        }
        let runc = Placement {
            sandbox: Sandbox::Runc,
            gvisor_netstack: false,
        };
        if sandbox == Sandbox::Runc {
            return Ok(runc);
        }
        let has_netstack = runtimes.iter().any(|name| name == GVISOR_NETWORKED_RUNTIME);
        if vpn && !has_netstack {
            tracing::info!(
                sandbox = Sandbox::Runc.as_str(),
                "the activity joins a VPN: its container runs under runc, hardened, since \
                 the engine has no runtime {GVISOR_NETWORKED_RUNTIME} for gVisor's netstack \
                 (scripts/ensure-docker.sh registers it)"
            );
            return Ok(runc);
        }
        if vpn && outbound {
            tracing::info!(
                sandbox = Sandbox::Runc.as_str(),
                "the activity joins a VPN and has outbound access: its container runs under \
                 runc, hardened, since under gVisor one of them only is supported yet"
            );
            return Ok(runc);
        }
        if outbound {
            let reason = if has_netstack {
                crate::outbound::available(FilterHook::DeviceEgress {
                    device: CONTAINER_INTERFACE,
                    sender: None,
                })
                .await
                .err()
            } else {
                Some(format!(
                    "the engine has no runtime {GVISOR_NETWORKED_RUNTIME} \
                     (scripts/ensure-docker.sh registers it)"
                ))
            };
            if let Some(reason) = reason {
                tracing::info!(
                    sandbox = Sandbox::Runc.as_str(),
                    %reason,
                    "the manifest grants outbound access: the container runs under runc, \
                     hardened, since gVisor here cannot network in the container's namespace \
                     (RFC 004)"
                );
                return Ok(runc);
            }
        }
        Ok(Placement {
            sandbox: Sandbox::Gvisor,
            gvisor_netstack: has_netstack && (vpn || outbound || self.limits.network),
        })
    }

    fn container(&self) -> Result<Container, RuntimeError> {
        lock(&self.container)
            .clone()
            .ok_or_else(|| RuntimeError::new("nothing is deployed"))
    }

    fn labels(&self) -> HashMap<String, String> {
        let pid = std::process::id();
        HashMap::from([
            (LABEL_KIND.to_string(), LABEL_KIND_VALUE.to_string()),
            (LABEL_NODE.to_string(), self.node_id.clone()),
            (LABEL_AGREEMENT.to_string(), self.agreement_id.clone()),
            (LABEL_ACTIVITY.to_string(), self.activity_id.clone()),
            (engine::LABEL_OWNER_PID.to_string(), pid.to_string()),
            (
                engine::LABEL_OWNER_START.to_string(),
                engine::process_start_time(pid)
                    .unwrap_or_default()
                    .to_string(),
            ),
        ])
    }

    /// The id of the image to run: a `docker:<ref>` (when allowed), the
    /// cached load of this package (when the cache tag still names the image
    /// recorded for it), or a fresh load (from the package file when the
    /// core's cache has it, else streamed while it downloads), tagged and
    /// recorded here.
    async fn resolve_image(
        &self,
        docker: &Docker,
        request: &DeployRequest,
        cache: &ImageCache,
    ) -> Result<String, RuntimeError> {
        let task_package = request.package_url.as_str();
        if let Some(reference) = task_package.strip_prefix(DOCKER_REFERENCE_PREFIX) {
            if !self.config.allow_docker_images {
                return Err(RuntimeError::new(docker_images_refused(reference)));
            }
            return image::ensure_reference(docker, reference).await;
        }
        let location = PackageLocation::parse(task_package)
            .map_err(|error| RuntimeError::new(error.to_string()))?;
        let digest = &location.digest;
        if let Some(image_id) = cache.lookup(docker, digest).await {
            tracing::info!(%image_id, "image found in the engine's cache");
            if let Err(error) = cache.touch(digest) {
                tracing::warn!(%error, "cannot mark the cached image as used");
            }
            return Ok(image_id);
        }
        let started = std::time::Instant::now();
        let package_file = package::cached_path(&request.cache_dir, digest);
        let loaded = if tokio::fs::metadata(&package_file).await.is_ok() {
            image::load(docker, &package_file).await?
        } else {
            image::download_and_load(
                docker,
                task_package,
                &request.cache_dir,
                &request.fetch_policy,
            )
            .await?
        };
        let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
        tracing::info!(image_id = %loaded.image_id, elapsed_ms, "image loaded");
        image::tag_cached(docker, &loaded.image_id, digest).await?;
        if let Err(error) = cache.record(digest, &loaded.image_id) {
            tracing::warn!(%error, "cannot record the cached image");
        }
        Ok(loaded.image_id)
    }

    /// Load the image and create the hardened container; `hosts_file`, when
    /// given, is mounted read-only at `/etc/hosts`.
    async fn create_container(
        &self,
        docker: &Docker,
        request: DeployRequest,
        hosts_file: Option<&Path>,
        placement: Placement,
        vpn: Option<&VpnMember>,
    ) -> Result<Deployment, RuntimeError> {
        let sandbox = placement.sandbox;
        let cache = ImageCache::new(&request.cache_dir, self.cache_max_images);
        // Containers are created from the image id, never from a name that
        // could be moved in the meantime.
        let image_id = self.resolve_image(docker, &request, &cache).await?;
        let inspect = docker
            .inspect_image(&image_id)
            .await
            .map_err(engine_error(format!("cannot inspect the image {image_id}")))?;
        let config = inspect.config.unwrap_or_default();

        // /golem/* and the image's own volumes, as host dirs under the work dir.
        let mut guest_paths: Vec<String> =
            GOLEM_VOLUMES.iter().map(|path| path.to_string()).collect();
        let mut declared: Vec<String> = config.volumes.unwrap_or_default().into_keys().collect();
        declared.sort();
        for path in declared {
            let path = path.trim_end_matches('/').to_string();
            if path.starts_with('/') && path.len() > 1 && !guest_paths.contains(&path) {
                guest_paths.push(path);
            }
        }
        let mount_points: Vec<(String, VolumeAccess)> = guest_paths
            .iter()
            .map(|path| (path.clone(), VolumeAccess::ReadWrite))
            .collect();
        close_work_dir(&request.work_dir).map_err(|error| {
            RuntimeError::new(format!(
                "cannot make {} private: {error}",
                request.work_dir.display()
            ))
        })?;
        let volumes = prepare_volumes(&request.work_dir, &mount_points).map_err(|error| {
            RuntimeError::new(format!("cannot create the container's volumes: {error}"))
        })?;
        let volumes_root = request.work_dir.join(VOLUMES_DIR);
        match mount_nosuid(&volumes_root) {
            Ok(()) => *lock(&self.volumes_mount) = Some(volumes_root),
            // Not root: the 0700 work dir still keeps local users away.
            Err(error) => tracing::warn!(
                %error,
                path = %volumes_root.display(),
                "cannot put the volumes on a nosuid,nodev mount"
            ),
        }
        let mut binds = Vec::new();
        for volume in &volumes {
            open_up(&volume.host_path).map_err(|error| {
                RuntimeError::new(format!(
                    "cannot prepare {}: {error}",
                    volume.host_path.display()
                ))
            })?;
            binds.push(format!(
                "{}:{}:rw",
                volume.host_path.display(),
                volume.guest_path
            ));
        }

        // Keep the container up with a static busybox under docker's init
        // (which reaps whatever the runs leave behind).
        let has_busybox = Path::new(HOST_BUSYBOX).is_file();
        let wrapped_runs = has_busybox && sandbox == Sandbox::Gvisor;
        let keep_alive: Vec<String> = if has_busybox {
            binds.push(format!("{HOST_BUSYBOX}:{GUEST_BUSYBOX}:ro"));
            vec![GUEST_BUSYBOX.into(), "sleep".into(), "2147483647".into()]
        } else {
            vec!["sleep".into(), "2147483647".into()]
        };
        if let Some(path) = hosts_file {
            binds.push(format!("{}:{GUEST_HOSTS}:ro", path.display()));
        }
        let image_user = config.user.as_deref().filter(|user| !user.is_empty());
        let user = match (sandbox, image_user) {
            (_, Some(user)) => user.to_string(),
            // Root, as on the original: gVisor's kernel is the boundary.
            (Sandbox::Gvisor, None) => "0:0".to_string(),
            (Sandbox::Runc, None) => DEFAULT_USER.to_string(),
        };
        let working_dir = match (sandbox, config.working_dir.as_deref()) {
            (Sandbox::Gvisor, Some(dir)) if dir.starts_with('/') => dir.to_string(),
            _ => "/golem/work".to_string(),
        };
        let image_command: Vec<String> = config
            .entrypoint
            .clone()
            .unwrap_or_default()
            .into_iter()
            .chain(config.cmd.clone().unwrap_or_default())
            .collect();
        let mut env = config.env.unwrap_or_default();
        env.extend(
            request
                .env
                .iter()
                .map(|(key, value)| format!("{key}={value}")),
        );
        // Outbound access rides Docker's bridge, filtered from `start` on.
        let networked = self.limits.network || lock(&self.outbound).is_some();
        let network_mode = if networked { "bridge" } else { "none" };
        // Under gVisor a VPN interface must be in the namespace before the
        // sandbox starts (it takes the interfaces it finds then): a holder
        // container makes the namespace now.
        let network_holder = match (sandbox, vpn) {
            (Sandbox::Gvisor, Some(vpn)) => Some(
                self.start_network_holder(
                    docker,
                    &image_id,
                    &keep_alive,
                    has_busybox,
                    request.hostname.clone(),
                    network_mode,
                    vpn,
                )
                .await?,
            ),
            _ => None,
        };
        let mut host_config = HostConfig {
            binds: Some(binds),
            network_mode: Some(match &network_holder {
                Some(holder) => format!("container:{holder}"),
                None => network_mode.into(),
            }),
            pids_limit: Some(self.limits.pids_in(sandbox)),
            memory: Some(self.limits.memory_bytes),
            memory_swap: Some(self.limits.memory_bytes),
            nano_cpus: self.limits.nano_cpus,
            init: Some(true),
            ..Default::default()
        };
        match sandbox {
            // The engine's runtime entries run gVisor with the root overlay
            // in the sandbox's memory, so root-file-system writes count
            // against the memory limit; `runsc` without a network stack of
            // its own, `runsc-net` with one on the container's interface.
            Sandbox::Gvisor => {
                host_config.runtime = Some(
                    if placement.gvisor_netstack {
                        GVISOR_NETWORKED_RUNTIME
                    } else {
                        GVISOR_RUNTIME
                    }
                    .into(),
                );
                if wrapped_runs {
                    host_config.tmpfs = Some(HashMap::from([(
                        GUEST_RUN_DIR.to_string(),
                        RUN_DIR_OPTIONS.to_string(),
                    )]));
                }
            }
            Sandbox::Runc => {
                host_config.cap_drop = Some(vec!["ALL".into()]);
                host_config.security_opt = Some(vec!["no-new-privileges".into()]);
                host_config.readonly_rootfs = Some(true);
                host_config.tmpfs = Some(HashMap::from([(
                    "/tmp".to_string(),
                    TMPFS_OPTIONS.to_string(),
                )]));
            }
        }
        let body = ContainerCreateBody {
            image: Some(image_id.clone()),
            entrypoint: Some(keep_alive),
            cmd: Some(Vec::new()),
            user: Some(user.clone()),
            env: Some(env.clone()),
            working_dir: Some(working_dir.clone()),
            labels: Some(self.labels()),
            // The engine refuses a hostname with another container's
            // namespace: the holder has it then.
            hostname: request
                .hostname
                .clone()
                .filter(|_| network_holder.is_none()),
            network_disabled: Some(!networked && network_holder.is_none()),
            host_config: Some(host_config),
            ..Default::default()
        };
        let name = container_name(&self.activity_id);
        let created = match create_named(docker, &name, body).await {
            Ok(created) => created,
            Err(error) => {
                if let Some(holder) = &network_holder {
                    remove_container(docker, holder).await;
                }
                return Err(engine_error("cannot create the container")(error));
            }
        };
        tracing::info!(container = %created.id, %name, %image_id, %user, sandbox = sandbox.as_str(), gvisor_netstack = placement.gvisor_netstack, limits = ?self.limits, "container created");
        // Now that a container holds this image, older ones may go.
        cache.evict(docker).await;
        *lock(&self.container) = Some(Container {
            id: created.id,
            env: request
                .env
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect(),
            working_dir,
            image_command,
            wrapped_runs,
            sandbox,
            network_holder,
        });
        Ok(Deployment { volumes })
    }

    /// Create and start the runc container that holds the network namespace
    /// of a gVisor container with a VPN, give that namespace the VPN's TAP
    /// and start relaying; returns the holder's id. The holder runs only
    /// `keep_alive`, hardened, with the activity's labels (so a dead exe
    /// unit's holder is collected with its container) and the hostname.
    #[allow(clippy::too_many_arguments)]
    async fn start_network_holder(
        &self,
        docker: &Docker,
        image_id: &str,
        keep_alive: &[String],
        has_busybox: bool,
        hostname: Option<String>,
        network_mode: &str,
        vpn: &VpnMember,
    ) -> Result<String, RuntimeError> {
        let host_config = HostConfig {
            binds: has_busybox.then(|| vec![format!("{HOST_BUSYBOX}:{GUEST_BUSYBOX}:ro")]),
            network_mode: Some(network_mode.into()),
            pids_limit: Some(NETWORK_HOLDER_PIDS),
            memory: Some(NETWORK_HOLDER_MEMORY_BYTES),
            memory_swap: Some(NETWORK_HOLDER_MEMORY_BYTES),
            init: Some(true),
            cap_drop: Some(vec!["ALL".into()]),
            security_opt: Some(vec!["no-new-privileges".into()]),
            readonly_rootfs: Some(true),
            ..Default::default()
        };
        let body = ContainerCreateBody {
            image: Some(image_id.into()),
            entrypoint: Some(keep_alive.to_vec()),
            cmd: Some(Vec::new()),
            user: Some(DEFAULT_USER.into()),
            labels: Some(self.labels()),
            hostname,
            host_config: Some(host_config),
            ..Default::default()
        };
        let name = format!("{}-net", container_name(&self.activity_id));
        let created = create_named(docker, &name, body)
            .await
            .map_err(engine_error("cannot create the VPN's network holder"))?;
        let attached = async {
            start_by_id(docker, &created.id)
                .await
                .map_err(engine_error("cannot start the VPN's network holder"))?;
            let pid = self.container_pid(docker, &created.id).await?;
            vpn.attach(pid, Framing::Ethernet).await.map_err(|error| {
                RuntimeError::new(format!(
                    "cannot give the container its VPN interface: {error}"
                ))
            })
        }
        .await;
        if let Err(error) = attached {
            remove_container(docker, &created.id).await;
            return Err(error);
        }
        tracing::info!(holder = %created.id, %name, "network holder started with the VPN interface");
        Ok(created.id)
    }

    /// The container's own addresses on the engine's bridge.
    async fn bridge_address(
        &self,
        docker: &Docker,
        id: &str,
    ) -> Result<crate::outbound::BridgeAddress, RuntimeError> {
        let inspect = inspect_by_id(docker, id).await?;
        let settings = inspect.network_settings.unwrap_or_default();
        let bridge = settings
            .networks
            .unwrap_or_default()
            .remove("bridge")
            .unwrap_or_default();
        crate::outbound::BridgeAddress::parse(
            bridge.ip_address.as_deref().unwrap_or_default(),
            bridge.mac_address.as_deref().unwrap_or_default(),
        )
        .map_err(RuntimeError::new)
    }

    /// The host pid of the container's init (its network namespace's holder).
    async fn container_pid(&self, docker: &Docker, id: &str) -> Result<u32, RuntimeError> {
        let inspect = inspect_by_id(docker, id).await?;
        inspect
            .state
            .and_then(|state| state.pid)
            .and_then(|pid| u32::try_from(pid).ok())
            .filter(|pid| *pid > 0)
            .ok_or_else(|| RuntimeError::new("the container has no running process"))
    }

    fn start_stats(&self, docker: Docker, id: String) {
        let cpu_nanos = self.cpu_nanos.clone();
        let task = tokio::spawn(async move {
            loop {
                if let Some(nanos) = read_cpu_nanos(&docker, &id).await {
                    cpu_nanos.fetch_max(nanos, Ordering::Relaxed);
                }
                tokio::time::sleep(STATS_PERIOD).await;
            }
        });
        if let Some(old) = lock(&self.stats_task).replace(task) {
            old.abort();
        }
    }
}

/// Why a `docker:<ref>` package is refused, naming the setting that allows it.
fn docker_images_refused(reference: &str) -> String {
    format!(
        "docker:{reference} is refused: this provider does not run images by reference \
         (they could run any image its engine holds); a provider allows them with the \
         setting allow-docker-images (golem-provider run --allow-docker-images, \
         {}=1)",
        env_names::ALLOW_DOCKER_IMAGES
    )
}

/// Remove leftovers of dead exe units on a throwaway runtime (the exe unit's
/// own runtime does not run yet); an unreachable engine is only logged here,
/// deploy reports it.
fn remove_leftovers_now() {
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return;
    };
    runtime.block_on(async {
        match engine::connect().await {
            Ok(docker) => match engine::remove_leftovers(&docker).await {
                Ok(0) => {}
                Ok(removed) => tracing::info!(removed, "removed leftover containers"),
                Err(error) => tracing::warn!(%error, "cannot list leftover containers"),
            },
            Err(error) => tracing::warn!(%error, "cannot check for leftover containers"),
        }
    });
}

/// The container's CPU time so far: from its cgroup on this host when the
/// file is where Docker puts it (cgroup v1 or v2, cgroupfs or systemd driver),
/// otherwise from the engine's one-shot stats, given at most `ENGINE_STATS_WAIT`
/// (once a container's stats have been read, the engine answers the next
/// one-shot read only at its next 1 s collection tick).
async fn read_cpu_nanos(docker: &Docker, id: &str) -> Option<u64> {
    if let Some(nanos) = cgroup_cpu_nanos(Path::new(CGROUP_ROOT), id) {
        return Some(nanos);
    }
    let mut stats = docker.stats(
        id,
        Some(StatsOptions {
            stream: false,
            one_shot: true,
        }),
    );
    let sample = tokio::time::timeout(ENGINE_STATS_WAIT, stats.next())
        .await
        .ok()??
        .ok()?;
    sample.cpu_stats?.cpu_usage?.total_usage
}

const CGROUP_ROOT: &str = "/sys/fs/cgroup";
const ENGINE_STATS_WAIT: Duration = Duration::from_millis(1500);

/// CPU nanoseconds of container `id` read from the cgroup files under `root`.
fn cgroup_cpu_nanos(root: &Path, id: &str) -> Option<u64> {
    let v1 = [
        format!("cpuacct/docker/{id}/cpuacct.usage"),
        format!("cpuacct/system.slice/docker-{id}.scope/cpuacct.usage"),
        format!("cpu,cpuacct/docker/{id}/cpuacct.usage"),
        format!("cpu,cpuacct/system.slice/docker-{id}.scope/cpuacct.usage"),
    ];
    for file in v1 {
        if let Ok(text) = std::fs::read_to_string(root.join(file)) {
            return text.trim().parse().ok();
        }
    }
    for file in [
        format!("docker/{id}/cpu.stat"),
        format!("system.slice/docker-{id}.scope/cpu.stat"),
    ] {
        if let Ok(text) = std::fs::read_to_string(root.join(file)) {
            return text
                .lines()
                .find_map(|line| line.strip_prefix("usage_usec "))
                .and_then(|micros| micros.trim().parse::<u64>().ok())
                .map(|micros| micros * 1000);
        }
    }
    None
}

/// A container name for the activity: docker allows `[a-zA-Z0-9][a-zA-Z0-9_.-]*`.
fn container_name(activity_id: &str) -> String {
    let clean: String = activity_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
                c
            } else {
                '_'
            }
        })
        .take(100)
        .collect();
    format!("golem-vm-{clean}")
}

/// Why the container is no longer running (killed for memory, or ended),
/// or `None` while it runs.
/// Asked again every 100 ms for up to `settle` while it still runs.
async fn container_ended(docker: &Docker, id: &str, settle: Duration) -> Option<String> {
    let deadline = tokio::time::Instant::now() + settle;
    loop {
        let inspect = docker
            .inspect_container(
                id,
                None::<bollard::query_parameters::InspectContainerOptions>,
            )
            .await
            .ok()?;
        let state = inspect.state?;
        if state.oom_killed == Some(true) {
            return Some("the container exceeded its memory limit and was killed".into());
        }
        if state.running != Some(true) {
            return Some(format!(
                "the container stopped (exit code {}), probably for exceeding its memory limit",
                state.exit_code.unwrap_or(-1)
            ));
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// How long a run that ended abnormally under gVisor waits for the engine to
/// see whether the sandbox itself ended.
const CONTAINER_END_SETTLE: Duration = Duration::from_secs(3);

/// Resolves when the container stops (or the engine cannot say): a run's
/// output stream may outlive a gVisor sandbox that ended under it.
async fn container_stopped(docker: &Docker, id: &str) {
    loop {
        let mut wait = docker.wait_container(
            id,
            Some(bollard::query_parameters::WaitContainerOptions {
                condition: "not-running".into(),
            }),
        );
        let _ = wait.next().await;
        // The wait also ends when its request times out: look.
        if container_ended(docker, id, Duration::ZERO).await.is_some() {
            return;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// The folder under the work dir that holds the volumes (the core's layout).
const VOLUMES_DIR: &str = "volumes";

/// The work dir is the provider's alone (0700): the volumes under it are
/// written by whatever runs in the container, as root under gVisor.
fn close_work_dir(work_dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(work_dir, std::fs::Permissions::from_mode(0o700))
}

/// Bind `dir` onto itself with `nosuid,nodev`, so that nothing the container
/// leaves in its volumes is a setuid program or a device node for anyone on
/// the host. Docker's bind mounts take no such options; a bind mount of a
/// directory keeps the flags of the mount it is on, so the engine's binds of
/// the volumes beneath are `nosuid,nodev` too. Needs root (as the engine does).
fn mount_nosuid(dir: &Path) -> nix::Result<()> {
    use nix::mount::{mount, MsFlags};
    std::fs::create_dir_all(dir)
        .map_err(|error| nix::Error::from_raw(error.raw_os_error().unwrap_or(nix::libc::EIO)))?;
    mount(Some(dir), dir, None::<&str>, MsFlags::MS_BIND, None::<&str>)?;
    let remounted = mount(
        None::<&str>,
        dir,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        None::<&str>,
    );
    if let Err(error) = remounted {
        let _ = nix::mount::umount2(dir, nix::mount::MntFlags::MNT_DETACH);
        return Err(error);
    }
    Ok(())
}

/// Let the container user write into the host side of a volume.
fn open_up(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o777))
}

/// Read `/proc/cpuinfo`'s flags (yapapi can constrain `golem.inf.cpu.capabilities`).
fn cpu_capabilities() -> Vec<String> {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|line| line.starts_with("flags"))
                .and_then(|line| line.split_once(':'))
                .map(|(_, flags)| flags.split_whitespace().map(str::to_string).collect())
        })
        .unwrap_or_default()
}

fn template(engine_version: &str, vpn: bool, inet: bool, sandbox: Sandbox) -> serde_json::Value {
    let mut capabilities = vec!["docker-archive", START_ENTRYPOINT_CAPABILITY];
    if vpn {
        capabilities.push(VPN_CAPABILITY);
    }
    if inet {
        capabilities.push(golem_model::manifest::INET_CAPABILITY);
        capabilities.push(golem_model::manifest::MANIFEST_SUPPORT_CAPABILITY);
    }
    serde_json::json!({
        "golem.runtime.name": RUNTIME_NAME,
        SANDBOX_PROPERTY: sandbox.as_str(),
        "golem.runtime.version": env!("CARGO_PKG_VERSION"),
        "golem.runtime.capabilities": capabilities,
        "golem.runtime.vm.engine": "docker",
        "golem.runtime.vm.engine.version": engine_version,
        "golem.inf.cpu.architecture": std::env::consts::ARCH,
        "golem.inf.cpu.capabilities": cpu_capabilities(),
    })
}

#[async_trait]
impl Runtime for VmRuntime {
    fn offer_template() -> serde_json::Value {
        VmRuntime::offer_template_checked()
            .unwrap_or_else(|_| template("unknown", false, false, Sandbox::Runc))
    }

    fn offer_template_checked() -> Result<serde_json::Value, RuntimeError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|error| RuntimeError::new(format!("cannot start tokio: {error}")))?;
        let (version, runtimes) = runtime
            .block_on(async {
                let docker = engine::connect().await?;
                Ok::<_, engine::NoEngine>((
                    engine::version(&docker).await?,
                    engine::runtimes(&docker).await?,
                ))
            })
            .map_err(|error| RuntimeError::new(error.to_string()))?;
        let chosen = VmConfig::from_env()
            .map_err(|error| RuntimeError::new(error.to_string()))?
            .sandbox;
        let (sandbox, warning) = Sandbox::resolve(chosen, &runtimes).map_err(RuntimeError::new)?;
        if let Some(warning) = warning {
            tracing::warn!(sandbox = sandbox.as_str(), "{warning}");
        }
        // `vpn` only where containers can get an interface.
        let vpn = match crate::vpn::interface::available() {
            Ok(()) => true,
            Err(reason) => {
                tracing::info!(%reason, "no VPN for containers: capability vpn not offered");
                false
            }
        };
        // `inet` and `manifest-support` only where the filter loads.
        let inet = match runtime.block_on(crate::outbound::available(FilterHook::Inet)) {
            Ok(()) => true,
            Err(reason) => {
                tracing::info!(%reason, "no outbound enforcement: capabilities inet and manifest-support not offered");
                false
            }
        };
        Ok(template(&version, vpn, inet, sandbox))
    }

    /// `docker:<ref>`, and `hash:` packages too: the image loads while it downloads.
    fn accepts_package_reference(&self, _task_package: &str) -> bool {
        true
    }

    fn attach_bus(&self, bus: &BusClient) {
        let _ = self.bus.set(bus.clone());
    }

    async fn deploy(&self, request: DeployRequest) -> Result<Deployment, RuntimeError> {
        let docker = self.docker().await?;
        if lock(&self.container).is_some() {
            return Err(RuntimeError::new(
                "the activity's container is already deployed",
            ));
        }
        let network = VpnNetwork::from_deploy(&request.net, self.node_id.parse().ok())
            .map_err(RuntimeError::new)?;
        let mut hosts = request.hosts.clone();
        if let Some(targets) = &self.outbound_targets {
            crate::outbound::available(FilterHook::Inet)
                .await
                .map_err(|reason| {
                    RuntimeError::new(format!(
                        "this provider cannot enforce the manifest's outbound access: {reason}"
                    ))
                })?;
            let grant = OutboundGrant::resolve(targets, &self.config.outbound_hosts)
                .await
                .map_err(RuntimeError::new)?;
            tracing::info!(flows = ?grant.flows, hosts = ?grant.hosts, "outbound access resolved");
            for (name, ip) in &grant.hosts {
                hosts.entry(name.clone()).or_insert_with(|| ip.clone());
            }
            *lock(&self.outbound) = Some(grant);
        }
        let networking = if network.is_some() || !hosts.is_empty() || request.hostname.is_some() {
            let text = hosts_file(
                &hosts,
                request.hostname.as_deref(),
                network.as_ref().map(|network| network.node_ip),
            )
            .map_err(RuntimeError::new)?;
            let path = request.work_dir.join("etc-hosts");
            std::fs::write(&path, text).map_err(|error| {
                RuntimeError::new(format!("cannot write {}: {error}", path.display()))
            })?;
            Some(path)
        } else {
            None
        };
        let vpn = match network {
            Some(network) => {
                crate::vpn::interface::available().map_err(|reason| {
                    RuntimeError::new(format!(
                        "this provider cannot give containers a VPN interface: {reason}"
                    ))
                })?;
                let bus = self.bus.get().cloned().ok_or_else(|| {
                    RuntimeError::new("the exe unit has no bus connection for the VPN")
                })?;
                let member = VpnMember::join(
                    bus,
                    network,
                    self.requestor_id.parse().ok(),
                    self.node_id.parse().ok(),
                )
                .await
                .map_err(RuntimeError::new)?;
                Some(Arc::new(member))
            }
            None => None,
        };
        let outbound = lock(&self.outbound).is_some();
        let deployed = match self.choose_sandbox(docker, vpn.is_some(), outbound).await {
            Ok(placement) => {
                self.create_container(
                    docker,
                    request,
                    networking.as_deref(),
                    placement,
                    vpn.as_deref(),
                )
                .await
            }
            Err(error) => Err(error),
        };
        match (&deployed, vpn) {
            (Ok(_), vpn) => *lock(&self.vpn) = vpn,
            (Err(_), Some(vpn)) => vpn.leave().await,
            (Err(_), None) => {}
        }
        deployed
    }

    async fn start(&self, args: Vec<String>) -> Result<(), RuntimeError> {
        let container = self.container()?;
        let docker = self.docker().await?;
        let start_entrypoint = args.iter().any(|arg| arg == START_ENTRYPOINT_ARG);
        if start_entrypoint && container.image_command.is_empty() {
            return Err(RuntimeError::new(
                "start-entrypoint: the image defines no ENTRYPOINT or CMD",
            ));
        }
        start_by_id(docker, &container.id)
            .await
            .map_err(engine_error("cannot start the container"))?;
        self.start_stats(docker.clone(), container.id.clone());
        let grant = lock(&self.outbound).clone();
        if let Some(grant) = grant {
            // Before `start` returns, so before any run.
            let pid = self.container_pid(docker, &container.id).await?;
            let hook = match container.filter_hook() {
                FilterHook::DeviceEgress { device, .. } => FilterHook::DeviceEgress {
                    device,
                    sender: Some(self.bridge_address(docker, &container.id).await?),
                },
                inet => inet,
            };
            crate::outbound::apply(pid, &grant, hook)
                .await
                .map_err(|error| {
                    RuntimeError::new(format!(
                        "cannot load the container's outbound filter: {error}"
                    ))
                })?;
            *lock(&self.outbound_pid) = Some(pid);
            tracing::info!(
                pid,
                flows = grant.flows.len(),
                ?hook,
                "outbound filter loaded"
            );
        }
        // Under gVisor the holder's namespace got it at deploy.
        let vpn = lock(&self.vpn)
            .clone()
            .filter(|_| container.network_holder.is_none());
        if let Some(vpn) = vpn {
            let pid = self.container_pid(docker, &container.id).await?;
            vpn.attach(pid, Framing::Ip).await.map_err(|error| {
                RuntimeError::new(format!(
                    "cannot give the container its VPN interface: {error}"
                ))
            })?;
        }
        if start_entrypoint {
            // Detached, as the original's init starts it: its output is not
            // a run's, and it lives until the activity ends.
            let exec = docker
                .create_exec(
                    &container.id,
                    CreateExecOptions {
                        cmd: Some(container.image_command.clone()),
                        env: Some(container.env.clone()),
                        working_dir: Some(container.working_dir.clone()),
                        ..Default::default()
                    },
                )
                .await
                .map_err(engine_error("cannot start the image's entry point"))?;
            docker
                .start_exec(
                    &exec.id,
                    Some(bollard::exec::StartExecOptions {
                        detach: true,
                        ..Default::default()
                    }),
                )
                .await
                .map_err(engine_error("cannot start the image's entry point"))?;
            tracing::info!(command = ?container.image_command, "the image's entry point started");
        }
        Ok(())
    }

    async fn run(&self, request: RunRequest, output: OutputSender) -> Result<i32, RuntimeError> {
        let container = self.container()?;
        let docker = self.docker().await?;
        self.killed.store(false, Ordering::SeqCst);
        let mut cmd = Vec::new();
        if container.wrapped_runs {
            cmd.extend([GUEST_BUSYBOX, "sh", "-c", RUN_WRAPPER, "golem-run"].map(str::to_string));
        }
        cmd.push(request.entry_point.clone());
        cmd.extend(request.args.iter().cloned());
        let exec = docker
            .create_exec(
                &container.id,
                CreateExecOptions {
                    attach_stdout: Some(true),
                    attach_stderr: Some(true),
                    cmd: Some(cmd),
                    env: Some(container.env.clone()),
                    working_dir: Some(container.working_dir.clone()),
                    ..Default::default()
                },
            )
            .await
            .map_err(engine_error(format!(
                "cannot run {} in the container",
                request.entry_point
            )))?;
        *lock(&self.running) = Some(exec.id.clone());
        let streamed = async {
            let started = docker
                .start_exec(&exec.id, None)
                .await
                .map_err(engine_error(format!("cannot run {}", request.entry_point)))?;
            let StartExecResults::Attached {
                output: mut stream, ..
            } = started
            else {
                return Err(RuntimeError::new("the engine detached the run"));
            };
            let mut first = Vec::new();
            while let Some(item) = stream.next().await {
                let chunk = match item {
                    Ok(LogOutput::StdOut { message }) | Ok(LogOutput::Console { message }) => {
                        OutputChunk::Stdout(message.to_vec())
                    }
                    Ok(LogOutput::StdErr { message }) => OutputChunk::Stderr(message.to_vec()),
                    Ok(LogOutput::StdIn { .. }) => continue,
                    Err(error) => {
                        return Err(RuntimeError::new(format!(
                            "lost the output of {}: {error}",
                            request.entry_point
                        )))
                    }
                };
                if first.len() < 512 {
                    let bytes = match &chunk {
                        OutputChunk::Stdout(b) | OutputChunk::Stderr(b) => b,
                    };
                    first.extend_from_slice(&bytes[..bytes.len().min(512)]);
                }
                if output.send(chunk).await.is_err() {
                    break;
                }
            }
            Ok(first)
        };
        let limit = request
            .time_limit
            .unwrap_or(Duration::MAX)
            .min(Duration::from_secs(100 * 365 * 86_400));
        let outcome = tokio::select! {
            outcome = tokio::time::timeout(limit, streamed) => outcome,
            () = container_stopped(docker, &container.id) => {
                *lock(&self.running) = None;
                let reason = container_ended(docker, &container.id, CONTAINER_END_SETTLE)
                    .await
                    .unwrap_or_else(|| "the container stopped".into());
                return Err(self.ended_with_container(&request.entry_point, &reason));
            }
        };
        let timed_out = outcome.is_err();
        if timed_out {
            let _ = self.kill().await;
        }
        *lock(&self.running) = None;
        let first = match outcome {
            Ok(result) => result?,
            Err(_) => {
                return Err(RuntimeError::new(format!(
                    "{} exceeded its time limit of {} s and was stopped",
                    request.entry_point,
                    limit.as_secs_f64()
                )))
            }
        };
        if self.killed.load(Ordering::SeqCst) {
            return Err(RuntimeError::new(format!(
                "{} was killed",
                request.entry_point
            )));
        }
        let inspect = docker
            .inspect_exec(&exec.id)
            .await
            .map_err(engine_error(format!(
                "cannot get the exit code of {}",
                request.entry_point
            )))?;
        let code = inspect.exit_code.unwrap_or(-1);
        if !(0..128).contains(&code) {
            // Under gVisor the memory limit ends the whole sandbox, and the
            // run with it (exit 128, "waiting on PID ... EOF", before the
            // engine sees the container stop): give it a moment to tell.
            let settle = match container.sandbox {
                Sandbox::Gvisor => CONTAINER_END_SETTLE,
                Sandbox::Runc => Duration::ZERO,
            };
            if let Some(reason) = container_ended(docker, &container.id, settle).await {
                return Err(self.ended_with_container(&request.entry_point, &reason));
            }
        }
        let said = String::from_utf8_lossy(&first);
        if let Some(message) = start_failure(
            &request.entry_point,
            code,
            &said,
            container.wrapped_runs,
            self.limits.pids_in(container.sandbox),
        ) {
            return Err(RuntimeError::new(message));
        }
        if code == 137 {
            return Err(RuntimeError::new(format!(
                "{} was killed (exit code 137), probably for exceeding the memory limit of {} MiB",
                request.entry_point,
                self.limits.memory_bytes >> 20
            )));
        }
        Ok(i32::try_from(code).unwrap_or(-1))
    }

    async fn kill(&self) -> Result<(), RuntimeError> {
        let Some(exec_id) = lock(&self.running).clone() else {
            return Ok(());
        };
        self.killed.store(true, Ordering::SeqCst);
        let docker = self.docker().await?;
        let container = self.container()?;
        if container.wrapped_runs {
            // Inside the sandbox first; `runsc exec` on the host ends with it.
            let killer = docker
                .create_exec(
                    &container.id,
                    CreateExecOptions {
                        cmd: Some(
                            [GUEST_BUSYBOX, "sh", "-c", KILL_RUN]
                                .map(str::to_string)
                                .to_vec(),
                        ),
                        user: Some("0".to_string()),
                        ..Default::default()
                    },
                )
                .await;
            match killer {
                Ok(killer) => match docker.start_exec(&killer.id, None).await {
                    Ok(StartExecResults::Attached { mut output, .. }) => {
                        // Done when its output ends.
                        let drained = async { while output.next().await.is_some() {} };
                        let _ = tokio::time::timeout(Duration::from_secs(5), drained).await;
                    }
                    Ok(StartExecResults::Detached) => {}
                    Err(error) => {
                        tracing::warn!(error = %engine_message(&error), "cannot kill the run inside the sandbox")
                    }
                },
                Err(error) => {
                    tracing::warn!(error = %engine_message(&error), "cannot kill the run inside the sandbox")
                }
            }
        }
        let inspect = docker
            .inspect_exec(&exec_id)
            .await
            .map_err(engine_error("cannot find the running command"))?;
        if let Some(pid) = inspect
            .pid
            .and_then(|pid| i32::try_from(pid).ok())
            .filter(|pid| *pid > 0)
        {
            nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            )
            .map_err(|error| {
                RuntimeError::new(format!("cannot kill the running command: {error}"))
            })?;
        }
        Ok(())
    }

    async fn shutdown(&self) -> Result<(), RuntimeError> {
        if let Some(task) = lock(&self.stats_task).take() {
            task.abort();
        }
        let vpn = lock(&self.vpn).take();
        if let Some(vpn) = vpn {
            vpn.leave().await;
        }
        let volumes_mount = lock(&self.volumes_mount).take();
        let Some(container) = lock(&self.container).take() else {
            return Ok(());
        };
        let docker = self.docker().await?;
        let started = std::time::Instant::now();
        if let Some(nanos) = read_cpu_nanos(docker, &container.id).await {
            self.cpu_nanos.fetch_max(nanos, Ordering::Relaxed);
        }
        let stats_ms = started.elapsed().as_secs_f64() * 1000.0;
        let outbound_pid = lock(&self.outbound_pid).take();
        if let Some(pid) = outbound_pid {
            match crate::outbound::dropped(pid, container.filter_hook()).await {
                Ok(dropped) => tracing::info!(
                    dropped_out_packets = dropped.out_packets,
                    dropped_in_packets = dropped.in_packets,
                    "outbound: {} packets dropped ({} leaving, {} arriving) outside the manifest",
                    dropped.out_packets + dropped.in_packets,
                    dropped.out_packets,
                    dropped.in_packets
                ),
                Err(error) => tracing::warn!(%error, "cannot read the outbound filter's counters"),
            }
        }
        docker
            .remove_container(
                &container.id,
                Some(RemoveContainerOptions {
                    force: true,
                    ..Default::default()
                }),
            )
            .await
            .map_err(engine_error("cannot remove the container"))?;
        if let Some(holder) = &container.network_holder {
            remove_container(docker, holder).await;
        }
        let remove_ms = started.elapsed().as_secs_f64() * 1000.0 - stats_ms;
        tracing::info!(container = %container.id, stats_ms, remove_ms, "container removed");
        if let Some(dir) = volumes_mount {
            if let Err(error) = nix::mount::umount2(&dir, nix::mount::MntFlags::MNT_DETACH) {
                tracing::warn!(%error, path = %dir.display(), "cannot unmount the volumes");
            }
        }
        Ok(())
    }

    fn cpu_seconds(&self) -> Option<f64> {
        Some(self.cpu_nanos.load(Ordering::Relaxed) as f64 / 1e9)
    }
}

/// Why a run that exited 126 or 127 never started, from what the engine (or,
/// for a wrapped run, busybox sh) printed: an entry point the image lacks or
/// cannot execute, or the container runtime failing to start the process at
/// all (runc's `read init-p: connection reset by peer` when the container's
/// pids are all taken). `None` for an ordinary exit code of the command.
fn start_failure(
    entry_point: &str,
    code: i64,
    said: &str,
    wrapped_runs: bool,
    pids_limit: i64,
) -> Option<String> {
    if code != 126 && code != 127 {
        return None;
    }
    let not_an_executable =
        format!("unknown entry point {entry_point:?}: it is not an executable in the image");
    if wrapped_runs
        && said.starts_with("golem-run: exec:")
        && said.contains(&format!("{entry_point}: not found"))
    {
        return Some(not_an_executable);
    }
    if !said.contains("OCI runtime exec failed") {
        return None;
    }
    // runc: `exec: "/bin/x": stat /bin/x: no such file or directory`,
    // `executable file not found in $PATH`, `permission denied`; runsc:
    // `failed to load /bin/x: no such file or directory`, `error finding
    // executable`.
    let missing = [
        "no such file or directory",
        "not found",
        "permission denied",
    ]
    .iter()
    .any(|words| said.contains(words));
    if missing {
        return Some(not_an_executable);
    }
    Some(format!(
        "{entry_point} could not be started by the container runtime ({}); \
         the container may be at its limit of {pids_limit} processes: what earlier \
         commands left running still counts, so wait for it to end and try again",
        said.trim()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use golem_exe_unit::Agreement;
    use serde_json::json;

    /// What runc, runsc and busybox sh print when a run cannot start (taken
    /// from the engine on this machine) gets the right explanation; an
    /// ordinary exit code gets none.
    #[test]
    fn a_run_that_never_started_is_explained_by_what_the_engine_said() {
        let unknown =
            |said: &str, wrapped: bool| start_failure("/bin/nope", 126, said, wrapped, PIDS_LIMIT);
        for said in [
            "OCI runtime exec failed: exec failed: unable to start container process: exec: \"/bin/nope\": stat /bin/nope: no such file or directory: unknown\r\n",
            "OCI runtime exec failed: exec failed: unable to start container process: exec: \"/bin/nope\": permission denied: unknown",
            "OCI runtime exec failed: executing processes for container: executing command \"/bin/nope\" in sandbox: failed to load /bin/nope: no such file or directory: unknown",
        ] {
            assert_eq!(
                unknown(said, false).as_deref(),
                Some("unknown entry point \"/bin/nope\": it is not an executable in the image"),
                "{said}"
            );
        }
        assert!(
            unknown("golem-run: exec: line 1: /bin/nope: not found", true)
                .unwrap()
                .starts_with("unknown entry point")
        );

        // A full pids cgroup: runc's init dies before the command starts.
        let busy = unknown(
            "OCI runtime exec failed: exec failed: unable to start container process: read init-p: connection reset by peer: unknown\r\n",
            false,
        )
        .unwrap();
        assert!(!busy.contains("unknown entry point"), "{busy}");
        assert!(
            busy.contains("read init-p")
                && busy.contains(&format!("limit of {PIDS_LIMIT} processes"))
                && busy.contains("try again"),
            "{busy}"
        );

        // The command's own exit codes are not start failures.
        assert_eq!(
            start_failure("/bin/sh", 127, "sh: x: not found", false, PIDS_LIMIT),
            None
        );
        assert_eq!(
            start_failure("/bin/sh", 1, "OCI runtime exec failed", false, PIDS_LIMIT),
            None
        );
        assert_eq!(
            start_failure(
                "/bin/sh",
                127,
                "golem-run: exec: line 1: /bin/other: not found",
                true,
                PIDS_LIMIT
            ),
            None
        );
    }

    fn agreement(offer: serde_json::Value, demand: serde_json::Value) -> Agreement {
        Agreement::from_json(
            json!({"offer": {"properties": offer}, "demand": {"properties": demand}}),
        )
        .unwrap_or_else(|error| panic!("{error}"))
    }

    #[test]
    fn cpu_time_comes_from_either_cgroup_layout() {
        let root = tempfile::tempdir().unwrap();
        let v1 = root.path().join("cpuacct/docker/abc");
        std::fs::create_dir_all(&v1).unwrap();
        std::fs::write(v1.join("cpuacct.usage"), "45727867\n").unwrap();
        assert_eq!(cgroup_cpu_nanos(root.path(), "abc"), Some(45_727_867));
        let v2 = root.path().join("system.slice/docker-def.scope");
        std::fs::create_dir_all(&v2).unwrap();
        std::fs::write(v2.join("cpu.stat"), "usage_usec 1500\nuser_usec 1000\n").unwrap();
        assert_eq!(cgroup_cpu_nanos(root.path(), "def"), Some(1_500_000));
        assert_eq!(cgroup_cpu_nanos(root.path(), "missing"), None);
    }

    #[test]
    fn limits_come_from_the_agreement() {
        let limits = Limits::from_agreement(&agreement(
            json!({"golem.inf.mem.gib": 0.5, "golem.inf.cpu.threads": 1}),
            json!({}),
        ));
        assert_eq!(limits.memory_bytes, 512 << 20);
        assert_eq!(limits.nano_cpus, Some(1_000_000_000));
        assert!(!limits.network);
        let defaults = Limits::from_agreement(&agreement(json!({}), json!({})));
        assert_eq!(defaults.memory_bytes, DEFAULT_MEMORY_BYTES);
        assert_eq!(defaults.nano_cpus, None);
        // More threads than the machine has are capped, not refused by the engine.
        let many = Limits::from_agreement(&agreement(
            json!({"golem.inf.cpu.threads": 10_000}),
            json!({}),
        ));
        assert!(many.nano_cpus.unwrap_or_default() < 10_000 * 1_000_000_000);
    }

    #[test]
    fn network_needs_both_sides() {
        let grant = json!({NETWORK_PROPERTY: true});
        assert!(Limits::from_agreement(&agreement(grant.clone(), grant.clone())).network);
        assert!(!Limits::from_agreement(&agreement(grant.clone(), json!({}))).network);
        assert!(!Limits::from_agreement(&agreement(json!({}), grant)).network);
    }

    #[test]
    fn the_offer_names_the_sandbox_and_start_entrypoint() {
        let gvisor = template("20.10", true, false, Sandbox::Gvisor);
        assert_eq!(gvisor[SANDBOX_PROPERTY], json!("gvisor"));
        let capabilities = gvisor["golem.runtime.capabilities"].clone();
        assert_eq!(
            capabilities,
            json!([
                "docker-archive",
                START_ENTRYPOINT_CAPABILITY,
                VPN_CAPABILITY
            ])
        );
        let runc = template("20.10", false, true, Sandbox::Runc);
        assert_eq!(runc[SANDBOX_PROPERTY], json!("runc"));
        assert_eq!(
            runc["golem.runtime.capabilities"],
            json!([
                "docker-archive",
                START_ENTRYPOINT_CAPABILITY,
                "inet",
                "manifest-support"
            ]),
            "inet and manifest-support where the filter loads"
        );
    }

    #[test]
    fn container_names_are_valid() {
        assert_eq!(container_name("ab-1.2_c"), "golem-vm-ab-1.2_c");
        assert_eq!(container_name("a/b c"), "golem-vm-a_b_c");
    }
}

/// The container config `deploy` builds, checked against a fake engine.
#[cfg(test)]
mod container_config_tests;
