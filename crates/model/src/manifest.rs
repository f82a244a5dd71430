//! Payload manifests, as the original's requestors send them in a demand:
//! `golem.srv.comp.payload` (the manifest JSON in base64, raw JSON also
//! accepted), its optional signature (`.sig`, `.sig.algorithm`, `.cert`) and
//! the requestor's node descriptor. [`PayloadDemand::from_properties`] reads
//! them; [`AppManifest`] validates the parts this project uses (versions,
//! dates, `compManifest.net.inet.out`, the payload's image) and answers what
//! outbound access is requested ([`OutboundAccess`]) and to which
//! `(protocol, host, port)` targets ([`OutboundTarget`]).
//!
//! Pure data: no network, no files, no signature checks (the provider agent
//! verifies signatures; the VM unit resolves and enforces the targets).

use base64::Engine;
use chrono::{DateTime, FixedOffset};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::properties::Properties;

/// Demand property keys, as the original spells them.
pub mod keys {
    pub const PAYLOAD: &str = "golem.srv.comp.payload";
    pub const SIGNATURE: &str = "golem.srv.comp.payload.sig";
    pub const SIGNATURE_ALGORITHM: &str = "golem.srv.comp.payload.sig.algorithm";
    pub const CERTIFICATE: &str = "golem.srv.comp.payload.cert";
    pub const NODE_DESCRIPTOR: &str = "golem.!exp.gap-31.v0.node.descriptor";
    /// Offer: the provider checks payload manifests.
    pub const CAPS_PAYLOAD_MANIFEST: &str = "golem.srv.caps.payload-manifest";
    /// Offer: runtime capabilities (`inet`, `manifest-support`, ...).
    pub const RUNTIME_CAPABILITIES: &str = "golem.runtime.capabilities";
}

/// Runtime capability: containers get outbound internet limited to their manifest.
pub const INET_CAPABILITY: &str = "inet";
/// Runtime capability: the runtime reads payload manifests.
pub const MANIFEST_SUPPORT_CAPABILITY: &str = "manifest-support";
/// Protocols a manifest may name when it names none (the original's default).
pub const DEFAULT_PROTOCOLS: [&str; 4] = ["http", "https", "ws", "wss"];

/// Why a manifest or its demand properties cannot be used; the text follows
/// the original's `invalid manifest: …` rejection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    #[error("invalid manifest: {0}")]
    Invalid(String),
    #[error("invalid manifest signature properties: {0}")]
    Signature(String),
}

fn invalid(message: impl Into<String>) -> ManifestError {
    ManifestError::Invalid(message.into())
}

/// The manifest (the parts read here; other members are kept unread).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AppManifest {
    pub version: String,
    pub created_at: DateTime<FixedOffset>,
    /// Never checked, as on the original.
    pub expires_at: DateTime<FixedOffset>,
    #[serde(default)]
    pub metadata: Option<Value>,
    #[serde(default)]
    pub payload: Vec<PayloadEntry>,
    #[serde(default)]
    pub comp_manifest: Option<CompManifest>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PayloadEntry {
    #[serde(default)]
    pub platform: Option<Platform>,
    #[serde(default)]
    pub urls: Vec<String>,
    #[serde(default)]
    pub hash: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Platform {
    #[serde(default)]
    pub arch: Option<String>,
    #[serde(default)]
    pub os: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompManifest {
    pub version: String,
    #[serde(default)]
    pub script: Option<Value>,
    #[serde(default)]
    pub net: Option<Net>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Net {
    #[serde(default)]
    pub inet: Option<Inet>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Inet {
    #[serde(default)]
    pub out: Option<Value>,
}

/// What `compManifest.net.inet.out` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutboundAccess {
    /// These URLs (with their hosts and ports) only.
    Urls(Vec<String>),
    /// `"unrestricted": {"urls": true}`: anything.
    Unrestricted,
}

/// One `(protocol, host, port)` a manifest URL allows: TCP for every scheme
/// but `udp://`, the port from the URL or the scheme's default.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct OutboundTarget {
    pub transport: Transport,
    /// Lowercase host name or IP literal (IPv6 without brackets).
    pub host: String,
    pub port: u16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    Tcp,
    Udp,
}

impl Transport {
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::Udp => "udp",
        }
    }
}

fn check_version(what: &str, version: &str) -> Result<(), ManifestError> {
    semver::Version::parse(version)
        .map(|_| ())
        .map_err(|error| {
            invalid(format!(
                "{what} {version:?} is not a semantic version: {error}"
            ))
        })
}

impl AppManifest {
    /// Parse and validate manifest JSON text.
    pub fn parse(json: &str) -> Result<AppManifest, ManifestError> {
        let manifest: AppManifest =
            serde_json::from_str(json).map_err(|error| invalid(error.to_string()))?;
        check_version("version", &manifest.version)?;
        if let Some(comp) = &manifest.comp_manifest {
            check_version("compManifest.version", &comp.version)?;
        }
        manifest.outbound_access()?;
        for url in manifest.outbound_urls() {
            target_of(url)?;
        }
        Ok(manifest)
    }

    /// `compManifest.net.inet.out`, when present: it must hold `urls` or
    /// `"unrestricted": {"urls": true}`.
    pub fn outbound_access(&self) -> Result<Option<OutboundAccess>, ManifestError> {
        let Some(out) = self
            .comp_manifest
            .as_ref()
            .and_then(|comp| comp.net.as_ref())
            .and_then(|net| net.inet.as_ref())
            .and_then(|inet| inet.out.as_ref())
        else {
            return Ok(None);
        };
        let out = out
            .as_object()
            .ok_or_else(|| invalid("compManifest.net.inet.out must be an object"))?;
        if let Some(protocols) = out.get("protocols") {
            let listed = protocols
                .as_array()
                .is_some_and(|protocols| protocols.iter().all(|protocol| protocol.is_string()));
            if !listed {
                return Err(invalid(
                    "compManifest.net.inet.out.protocols must be a list of names",
                ));
            }
        }
        if let Some(urls) = out.get("urls") {
            let urls = urls
                .as_array()
                .and_then(|urls| {
                    urls.iter()
                        .map(|url| url.as_str().map(String::from))
                        .collect::<Option<Vec<String>>>()
                })
                .ok_or_else(|| invalid("compManifest.net.inet.out.urls must be a list of URLs"))?;
            return Ok(Some(OutboundAccess::Urls(urls)));
        }
        if out
            .get("unrestricted")
            .and_then(|unrestricted| unrestricted.get("urls"))
            .and_then(Value::as_bool)
            == Some(true)
        {
            return Ok(Some(OutboundAccess::Unrestricted));
        }
        Err(invalid(
            "compManifest.net.inet.out needs `urls` or `\"unrestricted\": {\"urls\": true}`",
        ))
    }

    /// Whether the manifest asks for outbound access at all (non-empty
    /// `urls`, or unrestricted).
    pub fn requests_outbound(&self) -> bool {
        match self.outbound_access() {
            Ok(Some(OutboundAccess::Urls(urls))) => !urls.is_empty(),
            Ok(Some(OutboundAccess::Unrestricted)) => true,
            _ => false,
        }
    }

    fn outbound_urls(&self) -> Vec<&str> {
        self.comp_manifest
            .as_ref()
            .and_then(|comp| comp.net.as_ref())
            .and_then(|net| net.inet.as_ref())
            .and_then(|inet| inet.out.as_ref())
            .and_then(|out| out.get("urls"))
            .and_then(Value::as_array)
            .map(|urls| urls.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default()
    }

    /// The `(transport, host, port)` targets of the manifest's URLs, sorted
    /// and without duplicates; empty when unrestricted or none.
    pub fn outbound_targets(&self) -> Result<Vec<OutboundTarget>, ManifestError> {
        let mut targets = self
            .outbound_urls()
            .into_iter()
            .map(target_of)
            .collect::<Result<Vec<_>, _>>()?;
        targets.sort();
        targets.dedup();
        Ok(targets)
    }

    /// The image the manifest names: its first payload entry for
    /// `x86_64`/`linux` (an absent platform or field matches) with URLs and
    /// a hash, as a task package `hash:<hash>:<url>`.
    pub fn task_package(&self) -> Option<String> {
        let fits = |wanted: &str, value: &Option<String>| {
            value
                .as_deref()
                .is_none_or(|value| value.eq_ignore_ascii_case(wanted))
        };
        self.payload
            .iter()
            .filter(|entry| {
                entry.platform.as_ref().is_none_or(|platform| {
                    fits("x86_64", &platform.arch) && fits("linux", &platform.os)
                })
            })
            .find_map(|entry| {
                let hash = entry.hash.as_deref()?;
                let url = entry.urls.first()?;
                Some(format!("hash:{hash}:{url}"))
            })
    }
}

/// The target of one manifest URL.
pub fn target_of(url: &str) -> Result<OutboundTarget, ManifestError> {
    let parsed =
        url::Url::parse(url).map_err(|error| invalid(format!("outbound URL {url:?}: {error}")))?;
    let host = match parsed.host() {
        Some(url::Host::Domain(name)) => name.to_ascii_lowercase(),
        Some(url::Host::Ipv4(ip)) => ip.to_string(),
        Some(url::Host::Ipv6(ip)) => ip.to_string(),
        None => return Err(invalid(format!("outbound URL {url:?} has no host"))),
    };
    let scheme = parsed.scheme();
    let transport = if scheme == "udp" {
        Transport::Udp
    } else {
        Transport::Tcp
    };
    // The URL's port, else the scheme's (http/ws 80, https/wss 443, ftp 21).
    let port = parsed.port_or_known_default().ok_or_else(|| {
        invalid(format!(
            "outbound URL {url:?} names no port and {scheme}:// has no default one"
        ))
    })?;
    Ok(OutboundTarget {
        transport,
        host,
        port,
    })
}

/// The manifest's signature as sent in the demand.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestSignature {
    /// `.sig`, decoded from base64.
    pub signature: Vec<u8>,
    /// `.sig.algorithm`, e.g. `sha256`.
    pub algorithm: String,
    /// `.cert`, decoded from base64: one DER certificate or a PEM chain.
    pub certificate: Vec<u8>,
}

/// What a demand says about its payload.
#[derive(Debug, Clone, PartialEq)]
pub struct PayloadDemand {
    /// `golem.srv.comp.payload` exactly as sent: signatures cover this text.
    pub manifest_text: String,
    pub manifest: AppManifest,
    pub signature: Option<ManifestSignature>,
    /// The node descriptor, rebuilt from its flattened keys.
    pub node_descriptor: Option<Value>,
}

fn decode_base64(text: &str) -> Option<Vec<u8>> {
    let compact: String = text.split_whitespace().collect();
    base64::engine::general_purpose::STANDARD
        .decode(compact.as_bytes())
        .ok()
}

/// The manifest JSON of `golem.srv.comp.payload`: base64 of JSON, or the
/// JSON itself (yapapi sends a `str` manifest raw).
pub fn decode_manifest_text(sent: &str) -> Result<String, ManifestError> {
    if sent.trim_start().starts_with('{') {
        return Ok(sent.to_string());
    }
    let bytes = decode_base64(sent).ok_or_else(|| invalid("neither base64 nor JSON"))?;
    String::from_utf8(bytes).map_err(|_| invalid("the decoded manifest is not UTF-8"))
}

/// Rebuild the nested object the market flattened into `prefix.*` keys.
fn unflatten(properties: &Properties, prefix: &str) -> Option<Value> {
    if let Some(value) = properties.get(prefix) {
        if value.is_object() || value.is_string() {
            return match value {
                Value::String(text) => serde_json::from_str(text).ok().or(Some(value.clone())),
                _ => Some(value.clone()),
            };
        }
    }
    let dotted = format!("{prefix}.");
    let mut root = Map::new();
    let mut found = false;
    for (key, value) in properties.iter() {
        let Some(rest) = key.strip_prefix(&dotted) else {
            continue;
        };
        found = true;
        let parts: Vec<&str> = rest.split('.').collect();
        let mut node = &mut root;
        for part in &parts[..parts.len() - 1] {
            let entry = node
                .entry(part.to_string())
                .or_insert_with(|| Value::Object(Map::new()));
            if !entry.is_object() {
                *entry = Value::Object(Map::new());
            }
            let Value::Object(next) = entry else {
                return None;
            };
            node = next;
        }
        node.insert(parts[parts.len() - 1].to_string(), value.clone());
    }
    found.then_some(Value::Object(root))
}

impl PayloadDemand {
    /// The payload of a demand: `Ok(None)` without `golem.srv.comp.payload`.
    pub fn from_properties(
        properties: &Properties,
    ) -> Result<Option<PayloadDemand>, ManifestError> {
        let Some(sent) = properties.get(keys::PAYLOAD) else {
            return Ok(None);
        };
        let manifest_text = sent
            .as_str()
            .ok_or_else(|| invalid(format!("{} must be a string", keys::PAYLOAD)))?
            .to_string();
        let manifest = AppManifest::parse(&decode_manifest_text(&manifest_text)?)?;
        let text = |key: &str| properties.get(key).and_then(Value::as_str);
        let signature = match text(keys::SIGNATURE) {
            None => None,
            Some(signature) => {
                let algorithm = text(keys::SIGNATURE_ALGORITHM).ok_or_else(|| {
                    ManifestError::Signature(format!(
                        "{} is set but {} is missing",
                        keys::SIGNATURE,
                        keys::SIGNATURE_ALGORITHM
                    ))
                })?;
                let certificate = text(keys::CERTIFICATE).ok_or_else(|| {
                    ManifestError::Signature(format!(
                        "{} is set but {} is missing",
                        keys::SIGNATURE,
                        keys::CERTIFICATE
                    ))
                })?;
                let signature = decode_base64(signature).ok_or_else(|| {
                    ManifestError::Signature(format!("{} is not base64", keys::SIGNATURE))
                })?;
                let certificate = if certificate.trim_start().starts_with("-----BEGIN") {
                    certificate.as_bytes().to_vec()
                } else {
                    decode_base64(certificate).ok_or_else(|| {
                        ManifestError::Signature(format!("{} is not base64", keys::CERTIFICATE))
                    })?
                };
                Some(ManifestSignature {
                    signature,
                    algorithm: algorithm.to_string(),
                    certificate,
                })
            }
        };
        Ok(Some(PayloadDemand {
            manifest_text,
            manifest,
            signature,
            node_descriptor: unflatten(properties, keys::NODE_DESCRIPTOR),
        }))
    }
}

/// Base64 of `text`, as requestors encode manifests.
pub fn encode_base64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    fn manifest(out: Value) -> Value {
        json!({"version": "0.1.0", "createdAt": "2024-01-01T00:00:00+02:00",
               "expiresAt": "2000-01-01T00:00:00Z",
               "payload": [
                   {"platform": {"arch": "aarch64", "os": "linux"}, "urls": ["http://a/arm"], "hash": "sha3:aa"},
                   {"platform": {"arch": "x86_64"}, "urls": ["http://img.test/a.gvmi", "http://b"], "hash": "sha3:bb"}],
               "compManifest": {"version": "0.1.0", "net": {"inet": {"out": out}}}})
    }

    fn demand(manifest: &Value, extra: Value) -> Properties {
        let mut properties = json!({
            keys::PAYLOAD: encode_base64(manifest.to_string().as_bytes()),
        });
        properties
            .as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        Properties::from_json(properties).unwrap()
    }

    #[test]
    fn a_manifest_gives_its_targets_and_image() {
        let manifest = manifest(json!({"protocols": ["http"],
            "urls": ["http://API.golem.test:8080/x", "https://api.golem.test", "udp://10.0.0.1:53", "http://api.golem.test:8080/y"]}));
        let payload = PayloadDemand::from_properties(&demand(&manifest, json!({})))
            .unwrap()
            .unwrap();
        assert!(payload.manifest.requests_outbound());
        assert_eq!(
            payload.manifest.task_package().as_deref(),
            Some("hash:sha3:bb:http://img.test/a.gvmi")
        );
        let targets = payload.manifest.outbound_targets().unwrap();
        let shown: Vec<String> = targets
            .iter()
            .map(|t| format!("{}/{}:{}", t.transport.as_str(), t.host, t.port))
            .collect();
        assert_eq!(
            shown,
            [
                "tcp/api.golem.test:443",
                "tcp/api.golem.test:8080",
                "udp/10.0.0.1:53"
            ]
        );
        assert!(payload.signature.is_none());
    }

    #[test]
    fn raw_json_and_unrestricted_are_read() {
        let manifest = manifest(json!({"unrestricted": {"urls": true}}));
        let properties =
            Properties::from_json(json!({keys::PAYLOAD: manifest.to_string()})).unwrap();
        let payload = PayloadDemand::from_properties(&properties)
            .unwrap()
            .unwrap();
        assert_eq!(
            payload.manifest.outbound_access().unwrap(),
            Some(OutboundAccess::Unrestricted)
        );
        assert!(payload.manifest.requests_outbound());
        assert!(payload.manifest.outbound_targets().unwrap().is_empty());
    }

    #[test]
    fn bad_manifests_are_invalid_with_a_reason() {
        let no_urls = manifest(json!({"protocols": ["https"]}));
        let error = PayloadDemand::from_properties(&demand(&no_urls, json!({}))).unwrap_err();
        assert!(
            error.to_string().starts_with("invalid manifest: "),
            "{error}"
        );
        assert!(error.to_string().contains("unrestricted"), "{error}");
        let mut bad_version = manifest(json!({"urls": []}));
        bad_version["version"] = json!("one");
        let error = PayloadDemand::from_properties(&demand(&bad_version, json!({}))).unwrap_err();
        assert!(error.to_string().contains("semantic version"), "{error}");
        let mut bad_date = manifest(json!({"urls": []}));
        bad_date["createdAt"] = json!("yesterday");
        assert!(PayloadDemand::from_properties(&demand(&bad_date, json!({}))).is_err());
        let no_port = manifest(json!({"urls": ["gopher://x"]}));
        let error = PayloadDemand::from_properties(&demand(&no_port, json!({}))).unwrap_err();
        assert!(error.to_string().contains("no default"), "{error}");
        let garbage = Properties::from_json(json!({keys::PAYLOAD: "%%%"})).unwrap();
        assert!(PayloadDemand::from_properties(&garbage).is_err());
        // No outbound asked: fine, and not requested.
        let empty = manifest(json!({"urls": []}));
        let payload = PayloadDemand::from_properties(&demand(&empty, json!({})))
            .unwrap()
            .unwrap();
        assert!(!payload.manifest.requests_outbound());
    }

    #[test]
    fn a_signature_needs_its_algorithm_and_certificate() {
        let manifest = manifest(json!({"urls": ["http://a"]}));
        let error =
            PayloadDemand::from_properties(&demand(&manifest, json!({keys::SIGNATURE: "AAAA"})))
                .unwrap_err();
        assert!(
            error.to_string().contains(keys::SIGNATURE_ALGORITHM),
            "{error}"
        );
        let payload = PayloadDemand::from_properties(&demand(
            &manifest,
            json!({keys::SIGNATURE: "AAEC", keys::SIGNATURE_ALGORITHM: "sha256",
                   keys::CERTIFICATE: "-----BEGIN CERTIFICATE-----\n"}),
        ))
        .unwrap()
        .unwrap();
        let signature = payload.signature.unwrap();
        assert_eq!(signature.signature, vec![0, 1, 2]);
        assert!(signature.certificate.starts_with(b"-----BEGIN"));
    }

    #[test]
    fn the_node_descriptor_is_rebuilt_from_flat_keys() {
        let manifest = manifest(json!({"urls": ["http://a"]}));
        let properties = demand(
            &manifest,
            json!({keys::NODE_DESCRIPTOR: {"nodeDescriptor": {"nodeId": "0xab", "permissions": "all"},
                                          "signature": {"algorithm": {"hash": "sha512"}}}}),
        );
        let payload = PayloadDemand::from_properties(&properties)
            .unwrap()
            .unwrap();
        assert_eq!(
            payload.node_descriptor.unwrap(),
            json!({"nodeDescriptor": {"nodeId": "0xab", "permissions": "all"},
                   "signature": {"algorithm": {"hash": "sha512"}}})
        );
    }
}
