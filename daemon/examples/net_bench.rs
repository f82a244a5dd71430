//! Net benchmark driver over running daemons' bus sockets (see
//! `scripts/bench/net.sh`): remote request/reply round trips between two
//! daemons, and broadcast reach from one daemon to all others.
//!
//! Usage: `net_bench <data-dir>...` (the first daemon publishes and pings).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use futures::StreamExt;
use golem_bus::BusClient;
use golem_model::bus::{PingRemote, PublishBroadcast, SubscribeBroadcasts, NET_SERVICE};
use golem_model::identity::{GetIdentity, IDENTITY_SERVICE};

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let data_dirs: Vec<PathBuf> = std::env::args().skip(1).map(PathBuf::from).collect();
    if data_dirs.len() < 2 {
        return Err("usage: net_bench <data-dir> <data-dir>...".into());
    }
    let mut clients = Vec::new();
    for dir in &data_dirs {
        clients.push(BusClient::connect(&dir.join("bus.sock"), "net-bench").await?);
    }
    let second = clients[1].call(IDENTITY_SERVICE, &GetIdentity).await?;

    // Remote round trips, timed inside the first daemon (bus hop excluded).
    for _ in 0..200 {
        clients[0]
            .call(NET_SERVICE, &PingRemote { node_id: second })
            .await?;
    }
    let mut round_trips = Vec::new();
    for _ in 0..2_000 {
        let result = clients[0]
            .call(NET_SERVICE, &PingRemote { node_id: second })
            .await?;
        round_trips.push(result.round_trip_us as f64 / 1000.0);
    }
    round_trips.sort_by(f64::total_cmp);
    println!(
        "rtt_ms p50={:.3} p90={:.3} p99={:.3}",
        percentile(&round_trips, 0.5),
        percentile(&round_trips, 0.9),
        percentile(&round_trips, 0.99)
    );

    // Broadcast reach: every other daemon subscribes; time until all received.
    let topic = "bench-reach";
    let mut streams = Vec::new();
    for client in &clients[1..] {
        let payload = serde_json::to_value(SubscribeBroadcasts {
            topic: topic.into(),
        })?;
        streams.push(client.call_stream_raw(NET_SERVICE, "SubscribeBroadcasts", payload));
    }
    // Let the gossip mesh form on the new topic.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut reach = Vec::new();
    for round in 0..20 {
        let payload = format!("round-{round}");
        let started = Instant::now();
        clients[0]
            .call(
                NET_SERVICE,
                &PublishBroadcast {
                    topic: topic.into(),
                    payload: payload.clone(),
                },
            )
            .await?;
        for stream in streams.iter_mut() {
            loop {
                let item = tokio::time::timeout(Duration::from_secs(10), stream.next())
                    .await
                    .map_err(|_| format!("round {round}: a node got nothing within 10 s"))?
                    .ok_or("subscription ended")??;
                if item["payload"] == payload {
                    break;
                }
            }
        }
        reach.push(started.elapsed().as_secs_f64() * 1000.0);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    reach.sort_by(f64::total_cmp);
    println!(
        "reach_ms nodes={} p50={:.1} max={:.1}",
        clients.len(),
        percentile(&reach, 0.5),
        reach[reach.len() - 1]
    );
    Ok(())
}
