//! WASM task packages in the original's format: a zip holding `manifest.json`
//! (kebab-case `id`, `name`, `entry-points: [{"id", "wasm-path"}]`,
//! `mount-points: [{"ro"|"rw"|"wo"|"private": "/path"}]`) and the modules, or
//! a bare `.wasm` (one entry point named after the file's stem, with
//! `/golem/input` read-only and `/golem/output`, `/golem/work` read-write).

use std::io::Read;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// Largest module we unpack from a zip (guards against zip bombs).
const MAX_MODULE_BYTES: u64 = 512 * 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Manifest {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub entry_points: Vec<EntryPoint>,
    #[serde(default)]
    pub mount_points: Vec<MountPoint>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct EntryPoint {
    pub id: String,
    pub wasm_path: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MountPoint {
    Ro(String),
    Rw(String),
    Wo(String),
    /// Seen by the module but not reachable by transfers.
    Private(String),
}

impl MountPoint {
    pub fn path(&self) -> &str {
        match self {
            MountPoint::Ro(path)
            | MountPoint::Rw(path)
            | MountPoint::Wo(path)
            | MountPoint::Private(path) => path,
        }
    }

    /// The guest path, absolute (`input` in old manifests means `/input`).
    pub fn absolute_path(&self) -> String {
        let path = self.path().trim_end_matches('/');
        if path.starts_with('/') {
            path.to_string()
        } else {
            format!("/{path}")
        }
    }
}

/// A loaded package: the manifest and each entry point's module bytes.
#[derive(Debug, Clone)]
pub struct WasmPackage {
    pub manifest: Manifest,
    pub modules: Vec<(String, Vec<u8>)>,
}

#[derive(Debug, thiserror::Error)]
pub enum PackageError {
    #[error("cannot read the package: {0}")]
    Io(#[from] std::io::Error),
    #[error("the package is neither a zip nor a .wasm module")]
    UnknownFormat,
    #[error("the package zip is invalid: {0}")]
    Zip(String),
    #[error("the package has no manifest.json: {0}")]
    NoManifest(String),
    #[error("the package's manifest.json is invalid: {0}")]
    Manifest(String),
    #[error("entry point {entry_point}: {message}")]
    EntryPoint {
        entry_point: String,
        message: String,
    },
}

const WASM_MAGIC: &[u8] = b"\0asm";
const ZIP_MAGIC: &[u8] = b"PK\x03\x04";

impl WasmPackage {
    /// Load the package at `path`; `name_hint` (the URL's file name) names the
    /// entry point of a bare `.wasm`.
    pub fn load(path: &Path, name_hint: &str) -> Result<WasmPackage, PackageError> {
        let bytes = std::fs::read(path)?;
        if bytes.starts_with(WASM_MAGIC) {
            return Ok(Self::bare(bytes, name_hint));
        }
        if bytes.starts_with(ZIP_MAGIC) {
            return Self::from_zip(std::io::Cursor::new(bytes));
        }
        Err(PackageError::UnknownFormat)
    }

    fn bare(bytes: Vec<u8>, name_hint: &str) -> WasmPackage {
        let file_name = name_hint
            .split(['?', '#'])
            .next()
            .unwrap_or(name_hint)
            .rsplit('/')
            .next()
            .unwrap_or(name_hint);
        let stem = file_name.strip_suffix(".wasm").unwrap_or(file_name);
        let id = if stem.is_empty() { "main" } else { stem }.to_string();
        WasmPackage {
            manifest: Manifest {
                id: id.clone(),
                name: id.clone(),
                entry_points: vec![EntryPoint {
                    id: id.clone(),
                    wasm_path: format!("{id}.wasm"),
                }],
                mount_points: vec![
                    MountPoint::Ro("/golem/input".into()),
                    MountPoint::Rw("/golem/output".into()),
                    MountPoint::Rw("/golem/work".into()),
                ],
            },
            modules: vec![(id, bytes)],
        }
    }

    fn from_zip<R: Read + std::io::Seek>(reader: R) -> Result<WasmPackage, PackageError> {
        let mut archive =
            zip::ZipArchive::new(reader).map_err(|error| PackageError::Zip(error.to_string()))?;
        let manifest: Manifest = {
            let entry = archive
                .by_name("manifest.json")
                .map_err(|error| PackageError::NoManifest(error.to_string()))?;
            serde_json::from_reader(entry.take(1024 * 1024))
                .map_err(|error| PackageError::Manifest(error.to_string()))?
        };
        if manifest.entry_points.is_empty() {
            return Err(PackageError::Manifest("it lists no entry points".into()));
        }
        let mut modules = Vec::new();
        for entry_point in &manifest.entry_points {
            let entry_error = |message: String| PackageError::EntryPoint {
                entry_point: entry_point.id.clone(),
                message,
            };
            let path = entry_point.wasm_path.trim_start_matches("./");
            let mut entry = archive
                .by_name(path)
                .map_err(|error| entry_error(format!("{}: {error}", entry_point.wasm_path)))?;
            if entry.size() > MAX_MODULE_BYTES {
                return Err(entry_error(format!(
                    "{} is larger than {MAX_MODULE_BYTES} bytes",
                    entry_point.wasm_path
                )));
            }
            let mut bytes = Vec::with_capacity(usize::try_from(entry.size()).unwrap_or(0));
            (&mut entry)
                .take(MAX_MODULE_BYTES)
                .read_to_end(&mut bytes)
                .map_err(|error| entry_error(error.to_string()))?;
            modules.push((entry_point.id.clone(), bytes));
        }
        Ok(WasmPackage { manifest, modules })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::io::Write;

    #[test]
    fn manifest_is_kebab_case() {
        let manifest: Manifest = serde_json::from_str(
            r#"{"id": "x", "name": "x",
                "entry-points": [{"id": "hello", "wasm-path": "hello.wasm"}],
                "mount-points": [{"ro": "input"}, {"rw": "/output"}, {"wo": "/w"}, {"private": "/tmp"}]}"#,
        )
        .unwrap();
        assert_eq!(manifest.entry_points[0].wasm_path, "hello.wasm");
        let paths: Vec<_> = manifest
            .mount_points
            .iter()
            .map(MountPoint::absolute_path)
            .collect();
        assert_eq!(paths, ["/input", "/output", "/w", "/tmp"]);
        assert!(matches!(manifest.mount_points[3], MountPoint::Private(_)));
    }

    #[test]
    fn loads_zip_and_bare_packages() {
        let dir = tempfile::tempdir().unwrap();
        let zip_path = dir.path().join("pkg");
        let mut writer = zip::ZipWriter::new(std::fs::File::create(&zip_path).unwrap());
        let options = zip::write::SimpleFileOptions::default();
        writer.start_file("manifest.json", options).unwrap();
        writer
            .write_all(br#"{"id":"p","name":"p","entry-points":[{"id":"a","wasm-path":"mods/a.wasm"}],"mount-points":[{"rw":"/data"}]}"#)
            .unwrap();
        writer.start_file("mods/a.wasm", options).unwrap();
        writer.write_all(b"\0asm\x01\0\0\0").unwrap();
        writer.finish().unwrap();
        let package = WasmPackage::load(&zip_path, "ignored").unwrap();
        assert_eq!(package.modules[0].0, "a");
        assert_eq!(package.modules[0].1, b"\0asm\x01\0\0\0");

        let bare_path = dir.path().join("sha3-abc");
        std::fs::write(&bare_path, b"\0asm\x01\0\0\0").unwrap();
        let package = WasmPackage::load(&bare_path, "http://h/dir/hello.wasm?x=1").unwrap();
        assert_eq!(package.manifest.entry_points[0].id, "hello");
        assert_eq!(package.manifest.mount_points.len(), 3);

        std::fs::write(&bare_path, b"garbage").unwrap();
        assert!(matches!(
            WasmPackage::load(&bare_path, "x"),
            Err(PackageError::UnknownFormat)
        ));
    }
}
