//! [`WasmRuntime`]: the `wasmtime` runtime. `deploy` loads the package,
//! creates its mount points under the work dir and compiles every entry point
//! once into an [`InstancePre`] (WASI preview 1 imports already resolved), so a
//! `run` only creates a store, instantiates and calls `_start` on a worker
//! thread. Limits: the store's memory is capped by `golem.inf.mem.gib` (else
//! [`DEFAULT_MEMORY_LIMIT`]) as one total over all its linear memories and
//! tables, so a module with many memories cannot multiply the cap, and the
//! counts of instances, memories and tables are bounded too; the run's wall
//! time is capped by epoch interruption (the deadline or a kill bumps the
//! engine's epoch, which traps the module wherever it is).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use golem_exe_unit::runtime::prepare_volumes;
use golem_exe_unit::{
    ActivityConfig, DeployRequest, Deployment, OutputSender, RunRequest, Runtime, RuntimeError,
    Volume, VolumeAccess,
};
use wasmtime::{Config, Engine, InstancePre, Linker, Module, ResourceLimiter, Store, Trap};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::{FsPerms, I32Exit, WasiCtxBuilder};

use crate::output::{Channel, OutputPipe};
use crate::package::{MountPoint, WasmPackage};

pub const RUNTIME_NAME: &str = "wasmtime";

/// Per-store state: WASI and the memory limiter.
pub struct StoreState {
    wasi: WasiP1Ctx,
    limiter: MemoryLimiter,
}

/// The memory cap of a store when the agreement names none.
pub const DEFAULT_MEMORY_LIMIT: usize = 1 << 30;
/// Bytes one table element costs in the total (Wasmtime stores a pointer).
const TABLE_ELEMENT_BYTES: usize = std::mem::size_of::<usize>();
/// Most instances, linear memories and tables one store may create.
const MAX_INSTANCES: usize = 16;
const MAX_MEMORIES: usize = 64;
const MAX_TABLES: usize = 256;

/// Caps the sum of all linear memories and tables of one store (each
/// growth is charged its increase, a failed growth is refunded); remembers a
/// refused growth so the error can say what happened.
struct MemoryLimiter {
    limit: usize,
    /// Bytes of memories and tables the store holds (or is growing into).
    total: usize,
    /// The increase of the growth in progress, refunded if it fails.
    pending: usize,
    /// The total a refused growth would have made.
    refused: Option<usize>,
}

impl MemoryLimiter {
    fn new(limit: usize) -> MemoryLimiter {
        MemoryLimiter {
            limit,
            total: 0,
            pending: 0,
            refused: None,
        }
    }

    fn grow(&mut self, increase: usize) -> wasmtime::Result<bool> {
        let wanted = self.total.saturating_add(increase);
        if wanted > self.limit {
            self.refused = Some(wanted);
            return Err(wasmtime::Error::msg(memory_message(self.limit, wanted)));
        }
        self.total = wanted;
        self.pending = increase;
        Ok(true)
    }

    fn refund(&mut self) {
        self.total = self.total.saturating_sub(self.pending);
        self.pending = 0;
    }
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.grow(desired.saturating_sub(current))
    }

    fn memory_grow_failed(&mut self, _error: wasmtime::Error) -> wasmtime::Result<()> {
        self.refund();
        Ok(())
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.grow(
            desired
                .saturating_sub(current)
                .saturating_mul(TABLE_ELEMENT_BYTES),
        )
    }

    fn table_grow_failed(&mut self, _error: wasmtime::Error) -> wasmtime::Result<()> {
        self.refund();
        Ok(())
    }

    fn instances(&self) -> usize {
        MAX_INSTANCES
    }

    fn memories(&self) -> usize {
        MAX_MEMORIES
    }

    fn tables(&self) -> usize {
        MAX_TABLES
    }
}

fn mib(bytes: usize) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn memory_message(limit: usize, desired: usize) -> String {
    format!(
        "memory limit of {:.0} MiB exceeded: the module asked for {:.0} MiB",
        mib(limit),
        mib(desired)
    )
}

/// Why a run was interrupted (set before the epoch is bumped).
#[derive(Default)]
struct RunControl {
    killed: AtomicBool,
    timed_out: AtomicBool,
}

impl RunControl {
    fn interrupted(&self) -> bool {
        self.killed.load(Ordering::SeqCst) || self.timed_out.load(Ordering::SeqCst)
    }
}

/// A directory the module sees.
#[derive(Debug, Clone)]
struct Mount {
    guest_path: String,
    host_path: PathBuf,
    read_only: bool,
}

struct Deployed {
    entry_points: BTreeMap<String, InstancePre<StoreState>>,
    mounts: Vec<Mount>,
    env: Vec<(String, String)>,
}

pub struct WasmRuntime {
    engine: Engine,
    memory_limit: usize,
    deployed: Mutex<Option<Arc<Deployed>>>,
    running: Mutex<Option<Arc<RunControl>>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn runtime_error(error: impl std::fmt::Display) -> RuntimeError {
    RuntimeError::new(error.to_string())
}

impl WasmRuntime {
    /// A runtime with the limits of this activity's agreement.
    pub fn new(config: &ActivityConfig) -> Result<WasmRuntime, RuntimeError> {
        let memory_limit = config
            .agreement
            .memory_limit_bytes()
            .map(|bytes| usize::try_from(bytes).unwrap_or(usize::MAX));
        WasmRuntime::with_memory_limit(memory_limit)
    }

    /// `None`: [`DEFAULT_MEMORY_LIMIT`].
    pub fn with_memory_limit(memory_limit: Option<usize>) -> Result<WasmRuntime, RuntimeError> {
        let memory_limit = memory_limit.unwrap_or(DEFAULT_MEMORY_LIMIT);
        let mut config = Config::new();
        config.epoch_interruption(true);
        config.cranelift_opt_level(wasmtime::OptLevel::Speed);
        let engine = Engine::new(&config).map_err(runtime_error)?;
        Ok(WasmRuntime {
            engine,
            memory_limit,
            deployed: Mutex::new(None),
            running: Mutex::new(None),
        })
    }

    fn deployed(&self) -> Result<Arc<Deployed>, RuntimeError> {
        lock(&self.deployed)
            .clone()
            .ok_or_else(|| RuntimeError::new("nothing is deployed"))
    }
}

/// Compile every entry point and resolve its imports against WASI preview 1.
fn compile(
    engine: &Engine,
    package: &WasmPackage,
) -> Result<BTreeMap<String, InstancePre<StoreState>>, RuntimeError> {
    let mut linker: Linker<StoreState> = Linker::new(engine);
    wasmtime_wasi::p1::add_to_linker_sync(&mut linker, |state: &mut StoreState| &mut state.wasi)
        .map_err(runtime_error)?;
    let mut entry_points = BTreeMap::new();
    for (id, bytes) in &package.modules {
        let module = Module::new(engine, bytes).map_err(|error| {
            RuntimeError::new(format!("entry point {id} is not a valid module: {error}"))
        })?;
        let instance_pre = linker.instantiate_pre(&module).map_err(|error| {
            RuntimeError::new(format!("entry point {id} can not be linked: {error}"))
        })?;
        entry_points.insert(id.clone(), instance_pre);
    }
    Ok(entry_points)
}

#[async_trait]
impl Runtime for WasmRuntime {
    fn offer_template() -> serde_json::Value {
        serde_json::json!({
            "golem.runtime.name": RUNTIME_NAME,
            "golem.runtime.version": env!("CARGO_PKG_VERSION"),
            "golem.runtime.capabilities": ["wasi-preview1"],
        })
    }

    async fn deploy(&self, request: DeployRequest) -> Result<Deployment, RuntimeError> {
        if !request.net.is_empty() {
            return Err(RuntimeError::new(NO_NETWORK_INTERFACE));
        }
        let engine = self.engine.clone();
        let deployed = tokio::task::spawn_blocking(move || {
            let package =
                WasmPackage::load(&request.package, &request.package_url).map_err(runtime_error)?;
            let mount_points: Vec<(String, VolumeAccess)> = package
                .manifest
                .mount_points
                .iter()
                .map(|mount| {
                    let access = match mount {
                        MountPoint::Ro(_) => VolumeAccess::ReadOnly,
                        MountPoint::Wo(_) => VolumeAccess::WriteOnly,
                        MountPoint::Rw(_) | MountPoint::Private(_) => VolumeAccess::ReadWrite,
                    };
                    (mount.absolute_path(), access)
                })
                .collect();
            let volumes = prepare_volumes(&request.work_dir, &mount_points).map_err(|error| {
                RuntimeError::new(format!("cannot create the package's volumes: {error}"))
            })?;
            let entry_points = compile(&engine, &package)?;
            let mounts = volumes
                .iter()
                .map(|volume| Mount {
                    guest_path: volume.guest_path.clone(),
                    host_path: volume.host_path.clone(),
                    read_only: volume.access == VolumeAccess::ReadOnly,
                })
                .collect();
            let public: Vec<Volume> = volumes
                .into_iter()
                .zip(&package.manifest.mount_points)
                .filter(|(_, mount)| !matches!(mount, MountPoint::Private(_)))
                .map(|(volume, _)| volume)
                .collect();
            Ok::<_, RuntimeError>((
                Deployed {
                    entry_points,
                    mounts,
                    env: request.env,
                },
                public,
            ))
        })
        .await
        .map_err(|error| RuntimeError::new(format!("deploy task failed: {error}")))??;
        let (deployed, volumes) = deployed;
        tracing::info!(entry_points = ?deployed.entry_points.keys().collect::<Vec<_>>(), "package deployed");
        *lock(&self.deployed) = Some(Arc::new(deployed));
        Ok(Deployment { volumes })
    }

    async fn start(&self, _args: Vec<String>) -> Result<(), RuntimeError> {
        // Every `run` instantiates afresh; there is nothing long-lived to start.
        self.deployed().map(|_| ())
    }

    async fn run(&self, request: RunRequest, output: OutputSender) -> Result<i32, RuntimeError> {
        let deployed = self.deployed()?;
        let Some(instance_pre) = deployed.entry_points.get(&request.entry_point).cloned() else {
            let known: Vec<&str> = deployed.entry_points.keys().map(String::as_str).collect();
            return Err(RuntimeError::new(format!(
                "unknown entry point {:?}; the package has: {}",
                request.entry_point,
                known.join(", ")
            )));
        };
        let control = Arc::new(RunControl::default());
        *lock(&self.running) = Some(control.clone());
        let job = tokio::task::spawn_blocking({
            let engine = self.engine.clone();
            let control = control.clone();
            let memory_limit = self.memory_limit;
            let entry_point = request.entry_point.clone();
            let args = request.args.clone();
            move || {
                execute(
                    &engine,
                    &instance_pre,
                    &deployed,
                    &entry_point,
                    &args,
                    output,
                    memory_limit,
                    &control,
                )
            }
        });
        tokio::pin!(job);
        let limit = request.time_limit.unwrap_or(Duration::MAX);
        let timer = tokio::time::sleep(limit.min(Duration::from_secs(100 * 365 * 86_400)));
        tokio::pin!(timer);
        let joined = tokio::select! {
            joined = &mut job => joined,
            _ = &mut timer => {
                control.timed_out.store(true, Ordering::SeqCst);
                self.engine.increment_epoch();
                (&mut job).await
            }
        };
        *lock(&self.running) = None;
        let outcome =
            joined.map_err(|error| RuntimeError::new(format!("run task failed: {error}")))?;
        match outcome {
            Err(Failure::TimedOut) => Err(RuntimeError::new(format!(
                "{} exceeded its time limit of {} s and was stopped",
                request.entry_point,
                limit.as_secs_f64()
            ))),
            Err(Failure::Killed) => Err(RuntimeError::new(format!(
                "{} was killed",
                request.entry_point
            ))),
            Err(Failure::Error(message)) => Err(RuntimeError::new(message)),
            Ok(code) => Ok(code),
        }
    }

    async fn kill(&self) -> Result<(), RuntimeError> {
        if let Some(control) = lock(&self.running).clone() {
            control.killed.store(true, Ordering::SeqCst);
            self.engine.increment_epoch();
        }
        Ok(())
    }

    async fn shutdown(&self) -> Result<(), RuntimeError> {
        self.kill().await?;
        lock(&self.deployed).take();
        Ok(())
    }
}

enum Failure {
    TimedOut,
    Killed,
    Error(String),
}

#[allow(clippy::too_many_arguments)]
fn execute(
    engine: &Engine,
    instance_pre: &InstancePre<StoreState>,
    deployed: &Deployed,
    entry_point: &str,
    args: &[String],
    output: OutputSender,
    memory_limit: usize,
    control: &RunControl,
) -> Result<i32, Failure> {
    let mut builder = WasiCtxBuilder::new();
    builder
        .arg(entry_point)
        .args(args)
        .allow_blocking_current_thread(true)
        .stdout(OutputPipe::new(output.clone(), Channel::Stdout))
        .stderr(OutputPipe::new(output, Channel::Stderr));
    for (key, value) in &deployed.env {
        builder.env(key, value);
    }
    for mount in &deployed.mounts {
        let perms = if mount.read_only {
            FsPerms::ReadOnly
        } else {
            FsPerms::ReadWrite
        };
        builder
            .preopened_dir(&mount.host_path, &mount.guest_path, perms)
            .map_err(|error| {
                Failure::Error(format!("cannot open volume {}: {error}", mount.guest_path))
            })?;
    }
    let mut store = Store::new(
        engine,
        StoreState {
            wasi: builder.build_p1(),
            limiter: MemoryLimiter::new(memory_limit),
        },
    );
    store.limiter(|state| &mut state.limiter);
    // Any epoch bump from now on (deadline or kill) traps the module.
    store.set_epoch_deadline(1);
    let failure = |store: &Store<StoreState>, error: wasmtime::Error| -> Failure {
        if control.killed.load(Ordering::SeqCst) {
            return Failure::Killed;
        }
        if control.timed_out.load(Ordering::SeqCst) {
            return Failure::TimedOut;
        }
        if let Some(desired) = store.data().limiter.refused {
            return Failure::Error(memory_message(memory_limit, desired));
        }
        match error.downcast_ref::<Trap>() {
            Some(trap) => Failure::Error(format!("{entry_point} trapped: {trap}")),
            None => Failure::Error(format!("{entry_point} failed: {}", error.root_cause())),
        }
    };
    if control.interrupted() {
        return Err(if control.killed.load(Ordering::SeqCst) {
            Failure::Killed
        } else {
            Failure::TimedOut
        });
    }
    let instance = instance_pre
        .instantiate(&mut store)
        .map_err(|error| failure(&store, error))?;
    let start = instance
        .get_typed_func::<(), ()>(&mut store, "_start")
        .map_err(|_| {
            Failure::Error(format!(
                "entry point {entry_point} exports no _start function"
            ))
        })?;
    match start.call(&mut store, ()) {
        Ok(()) => Ok(0),
        Err(error) => match error.downcast_ref::<I32Exit>() {
            Some(exit) => Ok(exit.0),
            None => Err(failure(&store, error)),
        },
    }
}

/// Why a `deploy` with `net` is refused.
pub const NO_NETWORK_INTERFACE: &str =
    "the wasm runtime has no network interface; use the vm runtime for VPN";

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// Instantiate `wat` in a store limited to `limit` bytes and call `run`.
    fn run_limited(wat: &str, limit: usize) -> (wasmtime::Result<()>, MemoryLimiter) {
        let engine = Engine::default();
        let module = Module::new(&engine, wat::parse_str(wat).unwrap()).unwrap();
        let mut store = Store::new(&engine, MemoryLimiter::new(limit));
        store.limiter(|limiter| limiter);
        let result = Linker::new(&engine)
            .instantiate(&mut store, &module)
            .and_then(|instance| {
                instance
                    .get_typed_func::<(), ()>(&mut store, "run")?
                    .call(&mut store, ())
            });
        (result, store.into_data())
    }

    /// The exploit: four memories of 48 MiB each under a 64 MiB cap used to
    /// pass (the cap was checked per memory); the total is what counts now.
    #[test]
    fn the_cap_is_a_total_over_all_memories() {
        let four_memories = r#"(module
            (memory $a 1) (memory $b 1) (memory $c 1) (memory $d 1)
            (func (export "run")
              (if (i32.eq (memory.grow $a (i32.const 767)) (i32.const -1)) (then unreachable))
              (if (i32.eq (memory.grow $b (i32.const 767)) (i32.const -1)) (then unreachable))
              (if (i32.eq (memory.grow $c (i32.const 767)) (i32.const -1)) (then unreachable))
              (if (i32.eq (memory.grow $d (i32.const 767)) (i32.const -1)) (then unreachable))))"#;
        let (result, limiter) = run_limited(four_memories, 64 << 20);
        let error = format!("{:?}", result.unwrap_err());
        assert!(error.contains("memory limit of 64 MiB exceeded"), "{error}");
        assert!(limiter.total <= 64 << 20, "{}", limiter.total);
        // The same module fits a cap of four times that.
        let (result, limiter) = run_limited(four_memories, 4 * (48 << 20) + (1 << 20));
        result.unwrap();
        assert_eq!(limiter.total, 4 * (48 << 20));
    }

    #[test]
    fn tables_count_against_the_same_total() {
        let big_table = r#"(module
            (memory 1)
            (table $t 1 funcref)
            (func (export "run")
              (drop (table.grow $t (ref.null func) (i32.const 10000000)))))"#;
        let (result, _) = run_limited(big_table, 64 << 20);
        let error = format!("{:?}", result.unwrap_err());
        assert!(error.contains("memory limit of 64 MiB exceeded"), "{error}");
        let (result, _) = run_limited(big_table, 1 << 30);
        result.unwrap();
    }

    #[test]
    fn the_number_of_memories_is_bounded() {
        let memories: String = (0..=MAX_MEMORIES).map(|_| "(memory 0)").collect();
        let many = format!(r#"(module {memories} (func (export "run")))"#);
        let (result, _) = run_limited(&many, 1 << 30);
        assert!(result.is_err());
    }
}
