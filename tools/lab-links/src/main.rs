//! `golem-lab-links`: the scale lab's link shaper, what `tc netem` would do,
//! in user space (RFC 005). This machine's kernel has no netem, so
//! `scripts/lab-net.sh` routes every packet between two lab nodes through the
//! TUN device of the hub namespace, where this process holds it for LATENCY ±
//! JITTER ms (normal distribution, never reordering the packets of one source
//! → destination pair), drops LOSS % of them and writes it back for the
//! kernel to route on. While the file CUT_FILE exists, packets between the
//! lab's halves (10.77.0.0/17 and 10.77.128.0/17) are dropped: a partition
//! that existing connections feel at once.
//!
//! It replaced a Python shaper that took 30 % of the 2-core machine's CPU in
//! a 40-node job (docs/benchmarks.md): CPU the daemons under test lost.
#![forbid(unsafe_code)]

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use rand::Rng;
use tokio::time::Instant;

/// How often the cut file is looked for.
const CUT_CHECK: Duration = Duration::from_millis(100);
/// Pairs whose last packet is due are forgotten once this many are known.
const PAIRS_KEPT: usize = 4096;

#[derive(Parser, Debug)]
#[command(
    about = "The scale lab's link shaper (scripts/lab-net.sh starts it in the hub namespace)"
)]
struct Args {
    /// The TUN device to attach to (made beforehand by `ip tuntap add`).
    #[arg(long)]
    dev: String,
    /// One-way delay, ms.
    #[arg(long)]
    latency: f64,
    /// Standard deviation of the delay, ms.
    #[arg(long, default_value_t = 0.0)]
    jitter: f64,
    /// Percent of packets dropped.
    #[arg(long, default_value_t = 0.0)]
    loss: f64,
    /// While this file exists, packets between the lab's halves are dropped.
    #[arg(long)]
    cut_file: PathBuf,
}

/// A held packet, due at `due`; `sequence` keeps equal due times in arrival order.
struct Held {
    due: Instant,
    sequence: u64,
    packet: Vec<u8>,
}

impl PartialEq for Held {
    fn eq(&self, other: &Held) -> bool {
        (self.due, self.sequence) == (other.due, other.sequence)
    }
}
impl Eq for Held {}
impl PartialOrd for Held {
    fn partial_cmp(&self, other: &Held) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Held {
    fn cmp(&self, other: &Held) -> std::cmp::Ordering {
        (self.due, self.sequence).cmp(&(other.due, other.sequence))
    }
}

/// An IPv4 packet from one half of the lab to the other (bit 7 of the third octet).
fn crosses_halves(packet: &[u8]) -> bool {
    packet.len() >= 20 && packet[0] >> 4 == 4 && (packet[14] >= 128) != (packet[18] >= 128)
}

/// Source and destination address of an IPv4 packet (its 8 bytes at 12..20).
fn pair_of(packet: &[u8]) -> [u8; 8] {
    let mut pair = [0u8; 8];
    if let Some(bytes) = packet.get(12..20) {
        pair.copy_from_slice(bytes);
    }
    pair
}

/// A normally distributed delay (Box–Muller), never negative.
fn delay(rng: &mut impl Rng, latency_ms: f64, jitter_ms: f64) -> Duration {
    let ms = if jitter_ms > 0.0 {
        let (u1, u2): (f64, f64) = (rng.gen_range(f64::EPSILON..1.0), rng.gen());
        latency_ms + jitter_ms * (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    } else {
        latency_ms
    };
    Duration::from_secs_f64(ms.max(0.0) / 1000.0)
}

/// The delays and losses of the lab's links, packet by packet.
struct Shaper {
    args: Args,
    held: BinaryHeap<Reverse<Held>>,
    /// Due time of each pair's latest packet: none of its packets overtakes it.
    last_due: HashMap<[u8; 8], Instant>,
    sequence: u64,
    cut: bool,
    cut_checked: Option<Instant>,
}

impl Shaper {
    fn new(args: Args) -> Shaper {
        Shaper {
            args,
            held: BinaryHeap::new(),
            last_due: HashMap::new(),
            sequence: 0,
            cut: false,
            cut_checked: None,
        }
    }

    /// Take a packet that arrived now: drop it or hold it.
    fn arrived(&mut self, packet: Vec<u8>, rng: &mut impl Rng) {
        let now = Instant::now();
        if self.cut_checked.is_none_or(|at| now - at > CUT_CHECK) {
            self.cut = self.args.cut_file.exists();
            self.cut_checked = Some(now);
        }
        if self.args.loss > 0.0 && rng.gen::<f64>() * 100.0 < self.args.loss {
            return;
        }
        if self.cut && crosses_halves(&packet) {
            return;
        }
        let pair = pair_of(&packet);
        let mut due = now + delay(rng, self.args.latency, self.args.jitter);
        if let Some(last) = self.last_due.get(&pair) {
            due = due.max(*last);
        }
        if self.last_due.len() >= PAIRS_KEPT {
            self.last_due.retain(|_, last| *last > now);
        }
        self.last_due.insert(pair, due);
        self.sequence += 1;
        self.held.push(Reverse(Held {
            due,
            sequence: self.sequence,
            packet,
        }));
    }

    /// The packets due by `now`, in order.
    fn due(&mut self, now: Instant) -> Vec<Vec<u8>> {
        let mut ready = Vec::new();
        while self
            .held
            .peek()
            .is_some_and(|Reverse(held)| held.due <= now)
        {
            if let Some(Reverse(held)) = self.held.pop() {
                ready.push(held.packet);
            }
        }
        ready
    }

    fn next_due(&self) -> Option<Instant> {
        self.held.peek().map(|Reverse(held)| held.due)
    }
}

async fn run(args: Args) -> Result<(), String> {
    let mut config = tun::Configuration::default();
    config.tun_name(&args.dev).layer(tun::Layer::L3);
    let device = tun::create_as_async(&config)
        .map_err(|error| format!("cannot attach to the TUN device {}: {error}", args.dev))?;
    let mut shaper = Shaper::new(args);
    let mut rng = rand::thread_rng();
    let mut buffer = vec![0u8; 65536];
    loop {
        let wake = shaper
            .next_due()
            .unwrap_or_else(|| Instant::now() + CUT_CHECK);
        tokio::select! {
            received = device.recv(&mut buffer) => {
                let length = received.map_err(|error| format!("cannot read the TUN device: {error}"))?;
                shaper.arrived(buffer[..length].to_vec(), &mut rng);
            }
            _ = tokio::time::sleep_until(wake) => {}
        }
        for packet in shaper.due(Instant::now()) {
            // A full queue drops the packet, as a link would.
            let _ = device.send(&packet).await;
        }
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("golem-lab-links: cannot start: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("golem-lab-links: {message}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    fn packet(source: [u8; 4], destination: [u8; 4]) -> Vec<u8> {
        let mut packet = vec![0u8; 20];
        packet[0] = 0x45;
        packet[12..16].copy_from_slice(&source);
        packet[16..20].copy_from_slice(&destination);
        packet
    }

    fn shaper(latency: f64, jitter: f64, loss: f64, cut_file: PathBuf) -> Shaper {
        Shaper::new(Args {
            dev: "glt0".into(),
            latency,
            jitter,
            loss,
            cut_file,
        })
    }

    #[test]
    fn only_packets_between_the_halves_cross_them() {
        assert!(crosses_halves(&packet([10, 77, 0, 2], [10, 77, 128, 2])));
        assert!(!crosses_halves(&packet([10, 77, 0, 2], [10, 77, 1, 9])));
        assert!(!crosses_halves(&[0x45; 10]));
    }

    #[test]
    fn packets_are_held_for_the_latency_and_one_pair_never_reorders() {
        let mut shaper = shaper(50.0, 20.0, 0.0, "/nonexistent/cut".into());
        let mut rng = StdRng::seed_from_u64(7);
        let start = Instant::now();
        for n in 0..200u8 {
            let mut p = packet([10, 77, 0, 2], [10, 77, 0, 3]);
            p.push(n);
            shaper.arrived(p, &mut rng);
        }
        assert!(shaper.due(start + Duration::from_millis(1)).is_empty());
        let released = shaper.due(start + Duration::from_secs(1));
        let order: Vec<u8> = released.iter().map(|p| p[20]).collect();
        assert_eq!(order, (0..200u8).collect::<Vec<_>>());
    }

    #[test]
    fn the_delay_spreads_around_the_latency() {
        let mut rng = StdRng::seed_from_u64(1);
        let delays: Vec<f64> = (0..10_000)
            .map(|_| delay(&mut rng, 50.0, 10.0).as_secs_f64() * 1000.0)
            .collect();
        let mean = delays.iter().sum::<f64>() / delays.len() as f64;
        let deviation =
            (delays.iter().map(|d| (d - mean).powi(2)).sum::<f64>() / delays.len() as f64).sqrt();
        assert!((mean - 50.0).abs() < 0.5, "mean {mean}");
        assert!((deviation - 10.0).abs() < 0.5, "deviation {deviation}");
    }

    #[test]
    fn loss_drops_its_share_and_a_cut_drops_what_crosses() {
        let mut lossy = shaper(0.0, 0.0, 10.0, "/nonexistent/cut".into());
        let mut rng = StdRng::seed_from_u64(3);
        for _ in 0..10_000 {
            lossy.arrived(packet([10, 77, 0, 2], [10, 77, 0, 3]), &mut rng);
        }
        let kept = lossy.due(Instant::now() + Duration::from_secs(1)).len();
        assert!((8_700..9_300).contains(&kept), "kept {kept}");

        let dir = std::env::temp_dir().join(format!("lab-links-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let cut = dir.join("cut");
        std::fs::write(&cut, "").unwrap();
        let mut parted = shaper(0.0, 0.0, 0.0, cut.clone());
        parted.arrived(packet([10, 77, 0, 2], [10, 77, 128, 3]), &mut rng);
        parted.arrived(packet([10, 77, 0, 2], [10, 77, 0, 3]), &mut rng);
        assert_eq!(parted.due(Instant::now() + Duration::from_secs(1)).len(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
