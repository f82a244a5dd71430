//! End-to-end tests of the requestor: the real `golem-requestor` binary against
//! a requestor daemon and provider daemons running the real `golem-provider`
//! (WASM), paid with the dummy driver. A provider killed in the middle of the
//! demo job, an exhausted budget, a demand no offer matches, bad job files, and
//! the benchmark behind `scripts/bench/requestor.sh`.
#![allow(clippy::unwrap_used)] // test helpers panic on setup failure by design

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use golem_tests::provider::{Preset, ProviderOptions};
use golem_tests::requestor::{busybox_image, demo_job, repo_root, Network};
use golem_tests::{binary, output_within};
use rust_decimal::Decimal;
use serde_json::Value;
use sha3::Digest;

fn hello_wat() -> PathBuf {
    repo_root().join("exe-unit-wasm/tests/modules/hello.wat")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The `{"event": "summary"}` line of `script --json`.
fn summary_of(stdout: &str) -> Value {
    stdout
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .find(|event| event["event"] == "summary")
        .unwrap_or_else(|| panic!("no summary line in:\n{stdout}"))
}

fn decimal(value: &Value) -> Decimal {
    match value {
        Value::String(text) => text.parse().unwrap(),
        Value::Null => Decimal::ZERO,
        other => other.to_string().parse().unwrap(),
    }
}

/// What the session's allocation was charged must equal, per agreement, the
/// invoice when it was accepted, else the debit notes accepted.
fn assert_spent_matches_acceptances(payments: &Value) -> Decimal {
    let expected: Decimal = payments["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| {
            if row["invoice_accepted"] == true {
                decimal(&row["invoice_amount"])
            } else {
                decimal(&row["debit_notes_accepted"])
            }
        })
        .sum();
    let spent = decimal(&payments["spent"]);
    assert_eq!(spent, expected, "spent vs acceptances: {payments:#}");
    spent
}

#[tokio::test]
async fn hello_world_runs_offers_list_and_exit_codes_pass_through() {
    let mut network = Network::start(1, "e2e-requestor-hello", None, "").unwrap();
    let hello = hello_wat();
    let hello = hello.to_str().unwrap();

    let offers = output_within(
        network.requestor(&["offers", "--json", "--runtime", "wasm"]),
        Duration::from_secs(20),
    );
    assert!(offers.status.success(), "{}", text(&offers.stderr));
    let offers: Value = serde_json::from_slice(&offers.stdout).unwrap();
    assert_eq!(offers.as_array().unwrap().len(), 1, "{offers}");
    assert_eq!(offers[0]["provider_name"], "provider-1");
    assert_eq!(offers[0]["runtime"], "wasmtime");

    let run = output_within(
        network.requestor(&[
            "run",
            "--runtime",
            "wasm",
            "--package",
            hello,
            "--",
            "hello",
            "big",
            "world",
        ]),
        Duration::from_secs(60),
    );
    assert!(run.status.success(), "{}", text(&run.stderr));
    assert_eq!(text(&run.stdout), "big world\n");
    assert_eq!(text(&run.stderr), "done\n");

    // transform without arguments exits 2: so does golem-requestor.
    let transform = repo_root().join("examples/demo/transform.wat");
    let failing = output_within(
        network.requestor(&[
            "run",
            "--package",
            transform.to_str().unwrap(),
            "--",
            "transform",
        ]),
        Duration::from_secs(60),
    );
    assert_eq!(failing.status.code(), Some(2), "{}", text(&failing.stderr));
    assert!(
        text(&failing.stderr).contains("exited with code 2"),
        "{}",
        text(&failing.stderr)
    );

    // No app-key: a clear usage error, before any network traffic.
    let mut no_key = network.requestor(&["offers"]);
    no_key.env_remove("YAGNA_APPKEY").env("YAGNA_APPKEY", "");
    let no_key = output_within(no_key, Duration::from_secs(10));
    assert_eq!(no_key.status.code(), Some(1));
    assert!(
        text(&no_key.stderr).contains("no app-key"),
        "{}",
        text(&no_key.stderr)
    );
}

#[tokio::test]
async fn demo_job_completes_when_a_provider_is_killed_mid_job() {
    let mut network = Network::start(
        3,
        "e2e-requestor-kill",
        None,
        "debit-note-interval-sec = 1\n",
    )
    .unwrap();
    let dir = network.sandbox.path().join("job");
    let job = demo_job(&dir, 60).unwrap();
    let out = dir.join("results");
    let mut command = network.requestor(&[
        "script",
        job.to_str().unwrap(),
        "--json",
        "--output-dir",
        out.to_str().unwrap(),
    ]);
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let lines_rx = golem_tests::lines_of(stdout);
    let started = Instant::now();
    let mut lines = Vec::new();
    let mut victim_done = 0;
    // Kill provider-2 (agent and daemon, SIGKILL) after it finished 3 tasks.
    while victim_done < 3 {
        let line = lines_rx
            .recv_timeout(Duration::from_secs(60))
            .expect("the job makes progress");
        let event: Value = serde_json::from_str(&line).unwrap();
        if event["event"] == "task_finished" && event["provider_name"] == "provider-2" {
            victim_done += 1;
        }
        lines.push(line);
    }
    network.providers[1].kill();
    network.sandbox.daemons()[2].kill();
    let killed_at = Instant::now();
    // Nothing hangs: the job ends within a bound.
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if killed_at.elapsed() > Duration::from_secs(120) {
            let _ = child.kill();
            panic!("the job hung after a provider was killed");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let status = child.wait().unwrap();
    lines.extend(lines_rx.try_iter());
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    let stdout = lines.join("\n");
    assert!(status.success(), "exit {status}: {stderr}\n{stdout}");
    eprintln!("job took {:?}", started.elapsed());

    // Every task is done and its result is back.
    let summary = summary_of(&stdout);
    let outcomes = summary["report"]["outcomes"].as_array().unwrap();
    assert_eq!(outcomes.len(), 66);
    assert!(
        outcomes.iter().all(|outcome| outcome["ok"] == true),
        "{summary:#}"
    );
    // Exactly the job's tasks, each once, each result its own input upper-cased.
    let mut ids: Vec<&str> = outcomes
        .iter()
        .map(|outcome| outcome["id"].as_str().unwrap())
        .collect();
    ids.sort_unstable();
    let mut expected_ids: Vec<String> = ["alice", "bob", "carol", "dave", "erin", "frank"]
        .into_iter()
        .map(String::from)
        .chain((0..60).map(|index| format!("t{index}")))
        .collect();
    expected_ids.sort_unstable();
    assert_eq!(ids, expected_ids);
    for id in ids {
        let input = std::fs::read_to_string(dir.join(format!("inputs/{id}.txt"))).unwrap();
        assert!(
            input.chars().any(|c| c.is_ascii_lowercase()),
            "{id}: the input must show the transform"
        );
        let result = std::fs::read_to_string(out.join(format!("{id}.txt"))).unwrap();
        assert_eq!(result, input.to_uppercase(), "{id}");
    }
    // The tasks after the kill ran on the two others; the killed one is marked failed.
    let providers = summary["report"]["providers"].as_array().unwrap();
    let victim: Vec<&Value> = providers
        .iter()
        .filter(|p| p["provider_name"] == "provider-2")
        .collect();
    assert!(
        victim.iter().all(|p| p["failure"].is_string()) && !victim.is_empty(),
        "{summary:#}"
    );
    let survivors_did: u64 = providers
        .iter()
        .filter(|p| p["provider_name"] != "provider-2")
        .map(|p| p["tasks_done"].as_u64().unwrap())
        .sum();
    assert!(
        survivors_did
            >= 66
                - victim
                    .iter()
                    .map(|p| p["tasks_done"].as_u64().unwrap())
                    .sum::<u64>()
    );

    // Payments: the survivors' invoices were accepted; the killed provider got
    // no invoice paid, only the debit notes accepted before it died; the
    // allocation was charged exactly what was accepted.
    let payments = &summary["payments"];
    for row in payments["rows"].as_array().unwrap() {
        if row["provider_name"] == "provider-2" {
            assert_eq!(row["invoice_accepted"], false, "{row}");
        } else {
            assert_eq!(row["invoice_accepted"], true, "{row}");
        }
    }
    let spent = assert_spent_matches_acceptances(payments);
    assert!(spent > Decimal::ZERO);
    // The dummy driver pays an invoice when it is accepted (debit notes are
    // not paid): each survivor's agreement was paid exactly its invoice, the
    // killed provider's agreements nothing.
    let mut expected_paid: std::collections::BTreeMap<String, Decimal> = Default::default();
    for row in payments["rows"].as_array().unwrap() {
        let agreement_id = row["agreement_id"].as_str().unwrap().to_string();
        let amount = if row["invoice_accepted"] == true {
            decimal(&row["invoice_amount"])
        } else {
            Decimal::ZERO
        };
        *expected_paid.entry(agreement_id).or_default() += amount;
    }
    let survivors_invoiced: Decimal = expected_paid.values().copied().sum();
    assert!(survivors_invoiced > Decimal::ZERO, "{payments:#}");
    let requestor = network.requestor_client();
    let paid = golem_tests::eventually(
        Duration::from_secs(10),
        "the accepted invoices are paid",
        || async {
            let mut paid: std::collections::BTreeMap<String, Decimal> = expected_paid
                .keys()
                .map(|agreement_id| (agreement_id.clone(), Decimal::ZERO))
                .collect();
            for payment in requestor.payments().await.ok()? {
                for part in payment.agreement_payments {
                    *paid.entry(part.agreement_id).or_default() += part.amount;
                }
            }
            (paid == expected_paid).then_some(paid)
        },
    )
    .await
    .unwrap_or_else(|error| panic!("{error}: expected {expected_paid:?}"));
    let total: Decimal = paid.values().copied().sum();
    assert!(
        total > Decimal::ZERO && total <= spent,
        "paid {total}, accepted {spent}"
    );
}

#[tokio::test]
async fn demo_job_moves_files_with_gftp() {
    let mut network = Network::start(2, "e2e-requestor-gftp", None, "").unwrap();
    let dir = network.sandbox.path().join("job");
    let job = demo_job(&dir, 0).unwrap();
    let out = dir.join("results");
    let bus_socket = network.sandbox.daemons()[0].data_dir.join("bus.sock");
    let mut command = network.requestor(&[
        "script",
        job.to_str().unwrap(),
        "--json",
        "--output-dir",
        out.to_str().unwrap(),
    ]);
    command.env("GOLEM_BUS_SOCKET", &bus_socket);
    let output = output_within(command, Duration::from_secs(60));
    let stdout = text(&output.stdout);
    assert!(
        output.status.success(),
        "{}\n{stdout}",
        text(&output.stderr)
    );
    let summary = summary_of(&stdout);
    assert_eq!(summary["report"]["outcomes"].as_array().unwrap().len(), 6);
    for name in ["alice", "bob", "carol", "dave", "erin", "frank"] {
        let input = std::fs::read_to_string(dir.join(format!("inputs/{name}.txt"))).unwrap();
        let result = std::fs::read_to_string(out.join(format!("{name}.txt"))).unwrap();
        assert_eq!(result, input.to_uppercase(), "{name}");
    }
    let used: Vec<&Value> = summary["report"]["providers"]
        .as_array()
        .unwrap()
        .iter()
        .collect();
    assert_eq!(used.len(), 2, "both providers got work: {summary:#}");
    assert_spent_matches_acceptances(&summary["payments"]);
}

/// The requestor publishes a local package over gftp (the default
/// `package-transport`) and the provider's exe unit fetches it through its
/// daemon: the provider here refuses private addresses, so the same run with
/// `--package-transport http` (the file server on 127.0.0.1) fails with the
/// refusal the scale lab met across machines. A wrong hash in a gftp task
/// package fails the activity with a reason that says so.
// Multi-threaded: the test's own gftp publisher must answer while the test
// thread waits for golem-requestor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wasm_packages_travel_over_gftp_and_a_wrong_hash_fails_the_deploy() {
    let mut network = Network::start_each(
        1,
        "e2e-requestor-gftp-package",
        &["wasmtime"],
        |_, options| ProviderOptions {
            allow_private_transfers: false,
            ..options.max_agreements(4)
        },
    )
    .unwrap();
    let hello = hello_wat();
    let hello = hello.to_str().unwrap();
    let run = |network: &mut Network, extra: &[&str], package: &str| {
        let mut args = extra.to_vec();
        args.extend([
            "run",
            "--runtime",
            "wasm",
            "--package",
            package,
            "--",
            "hello",
            "over",
            "gftp",
        ]);
        output_within(network.requestor(&args), Duration::from_secs(60))
    };

    // First over http: the provider refuses the loopback file server (and
    // caches nothing, so the gftp run below really fetches).
    let over_http = run(&mut network, &["--package-transport", "http"], hello);
    assert!(!over_http.status.success());
    assert!(
        text(&over_http.stderr).contains("allow-private-transfers"),
        "{}",
        text(&over_http.stderr)
    );

    let over_gftp = run(&mut network, &[], hello);
    assert!(over_gftp.status.success(), "{}", text(&over_gftp.stderr));
    assert_eq!(text(&over_gftp.stdout), "over gftp\n");

    // A package published over gftp, named with a hash that is not its own.
    let wasm = wat::parse_file(hello_wat()).unwrap();
    let module = network.sandbox.path().join("hello.wasm");
    std::fs::write(&module, &wasm).unwrap();
    let gftp = golem_gftp::Gftp::new(network.sandbox.daemons()[0].bus().await.unwrap()).unwrap();
    let url = gftp.publish(&module).await.unwrap();
    let wrong = format!("hash:sha3:{}:{url}", "0".repeat(56));
    let mismatch = run(&mut network, &[], &wrong);
    assert!(!mismatch.status.success());
    let stderr = text(&mismatch.stderr);
    assert!(
        stderr.contains("task package hash mismatch") && stderr.contains(&"0".repeat(56)),
        "{stderr}"
    );
    // And with its own hash the same URL runs (a bare module's entry point
    // is named by its URL's last segment: here the gftp name).
    let digest = hex::encode(sha3::Sha3_224::digest(&wasm));
    let right = format!("hash:sha3:{digest}:{url}");
    let args = [
        "run",
        "--runtime",
        "wasm",
        "--package",
        &right,
        "--",
        &url.name,
        "over",
        "gftp",
    ];
    let right = output_within(network.requestor(&args), Duration::from_secs(60));
    assert!(right.status.success(), "{}", text(&right.stderr));
    assert_eq!(text(&right.stdout), "over gftp\n");
}

#[tokio::test]
async fn exhausted_budget_stops_the_job_without_overspending() {
    // 0.25 GLM per second of each agreement: a 1 GLM budget lasts about 2 s
    // over two providers, far less than the job needs.
    let preset = Preset::new("pricey", "wasmtime", "0", "0", "0.25");
    let mut network = Network::start(
        2,
        "e2e-requestor-budget",
        Some(preset),
        "debit-note-interval-sec = 1\n",
    )
    .unwrap();
    let dir = network.sandbox.path().join("job");
    let job = demo_job(&dir, 400).unwrap();
    let output = output_within(
        network.requestor(&[
            "script",
            job.to_str().unwrap(),
            "--json",
            "--budget",
            "1",
            "--parallelism",
            "2",
        ]),
        Duration::from_secs(120),
    );
    let stdout = text(&output.stdout);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}\n{stdout}");
    eprintln!("{stderr}");
    assert!(stderr.contains("budget"), "{stderr}");
    let summary = summary_of(&stdout);
    let done = summary["report"]["outcomes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|outcome| outcome["ok"] == true)
        .count();
    assert!(done > 0 && done < 406, "{done} tasks done");
    let spent = assert_spent_matches_acceptances(&summary["payments"]);
    assert!(spent <= Decimal::ONE, "overspent: {spent}");
    assert!(spent > Decimal::ZERO, "nothing paid");
    let allocations = network.requestor_client().allocations().await.unwrap();
    for allocation in allocations {
        assert!(
            allocation.spent_amount <= allocation.total_amount,
            "{allocation:?}"
        );
    }
}

#[tokio::test]
async fn a_demand_no_offer_matches_names_the_constraint() {
    let mut network = Network::start(1, "e2e-requestor-nomatch", None, "").unwrap();
    let hello = hello_wat();
    let hello = hello.to_str().unwrap();
    for (args, clause) in [
        (
            vec![
                "run",
                "--runtime",
                "vm",
                "--image",
                hello,
                "--timeout",
                "3",
                "--",
                "/bin/true",
            ],
            "(golem.runtime.name=vm)",
        ),
        (
            vec![
                "run",
                "--package",
                hello,
                "--min-mem-gib",
                "100000",
                "--timeout",
                "3",
                "--",
                "hello",
            ],
            "(golem.inf.mem.gib>=100000)",
        ),
    ] {
        let started = Instant::now();
        let output = output_within(network.requestor(&args), Duration::from_secs(30));
        let stderr = text(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{stderr}");
        eprintln!("{stderr}");
        assert!(stderr.contains("no offer matched"), "{stderr}");
        assert!(stderr.contains(clause), "{stderr}");
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "{:?}",
            started.elapsed()
        );
    }
    let daemon = &network.sandbox.daemons()[0];
    let mut other_subnet = std::process::Command::new(binary("golem-requestor"));
    other_subnet
        .args([
            "--api-url",
            &daemon.api_url,
            "--app-key",
            &daemon.app_key,
            "--subnet",
            "nobody-here",
        ])
        .args(["run", "--package", hello, "--timeout", "2", "--", "hello"]);
    let output = output_within(other_subnet, Duration::from_secs(30));
    assert!(
        text(&output.stderr).contains("no provider offers anything in subnet \"nobody-here\""),
        "{}",
        text(&output.stderr)
    );
}

/// `golem-requestor run --runtime vm --image IMAGE -- COMMAND...`, waited for.
fn run_in_vm(
    network: &mut Network,
    image: &str,
    command: &[&str],
    timeout: Duration,
) -> std::process::Output {
    let mut args = vec!["run", "--runtime", "vm", "--image", image, "--"];
    args.extend_from_slice(command);
    output_within(network.requestor(&args), timeout)
}

#[tokio::test]
#[ignore = "tier docker: needs a Docker engine; scripts/test.sh runs it when one answers (GOLEM_TEST_DOCKER=1)"]
async fn docker_vm_run_executes_a_command_in_a_local_image() {
    assert!(
        golem_tests::docker::enabled("docker_vm_run_executes_a_command_in_a_local_image").unwrap()
    );
    let scratch = tempfile::tempdir().unwrap();
    // scripts/ensure-docker.sh installs Docker and busybox-static; without them this tier fails.
    let image = busybox_image(scratch.path(), "golem-e2e-requestor-busybox").unwrap();
    // The provider refuses private addresses: the image travels over gftp
    // (golem-requestor's default package transport), streamed into the engine.
    let mut network = Network::start_each(1, "e2e-requestor-vm", &["vm"], |_, options| {
        ProviderOptions {
            allow_private_transfers: false,
            ..options.max_agreements(4)
        }
    })
    .unwrap();
    let image = image.to_str().unwrap();
    let output = run_in_vm(
        &mut network,
        image,
        &["/bin/sh", "-c", "echo hi from vm; echo oops >&2; exit 3"],
        Duration::from_secs(180),
    );
    assert_eq!(output.status.code(), Some(3), "{}", text(&output.stderr));
    assert_eq!(text(&output.stdout), "hi from vm\n");
    assert!(
        text(&output.stderr).contains("oops"),
        "{}",
        text(&output.stderr)
    );
    let output = run_in_vm(
        &mut network,
        image,
        &["/bin/echo", "cached"],
        Duration::from_secs(120),
    );
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert_eq!(text(&output.stdout), "cached\n");
    // --runtime vm needs --image.
    let output = output_within(
        network.requestor(&["run", "--runtime", "vm", "--", "true"]),
        Duration::from_secs(20),
    );
    assert!(
        text(&output.stderr).contains("--runtime vm needs --image"),
        "{}",
        text(&output.stderr)
    );
}

/// golem-js's `advanced/local-image` flow with our requestor: a local
/// `.gvmi` (gvmkit-build's layout, written by [`golem_tests::docker::write_gvmi`])
/// is published over gftp by `golem-requestor run --image`, fetched by a real
/// provider, imported with its config (ENV, WORKDIR, CMD) and cached under
/// its sha3 like a tarball.
#[tokio::test]
#[ignore = "tier docker: needs a Docker engine and squashfs-tools-ng; scripts/test.sh runs it when one answers (GOLEM_TEST_DOCKER=1)"]
async fn docker_vm_runs_a_gvmi_published_over_gftp() {
    use golem_tests::docker;
    assert!(docker::enabled("docker_vm_runs_a_gvmi_published_over_gftp").unwrap());
    let scratch = tempfile::tempdir().unwrap();
    let tag = "golem-e2e-requestor-gvmi";
    busybox_image(scratch.path(), tag).unwrap();
    let mut config = docker::image_config(tag).unwrap();
    config["Env"] = serde_json::json!(["PATH=/bin", "GREETING=from a gvmi"]);
    config["WorkingDir"] = serde_json::json!("/bin");
    config["Cmd"] = serde_json::json!(["/bin/sh", "-c", "echo default command"]);
    let gvmi = scratch.path().join("local-image.gvmi");
    docker::write_gvmi(tag, &config, &gvmi).unwrap();
    let digest = hex::encode(sha3::Sha3_224::digest(std::fs::read(&gvmi).unwrap()));

    let mut network = Network::start_each(1, "e2e-requestor-gvmi", &["vm"], |_, options| {
        ProviderOptions {
            allow_private_transfers: false,
            ..options.max_agreements(4)
        }
    })
    .unwrap();
    let output = run_in_vm(
        &mut network,
        gvmi.to_str().unwrap(),
        &["/bin/sh", "-c", "echo $GREETING; pwd"],
        Duration::from_secs(180),
    );
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert_eq!(text(&output.stdout), "from a gvmi\n/bin\n");

    // The import is the provider's cache entry, with the gvmi's config.
    let cached = docker::inspect(&format!("golem-vm-cache:{digest}")).unwrap();
    assert_eq!(cached["Config"]["WorkingDir"], "/bin", "{cached}");
    assert_eq!(
        cached["Config"]["Cmd"],
        serde_json::json!(["/bin/sh", "-c", "echo default command"])
    );
    assert!(
        cached["Config"]["Env"]
            .as_array()
            .is_some_and(|env| env.contains(&serde_json::json!("GREETING=from a gvmi"))),
        "{cached}"
    );
    let _ = docker::docker(&["rmi", "-f", &format!("golem-vm-cache:{digest}"), tag]);
}

#[test]
fn bad_job_files_get_errors_with_line_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "[demand]\nruntime = \"wasm\"\npackage = \"missing.wasm\"\n",
            "bad.toml:3:",
            "does not exist",
        ),
        (
            "[demand]\nruntime = \"wasm\"\npackage = \"x\"\n[job]\nparallelism = \"many\"\n",
            "bad.toml:5:",
            "invalid type",
        ),
        (
            "[demand]\nruntime = \"wasm\"\npackage = \"x\"\npackage = \"y\"\n",
            "bad.toml:4:",
            "duplicate key",
        ),
        (
            "[demand]\nruntime = \"risc-v\"\npackage = \"x\"\n",
            "bad.toml:2:",
            "unknown runtime",
        ),
    ];
    for (content, position, words) in cases {
        let job = dir.path().join("bad.toml");
        std::fs::write(&job, content).unwrap();
        let output = std::process::Command::new(binary("golem-requestor"))
            .args(["script", job.to_str().unwrap()])
            .env("YAGNA_APPKEY", "unused")
            .output()
            .unwrap();
        let stderr = text(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{stderr}");
        assert!(
            stderr.contains(position) && stderr.contains(words),
            "{content:?}: {stderr}"
        );
    }
    let missing = std::process::Command::new(binary("golem-requestor"))
        .args(["script", "/nonexistent/job.toml"])
        .output()
        .unwrap();
    assert!(text(&missing.stderr).contains("cannot read /nonexistent/job.toml"));
}

fn write_tiny_job(dir: &Path, tasks: usize) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::copy(hello_wat(), dir.join("hello.wat")).unwrap();
    let mut text = String::from(
        "[demand]\nruntime = \"wasm\"\npackage = \"hello.wat\"\n[job]\nbudget = \"5\"\nparallelism = 4\ncommand = [\"hello\"]\n",
    );
    for index in 0..tasks {
        text.push_str(&format!(
            "[[task]]\nid = \"t{index}\"\nargs = [\"{index}\"]\n"
        ));
    }
    let job = dir.join("tiny.toml");
    std::fs::write(&job, text).unwrap();
    job
}

/// Benchmark (run by `scripts/bench/requestor.sh` on release builds): hello-world
/// time to result with `golem-requestor run` (network up, one provider), and
/// 1,000 tiny WASM tasks over 4 providers with `script`. Prints a table;
/// asserts nothing about time.
#[tokio::test]
#[ignore = "benchmark: run with scripts/bench/requestor.sh"]
async fn bench_requestor() {
    let hello = hello_wat();
    let mut samples = Vec::new();
    let mut whole = Vec::new();
    {
        let mut network = Network::start(1, "bench-requestor-hello", None, "").unwrap();
        for _ in 0..12 {
            let (to_result, to_exit) = time_run(
                &mut network,
                &[
                    "run",
                    "--package",
                    hello.to_str().unwrap(),
                    "--",
                    "hello",
                    "hi",
                ],
            );
            samples.push(to_result);
            whole.push(to_exit);
        }
    }
    samples.sort();
    whole.sort();
    let tasks = 1000;
    let mut network = Network::start(4, "bench-requestor-tasks", None, "").unwrap();
    let dir = network.sandbox.path().join("tiny");
    let job = write_tiny_job(&dir, tasks);
    let started = Instant::now();
    let output = network
        .requestor(&["script", job.to_str().unwrap(), "--json"])
        .output()
        .unwrap();
    let wall = started.elapsed();
    assert!(output.status.success(), "{}", text(&output.stderr));
    let summary = summary_of(&text(&output.stdout));
    let seconds = summary["report"]["seconds"].as_f64().unwrap();
    let spread: Vec<String> = summary["report"]["providers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["tasks_done"].to_string())
        .collect();
    println!("\n| Measure | Result | Goal |\n|---|---|---|");
    println!(
        "| Hello world: `golem-requestor run` (WASM, network up, 1 provider) → result, wall, p50 / min / max of {} | {:.0} / {:.0} / {:.0} ms | ≤ 300 ms |",
        samples.len(),
        samples[samples.len() / 2].as_secs_f64() * 1000.0,
        samples[0].as_secs_f64() * 1000.0,
        samples[samples.len() - 1].as_secs_f64() * 1000.0
    );
    println!(
        "| … the whole `run` command incl. agreement end and invoice, p50 | {:.0} ms | – |",
        whole[whole.len() / 2].as_secs_f64() * 1000.0
    );
    println!(
        "| {tasks} tiny WASM tasks over 4 providers (`script`, tasks per provider {}) | {:.0} tasks/s ({:.2} s; whole command {:.2} s) | ≥ 200 tasks/s |",
        spread.join("/"),
        tasks as f64 / seconds,
        seconds,
        wall.as_secs_f64()
    );
}

/// Run `golem-requestor ARGS` whose command prints `hi`: the time to that
/// output line on our stdout, and to the command's successful exit.
fn time_run(network: &mut Network, args: &[&str]) -> (Duration, Duration) {
    let started = Instant::now();
    let mut child = network
        .requestor(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let to_result = started.elapsed();
    assert_eq!(line, "hi\n");
    assert!(child.wait().unwrap().success());
    (to_result, started.elapsed())
}

fn median(samples: &mut [Duration]) -> f64 {
    samples.sort();
    samples[samples.len() / 2].as_secs_f64() * 1000.0
}

/// Benchmark (run by `scripts/bench/requestor.sh` when a Docker engine answers):
/// `golem-requestor run --runtime vm --image FILE -- /bin/echo hi` (network up,
/// one provider, image already cached by the provider) against bare
/// `docker run --rm` of the same image on the same machine, side by side.
/// Prints a table; asserts nothing about time.
#[tokio::test]
#[ignore = "benchmark: run with scripts/bench/requestor.sh"]
async fn bench_requestor_vm() {
    let scratch = tempfile::tempdir().unwrap();
    let tag = "golem-bench-requestor-busybox";
    let image = match busybox_image(scratch.path(), tag) {
        Ok(image) => image,
        Err(why) => {
            println!(
                "| `golem-requestor run --runtime vm` vs `docker run` | not measured: {why} | |"
            );
            return;
        }
    };
    let image = image.to_str().unwrap();
    let mut network =
        Network::start_with_runtimes(1, "bench-requestor-vm", &["vm"], None, "").unwrap();
    let run = [
        "run",
        "--runtime",
        "vm",
        "--image",
        image,
        "--",
        "/bin/echo",
        "hi",
    ];
    // The first run downloads and loads the image on the provider: not timed.
    let output = output_within(network.requestor(&run), Duration::from_secs(180));
    assert!(output.status.success(), "{}", text(&output.stderr));
    let rounds = 9;
    let (mut to_result, mut golem_whole, mut docker_whole) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        let (result, whole) = time_run(&mut network, &run);
        to_result.push(result);
        golem_whole.push(whole);

        let started = Instant::now();
        let output = std::process::Command::new("docker")
            .args(["run", "--rm", tag, "/bin/echo", "hi"])
            .output()
            .unwrap();
        docker_whole.push(started.elapsed());
        assert_eq!(text(&output.stdout), "hi\n", "{}", text(&output.stderr));
    }
    let docker = median(&mut docker_whole);
    let result = median(&mut to_result);
    let whole = median(&mut golem_whole);
    println!("\n| Measure (median of {rounds}, cached image) | golem | bare `docker run --rm` | goal: ≤ 1.3 × docker + 200 ms |\n|---|---|---|---|");
    println!(
        "| `golem-requestor run --runtime vm` → result line | {result:.0} ms | {docker:.0} ms | {:.0} ms: {} |",
        1.3 * docker + 200.0,
        if result <= 1.3 * docker + 200.0 { "met" } else { "missed" }
    );
    println!(
        "| … the whole command incl. agreement end and invoice | {whole:.0} ms | {docker:.0} ms | {:.0} ms: {} |",
        1.3 * docker + 200.0,
        if whole <= 1.3 * docker + 200.0 { "met" } else { "missed" }
    );
}

/// `GET /` over a plain TCP connection to `port`; the whole reply, or why not.
fn http_get(port: u16) -> Result<String, String> {
    use std::io::{Read, Write};
    let mut stream =
        std::net::TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    stream
        .write_all(b"GET / HTTP/1.0\r\nHost: vm\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut reply = String::new();
    stream
        .read_to_string(&mut reply)
        .map_err(|e| e.to_string())?;
    Ok(reply)
}

#[tokio::test]
#[ignore = "tier docker: needs a Docker engine; scripts/test.sh runs it when one answers (GOLEM_TEST_DOCKER=1)"]
async fn docker_vm_run_publish_forwards_a_local_port_until_ctrl_c() {
    assert!(golem_tests::docker::enabled(
        "docker_vm_run_publish_forwards_a_local_port_until_ctrl_c"
    )
    .unwrap());
    let scratch = tempfile::tempdir().unwrap();
    let image = busybox_image(scratch.path(), "golem-e2e-requestor-busybox").unwrap();
    let mut network =
        Network::start_with_runtimes(1, "e2e-requestor-publish", &["vm"], None, "").unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let log = scratch.path().join("requestor.log");
    let mut child = network
        .requestor(&[
            "run",
            "--runtime",
            "vm",
            "--image",
            image.to_str().unwrap(),
            "--publish",
            &format!("{port}:8080"),
            "--",
            "/bin/sh",
            "-c",
            "mkdir -p /tmp/www && echo hello through the vpn > /tmp/www/index.html \
             && exec httpd -f -p 8080 -h /tmp/www",
        ])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    // The page comes through the forwarded port once the service is up.
    let deadline = Instant::now() + Duration::from_secs(150);
    let reply = loop {
        match http_get(port) {
            Ok(reply) if reply.contains("hello through the vpn") => break reply,
            other if Instant::now() > deadline => {
                let _ = child.kill();
                panic!(
                    "no page through the forwarded port: {other:?}\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            _ => tokio::time::sleep(Duration::from_millis(300)).await,
        }
    };
    assert!(reply.starts_with("HTTP/1."), "{reply}");
    // Several connections at once, each its own WebSocket.
    let pages: Vec<_> = (0..4)
        .map(|_| std::thread::spawn(move || http_get(port)))
        .collect();
    for page in pages {
        let page = page.join().unwrap().unwrap();
        assert!(page.contains("hello through the vpn"), "{page}");
    }
    // Ctrl-C: the agreement ends, the network goes, the provider is paid.
    let status = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(60);
    let code = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status.code();
        }
        assert!(
            Instant::now() < deadline,
            "golem-requestor did not stop after Ctrl-C"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let stderr = std::fs::read_to_string(&log).unwrap();
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("forwarding 127.0.0.1:"), "{stderr}");
    assert!(
        stderr.contains("agreement with provider-1 terminated"),
        "{stderr}"
    );
    let served: usize = stderr
        .split("served ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|count| count.parse().ok())
        .unwrap_or_else(|| panic!("no summary: {stderr}"));
    assert!(served >= 5, "{stderr}");
    assert!(stderr.contains("spent "), "{stderr}");
    assert!(
        http_get(port).is_err(),
        "the port is still open after Ctrl-C"
    );
    let client = network.requestor_client();
    assert!(client.networks().await.unwrap().is_empty());
}
