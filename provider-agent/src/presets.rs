//! Presets: per exe unit, a linear price in GLM (start fee, per CPU-second,
//! per duration-second), kept in `<data-dir>/presets.toml` and managed with
//! `golem-provider preset list|create|update|remove|activate|deactivate`.
//! Each active preset is one offer of its exe unit; an exe unit with no preset
//! at all is offered at [`Preset::default_for`], one whose presets are all
//! inactive is not offered. A running agent re-reads the file when it changes.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

pub const PRESETS_FILE: &str = "presets.toml";

/// The usage vector every offer uses; coeffs follow it, then the constant.
pub const USAGE_VECTOR: [&str; 2] = ["golem.usage.cpu_sec", "golem.usage.duration_sec"];

#[derive(Debug, thiserror::Error)]
pub enum PresetError {
    #[error("cannot read or write {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid {path}: {message} (fix or remove the file)")]
    Parse { path: PathBuf, message: String },
    #[error("preset {0:?} already exists: use `golem-provider preset update`")]
    Exists(String),
    #[error("no preset {0:?}: `golem-provider preset list` shows them")]
    Missing(String),
    #[error("invalid {field} {value:?}: give a decimal amount of GLM >= 0, e.g. 0.001")]
    Price { field: &'static str, value: String },
    #[error("invalid preset name {0:?}: use letters, digits, '-' and '_'")]
    Name(String),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Preset {
    pub name: String,
    /// Runtime name of the exe unit (`wasmtime`, `vm`).
    pub exe_unit: String,
    pub start_fee: Decimal,
    pub cpu_sec: Decimal,
    pub duration_sec: Decimal,
    /// Offered while true; `preset deactivate` keeps the preset but stops
    /// its offer. Files written before the field existed are all active.
    #[serde(default = "active_by_default")]
    pub active: bool,
}

fn active_by_default() -> bool {
    true
}

impl Preset {
    /// The price of an exe unit nobody configured.
    pub fn default_for(runtime: &str) -> Preset {
        Preset {
            name: format!("default-{runtime}"),
            exe_unit: runtime.to_string(),
            start_fee: Decimal::ZERO,
            cpu_sec: Decimal::new(1, 4),
            duration_sec: Decimal::new(5, 5),
            active: true,
        }
    }

    /// `golem.com.pricing.model.linear.coeffs`: `[per cpu-sec, per duration-sec, start fee]`.
    pub fn coeffs(&self) -> Vec<Decimal> {
        vec![self.cpu_sec, self.duration_sec, self.start_fee]
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct PresetsFile {
    #[serde(default)]
    preset: Vec<Preset>,
}

/// Parse a price given on the command line.
pub fn parse_price(field: &'static str, value: &str) -> Result<Decimal, PresetError> {
    Decimal::from_str(value.trim())
        .ok()
        .filter(|price| !price.is_sign_negative())
        .ok_or_else(|| PresetError::Price {
            field,
            value: value.to_string(),
        })
}

pub fn path(data_dir: &Path) -> PathBuf {
    data_dir.join(PRESETS_FILE)
}

pub fn load(data_dir: &Path) -> Result<Vec<Preset>, PresetError> {
    let path = path(data_dir);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(PresetError::Io { path, source }),
    };
    let file: PresetsFile = toml::from_str(&text).map_err(|error| PresetError::Parse {
        path: path.clone(),
        message: error.to_string(),
    })?;
    Ok(file.preset)
}

pub fn save(data_dir: &Path, presets: &[Preset]) -> Result<(), PresetError> {
    let path = path(data_dir);
    let io = |source| PresetError::Io {
        path: path.clone(),
        source,
    };
    std::fs::create_dir_all(data_dir).map_err(io)?;
    let text = toml::to_string(&PresetsFile {
        preset: presets.to_vec(),
    })
    .map_err(|error| PresetError::Parse {
        path: path.clone(),
        message: error.to_string(),
    })?;
    let temporary = path.with_extension("toml.tmp");
    std::fs::write(&temporary, text).map_err(io)?;
    std::fs::rename(&temporary, &path).map_err(io)
}

pub fn create(data_dir: &Path, preset: Preset) -> Result<(), PresetError> {
    if preset.name.is_empty()
        || !preset
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(PresetError::Name(preset.name));
    }
    let mut presets = load(data_dir)?;
    if presets.iter().any(|existing| existing.name == preset.name) {
        return Err(PresetError::Exists(preset.name));
    }
    presets.push(preset);
    save(data_dir, &presets)
}

/// Change the fields given as `Some`.
pub fn update(
    data_dir: &Path,
    name: &str,
    exe_unit: Option<String>,
    start_fee: Option<Decimal>,
    cpu_sec: Option<Decimal>,
    duration_sec: Option<Decimal>,
) -> Result<Preset, PresetError> {
    let mut presets = load(data_dir)?;
    let preset = presets
        .iter_mut()
        .find(|preset| preset.name == name)
        .ok_or_else(|| PresetError::Missing(name.to_string()))?;
    if let Some(exe_unit) = exe_unit {
        preset.exe_unit = exe_unit;
    }
    if let Some(value) = start_fee {
        preset.start_fee = value;
    }
    if let Some(value) = cpu_sec {
        preset.cpu_sec = value;
    }
    if let Some(value) = duration_sec {
        preset.duration_sec = value;
    }
    let updated = preset.clone();
    save(data_dir, &presets)?;
    Ok(updated)
}

/// Set whether the preset `name` is offered; returns it as saved.
pub fn set_active(data_dir: &Path, name: &str, active: bool) -> Result<Preset, PresetError> {
    let mut presets = load(data_dir)?;
    let preset = presets
        .iter_mut()
        .find(|preset| preset.name == name)
        .ok_or_else(|| PresetError::Missing(name.to_string()))?;
    preset.active = active;
    let saved = preset.clone();
    save(data_dir, &presets)?;
    Ok(saved)
}

/// The presets offered for `runtime`: its active ones; the default when it
/// has none at all; none when all of its presets are inactive.
pub fn offered_for(presets: &[Preset], runtime: &str) -> Vec<Preset> {
    let of_runtime: Vec<&Preset> = presets
        .iter()
        .filter(|preset| preset.exe_unit == runtime)
        .collect();
    if of_runtime.is_empty() {
        return vec![Preset::default_for(runtime)];
    }
    of_runtime
        .into_iter()
        .filter(|preset| preset.active)
        .cloned()
        .collect()
}

pub fn remove(data_dir: &Path, name: &str) -> Result<(), PresetError> {
    let mut presets = load(data_dir)?;
    let before = presets.len();
    presets.retain(|preset| preset.name != name);
    if presets.len() == before {
        return Err(PresetError::Missing(name.to_string()));
    }
    save(data_dir, &presets)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn presets_round_trip_and_errors_are_clear() {
        let dir = tempfile::tempdir().unwrap();
        let preset = Preset {
            name: "wasm".into(),
            exe_unit: "wasmtime".into(),
            start_fee: parse_price("start fee", "0.5").unwrap(),
            cpu_sec: parse_price("cpu", "0.01").unwrap(),
            duration_sec: parse_price("duration", "0.001").unwrap(),
            active: true,
        };
        create(dir.path(), preset.clone()).unwrap();
        assert!(matches!(
            create(dir.path(), preset.clone()),
            Err(PresetError::Exists(_))
        ));
        assert_eq!(load(dir.path()).unwrap(), vec![preset.clone()]);
        let updated = update(dir.path(), "wasm", None, Some(Decimal::ONE), None, None).unwrap();
        assert_eq!(updated.start_fee, Decimal::ONE);
        assert_eq!(
            updated.coeffs(),
            vec![preset.cpu_sec, preset.duration_sec, Decimal::ONE]
        );
        assert!(parse_price("start fee", "-1").is_err());
        assert!(parse_price("start fee", "cheap").is_err());
        assert_eq!(offered_for(&load(dir.path()).unwrap(), "wasmtime").len(), 1);
        assert!(!set_active(dir.path(), "wasm", false).unwrap().active);
        assert!(
            offered_for(&load(dir.path()).unwrap(), "wasmtime").is_empty(),
            "an inactive preset is not offered"
        );
        assert_eq!(
            offered_for(&[], "vm"),
            vec![Preset::default_for("vm")],
            "no preset at all: the default"
        );
        assert!(matches!(
            set_active(dir.path(), "nope", true),
            Err(PresetError::Missing(_))
        ));
        remove(dir.path(), "wasm").unwrap();
        assert!(matches!(
            remove(dir.path(), "wasm"),
            Err(PresetError::Missing(_))
        ));
    }
}
