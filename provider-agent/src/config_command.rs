//! `golem-provider config get [KEY]` and `config set KEY VALUE`: read and
//! change the keys of `<data-dir>/provider.toml` (the settings of `run`,
//! see [`ProviderSettings`]). `get` shows the value in force from the file
//! and the environment (unset: the default applies); `set` checks the key,
//! the value and the whole resulting configuration before it replaces the
//! file, so a bad value changes nothing. A running agent picks the change up
//! and re-subscribes its offers.

use std::path::Path;

use anyhow::Context;
use clap::Subcommand;
use serde::Serialize;
use serde_json::Value;

use crate::config::{ProviderConfig, ProviderSettings, CONFIG_FILE};
use crate::machine::Machine;

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Show one setting, or all, as in force from provider.toml and the environment.
    Get {
        /// A key of provider.toml, e.g. `subnet` or `mem-gib`; all when left out.
        key: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Set a key of provider.toml (checked first; the file is rewritten without its comments).
    Set {
        /// A key of provider.toml, e.g. `subnet`, `mem-gib`, `max-agreements`.
        key: String,
        /// The value: a number, `true`/`false`, or text; lists comma-separated.
        value: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// One setting as `get` and `set` print it.
#[derive(Debug, Serialize)]
struct SettingValue {
    key: String,
    /// `null`: unset, the default applies.
    value: Value,
}

/// Every key `provider.toml` takes, in declaration order.
pub fn known_keys() -> Vec<String> {
    match serde_json::to_value(ProviderSettings::default()) {
        Ok(Value::Object(map)) => map.keys().cloned().collect(),
        _ => Vec::new(),
    }
}

fn check_key(key: &str) -> anyhow::Result<()> {
    let known = known_keys();
    if known.iter().any(|known| known == key) {
        return Ok(());
    }
    anyhow::bail!(
        "unknown setting {key:?}: the keys of {CONFIG_FILE} are {}",
        known.join(", ")
    )
}

pub fn execute(
    data_dir: &Path,
    command: ConfigCommand,
    env: &dyn Fn(&str) -> Option<String>,
) -> anyhow::Result<()> {
    match command {
        ConfigCommand::Get { key, json } => get(data_dir, key.as_deref(), json, env),
        ConfigCommand::Set { key, value, json } => {
            let saved = set(data_dir, &key, &value)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&saved)?);
            } else {
                println!(
                    "{} = {} in {}; a running agent re-subscribes its offers within seconds",
                    saved.key,
                    saved.value,
                    data_dir.join(CONFIG_FILE).display()
                );
            }
            Ok(())
        }
    }
}

fn get(
    data_dir: &Path,
    key: Option<&str>,
    json: bool,
    env: &dyn Fn(&str) -> Option<String>,
) -> anyhow::Result<()> {
    if let Some(key) = key {
        check_key(key)?;
    }
    let settings = ProviderSettings::load_without_flags(data_dir, env)?;
    let Value::Object(values) = serde_json::to_value(&settings)? else {
        anyhow::bail!("the settings do not serialize as a table");
    };
    let rows: Vec<SettingValue> = values
        .into_iter()
        .filter(|(name, _)| key.is_none_or(|key| key == name))
        .map(|(key, value)| SettingValue { key, value })
        .collect();
    if json {
        match (key, rows.first()) {
            (Some(_), Some(row)) => println!("{}", serde_json::to_string_pretty(row)?),
            _ => println!("{}", serde_json::to_string_pretty(&rows)?),
        }
        return Ok(());
    }
    for row in rows {
        let value = match &row.value {
            Value::Null => "(unset: default)".to_string(),
            Value::String(text) => text.clone(),
            other => other.to_string(),
        };
        if key.is_some() {
            println!("{value}");
        } else {
            println!("{:<36} {value}", row.key);
        }
    }
    Ok(())
}

/// `value` as TOML: a number, a boolean or an array when it parses as one,
/// else text.
fn toml_value(value: &str) -> toml::Value {
    toml::from_str::<toml::Table>(&format!("value = {value}"))
        .ok()
        .and_then(|mut table| table.remove("value"))
        .unwrap_or_else(|| toml::Value::String(value.to_string()))
}

fn set(data_dir: &Path, key: &str, value: &str) -> anyhow::Result<SettingValue> {
    check_key(key)?;
    let path = data_dir.join(CONFIG_FILE);
    let mut table: toml::Table = match std::fs::read_to_string(&path) {
        Ok(text) => toml::from_str(&text).with_context(|| {
            format!(
                "invalid {}: fix it by hand before `config set`",
                path.display()
            )
        })?,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => toml::Table::new(),
        Err(error) => return Err(error).with_context(|| format!("cannot read {}", path.display())),
    };
    table.insert(key.to_string(), toml_value(value));
    let text = toml::to_string(&table).context("cannot write the settings as TOML")?;
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("cannot create {}", data_dir.display()))?;
    // Checked as `run` would read it, in a file beside the real one.
    let candidate = path.with_extension("toml.new");
    std::fs::write(&candidate, &text)
        .with_context(|| format!("cannot write {}", candidate.display()))?;
    if let Err(error) = check_candidate(data_dir, &candidate) {
        let _ = std::fs::remove_file(&candidate);
        let message = format!("{error:#}").replace(
            &candidate.display().to_string(),
            &path.display().to_string(),
        );
        anyhow::bail!("not saved: {key} = {value:?} is refused: {message}");
    }
    std::fs::rename(&candidate, &path)
        .with_context(|| format!("cannot replace {}", path.display()))?;
    let saved = serde_json::to_value(table.get(key))?;
    Ok(SettingValue {
        key: key.to_string(),
        value: saved,
    })
}

/// Whether `candidate` (a provider.toml) loads and resolves.
fn check_candidate(data_dir: &Path, candidate: &Path) -> anyhow::Result<()> {
    let settings = ProviderSettings::load_file(candidate)?;
    ProviderConfig::resolve(data_dir, settings, &Machine::probe(data_dir))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn set_checks_key_and_value_and_keeps_the_file_on_refusal() {
        let dir = tempfile::tempdir().unwrap();
        set(dir.path(), "subnet", "lab").unwrap();
        set(dir.path(), "mem-gib", "1.5").unwrap();
        set(dir.path(), "platforms", "dummy-local-tglm").unwrap();
        let before = std::fs::read_to_string(dir.path().join(CONFIG_FILE)).unwrap();
        assert!(before.contains("subnet = \"lab\""), "{before}");
        assert!(before.contains("mem-gib = 1.5"), "{before}");

        let error = set(dir.path(), "tread", "3").unwrap_err().to_string();
        assert!(
            error.contains("unknown setting \"tread\"") && error.contains("threads"),
            "{error}"
        );
        let error = set(dir.path(), "max-agreements", "many").unwrap_err();
        let error = format!("{error:#}");
        assert!(
            error.contains("max-agreements") && error.contains("not saved"),
            "{error}"
        );
        let error = format!("{:#}", set(dir.path(), "max-agreements", "0").unwrap_err());
        assert!(error.contains("max-agreements"), "{error}");
        let error = format!("{:#}", set(dir.path(), "vm-sandbox", "kvm").unwrap_err());
        assert!(error.contains("vm-sandbox"), "{error}");
        assert_eq!(
            std::fs::read_to_string(dir.path().join(CONFIG_FILE)).unwrap(),
            before,
            "a refused value changes nothing"
        );
        assert!(!dir.path().join("provider.toml.new").exists());
    }

    #[test]
    fn values_are_typed_as_toml() {
        assert_eq!(toml_value("3"), toml::Value::Integer(3));
        assert_eq!(toml_value("true"), toml::Value::Boolean(true));
        assert_eq!(toml_value("lab"), toml::Value::String("lab".into()));
        assert!(known_keys().contains(&"mem-gib".to_string()));
    }
}
