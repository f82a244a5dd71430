//! End-to-end tests of the VM exe unit: a requestor daemon drives, over
//! libp2p, `exe-unit-vm` on a provider daemon, running a locally built
//! busybox image (a `docker save` tarball served over HTTP by its sha3 hash).
//! The test plays the provider agent (negotiation and the spawn contract).
//! Needs `GOLEM_TEST_DOCKER=1` and an engine (`scripts/ensure-docker.sh`).
#![allow(clippy::unwrap_used)] // test helpers panic on setup failure by design

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use golem_model::activity::{CommandResult, ExeScriptCommandResult};
use golem_model::market::DemandOfferBase;
use golem_tests::docker;
use golem_tests::http::FileServer;
use golem_tests::negotiation::negotiate_agreement;
use golem_tests::script::{output_text as text, run_captured as run};
use golem_tests::standin::{spawn_standin_agent_with, ExeUnits, StandinOptions};
use golem_tests::{binary, eventually, DaemonProcess, Sandbox};
use serde_json::{json, Value};
use sha3::Digest;

const SUBNET: &str = "e2e-vm";
const IMAGE_TAG: &str = "golem-test-busybox:latest";
const ACTIVITY_LABEL: &str = "golem.activity-id";

fn offer() -> DemandOfferBase {
    DemandOfferBase {
        properties: json!({
            "golem.node.debug.subnet": SUBNET,
            "golem.node.id.name": "vm-provider",
            "golem.runtime.name": "vm",
            "golem.inf.mem.gib": 0.125,
            "golem.inf.storage.gib": 2.0,
            "golem.inf.cpu.threads": 1,
            "golem.com.pricing.model": "linear",
            "golem.com.pricing.model.linear.coeffs": [0.1, 0.1, 0.0],
            "golem.com.usage.vector": ["golem.usage.cpu_sec", "golem.usage.duration_sec"],
        }),
        constraints: format!("(golem.node.debug.subnet={SUBNET})"),
    }
}

/// yapapi's vm demand: runtime name, memory and storage constraints.
fn demand(package: &str) -> DemandOfferBase {
    DemandOfferBase {
        properties: json!({
            "golem.node.debug.subnet": SUBNET,
            "golem.srv.comp.task_package": package,
            "golem.srv.comp.vm.package_format": "gvmkit-squash",
            // An hour ahead, as clients ask; the market refuses expiries beyond its cap.
            "golem.srv.comp.expiration": chrono::Utc::now().timestamp_millis() + 3_600_000,
        }),
        constraints: format!(
            "(&(golem.node.debug.subnet={SUBNET})(golem.inf.mem.gib>=0.1)(golem.inf.storage.gib>=1)(golem.runtime.name=vm))"
        ),
    }
}

/// Plays the provider agent with `exe-unit-vm` (see `golem_tests::standin`),
/// setting `env` for each exe unit.
fn provider_agent(
    provider: &DaemonProcess,
    offer_id: String,
    work: PathBuf,
    options: StandinOptions,
) -> ExeUnits {
    spawn_standin_agent_with(provider, offer_id, offer(), "exe-unit-vm", work, options)
}

struct Requestor {
    client: golem_client::GolemClient,
    http: reqwest::Client,
    api_url: String,
    app_key: String,
}

impl Requestor {
    fn url(&self, path: &str) -> String {
        format!("{}/activity-api/v1{path}", self.api_url)
    }

    async fn create_activity(&self, agreement_id: &str) -> String {
        let response = self
            .http
            .post(self.url("/activity"))
            .bearer_auth(&self.app_key)
            .json(&json!(agreement_id))
            .send()
            .await
            .unwrap();
        let status = response.status();
        let body = response.text().await.unwrap();
        assert_eq!(status, 201, "{body}");
        serde_json::from_str(&body).unwrap()
    }

    async fn destroy(&self, activity_id: &str) {
        let response = self
            .http
            .delete(self.url(&format!("/activity/{activity_id}")))
            .bearer_auth(&self.app_key)
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success(), "{}", response.status());
    }

    /// Run one batch to its end.
    async fn batch(&self, activity_id: &str, script: Value) -> Vec<ExeScriptCommandResult> {
        let response = self
            .http
            .post(self.url(&format!("/activity/{activity_id}/exec")))
            .bearer_auth(&self.app_key)
            .json(&json!({"text": script.to_string()}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let batch_id: String = response.json().await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let response = self
                .http
                .get(self.url(&format!(
                    "/activity/{activity_id}/exec/{batch_id}?timeout=5"
                )))
                .bearer_auth(&self.app_key)
                .send()
                .await
                .unwrap();
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

    async fn usage(&self, activity_id: &str) -> Value {
        self.http
            .get(self.url(&format!("/activity/{activity_id}/usage")))
            .bearer_auth(&self.app_key)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }
}

struct Fixture {
    _sandbox: Sandbox,
    server: FileServer,
    files: PathBuf,
    provider_work: PathBuf,
    exe_units: ExeUnits,
    requestor: Requestor,
}

async fn fixture() -> Fixture {
    fixture_with_env(Vec::new()).await
}

/// A provider whose exe units may run `docker:<ref>` packages (off by default).
async fn fixture_allowing_docker_images() -> Fixture {
    fixture_with_env(vec![(
        "GOLEM_ALLOW_DOCKER_IMAGES".to_string(),
        "1".to_string(),
    )])
    .await
}

async fn fixture_with_env(env: Vec<(String, String)>) -> Fixture {
    fixture_with_options(StandinOptions {
        allow_private_transfers: true,
        env,
        ..Default::default()
    })
    .await
}

async fn fixture_with_options(options: StandinOptions) -> Fixture {
    let mut sandbox = Sandbox::new();
    sandbox.provider_and_requestor().unwrap();
    let files = sandbox.path().join("files");
    std::fs::create_dir_all(&files).unwrap();
    let server = FileServer::start(files.clone()).await.unwrap();
    let provider_work = sandbox.path().join("provider-work");
    let provider = &sandbox.daemons()[0];
    let offer_id = provider.client().subscribe_offer(&offer()).await.unwrap();
    let exe_units = provider_agent(provider, offer_id, provider_work.clone(), options);
    let requestor_daemon = &sandbox.daemons()[1];
    let requestor = Requestor {
        client: requestor_daemon.client(),
        http: reqwest::Client::new(),
        api_url: requestor_daemon.api_url.clone(),
        app_key: requestor_daemon.app_key.clone(),
    };
    Fixture {
        _sandbox: sandbox,
        server,
        files,
        provider_work,
        exe_units,
        requestor,
    }
}

/// Put `bytes` on the file server as `name`; returns its `hash:sha3:<hex>:<url>`.
fn publish(fixture: &Fixture, name: &str, bytes: &[u8]) -> String {
    std::fs::write(fixture.files.join(name), bytes).unwrap();
    format!(
        "hash:sha3:{}:{}",
        hex::encode(sha3::Sha3_224::digest(bytes)),
        fixture.server.url(name)
    )
}

/// The test image as a `docker save` tarball.
fn image_tarball(dir: &Path) -> Vec<u8> {
    docker::build_test_image("busybox", IMAGE_TAG).unwrap();
    let out = dir.join("busybox.tar");
    docker::save_image(IMAGE_TAG, &out).unwrap();
    std::fs::read(out).unwrap()
}

fn exe_unit_log(fixture: &Fixture, activity_id: &str) -> String {
    std::fs::read_to_string(fixture.provider_work.join(activity_id).join("exe-unit.log"))
        .unwrap_or_default()
}

async fn container_of(activity_id: &str) -> String {
    let label = format!("{ACTIVITY_LABEL}={activity_id}");
    let ids = docker::containers_with_label(&label).unwrap();
    assert_eq!(ids.len(), 1, "{ids:?}");
    ids[0].clone()
}

async fn gone(activity_id: &str) {
    let label = format!("{ACTIVITY_LABEL}={activity_id}");
    eventually(Duration::from_secs(30), "the container is removed", || {
        let label = label.clone();
        async move {
            docker::containers_with_label(&label)
                .ok()
                .filter(|ids| ids.is_empty())
        }
    })
    .await
    .unwrap();
}

#[tokio::test]
#[ignore = "tier docker: needs a Docker engine; scripts/test.sh runs it when one answers (GOLEM_TEST_DOCKER=1)"]
async fn docker_vm_runs_a_hardened_container_through_two_daemons() {
    if !docker::enabled("docker_vm_runs_a_hardened_container_through_two_daemons").unwrap() {
        return;
    }
    // The provider chose runc: today's hardening.
    let mut fixture =
        fixture_with_env(vec![("GOLEM_VM_SANDBOX".to_string(), "runc".to_string())]).await;
    let provider_id = fixture._sandbox.daemons()[0]
        .node_id()
        .unwrap()
        .to_lowercase();
    let tarball = image_tarball(fixture._sandbox.path());
    let package = publish(&fixture, "busybox.tar", &tarball);
    let requestor = &fixture.requestor;
    let agreement_id = negotiate_agreement(&requestor.client, &demand(&package)).await;
    let activity_id = requestor.create_activity(&agreement_id).await;

    let results = requestor
        .batch(&activity_id, json!([{"deploy": {}}, {"start": {"args": []}}, run("/bin/sh", &["-c", "echo hi; id -u"])]))
        .await;
    assert!(
        results.iter().all(|r| r.result == CommandResult::Ok),
        "{results:?}\n{}",
        exe_unit_log(&fixture, &activity_id)
    );
    let stdout = text(&results[2].stdout);
    let mut lines = stdout.lines();
    assert_eq!(lines.next(), Some("hi"), "{stdout}");
    let uid: u32 = lines.next().unwrap().trim().parse().unwrap();
    assert_ne!(uid, 0, "the payload must not run as root");

    // The container as the engine sees it: hardened by default.
    let container = container_of(&activity_id).await;
    let inspect = docker::inspect(&container).unwrap();
    let host = &inspect["HostConfig"];
    assert_eq!(host["Runtime"], "runc", "{host}");
    assert_eq!(host["NetworkMode"], "none", "{host}");
    assert_eq!(host["CapDrop"], json!(["ALL"]), "{host}");
    assert_eq!(host["ReadonlyRootfs"], true);
    assert!(
        host["SecurityOpt"]
            .to_string()
            .contains("no-new-privileges"),
        "{host}"
    );
    assert_eq!(host["Memory"], 128 << 20);
    assert!(host["PidsLimit"].as_i64().unwrap() > 0);
    assert_eq!(host["NanoCpus"], 1_000_000_000i64);
    // Labelled with the node it serves, the agreement and the activity.
    let labels = &inspect["Config"]["Labels"];
    assert_eq!(
        labels["golem.node-id"].as_str().map(str::to_lowercase),
        Some(provider_id),
        "{labels}"
    );
    assert_eq!(
        labels["golem.agreement-id"],
        json!(agreement_id),
        "{labels}"
    );
    assert_eq!(labels[ACTIVITY_LABEL], json!(activity_id), "{labels}");

    // Files in, transformed, files out; the image's declared volume works too.
    std::fs::write(fixture.files.join("in.txt"), "make me loud").unwrap();
    let results = requestor
        .batch(&activity_id, json!([
            {"transfer": {"from": fixture.server.url("in.txt"), "to": "container:/golem/input/in.txt"}},
            run("/bin/sh", &["-c", "tr a-z A-Z < /golem/input/in.txt > /golem/output/out.txt && cp /golem/output/out.txt /data/copy.txt"]),
            {"transfer": {"from": "container:/golem/output/out.txt", "to": fixture.server.url("out.txt")}},
            {"transfer": {"from": "container:/data/copy.txt", "to": fixture.server.url("copy.txt")}},
        ]))
        .await;
    assert!(
        results.iter().all(|r| r.result == CommandResult::Ok),
        "{results:?}"
    );
    assert_eq!(
        std::fs::read_to_string(fixture.files.join("out.txt")).unwrap(),
        "MAKE ME LOUD"
    );
    assert_eq!(
        std::fs::read_to_string(fixture.files.join("copy.txt")).unwrap(),
        "MAKE ME LOUD"
    );

    // Hardening, from inside: no network but loopback, no writes to `/`,
    // /tmp writable, the memory and pids limits hold.
    let results = requestor
        .batch(&activity_id, json!([run("/bin/ls", &["/sys/class/net"])]))
        .await;
    assert_eq!(
        text(&results[0].stdout)
            .split_whitespace()
            .collect::<Vec<_>>(),
        vec!["lo"],
        "{results:?}"
    );
    let results = requestor
        .batch(&activity_id, json!([run("/bin/touch", &["/escape"])]))
        .await;
    assert_eq!(results[0].result, CommandResult::Error, "{results:?}");
    assert!(
        text(&results[0].stderr).contains("Read-only file system"),
        "{results:?}"
    );
    let results = requestor
        .batch(&activity_id, json!([run("/bin/touch", &["/tmp/ok"])]))
        .await;
    assert_eq!(results[0].result, CommandResult::Ok, "{results:?}");
    let results = requestor
        .batch(
            &activity_id,
            json!([run("/bin/sh", &["-c", "tail /dev/zero"])]),
        )
        .await;
    assert_eq!(results[0].result, CommandResult::Error, "{results:?}");
    assert!(
        format!("{results:?}").contains("memory limit"),
        "{results:?}"
    );
    let results = requestor
        .batch(
            &activity_id,
            json!([run(
                "/bin/sh",
                &["-c", "for i in $(seq 300); do sleep 5 & done; wait"]
            )]),
        )
        .await;
    assert!(
        text(&results[0].stderr).contains("can't fork"),
        "{results:?}"
    );
    // The container is still serving after all that. busybox sh gives up at
    // its first failed fork and leaves the sleeps it started holding every
    // pid for up to 5 s; a run that cannot start meanwhile (runc's init
    // cannot fork) says why, and the next ones run once the sleeps end.
    let results = eventually(
        Duration::from_secs(30),
        "the container to serve again",
        || {
            let (requestor, activity_id) = (&requestor, &activity_id);
            async move {
                let results = requestor
                    .batch(activity_id, json!([run("/bin/echo", &["alive"])]))
                    .await;
                if results[0].result == CommandResult::Ok {
                    return Some(results);
                }
                let message = results[0].message.clone().unwrap_or_default();
                assert!(
                    message.contains("could not be started") && message.contains("limit of"),
                    "{results:?}"
                );
                None
            }
        },
    )
    .await
    .unwrap();
    assert_eq!(text(&results[0].stdout).trim(), "alive", "{results:?}");

    // Usage comes from the engine's stats: CPU seconds of the container.
    let usage = requestor.usage(&activity_id).await;
    let counters = usage["currentUsage"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(counters.len(), 2, "{usage}");
    assert!(counters[0].as_f64().unwrap() > 0.0, "{usage}");

    requestor.destroy(&activity_id).await;
    gone(&activity_id).await;

    // A second activity with the same package starts from the caches: the
    // file is no longer served and the image is not loaded again.
    std::fs::remove_file(fixture.files.join("busybox.tar")).unwrap();
    let agreement_id = negotiate_agreement(&requestor.client, &demand(&package)).await;
    let second = requestor.create_activity(&agreement_id).await;
    let results = requestor
        .batch(
            &second,
            json!([{"deploy": {}}, {"start": {"args": []}}, run("/bin/echo", &["again"])]),
        )
        .await;
    assert!(
        results.iter().all(|r| r.result == CommandResult::Ok),
        "{results:?}\n{}",
        exe_unit_log(&fixture, &second)
    );
    assert!(exe_unit_log(&fixture, &second).contains("image found in the engine's cache"));

    // SIGKILL the exe unit: its container stays behind until the next exe
    // unit starts and removes it.
    let container = container_of(&second).await;
    fixture
        .exe_units
        .lock()
        .unwrap()
        .get_mut(&second)
        .unwrap()
        .kill()
        .unwrap();
    fixture
        .exe_units
        .lock()
        .unwrap()
        .get_mut(&second)
        .unwrap()
        .wait()
        .unwrap();
    assert!(
        docker::inspect(&container).is_ok(),
        "the container outlived its exe unit"
    );
    let agreement_id = negotiate_agreement(&requestor.client, &demand(&package)).await;
    let third = requestor.create_activity(&agreement_id).await;
    gone(&second).await;
    // ... and the volumes' nosuid mount the dead one left.
    let left = fixture
        .provider_work
        .join(&second)
        .join("work")
        .join("volumes");
    assert_eq!(mount_options(&left), None, "{}", left.display());
    let results = requestor
        .batch(&third, json!([{"deploy": {}}, {"start": {"args": []}}]))
        .await;
    assert!(
        results.iter().all(|r| r.result == CommandResult::Ok),
        "{results:?}"
    );
    requestor.destroy(&third).await;
    gone(&third).await;
}

#[tokio::test]
#[ignore = "tier docker: needs a Docker engine; scripts/test.sh runs it when one answers (GOLEM_TEST_DOCKER=1)"]
async fn docker_vm_rejects_bad_packages_and_entry_points_clearly() {
    if !docker::enabled("docker_vm_rejects_bad_packages_and_entry_points_clearly").unwrap() {
        return;
    }
    // It also runs `docker:<ref>` packages, which a provider must allow.
    let fixture = fixture_allowing_docker_images().await;
    let tarball = image_tarball(fixture._sandbox.path());
    let requestor = &fixture.requestor;

    let good = publish(&fixture, "good.tar", &tarball);
    let wrong_hash = {
        // Keep the URL, replace the digest.
        let url = fixture.server.url("good.tar");
        format!("hash:sha3:{}:{url}", "0".repeat(56))
    };
    let truncated = publish(&fixture, "truncated.tar", &tarball[..tarball.len() / 2]);
    let unreachable = format!(
        "hash:sha3:{}:http://127.0.0.1:9/nothing.tar",
        "0".repeat(56)
    );
    let not_an_image = publish(
        &fixture,
        "notes.txt",
        b"these are not the layers you are looking for",
    );
    let cases = [
        (wrong_hash, "hash mismatch"),
        (truncated, "cannot load the image package"),
        (not_an_image, "not an image"),
        (unreachable, "cannot download the task package"),
        (
            "docker:golem-no-such-image:never".to_string(),
            "cannot be pulled",
        ),
    ];
    for (package, expected) in cases {
        let agreement_id = negotiate_agreement(&requestor.client, &demand(&package)).await;
        let activity_id = requestor.create_activity(&agreement_id).await;
        let results = requestor.batch(&activity_id, json!([{"deploy": {}}])).await;
        assert_eq!(
            results[0].result,
            CommandResult::Error,
            "{package}: {results:?}"
        );
        let message = results[0].message.clone().unwrap_or_default();
        assert!(
            message.contains("deploy failed") && message.contains(expected),
            "{package}: {message}"
        );
        requestor.destroy(&activity_id).await;
    }

    let agreement_id = negotiate_agreement(&requestor.client, &demand(&good)).await;
    let activity_id = requestor.create_activity(&agreement_id).await;
    let results = requestor
        .batch(
            &activity_id,
            json!([{"deploy": {}}, {"start": {"args": []}}, run("/no/such/program", &[])]),
        )
        .await;
    assert_eq!(results[2].result, CommandResult::Error, "{results:?}");
    let message = results[2].message.clone().unwrap_or_default();
    assert!(message.contains("unknown entry point"), "{message}");
    requestor.destroy(&activity_id).await;
    gone(&activity_id).await;

    // A gzip-compressed tarball whose download was cut halfway: the next
    // deploy resumes it with a Range request, verifies and loads it.
    let gzipped = {
        let out = Command::new("gzip")
            .arg("-c")
            .arg(fixture._sandbox.path().join("busybox.tar"))
            .output()
            .unwrap();
        assert!(out.status.success());
        out.stdout
    };
    let resumable = publish(&fixture, "busybox.tar.gz", &gzipped);
    let digest = hex::encode(sha3::Sha3_224::digest(&gzipped));
    let packages = fixture.provider_work.join("cache").join("packages");
    std::fs::create_dir_all(&packages).unwrap();
    std::fs::write(
        packages.join(format!(".sha3-{digest}.partial")),
        &gzipped[..gzipped.len() / 2],
    )
    .unwrap();
    let agreement_id = negotiate_agreement(&requestor.client, &demand(&resumable)).await;
    let activity_id = requestor.create_activity(&agreement_id).await;
    let results = requestor
        .batch(
            &activity_id,
            json!([{"deploy": {}}, {"start": {"args": []}}, run("/bin/echo", &["resumed"])]),
        )
        .await;
    let log = exe_unit_log(&fixture, &activity_id);
    assert!(
        results.iter().all(|r| r.result == CommandResult::Ok),
        "{results:?}\n{log}"
    );
    assert!(log.contains("resuming the task package download"), "{log}");
    requestor.destroy(&activity_id).await;
    gone(&activity_id).await;

    // An image the engine already has, by reference.
    let agreement_id =
        negotiate_agreement(&requestor.client, &demand(&format!("docker:{IMAGE_TAG}"))).await;
    let activity_id = requestor.create_activity(&agreement_id).await;
    let results = requestor
        .batch(
            &activity_id,
            json!([{"deploy": {}}, {"start": {"args": []}}, run("/bin/echo", &["by reference"])]),
        )
        .await;
    assert!(
        results.iter().all(|r| r.result == CommandResult::Ok),
        "{results:?}"
    );
    assert_eq!(text(&results[2].stdout).trim(), "by reference");
    requestor.destroy(&activity_id).await;
    gone(&activity_id).await;
}

#[test]
#[ignore = "tier docker: needs a Docker engine; scripts/test.sh runs it when one answers (GOLEM_TEST_DOCKER=1)"]
fn docker_offer_template_reports_the_engine() {
    if !docker::enabled("docker_offer_template_reports_the_engine").unwrap() {
        return;
    }
    let output = Command::new(binary("exe-unit-vm"))
        .arg("offer-template")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let template: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(template["golem.runtime.name"], "vm");
    let version = docker::docker(&["version", "--format", "{{.Server.Version}}"]).unwrap();
    assert_eq!(
        template["golem.runtime.vm.engine.version"],
        version.as_str()
    );
    assert!(template["golem.inf.cpu.capabilities"]
        .as_array()
        .is_some_and(|caps| !caps.is_empty()));
    // gVisor by default (scripts/ensure-docker.sh registers it), with the
    // original's start-entrypoint capability.
    assert_eq!(template["golem.runtime.vm.sandbox"], "gvisor", "{template}");
    assert!(
        template["golem.runtime.capabilities"]
            .as_array()
            .is_some_and(|caps| caps.contains(&json!("start-entrypoint"))),
        "{template}"
    );
    // runc when the provider chooses it; announced in the offer.
    let output = Command::new(binary("exe-unit-vm"))
        .arg("offer-template")
        .env("GOLEM_VM_SANDBOX", "runc")
        .output()
        .unwrap();
    assert!(output.status.success());
    let template: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(template["golem.runtime.vm.sandbox"], "runc", "{template}");
    let output = Command::new(binary("exe-unit-vm"))
        .arg("offer-template")
        .env("GOLEM_VM_SANDBOX", "kvm")
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("GOLEM_VM_SANDBOX"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    // No engine at that address: a clear error and a failing exit.
    let output = Command::new(binary("exe-unit-vm"))
        .arg("offer-template")
        .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("no docker engine is reachable"), "{stderr}");
}

#[tokio::test]
#[ignore = "tier docker: needs a Docker engine; scripts/test.sh runs it when one answers (GOLEM_TEST_DOCKER=1)"]
async fn docker_vm_through_the_real_provider_agent() {
    use golem_tests::provider::{Preset, ProviderAgent, ProviderOptions};
    if !docker::enabled("docker_vm_through_the_real_provider_agent").unwrap() {
        return;
    }
    const AGENT_SUBNET: &str = "e2e-vm-agent";
    const PLATFORM: &str = "dummy-local-tglm";
    let mut sandbox = Sandbox::new();
    sandbox.provider_and_requestor().unwrap();
    let files = sandbox.path().join("files");
    std::fs::create_dir_all(&files).unwrap();
    let server = FileServer::start(files.clone()).await.unwrap();
    let tarball = image_tarball(sandbox.path());
    std::fs::write(files.join("busybox.tar"), &tarball).unwrap();
    let package = format!(
        "hash:sha3:{}:{}",
        hex::encode(sha3::Sha3_224::digest(&tarball)),
        server.url("busybox.tar")
    );
    let agent_dir = sandbox.path().join("p-agent");
    let agent = ProviderAgent::start(
        &sandbox.daemons()[0],
        &agent_dir,
        ProviderOptions::new(AGENT_SUBNET)
            .exe_units(&["vm"])
            .arg("--vm-sandbox")
            .arg("runc")
            .preset(Preset::new("vm", "vm", "0.5", "0.01", "0.001")),
    )
    .unwrap();
    let requestor_daemon = &sandbox.daemons()[1];
    let requestor = Requestor {
        client: requestor_daemon.client(),
        http: reqwest::Client::new(),
        api_url: requestor_daemon.api_url.clone(),
        app_key: requestor_daemon.app_key.clone(),
    };
    let allocation = requestor
        .client
        .create_allocation(PLATFORM, "100")
        .await
        .unwrap();
    let decoration = requestor
        .client
        .demand_decorations(&[&allocation.allocation_id])
        .await
        .unwrap();
    let mut properties = json!({
        "golem.node.debug.subnet": AGENT_SUBNET,
        "golem.srv.comp.task_package": package,
        "golem.srv.comp.vm.package_format": "gvmkit-squash",
        "golem.srv.comp.expiration": chrono::Utc::now().timestamp_millis() + 600_000,
        "golem.com.payment.chosen-platform": PLATFORM,
    });
    for property in &decoration.properties {
        properties[&property.key] = json!(property.value);
    }
    // yapapi's vm constraints (memory, storage, runtime name).
    let demand = DemandOfferBase {
        properties,
        constraints: format!(
            "(&(golem.node.debug.subnet={AGENT_SUBNET})(golem.inf.mem.gib>=0.1)(golem.inf.storage.gib>=0.1)(golem.runtime.name=vm){})",
            decoration.constraints.join("")
        ),
    };
    let agreement_id =
        golem_tests::provider::negotiate_with_agent(&requestor.client, &demand, &agent).await;
    let activity_id = requestor.create_activity(&agreement_id).await;
    std::fs::write(files.join("in.txt"), "through the agent").unwrap();
    let results = requestor
        .batch(
            &activity_id,
            json!([
                {"deploy": {}},
                {"start": {"args": []}},
                run("/bin/sh", &["-c", "echo hi; id -u"]),
                {"transfer": {"from": server.url("in.txt"), "to": "container:/golem/input/in.txt"}},
                run("/bin/sh", &["-c", "rev < /golem/input/in.txt > /golem/output/out.txt"]),
                {"transfer": {"from": "container:/golem/output/out.txt", "to": server.url("out.txt")}},
            ]),
        )
        .await;
    assert!(
        results.iter().all(|r| r.result == CommandResult::Ok),
        "{results:?}\nagent log:\n{}",
        agent.log()
    );
    let stdout = text(&results[2].stdout);
    assert!(
        stdout.starts_with("hi\n") && !stdout.contains("\n0\n"),
        "{stdout}"
    );
    assert_eq!(
        std::fs::read_to_string(files.join("out.txt"))
            .unwrap()
            .trim(),
        "tnega eht hguorht"
    );
    let container = container_of(&activity_id).await;
    let inspect = docker::inspect(&container).unwrap();
    assert_eq!(inspect["HostConfig"]["NetworkMode"], "none");
    // `--vm-sandbox runc`: announced in the agreed offer, and the container
    // runs hardened under runc.
    let agreement = requestor.client.agreement(&agreement_id).await.unwrap();
    assert_eq!(
        agreement.offer.properties.get("golem.runtime.vm.sandbox"),
        Some(&json!("runc")),
        "{:?}",
        agreement.offer.properties
    );
    assert_eq!(inspect["HostConfig"]["Runtime"], "runc");
    assert_eq!(inspect["HostConfig"]["ReadonlyRootfs"], true);
    requestor.destroy(&activity_id).await;
    gone(&activity_id).await;
    requestor
        .client
        .terminate_agreement(
            &agreement_id,
            Some(&golem_model::market::Reason::new("work done")),
        )
        .await
        .unwrap();
    drop(agent);
}

fn median(samples: &mut [Duration]) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn timed(mut command: Command) -> Duration {
    let started = Instant::now();
    let output = command.output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    started.elapsed()
}

/// Benchmark (run by `scripts/bench/vm.sh` on release builds): activity
/// create → first `run` result on a cached image vs `docker run --rm`; a
/// further `run` vs `docker exec`; download + verify + load of a 100 MiB
/// image from loopback. Prints a table; asserts nothing about time.
#[tokio::test]
#[ignore = "benchmark: run with scripts/bench/vm.sh"]
async fn bench_vm() {
    docker::enabled("bench_vm").unwrap();
    let rounds: usize = 7;
    // Built first: a long pause between requests would let the daemons'
    // keep-alive close the client's pooled connections.
    docker::build_test_image("busybox", IMAGE_TAG).unwrap();
    docker::build_test_image("big", "golem-test-big:latest").unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let big_tar = scratch.path().join("big.tar");
    docker::save_image("golem-test-big:latest", &big_tar).unwrap();
    let size = std::fs::metadata(&big_tar).unwrap().len();
    let digest = hex::encode(sha3::Sha3_224::digest(std::fs::read(&big_tar).unwrap()));
    // runc, as the bare `docker run`/`exec` it is compared with (gVisor
    // vs runc: `bench_sandbox`).
    let fixture =
        fixture_with_env(vec![("GOLEM_VM_SANDBOX".to_string(), "runc".to_string())]).await;
    let requestor = &fixture.requestor;
    let tarball = image_tarball(fixture._sandbox.path());
    let package = publish(&fixture, "busybox.tar", &tarball);
    let first_batch = json!([{"deploy": {}}, {"start": {"args": []}}, run("/bin/echo", &["hi"])]);

    // Warm the caches (package file and engine tag).
    let agreement_id = negotiate_agreement(&requestor.client, &demand(&package)).await;
    let warm = requestor.create_activity(&agreement_id).await;
    requestor.batch(&warm, first_batch.clone()).await;
    requestor.destroy(&warm).await;

    let mut create_to_first = Vec::new();
    let mut docker_run = Vec::new();
    let mut further = Vec::new();
    let mut docker_exec = Vec::new();
    for round in 0..rounds {
        let agreement_id = negotiate_agreement(&requestor.client, &demand(&package)).await;
        let started = Instant::now();
        let activity_id = requestor.create_activity(&agreement_id).await;
        let results = requestor.batch(&activity_id, first_batch.clone()).await;
        create_to_first.push(started.elapsed());
        assert_eq!(text(&results[2].stdout).trim(), "hi", "{results:?}");
        let mut command = Command::new("docker");
        command.args([
            "run",
            "--rm",
            "--network",
            "none",
            IMAGE_TAG,
            "/bin/echo",
            "hi",
        ]);
        docker_run.push(timed(command));
        if round == 0 {
            for _ in 0..30 {
                let started = Instant::now();
                let results = requestor
                    .batch(&activity_id, json!([run("/bin/echo", &["hi"])]))
                    .await;
                further.push(started.elapsed());
                assert_eq!(results[0].result, CommandResult::Ok);
            }
            let name = "golem-bench-exec";
            let _ = docker::docker(&["rm", "-f", name]);
            docker::docker(&[
                "run",
                "-d",
                "--name",
                name,
                "--network",
                "none",
                IMAGE_TAG,
                "sleep",
                "600",
            ])
            .unwrap();
            for _ in 0..30 {
                let mut command = Command::new("docker");
                command.args(["exec", name, "/bin/echo", "hi"]);
                docker_exec.push(timed(command));
            }
            let _ = docker::docker(&["rm", "-f", name]);
        }
        requestor.destroy(&activity_id).await;
    }

    // 100 MiB image: download + verify + load (+ container create) on deploy.
    std::fs::copy(&big_tar, fixture.files.join("big.tar")).unwrap();
    let big_package = format!("hash:sha3:{digest}:{}", fixture.server.url("big.tar"));
    let _ = docker::docker(&[
        "rmi",
        "-f",
        "golem-test-big:latest",
        &format!("golem-vm-cache:{digest}"),
    ]);
    let agreement_id = negotiate_agreement(&requestor.client, &demand(&big_package)).await;
    let activity_id = requestor.create_activity(&agreement_id).await;
    let started = Instant::now();
    let results = requestor.batch(&activity_id, json!([{"deploy": {}}])).await;
    let deploy = started.elapsed();
    assert_eq!(results[0].result, CommandResult::Ok, "{results:?}");
    // The exe unit's own figure: download + sha3 + load, without the batch
    // round trip and the container create.
    let unit_log = std::fs::read_to_string(
        fixture
            .provider_work
            .join(&activity_id)
            .join("exe-unit.log"),
    )
    .unwrap_or_default();
    let load_only = logged_milliseconds(&unit_log, "image loaded", "elapsed_ms")
        .map(|ms| Duration::from_secs_f64(ms / 1000.0));
    requestor.destroy(&activity_id).await;
    let load_start = Instant::now();
    let _ = docker::docker(&[
        "rmi",
        "-f",
        "golem-test-big:latest",
        &format!("golem-vm-cache:{digest}"),
    ]);
    let mut command = Command::new("docker");
    command.args(["load", "-q", "-i"]).arg(&big_tar);
    let _ = load_start;
    let bare_load = timed(command);

    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let (a, b) = (median(&mut create_to_first), median(&mut docker_run));
    let (c, d) = (median(&mut further), median(&mut docker_exec));
    let mb_s = |d: Duration| size as f64 / 1e6 / d.as_secs_f64();
    println!("\n| Measure | golem vm | bare docker | ratio | goal |\n|---|---|---|---|---|");
    println!(
        "| activity create → first `run` result, cached image (median of {rounds}) vs `docker run --rm` | {:.0} ms | {:.0} ms | {:.2} | ≤ 1.3 |",
        ms(a), ms(b), a.as_secs_f64() / b.as_secs_f64()
    );
    println!(
        "| further `run` round trip on a Ready container (median of {}) vs `docker exec` | {:.0} ms | {:.0} ms | {:.2} | ≤ 1.2 |",
        further.len(), ms(c), ms(d), c.as_secs_f64() / d.as_secs_f64()
    );
    println!(
        "| deploy of a {:.0} MB image: download + sha3 + load (+ create) vs bare `docker load` | {:.0} MB/s ({:.2} s) | {:.0} MB/s ({:.2} s) | | ≥ 100 MB/s |",
        size as f64 / 1e6, mb_s(deploy), deploy.as_secs_f64(), mb_s(bare_load), bare_load.as_secs_f64()
    );
    if let Some(load_only) = load_only {
        println!(
            "| … of which download + sha3 + load inside the exe unit (its log) | {:.0} MB/s ({:.2} s) | {:.0} MB/s ({:.2} s) | | ≥ 100 MB/s |",
            mb_s(load_only), load_only.as_secs_f64(), mb_s(bare_load), bare_load.as_secs_f64()
        );
    }
    let _ = docker::docker(&[
        "rmi",
        "-f",
        "golem-test-big:latest",
        &format!("golem-vm-cache:{digest}"),
    ]);
}

/// The number logged as `field=<n>` on the line of `message` in a text log
/// (ANSI colours stripped).
fn logged_milliseconds(log: &str, message: &str, field: &str) -> Option<f64> {
    let mut plain = String::with_capacity(log.len());
    let mut chars = log.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            plain.push(c);
        }
    }
    let line = plain.lines().find(|line| line.contains(message))?;
    let value = line.split(&format!("{field}=")).nth(1)?;
    value
        .split(|c: char| !(c.is_ascii_digit() || c == '.'))
        .next()?
        .parse()
        .ok()
}

/// A `.gvmi` of the test image ([`docker::write_gvmi`]) whose config adds
/// an environment variable.
fn gvmkit_image(dir: &Path) -> Vec<u8> {
    docker::build_test_image("busybox", IMAGE_TAG).unwrap();
    let mut config = docker::image_config(IMAGE_TAG).unwrap();
    config["Env"] = json!(["PATH=/bin", "GREETING=from squash"]);
    let out = dir.join("busybox.gvmi");
    docker::write_gvmi(IMAGE_TAG, &config, &out).unwrap();
    std::fs::read(out).unwrap()
}

#[tokio::test]
#[ignore = "tier docker: needs a Docker engine; scripts/test.sh runs it when one answers (GOLEM_TEST_DOCKER=1)"]
async fn docker_vm_runs_a_gvmkit_squash_image() {
    if !docker::enabled("docker_vm_runs_a_gvmkit_squash_image").unwrap() {
        return;
    }
    let fixture = fixture().await;
    let image = gvmkit_image(fixture._sandbox.path());
    let package = publish(&fixture, "busybox.gvmi", &image);
    let requestor = &fixture.requestor;
    let agreement_id = negotiate_agreement(&requestor.client, &demand(&package)).await;
    let activity_id = requestor.create_activity(&agreement_id).await;
    let results = requestor
        .batch(
            &activity_id,
            json!([{"deploy": {}}, {"start": {"args": []}},
                   run("/bin/sh", &["-c", "echo $GREETING; touch /data/ok && echo written"])]),
        )
        .await;
    assert!(
        results.iter().all(|r| r.result == CommandResult::Ok),
        "{results:?}\n{}",
        exe_unit_log(&fixture, &activity_id)
    );
    assert_eq!(text(&results[2].stdout), "from squash\nwritten\n");
    requestor.destroy(&activity_id).await;
    gone(&activity_id).await;

    // The squashfs cut short (its trailer kept), then one whose file system
    // is zeroed behind the superblock: each a clear deploy error.
    let digits = std::str::from_utf8(&image[image.len() - 8..]).unwrap();
    let trailer = &image[image.len() - 12 - digits.parse::<usize>().unwrap()..];
    let squashfs = &image[..image.len() - trailer.len()];
    let truncated = [&squashfs[..4096], trailer].concat();
    let zeroed = [&squashfs[..96], &vec![0u8; squashfs.len() - 96], trailer].concat();
    for (name, broken, words) in [
        ("truncated.gvmi", truncated, "the file is truncated"),
        ("zeroed.gvmi", zeroed, "not a valid gvmkit-squash image"),
    ] {
        let package = publish(&fixture, name, &broken);
        let agreement_id = negotiate_agreement(&requestor.client, &demand(&package)).await;
        let activity_id = requestor.create_activity(&agreement_id).await;
        let results = requestor.batch(&activity_id, json!([{"deploy": {}}])).await;
        assert_eq!(results[0].result, CommandResult::Error, "{results:?}");
        let message = results[0].message.clone().unwrap_or_default();
        assert!(message.contains(words), "{name}: {message}");
        requestor.destroy(&activity_id).await;
    }
}

/// Deploy `package` in a new activity, start it and run one command in it.
async fn deploy_and_start(fixture: &Fixture, package: &str) -> String {
    let requestor = &fixture.requestor;
    let agreement_id = negotiate_agreement(&requestor.client, &demand(package)).await;
    let activity_id = requestor.create_activity(&agreement_id).await;
    let results = requestor
        .batch(
            &activity_id,
            json!([{"deploy": {}}, {"start": {"args": []}}, run("/bin/echo", &["up"])]),
        )
        .await;
    assert!(
        results.iter().all(|r| r.result == CommandResult::Ok),
        "{results:?}\n{}",
        exe_unit_log(fixture, &activity_id)
    );
    activity_id
}

/// A variant of the test image (its own image id) saved as a tarball.
fn variant_tarball(dir: &Path, variant: &str) -> Vec<u8> {
    use std::io::Write;
    docker::build_test_image("busybox", IMAGE_TAG).unwrap();
    let tag = format!("golem-test-evict-{variant}:latest");
    let mut build = Command::new("docker")
        .args(["build", "-q", "-t", &tag, "-"])
        .env("DOCKER_BUILDKIT", "0")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    build
        .stdin
        .take()
        .unwrap()
        .write_all(format!("FROM {IMAGE_TAG}\nLABEL golem.test.variant={variant}\n").as_bytes())
        .unwrap();
    assert!(build.wait().unwrap().success());
    let out = dir.join(format!("{variant}.tar"));
    docker::save_image(&tag, &out).unwrap();
    std::fs::read(out).unwrap()
}

#[tokio::test]
#[ignore = "tier docker: needs a Docker engine; scripts/test.sh runs it when one answers (GOLEM_TEST_DOCKER=1)"]
async fn docker_vm_image_cache_evicts_the_least_recently_used_unused_images() {
    if !docker::enabled("docker_vm_image_cache_evicts_the_least_recently_used_unused_images")
        .unwrap()
    {
        return;
    }
    // The stand-in agent's exe units get this: keep one image.
    let fixture = fixture_with_env(vec![(
        golem_exe_unit::cli::ENV_CACHE_MAX_PACKAGES.to_string(),
        "1".to_string(),
    )])
    .await;
    let requestor = &fixture.requestor;
    let packages = fixture.provider_work.join("cache").join("packages");
    let mut published = Vec::new();
    for variant in ["a", "b", "c"] {
        let tarball = variant_tarball(fixture._sandbox.path(), variant);
        let digest = hex::encode(sha3::Sha3_224::digest(&tarball));
        let package = publish(&fixture, &format!("{variant}.tar"), &tarball);
        published.push((package, format!("golem-vm-cache:{digest}"), digest));
    }
    let cached = |tag: &str| docker::docker(&["image", "inspect", tag]).is_ok();

    // a and b run at once: a is the least recently used but its container keeps it.
    let first = deploy_and_start(&fixture, &published[0].0).await;
    let second = deploy_and_start(&fixture, &published[1].0).await;
    assert!(cached(&published[0].1), "an image in use was evicted");
    assert!(cached(&published[1].1));
    requestor.destroy(&first).await;
    requestor.destroy(&second).await;
    gone(&first).await;
    gone(&second).await;

    // c's deploy evicts both unused ones: cache tags and package files. The
    // image's own name is not the cache's (loads set no names): it stays.
    let third = deploy_and_start(&fixture, &published[2].0).await;
    assert!(!cached(&published[0].1), "a was not evicted");
    assert!(!cached(&published[1].1), "b was not evicted");
    assert!(cached("golem-test-evict-a:latest"));
    assert!(cached(&published[2].1));
    assert!(!packages.join(format!("sha3-{}", published[0].2)).exists());
    assert!(!packages.join(format!("sha3-{}", published[1].2)).exists());
    assert!(packages.join(format!("sha3-{}", published[2].2)).exists());
    requestor.destroy(&third).await;
    gone(&third).await;

    // An evicted package deploys again (downloaded and loaded anew).
    let again = deploy_and_start(&fixture, &published[0].0).await;
    requestor.destroy(&again).await;
    gone(&again).await;
    for (_, tag, _) in &published {
        let _ = docker::docker(&["rmi", tag]);
    }
    for variant in ["a", "b", "c"] {
        let _ = docker::docker(&["rmi", &format!("golem-test-evict-{variant}:latest")]);
    }
}

/// The rootful test image as a `docker save` tarball.
fn rootful_tarball(dir: &Path) -> Vec<u8> {
    docker::build_test_image("rootful", "golem-test-rootful:latest").unwrap();
    let out = dir.join("rootful.tar");
    docker::save_image("golem-test-rootful:latest", &out).unwrap();
    std::fs::read(out).unwrap()
}

/// The mount options of the mount at exactly `path` (from /proc/self/mountinfo).
fn mount_options(path: &Path) -> Option<String> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let path = path.to_string_lossy();
    mountinfo
        .lines()
        .rfind(|line| line.split(' ').nth(4) == Some(path.as_ref()))
        .and_then(|line| line.split(' ').nth(5).map(str::to_string))
}

#[tokio::test]
#[ignore = "tier docker: needs a Docker engine; scripts/test.sh runs it when one answers (GOLEM_TEST_DOCKER=1)"]
async fn docker_vm_runs_images_as_on_the_original_under_gvisor() {
    if !docker::enabled("docker_vm_runs_images_as_on_the_original_under_gvisor").unwrap() {
        return;
    }
    // The provider's default sandbox (scripts/ensure-docker.sh registers gVisor).
    let fixture = fixture().await;
    let tarball = rootful_tarball(fixture._sandbox.path());
    let package = publish(&fixture, "rootful.tar", &tarball);
    let requestor = &fixture.requestor;
    let agreement_id = negotiate_agreement(&requestor.client, &demand(&package)).await;
    let activity_id = requestor.create_activity(&agreement_id).await;

    // Root, a writable root file system, the image's WORKDIR and ENV.
    let results = requestor
        .batch(
            &activity_id,
            json!([
                {"deploy": {}},
                {"start": {"args": ["--start-entrypoint"]}},
                run("/bin/sh", &["-c", "id -u; pwd; echo $GREETING; \
                    echo conf > /etc/golem.conf && cat /etc/golem.conf; \
                    echo 42 > /var/run/app.pid && cat /var/run/app.pid; \
                    chown 1:1 /etc/golem.conf && echo chowned"]),
                run("/bin/cat", &["/proc/version"]),
            ]),
        )
        .await;
    assert!(
        results.iter().all(|r| r.result == CommandResult::Ok),
        "{results:?}\n{}",
        exe_unit_log(&fixture, &activity_id)
    );
    assert_eq!(
        text(&results[2].stdout),
        "0\n/srv\nfrom-the-image\nconf\n42\nchowned\n",
        "{results:?}"
    );
    // gVisor's kernel, not the host's.
    let guest_version = text(&results[3].stdout);
    assert!(
        docker::names_another_kernel(&guest_version).unwrap(),
        "{guest_version} names the host's kernel"
    );
    let container = container_of(&activity_id).await;
    let inspect = docker::inspect(&container).unwrap();
    let host = &inspect["HostConfig"];
    assert_eq!(host["Runtime"], "runsc", "{host}");
    assert_eq!(host["ReadonlyRootfs"], false, "{host}");
    assert_eq!(host["CapDrop"], Value::Null, "{host}");
    assert_eq!(host["Memory"], 128 << 20, "{host}");
    assert!(host["PidsLimit"].as_i64().unwrap() > 0, "{host}");

    // The entry point was started by `start --start-entrypoint`.
    let mut started = String::new();
    for _ in 0..50 {
        let results = requestor
            .batch(
                &activity_id,
                json!([run("/bin/cat", &["/srv/entrypoint.txt"])]),
            )
            .await;
        started = text(&results[0].stdout);
        if started.trim() == "started" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(started.trim(), "started");

    // Writes to /proc/sys stay inside.
    let host_hostname = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let results = requestor
        .batch(
            &activity_id,
            json!([run("/bin/sh", &["-c",
            "echo golem-escape > /proc/sys/kernel/hostname; echo 3 > /proc/sys/vm/drop_caches; \
             echo 1 > /proc/sys/kernel/sysrq; echo done"])]),
        )
        .await;
    assert_eq!(text(&results[0].stdout).trim(), "done", "{results:?}");
    assert_eq!(
        std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap(),
        host_hostname
    );

    // A setuid binary and a device node made by root inside cannot serve
    // anyone on the host: the work dir is 0700 and the volumes' mount is
    // nosuid,nodev.
    let results = requestor
        .batch(
            &activity_id,
            json!([run(
                "/bin/sh",
                &[
                    "-c",
                    "cp /bin/busybox /golem/output/sb && chmod 4755 /golem/output/sb && \
             mknod /golem/output/null c 1 3; ls -l /golem/output/sb"
                ]
            )]),
        )
        .await;
    assert_eq!(results[0].result, CommandResult::Ok, "{results:?}");
    let work = fixture.provider_work.join(&activity_id).join("work");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&work).unwrap().permissions().mode() & 0o777,
        0o700
    );
    let options = mount_options(&work.join("volumes")).expect("the volumes are a mount");
    let options: Vec<&str> = options.split(',').collect();
    assert!(options.contains(&"nosuid"), "{options:?}");
    assert!(options.contains(&"nodev"), "{options:?}");
    // The binary is there (so the mount, not luck, makes it harmless).
    let output_volume = std::fs::read_dir(work.join("volumes"))
        .unwrap()
        .filter_map(Result::ok)
        .map(|entry| entry.path().join("sb"))
        .find(|path| path.exists())
        .expect("the setuid binary reached the host dir");
    let on_host = std::fs::metadata(&output_volume).unwrap();
    let setuid_on_host = on_host.permissions().mode() & 0o4000 != 0;
    let nosuid_here = nix::sys::statvfs::statvfs(&output_volume)
        .unwrap()
        .flags()
        .contains(nix::sys::statvfs::FsFlags::ST_NOSUID);
    assert!(
        !setuid_on_host || nosuid_here,
        "a setuid binary on a suid mount"
    );

    // A memory bomb ends the sandbox (the memory limit), reported as such.
    let results = requestor
        .batch(
            &activity_id,
            json!([run("/bin/sh", &["-c", "tail /dev/zero"])]),
        )
        .await;
    assert_eq!(results[0].result, CommandResult::Error, "{results:?}");
    assert!(
        format!("{results:?}").contains("memory limit"),
        "{results:?}"
    );
    requestor.destroy(&activity_id).await;
    gone(&activity_id).await;
    // The volumes' mount went with the activity.
    let deadline = Instant::now() + Duration::from_secs(10);
    while mount_options(&work.join("volumes")).is_some() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(mount_options(&work.join("volumes")), None);

    // A fork bomb stays inside (gVisor's tasks are not host processes; the
    // sandbox ends at its memory or pids limit) and the provider serves on.
    let agreement_id = negotiate_agreement(&requestor.client, &demand(&package)).await;
    let bombed = requestor.create_activity(&agreement_id).await;
    let started = Instant::now();
    let results = requestor
        .batch(
            &bombed,
            json!([
                {"deploy": {}},
                {"start": {"args": []}},
                run("/bin/sh", &["-c", "b() { b | b & }; b; sleep 60"]),
            ]),
        )
        .await;
    assert_eq!(results[2].result, CommandResult::Error, "{results:?}");
    assert!(started.elapsed() < Duration::from_secs(60), "{results:?}");
    requestor.destroy(&bombed).await;
    gone(&bombed).await;
    let agreement_id = negotiate_agreement(&requestor.client, &demand(&package)).await;
    let after = requestor.create_activity(&agreement_id).await;
    let results = requestor
        .batch(
            &after,
            json!([{"deploy": {}}, {"start": {"args": []}}, run("/bin/echo", &["alive"])]),
        )
        .await;
    assert_eq!(text(&results[2].stdout).trim(), "alive", "{results:?}");
    requestor.destroy(&after).await;
    gone(&after).await;
}

/// Benchmark (run by `scripts/bench/sandbox.sh` on release builds): activity
/// create → first `run` result and a further `run`, under gVisor and under
/// runc, side by side with bare `docker run --rm --runtime=runsc` and
/// `docker run --rm`. Prints table rows; asserts nothing about time.
#[tokio::test]
#[ignore = "benchmark: run with scripts/bench/sandbox.sh"]
async fn bench_sandbox() {
    docker::enabled("bench_sandbox").unwrap();
    let rounds: usize = 7;
    let further_runs: usize = 20;
    docker::build_test_image("busybox", IMAGE_TAG).unwrap();
    let first_batch = json!([{"deploy": {}}, {"start": {"args": []}}, run("/bin/echo", &["hi"])]);
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let mut rows = Vec::new();
    let mut golem = Vec::new();
    for sandbox in ["gvisor", "runc"] {
        let fixture =
            fixture_with_env(vec![("GOLEM_VM_SANDBOX".to_string(), sandbox.to_string())]).await;
        let requestor = &fixture.requestor;
        let tarball = image_tarball(fixture._sandbox.path());
        let package = publish(&fixture, "busybox.tar", &tarball);
        // Warm the caches (package file and engine tag).
        let agreement_id = negotiate_agreement(&requestor.client, &demand(&package)).await;
        let warm = requestor.create_activity(&agreement_id).await;
        requestor.batch(&warm, first_batch.clone()).await;
        requestor.destroy(&warm).await;
        let mut create_to_first = Vec::new();
        let mut further = Vec::new();
        for round in 0..rounds {
            let agreement_id = negotiate_agreement(&requestor.client, &demand(&package)).await;
            let started = Instant::now();
            let activity_id = requestor.create_activity(&agreement_id).await;
            let results = requestor.batch(&activity_id, first_batch.clone()).await;
            create_to_first.push(started.elapsed());
            assert_eq!(text(&results[2].stdout).trim(), "hi", "{results:?}");
            if round == 0 {
                for _ in 0..further_runs {
                    let started = Instant::now();
                    let results = requestor
                        .batch(&activity_id, json!([run("/bin/echo", &["hi"])]))
                        .await;
                    further.push(started.elapsed());
                    assert_eq!(results[0].result, CommandResult::Ok);
                }
            }
            requestor.destroy(&activity_id).await;
        }
        golem.push((sandbox, median(&mut create_to_first), median(&mut further)));
    }
    let bare = |runtime: Option<&str>| {
        let mut samples = Vec::new();
        for _ in 0..rounds {
            let mut command = Command::new("docker");
            command.args(["run", "--rm", "--network", "none"]);
            if let Some(runtime) = runtime {
                command.arg(format!("--runtime={runtime}"));
            }
            command.args([IMAGE_TAG, "/bin/echo", "hi"]);
            samples.push(timed(command));
        }
        median(&mut samples)
    };
    let bare_runsc = bare(Some("runsc"));
    let bare_runc = bare(None);
    let bare_exec = |runtime: Option<&str>| {
        let name = "golem-bench-sandbox-exec";
        let _ = docker::docker(&["rm", "-f", name]);
        let mut args = vec!["run", "-d", "--name", name, "--network", "none"];
        let flag = runtime.map(|runtime| format!("--runtime={runtime}"));
        if let Some(flag) = &flag {
            args.push(flag);
        }
        args.extend([IMAGE_TAG, "sleep", "600"]);
        docker::docker(&args).unwrap();
        let mut samples = Vec::new();
        for _ in 0..further_runs {
            let mut command = Command::new("docker");
            command.args(["exec", name, "/bin/echo", "hi"]);
            samples.push(timed(command));
        }
        let _ = docker::docker(&["rm", "-f", name]);
        median(&mut samples)
    };
    let exec_runsc = bare_exec(Some("runsc"));
    let exec_runc = bare_exec(None);
    let (gvisor, runc) = (golem[0], golem[1]);
    rows.push(format!(
        "| activity create → first `run` result, cached image (median of {rounds}) | {:.0} ms | {:.0} ms | {:.0} ms | {:.0} ms | {:.2} | {:.2} | ≤ 1.3 |",
        ms(gvisor.1), ms(runc.1), ms(bare_runsc), ms(bare_runc),
        gvisor.1.as_secs_f64() / bare_runsc.as_secs_f64(),
        gvisor.1.as_secs_f64() / runc.1.as_secs_f64(),
    ));
    rows.push(format!(
        "| further `run` round trip (median of {further_runs}) vs `docker exec` | {:.0} ms | {:.0} ms | {:.0} ms | {:.0} ms | {:.2} | {:.2} | |",
        ms(gvisor.2), ms(runc.2), ms(exec_runsc), ms(exec_runc),
        gvisor.2.as_secs_f64() / exec_runsc.as_secs_f64(),
        gvisor.2.as_secs_f64() / runc.2.as_secs_f64(),
    ));
    println!(
        "\n| Measure | golem vm, gVisor | golem vm, runc | bare runsc | bare runc | gVisor ÷ bare runsc | gVisor ÷ runc (golem) | goal |\n|---|---|---|---|---|---|---|---|"
    );
    for row in rows {
        println!("{row}");
    }
}

#[tokio::test]
#[ignore = "tier docker: needs a Docker engine; scripts/test.sh runs it when one answers (GOLEM_TEST_DOCKER=1)"]
async fn docker_vm_time_limit_kills_the_command_inside_gvisor() {
    if !docker::enabled("docker_vm_time_limit_kills_the_command_inside_gvisor").unwrap() {
        return;
    }
    // Runs may take 3 s on this provider.
    let fixture = fixture_with_options(StandinOptions {
        allow_private_transfers: true,
        args: vec!["--max-run-time".into(), "3".into()],
        ..Default::default()
    })
    .await;
    let tarball = image_tarball(fixture._sandbox.path());
    let package = publish(&fixture, "busybox.tar", &tarball);
    let requestor = &fixture.requestor;
    let agreement_id = negotiate_agreement(&requestor.client, &demand(&package)).await;
    let activity_id = requestor.create_activity(&agreement_id).await;
    let started = Instant::now();
    let results = requestor
        .batch(
            &activity_id,
            json!([
                {"deploy": {}},
                {"start": {"args": []}},
                run("/bin/sh", &["-c", "sleep 31; echo never"]),
            ]),
        )
        .await;
    assert_eq!(results[2].result, CommandResult::Error, "{results:?}");
    assert!(format!("{results:?}").contains("time limit"), "{results:?}");
    assert!(started.elapsed() < Duration::from_secs(25), "{results:?}");
    let inspect = docker::inspect(&container_of(&activity_id).await).unwrap();
    assert_eq!(inspect["HostConfig"]["Runtime"], "runsc");
    // Nothing of it is left inside the sandbox (killing `runsc exec` on the
    // host alone would leave it running).
    let results =
        requestor
            .batch(
                &activity_id,
                json!([run("/bin/sh", &["-c",
            "for p in /proc/[0-9]*; do tr '\\0' ' ' < $p/cmdline 2>/dev/null; echo; done"])]),
            )
            .await;
    let processes = text(&results[0].stdout);
    assert!(!processes.contains("echo never"), "{processes}");
    assert!(!processes.contains("sleep 31"), "{processes}");
    requestor.destroy(&activity_id).await;
    gone(&activity_id).await;
}

/// `scripts/ensure-docker.sh` enters both gVisor runtimes into a
/// `daemon.json` it is pointed at (`GOLEM_DOCKER_DAEMON_JSON`), keeping
/// what is there, and leaves the file alone when they are there as wanted
/// (so it reloads dockerd only then); the wrapper it installs runs runsc.
/// The first call sends the running dockerd a SIGHUP, which rereads the
/// engine's own configuration file, not the test's: nothing changes there.
#[test]
#[ignore = "tier docker: needs a Docker engine and root; scripts/test.sh runs it when one answers (GOLEM_TEST_DOCKER=1)"]
fn docker_ensure_docker_registers_both_gvisor_runtimes_once() {
    if !docker::enabled("docker_ensure_docker_registers_both_gvisor_runtimes_once").unwrap() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let daemon_json = dir.path().join("daemon.json");
    let theirs = json!({"log-level": "warn", "runtimes": {"other": {"path": "/opt/other"}}});
    std::fs::write(&daemon_json, theirs.to_string()).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/ensure-docker.sh");
    let ensure = || {
        let output = Command::new("bash")
            .arg(&script)
            .env("GOLEM_DOCKER_DAEMON_JSON", &daemon_json)
            .env("VERBOSE", "1")
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&output.stderr).into_owned();
        assert!(output.status.success(), "{said}");
        said
    };
    let said = ensure();
    assert!(said.contains("entered in"), "{said}");
    let merged: Value =
        serde_json::from_str(&std::fs::read_to_string(&daemon_json).unwrap()).unwrap();
    assert_eq!(merged["log-level"], "warn", "{merged}");
    assert_eq!(
        merged["runtimes"]["other"]["path"], "/opt/other",
        "{merged}"
    );
    assert_eq!(
        merged["runtimes"]["runsc"]["runtimeArgs"],
        json!(["--network=none", "--overlay2=root:memory"]),
        "{merged}"
    );
    let networked = &merged["runtimes"]["runsc-net"];
    assert_eq!(
        networked["runtimeArgs"],
        json!(["--network=sandbox", "--overlay2=root:memory"]),
        "{merged}"
    );
    // Once there, nothing is written and dockerd is not reloaded.
    let written = std::fs::metadata(&daemon_json).unwrap().modified().unwrap();
    let said = ensure();
    assert!(
        !said.contains("entered in") && !said.contains("reloading"),
        "{said}"
    );
    assert_eq!(
        std::fs::metadata(&daemon_json).unwrap().modified().unwrap(),
        written
    );
    // The installed wrapper runs runsc (its mount namespace set up on the way).
    let wrapper = networked["path"].as_str().unwrap();
    let version = Command::new(wrapper).arg("--version").output().unwrap();
    assert!(
        version.status.success()
            && String::from_utf8_lossy(&version.stdout).contains("runsc version"),
        "{}",
        String::from_utf8_lossy(&version.stderr)
    );
}
