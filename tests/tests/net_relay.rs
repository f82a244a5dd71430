//! Two daemons in separate Linux network namespaces, with no route between
//! them, reach each other only through a relay daemon that both can reach.
//! Tier `netns` (root and iproute2): ignored by default, run by scripts/test.sh
//! when both are there; asked for without them it fails instead of skipping.
#![allow(clippy::unwrap_used)] // test helpers panic on setup failure by design

use std::process::Command;
use std::time::Duration;

use golem_model::bus::{PingRemote, NET_SERVICE};
use golem_model::NodeId;
use golem_tests::lab::{ip, require_netns_tier};
use golem_tests::{eventually, DaemonProcess, Sandbox};

/// Creates the namespaces and veth pairs; removes them on drop.
struct Topology {
    namespaces: Vec<String>,
    host_links: Vec<String>,
}

impl Topology {
    /// Namespace `<tag>a` on 10.77.1.0/24 and `<tag>b` on 10.77.2.0/24; the host has .1 in both.
    fn create(tag: &str) -> anyhow::Result<Topology> {
        let mut topology = Topology {
            namespaces: Vec::new(),
            host_links: Vec::new(),
        };
        for (side, subnet) in [("a", 1), ("b", 2)] {
            let namespace = format!("{tag}{side}");
            let host_link = format!("{tag}{side}0");
            let inner_link = format!("{tag}{side}1");
            ip(&["netns", "add", &namespace])?;
            topology.namespaces.push(namespace.clone());
            ip(&[
                "link",
                "add",
                &host_link,
                "type",
                "veth",
                "peer",
                "name",
                &inner_link,
            ])?;
            topology.host_links.push(host_link.clone());
            ip(&["link", "set", &inner_link, "netns", &namespace])?;
            ip(&[
                "addr",
                "add",
                &format!("10.77.{subnet}.1/24"),
                "dev",
                &host_link,
            ])?;
            ip(&["link", "set", &host_link, "up"])?;
            ip(&[
                "netns",
                "exec",
                &namespace,
                "ip",
                "addr",
                "add",
                &format!("10.77.{subnet}.2/24"),
                "dev",
                &inner_link,
            ])?;
            ip(&[
                "netns",
                "exec",
                &namespace,
                "ip",
                "link",
                "set",
                &inner_link,
                "up",
            ])?;
            ip(&["netns", "exec", &namespace, "ip", "link", "set", "lo", "up"])?;
        }
        Ok(topology)
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        for namespace in &self.namespaces {
            let _ = ip(&["netns", "del", namespace]);
        }
        for link in &self.host_links {
            let _ = ip(&["link", "del", link]);
        }
    }
}

#[tokio::test]
#[ignore = "tier netns: needs root and iproute2; scripts/test.sh runs it when both are there (GOLEM_TEST_NETNS=1)"]
async fn netns_nodes_in_separate_namespaces_talk_through_a_relay() {
    require_netns_tier();
    let tag = format!("g{}", std::process::id() % 100_000);
    let topology = Topology::create(&tag).unwrap();
    let mut sandbox = Sandbox::new();
    let port = 23_000 + (std::process::id() % 1_000) as u16;
    let relay = sandbox
        .daemon_with(
            "relay",
            &[
                "--relay-server",
                "--p2p-listen",
                &format!("/ip4/10.77.1.1/tcp/{port}"),
                "--p2p-listen",
                &format!("/ip4/10.77.2.1/tcp/{port}"),
            ],
        )
        .unwrap();
    let relay_peer = relay.net_status().unwrap()["peer_id"]
        .as_str()
        .unwrap()
        .to_string();

    let mut hidden = Vec::new();
    for (side, subnet) in [("a", 1), ("b", 2)] {
        let relay_addr = format!("/ip4/10.77.{subnet}.1/tcp/{port}/p2p/{relay_peer}");
        let data_dir = sandbox.path().join(format!("node-{side}"));
        let listen = format!("/ip4/10.77.{subnet}.2/tcp/0");
        let args = [
            "--p2p-listen",
            listen.as_str(),
            "--bootstrap",
            relay_addr.as_str(),
            "--relay",
            relay_addr.as_str(),
        ];
        hidden.push(
            DaemonProcess::start_in_netns(
                &format!("node-{side}"),
                &data_dir,
                &args,
                &topology.namespaces[hidden.len()],
            )
            .unwrap(),
        );
    }
    let node_b: NodeId = hidden[1].node_id().unwrap().parse().unwrap();
    let node_a: NodeId = hidden[0].node_id().unwrap().parse().unwrap();

    let bus_a = hidden[0].bus().await.unwrap();
    let pong = eventually(
        Duration::from_secs(20),
        "node A to reach node B through the relay",
        || {
            let bus_a = bus_a.clone();
            async move {
                bus_a
                    .call(NET_SERVICE, &PingRemote { node_id: node_b })
                    .await
                    .ok()
            }
        },
    )
    .await
    .unwrap();
    assert_eq!(pong.node_id, node_b);
    assert_eq!(
        pong.seen_as, node_a,
        "B authenticated A's NodeId through the relay"
    );

    // There is no direct path: from A's namespace, B's own listen address is unreachable,
    // so the call above can only have gone through the relay.
    let b_status = hidden[1].net_status().unwrap();
    let b_direct = b_status["listen_addrs"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|addr| addr.as_str())
        .find(|addr| addr.starts_with("/ip4/10.77.2.2/tcp/"))
        .expect("B listens on its namespace address")
        .to_string();
    let b_port = b_direct.rsplit('/').next().unwrap();
    let direct = Command::new("ip")
        .args(["netns", "exec", &topology.namespaces[0], "bash", "-c"])
        .arg(format!("exec 3<>/dev/tcp/10.77.2.2/{b_port}"))
        .output()
        .unwrap();
    assert!(
        !direct.status.success(),
        "A can reach B directly; the test topology is wrong"
    );
    let relayed = hidden[0].net_status().unwrap();
    assert!(
        relayed["connected"]
            .as_array()
            .unwrap()
            .iter()
            .any(|peer| peer["node_id"] == node_b.to_string()),
        "A lists B as connected: {relayed}"
    );

    for mut daemon in hidden {
        daemon.kill();
    }
    drop(sandbox);
    drop(topology);
}
