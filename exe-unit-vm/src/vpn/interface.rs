//! The container's network interface: a TUN device (`IFF_TUN|IFF_NO_PI`)
//! created inside the container's network namespace and configured there
//! (address with the network's prefix, MTU [`VPN_MTU`], up), whose fd the exe
//! unit keeps. The work happens on a dedicated thread that `setns`es into
//! `/proc/<pid>/ns/net` (a namespace switch is per thread) and ends
//! afterwards; the device and its fd stay bound to that namespace. The kernel
//! adds the connected route of the prefix; no default route is ever added,
//! and the container has no other interface but loopback.
//!
//! Under gVisor the device is a TAP instead ([`Framing::Ethernet`]; gVisor's
//! netstack takes Ethernet links only), made before the sandbox starts so
//! that gVisor finds it and takes its address, with IPv6 off (gVisor would
//! take a link-local address too).
//!
//! Needs CAP_SYS_ADMIN (setns) and CAP_NET_ADMIN (TUN, addresses) in the exe
//! unit and `/dev/net/tun`; [`probe`] checks all three once in a throwaway
//! namespace, and the offer says `vpn` only when it passes.

use std::net::Ipv4Addr;

use golem_model::vpn::VPN_MTU;
use nix::sched::CloneFlags;

/// The interface's name inside the container.
pub const INTERFACE_NAME: &str = "vpn0";

/// What the interface carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// IPv4 packets (a TUN): the container's kernel is the host's.
    Ip,
    /// Ethernet frames (a TAP): gVisor's netstack reads the device.
    Ethernet,
}

/// How the interface is configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InterfaceConfig {
    pub address: Ipv4Addr,
    pub mask: Ipv4Addr,
    pub framing: Framing,
}

fn tun_config(config: InterfaceConfig) -> tun::Configuration {
    let mut tun_config = tun::Configuration::default();
    tun_config
        .tun_name(INTERFACE_NAME)
        .layer(match config.framing {
            Framing::Ip => tun::Layer::L3,
            Framing::Ethernet => tun::Layer::L2,
        })
        .address(config.address)
        .netmask(config.mask)
        .mtu(VPN_MTU as u16)
        .up();
    tun_config
}

/// Run `work` on a new thread that first enters (or creates) a network
/// namespace; the calling thread's namespace is never touched.
fn in_namespace<T: Send + 'static>(
    enter: impl FnOnce() -> Result<(), String> + Send + 'static,
    work: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    std::thread::Builder::new()
        .name("vpn-netns".into())
        .spawn(move || {
            enter()?;
            work()
        })
        .map_err(|error| format!("cannot start the namespace thread: {error}"))?
        .join()
        .map_err(|_| "the namespace thread panicked".to_string())?
}

/// Create and configure the interface in the network namespace of process `pid`
/// (the container's init).
pub fn create_in_process(pid: u32, config: InterfaceConfig) -> Result<tun::Device, String> {
    let path = format!("/proc/{pid}/ns/net");
    in_namespace(
        move || {
            let namespace = std::fs::File::open(&path)
                .map_err(|error| format!("cannot open {path}: {error}"))?;
            nix::sched::setns(&namespace, CloneFlags::CLONE_NEWNET).map_err(|error| {
                format!("cannot enter the container's network namespace: {error} (the exe unit needs CAP_SYS_ADMIN)")
            })
        },
        move || create(config),
    )
}

fn create(config: InterfaceConfig) -> Result<tun::Device, String> {
    let device = tun::create(&tun_config(config)).map_err(|error| {
        format!(
            "cannot create the {INTERFACE_NAME} TUN interface: {error} (the exe unit needs CAP_NET_ADMIN and /dev/net/tun)"
        )
    })?;
    if config.framing == Framing::Ethernet {
        // This thread's namespace is the container's: /proc/sys/net is its.
        let path = format!("/proc/sys/net/ipv6/conf/{INTERFACE_NAME}/disable_ipv6");
        match std::fs::write(&path, "1") {
            Ok(()) => {}
            // A kernel without IPv6 gives no link-local address either.
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => return Err(format!("cannot write {path}: {error}")),
        }
    }
    Ok(device)
}

/// [`probe`], run once per process.
pub fn available() -> Result<(), String> {
    static PROBED: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    PROBED.get_or_init(probe).clone()
}

/// Whether this process can give containers an interface: create one in a
/// throwaway network namespace (gone with the thread).
pub fn probe() -> Result<(), String> {
    in_namespace(
        || {
            nix::sched::unshare(CloneFlags::CLONE_NEWNET).map_err(|error| {
                format!("cannot create a network namespace: {error} (needs CAP_SYS_ADMIN)")
            })
        },
        || {
            create(InterfaceConfig {
                address: Ipv4Addr::new(192, 168, 0, 2),
                mask: Ipv4Addr::new(255, 255, 255, 0),
                framing: Framing::Ip,
            })
            .map(drop)
        },
    )
}
