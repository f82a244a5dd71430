//! The domain whitelist of the `everyone` rule (and of any rule in
//! `whitelist` mode): `<data-dir>/domain_whitelist.json`, e.g.
//! `{"patterns":[{"domain":"a.com","match":"strict"}]}`, the original's
//! file and format. Patterns match a URL's host only: `strict` is
//! case-insensitive equality (no subdomains); `regex` is a case-insensitive,
//! unanchored regular expression (`a\.com` also matches `a.com.evil.pro`;
//! anchor it with `^…$`). A pattern's id is the first 8 hex digits of the
//! MD5 of its domain text, as `whitelist list` shows it. Patterns are
//! validated when added, so a bad one never reaches the file.

use std::path::{Path, PathBuf};

use md5::{Digest, Md5};
use serde::{Deserialize, Serialize};

pub const WHITELIST_FILE: &str = "domain_whitelist.json";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum MatchType {
    Strict,
    Regex,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DomainPattern {
    pub domain: String,
    #[serde(rename = "match")]
    pub match_type: MatchType,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DomainWhitelist {
    #[serde(default)]
    pub patterns: Vec<DomainPattern>,
}

#[derive(Debug, thiserror::Error)]
pub enum WhitelistError {
    #[error("cannot read {path}: {message}")]
    Read { path: String, message: String },
    #[error("cannot write {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
    #[error("{domain:?} is not a valid regular expression ({message}); a pattern like `*.example.com` is `-t regex '(^|\\.)example\\.com$'`")]
    BadRegex { domain: String, message: String },
    #[error("{0:?} is not a host name: strict patterns are whole host names (letters, digits, `-`, `.`); use `-t regex` for patterns")]
    BadHost(String),
    #[error("no whitelist pattern has the id {0:?} (see `golem-provider whitelist list`)")]
    UnknownId(String),
}

/// The id of a pattern: 8 hex digits of MD5(domain).
pub fn pattern_id(domain: &str) -> String {
    hex::encode(Md5::digest(domain.as_bytes()))[..8].to_string()
}

fn is_host_name(domain: &str) -> bool {
    !domain.is_empty()
        && domain.len() <= 253
        && domain.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        })
}

/// A pattern checked and normalized (strict ones lowercased), ready to store.
pub fn validated(domain: &str, match_type: MatchType) -> Result<DomainPattern, WhitelistError> {
    let domain = domain.trim();
    match match_type {
        MatchType::Strict => {
            let domain = domain.to_ascii_lowercase();
            if !is_host_name(&domain) {
                return Err(WhitelistError::BadHost(domain));
            }
            Ok(DomainPattern { domain, match_type })
        }
        MatchType::Regex => {
            compile(domain).map_err(|message| WhitelistError::BadRegex {
                domain: domain.to_string(),
                message,
            })?;
            Ok(DomainPattern {
                domain: domain.to_string(),
                match_type,
            })
        }
    }
}

fn compile(pattern: &str) -> Result<regex::Regex, String> {
    regex::RegexBuilder::new(pattern)
        .case_insensitive(true)
        .build()
        .map_err(|error| {
            error
                .to_string()
                .lines()
                .last()
                .unwrap_or("")
                .trim()
                .to_string()
        })
}

impl DomainWhitelist {
    pub fn path(data_dir: &Path) -> PathBuf {
        data_dir.join(WHITELIST_FILE)
    }

    /// The whitelist in `data_dir` (missing: empty, the original's default).
    pub fn load(data_dir: &Path) -> Result<DomainWhitelist, WhitelistError> {
        let path = Self::path(data_dir);
        crate::outbound::read_json_or_default(&path).map_err(|message| WhitelistError::Read {
            path: path.display().to_string(),
            message,
        })
    }

    pub fn save(&self, data_dir: &Path) -> Result<(), WhitelistError> {
        let path = Self::path(data_dir);
        crate::outbound::write_json(&path, self).map_err(|source| WhitelistError::Write {
            path: path.display().to_string(),
            source,
        })
    }

    /// Add patterns not there yet; returns those added.
    pub fn add(&mut self, patterns: Vec<DomainPattern>) -> Vec<DomainPattern> {
        let mut added = Vec::new();
        for pattern in patterns {
            if !self.patterns.contains(&pattern) {
                self.patterns.push(pattern.clone());
                added.push(pattern);
            }
        }
        added
    }

    /// Remove the patterns with these ids; an unknown id removes nothing.
    pub fn remove(&mut self, ids: &[String]) -> Result<Vec<DomainPattern>, WhitelistError> {
        for id in ids {
            if !self
                .patterns
                .iter()
                .any(|pattern| pattern_id(&pattern.domain) == *id)
            {
                return Err(WhitelistError::UnknownId(id.clone()));
            }
        }
        let (removed, kept) = self
            .patterns
            .drain(..)
            .partition(|pattern| ids.contains(&pattern_id(&pattern.domain)));
        self.patterns = kept;
        Ok(removed)
    }

    /// Whether `host` matches a pattern. A regex that does not compile (a
    /// hand-edited file) matches nothing and is logged.
    pub fn matches(&self, host: &str) -> bool {
        self.patterns
            .iter()
            .any(|pattern| match pattern.match_type {
                MatchType::Strict => pattern.domain.eq_ignore_ascii_case(host),
                MatchType::Regex => match compile(&pattern.domain) {
                    Ok(regex) => regex.is_match(host),
                    Err(message) => {
                        tracing::warn!(pattern = %pattern.domain, %message, "whitelist regex does not compile; it matches nothing");
                        false
                    }
                },
            })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn strict_and_regex_match_as_on_the_original() {
        let mut whitelist = DomainWhitelist::default();
        whitelist.add(vec![
            validated("API.Golem.test", MatchType::Strict).unwrap(),
            validated("golem\\.network", MatchType::Regex).unwrap(),
        ]);
        assert!(whitelist.matches("api.golem.test"));
        assert!(whitelist.matches("API.GOLEM.TEST"));
        assert!(
            !whitelist.matches("sub.api.golem.test"),
            "strict: no subdomains"
        );
        assert!(whitelist.matches("registry.golem.network"));
        assert!(
            whitelist.matches("golem.network.evil.pro"),
            "regex is unanchored, as on the original"
        );
        assert!(!whitelist.matches("example.com"));
    }

    #[test]
    fn bad_patterns_are_refused_on_add_with_a_hint() {
        let error = validated("*.dev.golem.network", MatchType::Regex).unwrap_err();
        assert!(error.to_string().contains("regular expression"), "{error}");
        let error = validated("*.golem.network", MatchType::Strict).unwrap_err();
        assert!(error.to_string().contains("-t regex"), "{error}");
        assert!(validated("a b", MatchType::Strict).is_err());
    }

    #[test]
    fn ids_and_the_file_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let mut whitelist = DomainWhitelist::load(dir.path()).unwrap();
        assert!(whitelist.patterns.is_empty(), "empty by default");
        let added = whitelist.add(vec![
            validated("a.com", MatchType::Strict).unwrap(),
            validated("a.com", MatchType::Strict).unwrap(),
        ]);
        assert_eq!(added.len(), 1);
        whitelist.save(dir.path()).unwrap();
        let text = std::fs::read_to_string(dir.path().join(WHITELIST_FILE)).unwrap();
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            value,
            serde_json::json!({"patterns": [{"domain": "a.com", "match": "strict"}]})
        );
        let id = pattern_id("a.com");
        assert_eq!(id.len(), 8);
        let mut loaded = DomainWhitelist::load(dir.path()).unwrap();
        assert!(loaded.remove(&["nope".into()]).is_err());
        assert_eq!(loaded.patterns.len(), 1, "an unknown id removes nothing");
        assert_eq!(loaded.remove(&[id]).unwrap().len(), 1);
        assert!(loaded.patterns.is_empty());
    }
}
