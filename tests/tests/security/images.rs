//! Security cases: images. A requestor's task package must not reach past
//! its own container on the provider's engine: a `docker save` tarball loads
//! without the names it carries (so it cannot move `victim-app:latest` or
//! another package's `golem-vm-cache:<sha3>`), a cached image is reused only
//! while its tag names the image the exe unit recorded, and `docker:<ref>`
//! packages (any image the engine holds) are refused unless the provider
//! allows them. A requestor daemon drives `exe-unit-vm` on a provider daemon
//! through a stand-in agent; needs `GOLEM_TEST_DOCKER=1` and an engine.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use golem_model::activity::{CommandResult, ExeScriptCommand, ExeScriptCommandResult};
use golem_model::market::DemandOfferBase;
use golem_tests::abuse::report;
use golem_tests::docker;
use golem_tests::http::FileServer;
use golem_tests::negotiation::negotiate_agreement;
use golem_tests::standin::{spawn_standin_agent_with_env, ExeUnits};
use golem_tests::{eventually, Sandbox};
use serde_json::{json, Value};
use sha3::Digest;

const SUBNET: &str = "e2e-security-images";
const BASE_TAG: &str = "golem-test-busybox:latest";
/// Another package's image on the provider's engine, which a requestor
/// names in its tarball to take over.
const VICTIM_TAG: &str = "victim-app:latest";
const ACTIVITY_LABEL: &str = "golem.activity-id";

fn offer() -> DemandOfferBase {
    DemandOfferBase {
        properties: json!({
            "golem.node.debug.subnet": SUBNET,
            "golem.node.id.name": "images-provider",
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

fn demand(package: &str) -> DemandOfferBase {
    DemandOfferBase {
        properties: json!({
            "golem.node.debug.subnet": SUBNET,
            "golem.srv.comp.task_package": package,
            "golem.srv.comp.expiration": chrono::Utc::now().timestamp_millis() + 3_600_000,
        }),
        constraints: format!("(&(golem.node.debug.subnet={SUBNET})(golem.runtime.name=vm))"),
    }
}

struct Fixture {
    sandbox: Sandbox,
    _server: FileServer,
    server_url: String,
    files: PathBuf,
    provider_work: PathBuf,
    _exe_units: ExeUnits,
    requestor: golem_client::GolemClient,
}

/// A provider daemon with a stand-in agent spawning `exe-unit-vm` with
/// `env`, a requestor daemon and a file server for packages.
async fn fixture(env: Vec<(String, String)>) -> Fixture {
    let mut sandbox = Sandbox::new();
    sandbox.provider_and_requestor().unwrap();
    let files = sandbox.path().join("files");
    std::fs::create_dir_all(&files).unwrap();
    let server = FileServer::start(files.clone()).await.unwrap();
    let provider_work = sandbox.path().join("provider-work");
    let provider = &sandbox.daemons()[0];
    let offer_id = provider.client().subscribe_offer(&offer()).await.unwrap();
    let exe_units = spawn_standin_agent_with_env(
        provider,
        offer_id,
        offer(),
        "exe-unit-vm",
        provider_work.clone(),
        env,
    );
    let requestor = sandbox.daemons()[1].client();
    Fixture {
        sandbox,
        server_url: server.url(""),
        _server: server,
        files,
        provider_work,
        _exe_units: exe_units,
        requestor,
    }
}

impl Fixture {
    /// Serve `bytes` as `name`; returns the package `hash:sha3:<hex>:<url>`.
    fn publish(&self, name: &str, bytes: &[u8]) -> String {
        std::fs::write(self.files.join(name), bytes).unwrap();
        format!(
            "hash:sha3:{}:{}{name}",
            hex::encode(sha3::Sha3_224::digest(bytes)),
            self.server_url
        )
    }

    fn exe_unit_log(&self, activity_id: &str) -> String {
        std::fs::read_to_string(self.provider_work.join(activity_id).join("exe-unit.log"))
            .unwrap_or_default()
    }

    /// A new activity on `package` that deploys and starts; its results.
    async fn deploy(&self, package: &str) -> (String, Vec<ExeScriptCommandResult>) {
        let agreement_id = negotiate_agreement(&self.requestor, &demand(package)).await;
        let activity_id = self
            .requestor
            .create_activity(&agreement_id, 30.0)
            .await
            .unwrap();
        let script: Vec<ExeScriptCommand> =
            serde_json::from_value(json!([{"deploy": {}}, {"start": {"args": []}}])).unwrap();
        let batch_id = self.requestor.exec(&activity_id, &script).await.unwrap();
        let results = self
            .requestor
            .wait_batch(&activity_id, &batch_id, Duration::from_secs(120))
            .await
            .unwrap();
        (activity_id, results)
    }

    /// The image id the activity's container was created from; then the
    /// activity is destroyed and its container awaited gone.
    async fn image_and_destroy(&self, activity_id: &str) -> String {
        let label = format!("{ACTIVITY_LABEL}={activity_id}");
        let containers = docker::containers_with_label(&label).unwrap();
        assert_eq!(containers.len(), 1, "{containers:?}");
        let image = docker::inspect(&containers[0]).unwrap()["Image"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        self.requestor.destroy_activity(activity_id).await.unwrap();
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
        image
    }
}

fn all_ok(results: &[ExeScriptCommandResult]) -> bool {
    !results.is_empty() && results.iter().all(|r| r.result == CommandResult::Ok)
}

/// The image id `reference` names on the engine, if any.
fn image_of(reference: &str) -> Option<String> {
    docker::docker(&["image", "inspect", "--format", "{{.Id}}", reference]).ok()
}

/// Build a variant of the busybox test image (its own id) as `tag`.
fn variant_image(tag: &str, variant: &str) -> String {
    docker::build_test_image("busybox", BASE_TAG).unwrap();
    let mut build = Command::new("docker")
        .args(["build", "-q", "-t", tag, "-"])
        .env("DOCKER_BUILDKIT", "0")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    build
        .stdin
        .take()
        .unwrap()
        .write_all(format!("FROM {BASE_TAG}\nLABEL golem.test.security={variant}\n").as_bytes())
        .unwrap();
    assert!(build.wait().unwrap().success(), "docker build {tag}");
    image_of(tag).unwrap()
}

/// `docker save` of `image`, repacked with `tar` so that its manifest.json
/// and legacy `repositories` name `tags` (what a requestor controls).
fn tarball_naming(image: &str, tags: &[&str], dir: &Path) -> Vec<u8> {
    let saved = dir.join("saved.tar");
    docker::save_image(image, &saved).unwrap();
    let unpacked = dir.join("unpacked");
    std::fs::create_dir_all(&unpacked).unwrap();
    let status = Command::new("tar")
        .arg("-xf")
        .arg(&saved)
        .arg("-C")
        .arg(&unpacked)
        .status()
        .unwrap();
    assert!(status.success());
    let manifest_path = unpacked.join("manifest.json");
    let mut manifest: Value =
        serde_json::from_slice(&std::fs::read(&manifest_path).unwrap()).unwrap();
    manifest[0]["RepoTags"] = json!(tags);
    std::fs::write(&manifest_path, serde_json::to_vec(&manifest).unwrap()).unwrap();
    let repositories_path = unpacked.join("repositories");
    if let Ok(text) = std::fs::read(&repositories_path) {
        let repositories: Value = serde_json::from_slice(&text).unwrap();
        let top_layer = repositories
            .as_object()
            .and_then(|repos| repos.values().next())
            .and_then(Value::as_object)
            .and_then(|tags| tags.values().next())
            .cloned()
            .unwrap_or_default();
        let mut named = serde_json::Map::new();
        for tag in tags {
            let (repository, version) = tag.split_once(':').unwrap();
            named.insert(repository.into(), json!({ version: top_layer }));
        }
        std::fs::write(&repositories_path, serde_json::to_vec(&named).unwrap()).unwrap();
    }
    let repacked = dir.join("repacked.tar");
    let status = Command::new("tar")
        .arg("-cf")
        .arg(&repacked)
        .arg("-C")
        .arg(&unpacked)
        .arg(".")
        .status()
        .unwrap();
    assert!(status.success());
    std::fs::read(repacked).unwrap()
}

fn short(id: &Option<String>) -> String {
    match id {
        Some(id) => id.trim_start_matches("sha256:").chars().take(12).collect(),
        None => "(none)".into(),
    }
}

#[tokio::test]
#[ignore = "tier docker: needs a Docker engine; scripts/test.sh runs it when one answers (GOLEM_TEST_DOCKER=1)"]
async fn docker_a_requestors_tarball_cannot_move_tags_on_the_providers_engine() {
    if !docker::enabled("docker_a_requestors_tarball_cannot_move_tags_on_the_providers_engine")
        .unwrap()
    {
        return;
    }
    let fixture = fixture(Vec::new()).await;
    let scratch = fixture.sandbox.path().join("images");
    std::fs::create_dir_all(&scratch).unwrap();

    // The provider's engine: someone's `victim-app:latest`, and an honest
    // package this provider has cached as golem-vm-cache:<its sha3>.
    let victim_id = variant_image(VICTIM_TAG, "victim");
    let honest_id = variant_image("golem-sec-honest:build", "honest");
    let honest_tarball = {
        let out = scratch.join("honest.tar");
        docker::save_image("golem-sec-honest:build", &out).unwrap();
        std::fs::read(out).unwrap()
    };
    let honest_digest = hex::encode(sha3::Sha3_224::digest(&honest_tarball));
    let honest = fixture.publish("honest.tar", &honest_tarball);
    let cache_tag = format!("golem-vm-cache:{honest_digest}");
    let (activity_id, results) = fixture.deploy(&honest).await;
    assert!(
        all_ok(&results),
        "{results:?}\n{}",
        fixture.exe_unit_log(&activity_id)
    );
    assert_eq!(fixture.image_and_destroy(&activity_id).await, honest_id);
    assert_eq!(image_of(&cache_tag).as_deref(), Some(honest_id.as_str()));

    // The attack: a requestor's image saved under both names.
    let attacker_id = variant_image("golem-sec-attacker:build", "attacker");
    let poisoned = tarball_naming(
        "golem-sec-attacker:build",
        &[VICTIM_TAG, &cache_tag],
        &scratch,
    );
    let _ = docker::docker(&["rmi", "golem-sec-attacker:build"]);
    let package = fixture.publish("poisoned.tar", &poisoned);
    let (activity_id, results) = fixture.deploy(&package).await;
    let victim_now = image_of(VICTIM_TAG);
    let cache_now = image_of(&cache_tag);
    report(
        "requestor tarball whose manifest names victim-app:latest and another package's golem-vm-cache:<sha3>",
        "loaded without names: both tags keep their images",
        &format!(
            "{VICTIM_TAG} -> {} (was {}), cache tag -> {} (was {})",
            short(&victim_now),
            short(&Some(victim_id.clone())),
            short(&cache_now),
            short(&Some(honest_id.clone()))
        ),
    );
    assert_eq!(victim_now.as_deref(), Some(victim_id.as_str()));
    assert_eq!(cache_now.as_deref(), Some(honest_id.as_str()));
    // The requestor's image itself still runs, by id.
    assert!(
        all_ok(&results),
        "{results:?}\n{}",
        fixture.exe_unit_log(&activity_id)
    );
    assert_eq!(fixture.image_and_destroy(&activity_id).await, attacker_id);

    // A cache tag moved by anything else (an older exe unit's load, another
    // tool on the engine) is not trusted: the honest package is loaded
    // again from its verified file and the tag set back.
    docker::docker(&["tag", &attacker_id, &cache_tag]).unwrap();
    let (activity_id, results) = fixture.deploy(&honest).await;
    let log = fixture.exe_unit_log(&activity_id);
    assert!(all_ok(&results), "{results:?}\n{log}");
    let ran = fixture.image_and_destroy(&activity_id).await;
    report(
        "golem-vm-cache:<sha3> moved to another image on the provider's engine",
        "not reused: reloaded from the verified package",
        &format!("container ran {}", short(&Some(ran.clone()))),
    );
    assert_eq!(ran, honest_id, "{log}");
    assert!(
        log.contains("does not name the image this provider recorded"),
        "{log}"
    );
    assert_eq!(image_of(&cache_tag).as_deref(), Some(honest_id.as_str()));

    for reference in [
        cache_tag.as_str(),
        &format!(
            "golem-vm-cache:{}",
            hex::encode(sha3::Sha3_224::digest(&poisoned))
        ),
        VICTIM_TAG,
        "golem-sec-honest:build",
    ] {
        let _ = docker::docker(&["rmi", reference]);
    }
}

#[tokio::test]
#[ignore = "tier docker: needs a Docker engine; scripts/test.sh runs it when one answers (GOLEM_TEST_DOCKER=1)"]
async fn docker_a_docker_reference_package_is_refused_unless_the_provider_allows_it() {
    if !docker::enabled(
        "docker_a_docker_reference_package_is_refused_unless_the_provider_allows_it",
    )
    .unwrap()
    {
        return;
    }
    docker::build_test_image("busybox", BASE_TAG).unwrap();
    // The stand-in agent sets nothing: the exe unit's default.
    let fixture = fixture(Vec::new()).await;
    let (activity_id, results) = fixture.deploy(&format!("docker:{BASE_TAG}")).await;
    let message = results
        .first()
        .and_then(|result| result.message.clone())
        .unwrap_or_default();
    report(
        "docker:<ref> package naming an image already on the provider's engine",
        "deploy refused, naming allow-docker-images",
        &message,
    );
    assert_eq!(
        results.first().map(|result| result.result),
        Some(CommandResult::Error),
        "{results:?}"
    );
    assert!(message.contains("allow-docker-images"), "{message}");
    let label = format!("{ACTIVITY_LABEL}={activity_id}");
    assert!(docker::containers_with_label(&label).unwrap().is_empty());
}

/// Deploy `package` through a real `golem-provider` started with `options`
/// on its own subnet; the deploy's results.
async fn deploy_through_agent(
    sandbox: &mut Sandbox,
    name: &str,
    options: golem_tests::provider::ProviderOptions,
    package: &str,
) -> Vec<ExeScriptCommandResult> {
    use golem_tests::provider::{Preset, ProviderAgent};
    let subnet = options.subnet.clone();
    let agent_dir = sandbox.path().join(name);
    let agent = ProviderAgent::start(
        &sandbox.daemons()[0],
        &agent_dir,
        options
            .exe_units(&["vm"])
            .preset(Preset::new("vm", "vm", "0", "0.01", "0.001")),
    )
    .unwrap();
    let requestor = sandbox.daemons()[1].client();
    let demand = golem_tests::demands::paid_demand(&requestor, &subnet, "vm", package).await;
    let agreement_id =
        golem_tests::provider::negotiate_with_agent(&requestor, &demand, &agent).await;
    let activity_id = requestor
        .create_activity(&agreement_id, 30.0)
        .await
        .unwrap();
    let script: Vec<ExeScriptCommand> =
        serde_json::from_value(json!([{"deploy": {}}, {"start": {"args": []}}])).unwrap();
    let batch_id = requestor.exec(&activity_id, &script).await.unwrap();
    let results = requestor
        .wait_batch(&activity_id, &batch_id, Duration::from_secs(120))
        .await
        .unwrap();
    let _ = requestor.destroy_activity(&activity_id).await;
    let _ = requestor
        .terminate_agreement(
            &agreement_id,
            Some(&golem_model::market::Reason::new("work done")),
        )
        .await;
    drop(agent);
    results
}

#[tokio::test]
#[ignore = "tier docker: needs a Docker engine; scripts/test.sh runs it when one answers (GOLEM_TEST_DOCKER=1)"]
async fn docker_the_provider_agent_refuses_docker_references_unless_allowed() {
    use golem_tests::provider::ProviderOptions;
    if !docker::enabled("docker_the_provider_agent_refuses_docker_references_unless_allowed")
        .unwrap()
    {
        return;
    }
    docker::build_test_image("busybox", BASE_TAG).unwrap();
    let mut sandbox = Sandbox::new();
    sandbox.provider_and_requestor().unwrap();
    let package = format!("docker:{BASE_TAG}");

    // A provider agent as installed: the setting is off.
    let results = deploy_through_agent(
        &mut sandbox,
        "agent-default",
        ProviderOptions::new("e2e-security-images-agent-default"),
        &package,
    )
    .await;
    let message = results
        .first()
        .and_then(|result| result.message.clone())
        .unwrap_or_default();
    report(
        "docker:<ref> package sent to a real golem-provider with default settings",
        "deploy refused, naming allow-docker-images",
        &message,
    );
    assert_eq!(
        results.first().map(|result| result.result),
        Some(CommandResult::Error),
        "{results:?}"
    );
    assert!(message.contains("allow-docker-images"), "{message}");

    // The operator's opt-in reaches the exe unit.
    let results = deploy_through_agent(
        &mut sandbox,
        "agent-allowing",
        ProviderOptions::new("e2e-security-images-agent-allowing").arg("--allow-docker-images"),
        &package,
    )
    .await;
    assert!(all_ok(&results), "{results:?}");
}
