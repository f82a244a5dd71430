//! The provider actor driven as a requestor's daemon and an exe unit drive it:
//! calls on a router as a remote caller, and a stand-in exe unit connected to
//! a real bus socket.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use golem_bus::{server, BusClient, Caller, Router, ServiceArbiter, ServiceEndpoint};
use golem_model::activity::{
    exe_unit_address, ActivityState, CommandResult, ExeScriptCommandResult, ExecBatch,
    ReportBatchResult, ReportState, Shutdown, State, ACTIVITY_SERVICE,
};
use golem_model::activity_control::{
    CreateActivityRemote, DestroyActivityRemote, ExecRemote, GetBatchResultsRemote, GetStateRemote,
    ProviderEvent, ACTIVITY_PUBLIC_SERVICE,
};
use golem_model::market::Agreement;
use golem_model::{ErrorCode, GolemError};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::*;
use crate::activity::records::PROVIDER_EVENT_RETENTION;

const REQUESTOR: &str = "0x1111111111111111111111111111111111111111";
const PROVIDER: &str = "0x2222222222222222222222222222222222222222";

struct OneAgreement(Agreement);

impl Agreements for OneAgreement {
    fn agreement(&self, id: &str) -> Result<Agreement, GolemError> {
        (id == self.0.agreement_id)
            .then(|| self.0.clone())
            .ok_or_else(|| GolemError::not_found(id.to_string()))
    }
}

/// A provider actor on its own thread, its endpoints on a router served on a
/// temporary bus socket.
struct Fixture {
    provider: ProviderSide,
    records: ActivityRecords,
    router: Router,
    socket: std::path::PathBuf,
    shutdown: CancellationToken,
    _arbiter: ServiceArbiter,
    _dir: tempfile::TempDir,
}

fn agreement() -> Agreement {
    let now = chrono::Utc::now();
    serde_json::from_value(json!({
        "agreementId": "a1",
        "demand": {"properties": {}, "constraints": "()", "demandId": "d",
                   "requestorId": REQUESTOR, "timestamp": now},
        "offer": {"properties": {}, "constraints": "()", "offerId": "o",
                  "providerId": PROVIDER, "timestamp": now},
        "validTo": now + chrono::Duration::hours(1),
        "state": "Approved",
        "timestamp": now,
    }))
    .unwrap()
}

async fn fixture(retention: Retention) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = crate::store::Store::open(&dir.path().join("data")).unwrap();
    let tree = store.tree("activity").unwrap();
    let router = Router::new();
    let arbiter = ServiceArbiter::spawn("activity-test").unwrap();
    let settings = ActivitySettings {
        max_per_agreement: 10_000,
    };
    let provider = ProviderSide::start(
        arbiter.handle(),
        PROVIDER.parse().unwrap(),
        router.clone(),
        Arc::new(OneAgreement(agreement())),
        tree.clone(),
        settings,
        retention,
    );
    router
        .bind(ACTIVITY_PUBLIC_SERVICE, provider.public_endpoint())
        .unwrap();
    router
        .bind(ACTIVITY_SERVICE, provider.local_endpoint())
        .unwrap();
    let socket = dir.path().join("bus.sock");
    let listener = server::bind_socket(&socket).unwrap();
    let shutdown = CancellationToken::new();
    tokio::spawn(server::serve(
        listener,
        router.clone(),
        None,
        shutdown.clone(),
    ));
    Fixture {
        provider,
        records: ActivityRecords::new(tree),
        router,
        socket,
        shutdown,
        _arbiter: arbiter,
        _dir: dir,
    }
}

fn requestor() -> Caller {
    Caller::Remote(REQUESTOR.parse().unwrap())
}

impl Fixture {
    async fn create(&self) -> String {
        let create = CreateActivityRemote {
            agreement_id: "a1".into(),
            timeout_sec: 0.0,
        };
        self.router
            .call_as(requestor(), ACTIVITY_PUBLIC_SERVICE, &create)
            .await
            .unwrap()
    }

    async fn destroy(&self, activity_id: &str) -> Result<(), GolemError> {
        let destroy = DestroyActivityRemote {
            activity_id: activity_id.to_string(),
        };
        self.router
            .call_as(requestor(), ACTIVITY_PUBLIC_SERVICE, &destroy)
            .await
    }

    async fn state(&self, activity_id: &str) -> Result<ActivityState, GolemError> {
        let message = GetStateRemote {
            activity_id: activity_id.to_string(),
        };
        self.router
            .call_as(requestor(), ACTIVITY_PUBLIC_SERVICE, &message)
            .await
    }

    /// A stand-in exe unit for `activity_id`: it binds its address over the
    /// bus socket, accepts batches (each ends at once with one Ok result) and
    /// shutdowns, and reports Ready. Dropping it closes its connection.
    async fn exe_unit(&self, activity_id: &str) -> BusClient {
        let client = BusClient::connect(&self.socket, "stand-in-exe-unit")
            .await
            .unwrap();
        // Reports go over a second connection: a clone of `client` inside its
        // own endpoint would keep the connection open after the test drops it.
        let reporter = BusClient::connect(&self.socket, "stand-in-reporter")
            .await
            .unwrap();
        let id = activity_id.to_string();
        let endpoint = ServiceEndpoint::new()
            .on(move |_caller, batch: ExecBatch| {
                let reporter = reporter.clone();
                let activity_id = id.clone();
                async move {
                    let batch_id = batch.batch_id.clone();
                    tokio::spawn(async move {
                        let report = ReportBatchResult {
                            activity_id,
                            batch_id: batch.batch_id,
                            result: ExeScriptCommandResult {
                                index: 0,
                                event_date: chrono::Utc::now(),
                                result: CommandResult::Ok,
                                stdout: None,
                                stderr: None,
                                message: None,
                                is_batch_finished: true,
                            },
                        };
                        reporter.call(ACTIVITY_SERVICE, &report).await.unwrap();
                    });
                    Ok(batch_id)
                }
            })
            .on(|_caller, _shutdown: Shutdown| async move { Ok(()) });
        client
            .bind(&exe_unit_address(activity_id), endpoint)
            .await
            .unwrap();
        let ready = ReportState {
            activity_id: activity_id.to_string(),
            state: State::Ready.into(),
        };
        client.call(ACTIVITY_SERVICE, &ready).await.unwrap();
        client
    }
}

fn short_retention() -> Retention {
    Retention {
        finished_activity: Duration::from_millis(200),
        max_finished: 1000,
        provider_events: PROVIDER_EVENT_RETENTION,
        max_provider_events: crate::activity::records::MAX_PROVIDER_EVENTS,
        compaction_period: Duration::from_millis(50),
    }
}

#[tokio::test]
async fn ended_activities_leave_memory_after_their_retention_but_stay_answerable() {
    let fixture = fixture(short_retention()).await;
    let activity_id = fixture.create().await;
    fixture.destroy(&activity_id).await.unwrap();
    let events = fixture
        .provider
        .events(None, Duration::ZERO, 100)
        .await
        .unwrap();
    assert_eq!(events.len(), 2, "{events:?}");
    assert!(matches!(events[1], ProviderEvent::DestroyActivity { .. }));
    // Within the retention the batches are still in memory.
    assert_eq!(fixture.provider.count_in_memory().await.unwrap(), 1);

    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(fixture.provider.count_in_memory().await.unwrap(), 0);
    // The record is read from sled: owner, state and agreement still answer.
    let state = fixture.state(&activity_id).await.unwrap();
    assert_eq!(state.state.0, State::Terminated);
    assert_eq!(
        crate::ports::HostedActivities::agreement_of_activity(&fixture.records, &activity_id)
            .as_deref(),
        Some("a1")
    );
    assert!(fixture.provider.hosts(&activity_id));
    let stranger = Caller::Remote(
        "0x3333333333333333333333333333333333333333"
            .parse()
            .unwrap(),
    );
    let refused = fixture
        .provider
        .activity_state(stranger, &activity_id)
        .await
        .unwrap_err();
    assert_eq!(refused.code, ErrorCode::Forbidden);
    // Its batches are gone, and say so.
    let exec = ExecRemote {
        activity_id: activity_id.clone(),
        batch_id: "b1".into(),
        commands: vec![],
    };
    let gone = fixture
        .router
        .call_as(requestor(), ACTIVITY_PUBLIC_SERVICE, &exec)
        .await
        .unwrap_err();
    assert_eq!(gone.code, ErrorCode::Gone);
    fixture.shutdown.cancel();
}

#[tokio::test]
async fn finished_activities_in_memory_are_bounded_by_count() {
    let retention = Retention {
        finished_activity: Duration::from_secs(3600),
        max_finished: 5,
        ..short_retention()
    };
    let fixture = fixture(retention).await;
    let mut ids = Vec::new();
    for _ in 0..60 {
        let activity_id = fixture.create().await;
        fixture.destroy(&activity_id).await.unwrap();
        ids.push(activity_id);
        assert!(fixture.provider.count_in_memory().await.unwrap() <= 5);
    }
    let live = fixture.create().await;
    // The live one is never evicted; at most 5 finished ones stay with it.
    assert_eq!(fixture.provider.count_in_memory().await.unwrap(), 6);
    assert_eq!(fixture.state(&live).await.unwrap().state.0, State::New);
    // The oldest still answers from sled.
    let first = fixture.state(&ids[0]).await.unwrap();
    assert_eq!(first.state.0, State::Terminated);
    assert_eq!(first.reason.as_deref(), Some("destroyed by the requestor"));
    fixture.shutdown.cancel();
}

/// Drop the exe unit's connection and wait until the committed state of its
/// activity is Terminated; how long that took.
async fn time_to_terminated(fixture: &Fixture, exe_unit: BusClient, activity_id: &str) -> Duration {
    let mut changes = fixture.provider.changes();
    let started = Instant::now();
    drop(exe_unit);
    while fixture.records.hosted_state(activity_id) != Some(State::Terminated) {
        let changed = tokio::time::timeout(Duration::from_secs(5), changes.changed()).await;
        assert!(
            matches!(changed, Ok(Ok(()))),
            "activity {activity_id} never terminated"
        );
    }
    started.elapsed()
}

#[tokio::test]
async fn an_exe_unit_that_leaves_the_bus_terminates_its_activity_at_once() {
    let fixture = fixture(Retention::default()).await;
    let activity_id = fixture.create().await;
    let exe_unit = fixture.exe_unit(&activity_id).await;
    assert_eq!(
        fixture.state(&activity_id).await.unwrap().state.0,
        State::Ready
    );
    let elapsed = time_to_terminated(&fixture, exe_unit, &activity_id).await;
    assert!(elapsed < Duration::from_millis(100), "{elapsed:?}");
    let state = fixture.state(&activity_id).await.unwrap();
    assert_eq!(
        state.reason.as_deref(),
        Some("the exe unit exited unexpectedly")
    );
    // The agent is told to clean up.
    let events = fixture
        .provider
        .events(None, Duration::ZERO, 100)
        .await
        .unwrap();
    assert!(matches!(
        events.last(),
        Some(ProviderEvent::DestroyActivity { .. })
    ));
    // The agent saw the process exit and says why; that reason replaces the
    // generic one, once: a later report does not overwrite it.
    let said = |reason: &str| ActivityState {
        state: State::Terminated.into(),
        reason: Some(reason.to_string()),
        error_message: None,
    };
    fixture
        .provider
        .set_state(&activity_id, said("exe unit: out of memory"))
        .await
        .unwrap();
    fixture
        .provider
        .set_state(&activity_id, said("something later"))
        .await
        .unwrap();
    let state = fixture.state(&activity_id).await.unwrap();
    assert_eq!(state.reason.as_deref(), Some("exe unit: out of memory"));
    fixture.shutdown.cancel();
}

#[tokio::test]
async fn a_restarted_actor_keeps_running_activities_from_sled() {
    let fixture = fixture(Retention::default()).await;
    let activity_id = fixture.create().await;
    let _exe_unit = fixture.exe_unit(&activity_id).await;
    let exec = |batch_id: &str| ExecRemote {
        activity_id: activity_id.clone(),
        batch_id: batch_id.to_string(),
        commands: vec![],
    };
    let batch: String = fixture
        .router
        .call_as(requestor(), ACTIVITY_PUBLIC_SERVICE, &exec("b1"))
        .await
        .unwrap();
    assert_eq!(batch, "b1");

    fixture.provider.crash_for_test().await;

    // Acknowledged state survives: the activity is still Ready, and still runs batches.
    assert_eq!(
        fixture.state(&activity_id).await.unwrap().state.0,
        State::Ready
    );
    let batch: String = fixture
        .router
        .call_as(requestor(), ACTIVITY_PUBLIC_SERVICE, &exec("b2"))
        .await
        .unwrap();
    // The batch run after the restart finishes, and the one reported before
    // it is still there with its results.
    for batch_id in [batch.as_str(), "b1"] {
        let results = GetBatchResultsRemote {
            activity_id: activity_id.clone(),
            batch_id: batch_id.to_string(),
            command_index: None,
            timeout_sec: Some(5.0),
        };
        let results = fixture
            .router
            .call_as(requestor(), ACTIVITY_PUBLIC_SERVICE, &results)
            .await
            .unwrap_or_else(|error| panic!("{batch_id}: {error}"));
        assert!(
            results
                .last()
                .is_some_and(|result| result.is_batch_finished),
            "{batch_id}: {results:?}"
        );
    }
    // Its exe unit is still watched, and destroy still works.
    fixture.destroy(&activity_id).await.unwrap();
    let state = fixture.state(&activity_id).await.unwrap();
    assert_eq!(state.state.0, State::Terminated);
    assert_eq!(state.reason.as_deref(), Some("destroyed by the requestor"));
    // The event feed survived too: create, then destroy.
    let events = fixture
        .provider
        .events(None, Duration::ZERO, 100)
        .await
        .unwrap();
    assert_eq!(events.len(), 2, "{events:?}");
    // The ended activity's batches stay while it is in memory, and leave the
    // shelf with it when the next instance does not load it again.
    assert_eq!(fixture.provider.activities_with_batches(), 1);
    fixture.provider.crash_for_test().await;
    assert_eq!(
        fixture.state(&activity_id).await.unwrap().state.0,
        State::Terminated
    );
    assert_eq!(fixture.provider.activities_with_batches(), 0);
    fixture.shutdown.cancel();
}

/// Exe-unit connection closed → activity Terminated in sled, over many
/// activities: prints p50/p99/max (see docs/benchmarks.md).
#[tokio::test]
async fn bench_exe_unit_loss_to_terminated() {
    const RUNS: usize = 200;
    let fixture = fixture(Retention::default()).await;
    let mut samples = Vec::with_capacity(RUNS);
    for _ in 0..RUNS {
        let activity_id = fixture.create().await;
        let exe_unit = fixture.exe_unit(&activity_id).await;
        samples.push(time_to_terminated(&fixture, exe_unit, &activity_id).await);
    }
    samples.sort();
    let at = |quantile: f64| samples[((samples.len() - 1) as f64 * quantile).round() as usize];
    println!("exe-unit connection closed -> activity Terminated ({RUNS} runs)");
    println!("| p50 | p99 | max |");
    println!(
        "| {:.2} ms | {:.2} ms | {:.2} ms |",
        at(0.50).as_secs_f64() * 1e3,
        at(0.99).as_secs_f64() * 1e3,
        samples[samples.len() - 1].as_secs_f64() * 1e3
    );
    assert!(at(0.50) < Duration::from_millis(100));
    fixture.shutdown.cancel();
}
