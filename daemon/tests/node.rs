//! Service tests: the daemon library started in-process on port 0 with a
//! temporary data dir, driven through its real REST API and bus socket.
#![allow(clippy::unwrap_used)] // test helpers panic on setup failure by design

use std::time::Duration;

use golem_bus::BusClient;
use golem_daemon::config::DaemonConfig;
use golem_model::bus::{Ping, ROUTER_SERVICE};
use golem_model::identity::{CreateAppKey, GetIdentity, IDENTITY_SERVICE};
use golem_model::ErrorCode;

fn test_config(data_dir: &std::path::Path) -> DaemonConfig {
    DaemonConfig {
        data_dir: data_dir.to_path_buf(),
        api_addr: "127.0.0.1:0".parse().unwrap(),
        p2p_listen: vec!["/ip4/127.0.0.1/tcp/0".into()],
        api_workers: 1,
        autoconf_appkey: Some("service-test-key".into()),
        ..DaemonConfig::default()
    }
}

#[actix_rt::test]
async fn me_requires_a_registered_app_key() {
    let dir = tempfile::tempdir().unwrap();
    let node = golem_daemon::start(test_config(dir.path())).await.unwrap();
    let base = format!("http://{}", node.api_addr);
    let http = reqwest::Client::new();

    let me: serde_json::Value = http
        .get(format!("{base}/me"))
        .bearer_auth("service-test-key")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["identity"], node.node_id.to_string());
    assert_eq!(me["name"], "autoconfigured");
    assert_eq!(me["role"], "manager");

    let query_token = http
        .get(format!("{base}/me?authToken=service-test-key"))
        .send()
        .await
        .unwrap();
    assert_eq!(query_token.status(), 200);

    for request in [
        http.get(format!("{base}/me")),
        http.get(format!("{base}/me")).bearer_auth("wrong"),
        http.get(format!("{base}/me"))
            .header("authorization", "Basic c2VydmljZS10ZXN0LWtleQ=="),
    ] {
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 401);
        let body: serde_json::Value = response.json().await.unwrap();
        assert!(
            body["message"].as_str().unwrap().contains("app-key"),
            "{body}"
        );
    }

    let unknown = http
        .get(format!("{base}/market-api/v1/nothing"))
        .bearer_auth("service-test-key")
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
    let body: serde_json::Value = unknown.json().await.unwrap();
    assert_eq!(
        body["message"],
        "no such endpoint: GET /market-api/v1/nothing"
    );

    let huge = http
        .post(format!("{base}/me"))
        .bearer_auth("service-test-key")
        .body(vec![b'x'; 5 * 1024 * 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(huge.status(), 413);

    // The node still serves after all that.
    let again = http
        .get(format!("{base}/me"))
        .bearer_auth("service-test-key")
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 200);
    node.stop().await;
}

#[actix_rt::test]
async fn app_key_created_over_the_bus_authorizes_rest_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let config = test_config(dir.path());
    let socket = config.bus_socket_path();
    let node = golem_daemon::start(config).await.unwrap();
    let client = BusClient::connect(&socket, "test").await.unwrap();
    assert_eq!(client.node_id(), Some(node.node_id));
    assert_eq!(
        client.call(IDENTITY_SERVICE, &GetIdentity).await.unwrap(),
        node.node_id
    );
    assert_eq!(
        client
            .call(
                ROUTER_SERVICE,
                &Ping {
                    payload: "p".into()
                }
            )
            .await
            .unwrap(),
        "p"
    );
    let created = client
        .call(IDENTITY_SERVICE, &CreateAppKey { name: "cli".into() })
        .await
        .unwrap();
    let duplicate = client
        .call(IDENTITY_SERVICE, &CreateAppKey { name: "cli".into() })
        .await
        .unwrap_err();
    assert_eq!(duplicate.code, ErrorCode::Conflict);

    let response = reqwest::Client::new()
        .get(format!("http://{}/me", node.api_addr))
        .bearer_auth(&created.key)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    node.stop().await;
    tokio::time::timeout(Duration::from_secs(5), client.closed())
        .await
        .expect("bus client sees the shutdown");
    assert!(!socket.exists(), "bus socket removed at shutdown");
}

#[actix_rt::test]
async fn identity_survives_a_restart_and_two_nodes_coexist() {
    let dir = tempfile::tempdir().unwrap();
    let other_dir = tempfile::tempdir().unwrap();
    let first = golem_daemon::start(test_config(dir.path())).await.unwrap();
    let other = golem_daemon::start(test_config(other_dir.path()))
        .await
        .unwrap();
    assert_ne!(first.node_id, other.node_id);
    let node_id = first.node_id;
    first.stop().await;
    let restarted = golem_daemon::start(test_config(dir.path())).await.unwrap();
    assert_eq!(restarted.node_id, node_id);
    restarted.stop().await;
    other.stop().await;
}

#[actix_rt::test]
async fn unusable_data_dir_is_a_clear_start_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, "x").unwrap();
    let error = match golem_daemon::start(test_config(&file)).await {
        Err(error) => format!("{error:#}"),
        Ok(_) => panic!("started on a file as data dir"),
    };
    assert!(
        error.contains("cannot create the data directory") && error.contains("--data-dir"),
        "{error}"
    );
}

#[actix_rt::test]
async fn api_port_in_use_is_a_clear_start_error() {
    let holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path());
    config.api_addr = holder.local_addr().unwrap();
    let error = match golem_daemon::start(config).await {
        Err(error) => format!("{error:#}"),
        Ok(_) => panic!("started on a taken port"),
    };
    assert!(error.contains("cannot listen for the REST API"), "{error}");
}
