//! The container settings `VmRuntime::deploy` asks the engine for, checked
//! without Docker: the runtime talks to a fake engine on a Unix socket that
//! records every request and answers only what a deploy of a `docker:` image
//! needs (engine info, image inspect, container create). The create
//! request's body is the container config: sandbox runtime, capabilities,
//! read-only root, no-new-privileges, user, pids/memory limits, network,
//! mounts and labels.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use golem_exe_unit::runtime::{DeployRequest, Runtime};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};

use super::*;

/// One request the fake engine received.
#[derive(Debug, Clone)]
struct Recorded {
    method: String,
    /// Path and query, without the API version prefix.
    target: String,
    body: Value,
}

/// A fake Docker engine: answers image inspects with `image` and container
/// creates with a fixed id, anything else with 404; records every request.
struct FakeEngine {
    socket: PathBuf,
    requests: Arc<Mutex<Vec<Recorded>>>,
    task: tokio::task::JoinHandle<()>,
}

/// The runtimes the fake engine lists unless told otherwise.
fn default_runtimes() -> Value {
    json!({"runc": {"path": "runc"}, "runsc": {"path": "/usr/bin/runsc"}})
}

impl FakeEngine {
    /// An engine listing `runtimes` in its info.
    fn start(dir: &Path, image: Value, runtimes: Value) -> FakeEngine {
        let socket = dir.join("docker.sock");
        let listener = UnixListener::bind(&socket).unwrap();
        let requests: Arc<Mutex<Vec<Recorded>>> = Arc::default();
        let recorded = requests.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve(
                    stream,
                    image.clone(),
                    runtimes.clone(),
                    recorded.clone(),
                ));
            }
        });
        FakeEngine {
            socket,
            requests,
            task,
        }
    }

    fn docker(&self) -> Docker {
        Docker::connect_with_unix(
            self.socket.to_str().unwrap(),
            10,
            bollard::API_DEFAULT_VERSION,
        )
        .unwrap()
    }

    fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }
}

impl Drop for FakeEngine {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Answer HTTP/1.1 requests on one connection until the client closes it.
async fn serve(
    mut stream: UnixStream,
    image: Value,
    runtimes: Value,
    requests: Arc<Mutex<Vec<Recorded>>>,
) {
    let mut buffer = Vec::new();
    loop {
        let header_end = loop {
            if let Some(end) = buffer.windows(4).position(|window| window == b"\r\n\r\n") {
                break end + 4;
            }
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(read) => buffer.extend_from_slice(&chunk[..read]),
            }
        };
        let head = String::from_utf8_lossy(&buffer[..header_end]).into_owned();
        let mut first = head.lines().next().unwrap_or_default().split_whitespace();
        let method = first.next().unwrap_or_default().to_string();
        let target = first.next().unwrap_or_default().to_string();
        let length: usize = head
            .lines()
            .filter_map(|line| line.split_once(':'))
            .find(|(name, _)| name.eq_ignore_ascii_case("content-length"))
            .and_then(|(_, value)| value.trim().parse().ok())
            .unwrap_or(0);
        while buffer.len() < header_end + length {
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(read) => buffer.extend_from_slice(&chunk[..read]),
            }
        }
        let body: Vec<u8> = buffer
            .drain(..header_end + length)
            .skip(header_end)
            .collect();
        // "/v1.49/images/x/json" → "/images/x/json"
        let target = match target.strip_prefix("/v") {
            Some(rest) => rest
                .find('/')
                .map(|slash| rest[slash..].to_string())
                .unwrap_or(target.clone()),
            None => target,
        };
        let path = target.split('?').next().unwrap_or_default().to_string();
        requests.lock().unwrap().push(Recorded {
            method: method.clone(),
            target: target.clone(),
            body: serde_json::from_slice(&body).unwrap_or(Value::Null),
        });
        let (status, reply) = match (method.as_str(), path.as_str()) {
            ("GET", "/info") => ("200 OK", json!({ "Runtimes": runtimes })),
            ("GET", path) if path.starts_with("/images/") && path.ends_with("/json") => {
                ("200 OK", image.clone())
            }
            ("POST", "/containers/create") => (
                "201 Created",
                json!({"Id": "fake-container", "Warnings": []}),
            ),
            _ => (
                "404 Not Found",
                json!({"message": "not in the fake engine"}),
            ),
        };
        let reply = reply.to_string();
        let response = format!(
            "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{reply}",
            reply.len()
        );
        if stream.write_all(response.as_bytes()).await.is_err() {
            return;
        }
    }
}

/// A runtime for activity `act-1` whose engine is `engine` (built field by
/// field: `VmRuntime::new` would first look for leftovers on the real engine).
fn runtime(engine: &FakeEngine, limits: Limits, sandbox: Option<Sandbox>) -> VmRuntime {
    VmRuntime {
        activity_id: "act-1".into(),
        agreement_id: "agr-1".into(),
        node_id: "0xprovider".into(),
        requestor_id: "0xrequestor".into(),
        cache_max_images: 10,
        // The fake engine holds the image by reference: the provider allows that here.
        config: crate::config::VmConfig {
            allow_docker_images: true,
            sandbox,
            outbound_hosts: Default::default(),
        },
        limits,
        docker: OnceCell::from(engine.docker()),
        container: Mutex::new(None),
        running: Mutex::new(None),
        killed: AtomicBool::new(false),
        cpu_nanos: Arc::new(AtomicU64::new(0)),
        stats_task: Mutex::new(None),
        bus: std::sync::OnceLock::new(),
        vpn: Mutex::new(None),
        volumes_mount: Mutex::new(None),
        outbound_targets: None,
        outbound: Mutex::new(None),
        outbound_pid: Mutex::new(None),
    }
}

fn limits(offer: Value, demand: Value) -> Limits {
    Limits::from_agreement(
        &golem_exe_unit::Agreement::from_json(
            json!({"offer": {"properties": offer}, "demand": {"properties": demand}}),
        )
        .unwrap(),
    )
}

/// Deploy `docker:golem-test:1` against a fake engine whose image is
/// `image`; returns the work dir and every request the engine saw.
async fn deploy(
    image: Value,
    limits: Limits,
    sandbox: Option<Sandbox>,
) -> (tempfile::TempDir, Vec<Recorded>) {
    deploy_with(image, limits, sandbox, |_| {}).await
}

/// [`deploy`] of a runtime that `prepare` changes first.
async fn deploy_with(
    image: Value,
    limits: Limits,
    sandbox: Option<Sandbox>,
    prepare: impl FnOnce(&mut VmRuntime),
) -> (tempfile::TempDir, Vec<Recorded>) {
    deploy_on(default_runtimes(), image, limits, sandbox, prepare).await
}

/// [`deploy_with`] on an engine listing `runtimes`.
async fn deploy_on(
    runtimes: Value,
    image: Value,
    limits: Limits,
    sandbox: Option<Sandbox>,
    prepare: impl FnOnce(&mut VmRuntime),
) -> (tempfile::TempDir, Vec<Recorded>) {
    let dir = tempfile::tempdir().unwrap();
    let engine = FakeEngine::start(dir.path(), image, runtimes);
    let mut runtime = runtime(&engine, limits, sandbox);
    prepare(&mut runtime);
    let work_dir = dir.path().join("work");
    let cache_dir = dir.path().join("cache");
    std::fs::create_dir_all(&work_dir).unwrap();
    std::fs::create_dir_all(&cache_dir).unwrap();
    runtime
        .deploy(DeployRequest {
            package: PathBuf::new(),
            package_url: "docker:golem-test:1".into(),
            work_dir,
            cache_dir,
            volumes: None,
            env: vec![("GREETING".into(), "hi".into())],
            fetch_policy: golem_exe_unit::package::FetchPolicy::default(),
            net: Vec::new(),
            hosts: Default::default(),
            hostname: None,
        })
        .await
        .unwrap_or_else(|error| panic!("deploy: {error}; engine saw {:?}", engine.requests()));
    let requests = engine.requests();
    let work_dir = dir.path().join("work");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&work_dir).unwrap().permissions().mode() & 0o777,
        0o700,
        "the work dir is the provider's alone"
    );
    // As root the volumes are on a nosuid,nodev mount (undone here: no shutdown).
    if let Some(mounted) = runtime.volumes_mount.lock().unwrap().take() {
        let flags = nix::sys::statvfs::statvfs(&mounted).unwrap().flags();
        assert!(
            flags.contains(nix::sys::statvfs::FsFlags::ST_NOSUID),
            "{flags:?}"
        );
        assert!(
            flags.contains(nix::sys::statvfs::FsFlags::ST_NODEV),
            "{flags:?}"
        );
        nix::mount::umount2(&mounted, nix::mount::MntFlags::MNT_DETACH).unwrap();
    } else {
        assert!(
            !nix::unistd::Uid::effective().is_root(),
            "root mounts the volumes nosuid"
        );
    }
    (dir, requests)
}

/// The body of the one container create among `requests`.
fn create_body(requests: &[Recorded]) -> &Value {
    let creates: Vec<&Recorded> = requests
        .iter()
        .filter(|request| {
            request.method == "POST" && request.target.starts_with("/containers/create")
        })
        .collect();
    assert_eq!(creates.len(), 1, "{requests:#?}");
    &creates[0].body
}

#[tokio::test]
async fn under_runc_the_container_is_hardened_and_confined() {
    let image = json!({
        "Id": "sha256:fake",
        "Config": {"User": "", "Env": ["PATH=/bin"], "Volumes": {"/data/": {}}, "WorkingDir": "/app"}
    });
    let limits = limits(json!({"golem.inf.mem.gib": 0.5}), json!({}));
    let (dir, requests) = deploy(image, limits.clone(), Some(Sandbox::Runc)).await;

    // Every call, in order: the image is looked up by reference (exists),
    // inspected by the id that lookup gave (containers start from the id, so a
    // tag moved meanwhile changes nothing), and one container created; nothing
    // else (no pull, no start, no removal).
    let calls: Vec<(&str, &str)> = requests
        .iter()
        .map(|request| (request.method.as_str(), request.target.as_str()))
        .collect();
    assert_eq!(
        calls,
        [
            ("GET", "/info"),
            ("GET", "/images/golem-test:1/json"),
            ("GET", "/images/sha256:fake/json"),
            ("POST", "/containers/create?name=golem-vm-act-1&platform="),
        ]
    );

    let body = create_body(&requests);
    let host = &body["HostConfig"];
    assert_eq!(host["Runtime"], Value::Null, "{body:#}");
    assert_eq!(host["CapDrop"], json!(["ALL"]), "{body:#}");
    assert_eq!(host["CapAdd"], Value::Null, "{body:#}");
    assert_eq!(host["Privileged"], Value::Null, "{body:#}");
    assert_eq!(
        host["SecurityOpt"],
        json!(["no-new-privileges"]),
        "{body:#}"
    );
    assert_eq!(host["ReadonlyRootfs"], json!(true), "{body:#}");
    assert_eq!(host["Tmpfs"], json!({"/tmp": TMPFS_OPTIONS}), "{body:#}");
    assert_eq!(host["PidsLimit"], json!(PIDS_LIMIT), "{body:#}");
    assert_eq!(host["Memory"], json!(512 << 20), "{body:#}");
    assert_eq!(host["MemorySwap"], json!(512 << 20), "{body:#}");
    assert_eq!(host["Init"], json!(true), "{body:#}");
    // No network unless both sides grant it.
    assert_eq!(host["NetworkMode"], json!("none"), "{body:#}");
    assert_eq!(body["NetworkDisabled"], json!(true), "{body:#}");
    // Not root: the image names no user.
    assert_eq!(body["User"], json!(DEFAULT_USER), "{body:#}");
    assert_eq!(body["Image"], json!("sha256:fake"), "{body:#}");
    assert_eq!(body["WorkingDir"], json!("/golem/work"), "{body:#}");
    assert_eq!(body["Env"], json!(["PATH=/bin", "GREETING=hi"]), "{body:#}");

    // /golem/{input,output,work} and the image's volume, each a host dir
    // under the work dir, and nothing else writable (busybox, when the host
    // has one, read-only).
    let work = dir.path().join("work");
    let binds: Vec<String> = serde_json::from_value(host["Binds"].clone()).unwrap();
    let writable: Vec<(&str, &str)> = binds
        .iter()
        .filter_map(|bind| bind.strip_suffix(":rw"))
        .filter_map(|bind| bind.rsplit_once(':'))
        .collect();
    let guests: Vec<&str> = writable.iter().map(|(_, guest)| *guest).collect();
    assert_eq!(
        guests,
        ["/golem/input", "/golem/output", "/golem/work", "/data"],
        "{binds:?}"
    );
    for (host_path, guest) in &writable {
        assert!(
            Path::new(host_path).starts_with(&work),
            "{guest} is bound to {host_path}, outside {}",
            work.display()
        );
    }
    let others: Vec<&String> = binds.iter().filter(|bind| !bind.ends_with(":rw")).collect();
    assert!(
        others
            .iter()
            .all(|bind| *bind == &format!("{HOST_BUSYBOX}:{GUEST_BUSYBOX}:ro")),
        "{binds:?}"
    );

    // Labelled with its owner, so leftovers can be collected.
    let labels: HashMap<String, String> = serde_json::from_value(body["Labels"].clone()).unwrap();
    assert_eq!(
        labels.get(LABEL_ACTIVITY).map(String::as_str),
        Some("act-1")
    );
    assert_eq!(
        labels.get(LABEL_AGREEMENT).map(String::as_str),
        Some("agr-1")
    );
    assert_eq!(
        labels.get(LABEL_NODE).map(String::as_str),
        Some("0xprovider")
    );
    assert_eq!(
        labels.get(engine::LABEL_OWNER_PID),
        Some(&std::process::id().to_string())
    );
}

#[tokio::test]
async fn network_is_given_only_when_granted_and_the_images_user_is_kept() {
    let image = json!({"Id": "sha256:fake", "Config": {"User": "1000:1000"}});
    let grant = json!({NETWORK_PROPERTY: true, "golem.inf.cpu.threads": 1});
    let (_dir, requests) = deploy(image, limits(grant.clone(), grant), Some(Sandbox::Runc)).await;
    let body = create_body(&requests);
    assert_eq!(
        body["HostConfig"]["NetworkMode"],
        json!("bridge"),
        "{body:#}"
    );
    assert_eq!(body["NetworkDisabled"], json!(false), "{body:#}");
    assert_eq!(
        body["HostConfig"]["NanoCpus"],
        json!(1_000_000_000),
        "{body:#}"
    );
    assert_eq!(body["User"], json!("1000:1000"), "{body:#}");
    // Granting the network loosens nothing else.
    assert_eq!(body["HostConfig"]["CapDrop"], json!(["ALL"]), "{body:#}");
    assert_eq!(
        body["HostConfig"]["ReadonlyRootfs"],
        json!(true),
        "{body:#}"
    );
    assert_eq!(
        body["HostConfig"]["SecurityOpt"],
        json!(["no-new-privileges"]),
        "{body:#}"
    );
}

#[tokio::test]
async fn under_gvisor_by_default_the_image_runs_as_on_the_original() {
    let image = json!({
        "Id": "sha256:fake",
        "Config": {
            "User": "", "Env": ["PATH=/bin"], "Volumes": {"/data/": {}},
            "WorkingDir": "/app", "Entrypoint": ["/bin/server"], "Cmd": ["--port", "80"]
        }
    });
    let limits = limits(
        json!({"golem.inf.mem.gib": 0.5, "golem.inf.cpu.threads": 1}),
        json!({}),
    );
    // Not set: gVisor, since the (fake) engine lists runsc.
    let (dir, requests) = deploy(image, limits, None).await;
    let body = create_body(&requests);
    let host = &body["HostConfig"];
    assert_eq!(host["Runtime"], json!(GVISOR_RUNTIME), "{body:#}");
    // Root on a writable root with Docker's default capabilities.
    assert_eq!(body["User"], json!("0:0"), "{body:#}");
    assert_eq!(host["ReadonlyRootfs"], Value::Null, "{body:#}");
    assert_eq!(host["CapDrop"], Value::Null, "{body:#}");
    assert_eq!(host["CapAdd"], Value::Null, "{body:#}");
    assert_eq!(host["SecurityOpt"], Value::Null, "{body:#}");
    assert_eq!(host["Privileged"], Value::Null, "{body:#}");
    // Only the small tmpfs where runs note their pid (for kill), when the
    // host's busybox is there to run the wrapper.
    if Path::new(HOST_BUSYBOX).is_file() {
        assert_eq!(
            host["Tmpfs"],
            json!({GUEST_RUN_DIR: RUN_DIR_OPTIONS}),
            "{body:#}"
        );
    } else {
        assert_eq!(host["Tmpfs"], Value::Null, "{body:#}");
    }
    // The image's WORKDIR and ENV, the agreement's limits.
    assert_eq!(body["WorkingDir"], json!("/app"), "{body:#}");
    assert_eq!(body["Env"], json!(["PATH=/bin", "GREETING=hi"]), "{body:#}");
    assert_eq!(host["Memory"], json!(512 << 20), "{body:#}");
    assert_eq!(host["MemorySwap"], json!(512 << 20), "{body:#}");
    assert_eq!(host["NanoCpus"], json!(1_000_000_000), "{body:#}");
    assert_eq!(host["PidsLimit"], json!(GVISOR_PIDS_LIMIT), "{body:#}");
    assert_eq!(host["NetworkMode"], json!("none"), "{body:#}");
    // The image's volume and /golem/*, under the work dir.
    let binds: Vec<String> = serde_json::from_value(host["Binds"].clone()).unwrap();
    let work = dir.path().join("work");
    let guests: Vec<&str> = binds
        .iter()
        .filter_map(|bind| bind.strip_suffix(":rw"))
        .filter_map(|bind| bind.rsplit_once(':'))
        .inspect(|(host_path, _)| assert!(Path::new(host_path).starts_with(&work), "{binds:?}"))
        .map(|(_, guest)| guest)
        .collect();
    assert_eq!(
        guests,
        ["/golem/input", "/golem/output", "/golem/work", "/data"]
    );
}

#[tokio::test]
async fn an_image_user_is_kept_under_gvisor() {
    let image = json!({"Id": "sha256:fake", "Config": {"User": "1000:1000"}});
    let (_dir, requests) = deploy(image, limits(json!({}), json!({})), Some(Sandbox::Gvisor)).await;
    let body = create_body(&requests);
    assert_eq!(body["User"], json!("1000:1000"), "{body:#}");
    assert_eq!(
        body["HostConfig"]["Runtime"],
        json!(GVISOR_RUNTIME),
        "{body:#}"
    );
    // No WORKDIR in the image: /golem/work.
    assert_eq!(body["WorkingDir"], json!("/golem/work"), "{body:#}");
}

/// A manifest granting tcp to api.golem.test:8080, the name mapped by the provider.
fn grant_outbound_to_api(runtime: &mut VmRuntime) {
    runtime.config.outbound_hosts =
        crate::outbound::parse_host_overrides("api.golem.test=10.9.8.7").unwrap();
    runtime.outbound_targets = Some(vec![golem_model::manifest::OutboundTarget {
        transport: golem_model::manifest::Transport::Tcp,
        host: "api.golem.test".into(),
        port: 8080,
    }]);
}

#[tokio::test]
async fn outbound_access_rides_the_bridge_under_runc_with_the_manifest_hosts() {
    if crate::outbound::available(crate::outbound::FilterHook::Inet)
        .await
        .is_err()
    {
        // Not root here: the unit would refuse the deploy (tested end to end).
        return;
    }
    let image = json!({"Id": "sha256:fake", "Config": {"User": "", "Env": ["PATH=/bin"]}});
    let limits = limits(json!({}), json!({}));
    assert!(!limits.network, "no network property granted");
    let (dir, requests) = deploy_with(image, limits, None, grant_outbound_to_api).await;
    let body = create_body(&requests);
    let host = &body["HostConfig"];
    // The engine has runsc, yet the container runs under runc, hardened, on the bridge.
    assert_eq!(host["Runtime"], Value::Null, "{body:#}");
    assert_eq!(host["CapDrop"], json!(["ALL"]), "{body:#}");
    assert_eq!(host["NetworkMode"], json!("bridge"), "{body:#}");
    assert_eq!(body["NetworkDisabled"], json!(false), "{body:#}");
    let binds = host["Binds"].as_array().unwrap();
    let hosts_bind = binds
        .iter()
        .filter_map(Value::as_str)
        .find(|bind| bind.ends_with(":/etc/hosts:ro"))
        .unwrap_or_else(|| panic!("no /etc/hosts bind: {binds:?}"));
    let hosts_path = hosts_bind.split(':').next().unwrap();
    let hosts = std::fs::read_to_string(hosts_path).unwrap();
    assert!(hosts.contains("10.9.8.7\tapi.golem.test"), "{hosts}");
    drop(dir);
}

#[tokio::test]
async fn outbound_access_runs_under_gvisor_when_the_engine_has_its_networked_runtime() {
    if crate::outbound::available(crate::outbound::FilterHook::DeviceEgress {
        device: crate::outbound::CONTAINER_INTERFACE,
        sender: None,
    })
    .await
    .is_err()
    {
        // Not root, or no netdev egress hook: the unit falls back to runc
        // (the test above) or refuses the deploy (tested end to end).
        return;
    }
    let image = json!({"Id": "sha256:fake", "Config": {"User": "", "Env": ["PATH=/bin"]}});
    let mut runtimes = default_runtimes();
    runtimes[GVISOR_NETWORKED_RUNTIME] = json!({"path": "/usr/local/lib/golem/runsc-net"});
    let (_dir, requests) = deploy_on(
        runtimes,
        image,
        limits(json!({}), json!({})),
        None,
        grant_outbound_to_api,
    )
    .await;
    let body = create_body(&requests);
    let host = &body["HostConfig"];
    // gVisor with its own netstack, on the bridge, the image as on the original.
    assert_eq!(host["Runtime"], json!(GVISOR_NETWORKED_RUNTIME), "{body:#}");
    assert_eq!(host["NetworkMode"], json!("bridge"), "{body:#}");
    assert_eq!(body["User"], json!("0:0"), "{body:#}");
    assert_eq!(host["CapDrop"], Value::Null, "{body:#}");
}

#[tokio::test]
async fn without_network_gvisor_keeps_the_runtime_without_a_netstack() {
    let image = json!({"Id": "sha256:fake", "Config": {"User": ""}});
    let mut runtimes = default_runtimes();
    runtimes[GVISOR_NETWORKED_RUNTIME] = json!({"path": "/usr/local/lib/golem/runsc-net"});
    let (_dir, requests) =
        deploy_on(runtimes, image, limits(json!({}), json!({})), None, |_| {}).await;
    let body = create_body(&requests);
    assert_eq!(
        body["HostConfig"]["Runtime"],
        json!(GVISOR_RUNTIME),
        "{body:#}"
    );
    assert_eq!(body["HostConfig"]["NetworkMode"], json!("none"), "{body:#}");
}
