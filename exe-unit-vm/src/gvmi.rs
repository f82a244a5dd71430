//! `.gvmi` images, the original's VM packages (format `gvmkit-squash`, made
//! by `gvmkit-build`): a squashfs 4.0 of the image's root file system, then a
//! trailer `crc32 | config JSON | the JSON's length`. The crc is 4 bytes,
//! little-endian, CRC-32/IEEE of the JSON; the JSON is Docker's container
//! config (`Env`, `Entrypoint`, `Cmd`, `WorkingDir`, `Volumes`, `User`); the
//! length is 8 ASCII decimal digits and ends the file. [`read_trailer`] checks
//! that layout as the original's VM runtime does (no trailer, a wrong crc, a
//! squashfs longer than the bytes before the trailer are refused, each saying
//! what to do), and [`import`] streams the squashfs as a tar (Debian's
//! `sqfs2tar`, package squashfs-tools-ng) into the engine's import with the
//! config turned into Dockerfile changes. It never extracts the image's files
//! onto the provider's disk and never names the image (the cache tags it).

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use bollard::query_parameters::CreateImageOptions;
use bollard::Docker;
use futures::StreamExt;
use golem_exe_unit::RuntimeError;
use serde_json::Value;
use tokio::io::AsyncReadExt;

use crate::engine::{engine_message, is_image_id, remove_loaded, Loaded};

/// The converter of squashfs images to tar streams (Debian `squashfs-tools-ng`).
pub const SQFS2TAR: &str = "sqfs2tar";

/// Bytes of the trailer's crc32 and of its length field.
const CRC_BYTES: u64 = 4;
const LENGTH_DIGITS: u64 = 8;
/// The largest config accepted; gvmkit-build writes a few KiB.
const MAX_CONFIG_BYTES: u64 = 1 << 20;
/// A squashfs superblock: magic `hsqs`, `bytes_used` (u64 LE) at 40, major
/// version (u16 LE) at 28; 96 bytes in all.
const SUPERBLOCK_BYTES: usize = 96;

/// Why a `.gvmi` cannot be imported; each message says what to do.
#[derive(Debug, thiserror::Error)]
pub enum GvmiError {
    #[error("cannot read the gvmi image: {0}")]
    Unreadable(#[from] std::io::Error),
    #[error(
        "the gvmi image does not start with a squashfs 4.0 superblock; build it with gvmkit-build"
    )]
    NotSquashfs,
    #[error("the gvmi image has no metadata trailer (its last 8 bytes are not a decimal length): it is truncated or was not made by gvmkit-build; publish the complete file gvmkit-build wrote")]
    NoTrailer,
    #[error("the gvmi image's metadata trailer claims {claimed} bytes but the file has {file_length}: it is truncated or corrupt; publish the complete file gvmkit-build wrote")]
    TrailerTooLong { claimed: u64, file_length: u64 },
    #[error("the gvmi image's metadata fails its crc32 check: the file is corrupt; build it again with gvmkit-build")]
    Checksum,
    #[error("the gvmi image's metadata is not a container config: {0}; build it again with gvmkit-build")]
    Config(String),
    #[error("the gvmi image's squashfs needs {needed} bytes but {available} precede its metadata: the file is truncated; publish the complete file gvmkit-build wrote")]
    SquashfsTruncated { needed: u64, available: u64 },
}

impl From<GvmiError> for RuntimeError {
    fn from(error: GvmiError) -> Self {
        RuntimeError::new(error.to_string())
    }
}

/// Check a `.gvmi`'s layout and read its container config (a JSON object).
pub fn read_trailer(package: &Path) -> Result<Value, GvmiError> {
    let mut file = std::fs::File::open(package)?;
    let file_length = file.metadata()?.len();
    let mut superblock = [0u8; SUPERBLOCK_BYTES];
    if file_length < SUPERBLOCK_BYTES as u64 + CRC_BYTES + LENGTH_DIGITS {
        return Err(GvmiError::NoTrailer);
    }
    file.read_exact(&mut superblock)?;
    let major_version = u16::from_le_bytes([superblock[28], superblock[29]]);
    if !superblock.starts_with(b"hsqs") || major_version != 4 {
        return Err(GvmiError::NotSquashfs);
    }
    let mut bytes_used = [0u8; 8];
    bytes_used.copy_from_slice(&superblock[40..48]);
    let squashfs_length = u64::from_le_bytes(bytes_used);

    let mut digits = [0u8; LENGTH_DIGITS as usize];
    file.seek(SeekFrom::Start(file_length - LENGTH_DIGITS))?;
    file.read_exact(&mut digits)?;
    if !digits.iter().all(u8::is_ascii_digit) {
        return Err(GvmiError::NoTrailer);
    }
    let config_length: u64 = std::str::from_utf8(&digits)
        .ok()
        .and_then(|digits| digits.parse().ok())
        .ok_or(GvmiError::NoTrailer)?;
    let trailer_length = CRC_BYTES + config_length + LENGTH_DIGITS;
    if config_length > MAX_CONFIG_BYTES || trailer_length > file_length {
        return Err(GvmiError::TrailerTooLong {
            claimed: trailer_length,
            file_length,
        });
    }
    let available = file_length - trailer_length;
    if squashfs_length > available {
        return Err(GvmiError::SquashfsTruncated {
            needed: squashfs_length,
            available,
        });
    }
    file.seek(SeekFrom::Start(available))?;
    let mut crc = [0u8; CRC_BYTES as usize];
    file.read_exact(&mut crc)?;
    let mut json = vec![0u8; config_length as usize];
    file.read_exact(&mut json)?;
    let mut checksum = flate2::Crc::new();
    checksum.update(&json);
    if checksum.sum() != u32::from_le_bytes(crc) {
        return Err(GvmiError::Checksum);
    }
    let config: Value =
        serde_json::from_slice(&json).map_err(|error| GvmiError::Config(error.to_string()))?;
    if !config.is_object() {
        return Err(GvmiError::Config("it is not a JSON object".into()));
    }
    Ok(config)
}

/// Dockerfile changes (`ENV`, `VOLUME`, `WORKDIR`, `USER`, `ENTRYPOINT`,
/// `CMD`) that give the imported image the `.gvmi`'s container config.
pub fn config_changes(config: &Value) -> Vec<String> {
    let strings = |key: &str| -> Option<Vec<String>> {
        config.get(key).and_then(Value::as_array).map(|items| {
            items
                .iter()
                .filter_map(|item| item.as_str().map(str::to_string))
                .collect()
        })
    };
    let mut changes = Vec::new();
    for variable in strings("Env").unwrap_or_default() {
        if let Some((key, value)) = variable.split_once('=') {
            changes.push(format!("ENV {key}={}", Value::String(value.into())));
        }
    }
    if let Some(volumes) = config.get("Volumes").and_then(Value::as_object) {
        let paths: Vec<&String> = volumes.keys().collect();
        if !paths.is_empty() {
            changes.push(format!("VOLUME {}", serde_json::json!(paths)));
        }
    }
    for (key, instruction) in [("WorkingDir", "WORKDIR"), ("User", "USER")] {
        if let Some(value) = config.get(key).and_then(Value::as_str) {
            if !value.is_empty() && !value.contains('\n') {
                changes.push(format!("{instruction} {value}"));
            }
        }
    }
    for (key, instruction) in [("Entrypoint", "ENTRYPOINT"), ("Cmd", "CMD")] {
        if let Some(words) = strings(key).filter(|words| !words.is_empty()) {
            changes.push(format!("{instruction} {}", serde_json::json!(words)));
        }
    }
    changes
}

/// Import a `.gvmi` into the engine: its layout checked ([`read_trailer`]),
/// then `sqfs2tar` streams its files as a tar into the engine's import with
/// the config applied ([`config_changes`]). Returns the image id.
pub async fn import(docker: &Docker, package: &Path) -> Result<String, RuntimeError> {
    let config = {
        let package = package.to_path_buf();
        tokio::task::spawn_blocking(move || read_trailer(&package))
            .await
            .map_err(|error| RuntimeError::new(format!("the gvmi check failed: {error}")))??
    };
    let changes = config_changes(&config);
    let mut child = tokio::process::Command::new(SQFS2TAR)
        .arg(package)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|error| {
            RuntimeError::new(format!(
                "this provider cannot import gvmi images: {SQFS2TAR} (Debian package squashfs-tools-ng) cannot run: {error}; install it (scripts/ensure-docker.sh does)"
            ))
        })?;
    let (Some(stdout), Some(mut stderr)) = (child.stdout.take(), child.stderr.take()) else {
        return Err(RuntimeError::new("sqfs2tar started without pipes"));
    };
    let errors = tokio::spawn(async move {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text).await;
        text
    });
    let body = tokio_util::io::ReaderStream::with_capacity(stdout, 1 << 20)
        .filter_map(|chunk| async move { chunk.ok() });
    let mut progress = docker.create_image(
        Some(CreateImageOptions {
            from_src: Some("-".into()),
            changes,
            ..Default::default()
        }),
        Some(bollard::body_stream(body)),
        None,
    );
    let mut image = None;
    let mut failure = None;
    while let Some(item) = progress.next().await {
        match item {
            Ok(info) => {
                if let Some(status) = info.status.filter(|status| status.starts_with("sha256:")) {
                    image = Some(status.trim().to_string());
                }
            }
            Err(error) => {
                failure = Some(engine_message(&error));
                break;
            }
        }
    }
    let status = child
        .wait()
        .await
        .map_err(|error| RuntimeError::new(format!("sqfs2tar failed: {error}")))?;
    let said = errors.await.unwrap_or_default();
    if !status.success() {
        // The engine may have imported what came before the failure.
        if let Some(image_id) = image.filter(|id| is_image_id(id)) {
            remove_loaded(docker, &Loaded { image_id }).await;
        }
        return Err(RuntimeError::new(format!(
            "the package is not a valid gvmkit-squash image (its squashfs cannot be read: {}); build it again with gvmkit-build",
            said.trim()
        )));
    }
    if let Some(failure) = failure {
        return Err(RuntimeError::new(format!(
            "the engine cannot import the gvmi image: {failure}"
        )));
    }
    image
        .filter(|id| is_image_id(id))
        .ok_or_else(|| RuntimeError::new("the engine imported the gvmi image but gave no image id"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A squashfs superblock claiming `bytes_used`, padded to `length`.
    fn squashfs(bytes_used: u64, length: usize) -> Vec<u8> {
        let mut bytes = vec![0u8; length.max(SUPERBLOCK_BYTES)];
        bytes[..4].copy_from_slice(b"hsqs");
        bytes[28..30].copy_from_slice(&4u16.to_le_bytes());
        bytes[40..48].copy_from_slice(&bytes_used.to_le_bytes());
        bytes
    }

    /// `squashfs` with gvmkit-build's trailer for `json`.
    fn with_trailer(mut bytes: Vec<u8>, json: &[u8]) -> Vec<u8> {
        let mut crc = flate2::Crc::new();
        crc.update(json);
        bytes.extend_from_slice(&crc.sum().to_le_bytes());
        bytes.extend_from_slice(json);
        bytes.extend_from_slice(format!("{:08}", json.len()).as_bytes());
        bytes
    }

    fn check(bytes: &[u8]) -> Result<Value, GvmiError> {
        let dir = tempfile::tempdir().unwrap_or_else(|error| panic!("{error}"));
        let path = dir.path().join("image.gvmi");
        std::fs::write(&path, bytes).unwrap_or_else(|error| panic!("{error}"));
        read_trailer(&path)
    }

    const CONFIG: &[u8] = br#"{"Env":["PATH=/bin:/usr/bin","A=b c"],"Volumes":{"/data":{}},"WorkingDir":"/w","User":null,"Entrypoint":null,"Cmd":["/bin/sh","-c","echo hi"]}"#;

    #[test]
    fn reads_the_config_and_turns_it_into_changes() {
        let config = check(&with_trailer(squashfs(4096, 4096), CONFIG))
            .unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(
            config_changes(&config),
            vec![
                "ENV PATH=\"/bin:/usr/bin\"".to_string(),
                "ENV A=\"b c\"".to_string(),
                "VOLUME [\"/data\"]".to_string(),
                "WORKDIR /w".to_string(),
                "CMD [\"/bin/sh\",\"-c\",\"echo hi\"]".to_string(),
            ]
        );
        let entrypoint = serde_json::json!({"Entrypoint": ["/init"], "User": "1000:1000"});
        assert_eq!(
            config_changes(&entrypoint),
            vec![
                "USER 1000:1000".to_string(),
                "ENTRYPOINT [\"/init\"]".to_string()
            ]
        );
    }

    #[test]
    fn a_squashfs_without_its_trailer_is_refused() {
        let error = check(&squashfs(4096, 4096)).err();
        assert!(matches!(error, Some(GvmiError::NoTrailer)), "{error:?}");
        let error = check(b"hsqs").err();
        assert!(matches!(error, Some(GvmiError::NoTrailer)), "{error:?}");
    }

    #[test]
    fn a_truncated_gvmi_is_refused() {
        // The squashfs claims more bytes than come before the trailer.
        let error = check(&with_trailer(squashfs(8192, 4096), CONFIG)).err();
        assert!(
            matches!(
                error,
                Some(GvmiError::SquashfsTruncated {
                    needed: 8192,
                    available: 4096
                })
            ),
            "{error:?}"
        );
        // The length claims more than the file holds.
        let mut bytes = squashfs(96, 96);
        bytes.extend_from_slice(b"0000{}99999999");
        let error = check(&bytes).err();
        assert!(
            matches!(error, Some(GvmiError::TrailerTooLong { .. })),
            "{error:?}"
        );
        assert!(error
            .map(|error| error.to_string())
            .unwrap_or_default()
            .contains("publish the complete file"));
    }

    #[test]
    fn a_corrupt_gvmi_is_refused() {
        let mut bytes = with_trailer(squashfs(4096, 4096), CONFIG);
        let flipped = bytes.len() - 20;
        bytes[flipped] ^= 1;
        let error = check(&bytes).err();
        assert!(matches!(error, Some(GvmiError::Checksum)), "{error:?}");

        let error = check(&with_trailer(squashfs(4096, 4096), b"[1, 2]")).err();
        assert!(matches!(error, Some(GvmiError::Config(_))), "{error:?}");
        let error = check(&with_trailer(squashfs(4096, 4096), b"{not json")).err();
        assert!(matches!(error, Some(GvmiError::Config(_))), "{error:?}");

        let mut version_3 = squashfs(4096, 4096);
        version_3[28] = 3;
        let error = check(&with_trailer(version_3, CONFIG)).err();
        assert!(matches!(error, Some(GvmiError::NotSquashfs)), "{error:?}");
    }
}
