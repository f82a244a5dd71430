//! The real `exe-unit-wasm` binary against a bus socket served by the test,
//! which stands in for the daemon's activity service.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures::StreamExt;
use golem_bus::{BusCall, Caller};
use golem_model::activity::{
    CommandOutput, CommandResult, ExeScriptCommandResult, GetState, GetUsage, RuntimeEvent,
    RuntimeEventKind, Shutdown, State,
};
use support::{rss_kib, Daemon, ExeUnit, HttpServer, Spawn};

fn stdout(result: &ExeScriptCommandResult) -> &str {
    match &result.stdout {
        Some(CommandOutput::Str(text)) => text,
        other => panic!("expected text stdout, got {other:?}"),
    }
}

fn assert_error(result: &ExeScriptCommandResult, needle: &str) {
    assert_eq!(result.result, CommandResult::Error, "{result:?}");
    assert!(result.is_batch_finished, "{result:?}");
    let message = result.message.as_deref().unwrap_or_default();
    assert!(message.contains(needle), "{message:?} lacks {needle:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_start_run_and_transfer_out() {
    let daemon = Daemon::start();
    let http = HttpServer::start(HashMap::from([(
        "/in.txt".to_string(),
        b"input from http".to_vec(),
    )]))
    .await;
    let mut exe_unit = ExeUnit::spawn(&daemon, Spawn::with_test_package(&daemon, "act-flow")).await;
    let state = daemon
        .router
        .call(&exe_unit.address, &GetState)
        .await
        .unwrap();
    assert_eq!(state.state, State::Initialized.into());

    let script = format!(
        r#"[{{"deploy": {{}}}}, {{"start": {{"args": []}}}},
            {{"transfer": {{"from": "{base}/in.txt", "to": "container:/golem/input/in.txt"}}}},
            {{"run": {{"entry_point": "hello", "args": ["a", "b"],
                      "capture": {{"stdout": {{"stream": {{}}}}, "stderr": {{"atEnd": {{"format": "str"}}}}}}}}}},
            {{"transfer": {{"from": "container:/golem/output/x", "to": "{base}/upload/x"}}}}]"#,
        base = http.base
    );
    let results = exe_unit.exec(&daemon, "batch-1", &script).await;
    assert_eq!(results.len(), 5, "{results:#?}");
    for (index, result) in results.iter().enumerate() {
        assert_eq!(result.index as usize, index);
        assert_eq!(result.result, CommandResult::Ok, "{result:?}");
        assert_eq!(result.is_batch_finished, index == 4);
    }
    assert_eq!(stdout(&results[3]), "a b\n");
    assert_eq!(results[3].stderr, Some(CommandOutput::Str("done\n".into())));
    let uploaded = http.uploads.lock().unwrap().get("/upload/x").cloned();
    assert_eq!(
        uploaded.as_deref(),
        Some(&b"hello from wasm: input from http"[..])
    );
    let on_disk = std::fs::read_dir(exe_unit.work_dir.join("volumes"))
        .unwrap()
        .count();
    assert_eq!(on_disk, 3, "one directory per mount point");

    // The same batch as SSE events, replayed from its start.
    let call = BusCall {
        caller: Caller::Local,
        address: exe_unit.address.clone(),
        message: "StreamBatchEvents".into(),
        payload: serde_json::json!({"batch_id": "batch-1"}),
        attachment: Vec::new(),
        stream: true,
    };
    let events: Vec<RuntimeEvent> = daemon
        .router
        .call_stream_raw(call)
        .map(|item| serde_json::from_value(item.unwrap()).unwrap())
        .collect()
        .await;
    let run_events: Vec<&RuntimeEventKind> = events
        .iter()
        .filter(|event| event.index == 3)
        .map(|event| &event.kind)
        .collect();
    assert!(matches!(run_events[0], RuntimeEventKind::Started { .. }));
    assert_eq!(
        run_events[1],
        &RuntimeEventKind::Stdout(CommandOutput::Str("a b\n".into()))
    );
    assert!(matches!(
        run_events.last().unwrap(),
        RuntimeEventKind::Finished { return_code: 0, .. }
    ));
    assert_eq!(events.len(), 11, "{events:#?}");

    // The activity service got everything too, in order (reports trail the results).
    daemon
        .wait_for_reports(|reports| reports.results.len() == 5 && reports.events.len() == 11)
        .await;
    {
        let reports = daemon.reports.lock().unwrap();
        let states: Vec<_> = reports.states.iter().map(|r| r.state.state).collect();
        assert_eq!(states.first().unwrap(), &State::Initialized.into());
        assert_eq!(states.last().unwrap(), &State::Ready.into());
        assert!(states.contains(&State::Deployed.into()));
        let reported: Vec<_> = reports
            .results
            .iter()
            .filter(|r| r.batch_id == "batch-1")
            .map(|r| r.result.clone())
            .collect();
        assert_eq!(reported, results);
        assert_eq!(reports.events.len(), events.len());
        assert!(reports.states.iter().all(|r| r.activity_id == "act-flow"));
    }
    // Usage: cpu and duration, reported every second.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let usage = daemon
        .router
        .call(&exe_unit.address, &GetUsage)
        .await
        .unwrap();
    let counters = usage.current_usage.unwrap();
    assert_eq!(counters.len(), 2);
    assert!(counters[1] >= 1.0, "duration {counters:?}");
    assert!(!daemon.reports.lock().unwrap().usage.is_empty());

    // terminate ends the activity and the process.
    let results = exe_unit
        .exec(&daemon, "batch-2", r#"[{"terminate": {}}]"#)
        .await;
    assert_eq!(results[0].result, CommandResult::Ok);
    let status = exe_unit.wait_exit(Duration::from_secs(10)).await;
    assert!(status.success(), "{status}");
    let last = daemon
        .reports
        .lock()
        .unwrap()
        .states
        .last()
        .cloned()
        .unwrap();
    assert_eq!(last.state.state, State::Terminated.into());
    assert_eq!(
        last.state.reason.as_deref(),
        Some("terminated by the requestor")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gives_clear_errors_and_the_exe_unit_keeps_serving() {
    let daemon = Daemon::start();
    let mut options = Spawn::with_test_package(&daemon, "act-bad");
    options.max_run_time = 1;
    let mut exe_unit = ExeUnit::spawn(&daemon, options).await;

    let results = exe_unit
        .exec(
            &daemon,
            "order",
            r#"[{"run": {"entry_point": "hello", "args": []}}, {"deploy": {}}]"#,
        )
        .await;
    assert_eq!(results.len(), 1);
    assert_error(&results[0], "deploy is expected");

    let results = exe_unit
        .exec(&daemon, "setup", r#"[{"deploy": {}}, {"start": {}}]"#)
        .await;
    assert!(
        results.iter().all(|r| r.result == CommandResult::Ok),
        "{results:?}"
    );

    let results = exe_unit
        .exec(
            &daemon,
            "unknown",
            r#"[{"run": {"entry_point": "nope", "args": []}}]"#,
        )
        .await;
    assert_error(&results[0], "unknown entry point \"nope\"");

    let started = Instant::now();
    let results = exe_unit
        .exec(
            &daemon,
            "loop",
            r#"[{"run": {"entry_point": "loop", "args": []}}]"#,
        )
        .await;
    assert_error(
        &results[0],
        "loop exceeded its time limit of 1 s and was stopped",
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );

    let results = exe_unit
        .exec(
            &daemon,
            "hog",
            r#"[{"run": {"entry_point": "hog", "args": []}}]"#,
        )
        .await;
    assert_error(&results[0], "memory limit of 64 MiB exceeded");

    let results = exe_unit
        .exec(
            &daemon,
            "escape",
            r#"[{"transfer": {"from": "container:/golem/../../etc/passwd", "to": "container:/golem/output/p"}}]"#,
        )
        .await;
    assert_error(&results[0], "escapes the activity's volumes");
    let results = exe_unit
        .exec(
            &daemon,
            "private",
            r#"[{"transfer": {"from": "container:/golem/work/x", "to": "container:/golem/output/p"}}]"#,
        )
        .await;
    assert_error(&results[0], "not inside any volume");

    // Still serving: hello runs fine after all that.
    let results = exe_unit
        .exec(
            &daemon,
            "again",
            r#"[{"run": {"entry_point": "hello", "args": ["still", "here"]}}]"#,
        )
        .await;
    assert_eq!(results[0].result, CommandResult::Ok, "{results:?}");
    assert_eq!(stdout(&results[0]), "still here\n");
    let state = daemon
        .router
        .call(&exe_unit.address, &GetState)
        .await
        .unwrap();
    assert_eq!(state.state, State::Ready.into());

    // Shutdown: Terminated with the reason, and the process exits.
    daemon
        .router
        .call(
            &exe_unit.address,
            &Shutdown {
                reason: Some("test done".into()),
            },
        )
        .await
        .unwrap();
    let status = exe_unit.wait_exit(Duration::from_secs(10)).await;
    assert!(status.success(), "{status}");
    let last = daemon
        .reports
        .lock()
        .unwrap()
        .states
        .last()
        .cloned()
        .unwrap();
    assert_eq!(last.state.state, State::Terminated.into());
    assert_eq!(last.state.reason.as_deref(), Some("test done"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_with_a_vpn_is_refused() {
    let daemon = Daemon::start();
    let exe_unit = ExeUnit::spawn(&daemon, Spawn::with_test_package(&daemon, "act-vpn")).await;
    let deploy = r#"[{"deploy": {"net": [{"id": "0123456789abcdef0123456789abcdef",
        "ip": "192.168.0.0", "mask": "255.255.255.0", "nodeIp": "192.168.0.2",
        "nodes": {"192.168.0.1": "0x1111111111111111111111111111111111111111"}}]}},
        {"start": {}}]"#;
    let results = exe_unit.exec(&daemon, "deploy-net", deploy).await;
    assert_eq!(results.len(), 1, "{results:?}");
    assert_error(
        &results[0],
        "the wasm runtime has no network interface; use the vm runtime for VPN",
    );
    let state = daemon
        .router
        .call(&exe_unit.address, &GetState)
        .await
        .unwrap();
    assert_eq!(state.state, State::Initialized.into());
    // The same package deploys without `net`.
    let results = exe_unit
        .exec(&daemon, "deploy", r#"[{"deploy": {}}, {"start": {}}]"#)
        .await;
    assert!(
        results
            .iter()
            .all(|result| result.result == CommandResult::Ok),
        "{results:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_package_fails_deploy_with_a_hash_mismatch() {
    let daemon = Daemon::start();
    let mut options = Spawn::with_test_package(&daemon, "act-corrupt");
    // Same URL, wrong digest.
    let url = options
        .task_package
        .splitn(4, ':')
        .nth(3)
        .unwrap()
        .to_string();
    options.task_package = format!("hash:sha3:{}:{url}", "0".repeat(56));
    let exe_unit = ExeUnit::spawn(&daemon, options).await;
    let results = exe_unit
        .exec(&daemon, "deploy", r#"[{"deploy": {}}, {"start": {}}]"#)
        .await;
    assert_eq!(results.len(), 1);
    assert_error(&results[0], "task package hash mismatch");
    let state = daemon
        .router
        .call(&exe_unit.address, &GetState)
        .await
        .unwrap();
    assert_eq!(state.state, State::Initialized.into());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exits_when_the_bus_connection_closes() {
    let daemon = Daemon::start();
    let mut exe_unit =
        ExeUnit::spawn(&daemon, Spawn::with_test_package(&daemon, "act-close")).await;
    daemon.shutdown.cancel();
    let status = exe_unit.wait_exit(Duration::from_secs(10)).await;
    assert!(status.success(), "{status}");
}

/// Measures the idle exe unit's resident memory (goal: ≤ 20 MiB), before and
/// after a deployed hello run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_rss_stays_small() {
    let daemon = Daemon::start();
    let exe_unit = ExeUnit::spawn(&daemon, Spawn::with_test_package(&daemon, "act-rss")).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let pid = exe_unit.child.id().unwrap();
    let idle = rss_kib(pid).unwrap();
    let idle_anon = status_kib(pid, "RssAnon:").unwrap();
    exe_unit
        .exec(
            &daemon,
            "b",
            r#"[{"deploy": {}}, {"start": {}}, {"run": {"entry_point": "hello", "args": []}}]"#,
        )
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let deployed = rss_kib(pid).unwrap();
    println!(
        "exe-unit-wasm RSS: idle {idle} KiB ({idle_anon} KiB anonymous), after deploy+run {deployed} KiB"
    );
    const GOAL_KIB: u64 = 20 * 1024;
    if cfg!(debug_assertions) {
        // A debug binary maps about three times the file pages of a release
        // one (idle RSS ~22 MiB, of which ~20 MiB file-backed, against 7 MiB
        // in release): here the goal holds the memory the exe unit itself
        // allocates, its anonymous pages.
        assert!(
            idle_anon <= GOAL_KIB,
            "idle anonymous RSS {idle_anon} KiB is above the 20 MiB goal"
        );
    } else {
        assert!(
            idle <= GOAL_KIB,
            "idle RSS {idle} KiB is above the 20 MiB goal"
        );
    }
}

/// A `kB` line of `/proc/<pid>/status`, e.g. `RssAnon:`.
fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|line| line.starts_with(field))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

#[test]
fn offer_template_prints_the_runtime_properties() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_exe-unit-wasm"))
        .arg("offer-template")
        .output()
        .unwrap();
    assert!(output.status.success());
    let template: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(template["golem.runtime.name"], "wasmtime");
    assert!(template["golem.runtime.version"].is_string());
    assert!(template["golem.runtime.capabilities"].is_array());
    assert_eq!(
        template["golem.activity.caps.transfer.protocol"],
        serde_json::json!(["http", "https"])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_reports_terminated_and_exits() {
    let daemon = Daemon::start();
    let mut exe_unit = ExeUnit::spawn(&daemon, Spawn::with_test_package(&daemon, "act-term")).await;
    let pid = nix::unistd::Pid::from_raw(i32::try_from(exe_unit.child.id().unwrap()).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let status = exe_unit.wait_exit(Duration::from_secs(10)).await;
    assert!(status.success(), "{status}");
    let last = daemon
        .reports
        .lock()
        .unwrap()
        .states
        .last()
        .cloned()
        .unwrap();
    assert_eq!(last.state.state, State::Terminated.into());
    assert_eq!(
        last.state.reason.as_deref(),
        Some("the exe unit was stopped by the provider")
    );
}
