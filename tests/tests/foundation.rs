//! End-to-end tests of the foundation: the real `golem-daemon` binary, its CLI,
//! REST API, bus socket and on-disk identity.
#![allow(clippy::unwrap_used)] // test helpers panic on setup failure by design

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use golem_tests::{daemon_cli, stdout_of, Sandbox};

#[tokio::test]
async fn app_key_from_cli_works_on_rest_and_identity_survives_restart() {
    let mut sandbox = Sandbox::new();
    let daemon = sandbox.daemon("node").unwrap();
    // The daemon is running: the CLI talks to it over the bus socket.
    let key = stdout_of(daemon.cli(&["app-key", "create", "tester"]).unwrap()).unwrap();
    assert_eq!(key.len(), 32, "only the key is printed: {key:?}");
    let shown: serde_json::Value =
        serde_json::from_str(&stdout_of(daemon.cli(&["id", "show", "--json"]).unwrap()).unwrap())
            .unwrap();
    let node_id = shown["nodeId"].as_str().unwrap().to_string();
    assert!(
        node_id.starts_with("0x") && node_id.len() == 42,
        "{node_id}"
    );

    let client = golem_client::GolemClient::new(&daemon.api_url, &key);
    let me = client.me().await.unwrap();
    assert_eq!(me.identity.to_string(), node_id);
    assert_eq!(me.name, "tester");

    let listed: serde_json::Value = serde_json::from_str(
        &stdout_of(daemon.cli(&["app-key", "list", "--json"]).unwrap()).unwrap(),
    )
    .unwrap();
    let names: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"tester") && names.contains(&"autoconfigured"),
        "{names:?}"
    );

    assert_eq!(daemon.stop().unwrap(), 0, "clean exit on SIGTERM");
    assert!(
        !daemon.data_dir.join("bus.sock").exists(),
        "socket removed at shutdown"
    );
    daemon.restart().unwrap();
    let client = golem_client::GolemClient::new(&daemon.api_url, &key);
    assert_eq!(client.me().await.unwrap().identity.to_string(), node_id);

    // Dropping the key over the running daemon revokes it at once.
    stdout_of(daemon.cli(&["app-key", "drop", "tester"]).unwrap()).unwrap();
    let error = client.me().await.unwrap_err();
    assert_eq!(error.status(), Some(401), "{error}");
}

#[tokio::test]
async fn cli_works_without_a_daemon_and_the_daemon_uses_what_it_wrote() {
    let sandbox = Sandbox::new();
    let data_dir = sandbox.path().join("offline");
    // Global flag before the subcommand, too.
    let node_id = stdout_of(
        std::process::Command::new(golem_tests::binary("golem-daemon"))
            .arg("--data-dir")
            .arg(&data_dir)
            .args(["id", "show"])
            .output()
            .unwrap(),
    )
    .unwrap();
    let key = stdout_of(daemon_cli(&data_dir, &["app-key", "create", "offline"]).unwrap()).unwrap();
    let duplicate = daemon_cli(&data_dir, &["app-key", "create", "offline"]).unwrap();
    assert!(!duplicate.status.success());
    assert!(String::from_utf8_lossy(&duplicate.stderr).contains("already exists"));
    let table = stdout_of(daemon_cli(&data_dir, &["app-key", "list"]).unwrap()).unwrap();
    // The store keeps a hash: the listing shows only the key's prefix.
    assert!(
        table.contains("offline") && table.contains(&key[..8]) && !table.contains(&key),
        "{table}"
    );

    let mut daemon = golem_tests::DaemonProcess::start("offline", &data_dir, &[]).unwrap();
    let me = golem_client::GolemClient::new(&daemon.api_url, &key)
        .me()
        .await
        .unwrap();
    assert_eq!(me.identity.to_string(), node_id);
    daemon.stop().unwrap();
}

#[tokio::test]
async fn bad_input_gets_clear_errors_and_the_daemon_stays_up() {
    let mut sandbox = Sandbox::new();
    let daemon = sandbox.daemon("node").unwrap();
    // None of the bad input below is the daemon's error: no ERROR line is allowed.
    assert!(daemon.allowed_errors.is_empty());
    let http = reqwest::Client::new();
    let url = format!("{}/me", daemon.api_url);

    let missing = http.get(&url).send().await.unwrap();
    assert_eq!(missing.status(), 401);
    let wrong = http
        .get(&url)
        .bearer_auth("not-a-key")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    assert!(wrong.text().await.unwrap().contains("invalid app-key"));

    let huge = http
        .post(&url)
        .bearer_auth(&daemon.app_key)
        .body(vec![0u8; 64 * 1024 * 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(huge.status(), 413);
    let body: serde_json::Value = huge.json().await.unwrap();
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("exceeds the limit"),
        "{body}"
    );

    // Garbage on the bus socket: the daemon says why and closes that connection only.
    let socket = daemon.data_dir.join("bus.sock");
    let mut stream = UnixStream::connect(&socket).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream
        .write_all(b"\x00\x00\x00\x10this is no frame")
        .unwrap();
    let mut reply = Vec::new();
    let _ = stream.read_to_end(&mut reply);
    let reply = String::from_utf8_lossy(&reply);
    assert!(
        reply.contains("Goodbye") && reply.contains("expected a Hello frame"),
        "{reply}"
    );
    // A length prefix of 4 GiB is refused without the daemon allocating it.
    let mut stream = UnixStream::connect(&socket).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream.write_all(&[0xff, 0xff, 0xff, 0xff]).unwrap();
    let mut reply = Vec::new();
    let _ = stream.read_to_end(&mut reply);
    assert!(String::from_utf8_lossy(&reply).contains("exceeds the limit"));

    let me = daemon.client().me().await.unwrap();
    assert_eq!(me.name, "autoconfigured");
    assert_eq!(daemon.stop().unwrap(), 0);
    let log = daemon.log();
    assert!(
        log.contains("refused a bus connection"),
        "the refusal is logged"
    );
    let errors: Vec<&str> = log
        .lines()
        .filter(|line| line.contains("\"level\":\"ERROR\""))
        .collect();
    assert!(
        errors.is_empty(),
        "bad input logged as an ERROR: {errors:#?}"
    );
}

#[test]
fn unusable_data_dir_and_busy_data_dir_fail_with_advice() {
    let sandbox = Sandbox::new();
    let file = sandbox.path().join("a-file");
    std::fs::write(&file, "x").unwrap();
    let output = std::process::Command::new(golem_tests::binary("golem-daemon"))
        .args(["run", "--api-addr", "127.0.0.1:0", "--data-dir"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("cannot create the data directory") && stderr.contains("--data-dir"),
        "{stderr}"
    );

    let data_dir = sandbox.path().join("busy");
    let mut first = golem_tests::DaemonProcess::start("busy", &data_dir, &[]).unwrap();
    let second = golem_tests::DaemonProcess::start("busy-again", &data_dir, &[]);
    let error = format!(
        "{:#}",
        second
            .err()
            .expect("a second daemon on the same data dir must not start")
    );
    assert!(error.contains("another golem-daemon"), "{error}");
    first.stop().unwrap();
}

#[test]
fn help_explains_the_commands() {
    let output = std::process::Command::new(golem_tests::binary("golem-daemon"))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&output.stdout);
    for word in ["run", "app-key", "id", "--data-dir", "GOLEM_"] {
        assert!(help.contains(word), "--help lacks {word}:\n{help}");
    }
    let output = std::process::Command::new(golem_tests::binary("golem-daemon"))
        .args(["run", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&output.stdout);
    for word in [
        "--api-addr",
        "--p2p-listen",
        "--bootstrap",
        "--log-format",
        "--config",
    ] {
        assert!(help.contains(word), "run --help lacks {word}:\n{help}");
    }
}

#[tokio::test]
async fn access_log_lists_each_request_only_when_its_target_is_on() {
    let sandbox = Sandbox::new();
    let mut logged = golem_tests::DaemonProcess::start_with_env(
        "access",
        &sandbox.path().join("access"),
        &[],
        &[("RUST_LOG", "info,golem_daemon::api::access=debug")],
    )
    .unwrap();
    let mut quiet =
        golem_tests::DaemonProcess::start("quiet", &sandbox.path().join("quiet"), &[]).unwrap();
    let http = reqwest::Client::new();
    for daemon in [&logged, &quiet] {
        for path in ["/me", "/no-such-route?x=1"] {
            http.get(format!("{}{path}", daemon.api_url))
                .bearer_auth(&daemon.app_key)
                .send()
                .await
                .unwrap();
        }
    }
    let lines: Vec<serde_json::Value> = logged
        .log()
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .filter(|line: &serde_json::Value| line["message"] == "request")
        .collect();
    let seen = |uri: &str, status: u64| {
        lines.iter().any(|line| {
            line["method"] == "GET"
                && line["uri"] == uri
                && line["status"] == status
                && line["elapsed_ms"].as_f64().is_some()
        })
    };
    assert!(seen("/me", 200), "{lines:?}");
    assert!(seen("/no-such-route?x=1", 404), "{lines:?}");
    assert!(
        !quiet.log().contains("\"message\":\"request\""),
        "{}",
        quiet.log()
    );
    logged.kill();
    quiet.kill();
}
