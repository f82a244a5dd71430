//! The VM exe unit (runtime name `vm`): runs a Docker image as one
//! container per activity through the Docker Engine API (bollard). It
//! implements only the [`golem_exe_unit::Runtime`] trait; the bus, state
//! machine, ExeScript, capture, transfers and package download are the core's.
//! The sandbox is the provider's `vm-sandbox` ([`config::Sandbox`]): under
//! gVisor (default when the engine has `runsc`) the image runs as on the
//! original (its user or root, a writable root in the sandbox's memory,
//! Docker's default capabilities, its `WORKDIR`); under runc (chosen, no
//! gVisor, or a VPN activity) it gets no capabilities, no new privileges, a
//! read-only root, a small `/tmp` and a non-root user unless the image names
//! one. Always: no network unless the agreement grants it, host-dir volumes
//! under the activity's 0700 work dir on a `nosuid,nodev` mount, pids/memory/
//! CPU limits; it is labelled with the node,
//! agreement and activity, and its owner so that leftovers of a dead exe unit
//! are removed by the next one. Packages load by content only (a tarball's
//! own tags are stripped; the cache's tag and record are the exe unit's), and
//! `docker:<ref>` packages run only where the provider allows them. With
//! `deploy.net` the container gets a TUN interface in its own network
//! namespace and the exe unit relays its packets over the bus ([`vpn`]).
//! When the demand's payload manifest asks for outbound access (the agent
//! has accepted it), the container runs on Docker's bridge under runc with an
//! nftables filter in its own namespace that passes exactly the manifest's
//! `(IPv4, protocol, port)` triples ([`outbound`]).
#![forbid(unsafe_code)]

pub mod archive;
pub mod cache;
pub mod config;
pub mod engine;
pub mod gvmi;
pub mod image;
pub mod outbound;
pub mod runtime;
pub mod vpn;

pub use runtime::{VmRuntime, RUNTIME_NAME};
