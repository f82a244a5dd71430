//! The `golem-requestor` command line over the [`Session`] API: `run` (one
//! command on one provider, output and exit code passed through), `script`
//! (a job file with progress bars on a terminal, JSON event lines with
//! `--json`, and a summary table), and `offers` (what the market offers now).

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use rust_decimal::Decimal;
use serde::Serialize;

use crate::config::Connection;

/// `println!` that ignores a closed stdout (`golem-requestor offers | head`).
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}
use crate::demand::{DemandSpec, Runtime};
use crate::error::{RequestorError, Result};
use crate::events::{Event, EventSink};
use crate::market;
use crate::session::{
    JobOptions, JobReport, PaymentSummary, Publish, ServiceSpec, Session, SessionConfig, Step,
    TaskSpec,
};

#[derive(Debug, Parser)]
#[command(
    name = "golem-requestor",
    version,
    about = "Run work on the Golem network"
)]
pub struct Cli {
    #[command(flatten)]
    pub common: Common,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct Common {
    #[command(flatten)]
    pub connection: ConnectionArgs,
    /// Market subnet (`golem.node.debug.subnet`).
    #[arg(long, global = true, default_value = "public")]
    pub subnet: String,
    /// Payment platform.
    #[arg(long, global = true, default_value = "dummy-local-tglm")]
    pub platform: String,
    /// Log filter for diagnostics on stderr (e.g. `info`, `golem_requestor=debug`).
    #[arg(long, global = true, default_value = "warn")]
    pub log_level: String,
    /// The most one agreement may cost in GLM; debit notes and invoices above
    /// it are rejected (default: the budget divided by the parallelism).
    #[arg(long, global = true, value_name = "GLM")]
    pub max_per_agreement: Option<Decimal>,
}

/// The flags of [`crate::config::RequestorSettings`], its last layer
/// (serialized with its keys).
#[derive(Debug, Args, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct ConnectionArgs {
    /// The daemon's REST API (default: $YAGNA_API_URL, else http://127.0.0.1:7465).
    #[arg(long, global = true)]
    pub api_url: Option<String>,
    /// App-key of the daemon (default: $YAGNA_APPKEY, else $GOLEM_AUTOCONF_APPKEY).
    #[arg(long, global = true)]
    pub app_key: Option<String>,
    /// Move task files with gftp over this daemon bus socket (`<data-dir>/bus.sock`)
    /// instead of the built-in HTTP server [env: GOLEM_BUS_SOCKET].
    #[arg(long, global = true, value_name = "PATH")]
    pub bus_socket: Option<PathBuf>,
    /// Largest file a provider may upload to the built-in HTTP server, per
    /// upload (413 beyond) [env: GOLEM_REQUESTOR_MAX_UPLOAD_MIB] [default: 1024]
    #[arg(long, global = true, value_name = "MIB")]
    pub max_upload_mib: Option<u64>,
    /// Where each run keeps the journal of its allocation and agreements; a
    /// new run ends what dead runs left there [env: GOLEM_REQUESTOR_SESSIONS_DIR]
    /// [default: ~/.local/share/golem-requestor/sessions]
    #[arg(long, global = true, value_name = "DIR")]
    pub sessions_dir: Option<PathBuf>,
    /// How providers fetch a task package published from a local file: `gftp`
    /// (served through the daemon's bus socket, which must be on this machine;
    /// works for providers on any machine that reaches this node) or `http`
    /// (the built-in file server on GOLEM_REQUESTOR_FILES_ADDR, 127.0.0.1 unless
    /// set) [env: GOLEM_REQUESTOR_PACKAGE_TRANSPORT] [requestor.toml:
    /// package-transport] [default: gftp]
    #[arg(long, global = true, value_name = "gftp|http")]
    pub package_transport: Option<String>,
    /// The settings file (TOML with the keys of these flags, e.g.
    /// `package-transport = "http"`) [env: GOLEM_REQUESTOR_CONFIG] [default:
    /// ~/.config/golem-requestor/requestor.toml when it exists]
    #[arg(long, global = true, value_name = "FILE")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run one command on one provider and print its output.
    Run(RunArgs),
    /// Run a job file: several tasks over several providers, files in and out.
    Script(ScriptArgs),
    /// List the offers on the market now.
    Offers(OffersArgs),
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// `wasm` or `vm`.
    #[arg(long, default_value = "wasm")]
    pub runtime: String,
    /// WASM package: a .wasm/.wat/.zip file, a URL or hash:sha3:<hex>:<url>.
    #[arg(long)]
    pub package: Option<String>,
    /// VM image: a `docker save` tarball, a URL or hash:sha3:<hex>:<url>.
    #[arg(long)]
    pub image: Option<String>,
    /// Budget in GLM.
    #[arg(long, default_value = "1")]
    pub budget: Decimal,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 120)]
    pub timeout: u64,
    /// Minimum memory in GiB.
    #[arg(long)]
    pub min_mem_gib: Option<f64>,
    /// Run the command as a service (VM only) and forward a local TCP port
    /// into it through a VPN, like `docker run -p`: `LOCAL:PORT` listens on
    /// 127.0.0.1:LOCAL, `ADDR:LOCAL:PORT` on ADDR. Repeatable. Runs until
    /// Ctrl-C (or the command ends), then ends the agreement and pays.
    #[arg(long, value_name = "[ADDR:]LOCAL:PORT")]
    pub publish: Vec<Publish>,
    /// The entry point (WASM) or command (VM) and its arguments.
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
}

#[derive(Debug, Args)]
pub struct ScriptArgs {
    /// The job file (TOML).
    pub job: PathBuf,
    /// Print one JSON event per line on stdout instead of progress bars.
    #[arg(long)]
    pub json: bool,
    /// Override the job's budget (GLM).
    #[arg(long)]
    pub budget: Option<Decimal>,
    /// Override the job's output directory.
    #[arg(long)]
    pub output_dir: Option<PathBuf>,
    /// Override the job's parallelism.
    #[arg(long)]
    pub parallelism: Option<usize>,
    /// Override the job's agreements_per_provider: the most agreements held
    /// with one provider at once (default 1). Above 1, a provider is asked for
    /// another once every matching provider has one, so a parallelism above
    /// the number of providers can be used where their capacity allows.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub agreements_per_provider: Option<u64>,
    /// Seconds to wait for invoices at the end.
    #[arg(long, default_value_t = 10)]
    pub invoice_timeout: u64,
}

#[derive(Debug, Args)]
pub struct OffersArgs {
    /// Only offers of this runtime (`wasm` or `vm`).
    #[arg(long)]
    pub runtime: Option<String>,
    #[arg(long)]
    pub json: bool,
    /// Seconds to collect offers.
    #[arg(long, default_value_t = 2.0)]
    pub wait: f64,
}

/// Parse the arguments and run; the process exit code.
pub async fn run(cli: Cli) -> i32 {
    let filter = tracing_subscriber::EnvFilter::try_new(&cli.common.log_level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
    let result = match cli.command {
        Command::Run(args) => run_command(&cli.common, args).await,
        Command::Script(args) => script(&cli.common, args).await,
        Command::Offers(args) => offers(&cli.common, args).await,
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error}");
            1
        }
    }
}

fn session_config(common: &Common, budget: Decimal) -> Result<SessionConfig> {
    let connection = Connection::load(
        &common.connection,
        common.connection.config.as_deref(),
        &process_env,
    )?;
    Ok(SessionConfig {
        api_url: connection.api_url,
        app_key: connection.app_key,
        platform: common.platform.clone(),
        budget,
        max_per_agreement: common.max_per_agreement,
        files_addr: connection.files_addr,
        gftp_bus_socket: connection.bus_socket,
        package_transport: connection.package_transport,
        max_upload_bytes: connection.max_upload_bytes,
        sessions_dir: Some(connection.sessions_dir),
    })
}

/// The process environment, the one the settings read in production.
fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

fn runtime_of(text: &str) -> Result<Runtime> {
    Runtime::parse(text)
        .ok_or_else(|| RequestorError::Usage(format!("unknown runtime {text:?}: use wasm or vm")))
}

async fn run_command(common: &Common, args: RunArgs) -> Result<i32> {
    let runtime = runtime_of(&args.runtime)?;
    let package = match (runtime, &args.package, &args.image) {
        (Runtime::Wasm, Some(package), None) => package.clone(),
        (Runtime::Vm, None, Some(image)) | (Runtime::Vm, Some(image), None) => image.clone(),
        (Runtime::Wasm, _, _) => {
            return Err(RequestorError::Usage(
                "--runtime wasm needs --package FILE|URL".into(),
            ))
        }
        (Runtime::Vm, _, _) => {
            return Err(RequestorError::Usage(
                "--runtime vm needs --image FILE|URL".into(),
            ))
        }
    };
    if !args.publish.is_empty() {
        return run_service(common, args, runtime, package).await;
    }
    // Print the output the moment the task finishes, before agreements end.
    let (events, mut receiver) = EventSink::channel();
    let printer = tokio::spawn(async move {
        use std::io::Write;
        let mut printed = false;
        while let Some(event) = receiver.recv().await {
            if let Event::TaskOutput { stdout, stderr, .. } = event {
                let _ = std::io::stdout().write_all(stdout.as_bytes());
                let _ = std::io::stdout().flush();
                let _ = std::io::stderr().write_all(stderr.as_bytes());
                printed = true;
            }
        }
        printed
    });
    let (session, spec) = run_session(common, &args, runtime, &package, events).await?;
    let (entry, rest) = args
        .command
        .split_first()
        .ok_or_else(|| RequestorError::Usage("give the command after --".into()))?;
    let task = TaskSpec {
        id: "run".into(),
        steps: vec![Step::Run {
            entry: entry.clone(),
            args: rest.to_vec(),
        }],
    };
    let timeout = Duration::from_secs(args.timeout);
    let options = JobOptions {
        max_workers: 1,
        max_attempts: 1,
        task_timeout: timeout,
        deploy_timeout: timeout,
        offer_timeout: timeout.min(Duration::from_secs(15)),
        busy_timeout: timeout,
        job_timeout: timeout,
        expected_seconds: 10.0,
        agreements_per_provider: 1,
    };
    let report = session.run_job(&spec, vec![task], &options).await;
    // Pay in the background of printing: invoices are awaited only briefly.
    let report = match report {
        Ok(report) => report,
        Err(error) => {
            let _ = session.finish(Duration::from_millis(0)).await;
            let _ = tokio::time::timeout(Duration::from_secs(2), printer).await;
            return Err(error);
        }
    };
    let outcome = report.outcomes.first().cloned().unwrap_or_default();
    let _ = session.finish(Duration::from_secs(2)).await;
    let printed = tokio::time::timeout(Duration::from_secs(2), printer)
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or(false);
    if !printed {
        print!("{}", outcome.stdout);
        eprint!("{}", outcome.stderr);
    }
    if outcome.ok {
        return Ok(0);
    }
    if let Some(message) = &report.stopped {
        eprintln!("error: {message}");
    } else if let Some(error) = &outcome.error {
        eprintln!("error: {error}");
    }
    Ok(outcome.exit_code.filter(|code| *code != 0).unwrap_or(1))
}

/// The session and the demand of `run`, with or without `--publish`.
async fn run_session(
    common: &Common,
    args: &RunArgs,
    runtime: Runtime,
    package: &str,
    events: EventSink,
) -> Result<(Session, DemandSpec)> {
    let session = Session::start(session_config(common, args.budget)?, events).await?;
    let mut spec = DemandSpec::new(
        runtime,
        session.package(package).await?,
        common.subnet.clone(),
    );
    spec.min_mem_gib = args.min_mem_gib;
    Ok((session, spec))
}

/// `run --publish`: a long-running command on one provider with local
/// ports forwarded into it, until Ctrl-C.
async fn run_service(
    common: &Common,
    args: RunArgs,
    runtime: Runtime,
    package: String,
) -> Result<i32> {
    if runtime != Runtime::Vm {
        return Err(RequestorError::Usage(
            "--publish needs --runtime vm (a WASM activity has no network interface)".into(),
        ));
    }
    let (events, mut receiver) = EventSink::channel();
    let printer = tokio::spawn(async move {
        while let Some(event) = receiver.recv().await {
            if let Some(line) = describe(&event) {
                eprintln!("{line}");
            }
        }
    });
    let (session, spec) = run_session(common, &args, runtime, &package, events).await?;
    let timeout = Duration::from_secs(args.timeout);
    let service = ServiceSpec {
        command: args.command.clone(),
        publish: args.publish.clone(),
        offer_timeout: timeout.min(Duration::from_secs(60)),
        deploy_timeout: timeout,
    };
    let stop = async {
        let _ = tokio::signal::ctrl_c().await;
        eprintln!("stopping: ending the agreement and paying...");
    };
    let outcome = session.run_service(&spec, &service, stop).await;
    let summary = session.finish(Duration::from_secs(10)).await;
    let _ = tokio::time::timeout(Duration::from_secs(2), printer).await;
    let report = outcome?;
    if let Ok(summary) = summary {
        eprintln!(
            "served {} connection(s) in {:.0} s; spent {} GLM",
            report.connections, report.seconds, summary.spent
        );
    }
    match report.command_ended {
        Some(reason) if reason != crate::session::COMMAND_ENDED => {
            eprintln!("error: {reason}");
            Ok(1)
        }
        _ => Ok(0),
    }
}

/// How progress is shown.
enum Display {
    Bars {
        bar: indicatif::ProgressBar,
        status: indicatif::ProgressBar,
    },
    Json,
    Lines,
}

impl Display {
    fn new(json: bool, tasks: usize) -> Display {
        if json {
            return Display::Json;
        }
        if !std::io::stderr().is_terminal() {
            return Display::Lines;
        }
        let multi = indicatif::MultiProgress::new();
        let bar = multi.add(indicatif::ProgressBar::new(tasks as u64));
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} tasks [{bar:30}] {pos}/{len} {elapsed_precise} {msg}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        let status = multi.add(indicatif::ProgressBar::new_spinner());
        bar.enable_steady_tick(Duration::from_millis(120));
        Display::Bars { bar, status }
    }

    fn show(&self, event: &Event) {
        match self {
            Display::Json => {
                if let Ok(line) = serde_json::to_string(event) {
                    say!("{line}");
                }
            }
            Display::Lines => {
                if let Some(text) = describe(event) {
                    eprintln!("{text}");
                }
            }
            Display::Bars { bar, status } => {
                if let Event::TaskFinished { .. } = event {
                    bar.inc(1);
                }
                if let Event::TaskFailed {
                    will_retry: false, ..
                } = event
                {
                    bar.inc(1);
                }
                if let Some(text) = describe(event) {
                    status.set_message(text);
                }
            }
        }
    }

    fn finish(&self) {
        if let Display::Bars { bar, status } = self {
            bar.finish();
            status.finish_and_clear();
        }
    }
}

fn describe(event: &Event) -> Option<String> {
    Some(match event {
        Event::SessionStarted {
            platform, budget, ..
        } => {
            format!("allocated {budget} GLM on {platform}")
        }
        Event::DemandPublished { subnet, runtime } => {
            format!("demand published: runtime {runtime}, subnet {subnet}")
        }
        Event::OfferReceived {
            provider_name,
            expected_cost,
            ..
        } => {
            format!("offer from {provider_name} (expected cost {expected_cost:.6} GLM)")
        }
        Event::OfferSkipped {
            provider_name,
            reason,
            ..
        } => {
            format!("offer from {provider_name} skipped: {reason}")
        }
        Event::AgreementSigned {
            provider_name,
            agreement_id,
            ..
        } => {
            format!("agreement with {provider_name} ({})", short(agreement_id))
        }
        Event::NegotiationFailed {
            provider_id,
            message,
        } => {
            format!("negotiation with {} failed: {message}", short(provider_id))
        }
        Event::ProvidersBusy { provider_names } if provider_names.is_empty() => return None,
        Event::ProvidersBusy { provider_names } => waiting_line(provider_names),
        Event::ActivityCreated { provider_name, .. } => {
            format!("activity started on {provider_name}")
        }
        Event::TaskStarted { .. } | Event::TaskOutput { .. } => return None,
        Event::TaskFinished {
            task_id,
            provider_name,
            seconds,
        } => {
            format!(
                "task {task_id} done on {provider_name} in {:.0} ms",
                seconds * 1000.0
            )
        }
        Event::TaskFailed {
            task_id,
            provider_name,
            message,
            will_retry,
        } => format!(
            "task {task_id} failed on {provider_name}: {message}{}",
            if *will_retry {
                " (retrying elsewhere)"
            } else {
                ""
            }
        ),
        Event::ProviderFailed {
            provider_name,
            message,
            ..
        } => {
            format!("provider {provider_name} dropped: {message}")
        }
        Event::DebitNoteAccepted {
            provider_name,
            amount,
            ..
        } => {
            format!("debit note of {provider_name} accepted: {amount} GLM")
        }
        Event::InvoiceAccepted {
            provider_name,
            amount,
            ..
        } => {
            format!("invoice of {provider_name} accepted: {amount} GLM")
        }
        Event::PaymentRefused {
            provider_name,
            message,
            ..
        } => {
            format!("payment to {provider_name} refused: {message}")
        }
        Event::BudgetExhausted { message } => format!("stopped: {message}"),
        Event::AgreementTerminated { provider_name, .. } => {
            format!("agreement with {provider_name} terminated")
        }
        Event::JobFinished {
            tasks_done,
            tasks_failed,
            seconds,
        } => {
            format!("job finished: {tasks_done} done, {tasks_failed} failed in {seconds:.2} s")
        }
        Event::ServiceReady {
            provider_name,
            forwards,
        } => format!(
            "running on {provider_name}, forwarding {}; Ctrl-C to stop and pay",
            forwards.join(", ")
        ),
        Event::ServiceCommandEnded { provider_name } => {
            format!("the command on {provider_name} exited; still forwarding until Ctrl-C")
        }
    })
}

/// The progress line while matching providers are busy with other requestors.
pub fn waiting_line(provider_names: &[String]) -> String {
    format!(
        "waiting: {} matching providers busy ({})",
        provider_names.len(),
        provider_names.join(", ")
    )
}

fn short(id: &str) -> String {
    id.chars().take(10).collect()
}

async fn script(common: &Common, args: ScriptArgs) -> Result<i32> {
    let mut job = crate::job::load(&args.job, &common.subnet)?;
    if let Some(dir) = args.output_dir {
        job.tasks.iter_mut().for_each(|task| {
            task.steps.iter_mut().for_each(|step| {
                if let Step::Download { to, .. } = step {
                    if let Ok(rest) = to.strip_prefix(&job.output_dir) {
                        *to = dir.join(rest);
                    }
                }
            })
        });
        job.output_dir = dir;
    }
    if let Some(parallelism) = args.parallelism {
        job.options.max_workers = parallelism.max(1);
    }
    if let Some(per_provider) = args.agreements_per_provider {
        job.options.agreements_per_provider = usize::try_from(per_provider).unwrap_or(usize::MAX);
    }
    std::fs::create_dir_all(&job.output_dir).map_err(|e| RequestorError::io(&job.output_dir, e))?;
    let budget = args.budget.or(job.budget).unwrap_or(Decimal::ONE);
    let display = std::sync::Arc::new(Display::new(args.json, job.tasks.len()));
    let (events, mut receiver) = EventSink::channel();
    let printer = {
        let display = display.clone();
        tokio::spawn(async move {
            while let Some(event) = receiver.recv().await {
                display.show(&event);
            }
        })
    };
    let session = Session::start(session_config(common, budget)?, events).await?;
    job.demand.package = session.package(&job.package).await?;
    let report = session
        .run_job(&job.demand, job.tasks.clone(), &job.options)
        .await;
    let summary = session
        .finish(Duration::from_secs(args.invoice_timeout))
        .await;
    // The session (and with it every event sender) is gone: drain the printer.
    let _ = tokio::time::timeout(Duration::from_secs(2), printer).await;
    display.finish();
    let report = report?;
    let summary = summary?;
    if args.json {
        let line = serde_json::json!({"event": "summary", "report": report, "payments": summary});
        say!("{line}");
    } else {
        print_summary(&report, &summary, &job.output_dir);
    }
    if let Some(message) = &report.stopped {
        eprintln!("error: {message}");
        return Ok(1);
    }
    let failed: Vec<&str> = report
        .outcomes
        .iter()
        .filter(|outcome| !outcome.ok)
        .map(|outcome| outcome.id.as_str())
        .collect();
    if !failed.is_empty() {
        eprintln!(
            "error: {} task(s) failed: {}",
            failed.len(),
            failed.join(", ")
        );
        return Ok(1);
    }
    Ok(0)
}

/// The table printed at the end of `script`.
pub fn print_summary(report: &JobReport, summary: &PaymentSummary, output_dir: &std::path::Path) {
    say!();
    say!(
        "Tasks: {} done, {} failed, in {:.2} s; results in {}",
        report.done(),
        report.outcomes.len() - report.done(),
        report.seconds,
        output_dir.display()
    );
    say!();
    say!(
        "{:<18} {:>6} {:>9} {:>12} {:>15} {:>16}  status",
        "provider",
        "tasks",
        "time s",
        "est. GLM",
        "debit notes GLM",
        "invoice GLM"
    );
    for provider in &report.providers {
        let paid = summary
            .rows
            .iter()
            .find(|row| row.agreement_id == provider.agreement_id);
        let accepted = debit_notes_cell(paid.map(|row| row.payments.debit_notes_accepted));
        let invoice = paid
            .and_then(|row| row.payments.invoice_amount)
            .map(|amount| amount.to_string())
            .unwrap_or_else(|| "-".into());
        let status = match (
            &provider.failure,
            paid.is_some_and(|row| row.payments.invoice_accepted),
        ) {
            (Some(failure), _) => {
                format!("failed: {}", failure.chars().take(60).collect::<String>())
            }
            (None, true) => "paid".into(),
            (None, false) => "no invoice yet".into(),
        };
        say!(
            "{:<18} {:>6} {:>9.2} {:>12.6} {:>15} {:>16}  {}",
            provider.provider_name.chars().take(18).collect::<String>(),
            provider.tasks_done,
            provider.seconds,
            provider.estimated_cost,
            accepted,
            invoice,
            status
        );
    }
    say!();
    say!(
        "Payment: {} GLM spent of a {} GLM budget on {}",
        summary.spent,
        summary.budget,
        summary.platform
    );
}

async fn offers(common: &Common, args: OffersArgs) -> Result<i32> {
    let connection = Connection::load(
        &common.connection,
        common.connection.config.as_deref(),
        &process_env,
    )?;
    let client = golem_client::GolemClient::new(&connection.api_url, &connection.app_key);
    let runtime = args.runtime.as_deref().map(runtime_of).transpose()?;
    let filter = match runtime {
        Some(runtime) => format!("(golem.runtime.name={})", runtime.runtime_name()),
        None => String::new(),
    };
    let offers = market::scan(
        &client,
        &common.subnet,
        &filter,
        Duration::from_secs_f64(args.wait.max(0.1)),
    )
    .await?
    .into_iter()
    .filter(|offer| offer.unmatched.is_empty())
    .collect::<Vec<_>>();
    if args.json {
        say!(
            "{}",
            serde_json::to_string_pretty(&offers).unwrap_or_default()
        );
        return Ok(0);
    }
    if offers.is_empty() {
        say!("no offers in subnet {:?}", common.subnet);
        return Ok(0);
    }
    say!(
        "{:<44} {:<18} {:<9} {:>7} {:>7} {:>12} {:>12} {:>10}",
        "provider id",
        "name",
        "runtime",
        "threads",
        "mem GiB",
        "cpu GLM/h",
        "env GLM/h",
        "start GLM"
    );
    for offer in offers {
        let per_hour = |name: &str| {
            offer
                .price
                .usage_vector
                .iter()
                .position(|counter| counter == name)
                .and_then(|index| offer.price.coeffs.get(index))
                .map(|coeff| coeff * 3600.0)
                .unwrap_or(0.0)
        };
        let number =
            |value: Option<f64>| value.map(|v| v.to_string()).unwrap_or_else(|| "-".into());
        say!(
            "{:<44} {:<18} {:<9} {:>7} {:>7} {:>12.6} {:>12.6} {:>10.6}",
            offer.provider_id,
            offer.provider_name.chars().take(18).collect::<String>(),
            offer.runtime,
            number(offer.cpu_threads),
            number(offer.mem_gib),
            per_hour("golem.usage.cpu_sec"),
            per_hour("golem.usage.duration_sec"),
            offer.price.start_price()
        );
    }
    Ok(0)
}

/// The summary's debit-note column: the accepted total, or `-` when no debit
/// note came (they come only on jobs longer than the agreed interval).
fn debit_notes_cell(accepted: Option<Decimal>) -> String {
    accepted
        .filter(|amount| !amount.is_zero())
        .map(|amount| amount.to_string())
        .unwrap_or_else(|| "-".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debit_note_column_shows_a_dash_when_none_came() {
        assert_eq!(debit_notes_cell(None), "-");
        assert_eq!(debit_notes_cell(Some(Decimal::ZERO)), "-");
        assert_eq!(debit_notes_cell(Some(Decimal::new(125, 3))), "0.125");
    }
}
