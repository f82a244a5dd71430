//! A provider's day-to-day with the real `golem-provider`: a preset change
//! while an activity runs re-subscribes the offer (a new offer id on the
//! daemon, the old one gone) and the activity goes on; `preset
//! activate|deactivate`, `config get|set`, `exe-unit list` and `clean`, each
//! with `--json`, and their refusals of bad input.
#![allow(clippy::unwrap_used)] // test helpers panic on setup failure by design

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, SystemTime};

use golem_client::GolemClient;
use golem_model::activity::{parse_exe_script, CommandResult};
use golem_model::market::{AgreementState, Offer, Reason};
use golem_tests::demands::{paid_demand, serve_hello_wasm};
use golem_tests::http::JsonApi;
use golem_tests::provider::{negotiate_with_agent, Preset, ProviderAgent, ProviderOptions};
use golem_tests::{binary, eventually, Sandbox};
use serde_json::{json, Value};

/// The offers daemon P lists for its node (the agent's subscriptions).
async fn offers_on(daemon: &GolemClient) -> Vec<Offer> {
    daemon.offers().await.unwrap()
}

fn coeffs(offer: &Offer) -> Value {
    offer
        .properties
        .get("golem.com.pricing.model.linear.coeffs")
        .cloned()
        .unwrap_or(Value::Null)
}

/// Wait (≤ 20 s) until P lists exactly the offers whose coeffs are `expected`.
async fn wait_offers(
    daemon: &GolemClient,
    expected: &[Value],
    agent: &ProviderAgent,
) -> Vec<Offer> {
    let found = eventually(
        Duration::from_secs(20),
        "the offers re-subscribed",
        || async {
            let offers = offers_on(daemon).await;
            let mut seen: Vec<Value> = offers.iter().map(coeffs).collect();
            seen.sort_by_key(|value| value.to_string());
            let mut wanted = expected.to_vec();
            wanted.sort_by_key(|value| value.to_string());
            (seen == wanted).then_some(offers)
        },
    )
    .await;
    match found {
        Ok(offers) => offers,
        Err(error) => panic!(
            "{error}: P lists {:?}\nagent log:\n{}",
            offers_on(daemon)
                .await
                .iter()
                .map(coeffs)
                .collect::<Vec<_>>(),
            agent.log()
        ),
    }
}

fn cli_ok(agent: &ProviderAgent, args: &[&str]) -> String {
    let output = agent.cli(args).unwrap();
    assert!(
        output.status.success(),
        "golem-provider {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

#[tokio::test]
async fn preset_change_resubscribes_the_offer_while_an_activity_runs() {
    let subnet = "e2e-provider-ops";
    let mut sandbox = Sandbox::new();
    sandbox.provider_and_requestor().unwrap();
    let (server, package) = serve_hello_wasm(&sandbox.path().join("packages")).await;
    let options = ProviderOptions::new(subnet)
        .exe_units(&["wasmtime"])
        .max_agreements(2)
        .preset(Preset::new("wasm", "wasmtime", "0.5", "0.01", "0.001"));
    let agent_dir = sandbox.path().join("p-agent");
    let agent = ProviderAgent::start(&sandbox.daemons()[0], &agent_dir, options).unwrap();
    let provider = sandbox.daemons()[0].client();
    let requestor = sandbox.daemons()[1].client();
    let first = wait_offers(&provider, &[json!([0.01, 0.001, 0.5])], &agent).await;
    let old_offer_id = first[0].offer_id.clone();

    // An agreement and a live activity made with the first offer.
    let demand = paid_demand(&requestor, subnet, "wasmtime", &package).await;
    let agreement_id = negotiate_with_agent(&requestor, &demand, &agent).await;
    let activity_id = requestor
        .create_activity(&agreement_id, 30.0)
        .await
        .unwrap();
    let exec = |script: Value| {
        let requestor = requestor.clone();
        let activity_id = activity_id.clone();
        async move {
            let commands = parse_exe_script(&script.to_string()).unwrap();
            let batch = requestor.exec(&activity_id, &commands).await.unwrap();
            requestor
                .wait_batch(&activity_id, &batch, Duration::from_secs(60))
                .await
                .unwrap()
        }
    };
    let results = exec(json!([{"deploy": {}}, {"start": {"args": []}}])).await;
    assert!(
        results.iter().all(|r| r.result == CommandResult::Ok),
        "{results:?}"
    );

    // A new price: the offer is replaced, the old subscription gone.
    cli_ok(
        &agent,
        &["preset", "update", "--name", "wasm", "--cpu-sec", "0.02"],
    );
    let second = wait_offers(&provider, &[json!([0.02, 0.001, 0.5])], &agent).await;
    assert_ne!(second[0].offer_id, old_offer_id, "a new subscription");
    assert!(
        offers_on(&provider)
            .await
            .iter()
            .all(|offer| offer.offer_id != old_offer_id),
        "the old offer is unsubscribed"
    );
    agent
        .wait_for_log("offers re-subscribed", Duration::from_secs(5))
        .unwrap();
    // The requestor's market sees the new offer and no longer the old one.
    let requestor_market = JsonApi::new(
        format!(
            "{}/market-api/v1",
            sandbox.daemons()[1].api_url.trim_end_matches('/')
        ),
        &sandbox.daemons()[1].app_key,
    );
    let new_offer_id = second[0].offer_id.clone();
    eventually(Duration::from_secs(20), "R's scan: the new offer, not the old", || async {
        let (status, scan) = requestor_market
            .call(
                reqwest::Method::POST,
                "/scan",
                Some(json!({"type": "offer", "constraints": format!("(golem.node.debug.subnet={subnet})")})),
            )
            .await;
        assert_eq!(status, 201, "{scan}");
        let scan = scan.as_str().unwrap().to_string();
        let (_, offers) = requestor_market
            .call(reqwest::Method::GET, &format!("/scan/{scan}/events?timeout=1"), None)
            .await;
        let _ = requestor_market
            .call(reqwest::Method::DELETE, &format!("/scan/{scan}"), None)
            .await;
        let ids: Vec<&str> = offers
            .as_array()?
            .iter()
            .filter_map(|offer| offer["offerId"].as_str())
            .collect();
        (ids.contains(&new_offer_id.as_str()) && !ids.contains(&old_offer_id.as_str())).then_some(())
    })
    .await
    .unwrap();

    // The activity made under the old offer still runs commands.
    let run = json!([{"run": {"entry_point": "hello", "args": ["still", "here"],
                      "capture": {"stdout": {"atEnd": {"format": "str"}}}}}]);
    let results = exec(run.clone()).await;
    assert_eq!(results[0].result, CommandResult::Ok, "{results:?}");
    assert!(
        serde_json::to_string(&results[0].stdout)
            .unwrap()
            .contains("here"),
        "{results:?}"
    );
    assert_eq!(
        requestor.agreement(&agreement_id).await.unwrap().state,
        AgreementState::Approved
    );

    // A resource change in provider.toml re-subscribes too.
    cli_ok(&agent, &["config", "set", "mem-gib", "0.5"]);
    let third = eventually(Duration::from_secs(20), "mem-gib 0.5 offered", || async {
        offers_on(&provider)
            .await
            .into_iter()
            .find(|offer| offer.properties.get("golem.inf.mem.gib") == Some(&json!(0.5)))
    })
    .await
    .unwrap();
    assert_ne!(third.offer_id, second[0].offer_id);

    // Deactivated: no offer; activated: one again. The activity lives on.
    let deactivated: Value =
        serde_json::from_str(&cli_ok(&agent, &["preset", "deactivate", "wasm", "--json"])).unwrap();
    assert_eq!(deactivated["active"], json!(false), "{deactivated}");
    wait_offers(&provider, &[], &agent).await;
    cli_ok(&agent, &["preset", "activate", "wasm"]);
    wait_offers(&provider, &[json!([0.02, 0.001, 0.5])], &agent).await;

    // SIGHUP (the units' ExecReload) re-reads the sources; nothing changed,
    // so the offer stays and the agent runs on.
    let offer_before = offers_on(&provider).await;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(agent.pid().unwrap() as i32),
        nix::sys::signal::Signal::SIGHUP,
    )
    .unwrap();
    let line = agent
        .wait_for_log("offers unchanged", Duration::from_secs(5))
        .unwrap();
    assert!(line.contains("SIGHUP"), "{line}");
    assert_eq!(
        offers_on(&provider).await[0].offer_id,
        offer_before[0].offer_id
    );

    // clean leaves the live activity's work dir alone.
    let report: Value = serde_json::from_str(&cli_ok(
        &agent,
        &[
            "clean",
            "--older-than-days",
            "0",
            "--max-size-gib",
            "0",
            "--json",
        ],
    ))
    .unwrap();
    assert_eq!(report["liveWorkDirs"], json!(1), "{report}");
    let work_dir = agent
        .data_dir
        .join("work")
        .join(&agreement_id)
        .join(&activity_id);
    assert!(work_dir.exists(), "{report}");

    let results = exec(run).await;
    assert_eq!(results[0].result, CommandResult::Ok, "{results:?}");
    requestor.destroy_activity(&activity_id).await.unwrap();
    requestor
        .terminate_agreement(&agreement_id, Some(&Reason::new("work done")))
        .await
        .unwrap();
    drop(agent);
    drop(server);
}

/// `golem-provider ARGS` on `data_dir` (no daemon needed).
fn provider_cli(data_dir: &Path, args: &[&str]) -> Output {
    Command::new(binary("golem-provider"))
        .arg("--data-dir")
        .arg(data_dir)
        .args(args)
        .env_remove("GOLEM_PROVIDER_EXE_UNITS")
        .output()
        .unwrap()
}

fn json_of(output: Output) -> Value {
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

/// The command fails with a message containing every one of `needles`.
fn refused(output: Output, needles: &[&str]) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "accepted; stderr: {stderr}");
    for needle in needles {
        assert!(stderr.contains(needle), "{needle:?} not in: {stderr}");
    }
}

#[test]
fn provider_commands_answer_json_and_refuse_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();

    // preset activate | deactivate
    refused(
        provider_cli(data, &["preset", "activate", "nope"]),
        &["no preset \"nope\"", "preset list"],
    );
    refused(
        provider_cli(data, &["preset", "deactivate", "nope", "--json"]),
        &["no preset"],
    );
    let created = provider_cli(
        data,
        &[
            "preset",
            "create",
            "--name",
            "w",
            "--exe-unit",
            "wasmtime",
            "--cpu-sec",
            "0.1",
        ],
    );
    assert!(created.status.success());
    let preset = json_of(provider_cli(data, &["preset", "deactivate", "w", "--json"]));
    assert_eq!(preset["active"], json!(false));
    let list = json_of(provider_cli(data, &["preset", "list", "--json"]));
    assert_eq!(list[0]["active"], json!(false), "{list}");
    let preset = json_of(provider_cli(data, &["preset", "activate", "w", "--json"]));
    assert_eq!(preset["active"], json!(true));

    // config get | set
    let saved = json_of(provider_cli(
        data,
        &["config", "set", "subnet", "lab", "--json"],
    ));
    assert_eq!(saved, json!({"key": "subnet", "value": "lab"}));
    let one = json_of(provider_cli(data, &["config", "get", "subnet", "--json"]));
    assert_eq!(one["value"], json!("lab"));
    let text = provider_cli(data, &["config", "get", "subnet"]);
    assert_eq!(String::from_utf8_lossy(&text.stdout).trim(), "lab");
    let all = json_of(provider_cli(data, &["config", "get", "--json"]));
    let keys: Vec<&str> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|row| row["key"].as_str().unwrap())
        .collect();
    assert!(
        keys.contains(&"max-agreements") && keys.contains(&"vm-sandbox"),
        "{keys:?}"
    );
    let before = std::fs::read_to_string(data.join("provider.toml")).unwrap();
    refused(
        provider_cli(data, &["config", "set", "tread", "3"]),
        &["unknown setting \"tread\"", "threads"],
    );
    refused(
        provider_cli(data, &["config", "get", "tread"]),
        &["unknown setting"],
    );
    refused(
        provider_cli(data, &["config", "set", "max-agreements", "many"]),
        &["not saved", "max-agreements"],
    );
    refused(
        provider_cli(data, &["config", "set", "max-agreements", "0"]),
        &["max-agreements"],
    );
    refused(
        provider_cli(data, &["config", "set", "vm-sandbox", "kvm"]),
        &["vm-sandbox", "gvisor"],
    );
    assert_eq!(
        std::fs::read_to_string(data.join("provider.toml")).unwrap(),
        before,
        "refused values change nothing"
    );

    // exe-unit list: the wasm exe unit is built beside golem-provider.
    let units = json_of(provider_cli(data, &["exe-unit", "list", "--json"]));
    let wasm = units
        .as_array()
        .unwrap()
        .iter()
        .find(|unit| unit["runtime"] == "wasmtime")
        .unwrap_or_else(|| panic!("{units}"));
    assert_eq!(wasm["status"], "offered", "{units}");
    assert!(wasm["path"].as_str().unwrap().ends_with("exe-unit-wasm"));
    assert!(provider_cli(data, &["config", "set", "exe-units", "vm"])
        .status
        .success());
    let units = json_of(provider_cli(data, &["exe-unit", "list", "--json"]));
    let wasm = units
        .as_array()
        .unwrap()
        .iter()
        .find(|unit| unit["binaryName"] == "exe-unit-wasm")
        .unwrap();
    assert_eq!(wasm["status"], "not-allowed", "{units}");

    // clean: an old work dir and package go, a fresh one stays; dry run first.
    let old_dir = data.join("work/agr-old/act-old");
    let new_dir = data.join("work/agr-new/act-new");
    for path in [&old_dir, &new_dir] {
        std::fs::create_dir_all(path).unwrap();
        std::fs::write(path.join("out.txt"), b"result").unwrap();
    }
    std::fs::create_dir_all(data.join("cache/packages")).unwrap();
    let package = data.join("cache/packages/sha3-00");
    std::fs::write(&package, vec![0u8; 100]).unwrap();
    let long_ago = SystemTime::now() - Duration::from_secs(30 * 86_400);
    for path in [&old_dir, &old_dir.join("out.txt"), &package] {
        std::fs::File::open(path)
            .unwrap()
            .set_modified(long_ago)
            .unwrap();
    }
    let report = json_of(provider_cli(
        data,
        &["clean", "--older-than-days", "7", "--dry-run", "--json"],
    ));
    assert_eq!(report["dryRun"], json!(true));
    assert_eq!(report["removed"].as_array().unwrap().len(), 2, "{report}");
    assert!(
        old_dir.exists() && package.exists(),
        "a dry run removes nothing"
    );
    let report = json_of(provider_cli(
        data,
        &["clean", "--older-than-days", "7", "--json"],
    ));
    assert_eq!(report["freedBytes"], json!(106), "{report}");
    assert!(
        !old_dir.exists() && !package.exists() && new_dir.exists(),
        "{report}"
    );
    refused(
        provider_cli(data, &["clean", "--max-size-gib", "-1"]),
        &["--max-size-gib"],
    );
    refused(
        provider_cli(data, &["clean", "--older-than-days", "soon"]),
        &["--older-than-days"],
    );
}
