//! Certificates minted for tests (feature `test-ca`, and this crate's unit
//! tests). X.509: a root CA, leaves it signs with chosen validity, and
//! signatures by their keys; ECDSA P-256 with SHA-256, what `ring`
//! generates. Golem certificates: self-signed roots, certificates they sign
//! and node descriptors, Ed25519 over canonical JSON, with chosen key
//! usage, permissions and validity. Never used by the agent itself.
#![allow(clippy::unwrap_used)] // test support: a failure to mint fails the test

use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};

pub struct Minted {
    pub pem: String,
    pub der: Vec<u8>,
    pub key: KeyPair,
    pub params: CertificateParams,
}

fn params(name: &str, ca: bool, days: (i64, i64)) -> CertificateParams {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    if ca {
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    }
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now + time::Duration::days(days.0);
    params.not_after = now + time::Duration::days(days.1);
    params
}

pub fn root(name: &str) -> Minted {
    let key = KeyPair::generate().unwrap();
    let params = params(name, true, (-1, 365));
    let certificate = params.clone().self_signed(&key).unwrap();
    Minted {
        pem: certificate.pem(),
        der: certificate.der().to_vec(),
        key,
        params,
    }
}

/// A leaf signed by `issuer`, valid from `days.0` to `days.1` from now.
pub fn leaf(name: &str, issuer: &Minted, days: (i64, i64)) -> Minted {
    let key = KeyPair::generate().unwrap();
    let params = params(name, false, days);
    let issuer_certificate = issuer.params.clone().self_signed(&issuer.key).unwrap();
    let certificate = params
        .clone()
        .signed_by(&key, &issuer_certificate, &issuer.key)
        .unwrap();
    Minted {
        pem: certificate.pem(),
        der: certificate.der().to_vec(),
        key,
        params,
    }
}

/// `data` signed by `minted`'s key (ECDSA P-256 SHA-256, ASN.1).
pub fn sign(minted: &Minted, data: &[u8]) -> Vec<u8> {
    let rng = ring::rand::SystemRandom::new();
    let pair = ring::signature::EcdsaKeyPair::from_pkcs8(
        &ring::signature::ECDSA_P256_SHA256_ASN1_SIGNING,
        &minted.key.serialize_der(),
        &rng,
    )
    .unwrap();
    pair.sign(&rng, data).unwrap().as_ref().to_vec()
}

/// A signed Golem certificate (the JSON document) and its key.
pub struct GolemMinted {
    pub document: serde_json::Value,
    pub key: ring::signature::Ed25519KeyPair,
}

impl GolemMinted {
    /// The certificate's id (fingerprint).
    pub fn id(&self) -> String {
        super::golem_certificate::fingerprint(&self.document["certificate"]).unwrap()
    }
}

/// What a minted Golem certificate or descriptor allows, and when.
#[derive(Debug, Clone)]
pub struct GolemGrant {
    /// `"all"` or a list such as `["signCertificate", "signNode"]`.
    pub key_usage: serde_json::Value,
    /// `"all"` or `{"outbound": "unrestricted" | {"urls": [...]}}`.
    pub permissions: serde_json::Value,
    /// Valid from `days.0` to `days.1` days from now.
    pub days: (i64, i64),
}

impl GolemGrant {
    pub fn all() -> GolemGrant {
        GolemGrant {
            key_usage: serde_json::json!("all"),
            permissions: serde_json::json!("all"),
            days: (-10, 3650),
        }
    }
}

fn validity(days: (i64, i64)) -> serde_json::Value {
    let now = chrono::Utc::now();
    // Whole seconds, as people write them.
    let at = |offset: i64| {
        (now + chrono::Duration::days(offset)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    };
    serde_json::json!({"notBefore": at(days.0), "notAfter": at(days.1)})
}

/// Ed25519 over the canonical JSON of `value`, as hex.
pub fn golem_sign(key: &ring::signature::Ed25519KeyPair, value: &serde_json::Value) -> String {
    let canonical = super::canonical_json::to_canonical_bytes(value).unwrap();
    hex::encode(key.sign(&canonical).as_ref())
}

fn signature(value: String, signer: serde_json::Value) -> serde_json::Value {
    serde_json::json!({"algorithm": {"hash": "sha512", "encryption": "EdDSA"},
                       "value": value, "signer": signer})
}

fn golem_key() -> ring::signature::Ed25519KeyPair {
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
    ring::signature::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap()
}

/// A Golem certificate named `name`, signed by `issuer` (self-signed without one).
pub fn golem_certificate(
    name: &str,
    grant: &GolemGrant,
    issuer: Option<&GolemMinted>,
) -> GolemMinted {
    use ring::signature::KeyPair as _;
    let key = golem_key();
    let certificate = serde_json::json!({
        "validityPeriod": validity(grant.days),
        "keyUsage": grant.key_usage,
        "permissions": grant.permissions,
        "subject": {"displayName": name, "contact": {"email": "test@golem.test"}},
        "publicKey": {"algorithm": "EdDSA", "key": hex::encode(key.public_key().as_ref()),
                      "parameters": {"scheme": "Ed25519"}},
    });
    let (value, signer) = match issuer {
        None => (golem_sign(&key, &certificate), serde_json::json!("self")),
        Some(issuer) => (
            golem_sign(&issuer.key, &certificate),
            issuer.document.clone(),
        ),
    };
    GolemMinted {
        document: serde_json::json!({
            "$schema": super::golem_certificate::CERTIFICATE_SCHEMA,
            "certificate": certificate,
            "signature": signature(value, signer),
        }),
        key,
    }
}

/// A node descriptor for `node_id` signed by `signer`, with `grant`'s
/// permissions and validity (its key usage is not used).
pub fn golem_node_descriptor(
    node_id: &str,
    grant: &GolemGrant,
    signer: &GolemMinted,
) -> serde_json::Value {
    let descriptor = serde_json::json!({
        "nodeId": node_id,
        "permissions": grant.permissions,
        "validityPeriod": validity(grant.days),
    });
    serde_json::json!({
        "$schema": super::golem_certificate::NODE_DESCRIPTOR_SCHEMA,
        "nodeDescriptor": descriptor,
        "signature": signature(golem_sign(&signer.key, &descriptor), signer.document.clone()),
    })
}
