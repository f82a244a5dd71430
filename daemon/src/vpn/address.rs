//! What a client may say about addresses: the network of `POST /net` (an
//! IPv4 address with an optional prefix, a dotted mask, a gateway), member and
//! requestor addresses, node ids and ports. Every refusal is a 400 whose
//! message names the field it is about. Pure functions, no IO.

use std::net::Ipv4Addr;

use golem_model::vpn::NewNetwork;
use golem_model::{GolemError, NodeId};

/// The prefix when neither `ip` nor `mask` gives one (as the original).
const DEFAULT_PREFIX: u8 = 24;
/// The longest prefix that still leaves two hosts.
const MAX_PREFIX: u8 = 30;

/// An IPv4 network: its address (host bits cleared) and prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subnet {
    pub address: Ipv4Addr,
    pub prefix: u8,
}

impl Subnet {
    pub fn new(address: Ipv4Addr, prefix: u8) -> Subnet {
        let mask = mask_bits(prefix);
        Subnet {
            address: Ipv4Addr::from(u32::from(address) & mask),
            prefix,
        }
    }

    pub fn mask(&self) -> Ipv4Addr {
        Ipv4Addr::from(mask_bits(self.prefix))
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & mask_bits(self.prefix) == u32::from(self.address)
    }

    fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.address) | !mask_bits(self.prefix))
    }

    /// An address a node may have: inside, neither the network's nor its broadcast address.
    pub fn is_host(&self, ip: Ipv4Addr) -> bool {
        self.contains(ip) && ip != self.address && ip != self.broadcast()
    }

    pub fn first_host(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.address) + 1)
    }
}

impl std::fmt::Display for Subnet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.address, self.prefix)
    }
}

fn mask_bits(prefix: u8) -> u32 {
    match prefix {
        0 => 0,
        prefix => u32::MAX << (32 - u32::from(prefix.min(32))),
    }
}

/// `text` as an error message quotes it: at most 50 characters.
fn quoted(text: &str) -> String {
    let shown: String = text.chars().take(50).collect();
    if shown.len() < text.len() {
        format!("{shown:?}…")
    } else {
        format!("{shown:?}")
    }
}

fn field_error(field: &str, message: impl std::fmt::Display) -> GolemError {
    GolemError::bad_request(format!("invalid {field}: {message}"))
}

/// An IPv4 address given in field `field`.
pub fn parse_ipv4(field: &str, text: &str) -> Result<Ipv4Addr, GolemError> {
    let text = text.trim();
    if text.parse::<std::net::Ipv6Addr>().is_ok() {
        return Err(field_error(
            field,
            format!("{} is IPv6; only IPv4 networks are supported", quoted(text)),
        ));
    }
    text.parse::<Ipv4Addr>().map_err(|_| {
        field_error(
            field,
            format!(
                "{} is not an IPv4 address such as 192.168.0.2",
                quoted(text)
            ),
        )
    })
}

/// The prefix length of a dotted mask; refuses masks with holes.
fn parse_mask(text: &str) -> Result<u8, GolemError> {
    let mask = u32::from(parse_ipv4("mask", text)?);
    let prefix = mask.leading_ones() as u8;
    if mask_bits(prefix) != mask {
        return Err(field_error(
            "mask",
            format!(
                "{} is not a contiguous network mask such as 255.255.255.0",
                quoted(text)
            ),
        ));
    }
    Ok(prefix)
}

/// The network and gateway of a `POST /net` body: `ip` may carry a prefix,
/// `mask` (when present) must agree with it, `gateway` defaults to the first host.
pub fn parse_new_network(request: &NewNetwork) -> Result<(Subnet, Ipv4Addr), GolemError> {
    let (ip_text, ip_prefix) = match request.ip.split_once('/') {
        Some((address, prefix)) => {
            let prefix = prefix.trim().parse::<u8>().map_err(|_| {
                field_error(
                    "ip",
                    format!("{} has no prefix length after '/'", quoted(&request.ip)),
                )
            })?;
            (address, Some(prefix))
        }
        None => (request.ip.as_str(), None),
    };
    let address = parse_ipv4("ip", ip_text)?;
    let mask_prefix = request
        .mask
        .as_deref()
        .filter(|mask| !mask.trim().is_empty())
        .map(parse_mask)
        .transpose()?;
    let prefix = match (ip_prefix, mask_prefix) {
        (Some(from_ip), Some(from_mask)) if from_ip != from_mask => {
            return Err(field_error(
                "mask",
                format!(
                    "{} (/{from_mask}) disagrees with the prefix of ip {}",
                    quoted(request.mask.as_deref().unwrap_or_default()),
                    quoted(&request.ip)
                ),
            ))
        }
        (Some(prefix), _) | (None, Some(prefix)) => prefix,
        (None, None) => DEFAULT_PREFIX,
    };
    if prefix == 0 || prefix > MAX_PREFIX {
        let field = if mask_prefix.is_some() { "mask" } else { "ip" };
        return Err(field_error(
            field,
            format!("a prefix of /{prefix} leaves no room for hosts; use /1 to /{MAX_PREFIX}"),
        ));
    }
    let subnet = Subnet::new(address, prefix);
    let gateway = match request
        .gateway
        .as_deref()
        .filter(|gateway| !gateway.trim().is_empty())
    {
        Some(text) => host_in("gateway", text, &subnet)?,
        None => subnet.first_host(),
    };
    Ok((subnet, gateway))
}

/// An address of a node of `subnet`, given in field `field`.
pub fn host_in(field: &str, text: &str, subnet: &Subnet) -> Result<Ipv4Addr, GolemError> {
    let ip = parse_ipv4(field, text)?;
    if !subnet.contains(ip) {
        return Err(field_error(
            field,
            format!("{ip} is outside the network {subnet}"),
        ));
    }
    if !subnet.is_host(ip) {
        return Err(field_error(
            field,
            format!("{ip} is the network or broadcast address of {subnet}"),
        ));
    }
    Ok(ip)
}

/// A NodeId given in field `field`.
pub fn parse_node_id(field: &str, text: &str) -> Result<NodeId, GolemError> {
    text.trim().parse::<NodeId>().map_err(|_| {
        field_error(
            field,
            format!("{} is not a node id (0x and 40 hex digits)", quoted(text)),
        )
    })
}

/// A TCP port of the WebSocket path.
pub fn parse_port(text: &str) -> Result<u16, GolemError> {
    match text.parse::<u16>() {
        Ok(port) if port > 0 => Ok(port),
        _ => Err(field_error(
            "port",
            format!("{} is not a TCP port (1 to 65535)", quoted(text)),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new_network(ip: &str, mask: Option<&str>, gateway: Option<&str>) -> NewNetwork {
        NewNetwork {
            ip: ip.into(),
            mask: mask.map(Into::into),
            gateway: gateway.map(Into::into),
        }
    }

    fn message(result: Result<(Subnet, Ipv4Addr), GolemError>) -> String {
        match result {
            Ok(parsed) => panic!("accepted: {parsed:?}"),
            Err(error) => {
                assert_eq!(error.code, golem_model::ErrorCode::BadRequest);
                error.message
            }
        }
    }

    #[test]
    fn a_network_defaults_to_a_24_with_the_first_host_as_gateway() {
        let (subnet, gateway) =
            parse_new_network(&new_network("192.168.0.0", None, None)).expect("valid");
        assert_eq!(subnet.to_string(), "192.168.0.0/24");
        assert_eq!(subnet.mask(), Ipv4Addr::new(255, 255, 255, 0));
        assert_eq!(gateway, Ipv4Addr::new(192, 168, 0, 1));
    }

    #[test]
    fn the_prefix_comes_from_ip_or_mask_and_host_bits_are_cleared() {
        let (subnet, gateway) =
            parse_new_network(&new_network("10.1.2.3/16", None, None)).expect("valid");
        assert_eq!(subnet.to_string(), "10.1.0.0/16");
        assert_eq!(gateway, Ipv4Addr::new(10, 1, 0, 1));
        let (subnet, _) = parse_new_network(&new_network(
            "172.16.0.0",
            Some("255.255.240.0"),
            Some("172.16.15.254"),
        ))
        .expect("valid");
        assert_eq!(subnet.to_string(), "172.16.0.0/20");
        let (subnet, _) =
            parse_new_network(&new_network("10.0.0.0/8", Some("255.0.0.0"), Some("")))
                .expect("agreeing mask");
        assert_eq!(subnet.prefix, 8);
    }

    #[test]
    fn bad_addresses_and_masks_name_their_field() {
        let cases = [
            (new_network("192.168.0", None, None), "invalid ip"),
            (new_network("fe80::1", None, None), "invalid ip"),
            (new_network("192.168.0.0/x", None, None), "invalid ip"),
            (new_network("192.168.0.0/31", None, None), "invalid ip"),
            (
                new_network("192.168.0.0", Some("255.0.255.0"), None),
                "invalid mask",
            ),
            (
                new_network("192.168.0.0", Some("255.255.255.255"), None),
                "invalid mask",
            ),
            (
                new_network("192.168.0.0/24", Some("255.255.0.0"), None),
                "invalid mask",
            ),
            (
                new_network("192.168.0.0", None, Some("10.0.0.1")),
                "invalid gateway",
            ),
            (
                new_network("192.168.0.0", None, Some("192.168.0.255")),
                "invalid gateway",
            ),
        ];
        for (request, expected) in cases {
            let text = message(parse_new_network(&request));
            assert!(text.starts_with(expected), "{request:?}: {text}");
        }
    }

    #[test]
    fn member_addresses_must_be_hosts_of_the_network() {
        let subnet = Subnet::new(Ipv4Addr::new(192, 168, 0, 0), 24);
        assert_eq!(
            host_in("ip", "192.168.0.2", &subnet).expect("host"),
            Ipv4Addr::new(192, 168, 0, 2)
        );
        for (text, expected) in [
            ("192.168.1.2", "outside the network 192.168.0.0/24"),
            ("192.168.0.0", "network or broadcast"),
            ("192.168.0.255", "network or broadcast"),
            ("banana", "not an IPv4 address"),
        ] {
            let error = host_in("ip", text, &subnet).expect_err(text);
            assert!(
                error.message.starts_with("invalid ip") && error.message.contains(expected),
                "{text}: {}",
                error.message
            );
        }
    }

    #[test]
    fn node_ids_and_ports_are_checked() {
        assert!(parse_node_id("id", "0x1111111111111111111111111111111111111111").is_ok());
        let error = parse_node_id("id", "0x12").expect_err("short");
        assert!(error.message.starts_with("invalid id"), "{}", error.message);
        assert_eq!(parse_port("22").expect("port"), 22);
        for text in ["0", "65536", "-1", "ssh"] {
            let error = parse_port(text).expect_err(text);
            assert!(
                error.message.starts_with("invalid port"),
                "{}",
                error.message
            );
        }
    }
}
