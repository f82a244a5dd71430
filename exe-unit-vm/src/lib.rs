//! The VM exe unit (runtime name `vm`): runs a Docker image as one hardened
//! container per activity through the Docker Engine API (bollard). It
//! implements only the [`golem_exe_unit::Runtime`] trait; the bus, state
//! machine, ExeScript, capture, transfers and package download are the core's.
//! The container gets no network (unless the agreement grants it), no
//! capabilities, no new privileges, a read-only root with host-dir volumes
//! under the activity's work dir, a small `/tmp`, pids/memory/CPU limits and
//! a non-root user unless the image names one; it is labelled with the node,
//! agreement and activity, and its owner so that leftovers of a dead exe unit
//! are removed by the next one. Packages load by content only (a tarball's
//! own tags are stripped; the cache's tag and record are the exe unit's), and
//! `docker:<ref>` packages run only where the provider allows them. With
//! `deploy.net` the container gets a TUN interface in its own network
//! namespace and the exe unit relays its packets over the bus ([`vpn`]).
#![forbid(unsafe_code)]

pub mod archive;
pub mod cache;
pub mod config;
pub mod engine;
pub mod image;
pub mod runtime;
pub mod vpn;

pub use runtime::{VmRuntime, RUNTIME_NAME};
