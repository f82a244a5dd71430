//! Outbound internet access under payload manifests, the provider's side:
//! whether a demand whose manifest asks for outbound access may have it.
//! The rules are the original's ([`rules`]: `rules.json`; [`whitelist`]:
//! `domain_whitelist.json`; [`keystore`]: `cert-dir/`, all in the agent's
//! data dir and read at each decision, so `golem-provider rule|whitelist|
//! keystore` changes apply to the next proposal):
//! - outbound disabled → "outbound is disabled";
//! - otherwise `everyone`, `audited-payload` and `partner` are all checked
//!   and any acceptance wins; else "Outbound rejected because: <a> ; <b> ;
//!   <c> ; " with each rule's reason.
//!
//! `partner` trusts a requestor by its node descriptor
//! ([`golem_certificate`]): the descriptor must verify now, name the
//! requestor's node id, and allow each manifest URL; then the rule set on
//! the certificate of its chain nearest the descriptor (a Golem certificate
//! of the keystore) decides. Before the rules, [`judge`] refuses what this
//! provider cannot enforce: an offer without the `inet` capability (the VM
//! unit sets it only where it can filter a container's traffic), and
//! `unrestricted` access (enforcement allows exactly the manifest's URLs;
//! a partner's `unrestricted` or `all` permission lets a manifest name any
//! URLs, and the container still reaches exactly those).

pub mod canonical_json;
pub mod commands;
pub mod golem_certificate;
pub mod keystore;
pub mod rules;
#[cfg(any(test, feature = "test-ca"))]
pub mod test_ca;
pub mod whitelist;

use std::path::Path;

use golem_model::manifest::{keys, OutboundAccess, PayloadDemand, INET_CAPABILITY};
use golem_model::properties::Properties;
use golem_model::NodeId;
use serde_json::{Map, Value};

use golem_certificate::{OutboundPermissions, Permissions};
use keystore::Keystore;
use rules::{Mode, RulesConfig};
use whitelist::DomainWhitelist;

/// The JSON document at `path`, or the default when there is no file; the
/// error is the reason (unreadable, or not the expected JSON).
pub(crate) fn read_json_or_default<T: serde::de::DeserializeOwned + Default>(
    path: &Path,
) -> Result<T, String> {
    match std::fs::read_to_string(path) {
        Ok(text) => serde_json::from_str(&text).map_err(|error| error.to_string()),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(T::default()),
        Err(error) => Err(error.to_string()),
    }
}

/// Write `value` as pretty JSON through a temporary file and a rename.
pub(crate) fn write_json(path: &Path, value: &impl serde::Serialize) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let text = serde_json::to_string_pretty(value).map_err(std::io::Error::other)?;
    let temporary = path.with_extension("json.tmp");
    std::fs::write(&temporary, text + "\n")?;
    std::fs::rename(&temporary, path)
}

/// Who vouches for a manifest: its X.509 signer, or the requestor's partner chain.
#[derive(Debug, Clone, Copy)]
enum Signer {
    AuditedPayload,
    Partner,
}

/// The provider's rules, whitelist and keystore, as read from its data dir.
#[derive(Debug, Clone, Default)]
pub struct OutboundPolicy {
    pub rules: RulesConfig,
    pub whitelist: DomainWhitelist,
    pub keystore: Keystore,
}

impl OutboundPolicy {
    pub fn load(data_dir: &Path) -> Result<OutboundPolicy, String> {
        Ok(OutboundPolicy {
            rules: RulesConfig::load(data_dir).map_err(|error| error.to_string())?,
            whitelist: DomainWhitelist::load(data_dir).map_err(|error| error.to_string())?,
            keystore: Keystore::load(&Keystore::dir(data_dir))
                .map_err(|error| error.to_string())?,
        })
    }

    fn check_mode(&self, mode: Mode, access: &OutboundAccess) -> Result<(), &'static str> {
        match mode {
            Mode::All => Ok(()),
            Mode::None => Err("rule is disabled"),
            Mode::Whitelist => match access {
                OutboundAccess::Urls(urls) => {
                    let listed = urls.iter().all(|url| {
                        golem_model::manifest::target_of(url)
                            .is_ok_and(|target| self.whitelist.matches(&target.host))
                    });
                    if listed {
                        Ok(())
                    } else {
                        Err("rule didn't match whitelist")
                    }
                }
                OutboundAccess::Unrestricted => Err("rule didn't match whitelist"),
            },
        }
    }

    fn everyone(&self, access: &OutboundAccess) -> Result<(), String> {
        self.check_mode(self.rules.outbound.everyone, access)
            .map_err(|reason| format!("Everyone {reason}"))
    }

    fn audited_payload(
        &self,
        payload: &PayloadDemand,
        access: &OutboundAccess,
        now: i64,
    ) -> Result<(), String> {
        let signature = payload
            .signature
            .as_ref()
            .ok_or("Audited-Payload rule requires manifest signature")?;
        let chain = self
            .keystore
            .verify(
                &signature.certificate,
                &signature.algorithm,
                payload.manifest_text.as_bytes(),
                &signature.signature,
                now,
            )
            .map_err(|reason| format!("Audited-Payload rule: {reason}"))?;
        let nearest_leaf_first = chain.iter().rev();
        self.nearest_rule(Signer::AuditedPayload, nearest_leaf_first, access)
            .unwrap_or_else(|| {
                Err(format!(
                    "Audited-Payload rule whole chain of cert_ids is not trusted: {chain:?}"
                ))
            })
    }

    /// The verdict of the rule set on the certificate nearest the signer
    /// among `chain` (nearest first), by its mode; `None` when no
    /// certificate of the chain has one. A partner rule counts only while
    /// its certificate is in the keystore.
    fn nearest_rule<'a>(
        &self,
        signer: Signer,
        chain: impl IntoIterator<Item = &'a String>,
        access: &OutboundAccess,
    ) -> Option<Result<(), String>> {
        let (rules, name) = match signer {
            Signer::AuditedPayload => (&self.rules.outbound.audited_payload, "Audited-Payload"),
            Signer::Partner => (&self.rules.outbound.partner, "Partner"),
        };
        let counts = |id: &str| match signer {
            Signer::AuditedPayload => true,
            Signer::Partner => self.keystore.golem_certificate(id).is_some(),
        };
        let rule = chain
            .into_iter()
            .find_map(|id| rules.get(id).filter(|_| counts(id)))?;
        Some(
            self.check_mode(rule.mode, access)
                .map_err(|reason| format!("{name} {reason}")),
        )
    }

    fn partner(
        &self,
        payload: &PayloadDemand,
        access: &OutboundAccess,
        requestor: &NodeId,
        now: i64,
    ) -> Result<(), String> {
        let descriptor = payload
            .node_descriptor
            .as_ref()
            .ok_or("Partner rule requires node descriptor")?;
        let now = chrono::DateTime::from_timestamp(now, 0).unwrap_or_default();
        let descriptor = golem_certificate::validate_node_descriptor(descriptor, Some(now))
            .map_err(|error| format!("Partner verification of node descriptor failed: {error}"))?;
        if *requestor != descriptor.node_id {
            return Err(format!(
                "Partner rule nodes mismatch. requestor node_id: {requestor} but cert node_id: {}",
                descriptor.node_id
            ));
        }
        partner_permits(&descriptor.permissions, access)
            .map_err(|reason| format!("Partner {reason}"))?;
        self.nearest_rule(Signer::Partner, &descriptor.chain_fingerprints, access)
            .unwrap_or_else(|| {
                Err(format!(
                    "Partner rule whole chain of cert_ids is not trusted: {:?}",
                    descriptor.chain_fingerprints
                ))
            })
    }

    /// The rules' verdict on a manifest that asks for outbound access, sent
    /// by `requestor`.
    pub fn decide(
        &self,
        payload: &PayloadDemand,
        requestor: &NodeId,
        now: i64,
    ) -> Result<(), String> {
        if !self.rules.outbound.enabled {
            return Err("outbound is disabled".into());
        }
        let access = payload
            .manifest
            .outbound_access()
            .map_err(|error| error.to_string())?
            .unwrap_or(OutboundAccess::Urls(Vec::new()));
        let verdicts = [
            self.everyone(&access),
            self.audited_payload(payload, &access, now),
            self.partner(payload, &access, requestor, now),
        ];
        if verdicts.iter().any(Result::is_ok) {
            return Ok(());
        }
        let reasons: String = verdicts
            .into_iter()
            .filter_map(Result::err)
            .map(|reason| reason + " ; ")
            .collect();
        Err(format!("Outbound rejected because: {reasons}"))
    }
}

/// Whether a node descriptor's `permissions` allow `access`: `all`,
/// `outbound` `unrestricted`, or a URL list holding each manifest URL (as
/// parsed URLs, so `https://a.test` and `https://a.test/` are one).
fn partner_permits(permissions: &Permissions, access: &OutboundAccess) -> Result<(), String> {
    let Permissions::Object(details) = permissions else {
        return Ok(());
    };
    match (&details.outbound, access) {
        (None, _) => Err("No outbound permissions".into()),
        (Some(OutboundPermissions::Unrestricted), _) => Ok(()),
        (Some(OutboundPermissions::Urls(_)), OutboundAccess::Unrestricted) => Err(
            "Manifest tries to use Unrestricted access, but certificate allows only for specific urls"
                .into(),
        ),
        (Some(OutboundPermissions::Urls(permitted)), OutboundAccess::Urls(requested)) => {
            for url in requested {
                let allowed = url::Url::parse(url).is_ok_and(|parsed| permitted.contains(&parsed));
                if !allowed {
                    let shown = url::Url::parse(url).map_or(url.clone(), |parsed| parsed.to_string());
                    return Err(format!("Partner rule forbidden url requested: {shown}"));
                }
            }
            Ok(())
        }
    }
}

/// Whether an offer's runtime capabilities include `capability`.
pub fn offers_capability(offer: &Map<String, Value>, capability: &str) -> bool {
    offer
        .get(keys::RUNTIME_CAPABILITIES)
        .and_then(Value::as_array)
        .is_some_and(|capabilities| {
            capabilities
                .iter()
                .any(|value| value.as_str() == Some(capability))
        })
}

/// Judge the payload manifest of `demand` (sent by `requestor`) for
/// `offer` (flat properties) at unix time `now`, with the rules in
/// `data_dir`. `Ok` when there is no manifest or it asks for no outbound
/// access.
pub fn judge(
    data_dir: &Path,
    demand: &Properties,
    offer: &Map<String, Value>,
    requestor: &NodeId,
    now: i64,
) -> Result<(), String> {
    let Some(payload) =
        PayloadDemand::from_properties(demand).map_err(|error| error.to_string())?
    else {
        return Ok(());
    };
    if !payload.manifest.requests_outbound() {
        return Ok(());
    }
    let runtime = offer
        .get("golem.runtime.name")
        .and_then(Value::as_str)
        .unwrap_or("?");
    if !offers_capability(offer, INET_CAPABILITY) {
        return Err(format!(
            "the manifest asks for outbound access, which this provider cannot enforce on \
             runtime {runtime} (its offer has no `{INET_CAPABILITY}` capability); \
             constrain the demand on golem.runtime.capabilities={INET_CAPABILITY}"
        ));
    }
    if payload.manifest.outbound_access() == Ok(Some(OutboundAccess::Unrestricted)) {
        return Err(
            "the manifest asks for unrestricted outbound access, which this provider cannot \
             enforce (it lets a container reach exactly its manifest's URLs); list the URLs instead"
                .into(),
        );
    }
    OutboundPolicy::load(data_dir)?.decide(&payload, requestor, now)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::rules::CertRule;
    use super::test_ca;
    use super::whitelist::{validated, MatchType};
    use super::*;
    use golem_model::manifest::encode_base64;
    use serde_json::json;

    fn manifest_text(urls: Value) -> String {
        let manifest = json!({"version": "0.1.0", "createdAt": "2024-01-01T00:00:00Z",
            "expiresAt": "2100-01-01T00:00:00Z", "payload": [],
            "compManifest": {"version": "0.1.0", "net": {"inet": {"out": urls}}}});
        encode_base64(manifest.to_string().as_bytes())
    }

    fn unsigned(urls: Value) -> PayloadDemand {
        let properties =
            Properties::from_json(json!({keys::PAYLOAD: manifest_text(urls)})).unwrap();
        PayloadDemand::from_properties(&properties)
            .unwrap()
            .unwrap()
    }

    fn signed(urls: Value, signer: &test_ca::Minted) -> PayloadDemand {
        let text = manifest_text(urls);
        let signature = test_ca::sign(signer, text.as_bytes());
        let properties = Properties::from_json(json!({
            keys::PAYLOAD: text,
            keys::SIGNATURE: encode_base64(&signature),
            keys::SIGNATURE_ALGORITHM: "sha256",
            keys::CERTIFICATE: encode_base64(signer.pem.as_bytes()),
        }))
        .unwrap();
        PayloadDemand::from_properties(&properties)
            .unwrap()
            .unwrap()
    }

    fn now() -> i64 {
        chrono::Utc::now().timestamp()
    }

    fn policy_with_whitelist(hosts: &[&str]) -> OutboundPolicy {
        let mut policy = OutboundPolicy::default();
        policy.whitelist.add(
            hosts
                .iter()
                .map(|host| validated(host, MatchType::Strict).unwrap())
                .collect(),
        );
        policy
    }

    const NOT_SIGNED: &str = "Audited-Payload rule requires manifest signature ; ";
    const NO_DESCRIPTOR: &str = "Partner rule requires node descriptor ; ";

    #[test]
    fn everyone_passes_whitelisted_hosts_only() {
        let policy = policy_with_whitelist(&["api.golem.test"]);
        let listed = unsigned(json!({"urls": ["http://api.golem.test:8080/x"]}));
        policy.decide(&listed, &requestor(), now()).unwrap();
        let other = unsigned(json!({"urls": ["http://api.golem.test/", "https://evil.test"]}));
        assert_eq!(
            policy.decide(&other, &requestor(), now()).unwrap_err(),
            format!("Outbound rejected because: Everyone rule didn't match whitelist ; {NOT_SIGNED}{NO_DESCRIPTOR}")
        );
        let mut none = policy.clone();
        none.rules.outbound.everyone = Mode::None;
        assert!(none
            .decide(&listed, &requestor(), now())
            .unwrap_err()
            .contains("Everyone rule is disabled ; "));
        let mut all = OutboundPolicy::default();
        all.rules.outbound.everyone = Mode::All;
        all.decide(&other, &requestor(), now()).unwrap();
        let mut disabled = all;
        disabled.rules.outbound.enabled = false;
        assert_eq!(
            disabled.decide(&other, &requestor(), now()).unwrap_err(),
            "outbound is disabled"
        );
    }

    #[test]
    fn audited_payload_needs_a_keystore_chain_and_a_rule() {
        let root = test_ca::root("Test Root");
        let leaf = test_ca::leaf("Test Leaf", &root, (-1, 30));
        let mut policy = OutboundPolicy::default();
        policy.keystore.certificates = keystore::parse_certificates(root.pem.as_bytes()).unwrap();
        let root_id = policy.keystore.certificates[0].id();
        let demand = signed(json!({"urls": ["https://api.golem.test"]}), &leaf);
        // Verified, but no rule for any certificate of the chain.
        let error = policy.decide(&demand, &requestor(), now()).unwrap_err();
        assert!(
            error.contains("Audited-Payload rule whole chain of cert_ids is not trusted: [\"")
                && error.contains(&root_id),
            "{error}"
        );
        policy.rules.outbound.audited_payload.insert(
            root_id.clone(),
            CertRule {
                mode: Mode::All,
                description: String::new(),
            },
        );
        policy.decide(&demand, &requestor(), now()).unwrap();
        // A rule on the leaf wins over the root's.
        let leaf_id = keystore::Certificate {
            der: leaf.der.clone(),
        }
        .id();
        policy.rules.outbound.audited_payload.insert(
            leaf_id,
            CertRule {
                mode: Mode::None,
                description: String::new(),
            },
        );
        assert!(policy
            .decide(&demand, &requestor(), now())
            .unwrap_err()
            .contains("Audited-Payload rule is disabled ; "));
    }

    #[test]
    fn expired_foreign_and_tampered_signatures_are_refused_with_the_originals_reasons() {
        let root = test_ca::root("Test Root");
        let mut policy = OutboundPolicy::default();
        policy.keystore.certificates = keystore::parse_certificates(root.pem.as_bytes()).unwrap();
        let root_id = policy.keystore.certificates[0].id();
        policy.rules.outbound.audited_payload.insert(
            root_id,
            CertRule {
                mode: Mode::All,
                description: String::new(),
            },
        );
        let urls = json!({"urls": ["https://api.golem.test"]});
        let expired = test_ca::leaf("Old Leaf", &root, (-30, -1));
        let error = policy
            .decide(&signed(urls.clone(), &expired), &requestor(), now())
            .unwrap_err();
        assert!(error.contains("Everyone rule didn't match whitelist ; Audited-Payload rule: Unable to verify X509 certificate. ; "), "{error}");
        let foreign = test_ca::leaf("Foreign", &test_ca::root("Foreign Root"), (-1, 30));
        let error = policy
            .decide(&signed(urls.clone(), &foreign), &requestor(), now())
            .unwrap_err();
        assert!(
            error.contains("Audited-Payload rule: Unable to verify X509 certificate. ; "),
            "{error}"
        );
        let leaf = test_ca::leaf("Leaf", &root, (-1, 30));
        let mut tampered = signed(urls, &leaf);
        tampered.manifest_text.push(' ');
        let error = policy.decide(&tampered, &requestor(), now()).unwrap_err();
        assert!(
            error.contains("Audited-Payload rule: Invalid signature. ; "),
            "{error}"
        );
    }

    const REQUESTOR: &str = "0x338e02f29b63155beec8253af7ad367dd44b40c6";

    fn requestor() -> NodeId {
        REQUESTOR.parse().unwrap()
    }

    /// A demand for `urls` carrying `descriptor` (flattened, as the market sends it).
    fn with_descriptor(urls: &[&str], descriptor: &Value) -> PayloadDemand {
        let mut properties = json!({keys::PAYLOAD: manifest_text(json!({"urls": urls}))});
        flatten_into(&mut properties, keys::NODE_DESCRIPTOR, descriptor);
        PayloadDemand::from_properties(&Properties::from_json(properties).unwrap())
            .unwrap()
            .unwrap()
    }

    fn flatten_into(out: &mut Value, prefix: &str, value: &Value) {
        match value {
            Value::Object(members) => {
                for (name, member) in members {
                    flatten_into(out, &format!("{prefix}.{name}"), member);
                }
            }
            other => out[prefix] = other.clone(),
        }
    }

    struct PartnerChain {
        root: test_ca::GolemMinted,
        partner: test_ca::GolemMinted,
    }

    /// root (all) → partner (signNode, outbound to `urls`), the partner in
    /// the policy's keystore with a rule of `mode`.
    fn partner_policy(urls: &[&str], mode: Mode) -> (OutboundPolicy, PartnerChain) {
        let root = test_ca::golem_certificate("Partner Root", &test_ca::GolemGrant::all(), None);
        let partner = test_ca::golem_certificate(
            "Partner",
            &test_ca::GolemGrant {
                key_usage: json!(["signNode"]),
                permissions: json!({"outbound": {"urls": urls}}),
                days: (-5, 300),
            },
            Some(&root),
        );
        let mut policy = OutboundPolicy::default();
        let (document, validated) =
            golem_certificate::parse_certificate_file(partner.document.to_string().as_bytes())
                .unwrap();
        policy
            .keystore
            .golem_certificates
            .push(keystore::GolemCertificate {
                document,
                validated,
            });
        policy.rules.outbound.partner.insert(
            partner.id(),
            CertRule {
                mode,
                description: String::new(),
            },
        );
        (policy, PartnerChain { root, partner })
    }

    fn descriptor(node: &str, urls: &[&str], signer: &test_ca::GolemMinted) -> Value {
        test_ca::golem_node_descriptor(
            node,
            &test_ca::GolemGrant {
                key_usage: json!("all"),
                permissions: json!({"outbound": {"urls": urls}}),
                days: (-1, 30),
            },
            signer,
        )
    }

    /// The partner rule's part of a refusal where the other two refused as usual.
    fn partner_reason(error: &str) -> &str {
        let others = format!(
            "Outbound rejected because: Everyone rule didn't match whitelist ; {NOT_SIGNED}"
        );
        error
            .strip_prefix(&others)
            .unwrap_or_else(|| panic!("{error}"))
    }

    #[test]
    fn a_partner_descriptor_gets_the_urls_its_chain_allows() {
        let (policy, chain) = partner_policy(
            &["https://api.golem.test", "http://b.test:8080/"],
            Mode::All,
        );
        let urls = ["https://api.golem.test/", "http://b.test:8080"];
        let demand = with_descriptor(&urls, &descriptor(REQUESTOR, &urls, &chain.partner));
        policy.decide(&demand, &requestor(), now()).unwrap();
        // Mode whitelist: the hosts must be whitelisted too.
        let mut whitelisted = policy.clone();
        whitelisted
            .rules
            .outbound
            .partner
            .values_mut()
            .for_each(|rule| rule.mode = Mode::Whitelist);
        let error = whitelisted
            .decide(&demand, &requestor(), now())
            .unwrap_err();
        assert_eq!(
            partner_reason(&error),
            "Partner rule didn't match whitelist ; "
        );
        // A rule on the root instead (in the keystore): the chain reaches it.
        let mut by_root = OutboundPolicy::default();
        let (document, validated) =
            golem_certificate::parse_certificate_file(chain.root.document.to_string().as_bytes())
                .unwrap();
        by_root
            .keystore
            .golem_certificates
            .push(keystore::GolemCertificate {
                document,
                validated,
            });
        by_root.rules.outbound.partner.insert(
            chain.root.id(),
            CertRule {
                mode: Mode::All,
                description: String::new(),
            },
        );
        by_root.decide(&demand, &requestor(), now()).unwrap();
    }

    #[test]
    fn partner_refusals_give_the_originals_reasons() {
        let (policy, chain) = partner_policy(&["https://api.golem.test"], Mode::All);
        let urls = ["https://api.golem.test"];
        // Another node's descriptor.
        let other_node = "0x0000000000000000000000000000000000000001";
        let demand = with_descriptor(&urls, &descriptor(other_node, &urls, &chain.partner));
        let error = policy.decide(&demand, &requestor(), now()).unwrap_err();
        assert_eq!(
            partner_reason(&error),
            format!("Partner rule nodes mismatch. requestor node_id: {REQUESTOR} but cert node_id: {other_node} ; ")
        );
        // A URL the descriptor does not allow.
        let demand = with_descriptor(
            &["https://api.golem.test", "https://evil.test:444/x"],
            &descriptor(REQUESTOR, &urls, &chain.partner),
        );
        let error = policy.decide(&demand, &requestor(), now()).unwrap_err();
        assert_eq!(
            partner_reason(&error),
            "Partner Partner rule forbidden url requested: https://evil.test:444/x ; "
        );
        // No outbound permission at all.
        let none = test_ca::golem_node_descriptor(
            REQUESTOR,
            &test_ca::GolemGrant {
                key_usage: json!("all"),
                permissions: json!({"outbound": null}),
                days: (-1, 30),
            },
            &chain.partner,
        );
        let error = policy
            .decide(&with_descriptor(&urls, &none), &requestor(), now())
            .unwrap_err();
        assert_eq!(partner_reason(&error), "Partner No outbound permissions ; ");
        // A chain with no certificate of the keystore (a foreign root).
        let foreign_root =
            test_ca::golem_certificate("Foreign Root", &test_ca::GolemGrant::all(), None);
        let foreign = test_ca::golem_certificate(
            "Foreign Partner",
            &test_ca::GolemGrant {
                key_usage: json!(["signNode"]),
                permissions: json!("all"),
                days: (-5, 300),
            },
            Some(&foreign_root),
        );
        let error = policy
            .decide(
                &with_descriptor(&urls, &descriptor(REQUESTOR, &urls, &foreign)),
                &requestor(),
                now(),
            )
            .unwrap_err();
        assert_eq!(
            partner_reason(&error),
            format!(
                "Partner rule whole chain of cert_ids is not trusted: [\"{}\", \"{}\"] ; ",
                foreign.id(),
                foreign_root.id()
            )
        );
        // A rule whose certificate left the keystore counts no more.
        let mut removed = policy.clone();
        removed.keystore.golem_certificates.clear();
        let demand = with_descriptor(&urls, &descriptor(REQUESTOR, &urls, &chain.partner));
        let error = removed.decide(&demand, &requestor(), now()).unwrap_err();
        assert!(
            partner_reason(&error)
                .starts_with("Partner rule whole chain of cert_ids is not trusted: "),
            "{error}"
        );
        // Verification failures: expired, tampered.
        let expired = test_ca::golem_node_descriptor(
            REQUESTOR,
            &test_ca::GolemGrant {
                key_usage: json!("all"),
                permissions: json!("all"),
                days: (-3, -1),
            },
            &chain.partner,
        );
        let error = policy
            .decide(&with_descriptor(&urls, &expired), &requestor(), now())
            .unwrap_err();
        assert!(
            partner_reason(&error).starts_with(
                "Partner verification of node descriptor failed: Permissions extended: "
            ),
            "{error}"
        );
        let expired = descriptor(REQUESTOR, &urls, &chain.partner);
        let later = now() + 40 * 86_400;
        let error = policy
            .decide(&with_descriptor(&urls, &expired), &requestor(), later)
            .unwrap_err();
        assert!(
            partner_reason(&error).starts_with(
                "Partner verification of node descriptor failed: Expired: was valid to "
            ),
            "{error}"
        );
        let mut tampered = descriptor(REQUESTOR, &urls, &chain.partner);
        tampered["nodeDescriptor"]["permissions"] = json!("all");
        let error = policy
            .decide(&with_descriptor(&urls, &tampered), &requestor(), now())
            .unwrap_err();
        assert_eq!(
            partner_reason(&error),
            "Partner verification of node descriptor failed: Invalid signature ; "
        );
        // And none at all.
        let error = policy
            .decide(&unsigned(json!({"urls": urls})), &requestor(), now())
            .unwrap_err();
        assert_eq!(partner_reason(&error), NO_DESCRIPTOR);
    }

    #[test]
    fn judge_refuses_what_cannot_be_enforced() {
        let dir = tempfile::tempdir().unwrap();
        let mut rules = RulesConfig::default();
        rules.outbound.everyone = Mode::All;
        rules.save(dir.path()).unwrap();
        let demand =
            |out: Value| Properties::from_json(json!({keys::PAYLOAD: manifest_text(out)})).unwrap();
        let inet = json!({"golem.runtime.name": "vm", "golem.runtime.capabilities": ["inet", "manifest-support"]});
        let inet = inet.as_object().unwrap();
        let wasm = json!({"golem.runtime.name": "wasmtime"});
        let wasm = wasm.as_object().unwrap();
        let urls = demand(json!({"urls": ["http://a.test"]}));
        judge(dir.path(), &urls, inet, &requestor(), now()).unwrap();
        let error = judge(dir.path(), &urls, wasm, &requestor(), now()).unwrap_err();
        assert!(
            error.contains("cannot enforce on runtime wasmtime"),
            "{error}"
        );
        let unrestricted = demand(json!({"unrestricted": {"urls": true}}));
        let error = judge(dir.path(), &unrestricted, inet, &requestor(), now()).unwrap_err();
        assert!(error.contains("unrestricted"), "{error}");
        // No manifest, or no outbound asked: nothing to judge, on any runtime.
        judge(
            dir.path(),
            &Properties::default(),
            wasm,
            &requestor(),
            now(),
        )
        .unwrap();
        judge(
            dir.path(),
            &demand(json!({"urls": []})),
            wasm,
            &requestor(),
            now(),
        )
        .unwrap();
        let broken = Properties::from_json(json!({keys::PAYLOAD: "e30="})).unwrap();
        let error = judge(dir.path(), &broken, inet, &requestor(), now()).unwrap_err();
        assert!(error.starts_with("invalid manifest: "), "{error}");
    }
}
