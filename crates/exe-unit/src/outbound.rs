//! Where the exe unit's own HTTP requests (`transfer` to and from `http(s)://`,
//! task-package downloads) may go. They run on the provider's host network,
//! not in the payload's sandbox, so by default they reach only public
//! addresses: loopback, private (RFC 1918, fc00::/7, CGNAT 100.64/10),
//! link-local (169.254/16, fe80::/10, cloud metadata included), unspecified,
//! multicast, broadcast and reserved addresses, and IPv6 forms that embed one
//! of those (IPv4-mapped/compatible, NAT64, 6to4), are refused. The check runs
//! on IP-literal hosts of the URL and of every redirect, and on every address a
//! name resolves to (a filtering [`reqwest::dns::Resolve`]), so neither a
//! redirect nor a name that resolves to 127.0.0.1 gets around it. The provider
//! lifts it with `allow-private-transfers` (the exe unit's
//! `--allow-private-transfers`), e.g. on a loopback test network.
//!
//! It must never let a request leave without the filter: every client the
//! exe unit uses for requestor-chosen URLs comes from [`OutboundPolicy::client`].

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::Url;

/// The setting that lifts the address filter, as the provider names it.
pub const ALLOW_PRIVATE_SETTING: &str =
    "allow-private-transfers (--allow-private-transfers / GOLEM_ALLOW_PRIVATE_TRANSFERS)";

/// At most this many redirects are followed.
const MAX_REDIRECTS: usize = 10;

/// A request the policy refused; the message names the address kind and the
/// setting that would allow it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("{host} is {kind}, which the provider does not let transfers reach; it allows that only with {ALLOW_PRIVATE_SETTING}")]
    Address { host: String, kind: &'static str },
    #[error("{url} is not an http(s) URL")]
    Scheme { url: String },
    #[error("{url} has no host")]
    NoHost { url: String },
    #[error("more than {MAX_REDIRECTS} redirects")]
    TooManyRedirects,
}

/// Why `ip` is not a public address, or `None` when it is.
pub fn non_public_kind(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(ip) => non_public_v4(ip),
        IpAddr::V6(ip) => non_public_v6(ip),
    }
}

fn non_public_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    Some(match () {
        _ if ip == Ipv4Addr::new(169, 254, 169, 254) => "the cloud metadata address",
        _ if a == 0 => "an unspecified (0.0.0.0/8) address",
        _ if a == 127 => "a loopback address",
        _ if a == 10 || (a == 172 && (16..32).contains(&b)) || (a == 192 && b == 168) => {
            "a private (RFC 1918) address"
        }
        _ if a == 100 && (64..128).contains(&b) => "a shared (CGNAT 100.64.0.0/10) address",
        _ if a == 169 && b == 254 => "a link-local address",
        _ if a == 192 && b == 0 && c == 0 => "an IETF protocol (192.0.0.0/24) address",
        _ if a == 198 && (18..20).contains(&b) => "a benchmarking (198.18.0.0/15) address",
        _ if ip.is_broadcast() => "the broadcast address",
        _ if (224..240).contains(&a) => "a multicast address",
        _ if a >= 240 => "a reserved (240.0.0.0/4) address",
        _ => return None,
    })
}

fn non_public_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let segments = ip.segments();
    if let Some(v4) = ip.to_ipv4_mapped() {
        return non_public_v4(v4);
    }
    Some(match segments {
        _ if ip == Ipv6Addr::new(0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x0254) => {
            "the cloud metadata address"
        }
        _ if ip.is_unspecified() => "the unspecified address",
        _ if ip.is_loopback() => "a loopback address",
        // ::a.b.c.d (IPv4-compatible, deprecated): judge the embedded address.
        [0, 0, 0, 0, 0, 0, high, low] => {
            return non_public_v4(embedded_v4(high, low)).or(Some("an IPv4-compatible address"))
        }
        // NAT64 (64:ff9b::/96) reaches the embedded IPv4 address.
        [0x64, 0xff9b, 0, 0, 0, 0, high, low] => return non_public_v4(embedded_v4(high, low)),
        // 6to4 (2002::/16) embeds an IPv4 address in segments 1 and 2.
        [0x2002, high, low, ..] => return non_public_v4(embedded_v4(high, low)),
        [first, ..] if first & 0xfe00 == 0xfc00 => "a unique local (fc00::/7) address",
        [first, ..] if first & 0xffc0 == 0xfe80 => "a link-local address",
        [first, ..] if first & 0xffc0 == 0xfec0 => "a site-local address",
        [first, ..] if first & 0xff00 == 0xff00 => "a multicast address",
        _ => return None,
    })
}

fn embedded_v4(high: u16, low: u16) -> Ipv4Addr {
    let [a, b] = high.to_be_bytes();
    let [c, d] = low.to_be_bytes();
    Ipv4Addr::new(a, b, c, d)
}

/// What the exe unit's outbound HTTP may reach.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutboundPolicy {
    /// Let requests reach non-public addresses (the provider's
    /// `allow-private-transfers`); off by default.
    pub allow_private_addresses: bool,
    /// Names resolved to fixed addresses without the filter. Only code sets
    /// this (tests that need a "public" first hop on loopback); no flag does.
    pub unfiltered_hosts: Vec<(String, SocketAddr)>,
}

impl OutboundPolicy {
    /// Public addresses only (the default).
    pub fn public_only() -> OutboundPolicy {
        OutboundPolicy::default()
    }

    /// Any address, for a provider that allowed private transfers.
    pub fn allow_private() -> OutboundPolicy {
        OutboundPolicy {
            allow_private_addresses: true,
            ..OutboundPolicy::default()
        }
    }

    /// Refuse `ip` unless the policy allows non-public addresses.
    pub fn check_ip(&self, host: &str, ip: IpAddr) -> Result<(), Refused> {
        if self.allow_private_addresses {
            return Ok(());
        }
        match non_public_kind(ip) {
            Some(kind) => Err(Refused::Address {
                host: host.to_string(),
                kind,
            }),
            None => Ok(()),
        }
    }

    /// Check a URL before it is requested (or followed as a redirect): an
    /// http(s) scheme, a host, and an IP-literal host must be allowed. Names
    /// are checked when they resolve.
    pub fn check_url(&self, url: &Url) -> Result<(), Refused> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(Refused::Scheme {
                url: url.to_string(),
            });
        }
        let host = url
            .host_str()
            .filter(|host| !host.is_empty())
            .ok_or_else(|| Refused::NoHost {
                url: url.to_string(),
            })?;
        // The URL parser has normalised IP literals (`2130706433`, `0x7f.1`
        // are 127.0.0.1 by now); IPv6 ones keep their brackets.
        let literal = host.trim_start_matches('[').trim_end_matches(']');
        match literal.parse::<IpAddr>() {
            Ok(ip) => self.check_ip(host, ip),
            Err(_) => Ok(()),
        }
    }

    /// An HTTP client whose every connection, redirect included, obeys the policy.
    pub fn client(&self) -> Result<reqwest::Client, reqwest::Error> {
        let redirect_policy = self.clone();
        let mut builder = reqwest::Client::builder()
            // A proxy from the environment would resolve and connect for us.
            .no_proxy()
            .redirect(reqwest::redirect::Policy::custom(move |attempt| {
                if attempt.previous().len() >= MAX_REDIRECTS {
                    return attempt.error(Refused::TooManyRedirects);
                }
                match redirect_policy.check_url(attempt.url()) {
                    Ok(()) => attempt.follow(),
                    Err(refused) => attempt.error(refused),
                }
            }));
        if !self.allow_private_addresses {
            builder = builder.dns_resolver(Arc::new(FilteringResolver {
                policy: self.clone(),
            }));
        }
        for (host, address) in &self.unfiltered_hosts {
            builder = builder.resolve(host, *address);
        }
        builder.build()
    }
}

/// Resolves names with the system resolver and drops every address the policy
/// refuses; a name left without addresses fails with [`Refused`].
struct FilteringResolver {
    policy: OutboundPolicy,
}

impl Resolve for FilteringResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy.clone();
        Box::pin(async move {
            let host = name.as_str().to_string();
            let resolved: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let mut first_refusal = None;
            let allowed: Vec<SocketAddr> = resolved
                .into_iter()
                .filter(|address| match policy.check_ip(&host, address.ip()) {
                    Ok(()) => true,
                    Err(refused) => {
                        first_refusal.get_or_insert(refused);
                        false
                    }
                })
                .collect();
            if allowed.is_empty() {
                if let Some(refused) = first_refusal {
                    tracing::info!(%host, %refused, "outbound request refused");
                    return Err(Box::new(refused) as Box<dyn std::error::Error + Send + Sync>);
                }
            }
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
    }
}

/// The policy's refusal in a reqwest error's chain, if the request failed
/// because of one (a filtered name, a refused redirect).
pub fn refusal(error: &reqwest::Error) -> Option<Refused> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(current) = source {
        if let Some(refused) = current.downcast_ref::<Refused>() {
            return Some(refused.clone());
        }
        source = current.source();
    }
    None
}

/// A reqwest error as one line: a refusal of the policy alone when there is
/// one in its chain, else the error and its causes.
pub fn describe(error: &reqwest::Error) -> String {
    if let Some(refused) = refusal(error) {
        return refused.to_string();
    }
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    let mut parts = Vec::new();
    while let Some(current) = source {
        let text = current.to_string();
        if !parts.iter().any(|part: &String| part.contains(&text)) {
            parts.push(text);
        }
        source = current.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn refuses_non_public_addresses_in_every_form() {
        for text in [
            "127.0.0.1",
            "127.1.2.3",
            "0.0.0.0",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "100.64.0.1",
            "100.127.255.255",
            "169.254.169.254",
            "169.254.1.1",
            "224.0.0.1",
            "255.255.255.255",
            "240.0.0.1",
            "::",
            "::1",
            "fc00::1",
            "fd00:ec2::254",
            "fe80::1",
            "fec0::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::ffff:169.254.169.254",
            "::127.0.0.1",
            "64:ff9b::7f00:1",
            "2002:7f00:1::",
            "2002:a9fe:a9fe::1",
        ] {
            let ip: IpAddr = text.parse().unwrap();
            assert!(non_public_kind(ip).is_some(), "{text} must be refused");
        }
        assert_eq!(
            non_public_kind("169.254.169.254".parse().unwrap()),
            Some("the cloud metadata address")
        );
        assert_eq!(
            non_public_kind("fd00:ec2::254".parse().unwrap()),
            Some("the cloud metadata address")
        );
        for text in [
            "1.1.1.1",
            "8.8.8.8",
            "172.32.0.1",
            "100.128.0.1",
            "2001:4860:4860::8888",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
        ] {
            let ip: IpAddr = text.parse().unwrap();
            assert_eq!(non_public_kind(ip), None, "{text} is public");
        }
    }

    #[test]
    fn checks_literal_hosts_and_schemes() {
        let policy = OutboundPolicy::public_only();
        for url in [
            "http://127.0.0.1:7465/version/get",
            "http://[::1]/x",
            "http://[::ffff:7f00:1]/x",
            "http://2130706433/x",
            "http://0x7f.1/x",
            "https://169.254.169.254/latest/meta-data/",
        ] {
            let error = policy.check_url(&Url::parse(url).unwrap()).unwrap_err();
            assert!(
                error.to_string().contains("allow-private-transfers"),
                "{url}: {error}"
            );
        }
        assert!(policy
            .check_url(&Url::parse("file:///etc/passwd").unwrap())
            .is_err());
        assert!(policy
            .check_url(&Url::parse("http://example.com/x").unwrap())
            .is_ok());
        assert!(OutboundPolicy::allow_private()
            .check_url(&Url::parse("http://127.0.0.1/x").unwrap())
            .is_ok());
    }

    #[tokio::test]
    async fn names_resolving_to_loopback_are_refused() {
        let client = OutboundPolicy::public_only().client().unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let error = client
            .get(format!("http://localhost:{port}/"))
            .send()
            .await
            .unwrap_err();
        let message = describe(&error);
        assert!(message.contains("loopback"), "{message}");
        assert!(message.contains("allow-private-transfers"), "{message}");
    }
}
