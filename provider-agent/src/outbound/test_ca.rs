//! Certificates minted for tests (feature `test-ca`, and this crate's unit
//! tests): a root CA, leaves it signs with chosen validity, and signatures
//! by their keys; ECDSA P-256 with SHA-256, what `ring` generates. Never
//! used by the agent itself.
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
