//! The exe unit on the bus: connect to the daemon's socket (the client sends
//! `Hello`), bind `/local/exeunit/<activityId>`, become Initialized, execute
//! batches, report state, events, results and usage (every second) to
//! `/local/activity`, and stop on `Shutdown`, `terminate`, a signal or when the
//! daemon's connection closes. On the way out a running command is killed and
//! ends with an Error result, queued batches end with one too, the runtime is
//! shut down and Terminated is reported with the reason.

use std::sync::Arc;
use std::time::Duration;

use futures::stream::{self, BoxStream, StreamExt};
use golem_bus::{BusClient, ServiceEndpoint};
use golem_model::activity::{
    exe_unit_address, ExecBatch, GetBatchResults, GetRunningCommand, GetState, GetUsage,
    ReportBatchEvent, ReportBatchResult, ReportState, ReportUsage, RuntimeEvent, Shutdown,
    StreamBatchEvents, ACTIVITY_SERVICE,
};
use golem_model::GolemError;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::activity::{Activity, ActivityConfig, Report, KILL_GRACE};
use crate::runtime::Runtime;

/// How often usage counters are reported.
pub const USAGE_INTERVAL: Duration = Duration::from_secs(1);
/// The longest a `GetBatchResults` may wait.
pub const MAX_RESULTS_WAIT: Duration = Duration::from_secs(300);
/// How long queued reports may take to reach the daemon on the way out.
const REPORT_FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum ExeUnitError {
    #[error(transparent)]
    Connect(#[from] golem_bus::client::ConnectError),
    #[error("cannot bind {address} on the bus: {error}")]
    Bind { address: String, error: GolemError },
}

/// Serve one activity until it ends. `shutdown` may be cancelled from outside
/// (signals); the activity cancels it itself on `Shutdown`, `terminate` or
/// when the daemon is gone.
pub async fn run(
    config: ActivityConfig,
    runtime: Arc<dyn Runtime>,
    shutdown: CancellationToken,
) -> Result<(), ExeUnitError> {
    let activity_id = config.activity_id.clone();
    let client = BusClient::connect(&config.bus_socket, &format!("exe-unit/{activity_id}")).await?;
    runtime.attach_bus(&client);
    let (reports, report_queue) = mpsc::unbounded_channel();
    let reporter = tokio::spawn(send_reports(
        client.clone(),
        activity_id.clone(),
        report_queue,
    ));
    let (activity, batch_queue) = Activity::new(config, runtime.clone(), reports, shutdown.clone());
    let address = exe_unit_address(&activity_id);
    if let Err(error) = client.bind(&address, endpoint(activity.clone())).await {
        return Err(ExeUnitError::Bind { address, error });
    }
    activity.initialize();
    tracing::info!(activity_id = %activity_id, %address, "exe unit serving");

    let executor = tokio::spawn(activity.clone().execute_batches(batch_queue));
    let usage = tokio::spawn({
        let activity = activity.clone();
        async move {
            let mut ticks = tokio::time::interval(USAGE_INTERVAL);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                activity.report_usage();
            }
        }
    });

    tokio::select! {
        // Shutdown, terminate and signals; the first two have set a reason already.
        _ = shutdown.cancelled() => activity.request_shutdown("the exe unit was stopped by the provider"),
        _ = client.closed() => activity.request_shutdown("the daemon closed the bus connection"),
    }
    let reason = activity.termination_reason();
    tracing::info!(activity_id = %activity_id, %reason, "exe unit stopping");
    if tokio::time::timeout(KILL_GRACE * 2, executor)
        .await
        .is_err()
    {
        tracing::warn!(activity_id = %activity_id, "the running batch did not stop in time");
    }
    usage.abort();
    tracing::debug!(activity_id = %activity_id, "batches stopped; shutting the runtime down");
    if let Err(error) = runtime.shutdown().await {
        tracing::warn!(activity_id = %activity_id, %error, "runtime shutdown failed");
    }
    activity.report_usage();
    activity.mark_terminated(&reason, None);
    activity.close_reports();
    if tokio::time::timeout(REPORT_FLUSH_TIMEOUT, reporter)
        .await
        .is_err()
    {
        tracing::warn!(activity_id = %activity_id, "reports not delivered before exit");
    }
    if !client.is_closed() {
        let _ = client.unbind(&address).await;
    }
    Ok(())
}

fn endpoint(activity: Arc<Activity>) -> ServiceEndpoint {
    let exec = activity.clone();
    let results = activity.clone();
    let events = activity.clone();
    let state = activity.clone();
    let usage = activity.clone();
    let running = activity.clone();
    let stop = activity;
    ServiceEndpoint::new()
        .on(move |_caller, message: ExecBatch| {
            let activity = exec.clone();
            async move { activity.exec(message.batch_id, message.commands) }
        })
        .on(move |_caller, message: GetBatchResults| {
            let activity = results.clone();
            async move {
                let batch = activity.batches().get(&message.batch_id)?;
                let wait = message
                    .timeout_sec
                    .filter(|seconds| seconds.is_finite() && *seconds > 0.0)
                    .map(|seconds| Duration::from_secs_f64(seconds).min(MAX_RESULTS_WAIT))
                    .unwrap_or_default();
                Ok(batch.results(message.command_index, wait).await)
            }
        })
        .on_stream(
            move |_caller,
                  message: StreamBatchEvents|
                  -> BoxStream<'static, Result<RuntimeEvent, GolemError>> {
                match events.batches().get(&message.batch_id) {
                    Ok(batch) => batch.events().map(Ok).boxed(),
                    Err(error) => stream::once(async move { Err(error) }).boxed(),
                }
            },
        )
        .on(move |_caller, _message: GetState| {
            let activity = state.clone();
            async move { Ok(activity.state()) }
        })
        .on(move |_caller, _message: GetUsage| {
            let activity = usage.clone();
            async move { Ok(activity.usage()) }
        })
        .on(move |_caller, _message: GetRunningCommand| {
            let activity = running.clone();
            async move { Ok(activity.running_command()) }
        })
        .on(move |_caller, message: Shutdown| {
            let activity = stop.clone();
            async move {
                let reason = message
                    .reason
                    .unwrap_or_else(|| "shut down by the activity service".to_string());
                activity.request_shutdown(&reason);
                Ok(())
            }
        })
}

/// Send reports one at a time, in order, until [`Report::Close`].
async fn send_reports(
    client: BusClient,
    activity_id: String,
    mut reports: mpsc::UnboundedReceiver<Report>,
) {
    let mut warned = false;
    while let Some(report) = reports.recv().await {
        let activity_id = activity_id.clone();
        let sent = match report {
            Report::Close => break,
            Report::State(state) => {
                client
                    .call(ACTIVITY_SERVICE, &ReportState { activity_id, state })
                    .await
            }
            Report::Usage(usage) => {
                client
                    .call(ACTIVITY_SERVICE, &ReportUsage { activity_id, usage })
                    .await
            }
            Report::Event(event) => {
                client
                    .call(ACTIVITY_SERVICE, &ReportBatchEvent { activity_id, event })
                    .await
            }
            Report::Result { batch_id, result } => {
                client
                    .call(
                        ACTIVITY_SERVICE,
                        &ReportBatchResult {
                            activity_id,
                            batch_id,
                            result,
                        },
                    )
                    .await
            }
        };
        if let Err(error) = sent {
            if client.is_closed() {
                tracing::debug!(%error, "report not delivered: the daemon is gone");
            } else if !warned {
                tracing::warn!(%error, "cannot report to {ACTIVITY_SERVICE}; results stay available from the exe unit");
                warned = true;
            } else {
                tracing::debug!(%error, "report not delivered");
            }
        }
    }
}
