//! End-to-end tests of the whole VPN stack (issue 19): a requestor daemon and
//! two provider daemons, each provider with the real `golem-provider` agent
//! offering the VM runtime. The requestor negotiates with both agents, makes
//! a network through the Net API as yapapi and golem-js do (`POST /net`, its
//! own address .1, the providers .2 and .3), deploys both activities with
//! `deploy.net` as yapapi builds it (plus `hosts`/`hostname`), and then talks
//! to servers in the containers over WebSockets
//! (`/net-api/v1/net/{id}/tcp/{ip}/{port}`) while the containers talk to
//! each other. Nothing is played by the test: requestor stack (smoltcp in
//! the daemon), provider TUN interfaces and the bus between them are real.
//!
//! Each container runs busybox servers (busybox-static in a scratch image,
//! whose `wget` and name lookups crash, hence `nc`):
//! - `httpd` on 8080 serving `hello from <hostname>`;
//! - a TCP echo on 9002 (`nc -ll -e cat`);
//! - a sink on 9001 that reads [`SINK_BYTES`] and answers their count.
//!
//! Needs `GOLEM_TEST_DOCKER=1` and an engine (`scripts/ensure-docker.sh`);
//! `bench_vpn_stack` is run by `scripts/bench/vpn.sh`.
#![allow(clippy::unwrap_used)] // test helpers panic on setup failure by design

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use golem_bus::BusClient;
use golem_client::GolemClient;
use golem_model::activity::CommandResult;
use golem_model::bus::net_address;
use golem_model::market::DemandOfferBase;
use golem_model::vpn::{vpn_service, NewNetwork, VpnPackets};
use golem_model::{ErrorCode, GolemError, NodeId};
use golem_tests::docker;
use golem_tests::http::FileServer;
use golem_tests::provider::{negotiate_with_agent, Preset, ProviderAgent, ProviderOptions};
use golem_tests::script::{output_text as text, run_batch as batch, run_captured};
use golem_tests::{eventually, Sandbox};
use serde_json::{json, Value};
use sha3::Digest;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

const IMAGE_TAG: &str = "golem-test-busybox:latest";
const PLATFORM: &str = "dummy-local-tglm";
const REQUESTOR_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 0, 1);
const A_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 0, 2);
const B_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 0, 3);
const HTTP_PORT: u16 = 8080;
const SINK_PORT: u16 = 9001;
const ECHO_PORT: u16 = 9002;
/// What the sink on [`SINK_PORT`] reads before it answers the count.
const SINK_BYTES: usize = 64 << 20;
/// The largest message yapapi's socket proxy sends.
const MESSAGE_BYTES: usize = 64 << 10;
/// An HTTP request as a shell pipeline's first stage.
const GET: &str = r"printf 'GET /index.html HTTP/1.0\r\n\r\n'";

type WebSocket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

fn run(script: &str) -> Value {
    run_with_args(script, &[])
}

/// `sh -c script sh args…`, stdout and stderr captured.
fn run_with_args(script: &str, args: &[&str]) -> Value {
    let mut argv = vec!["-c", script, "sh"];
    argv.extend_from_slice(args);
    run_captured("/bin/sh", &argv)
}

/// The servers of every container (see the module's doc); prints `serving`.
fn servers(hostname: &str) -> String {
    format!(
        "mkdir -p /tmp/www && echo hello from {hostname} > /tmp/www/index.html \
         && httpd -p {HTTP_PORT} -h /tmp/www \
         && (nc -ll -p {ECHO_PORT} -e cat </dev/null >/dev/null 2>&1 &) \
         && (nc -ll -p {SINK_PORT} -e sh -c 'head -c {SINK_BYTES} | wc -c' </dev/null >/dev/null 2>&1 &) \
         && echo serving"
    )
}

/// Ping-pong one line `$2` times over one TCP connection to `$1`'s echo and
/// print `rounds=<n> centiseconds=<elapsed>`: no process is started per round
/// (builtins on FIFOs), so a round is one TCP round trip plus two pipe hops.
const ROUND_TRIPS: &str = r#"cd /tmp && rm -f tx rx && mkfifo tx rx
nc "$1" 9002 < tx > rx &
exec 3>tx 4<rx
echo ping >&3; read -r line <&4
read start _ < /proc/uptime
i=0; while [ $i -lt "$2" ]; do echo ping >&3; read -r line <&4; i=$((i+1)); done
read end _ < /proc/uptime
exec 3>&- 4<&-
[ "$line" = ping ] || { echo "no echo: $line"; exit 1; }
start=${start%.*}${start#*.}; end=${end%.*}${end#*.}
echo rounds=$2 centiseconds=$((end-start))"#;

/// The guest MTU of the original (and ours before RFC 003's addendum).
const ORIGINAL_MTU: u64 = 1220;

/// Bytes and packets one way through an interface.
#[derive(Debug, Clone, Copy)]
struct Traffic {
    bytes: u64,
    packets: u64,
}

impl Traffic {
    fn since(self, earlier: Traffic) -> Traffic {
        Traffic {
            bytes: self.bytes - earlier.bytes,
            packets: self.packets - earlier.packets,
        }
    }

    fn mean_packet(self) -> u64 {
        self.bytes / self.packets.max(1)
    }
}

/// The kernel's counters of a container's `vpn0`.
#[derive(Debug, Clone, Copy)]
struct InterfaceCounters {
    received: Traffic,
    sent: Traffic,
}

/// One provider: its daemon's node, agent and activity.
struct Member {
    node: NodeId,
    agreement_id: String,
    activity_id: String,
    agent: ProviderAgent,
}

impl Member {
    fn exe_unit_log(&self) -> String {
        std::fs::read_to_string(
            self.agent
                .data_dir
                .join("work")
                .join(&self.agreement_id)
                .join(&self.activity_id)
                .join("exe-unit.log"),
        )
        .unwrap_or_else(|_| self.agent.log())
    }
}

/// Three daemons, two agents, one network with both containers serving.
/// Fields drop in order: agents (and their exe units) before the daemons.
struct VpnStack {
    requestor: GolemClient,
    network_id: String,
    requestor_node: NodeId,
    a: Member,
    b: Member,
    /// Buses of the requestor's and provider A's daemons.
    requestor_bus: BusClient,
    a_bus: BusClient,
    requestor_api_url: String,
    requestor_app_key: String,
    requestor_pid: u32,
    /// Provider A's daemon as a requestor (another identity).
    provider_a: GolemClient,
    _server: FileServer,
    _sandbox: Sandbox,
}

fn offer_options(subnet: &str, name: &str) -> ProviderOptions {
    ProviderOptions::new(subnet)
        .node_name(name)
        .exe_units(&["vm"])
        .preset(Preset::new("vm", "vm", "0", "0.0001", "0.0001"))
        // The exe units' logs stay for the assertions after the activity.
        .config("keep-work-dirs = true")
}

/// yapapi's vm demand, decorated for the allocation, for the agent named `name`.
async fn negotiate(
    requestor: &GolemClient,
    subnet: &str,
    package: &str,
    name: &str,
    agent: &ProviderAgent,
) -> String {
    let allocation = requestor.create_allocation(PLATFORM, "100").await.unwrap();
    let decoration = requestor
        .demand_decorations(&[&allocation.allocation_id])
        .await
        .unwrap();
    let mut properties = json!({
        "golem.node.debug.subnet": subnet,
        "golem.srv.comp.task_package": package,
        "golem.srv.comp.vm.package_format": "gvmkit-squash",
        "golem.srv.comp.expiration": chrono::Utc::now().timestamp_millis() + 1_800_000,
        "golem.com.payment.chosen-platform": PLATFORM,
    });
    for property in &decoration.properties {
        properties[&property.key] = json!(property.value);
    }
    let demand = DemandOfferBase {
        properties,
        constraints: format!(
            "(&(golem.node.debug.subnet={subnet})(golem.node.id.name={name})(golem.inf.mem.gib>=0.1)(golem.runtime.name=vm)(golem.runtime.capabilities=vpn){})",
            decoration.constraints.join("")
        ),
    };
    negotiate_with_agent(requestor, &demand, agent).await
}

/// `deploy.net` as yapapi builds it (`yapapi/network.py`), plus `hosts` and
/// `hostname`.
fn deploy(network_id: &str, node_ip: Ipv4Addr, nodes: &Value, hostname: &str) -> Value {
    json!({"deploy": {
        "net": [{"id": network_id, "ip": "192.168.0.0", "mask": "255.255.255.0",
                 "nodeIp": node_ip.to_string(), "nodes": nodes}],
        "hosts": {"node-a": A_IP.to_string(), "node-b": B_IP.to_string()},
        "hostname": hostname,
    }})
}

impl VpnStack {
    async fn start(subnet: &str) -> VpnStack {
        let mut sandbox = Sandbox::new();
        let bootstrap = sandbox.daemon("pa").unwrap().p2p_address().unwrap();
        for name in ["pb", "r"] {
            sandbox
                .daemon_with(name, &["--bootstrap", &bootstrap])
                .unwrap();
        }
        let files = sandbox.path().join("files");
        std::fs::create_dir_all(&files).unwrap();
        let server = FileServer::start(files.clone()).await.unwrap();
        docker::build_test_image("busybox", IMAGE_TAG).unwrap();
        let tarball = files.join("busybox.tar");
        docker::save_image(IMAGE_TAG, &tarball).unwrap();
        let package = format!(
            "hash:sha3:{}:{}",
            hex::encode(sha3::Sha3_224::digest(std::fs::read(&tarball).unwrap())),
            server.url("busybox.tar")
        );
        let root = sandbox.path().to_path_buf();
        let agent_a = ProviderAgent::start(
            &sandbox.daemons()[0],
            &root.join("vpn-a"),
            offer_options(subnet, "vpn-a"),
        )
        .unwrap();
        let agent_b = ProviderAgent::start(
            &sandbox.daemons()[1],
            &root.join("vpn-b"),
            offer_options(subnet, "vpn-b"),
        )
        .unwrap();
        let daemons = sandbox.daemons();
        let node = |index: usize| -> NodeId { daemons[index].node_id().unwrap().parse().unwrap() };
        let (a_node, b_node, requestor_node) = (node(0), node(1), node(2));
        let requestor = daemons[2].client();
        let requestor_bus = daemons[2].bus().await.unwrap();
        let a_bus = daemons[0].bus().await.unwrap();
        let requestor_api_url = daemons[2].api_url.clone();
        let requestor_app_key = daemons[2].app_key.clone();
        let requestor_pid = daemons[2].pid().unwrap();
        let provider_a = daemons[0].client();

        let agreement_a = negotiate(&requestor, subnet, &package, "vpn-a", &agent_a).await;
        let agreement_b = negotiate(&requestor, subnet, &package, "vpn-b", &agent_b).await;

        // The network as yapapi makes it (its own address by `/addresses`)
        // and as golem-js does (its own NodeId by `/nodes`): both at .1.
        let network = requestor
            .create_network(&NewNetwork {
                ip: "192.168.0.0".into(),
                mask: Some("255.255.255.0".into()),
                gateway: None,
            })
            .await
            .unwrap();
        assert_eq!(network.gateway, "192.168.0.1", "{network:?}");
        let network_id = network.id.clone();
        requestor
            .add_network_address(&network_id, &REQUESTOR_IP.to_string())
            .await
            .unwrap();
        requestor
            .add_network_node(
                &network_id,
                &requestor_node.to_string(),
                &REQUESTOR_IP.to_string(),
            )
            .await
            .unwrap();
        for (node, ip) in [(a_node, A_IP), (b_node, B_IP)] {
            requestor
                .add_network_node(&network_id, &node.to_string(), &ip.to_string())
                .await
                .unwrap();
        }

        let activity_a = requestor.create_activity(&agreement_a, 30.0).await.unwrap();
        let activity_b = requestor.create_activity(&agreement_b, 30.0).await.unwrap();
        let a = Member {
            node: a_node,
            agreement_id: agreement_a,
            activity_id: activity_a,
            agent: agent_a,
        };
        let b = Member {
            node: b_node,
            agreement_id: agreement_b,
            activity_id: activity_b,
            agent: agent_b,
        };
        let nodes = json!({
            REQUESTOR_IP.to_string(): requestor_node.to_string(),
            A_IP.to_string(): a_node.to_string(),
            B_IP.to_string(): b_node.to_string(),
        });
        for (member, ip, hostname) in [(&a, A_IP, "node-a"), (&b, B_IP, "node-b")] {
            let results = batch(
                &requestor,
                &member.activity_id,
                json!([
                    deploy(&network_id, ip, &nodes, hostname),
                    {"start": {"args": []}},
                    run(&servers(hostname)),
                ]),
            )
            .await;
            assert!(
                results.iter().all(|r| r.result == CommandResult::Ok),
                "{results:?}\n{}",
                member.exe_unit_log()
            );
            assert_eq!(text(&results[2].stdout).trim(), "serving", "{results:?}");
        }
        // yapapi re-adds every node (its own too) once the activities run.
        for (node, ip) in [
            (requestor_node, REQUESTOR_IP),
            (a_node, A_IP),
            (b_node, B_IP),
        ] {
            requestor
                .add_network_node(&network_id, &node.to_string(), &ip.to_string())
                .await
                .unwrap();
        }
        VpnStack {
            requestor,
            network_id,
            requestor_node,
            a,
            b,
            requestor_bus,
            a_bus,
            requestor_api_url,
            requestor_app_key,
            requestor_pid,
            provider_a,
            _server: server,
            _sandbox: sandbox,
        }
    }

    /// `GET /net-api/v1/net/{id}<path>` as JSON.
    /// `member`'s `vpn0` counters, read inside its container from
    /// `/proc/net/dev` (gVisor has no `/sys/class/net/*/statistics`; both
    /// kernels list receive bytes and packets first, transmit's 9th and 10th).
    async fn interface_counters(&self, member: &Member) -> InterfaceCounters {
        let results = batch(
            &self.requestor,
            &member.activity_id,
            json!([run(
                "awk '/vpn0:/ { sub(/.*vpn0:/, \"\"); print $1, $2, $9, $10 }' /proc/net/dev"
            )]),
        )
        .await;
        let output = text(&results[0].stdout);
        let numbers: Vec<u64> = output
            .split_whitespace()
            .filter_map(|number| number.parse().ok())
            .collect();
        let [rx_bytes, rx_packets, tx_bytes, tx_packets] = numbers[..] else {
            panic!("vpn0 counters: {results:?}");
        };
        InterfaceCounters {
            received: Traffic {
                bytes: rx_bytes,
                packets: rx_packets,
            },
            sent: Traffic {
                bytes: tx_bytes,
                packets: tx_packets,
            },
        }
    }

    /// The requestor stack's counts for its connection to `remote` once it
    /// closed (its "vpn tcp connection closed" log line): segments sent
    /// with data, SYN or FIN, and how many of them were sent again.
    async fn segments_of_closed(&mut self, remote: &str) -> (u64, u64) {
        let requestor = &mut self._sandbox.daemons()[2];
        eventually(Duration::from_secs(10), "the connection's log line", || {
            let log = requestor.log();
            async move {
                log.lines()
                    .filter_map(|line| serde_json::from_str::<Value>(line).ok())
                    .map(|line| line.get("fields").cloned().unwrap_or(line))
                    .filter(|fields| {
                        fields["message"] == "vpn tcp connection closed"
                            && fields["remote"] == remote
                    })
                    .find_map(|fields| {
                        Some((
                            fields["segments"].as_u64()?,
                            fields["retransmitted"].as_u64()?,
                        ))
                    })
            }
        })
        .await
        .unwrap()
    }

    async fn net_api_get(&self, path: &str) -> Value {
        let response = reqwest::Client::new()
            .get(format!(
                "{}/net-api/v1/net/{}{path}",
                self.requestor_api_url, self.network_id
            ))
            .bearer_auth(&self.requestor_app_key)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        response.json().await.unwrap()
    }

    fn socket_url(&self, ip: Ipv4Addr, port: u16) -> String {
        self.requestor
            .tcp_socket_url(&self.network_id, &ip.to_string(), port)
            .0
    }

    async fn open(&self, ip: Ipv4Addr, port: u16) -> Result<WebSocket, (u16, String)> {
        open_websocket(&self.requestor, &self.socket_url(ip, port)).await
    }

    async fn connected(&self, ip: Ipv4Addr, port: u16) -> WebSocket {
        match self.open(ip, port).await {
            Ok(socket) => socket,
            Err((status, body)) => panic!("{ip}:{port} refused with {status}: {body}"),
        }
    }

    /// A `VpnPackets` call with no packets from `bus` to `node`'s address
    /// of the network: Ok while a member has it bound.
    async fn probe(&self, bus: &BusClient, node: NodeId) -> Result<(), GolemError> {
        bus.call(
            &net_address(node, &vpn_service(&self.network_id)),
            &VpnPackets {
                network_id: self.network_id.clone(),
            },
        )
        .await
    }
}

/// Open a WebSocket with the requestor's app-key as `Bearer` (as yapapi);
/// a refused upgrade is its HTTP status and body.
async fn open_websocket(client: &GolemClient, url: &str) -> Result<WebSocket, (u16, String)> {
    let (_, app_key) = client.tcp_socket_url("", "", 0);
    let mut request = url.into_client_request().unwrap();
    request.headers_mut().insert(
        "authorization",
        format!("Bearer {app_key}").parse().unwrap(),
    );
    match tokio_tungstenite::connect_async(request).await {
        Ok((socket, _)) => Ok(socket),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => Err((
            response.status().as_u16(),
            String::from_utf8_lossy(response.body().as_deref().unwrap_or_default()).into_owned(),
        )),
        Err(error) => Err((0, error.to_string())),
    }
}

/// Everything the socket receives until the remote closes (≤ `wait`).
async fn read_to_close(socket: &mut WebSocket, wait: Duration) -> Vec<u8> {
    let mut received = Vec::new();
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, socket.next()).await {
            Ok(Some(Ok(Message::Binary(data)))) => received.extend_from_slice(&data),
            Ok(Some(Ok(Message::Text(data)))) => received.extend_from_slice(data.as_bytes()),
            Ok(Some(Ok(Message::Close(_)))) | Ok(None) | Ok(Some(Err(_))) => return received,
            Ok(Some(Ok(_))) => {}
            Err(_) => panic!(
                "no Close within {wait:?}; got {}",
                String::from_utf8_lossy(&received)
            ),
        }
    }
}

/// Read exactly `length` bytes of binary messages (≤ `wait`).
async fn read_exactly(socket: &mut WebSocket, length: usize, wait: Duration) -> Vec<u8> {
    let mut received = Vec::with_capacity(length);
    let deadline = tokio::time::Instant::now() + wait;
    while received.len() < length {
        match tokio::time::timeout_at(deadline, socket.next()).await {
            Ok(Some(Ok(Message::Binary(data)))) => received.extend_from_slice(&data),
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => {}
            other => panic!("after {} of {length} bytes: {other:?}", received.len()),
        }
    }
    received
}

/// `GET /index.html` over a WebSocket to `ip`'s httpd: the whole response.
async fn http_get(stack: &VpnStack, ip: Ipv4Addr) -> String {
    let mut socket = stack.connected(ip, HTTP_PORT).await;
    socket
        .send(Message::binary(
            b"GET /index.html HTTP/1.0\r\n\r\n".to_vec(),
        ))
        .await
        .unwrap();
    String::from_utf8_lossy(&read_to_close(&mut socket, Duration::from_secs(20)).await).into_owned()
}

/// A byte pattern that catches reordering and loss.
fn pattern(length: usize) -> Vec<u8> {
    (0..length)
        .map(|index| (index.wrapping_mul(31) ^ (index >> 8)) as u8)
        .collect()
}

#[tokio::test]
#[ignore = "tier docker: needs a Docker engine; scripts/test.sh runs it when one answers (GOLEM_TEST_DOCKER=1)"]
async fn docker_vpn_stack_requestor_and_two_providers_through_the_real_agents() {
    if !docker::enabled("docker_vpn_stack_requestor_and_two_providers_through_the_real_agents")
        .unwrap()
    {
        return;
    }
    let stack = VpnStack::start("e2e-vpn-stack").await;
    let requestor = &stack.requestor;
    let network_id = &stack.network_id;

    // The requestor's WebSocket reaches both containers' servers.
    for (ip, hostname) in [(A_IP, "node-a"), (B_IP, "node-b")] {
        let response = http_get(&stack, ip).await;
        assert!(response.starts_with("HTTP/1.1 200 OK"), "{response}");
        assert!(
            response.ends_with(&format!("\r\n\r\nhello from {hostname}\n")),
            "{response}"
        );
    }
    // The right bytes, both ways, in order: 1 MiB through the echo in A,
    // in packets larger than the original's MTU of 1,220 bytes.
    let before = stack.interface_counters(&stack.a).await;
    let sent = pattern(1 << 20);
    let echo = stack.connected(A_IP, ECHO_PORT).await;
    let (mut sink, mut stream) = echo.split();
    let mut received = Vec::new();
    // Written and read at once: the buffers on the way hold far less than 1 MiB.
    let reader = async {
        while received.len() < sent.len() {
            match tokio::time::timeout(Duration::from_secs(30), stream.next()).await {
                Ok(Some(Ok(Message::Binary(data)))) => received.extend_from_slice(&data),
                Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => {}
                other => panic!("after {} bytes: {other:?}", received.len()),
            }
        }
    };
    let writer = async {
        for chunk in sent.chunks(MESSAGE_BYTES) {
            sink.send(Message::binary(chunk.to_vec())).await.unwrap();
        }
    };
    tokio::join!(reader, writer);
    assert!(received == sent, "the echo changed the bytes");
    let mut echo = sink.reunite(stream).unwrap();
    echo.close(None).await.unwrap();
    let after = stack.interface_counters(&stack.a).await;
    let received_by_a = after.received.since(before.received);
    let sent_by_a = after.sent.since(before.sent);
    for (way, traffic) in [("into", received_by_a), ("out of", sent_by_a)] {
        assert!(
            traffic.bytes >= 1 << 20 && traffic.mean_packet() > ORIGINAL_MTU,
            "{way} A's vpn0: {traffic:?}"
        );
    }
    let connections = stack.net_api_get("/tcp").await;
    assert!(connections.is_array(), "{connections}");

    // A container on provider A reaches the server in the container on B,
    // and sees its name, hosts and interface.
    let results = batch(
        requestor,
        &stack.a.activity_id,
        json!([
            run(&format!("{GET} | nc -w 10 {B_IP} {HTTP_PORT}")),
            run("hostname; cat /etc/hosts; ip -4 addr show vpn0"),
            run("cat /proc/version"),
        ]),
    )
    .await;
    assert!(
        results.iter().all(|r| r.result == CommandResult::Ok),
        "{results:?}\n{}",
        stack.a.exe_unit_log()
    );
    let response = text(&results[0].stdout);
    assert!(response.starts_with("HTTP/1.1 200 OK"), "{response}");
    assert!(response.ends_with("hello from node-b\n"), "{response}");
    let seen = text(&results[1].stdout);
    assert!(seen.starts_with("node-a\n"), "{seen}");
    assert!(seen.contains("192.168.0.3\tnode-b"), "{seen}");
    assert!(seen.contains("inet 192.168.0.2/24"), "{seen}");
    // The server runs under gVisor where the engine has its networked runtime.
    let guest_version = text(&results[2].stdout);
    assert!(
        docker::names_another_kernel(&guest_version).unwrap(),
        "not under gVisor: {guest_version}"
    );
    // ... and B reaches A the same way.
    let results = batch(
        requestor,
        &stack.b.activity_id,
        json!([run(&format!("{GET} | nc -w 10 {A_IP} {HTTP_PORT}"))]),
    )
    .await;
    assert!(
        text(&results[0].stdout).ends_with("hello from node-a\n"),
        "{results:?}"
    );
    // A to B's echo: 1 MB there and back in large packets.
    let before = stack.interface_counters(&stack.a).await;
    let results = batch(
        requestor,
        &stack.a.activity_id,
        json!([run(&format!(
            "head -c 1000000 /dev/zero | nc -w 3 {B_IP} {ECHO_PORT} | wc -c"
        ))]),
    )
    .await;
    assert_eq!(text(&results[0].stdout).trim(), "1000000", "{results:?}");
    let after = stack.interface_counters(&stack.a).await;
    let sent_by_a = after.sent.since(before.sent);
    assert!(
        sent_by_a.bytes >= 1_000_000 && sent_by_a.mean_packet() > ORIGINAL_MTU,
        "out of A's vpn0 to B: {sent_by_a:?}"
    );
    // Round trips over one connection, A to B's echo.
    let results = batch(
        requestor,
        &stack.a.activity_id,
        json!([run_with_args(ROUND_TRIPS, &[&B_IP.to_string(), "50"])]),
    )
    .await;
    assert!(
        text(&results[0].stdout).starts_with("rounds=50 "),
        "{results:?}"
    );

    // Bad input: an address outside the network, the requestor's own, an
    // address no member holds, a bad port.
    for (ip, port, status) in [
        ("10.0.0.2", "80", 400),
        ("192.168.0.1", "80", 400),
        ("192.168.0.9", "80", 404),
        ("not-an-ip", "80", 400),
        ("192.168.0.2", "99999", 400),
    ] {
        let url = format!(
            "{}/net-api/v1/net/{network_id}/tcp/{ip}/{port}",
            stack.requestor_api_url.replacen("http://", "ws://", 1)
        );
        let refused = open_websocket(requestor, &url).await.err();
        assert_eq!(
            refused.as_ref().map(|(code, _)| *code),
            Some(status),
            "{ip}:{port}: {refused:?}"
        );
    }
    // A port nobody listens on: the container's stack resets, 503 before any upgrade.
    let refused = stack.open(A_IP, 1).await.err();
    assert_eq!(
        refused.as_ref().map(|(code, _)| *code),
        Some(503),
        "{refused:?}"
    );
    // A network that is not ours: one of another identity (provider A's node
    // makes its own on its daemon) is 404 here, as is an unknown id, for
    // every call; a second app-key of this node is the same identity.
    let foreign = stack
        .provider_a
        .create_network(&NewNetwork {
            ip: "192.168.0.0/24".into(),
            mask: None,
            gateway: None,
        })
        .await
        .unwrap();
    for id in [foreign.id.as_str(), "0123456789abcdef0123456789abcdef"] {
        let node = stack.a.node.to_string();
        let errors = [
            requestor.delete_network(id).await.err(),
            requestor.add_network_address(id, "192.168.0.1").await.err(),
            requestor
                .add_network_node(id, &node, "192.168.0.2")
                .await
                .err(),
            requestor.remove_network_node(id, &node).await.err(),
        ];
        for error in errors {
            assert_eq!(
                error.as_ref().and_then(|e| e.status()),
                Some(404),
                "{error:?}"
            );
        }
        let url = requestor.tcp_socket_url(id, &A_IP.to_string(), HTTP_PORT).0;
        let refused = open_websocket(requestor, &url).await.err();
        assert_eq!(
            refused.as_ref().map(|(code, _)| *code),
            Some(404),
            "{refused:?}"
        );
    }
    assert!(requestor
        .networks()
        .await
        .unwrap()
        .iter()
        .all(|network| network.id != foreign.id));

    // Removing B from the network cuts it off: the WebSocket to its address
    // is refused, A's packets to it go nowhere, and B's table forgets .3.
    let mut to_b = stack.connected(B_IP, ECHO_PORT).await;
    requestor
        .remove_network_node(network_id, &stack.b.node.to_string())
        .await
        .unwrap();
    let refused = stack.open(B_IP, HTTP_PORT).await.err();
    assert_eq!(
        refused.as_ref().map(|(code, _)| *code),
        Some(404),
        "{refused:?}"
    );
    // An open connection to B gets no answer any more.
    to_b.send(Message::binary(b"still there?".to_vec()))
        .await
        .unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(3), async {
        loop {
            match to_b.next().await {
                Some(Ok(Message::Binary(data))) => return Some(data),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                _ => return None,
            }
        }
    })
    .await;
    assert!(
        !matches!(answer, Ok(Some(_))),
        "B answered after its removal: {answer:?}"
    );
    drop(to_b);
    eventually(
        Duration::from_secs(20),
        "A can no longer reach B",
        || async {
            let results = batch(
                requestor,
                &stack.a.activity_id,
                json!([run(&format!(
                    "{GET} | nc -w 2 {B_IP} {HTTP_PORT} 2>&1; echo exit=$?"
                ))]),
            )
            .await;
            let output = text(&results[0].stdout);
            (!output.contains("hello")).then_some(output)
        },
    )
    .await
    .unwrap();
    // A still reaches the requestor and the requestor A.
    let response = http_get(&stack, A_IP).await;
    assert!(response.ends_with("hello from node-a\n"), "{response}");
    let nodes = stack.net_api_get("/nodes").await;
    assert!(!nodes.to_string().contains(&B_IP.to_string()), "{nodes}");
    let log_b = stack.b.exe_unit_log();
    assert!(log_b.contains("RemoveNodes"), "{log_b}");

    // Removing the network: open connections close, the Net API forgets it,
    // the requestor's address of the network is unbound on its bus.
    let mut to_a = stack.connected(A_IP, ECHO_PORT).await;
    // An idle connection keeps the stack asleep (its loop never spins).
    let busy = cpu_time(stack.requestor_pid);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let busy = cpu_time(stack.requestor_pid) - busy;
    assert!(
        busy < Duration::from_millis(500),
        "the requestor's daemon used {busy:?} of CPU in 2 s with one idle connection"
    );
    assert_eq!(
        stack.probe(&stack.a_bus, stack.requestor_node).await,
        Ok(())
    );
    requestor.delete_network(network_id).await.unwrap();
    read_to_close(&mut to_a, Duration::from_secs(10)).await;
    let refused = stack.open(A_IP, HTTP_PORT).await.err();
    assert_eq!(
        refused.as_ref().map(|(code, _)| *code),
        Some(404),
        "{refused:?}"
    );
    assert!(requestor.networks().await.unwrap().is_empty());
    let gone = stack.probe(&stack.a_bus, stack.requestor_node).await;
    assert_eq!(gone.map_err(|error| error.code), Err(ErrorCode::NoEndpoint));
    // The members' bindings and interfaces end with their activities.
    assert_eq!(
        stack.probe(&stack.requestor_bus, stack.a.node).await,
        Ok(())
    );
    for member in [&stack.a, &stack.b] {
        requestor
            .destroy_activity(&member.activity_id)
            .await
            .unwrap();
    }
    for member in [&stack.a, &stack.b] {
        eventually(
            Duration::from_secs(30),
            "the member's address is unbound",
            || async {
                let probe = stack.probe(&stack.requestor_bus, member.node).await;
                matches!(&probe, Err(error) if error.code == ErrorCode::NoEndpoint).then_some(())
            },
        )
        .await
        .unwrap();
        let label = format!("golem.activity-id={}", member.activity_id);
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
        assert!(member.exe_unit_log().contains("VPN member left"));
    }
}

/// User + system CPU time of process `pid` so far.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command's closing parenthesis; utime and stime are 14 and 15.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // USER_HZ is 100 on Linux.
    Duration::from_millis(ticks * 10)
}

fn percentile(samples: &mut [Duration], fraction: f64) -> Duration {
    samples.sort();
    let index = ((samples.len() - 1) as f64 * fraction).round() as usize;
    samples[index]
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

/// Benchmark (run by `scripts/bench/vpn.sh` on release builds): one TCP
/// stream requestor → container over the WebSocket; WebSocket open → first
/// byte of a container's HTTP answer; TCP round trips container ↔ container
/// and requestor ↔ container. Prints a table; asserts only correctness.
#[tokio::test]
#[ignore = "benchmark: run with scripts/bench/vpn.sh"]
async fn bench_vpn_stack() {
    docker::enabled("bench_vpn_stack").unwrap();
    let mut stack = VpnStack::start("bench-vpn-stack").await;
    let requestor = &stack.requestor.clone();

    // Throughput: SINK_BYTES in yapapi-sized messages into the sink, which
    // answers their count once it has them all.
    let mut sink = stack.connected(A_IP, SINK_PORT).await;
    let payload = pattern(MESSAGE_BYTES);
    let started = Instant::now();
    for _ in 0..SINK_BYTES / MESSAGE_BYTES {
        sink.send(Message::binary(payload.clone())).await.unwrap();
    }
    let answer = read_to_close(&mut sink, Duration::from_secs(300)).await;
    let push = started.elapsed();
    assert_eq!(
        String::from_utf8_lossy(&answer).trim(),
        SINK_BYTES.to_string()
    );
    let push_mb_s = SINK_BYTES as f64 / 1e6 / push.as_secs_f64();

    // The other way: the echo returns what it got; 16 MiB through it.
    let echoed_bytes = 16 << 20;
    let echo = stack.connected(B_IP, ECHO_PORT).await;
    let (mut writer, mut reader) = echo.split();
    let started = Instant::now();
    let write = async {
        for _ in 0..echoed_bytes / MESSAGE_BYTES {
            writer.send(Message::binary(payload.clone())).await.unwrap();
        }
    };
    let mut got = 0;
    let read = async {
        while got < echoed_bytes {
            match reader.next().await {
                Some(Ok(Message::Binary(data))) => got += data.len(),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                other => panic!("echo ended after {got} bytes: {other:?}"),
            }
        }
    };
    tokio::join!(write, read);
    let echo_time = started.elapsed();
    let echo_mb_s = echoed_bytes as f64 / 1e6 / echo_time.as_secs_f64();
    let mut echo = writer.reunite(reader).unwrap();
    let sink_segments = stack
        .segments_of_closed(&format!("{A_IP}:{SINK_PORT}"))
        .await;

    // Round trips requestor ↔ container over the same WebSocket.
    let mut round_trips = Vec::new();
    for _ in 0..200 {
        let started = Instant::now();
        echo.send(Message::binary(b"ping".to_vec())).await.unwrap();
        read_exactly(&mut echo, 4, Duration::from_secs(10)).await;
        round_trips.push(started.elapsed());
    }
    let _ = echo.close(None).await;
    let echo_segments = stack
        .segments_of_closed(&format!("{B_IP}:{ECHO_PORT}"))
        .await;
    let ws_rtt_p50 = percentile(&mut round_trips, 0.5);
    let ws_rtt_p90 = percentile(&mut round_trips, 0.9);

    // WebSocket open → first byte of the container's HTTP answer.
    let mut first_bytes = Vec::new();
    for _ in 0..30 {
        let started = Instant::now();
        let mut socket = stack.connected(A_IP, HTTP_PORT).await;
        socket
            .send(Message::binary(
                b"GET /index.html HTTP/1.0\r\n\r\n".to_vec(),
            ))
            .await
            .unwrap();
        read_exactly(&mut socket, 1, Duration::from_secs(10)).await;
        first_bytes.push(started.elapsed());
        let _ = socket.close(None).await;
    }
    let first_p50 = percentile(&mut first_bytes, 0.5);
    let first_p90 = percentile(&mut first_bytes, 0.9);

    // Container A ↔ container B: ping-pong on one connection, timed inside
    // A; the same loop against A's own echo on loopback is the floor.
    let rounds = 1000;
    let mut per_round = Vec::new();
    for target in [B_IP.to_string(), "127.0.0.1".to_string()] {
        let results = batch(
            requestor,
            &stack.a.activity_id,
            json!([run_with_args(ROUND_TRIPS, &[&target, &rounds.to_string()])]),
        )
        .await;
        let output = text(&results[0].stdout);
        let centiseconds: f64 = output
            .trim()
            .rsplit_once("centiseconds=")
            .and_then(|(_, value)| value.parse().ok())
            .unwrap_or_else(|| panic!("{results:?}"));
        per_round.push(centiseconds * 10.0 / rounds as f64);
    }

    println!("\n| Measure | Result | Goal |\n|---|---|---|");
    println!(
        "| One TCP stream requestor → container over the WebSocket ({} MiB in 64 KiB messages into `head -c \\| wc -c`) | {push_mb_s:.1} MB/s ({:.2} s) | ≥ 100 MB/s |",
        SINK_BYTES >> 20,
        push.as_secs_f64()
    );
    println!(
        "| Echo through a container, both ways at once ({} MiB each way) | {echo_mb_s:.1} MB/s | |",
        echoed_bytes >> 20
    );
    println!(
        "| WebSocket open → first byte of a container's HTTP answer (30 opens) | p50 {:.2} ms, p90 {:.2} ms | p50 ≤ 5 ms |",
        ms(first_p50),
        ms(first_p90)
    );
    println!(
        "| TCP round trip requestor ↔ container over an open WebSocket (200 × 4 bytes) | p50 {:.2} ms, p90 {:.2} ms | |",
        ms(ws_rtt_p50),
        ms(ws_rtt_p90)
    );
    println!(
        "| TCP round trip container A ↔ container B, two providers (mean of {rounds} ping-pongs on one connection, timed in A) | {:.2} ms (same loop on A's loopback: {:.3} ms) | p50 ≤ 1 ms |",
        per_round[0], per_round[1]
    );
    println!(
        "| TCP segments the requestor's stack sent again (retransmitted of all it sent: stream; echo) | {} of {}; {} of {} | 0 |",
        sink_segments.1, sink_segments.0, echo_segments.1, echo_segments.0
    );
}
