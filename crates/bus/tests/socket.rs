//! The bus over a real Unix socket: a server around a router, clients that call,
//! bind and stream, and connections that misbehave.
#![allow(clippy::unwrap_used)] // test helpers panic on setup failure by design

use std::time::Duration;

use futures::StreamExt;
use golem_bus::frame::{read_frame, write_frame, Frame, PROTOCOL_VERSION};
use golem_bus::{server, BusClient, Caller, Router, ServiceEndpoint};
use golem_model::bus::{BusMessage, Ping, ROUTER_SERVICE};
use golem_model::ErrorCode;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;
use tokio::net::UnixStream;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Serialize, Deserialize)]
struct CountTo {
    limit: u32,
}
impl BusMessage for CountTo {
    const NAME: &'static str = "CountTo";
    type Reply = u32;
}

struct Fixture {
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
    router: Router,
    shutdown: CancellationToken,
}

fn start_server() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bus.sock");
    let listener = server::bind_socket(&path).unwrap();
    let router = Router::new();
    let shutdown = CancellationToken::new();
    tokio::spawn(server::serve(
        listener,
        router.clone(),
        None,
        shutdown.clone(),
    ));
    Fixture {
        _dir: dir,
        path,
        router,
        shutdown,
    }
}

#[tokio::test]
async fn socket_is_private_to_its_owner() {
    use std::os::unix::fs::PermissionsExt;
    let fixture = start_server();
    let mode = std::fs::metadata(&fixture.path)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[tokio::test]
async fn client_calls_router_and_serves_its_own_address() {
    let fixture = start_server();
    let client = BusClient::connect(&fixture.path, "test").await.unwrap();
    assert_eq!(
        client
            .call(
                ROUTER_SERVICE,
                &Ping {
                    payload: "hi".into()
                }
            )
            .await
            .unwrap(),
        "hi"
    );

    let endpoint = ServiceEndpoint::new()
        .on(|caller, ping: Ping| async move { Ok(format!("{}/{caller:?}", ping.payload)) })
        .on_stream(|_caller, count: CountTo| futures::stream::iter((1..=count.limit).map(Ok)));
    client.bind("/local/exeunit/a1", endpoint).await.unwrap();

    // The daemon side (router) reaches the client's endpoint through the socket.
    let reply = fixture
        .router
        .call(
            "/local/exeunit/a1",
            &Ping {
                payload: "x".into(),
            },
        )
        .await
        .unwrap();
    assert_eq!(reply, "x/Local");
    // A second client reaches it too, including streams.
    let other = BusClient::connect(&fixture.path, "other").await.unwrap();
    let items: Vec<_> = other
        .call_stream_raw(
            "/local/exeunit/a1",
            "CountTo",
            serde_json::json!({"limit": 4}),
        )
        .collect()
        .await;
    let items: Vec<u64> = items
        .into_iter()
        .map(|item| item.unwrap().as_u64().unwrap())
        .collect();
    assert_eq!(items, vec![1, 2, 3, 4]);

    // A second bind of the same address conflicts.
    let again = other
        .bind("/local/exeunit/a1", ServiceEndpoint::new())
        .await
        .unwrap_err();
    assert_eq!(again.code, ErrorCode::Conflict);

    // Disconnecting unbinds what the client bound.
    drop(client);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while fixture.router.is_bound("/local/exeunit/a1") {
        assert!(
            tokio::time::Instant::now() < deadline,
            "address still bound after disconnect"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let gone = other
        .call(
            "/local/exeunit/a1",
            &Ping {
                payload: "x".into(),
            },
        )
        .await
        .unwrap_err();
    assert_eq!(gone.code, ErrorCode::NoEndpoint);
}

#[tokio::test]
async fn remote_caller_identity_reaches_the_client_endpoint() {
    let fixture = start_server();
    let client = BusClient::connect(&fixture.path, "gftp").await.unwrap();
    let endpoint =
        ServiceEndpoint::new().on(|caller, _ping: Ping| async move { Ok(format!("{caller:?}")) });
    client.bind("/public/gftp/abc", endpoint).await.unwrap();
    let node = golem_model::NodeId::from_bytes([9; 20]);
    let reply = fixture
        .router
        .call_as(
            Caller::Remote(node),
            "/public/gftp/abc",
            &Ping {
                payload: String::new(),
            },
        )
        .await
        .unwrap();
    assert_eq!(reply, format!("Remote({node})"));
}

async fn goodbye_after(bytes: &[u8], path: &std::path::Path) -> String {
    let mut stream = UnixStream::connect(path).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    let frame = tokio::time::timeout(
        Duration::from_secs(5),
        read_frame(&mut stream, &mut Vec::new()),
    )
    .await
    .expect("server answers")
    .expect("a frame");
    match frame {
        Frame::Goodbye { message } => message,
        other => panic!("expected Goodbye, got {other:?}"),
    }
}

#[tokio::test]
async fn garbage_and_wrong_versions_are_refused_and_server_keeps_serving() {
    let fixture = start_server();
    let message = goodbye_after(b"\x00\x00\x00\x05hello", &fixture.path).await;
    assert!(message.contains("expected a Hello frame"), "{message}");
    let message = goodbye_after(&[0xff, 0xff, 0xff, 0xff], &fixture.path).await;
    assert!(message.contains("exceeds the limit"), "{message}");

    let mut stream = UnixStream::connect(&fixture.path).await.unwrap();
    write_frame(
        &mut stream,
        &Frame::Hello {
            protocol_version: PROTOCOL_VERSION + 1,
            client_name: "future".into(),
        },
    )
    .await
    .unwrap();
    match read_frame(&mut stream, &mut Vec::new()).await.unwrap() {
        Frame::Goodbye { message } => assert!(message.contains("not supported"), "{message}"),
        other => panic!("expected Goodbye, got {other:?}"),
    }

    // Garbage after a good handshake closes only that connection.
    let mut stream = UnixStream::connect(&fixture.path).await.unwrap();
    write_frame(
        &mut stream,
        &Frame::Hello {
            protocol_version: PROTOCOL_VERSION,
            client_name: "x".into(),
        },
    )
    .await
    .unwrap();
    assert!(matches!(
        read_frame(&mut stream, &mut Vec::new()).await.unwrap(),
        Frame::Welcome { .. }
    ));
    stream.write_all(b"\x00\x00\x00\x03{{{").await.unwrap();
    match read_frame(&mut stream, &mut Vec::new()).await.unwrap() {
        Frame::Goodbye { message } => assert!(message.contains("malformed frame"), "{message}"),
        other => panic!("expected Goodbye, got {other:?}"),
    }

    let client = BusClient::connect(&fixture.path, "after").await.unwrap();
    assert_eq!(
        client
            .call(
                ROUTER_SERVICE,
                &Ping {
                    payload: "still".into()
                }
            )
            .await
            .unwrap(),
        "still"
    );
}

#[tokio::test]
async fn shutdown_closes_clients() {
    let fixture = start_server();
    let client = BusClient::connect(&fixture.path, "test").await.unwrap();
    fixture.shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(5), client.closed())
        .await
        .expect("client sees the close");
    let error = client
        .call(
            ROUTER_SERVICE,
            &Ping {
                payload: "x".into(),
            },
        )
        .await
        .unwrap_err();
    assert_eq!(error.code, ErrorCode::Unavailable);
}

#[tokio::test]
async fn a_closed_connection_reports_its_addresses_as_unbound() {
    let fixture = start_server();
    let mut unbinds = fixture.router.watch_unbinds();
    let client = BusClient::connect(&fixture.path, "stand-in").await.unwrap();
    let echo = || ServiceEndpoint::new().on(|_c, ping: Ping| async move { Ok(ping.payload) });
    client.bind("/local/exeunit/x1", echo()).await.unwrap();
    assert!(fixture.router.is_bound("/local/exeunit/x1"));
    let closed_at = std::time::Instant::now();
    drop(client);
    let address = tokio::time::timeout(Duration::from_secs(5), unbinds.recv())
        .await
        .expect("the unbind is reported")
        .unwrap();
    assert_eq!(address, "/local/exeunit/x1");
    assert!(!fixture.router.is_bound("/local/exeunit/x1"));
    assert!(
        closed_at.elapsed() < Duration::from_secs(1),
        "{:?}",
        closed_at.elapsed()
    );
    fixture.shutdown.cancel();
}
