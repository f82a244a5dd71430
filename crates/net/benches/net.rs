//! Benchmarks of the network layer on loopback, all nodes in this process:
//! (a) request/reply round trip between two nodes (p50/p99, goal p50 ≤ 1 ms);
//! (b) broadcast reach: time until a message from one node is seen by all
//! other nodes of a 20-node network (goal ≤ 500 ms). Prints a table, then
//! runs the round trip under criterion as well.

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::Criterion;
use golem_net::{InboundCall, Multiaddr, NetConfig, NetHandle};
use rand::RngCore;
use serde_json::json;

fn secret() -> [u8; 32] {
    loop {
        let mut bytes = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut bytes);
        if golem_net::keypair_from_secret(bytes).is_ok() {
            return bytes;
        }
    }
}

fn config(bootstrap: Vec<Multiaddr>) -> NetConfig {
    NetConfig {
        bootstrap,
        call_timeout: Duration::from_secs(5),
        gossip_heartbeat: Duration::from_millis(100),
        ..NetConfig::loopback()
    }
}

async fn node(bootstrap: Vec<Multiaddr>) -> NetHandle {
    let handler = golem_net::handler(|call: InboundCall| async move { Ok(call.payload) });
    golem_net::start(secret(), config(bootstrap), handler)
        .await
        .expect("node starts")
}

async fn bootstrap_addr(handle: &NetHandle) -> Multiaddr {
    let status = handle.status().await;
    let addr: Multiaddr = status.listen_addrs[0].parse().expect("multiaddr");
    addr.with(golem_net::libp2p::multiaddr::Protocol::P2p(
        handle.local_peer_id(),
    ))
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1000.0)
}

async fn round_trips(client: &NetHandle, server: &NetHandle, count: usize) -> Vec<Duration> {
    let payload = json!({"offer": "x".repeat(256)});
    for _ in 0..200 {
        client
            .call(
                server.local_node_id(),
                "/public/echo",
                "Echo",
                payload.clone(),
            )
            .await
            .expect("warm-up call");
    }
    let mut samples = Vec::with_capacity(count);
    for _ in 0..count {
        let started = Instant::now();
        client
            .call(
                server.local_node_id(),
                "/public/echo",
                "Echo",
                payload.clone(),
            )
            .await
            .expect("call");
        samples.push(started.elapsed());
    }
    samples.sort();
    samples
}

async fn broadcast_reach(nodes: usize, rounds: usize) -> (Duration, Vec<Duration>, Vec<Duration>) {
    let setup = Instant::now();
    let first = node(Vec::new()).await;
    let boot = bootstrap_addr(&first).await;
    let mut handles = vec![first];
    for _ in 1..nodes {
        handles.push(node(vec![boot.clone()]).await);
    }
    let topic = "golem/market/bench";
    let (seen_tx, mut seen_rx) =
        tokio::sync::mpsc::unbounded_channel::<(usize, Vec<u8>, Instant)>();
    for (index, handle) in handles.iter().enumerate() {
        let mut receiver = handle.subscribe(topic).await.expect("subscribe");
        let seen_tx = seen_tx.clone();
        tokio::spawn(async move {
            while let Some(message) = receiver.recv().await {
                let _ = seen_tx.send((index, message.payload, Instant::now()));
            }
        });
    }
    // Wait until every node has a gossip mesh for the topic.
    loop {
        let mut ready = true;
        for handle in &handles {
            let status = handle.status().await;
            ready &= status
                .topics
                .iter()
                .any(|t| t.topic == topic && t.mesh_peers.len() >= 3);
        }
        if ready {
            break;
        }
        assert!(
            setup.elapsed() < Duration::from_secs(30),
            "mesh did not form"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let setup_time = setup.elapsed();
    let mut reach = Vec::new();
    let mut arrivals = Vec::new();
    for round in 0..rounds {
        let publisher = (round * 7) % nodes;
        let payload = format!("offer {round}").into_bytes();
        let started = Instant::now();
        handles[publisher]
            .publish(topic, payload.clone())
            .await
            .expect("publish");
        let mut got = vec![false; nodes];
        got[publisher] = true;
        let mut last = started;
        while got.iter().any(|g| !g) {
            let (index, data, at) = tokio::time::timeout(Duration::from_secs(5), seen_rx.recv())
                .await
                .expect("broadcast reached everybody within 5 s")
                .expect("collector open");
            if data == payload {
                assert!(!got[index], "duplicate delivery");
                got[index] = true;
                last = last.max(at);
                arrivals.push(at - started);
            }
        }
        reach.push(last - started);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    reach.sort();
    arrivals.sort();
    for handle in handles {
        handle.shutdown().await;
    }
    (setup_time, reach, arrivals)
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let (client, server) = runtime.block_on(async {
        let server = node(Vec::new()).await;
        let client = node(vec![bootstrap_addr(&server).await]).await;
        (client, server)
    });
    let samples = runtime.block_on(round_trips(&client, &server, 5000));
    let (setup, reach, arrivals) = runtime.block_on(broadcast_reach(20, 30));

    let row = |name: String, sorted: &[Duration]| {
        println!(
            "| {name:<46} | {:>10} | {:>10} | {:>10} | {:>10} |",
            ms(percentile(sorted, 0.5)),
            ms(percentile(sorted, 0.9)),
            ms(percentile(sorted, 0.99)),
            ms(sorted[sorted.len() - 1]),
        )
    };
    println!();
    println!(
        "| {:<46} | {:>10} | {:>10} | {:>10} | {:>10} |",
        "benchmark", "p50", "p90", "p99", "max"
    );
    println!(
        "|{:-<48}|{:-<12}|{:-<12}|{:-<12}|{:-<12}|",
        "", "", "", "", ""
    );
    row(
        format!("call round trip, 2 nodes, 256 B ({} calls)", samples.len()),
        &samples,
    );
    row(
        format!("broadcast reach, all of 20 nodes ({} rounds)", reach.len()),
        &reach,
    );
    row(
        format!(
            "broadcast arrival at one node ({} arrivals)",
            arrivals.len()
        ),
        &arrivals,
    );
    println!("(20-node network formed and meshed in {})", ms(setup));
    println!();

    let server_id = server.local_node_id();
    let client = Arc::new(client);
    let mut criterion = Criterion::default().configure_from_args();
    criterion.bench_function("call_round_trip_loopback", |b| {
        b.iter(|| {
            runtime
                .block_on(client.call(server_id, "/public/echo", "Echo", json!({"offer": "x"})))
                .expect("call")
        })
    });
    criterion.final_summary();
}
