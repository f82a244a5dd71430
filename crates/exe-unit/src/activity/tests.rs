//! The interpreter and state machine driven through a fake runtime.
#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use golem_model::activity::{parse_exe_script, CommandOutput, CommandResult};
use golem_model::ErrorCode;
use serde_json::json;
use tokio::sync::Notify;

use super::*;
use crate::runtime::{prepare_volumes, Deployment, OutputSender, RuntimeError, VolumeAccess};

/// Entry points: `echo` prints its args, `fail` exits 3, `hang` runs until killed.
#[derive(Default)]
struct FakeRuntime {
    killed: Notify,
    runs: AtomicUsize,
}

#[async_trait]
impl Runtime for FakeRuntime {
    fn offer_template() -> serde_json::Value {
        json!({"golem.runtime.name": "fake"})
    }
    async fn deploy(&self, request: DeployRequest) -> Result<Deployment, RuntimeError> {
        let volumes = prepare_volumes(
            &request.work_dir,
            &[
                ("/golem/input".into(), VolumeAccess::ReadOnly),
                ("/golem/output".into(), VolumeAccess::ReadWrite),
            ],
        )
        .map_err(|error| RuntimeError::new(error.to_string()))?;
        Ok(Deployment { volumes })
    }
    async fn start(&self, _args: Vec<String>) -> Result<(), RuntimeError> {
        Ok(())
    }
    async fn run(&self, request: RunRequest, output: OutputSender) -> Result<i32, RuntimeError> {
        self.runs.fetch_add(1, Ordering::SeqCst);
        match request.entry_point.as_str() {
            "echo" => {
                output
                    .send(OutputChunk::Stdout(request.args.join(" ").into_bytes()))
                    .await
                    .ok();
                output
                    .send(OutputChunk::Stderr(b"warn".to_vec()))
                    .await
                    .ok();
                Ok(0)
            }
            "fail" => Ok(3),
            "hang" => {
                self.killed.notified().await;
                Err(RuntimeError::new("killed"))
            }
            other => Err(RuntimeError::new(format!("unknown entry point {other}"))),
        }
    }
    async fn kill(&self) -> Result<(), RuntimeError> {
        self.killed.notify_waiters();
        Ok(())
    }
    async fn shutdown(&self) -> Result<(), RuntimeError> {
        Ok(())
    }
    fn cpu_seconds(&self) -> Option<f64> {
        Some(1.5)
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    activity: Arc<Activity>,
    reports: mpsc::UnboundedReceiver<Report>,
    runtime: Arc<FakeRuntime>,
}

fn fixture_with_package(package: &[u8], declared: &[u8]) -> Fixture {
    fixture_with_agreement(package, declared, PROVIDER_ID, None)
}

const PROVIDER_ID: &str = "0x1111111111111111111111111111111111111111";
const OTHER_NODE: &str = "0x2222222222222222222222222222222222222222";

/// A fixture whose package is a local file; the agreement names
/// `requestor_id` (the provider is [`PROVIDER_ID`]) and offers `storage_gib`.
fn fixture_with_agreement(
    package: &[u8],
    declared: &[u8],
    requestor_id: &str,
    storage_gib: Option<f64>,
) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let package_path = dir.path().join("package.bin");
    std::fs::write(&package_path, package).unwrap();
    let digest = crate::package::sha3_224_hex(declared);
    let agreement = Agreement::from_json(json!({
        "agreementId": "agr",
        "offer": {"providerId": PROVIDER_ID, "properties": {
            "golem.com.usage.vector": ["golem.usage.cpu_sec", "golem.usage.duration_sec", "golem.usage.storage_gib"],
            "golem.inf.storage.gib": storage_gib}},
        "demand": {"requestorId": requestor_id, "properties": {"golem.srv.comp.task_package":
            format!("hash:sha3:{digest}:file://{}", package_path.display())}}
    }))
    .unwrap();
    let config = ActivityConfig {
        activity_id: "act".into(),
        agreement,
        work_dir: dir.path().join("work"),
        cache_dir: dir.path().join("cache"),
        bus_socket: dir.path().join("bus.sock"),
        max_run_time: Duration::from_secs(60),
        cache_max_packages: crate::cli::DEFAULT_CACHE_MAX_PACKAGES,
        allow_private_transfers: false,
    };
    let runtime = Arc::new(FakeRuntime::default());
    let (sender, reports) = mpsc::unbounded_channel();
    let (activity, queue) =
        Activity::new(config, runtime.clone(), sender, CancellationToken::new());
    activity.initialize();
    tokio::spawn(activity.clone().execute_batches(queue));
    Fixture {
        _dir: dir,
        activity,
        reports,
        runtime,
    }
}

fn fixture() -> Fixture {
    fixture_with_package(b"pkg", b"pkg")
}

impl Fixture {
    async fn exec(&self, batch_id: &str, script: &str) -> Vec<ExeScriptCommandResult> {
        let commands = parse_exe_script(script).unwrap();
        self.activity.exec(batch_id.into(), commands).unwrap();
        let batch = self.activity.batches().get(batch_id).unwrap();
        let results = batch.results(None, Duration::from_secs(10)).await;
        assert!(
            results.last().unwrap().is_batch_finished,
            "batch {batch_id} did not finish: {results:?}"
        );
        results
    }

    fn drain_reports(&mut self) -> Vec<Report> {
        let mut reports = Vec::new();
        while let Ok(report) = self.reports.try_recv() {
            reports.push(report);
        }
        reports
    }
}

fn text(output: &Option<CommandOutput>) -> &str {
    match output {
        Some(CommandOutput::Str(text)) => text,
        other => panic!("expected text output, got {other:?}"),
    }
}

const DEPLOY_START: &str = r#"[{"deploy": {}}, {"start": {"args": []}}]"#;

#[tokio::test]
async fn deploy_start_run_reports_everything_in_order() {
    let mut fixture = fixture();
    let results = fixture.exec("b1", DEPLOY_START).await;
    assert_eq!(results.len(), 2);
    assert!(results.iter().all(|r| r.result == CommandResult::Ok));
    assert_eq!(
        results
            .iter()
            .map(|r| r.is_batch_finished)
            .collect::<Vec<_>>(),
        [false, true]
    );
    assert_eq!(fixture.activity.state().state, State::Ready.into());

    let script = r#"[{"run": {"entry_point": "echo", "args": ["hello", "world"],
        "capture": {"stdout": {"stream": {}}, "stderr": {"atEnd": {}}}}}]"#;
    let results = fixture.exec("b2", script).await;
    assert_eq!(results[0].result, CommandResult::Ok);
    assert_eq!(text(&results[0].stdout), "hello world");
    assert_eq!(text(&results[0].stderr), "warn");

    let reports = fixture.drain_reports();
    let states: Vec<_> = reports
        .iter()
        .filter_map(|report| match report {
            Report::State(state) => Some(state.state),
            _ => None,
        })
        .collect();
    assert_eq!(
        states,
        [
            State::Initialized.into(),
            StatePair(State::Initialized, Some(State::Deployed)),
            State::Deployed.into(),
            StatePair(State::Deployed, Some(State::Ready)),
            State::Ready.into(),
        ]
    );
    // The second batch: started, stdout (stream only), finished, then the result.
    let batch_two: Vec<String> = reports
        .iter()
        .filter_map(|report| match report {
            Report::Event(event) if event.batch_id == "b2" => Some(
                serde_json::to_value(&event.kind)
                    .unwrap()
                    .as_object()
                    .unwrap()
                    .keys()
                    .next()
                    .unwrap()
                    .clone(),
            ),
            Report::Result { batch_id, .. } if batch_id == "b2" => Some("result".into()),
            _ => None,
        })
        .collect();
    assert_eq!(batch_two, ["started", "stdout", "finished", "result"]);

    // Events replay from the batch's start and the stream ends with the batch.
    let events: Vec<_> = fixture
        .activity
        .batches()
        .get("b1")
        .unwrap()
        .events()
        .collect::<Vec<_>>()
        .await;
    assert_eq!(events.len(), 4);
    assert!(matches!(
        events[3].kind,
        RuntimeEventKind::Finished { return_code: 0, .. }
    ));
}

use futures::StreamExt;

#[tokio::test]
async fn wrong_order_fails_naming_the_expected_command() {
    let fixture = fixture();
    let results = fixture
        .exec(
            "b",
            r#"[{"run": {"entry_point": "echo", "args": []}}, {"deploy": {}}]"#,
        )
        .await;
    assert_eq!(results.len(), 1, "the batch stops at the first error");
    assert_eq!(results[0].result, CommandResult::Error);
    assert!(results[0].is_batch_finished);
    let message = results[0].message.as_deref().unwrap();
    assert!(message.contains("deploy is expected"), "{message}");

    let results = fixture
        .exec(
            "b2",
            r#"[{"deploy": {}}, {"run": {"entry_point": "echo"}}]"#,
        )
        .await;
    assert_eq!(results[1].result, CommandResult::Error);
    assert!(results[1]
        .message
        .as_deref()
        .unwrap()
        .contains("start is expected"));
    assert_eq!(fixture.runtime.runs.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn batch_stops_at_the_first_failing_command() {
    let fixture = fixture();
    let results = fixture
        .exec(
            "b",
            r#"[{"deploy": {}}, {"start": {}}, {"run": {"entry_point": "fail"}},
                {"run": {"entry_point": "echo"}}]"#,
        )
        .await;
    assert_eq!(results.len(), 3);
    assert_eq!(results[2].result, CommandResult::Error);
    assert_eq!(
        results[2].message.as_deref(),
        Some("fail exited with code 3")
    );
    let events = fixture
        .activity
        .batches()
        .get("b")
        .unwrap()
        .record()
        .events
        .clone();
    assert!(events.iter().any(|event| matches!(
        event.kind,
        RuntimeEventKind::Finished { return_code: 3, .. }
    )));
    // The exe unit keeps serving: unknown entry points are an error too.
    let results = fixture
        .exec("c", r#"[{"run": {"entry_point": "nope"}}]"#)
        .await;
    assert_eq!(
        results[0].message.as_deref(),
        Some("unknown entry point nope")
    );
    let results = fixture.exec("d", r#"[{"sign": {}}]"#).await;
    assert!(results[0]
        .message
        .as_deref()
        .unwrap()
        .contains("not supported"));
}

#[tokio::test]
async fn transfers_stay_inside_volumes() {
    let fixture = fixture();
    fixture.exec("b", DEPLOY_START).await;
    let volumes = fixture.activity.volumes();
    std::fs::write(volumes[0].host_path.join("in.txt"), b"x").unwrap();
    let results = fixture
        .exec(
            "t",
            r#"[{"transfer": {"from": "container:/golem/input/in.txt", "to": "container:/golem/output/out.txt"}},
                {"transfer": {"from": "container:/golem/../../etc/passwd", "to": "container:/golem/output/p"}}]"#,
        )
        .await;
    assert_eq!(results[0].result, CommandResult::Ok);
    assert_eq!(results[1].result, CommandResult::Error);
    let message = results[1].message.as_deref().unwrap();
    assert!(
        message.contains("escapes the activity's volumes"),
        "{message}"
    );
    assert_eq!(
        std::fs::read(volumes[1].host_path.join("out.txt")).unwrap(),
        b"x"
    );
    assert!(!volumes[1].host_path.join("p").exists());
}

#[tokio::test]
async fn corrupt_package_fails_deploy_and_keeps_initialized() {
    let fixture = fixture_with_package(b"tampered", b"original");
    let results = fixture.exec("b", DEPLOY_START).await;
    assert_eq!(results.len(), 1);
    let message = results[0].message.as_deref().unwrap();
    assert!(
        message.starts_with("deploy failed: task package hash mismatch"),
        "{message}"
    );
    assert_eq!(fixture.activity.state().state, State::Initialized.into());
}

/// The exploit of the `file://` package: a requestor on another node names a
/// provider file; deploy is refused before the file is opened, and the
/// message carries neither the path nor a hash of it.
#[tokio::test]
async fn another_nodes_requestor_cannot_deploy_a_provider_file() {
    let fixture = fixture_with_agreement(b"secret key", b"something else", OTHER_NODE, None);
    let results = fixture.exec("b", DEPLOY_START).await;
    let message = results[0].message.as_deref().unwrap();
    assert!(
        message.contains("only for the provider's own node"),
        "{message}"
    );
    let dir = fixture.activity.config().work_dir.parent().unwrap();
    assert!(!message.contains(&*dir.to_string_lossy()), "{message}");
    assert!(!message.contains("package.bin"), "{message}");
    assert!(
        !message.contains(&crate::package::sha3_224_hex(b"secret key")),
        "{message}"
    );
    assert_eq!(fixture.activity.state().state, State::Initialized.into());
}

/// Transfers stop at the storage the provider offered; the file is removed.
#[tokio::test]
async fn transfers_stop_at_the_offered_storage() {
    // 64 bytes of storage.
    let fixture = fixture_with_agreement(
        b"pkg",
        b"pkg",
        PROVIDER_ID,
        Some(64.0 / (1u64 << 30) as f64),
    );
    fixture.exec("b", DEPLOY_START).await;
    let volumes = fixture.activity.volumes();
    std::fs::write(volumes[0].host_path.join("small"), [1u8; 40]).unwrap();
    std::fs::write(volumes[0].host_path.join("big"), [1u8; 1000]).unwrap();
    let results = fixture
        .exec(
            "t",
            r#"[{"transfer": {"from": "container:/golem/input/small", "to": "container:/golem/output/a"}},
                {"transfer": {"from": "container:/golem/input/small", "to": "container:/golem/output/b"}}]"#,
        )
        .await;
    assert_eq!(results[0].result, CommandResult::Ok);
    let message = results[1].message.as_deref().unwrap();
    assert!(message.contains("storage limit of 64 bytes"), "{message}");
    assert!(!volumes[1].host_path.join("b").exists());
    let results = fixture
        .exec(
            "u",
            r#"[{"transfer": {"from": "container:/golem/input/big", "to": "container:/golem/output/c"}}]"#,
        )
        .await;
    assert_eq!(results[0].result, CommandResult::Error);
    assert!(!volumes[1].host_path.join("c").exists());
}

/// The SSRF exploit in miniature: a transfer from a loopback service (here a
/// listener standing in for the provider daemon's REST port) is refused
/// without the provider's allow setting, and nothing is written.
#[tokio::test]
async fn transfers_from_loopback_are_refused_without_the_setting() {
    let fixture = fixture();
    fixture.exec("b", DEPLOY_START).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let script = format!(
        r#"[{{"transfer": {{"from": "http://127.0.0.1:{port}/version/get", "to": "container:/golem/output/v.txt"}}}}]"#
    );
    let results = fixture.exec("t", &script).await;
    let message = results[0].message.as_deref().unwrap();
    assert!(message.contains("loopback"), "{message}");
    assert!(message.contains("allow-private-transfers"), "{message}");
    let volumes = fixture.activity.volumes();
    assert!(!volumes[1].host_path.join("v.txt").exists());
}

#[tokio::test]
async fn shutdown_kills_the_running_command_and_fails_queued_batches() {
    let fixture = fixture();
    fixture.exec("b", DEPLOY_START).await;
    fixture
        .activity
        .exec(
            "hang".into(),
            parse_exe_script(r#"[{"run": {"entry_point": "hang"}}]"#).unwrap(),
        )
        .unwrap();
    fixture
        .activity
        .exec(
            "queued".into(),
            parse_exe_script(r#"[{"run": {"entry_point": "echo"}}]"#).unwrap(),
        )
        .unwrap();
    let hang = fixture.activity.batches().get("hang").unwrap();
    tokio::time::timeout(Duration::from_secs(5), async {
        while fixture.activity.running_command().is_none() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .unwrap();
    assert_eq!(fixture.activity.running_command().unwrap().command, "Run");
    fixture.activity.request_shutdown("provider stopped");
    let results = hang.results(None, Duration::from_secs(10)).await;
    assert_eq!(results[0].result, CommandResult::Error);
    assert_eq!(
        results[0].message.as_deref(),
        Some("activity terminated: provider stopped")
    );
    let queued = fixture.activity.batches().get("queued").unwrap();
    let results = queued.results(None, Duration::from_secs(10)).await;
    assert!(results[0].is_batch_finished);
    assert!(results[0]
        .message
        .as_deref()
        .unwrap()
        .contains("before the batch ran"));
    let error = fixture
        .activity
        .exec(
            "late".into(),
            parse_exe_script(r#"[{"terminate": {}}]"#).unwrap(),
        )
        .unwrap_err();
    assert_eq!(error.code, ErrorCode::Gone);
}

#[tokio::test]
async fn terminate_ends_the_activity() {
    let mut fixture = fixture();
    let results = fixture
        .exec("b", r#"[{"terminate": {}}, {"deploy": {}}]"#)
        .await;
    assert_eq!(results.len(), 2);
    assert_eq!(results[0].result, CommandResult::Ok);
    assert!(results[1]
        .message
        .as_deref()
        .unwrap()
        .contains("Terminated"));
    let state = fixture.activity.state();
    assert_eq!(state.state, State::Terminated.into());
    assert_eq!(state.reason.as_deref(), Some("terminated by the requestor"));
    tokio::time::timeout(
        Duration::from_secs(5),
        fixture.activity.shutdown_token().cancelled(),
    )
    .await
    .unwrap();
    // The terminate command's Ok goes out before the Terminated state, on
    // which the daemon ends the batch with an Error if its result is missing.
    let reports = fixture.drain_reports();
    let terminate_result = reports
        .iter()
        .position(|report| matches!(report, Report::Result { batch_id, result } if batch_id == "b" && result.index == 0))
        .expect("the terminate command's result is reported");
    let terminated_state = reports
        .iter()
        .position(|report| matches!(report, Report::State(s) if s.state.0 == State::Terminated))
        .expect("the Terminated state is reported");
    assert!(terminate_result < terminated_state, "{reports:?}");
}

#[tokio::test]
async fn results_honour_command_index_and_timeout() {
    let fixture = fixture();
    fixture.exec("b", DEPLOY_START).await;
    let batch = fixture.activity.batches().get("b").unwrap();
    let first = batch.results(Some(0), Duration::ZERO).await;
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].index, 0);
    // An unfinished batch answers after the timeout with what it has.
    fixture
        .activity
        .exec(
            "h".into(),
            parse_exe_script(r#"[{"run": {"entry_point": "hang"}}]"#).unwrap(),
        )
        .unwrap();
    let hang = fixture.activity.batches().get("h").unwrap();
    let started = Instant::now();
    let results = hang.results(None, Duration::from_millis(100)).await;
    assert!(results.is_empty());
    assert!(started.elapsed() >= Duration::from_millis(100));
    let error = fixture
        .activity
        .exec("h".into(), parse_exe_script(r#"[{"sign": {}}]"#).unwrap())
        .unwrap_err();
    assert_eq!(error.code, ErrorCode::Conflict);
    assert_eq!(
        fixture.activity.batches().get("zzz").err().unwrap().code,
        ErrorCode::NotFound
    );
    fixture.activity.request_shutdown("test over");
}

#[tokio::test]
async fn usage_follows_the_agreement_vector() {
    let fixture = fixture();
    let usage = fixture.activity.usage();
    let counters = usage.current_usage.unwrap();
    assert_eq!(counters.len(), 3);
    assert_eq!(counters[0], 1.5, "cpu from the runtime");
    assert!(counters[1] >= 0.0 && counters[1] < 60.0, "duration");
    assert_eq!(counters[2], 0.0, "unknown counters are zero");
    assert!(process_cpu_seconds() > 0.0);
}
