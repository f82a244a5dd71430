//! Bus round-trip benchmark between two processes: connects to a running
//! daemon's bus socket and times `Ping` request/replies.
//!
//! Usage: `bus_rtt <socket-path> [calls]`; prints p50/p90/p99 in microseconds.

use std::time::Instant;

use golem_bus::BusClient;
use golem_model::bus::{Ping, ROUTER_SERVICE};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let socket = args.next().ok_or("usage: bus_rtt <socket-path> [calls]")?;
    let calls: usize = args
        .next()
        .map(|n| n.parse())
        .transpose()?
        .unwrap_or(20_000);
    let client = BusClient::connect(std::path::Path::new(&socket), "bus-rtt-bench").await?;
    let ping = Ping {
        payload: "x".repeat(16),
    };
    for _ in 0..1_000 {
        client.call(ROUTER_SERVICE, &ping).await?;
    }
    let mut samples = Vec::with_capacity(calls);
    let started = Instant::now();
    for _ in 0..calls {
        let call_started = Instant::now();
        client.call(ROUTER_SERVICE, &ping).await?;
        samples.push(call_started.elapsed().as_nanos() as f64 / 1_000.0);
    }
    let total = started.elapsed();
    samples.sort_by(|a, b| a.total_cmp(b));
    let percentile = |p: f64| samples[((samples.len() as f64 * p) as usize).min(samples.len() - 1)];
    println!(
        "calls={calls} p50_us={:.1} p90_us={:.1} p99_us={:.1} rate_per_s={:.0}",
        percentile(0.50),
        percentile(0.90),
        percentile(0.99),
        calls as f64 / total.as_secs_f64()
    );
    Ok(())
}
