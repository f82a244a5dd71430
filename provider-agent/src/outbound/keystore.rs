//! The provider's keystore for the `audited-payload` and `partner` rules:
//! the certificates in `<data-dir>/cert-dir/`, X.509 (PEM, PEM chains or
//! DER) and Golem certificates (their JSON, see [`super::golem_certificate`]);
//! one file per certificate as `golem-provider keystore add` writes them,
//! any file a provider drops there is read too. Ids are the original's: the
//! SHA-512 hex of an X.509 certificate's DER, of a Golem certificate's
//! canonical `certificate` JSON.
//!
//! [`Keystore::verify`] checks a signed manifest as the original's OpenSSL
//! check does: the certificates sent with the demand must chain to one in
//! the keystore, each valid now, each issuer a CA; then the signature over
//! the manifest text is checked with the end certificate's key and the
//! named digest (RSA PKCS#1 v1.5, or ECDSA on P-256/P-384). It returns the
//! chain's ids, root-most first. Node descriptors carry their whole chain;
//! the `partner` rule trusts one whose chain holds a Golem certificate of
//! this keystore ([`Keystore::golem_certificate`]). It never reads the network.

use std::path::{Path, PathBuf};

use chrono::{DateTime, SecondsFormat, Utc};
use sha2::{Digest, Sha512};

use super::golem_certificate::{
    looks_like_json, parse_certificate_file, KeyUsage, Usage, ValidatedCertificate,
};
use x509_parser::certificate::X509Certificate;
use x509_parser::prelude::FromDer;
use x509_parser::time::ASN1Time;

/// The keystore's directory under the agent's data dir.
pub const CERT_DIR: &str = "cert-dir";
/// Longest chain followed.
const MAX_CHAIN: usize = 10;

#[derive(Debug, thiserror::Error)]
pub enum KeystoreError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} holds no X.509 certificate (PEM or DER): {message}")]
    NotACertificate { path: String, message: String },
    #[error("{path} is not a valid Golem certificate: {message}")]
    NotAGolemCertificate { path: String, message: String },
    #[error("{subject} ({id}) expired at {not_after}: the keystore takes only valid certificates")]
    Expired {
        subject: String,
        id: String,
        not_after: String,
    },
    #[error("no certificate in the keystore has an id starting with {0:?} (see `golem-provider keystore list`)")]
    Unknown(String),
    #[error("{prefix:?} names {count} certificates: give more of the id")]
    Ambiguous { prefix: String, count: usize },
}

/// One certificate, as DER.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Certificate {
    pub der: Vec<u8>,
}

/// The two kinds of certificates, named as the original's `keystore list` does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum CertificateKind {
    #[serde(rename = "X.509")]
    X509,
    Golem,
}

impl CertificateKind {
    pub fn as_str(self) -> &'static str {
        match self {
            CertificateKind::X509 => "X.509",
            CertificateKind::Golem => "Golem",
        }
    }
}

/// What `keystore list` shows of a certificate.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CertificateInfo {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: CertificateKind,
    /// X.509: the distinguished name; Golem: the display name.
    pub subject: String,
    /// RFC 3339, whole seconds.
    pub not_before: String,
    pub not_after: String,
    /// The validity period as unix seconds, for checks.
    #[serde(skip)]
    pub valid_unix: (i64, i64),
    /// Whether it may sign other certificates.
    pub is_ca: bool,
}

fn rfc3339(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn rfc3339_of(time: ASN1Time) -> String {
    DateTime::from_timestamp(time.timestamp(), 0)
        .map(rfc3339)
        .unwrap_or_else(|| time.to_string())
}

/// A Golem certificate of the keystore: its JSON and what verified of it.
#[derive(Debug, Clone, PartialEq)]
pub struct GolemCertificate {
    pub document: serde_json::Value,
    pub validated: ValidatedCertificate,
}

impl GolemCertificate {
    pub fn id(&self) -> &str {
        self.validated.id()
    }

    pub fn info(&self) -> CertificateInfo {
        let period = &self.validated.validity_period;
        CertificateInfo {
            id: self.id().to_string(),
            kind: CertificateKind::Golem,
            subject: self.validated.subject.display_name.clone(),
            not_before: rfc3339(period.not_before),
            not_after: rfc3339(period.not_after),
            valid_unix: (period.not_before.timestamp(), period.not_after.timestamp()),
            is_ca: match &self.validated.key_usage {
                KeyUsage::All => true,
                KeyUsage::Limited(usages) => usages.contains(&Usage::SignCertificate),
            },
        }
    }
}

/// The certificates of one file.
#[derive(Debug, Clone)]
pub enum CertificateFile {
    X509(Vec<Certificate>),
    Golem(GolemCertificate),
}

impl CertificateFile {
    pub fn infos(&self) -> Vec<CertificateInfo> {
        match self {
            CertificateFile::X509(certificates) => {
                certificates.iter().filter_map(Certificate::info).collect()
            }
            CertificateFile::Golem(certificate) => vec![certificate.info()],
        }
    }
}

impl Certificate {
    fn parsed(&self) -> Option<X509Certificate<'_>> {
        X509Certificate::from_der(&self.der)
            .ok()
            .map(|(_, certificate)| certificate)
    }

    /// SHA-512 hex of the DER.
    pub fn id(&self) -> String {
        hex::encode(Sha512::digest(&self.der))
    }

    pub fn info(&self) -> Option<CertificateInfo> {
        let parsed = self.parsed()?;
        Some(CertificateInfo {
            id: self.id(),
            kind: CertificateKind::X509,
            subject: parsed.subject().to_string(),
            not_before: rfc3339_of(parsed.validity().not_before),
            not_after: rfc3339_of(parsed.validity().not_after),
            valid_unix: (
                parsed.validity().not_before.timestamp(),
                parsed.validity().not_after.timestamp(),
            ),
            is_ca: parsed.is_ca(),
        })
    }

    /// PEM text of the certificate.
    pub fn to_pem(&self) -> String {
        let encoded = golem_model::manifest::encode_base64(&self.der);
        let mut text = String::from("-----BEGIN CERTIFICATE-----\n");
        for line in encoded.as_bytes().chunks(64) {
            text.push_str(&String::from_utf8_lossy(line));
            text.push('\n');
        }
        text.push_str("-----END CERTIFICATE-----\n");
        text
    }
}

/// The certificates in `bytes`: a PEM chain, or one DER certificate.
pub fn parse_certificates(bytes: &[u8]) -> Result<Vec<Certificate>, String> {
    let mut certificates = Vec::new();
    if bytes.windows(10).any(|window| window == b"-----BEGIN") {
        for pem in x509_parser::pem::Pem::iter_from_buffer(bytes) {
            let pem = pem.map_err(|error| format!("bad PEM: {error}"))?;
            if pem.label != "CERTIFICATE" {
                continue;
            }
            X509Certificate::from_der(&pem.contents)
                .map_err(|error| format!("bad certificate: {error}"))?;
            certificates.push(Certificate { der: pem.contents });
        }
        if certificates.is_empty() {
            return Err("no CERTIFICATE block".into());
        }
        return Ok(certificates);
    }
    X509Certificate::from_der(bytes).map_err(|error| format!("not DER: {error}"))?;
    Ok(vec![Certificate {
        der: bytes.to_vec(),
    }])
}

/// The keystore: the certificates of a directory.
#[derive(Debug, Clone, Default)]
pub struct Keystore {
    /// X.509 certificates (`audited-payload`).
    pub certificates: Vec<Certificate>,
    /// Golem certificates (`partner`).
    pub golem_certificates: Vec<GolemCertificate>,
}

/// The certificates in `bytes`: a Golem certificate's JSON, else X.509.
fn parse_file(bytes: &[u8], path: &Path) -> Result<CertificateFile, KeystoreError> {
    if looks_like_json(bytes) {
        let (document, validated) =
            parse_certificate_file(bytes).map_err(|error| KeystoreError::NotAGolemCertificate {
                path: path.display().to_string(),
                message: error.to_string(),
            })?;
        return Ok(CertificateFile::Golem(GolemCertificate {
            document,
            validated,
        }));
    }
    parse_certificates(bytes)
        .map(CertificateFile::X509)
        .map_err(|message| KeystoreError::NotACertificate {
            path: path.display().to_string(),
            message,
        })
}

fn is_valid_at(certificate: &X509Certificate<'_>, now: i64) -> bool {
    ASN1Time::from_timestamp(now).is_ok_and(|time| certificate.validity().is_valid_at(time))
}

/// Whether `issuer` issued `subject`: names match and the signature holds.
fn issued(issuer: &X509Certificate<'_>, subject: &X509Certificate<'_>) -> bool {
    issuer.subject().as_raw() == subject.issuer().as_raw()
        && subject.verify_signature(Some(issuer.public_key())).is_ok()
}

/// The prefix of the original's verification failures.
const UNVERIFIED: &str = "Unable to verify X509 certificate.";

impl Keystore {
    pub fn dir(data_dir: &Path) -> PathBuf {
        data_dir.join(CERT_DIR)
    }

    /// Every certificate in `dir` (missing: empty); unreadable files are
    /// skipped with a warning, as on the original.
    pub fn load(dir: &Path) -> Result<Keystore, KeystoreError> {
        let entries = match std::fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Keystore::default())
            }
            Err(source) => {
                return Err(KeystoreError::Read {
                    path: dir.display().to_string(),
                    source,
                })
            }
        };
        let mut paths: Vec<PathBuf> = entries
            .filter_map(|entry| entry.ok().map(|entry| entry.path()))
            .filter(|path| path.is_file())
            .collect();
        paths.sort();
        let mut keystore = Keystore::default();
        for path in paths {
            let bytes = std::fs::read(&path).map_err(|source| KeystoreError::Read {
                path: path.display().to_string(),
                source,
            })?;
            match parse_file(&bytes, &path) {
                Ok(CertificateFile::X509(found)) => {
                    for certificate in found {
                        if !keystore.certificates.contains(&certificate) {
                            keystore.certificates.push(certificate);
                        }
                    }
                }
                Ok(CertificateFile::Golem(certificate)) => {
                    if keystore.golem_certificate(certificate.id()).is_none() {
                        keystore.golem_certificates.push(certificate);
                    }
                }
                Err(error) => {
                    tracing::warn!(path = %path.display(), %error, "skipping a file of the keystore")
                }
            }
        }
        Ok(keystore)
    }

    /// The Golem certificate of the keystore with this full id.
    pub fn golem_certificate(&self, id: &str) -> Option<&GolemCertificate> {
        self.golem_certificates
            .iter()
            .find(|certificate| certificate.id() == id)
    }

    /// What `keystore list` shows: every certificate of both kinds, by id.
    pub fn infos(&self) -> Vec<CertificateInfo> {
        let mut infos: Vec<CertificateInfo> = self
            .certificates
            .iter()
            .filter_map(Certificate::info)
            .chain(self.golem_certificates.iter().map(GolemCertificate::info))
            .collect();
        infos.sort_by(|left, right| left.id.cmp(&right.id));
        infos
    }

    /// Read the certificates of `file` for adding: a Golem certificate must
    /// verify (its chain up to its self-signed root); any expired one is
    /// refused. Nothing is written.
    pub fn read_file(file: &Path, now: i64) -> Result<CertificateFile, KeystoreError> {
        let bytes = std::fs::read(file).map_err(|source| KeystoreError::Read {
            path: file.display().to_string(),
            source,
        })?;
        let parsed = parse_file(&bytes, file)?;
        for info in parsed.infos() {
            if info.valid_unix.1 < now {
                return Err(KeystoreError::Expired {
                    subject: info.subject,
                    id: info.id,
                    not_after: info.not_after,
                });
            }
        }
        Ok(parsed)
    }

    /// Write `parsed` into `dir`: one file per certificate, named by the
    /// id's first 16 hex digits (`.pem` for X.509, `.json` for Golem).
    pub fn store(dir: &Path, parsed: &CertificateFile) -> Result<(), KeystoreError> {
        std::fs::create_dir_all(dir).map_err(|source| KeystoreError::Write {
            path: dir.display().to_string(),
            source,
        })?;
        let files: Vec<(PathBuf, String)> = match parsed {
            CertificateFile::X509(certificates) => certificates
                .iter()
                .map(|certificate| {
                    (
                        dir.join(format!("{}.pem", &certificate.id()[..16])),
                        certificate.to_pem(),
                    )
                })
                .collect(),
            CertificateFile::Golem(certificate) => {
                let text = serde_json::to_string_pretty(&certificate.document)
                    .unwrap_or_else(|_| certificate.document.to_string());
                vec![(
                    dir.join(format!("{}.json", &certificate.id()[..16])),
                    text + "\n",
                )]
            }
        };
        for (path, text) in files {
            std::fs::write(&path, text).map_err(|source| KeystoreError::Write {
                path: path.display().to_string(),
                source,
            })?;
        }
        Ok(())
    }

    /// Add the certificates of `file` to `dir` ([`Self::read_file`], then
    /// [`Self::store`]). Returns what was added (already present ones included).
    pub fn add_file(dir: &Path, file: &Path, now: i64) -> Result<CertificateFile, KeystoreError> {
        let parsed = Self::read_file(file, now)?;
        Self::store(dir, &parsed)?;
        Ok(parsed)
    }

    /// The full id of the one certificate whose id starts with `prefix`.
    pub fn resolve_id(&self, prefix: &str) -> Result<String, KeystoreError> {
        let prefix = prefix.trim().to_ascii_lowercase();
        let matching: Vec<String> = self
            .certificates
            .iter()
            .map(Certificate::id)
            .chain(
                self.golem_certificates
                    .iter()
                    .map(|certificate| certificate.id().to_string()),
            )
            .filter(|id| !prefix.is_empty() && id.starts_with(&prefix))
            .collect();
        match matching.as_slice() {
            [id] => Ok(id.clone()),
            [] => Err(KeystoreError::Unknown(prefix)),
            _ => Err(KeystoreError::Ambiguous {
                prefix,
                count: matching.len(),
            }),
        }
    }

    /// Remove the certificate whose id starts with `prefix` from `dir`
    /// (files holding it and others are rewritten without it). Returns what
    /// `keystore list` showed of it.
    pub fn remove(dir: &Path, prefix: &str) -> Result<CertificateInfo, KeystoreError> {
        let keystore = Keystore::load(dir)?;
        let id = keystore.resolve_id(prefix)?;
        let removed = keystore
            .infos()
            .into_iter()
            .find(|info| info.id == id)
            .ok_or_else(|| KeystoreError::Unknown(prefix.to_string()))?;
        let entries = std::fs::read_dir(dir).map_err(|source| KeystoreError::Read {
            path: dir.display().to_string(),
            source,
        })?;
        for path in entries.filter_map(|entry| entry.ok().map(|entry| entry.path())) {
            let Ok(bytes) = std::fs::read(&path) else {
                continue;
            };
            let written = match parse_file(&bytes, &path) {
                Ok(CertificateFile::Golem(certificate)) if certificate.id() == id => {
                    std::fs::remove_file(&path)
                }
                Ok(CertificateFile::X509(found))
                    if found.iter().any(|certificate| certificate.id() == id) =>
                {
                    let rest: String = found
                        .iter()
                        .filter(|certificate| certificate.id() != id)
                        .map(Certificate::to_pem)
                        .collect();
                    if rest.is_empty() {
                        std::fs::remove_file(&path)
                    } else {
                        std::fs::write(&path, rest)
                    }
                }
                _ => continue,
            };
            written.map_err(|source| KeystoreError::Write {
                path: path.display().to_string(),
                source,
            })?;
        }
        Ok(removed)
    }

    /// Verify `signature` over `data` by the certificates `sent` (DER or PEM
    /// chain bytes) with digest `algorithm`, at unix time `now`. Returns the
    /// chain's ids, root-most first; the error is the original's text.
    pub fn verify(
        &self,
        sent: &[u8],
        algorithm: &str,
        data: &[u8],
        signature: &[u8],
        now: i64,
    ) -> Result<Vec<String>, String> {
        let sent = parse_certificates(sent)
            .map_err(|_| format!("{UNVERIFIED} No X509 certificate in payload."))?;
        if self.certificates.is_empty() {
            return Err(format!("{UNVERIFIED} No X509 certificates in keystore."));
        }
        let sent_parsed: Vec<X509Certificate<'_>> =
            sent.iter().filter_map(Certificate::parsed).collect();
        let store_parsed: Vec<X509Certificate<'_>> = self
            .certificates
            .iter()
            .filter_map(Certificate::parsed)
            .collect();
        // The end of the chain: the sent certificate that issued no other.
        let leaf_index = (0..sent_parsed.len())
            .rev()
            .find(|&index| {
                !sent_parsed.iter().enumerate().any(|(other, certificate)| {
                    other != index && issued(&sent_parsed[index], certificate)
                })
            })
            .ok_or_else(|| format!("{UNVERIFIED} No X509 certificate in payload."))?;
        let mut chain: Vec<&[u8]> = vec![&sent[leaf_index].der];
        let mut current = &sent_parsed[leaf_index];
        let mut current_der: &[u8] = &sent[leaf_index].der;
        let mut trusted = false;
        for _ in 0..MAX_CHAIN {
            if !is_valid_at(current, now) {
                return Err(UNVERIFIED.into());
            }
            let in_store = self
                .certificates
                .iter()
                .any(|certificate| certificate.der.as_slice() == current_der);
            if in_store {
                trusted = true;
                break;
            }
            let store_issuer = store_parsed
                .iter()
                .zip(&self.certificates)
                .find(|(issuer, _)| issued(issuer, current));
            if let Some((issuer, certificate)) = store_issuer {
                if !issuer.is_ca() || !is_valid_at(issuer, now) {
                    return Err(UNVERIFIED.into());
                }
                chain.push(&certificate.der);
                current = issuer;
                current_der = &certificate.der;
                trusted = true;
                break;
            }
            let sent_issuer = sent_parsed.iter().zip(&sent).find(|(issuer, certificate)| {
                certificate.der.as_slice() != current_der && issued(issuer, current)
            });
            match sent_issuer {
                Some((issuer, certificate)) if issuer.is_ca() => {
                    chain.push(&certificate.der);
                    current = issuer;
                    current_der = &certificate.der;
                }
                _ => return Err(UNVERIFIED.into()),
            }
        }
        if !trusted {
            return Err(UNVERIFIED.into());
        }
        // Above the trusted one, its issuers in the keystore (for rules set on them).
        for _ in 0..MAX_CHAIN {
            let above =
                store_parsed
                    .iter()
                    .zip(&self.certificates)
                    .find(|(issuer, certificate)| {
                        certificate.der.as_slice() != current_der && issued(issuer, current)
                    });
            match above {
                Some((issuer, certificate)) if !chain.contains(&certificate.der.as_slice()) => {
                    chain.push(&certificate.der);
                    current = issuer;
                    current_der = &certificate.der;
                }
                _ => break,
            }
        }
        verify_data(&sent_parsed[leaf_index], algorithm, data, signature)?;
        Ok(chain
            .iter()
            .rev()
            .map(|der| hex::encode(Sha512::digest(der)))
            .collect())
    }
}

/// Check `signature` over `data` with `certificate`'s key and `algorithm`.
fn verify_data(
    certificate: &X509Certificate<'_>,
    algorithm: &str,
    data: &[u8],
    signature: &[u8],
) -> Result<(), String> {
    use ring::signature as sig;
    let digest = algorithm.trim().to_ascii_lowercase().replace('-', "");
    if !["sha256", "sha384", "sha512"].contains(&digest.as_str()) {
        return Err(format!("Unknown signature algorithm: {algorithm}"));
    }
    let key = certificate.public_key();
    let key_bytes: &[u8] = &key.subject_public_key.data;
    let scheme: &'static dyn sig::VerificationAlgorithm = match key.parsed() {
        Ok(x509_parser::public_key::PublicKey::RSA(_)) => match digest.as_str() {
            "sha256" => &sig::RSA_PKCS1_2048_8192_SHA256,
            "sha384" => &sig::RSA_PKCS1_2048_8192_SHA384,
            _ => &sig::RSA_PKCS1_2048_8192_SHA512,
        },
        // The point's length says the curve: 65 bytes P-256, 97 bytes P-384.
        Ok(x509_parser::public_key::PublicKey::EC(_)) => match (key_bytes.len(), digest.as_str()) {
            (65, "sha256") => &sig::ECDSA_P256_SHA256_ASN1,
            (65, "sha384") => &sig::ECDSA_P256_SHA384_ASN1,
            (97, "sha256") => &sig::ECDSA_P384_SHA256_ASN1,
            (97, "sha384") => &sig::ECDSA_P384_SHA384_ASN1,
            _ => return Err("Invalid signature.".into()),
        },
        _ => return Err("Invalid signature.".into()),
    };
    sig::UnparsedPublicKey::new(scheme, key_bytes)
        .verify(data, signature)
        .map_err(|_| "Invalid signature.".to_string())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::outbound::test_ca::*;

    fn now() -> i64 {
        chrono::Utc::now().timestamp()
    }

    fn store(pems: &[&str]) -> Keystore {
        Keystore {
            certificates: pems
                .iter()
                .flat_map(|pem| parse_certificates(pem.as_bytes()).unwrap())
                .collect(),
            golem_certificates: Vec::new(),
        }
    }

    #[test]
    fn a_leaf_of_a_keystore_ca_verifies() {
        let root = root("Test Root");
        let leaf = leaf("Test Leaf", &root, (-1, 30));
        let signature = sign(&leaf, b"bWFuaWZlc3Q=");
        let ids = store(&[&root.pem])
            .verify(
                leaf.pem.as_bytes(),
                "sha256",
                b"bWFuaWZlc3Q=",
                &signature,
                now(),
            )
            .unwrap();
        assert_eq!(
            ids,
            [
                Certificate { der: root.der }.id(),
                Certificate {
                    der: leaf.der.clone()
                }
                .id()
            ]
        );
        // DER, and a chain with the root in either order, verify too.
        store(&[&root.pem])
            .verify(&leaf.der, "sha256", b"bWFuaWZlc3Q=", &signature, now())
            .unwrap();
        let chain = format!("{}{}", root.pem, leaf.pem);
        store(&[&root.pem])
            .verify(
                chain.as_bytes(),
                "SHA256",
                b"bWFuaWZlc3Q=",
                &signature,
                now(),
            )
            .unwrap();
    }

    #[test]
    fn failures_carry_the_originals_texts() {
        let root = root("Test Root");
        let leaf = leaf("Test Leaf", &root, (-1, 30));
        let signature = sign(&leaf, b"data");
        let keystore = store(&[&root.pem]);
        let verify = |keystore: &Keystore, pem: &str, alg: &str, data: &[u8], at: i64| {
            keystore
                .verify(pem.as_bytes(), alg, data, &signature, at)
                .unwrap_err()
        };
        assert_eq!(
            verify(&keystore, &leaf.pem, "sha256", b"other", now()),
            "Invalid signature."
        );
        assert_eq!(
            verify(&keystore, &leaf.pem, "md4", b"data", now()),
            "Unknown signature algorithm: md4"
        );
        assert_eq!(
            verify(&Keystore::default(), &leaf.pem, "sha256", b"data", now()),
            "Unable to verify X509 certificate. No X509 certificates in keystore."
        );
        // Expired leaf; a foreign CA's leaf.
        let expired = self::leaf("Old Leaf", &root, (-30, -1));
        assert_eq!(
            verify(&keystore, &expired.pem, "sha256", b"data", now()),
            "Unable to verify X509 certificate."
        );
        let foreign_root = self::root("Foreign Root");
        let foreign = self::leaf("Foreign Leaf", &foreign_root, (-1, 30));
        assert_eq!(
            verify(&keystore, &foreign.pem, "sha256", b"data", now()),
            "Unable to verify X509 certificate."
        );
        // A foreign leaf pretending the trusted root's name does not verify either.
        let chain = format!("{}{}", foreign_root.pem, foreign.pem);
        assert_eq!(
            verify(&keystore, &chain, "sha256", b"data", now()),
            "Unable to verify X509 certificate."
        );
    }

    #[test]
    fn add_list_and_remove_keep_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        let root = root("Test Root");
        let file = dir.path().join("root.pem");
        std::fs::write(&file, &root.pem).unwrap();
        let cert_dir = dir.path().join(CERT_DIR);
        let added = Keystore::add_file(&cert_dir, &file, now()).unwrap();
        assert_eq!(added.infos().len(), 1);
        let keystore = Keystore::load(&cert_dir).unwrap();
        assert_eq!(keystore.certificates.len(), 1);
        let info = keystore.certificates[0].info().unwrap();
        assert!(info.subject.contains("Test Root") && info.is_ca, "{info:?}");
        assert!(matches!(
            keystore.resolve_id("zz"),
            Err(KeystoreError::Unknown(_))
        ));
        // Expired: refused, nothing written.
        let expired = leaf("Old", &root, (-30, -1));
        let old_file = dir.path().join("old.pem");
        std::fs::write(&old_file, &expired.pem).unwrap();
        let error = Keystore::add_file(&cert_dir, &old_file, now()).unwrap_err();
        assert!(error.to_string().contains("expired"), "{error}");
        assert_eq!(Keystore::load(&cert_dir).unwrap().certificates.len(), 1);
        let removed = Keystore::remove(&cert_dir, &info.id[..10]).unwrap();
        assert_eq!(removed.id, info.id);
        assert!(Keystore::load(&cert_dir).unwrap().certificates.is_empty());
        // Not a certificate.
        std::fs::write(&old_file, "hello").unwrap();
        assert!(matches!(
            Keystore::add_file(&cert_dir, &old_file, now()),
            Err(KeystoreError::NotACertificate { .. })
        ));
    }

    #[test]
    fn golem_certificates_are_added_listed_and_removed_beside_x509_ones() {
        let dir = tempfile::tempdir().unwrap();
        let cert_dir = dir.path().join(CERT_DIR);
        let x509 = root("X509 Root");
        let x509_file = dir.path().join("root.pem");
        std::fs::write(&x509_file, &x509.pem).unwrap();
        Keystore::add_file(&cert_dir, &x509_file, now()).unwrap();
        let golem_root = golem_certificate("Golem Root", &GolemGrant::all(), None);
        let partner = golem_certificate(
            "Partner",
            &GolemGrant {
                key_usage: serde_json::json!(["signNode"]),
                permissions: serde_json::json!({"outbound": "unrestricted"}),
                days: (-1, 30),
            },
            Some(&golem_root),
        );
        let partner_file = dir.path().join("partner.json");
        std::fs::write(&partner_file, partner.document.to_string()).unwrap();
        let added = Keystore::add_file(&cert_dir, &partner_file, now()).unwrap();
        assert!(matches!(added, CertificateFile::Golem(_)));
        let keystore = Keystore::load(&cert_dir).unwrap();
        assert_eq!(keystore.certificates.len(), 1);
        assert_eq!(keystore.golem_certificates.len(), 1);
        let infos = keystore.infos();
        let golem = infos
            .iter()
            .find(|info| info.kind == CertificateKind::Golem)
            .unwrap();
        assert_eq!(golem.id, partner.id());
        assert_eq!(golem.subject, "Partner");
        assert!(!golem.is_ca);
        assert!(
            golem.not_after.ends_with('Z') && golem.not_after.len() == 20,
            "{golem:?}"
        );
        assert_eq!(
            serde_json::to_value(golem).unwrap()["type"],
            serde_json::json!("Golem")
        );
        assert_eq!(
            keystore.resolve_id(&partner.id()[..8]).unwrap(),
            partner.id()
        );
        // Expired, broken or tampered: refused with the reason, nothing written.
        let expired = golem_certificate(
            "Old",
            &GolemGrant {
                days: (-5, -1),
                ..GolemGrant::all()
            },
            Some(&golem_root),
        );
        let bad_file = dir.path().join("bad.json");
        std::fs::write(&bad_file, expired.document.to_string()).unwrap();
        let error = Keystore::add_file(&cert_dir, &bad_file, now()).unwrap_err();
        assert!(error.to_string().contains("expired"), "{error}");
        let mut tampered = partner.document.clone();
        tampered["certificate"]["subject"]["displayName"] = serde_json::json!("Someone Else");
        std::fs::write(&bad_file, tampered.to_string()).unwrap();
        let error = Keystore::add_file(&cert_dir, &bad_file, now()).unwrap_err();
        assert_eq!(
            error.to_string(),
            format!(
                "{} is not a valid Golem certificate: Invalid signature",
                bad_file.display()
            )
        );
        assert_eq!(std::fs::read_dir(&cert_dir).unwrap().count(), 2);
        let removed = Keystore::remove(&cert_dir, &partner.id()[..12]).unwrap();
        assert_eq!(removed.kind, CertificateKind::Golem);
        let keystore = Keystore::load(&cert_dir).unwrap();
        assert!(keystore.golem_certificates.is_empty());
        assert_eq!(keystore.certificates.len(), 1);
    }
}
