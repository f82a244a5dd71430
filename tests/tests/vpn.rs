//! End-to-end test of the VM unit's VPN (provider side): two provider
//! daemons run `exe-unit-vm` (started per the spawn contract by the stand-in
//! agent), a requestor daemon drives both over libp2p with `deploy.net`
//! mapping each other's addresses, and the test itself plays the requestor's
//! network stack at 192.168.0.1 (it binds `/public/vpn/<id>` on the
//! requestor's daemon). A fourth daemon is a stranger to the network.
//! Needs `GOLEM_TEST_DOCKER=1` and an engine (`scripts/ensure-docker.sh`).
#![allow(clippy::unwrap_used)] // test helpers panic on setup failure by design

use std::net::Ipv4Addr;
use std::path::Path;
use std::time::{Duration, Instant};

use golem_bus::{BusClient, Caller, ServiceEndpoint};
use golem_model::activity::{CommandResult, ExeScriptCommandResult};
use golem_model::bus::net_address;
use golem_model::market::DemandOfferBase;
use golem_model::vpn::{split_packets, vpn_service, PacketBatch, VpnControl, VpnPackets, VPN_MTU};
use golem_model::{ErrorCode, NodeId};
use golem_tests::docker;
use golem_tests::http::FileServer;
use golem_tests::negotiation::negotiate_agreement;
use golem_tests::script::{output_text as text, run_batch as batch, run_captured};
use golem_tests::standin::spawn_standin_agent;
use golem_tests::{binary, Sandbox};
use serde_json::{json, Value};
use sha3::Digest;
use tokio::sync::mpsc;

const SUBNET: &str = "e2e-vpn";
const IMAGE_TAG: &str = "golem-test-busybox:latest";
const REQUESTOR_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 0, 1);
const A_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 0, 2);
const B_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 0, 3);
/// An HTTP request as a shell pipeline's first stage.
const GET: &str = r"printf 'GET /index.html HTTP/1.0\r\n\r\n'";
const STRANGER_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 0, 9);

fn offer(name: &str) -> DemandOfferBase {
    DemandOfferBase {
        properties: json!({
            "golem.node.debug.subnet": SUBNET,
            "golem.node.id.name": name,
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

/// A demand only the provider named `name` matches.
fn demand(package: &str, name: &str) -> DemandOfferBase {
    DemandOfferBase {
        properties: json!({
            "golem.node.debug.subnet": SUBNET,
            "golem.srv.comp.task_package": package,
            "golem.srv.comp.expiration": chrono::Utc::now().timestamp_millis() + 3_600_000,
        }),
        constraints: format!(
            "(&(golem.node.debug.subnet={SUBNET})(golem.node.id.name={name})(golem.runtime.name=vm))"
        ),
    }
}

fn run(script: &str) -> Value {
    run_captured("/bin/sh", &["-c", script])
}

fn all_ok(results: &[ExeScriptCommandResult], log: &Path) -> bool {
    let ok = results
        .iter()
        .all(|result| result.result == CommandResult::Ok);
    if !ok {
        eprintln!(
            "exe unit log:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
    }
    ok
}

/// `deploy.net` as yapapi sends it, plus `hosts` and `hostname`.
fn deploy(network_id: &str, node_ip: Ipv4Addr, nodes: &Value, hostname: &str) -> Value {
    json!({"deploy": {
        "net": [{"id": network_id, "ip": "192.168.0.0", "mask": "255.255.255.0",
                 "nodeIp": node_ip.to_string(), "nodes": nodes}],
        "hosts": {"peer-a": A_IP.to_string(), "peer-b": B_IP.to_string()},
        "hostname": hostname,
    }})
}

fn checksum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = bytes
        .chunks(2)
        .map(|pair| u32::from(u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An ICMP echo request (or reply, type 0) as one IPv4 packet.
fn icmp_echo(kind: u8, source: Ipv4Addr, destination: Ipv4Addr, id: u16, seq: u16) -> Vec<u8> {
    icmp_echo_of_size(kind, source, destination, id, seq, 20 + 8 + 13)
}

/// [`icmp_echo`] padded to an IPv4 packet of `size` bytes (the data repeats
/// "golem vpn e2e").
fn icmp_echo_of_size(
    kind: u8,
    source: Ipv4Addr,
    destination: Ipv4Addr,
    id: u16,
    seq: u16,
    size: usize,
) -> Vec<u8> {
    let mut icmp = vec![kind, 0, 0, 0];
    icmp.extend_from_slice(&id.to_be_bytes());
    icmp.extend_from_slice(&seq.to_be_bytes());
    icmp.extend(b"golem vpn e2e".iter().cycle().take(size - 20 - 8));
    let sum = checksum(&icmp);
    icmp[2..4].copy_from_slice(&sum.to_be_bytes());
    let total = (20 + icmp.len()) as u16;
    let mut ip = vec![0x45, 0];
    ip.extend_from_slice(&total.to_be_bytes());
    ip.extend_from_slice(&[0, 1, 0x40, 0, 64, 1, 0, 0]);
    ip.extend_from_slice(&source.octets());
    ip.extend_from_slice(&destination.octets());
    let sum = checksum(&ip);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    ip.extend_from_slice(&icmp);
    ip
}

/// (source, destination, ICMP type, id, seq) of an ICMP packet.
fn icmp_fields(packet: &[u8]) -> Option<(Ipv4Addr, Ipv4Addr, u8, u16, u16)> {
    if packet.len() < 28 || packet[0] >> 4 != 4 || packet[9] != 1 {
        return None;
    }
    let header = usize::from(packet[0] & 0x0f) * 4;
    let icmp = packet.get(header..header + 8)?;
    Some((
        Ipv4Addr::new(packet[12], packet[13], packet[14], packet[15]),
        Ipv4Addr::new(packet[16], packet[17], packet[18], packet[19]),
        icmp[0],
        u16::from_be_bytes([icmp[4], icmp[5]]),
        u16::from_be_bytes([icmp[6], icmp[7]]),
    ))
}

/// Stand in for a node's network stack: bind the network's address on `bus`
/// and pass on every packet received with its sender.
async fn listen(bus: &BusClient, network_id: &str) -> mpsc::UnboundedReceiver<(Caller, Vec<u8>)> {
    let (sender, received) = mpsc::unbounded_channel();
    let endpoint = ServiceEndpoint::new().on_with_attachment(
        move |caller, _message: VpnPackets, attachment| {
            for packet in split_packets(&attachment) {
                let _ = sender.send((caller, packet.unwrap_or_default().to_vec()));
            }
            async { Ok(()) }
        },
    );
    bus.bind(&vpn_service(network_id), endpoint).await.unwrap();
    received
}

/// Wait up to `wait` for an ICMP echo reply with `id`/`seq`; its sender,
/// source and destination.
async fn echo_reply(
    received: &mut mpsc::UnboundedReceiver<(Caller, Vec<u8>)>,
    id: u16,
    seq: u16,
    wait: Duration,
) -> Option<(Caller, Ipv4Addr, Ipv4Addr)> {
    echo_reply_packet(received, id, seq, wait)
        .await
        .map(|(caller, source, destination, _)| (caller, source, destination))
}

/// [`echo_reply`] with the reply's packet.
async fn echo_reply_packet(
    received: &mut mpsc::UnboundedReceiver<(Caller, Vec<u8>)>,
    id: u16,
    seq: u16,
    wait: Duration,
) -> Option<(Caller, Ipv4Addr, Ipv4Addr, Vec<u8>)> {
    let deadline = Instant::now() + wait;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let (caller, packet) = tokio::time::timeout(left, received.recv()).await.ok()??;
        if let Some((source, destination, 0, reply_id, reply_seq)) = icmp_fields(&packet) {
            if (reply_id, reply_seq) == (id, seq) {
                return Some((caller, source, destination, packet));
            }
        }
    }
}

async fn send_packets(
    bus: &BusClient,
    to: NodeId,
    network_id: &str,
    packet: &[u8],
) -> Result<(), golem_model::GolemError> {
    bus.call_with_attachment(
        &net_address(to, &vpn_service(network_id)),
        &VpnPackets {
            network_id: network_id.to_string(),
        },
        PacketBatch::of([packet]).into_attachment(),
    )
    .await
}

#[tokio::test]
#[ignore = "tier docker: needs a Docker engine; scripts/test.sh runs it when one answers (GOLEM_TEST_DOCKER=1)"]
async fn docker_vpn_connects_two_providers_containers_and_only_members() {
    if !docker::enabled("docker_vpn_connects_two_providers_containers_and_only_members").unwrap() {
        return;
    }
    // The exe unit offers `vpn` only where it can make interfaces (root here).
    let template = std::process::Command::new(binary("exe-unit-vm"))
        .arg("offer-template")
        .output()
        .unwrap();
    let template: Value = serde_json::from_slice(&template.stdout).unwrap();
    assert!(
        template["golem.runtime.capabilities"]
            .as_array()
            .unwrap()
            .contains(&json!("vpn")),
        "{template}"
    );

    let mut sandbox = Sandbox::new();
    let bootstrap = sandbox.daemon("pa").unwrap().p2p_address().unwrap();
    for name in ["pb", "r", "x"] {
        sandbox
            .daemon_with(name, &["--bootstrap", &bootstrap])
            .unwrap();
    }
    let work = sandbox.path().join("provider-work");
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

    let daemons = sandbox.daemons();
    let node = |index: usize| -> NodeId { daemons[index].node_id().unwrap().parse().unwrap() };
    let (a_node, b_node, r_node, x_node) = (node(0), node(1), node(2), node(3));
    let mut agents = Vec::new();
    for (index, name) in [(0, "vpn-a"), (1, "vpn-b")] {
        let provider = &daemons[index];
        let offer_id = provider
            .client()
            .subscribe_offer(&offer(name))
            .await
            .unwrap();
        agents.push(spawn_standin_agent(
            provider,
            offer_id,
            offer(name),
            "exe-unit-vm",
            work.join(name),
        ));
    }
    let requestor = daemons[2].client();
    let r_bus = daemons[2].bus().await.unwrap();
    let b_bus = daemons[1].bus().await.unwrap();
    let x_bus = daemons[3].bus().await.unwrap();
    let network_id = hex::encode(&sha3::Sha3_224::digest(format!("{:?}", Instant::now()))[..16]);
    let mut at_requestor = listen(&r_bus, &network_id).await;

    let agreement_a = negotiate_agreement(&requestor, &demand(&package, "vpn-a")).await;
    let agreement_b = negotiate_agreement(&requestor, &demand(&package, "vpn-b")).await;
    let activity_a = requestor.create_activity(&agreement_a, 30.0).await.unwrap();
    let activity_b = requestor.create_activity(&agreement_b, 30.0).await.unwrap();
    let log_a = work.join("vpn-a").join(&activity_a).join("exe-unit.log");
    let log_b = work.join("vpn-b").join(&activity_b).join("exe-unit.log");
    let nodes = json!({
        REQUESTOR_IP.to_string(): r_node.to_string(),
        A_IP.to_string(): a_node.to_string(),
        B_IP.to_string(): b_node.to_string(),
    });

    // B serves HTTP on the network; A looks around.
    let results = batch(&requestor, &activity_b, json!([
        deploy(&network_id, B_IP, &nodes, "node-b"),
        {"start": {"args": []}},
        run("mkdir -p /tmp/www && echo hello over the vpn > /tmp/www/index.html && httpd -p 8080 -h /tmp/www && echo serving"),
    ]))
    .await;
    assert!(all_ok(&results, &log_b), "{results:?}");
    let results = batch(&requestor, &activity_a, json!([
        deploy(&network_id, A_IP, &nodes, "node-a"),
        {"start": {"args": []}},
        run("hostname; cat /etc/hosts; ls /sys/class/net; ip -4 addr show vpn0; ip route; cat /proc/version"),
    ]))
    .await;
    assert!(all_ok(&results, &log_a), "{results:?}");
    let seen = text(&results[2].stdout);
    let mut lines = seen.lines();
    assert_eq!(lines.next(), Some("node-a"), "{seen}");
    assert!(seen.contains("127.0.0.1\tlocalhost"), "{seen}");
    assert!(seen.contains("192.168.0.2\tnode-a"), "{seen}");
    assert!(seen.contains("192.168.0.2\tpeer-a"), "{seen}");
    assert!(seen.contains("192.168.0.3\tpeer-b"), "{seen}");
    assert!(seen.contains("inet 192.168.0.2/24"), "{seen}");
    assert!(seen.contains("192.168.0.0/24 dev vpn0"), "{seen}");
    assert!(!seen.contains("default"), "no default route: {seen}");
    assert!(
        seen.contains(&format!("vpn0: <UP,LOWER_UP> mtu {VPN_MTU}")),
        "vpn0 should carry the network's MTU {VPN_MTU}: {seen}"
    );
    // gVisor's kernel, not the host's.
    let guest_version = seen.lines().last().unwrap_or_default();
    assert!(
        docker::names_another_kernel(guest_version).unwrap(),
        "not under gVisor: {seen}"
    );
    let interfaces: Vec<&str> = seen
        .lines()
        .filter(|line| ["lo", "vpn0"].contains(line))
        .collect();
    assert_eq!(interfaces, ["lo", "vpn0"], "{seen}");
    // Under gVisor with its own netstack, in the namespace of a hardened
    // runc holder without a network of the engine's (RFC 004).
    let inspect = docker::inspect(&format!("golem-vm-{activity_a}")).unwrap();
    assert_eq!(inspect["HostConfig"]["Runtime"], "runsc-net");
    let holder = docker::inspect(&format!("golem-vm-{activity_a}-net")).unwrap();
    assert_eq!(
        inspect["HostConfig"]["NetworkMode"],
        json!(format!("container:{}", holder["Id"].as_str().unwrap()))
    );
    assert_eq!(holder["HostConfig"]["NetworkMode"], "none");
    assert_eq!(holder["HostConfig"]["CapDrop"], json!(["ALL"]));
    assert_eq!(holder["Config"]["Hostname"], "node-a");

    // A container on provider A reaches the server in the container on B
    // (busybox-static's wget crashes in a scratch image: plain nc it is).
    let results = batch(&requestor, &activity_a, json!([
        run(&format!("{GET} | nc -w 10 192.168.0.3 8080")),
        run(&format!("time sh -c \"for i in 1 2 3 4 5 6 7 8 9 10; do {GET} | nc -w 10 192.168.0.3 8080 | grep -q hello || exit 1; done\" 2>&1")),
    ]))
    .await;
    assert!(all_ok(&results, &log_a), "{results:?}");
    let response = text(&results[0].stdout);
    assert!(response.starts_with("HTTP/1.1 200 OK"), "{response}");
    assert!(
        response.ends_with("\r\n\r\nhello over the vpn\n"),
        "{response}"
    );
    println!(
        "container A -> container B over the VPN, 10 HTTP GETs (each a TCP connect + request + close): {}",
        text(&results[1].stdout).lines().next().unwrap_or_default()
    );
    // ... and nothing outside the network: no route, and no member at .9.
    let results = batch(
        &requestor,
        &activity_a,
        json!([
            run(&format!("{GET} | nc -w 3 10.1.2.3 8080 2>&1; echo exit=$?")),
            run(&format!(
                "{GET} | nc -w 3 192.168.0.9 8080 2>&1; echo exit=$?"
            )),
        ]),
    )
    .await;
    let outside = text(&results[0].stdout);
    assert!(
        // runc's kernel says "Network is unreachable", gVisor's "No route to host".
        (outside.contains("unreachable") || outside.contains("No route to host"))
            && outside.contains("exit=1"),
        "{outside}"
    );
    let stranger = text(&results[1].stdout);
    assert!(stranger.contains("exit=1"), "{stranger}");
    assert!(!stranger.contains("hello"), "{stranger}");

    // The requestor's address: an echo request from .1 is answered to .1.
    let started = Instant::now();
    send_packets(
        &r_bus,
        a_node,
        &network_id,
        &icmp_echo(8, REQUESTOR_IP, A_IP, 7, 1),
    )
    .await
    .unwrap();
    let reply = echo_reply(&mut at_requestor, 7, 1, Duration::from_secs(10)).await;
    let round_trip = started.elapsed();
    assert_eq!(reply, Some((Caller::Remote(a_node), A_IP, REQUESTOR_IP)));
    println!(
        "requestor bus -> provider A's container -> requestor bus, one ICMP echo: {:.1} ms",
        round_trip.as_secs_f64() * 1000.0
    );

    // The largest packet the network carries crosses both ways whole: the
    // container's kernel answers a VPN_MTU-byte echo request with an echo
    // reply of the same size (nothing fragments it on the way).
    let largest = icmp_echo_of_size(8, REQUESTOR_IP, A_IP, 7, 4, VPN_MTU);
    send_packets(&r_bus, a_node, &network_id, &largest)
        .await
        .unwrap();
    let (caller, source, destination, reply) =
        echo_reply_packet(&mut at_requestor, 7, 4, Duration::from_secs(10))
            .await
            .expect("an echo reply to the largest packet");
    assert_eq!(
        (caller, source, destination, reply.len()),
        (Caller::Remote(a_node), A_IP, REQUESTOR_IP, VPN_MTU)
    );
    assert_eq!(reply[28..], largest[28..], "the echoed data differs");

    // A stranger's packets have no effect: refused, and never answered, even
    // when it claims the requestor's address.
    let refused = send_packets(
        &x_bus,
        a_node,
        &network_id,
        &icmp_echo(8, REQUESTOR_IP, A_IP, 7, 2),
    )
    .await;
    assert_eq!(
        refused.map_err(|error| error.code),
        Err(ErrorCode::Forbidden)
    );
    assert_eq!(
        echo_reply(&mut at_requestor, 7, 2, Duration::from_secs(2)).await,
        None
    );
    let log = std::fs::read_to_string(&log_a).unwrap();
    assert!(
        log.contains("VPN packets from a non-member refused"),
        "{log}"
    );
    // A member cannot speak for another member's address either.
    send_packets(
        &b_bus,
        a_node,
        &network_id,
        &icmp_echo(8, REQUESTOR_IP, A_IP, 7, 3),
    )
    .await
    .unwrap();
    assert_eq!(
        echo_reply(&mut at_requestor, 7, 3, Duration::from_secs(2)).await,
        None
    );

    // Membership changes come from the requestor only.
    let add_stranger = VpnControl::AddNodes {
        network_id: network_id.clone(),
        nodes: [(STRANGER_IP.to_string(), x_node)].into_iter().collect(),
    };
    let a_address = net_address(a_node, &vpn_service(&network_id));
    for (bus, who) in [(&b_bus, "a member"), (&x_bus, "a stranger")] {
        let refused = bus.call(&a_address, &add_stranger).await;
        assert_eq!(
            refused.map_err(|error| error.code),
            Err(ErrorCode::Forbidden),
            "VpnControl from {who}"
        );
    }
    let mut at_stranger = listen(&x_bus, &network_id).await;
    let refused = send_packets(
        &x_bus,
        a_node,
        &network_id,
        &icmp_echo(8, STRANGER_IP, A_IP, 9, 1),
    )
    .await;
    assert_eq!(
        refused.map_err(|error| error.code),
        Err(ErrorCode::Forbidden)
    );
    // Once the requestor adds it, the same packet is answered to it.
    r_bus.call(&a_address, &add_stranger).await.unwrap();
    send_packets(
        &x_bus,
        a_node,
        &network_id,
        &icmp_echo(8, STRANGER_IP, A_IP, 9, 2),
    )
    .await
    .unwrap();
    assert_eq!(
        echo_reply(&mut at_stranger, 9, 2, Duration::from_secs(10)).await,
        Some((Caller::Remote(a_node), A_IP, STRANGER_IP))
    );

    // One node, one member per network: a second activity of this network on A fails deploy.
    let agreement_c = negotiate_agreement(&requestor, &demand(&package, "vpn-a")).await;
    let activity_c = requestor.create_activity(&agreement_c, 30.0).await.unwrap();
    let results = batch(
        &requestor,
        &activity_c,
        json!([deploy(
            &network_id,
            Ipv4Addr::new(192, 168, 0, 4),
            &nodes,
            "node-c"
        )]),
    )
    .await;
    assert_eq!(results[0].result, CommandResult::Error, "{results:?}");
    let message = results[0].message.clone().unwrap_or_default();
    assert!(
        message.contains("already has a member on this node"),
        "{message}"
    );
    requestor.destroy_activity(&activity_c).await.unwrap();

    // Destroying the activity removes its binding (and its container).
    requestor.destroy_activity(&activity_a).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let gone = send_packets(
            &r_bus,
            a_node,
            &network_id,
            &icmp_echo(8, REQUESTOR_IP, A_IP, 7, 4),
        )
        .await;
        if matches!(&gone, Err(error) if error.code == ErrorCode::NoEndpoint) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "A's VPN address is still bound: {gone:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let log = std::fs::read_to_string(&log_a).unwrap();
    assert!(log.contains("VPN member left"), "{log}");
    // The holder goes with the container.
    let deadline = Instant::now() + Duration::from_secs(30);
    while docker::inspect(&format!("golem-vm-{activity_a}-net")).is_ok() {
        assert!(
            Instant::now() < deadline,
            "the network holder is still there"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    requestor.destroy_activity(&activity_b).await.unwrap();
    drop(agents);
}
