//! A requestor that crashes leaves nothing stuck (issue 22, item 5): real
//! daemons on loopback, one provider that takes one agreement at a time.
//! - The requestor daemon is SIGKILLed mid-job and restarted on the same data
//!   dir: the next `golem-requestor run` ends what the dead run left (its
//!   agreement terminated, its allocation released) and gets the provider.
//! - The requestor daemon vanishes for good: the provider terminates the
//!   agreement within its `requestor-timeout-sec` once a debit note cannot be
//!   delivered.

#![allow(clippy::unwrap_used)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use golem_model::market::AgreementState;
use golem_tests::provider::{ProviderAgent, ProviderOptions};
use golem_tests::requestor::{demo_job, repo_root};
use golem_tests::{binary, Sandbox};
use serde_json::Value;

const SUBNET: &str = "e2e-requestor-crash";

/// A requestor daemon on a fixed p2p port (so that the provider finds it
/// again after a restart) and one provider with at most one agreement.
fn network(provider_toml: &str) -> (Sandbox, ProviderAgent) {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut sandbox = Sandbox::new();
    let listen = format!("/ip4/127.0.0.1/tcp/{port}");
    sandbox
        .daemon_with("requestor", &["--p2p-listen", &listen])
        .unwrap();
    let peer_id = sandbox.daemons()[0].net_status().unwrap()["peer_id"]
        .as_str()
        .unwrap()
        .to_string();
    let bootstrap = format!("{listen}/p2p/{peer_id}");
    sandbox
        .daemon_with("provider-1", &["--bootstrap", &bootstrap])
        .unwrap();
    let agent_dir = sandbox.path().join("provider-1-agent");
    let options = ProviderOptions::new(SUBNET)
        .node_name("provider-1")
        .exe_units(&["wasmtime"])
        .max_agreements(1)
        .config(provider_toml);
    let agent = ProviderAgent::start(&sandbox.daemons()[1], &agent_dir, options).unwrap();
    (sandbox, agent)
}

fn requestor(sandbox: &mut Sandbox, sessions: &Path, args: &[&str]) -> Command {
    let daemon = &sandbox.daemons()[0];
    let mut command = Command::new(binary("golem-requestor"));
    command
        .env("YAGNA_API_URL", &daemon.api_url)
        .env("YAGNA_APPKEY", &daemon.app_key)
        .env("GOLEM_REQUESTOR_SESSIONS_DIR", sessions)
        .args(["--subnet", SUBNET])
        .args(args)
        .stdin(Stdio::null());
    command
}

/// Start a long job with `--json` and return once it signed an agreement
/// (its id) and finished a first task; the child keeps running.
fn start_long_job(sandbox: &mut Sandbox, sessions: &Path) -> (Child, String) {
    let dir = sandbox.path().join("job");
    let job = demo_job(&dir, 3000).unwrap();
    let mut child = requestor(
        sandbox,
        sessions,
        &["script", job.to_str().unwrap(), "--json"],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
    let stdout = child.stdout.take().unwrap();
    let lines_rx = golem_tests::lines_of(stdout);
    let mut agreement_id = None;
    loop {
        let line = lines_rx
            .recv_timeout(Duration::from_secs(60))
            .expect("the job makes progress");
        let event: Value = serde_json::from_str(&line).unwrap_or_default();
        if event["event"] == "agreement_signed" {
            agreement_id = event["agreement_id"].as_str().map(String::from);
        }
        if event["event"] == "task_finished" {
            break;
        }
    }
    (child, agreement_id.expect("an agreement was signed"))
}

fn wait_exit(child: &mut Child, within: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("golem-requestor did not end within {within:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn hello_wat() -> PathBuf {
    repo_root().join("exe-unit-wasm/tests/modules/hello.wat")
}

#[tokio::test]
async fn a_run_after_a_requestor_daemon_crash_ends_what_the_dead_run_left() {
    let (mut sandbox, _agent) = network("");
    let sessions = sandbox.path().join("sessions");
    let (mut job, agreement_id) = start_long_job(&mut sandbox, &sessions);
    sandbox.daemons()[0].kill();
    let status = wait_exit(&mut job, Duration::from_secs(60));
    assert!(
        !status.success(),
        "the job cannot succeed without its daemon"
    );
    // The job's CLI may still be cleaning up; the journal names the agreement.
    let journals: Vec<_> = std::fs::read_dir(&sessions).unwrap().flatten().collect();
    assert_eq!(journals.len(), 1, "one journal of the dead run");
    sandbox.daemons()[0].restart().unwrap();
    let provider = sandbox.daemons()[1].client();
    let before = provider.agreement(&agreement_id).await.unwrap();
    assert_eq!(
        before.state,
        AgreementState::Approved,
        "still held by the dead run"
    );

    let hello = hello_wat();
    let mut run = requestor(
        &mut sandbox,
        &sessions,
        &[
            "run",
            "--runtime",
            "wasm",
            "--package",
            hello.to_str().unwrap(),
            "--",
            "hello",
            "again",
        ],
    );
    let output = run.output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the new run gets the provider: {stderr}"
    );
    assert_eq!(String::from_utf8_lossy(&output.stdout), "again\n");
    // The dead run's agreement was terminated with the reason, its journal removed.
    let after = provider.agreement(&agreement_id).await.unwrap();
    assert_eq!(after.state, AgreementState::Terminated);
    assert_eq!(std::fs::read_dir(&sessions).unwrap().count(), 0);
    let requestor = sandbox.daemons()[0].client();
    let allocations = requestor.allocations().await.unwrap();
    assert!(
        allocations.is_empty(),
        "every allocation released: {allocations:?}"
    );
}

#[tokio::test]
async fn a_provider_frees_an_agreement_whose_requestor_vanished() {
    let (mut sandbox, _agent) = network("debit-note-interval-sec = 1\nrequestor-timeout-sec = 3\n");
    let sessions = sandbox.path().join("sessions");
    let (mut job, agreement_id) = start_long_job(&mut sandbox, &sessions);
    let vanished = Instant::now();
    sandbox.daemons()[0].kill();
    wait_exit(&mut job, Duration::from_secs(60));
    let provider = sandbox.daemons()[1].client();
    // interval 1 s + timeout 3 s, plus the agent's billing rounds (a send
    // waits up to 5 s) and the daemon's terminate call to the vanished node.
    let ended = golem_tests::eventually(
        Duration::from_secs(60),
        "the provider terminates the agreement",
        || async {
            let agreement = provider.agreement(&agreement_id).await.ok()?;
            (agreement.state == AgreementState::Terminated).then_some(())
        },
    )
    .await;
    ended.unwrap();
    eprintln!(
        "freed {:?} after the requestor vanished",
        vanished.elapsed()
    );
    let reason = provider.termination_reason(&agreement_id).await.unwrap();
    let text = format!("{reason:?}");
    assert!(text.contains("stopped answering"), "{text}");
}
