//! The outbound rules: `<data-dir>/rules.json`, the original's file and
//! format. Default (no file): `{"outbound":{"enabled":true,
//! "everyone":"whitelist","audited-payload":{},"partner":{}}}`. The
//! `audited-payload` and `partner` maps go from a certificate id to
//! `{"mode": …, "description": …}`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub const RULES_FILE: &str = "rules.json";

/// What a rule lets through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Any URL the manifest names.
    All,
    /// Nothing: the rule is disabled.
    None,
    /// Only manifests whose every URL host is in the domain whitelist.
    Whitelist,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::All => "all",
            Mode::None => "none",
            Mode::Whitelist => "whitelist",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertRule {
    pub mode: Mode,
    #[serde(default)]
    pub description: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct OutboundRules {
    pub enabled: bool,
    pub everyone: Mode,
    #[serde(default)]
    pub audited_payload: BTreeMap<String, CertRule>,
    #[serde(default)]
    pub partner: BTreeMap<String, CertRule>,
}

impl Default for OutboundRules {
    fn default() -> Self {
        OutboundRules {
            enabled: true,
            everyone: Mode::Whitelist,
            audited_payload: BTreeMap::new(),
            partner: BTreeMap::new(),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RulesConfig {
    pub outbound: OutboundRules,
}

#[derive(Debug, thiserror::Error)]
pub enum RulesError {
    #[error("cannot read {path}: {message} (fix or remove the file; `golem-provider rule list` shows the defaults)")]
    Read { path: String, message: String },
    #[error("cannot write {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
}

impl RulesConfig {
    pub fn path(data_dir: &Path) -> PathBuf {
        data_dir.join(RULES_FILE)
    }

    /// The rules in `data_dir` (missing file: the defaults).
    pub fn load(data_dir: &Path) -> Result<RulesConfig, RulesError> {
        let path = Self::path(data_dir);
        crate::outbound::read_json_or_default(&path).map_err(|message| RulesError::Read {
            path: path.display().to_string(),
            message,
        })
    }

    pub fn save(&self, data_dir: &Path) -> Result<(), RulesError> {
        let path = Self::path(data_dir);
        crate::outbound::write_json(&path, self).map_err(|source| RulesError::Write {
            path: path.display().to_string(),
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn defaults_and_file_format_are_the_originals() {
        let dir = tempfile::tempdir().unwrap();
        let rules = RulesConfig::load(dir.path()).unwrap();
        assert_eq!(
            serde_json::to_value(&rules).unwrap(),
            serde_json::json!({"outbound": {"enabled": true, "everyone": "whitelist",
                                            "audited-payload": {}, "partner": {}}})
        );
        let mut rules = rules;
        rules.outbound.audited_payload.insert(
            "ab".into(),
            CertRule {
                mode: Mode::All,
                description: String::new(),
            },
        );
        rules.save(dir.path()).unwrap();
        assert_eq!(RulesConfig::load(dir.path()).unwrap(), rules);
        std::fs::write(RulesConfig::path(dir.path()), "{").unwrap();
        let error = RulesConfig::load(dir.path()).unwrap_err();
        assert!(error.to_string().contains(RULES_FILE), "{error}");
    }
}
