//! End-to-end tests of activities: a requestor daemon drives, over libp2p, a
//! WASM exe unit on a provider daemon. The test reaches behind the provider
//! agent (it kills an exe unit mid-batch), so instead of the real
//! `golem-provider` (tested in `provider.rs`) it uses the stand-in agent of
//! `golem_tests::standin`: it answers negotiations and spawns the real
//! `exe-unit-wasm` binary per the exe-unit spawn contract.
#![allow(clippy::unwrap_used)] // test helpers panic on setup failure by design

use std::path::PathBuf;
use std::time::{Duration, Instant};

use futures::StreamExt;
use golem_client::GolemClient;
use golem_model::activity::{CommandResult, ExeScriptCommandResult};
use golem_model::market::DemandOfferBase;
use golem_model::GolemError;
use golem_tests::http::FileServer;
use golem_tests::negotiation::negotiate_agreement;
use golem_tests::standin::{spawn_standin_agent, ExeUnits};
use golem_tests::{DaemonProcess, Sandbox};
use serde_json::{json, Value};
use sha3::Digest;

const SUBNET: &str = "e2e-activity";

fn offer() -> DemandOfferBase {
    DemandOfferBase {
        properties: json!({
            "golem.node.debug.subnet": SUBNET,
            "golem.node.id.name": "wasm-provider",
            "golem.runtime.name": "wasmtime",
            "golem.inf.mem.gib": 0.5,
            "golem.inf.cpu.threads": 1,
            "golem.com.pricing.model": "linear",
            "golem.com.pricing.model.linear.coeffs": [0.1, 0.1, 0.0],
            "golem.com.usage.vector": ["golem.usage.cpu_sec", "golem.usage.duration_sec"],
        }),
        constraints: format!("(golem.node.debug.subnet={SUBNET})"),
    }
}

fn demand(package: &str) -> DemandOfferBase {
    DemandOfferBase {
        properties: json!({
            "golem.node.debug.subnet": SUBNET,
            "golem.srv.comp.task_package": package,
            // An hour ahead, as clients ask; the market refuses expiries beyond its cap.
            "golem.srv.comp.expiration": chrono::Utc::now().timestamp_millis() + 3_600_000,
        }),
        constraints: format!("(&(golem.node.debug.subnet={SUBNET})(golem.runtime.name=wasmtime))"),
    }
}

/// Plays the provider agent with `exe-unit-wasm` (see `golem_tests::standin`).
fn provider_agent(provider: &DaemonProcess, offer_id: String, work: PathBuf) -> ExeUnits {
    spawn_standin_agent(provider, offer_id, offer(), "exe-unit-wasm", work)
}

struct Requestor {
    client: GolemClient,
    http: reqwest::Client,
    api_url: String,
    app_key: String,
}

impl Requestor {
    fn url(&self, path: &str) -> String {
        format!("{}/activity-api/v1{path}", self.api_url)
    }

    async fn post(&self, path: &str, body: Value) -> reqwest::Response {
        self.http
            .post(self.url(path))
            .bearer_auth(&self.app_key)
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    async fn get(&self, path: &str) -> reqwest::Response {
        self.http
            .get(self.url(path))
            .bearer_auth(&self.app_key)
            .send()
            .await
            .unwrap()
    }

    async fn exec(&self, activity_id: &str, script: Value) -> String {
        let response = self
            .post(
                &format!("/activity/{activity_id}/exec"),
                json!({"text": script.to_string()}),
            )
            .await;
        assert_eq!(response.status(), 200);
        response.json().await.unwrap()
    }

    /// Poll the batch until it finishes (as yapapi does, `timeout=5`).
    async fn results(&self, activity_id: &str, batch_id: &str) -> Vec<ExeScriptCommandResult> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let response = self
                .get(&format!(
                    "/activity/{activity_id}/exec/{batch_id}?timeout=5"
                ))
                .await;
            assert_eq!(response.status(), 200);
            let results: Vec<ExeScriptCommandResult> = response.json().await.unwrap();
            if results
                .last()
                .is_some_and(|result| result.is_batch_finished)
            {
                return results;
            }
            assert!(
                Instant::now() < deadline,
                "batch {batch_id} never finished: {results:?}"
            );
        }
    }

    async fn state(&self, activity_id: &str) -> Value {
        self.get(&format!("/activity/{activity_id}/state"))
            .await
            .json()
            .await
            .unwrap()
    }
}

/// Everything a test needs: provider, requestor and outsider daemons, the
/// stand-in provider agent, and an approved agreement for the hello package.
struct Fixture {
    sandbox: Sandbox,
    _server: FileServer,
    /// Served by `_server`: packages, inputs, and files the exe unit uploads.
    files: PathBuf,
    provider_id: String,
    exe_units: ExeUnits,
    requestor: Requestor,
    agreement_id: String,
}

async fn fixture() -> Fixture {
    let mut sandbox = Sandbox::new();
    sandbox.provider_and_requestor().unwrap();
    let bootstrap = sandbox.daemons()[0].p2p_address().unwrap();
    sandbox
        .daemon_with("x", &["--bootstrap", &bootstrap])
        .unwrap();

    // The package: a bare hello.wasm served over HTTP, addressed by its sha3-224.
    let packages = sandbox.path().join("packages");
    std::fs::create_dir_all(&packages).unwrap();
    let hello = wat::parse_file(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../exe-unit-wasm/tests/modules/hello.wat"),
    )
    .unwrap();
    std::fs::write(packages.join("hello.wasm"), &hello).unwrap();
    let server = FileServer::start(packages.clone()).await.unwrap();
    let package = format!(
        "hash:sha3:{}:{}",
        hex::encode(sha3::Sha3_224::digest(&hello)),
        server.url("hello.wasm")
    );

    let provider_work = sandbox.path().join("provider-work");
    let provider = &sandbox.daemons()[0];
    let provider_id = provider.node_id().unwrap();
    let offer_id = provider.client().subscribe_offer(&offer()).await.unwrap();
    let exe_units = provider_agent(provider, offer_id, provider_work);
    let requestor_daemon = &sandbox.daemons()[1];
    let requestor = Requestor {
        client: requestor_daemon.client(),
        http: reqwest::Client::new(),
        api_url: requestor_daemon.api_url.clone(),
        app_key: requestor_daemon.app_key.clone(),
    };
    let agreement_id = negotiate_agreement(&requestor.client, &demand(&package)).await;
    Fixture {
        sandbox,
        _server: server,
        files: packages,
        provider_id,
        exe_units,
        requestor,
        agreement_id,
    }
}

#[tokio::test]
async fn requestor_runs_wasm_on_a_provider_through_two_daemons() {
    let Fixture {
        sandbox,
        _server,
        files,
        provider_id,
        exe_units,
        requestor,
        agreement_id,
    } = fixture().await;

    // yapapi's form: a bare JSON string in, a bare JSON string out.
    let response = requestor.post("/activity", json!(agreement_id)).await;
    let status = response.status();
    let body = response.text().await.unwrap();
    assert_eq!(status, 201, "{body}");
    let activity_id: String = serde_json::from_str(&body).unwrap();
    assert_eq!(
        requestor.state(&activity_id).await["state"][0],
        "Initialized"
    );
    let agreement_of: String = requestor
        .get(&format!("/activity/{activity_id}/agreement"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(agreement_of, agreement_id);

    let batch = requestor
        .exec(
            &activity_id,
            json!([{"deploy": {}}, {"start": {"args": []}}]),
        )
        .await;
    let results = requestor.results(&activity_id, &batch).await;
    assert_eq!(results.len(), 2, "{results:?}");
    assert!(
        results
            .iter()
            .all(|result| result.result == CommandResult::Ok),
        "{results:?}"
    );
    assert_eq!(requestor.state(&activity_id).await["state"][0], "Ready");

    let run = json!([{"run": {"entry_point": "hello", "args": ["first", "second"],
                      "capture": {"stdout": {"atEnd": {"format": "str"}}, "stderr": {"atEnd": {"format": "str"}}}}}]);
    let batch = requestor.exec(&activity_id, run).await;
    let results = requestor.results(&activity_id, &batch).await;
    assert_eq!(results[0].result, CommandResult::Ok, "{results:?}");
    let stdout = serde_json::to_string(&results[0].stdout).unwrap();
    assert!(
        stdout.contains("first") && stdout.contains("second"),
        "{stdout}"
    );

    // Files in and out through transfers: the input is fetched over HTTP into
    // the activity's volume, hello writes /golem/output/x from it, and x is
    // uploaded back over HTTP.
    std::fs::write(files.join("in.txt"), "from the requestor").unwrap();
    let transfers = json!([
        {"transfer": {"from": _server.url("in.txt"), "to": "container:/golem/input/in.txt"}},
        {"run": {"entry_point": "hello", "args": []}},
        {"transfer": {"from": "container:/golem/output/x", "to": _server.url("x-out.txt")}}
    ]);
    let batch = requestor.exec(&activity_id, transfers).await;
    let results = requestor.results(&activity_id, &batch).await;
    assert!(
        results.len() == 3
            && results
                .iter()
                .all(|result| result.result == CommandResult::Ok),
        "{results:?}"
    );
    let uploaded = std::fs::read_to_string(files.join("x-out.txt")).unwrap();
    assert_eq!(uploaded, "hello from wasm: from the requestor");
    let escape = json!([{"transfer": {"from": "container:/golem/../../etc/passwd", "to": _server.url("stolen")}}]);
    let batch = requestor.exec(&activity_id, escape).await;
    let results = requestor.results(&activity_id, &batch).await;
    assert_eq!(results[0].result, CommandResult::Error, "{results:?}");
    assert!(!files.join("stolen").exists());

    // The same run with streamed output, read as Server-Sent Events.
    let streamed = json!([{"run": {"entry_point": "hello", "args": ["streamed"],
                           "capture": {"stdout": {"stream": {}}, "stderr": {"stream": {}}}}}]);
    let batch = requestor.exec(&activity_id, streamed).await;
    let response = requestor
        .http
        .get(requestor.url(&format!("/activity/{activity_id}/exec/{batch}")))
        .bearer_auth(&requestor.app_key)
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let body = tokio::time::timeout(Duration::from_secs(30), response.text())
        .await
        .expect("the stream ends")
        .unwrap();
    assert!(body.contains("event: runtime\ndata: "), "{body}");
    assert!(
        body.contains("\"started\"") && body.contains("\"return_code\":0"),
        "{body}"
    );
    assert!(body.contains("streamed"), "{body}");

    let usage: Value = requestor
        .get(&format!("/activity/{activity_id}/usage"))
        .await
        .json()
        .await
        .unwrap();
    assert!(usage["timestamp"].as_i64().unwrap() > 0, "{usage}");

    // Another node can neither see nor drive this activity on the provider.
    let mut sandbox = sandbox;
    let outsider = sandbox.daemons()[2].bus().await.unwrap();
    let address = format!("/net/{provider_id}/public/activity");
    let refused = outsider
        .call(
            &address,
            &golem_model::activity_control::GetStateRemote {
                activity_id: activity_id.clone(),
            },
        )
        .await
        .unwrap_err();
    assert_eq!(
        refused.code,
        golem_model::ErrorCode::Forbidden,
        "{refused:?}"
    );
    let unknown = requestor.get("/activity/0123/state").await;
    assert_eq!(unknown.status(), 404);
    let bad_script = requestor
        .post(
            &format!("/activity/{activity_id}/exec"),
            json!({"text": "[{\"fly\": {}}]"}),
        )
        .await;
    assert_eq!(bad_script.status(), 400);

    // Kill the exe unit in the middle of a batch: the batch ends with an Error
    // and the activity is Terminated with a reason; nobody hangs. The batch's
    // second command downloads from a server that accepts and never answers,
    // so the exe unit is certainly killed while that command runs.
    let stalling = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let stalled_url = format!("http://{}/never", stalling.local_addr().unwrap());
    let (accepted_tx, accepted_rx) = tokio::sync::oneshot::channel();
    let stall = tokio::spawn(async move {
        let (connection, _) = stalling.accept().await.unwrap();
        let _ = accepted_tx.send(());
        // Hold the connection open, answering nothing.
        std::future::pending::<()>().await;
        drop(connection);
    });
    let looping = requestor
        .exec(
            &activity_id,
            json!([
                {"run": {"entry_point": "hello", "args": ["a"]}},
                {"transfer": {"from": stalled_url, "to": "container:/golem/input/never"}}
            ]),
        )
        .await;
    // The first result has reached the provider's daemon (reports travel
    // apart from the work, so it may lag the download's start)...
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let response = requestor
            .get(&format!("/activity/{activity_id}/exec/{looping}?timeout=1"))
            .await;
        assert_eq!(response.status(), 200);
        let results: Vec<ExeScriptCommandResult> = response.json().await.unwrap();
        if !results.is_empty() {
            assert_eq!(results.len(), 1, "{results:?}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the first command never finished"
        );
    }
    // ... and the second command is running.
    tokio::time::timeout(Duration::from_secs(30), accepted_rx)
        .await
        .expect("the exe unit starts the stalled download")
        .unwrap();
    exe_units
        .lock()
        .unwrap()
        .get_mut(&activity_id)
        .unwrap()
        .kill()
        .unwrap();
    let results = requestor.results(&activity_id, &looping).await;
    stall.abort();
    assert_eq!(results.len(), 2, "{results:?}");
    assert_eq!(
        (
            results[0].index,
            &results[0].result,
            results[0].is_batch_finished
        ),
        (0, &CommandResult::Ok, false),
        "{results:?}"
    );
    assert_eq!(
        (
            results[1].index,
            &results[1].result,
            results[1].is_batch_finished
        ),
        (1, &CommandResult::Error, true),
        "{results:?}"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let state = requestor.state(&activity_id).await;
        if state["state"][0] == "Terminated" {
            assert!(
                state["reason"]
                    .as_str()
                    .is_some_and(|reason| !reason.is_empty()),
                "{state}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "activity not terminated after its exe unit died: {state}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let after_death = requestor
        .post(
            &format!("/activity/{activity_id}/exec"),
            json!({"text": "[{\"start\": {}}]"}),
        )
        .await;
    assert_eq!(after_death.status(), 410, "exec on a terminated activity");
    let message: Value = after_death.json().await.unwrap();
    assert!(
        message["message"].as_str().unwrap().contains("terminated"),
        "{message}"
    );

    // golem-js's form: an object in, an object out; then destroy it.
    let response = requestor
        .post("/activity?timeout=30", json!({"agreementId": agreement_id}))
        .await;
    assert_eq!(response.status(), 201);
    let created: Value = response.json().await.unwrap();
    let second = created["activityId"].as_str().unwrap().to_string();
    let response = requestor
        .http
        .delete(requestor.url(&format!("/activity/{second}")))
        .bearer_auth(&requestor.app_key)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(requestor.state(&second).await["state"][0], "Terminated");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let exited = exe_units
            .lock()
            .unwrap()
            .get_mut(&second)
            .map(|child| child.try_wait().unwrap().is_some());
        if exited == Some(true) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the exe unit did not exit after destroy"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for (_, mut child) in exe_units.lock().unwrap().drain() {
        let _ = child.kill();
    }
}

/// What a refused call of X's answered; panics when it was not refused.
fn refusal<T: std::fmt::Debug>(what: &str, result: Result<T, GolemError>) -> GolemError {
    match result {
        Ok(reply) => panic!("X's {what} was served: {reply:?}"),
        Err(error) => error,
    }
}

/// Third-node authorization end to end. R has an agreement with P and a
/// running activity on it; X, another node with its own daemon, sends every
/// `/public/activity` message over the net to P about them (through a bus
/// client on X's socket, so P sees X's authenticated NodeId). Each is refused
/// as the provider side defines it — Forbidden for R's agreement and
/// activity, NotFound for ids P does not host — and none changes anything: no
/// activity is created, no batch recorded or run, the activity is not
/// destroyed, and R still drives it.
#[tokio::test]
async fn a_third_node_can_neither_create_nor_drive_nor_destroy_an_activity() {
    use golem_model::activity_control::{
        CreateActivityRemote, DestroyActivityRemote, ExecRemote, GetBatchResultsRemote,
        GetRunningCommandRemote, GetStateRemote, GetUsageRemote, StreamBatchEventsRemote,
    };
    use golem_model::bus::BusMessage;
    use golem_model::ErrorCode::{Forbidden, NotFound};

    let Fixture {
        mut sandbox,
        _server,
        provider_id,
        exe_units,
        requestor,
        agreement_id,
        ..
    } = fixture().await;
    let response = requestor.post("/activity", json!(agreement_id)).await;
    assert_eq!(response.status(), 201);
    let activity_id: String = response.json().await.unwrap();
    let batch = requestor
        .exec(
            &activity_id,
            json!([{"deploy": {}}, {"start": {"args": []}}]),
        )
        .await;
    let results = requestor.results(&activity_id, &batch).await;
    assert!(
        results
            .iter()
            .all(|result| result.result == CommandResult::Ok),
        "{results:?}"
    );
    let run = json!([{"run": {"entry_point": "hello", "args": ["run", "by", "r"],
                      "capture": {"stdout": {"atEnd": {"format": "str"}}}}}]);
    let r_batch = requestor.exec(&activity_id, run.clone()).await;
    let results = requestor.results(&activity_id, &r_batch).await;
    assert_eq!(results[0].result, CommandResult::Ok, "{results:?}");
    let r_stdout = results[0].stdout.clone();
    assert!(
        serde_json::to_string(&r_stdout).unwrap().contains("by"),
        "{r_stdout:?}"
    );

    let provider = sandbox.daemons()[0].client();
    let events_before = provider
        .provider_activity_events(None, 0.0, 100)
        .await
        .unwrap();
    assert_eq!(events_before.len(), 1, "{events_before:?}");
    let outsider = sandbox.daemons()[2].bus().await.unwrap();
    let address = format!("/net/{provider_id}/public/activity");
    let commands = golem_model::activity::parse_exe_script(
        &json!([{"run": {"entry_point": "hello", "args": ["run", "by", "x"]}}]).to_string(),
    )
    .unwrap();
    let x_batch = "feedfacefeedfacefeedfacefeedface".to_string();
    let unknown = "0123456789abcdef0123456789abcdef".to_string();

    // R's agreement and activity: Forbidden.
    let forbidden = [
        (
            "CreateActivityRemote",
            refusal(
                "create",
                outsider
                    .call(
                        &address,
                        &CreateActivityRemote {
                            agreement_id: agreement_id.clone(),
                            timeout_sec: 1.0,
                        },
                    )
                    .await,
            ),
        ),
        (
            "ExecRemote",
            refusal(
                "exec",
                outsider
                    .call(
                        &address,
                        &ExecRemote {
                            activity_id: activity_id.clone(),
                            batch_id: x_batch.clone(),
                            commands: commands.clone(),
                        },
                    )
                    .await,
            ),
        ),
        (
            "GetBatchResultsRemote",
            refusal(
                "batch results",
                outsider
                    .call(
                        &address,
                        &GetBatchResultsRemote {
                            activity_id: activity_id.clone(),
                            batch_id: r_batch.clone(),
                            command_index: None,
                            timeout_sec: Some(0.0),
                        },
                    )
                    .await,
            ),
        ),
        (
            "StreamBatchEventsRemote",
            refusal("batch events", {
                let payload = serde_json::to_value(StreamBatchEventsRemote {
                    activity_id: activity_id.clone(),
                    batch_id: r_batch.clone(),
                })
                .unwrap();
                let mut stream =
                    outsider.call_stream_raw(&address, StreamBatchEventsRemote::NAME, payload);
                tokio::time::timeout(Duration::from_secs(15), stream.next())
                    .await
                    .expect("P answers the stream")
                    .expect("an item or an error")
            }),
        ),
        (
            "GetStateRemote",
            refusal(
                "state",
                outsider
                    .call(
                        &address,
                        &GetStateRemote {
                            activity_id: activity_id.clone(),
                        },
                    )
                    .await,
            ),
        ),
        (
            "GetUsageRemote",
            refusal(
                "usage",
                outsider
                    .call(
                        &address,
                        &GetUsageRemote {
                            activity_id: activity_id.clone(),
                        },
                    )
                    .await,
            ),
        ),
        (
            "GetRunningCommandRemote",
            refusal(
                "running command",
                outsider
                    .call(
                        &address,
                        &GetRunningCommandRemote {
                            activity_id: activity_id.clone(),
                        },
                    )
                    .await,
            ),
        ),
        (
            "DestroyActivityRemote",
            refusal(
                "destroy",
                outsider
                    .call(
                        &address,
                        &DestroyActivityRemote {
                            activity_id: activity_id.clone(),
                        },
                    )
                    .await,
            ),
        ),
    ];
    for (message, error) in &forbidden {
        assert_eq!(error.code, Forbidden, "{message}: {error:?}");
    }

    // Ids P does not host: NotFound, for X as for anyone.
    let not_found = [
        (
            "CreateActivityRemote",
            refusal(
                "create",
                outsider
                    .call(
                        &address,
                        &CreateActivityRemote {
                            agreement_id: unknown.clone(),
                            timeout_sec: 1.0,
                        },
                    )
                    .await,
            ),
        ),
        (
            "ExecRemote",
            refusal(
                "exec",
                outsider
                    .call(
                        &address,
                        &ExecRemote {
                            activity_id: unknown.clone(),
                            batch_id: x_batch.clone(),
                            commands,
                        },
                    )
                    .await,
            ),
        ),
        (
            "DestroyActivityRemote",
            refusal(
                "destroy",
                outsider
                    .call(
                        &address,
                        &DestroyActivityRemote {
                            activity_id: unknown.clone(),
                        },
                    )
                    .await,
            ),
        ),
    ];
    for (message, error) in &not_found {
        assert_eq!(error.code, NotFound, "{message}: {error:?}");
    }

    // Nothing changed: no provider event (no activity created or destroyed),
    // one exe unit still running, X's batch unknown to P, and R drives the
    // activity as before.
    let events_after = provider
        .provider_activity_events(None, 0.0, 100)
        .await
        .unwrap();
    assert_eq!(events_after, events_before);
    {
        let mut units = exe_units.lock().unwrap();
        assert_eq!(units.len(), 1, "one exe unit was spawned");
        let unit = units.get_mut(&activity_id).unwrap();
        assert!(unit.try_wait().unwrap().is_none(), "the exe unit runs");
    }
    assert_eq!(requestor.state(&activity_id).await["state"][0], "Ready");
    let x_results = requestor
        .get(&format!("/activity/{activity_id}/exec/{x_batch}?timeout=0"))
        .await;
    assert_eq!(x_results.status(), 404, "P recorded no batch of X's");
    let batch = requestor.exec(&activity_id, run).await;
    let results = requestor.results(&activity_id, &batch).await;
    assert_eq!(results[0].result, CommandResult::Ok, "{results:?}");
    assert_eq!(results[0].stdout, r_stdout, "the same run, the same output");
    for (_, mut child) in exe_units.lock().unwrap().drain() {
        let _ = child.kill();
    }
}

/// Benchmark (run by `scripts/bench/activity.sh` on release builds): exec round
/// trip of a trivial `run` on a Ready WASM activity through the requestor's REST
/// API, provider on another daemon. Prints a table; asserts nothing about time.
#[tokio::test]
#[ignore = "benchmark: run with scripts/bench/activity.sh"]
async fn bench_exec_round_trip() {
    let Fixture {
        sandbox: _sandbox,
        _server,
        requestor,
        agreement_id,
        exe_units,
        ..
    } = fixture().await;
    let started = Instant::now();
    let response = requestor.post("/activity", json!(agreement_id)).await;
    let activity_id: String = response.json().await.unwrap();
    let create = started.elapsed();
    let batch = requestor
        .exec(
            &activity_id,
            json!([{"deploy": {}}, {"start": {"args": []}}]),
        )
        .await;
    requestor.results(&activity_id, &batch).await;
    let run = json!([{"run": {"entry_point": "hello", "args": ["x"]}}]);
    let mut samples = Vec::new();
    for round in 0..300 {
        let started = Instant::now();
        let batch = requestor.exec(&activity_id, run.clone()).await;
        let results = requestor.results(&activity_id, &batch).await;
        assert_eq!(results[0].result, CommandResult::Ok);
        if round >= 20 {
            samples.push(started.elapsed());
        }
    }
    samples.sort();
    let at = |fraction: f64| {
        samples[((samples.len() as f64 * fraction) as usize).min(samples.len() - 1)]
    };
    println!("\n| Measure | p50 | p90 | p99 |\n|---|---|---|---|");
    println!(
        "| exec round trip, trivial WASM run, provider on another daemon ({} runs) | {:.2} ms | {:.2} ms | {:.2} ms |",
        samples.len(),
        at(0.5).as_secs_f64() * 1000.0,
        at(0.9).as_secs_f64() * 1000.0,
        at(0.99).as_secs_f64() * 1000.0
    );
    println!(
        "| activity create → Initialized (exe unit spawned by the test's agent) | {:.1} ms | | |",
        create.as_secs_f64() * 1000.0
    );
    for (_, mut child) in exe_units.lock().unwrap().drain() {
        let _ = child.kill();
    }
}
