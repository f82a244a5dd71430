//! What `deploy` asks for, checked: the one network of the activity
//! ([`VpnNetwork`]: address, prefix, our IP, gateway, members), the mask's
//! prefix math, and the payload's `/etc/hosts` ([`hosts_file`]). Pure
//! functions: nothing here touches the system.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use golem_model::activity::DeployNetwork;
use golem_model::NodeId;

/// The prefix of a network given without a mask nor `/N` (the Net API's default).
pub const DEFAULT_PREFIX: u8 = 24;

/// The activity's network as `deploy.net` describes it, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VpnNetwork {
    /// The network's id: the last segment of its bus address.
    pub id: String,
    /// The network address (host bits cleared).
    pub address: Ipv4Addr,
    pub prefix: u8,
    /// This activity's address on the network.
    pub node_ip: Ipv4Addr,
    /// Kept for the record: a TUN has no link layer, so the connected route
    /// of the prefix reaches every member and no route goes via it.
    pub gateway: Option<Ipv4Addr>,
    /// IP -> NodeId of the other members as `deploy` lists them (entries
    /// naming this node itself are left out: they are local, not peers).
    pub members: BTreeMap<Ipv4Addr, NodeId>,
}

/// The prefix length of a dotted mask; an error unless its ones are contiguous.
pub fn prefix_of_mask(mask: Ipv4Addr) -> Result<u8, String> {
    let bits = u32::from(mask);
    let prefix = bits.leading_ones();
    if bits.checked_shl(prefix).unwrap_or(0) != 0 {
        return Err(format!("{mask} is not a network mask"));
    }
    Ok(prefix as u8)
}

/// The dotted mask of a prefix length (0..=32).
pub fn mask_of_prefix(prefix: u8) -> Ipv4Addr {
    let prefix = u32::from(prefix.min(32));
    Ipv4Addr::from(u32::MAX.checked_shl(32 - prefix).unwrap_or(0))
}

/// Whether `ip` lies in `address/prefix`.
pub fn contains(address: Ipv4Addr, prefix: u8, ip: Ipv4Addr) -> bool {
    let mask = u32::from(mask_of_prefix(prefix));
    u32::from(ip) & mask == u32::from(address) & mask
}

/// The directed broadcast address of `address/prefix`.
pub fn broadcast(address: Ipv4Addr, prefix: u8) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(address) | !u32::from(mask_of_prefix(prefix)))
}

/// A network id becomes a bus address segment: keep it to what ids look like.
fn check_network_id(id: &str) -> Result<(), String> {
    let fine = !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if fine {
        Ok(())
    } else {
        Err(format!(
            "network id {id:?} is not valid (1 to 64 letters, digits, '-' or '_')"
        ))
    }
}

fn parse_ip(what: &str, text: &str) -> Result<Ipv4Addr, String> {
    text.trim()
        .parse()
        .map_err(|_| format!("{what} {text:?} is not an IPv4 address"))
}

impl VpnNetwork {
    /// The network of `deploy.net`: none for an empty list, an error for more
    /// than one (one interface per activity) or anything malformed.
    /// `own_node` is this provider's NodeId.
    pub fn from_deploy(
        net: &[DeployNetwork],
        own_node: Option<NodeId>,
    ) -> Result<Option<VpnNetwork>, String> {
        match net {
            [] => Ok(None),
            [one] => VpnNetwork::parse(one, own_node).map(Some),
            more => Err(format!(
                "deploy.net lists {} networks; the vm runtime attaches an activity to one",
                more.len()
            )),
        }
    }

    fn parse(net: &DeployNetwork, own_node: Option<NodeId>) -> Result<VpnNetwork, String> {
        check_network_id(&net.id)?;
        let (ip_text, given_prefix) = match net.ip.split_once('/') {
            Some((ip, prefix)) => {
                let prefix: u8 = prefix
                    .trim()
                    .parse()
                    .ok()
                    .filter(|prefix| *prefix <= 32)
                    .ok_or_else(|| format!("network {:?} has a bad prefix", net.ip))?;
                (ip, Some(prefix))
            }
            None => (net.ip.as_str(), None),
        };
        let ip = parse_ip("network address", ip_text)?;
        let mask_prefix = match &net.mask {
            Some(mask) => Some(prefix_of_mask(parse_ip("mask", mask)?)?),
            None => None,
        };
        let prefix = match (given_prefix, mask_prefix) {
            (Some(a), Some(b)) if a != b => {
                return Err(format!(
                    "network {} and mask {} disagree",
                    net.ip,
                    net.mask.as_deref().unwrap_or_default()
                ))
            }
            (Some(prefix), _) | (None, Some(prefix)) => prefix,
            (None, None) => DEFAULT_PREFIX,
        };
        if prefix > 30 {
            return Err(format!(
                "network /{prefix} is too small for a requestor and a provider"
            ));
        }
        let address = Ipv4Addr::from(u32::from(ip) & u32::from(mask_of_prefix(prefix)));
        let node_ip = parse_ip("nodeIp", &net.node_ip)?;
        let is_host = |candidate: Ipv4Addr| {
            contains(address, prefix, candidate)
                && candidate != address
                && candidate != broadcast(address, prefix)
        };
        if !is_host(node_ip) {
            return Err(format!(
                "nodeIp {node_ip} is not a host address of {address}/{prefix}"
            ));
        }
        let gateway = match net.gateway.as_deref().filter(|text| !text.is_empty()) {
            Some(text) => {
                let gateway = parse_ip("gateway", text)?;
                if !is_host(gateway) {
                    return Err(format!(
                        "gateway {gateway} is not a host address of {address}/{prefix}"
                    ));
                }
                Some(gateway)
            }
            None => None,
        };
        let mut members = BTreeMap::new();
        for (ip_text, node_text) in &net.nodes {
            let ip = parse_ip("node address", ip_text)?;
            if !is_host(ip) {
                return Err(format!(
                    "node address {ip} is not a host address of {address}/{prefix}"
                ));
            }
            let node: NodeId = node_text
                .parse()
                .map_err(|_| format!("node {node_text:?} (at {ip}) is not a node id"))?;
            if ip == node_ip || Some(node) == own_node {
                continue;
            }
            members.insert(ip, node);
        }
        Ok(VpnNetwork {
            id: net.id.clone(),
            address,
            prefix,
            node_ip,
            gateway,
            members,
        })
    }

    pub fn mask(&self) -> Ipv4Addr {
        mask_of_prefix(self.prefix)
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        contains(self.address, self.prefix, ip)
    }

    pub fn broadcast(&self) -> Ipv4Addr {
        broadcast(self.address, self.prefix)
    }
}

/// A host name as `/etc/hosts` and the engine take it: labels of letters,
/// digits and '-' (and '_', which clients use), dot-separated, ≤ 253 chars.
pub fn check_host_name(name: &str) -> Result<(), String> {
    let fine = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && label
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        });
    if fine {
        Ok(())
    } else {
        Err(format!("{name:?} is not a valid host name"))
    }
}

/// The payload's `/etc/hosts`: the loopback lines, this activity's own name
/// at its VPN address (or at 127.0.1.1 without a network), then `hosts`
/// (name -> IP) in name order. Names and addresses are checked so that no
/// entry can add lines of its own.
pub fn hosts_file(
    hosts: &BTreeMap<String, String>,
    hostname: Option<&str>,
    node_ip: Option<Ipv4Addr>,
) -> Result<String, String> {
    let mut text = String::from(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n\
         fe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\n\
         ff02::2\tip6-allrouters\n",
    );
    if let Some(hostname) = hostname {
        check_host_name(hostname)?;
        let ip = node_ip.unwrap_or(Ipv4Addr::new(127, 0, 1, 1));
        text.push_str(&format!("{ip}\t{hostname}\n"));
    }
    for (name, ip) in hosts {
        check_host_name(name)?;
        let ip: IpAddr = ip
            .trim()
            .parse()
            .map_err(|_| format!("hosts entry {name}: {ip:?} is not an IP address"))?;
        text.push_str(&format!("{ip}\t{name}\n"));
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const REQUESTOR: &str = "0x1111111111111111111111111111111111111111";
    const PROVIDER: &str = "0x2222222222222222222222222222222222222222";
    const OTHER: &str = "0x3333333333333333333333333333333333333333";

    fn net(ip: &str, mask: Option<&str>, node_ip: &str) -> DeployNetwork {
        DeployNetwork {
            id: "0123456789abcdef0123456789abcdef".into(),
            ip: ip.into(),
            mask: mask.map(str::to_string),
            gateway: None,
            node_ip: node_ip.into(),
            nodes: BTreeMap::from([
                ("192.168.0.1".to_string(), REQUESTOR.to_string()),
                ("192.168.0.2".to_string(), PROVIDER.to_string()),
                ("192.168.0.3".to_string(), OTHER.to_string()),
            ]),
        }
    }

    #[test]
    fn masks_and_prefixes() {
        assert_eq!(prefix_of_mask("255.255.255.0".parse().unwrap()), Ok(24));
        assert_eq!(prefix_of_mask("255.255.240.0".parse().unwrap()), Ok(20));
        assert_eq!(prefix_of_mask("255.255.255.255".parse().unwrap()), Ok(32));
        assert_eq!(prefix_of_mask("0.0.0.0".parse().unwrap()), Ok(0));
        assert!(prefix_of_mask("255.0.255.0".parse().unwrap()).is_err());
        assert!(prefix_of_mask("255.255.255.1".parse().unwrap()).is_err());
        for prefix in 0..=32 {
            assert_eq!(prefix_of_mask(mask_of_prefix(prefix)), Ok(prefix));
        }
        assert_eq!(mask_of_prefix(0), Ipv4Addr::new(0, 0, 0, 0));
        assert_eq!(mask_of_prefix(26), Ipv4Addr::new(255, 255, 255, 192));
        let address = Ipv4Addr::new(10, 1, 2, 0);
        assert!(contains(address, 24, Ipv4Addr::new(10, 1, 2, 200)));
        assert!(!contains(address, 24, Ipv4Addr::new(10, 1, 3, 1)));
        assert!(contains(address, 0, Ipv4Addr::new(8, 8, 8, 8)));
        assert_eq!(broadcast(address, 24), Ipv4Addr::new(10, 1, 2, 255));
        assert_eq!(broadcast(address, 23), Ipv4Addr::new(10, 1, 3, 255));
    }

    #[test]
    fn the_network_of_yapapis_deploy() {
        let own: NodeId = PROVIDER.parse().unwrap();
        let parsed = VpnNetwork::from_deploy(
            &[net("192.168.0.0", Some("255.255.255.0"), "192.168.0.2")],
            Some(own),
        )
        .unwrap()
        .unwrap();
        assert_eq!(parsed.address, Ipv4Addr::new(192, 168, 0, 0));
        assert_eq!(parsed.prefix, 24);
        assert_eq!(parsed.mask(), Ipv4Addr::new(255, 255, 255, 0));
        assert_eq!(parsed.node_ip, Ipv4Addr::new(192, 168, 0, 2));
        assert_eq!(parsed.gateway, None);
        // Our own entry is local, not a peer.
        assert_eq!(
            parsed.members.keys().copied().collect::<Vec<_>>(),
            vec![Ipv4Addr::new(192, 168, 0, 1), Ipv4Addr::new(192, 168, 0, 3)]
        );
        assert_eq!(
            parsed.members[&Ipv4Addr::new(192, 168, 0, 1)],
            REQUESTOR.parse().unwrap()
        );
    }

    #[test]
    fn prefixes_come_from_the_address_the_mask_or_the_default() {
        let with_prefix =
            VpnNetwork::from_deploy(&[net("192.168.0.7/16", None, "192.168.0.2")], None)
                .unwrap()
                .unwrap();
        assert_eq!(
            (with_prefix.address, with_prefix.prefix),
            (Ipv4Addr::new(192, 168, 0, 0), 16)
        );
        let default = VpnNetwork::from_deploy(&[net("192.168.0.0", None, "192.168.0.2")], None)
            .unwrap()
            .unwrap();
        assert_eq!(default.prefix, DEFAULT_PREFIX);
        let both = VpnNetwork::from_deploy(
            &[net("192.168.0.0/24", Some("255.255.0.0"), "192.168.0.2")],
            None,
        );
        assert!(both.unwrap_err().contains("disagree"));
    }

    #[test]
    fn bad_networks_are_refused_clearly() {
        let refuse = |net: DeployNetwork, needle: &str| {
            let error = VpnNetwork::from_deploy(&[net], None).unwrap_err();
            assert!(error.contains(needle), "{error:?} lacks {needle:?}");
        };
        refuse(
            net("192.168.0.0", Some("255.0.255.0"), "192.168.0.2"),
            "not a network mask",
        );
        refuse(
            net("192.168.0.0", Some("255.255.255.0"), "192.168.1.2"),
            "nodeIp",
        );
        refuse(
            net("192.168.0.0", Some("255.255.255.0"), "192.168.0.255"),
            "nodeIp",
        );
        refuse(
            net("192.168.0.0", Some("255.255.255.0"), "192.168.0.0"),
            "nodeIp",
        );
        refuse(
            net("192.168.0.0", Some("255.255.255.0"), "fe80::1"),
            "not an IPv4",
        );
        refuse(net("192.168.0.0/31", None, "192.168.0.1"), "too small");
        let mut bad_id = net("192.168.0.0", None, "192.168.0.2");
        bad_id.id = "../local/activity".into();
        refuse(bad_id, "network id");
        let mut bad_node = net("192.168.0.0", None, "192.168.0.2");
        bad_node.nodes.insert("192.168.0.9".into(), "bob".into());
        refuse(bad_node, "not a node id");
        let mut outside = net("192.168.0.0", None, "192.168.0.2");
        outside.nodes.insert("10.0.0.9".into(), OTHER.into());
        refuse(outside, "not a host address");
        let mut gateway = net("192.168.0.0", None, "192.168.0.2");
        gateway.gateway = Some("10.0.0.1".into());
        refuse(gateway, "gateway");
        let two = [
            net("192.168.0.0", None, "192.168.0.2"),
            net("192.168.1.0", None, "192.168.1.2"),
        ];
        let error = VpnNetwork::from_deploy(&two, None).unwrap_err();
        assert!(error.contains("lists 2 networks"), "{error}");
        assert_eq!(VpnNetwork::from_deploy(&[], None), Ok(None));
    }

    #[test]
    fn the_hosts_file_has_loopback_our_name_and_the_requested_hosts() {
        let hosts = BTreeMap::from([
            ("peer-b".to_string(), "192.168.0.3".to_string()),
            ("db.local".to_string(), "192.168.0.4".to_string()),
        ]);
        let text = hosts_file(&hosts, Some("node-a"), Some(Ipv4Addr::new(192, 168, 0, 2))).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "127.0.0.1\tlocalhost");
        assert!(lines.contains(&"192.168.0.2\tnode-a"), "{text}");
        assert!(
            text.ends_with("192.168.0.4\tdb.local\n192.168.0.3\tpeer-b\n"),
            "{text}"
        );
        // Without a network the own name is loopback's.
        let text = hosts_file(&BTreeMap::new(), Some("solo"), None).unwrap();
        assert!(text.contains("127.0.1.1\tsolo\n"), "{text}");
    }

    #[test]
    fn hosts_entries_cannot_inject_lines() {
        let inject = BTreeMap::from([("a\n1.2.3.4 evil".to_string(), "192.168.0.3".to_string())]);
        assert!(hosts_file(&inject, None, None).is_err());
        let bad_ip = BTreeMap::from([("a".to_string(), "192.168.0.3\n1.2.3.4 evil".to_string())]);
        assert!(hosts_file(&bad_ip, None, None).is_err());
        assert!(hosts_file(&BTreeMap::new(), Some("bad name"), None).is_err());
        assert!(hosts_file(&BTreeMap::new(), Some("-x"), None).is_err());
        let v6 = BTreeMap::from([("six".to_string(), "fd00::1".to_string())]);
        assert!(hosts_file(&v6, None, None)
            .unwrap()
            .ends_with("fd00::1\tsix\n"));
    }
}
