//! The agreement file an exe unit is started with: the agreement JSON as the
//! market API returns it. Only the properties matter here; they are read as
//! flat dotted keys whether the file holds them flat or nested.

use std::path::Path;
use std::time::Duration;

use golem_model::manifest::PayloadDemand;
use golem_model::properties::Properties;
use serde_json::Value;

pub const TASK_PACKAGE: &str = "golem.srv.comp.task_package";
pub const MEMORY_GIB: &str = "golem.inf.mem.gib";
pub const EXPIRATION: &str = "golem.srv.comp.expiration";
pub use golem_model::pricing::{
    USAGE_CPU_SEC as USAGE_CPU, USAGE_DURATION_SEC as USAGE_DURATION, USAGE_VECTOR,
};
pub const STORAGE_GIB: &str = "golem.inf.storage.gib";

#[derive(Debug, thiserror::Error)]
pub enum AgreementError {
    #[error("cannot read the agreement file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("the agreement file {path} is not valid JSON: {source}")]
    Json {
        path: String,
        source: serde_json::Error,
    },
    #[error("the agreement has invalid {side} properties: {message}")]
    Properties { side: &'static str, message: String },
}

#[derive(Debug, Clone, Default)]
pub struct Agreement {
    pub agreement_id: String,
    /// The provider's node id (`offer.providerId`): the node this exe unit serves.
    pub provider_id: String,
    /// The requestor's node id (`demand.requestorId`).
    pub requestor_id: String,
    pub offer: Properties,
    pub demand: Properties,
}

impl Agreement {
    pub fn load(path: &Path) -> Result<Agreement, AgreementError> {
        let text = std::fs::read_to_string(path).map_err(|source| AgreementError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let value: Value = serde_json::from_str(&text).map_err(|source| AgreementError::Json {
            path: path.display().to_string(),
            source,
        })?;
        Agreement::from_json(value)
    }

    pub fn from_json(mut value: Value) -> Result<Agreement, AgreementError> {
        let agreement_id = value
            .get("agreementId")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let provider_id = value
            .get("offer")
            .and_then(|offer| offer.get("providerId"))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let requestor_id = value
            .get("demand")
            .and_then(|demand| demand.get("requestorId"))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let mut side = |name: &'static str| -> Result<Properties, AgreementError> {
            let properties = value
                .get_mut(name)
                .and_then(|side| side.get_mut("properties"))
                .map(Value::take)
                .unwrap_or(Value::Object(Default::default()));
            Properties::from_json(properties).map_err(|error| AgreementError::Properties {
                side: name,
                message: error.to_string(),
            })
        };
        let offer = side("offer")?;
        let demand = side("demand")?;
        Ok(Agreement {
            agreement_id,
            provider_id,
            requestor_id,
            offer,
            demand,
        })
    }

    /// A property from the offer, else from the demand.
    pub fn property(&self, key: &str) -> Option<&Value> {
        self.offer.get(key).or_else(|| self.demand.get(key))
    }

    /// `golem.srv.comp.task_package` (demand), e.g. `hash:sha3:<hex>:<url>`;
    /// without one, the image of the demand's payload manifest (its
    /// `x86_64`/`linux` payload entry), as on the original.
    pub fn task_package(&self) -> Option<String> {
        if let Some(package) = self
            .demand
            .get(TASK_PACKAGE)
            .or_else(|| self.offer.get(TASK_PACKAGE))
            .and_then(Value::as_str)
        {
            return Some(package.to_string());
        }
        PayloadDemand::from_properties(&self.demand)
            .ok()
            .flatten()
            .and_then(|payload| payload.manifest.task_package())
    }

    /// Memory limit in bytes from `golem.inf.mem.gib`.
    pub fn memory_limit_bytes(&self) -> Option<u64> {
        let gib = self.property(MEMORY_GIB).and_then(Value::as_f64)?;
        if gib.is_finite() && gib > 0.0 {
            Some((gib * (1u64 << 30) as f64) as u64)
        } else {
            None
        }
    }

    /// Whether the requestor is the provider's own node (both ids known and
    /// equal, case-insensitively); only then may it use the provider's files.
    pub fn requestor_is_provider(&self) -> bool {
        !self.provider_id.is_empty() && self.provider_id.eq_ignore_ascii_case(&self.requestor_id)
    }

    /// The storage the provider offered (`golem.inf.storage.gib`), in bytes.
    pub fn storage_limit_bytes(&self) -> Option<u64> {
        let gib = self.offer.get(STORAGE_GIB).and_then(Value::as_f64)?;
        (gib.is_finite() && gib > 0.0).then_some((gib * (1u64 << 30) as f64) as u64)
    }

    /// Time left until `golem.srv.comp.expiration` (unix ms), if set.
    pub fn time_to_expiration(&self, now_ms: i64) -> Option<Duration> {
        let expiration = self.property(EXPIRATION).and_then(Value::as_i64)?;
        Some(Duration::from_millis(
            u64::try_from(expiration.saturating_sub(now_ms)).unwrap_or(0),
        ))
    }

    /// The usage counters the requestor pays for, in order; defaults to
    /// duration and CPU seconds.
    pub fn usage_vector(&self) -> Vec<String> {
        match self.property(USAGE_VECTOR).and_then(Value::as_array) {
            Some(names) => names
                .iter()
                .filter_map(|name| name.as_str().map(str::to_string))
                .collect(),
            None => vec![USAGE_DURATION.to_string(), USAGE_CPU.to_string()],
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    #[test]
    fn without_a_task_package_the_manifest_names_the_image() {
        let manifest = json!({"version": "0.1.0", "createdAt": "2024-01-01T00:00:00Z",
            "expiresAt": "2100-01-01T00:00:00Z",
            "payload": [{"platform": {"arch": "x86_64", "os": "linux"},
                         "urls": ["http://127.0.0.1:1/i.tar"], "hash": "sha3:cd"}]});
        let encoded = golem_model::manifest::encode_base64(manifest.to_string().as_bytes());
        let agreement = Agreement::from_json(json!({
            "demand": {"properties": {"golem.srv.comp.payload": encoded}}
        }))
        .unwrap();
        assert_eq!(
            agreement.task_package().as_deref(),
            Some("hash:sha3:cd:http://127.0.0.1:1/i.tar")
        );
    }

    #[test]
    fn reads_flat_and_nested_properties() {
        let agreement = Agreement::from_json(json!({
            "agreementId": "a1",
            "offer": {"providerId": "0xabc", "properties": {"golem.inf.mem.gib": 0.5, "golem.inf.storage.gib": 2,
                                     "golem.com.usage.vector": ["golem.usage.cpu_sec", "golem.usage.duration_sec"]}},
            "demand": {"requestorId": "0xdef", "properties": {"golem": {"srv": {"comp": {"task_package": "hash:sha3:ab:http://x",
                                                                 "expiration": 10_000}}}}}
        }))
        .unwrap();
        assert_eq!(agreement.agreement_id, "a1");
        assert_eq!(agreement.provider_id, "0xabc");
        assert_eq!(agreement.requestor_id, "0xdef");
        assert!(!agreement.requestor_is_provider());
        assert_eq!(agreement.storage_limit_bytes(), Some(2 << 30));
        assert_eq!(agreement.memory_limit_bytes(), Some(512 << 20));
        assert_eq!(
            agreement.task_package().as_deref(),
            Some("hash:sha3:ab:http://x")
        );
        assert_eq!(
            agreement.usage_vector(),
            vec!["golem.usage.cpu_sec", "golem.usage.duration_sec"]
        );
        assert_eq!(
            agreement.time_to_expiration(4_000),
            Some(Duration::from_secs(6))
        );
        assert_eq!(agreement.time_to_expiration(20_000), Some(Duration::ZERO));
    }

    #[test]
    fn missing_parts_have_defaults() {
        let agreement = Agreement::from_json(json!({})).unwrap();
        assert_eq!(agreement.task_package(), None);
        assert_eq!(agreement.memory_limit_bytes(), None);
        assert_eq!(agreement.usage_vector().len(), 2);
        assert!(
            !agreement.requestor_is_provider(),
            "unknown ids are another node"
        );
        assert_eq!(agreement.storage_limit_bytes(), None);
    }
}
