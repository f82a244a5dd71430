//! Test harness: a bus server standing in for the daemon (its router binds
//! `/local/activity` and records the exe unit's reports), WASM packages built
//! from the WAT sources in `tests/modules`, a tiny HTTP server for transfers,
//! and the real `exe-unit-wasm` binary spawned with the spawn contract's args.
#![allow(clippy::unwrap_used, dead_code)]

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use golem_bus::{server, Router, ServiceEndpoint};
use golem_model::activity::{
    exe_unit_address, ExeScriptCommandResult, ExecBatch, GetBatchResults, ReportBatchEvent,
    ReportBatchResult, ReportState, ReportUsage, ACTIVITY_SERVICE,
};
use sha3::Digest;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

pub fn module(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/modules")
        .join(format!("{name}.wat"));
    wat::parse_file(&path).unwrap()
}

/// A zip package with entry points hello, loop and hog and the usual mounts.
pub fn zip_package(path: &Path) {
    let mut writer = zip::ZipWriter::new(std::fs::File::create(path).unwrap());
    let options = zip::write::SimpleFileOptions::default();
    writer.start_file("manifest.json", options).unwrap();
    writer
        .write_all(
            br#"{"id": "golem-tests", "name": "golem-tests",
                "entry-points": [{"id": "hello", "wasm-path": "hello.wasm"},
                                 {"id": "loop", "wasm-path": "bin/loop.wasm"},
                                 {"id": "hog", "wasm-path": "bin/hog.wasm"}],
                "mount-points": [{"ro": "/golem/input"}, {"rw": "/golem/output"}, {"private": "/golem/work"}]}"#,
        )
        .unwrap();
    for (name, path) in [
        ("hello", "hello.wasm"),
        ("loop", "bin/loop.wasm"),
        ("hog", "bin/hog.wasm"),
    ] {
        writer.start_file(path, options).unwrap();
        writer.write_all(&module(name)).unwrap();
    }
    writer.finish().unwrap();
}

pub fn sha3_224(path: &Path) -> String {
    hex::encode(sha3::Sha3_224::digest(std::fs::read(path).unwrap()))
}

#[derive(Default, Debug)]
pub struct Reports {
    pub states: Vec<ReportState>,
    pub usage: Vec<ReportUsage>,
    pub events: Vec<ReportBatchEvent>,
    pub results: Vec<ReportBatchResult>,
}

/// The stand-in daemon: a bus socket whose router records reports.
pub struct Daemon {
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    pub router: Router,
    pub shutdown: CancellationToken,
    pub reports: Arc<Mutex<Reports>>,
}

impl Daemon {
    pub fn start() -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("bus.sock");
        let listener = server::bind_socket(&socket).unwrap();
        let router = Router::new();
        let shutdown = CancellationToken::new();
        tokio::spawn(server::serve(
            listener,
            router.clone(),
            None,
            shutdown.clone(),
        ));
        let reports = Arc::new(Mutex::new(Reports::default()));
        let (r1, r2, r3, r4) = (
            reports.clone(),
            reports.clone(),
            reports.clone(),
            reports.clone(),
        );
        let endpoint = ServiceEndpoint::new()
            .on(move |_caller, report: ReportState| {
                r1.lock().unwrap().states.push(report);
                async { Ok(()) }
            })
            .on(move |_caller, report: ReportUsage| {
                r2.lock().unwrap().usage.push(report);
                async { Ok(()) }
            })
            .on(move |_caller, report: ReportBatchEvent| {
                r3.lock().unwrap().events.push(report);
                async { Ok(()) }
            })
            .on(move |_caller, report: ReportBatchResult| {
                r4.lock().unwrap().results.push(report);
                async { Ok(()) }
            });
        router.bind(ACTIVITY_SERVICE, endpoint).unwrap();
        Daemon {
            dir,
            socket,
            router,
            shutdown,
            reports,
        }
    }
}

impl Daemon {
    /// Wait (up to 10 s) until the recorded reports satisfy `done`.
    pub async fn wait_for_reports(&self, done: impl Fn(&Reports) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !done(&self.reports.lock().unwrap()) {
            assert!(
                Instant::now() < deadline,
                "reports did not arrive: {:#?}",
                self.reports.lock().unwrap()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// Options for one exe-unit process.
pub struct Spawn {
    pub activity_id: String,
    pub task_package: String,
    pub memory_gib: f64,
    pub max_run_time: u64,
    /// `--allow-private-transfers`: the tests' HTTP server is on loopback.
    pub allow_private_transfers: bool,
}

/// The node of the stand-in agreements: requestor and provider are the same
/// node, so a `file://` package is allowed.
pub const TEST_NODE: &str = "0x1111111111111111111111111111111111111111";

impl Spawn {
    /// The zip test package, served from a file.
    pub fn with_test_package(daemon: &Daemon, activity_id: &str) -> Spawn {
        let package = daemon.dir.path().join("golem-tests.zip");
        if !package.exists() {
            zip_package(&package);
        }
        Spawn {
            activity_id: activity_id.to_string(),
            task_package: format!(
                "hash:sha3:{}:file://{}",
                sha3_224(&package),
                package.display()
            ),
            memory_gib: 0.0625,
            max_run_time: 1800,
            allow_private_transfers: true,
        }
    }
}

pub struct ExeUnit {
    pub child: tokio::process::Child,
    pub address: String,
    pub work_dir: PathBuf,
}

impl ExeUnit {
    /// Spawn `exe-unit-wasm run ...` and wait until it has bound its address.
    pub async fn spawn(daemon: &Daemon, options: Spawn) -> ExeUnit {
        let agreement = daemon
            .dir
            .path()
            .join(format!("{}.agreement.json", options.activity_id));
        std::fs::write(
            &agreement,
            serde_json::to_vec(&serde_json::json!({
                "agreementId": format!("agreement-{}", options.activity_id),
                "offer": {"providerId": TEST_NODE, "properties": {
                    "golem.inf.mem.gib": options.memory_gib,
                    "golem.runtime.name": "wasmtime",
                    "golem.com.usage.vector": ["golem.usage.cpu_sec", "golem.usage.duration_sec"]
                }},
                "demand": {"requestorId": TEST_NODE,
                           "properties": {"golem.srv.comp.task_package": options.task_package}},
                "state": "Approved"
            }))
            .unwrap(),
        )
        .unwrap();
        let work_dir = daemon.dir.path().join("work").join(&options.activity_id);
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_exe-unit-wasm"))
            .arg("run")
            .arg("--activity-id")
            .arg(&options.activity_id)
            .arg("--agreement")
            .arg(&agreement)
            .arg("--work-dir")
            .arg(&work_dir)
            .arg("--cache-dir")
            .arg(daemon.dir.path().join("cache"))
            .arg("--bus-socket")
            .arg(&daemon.socket)
            .arg("--max-run-time")
            .arg(options.max_run_time.to_string())
            .arg("--log-level")
            .arg("warn")
            .args(
                options
                    .allow_private_transfers
                    .then_some("--allow-private-transfers"),
            )
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let address = exe_unit_address(&options.activity_id);
        let deadline = Instant::now() + Duration::from_secs(20);
        while !daemon.router.is_bound(&address) {
            assert!(Instant::now() < deadline, "exe unit did not bind {address}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        ExeUnit {
            child,
            address,
            work_dir,
        }
    }

    /// Execute a batch and wait for all of its results.
    pub async fn exec(
        &self,
        daemon: &Daemon,
        batch_id: &str,
        script: &str,
    ) -> Vec<ExeScriptCommandResult> {
        let commands = golem_model::activity::parse_exe_script(script).unwrap();
        let accepted = daemon
            .router
            .call(
                &self.address,
                &ExecBatch {
                    batch_id: batch_id.to_string(),
                    commands,
                },
            )
            .await
            .unwrap();
        assert_eq!(accepted, batch_id);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let results = daemon
                .router
                .call(
                    &self.address,
                    &GetBatchResults {
                        batch_id: batch_id.to_string(),
                        command_index: None,
                        timeout_sec: Some(10.0),
                    },
                )
                .await
                .unwrap();
            if results
                .last()
                .is_some_and(|result| result.is_batch_finished)
            {
                return results;
            }
            assert!(Instant::now() < deadline, "batch {batch_id} did not finish");
        }
    }

    pub async fn wait_exit(&mut self, within: Duration) -> std::process::ExitStatus {
        tokio::time::timeout(within, self.child.wait())
            .await
            .expect("exe unit exits in time")
            .unwrap()
    }
}

/// A one-shot-per-connection HTTP/1.1 server: GET serves `files`, PUT stores
/// the body under its path in `uploads`.
pub struct HttpServer {
    pub base: String,
    pub uploads: Arc<Mutex<HashMap<String, Vec<u8>>>>,
}

impl HttpServer {
    pub async fn start(files: HashMap<String, Vec<u8>>) -> HttpServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let uploads: Arc<Mutex<HashMap<String, Vec<u8>>>> = Arc::default();
        let files = Arc::new(files);
        let stored = uploads.clone();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let files = files.clone();
                let stored = stored.clone();
                tokio::spawn(async move {
                    let mut buffer = Vec::new();
                    let mut chunk = [0u8; 8192];
                    let header_end = loop {
                        let read = stream.read(&mut chunk).await.unwrap_or(0);
                        if read == 0 {
                            return;
                        }
                        buffer.extend_from_slice(&chunk[..read]);
                        if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                            break end + 4;
                        }
                    };
                    let head = String::from_utf8_lossy(&buffer[..header_end]).to_string();
                    let mut lines = head.lines();
                    let request_line = lines.next().unwrap_or_default().to_string();
                    let mut parts = request_line.split_whitespace();
                    let method = parts.next().unwrap_or_default().to_string();
                    let path = parts.next().unwrap_or_default().to_string();
                    let length: usize = lines
                        .filter_map(|line| line.split_once(':'))
                        .find(|(name, _)| name.eq_ignore_ascii_case("content-length"))
                        .and_then(|(_, value)| value.trim().parse().ok())
                        .unwrap_or(0);
                    let mut body = buffer[header_end..].to_vec();
                    while body.len() < length {
                        let read = stream.read(&mut chunk).await.unwrap_or(0);
                        if read == 0 {
                            break;
                        }
                        body.extend_from_slice(&chunk[..read]);
                    }
                    let response = match method.as_str() {
                        "GET" => match files.get(&path) {
                            Some(content) => {
                                let mut response = format!(
                                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                                    content.len()
                                )
                                .into_bytes();
                                response.extend_from_slice(content);
                                response
                            }
                            None => b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n".to_vec(),
                        },
                        "PUT" => {
                            stored.lock().unwrap().insert(path, body);
                            b"HTTP/1.1 201 Created\r\ncontent-length: 0\r\nconnection: close\r\n\r\n".to_vec()
                        }
                        _ => b"HTTP/1.1 405 Method Not Allowed\r\ncontent-length: 0\r\nconnection: close\r\n\r\n".to_vec(),
                    };
                    let _ = stream.write_all(&response).await;
                    let _ = stream.shutdown().await;
                });
            }
        });
        HttpServer { base, uploads }
    }
}

/// Resident set size of a process in KiB (from /proc).
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|line| line.starts_with("VmRSS:"))
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|value| value.parse().ok())
}
