//! `golem-settings`: the one way every binary of the workspace (`golem-daemon`,
//! `golem-provider`, `golem-requestor`, `gftp`) layers its configuration —
//! defaults → TOML file → environment → command-line flags — on the `config`
//! crate. It is a crate of its own because those four binaries share nothing
//! else that would be a natural home (the model crate does no IO) and because
//! the rule must be one piece of code, not four copies.
//!
//! A setting is a serde field of the binary's settings struct (kebab-case in
//! TOML, defaults from the struct's `Default`). Its environment name is derived
//! from its key: prefix + key path in SCREAMING_SNAKE (`market.remote-timeout-ms`
//! under `GOLEM` is `GOLEM_MARKET_REMOTE_TIMEOUT_MS`). Names that predate the
//! rule (`YAGNA_APPKEY`, `GSB_URL`, ...) are declared with
//! [`Layers::env_names`], which replaces the derived name. Flags are the clap
//! struct serialized with the same keys: a flag not given serializes to `null`
//! or an empty list and is left out (bool switches mark themselves with
//! `skip_serializing_if`); a flag may name a nested key with a dotted rename
//! (`#[serde(rename = "activity.max-per-agreement")]`). Adding a setting
//! therefore touches its struct field, its flag and its doc, nothing else.
//!
//! What this crate must never do: read the process environment itself (the
//! caller passes a lookup, so tests pass a fake one) or know any binary's
//! settings. Checks of meaning (a positive limit, a consistent pair) stay with
//! the binary; this crate only reports values that do not parse, naming the
//! variable, file or flag they came from.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use config::{Config, ConfigBuilder, FileFormat, Value, ValueKind};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value as Json;

pub mod de;

/// A value that does not parse, or a file that cannot be read, said so that
/// the user knows where to look and what to change.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("cannot read config file {path}: {source}")]
    ReadFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config file {path}: {message} (fix it; a key left out takes its default)")]
    File { path: PathBuf, message: String },
    #[error("invalid value {value:?} for {name}: {message} (fix or unset {name})")]
    Env {
        name: String,
        value: String,
        message: String,
    },
    #[error("invalid command-line value: {message}")]
    Flags { message: String },
    /// Each layer parses alone but not together (unusual: a list where a
    /// table was, for instance).
    #[error("invalid settings: {message}")]
    Combined { message: String },
    /// A settings or flags struct that does not serialize to keys and values:
    /// a bug in the binary, not a user error.
    #[error("settings cannot be layered: {message}")]
    Schema { message: String },
}

/// An environment lookup over `pairs` instead of the process's environment
/// (what tests hand to a binary's loader).
pub fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let pairs: Vec<(String, String)> = pairs
        .iter()
        .map(|(name, value)| (name.to_string(), value.to_string()))
        .collect();
    move |name| {
        pairs
            .iter()
            .find(|(candidate, _)| candidate == name)
            .map(|(_, value)| value.clone())
    }
}

/// The environment name derived from `key` under `prefix`: `GOLEM` and
/// `market.remote-timeout-ms` give `GOLEM_MARKET_REMOTE_TIMEOUT_MS`.
pub fn env_name(prefix: &str, key: &str) -> String {
    let tail = key.replace(['.', '-'], "_").to_ascii_uppercase();
    if prefix.is_empty() {
        tail
    } else {
        format!("{prefix}_{tail}")
    }
}

/// The leaf keys of `value` serialized (`a.b-c` for nested tables), in order.
/// An empty table (a map with no entries yet) has none.
pub fn keys_of(value: &impl Serialize) -> Result<Vec<String>, SettingsError> {
    let json = to_json(value)?;
    Ok(leaves(&json).into_iter().map(|(key, _)| key).collect())
}

/// One environment variable and the key it sets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvName {
    pub name: String,
    pub key: String,
}

/// The layers of one binary's settings; [`Layers::load`] merges them.
pub struct Layers<'a> {
    prefix: String,
    renamed: BTreeMap<String, Vec<String>>,
    file: Option<(PathBuf, bool)>,
    flags: Result<Json, String>,
    env: &'a dyn Fn(&str) -> Option<String>,
}

impl<'a> Layers<'a> {
    /// Settings whose environment names start with `prefix`, read through
    /// `env` (`|name| std::env::var(name).ok()` in binaries, a fake in tests).
    pub fn new(prefix: &str, env: &'a dyn Fn(&str) -> Option<String>) -> Self {
        Layers {
            prefix: prefix.to_string(),
            renamed: BTreeMap::new(),
            file: None,
            flags: Ok(Json::Null),
            env,
        }
    }

    /// The environment names of `key` instead of the derived one, first set
    /// wins. For names that predate the derivation rule (and for keys inside
    /// maps, which the defaults do not list).
    pub fn env_names<N: Into<String>>(
        mut self,
        key: impl Into<String>,
        names: impl IntoIterator<Item = N>,
    ) -> Self {
        self.renamed
            .insert(key.into(), names.into_iter().map(Into::into).collect());
        self
    }

    /// A TOML file that must exist.
    pub fn file(mut self, path: &Path) -> Self {
        self.file = Some((path.to_path_buf(), true));
        self
    }

    /// A TOML file whose absence means "nothing set".
    pub fn optional_file(mut self, path: &Path) -> Self {
        self.file = Some((path.to_path_buf(), false));
        self
    }

    /// The flags: a struct serialized with the settings' keys.
    pub fn flags(mut self, flags: &impl Serialize) -> Self {
        self.flags = serde_json::to_value(flags).map_err(|error| error.to_string());
        self
    }

    /// Every environment name `T` answers to and its key: derived for each
    /// leaf of `T::default()`, declared ones instead where given.
    pub fn env_table<T: Serialize + Default>(&self) -> Result<Vec<EnvName>, SettingsError> {
        Ok(self
            .env_entries::<T>()?
            .into_iter()
            .flat_map(|(key, names, _)| {
                names.into_iter().map(move |name| EnvName {
                    name,
                    key: key.clone(),
                })
            })
            .collect())
    }

    /// The environment name(s) of `key`, for messages of checks made after
    /// loading ("GFTP_CHUNK_SIZE must be positive").
    pub fn env_names_of(&self, key: &str) -> Vec<String> {
        self.renamed
            .get(key)
            .cloned()
            .unwrap_or_else(|| vec![env_name(&self.prefix, key)])
    }

    /// `(key, names, is a list)` for every setting of `T`.
    fn env_entries<T: Serialize + Default>(
        &self,
    ) -> Result<Vec<(String, Vec<String>, bool)>, SettingsError> {
        let defaults = to_json(&T::default())?;
        let mut entries: Vec<(String, Vec<String>, bool)> = leaves(&defaults)
            .into_iter()
            .map(|(key, value)| {
                let names = self.env_names_of(&key);
                (key, names, value.is_array())
            })
            .collect();
        for (key, names) in &self.renamed {
            if !entries.iter().any(|(known, ..)| known == key) {
                entries.push((key.clone(), names.clone(), false));
            }
        }
        Ok(entries)
    }

    /// Merge defaults (the struct's `Default`, through `#[serde(default)]`),
    /// the file, the environment and the flags, later layers winning.
    pub fn load<T: Serialize + DeserializeOwned + Default>(self) -> Result<T, SettingsError> {
        let file = match &self.file {
            Some((path, required)) => read_file(path, *required)?.map(|text| (path.clone(), text)),
            None => None,
        };
        let mut env = Vec::new();
        for (key, names, is_list) in self.env_entries::<T>()? {
            let found = names.iter().find_map(|name| {
                (self.env)(name)
                    .map(|value| value.trim().to_string())
                    .filter(|value| !value.is_empty())
                    .map(|value| (name.clone(), value))
            });
            if let Some((name, value)) = found {
                env.push(EnvValue {
                    name,
                    key,
                    value,
                    is_list,
                });
            }
        }
        let flags = self
            .flags
            .as_ref()
            .map_err(|message| SettingsError::Schema {
                message: message.clone(),
            })?;
        let flags: Vec<(String, Value)> = leaves(flags)
            .into_iter()
            .filter(|(_, value)| !is_unset_flag(value))
            .map(|(key, value)| (key, to_config(value)))
            .collect();

        let all_env: Vec<&EnvValue> = env.iter().collect();
        match merge::<T>(file.as_ref(), &all_env, &flags) {
            Ok(settings) => Ok(settings),
            // Find the layer to blame, so the message names what to fix.
            Err(error) => Err(blame::<T>(file.as_ref(), &env, &flags, error)),
        }
    }
}

/// An environment variable that is set, with the key it sets.
struct EnvValue {
    name: String,
    key: String,
    value: String,
    is_list: bool,
}

impl EnvValue {
    /// Lists (settings whose default is a list) are comma-separated.
    fn to_config(&self) -> Value {
        // No origin: the error names the variable already (`SettingsError::Env`).
        let origin = None;
        if self.is_list {
            let items: Vec<Value> = self
                .value
                .split(',')
                .map(str::trim)
                .filter(|item| !item.is_empty())
                .map(|item| Value::new(origin, item))
                .collect();
            Value::new(origin, items)
        } else {
            Value::new(origin, self.value.as_str())
        }
    }
}

fn read_file(path: &Path, required: bool) -> Result<Option<String>, SettingsError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(error) if !required && error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(SettingsError::ReadFile {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Why a merge failed, as the `config` crate says it.
enum MergeError {
    /// The file is not TOML.
    Syntax(String),
    /// A key path cannot be used (a bug in the settings struct).
    Schema(String),
    /// The merged values do not deserialize into the settings.
    Value(String),
}

fn merge<T: DeserializeOwned>(
    file: Option<&(PathBuf, String)>,
    env: &[&EnvValue],
    flags: &[(String, Value)],
) -> Result<T, MergeError> {
    let mut builder: ConfigBuilder<_> = Config::builder();
    if let Some((_, text)) = file {
        builder = builder.add_source(config::File::from_str(text, FileFormat::Toml));
    }
    let overrides = env
        .iter()
        .map(|value| (value.key.clone(), value.to_config()))
        .chain(flags.iter().cloned());
    for (key, value) in overrides {
        builder = builder
            .set_override(key, value)
            .map_err(|error| MergeError::Schema(error.to_string()))?;
    }
    let config = builder
        .build()
        .map_err(|error| MergeError::Syntax(error.to_string()))?;
    config
        .try_deserialize()
        .map_err(|error| MergeError::Value(error.to_string()))
}

/// The first layer that fails on its own (over the file, for env and flags).
fn blame<T: DeserializeOwned>(
    file: Option<&(PathBuf, String)>,
    env: &[EnvValue],
    flags: &[(String, Value)],
    error: MergeError,
) -> SettingsError {
    let value_error = match error {
        MergeError::Syntax(message) => {
            return match file {
                Some((path, _)) => SettingsError::File {
                    path: path.clone(),
                    message,
                },
                None => SettingsError::Schema { message },
            }
        }
        MergeError::Schema(message) => return SettingsError::Schema { message },
        MergeError::Value(message) => message,
    };
    if let Some((path, _)) = file {
        if let Err(MergeError::Value(message) | MergeError::Syntax(message)) =
            merge::<T>(file, &[], &[])
        {
            return SettingsError::File {
                path: path.clone(),
                message,
            };
        }
    }
    for value in env {
        if let Err(MergeError::Value(message)) = merge::<T>(file, &[value], &[]) {
            return SettingsError::Env {
                name: value.name.clone(),
                value: value.value.clone(),
                message,
            };
        }
    }
    if let Err(MergeError::Value(message)) = merge::<T>(file, &[], flags) {
        return SettingsError::Flags { message };
    }
    SettingsError::Combined {
        message: value_error,
    }
}

fn to_json(value: &impl Serialize) -> Result<Json, SettingsError> {
    serde_json::to_value(value).map_err(|error| SettingsError::Schema {
        message: error.to_string(),
    })
}

/// `(key path, value)` of every non-table value; tables are walked.
fn leaves(value: &Json) -> Vec<(String, &Json)> {
    fn walk<'v>(path: &str, value: &'v Json, out: &mut Vec<(String, &'v Json)>) {
        match value {
            Json::Object(members) => {
                for (name, member) in members {
                    let key = if path.is_empty() {
                        name.clone()
                    } else {
                        format!("{path}.{name}")
                    };
                    walk(&key, member, out);
                }
            }
            leaf => out.push((path.to_string(), leaf)),
        }
    }
    let mut out = Vec::new();
    if value.is_object() {
        walk("", value, &mut out);
    }
    out
}

/// A flag that was not given: `None` or a repeatable flag never repeated.
fn is_unset_flag(value: &Json) -> bool {
    match value {
        Json::Null => true,
        Json::Array(items) => items.is_empty(),
        _ => false,
    }
}

fn to_config(value: &Json) -> Value {
    let origin = Some("the command line".to_string());
    let kind = match value {
        Json::Null => ValueKind::Nil,
        Json::Bool(value) => ValueKind::Boolean(*value),
        Json::Number(number) => match (number.as_i64(), number.as_u64(), number.as_f64()) {
            (Some(value), _, _) => ValueKind::I64(value),
            (None, Some(value), _) => ValueKind::U64(value),
            (None, None, Some(value)) => ValueKind::Float(value),
            (None, None, None) => ValueKind::String(number.to_string()),
        },
        Json::String(text) => ValueKind::String(text.clone()),
        Json::Array(items) => ValueKind::Array(items.iter().map(to_config).collect()),
        Json::Object(members) => ValueKind::Table(
            members
                .iter()
                .map(|(name, member)| (name.clone(), to_config(member)))
                .collect(),
        ),
    };
    Value::new(origin.as_ref(), kind)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    #[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
    struct Settings {
        data_dir: String,
        timeout_ms: u64,
        peers: Vec<String>,
        key: Option<String>,
        on: bool,
        section: Section,
    }

    #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
    #[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
    struct Section {
        limit: u32,
    }

    impl Default for Settings {
        fn default() -> Self {
            Settings {
                data_dir: "/default".into(),
                timeout_ms: 10,
                peers: vec!["a".into()],
                key: None,
                on: false,
                section: Section { limit: 5 },
            }
        }
    }

    #[derive(Serialize, Default)]
    #[serde(rename_all = "kebab-case")]
    struct Flags {
        timeout_ms: Option<u64>,
        peers: Vec<String>,
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        on: bool,
        #[serde(rename = "section.limit")]
        section_limit: Option<u32>,
    }

    fn env(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name| {
            pairs
                .iter()
                .find(|(candidate, _)| *candidate == name)
                .map(|(_, value)| value.to_string())
        }
    }

    fn file(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("settings.toml");
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }

    #[test]
    fn names_are_derived_from_keys() {
        assert_eq!(
            env_name("GOLEM", "market.remote-timeout-ms"),
            "GOLEM_MARKET_REMOTE_TIMEOUT_MS"
        );
        let none = env(&[]);
        let table = Layers::new("X", &none)
            .env_names("key", ["OLD_KEY", "OLDER_KEY"])
            .env_table::<Settings>()
            .unwrap();
        let mut names: Vec<&str> = table.iter().map(|entry| entry.name.as_str()).collect();
        names.sort_unstable();
        assert_eq!(
            names,
            [
                "OLDER_KEY",
                "OLD_KEY",
                "X_DATA_DIR",
                "X_ON",
                "X_PEERS",
                "X_SECTION_LIMIT",
                "X_TIMEOUT_MS",
            ]
        );
    }

    #[test]
    fn each_layer_wins_over_the_previous_one() {
        let (_dir, path) = file("timeout-ms = 20\npeers = [\"f\"]\n[section]\nlimit = 6\n");
        let none = env(&[]);
        let loaded: Settings = Layers::new("X", &none).file(&path).load().unwrap();
        assert_eq!(loaded.timeout_ms, 20);
        assert_eq!(loaded.peers, ["f"]);
        assert_eq!(loaded.section.limit, 6);
        assert_eq!(loaded.data_dir, "/default");

        let vars = env(&[
            ("X_TIMEOUT_MS", " 30 "),
            ("X_PEERS", "p, q,"),
            ("X_ON", "yes"),
            ("X_SECTION_LIMIT", "7"),
            ("OLDER_KEY", "k"),
        ]);
        let layers = || {
            Layers::new("X", &vars)
                .env_names("key", ["OLD_KEY", "OLDER_KEY"])
                .file(&path)
        };
        let loaded: Settings = layers().load().unwrap();
        assert_eq!(loaded.timeout_ms, 30);
        assert_eq!(loaded.peers, ["p", "q"]);
        assert!(loaded.on);
        assert_eq!(loaded.section.limit, 7);
        assert_eq!(loaded.key.as_deref(), Some("k"));

        let flags = Flags {
            timeout_ms: Some(40),
            section_limit: Some(8),
            ..Flags::default()
        };
        let loaded: Settings = layers().flags(&flags).load().unwrap();
        assert_eq!(loaded.timeout_ms, 40);
        assert_eq!(loaded.section.limit, 8);
        assert_eq!(
            loaded.peers,
            ["p", "q"],
            "an unrepeated flag leaves the list"
        );
        assert!(loaded.on, "a switch not given leaves the value");
    }

    #[test]
    fn errors_name_the_variable_or_the_file() {
        let vars = env(&[("X_TIMEOUT_MS", "soon")]);
        let error = Layers::new("X", &vars).load::<Settings>().unwrap_err();
        let text = error.to_string();
        assert!(
            text.contains("X_TIMEOUT_MS") && text.contains("soon"),
            "{text}"
        );

        let (_dir, path) = file("timeout = 1\n");
        let none = env(&[]);
        let text = Layers::new("X", &none)
            .file(&path)
            .load::<Settings>()
            .unwrap_err()
            .to_string();
        assert!(
            text.contains("timeout") && text.contains("settings.toml"),
            "{text}"
        );

        let (_dir, path) = file("timeout-ms = [\n");
        let text = Layers::new("X", &none)
            .file(&path)
            .load::<Settings>()
            .unwrap_err()
            .to_string();
        assert!(text.contains("settings.toml"), "{text}");

        let missing = Path::new("/nonexistent/settings.toml");
        assert!(Layers::new("X", &none)
            .optional_file(missing)
            .load::<Settings>()
            .is_ok());
        assert!(matches!(
            Layers::new("X", &none).file(missing).load::<Settings>(),
            Err(SettingsError::ReadFile { .. })
        ));
    }
}
