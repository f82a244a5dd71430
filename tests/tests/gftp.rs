//! End-to-end tests of gftp: real `golem-daemon` processes on loopback; files
//! published or received by a process on one daemon's bus socket and moved by
//! a process on the other's, over libp2p; and the `gftp` binary's JSON-RPC as
//! yapapi speaks it.
#![allow(clippy::unwrap_used)] // test helpers panic on setup failure by design

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Duration;

use golem_gftp::{Gftp, GftpError, GftpUrl, TransferConfig};
use golem_model::gftp::{GftpChunk, UploadChunk, UploadFinished};
use golem_model::ErrorCode;
use golem_tests::{binary, Sandbox};
use serde_json::{json, Value};
use sha3::{Digest, Sha3_256};

fn sha3_hex(bytes: &[u8]) -> String {
    hex::encode(Sha3_256::digest(bytes))
}

/// Deterministic, non-repeating-ish content of `length` bytes.
fn content(length: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
    (0..length)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 56) as u8
        })
        .collect()
}

/// Two daemons, the second bootstrapped from the first.
fn two_daemons(sandbox: &mut Sandbox) {
    sandbox.daemon("a").unwrap();
    let bootstrap = sandbox.daemons()[0].p2p_address().unwrap();
    sandbox
        .daemon_with("b", &["--bootstrap", &bootstrap])
        .unwrap();
}

async fn gftp_of(sandbox: &mut Sandbox, index: usize) -> Gftp {
    Gftp::new(sandbox.daemons()[index].bus().await.unwrap()).unwrap()
}

#[tokio::test]
async fn publish_on_one_node_download_on_another_with_the_hash_checked() {
    let mut sandbox = Sandbox::new();
    two_daemons(&mut sandbox);
    let publisher = gftp_of(&mut sandbox, 0).await;
    // Small chunks so that a few MiB cross many pipelined chunks.
    let downloader = gftp_of(&mut sandbox, 1).await.with_config(TransferConfig {
        chunk_size: 128 * 1024,
        in_flight: 4,
    });
    let dir = sandbox.path().to_path_buf();

    let data = content(1024 * 1024 + 12_345, 1);
    let source = dir.join("input.bin");
    std::fs::write(&source, &data).unwrap();
    let url = publisher.publish(&source).await.unwrap();
    assert_eq!(url.node_id, publisher.node_id());
    assert_eq!(url.name, sha3_hex(&data));
    assert_eq!(
        url.to_string(),
        format!("gftp://{}/{}", url.node_id, url.name)
    );
    // Publishing the same file again gives the same URL.
    assert_eq!(publisher.publish(&source).await.unwrap(), url);

    let target = dir.join("b/downloads/nested/copy.bin");
    let bytes = downloader.download(&url, &target).await.unwrap();
    assert_eq!(bytes, data.len() as u64);
    let copy = std::fs::read(&target).unwrap();
    assert_eq!(sha3_hex(&copy), url.name);
    assert!(copy == data, "downloaded content differs");

    // An empty file travels too.
    let empty = dir.join("empty");
    std::fs::write(&empty, b"").unwrap();
    let empty_url = publisher.publish(&empty).await.unwrap();
    let empty_copy = dir.join("empty-copy");
    assert_eq!(
        downloader.download(&empty_url, &empty_copy).await.unwrap(),
        0
    );
    assert_eq!(std::fs::read(&empty_copy).unwrap(), b"");

    // Once closed, the URL is gone for everyone.
    assert!(publisher.close(&url).await.unwrap());
    assert!(!publisher.close(&url).await.unwrap());
    let error = downloader
        .download(&url, &dir.join("after-close"))
        .await
        .unwrap_err();
    assert!(matches!(error, GftpError::NotPublished { .. }), "{error}");
    assert!(!dir.join("after-close").exists());
}

#[tokio::test]
async fn receive_on_one_node_upload_from_another() {
    let mut sandbox = Sandbox::new();
    two_daemons(&mut sandbox);
    let receiver = gftp_of(&mut sandbox, 0).await;
    let uploader = gftp_of(&mut sandbox, 1).await.with_config(TransferConfig {
        chunk_size: 100_000,
        in_flight: 5,
    });
    let dir = sandbox.path().to_path_buf();

    let data = content(600_007, 2);
    let source = dir.join("result.bin");
    std::fs::write(&source, &data).unwrap();
    let destination = dir.join("out/received.bin");
    let mut slot = receiver.receive(&destination).await.unwrap();
    assert_eq!(slot.url.node_id, receiver.node_id());
    assert!(!slot.url.is_content_hash());

    let uploaded = uploader.upload(&source, &slot.url).await.unwrap();
    assert_eq!(uploaded, data.len() as u64);
    let received = tokio::time::timeout(Duration::from_secs(10), slot.finished())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(received.size, data.len() as u64);
    assert_eq!(received.hash, sha3_hex(&data));
    assert!(std::fs::read(&destination).unwrap() == data);

    // An upload slot is not a published file: it cannot be downloaded.
    let error = uploader
        .download(&slot.url, &dir.join("nope"))
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            GftpError::Remote { .. } | GftpError::NotPublished { .. }
        ),
        "{error}"
    );
    assert_eq!(
        std::fs::metadata(dir.join("nope"))
            .map(|m| m.len())
            .unwrap_or(0),
        0
    );
    // And a finished slot takes no more chunks.
    let error = uploader.upload(&source, &slot.url).await.unwrap_err();
    assert!(error.to_string().contains("already finished"), "{error}");
}

#[tokio::test]
async fn unknown_and_corrupted_files_fail_with_clear_errors() {
    let mut sandbox = Sandbox::new();
    two_daemons(&mut sandbox);
    let a = gftp_of(&mut sandbox, 0).await;
    let b = gftp_of(&mut sandbox, 1).await;
    let dir = sandbox.path().to_path_buf();

    // A hash nobody published.
    let unknown = GftpUrl::new(a.node_id(), "0".repeat(64));
    let error = b
        .download(&unknown, &dir.join("unknown"))
        .await
        .unwrap_err();
    let message = error.to_string();
    assert!(matches!(error, GftpError::NotPublished { .. }), "{message}");
    assert!(message.contains("is not published on node"), "{message}");
    assert!(!dir.join("unknown").exists());

    // A published file whose content changed after publishing: the bytes no
    // longer match the hash in the URL, and the download is discarded.
    let source = dir.join("changing.bin");
    std::fs::write(&source, content(300_000, 3)).unwrap();
    let url = a.publish(&source).await.unwrap();
    std::fs::write(&source, content(300_000, 4)).unwrap();
    let target = dir.join("changed-copy.bin");
    let error = b.download(&url, &target).await.unwrap_err();
    assert!(matches!(error, GftpError::HashMismatch { .. }), "{error}");
    assert!(error.to_string().contains("hash mismatch"), "{error}");
    assert!(!target.exists());

    // An uploader that announces a wrong hash is refused, and nothing is finished.
    let mut slot = a.receive(&dir.join("uploaded.bin")).await.unwrap();
    let bus = sandbox.daemons()[1].bus().await.unwrap();
    let address = slot.url.remote_address();
    bus.call(
        &address,
        &UploadChunk {
            chunk: GftpChunk {
                offset: 0,
                content: "aGVsbG8=".into(), // "hello"
            },
        },
    )
    .await
    .unwrap();
    let error = bus
        .call(
            &address,
            &UploadFinished {
                hash: Some("1".repeat(64)),
            },
        )
        .await
        .unwrap_err();
    assert_eq!(error.code, ErrorCode::BadRequest);
    assert!(
        error.message.contains("does not match"),
        "{}",
        error.message
    );
    assert!(
        tokio::time::timeout(Duration::from_millis(300), slot.finished())
            .await
            .is_err(),
        "a refused upload must not count as finished"
    );
    // Garbage in a chunk is refused too.
    let error = bus
        .call(
            &address,
            &UploadChunk {
                chunk: GftpChunk {
                    offset: 0,
                    content: "not base64!".into(),
                },
            },
        )
        .await
        .unwrap_err();
    assert_eq!(error.code, ErrorCode::BadRequest);

    // A local file that does not exist cannot be published.
    let error = a.publish(&dir.join("missing")).await.unwrap_err();
    assert!(matches!(error, GftpError::Io { .. }), "{error}");
}

/// A `gftp server` process driven line by line, as yapapi does.
struct RpcProcess {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    next_id: u64,
}

impl RpcProcess {
    fn start(data_dir: Option<&Path>) -> RpcProcess {
        let mut command = Command::new(binary("gftp"));
        command
            .arg("server")
            .env_remove("GSB_URL")
            .env_remove("GOLEM_BUS_SOCKET")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        match data_dir {
            Some(dir) => command.env("GOLEM_DATA_DIR", dir),
            None => command.env("GOLEM_DATA_DIR", "/nonexistent-golem-data-dir"),
        };
        let mut child = command.spawn().unwrap();
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        RpcProcess {
            child,
            stdin,
            stdout,
            next_id: 1,
        }
    }

    fn call(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        let request = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        writeln!(self.stdin, "{request}").unwrap();
        self.stdin.flush().unwrap();
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        let reply: Value = serde_json::from_str(&line)
            .unwrap_or_else(|error| panic!("bad reply line {line:?}: {error}"));
        assert_eq!(reply["jsonrpc"], "2.0");
        assert_eq!(reply["id"], json!(id));
        reply
    }

    fn shutdown(mut self) {
        let reply = self.call("shutdown", json!({}));
        assert_eq!(reply["result"], "ok");
        let status = self.child.wait().unwrap();
        assert!(status.success(), "gftp server exited with {status}");
    }
}

impl Drop for RpcProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn the_gftp_binary_speaks_yapapis_json_rpc() {
    // `version` needs no daemon (yapapi asks it first thing).
    let mut lonely = RpcProcess::start(None);
    let version = lonely.call("version", json!({}))["result"].clone();
    assert!(
        version.as_str().unwrap().starts_with("0.13.0 "),
        "{version}"
    );
    let error = lonely.call("publish", json!({"files": ["/etc/hostname"]}));
    let message = error["error"]["message"].as_str().unwrap();
    assert!(message.contains("is the daemon running"), "{message}");
    lonely.shutdown();

    let mut sandbox = Sandbox::new();
    two_daemons(&mut sandbox);
    let dir = sandbox.path().to_path_buf();
    let data_a = sandbox.daemons()[0].data_dir.clone();
    let data_b = sandbox.daemons()[1].data_dir.clone();
    let mut requestor = RpcProcess::start(Some(&data_a));
    let mut provider = RpcProcess::start(Some(&data_b));

    // publish → download on the other node.
    let data = content(500_000, 5);
    let input = dir.join("input.txt");
    std::fs::write(&input, &data).unwrap();
    let published = requestor.call("publish", json!({"files": [input]}));
    let links = published["result"].as_array().unwrap();
    assert_eq!(links.len(), 1);
    assert_eq!(links[0]["file"], json!(input));
    let url = links[0]["url"].as_str().unwrap().to_string();
    assert!(url.ends_with(&sha3_hex(&data)), "{url}");
    let copy = dir.join("copy.txt");
    let downloaded = provider.call("download", json!({"url": url, "output_file": copy}));
    assert_eq!(downloaded["result"]["url"], json!(url), "{downloaded}");
    assert!(std::fs::read(&copy).unwrap() == data);

    // receive → upload from the other node.
    let output = dir.join("output.txt");
    let receiving = requestor.call("receive", json!({"output_file": output}));
    assert_eq!(receiving["result"]["file"], json!(output));
    let slot = receiving["result"]["url"].as_str().unwrap().to_string();
    let result = dir.join("result.txt");
    std::fs::write(&result, b"the provider's output\n").unwrap();
    let uploaded = provider.call("upload", json!({"file": result, "url": slot}));
    assert_eq!(uploaded["result"]["file"], json!(result), "{uploaded}");
    assert_eq!(std::fs::read(&output).unwrap(), b"the provider's output\n");

    // close: ok for what this server serves, error otherwise.
    let closed = requestor.call("close", json!({"urls": [url, "gftp://junk"]}));
    assert_eq!(closed["result"], json!(["ok", "error"]));
    let gone = provider.call(
        "download",
        json!({"url": url, "output_file": dir.join("gone")}),
    );
    let message = gone["error"]["message"].as_str().unwrap();
    assert!(message.contains("is not published"), "{message}");

    // Bad requests get JSON-RPC errors, not silence.
    let unknown = provider.call("fly", json!({}));
    assert_eq!(unknown["error"]["code"], json!(-32601));
    let bad = provider.call(
        "download",
        json!({"url": "http://x/y", "output_file": "/tmp/x"}),
    );
    assert_eq!(bad["error"]["code"], json!(-32602));

    requestor.shutdown();
    provider.shutdown();
}

/// The exe-unit core's `transfer` with gftp URLs on both sides of a
/// provider's volumes: the exe unit talks to its own daemon's bus socket, the
/// files live on the requestor's node.
#[tokio::test]
async fn exe_unit_transfers_move_files_from_and_to_gftp_urls() {
    use golem_exe_unit::runtime::{Volume, VolumeAccess};
    use golem_exe_unit::transfer::{transfer, TransferError, TransferOptions};

    let mut sandbox = Sandbox::new();
    two_daemons(&mut sandbox);
    let requestor = gftp_of(&mut sandbox, 0).await;
    let provider_socket = sandbox.daemons()[1].data_dir.join("bus.sock");
    let dir = sandbox.path().to_path_buf();
    let volumes: Vec<Volume> = ["/golem/input", "/golem/output"]
        .iter()
        .map(|guest| Volume {
            guest_path: guest.to_string(),
            host_path: dir.join(format!("volume{}", guest.replace('/', "-"))),
            access: VolumeAccess::ReadWrite,
        })
        .collect();
    for volume in &volumes {
        std::fs::create_dir_all(&volume.host_path).unwrap();
    }
    let options = TransferOptions {
        bus_socket: Some(provider_socket),
        ..TransferOptions::default()
    };

    // gftp:// → container:
    let data = content(400_000, 6);
    let input = dir.join("task-input.bin");
    std::fs::write(&input, &data).unwrap();
    let url = requestor.publish(&input).await.unwrap().to_string();
    let bytes = transfer(&volumes, &url, "container:/golem/input/in.bin", &options)
        .await
        .unwrap();
    assert_eq!(bytes, data.len() as u64);
    assert!(std::fs::read(volumes[0].host_path.join("in.bin")).unwrap() == data);

    // container: → gftp://
    let output = b"result of the task\n".repeat(1000);
    std::fs::write(volumes[1].host_path.join("out.txt"), &output).unwrap();
    let mut slot = requestor
        .receive(&dir.join("results/out.txt"))
        .await
        .unwrap();
    let bytes = transfer(
        &volumes,
        "container:/golem/output/out.txt",
        &slot.url.to_string(),
        &options,
    )
    .await
    .unwrap();
    assert_eq!(bytes, output.len() as u64);
    let received = slot.finished().await.unwrap();
    assert_eq!(received.hash, sha3_hex(&output));
    assert_eq!(std::fs::read(dir.join("results/out.txt")).unwrap(), output);

    // A file that no longer matches its URL leaves nothing in the volume.
    std::fs::write(&input, content(400_000, 7)).unwrap();
    let error = transfer(&volumes, &url, "container:/golem/input/bad.bin", &options)
        .await
        .unwrap_err();
    assert!(matches!(error, TransferError::Gftp { .. }), "{error}");
    assert!(error.to_string().contains("hash mismatch"), "{error}");
    assert!(!volumes[0].host_path.join("bad.bin").exists());
    // And gftp cannot be used to escape the volumes.
    let error = transfer(&volumes, &url, "container:/golem/../etc/x", &options)
        .await
        .unwrap_err();
    assert!(matches!(error, TransferError::Escape { .. }), "{error}");
}

/// Task packages over gftp, as the exe units fetch them: published on the
/// requestor's node, fetched through the provider's daemon into the package
/// cache with the task package's own sha3 checked, the bytes handed to a tee
/// as they arrive, a partial file resumed, and every failure worded with
/// what to do: a wrong hash, a file that is not published, a node nobody reaches.
#[tokio::test]
async fn task_packages_are_fetched_over_gftp_through_the_providers_daemon() {
    use golem_exe_unit::package::{cached_path, fetch_with_policy, FetchPolicy, PackageError};

    let mut sandbox = Sandbox::new();
    two_daemons(&mut sandbox);
    let requestor = gftp_of(&mut sandbox, 0).await;
    let policy = FetchPolicy {
        bus_socket: Some(sandbox.daemons()[1].data_dir.join("bus.sock")),
        ..FetchPolicy::default()
    };
    let dir = sandbox.path().to_path_buf();
    let data = content(3 * 1024 * 1024 + 17, 9);
    let source = dir.join("package.wasm");
    std::fs::write(&source, &data).unwrap();
    let url = requestor.publish(&source).await.unwrap();
    let digest = hex::encode(sha3::Sha3_224::digest(&data));
    let task_package = format!("hash:sha3:{digest}:{url}");

    // Fetched with its bytes teed in order, then found in the cache.
    let cache = dir.join("cache");
    let (tee, mut teed) = tokio::sync::mpsc::channel(1024);
    let path = fetch_with_policy(&task_package, &cache, Some(tee), &policy)
        .await
        .unwrap();
    assert_eq!(path, cached_path(&cache, &digest));
    assert!(std::fs::read(&path).unwrap() == data);
    let mut seen = Vec::new();
    while let Ok(chunk) = teed.try_recv() {
        seen.extend_from_slice(&chunk);
    }
    assert!(seen == data, "the tee got {} bytes", seen.len());

    // A partial file an interrupted fetch left is resumed from its end.
    let resumed = dir.join("resumed-cache");
    let partial = cached_path(&resumed, &digest).with_file_name(format!(".sha3-{digest}.partial"));
    std::fs::create_dir_all(partial.parent().unwrap()).unwrap();
    std::fs::write(&partial, &data[..1_000_000]).unwrap();
    let path = fetch_with_policy(&task_package, &resumed, None, &policy)
        .await
        .unwrap();
    assert!(std::fs::read(&path).unwrap() == data);
    assert!(!partial.exists());

    // A wrong hash: refused, nothing cached, and the message says what to do.
    let wrong = "0".repeat(56);
    let error = fetch_with_policy(
        &format!("hash:sha3:{wrong}:{url}"),
        &dir.join("wrong-cache"),
        None,
        &policy,
    )
    .await
    .unwrap_err();
    assert!(
        matches!(error, PackageError::HashMismatch { .. }),
        "{error}"
    );
    assert!(
        error.to_string().contains("publish the package again"),
        "{error}"
    );
    assert!(!cached_path(&dir.join("wrong-cache"), &wrong).exists());

    // The cache answers after the requestor stopped serving; a fresh cache cannot.
    assert!(requestor.close(&url).await.unwrap());
    assert_eq!(
        fetch_with_policy(&task_package, &cache, None, &policy)
            .await
            .unwrap(),
        cached_path(&cache, &digest)
    );
    let error = fetch_with_policy(&task_package, &dir.join("fresh-cache"), None, &policy)
        .await
        .unwrap_err();
    assert!(
        matches!(error, PackageError::GftpNotPublished { .. }),
        "{error}"
    );
    assert!(
        error.to_string().contains("publish the package again"),
        "{error}"
    );

    // A node that is nowhere in the network.
    let nobody = format!(
        "hash:sha3:{digest}:gftp://0x{}/{}",
        "ab".repeat(20),
        url.name
    );
    let error = fetch_with_policy(&nobody, &dir.join("nobody-cache"), None, &policy)
        .await
        .unwrap_err();
    assert!(
        matches!(error, PackageError::GftpUnreachable { .. }),
        "{error}"
    );
    assert!(error.to_string().contains("must be running"), "{error}");

    // Without a bus socket (never so in an exe unit) gftp packages are refused.
    let error = fetch_with_policy(
        &task_package,
        &dir.join("no-bus"),
        None,
        &FetchPolicy::default(),
    )
    .await
    .unwrap_err();
    assert_eq!(error, PackageError::GftpUnavailable);
}
