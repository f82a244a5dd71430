//! Service tests of the VPN (Net API, requestor side): daemon libraries
//! started in-process on port 0 with temporary data dirs, driven through
//! their real REST API, WebSockets and bus sockets.
//!
//! The end-to-end test needs no Docker: on node B a bus client binds
//! `/public/vpn/<id>` (as the VM exe unit does) and runs a second smoltcp
//! stack at 192.168.0.2 with a TCP echo (port 7) and a greeter that writes a
//! banner and closes (port 8); the requestor on node A reaches them through
//! `ws://…/net-api/v1/net/{id}/tcp/192.168.0.2/<port>`.
#![allow(clippy::unwrap_used)] // test helpers panic on setup failure by design

use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use golem_bus::{BusClient, Caller, ServiceEndpoint};
use golem_daemon::config::DaemonConfig;
use golem_daemon::vpn::actor::{NetworkView, ReadNetwork};
use golem_daemon::Node;
use golem_model::bus::net_address;
use golem_model::vpn::{split_packets, vpn_service, PacketBatch, VpnControl, VpnPackets};
use golem_model::{ErrorCode, NodeId};
use serde_json::{json, Value};
use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::socket::tcp;
use smoltcp::time::Instant as SmolInstant;
use smoltcp::wire::{HardwareAddress, IpAddress, IpCidr, IpProtocol, Ipv4Packet, Ipv4Repr};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

const APP_KEY: &str = "vpn-test-key";
const OTHER_NODE: &str = "0x1111111111111111111111111111111111111111";

fn test_config(data_dir: &std::path::Path, bootstrap: Option<&str>) -> DaemonConfig {
    DaemonConfig {
        data_dir: data_dir.to_path_buf(),
        api_addr: "127.0.0.1:0".parse().unwrap(),
        p2p_listen: vec!["/ip4/127.0.0.1/tcp/0".into()],
        bootstrap: bootstrap
            .map(|addr| vec![addr.to_string()])
            .unwrap_or_default(),
        api_workers: 1,
        autoconf_appkey: Some(APP_KEY.into()),
        ..DaemonConfig::default()
    }
}

/// Start a node, retrying while a previous instance on the same data dir
/// still holds the database.
async fn start(data_dir: &std::path::Path, bootstrap: Option<&str>) -> Node {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match golem_daemon::start(test_config(data_dir, bootstrap)).await {
            Ok(node) => return node,
            Err(error) if Instant::now() < deadline => {
                eprintln!("start failed, retrying: {error:#}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(error) => panic!("cannot start the node: {error:#}"),
        }
    }
}

async fn p2p_address(node: &Node) -> String {
    let status = node.net.status().await;
    format!("{}/p2p/{}", status.listen_addrs[0], status.peer_id)
}

/// The REST API of one node, answers as (status, JSON body).
struct Api {
    http: reqwest::Client,
    base: String,
}

impl Api {
    fn of(node: &Node) -> Api {
        Api {
            http: reqwest::Client::new(),
            base: format!("http://{}", node.api_addr),
        }
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> (u16, Value) {
        let response = request.bearer_auth(APP_KEY).send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, body)
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        self.send(self.http.get(format!("{}{path}", self.base)))
            .await
    }

    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.send(self.http.post(format!("{}{path}", self.base)).json(&body))
            .await
    }

    async fn post_raw(&self, path: &str, body: String) -> (u16, Value) {
        self.send(
            self.http
                .post(format!("{}{path}", self.base))
                .header("content-type", "application/json")
                .body(body),
        )
        .await
    }

    async fn delete(&self, path: &str) -> (u16, Value) {
        self.send(self.http.delete(format!("{}{path}", self.base)))
            .await
    }

    async fn create_network(&self) -> String {
        let (status, network) = self
            .post(
                "/net-api/v1/net",
                json!({"ip": "192.168.0.0", "mask": "255.255.255.0"}),
            )
            .await;
        assert_eq!(status, 200, "{network}");
        network["id"].as_str().unwrap().to_string()
    }
}

fn message(body: &Value) -> &str {
    body["message"].as_str().unwrap_or_default()
}

#[actix_rt::test]
async fn networks_are_managed_over_both_api_versions_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path(), None).await;
    let api = Api::of(&node);
    let own_id = node.node_id.to_string();

    let (status, network) = api
        .post(
            "/net-api/v1/net",
            json!({"ip": "192.168.0.0", "mask": "255.255.255.0"}),
        )
        .await;
    assert_eq!(status, 200, "{network}");
    let id = network["id"].as_str().unwrap().to_string();
    assert_eq!(id.len(), 32, "{network}");
    assert_eq!(network["ip"], "192.168.0.0/24");
    assert_eq!(network["mask"], "255.255.255.0");
    assert_eq!(network["gateway"], "192.168.0.1");

    // v2 lists the same networks; it creates too (with a prefix and a gateway).
    let (status, created_v2) = api
        .post(
            "/net-api/v2/vpn/net",
            json!({"ip": "10.0.0.0/16", "gateway": "10.0.0.254"}),
        )
        .await;
    assert_eq!(status, 200, "{created_v2}");
    assert_eq!(created_v2["mask"], "255.255.0.0");
    assert_eq!(created_v2["gateway"], "10.0.0.254");
    let (status, listed) = api.get("/net-api/v2/vpn/net").await;
    assert_eq!(status, 200);
    assert_eq!(listed.as_array().unwrap().len(), 2, "{listed}");
    let (status, fetched) = api.get(&format!("/net-api/v1/net/{id}")).await;
    assert_eq!((status, &fetched), (200, &network));

    // Addresses: idempotent, the gateway first.
    for _ in 0..2 {
        let (status, body) = api
            .post(
                &format!("/net-api/v1/net/{id}/addresses"),
                json!({"ip": "192.168.0.1"}),
            )
            .await;
        assert_eq!((status, body), (200, Value::Null));
    }
    let (status, body) = api
        .post(
            &format!("/net-api/v2/vpn/net/{id}/addresses"),
            json!({"ip": "192.168.0.9"}),
        )
        .await;
    assert_eq!((status, body), (200, Value::Null));
    let (_, addresses) = api.get(&format!("/net-api/v1/net/{id}/addresses")).await;
    assert_eq!(
        addresses,
        json!([{"ip": "192.168.0.1"}, {"ip": "192.168.0.9"}])
    );

    // Nodes: idempotent; our own NodeId is an address of ours, not a member.
    for _ in 0..2 {
        let (status, body) = api
            .post(
                &format!("/net-api/v1/net/{id}/nodes"),
                json!({"id": OTHER_NODE, "ip": "192.168.0.2"}),
            )
            .await;
        assert_eq!((status, body), (200, Value::Null));
    }
    let (status, body) = api
        .post(
            &format!("/net-api/v1/net/{id}/nodes"),
            json!({"id": own_id, "ip": "192.168.0.1"}),
        )
        .await;
    assert_eq!((status, body), (200, Value::Null));
    let (_, nodes) = api.get(&format!("/net-api/v1/net/{id}/nodes")).await;
    assert_eq!(nodes, json!([{"id": OTHER_NODE, "ip": "192.168.0.2"}]));
    let (status, connections) = api.get(&format!("/net-api/v1/net/{id}/tcp")).await;
    assert_eq!((status, connections), (200, json!([])));
    // The spec's experimental operations: no proxies; listening is refused with what to use.
    let (status, proxies) = api.get(&format!("/net-api/v1/net/{id}/proxy")).await;
    assert_eq!((status, proxies), (200, json!([])));
    let (status, body) = api
        .get(&format!("/net-api/v1/net/{id}/listen-tcp/80"))
        .await;
    assert_eq!(status, 501, "{body}");
    assert!(message(&body).contains("/tcp/{ip}/{port}"), "{body}");

    // Someone else's (here: an unknown) network is 404 everywhere.
    let foreign = "0123456789abcdef0123456789abcdef";
    for (status, body) in [
        api.get(&format!("/net-api/v1/net/{foreign}")).await,
        api.delete(&format!("/net-api/v1/net/{foreign}")).await,
        api.get(&format!("/net-api/v1/net/{foreign}/addresses"))
            .await,
        api.get(&format!("/net-api/v2/vpn/net/{foreign}/nodes"))
            .await,
        api.get(&format!("/net-api/v1/net/{foreign}/tcp")).await,
        api.get(&format!("/net-api/v1/net/{foreign}/proxy")).await,
        api.get(&format!("/net-api/v2/vpn/net/{foreign}/listen-tcp/80"))
            .await,
        api.post(
            &format!("/net-api/v1/net/{foreign}/nodes"),
            json!({"id": OTHER_NODE, "ip": "192.168.0.3"}),
        )
        .await,
    ] {
        assert_eq!(status, 404, "{body}");
        assert!(message(&body).contains("not found"), "{body}");
    }
    // Another identity does not see ours: the owner is part of every lookup.
    let other_owner: NodeId = OTHER_NODE.parse().unwrap();
    let hidden = node
        .vpn
        .ask(ReadNetwork {
            owner: other_owner,
            id: id.clone(),
            view: NetworkView::Network,
        })
        .await
        .unwrap_err();
    assert_eq!(hidden.code, ErrorCode::NotFound);

    // The v2 status of the net, beside v1's.
    let (status, net_status) = api.get("/net-api/v2/net/status").await;
    assert_eq!(status, 200, "{net_status}");
    assert_eq!(net_status["nodeId"], own_id.as_str());
    assert!(net_status["sessions"].is_u64(), "{net_status}");
    // v1's status is still served beside the v1 scope of the Net API.
    let (status, net_status) = api.get("/net-api/v1/status").await;
    assert_eq!(status, 200, "{net_status}");
    assert_eq!(net_status["node_id"], own_id.as_str(), "{net_status}");

    // An actor that dies is started again from sled, its networks served again.
    node.vpn.crash_for_test().await;
    eventually("the vpn actor to be started again", async || {
        (node.vpn.restarts() >= 1).then_some(())
    })
    .await;
    let (status, fetched) = eventually("the network after the actor's restart", async || {
        let (status, body) = api.get(&format!("/net-api/v1/net/{id}")).await;
        (status == 200).then_some((status, body))
    })
    .await;
    assert_eq!((status, &fetched), (200, &network));
    assert!(node.router.is_bound(&vpn_service(&id)));

    // A restart keeps networks, addresses and nodes, and serves them on the bus again.
    node.stop().await;
    let node = start(dir.path(), None).await;
    let api = Api::of(&node);
    assert!(node.router.is_bound(&vpn_service(&id)));
    let (status, fetched) = api.get(&format!("/net-api/v1/net/{id}")).await;
    assert_eq!((status, &fetched), (200, &network));
    let (_, nodes) = api.get(&format!("/net-api/v1/net/{id}/nodes")).await;
    assert_eq!(nodes, json!([{"id": OTHER_NODE, "ip": "192.168.0.2"}]));
    let (_, addresses) = api.get(&format!("/net-api/v1/net/{id}/addresses")).await;
    assert_eq!(addresses.as_array().unwrap().len(), 2, "{addresses}");

    // Removing a node (twice: unknown is fine), then the network.
    for _ in 0..2 {
        let (status, body) = api
            .delete(&format!("/net-api/v1/net/{id}/nodes/{OTHER_NODE}"))
            .await;
        assert_eq!((status, body), (200, Value::Null));
    }
    let (_, nodes) = api.get(&format!("/net-api/v1/net/{id}/nodes")).await;
    assert_eq!(nodes, json!([]));
    let (status, body) = api.delete(&format!("/net-api/v1/net/{id}")).await;
    assert_eq!((status, body), (200, Value::Null));
    let (status, _) = api.get(&format!("/net-api/v1/net/{id}")).await;
    assert_eq!(status, 404);
    let (_, listed) = api.get("/net-api/v1/net").await;
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    node.stop().await;
}

#[actix_rt::test]
async fn bad_input_is_refused_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path(), None).await;
    let api = Api::of(&node);

    for (body, field) in [
        (json!({"ip": "192.168.0"}), "invalid ip"),
        (json!({"ip": "fe80::/64"}), "invalid ip"),
        (
            json!({"ip": "192.168.0.0", "mask": "255.0.255.0"}),
            "invalid mask",
        ),
        (
            json!({"ip": "192.168.0.0/24", "mask": "255.255.0.0"}),
            "invalid mask",
        ),
        (
            json!({"ip": "192.168.0.0", "gateway": "10.0.0.1"}),
            "invalid gateway",
        ),
    ] {
        let (status, answer) = api.post("/net-api/v1/net", body.clone()).await;
        assert_eq!(status, 400, "{body}: {answer}");
        assert!(message(&answer).starts_with(field), "{body}: {answer}");
    }
    for raw in ["{\"ip\": ", "{\"mask\": \"255.255.255.0\"}", "[1, 2]"] {
        let (status, answer) = api.post_raw("/net-api/v1/net", raw.to_string()).await;
        assert_eq!(status, 400, "{raw}: {answer}");
        assert!(message(&answer).contains("JSON"), "{raw}: {answer}");
    }
    // A huge value within the body limit: 400 naming the field, not echoed back.
    let (status, answer) = api
        .post("/net-api/v1/net", json!({"ip": "9".repeat(100_000)}))
        .await;
    assert_eq!(status, 400, "{answer}");
    assert!(message(&answer).starts_with("invalid ip"), "{answer}");
    assert!(message(&answer).len() < 200, "{answer}");
    // Bodies over the limit get the daemon's usual 413 before they are read.
    let (status, _) = api
        .post_raw(
            "/net-api/v1/net",
            format!("{{\"ip\": \"{}\"}}", "1".repeat(5 * 1024 * 1024)),
        )
        .await;
    assert_eq!(status, 413);

    let id = api.create_network().await;
    let nodes = format!("/net-api/v1/net/{id}/nodes");
    let addresses = format!("/net-api/v1/net/{id}/addresses");
    let (status, _) = api
        .post(&nodes, json!({"id": OTHER_NODE, "ip": "192.168.0.2"}))
        .await;
    assert_eq!(status, 200);
    for (path, body, field) in [
        (
            &nodes,
            json!({"id": OTHER_NODE, "ip": "192.168.1.2"}),
            "invalid ip",
        ),
        (
            &nodes,
            json!({"id": OTHER_NODE, "ip": "192.168.0.255"}),
            "invalid ip",
        ),
        (
            &nodes,
            json!({"id": "0x12", "ip": "192.168.0.3"}),
            "invalid id",
        ),
        // Taken by another node, or by the requestor itself.
        (
            &nodes,
            json!({"id": "0x2222222222222222222222222222222222222222", "ip": "192.168.0.2"}),
            "invalid ip",
        ),
        (
            &nodes,
            json!({"id": "0x2222222222222222222222222222222222222222", "ip": "192.168.0.1"}),
            "invalid ip",
        ),
        (&addresses, json!({"ip": "10.0.0.1"}), "invalid ip"),
        (&addresses, json!({"ip": "192.168.0.2"}), "invalid ip"),
    ] {
        let (status, answer) = api.post(path, body.clone()).await;
        assert_eq!(status, 400, "{body}: {answer}");
        assert!(message(&answer).starts_with(field), "{body}: {answer}");
    }
    let (status, answer) = api
        .delete(&format!("/net-api/v1/net/{id}/nodes/not-a-node"))
        .await;
    assert_eq!(status, 400, "{answer}");
    assert!(message(&answer).starts_with("invalid nodeId"), "{answer}");

    // WebSockets: refused before the upgrade with a status that says why.
    for (target, expected, text) in [
        ("10.0.0.2/22", 400, "invalid ip"),
        ("192.168.0.1/22", 400, "own address"),
        ("192.168.0.7/22", 404, "no node"),
        ("192.168.0.2/0", 400, "invalid port"),
        ("192.168.0.2/ssh", 400, "invalid port"),
    ] {
        let url = format!("ws://{}/net-api/v1/net/{id}/tcp/{target}", node.api_addr);
        let (status, body) = websocket_refusal(&url).await;
        assert_eq!(status, expected, "{target}: {body}");
        assert!(body.contains(text), "{target}: {body}");
    }
    let url = format!(
        "ws://{}/net-api/v1/net/0123456789abcdef0123456789abcdef/tcp/192.168.0.2/22",
        node.api_addr
    );
    assert_eq!(websocket_refusal(&url).await.0, 404);
    node.stop().await;
}

type WebSocket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn open_websocket(url: &str) -> Result<WebSocket, tokio_tungstenite::tungstenite::Error> {
    let mut request = url.into_client_request().unwrap();
    // golem-js puts the app-key in the query; yapapi sends the header.
    if !url.contains("authToken=") {
        request.headers_mut().insert(
            "authorization",
            format!("Bearer {APP_KEY}").parse().unwrap(),
        );
    }
    tokio_tungstenite::connect_async(request)
        .await
        .map(|(socket, _)| socket)
}

/// Open a WebSocket that must be upgraded; a refusal panics with its reason.
async fn connected_websocket(url: &str) -> WebSocket {
    match open_websocket(url).await {
        Ok(socket) => socket,
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => panic!(
            "{url} refused with {}: {}",
            response.status(),
            String::from_utf8_lossy(response.body().as_deref().unwrap_or_default())
        ),
        Err(error) => panic!("{url}: {error}"),
    }
}

/// The HTTP status and body of a refused WebSocket upgrade.
async fn websocket_refusal(url: &str) -> (u16, String) {
    match open_websocket(url).await {
        Ok(_) => panic!("{url} was upgraded"),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => (
            response.status().as_u16(),
            String::from_utf8_lossy(response.body().as_deref().unwrap_or_default()).into_owned(),
        ),
        Err(error) => panic!("{url}: {error}"),
    }
}

// ---- the member node's side: a second smoltcp stack behind a bus client ----

const MEMBER_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 0, 2);
const ECHO_PORT: u16 = 7;
const GREETER_PORT: u16 = 8;
const GREETING: &[u8] = b"SSH-2.0-vpn-test-responder\r\n";

use golem_daemon::vpn::stack::PacketQueue;

/// What the member saw, for the assertions.
#[derive(Default)]
struct MemberLog {
    controls: Vec<(Caller, VpnControl)>,
    /// FINs the echo socket received (a client's Close must cause one).
    echo_fins: u32,
    packets_in: u64,
}

fn tcp_socket() -> tcp::Socket<'static> {
    tcp::Socket::new(
        tcp::SocketBuffer::new(vec![0; 64 * 1024]),
        tcp::SocketBuffer::new(vec![0; 64 * 1024]),
    )
}

/// Bind `/public/vpn/<id>` on `member`'s bus and answer TCP at 192.168.0.2.
async fn start_member(
    bus_socket: &std::path::Path,
    requestor: NodeId,
    network_id: &str,
) -> (BusClient, Arc<Mutex<MemberLog>>) {
    let client = BusClient::connect(bus_socket, "vpn-test-member")
        .await
        .unwrap();
    let log = Arc::new(Mutex::new(MemberLog::default()));
    let (inbound_tx, inbound) = mpsc::unbounded_channel::<Vec<Vec<u8>>>();
    let control_log = log.clone();
    let endpoint = ServiceEndpoint::new()
        .on_with_attachment(move |caller, _batch: VpnPackets, attachment| {
            let packets = split_packets(&attachment)
                .filter_map(|packet| packet.ok().map(<[u8]>::to_vec))
                .collect();
            let taken = inbound_tx
                .send(packets)
                .map_err(|_| golem_model::GolemError::unavailable("member stopped"));
            let _ = caller;
            async move { taken }
        })
        .on(move |caller, control: VpnControl| {
            control_log.lock().unwrap().controls.push((caller, control));
            async { Ok(()) }
        });
    client
        .bind(&vpn_service(network_id), endpoint)
        .await
        .unwrap();

    let (outbound_tx, outbound) = mpsc::unbounded_channel::<Vec<u8>>();
    actix_rt::spawn(send_back(
        client.clone(),
        net_address(requestor, &vpn_service(network_id)),
        network_id.to_string(),
        outbound,
    ));
    actix_rt::spawn(run_member_stack(inbound, outbound_tx, log.clone()));
    (client, log)
}

/// The member's egress: one ordered queue, batched, to the requestor.
async fn send_back(
    client: BusClient,
    address: String,
    network_id: String,
    mut outbound: mpsc::UnboundedReceiver<Vec<u8>>,
) {
    let message = VpnPackets {
        network_id: network_id.clone(),
    };
    while let Some(first) = outbound.recv().await {
        let mut batch = PacketBatch::new();
        batch.push(&first).unwrap();
        while !batch.is_full() {
            let Ok(packet) = outbound.try_recv() else {
                break;
            };
            batch.push(&packet).unwrap();
        }
        let attachment = batch.into_attachment();
        if let Err(error) = client
            .call_with_attachment(&address, &message, attachment)
            .await
        {
            eprintln!("member: sending packets back failed: {error}");
        }
    }
}

async fn run_member_stack(
    mut inbound: mpsc::UnboundedReceiver<Vec<Vec<u8>>>,
    outbound: mpsc::UnboundedSender<Vec<u8>>,
    log: Arc<Mutex<MemberLog>>,
) {
    let mut device = PacketQueue::default();
    let mut iface = Interface::new(
        Config::new(HardwareAddress::Ip),
        &mut device,
        SmolInstant::now(),
    );
    iface.update_ip_addrs(|addresses| {
        addresses
            .push(IpCidr::new(IpAddress::Ipv4(MEMBER_IP), 24))
            .unwrap();
    });
    let mut sockets = SocketSet::new(Vec::new());
    let echo: SocketHandle = sockets.add(tcp_socket());
    let greeter: SocketHandle = sockets.add(tcp_socket());
    // Listening before the first packet can arrive (else it is refused).
    sockets
        .get_mut::<tcp::Socket>(echo)
        .listen(ECHO_PORT)
        .unwrap();
    sockets
        .get_mut::<tcp::Socket>(greeter)
        .listen(GREETER_PORT)
        .unwrap();
    let mut greeted = false;
    let mut echo_closing = false;
    loop {
        let delay = iface
            .poll_delay(SmolInstant::now(), &sockets)
            .map(Duration::from)
            .unwrap_or(Duration::from_millis(50))
            .min(Duration::from_millis(50));
        tokio::select! {
            batch = inbound.recv() => match batch {
                Some(packets) => {
                    log.lock().unwrap().packets_in += packets.len() as u64;
                    device.rx.extend(packets);
                }
                None => return,
            },
            _ = tokio::time::sleep(delay) => {}
        }
        while let Ok(packets) = inbound.try_recv() {
            log.lock().unwrap().packets_in += packets.len() as u64;
            device.rx.extend(packets);
        }
        iface.poll(SmolInstant::now(), &mut device, &mut sockets);

        let socket = sockets.get_mut::<tcp::Socket>(echo);
        if !socket.is_open() {
            socket.listen(ECHO_PORT).unwrap();
            echo_closing = false;
        }
        while socket.can_recv() && socket.send_capacity() > socket.send_queue() {
            let room = socket.send_capacity() - socket.send_queue();
            let data = socket
                .recv(|buffer| {
                    let taken = buffer.len().min(room);
                    (taken, buffer[..taken].to_vec())
                })
                .unwrap();
            socket.send_slice(&data).unwrap();
        }
        if !socket.may_recv() && socket.state() == tcp::State::CloseWait && !echo_closing {
            echo_closing = true;
            log.lock().unwrap().echo_fins += 1;
            socket.close();
        }

        let socket = sockets.get_mut::<tcp::Socket>(greeter);
        if !socket.is_open() {
            socket.listen(GREETER_PORT).unwrap();
            greeted = false;
        }
        if socket.may_send() && !greeted {
            socket.send_slice(GREETING).unwrap();
            socket.close();
            greeted = true;
        }

        iface.poll(SmolInstant::now(), &mut device, &mut sockets);
        for packet in device.tx.drain(..) {
            let _ = outbound.send(packet);
        }
    }
}

/// One IPv4 packet from `source` to `destination` (protocol TCP, no
/// payload), as the attachment of a `VpnPackets` call.
fn ipv4_packet(source: Ipv4Addr, destination: Ipv4Addr) -> Vec<u8> {
    let repr = Ipv4Repr {
        src_addr: source,
        dst_addr: destination,
        next_header: IpProtocol::Tcp,
        payload_len: 0,
        hop_limit: 64,
    };
    let mut bytes = vec![0; repr.buffer_len()];
    repr.emit(
        &mut Ipv4Packet::new_unchecked(&mut bytes[..]),
        &smoltcp::phy::ChecksumCapabilities::default(),
    );
    PacketBatch::of([&bytes[..]]).into_attachment()
}

async fn eventually<T>(what: &str, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Read binary messages until `expected` bytes came, then return them.
async fn read_bytes(socket: &mut WebSocket, expected: usize) -> Vec<u8> {
    let mut received = Vec::new();
    while received.len() < expected {
        let message = tokio::time::timeout(Duration::from_secs(20), socket.next())
            .await
            .expect("bytes in time")
            .expect("the socket is open")
            .expect("a message");
        match message {
            Message::Binary(data) => received.extend_from_slice(&data),
            Message::Ping(_) | Message::Pong(_) => {}
            other => panic!("expected bytes, got {other:?}"),
        }
    }
    received
}

/// Wait for the server's Close (after any remaining bytes, which are returned).
async fn read_until_close(socket: &mut WebSocket) -> Vec<u8> {
    let mut received = Vec::new();
    loop {
        let message = tokio::time::timeout(Duration::from_secs(20), socket.next())
            .await
            .expect("a close in time");
        match message {
            Some(Ok(Message::Binary(data))) => received.extend_from_slice(&data),
            Some(Ok(Message::Close(_))) | None => return received,
            Some(Ok(_)) => {}
            Some(Err(error)) => panic!("websocket error before close: {error}"),
        }
    }
}

/// Make `member` a member at 192.168.0.2 (the requestor is 192.168.0.1).
async fn join_member(api: &Api, id: &str, member: NodeId) {
    let (status, _) = api
        .post(
            &format!("/net-api/v1/net/{id}/addresses"),
            json!({"ip": "192.168.0.1"}),
        )
        .await;
    assert_eq!(status, 200);
    let (status, _) = api
        .post(
            &format!("/net-api/v1/net/{id}/nodes"),
            json!({"id": member.to_string(), "ip": MEMBER_IP.to_string()}),
        )
        .await;
    assert_eq!(status, 200);
}

/// A requestor node A with a network, and a member node B answering TCP at
/// 192.168.0.2 through a bus client (not yet added to the network).
struct Pair {
    _dirs: (tempfile::TempDir, tempfile::TempDir),
    requestor: Node,
    member: Node,
    api: Api,
    id: String,
    client: BusClient,
    log: Arc<Mutex<MemberLog>>,
}

impl Pair {
    async fn start() -> Pair {
        let dir_a = tempfile::tempdir().unwrap();
        let dir_b = tempfile::tempdir().unwrap();
        let requestor = start(dir_a.path(), None).await;
        let bootstrap = p2p_address(&requestor).await;
        let config_b = test_config(dir_b.path(), Some(&bootstrap));
        let member_bus = config_b.bus_socket_path();
        let member = golem_daemon::start(config_b).await.unwrap();
        let api = Api::of(&requestor);
        let id = api.create_network().await;
        let (client, log) = start_member(&member_bus, requestor.node_id, &id).await;
        Pair {
            _dirs: (dir_a, dir_b),
            requestor,
            member,
            api,
            id,
            client,
            log,
        }
    }

    async fn stop(self) {
        drop(self.client);
        self.member.stop().await;
        self.requestor.stop().await;
    }
}

#[actix_rt::test]
async fn a_silent_websocket_is_closed_after_ten_seconds_and_its_connection_ends() {
    let pair = Pair::start().await;
    join_member(&pair.api, &pair.id, pair.member.node_id).await;
    let url = format!(
        "ws://{}/net-api/v1/net/{}/tcp/{MEMBER_IP}/{ECHO_PORT}",
        pair.requestor.api_addr, pair.id
    );
    let mut socket = connected_websocket(&url).await;
    let opened = Instant::now();
    // Not reading: the client answers none of the server's pings.
    tokio::time::sleep(Duration::from_secs(11)).await;
    let mut pings = 0;
    loop {
        let message = tokio::time::timeout(Duration::from_secs(15), socket.next())
            .await
            .expect("the server gives up in time");
        match message {
            Some(Ok(Message::Ping(_))) => pings += 1,
            Some(Ok(Message::Close(_))) | None => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(pings >= 1, "the server pinged {pings} times");
    assert!(opened.elapsed() >= Duration::from_secs(10));
    eventually("the member to see the FIN", async || {
        (pair.log.lock().unwrap().echo_fins >= 1).then_some(())
    })
    .await;
    pair.stop().await;
}

#[actix_rt::test]
async fn a_websocket_reaches_tcp_on_a_member_node_over_the_wire() {
    let Pair {
        _dirs,
        requestor,
        member,
        api,
        id,
        client,
        log,
    } = Pair::start().await;
    let to_requestor = net_address(requestor.node_id, &vpn_service(&id));

    // Not yet a member: whatever B sends is taken and dropped.
    let batch = VpnPackets {
        network_id: id.clone(),
    };
    let stray = ipv4_packet(MEMBER_IP, Ipv4Addr::new(192, 168, 0, 1));
    client
        .call_with_attachment(&to_requestor, &batch, stray)
        .await
        .unwrap();
    let stats = eventually("the non-member's packets to be counted", async || {
        let stats = requestor.vpn.stats(&id).await.unwrap();
        (stats.dropped_non_member >= 1).then_some(stats)
    })
    .await;
    assert_eq!(stats.ingress_packets, 0, "{stats:?}");

    // B joins: it hears the table from the owner.
    join_member(&api, &id, member.node_id).await;
    let table = eventually("B to hear AddNodes from A", async || {
        log.lock()
            .unwrap()
            .controls
            .iter()
            .find_map(|(caller, control)| match control {
                VpnControl::AddNodes { nodes, .. }
                    if *caller == Caller::Remote(requestor.node_id) && nodes.len() == 2 =>
                {
                    Some(nodes.clone())
                }
                _ => None,
            })
    })
    .await;
    assert_eq!(table.get("192.168.0.1"), Some(&requestor.node_id));
    assert_eq!(table.get("192.168.0.2"), Some(&member.node_id));
    // A repeated POST (yapapi re-adds every node once activities run) pushes
    // the table again, for exe units that were not up the first time.
    let heard = log.lock().unwrap().controls.len();
    let (status, _) = api
        .post(
            &format!("/net-api/v1/net/{id}/nodes"),
            json!({"id": member.node_id.to_string(), "ip": MEMBER_IP.to_string()}),
        )
        .await;
    assert_eq!(status, 200);
    eventually("B to hear the table again", async || {
        (log.lock().unwrap().controls.len() > heard).then_some(())
    })
    .await;

    // A member may not speak for an address that is not its own.
    let spoofed = ipv4_packet(Ipv4Addr::new(192, 168, 0, 3), Ipv4Addr::new(192, 168, 0, 1));
    client
        .call_with_attachment(&to_requestor, &batch, spoofed)
        .await
        .unwrap();
    eventually("the spoofed packet to be counted", async || {
        let stats = requestor.vpn.stats(&id).await.unwrap();
        (stats.dropped_spoofed >= 1).then_some(())
    })
    .await;

    // Echo: bytes go there and back through both stacks and both daemons.
    let url = format!(
        "ws://{}/net-api/v1/net/{id}/tcp/{MEMBER_IP}/{ECHO_PORT}",
        requestor.api_addr
    );
    let opened = Instant::now();
    let mut socket = connected_websocket(&url).await;
    let upgraded_ms = opened.elapsed().as_secs_f64() * 1000.0;
    socket
        .send(Message::binary(b"hello over the vpn".to_vec()))
        .await
        .unwrap();
    let echoed = read_bytes(&mut socket, 18).await;
    eprintln!(
        "vpn e2e: websocket open (connect + 101) {upgraded_ms:.1} ms, open -> first echoed byte {:.1} ms",
        opened.elapsed().as_secs_f64() * 1000.0
    );
    assert_eq!(echoed, b"hello over the vpn");

    let (status, connections) = api.get(&format!("/net-api/v1/net/{id}/tcp")).await;
    assert_eq!(status, 200);
    assert_eq!(
        connections,
        json!([{
            "protocol": 6,
            "localIp": "192.168.0.1",
            "localPort": connections[0]["localPort"],
            "remoteIp": "192.168.0.2",
            "remotePort": 7
        }])
    );

    // More than the windows and the MTU: flow control, batching, order.
    let large: Vec<u8> = (0..300_000u32).map(|index| (index % 251) as u8).collect();
    for chunk in large.chunks(64 * 1024) {
        socket.send(Message::binary(chunk.to_vec())).await.unwrap();
    }
    let echoed = read_bytes(&mut socket, large.len()).await;
    assert!(echoed == large, "the echo differs from what was sent");

    // Pings are answered.
    socket
        .send(Message::Ping(b"are you there".to_vec().into()))
        .await
        .unwrap();
    loop {
        let message = tokio::time::timeout(Duration::from_secs(10), socket.next())
            .await
            .expect("a pong in time")
            .expect("the socket is open")
            .expect("a message");
        if let Message::Pong(payload) = message {
            assert_eq!(&payload[..], b"are you there");
            break;
        }
    }

    // The client's Close reaches the member as a FIN, and is answered.
    socket.close(None).await.unwrap();
    let _ = read_until_close(&mut socket).await;
    eventually("the echo socket to see the FIN", async || {
        (log.lock().unwrap().echo_fins >= 1).then_some(())
    })
    .await;
    eventually("the closed connection to leave the list", async || {
        let (_, connections) = api.get(&format!("/net-api/v1/net/{id}/tcp")).await;
        (connections == json!([])).then_some(())
    })
    .await;

    // The member's FIN arrives after its last byte, as a Close.
    let url = format!(
        "ws://{}/net-api/v2/vpn/net/{id}/tcp/{MEMBER_IP}/{GREETER_PORT}?authToken={APP_KEY}",
        requestor.api_addr
    );
    let mut socket = connected_websocket(&url).await;
    let greeting = read_until_close(&mut socket).await;
    assert_eq!(greeting, GREETING);

    // Nothing listens at port 9: refused before the upgrade.
    let url = format!(
        "ws://{}/net-api/v1/net/{id}/tcp/{MEMBER_IP}/9",
        requestor.api_addr
    );
    let (status, body) = websocket_refusal(&url).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("refused"), "{body}");

    // A member that never answers: 408 after the connect timeout, before any upgrade.
    let (status, _) = api
        .post(
            &format!("/net-api/v1/net/{id}/nodes"),
            json!({"id": OTHER_NODE, "ip": "192.168.0.3"}),
        )
        .await;
    assert_eq!(status, 200);
    let url = format!(
        "ws://{}/net-api/v1/net/{id}/tcp/192.168.0.3/22",
        requestor.api_addr
    );
    let asked = Instant::now();
    let (status, body) = websocket_refusal(&url).await;
    assert_eq!(status, 408, "{body}");
    assert!(body.contains("timed out"), "{body}");
    assert!(
        asked.elapsed() >= Duration::from_secs(4),
        "{:?}",
        asked.elapsed()
    );

    // Removing the network closes its open WebSockets.
    let url = format!(
        "ws://{}/net-api/v1/net/{id}/tcp/{MEMBER_IP}/{ECHO_PORT}",
        requestor.api_addr
    );
    let mut socket = connected_websocket(&url).await;
    assert!(requestor.router.is_bound(&vpn_service(&id)));
    let (status, _) = api.delete(&format!("/net-api/v1/net/{id}")).await;
    assert_eq!(status, 200);
    let _ = read_until_close(&mut socket).await;
    assert!(log.lock().unwrap().packets_in > 0);
    assert!(!requestor.router.is_bound(&vpn_service(&id)));
    // ... and its member hears that every address is gone.
    let removed = eventually("B to hear RemoveNodes of the deleted network", async || {
        log.lock()
            .unwrap()
            .controls
            .iter()
            .find_map(|(caller, control)| match control {
                VpnControl::RemoveNodes { ips, .. }
                    if *caller == Caller::Remote(requestor.node_id) =>
                {
                    Some(ips.clone())
                }
                _ => None,
            })
    })
    .await;
    assert!(removed.contains(&"192.168.0.1".to_string()), "{removed:?}");
    assert!(removed.contains(&MEMBER_IP.to_string()), "{removed:?}");

    drop(client);
    member.stop().await;
    requestor.stop().await;
}
