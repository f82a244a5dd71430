//! The high-level requestor API: a [`Session`] holds the daemon client, an
//! allocation (the budget) on one payment platform, the file transfer and the
//! payment follower; [`Session::run_job`] negotiates agreements for a
//! [`DemandSpec`] and runs [`TaskSpec`]s over up to N of them, one worker per
//! agreement: each worker creates an activity, deploys it, then takes tasks
//! from the shared queue until none are left. A task that fails is retried on
//! another provider; a provider whose activity breaks is dropped for the rest
//! of the session. Budget: the executor estimates the cost of every agreement
//! from its activity's usage and the offer's linear price, and stops before a
//! task could overrun it; the daemon refuses any acceptance above the
//! allocation, so nothing is ever overspent.

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::stream::{FuturesUnordered, StreamExt};
use golem_client::GolemClient;
use golem_model::activity::{
    Capture, CaptureFormat, CaptureMode, CommandOutput, CommandResult, ExeScriptCommand,
    ExeScriptCommandResult,
};
use golem_model::payment::MarketDecoration;
use rust_decimal::prelude::{FromPrimitive, ToPrimitive};
use rust_decimal::Decimal;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot, watch, Notify};

use crate::demand::DemandSpec;
use crate::error::{RequestorError, Result};
use crate::events::{Event, EventSink};
use crate::files::{FileTransfer, HttpFiles};
use crate::market::{self, lock, Negotiation, ProviderBook, SignedAgreement};
use crate::payments::{AgreementPayments, Payments};

mod service;
pub use service::{Publish, ServiceReport, ServiceSpec, COMMAND_ENDED};

/// How a session connects and pays.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    pub api_url: String,
    pub app_key: String,
    /// `dummy-local-tglm` for the offline demo.
    pub platform: String,
    pub budget: Decimal,
    /// The most one agreement may cost (GLM); by default its share of the
    /// budget (budget / agreements used at once).
    pub max_per_agreement: Option<Decimal>,
    /// Bind address of the built-in file server.
    pub files_addr: String,
    /// Move task files with gftp over this daemon bus socket instead of HTTP.
    pub gftp_bus_socket: Option<PathBuf>,
    /// How providers fetch packages published from local files; gftp finds
    /// the daemon's bus socket (`gftp_bus_socket`, else the daemon names it).
    pub package_transport: crate::config::PackageTransport,
    /// The most bytes one upload to the built-in file server may carry.
    pub max_upload_bytes: u64,
    /// Where the session journals what it holds (`crate::leftovers`); none: no journal.
    pub sessions_dir: Option<PathBuf>,
}

/// One step of a task.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Send the local file `from` to the provider's `to` (e.g. `/golem/input/a.txt`).
    Upload { from: PathBuf, to: String },
    /// Run `entry` with `args` in the activity.
    Run { entry: String, args: Vec<String> },
    /// Fetch the provider's `from` into the local file `to`.
    Download { from: String, to: PathBuf },
}

/// A unit of work: its steps run as one batch on one provider.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskSpec {
    pub id: String,
    pub steps: Vec<Step>,
}

/// Knobs of one job.
#[derive(Debug, Clone)]
pub struct JobOptions {
    /// Agreements used at once.
    pub max_workers: usize,
    /// Attempts per task, on different providers where possible.
    pub max_attempts: u32,
    /// Longest one task's batch may take.
    pub task_timeout: Duration,
    /// Longest deploy + start may take (images download here).
    pub deploy_timeout: Duration,
    /// How long to wait for a first agreement (or a replacement) before giving up.
    pub offer_timeout: Duration,
    /// How long to keep waiting (instead of `offer_timeout`) while matching
    /// providers are busy with other requestors: they free when their
    /// agreements end, so a crowded market is not a demand nobody matches.
    pub busy_timeout: Duration,
    /// The whole job's time limit.
    pub job_timeout: Duration,
    /// Expected busy seconds per agreement, to score offers.
    pub expected_seconds: f64,
    /// The most agreements held with one provider at once. Above 1, a
    /// provider is asked for another once every matching provider has one
    /// (a provider that refuses it for capacity is not asked again for more).
    pub agreements_per_provider: usize,
}

impl Default for JobOptions {
    fn default() -> Self {
        JobOptions {
            max_workers: 4,
            max_attempts: 3,
            task_timeout: Duration::from_secs(120),
            deploy_timeout: Duration::from_secs(300),
            offer_timeout: Duration::from_secs(20),
            busy_timeout: Duration::from_secs(300),
            job_timeout: Duration::from_secs(3600),
            expected_seconds: 60.0,
            agreements_per_provider: 1,
        }
    }
}

/// The outcome of one task.
#[derive(Debug, Clone, Serialize, Default)]
pub struct TaskOutcome {
    pub id: String,
    pub ok: bool,
    pub provider_name: String,
    pub provider_id: String,
    pub attempts: u32,
    pub seconds: f64,
    pub stdout: String,
    pub stderr: String,
    /// The exit code of a failed `run`, when the provider reported one.
    pub exit_code: Option<i32>,
    pub error: Option<String>,
}

/// What one agreement did in a job.
#[derive(Debug, Clone, Serialize)]
pub struct ProviderReport {
    pub agreement_id: String,
    pub provider_id: String,
    pub provider_name: String,
    pub tasks_done: usize,
    pub seconds: f64,
    /// Estimated cost from usage and price.
    pub estimated_cost: f64,
    pub failure: Option<String>,
}

/// Why a job stopped before all its tasks were done. Serialized (`--json`)
/// as its message, as the report always carried it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopReason {
    /// The budget, or the allocation behind it, cannot pay for more work.
    BudgetExhausted(String),
    /// No offer matched, or no provider is left for the remaining tasks.
    NoProviders(String),
    /// The job ran past its timeout.
    TimedOut(String),
}

impl StopReason {
    pub fn message(&self) -> &str {
        match self {
            StopReason::BudgetExhausted(message)
            | StopReason::NoProviders(message)
            | StopReason::TimedOut(message) => message,
        }
    }
}

impl std::fmt::Display for StopReason {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(self.message())
    }
}

impl Serialize for StopReason {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.message())
    }
}

/// The result of [`Session::run_job`].
#[derive(Debug, Clone, Serialize)]
pub struct JobReport {
    pub outcomes: Vec<TaskOutcome>,
    pub providers: Vec<ProviderReport>,
    pub seconds: f64,
    /// Why the job stopped before all tasks were done (budget, no providers, timeout).
    pub stopped: Option<StopReason>,
}

impl JobReport {
    pub fn done(&self) -> usize {
        self.outcomes.iter().filter(|outcome| outcome.ok).count()
    }
}

/// One row of the payment summary.
#[derive(Debug, Clone, Serialize)]
pub struct PaymentRow {
    pub agreement_id: String,
    #[serde(flatten)]
    pub payments: AgreementPayments,
}

/// Payments of a finished session.
#[derive(Debug, Clone, Serialize)]
pub struct PaymentSummary {
    pub platform: String,
    pub budget: Decimal,
    pub spent: Decimal,
    pub rows: Vec<PaymentRow>,
    /// Agreements that ended cleanly but whose invoice did not arrive in time.
    pub invoices_missing: Vec<String>,
}

/// A requestor session on one daemon.
pub struct Session {
    client: GolemClient,
    allocation_id: String,
    platform: String,
    budget: Decimal,
    max_per_agreement: Option<Decimal>,
    decoration: MarketDecoration,
    files: Arc<dyn FileTransfer>,
    /// Publishes task packages made from local files (gftp or http, per
    /// `package-transport`).
    packages: Arc<dyn FileTransfer>,
    payments: Arc<Payments>,
    events: EventSink,
    scratch: tempfile::TempDir,
    /// Agreements terminated cleanly: their invoices are awaited at the end.
    finished_agreements: Mutex<Vec<String>>,
    book: market::SharedBook,
    /// What a new run must end if this one dies (`crate::leftovers`).
    journal: Option<Arc<crate::leftovers::Journal>>,
}

impl Session {
    /// Create the allocation and start the built-in HTTP file server.
    /// Task files go over gftp when `gftp_bus_socket` is set; task packages
    /// as `package_transport` says.
    pub async fn start(config: SessionConfig, events: EventSink) -> Result<Session> {
        use crate::config::PackageTransport;
        let http = Arc::new(HttpFiles::start(&config.files_addr, config.max_upload_bytes).await?);
        let gftp = match (&config.gftp_bus_socket, config.package_transport) {
            (Some(socket), _) => Some(Arc::new(crate::files::GftpFiles::connect(socket).await?)),
            (None, PackageTransport::Gftp) => {
                let client = GolemClient::new(&config.api_url, &config.app_key);
                let socket = crate::files::daemon_bus_socket(&client).await?;
                Some(Arc::new(crate::files::GftpFiles::connect(&socket).await?))
            }
            (None, PackageTransport::Http) => None,
        };
        let files: Arc<dyn FileTransfer> = match (&config.gftp_bus_socket, &gftp) {
            (Some(_), Some(gftp)) => gftp.clone(),
            _ => http.clone(),
        };
        let packages: Arc<dyn FileTransfer> = match (config.package_transport, gftp) {
            (PackageTransport::Gftp, Some(gftp)) => gftp,
            _ => http,
        };
        Self::start_with_files(config, packages, files, events).await
    }

    /// [`start`](Self::start) with given file transfers for task packages and task files.
    pub async fn start_with_files(
        config: SessionConfig,
        packages: Arc<dyn FileTransfer>,
        files: Arc<dyn FileTransfer>,
        events: EventSink,
    ) -> Result<Session> {
        let client = GolemClient::new(&config.api_url, &config.app_key);
        let node_id = match &config.sessions_dir {
            Some(dir) => {
                let node_id = client.me().await?.identity.to_string();
                let cleaned = crate::leftovers::clean_dead_sessions(&client, dir, &node_id).await;
                if cleaned.sessions > 0 {
                    tracing::warn!(
                        sessions = cleaned.sessions,
                        agreements = cleaned.agreements,
                        allocations = cleaned.allocations,
                        "ended what earlier runs that died left behind"
                    );
                }
                Some((dir.clone(), node_id))
            }
            None => None,
        };
        let allocation = client
            .create_allocation(&config.platform, &config.budget.to_string())
            .await?;
        let journal = node_id.map(|(dir, node_id)| {
            Arc::new(crate::leftovers::Journal::create(
                &dir,
                &node_id,
                &allocation.allocation_id,
            ))
        });
        let events = events.with_journal(journal.clone());
        let decoration = client
            .demand_decorations(&[&allocation.allocation_id])
            .await?;
        events.emit(Event::SessionStarted {
            allocation_id: allocation.allocation_id.clone(),
            platform: config.platform.clone(),
            budget: config.budget.to_string(),
        });
        let payments = Arc::new(Payments::start(
            client.clone(),
            allocation.allocation_id.clone(),
            events.clone(),
        ));
        let scratch = tempfile::Builder::new()
            .prefix("golem-requestor-")
            .tempdir()
            .map_err(|error| RequestorError::io("a temporary directory", error))?;
        Ok(Session {
            client,
            allocation_id: allocation.allocation_id,
            platform: config.platform,
            budget: config.budget,
            max_per_agreement: config.max_per_agreement,
            decoration,
            files,
            packages,
            payments,
            events,
            scratch,
            finished_agreements: Mutex::default(),
            book: Arc::default(),
            journal,
        })
    }

    pub fn client(&self) -> &GolemClient {
        &self.client
    }

    pub fn allocation_id(&self) -> &str {
        &self.allocation_id
    }

    /// The demand body this session would publish for `spec`.
    pub fn demand(&self, spec: &DemandSpec) -> golem_model::market::DemandOfferBase {
        spec.build(&self.platform, &self.decoration)
    }

    /// Resolve a package (`hash:sha3:..`, URL, local `.wasm`/`.wat`/tarball).
    pub async fn package(&self, spec: &str) -> Result<String> {
        crate::package::resolve(spec, self.packages.as_ref(), self.scratch.path()).await
    }

    /// Negotiate agreements for `spec` and run `tasks` over them: start
    /// negotiating, hand each signed agreement to a worker until the tasks are
    /// done or the job must stop, wind down, and report.
    pub async fn run_job(
        &self,
        spec: &DemandSpec,
        tasks: Vec<TaskSpec>,
        options: &JobOptions,
    ) -> Result<JobReport> {
        let started = Instant::now();
        let demand = self.demand(spec);
        self.events.emit(Event::DemandPublished {
            subnet: spec.subnet.clone(),
            runtime: spec.runtime.runtime_name().into(),
        });
        let per_agreement = self.agreement_limit(options.max_workers, tasks.len());
        let shared = Arc::new(Shared::new(tasks.len()));
        let context = Arc::new(JobContext {
            client: self.client.clone(),
            files: self.files.clone(),
            tasks,
            options: options.clone(),
            events: self.events.clone(),
            shared: shared.clone(),
            budget: self.budget.to_f64().unwrap_or(f64::MAX),
            payments: self.payments.clone(),
        });
        let mut run = self.start_negotiation(spec, &demand, options, per_agreement);
        let failure = self
            .dispatch_agreements(&mut run, &context, spec, &demand, started)
            .await;
        let reports = self.wind_down(run, &shared).await;
        if let Some(error) = failure {
            return Err(error);
        }
        Ok(self.report(&context, reports, started))
    }

    /// Start the negotiator task; it signs agreements up to the target that
    /// [`Session::dispatch_agreements`] sets.
    fn start_negotiation(
        &self,
        spec: &DemandSpec,
        demand: &golem_model::market::DemandOfferBase,
        options: &JobOptions,
        per_agreement: Decimal,
    ) -> JobRun {
        let (signed_tx, signed_rx) = mpsc::unbounded_channel::<SignedAgreement>();
        let (target_tx, target_rx) = watch::channel(0usize);
        let (shutdown_tx, shutdown_rx) = watch::channel(());
        let active = Arc::new(AtomicUsize::new(0));
        let seen = Arc::new(AtomicUsize::new(0));
        let negotiation = Negotiation {
            client: self.client.clone(),
            demand: demand.clone(),
            caps: spec.caps,
            expected_seconds: options.expected_seconds,
            agreement_validity: spec.expiration,
            agreements_per_provider: options.agreements_per_provider,
            target: target_rx,
            active: active.clone(),
            book: self.book.clone(),
            signed: signed_tx,
            events: self.events.clone(),
            seen: seen.clone(),
            shutdown: shutdown_rx,
        };
        JobRun {
            negotiator: tokio::spawn(negotiation.run()),
            signed: signed_rx,
            target: target_tx,
            shutdown: shutdown_tx,
            active,
            seen,
            workers: tokio::task::JoinSet::new(),
            reports: Vec::new(),
            per_agreement,
            grace: options.task_timeout + Duration::from_secs(15),
        }
    }

    /// Until every task is done or the job must stop: start a worker for
    /// each signed agreement and collect the ones that end. Returns the error
    /// that fails the whole job (no offer ever matched), if any.
    async fn dispatch_agreements(
        &self,
        run: &mut JobRun,
        context: &Arc<JobContext>,
        spec: &DemandSpec,
        demand: &golem_model::market::DemandOfferBase,
        started: Instant,
    ) -> Option<RequestorError> {
        let options = &context.options;
        let shared = &context.shared;
        let mut last_alive = Instant::now();
        let mut ever_signed = false;
        loop {
            let remaining = shared.remaining.load(Ordering::SeqCst);
            if let Some(message) = self.payments.budget_exhausted() {
                shared.stop_with(StopReason::BudgetExhausted(format!(
                    "a payment was refused: {message}"
                )));
            }
            if remaining == 0 || shared.stopped().is_some() {
                return None;
            }
            if !run.workers.is_empty() {
                last_alive = Instant::now();
            } else if last_alive.elapsed() > self.wait_limit(options) {
                let reason = self
                    .no_providers(spec, demand, options, run, remaining, ever_signed)
                    .await;
                shared.stop_with(reason.clone());
                return (!ever_signed).then(|| RequestorError::NoOffers(reason.message().into()));
            }
            if started.elapsed() > options.job_timeout {
                shared.stop_with(StopReason::TimedOut(format!(
                    "the job timed out after {:.0} s",
                    options.job_timeout.as_secs_f64()
                )));
                return None;
            }
            let wanted = options.max_workers.max(1).min(remaining);
            run.target
                .send_if_modified(|target| std::mem::replace(target, wanted) != wanted);
            tokio::select! {
                Some(agreement) = run.signed.recv() => {
                    ever_signed = true;
                    last_alive = Instant::now();
                    self.start_worker(run, context, agreement);
                }
                Some(joined) = run.workers.join_next(), if !run.workers.is_empty() => {
                    last_alive = Instant::now();
                    if let Ok(report) = joined {
                        self.worker_ended(&report, &run.active);
                        run.reports.push(report);
                    }
                }
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            }
        }
    }

    /// How long a job without workers waits for an agreement: longer while
    /// matching providers are busy (refused us for capacity) than when none is.
    fn wait_limit(&self, options: &JobOptions) -> Duration {
        if lock(&self.book).waiting.is_empty() {
            options.offer_timeout
        } else {
            options.busy_timeout.max(options.offer_timeout)
        }
    }

    /// Why no provider is left: the market's diagnosis of the demand.
    async fn no_providers(
        &self,
        spec: &DemandSpec,
        demand: &golem_model::market::DemandOfferBase,
        options: &JobOptions,
        run: &JobRun,
        remaining: usize,
        ever_signed: bool,
    ) -> StopReason {
        let caps_note = (run.seen.load(Ordering::SeqCst) > 0).then(|| {
            "offers were seen but none led to an agreement (price caps, or providers refused)"
                .to_string()
        });
        let why = market::diagnose(&self.client, &spec.subnet, demand, caps_note).await;
        // The last provider that failed says why (a deploy that could not
        // fetch the package, a wrong hash...).
        let last_failure = run.reports.iter().rev().find_map(|report| {
            let provider = &report.provider;
            provider.failure.as_ref().map(|failure| {
                format!(
                    "{why}; last failure, on {}: {failure}",
                    provider.provider_name
                )
            })
        });
        let why = last_failure.unwrap_or(why);
        let waited = self.wait_limit(options).as_secs_f64();
        let busy = market::busy_note(&lock(&self.book));
        StopReason::NoProviders(match (ever_signed, busy) {
            (true, None) => format!(
                "no provider left to run the remaining {remaining} task(s) after {waited:.0} s: {why}"
            ),
            (true, Some(busy)) => format!(
                "no provider free to run the remaining {remaining} task(s) after {waited:.0} s: {busy}; {why}"
            ),
            (false, None) => format!("no offer matched the demand within {waited:.0} s: {why}"),
            (false, Some(busy)) => {
                format!("no provider was free within {waited:.0} s: {busy}; {why}")
            }
        })
    }

    fn start_worker(
        &self,
        run: &mut JobRun,
        context: &Arc<JobContext>,
        agreement: SignedAgreement,
    ) {
        self.payments.track(
            &agreement.agreement_id,
            &agreement.provider_id,
            &agreement.provider_name,
            run.per_agreement,
        );
        let span = tracing::info_span!("worker", agreement_id = %agreement.agreement_id, provider = %agreement.provider_name);
        run.workers.spawn(tracing::Instrument::instrument(
            worker(context.clone(), agreement),
            span,
        ));
    }

    /// Stop negotiating, let the workers finish their current task (up to
    /// the task timeout and a grace), and end agreements signed too late.
    async fn wind_down(&self, mut run: JobRun, shared: &Shared) -> Vec<WorkerReport> {
        drop(run.target);
        drop(run.shutdown);
        shared.notify.notify_waiters();
        let _ = tokio::time::timeout(Duration::from_secs(3), run.negotiator).await;
        let deadline = Instant::now() + run.grace;
        while !run.workers.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, run.workers.join_next()).await {
                Ok(Some(Ok(report))) => {
                    self.worker_ended(&report, &run.active);
                    run.reports.push(report);
                }
                Ok(Some(Err(_))) => {}
                Ok(None) => break,
                Err(_) => {
                    run.workers.abort_all();
                    break;
                }
            }
        }
        while let Ok(agreement) = run.signed.try_recv() {
            self.payments.track(
                &agreement.agreement_id,
                &agreement.provider_id,
                &agreement.provider_name,
                run.per_agreement,
            );
            if terminate(&self.client, &agreement.agreement_id).await {
                lock(&self.finished_agreements).push(agreement.agreement_id.clone());
            }
        }
        run.reports
    }

    /// The job's report: every task's outcome ("not run" when it never ran),
    /// the providers used and why the job stopped early, if it did.
    fn report(
        &self,
        context: &JobContext,
        reports: Vec<WorkerReport>,
        started: Instant,
    ) -> JobReport {
        let outcomes = lock(&context.shared.outcomes)
            .iter()
            .enumerate()
            .map(|(index, outcome)| {
                outcome.clone().unwrap_or_else(|| TaskOutcome {
                    id: context.tasks[index].id.clone(),
                    error: Some("not run".into()),
                    ..TaskOutcome::default()
                })
            })
            .collect::<Vec<_>>();
        let done = outcomes.iter().filter(|outcome| outcome.ok).count();
        self.events.emit(Event::JobFinished {
            tasks_done: done,
            tasks_failed: outcomes.len() - done,
            seconds: started.elapsed().as_secs_f64(),
        });
        let stopped = context.shared.stopped();
        if let Some(StopReason::BudgetExhausted(message)) = &stopped {
            self.events.emit(Event::BudgetExhausted {
                message: message.clone(),
            });
        }
        JobReport {
            outcomes,
            providers: reports.into_iter().map(|report| report.provider).collect(),
            seconds: started.elapsed().as_secs_f64(),
            stopped,
        }
    }

    /// The most one agreement may cost: `--max-per-agreement`, else the budget
    /// shared by the agreements used at once (never above the budget).
    fn agreement_limit(&self, max_workers: usize, tasks: usize) -> Decimal {
        let at_once = max_workers.max(1).min(tasks.max(1));
        self.max_per_agreement
            .unwrap_or_else(|| self.budget / Decimal::from(at_once))
            .min(self.budget)
    }

    fn worker_ended(&self, report: &WorkerReport, active: &AtomicUsize) {
        active.fetch_sub(1, Ordering::SeqCst);
        let mut book = lock(&self.book);
        book.release_slot(&report.provider.provider_id);
        if let Some(message) = &report.provider.failure {
            book.failed.insert(report.provider.provider_id.clone());
            self.events.emit(Event::ProviderFailed {
                provider_id: report.provider.provider_id.clone(),
                provider_name: report.provider.provider_name.clone(),
                message: message.clone(),
            });
        }
        if report.terminated {
            lock(&self.finished_agreements).push(report.provider.agreement_id.clone());
        }
    }

    /// Providers that failed in this session so far.
    pub fn failed_providers(&self) -> Vec<String> {
        let book: std::sync::MutexGuard<'_, ProviderBook> = lock(&self.book);
        book.failed.iter().cloned().collect()
    }

    /// Wait (up to `invoice_timeout`) for the invoices of the agreements that
    /// ended cleanly, release the allocation and sum up the payments.
    pub async fn finish(self, invoice_timeout: Duration) -> Result<PaymentSummary> {
        let finished = lock(&self.finished_agreements).clone();
        let invoices_missing = self
            .payments
            .wait_invoices(&finished, invoice_timeout)
            .await;
        let spent = self
            .client
            .allocation(&self.allocation_id)
            .await
            .map(|allocation| allocation.spent_amount)?;
        let _ = self.client.release_allocation(&self.allocation_id).await;
        let mut rows: Vec<PaymentRow> = self
            .payments
            .snapshot()
            .into_iter()
            .map(|(agreement_id, payments)| PaymentRow {
                agreement_id,
                payments,
            })
            .collect();
        rows.sort_by(|a, b| a.payments.provider_name.cmp(&b.payments.provider_name));
        if let Some(journal) = &self.journal {
            journal.close();
        }
        Ok(PaymentSummary {
            platform: self.platform,
            budget: self.budget,
            spent,
            rows,
            invoices_missing,
        })
    }
}

struct Pending {
    index: usize,
    attempt: u32,
    /// Providers this task already failed on.
    avoid: HashSet<String>,
}

struct Shared {
    queue: Mutex<VecDeque<Pending>>,
    outcomes: Mutex<Vec<Option<TaskOutcome>>>,
    /// Tasks neither done nor finally failed.
    remaining: AtomicUsize,
    stop: Mutex<Option<StopReason>>,
    notify: Notify,
    /// Estimated cost per agreement.
    costs: Mutex<HashMap<String, f64>>,
    /// Published URLs of input files, by local path.
    urls: Mutex<HashMap<PathBuf, String>>,
}

/// One job's negotiation and workers while it runs.
struct JobRun {
    negotiator: tokio::task::JoinHandle<()>,
    /// Agreements the negotiator signed, in order.
    signed: mpsc::UnboundedReceiver<SignedAgreement>,
    /// How many agreements the negotiator should keep.
    target: watch::Sender<usize>,
    /// Dropped to stop the negotiator.
    shutdown: watch::Sender<()>,
    /// Agreements with a worker (the negotiator counts them against the target).
    active: Arc<AtomicUsize>,
    /// Offers the negotiator has seen (for the no-provider diagnosis).
    seen: Arc<AtomicUsize>,
    workers: tokio::task::JoinSet<WorkerReport>,
    reports: Vec<WorkerReport>,
    per_agreement: Decimal,
    /// How long winding down waits for the workers' current tasks.
    grace: Duration,
}

impl Shared {
    fn new(count: usize) -> Shared {
        Shared {
            queue: Mutex::new(
                (0..count)
                    .map(|index| Pending {
                        index,
                        attempt: 0,
                        avoid: HashSet::new(),
                    })
                    .collect(),
            ),
            outcomes: Mutex::new(vec![None; count]),
            remaining: AtomicUsize::new(count),
            stop: Mutex::new(None),
            notify: Notify::new(),
            costs: Mutex::default(),
            urls: Mutex::default(),
        }
    }

    fn stop_with(&self, reason: StopReason) {
        lock(&self.stop).get_or_insert(reason);
        self.notify.notify_waiters();
    }

    fn stopped(&self) -> Option<StopReason> {
        lock(&self.stop).clone()
    }

    fn finish(&self, index: usize, outcome: TaskOutcome) {
        lock(&self.outcomes)[index] = Some(outcome);
        self.remaining.fetch_sub(1, Ordering::SeqCst);
        self.notify.notify_waiters();
    }

    /// The next task for `provider_id`: one it has not failed before if any.
    fn take(&self, provider_id: &str) -> Option<Pending> {
        let mut queue = lock(&self.queue);
        let position = queue
            .iter()
            .position(|pending| !pending.avoid.contains(provider_id))
            .unwrap_or(0);
        queue.remove(position)
    }
}

struct JobContext {
    client: GolemClient,
    files: Arc<dyn FileTransfer>,
    tasks: Vec<TaskSpec>,
    options: JobOptions,
    events: EventSink,
    shared: Arc<Shared>,
    budget: f64,
    payments: Arc<Payments>,
}

struct WorkerReport {
    provider: ProviderReport,
    /// The agreement was terminated by us and answered (an invoice follows).
    terminated: bool,
}

/// Why a task batch did not succeed.
enum BatchError {
    /// The command failed on a healthy activity: retry elsewhere.
    Task {
        message: String,
        exit_code: Option<i32>,
        stdout: String,
        stderr: String,
    },
    /// The provider or its activity is gone.
    Provider(String),
}

/// Task batches a worker keeps on its provider at once. Two hide the round
/// trips of sending a batch and reading its results behind the run of the
/// one before (the exe unit runs one batch at a time); more would only hold
/// tasks another worker could start.
const BATCHES_IN_FLIGHT: usize = 2;

/// One agreement's worker: start an activity, run tasks from the shared
/// queue until none are left or the job stops, then end the agreement.
async fn worker(context: Arc<JobContext>, agreement: SignedAgreement) -> WorkerReport {
    let started = Instant::now();
    let mut report = ProviderReport {
        agreement_id: agreement.agreement_id.clone(),
        provider_id: agreement.provider_id.clone(),
        provider_name: agreement.provider_name.clone(),
        tasks_done: 0,
        seconds: 0.0,
        estimated_cost: 0.0,
        failure: None,
    };
    let activity_id = match start_activity(&context, &agreement).await {
        Ok(activity_id) => activity_id,
        Err(message) => {
            report.failure = Some(message);
            // No activity ran: end the agreement, but do not wait for an invoice.
            let _ = terminate(&context.client, &agreement.agreement_id).await;
            report.seconds = started.elapsed().as_secs_f64();
            return WorkerReport {
                provider: report,
                terminated: false,
            };
        }
    };
    let mut worker = Worker {
        context,
        agreement,
        activity_id,
        report,
        started,
        last_budget_check: None,
        last_batch: BatchOrder::first(),
    };
    worker.run_tasks().await;
    worker.finish().await
}

/// A worker's state while its activity runs tasks.
struct Worker {
    context: Arc<JobContext>,
    agreement: SignedAgreement,
    activity_id: String,
    report: ProviderReport,
    started: Instant,
    /// When the budget was last checked (a call to the provider for usage).
    last_budget_check: Option<Instant>,
    /// The order of the batch sent last, for the one sent next.
    last_batch: BatchOrder,
}

/// Where a task's batch stands in its worker's queue on the provider: it is
/// sent once the batch before it was accepted (so the exe unit queues them
/// in that order), and its time limit counts from the end of that batch.
/// Each receiver resolves when the earlier batch's sender is dropped.
struct BatchOrder {
    previous_accepted: oneshot::Receiver<()>,
    previous_ended: oneshot::Receiver<()>,
}

impl BatchOrder {
    /// The order of a worker's first batch: nothing before it.
    fn first() -> BatchOrder {
        BatchOrder {
            previous_accepted: oneshot::channel().1,
            previous_ended: oneshot::channel().1,
        }
    }
}

impl Worker {
    /// Take tasks until none are left, the job stops or the provider is gone.
    /// Up to [`BATCHES_IN_FLIGHT`] tasks' batches are on the provider at
    /// once: its exe unit runs them one after the other, so the next batch
    /// is already queued when one ends, and sending it and reading the
    /// previous one's results overlap a run instead of adding a round trip
    /// to every task. Once the provider is gone or the job stops, the
    /// batches already sent are seen to their end (failures go back to the
    /// queue) and no new one is sent.
    async fn run_tasks(&mut self) {
        let context = self.context.clone();
        let shared = &context.shared;
        let mut in_flight = FuturesUnordered::new();
        loop {
            while self.report.failure.is_none()
                && shared.stopped().is_none()
                && in_flight.len() < BATCHES_IN_FLIGHT
            {
                let Some(pending) = shared.take(&self.agreement.provider_id) else {
                    break;
                };
                in_flight.push(self.send_task(pending));
            }
            let Some((pending, seconds, result)) = in_flight.next().await else {
                if self.report.failure.is_some()
                    || shared.stopped().is_some()
                    || shared.remaining.load(Ordering::SeqCst) == 0
                {
                    return;
                }
                // Tasks may still come back from other workers: wait a little.
                let _ = tokio::time::timeout(Duration::from_millis(200), shared.notify.notified())
                    .await;
                continue;
            };
            match result {
                Ok((stdout, stderr)) => self.task_succeeded(pending, seconds, stdout, stderr).await,
                Err(error) => {
                    if let Some(message) = self.task_failed(pending, seconds, error) {
                        self.report.failure.get_or_insert(message);
                    }
                }
            }
        }
    }

    /// Start `pending`'s task on this worker's activity; the future ends
    /// with the task, how long it took since it was sent and its outcome.
    fn send_task(
        &mut self,
        mut pending: Pending,
    ) -> impl std::future::Future<Output = (Pending, f64, Result<(String, String), BatchError>)>
    {
        pending.attempt += 1;
        let context = self.context.clone();
        let activity_id = self.activity_id.clone();
        let (accepted, previous_accepted) = oneshot::channel::<()>();
        let (ended, previous_ended) = oneshot::channel::<()>();
        let order = std::mem::replace(
            &mut self.last_batch,
            BatchOrder {
                previous_accepted,
                previous_ended,
            },
        );
        context.events.emit(Event::TaskStarted {
            task_id: context.tasks[pending.index].id.clone(),
            provider_name: self.agreement.provider_name.clone(),
            attempt: pending.attempt,
        });
        async move {
            let task_started = Instant::now();
            let task = &context.tasks[pending.index];
            let result = run_task(&context, &activity_id, task, order, accepted).await;
            drop(ended);
            (pending, task_started.elapsed().as_secs_f64(), result)
        }
    }

    fn outcome(&self, pending: &Pending, seconds: f64) -> TaskOutcome {
        TaskOutcome {
            id: self.context.tasks[pending.index].id.clone(),
            provider_name: self.agreement.provider_name.clone(),
            provider_id: self.agreement.provider_id.clone(),
            attempts: pending.attempt,
            seconds,
            ..TaskOutcome::default()
        }
    }

    /// Record a done task and, at most every 250 ms, check the budget.
    async fn task_succeeded(
        &mut self,
        pending: Pending,
        seconds: f64,
        stdout: String,
        stderr: String,
    ) {
        let context = self.context.clone();
        let task = &context.tasks[pending.index];
        self.report.tasks_done += 1;
        context.events.emit(Event::TaskFinished {
            task_id: task.id.clone(),
            provider_name: self.agreement.provider_name.clone(),
            seconds,
        });
        context.events.emit(Event::TaskOutput {
            task_id: task.id.clone(),
            stdout: stdout.clone(),
            stderr: stderr.clone(),
        });
        let outcome = TaskOutcome {
            ok: true,
            stdout,
            stderr,
            exit_code: Some(0),
            ..self.outcome(&pending, seconds)
        };
        context.shared.finish(pending.index, outcome);
        if self
            .last_budget_check
            .is_none_or(|at: Instant| at.elapsed() > Duration::from_millis(250))
        {
            self.last_budget_check = Some(Instant::now());
            check_budget(
                &context,
                &self.agreement,
                &self.activity_id,
                self.report.tasks_done,
                self.started,
            )
            .await;
        }
    }

    /// Put a failed task back for another provider, or record it as failed
    /// when out of attempts. Returns the message when the provider is gone.
    fn task_failed(&self, mut pending: Pending, seconds: f64, error: BatchError) -> Option<String> {
        let context = &self.context;
        let shared = &context.shared;
        let task = &context.tasks[pending.index];
        let (message, provider_gone, exit_code, stdout, stderr) = match error {
            BatchError::Task {
                message,
                exit_code,
                stdout,
                stderr,
            } => (message, false, exit_code, stdout, stderr),
            BatchError::Provider(message) => (message, true, None, String::new(), String::new()),
        };
        let retry = pending.attempt < context.options.max_attempts && shared.stopped().is_none();
        context.events.emit(Event::TaskFailed {
            task_id: task.id.clone(),
            provider_name: self.agreement.provider_name.clone(),
            message: message.clone(),
            will_retry: retry,
        });
        if retry {
            pending.avoid.insert(self.agreement.provider_id.clone());
            lock(&shared.queue).push_back(pending);
            shared.notify.notify_waiters();
        } else {
            let outcome = TaskOutcome {
                ok: false,
                stdout,
                stderr,
                exit_code,
                error: Some(message.clone()),
                ..self.outcome(&pending, seconds)
            };
            shared.finish(pending.index, outcome);
        }
        provider_gone.then_some(message)
    }

    /// Destroy the activity and terminate the agreement (without waiting
    /// when the provider is gone); the report says whether it ended cleanly.
    async fn finish(mut self) -> WorkerReport {
        let context = &self.context;
        let agreement = &self.agreement;
        self.report.estimated_cost = lock(&context.shared.costs)
            .get(&agreement.agreement_id)
            .copied()
            .unwrap_or(0.0);
        let terminated = if self.report.failure.is_some() {
            // The provider is likely gone: end the agreement without waiting on it.
            let client = context.client.clone();
            let agreement_id = agreement.agreement_id.clone();
            tokio::spawn(async move {
                let _ = tokio::time::timeout(
                    Duration::from_secs(15),
                    client.terminate_agreement(&agreement_id, None),
                )
                .await;
            });
            false
        } else {
            let _ = tokio::time::timeout(
                Duration::from_secs(10),
                context.client.destroy_activity(&self.activity_id),
            )
            .await;
            terminate(&context.client, &agreement.agreement_id).await
        };
        if terminated {
            context.events.emit(Event::AgreementTerminated {
                agreement_id: agreement.agreement_id.clone(),
                provider_name: agreement.provider_name.clone(),
            });
        }
        self.report.seconds = self.started.elapsed().as_secs_f64();
        WorkerReport {
            provider: self.report,
            terminated,
        }
    }
}

/// Terminate an agreement with yapapi's Success reason; true when it took.
async fn terminate(client: &GolemClient, agreement_id: &str) -> bool {
    matches!(
        tokio::time::timeout(
            Duration::from_secs(10),
            client.terminate_agreement(agreement_id, Some(&market::success_reason())),
        )
        .await,
        Ok(Ok(()))
    )
}

async fn start_activity(
    context: &JobContext,
    agreement: &SignedAgreement,
) -> Result<String, String> {
    let client = &context.client;
    let activity_id = client
        .create_activity(&agreement.agreement_id, 30.0)
        .await
        .map_err(|error| format!("cannot create an activity: {error}"))?;
    context.events.emit(Event::ActivityCreated {
        activity_id: activity_id.clone(),
        provider_name: agreement.provider_name.clone(),
    });
    let script = [
        ExeScriptCommand::Deploy {
            net: Vec::new(),
            hosts: Default::default(),
            hostname: None,
            volumes: None,
            env: Default::default(),
            progress: None,
        },
        ExeScriptCommand::Start { args: Vec::new() },
    ];
    let outcome = async {
        let batch = client.exec(&activity_id, &script).await?;
        client
            .wait_batch(&activity_id, &batch, context.options.deploy_timeout)
            .await
    }
    .await;
    match outcome {
        Ok(results) if batch_ok(&results, script.len()) => Ok(activity_id),
        Ok(results) => Err(with_package_address_hint(format!(
            "deploy failed: {}",
            first_error(&results).unwrap_or_else(|| "no result".into())
        ))),
        Err(error) => Err(format!("deploy failed: {error}")),
    }
}

/// A provider on another machine cannot fetch a package served on loopback
/// (the file server's default address): say which setting fixes it.
fn with_package_address_hint(message: String) -> String {
    let loopback = ["http://127.", "http://localhost", "http://[::1]"];
    let fetch_failed = message.contains("cannot download the task package from")
        || message.contains("task package download from");
    if fetch_failed && loopback.iter().any(|prefix| message.contains(prefix)) {
        format!(
            "{message} (task packages are served on GOLEM_REQUESTOR_FILES_ADDR, 127.0.0.1 by default, \
             which only providers on this machine reach: set it to an address of this machine \
             the providers reach, e.g. GOLEM_REQUESTOR_FILES_ADDR=<address>:0, or use \
             --package-transport gftp, the default, which needs no reachable address)"
        )
    } else {
        message
    }
}

fn batch_ok(results: &[ExeScriptCommandResult], commands: usize) -> bool {
    results.len() == commands
        && results
            .iter()
            .all(|result| result.result == CommandResult::Ok)
}

fn first_error(results: &[ExeScriptCommandResult]) -> Option<String> {
    results
        .iter()
        .find(|result| result.result == CommandResult::Error)
        .map(|result| {
            result
                .message
                .clone()
                .unwrap_or_else(|| format!("command {} failed", result.index))
        })
}

fn output_text(output: &Option<CommandOutput>) -> String {
    match output {
        Some(CommandOutput::Str(text)) => text.clone(),
        Some(CommandOutput::Bin(bytes)) => String::from_utf8_lossy(bytes).into_owned(),
        None => String::new(),
    }
}

/// `"<entry> exited with code N"` → N.
pub fn exit_code_of(message: &str) -> Option<i32> {
    message
        .rsplit_once("exited with code ")
        .and_then(|(_, code)| code.split_whitespace().next()?.parse().ok())
}

async fn publish(context: &JobContext, path: &Path) -> Result<String, String> {
    if let Some(url) = lock(&context.shared.urls).get(path) {
        return Ok(url.clone());
    }
    let url = context
        .files
        .publish(path)
        .await
        .map_err(|error| error.to_string())?;
    lock(&context.shared.urls).insert(path.to_path_buf(), url.clone());
    Ok(url)
}

/// Run `task` as one batch on `activity_id`, in its `order` behind the
/// batch sent before it (the exe unit runs batches one after the other);
/// `accepted` is dropped once this batch is accepted (or failed).
async fn run_task(
    context: &JobContext,
    activity_id: &str,
    task: &TaskSpec,
    order: BatchOrder,
    accepted: oneshot::Sender<()>,
) -> Result<(String, String), BatchError> {
    let local_error = |message: String| BatchError::Task {
        message,
        exit_code: None,
        stdout: String::new(),
        stderr: String::new(),
    };
    let capture = Some(Capture {
        stdout: Some(CaptureMode::AtEnd {
            part: None,
            format: Some(CaptureFormat::Str),
        }),
        stderr: Some(CaptureMode::AtEnd {
            part: None,
            format: Some(CaptureFormat::Str),
        }),
    });
    let mut commands = Vec::new();
    let mut upload_slots = Vec::new();
    let built = build_commands(context, task, capture, &mut commands, &mut upload_slots).await;
    let outcome = match built {
        Ok(()) => run_commands(context, activity_id, &commands, order, accepted).await,
        Err(message) => Err(local_error(message)),
    };
    // The task is done (or failed): its upload slots take nothing more.
    for url in &upload_slots {
        context.files.close(url).await;
    }
    outcome
}

/// The batch of `task`'s steps; the upload slots it opens go to `upload_slots`.
async fn build_commands(
    context: &JobContext,
    task: &TaskSpec,
    capture: Option<Capture>,
    commands: &mut Vec<ExeScriptCommand>,
    upload_slots: &mut Vec<String>,
) -> Result<(), String> {
    for step in &task.steps {
        commands.push(match step {
            Step::Upload { from, to } => ExeScriptCommand::Transfer {
                from: publish(context, from).await?,
                to: format!("container:{to}"),
                format: None,
                depth: None,
                fileset: None,
                progress: None,
            },
            Step::Run { entry, args } => ExeScriptCommand::Run {
                entry_point: entry.clone(),
                args: args.clone(),
                capture: capture.clone(),
            },
            Step::Download { from, to } => {
                let slot = context
                    .files
                    .receive(to)
                    .await
                    .map_err(|error| error.to_string())?;
                upload_slots.push(slot.clone());
                ExeScriptCommand::Transfer {
                    from: format!("container:{from}"),
                    to: slot,
                    format: None,
                    depth: None,
                    fileset: None,
                    progress: None,
                }
            }
        });
    }
    Ok(())
}

/// Run one task's batch and judge its outcome.
async fn run_commands(
    context: &JobContext,
    activity_id: &str,
    commands: &[ExeScriptCommand],
    order: BatchOrder,
    accepted: oneshot::Sender<()>,
) -> Result<(String, String), BatchError> {
    let client = &context.client;
    let results = async {
        // Sent or dropped alike: the batch before this one is no longer ahead of it.
        let _ = order.previous_accepted.await;
        let batch = client.exec(activity_id, commands).await;
        drop(accepted);
        let batch = batch?;
        let _ = order.previous_ended.await;
        client
            .wait_batch(activity_id, &batch, context.options.task_timeout)
            .await
    }
    .await
    .map_err(|error| BatchError::Provider(error.to_string()))?;
    let (mut stdout, mut stderr) = (String::new(), String::new());
    for result in &results {
        stdout.push_str(&output_text(&result.stdout));
        stderr.push_str(&output_text(&result.stderr));
    }
    if batch_ok(&results, commands.len()) {
        return Ok((stdout, stderr));
    }
    let message = first_error(&results).unwrap_or_else(|| "the batch ended early".into());
    // A dead activity is the provider's failure, not the task's.
    let alive = matches!(
        tokio::time::timeout(Duration::from_secs(5), client.activity_state(activity_id)).await,
        Ok(Ok(state)) if state.state.alive()
    );
    if !alive {
        return Err(BatchError::Provider(message));
    }
    Err(BatchError::Task {
        exit_code: exit_code_of(&message),
        message,
        stdout,
        stderr,
    })
}

/// Update this agreement's estimated cost and stop the job before the next
/// task could overrun the budget.
async fn check_budget(
    context: &JobContext,
    agreement: &SignedAgreement,
    activity_id: &str,
    tasks_done: usize,
    since: Instant,
) {
    let usage = match context.client.activity_usage(activity_id).await {
        Ok(usage) => usage.current_usage.unwrap_or_default(),
        Err(_) => return,
    };
    let cost = agreement
        .price
        .cost_at_least(&usage, since.elapsed().as_secs_f64());
    let total: f64 = {
        let mut costs = lock(&context.shared.costs);
        costs.insert(agreement.agreement_id.clone(), cost);
        costs.values().sum()
    };
    let per_task = cost / tasks_done.max(1) as f64;
    let workers = lock(&context.shared.costs).len().max(1) as f64;
    if total + per_task * workers > context.budget {
        let spent = Decimal::from_f64(total).unwrap_or_default().round_dp(6);
        context.shared.stop_with(StopReason::BudgetExhausted(format!(
            "budget of {} GLM exhausted: about {spent} GLM used and the next task would cost about {:.6} GLM (raise --budget or `budget` in the job file)",
            context.budget, per_task
        )));
    }
    if let Some(message) = context.payments.budget_exhausted() {
        context
            .shared
            .stop_with(StopReason::BudgetExhausted(format!(
                "budget exhausted: {message}"
            )));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_package_on_loopback_that_a_provider_cannot_fetch_names_the_setting() {
        let unreachable = "deploy failed: deploy failed: cannot download the task package from \
            http://127.0.0.1:38339/f/76d5/transform.wasm: tcp connect error: Connection refused";
        let hinted = with_package_address_hint(unreachable.to_string());
        assert!(hinted.starts_with(unreachable), "{hinted}");
        assert!(
            hinted.contains("GOLEM_REQUESTOR_FILES_ADDR=<address>:0"),
            "{hinted}"
        );
        // Other failures, and packages on reachable addresses, keep their message.
        let elsewhere =
            "deploy failed: cannot download the task package from http://10.0.0.5:80/p: timeout";
        assert_eq!(with_package_address_hint(elsewhere.to_string()), elsewhere);
        assert_eq!(
            with_package_address_hint("deploy failed: bad module".into()),
            "deploy failed: bad module"
        );
    }

    #[test]
    fn exit_codes_come_from_the_exe_unit_message() {
        assert_eq!(exit_code_of("hello exited with code 3"), Some(3));
        assert_eq!(
            exit_code_of("sh exited with code 127 (not found)"),
            Some(127)
        );
        assert_eq!(exit_code_of("something else"), None);
    }
}
