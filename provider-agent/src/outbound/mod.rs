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
//! `partner` (Golem certificates, gcert) is not supported here: a demand
//! with a node descriptor gets the rule's reason saying so. Before the
//! rules, [`judge`] refuses what this provider cannot enforce: an offer
//! without the `inet` capability (the VM unit sets it only where it can
//! filter a container's traffic), and `unrestricted` access (enforcement
//! allows exactly the manifest's URLs).

pub mod commands;
pub mod keystore;
pub mod rules;
#[cfg(any(test, feature = "test-ca"))]
pub mod test_ca;
pub mod whitelist;

use std::path::Path;

use golem_model::manifest::{keys, OutboundAccess, PayloadDemand, INET_CAPABILITY};
use golem_model::properties::Properties;
use serde_json::{Map, Value};

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
        // The rule set nearest the leaf decides.
        for id in chain.iter().rev() {
            if let Some(rule) = self.rules.outbound.audited_payload.get(id) {
                return self
                    .check_mode(rule.mode, access)
                    .map_err(|reason| format!("Audited-Payload {reason}"));
            }
        }
        Err(format!(
            "Audited-Payload rule whole chain of cert_ids is not trusted: {chain:?}"
        ))
    }

    fn partner(&self, payload: &PayloadDemand) -> Result<(), String> {
        if payload.node_descriptor.is_none() {
            return Err("Partner rule requires node descriptor".into());
        }
        Err("Partner rule: node descriptors (Golem certificates) are not supported by this provider; \
             sign the manifest with an X.509 certificate (audited-payload) instead"
            .into())
    }

    /// The rules' verdict on a manifest that asks for outbound access.
    pub fn decide(&self, payload: &PayloadDemand, now: i64) -> Result<(), String> {
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
            self.partner(payload),
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

/// Judge the payload manifest of `demand` for `offer` (flat properties) at
/// unix time `now`, with the rules in `data_dir`. `Ok` when there is no
/// manifest or it asks for no outbound access.
pub fn judge(
    data_dir: &Path,
    demand: &Properties,
    offer: &Map<String, Value>,
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
    OutboundPolicy::load(data_dir)?.decide(&payload, now)
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
        policy.decide(&listed, now()).unwrap();
        let other = unsigned(json!({"urls": ["http://api.golem.test/", "https://evil.test"]}));
        assert_eq!(
            policy.decide(&other, now()).unwrap_err(),
            format!("Outbound rejected because: Everyone rule didn't match whitelist ; {NOT_SIGNED}{NO_DESCRIPTOR}")
        );
        let mut none = policy.clone();
        none.rules.outbound.everyone = Mode::None;
        assert!(none
            .decide(&listed, now())
            .unwrap_err()
            .contains("Everyone rule is disabled ; "));
        let mut all = OutboundPolicy::default();
        all.rules.outbound.everyone = Mode::All;
        all.decide(&other, now()).unwrap();
        let mut disabled = all;
        disabled.rules.outbound.enabled = false;
        assert_eq!(
            disabled.decide(&other, now()).unwrap_err(),
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
        let error = policy.decide(&demand, now()).unwrap_err();
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
        policy.decide(&demand, now()).unwrap();
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
            .decide(&demand, now())
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
            .decide(&signed(urls.clone(), &expired), now())
            .unwrap_err();
        assert!(error.contains("Everyone rule didn't match whitelist ; Audited-Payload rule: Unable to verify X509 certificate. ; "), "{error}");
        let foreign = test_ca::leaf("Foreign", &test_ca::root("Foreign Root"), (-1, 30));
        let error = policy
            .decide(&signed(urls.clone(), &foreign), now())
            .unwrap_err();
        assert!(
            error.contains("Audited-Payload rule: Unable to verify X509 certificate. ; "),
            "{error}"
        );
        let leaf = test_ca::leaf("Leaf", &root, (-1, 30));
        let mut tampered = signed(urls, &leaf);
        tampered.manifest_text.push(' ');
        let error = policy.decide(&tampered, now()).unwrap_err();
        assert!(
            error.contains("Audited-Payload rule: Invalid signature. ; "),
            "{error}"
        );
    }

    #[test]
    fn partner_is_not_supported_and_says_so() {
        let properties = Properties::from_json(json!({
            keys::PAYLOAD: manifest_text(json!({"urls": ["https://a.test"]})),
            keys::NODE_DESCRIPTOR: {"nodeDescriptor": {"nodeId": "0xab"}},
        }))
        .unwrap();
        let demand = PayloadDemand::from_properties(&properties)
            .unwrap()
            .unwrap();
        let error = OutboundPolicy::default()
            .decide(&demand, now())
            .unwrap_err();
        assert!(error.ends_with("Partner rule: node descriptors (Golem certificates) are not supported by this provider; sign the manifest with an X.509 certificate (audited-payload) instead ; "), "{error}");
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
        judge(dir.path(), &urls, inet, now()).unwrap();
        let error = judge(dir.path(), &urls, wasm, now()).unwrap_err();
        assert!(
            error.contains("cannot enforce on runtime wasmtime"),
            "{error}"
        );
        let unrestricted = demand(json!({"unrestricted": {"urls": true}}));
        let error = judge(dir.path(), &unrestricted, inet, now()).unwrap_err();
        assert!(error.contains("unrestricted"), "{error}");
        // No manifest, or no outbound asked: nothing to judge, on any runtime.
        judge(dir.path(), &Properties::default(), wasm, now()).unwrap();
        judge(dir.path(), &demand(json!({"urls": []})), wasm, now()).unwrap();
        let broken = Properties::from_json(json!({keys::PAYLOAD: "e30="})).unwrap();
        let error = judge(dir.path(), &broken, inet, now()).unwrap_err();
        assert!(error.starts_with("invalid manifest: "), "{error}");
    }
}
