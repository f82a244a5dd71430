//! End-to-end tests of the provider agent: daemon P runs the real
//! `golem-provider` (WASM exe unit), daemon R plays a scripted requestor over
//! REST. The offer appears on R, negotiation reaches Approved, a WASM `run`
//! works, destroy and terminate end it, and the invoice's amount equals the
//! agreed coeffs × the usage counters. Policy refusals carry readable reasons;
//! a killed exe unit, unaccepted debit notes and an agent restart still end in
//! an invoice, with no orphan exe-unit processes.
#![allow(clippy::unwrap_used)] // test helpers panic on setup failure by design

use std::path::PathBuf;
use std::time::{Duration, Instant};

use golem_client::market::Side;
use golem_client::GolemClient;
use golem_model::activity::{parse_exe_script, CommandResult};
use golem_model::market::{
    AgreementOperationEvent, AgreementProposal, DemandOfferBase, MarketEvent, Proposal,
    ProposalState, Reason, Terminator,
};
use golem_model::payment::{Decimal, DocumentStatus, Invoice, PaymentEvent, PaymentEventType};
use golem_tests::bench::{row, rss_kib};
use golem_tests::http::FileServer;
use golem_tests::provider::{processes_with_arg, Preset, ProviderAgent, ProviderOptions};
use golem_tests::proxy::ReplyTrap;
use golem_tests::{eventually, DaemonProcess, Sandbox};
use serde_json::{json, Value};
use sha3::Digest;

const PLATFORM: &str = "dummy-local-tglm";
const START_FEE: f64 = 0.5;
const PER_CPU_SEC: f64 = 0.01;
const PER_SEC: f64 = 0.001;

struct Setup {
    /// Dropped first: the agent stops before its daemon.
    agent: ProviderAgent,
    _sandbox: Sandbox,
    _server: FileServer,
    package: String,
    provider_id: String,
    /// Daemon P's REST API, reached directly (not through the agent's URL).
    provider: GolemClient,
    requestor: GolemClient,
    subnet: String,
}

/// Daemons P and R, the hello.wasm package served over HTTP, and golem-provider
/// on P offering only wasmtime on `subnet`.
async fn setup(subnet: &str, configure: impl FnOnce(ProviderOptions) -> ProviderOptions) -> Setup {
    setup_beside(subnet, |options, _| configure(options)).await
}

/// [`setup`] whose `configure` also sees daemon P (e.g. to put a proxy in
/// front of its API).
async fn setup_beside(
    subnet: &str,
    configure: impl FnOnce(ProviderOptions, &DaemonProcess) -> ProviderOptions,
) -> Setup {
    let mut sandbox = Sandbox::new();
    sandbox.provider_and_requestor().unwrap();
    let packages = sandbox.path().join("packages");
    std::fs::create_dir_all(&packages).unwrap();
    let hello = wat::parse_file(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../exe-unit-wasm/tests/modules/hello.wat"),
    )
    .unwrap();
    std::fs::write(packages.join("hello.wasm"), &hello).unwrap();
    let server = FileServer::start(packages).await.unwrap();
    let package = format!(
        "hash:sha3:{}:{}",
        hex::encode(sha3::Sha3_224::digest(&hello)),
        server.url("hello.wasm")
    );
    let agent_dir = sandbox.path().join("p-agent");
    let options = configure(
        ProviderOptions::new(subnet)
            .exe_units(&["wasmtime"])
            .preset(Preset::new("wasm", "wasmtime", "0.5", "0.01", "0.001")),
        &sandbox.daemons()[0],
    );
    let agent = ProviderAgent::start(&sandbox.daemons()[0], &agent_dir, options).unwrap();
    let provider_id = sandbox.daemons()[0].node_id().unwrap();
    let provider = sandbox.daemons()[0].client();
    let requestor = sandbox.daemons()[1].client();
    Setup {
        _sandbox: sandbox,
        _server: server,
        package,
        agent,
        provider_id,
        provider,
        requestor,
        subnet: subnet.to_string(),
    }
}

impl Setup {
    /// A demand decorated by an allocation on the dummy platform; `extra` properties win.
    async fn demand(&self, expires_in: Duration, extra: Value) -> DemandOfferBase {
        let allocation = self
            .requestor
            .create_allocation(PLATFORM, "100")
            .await
            .unwrap();
        let decoration = self
            .requestor
            .demand_decorations(&[&allocation.allocation_id])
            .await
            .unwrap();
        let mut properties = json!({
            "golem.node.debug.subnet": self.subnet,
            "golem.srv.comp.task_package": self.package,
            "golem.srv.comp.expiration":
                chrono::Utc::now().timestamp_millis() + expires_in.as_millis() as i64,
            "golem.com.payment.chosen-platform": PLATFORM,
        });
        for property in &decoration.properties {
            properties[&property.key] = json!(property.value);
        }
        for (key, value) in extra.as_object().unwrap() {
            properties[key] = value.clone();
        }
        DemandOfferBase {
            properties,
            constraints: format!(
                "(&(golem.node.debug.subnet={})(golem.runtime.name=wasmtime){})",
                self.subnet,
                decoration.constraints.join("")
            ),
        }
    }

    /// Negotiate as yapapi does: counter the Initial offer, then turn the
    /// provider's Draft into an agreement. Ok(agreement id, the Initial offer)
    /// or Err(the provider's rejection reason).
    async fn negotiate(&self, demand: &DemandOfferBase) -> Result<(String, Proposal), String> {
        let requestor = &self.requestor;
        let demand_id = requestor.subscribe_demand(demand).await.unwrap();
        let mut initial: Option<Proposal> = None;
        let deadline = Instant::now() + Duration::from_secs(40);
        loop {
            assert!(
                Instant::now() < deadline,
                "negotiation did not finish; agent log:\n{}",
                self.agent.log()
            );
            let events = requestor
                .market_events(Side::Demands, &demand_id, 1.0, 10)
                .await
                .unwrap();
            for event in events {
                match event {
                    MarketEvent::ProposalEvent { proposal, .. }
                        if proposal.state == ProposalState::Initial && initial.is_none() =>
                    {
                        requestor
                            .counter_proposal(
                                Side::Demands,
                                &demand_id,
                                &proposal.proposal_id,
                                demand,
                            )
                            .await
                            .unwrap();
                        initial = Some(proposal);
                    }
                    MarketEvent::ProposalEvent { proposal, .. }
                        if proposal.state == ProposalState::Draft =>
                    {
                        let agreement_id = requestor
                            .create_agreement(&AgreementProposal::valid_for(
                                &proposal.proposal_id,
                                Duration::from_secs(3600),
                            ))
                            .await
                            .unwrap();
                        requestor
                            .confirm_agreement(&agreement_id, None)
                            .await
                            .unwrap();
                        requestor
                            .wait_for_approval(&agreement_id, 15.0)
                            .await
                            .unwrap();
                        let _ = requestor.unsubscribe(Side::Demands, &demand_id).await;
                        return Ok((agreement_id, initial.unwrap()));
                    }
                    MarketEvent::ProposalRejectedEvent { reason, .. } => {
                        let _ = requestor.unsubscribe(Side::Demands, &demand_id).await;
                        return Err(reason.map(|r| r.message).unwrap_or_default());
                    }
                    _ => {}
                }
            }
        }
    }

    async fn exec(&self, activity_id: &str, script: Value) -> String {
        let commands = parse_exe_script(&script.to_string()).unwrap();
        self.requestor.exec(activity_id, &commands).await.unwrap()
    }

    async fn terminate(&self, agreement_id: &str) {
        self.requestor
            .terminate_agreement(agreement_id, Some(&Reason::new("work done")))
            .await
            .unwrap();
    }

    /// The invoice of `agreement_id` as the requestor received it.
    async fn invoice(&self, agreement_id: &str) -> Invoice {
        let requestor = &self.requestor;
        let found = eventually(Duration::from_secs(30), "the invoice on R", || async {
            requestor
                .invoices()
                .await
                .ok()?
                .into_iter()
                .find(|invoice| invoice.agreement_id == agreement_id)
        })
        .await;
        match found {
            Ok(invoice) => invoice,
            Err(error) => panic!("{error}; agent log:\n{}", self.agent.log()),
        }
    }

    /// Start fee + coeffs × the counters the requestor reads for `activity_id`.
    async fn expected_cost(&self, activity_id: &str) -> (f64, Vec<f64>) {
        let usage = self.requestor.activity_usage(activity_id).await.unwrap();
        let counters = usage.current_usage.unwrap();
        assert_eq!(counters.len(), 2, "cpu_sec and duration_sec: {counters:?}");
        (
            START_FEE + PER_CPU_SEC * counters[0] + PER_SEC * counters[1],
            counters,
        )
    }
}

fn amount(invoice: &Invoice) -> f64 {
    invoice.amount.to_string().parse().unwrap()
}

async fn wait_no_process(arg: &str) {
    eventually(
        Duration::from_secs(10),
        "no exe-unit process left",
        || async { processes_with_arg(arg).is_empty().then_some(()) },
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn provider_sells_a_wasm_run_and_invoices_coeffs_times_counters() {
    let setup = setup("e2e-provider-main", |options| options).await;
    let demand = setup
        .demand(
            Duration::from_secs(600),
            json!({"golem.com.scheme.payu.debit-note.interval-sec?": 2}),
        )
        .await;
    let (agreement_id, initial) = setup.negotiate(&demand).await.unwrap();

    // The offer as R saw it: what real requestors constrain on.
    let offer = &initial.properties;
    assert_eq!(offer.get("golem.runtime.name"), Some(&json!("wasmtime")));
    assert_eq!(offer.get("golem.com.pricing.model"), Some(&json!("linear")));
    assert_eq!(
        offer.get("golem.com.pricing.model.linear.coeffs"),
        Some(&json!([PER_CPU_SEC, PER_SEC, START_FEE]))
    );
    assert_eq!(
        offer.get("golem.com.usage.vector"),
        Some(&json!(["golem.usage.cpu_sec", "golem.usage.duration_sec"]))
    );
    assert_eq!(
        offer.get("golem.com.payment.platform.dummy-local-tglm.address"),
        Some(&json!(setup.provider_id))
    );
    assert!(offer
        .get("golem.com.payment.platform.erc20-holesky-tglm.address")
        .is_some());
    assert_eq!(offer.get("golem.com.scheme"), Some(&json!("payu")));
    assert_eq!(
        offer.get("golem.srv.caps.multi-activity"),
        Some(&json!(true))
    );
    assert_eq!(offer.get("golem.node.id.name"), Some(&json!("p-agent")));
    for key in [
        "golem.inf.mem.gib",
        "golem.inf.storage.gib",
        "golem.inf.cpu.threads",
        "golem.inf.cpu.cores",
        "golem.com.payment.protocol.version",
        "golem.com.scheme.payu.payment-timeout-sec?",
    ] {
        assert!(offer.get(key).is_some(), "offer lacks {key}: {offer:?}");
    }
    let agreement = setup.requestor.agreement(&agreement_id).await.unwrap();
    assert_eq!(
        agreement
            .offer
            .properties
            .get("golem.com.scheme.payu.debit-note.interval-sec?"),
        Some(&json!(2)),
        "the agreed debit-note interval is the demand's"
    );
    let status = setup.agent.status().unwrap();
    assert_eq!(status["offers"].as_array().unwrap().len(), 1, "{status}");
    assert_eq!(status["agreements"][0]["agreementId"], json!(agreement_id));
    assert_eq!(status["agreements"][0]["state"], "live");

    // An activity runs the WASM package.
    let activity_id = setup
        .requestor
        .create_activity(&agreement_id, 30.0)
        .await
        .unwrap();
    assert_eq!(processes_with_arg(&activity_id).len(), 1, "one exe unit");
    let batch = setup
        .exec(
            &activity_id,
            json!([{"deploy": {}}, {"start": {"args": []}}]),
        )
        .await;
    let results = setup
        .requestor
        .wait_batch(&activity_id, &batch, Duration::from_secs(60))
        .await
        .unwrap();
    assert!(
        results
            .iter()
            .all(|result| result.result == CommandResult::Ok),
        "{results:?}"
    );
    let run = json!([{"run": {"entry_point": "hello", "args": ["sold", "by", "golem-provider"],
                      "capture": {"stdout": {"atEnd": {"format": "str"}}}}}]);
    let batch = setup.exec(&activity_id, run).await;
    let results = setup
        .requestor
        .wait_batch(&activity_id, &batch, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(results[0].result, CommandResult::Ok, "{results:?}");
    let stdout = serde_json::to_string(&results[0].stdout).unwrap();
    assert!(stdout.contains("golem-provider"), "{stdout}");

    // Debit notes arrive at the agreed interval while the activity lives.
    let requestor = &setup.requestor;
    let note = eventually(Duration::from_secs(15), "a debit note on R", || async {
        requestor
            .debit_notes()
            .await
            .ok()?
            .into_iter()
            .find(|note| note.activity_id == activity_id)
    })
    .await
    .unwrap();
    let due: f64 = note.total_amount_due.to_string().parse().unwrap();
    assert!(
        due >= START_FEE,
        "the start fee is billed at once: {note:?}"
    );

    // Destroy: the exe unit goes away.
    setup
        .requestor
        .destroy_activity(&activity_id)
        .await
        .unwrap();
    wait_no_process(&activity_id).await;

    // Terminate: the invoice is the agreed price of the counters.
    setup.terminate(&agreement_id).await;
    let invoice = setup.invoice(&agreement_id).await;
    let (expected, counters) = setup.expected_cost(&activity_id).await;
    assert!(
        (amount(&invoice) - expected).abs() < 1e-9,
        "invoice {} != 0.5 + 0.01 × {} + 0.001 × {} = {expected}",
        invoice.amount,
        counters[0],
        counters[1]
    );
    assert!(counters[1] > 0.0, "duration counted: {counters:?}");
    setup
        .agent
        .wait_for_log("invoice sent", Duration::from_secs(5))
        .unwrap();
    let status = setup.agent.status().unwrap();
    assert_eq!(status["agreements"][0]["state"], "ended", "{status}");
    assert_eq!(status["agreements"][0]["invoiceSent"], true, "{status}");
    assert_eq!(
        status["earnings"]["invoiced"].as_str().unwrap(),
        invoice.amount.to_string()
    );
}

#[tokio::test]
async fn policy_rejections_carry_readable_reasons() {
    // One slot, whatever the machine has: the second agreement must be refused.
    let setup = setup("e2e-provider-policy", |options| options.max_agreements(1)).await;
    let short = setup.demand(Duration::from_secs(10), json!({})).await;
    let reason = setup.negotiate(&short).await.unwrap_err();
    assert!(reason.contains("expiration too short"), "{reason}");

    // Pays only on a platform this provider does not accept.
    let mut foreign = setup.demand(Duration::from_secs(600), json!({})).await;
    let properties = foreign.properties.as_object_mut().unwrap();
    properties.retain(|key, _| !key.starts_with("golem.com.payment.platform."));
    properties.insert(
        "golem.com.payment.platform.erc20-polygon-glm.address".into(),
        json!("0x0000000000000000000000000000000000000001"),
    );
    properties.insert(
        "golem.com.payment.chosen-platform".into(),
        json!("erc20-polygon-glm"),
    );
    foreign.constraints = format!(
        "(&(golem.node.debug.subnet={})(golem.runtime.name=wasmtime))",
        setup.subnet
    );
    let reason = setup.negotiate(&foreign).await.unwrap_err();
    assert!(reason.contains("no common payment platform"), "{reason}");
    assert!(reason.contains("erc20-polygon-glm"), "{reason}");

    // Out-of-bounds debit-note interval.
    let wild = setup
        .demand(
            Duration::from_secs(600),
            json!({"golem.com.scheme.payu.debit-note.interval-sec?": 999_999}),
        )
        .await;
    let reason = setup.negotiate(&wild).await.unwrap_err();
    assert!(reason.contains("debit-note.interval-sec"), "{reason}");

    // A fitting demand still gets an agreement, and a second one is refused
    // while the only slot is taken.
    let fine = setup.demand(Duration::from_secs(600), json!({})).await;
    let (agreement_id, _) = setup.negotiate(&fine).await.unwrap();
    let reason = setup.negotiate(&fine).await.unwrap_err();
    assert!(reason.contains("no free resources"), "{reason}");
    setup.terminate(&agreement_id).await;
    let invoice = setup.invoice(&agreement_id).await;
    assert_eq!(amount(&invoice), 0.0, "no activity, nothing to pay");
    let log = setup.agent.log();
    assert!(log.contains("proposal rejected"), "{log}");

    // A clean stop withdraws the offer.
    let mut setup = setup;
    assert_eq!(setup.agent.stop().unwrap(), 0);
    let provider = setup._sandbox.daemons()[0].client();
    assert!(provider.offers().await.unwrap().is_empty());
}

#[tokio::test]
async fn cli_explains_itself_and_refuses_bad_input() {
    let agent = golem_tests::binary("golem-provider");
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str], env: &[(&str, &str)]| {
        std::process::Command::new(&agent)
            .arg("--data-dir")
            .arg(dir.path())
            .args(args)
            .env_remove("YAGNA_APPKEY")
            .envs(env.iter().copied())
            .output()
            .unwrap()
    };
    let text = |output: &std::process::Output| {
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    };
    for command in [
        &["--help"][..],
        &["run", "--help"],
        &["preset", "--help"],
        &["preset", "create", "--help"],
        &["status", "--help"],
    ] {
        let output = run(command, &[]);
        assert!(output.status.success(), "{command:?}: {}", text(&output));
        assert!(
            text(&output).len() > 200,
            "{command:?} explains: {}",
            text(&output)
        );
    }
    let output = run(&["run"], &[]);
    assert!(!output.status.success());
    assert!(text(&output).contains("YAGNA_APPKEY"), "{}", text(&output));

    let output = run(
        &[
            "preset",
            "create",
            "--name",
            "p1",
            "--exe-unit",
            "wasmtime",
            "--cpu-sec",
            "cheap",
        ],
        &[],
    );
    assert!(!output.status.success());
    assert!(text(&output).contains("--cpu-sec"), "{}", text(&output));
    let output = run(
        &[
            "preset",
            "create",
            "--name",
            "p1",
            "--exe-unit",
            "wasmtime",
            "--cpu-sec",
            "0.2",
        ],
        &[],
    );
    assert!(output.status.success(), "{}", text(&output));
    let output = run(
        &["preset", "update", "--name", "p1", "--start-fee", "1.5"],
        &[],
    );
    assert!(output.status.success(), "{}", text(&output));
    let listed: Value =
        serde_json::from_slice(&run(&["preset", "list", "--json"], &[]).stdout).unwrap();
    assert_eq!(listed[0]["start-fee"], "1.5", "{listed}");
    assert_eq!(listed[0]["cpu-sec"], "0.2", "{listed}");
    let output = run(&["preset", "remove", "--name", "nope"], &[]);
    assert!(!output.status.success());
    assert!(text(&output).contains("preset list"), "{}", text(&output));

    std::fs::write(dir.path().join("provider.toml"), "treads = 2\n").unwrap();
    let output = run(&["run"], &[("YAGNA_APPKEY", "k")]);
    assert!(!output.status.success());
    assert!(text(&output).contains("treads"), "{}", text(&output));
    std::fs::remove_file(dir.path().join("provider.toml")).unwrap();

    // No daemon there: a clear error, no hang.
    let output = run(
        &[
            "run",
            "--api-url",
            "http://127.0.0.1:9",
            "--exe-units",
            "wasmtime",
        ],
        &[("YAGNA_APPKEY", "k")],
    );
    assert!(!output.status.success());
    assert!(
        text(&output).contains("cannot reach the daemon"),
        "{}",
        text(&output)
    );
    let status: Value = serde_json::from_slice(
        &run(
            &["status", "--json", "--api-url", "http://127.0.0.1:9"],
            &[("YAGNA_APPKEY", "k")],
        )
        .stdout,
    )
    .unwrap();
    assert_eq!(status["daemon"]["reachable"], false, "{status}");
    assert_eq!(status["agreements"], json!([]));
}

#[tokio::test]
async fn killed_exe_unit_terminates_the_activity_and_is_still_invoiced() {
    let setup = setup("e2e-provider-kill", |options| options).await;
    let demand = setup.demand(Duration::from_secs(600), json!({})).await;
    let (agreement_id, _) = setup.negotiate(&demand).await.unwrap();
    let activity_id = setup
        .requestor
        .create_activity(&agreement_id, 30.0)
        .await
        .unwrap();
    let batch = setup
        .exec(
            &activity_id,
            json!([{"deploy": {}}, {"start": {"args": []}}]),
        )
        .await;
    setup
        .requestor
        .wait_batch(&activity_id, &batch, Duration::from_secs(60))
        .await
        .unwrap();
    let pids = processes_with_arg(&activity_id);
    assert_eq!(pids.len(), 1, "{pids:?}");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pids[0] as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let requestor = &setup.requestor;
    let state = eventually(
        Duration::from_secs(10),
        "the activity Terminated",
        || async {
            let state = requestor.activity_state(&activity_id).await.ok()?;
            (!state.state.alive()).then_some(state)
        },
    )
    .await
    .unwrap();
    assert!(
        state
            .reason
            .as_deref()
            .is_some_and(|reason| !reason.is_empty()),
        "{state:?}"
    );
    setup
        .agent
        .wait_for_log("exited unexpectedly", Duration::from_secs(10))
        .unwrap();
    setup.terminate(&agreement_id).await;
    let invoice = setup.invoice(&agreement_id).await;
    let (expected, _) = setup.expected_cost(&activity_id).await;
    assert!(
        (amount(&invoice) - expected).abs() < 1e-9,
        "invoice {} != {expected}",
        invoice.amount
    );
    assert!(amount(&invoice) >= START_FEE);
}

#[tokio::test]
async fn unaccepted_debit_notes_make_the_provider_terminate() {
    let setup = setup("e2e-provider-unpaid", |options| options).await;
    let demand = setup
        .demand(
            Duration::from_secs(600),
            json!({"golem.com.scheme.payu.debit-note.interval-sec?": 1,
                   "golem.com.payment.debit-notes.accept-timeout?": 2}),
        )
        .await;
    let (agreement_id, _) = setup.negotiate(&demand).await.unwrap();
    let activity_id = setup
        .requestor
        .create_activity(&agreement_id, 30.0)
        .await
        .unwrap();
    // R never accepts the debit notes: P terminates, with a reason, and invoices.
    let requestor = &setup.requestor;
    let reason = eventually(Duration::from_secs(20), "P terminates", || async {
        let events = requestor
            .agreement_events(None, 1.0, 100, None)
            .await
            .ok()?;
        events.into_iter().find_map(|event| match event {
            AgreementOperationEvent::AgreementTerminatedEvent {
                agreement_id: id,
                terminator: Terminator::Provider,
                reason,
                ..
            } if id == agreement_id => Some(reason),
            _ => None,
        })
    })
    .await
    .unwrap();
    let message = reason.map(|reason| reason.message).unwrap_or_default();
    assert!(message.contains("not accepted within 2 s"), "{message}");
    let invoice = setup.invoice(&agreement_id).await;
    assert!(amount(&invoice) >= START_FEE, "{invoice:?}");
    wait_no_process(&activity_id).await;
}

#[tokio::test]
async fn restarted_agent_leaves_no_orphans_and_still_invoices() {
    let mut setup = setup("e2e-provider-restart", |options| options).await;
    let demand = setup.demand(Duration::from_secs(600), json!({})).await;
    let (agreement_id, _) = setup.negotiate(&demand).await.unwrap();
    let activity_id = setup
        .requestor
        .create_activity(&agreement_id, 30.0)
        .await
        .unwrap();
    let batch = setup
        .exec(
            &activity_id,
            json!([{"deploy": {}}, {"start": {"args": []}}]),
        )
        .await;
    setup
        .requestor
        .wait_batch(&activity_id, &batch, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(processes_with_arg(&activity_id).len(), 1);

    // SIGKILL the agent: its exe unit dies too (PR_SET_PDEATHSIG), so a real
    // exe unit never outlives the agent here and the restarted agent's orphan
    // killing would have nothing to do. An orphan is what is left when that
    // signal does not come (an exe unit of another build, a parent-death
    // signal lost between fork and prctl): a live process, recorded in the
    // state as the activity's exe unit, whose command line names the
    // activity. The test makes exactly that — its own child, so the agent's
    // death does not touch it — and writes its pid into the activity's record
    // while the agent is down, as a previous run would have.
    setup.agent.kill();
    wait_no_process(&activity_id).await;
    // `read` is a shell builtin: the orphan waits on the pipe without forking
    // (a forked child would briefly show the same command line), and ends by
    // itself when the test drops the pipe.
    let mut orphan = std::process::Command::new("sh")
        .args(["-c", "read never", "exe-unit-wasm", "run"])
        .args(["--activity-id", &activity_id])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let orphan_pid = orphan.id();
    eventually(
        Duration::from_secs(5),
        "the orphan is the activity's only process",
        || async { (processes_with_arg(&activity_id) == vec![orphan_pid]).then_some(()) },
    )
    .await
    .unwrap_or_else(|error| {
        panic!(
            "{error}: {:?}, the orphan's command line {:?}",
            processes_with_arg(&activity_id),
            std::fs::read(format!("/proc/{orphan_pid}/cmdline"))
                .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
        )
    });
    let state_file = setup.agent.data_dir.join("state.json");
    let mut state: Value = serde_json::from_slice(&std::fs::read(&state_file).unwrap()).unwrap();
    let record = &mut state["agreements"][&agreement_id]["activities"][&activity_id];
    assert_eq!(
        record["alive"], true,
        "the killed agent left it alive: {record}"
    );
    record["pid"] = json!(orphan.id());
    std::fs::write(&state_file, serde_json::to_vec(&state).unwrap()).unwrap();

    setup.agent.restart().unwrap();
    let line = setup
        .agent
        .wait_for_log(
            "killing an orphaned exe unit of a previous run",
            Duration::from_secs(10),
        )
        .unwrap();
    let line: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(line["pid"], json!(orphan.id()), "{line}");
    assert_eq!(line["activity_id"], json!(activity_id), "{line}");
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = orphan.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = orphan.kill();
            panic!("the restarted agent left the orphan alive");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        status.signal(),
        Some(nix::sys::signal::Signal::SIGTERM as i32),
        "the agent's SIGTERM ended it: {status}"
    );
    wait_no_process(&activity_id).await;
    let status = setup.agent.status().unwrap();
    assert_eq!(status["agreements"][0]["agreementId"], json!(agreement_id));
    assert_eq!(status["agreements"][0]["state"], "live", "{status}");

    // The agreement ends while the agent is down: the next run invoices it,
    // once.
    setup.agent.kill();
    setup.terminate(&agreement_id).await;
    setup.agent.restart().unwrap();
    setup
        .agent
        .wait_for_log("\"invoice sent\"", Duration::from_secs(30))
        .unwrap();
    let invoice = setup.invoice(&agreement_id).await;
    let (expected, _) = setup.expected_cost(&activity_id).await;
    assert!(
        (amount(&invoice) - expected).abs() < 1e-9,
        "invoice {} != {expected}",
        invoice.amount
    );
    assert!(processes_with_arg(&activity_id).is_empty());
    // Nothing more happens over 3 s, six ticks of the agent's billing loop.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let log = setup.agent.log();
    assert_eq!(
        log.matches("\"invoice sent\"").count(),
        1,
        "one invoice, once: {log}"
    );
    let invoices = setup.requestor.invoices().await.unwrap();
    assert_eq!(
        invoices
            .iter()
            .filter(|invoice| invoice.agreement_id == agreement_id)
            .count(),
        1,
        "{invoices:?}"
    );
}

/// The invoices of `agreement_id` that one daemon holds.
async fn invoices_of(daemon: &GolemClient, agreement_id: &str) -> Vec<Invoice> {
    daemon
        .invoices()
        .await
        .unwrap()
        .into_iter()
        .filter(|invoice| invoice.agreement_id == agreement_id)
        .collect()
}

/// The agent's record of `agreement_id` as its `state.json` holds it on disk
/// (`Null` when it has none).
fn recorded(agent: &ProviderAgent, agreement_id: &str) -> Value {
    let state: Value =
        serde_json::from_slice(&std::fs::read(agent.data_dir.join("state.json")).unwrap()).unwrap();
    state["agreements"][agreement_id].clone()
}

/// The records of `agreement_id` the agent retired to its archive.
fn archived(agent: &ProviderAgent, agreement_id: &str) -> Vec<Value> {
    std::fs::read_to_string(agent.data_dir.join("agreements-archive.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|line| serde_json::from_str::<Value>(line).unwrap())
        .filter(|record| record["agreementId"] == agreement_id)
        .collect()
}

/// The crash window of invoicing: the daemon has issued the invoice, and the
/// agent dies before its state.json records it. A trap in front of P's REST
/// API passes the agent's `POST /invoices` to the daemon and swallows the
/// answer; the agent is SIGKILLed while it waits for it. The next run must
/// find that invoice and send it, neither issuing another nor giving up: R
/// receives exactly the invoice P issued, accepts it, and both daemons end with
/// that one invoice, settled.
#[tokio::test]
async fn agent_killed_after_its_daemon_issued_the_invoice_sends_that_invoice() {
    let trap = ReplyTrap::start("POST /payment-api/v1/invoices HTTP/1.1").unwrap();
    let mut setup = setup_beside("e2e-provider-crash", |options, daemon| {
        trap.forward_to(&daemon.api_url);
        options.api_url(&trap.url)
    })
    .await;
    let provider = setup.provider.clone();
    let demand = setup.demand(Duration::from_secs(600), json!({})).await;
    let (agreement_id, _) = setup.negotiate(&demand).await.unwrap();
    let activity_id = setup
        .requestor
        .create_activity(&agreement_id, 30.0)
        .await
        .unwrap();
    let batch = setup
        .exec(
            &activity_id,
            json!([{"deploy": {}}, {"start": {"args": []}}]),
        )
        .await;
    setup
        .requestor
        .wait_batch(&activity_id, &batch, Duration::from_secs(60))
        .await
        .unwrap();
    setup
        .requestor
        .destroy_activity(&activity_id)
        .await
        .unwrap();
    wait_no_process(&activity_id).await;

    // The agreement ends: the agent has P issue the invoice and never hears back.
    setup.terminate(&agreement_id).await;
    if let Err(error) = trap.tripped(Duration::from_secs(30)).await {
        panic!("{error}; agent log:\n{}", setup.agent.log());
    }
    let issued = eventually(
        Duration::from_secs(10),
        "the invoice issued on P",
        || async { invoices_of(&provider, &agreement_id).await.pop() },
    )
    .await
    .unwrap();
    assert_eq!(issued.status, DocumentStatus::Issued, "{issued:?}");
    let record = recorded(&setup.agent, &agreement_id);
    assert!(
        record["ended"].is_string() && record["invoice"].is_null(),
        "the window: P has invoice {} and the agent's state records none: {record}",
        issued.invoice_id
    );

    // SIGKILL there, and a run that reaches P directly.
    setup.agent.kill();
    assert!(!setup.agent.log().contains("\"invoice sent\""));
    setup.agent.api_url = provider.base_url().to_string();
    setup.agent.restart().unwrap();
    let line = setup
        .agent
        .wait_for_log("\"invoice sent\"", Duration::from_secs(30))
        .unwrap();
    let line: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(line["invoice_id"], json!(issued.invoice_id), "{line}");
    let received = setup.invoice(&agreement_id).await;
    assert_eq!(
        (received.invoice_id.as_str(), received.amount),
        (issued.invoice_id.as_str(), issued.amount)
    );
    let (expected, _) = setup.expected_cost(&activity_id).await;
    assert!(
        (amount(&received) - expected).abs() < 1e-9,
        "invoice {} != {expected}",
        received.amount
    );

    // R accepts it; P learns it is paid.
    let allocations = setup.requestor.allocations().await.unwrap();
    assert_eq!(allocations.len(), 1, "{allocations:?}");
    setup
        .requestor
        .accept_invoice(
            &received.invoice_id,
            &received.amount.to_string(),
            &allocations[0].allocation_id,
        )
        .await
        .unwrap();
    eventually(
        Duration::from_secs(20),
        "P sees the invoice settled",
        || async {
            let invoice = provider.invoice(&issued.invoice_id).await.ok()?;
            (invoice.status == DocumentStatus::Settled).then_some(())
        },
    )
    .await
    .unwrap();

    // One invoice on both daemons, sent once; nothing more over 3 s, six
    // ticks of the agent's billing loop.
    tokio::time::sleep(Duration::from_secs(3)).await;
    for (name, daemon) in [("P", &provider), ("R", &setup.requestor)] {
        let ids: Vec<String> = invoices_of(daemon, &agreement_id)
            .await
            .into_iter()
            .map(|invoice| invoice.invoice_id)
            .collect();
        assert_eq!(ids, vec![issued.invoice_id.clone()], "invoices on {name}");
    }
    let log = setup.agent.log();
    assert_eq!(log.matches("\"invoice sent\"").count(), 1, "{log}");
    let archived = archived(&setup.agent, &agreement_id);
    assert_eq!(archived.len(), 1, "{archived:?}");
    assert_eq!(
        (
            &archived[0]["invoice"]["invoiceId"],
            &archived[0]["invoice"]["sent"]
        ),
        (&json!(issued.invoice_id), &json!(true)),
        "{archived:?}"
    );
}

/// The one event of `kind` (debit notes or invoices) P has, with its rejection reason.
async fn only_event(provider: &GolemClient, invoices: bool) -> (PaymentEvent, String) {
    let events = provider
        .payment_events(invoices, None, 1.0, 100)
        .await
        .unwrap();
    assert_eq!(events.len(), 1, "{events:?}");
    let reason = events[0]
        .rejection
        .as_ref()
        .and_then(|rejection| rejection.message.clone())
        .unwrap_or_default();
    (events[0].clone(), reason)
}

/// The requestor rejects what the provider bills (REST `reject`). The debit
/// note's rejection reaches P's daemon (REJECTED there, an event with R's
/// reason) and the agent acts as its code says: a rejected debit note under an
/// accept deadline ends the agreement, terminated by the provider with a reason
/// naming it, and invoiced. The invoice is rejected too and reaches P the same
/// way; the agent bills nothing more (no debit note, no other invoice), and
/// R's allocation is never charged.
#[tokio::test]
async fn rejected_debit_note_and_invoice_reach_the_provider_and_charge_nothing() {
    let setup = setup("e2e-provider-reject", |options| options).await;
    let demand = setup
        .demand(
            Duration::from_secs(600),
            json!({"golem.com.scheme.payu.debit-note.interval-sec?": 1,
                   "golem.com.payment.debit-notes.accept-timeout?": 120}),
        )
        .await;
    let (agreement_id, _) = setup.negotiate(&demand).await.unwrap();
    let requestor = &setup.requestor;
    let provider = &setup.provider;
    let allocations = requestor.allocations().await.unwrap();
    assert_eq!(allocations.len(), 1, "{allocations:?}");
    let allocation = allocations[0].clone();
    let activity_id = requestor
        .create_activity(&agreement_id, 30.0)
        .await
        .unwrap();
    let batch = setup
        .exec(
            &activity_id,
            json!([{"deploy": {}}, {"start": {"args": []}}]),
        )
        .await;
    requestor
        .wait_batch(&activity_id, &batch, Duration::from_secs(60))
        .await
        .unwrap();

    // R rejects a debit note.
    let note = eventually(Duration::from_secs(15), "a debit note on R", || async {
        requestor
            .debit_notes()
            .await
            .ok()?
            .into_iter()
            .find(|note| note.activity_id == activity_id)
    })
    .await
    .unwrap();
    assert_eq!(note.status, DocumentStatus::Received, "{note:?}");
    requestor
        .reject_debit_note(&note.debit_note_id, "debit note refused by the test")
        .await
        .unwrap();
    eventually(
        Duration::from_secs(20),
        "the debit note REJECTED on P",
        || async {
            let current = provider.debit_note(&note.debit_note_id).await.ok()?;
            (current.status == DocumentStatus::Rejected).then_some(())
        },
    )
    .await
    .unwrap();
    let (event, reason) = only_event(provider, false).await;
    assert_eq!(
        (
            event.event_type,
            event.debit_note_id.as_deref(),
            reason.as_str()
        ),
        (
            PaymentEventType::DebitNoteRejectedEvent,
            Some(note.debit_note_id.as_str()),
            "debit note refused by the test"
        )
    );

    // The agent ends the agreement for it, stops the exe unit and invoices.
    let terminated = eventually(Duration::from_secs(20), "P terminates", || async {
        let events = requestor
            .agreement_events(None, 1.0, 100, None)
            .await
            .ok()?;
        events.into_iter().find_map(|event| match event {
            AgreementOperationEvent::AgreementTerminatedEvent {
                agreement_id: id,
                terminator: Terminator::Provider,
                reason,
                ..
            } if id == agreement_id => Some(reason),
            _ => None,
        })
    })
    .await
    .unwrap();
    assert_eq!(
        terminated.map(|reason| reason.message),
        Some(format!(
            "debit note {} was rejected by the requestor",
            note.debit_note_id
        ))
    );
    wait_no_process(&activity_id).await;
    let invoice = setup.invoice(&agreement_id).await;
    assert_eq!(invoice.status, DocumentStatus::Received, "{invoice:?}");
    assert!(amount(&invoice) >= START_FEE, "{invoice:?}");

    // R rejects the invoice.
    requestor
        .reject_invoice(&invoice.invoice_id, "invoice refused by the test")
        .await
        .unwrap();
    eventually(
        Duration::from_secs(20),
        "the invoice REJECTED on P",
        || async {
            let current = provider.invoice(&invoice.invoice_id).await.ok()?;
            (current.status == DocumentStatus::Rejected).then_some(())
        },
    )
    .await
    .unwrap();
    let (event, reason) = only_event(provider, true).await;
    assert_eq!(
        (
            event.event_type,
            event.invoice_id.as_deref(),
            reason.as_str()
        ),
        (
            PaymentEventType::InvoiceRejectedEvent,
            Some(invoice.invoice_id.as_str()),
            "invoice refused by the test"
        )
    );

    // The agent bills nothing more over 3 s, six ticks of its billing loop.
    let notes_of = || async {
        provider
            .debit_notes()
            .await
            .unwrap()
            .into_iter()
            .filter(|note| note.agreement_id == agreement_id)
            .count()
    };
    let notes = notes_of().await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(notes_of().await, notes, "no debit note after the end");
    let ids: Vec<String> = invoices_of(provider, &agreement_id)
        .await
        .into_iter()
        .map(|invoice| invoice.invoice_id)
        .collect();
    assert_eq!(ids, vec![invoice.invoice_id.clone()]);
    let log = setup.agent.log();
    assert_eq!(log.matches("\"invoice sent\"").count(), 1, "{log}");
    let status = setup.agent.status().unwrap();
    assert_eq!(status["agreements"][0]["state"], "ended", "{status}");
    assert_eq!(status["agreements"][0]["invoiceSent"], true, "{status}");

    // R paid nothing: the allocation is as it was made.
    let after = requestor
        .allocation(&allocation.allocation_id)
        .await
        .unwrap();
    assert_eq!(
        (after.spent_amount, after.remaining_amount),
        (Decimal::ZERO, allocation.total_amount),
        "{after:?}"
    );
    assert_eq!(allocation.remaining_amount, allocation.total_amount);
    assert!(requestor.payments().await.unwrap().is_empty());
    assert_eq!(
        requestor
            .debit_note(&note.debit_note_id)
            .await
            .unwrap()
            .status,
        DocumentStatus::Rejected
    );
    assert_eq!(
        requestor.invoice(&invoice.invoice_id).await.unwrap().status,
        DocumentStatus::Rejected
    );
}

/// Numbers of one field over the agent's log lines whose message is `message`.
fn logged(log: &str, message: &str, field: &str) -> Vec<f64> {
    log.lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|entry| entry["message"] == message)
        .filter_map(|entry| entry[field].as_f64())
        .collect()
}

/// Benchmark (run by `scripts/bench/provider.sh` on release builds): the
/// agent's negotiation and exe-unit start latencies, read from its own log
/// fields, and its idle RSS. Prints a table; asserts nothing about time.
#[tokio::test]
#[ignore = "benchmark: run with scripts/bench/provider.sh"]
async fn bench_provider() {
    let setup = setup("e2e-provider-bench", |options| options.max_agreements(1000)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let pid = setup.agent.pid().unwrap();
    let idle_before = rss_kib(pid);
    let rounds = 30;
    let mut create = Vec::new();
    for _ in 0..rounds {
        let demand = setup.demand(Duration::from_secs(600), json!({})).await;
        let (agreement_id, _) = setup.negotiate(&demand).await.unwrap();
        let started = Instant::now();
        let activity_id = setup
            .requestor
            .create_activity(&agreement_id, 30.0)
            .await
            .unwrap();
        create.push(started.elapsed().as_secs_f64() * 1000.0);
        setup
            .requestor
            .destroy_activity(&activity_id)
            .await
            .unwrap();
        setup.terminate(&agreement_id).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let idle_after = rss_kib(pid);
    let log = setup.agent.log();
    let ms = |values: Vec<f64>| values.into_iter().map(|us| us / 1000.0).collect();
    println!("\n| Measure | p50 | p90 | max | goal |\n|---|---|---|---|---|");
    row(
        "Draft proposal event received → policy decided",
        "ms",
        ms(logged(
            &log,
            "proposal countered with a Draft",
            "decided_us",
        )),
        "",
    );
    row(
        "Draft proposal event received → Draft counter sent (counter call returned)",
        "ms",
        ms(logged(
            &log,
            "proposal countered with a Draft",
            "counter_us",
        )),
        "≤ 10 ms",
    );
    row(
        "requestor's proposal timestamp → Draft counter sent (incl. net + long-poll wake-up)",
        "ms",
        logged(&log, "proposal countered with a Draft", "since_proposal_ms"),
        "",
    );
    row(
        "activity-create event received → exe unit Initialized",
        "ms",
        logged(&log, "exe unit initialized", "since_received_ms"),
        "≤ 50 ms",
    );
    row(
        "activity-create event date (daemon) → exe unit Initialized",
        "ms",
        logged(&log, "exe unit initialized", "since_event_ms"),
        "",
    );
    row(
        "requestor POST /activity → 201 (other daemon, over the net)",
        "ms",
        create,
        "",
    );
    println!(
        "| agent idle RSS, after start / after {rounds} agreements | {:.1} MiB | {:.1} MiB | | ≤ 20 MiB |",
        idle_before as f64 / 1024.0,
        idle_after as f64 / 1024.0
    );
}

/// Started as the original's agent is (only the daemon's URL and app-key; the
/// daemon on a non-default data dir), the agent asks the daemon for its bus
/// socket and hands that one to its exe units.
#[tokio::test]
async fn agent_finds_its_daemons_bus_socket_without_settings() {
    let setup = setup("e2e-provider-bus", |options| options).await;
    let line = setup
        .agent
        .wait_for_log(
            "exe units will use the daemon's bus socket",
            Duration::from_secs(5),
        )
        .unwrap();
    let found: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(
        found["bus_socket"].as_str(),
        Some(setup.agent.bus_socket.to_str().unwrap()),
        "{line}"
    );
    // And an exe unit really binds there: an activity reaches Ready and runs.
    let demand = setup.demand(Duration::from_secs(600), json!({})).await;
    let (agreement_id, _) = setup.negotiate(&demand).await.unwrap();
    let activity_id = setup
        .requestor
        .create_activity(&agreement_id, 30.0)
        .await
        .unwrap();
    let batch = setup
        .exec(
            &activity_id,
            json!([{"deploy": {}}, {"start": {"args": []}}]),
        )
        .await;
    let results = setup
        .requestor
        .wait_batch(&activity_id, &batch, Duration::from_secs(60))
        .await
        .unwrap();
    assert!(
        results
            .iter()
            .all(|result| result.result == CommandResult::Ok),
        "{results:?}"
    );
}

/// A bus socket that does not answer stops the agent at start with a message
/// that names the setting, instead of every activity dying later.
#[tokio::test]
async fn agent_refuses_to_start_when_the_bus_socket_does_not_answer() {
    let mut sandbox = Sandbox::new();
    sandbox.daemon("p").unwrap();
    let agent_dir = sandbox.path().join("p-agent");
    let missing = sandbox.path().join("nowhere").join("bus.sock");
    let error = ProviderAgent::start(
        &sandbox.daemons()[0],
        &agent_dir,
        ProviderOptions::new("e2e-provider-nobus")
            .exe_units(&["wasmtime"])
            .arg("--bus-socket")
            .arg(missing.to_str().unwrap())
            .allow_error("cannot reach the bus socket"),
    )
    .err()
    .expect("the agent must not start");
    let text = format!("{error:#}");
    assert!(
        text.contains(&format!(
            "cannot reach the bus socket {}",
            missing.display()
        )) && text.contains("set --bus-socket or GOLEM_BUS_SOCKET"),
        "{text}"
    );
}

/// An exe unit that cannot reach the bus says why, and that reason (not a bare
/// exit status) becomes the activity's termination reason.
#[tokio::test]
async fn an_exe_unit_that_cannot_bind_gives_its_reason_to_the_activity() {
    let setup = setup("e2e-provider-badbus", |options| options).await;
    let demand = setup.demand(Duration::from_secs(600), json!({})).await;
    let (agreement_id, _) = setup.negotiate(&demand).await.unwrap();
    // The daemon keeps listening, but new connections to the path now fail.
    let socket = setup.agent.bus_socket.clone();
    let moved = socket.with_extension("moved");
    std::fs::rename(&socket, &moved).unwrap();
    let created = setup.requestor.create_activity(&agreement_id, 30.0).await;
    let requestor = &setup.requestor;
    let reason = match created {
        Ok(activity_id) => eventually(
            Duration::from_secs(20),
            "the activity Terminated",
            || async {
                let state = requestor.activity_state(&activity_id).await.ok()?;
                (!state.state.alive()).then_some(state.reason.unwrap_or_default())
            },
        )
        .await
        .unwrap(),
        Err(error) => error.to_string(),
    };
    std::fs::rename(&moved, &socket).unwrap();
    assert!(
        reason.contains("exe unit: ")
            && reason.contains(&format!(
                "cannot connect to the bus socket {}",
                socket.display()
            ))
            && reason.contains("No such file"),
        "{reason}"
    );
    setup
        .agent
        .wait_for_log("cannot connect to the bus socket", Duration::from_secs(10))
        .unwrap();
}
