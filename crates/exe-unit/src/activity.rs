//! One activity as its exe unit sees it: state, volumes, batches, and the
//! ExeScript interpreter that runs queued batches one at a time, command by
//! command, stopping at the first Error (which carries `isBatchFinished`).
//! Every state change, runtime event and result is also queued as a
//! [`Report`] for the activity service, in the order it happened.
//!
//! Nothing here touches the bus; [`crate::service`] wires it up. That keeps
//! the interpreter testable with a fake [`Runtime`].

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use chrono::Utc;
use golem_model::activity::{
    ActivityState, ActivityUsage, Capture, CommandOutput, CommandResult, DeployVolumes,
    ExeScriptCommand, ExeScriptCommandResult, ExeScriptCommandState, RuntimeEvent,
    RuntimeEventKind, State, StatePair,
};
use golem_model::GolemError;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::agreement::{Agreement, USAGE_CPU, USAGE_DURATION};
use crate::batches::{Batch, BatchStore};
use crate::capture::OutputCapture;
use crate::runtime::{
    DeployRequest, OutputChunk, RunRequest, Runtime, Volume, OUTPUT_CHANNEL_CAPACITY,
};
use crate::state::check_command_order;
use crate::transfer::{self, StorageBudget, TransferOptions};

/// How long a command may take to stop after it was killed.
pub const KILL_GRACE: Duration = Duration::from_secs(3);

/// Everything an exe unit is started with (see the crate docs for the CLI).
#[derive(Debug, Clone)]
pub struct ActivityConfig {
    pub activity_id: String,
    pub agreement: Agreement,
    /// The activity's own directory; volumes are created under it.
    pub work_dir: PathBuf,
    /// Shared by all activities of the provider: packages by hash, compiled modules.
    pub cache_dir: PathBuf,
    pub bus_socket: PathBuf,
    /// The provider's upper bound for one `run`; the agreement's
    /// `golem.srv.comp.expiration` may shorten it.
    pub max_run_time: Duration,
    /// How many packages a runtime that caches what it made of them (the VM
    /// unit's loaded images) keeps; it evicts the least recently used beyond.
    pub cache_max_packages: usize,
    /// The provider's `allow-private-transfers`: transfers and package
    /// downloads may reach loopback, private and link-local addresses.
    pub allow_private_transfers: bool,
}

/// What an activity may write into its volumes through transfers, and the
/// largest package it may download, when the offer names no storage size.
pub const DEFAULT_STORAGE_LIMIT: u64 = crate::package::DEFAULT_MAX_PACKAGE_BYTES;

impl ActivityConfig {
    /// Where this activity's HTTP requests may go.
    pub fn outbound_policy(&self) -> crate::outbound::OutboundPolicy {
        crate::outbound::OutboundPolicy {
            allow_private_addresses: self.allow_private_transfers,
            ..Default::default()
        }
    }

    /// The storage the provider offered for the agreement (bytes), else
    /// [`DEFAULT_STORAGE_LIMIT`]: the cap of bytes transfers write into the
    /// volumes and of a package download.
    pub fn storage_limit(&self) -> u64 {
        self.agreement
            .storage_limit_bytes()
            .unwrap_or(DEFAULT_STORAGE_LIMIT)
    }

    /// How this activity's task package may be fetched.
    pub fn fetch_policy(&self) -> crate::package::FetchPolicy {
        crate::package::FetchPolicy {
            outbound: self.outbound_policy(),
            allow_local_files: self.agreement.requestor_is_provider(),
            max_bytes: self.storage_limit(),
            bus_socket: Some(self.bus_socket.clone()),
        }
    }
}

/// `deploy`'s `net`, `hosts` and `hostname`, passed on to the runtime.
#[derive(Debug, Clone, Default)]
struct Networking {
    net: Vec<golem_model::activity::DeployNetwork>,
    hosts: std::collections::BTreeMap<String, String>,
    hostname: Option<String>,
}

/// What the exe unit tells the activity service, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Report {
    State(ActivityState),
    Usage(ActivityUsage),
    Event(RuntimeEvent),
    Result {
        batch_id: String,
        result: ExeScriptCommandResult,
    },
    /// No more reports: the reporter flushes and stops.
    Close,
}

pub struct QueuedBatch {
    batch_id: String,
    batch: Arc<Batch>,
    commands: Vec<ExeScriptCommand>,
}

/// Batches accepted but not yet executed.
pub type BatchQueue = mpsc::UnboundedReceiver<QueuedBatch>;

/// How one command ended.
#[derive(Debug, Clone, PartialEq)]
struct Outcome {
    ok: bool,
    return_code: i32,
    message: Option<String>,
    stdout: Option<CommandOutput>,
    stderr: Option<CommandOutput>,
}

impl Outcome {
    fn ok() -> Outcome {
        Outcome {
            ok: true,
            return_code: 0,
            message: None,
            stdout: None,
            stderr: None,
        }
    }
    fn error(message: impl Into<String>) -> Outcome {
        Outcome {
            ok: false,
            return_code: 1,
            message: Some(message.into()),
            stdout: None,
            stderr: None,
        }
    }
}

pub struct Activity {
    config: ActivityConfig,
    runtime: Arc<dyn Runtime>,
    state: Mutex<ActivityState>,
    volumes: Mutex<Vec<Volume>>,
    batches: BatchStore,
    running: Mutex<Option<ExeScriptCommandState>>,
    queue: mpsc::UnboundedSender<QueuedBatch>,
    reports: mpsc::UnboundedSender<Report>,
    shutdown: CancellationToken,
    termination_reason: Mutex<Option<String>>,
    started: Instant,
    /// Bytes transfers may still write into the volumes.
    storage: Arc<StorageBudget>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Activity {
    pub fn new(
        config: ActivityConfig,
        runtime: Arc<dyn Runtime>,
        reports: mpsc::UnboundedSender<Report>,
        shutdown: CancellationToken,
    ) -> (Arc<Activity>, BatchQueue) {
        let (queue, queued) = mpsc::unbounded_channel();
        let storage = Arc::new(StorageBudget::new(config.storage_limit()));
        let activity = Arc::new(Activity {
            storage,
            config,
            runtime,
            state: Mutex::new(ActivityState::default()),
            volumes: Mutex::new(Vec::new()),
            batches: BatchStore::default(),
            running: Mutex::new(None),
            queue,
            reports,
            shutdown,
            termination_reason: Mutex::new(None),
            started: Instant::now(),
        });
        (activity, queued)
    }

    pub fn config(&self) -> &ActivityConfig {
        &self.config
    }

    pub fn activity_id(&self) -> &str {
        &self.config.activity_id
    }

    fn report(&self, report: Report) {
        // The receiver is gone only while the process exits.
        let _ = self.reports.send(report);
    }

    pub fn state(&self) -> ActivityState {
        lock(&self.state).clone()
    }

    fn set_state(&self, state: ActivityState) {
        {
            let mut current = lock(&self.state);
            if *current == state {
                return;
            }
            *current = state.clone();
        }
        tracing::info!(activity_id = %self.config.activity_id, state = ?state.state, "activity state");
        self.report(Report::State(state));
    }

    fn set_state_pair(&self, pair: StatePair) {
        self.set_state(ActivityState {
            state: pair,
            reason: None,
            error_message: None,
        });
    }

    /// New → Initialized: called once the exe unit serves its bus address.
    pub fn initialize(&self) {
        self.set_state(State::Initialized.into());
    }

    /// Terminated with `reason`, unless already terminated.
    pub fn mark_terminated(&self, reason: &str, error_message: Option<String>) {
        if lock(&self.state).state.0 == State::Terminated {
            return;
        }
        self.set_state(ActivityState {
            state: State::Terminated.into(),
            reason: Some(reason.to_string()),
            error_message,
        });
    }

    pub fn shutdown_token(&self) -> &CancellationToken {
        &self.shutdown
    }

    /// Ask the exe unit to stop; the first reason given wins.
    pub fn request_shutdown(&self, reason: &str) {
        lock(&self.termination_reason).get_or_insert_with(|| reason.to_string());
        self.shutdown.cancel();
    }

    pub fn termination_reason(&self) -> String {
        lock(&self.termination_reason)
            .clone()
            .unwrap_or_else(|| "the exe unit was stopped".to_string())
    }

    /// Stop sending reports once those queued are sent.
    pub fn close_reports(&self) {
        self.report(Report::Close);
    }

    pub fn volumes(&self) -> Vec<Volume> {
        lock(&self.volumes).clone()
    }

    pub fn running_command(&self) -> Option<ExeScriptCommandState> {
        lock(&self.running).clone()
    }

    pub fn batches(&self) -> &BatchStore {
        &self.batches
    }

    /// Usage counters in the order of the agreement's usage vector.
    pub fn usage(&self) -> ActivityUsage {
        let duration = self.started.elapsed().as_secs_f64();
        let cpu = self
            .runtime
            .cpu_seconds()
            .unwrap_or_else(process_cpu_seconds);
        let current_usage = self
            .config
            .agreement
            .usage_vector()
            .iter()
            .map(|name| match name.as_str() {
                USAGE_DURATION => duration,
                USAGE_CPU => cpu,
                _ => 0.0,
            })
            .collect();
        ActivityUsage {
            current_usage: Some(current_usage),
            timestamp: Utc::now().timestamp(),
        }
    }

    pub fn report_usage(&self) {
        self.report(Report::Usage(self.usage()));
    }

    /// Accept a batch for execution; it runs after those accepted before it.
    pub fn exec(
        &self,
        batch_id: String,
        commands: Vec<ExeScriptCommand>,
    ) -> Result<String, GolemError> {
        if commands.is_empty() {
            return Err(GolemError::bad_request(
                "an ExeScript batch needs at least one command",
            ));
        }
        if self.shutdown.is_cancelled() || !self.state().state.alive() {
            return Err(GolemError::new(
                golem_model::ErrorCode::Gone,
                format!("activity {} is terminated", self.config.activity_id),
            ));
        }
        let batch = self.batches.create(&batch_id)?;
        self.queue
            .send(QueuedBatch {
                batch_id: batch_id.clone(),
                batch,
                commands,
            })
            .map_err(|_| {
                GolemError::new(
                    golem_model::ErrorCode::Gone,
                    format!("activity {} is terminated", self.config.activity_id),
                )
            })?;
        Ok(batch_id)
    }

    /// Run queued batches until shutdown; batches still queued then end with an Error.
    pub async fn execute_batches(self: Arc<Self>, mut queue: BatchQueue) {
        loop {
            let next = tokio::select! {
                biased;
                _ = self.shutdown.cancelled() => None,
                next = queue.recv() => next,
            };
            let Some(queued) = next else { break };
            self.execute_batch(&queued).await;
            if self.state().state.0 == State::Terminated {
                self.request_shutdown("terminated by the requestor");
            }
        }
        queue.close();
        while let Ok(queued) = queue.try_recv() {
            let message = format!(
                "activity terminated before the batch ran: {}",
                self.termination_reason()
            );
            self.push_result(&queued, 0, Outcome::error(message), true);
        }
    }

    fn emit(&self, queued: &QueuedBatch, index: u32, kind: RuntimeEventKind) {
        let event = RuntimeEvent::new(queued.batch_id.clone(), index, kind);
        queued.batch.push_event(event.clone());
        self.report(Report::Event(event));
    }

    fn push_result(&self, queued: &QueuedBatch, index: u32, outcome: Outcome, finished: bool) {
        let result = ExeScriptCommandResult {
            index,
            event_date: Utc::now(),
            result: if outcome.ok {
                CommandResult::Ok
            } else {
                CommandResult::Error
            },
            stdout: outcome.stdout,
            stderr: outcome.stderr,
            message: outcome.message,
            is_batch_finished: finished,
        };
        queued.batch.push_result(result.clone());
        self.report(Report::Result {
            batch_id: queued.batch_id.clone(),
            result,
        });
    }

    async fn execute_batch(&self, queued: &QueuedBatch) {
        let count = queued.commands.len();
        tracing::debug!(activity_id = %self.config.activity_id, batch_id = %queued.batch_id, commands = count, "batch started");
        for (position, command) in queued.commands.iter().enumerate() {
            let index = u32::try_from(position).unwrap_or(u32::MAX);
            *lock(&self.running) = Some(command.to_state());
            self.emit(
                queued,
                index,
                RuntimeEventKind::Started {
                    command: command.clone(),
                },
            );
            let outcome = self.execute_guarded(queued, index, command).await;
            *lock(&self.running) = None;
            self.emit(
                queued,
                index,
                RuntimeEventKind::Finished {
                    return_code: outcome.return_code,
                    message: outcome.message.clone(),
                },
            );
            let finished = position + 1 == count || !outcome.ok;
            if !outcome.ok {
                tracing::info!(activity_id = %self.config.activity_id, batch_id = %queued.batch_id, index, command = command.name(), message = ?outcome.message, "command failed");
            }
            let terminates = outcome.ok && matches!(command, ExeScriptCommand::Terminate {});
            self.push_result(queued, index, outcome, finished);
            if terminates {
                // Reported after the command's Ok: the daemon ends a terminated
                // activity's unfinished batches with an Error, which yapapi's
                // default `Service.shutdown` (a `terminate` script) would see.
                self.mark_terminated("terminated by the requestor", None);
            }
            if finished {
                break;
            }
        }
    }

    /// Run a command, killing it if the exe unit is told to stop meanwhile.
    async fn execute_guarded(
        &self,
        queued: &QueuedBatch,
        index: u32,
        command: &ExeScriptCommand,
    ) -> Outcome {
        let stopped = || {
            Outcome::error(format!(
                "activity terminated: {}",
                self.termination_reason()
            ))
        };
        if self.shutdown.is_cancelled() {
            return stopped();
        }
        let work = self.execute_command(queued, index, command);
        tokio::pin!(work);
        tokio::select! {
            outcome = &mut work => outcome,
            _ = self.shutdown.cancelled() => {
                if let Err(error) = self.runtime.kill().await {
                    tracing::warn!(%error, "killing the running command failed");
                }
                let _ = tokio::time::timeout(KILL_GRACE, &mut work).await;
                stopped()
            }
        }
    }

    async fn execute_command(
        &self,
        queued: &QueuedBatch,
        index: u32,
        command: &ExeScriptCommand,
    ) -> Outcome {
        let state = self.state().state.0;
        if let Err(message) = check_command_order(state, command) {
            return Outcome::error(message);
        }
        match command {
            ExeScriptCommand::Deploy {
                volumes,
                env,
                net,
                hosts,
                hostname,
                ..
            } => {
                let env = env.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
                let networking = Networking {
                    net: net.clone(),
                    hosts: hosts.clone(),
                    hostname: hostname.clone(),
                };
                match self.deploy(volumes.clone(), env, networking).await {
                    Ok(()) => Outcome::ok(),
                    Err(message) => Outcome::error(message),
                }
            }
            ExeScriptCommand::Start { args } => {
                self.set_state_pair(StatePair(State::Deployed, Some(State::Ready)));
                match self.runtime.start(args.clone()).await {
                    Ok(()) => {
                        self.set_state(State::Ready.into());
                        Outcome::ok()
                    }
                    Err(error) => {
                        self.set_state(State::Deployed.into());
                        Outcome::error(format!("start failed: {error}"))
                    }
                }
            }
            ExeScriptCommand::Run {
                entry_point,
                args,
                capture,
            } => {
                self.run(queued, index, entry_point, args, capture.as_ref())
                    .await
            }
            ExeScriptCommand::Transfer {
                from,
                to,
                format,
                depth,
                fileset,
                ..
            } => {
                let options = TransferOptions {
                    format: format.clone(),
                    depth: *depth,
                    fileset: fileset.clone(),
                    bus_socket: Some(self.config.bus_socket.clone()),
                    outbound: self.config.outbound_policy(),
                    storage: Some(self.storage.clone()),
                };
                let volumes = self.volumes();
                match transfer::transfer(&volumes, from, to, &options).await {
                    Ok(bytes) => {
                        tracing::debug!(%from, %to, bytes, "transfer done");
                        Outcome::ok()
                    }
                    Err(error) => Outcome::error(format!("transfer failed: {error}")),
                }
            }
            ExeScriptCommand::Sign {} => Outcome::error("sign is not supported by this exe unit"),
            // The activity becomes Terminated in `execute_batch`, once this
            // command's result is out.
            ExeScriptCommand::Terminate {} => Outcome::ok(),
        }
    }

    async fn deploy(
        &self,
        volumes: Option<DeployVolumes>,
        env: Vec<(String, String)>,
        networking: Networking,
    ) -> Result<(), String> {
        self.set_state_pair(StatePair(State::Initialized, Some(State::Deployed)));
        let result = async {
            let task_package = self.config.agreement.task_package().ok_or_else(|| {
                format!(
                    "the agreement has no {} property",
                    crate::agreement::TASK_PACKAGE
                )
            })?;
            let task_package = task_package.as_str();
            let (package, package_url) = if self.runtime.accepts_package_reference(task_package) {
                (std::path::PathBuf::new(), task_package.to_string())
            } else {
                let location = crate::package::PackageLocation::parse(task_package)
                    .map_err(|error| error.to_string())?;
                let package = crate::package::fetch_with_policy(
                    task_package,
                    &self.config.cache_dir,
                    None,
                    &self.config.fetch_policy(),
                )
                .await
                .map_err(|error| error.to_string())?;
                (package, location.url)
            };
            let deployment = self
                .runtime
                .deploy(DeployRequest {
                    package,
                    package_url,
                    work_dir: self.config.work_dir.clone(),
                    cache_dir: self.config.cache_dir.clone(),
                    volumes,
                    env,
                    fetch_policy: self.config.fetch_policy(),
                    net: networking.net,
                    hosts: networking.hosts,
                    hostname: networking.hostname,
                })
                .await
                .map_err(|error| error.to_string())?;
            *lock(&self.volumes) = deployment.volumes;
            Ok::<(), String>(())
        }
        .await;
        match result {
            Ok(()) => {
                self.set_state(State::Deployed.into());
                Ok(())
            }
            Err(message) => {
                self.set_state(State::Initialized.into());
                Err(format!("deploy failed: {message}"))
            }
        }
    }

    /// The wall-time limit of one `run`: the provider's maximum, cut to what
    /// is left until the agreement expires.
    pub fn run_time_limit(&self) -> Duration {
        let now_ms = Utc::now().timestamp_millis();
        match self.config.agreement.time_to_expiration(now_ms) {
            Some(left) => left.min(self.config.max_run_time),
            None => self.config.max_run_time,
        }
    }

    async fn run(
        &self,
        queued: &QueuedBatch,
        index: u32,
        entry_point: &str,
        args: &[String],
        capture: Option<&Capture>,
    ) -> Outcome {
        let mut stdout = OutputCapture::new(capture.and_then(|c| c.stdout.as_ref()));
        let mut stderr = OutputCapture::new(capture.and_then(|c| c.stderr.as_ref()));
        let time_limit = self.run_time_limit();
        let (sender, mut receiver) = mpsc::channel(OUTPUT_CHANNEL_CAPACITY);
        let request = RunRequest {
            entry_point: entry_point.to_string(),
            args: args.to_vec(),
            time_limit: Some(time_limit),
        };
        let run = self.runtime.run(request, sender);
        tokio::pin!(run);
        let hard_deadline = tokio::time::sleep(time_limit + KILL_GRACE);
        tokio::pin!(hard_deadline);
        let mut take = |chunk: OutputChunk| {
            let (capture, wrap): (_, fn(CommandOutput) -> RuntimeEventKind) = match &chunk {
                OutputChunk::Stdout(_) => (&mut stdout, RuntimeEventKind::Stdout),
                OutputChunk::Stderr(_) => (&mut stderr, RuntimeEventKind::Stderr),
            };
            let bytes = match &chunk {
                OutputChunk::Stdout(bytes) | OutputChunk::Stderr(bytes) => bytes,
            };
            if let Some(output) = capture.push(bytes) {
                self.emit(queued, index, wrap(output));
            }
        };
        let mut channel_open = true;
        let result = loop {
            tokio::select! {
                biased;
                chunk = receiver.recv(), if channel_open => match chunk {
                    Some(chunk) => take(chunk),
                    None => channel_open = false,
                },
                result = &mut run => break result,
                _ = &mut hard_deadline => {
                    let _ = self.runtime.kill().await;
                    break match tokio::time::timeout(KILL_GRACE, &mut run).await {
                        Ok(result) => result,
                        Err(_) => Err(crate::runtime::RuntimeError::new(format!(
                            "{entry_point} did not stop after its time limit of {} s", time_limit.as_secs()
                        ))),
                    };
                }
            }
        };
        while let Ok(chunk) = receiver.try_recv() {
            take(chunk);
        }
        if let Some(rest) = stdout.flush_stream() {
            self.emit(queued, index, RuntimeEventKind::Stdout(rest));
        }
        if let Some(rest) = stderr.flush_stream() {
            self.emit(queued, index, RuntimeEventKind::Stderr(rest));
        }
        let mut outcome = match result {
            Ok(0) => Outcome::ok(),
            Ok(code) => Outcome {
                return_code: code,
                ..Outcome::error(format!("{entry_point} exited with code {code}"))
            },
            Err(error) => Outcome::error(error.to_string()),
        };
        outcome.stdout = Some(stdout.finish());
        outcome.stderr = Some(stderr.finish());
        outcome
    }
}

/// CPU seconds of this process and its waited-for children.
pub fn process_cpu_seconds() -> f64 {
    use nix::sys::resource::{getrusage, UsageWho};
    let seconds = |who| {
        getrusage(who)
            .map(|usage| {
                let user = usage.user_time();
                let system = usage.system_time();
                (user.tv_sec() + system.tv_sec()) as f64
                    + (user.tv_usec() + system.tv_usec()) as f64 / 1e6
            })
            .unwrap_or(0.0)
    };
    seconds(UsageWho::RUSAGE_SELF) + seconds(UsageWho::RUSAGE_CHILDREN)
}

#[cfg(test)]
mod tests;
