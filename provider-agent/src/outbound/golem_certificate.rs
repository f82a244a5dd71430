//! Golem certificates and node descriptors (the original's
//! `golem-certificate` formats), for the `partner` rule: parsing and
//! verification only, never signing (tests mint theirs in `test_ca`).
//!
//! A signed certificate is `{"$schema": CERTIFICATE_SCHEMA, "certificate":
//! {...}, "signature": {"algorithm": {"hash", "encryption"}, "value": hex,
//! "signer": "self" | <signed certificate>}}`; a signed node descriptor is
//! the same shape around `"nodeDescriptor": {"nodeId", "permissions",
//! "validityPeriod"}` whose signer is a signed certificate. Each signature
//! is Ed25519 (its SHA-512 inside) over the canonical JSON (JCS) of the
//! signed member (`EdDSAOpenPGP`: over that text's SHA-512 digest, as
//! OpenPGP smart cards sign). Along the chain each child must stay within
//! its signer: validity period nested, permissions (`all`, or `outbound`
//! `unrestricted` or a URL set) narrowing, key usage a subset and the
//! signer holding `signCertificate`; the descriptor's signer needs
//! `signNode`, and only the descriptor's own period is checked against the
//! clock. A certificate's id (fingerprint) is the SHA-512 hex of the JCS of
//! its `certificate` member. Error texts are the original's.

use std::collections::BTreeSet;
use std::fmt;

use chrono::{DateTime, Utc};
use golem_model::identity::NodeId;
use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha512};

use super::canonical_json::to_canonical_bytes;

pub const CERTIFICATE_SCHEMA: &str = "https://schemas.golem.network/v1/certificate.schema.json";
pub const NODE_DESCRIPTOR_SCHEMA: &str =
    "https://schemas.golem.network/v1/node-descriptor.schema.json";

/// Why a certificate or node descriptor is not valid (the original's texts).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GolemCertificateError {
    #[error("Expired: was valid to {0}")]
    Expired(DateTime<Utc>),
    #[error("Not valid yet: will be valid from {0}")]
    NotValidYet(DateTime<Utc>),
    #[error("Validity period extended: {parent:?}, {child:?}")]
    ValidityPeriodExtended {
        parent: ValidityPeriod,
        child: ValidityPeriod,
    },
    #[error("Permissions extended: {parent:?}, {child:?}")]
    PermissionsExtended {
        parent: Permissions,
        child: Permissions,
    },
    #[error("Key usage extended: {parent:?}, {child:?}")]
    KeyUsageExtended { parent: KeyUsage, child: KeyUsage },
    #[error("Certificate signing not permitted")]
    CertSignNotPermitted,
    #[error("Certificate cannot sign Node Descriptor")]
    NodeSignNotPermitted,
    #[error("Invalid signature")]
    InvalidSignature,
    #[error("Invalid signature value (cannot deserialize)")]
    InvalidSignatureValue,
    #[error("Invalid public key")]
    InvalidPublicKey,
    #[error("Invalid json: {0}")]
    InvalidJson(String),
    #[error("JCS serialization error: {0}")]
    JcsSerializationError(String),
    #[error("Json does not conform to schema: {0}")]
    JsonDoesNotConformToSchema(String),
    #[error("Unsupported schema for structure {structure_name}: {schema}")]
    UnsupportedSchema {
        schema: String,
        structure_name: String,
    },
}

type Result<T> = std::result::Result<T, GolemCertificateError>;

fn not_conforming(error: impl fmt::Display) -> GolemCertificateError {
    GolemCertificateError::JsonDoesNotConformToSchema(error.to_string())
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ValidityPeriod {
    pub not_before: DateTime<Utc>,
    pub not_after: DateTime<Utc>,
}

/// What a certificate's key may sign.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Usage {
    SignCertificate,
    SignManifest,
    SignNode,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyUsage {
    All,
    Limited(BTreeSet<Usage>),
}

/// `outbound` of a certificate's or descriptor's permissions.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "OutboundPermissionsText")]
pub enum OutboundPermissions {
    Unrestricted,
    Urls(BTreeSet<url::Url>),
}

/// [`OutboundPermissions`] as written, before its URLs are parsed.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
enum OutboundPermissionsText {
    Unrestricted,
    Urls(Vec<String>),
}

impl TryFrom<OutboundPermissionsText> for OutboundPermissions {
    type Error = String;

    fn try_from(text: OutboundPermissionsText) -> std::result::Result<Self, String> {
        match text {
            OutboundPermissionsText::Unrestricted => Ok(OutboundPermissions::Unrestricted),
            OutboundPermissionsText::Urls(urls) => urls
                .iter()
                .map(|url| url::Url::parse(url).map_err(|error| format!("URL {url:?}: {error}")))
                .collect::<std::result::Result<BTreeSet<_>, _>>()
                .map(OutboundPermissions::Urls),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct PermissionDetails {
    #[serde(default)]
    pub outbound: Option<OutboundPermissions>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Permissions {
    All,
    Object(PermissionDetails),
}

/// `"all"` or the other form.
fn all_or<'de, D, T, F>(deserializer: D, all: T, other: F) -> std::result::Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    F: FnOnce(Value) -> std::result::Result<T, serde_json::Error>,
{
    let value = Value::deserialize(deserializer)?;
    match value {
        Value::String(text) if text == "all" => Ok(all),
        Value::String(text) => Err(serde::de::Error::custom(format!(
            "unknown value {text:?}, expected \"all\""
        ))),
        other_value => other(other_value).map_err(serde::de::Error::custom),
    }
}

impl<'de> Deserialize<'de> for KeyUsage {
    fn deserialize<D: serde::Deserializer<'de>>(
        deserializer: D,
    ) -> std::result::Result<Self, D::Error> {
        all_or(deserializer, KeyUsage::All, |value| {
            serde_json::from_value(value).map(KeyUsage::Limited)
        })
    }
}

impl<'de> Deserialize<'de> for Permissions {
    fn deserialize<D: serde::Deserializer<'de>>(
        deserializer: D,
    ) -> std::result::Result<Self, D::Error> {
        all_or(deserializer, Permissions::All, |value| {
            serde_json::from_value(value).map(Permissions::Object)
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum Encryption {
    EdDSA,
    EdDSAOpenPGP,
}

#[derive(Debug, Clone, Deserialize)]
pub struct PublicKey {
    pub algorithm: Encryption,
    pub key: String,
    #[serde(default)]
    pub parameters: Option<Value>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Subject {
    pub display_name: String,
    pub contact: Contact,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Contact {
    pub email: String,
}

/// The `certificate` member of a signed certificate.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CertificateBody {
    key_usage: KeyUsage,
    permissions: Permissions,
    public_key: PublicKey,
    subject: Subject,
    validity_period: ValidityPeriod,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct NodeDescriptorBody {
    node_id: NodeId,
    permissions: Permissions,
    validity_period: ValidityPeriod,
}

#[derive(Debug, Clone, Deserialize)]
struct SignatureAlgorithm {
    #[allow(dead_code)] // named by the format; Ed25519 fixes its own digest
    hash: String,
    encryption: Encryption,
}

#[derive(Debug, Clone, Deserialize)]
struct Signature<S> {
    algorithm: SignatureAlgorithm,
    value: String,
    signer: S,
}

#[derive(Debug, Clone)]
enum Signer {
    SelfSigned,
    Certificate(Box<SignedCertificate>),
}

impl<'de> Deserialize<'de> for Signer {
    fn deserialize<D: serde::Deserializer<'de>>(
        deserializer: D,
    ) -> std::result::Result<Self, D::Error> {
        match Value::deserialize(deserializer)? {
            Value::String(text) if text == "self" => Ok(Signer::SelfSigned),
            Value::String(text) => Err(serde::de::Error::custom(format!(
                "unknown signer {text:?}, expected \"self\" or a certificate"
            ))),
            value => serde_json::from_value(value)
                .map(|certificate| Signer::Certificate(Box::new(certificate)))
                .map_err(serde::de::Error::custom),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct SignedCertificate {
    #[serde(rename = "$schema")]
    #[allow(dead_code)] // checked on the outermost document only, as on the original
    schema: String,
    certificate: Value,
    signature: Signature<Signer>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SignedNodeDescriptor {
    #[serde(rename = "$schema")]
    #[allow(dead_code)]
    schema: String,
    node_descriptor: Value,
    signature: Signature<SignedCertificate>,
}

/// A certificate whose chain verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidatedCertificate {
    /// Ids of the certificate and its signers, the certificate first.
    pub chain_fingerprints: Vec<String>,
    pub permissions: Permissions,
    pub key_usage: KeyUsage,
    pub validity_period: ValidityPeriod,
    pub subject: Subject,
}

impl ValidatedCertificate {
    /// The certificate's own id.
    pub fn id(&self) -> &str {
        self.chain_fingerprints
            .first()
            .map(String::as_str)
            .unwrap_or("")
    }
}

/// A node descriptor whose signature and chain verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidatedNodeDescriptor {
    /// Ids of the signing certificate and its signers, the signer first.
    pub chain_fingerprints: Vec<String>,
    pub permissions: Permissions,
    pub node_id: NodeId,
}

/// The id of a certificate: SHA-512 hex of JCS(`certificate`).
pub fn fingerprint(certificate: &Value) -> Result<String> {
    let canonical = to_canonical_bytes(certificate)
        .map_err(|error| GolemCertificateError::JcsSerializationError(error.to_string()))?;
    Ok(hex::encode(Sha512::digest(canonical)))
}

fn check_schema(value: &Value, schema_id: &str, structure_name: &str) -> Result<()> {
    match value.get("$schema").and_then(Value::as_str) {
        Some(schema) if schema == schema_id => Ok(()),
        Some(schema) => Err(GolemCertificateError::UnsupportedSchema {
            schema: schema.to_string(),
            structure_name: structure_name.to_string(),
        }),
        None => Err(not_conforming(format!(
            "Missing `schema` property in {structure_name}"
        ))),
    }
}

/// Validate a signed certificate (its whole chain up to a self-signed
/// root); with `now`, the certificate itself must be valid then.
pub fn validate_certificate(
    value: &Value,
    now: Option<DateTime<Utc>>,
) -> Result<ValidatedCertificate> {
    check_schema(value, CERTIFICATE_SCHEMA, "certificate")?;
    let signed: SignedCertificate =
        serde_json::from_value(value.clone()).map_err(not_conforming)?;
    let mut validated = validate_signed_certificate(&signed, now)?;
    validated.chain_fingerprints.reverse();
    Ok(validated)
}

/// Validate a signed node descriptor; with `now`, its validity period must
/// hold then.
pub fn validate_node_descriptor(
    value: &Value,
    now: Option<DateTime<Utc>>,
) -> Result<ValidatedNodeDescriptor> {
    check_schema(value, NODE_DESCRIPTOR_SCHEMA, "node descriptor")?;
    let signed: SignedNodeDescriptor =
        serde_json::from_value(value.clone()).map_err(not_conforming)?;
    let descriptor: NodeDescriptorBody =
        serde_json::from_value(signed.node_descriptor.clone()).map_err(not_conforming)?;
    let signer = &signed.signature.signer;
    let mut signer_validated = validate_signed_certificate(signer, None)?;
    let signer_body: CertificateBody =
        serde_json::from_value(signer.certificate.clone()).map_err(not_conforming)?;
    verify_signature(
        &signed.node_descriptor,
        signed.signature.algorithm.encryption,
        &signed.signature.value,
        &signer_body.public_key,
    )?;
    check_permissions(&signer_validated.permissions, &descriptor.permissions)?;
    check_sign_node(&signer_validated.key_usage)?;
    check_validity_period(
        &signer_validated.validity_period,
        &descriptor.validity_period,
    )?;
    if let Some(now) = now {
        check_timestamp(&descriptor.validity_period, now)?;
    }
    signer_validated.chain_fingerprints.reverse();
    Ok(ValidatedNodeDescriptor {
        chain_fingerprints: signer_validated.chain_fingerprints,
        permissions: descriptor.permissions,
        node_id: descriptor.node_id,
    })
}

/// The chain from the root down to `signed`; fingerprints root first.
fn validate_signed_certificate(
    signed: &SignedCertificate,
    now: Option<DateTime<Utc>>,
) -> Result<ValidatedCertificate> {
    let certificate: CertificateBody =
        serde_json::from_value(signed.certificate.clone()).map_err(not_conforming)?;
    // The signature first (the signer's key, or its own for a root), then
    // the signer's chain.
    let parent_body = match &signed.signature.signer {
        Signer::SelfSigned => None,
        Signer::Certificate(parent) => Some(
            serde_json::from_value::<CertificateBody>(parent.certificate.clone())
                .map_err(not_conforming)?,
        ),
    };
    let signing_key = parent_body
        .as_ref()
        .map_or(&certificate.public_key, |parent| &parent.public_key);
    verify_signature(
        &signed.certificate,
        signed.signature.algorithm.encryption,
        &signed.signature.value,
        signing_key,
    )?;
    let parent = match &signed.signature.signer {
        Signer::SelfSigned => ValidatedCertificate {
            chain_fingerprints: Vec::new(),
            permissions: certificate.permissions.clone(),
            key_usage: certificate.key_usage.clone(),
            validity_period: certificate.validity_period.clone(),
            subject: certificate.subject.clone(),
        },
        Signer::Certificate(parent) => validate_signed_certificate(parent, None)?,
    };
    check_permissions(&parent.permissions, &certificate.permissions)?;
    check_key_usage(&parent.key_usage, &certificate.key_usage)?;
    check_validity_period(&parent.validity_period, &certificate.validity_period)?;
    if let Some(now) = now {
        check_timestamp(&certificate.validity_period, now)?;
    }
    let mut chain_fingerprints = parent.chain_fingerprints;
    chain_fingerprints.push(fingerprint(&signed.certificate)?);
    Ok(ValidatedCertificate {
        chain_fingerprints,
        permissions: certificate.permissions,
        key_usage: certificate.key_usage,
        validity_period: certificate.validity_period,
        subject: certificate.subject,
    })
}

fn verify_signature(
    signed: &Value,
    encryption: Encryption,
    signature_hex: &str,
    public_key: &PublicKey,
) -> Result<()> {
    let canonical = to_canonical_bytes(signed)
        .map_err(|error| GolemCertificateError::JcsSerializationError(error.to_string()))?;
    let signature = hex::decode(signature_hex).map_err(not_conforming)?;
    if signature.len() != 64 {
        return Err(GolemCertificateError::InvalidSignatureValue);
    }
    let key = hex::decode(&public_key.key).map_err(not_conforming)?;
    if key.len() != 32 {
        return Err(GolemCertificateError::InvalidPublicKey);
    }
    let message = match encryption {
        Encryption::EdDSA => canonical,
        Encryption::EdDSAOpenPGP => Sha512::digest(&canonical).to_vec(),
    };
    ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, &key)
        .verify(&message, &signature)
        .map_err(|_| GolemCertificateError::InvalidSignature)
}

fn check_permissions(parent: &Permissions, child: &Permissions) -> Result<()> {
    let within = match (parent, child) {
        (Permissions::All, _) => true,
        (Permissions::Object(_), Permissions::All) => false,
        (Permissions::Object(parent), Permissions::Object(child)) => {
            match (&parent.outbound, &child.outbound) {
                (_, None) => true,
                (None, Some(_)) => false,
                (Some(OutboundPermissions::Unrestricted), Some(_)) => true,
                (Some(OutboundPermissions::Urls(_)), Some(OutboundPermissions::Unrestricted)) => {
                    false
                }
                (
                    Some(OutboundPermissions::Urls(parent)),
                    Some(OutboundPermissions::Urls(child)),
                ) => child.is_subset(parent),
            }
        }
    };
    if within {
        Ok(())
    } else {
        Err(GolemCertificateError::PermissionsExtended {
            parent: parent.clone(),
            child: child.clone(),
        })
    }
}

fn check_key_usage(parent: &KeyUsage, child: &KeyUsage) -> Result<()> {
    let extended = || GolemCertificateError::KeyUsageExtended {
        parent: parent.clone(),
        child: child.clone(),
    };
    match (parent, child) {
        (KeyUsage::All, _) => Ok(()),
        (KeyUsage::Limited(_), KeyUsage::All) => Err(extended()),
        (KeyUsage::Limited(parent_usages), KeyUsage::Limited(child_usages)) => {
            if !child_usages.is_subset(parent_usages) {
                Err(extended())
            } else if !parent_usages.contains(&Usage::SignCertificate) {
                Err(GolemCertificateError::CertSignNotPermitted)
            } else {
                Ok(())
            }
        }
    }
}

fn check_sign_node(key_usage: &KeyUsage) -> Result<()> {
    match key_usage {
        KeyUsage::Limited(usages) if !usages.contains(&Usage::SignNode) => {
            Err(GolemCertificateError::NodeSignNotPermitted)
        }
        _ => Ok(()),
    }
}

fn check_validity_period(parent: &ValidityPeriod, child: &ValidityPeriod) -> Result<()> {
    if parent.not_before <= child.not_before && child.not_after <= parent.not_after {
        Ok(())
    } else {
        Err(GolemCertificateError::ValidityPeriodExtended {
            parent: parent.clone(),
            child: child.clone(),
        })
    }
}

fn check_timestamp(period: &ValidityPeriod, now: DateTime<Utc>) -> Result<()> {
    if period.not_before > now {
        Err(GolemCertificateError::NotValidYet(period.not_before))
    } else if now > period.not_after {
        Err(GolemCertificateError::Expired(period.not_after))
    } else {
        Ok(())
    }
}

/// Whether a JSON document's text looks like a Golem certificate rather
/// than X.509 (PEM or DER never start with `{`).
pub fn looks_like_json(bytes: &[u8]) -> bool {
    bytes
        .iter()
        .find(|byte| !byte.is_ascii_whitespace())
        .is_some_and(|byte| *byte == b'{')
}

/// Parse and validate the text of a Golem certificate file (no clock check).
pub fn parse_certificate_file(bytes: &[u8]) -> Result<(Value, ValidatedCertificate)> {
    let value: Value = serde_json::from_slice(bytes)
        .map_err(|error| GolemCertificateError::InvalidJson(error.to_string()))?;
    let validated = validate_certificate(&value, None)?;
    Ok((value, validated))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::super::test_ca::{
        golem_certificate, golem_node_descriptor, GolemGrant, GolemMinted,
    };
    use super::*;
    use serde_json::json;

    const NODE: &str = "0x338e02f29b63155beec8253af7ad367dd44b40c6";

    fn grant(key_usage: Value, permissions: Value, days: (i64, i64)) -> GolemGrant {
        GolemGrant {
            key_usage,
            permissions,
            days,
        }
    }

    fn urls(list: &[&str]) -> Value {
        json!({"outbound": {"urls": list}})
    }

    /// root (all) → partner (signNode, the given URLs) → descriptor.
    fn chain(partner_urls: &[&str]) -> (GolemMinted, GolemMinted) {
        let root = golem_certificate("Test Root", &GolemGrant::all(), None);
        let partner = golem_certificate(
            "Test Partner",
            &grant(json!(["signNode"]), urls(partner_urls), (-5, 300)),
            Some(&root),
        );
        (root, partner)
    }

    fn descriptor_grant(list: &[&str], days: (i64, i64)) -> GolemGrant {
        grant(json!("all"), urls(list), days)
    }

    fn error(descriptor: &Value) -> String {
        validate_node_descriptor(descriptor, Some(Utc::now()))
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn a_valid_chain_gives_the_node_its_permissions_and_the_chain_ids() {
        let (root, partner) = chain(&["https://api.golem.test", "http://b.test:8080/x"]);
        let descriptor = golem_node_descriptor(
            NODE,
            &descriptor_grant(&["https://api.golem.test/"], (-1, 30)),
            &partner,
        );
        let validated = validate_node_descriptor(&descriptor, Some(Utc::now())).unwrap();
        assert_eq!(validated.node_id, NODE.parse().unwrap());
        assert_eq!(validated.chain_fingerprints, [partner.id(), root.id()]);
        assert_eq!(
            validated.permissions,
            Permissions::Object(PermissionDetails {
                outbound: Some(OutboundPermissions::Urls(
                    [url::Url::parse("https://api.golem.test").unwrap()].into()
                ))
            })
        );
        let certificate = validate_certificate(&partner.document, Some(Utc::now())).unwrap();
        assert_eq!(certificate.id(), partner.id());
        assert_eq!(certificate.subject.display_name, "Test Partner");
        assert_eq!(partner.id().len(), 128);
    }

    #[test]
    fn expired_and_not_yet_valid_descriptors_are_refused() {
        let (_, partner) = chain(&["https://a.test"]);
        let expired = golem_node_descriptor(NODE, &descriptor_grant(&[], (-3, -1)), &partner);
        assert!(
            error(&expired).starts_with("Expired: was valid to 20"),
            "{}",
            error(&expired)
        );
        let early = golem_node_descriptor(NODE, &descriptor_grant(&[], (1, 3)), &partner);
        assert!(
            error(&early).starts_with("Not valid yet: will be valid from 20"),
            "{}",
            error(&early)
        );
        // A descriptor outliving its signer.
        let long = golem_node_descriptor(NODE, &descriptor_grant(&[], (-1, 400)), &partner);
        assert!(
            error(&long).starts_with("Validity period extended: ValidityPeriod { not_before: "),
            "{}",
            error(&long)
        );
    }

    #[test]
    fn a_tampered_field_breaks_the_signature() {
        let (_, partner) = chain(&["https://a.test"]);
        let mut descriptor = golem_node_descriptor(
            NODE,
            &descriptor_grant(&["https://a.test"], (-1, 3)),
            &partner,
        );
        descriptor["nodeDescriptor"]["nodeId"] =
            json!("0x0000000000000000000000000000000000000001");
        assert_eq!(error(&descriptor), "Invalid signature");
        // In the chain: the partner certificate widened after signing.
        let mut descriptor = golem_node_descriptor(
            NODE,
            &descriptor_grant(&["https://a.test"], (-1, 3)),
            &partner,
        );
        descriptor["signature"]["signer"]["certificate"]["permissions"] = json!("all");
        assert_eq!(error(&descriptor), "Invalid signature");
        let mut descriptor = golem_node_descriptor(
            NODE,
            &descriptor_grant(&["https://a.test"], (-1, 3)),
            &partner,
        );
        descriptor["signature"]["value"] = json!("abcd");
        assert_eq!(
            error(&descriptor),
            "Invalid signature value (cannot deserialize)"
        );
    }

    #[test]
    fn permissions_wider_than_the_signers_are_refused() {
        let (_, partner) = chain(&["https://a.test"]);
        let wider = golem_node_descriptor(
            NODE,
            &descriptor_grant(&["https://a.test", "https://b.test"], (-1, 3)),
            &partner,
        );
        assert!(
            error(&wider).starts_with(
                "Permissions extended: Object(PermissionDetails { outbound: Some(Urls({"
            ),
            "{}",
            error(&wider)
        );
        let all =
            golem_node_descriptor(NODE, &grant(json!("all"), json!("all"), (-1, 3)), &partner);
        assert!(error(&all).ends_with(", All"), "{}", error(&all));
        // Also between certificates: unrestricted under a URL list.
        let root = golem_certificate(
            "Narrow Root",
            &grant(json!("all"), urls(&["https://a.test"]), (-10, 3650)),
            None,
        );
        let wide = golem_certificate(
            "Wide",
            &grant(
                json!(["signNode"]),
                json!({"outbound": "unrestricted"}),
                (-5, 300),
            ),
            Some(&root),
        );
        let error = validate_certificate(&wide.document, None).unwrap_err();
        assert!(
            error
                .to_string()
                .ends_with("Object(PermissionDetails { outbound: Some(Unrestricted) })"),
            "{error}"
        );
    }

    #[test]
    fn key_usage_must_allow_signing_nodes_and_certificates() {
        let root = golem_certificate("Test Root", &GolemGrant::all(), None);
        let manifest_only = golem_certificate(
            "Manifest Signer",
            &grant(json!(["signManifest"]), json!("all"), (-5, 300)),
            Some(&root),
        );
        let descriptor =
            golem_node_descriptor(NODE, &descriptor_grant(&[], (-1, 3)), &manifest_only);
        assert_eq!(
            error(&descriptor),
            "Certificate cannot sign Node Descriptor"
        );
        // A certificate signed by one without signCertificate.
        let below = golem_certificate(
            "Below",
            &grant(json!(["signNode"]), json!("all"), (-4, 200)),
            Some(&golem_certificate(
                "Node Signer",
                &grant(json!(["signNode"]), json!("all"), (-5, 300)),
                Some(&root),
            )),
        );
        let error = validate_certificate(&below.document, None).unwrap_err();
        assert_eq!(error.to_string(), "Certificate signing not permitted");
        let extended = golem_certificate(
            "Extended",
            &grant(json!("all"), json!("all"), (-4, 200)),
            Some(&manifest_only),
        );
        let error = validate_certificate(&extended.document, None).unwrap_err();
        assert_eq!(
            error.to_string(),
            "Key usage extended: Limited({SignManifest}), All"
        );
    }

    #[test]
    fn schemas_and_shapes_are_checked() {
        let root = golem_certificate("Test Root", &GolemGrant::all(), None);
        let mut other = root.document.clone();
        other["$schema"] = json!("https://example.test/schema.json");
        assert_eq!(
            validate_certificate(&other, None).unwrap_err().to_string(),
            "Unsupported schema for structure certificate: https://example.test/schema.json"
        );
        let error = validate_node_descriptor(&json!({"nodeDescriptor": {}}), None).unwrap_err();
        assert_eq!(
            error.to_string(),
            "Json does not conform to schema: Missing `schema` property in node descriptor"
        );
        let mut extra = root.document.clone();
        extra["surprise"] = json!(1);
        assert!(validate_certificate(&extra, None)
            .unwrap_err()
            .to_string()
            .starts_with("Json does not conform to schema: unknown field `surprise`"));
        assert!(matches!(
            parse_certificate_file(b"{not json"),
            Err(GolemCertificateError::InvalidJson(_))
        ));
    }

    /// The original's own root certificate (golemfactory/golem-certificate,
    /// `tests/resources/node_descriptor/happy_path.signed.json`): its
    /// signature verifies here and its id is the one the original computes,
    /// so canonical JSON, Ed25519 and the fingerprint agree with it.
    #[test]
    fn the_originals_certificate_verifies_with_the_originals_id() {
        let root = json!({
            "$schema": CERTIFICATE_SCHEMA,
            "certificate": {
                "validityPeriod": {"notBefore": "2000-01-01T00:00:00Z", "notAfter": "2030-01-01T00:00:00Z"},
                "keyUsage": "all",
                "permissions": "all",
                "subject": {"displayName": "Example root cert", "contact": {"email": "root-example@golem.network"}},
                "publicKey": {"algorithm": "EdDSA",
                    "key": "1497d5430205a082dc58cf571b3a579d7fe6fbf2ad3edec7cb7fbf5ec4ccba72",
                    "parameters": {"scheme": "Ed25519"}}
            },
            "signature": {
                "algorithm": {"hash": "sha512", "encryption": "EdDSA"},
                "value": "b9b2d783d4dc7f6b139a74c01ef6340aeed19dc0e3fd117eefe7fe109f8686da9ec2b942cb18c7d3c705c9d28f6e13b579903b6f3c1595dbe5ce24da3501bc0e",
                "signer": "self"
            }
        });
        let validated = validate_certificate(&root, None).unwrap();
        assert_eq!(validated.id(), "80c84b2701126669966f46c1159cae89c58fb088e8bf94b318358fa4ca33ee56d8948511a397e5aba6aa5b88fff36f2541a91b133cde0fb816e8592b695c04c3");
        let expired = validate_certificate(&root, Some("2031-01-01T00:00:00Z".parse().unwrap()));
        assert_eq!(
            expired.unwrap_err().to_string(),
            "Expired: was valid to 2030-01-01 00:00:00 UTC"
        );
    }
}
