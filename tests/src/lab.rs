//! The scale lab's network in a test's hands: `scripts/lab-net.sh` (the same
//! script `scripts/lab.sh` builds its lab with) makes one network namespace
//! per node, routed through a hub namespace where every packet between two
//! nodes is delayed and dropped as [`LinkShape`] says; addresses exist only
//! inside those namespaces. Node `i` of a test (from 0) is the script's
//! `n<i+1>`. Removed on drop. Tier `netns`: needs root and iproute2; the
//! links are shaped by this build's `golem-lab-links`.

use std::path::PathBuf;
use std::process::Command;

use anyhow::Context;

use crate::requestor::repo_root;

/// How every link between two nodes is shaped.
#[derive(Debug, Clone, Copy)]
pub struct LinkShape {
    /// One-way delay between two nodes.
    pub latency_ms: u32,
    /// Standard deviation of the delay (normally distributed).
    pub jitter_ms: u32,
    /// Packets lost, in percent.
    pub loss_percent: f64,
}

/// Run `ip ARGS`; an error carries its stderr.
pub fn ip(args: &[&str]) -> anyhow::Result<()> {
    let output = Command::new("ip").args(args).output()?;
    anyhow::ensure!(
        output.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(())
}

/// Root and iproute2 (`ip`) are there: the `netns` tier can run.
pub fn netns_available() -> bool {
    nix::unistd::Uid::effective().is_root()
        && Command::new("ip")
            .arg("-V")
            .output()
            .map(|output| output.status.success())
            .unwrap_or(false)
}

/// Fails the test with what to do unless the `netns` tier is switched on and possible.
pub fn require_netns_tier() {
    assert!(
        std::env::var("GOLEM_TEST_NETNS").as_deref() == Ok("1") && netns_available(),
        "network namespaces need root and iproute2: run as root with iproute2 and GOLEM_TEST_NETNS=1, or scripts/test.sh, which runs this tier only when they are there"
    );
}

/// One lab network made by `scripts/lab-net.sh`.
pub struct LabTopology {
    prefix: String,
    state: tempfile::TempDir,
    addresses: Vec<String>,
}

fn lab_net(args: &[&str]) -> anyhow::Result<()> {
    let script = repo_root().join("scripts/lab-net.sh");
    let output = Command::new(&script)
        .env("GOLEM_LAB_LINKS", crate::binary("golem-lab-links"))
        .args(args)
        .output()?;
    anyhow::ensure!(
        output.status.success(),
        "{} {}: {}",
        script.display(),
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(())
}

impl LabTopology {
    /// Make `count` node namespaces, their links shaped by `shape`. `prefix`
    /// keeps parallel tests apart (namespaces `<prefix>-hub`, `<prefix>-n<i>`).
    pub fn create(prefix: &str, count: usize, shape: LinkShape) -> anyhow::Result<LabTopology> {
        let mut topology = LabTopology {
            prefix: prefix.to_string(),
            state: tempfile::Builder::new()
                .prefix("golem-lab-net-")
                .tempdir()?,
            addresses: Vec::new(),
        };
        let state = topology.state_dir();
        lab_net(&[
            "create",
            prefix,
            &count.to_string(),
            &shape.latency_ms.to_string(),
            &shape.jitter_ms.to_string(),
            &shape.loss_percent.to_string(),
            &state,
        ])?;
        let listing = std::fs::read_to_string(topology.state.path().join("addresses"))
            .context("reading the lab's addresses")?;
        topology.addresses = listing
            .lines()
            .filter_map(|line| line.split_whitespace().nth(1))
            .map(str::to_string)
            .collect();
        anyhow::ensure!(topology.addresses.len() == count, "the lab lists {listing}");
        Ok(topology)
    }

    fn state_dir(&self) -> String {
        PathBuf::from(self.state.path()).display().to_string()
    }

    /// The IPv4 address of node `index`.
    pub fn address(&self, index: usize) -> &str {
        &self.addresses[index]
    }

    /// The namespace of node `index`.
    pub fn namespace(&self, index: usize) -> String {
        format!("{}-n{}", self.prefix, index + 1)
    }

    /// Cut the lower half of the nodes off the upper half (`join` heals).
    pub fn cut(&self) -> anyhow::Result<()> {
        lab_net(&["cut", &self.prefix, &self.state_dir()])
    }

    pub fn join(&self) -> anyhow::Result<()> {
        lab_net(&["join", &self.prefix, &self.state_dir()])
    }
}

impl Drop for LabTopology {
    fn drop(&mut self) {
        let _ = lab_net(&["destroy", &self.prefix, &self.state_dir()]);
    }
}
