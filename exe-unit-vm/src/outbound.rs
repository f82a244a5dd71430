//! Outbound internet access of a container under its payload manifest (see
//! RFC 004's addendum). The provider agent has already judged the manifest;
//! this module enforces it: [`OutboundGrant::from_agreement`] resolves the
//! manifest's hosts once at deploy (the provider's `outbound-hosts` first,
//! then the host's resolver, IPv4 only) into `(IPv4, tcp|udp, port)`
//! triples and `/etc/hosts` entries (only names the provider maps may lead
//! to loopback, private or link-local addresses); [`apply`] loads an nftables table into
//! the container's own network namespace that lets exactly those triples
//! (and replies) through and drops and counts everything else;
//! [`dropped`] reads the counters at the end. Where in that namespace the
//! table hooks depends on who carries the container's flows
//! ([`FilterHook`]): the kernel's IP stack under runc, gVisor's netstack
//! (frames on the container's interface) under gVisor.
//!
//! It must never let a container's new flow leave for a triple outside its
//! manifest, and never touch a namespace other than the container's.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::process::Stdio;

use golem_model::manifest::{OutboundTarget, PayloadDemand, Transport};
use tokio::io::AsyncWriteExt;

/// The table the unit loads into a container's network namespace.
pub const TABLE: &str = "golem_outbound";

/// The interface Docker gives a container on its bridge, in the container's
/// namespace.
pub const CONTAINER_INTERFACE: &str = "eth0";

/// Where in the container's namespace the filter sees the container's
/// packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FilterHook {
    /// runc: the container's sockets are the kernel's, so the `inet`
    /// output and input hooks see every packet, with connection tracking.
    Inet,
    /// gVisor with its own netstack: the sandbox sends and receives whole
    /// frames on `device` through a packet socket, past the kernel's IP
    /// stack and its `inet` hooks. Only the device's `netdev` egress hook
    /// sees what leaves (stateless: a frame passes when its destination
    /// triple is allowed, which holds for every packet of an allowed flow).
    /// Arriving frames reach the packet socket before any ingress hook, so
    /// nothing is filtered coming in; a flow the container did not start
    /// cannot be answered, since its replies are dropped leaving. Root in
    /// the sandbox may write raw frames (Docker's default capabilities
    /// include NET_RAW), so with `sender` known only frames from the
    /// container's own MAC and IPv4 address leave, ARP included: no
    /// spoofing of other hosts on the bridge.
    DeviceEgress {
        device: &'static str,
        sender: Option<BridgeAddress>,
    },
}

/// A container's own addresses on the engine's bridge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BridgeAddress {
    pub ip: Ipv4Addr,
    pub mac: [u8; 6],
}

impl BridgeAddress {
    /// From the engine's inspect fields (`IPAddress`, `MacAddress`).
    pub fn parse(ip: &str, mac: &str) -> Result<BridgeAddress, String> {
        let ip = ip
            .parse()
            .map_err(|_| format!("the container's bridge address {ip:?} is not IPv4"))?;
        let octets: Vec<u8> = mac
            .split(':')
            .map(|octet| u8::from_str_radix(octet, 16))
            .collect::<Result<_, _>>()
            .map_err(|_| format!("the container's MAC address {mac:?} is not one"))?;
        let mac: [u8; 6] = octets
            .try_into()
            .map_err(|_| format!("the container's MAC address {mac:?} is not one"))?;
        Ok(BridgeAddress { ip, mac })
    }

    fn mac_text(&self) -> String {
        self.mac
            .iter()
            .map(|octet| format!("{octet:02x}"))
            .collect::<Vec<_>>()
            .join(":")
    }
}

impl FilterHook {
    fn family(self) -> &'static str {
        match self {
            FilterHook::Inet => "inet",
            FilterHook::DeviceEgress { .. } => "netdev",
        }
    }
}

/// One allowed flow start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct AllowedFlow {
    pub ip: Ipv4Addr,
    pub transport: Transport,
    pub port: u16,
}

/// What a container may reach, resolved at deploy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutboundGrant {
    pub flows: Vec<AllowedFlow>,
    /// Manifest host names and the address they were resolved to, for the
    /// container's `/etc/hosts`.
    pub hosts: BTreeMap<String, String>,
}

/// `name=IPv4` pairs, comma- or whitespace-separated (the provider's
/// `outbound-hosts`, handed over in `GOLEM_OUTBOUND_HOSTS`).
pub fn parse_host_overrides(text: &str) -> Result<BTreeMap<String, Ipv4Addr>, String> {
    let mut hosts = BTreeMap::new();
    for pair in text
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|pair| !pair.is_empty())
    {
        let (name, ip) = pair
            .split_once('=')
            .ok_or_else(|| format!("{pair:?} is not name=IPv4"))?;
        let ip: Ipv4Addr = ip
            .parse()
            .map_err(|_| format!("{pair:?}: {ip:?} is not an IPv4 address"))?;
        crate::vpn::network::check_host_name(name)?;
        hosts.insert(name.to_ascii_lowercase(), ip);
    }
    Ok(hosts)
}

/// The manifest's targets when the demand's manifest asks for outbound
/// access; `None` otherwise.
pub fn requested_targets(
    agreement: &golem_exe_unit::Agreement,
) -> Result<Option<Vec<OutboundTarget>>, String> {
    let Some(payload) =
        PayloadDemand::from_properties(&agreement.demand).map_err(|error| error.to_string())?
    else {
        return Ok(None);
    };
    if !payload.manifest.requests_outbound() {
        return Ok(None);
    }
    let targets = payload
        .manifest
        .outbound_targets()
        .map_err(|error| error.to_string())?;
    if targets.is_empty() {
        return Err(
            "the manifest asks for unrestricted outbound access, which this unit cannot enforce"
                .into(),
        );
    }
    Ok(Some(targets))
}

impl OutboundGrant {
    /// Resolve `targets`: IP literals as they are, names from `overrides`,
    /// else the host's resolver (its IPv4 answers, all of them).
    pub async fn resolve(
        targets: &[OutboundTarget],
        overrides: &BTreeMap<String, Ipv4Addr>,
    ) -> Result<OutboundGrant, String> {
        let mut grant = OutboundGrant::default();
        for target in targets {
            let ips: Vec<Ipv4Addr> = match target.host.parse::<IpAddr>() {
                Ok(IpAddr::V4(ip)) => vec![ip],
                Ok(IpAddr::V6(_)) => {
                    return Err(format!(
                        "outbound to {} is IPv6, which this unit does not give containers",
                        target.host
                    ))
                }
                Err(_) => match overrides.get(&target.host) {
                    Some(ip) => vec![*ip],
                    None => {
                        let answers = tokio::net::lookup_host((target.host.as_str(), target.port))
                            .await
                            .map_err(|error| {
                                format!(
                                    "cannot resolve the manifest's host {}: {error}",
                                    target.host
                                )
                            })?;
                        let ips: Vec<Ipv4Addr> = answers
                            .filter_map(|address| match address.ip() {
                                IpAddr::V4(ip) => Some(ip),
                                IpAddr::V6(_) => None,
                            })
                            .collect();
                        if ips.is_empty() {
                            return Err(format!(
                                "the manifest's host {} has no IPv4 address",
                                target.host
                            ));
                        }
                        ips
                    }
                },
            };
            // Only the provider's own mapping may lead into non-public
            // space (its LAN, the host, cloud metadata).
            if !overrides.contains_key(&target.host) {
                for ip in &ips {
                    if let Some(kind) = golem_exe_unit::outbound::non_public_kind(IpAddr::V4(*ip)) {
                        return Err(format!(
                            "the manifest's host {} is {ip}, a {kind} address: containers reach \
                             only public addresses, unless the provider maps the name in its \
                             outbound-hosts setting",
                            target.host
                        ));
                    }
                }
            }
            if target.host.parse::<IpAddr>().is_err() {
                grant.hosts.insert(target.host.clone(), ips[0].to_string());
            }
            for ip in ips {
                grant.flows.push(AllowedFlow {
                    ip,
                    transport: target.transport,
                    port: target.port,
                });
            }
        }
        grant.flows.sort();
        grant.flows.dedup();
        Ok(grant)
    }

    /// The nftables script of this grant (loaded with `nft -f -`) for `hook`.
    pub fn ruleset(&self, hook: FilterHook) -> String {
        let elements: Vec<String> = self
            .flows
            .iter()
            .map(|flow| format!("{} . {} . {}", flow.ip, flow.transport.as_str(), flow.port))
            .collect();
        let set_elements = if elements.is_empty() {
            String::new()
        } else {
            format!(" elements = {{ {} }};", elements.join(", "))
        };
        let set = format!(
            "\tset allowed {{ type ipv4_addr . inet_proto . inet_service;{set_elements} }}\n"
        );
        match hook {
            FilterHook::Inet => format!(
                "table inet {TABLE} {{\n\
                 \tcounter dropped_out {{ }}\n\
                 \tcounter dropped_in {{ }}\n\
                 {set}\
                 \tchain output {{\n\
                 \t\ttype filter hook output priority 0; policy drop;\n\
                 \t\toif \"lo\" accept\n\
                 \t\tct state established,related accept\n\
                 \t\tip daddr . meta l4proto . th dport @allowed accept\n\
                 \t\tcounter name \"dropped_out\" drop\n\
                 \t}}\n\
                 \tchain input {{\n\
                 \t\ttype filter hook input priority 0; policy drop;\n\
                 \t\tiif \"lo\" accept\n\
                 \t\tct state established,related accept\n\
                 \t\tcounter name \"dropped_in\" drop\n\
                 \t}}\n\
                 }}\n"
            ),
            // ARP passes (the netstack must find the bridge's gateway), from
            // the container's own addresses when they are known.
            FilterHook::DeviceEgress { device, sender } => {
                let (source_check, arp, ip_source) = match sender {
                    Some(sender) => (
                        format!(
                            "\t\tether saddr != {} counter name \"dropped_out\" drop\n",
                            sender.mac_text()
                        ),
                        format!(
                            "arp saddr ether {} arp saddr ip {}",
                            sender.mac_text(),
                            sender.ip
                        ),
                        format!("ip saddr {} ", sender.ip),
                    ),
                    None => (
                        String::new(),
                        "meta protocol arp".to_string(),
                        String::new(),
                    ),
                };
                format!(
                    "table netdev {TABLE} {{\n\
                     \tcounter dropped_out {{ }}\n\
                     {set}\
                     \tchain egress {{\n\
                     \t\ttype filter hook egress device \"{device}\" priority 0; policy drop;\n\
                     {source_check}\
                     \t\t{arp} accept\n\
                     \t\t{ip_source}ip daddr . meta l4proto . th dport @allowed accept\n\
                     \t\tcounter name \"dropped_out\" drop\n\
                     \t}}\n\
                     }}\n"
                )
            }
        }
    }
}

/// Run `nft` with `args` (and `stdin`, when given), entered into the network
/// namespace of process `pid` when given, else into a fresh one.
async fn nft(pid: Option<u32>, args: &[&str], stdin: Option<&str>) -> Result<String, String> {
    let mut command = match pid {
        Some(pid) => {
            let mut command = tokio::process::Command::new("nsenter");
            command.arg(format!("--net=/proc/{pid}/ns/net"));
            command
        }
        None => {
            let mut command = tokio::process::Command::new("unshare");
            command.arg("--net");
            command
        }
    };
    command
        .arg("--")
        .arg("nft")
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = command
        .spawn()
        .map_err(|error| format!("cannot run nsenter/unshare + nft: {error}"))?;
    if let (Some(text), Some(mut input)) = (stdin, child.stdin.take()) {
        input
            .write_all(text.as_bytes())
            .await
            .map_err(|error| format!("cannot feed nft: {error}"))?;
    }
    let output = child
        .wait_with_output()
        .await
        .map_err(|error| format!("nft did not finish: {error}"))?;
    if !output.status.success() {
        return Err(format!(
            "nft failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Whether this unit can enforce manifests with `hook`: it loads a sample
/// table into a throwaway network namespace (needs root, `unshare`,
/// `nsenter`, `nft`; for [`FilterHook::DeviceEgress`] a kernel with the
/// `netdev` egress hook, 5.16 or later; the sample hooks the namespace's
/// loopback, its only device).
pub async fn available(hook: FilterHook) -> Result<(), String> {
    let sample = OutboundGrant {
        flows: vec![AllowedFlow {
            ip: Ipv4Addr::new(192, 0, 2, 1),
            transport: Transport::Tcp,
            port: 443,
        }],
        hosts: BTreeMap::new(),
    };
    let hook = match hook {
        FilterHook::Inet => FilterHook::Inet,
        FilterHook::DeviceEgress { .. } => FilterHook::DeviceEgress {
            device: "lo",
            sender: Some(BridgeAddress {
                ip: Ipv4Addr::new(192, 0, 2, 2),
                mac: [0x02, 0, 0, 0, 0, 2],
            }),
        },
    };
    nft(None, &["-f", "-"], Some(&sample.ruleset(hook))).await?;
    Ok(())
}

/// Load `grant`'s table, hooked at `hook`, into the network namespace of
/// process `pid` (the container's init).
pub async fn apply(pid: u32, grant: &OutboundGrant, hook: FilterHook) -> Result<(), String> {
    nft(Some(pid), &["-f", "-"], Some(&grant.ruleset(hook))).await?;
    Ok(())
}

/// Packets dropped so far, out and in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Dropped {
    pub out_packets: u64,
    pub in_packets: u64,
}

/// The counters of the table hooked at `hook` in process `pid`'s namespace
/// (under [`FilterHook::DeviceEgress`] nothing is counted arriving).
pub async fn dropped(pid: u32, hook: FilterHook) -> Result<Dropped, String> {
    let text = nft(
        Some(pid),
        &["-j", "list", "counters", "table", hook.family(), TABLE],
        None,
    )
    .await?;
    parse_counters(&text)
}

fn parse_counters(text: &str) -> Result<Dropped, String> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|error| format!("nft's JSON: {error}"))?;
    let mut dropped = Dropped::default();
    for item in value["nftables"].as_array().into_iter().flatten() {
        let counter = &item["counter"];
        let packets = counter["packets"].as_u64().unwrap_or(0);
        match counter["name"].as_str() {
            Some("dropped_out") => dropped.out_packets = packets,
            Some("dropped_in") => dropped.in_packets = packets,
            _ => {}
        }
    }
    Ok(dropped)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn target(transport: Transport, host: &str, port: u16) -> OutboundTarget {
        OutboundTarget {
            transport,
            host: host.into(),
            port,
        }
    }

    #[tokio::test]
    async fn names_resolve_through_the_overrides_and_literals_stay() {
        let overrides =
            parse_host_overrides("API.golem.test=10.9.8.7, other.test=10.0.0.1").unwrap();
        let grant = OutboundGrant::resolve(
            &[
                target(Transport::Tcp, "api.golem.test", 8080),
                target(Transport::Udp, "1.1.1.1", 53),
            ],
            &overrides,
        )
        .await
        .unwrap();
        assert_eq!(
            grant.flows,
            [
                AllowedFlow {
                    ip: Ipv4Addr::new(1, 1, 1, 1),
                    transport: Transport::Udp,
                    port: 53
                },
                AllowedFlow {
                    ip: Ipv4Addr::new(10, 9, 8, 7),
                    transport: Transport::Tcp,
                    port: 8080
                },
            ]
        );
        assert_eq!(
            grant.hosts,
            BTreeMap::from([("api.golem.test".to_string(), "10.9.8.7".to_string())])
        );
        let sender = BridgeAddress::parse("172.17.0.2", "02:42:AC:11:00:02").unwrap();
        for hook in [
            FilterHook::Inet,
            FilterHook::DeviceEgress {
                device: CONTAINER_INTERFACE,
                sender: Some(sender),
            },
        ] {
            let ruleset = grant.ruleset(hook);
            assert!(
                ruleset.contains("elements = { 1.1.1.1 . udp . 53, 10.9.8.7 . tcp . 8080 }"),
                "{ruleset}"
            );
            assert!(ruleset.contains("policy drop"), "{ruleset}");
        }
        let egress = grant.ruleset(FilterHook::DeviceEgress {
            device: CONTAINER_INTERFACE,
            sender: Some(sender),
        });
        assert!(
            egress.starts_with("table netdev golem_outbound"),
            "{egress}"
        );
        assert!(
            egress.contains("ether saddr != 02:42:ac:11:00:02 counter name \"dropped_out\" drop"),
            "{egress}"
        );
        assert!(
            egress.contains("arp saddr ether 02:42:ac:11:00:02 arp saddr ip 172.17.0.2 accept"),
            "{egress}"
        );
        assert!(
            egress.contains("ip saddr 172.17.0.2 ip daddr . meta l4proto . th dport @allowed"),
            "{egress}"
        );
        for (ip, mac) in [
            ("172.17.0.2", "02:42:ac:11:00"),
            ("172.17.0.2", "02:42:ac:11:00:zz"),
            ("::1", "02:42:ac:11:00:02"),
            ("172.17.0.2", "02:42:ac:11:00:02\"; flush ruleset"),
        ] {
            assert!(BridgeAddress::parse(ip, mac).is_err(), "{ip} {mac}");
        }
        assert!(egress.contains("hook egress device \"eth0\""), "{egress}");
    }

    #[test]
    fn bad_overrides_are_refused_with_the_pair() {
        let error = parse_host_overrides("a.test").unwrap_err();
        assert!(error.contains("name=IPv4"), "{error}");
        let error = parse_host_overrides("a.test=::1").unwrap_err();
        assert!(error.contains("IPv4"), "{error}");
        assert!(parse_host_overrides("bad name=1.2.3.4").is_err());
        assert!(parse_host_overrides("").unwrap().is_empty());
    }

    #[tokio::test]
    async fn non_public_addresses_need_the_providers_mapping() {
        for host in ["127.0.0.1", "172.17.0.1", "169.254.169.254", "192.168.1.10"] {
            let error =
                OutboundGrant::resolve(&[target(Transport::Tcp, host, 80)], &BTreeMap::new())
                    .await
                    .unwrap_err();
            assert!(error.contains("outbound-hosts"), "{host}: {error}");
        }
        let overrides = parse_host_overrides("lan.test=192.168.1.10").unwrap();
        let grant = OutboundGrant::resolve(&[target(Transport::Tcp, "lan.test", 80)], &overrides)
            .await
            .unwrap();
        assert_eq!(grant.flows[0].ip, Ipv4Addr::new(192, 168, 1, 10));
    }

    #[tokio::test]
    async fn ipv6_literals_fail_the_deploy() {
        let error = OutboundGrant::resolve(&[target(Transport::Tcp, "::1", 80)], &BTreeMap::new())
            .await
            .unwrap_err();
        assert!(error.contains("IPv6"), "{error}");
    }

    #[test]
    fn counters_are_read_from_nfts_json() {
        let text = r#"{"nftables": [{"metainfo": {"version": "1.0.6"}},
            {"counter": {"family": "inet", "name": "dropped_out", "table": "golem_outbound", "packets": 7, "bytes": 420}},
            {"counter": {"family": "inet", "name": "dropped_in", "table": "golem_outbound", "packets": 2, "bytes": 80}}]}"#;
        assert_eq!(
            parse_counters(text).unwrap(),
            Dropped {
                out_packets: 7,
                in_packets: 2
            }
        );
    }
}
