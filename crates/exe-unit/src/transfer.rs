//! `transfer{from,to}`: `http(s)://` → `container:` (GET), `container:` →
//! `http(s)://` (PUT) and `container:` → `container:` (copy). A `container:`
//! path must fall inside one of the activity's volumes: `..` is refused
//! outright, every directory on the way is checked not to be a symlink, and the
//! file itself is opened without following symlinks, so neither a requestor's
//! path nor a link planted by the payload reaches outside the work dir.
//! `gftp://<nodeId>/<hash>` → `container:` downloads a published file over the
//! daemon's bus (its sha3 checked against the URL; a mismatch leaves no file)
//! and `container:` → `gftp://` uploads into a requestor's upload slot (the
//! receiver checks the sha3 we send); both open the file the same confined way.

use std::path::{Component, Path, PathBuf};

use futures::StreamExt;
use tokio::io::AsyncWriteExt;

use crate::runtime::Volume;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransferError {
    #[error("unsupported transfer location {0:?}: use http(s)://, container: or gftp://")]
    UnsupportedScheme(String),
    #[error("gftp transfers need the daemon's bus socket, which this exe unit was not given")]
    GftpUnsupported,
    #[error("gftp transfer {url} failed: {message}")]
    Gftp { url: String, message: String },
    #[error("a transfer needs a container: path on at least one side")]
    NoContainerSide,
    #[error("transfer option {0} is not supported yet")]
    UnsupportedOption(&'static str),
    #[error("container path {path:?} escapes the activity's volumes: {reason}")]
    Escape { path: String, reason: String },
    #[error("container path {0:?} is not inside any volume of the activity")]
    NoVolume(String),
    #[error("container path {path:?}: {message}")]
    Io { path: String, message: String },
    #[error("transfer from {url} failed: {message}")]
    Http { url: String, message: String },
}

/// One side of a transfer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    Http(String),
    Container(String),
    Gftp(String),
}

impl Location {
    pub fn parse(text: &str) -> Result<Location, TransferError> {
        if let Some(path) = text.strip_prefix("container:") {
            return Ok(Location::Container(path.to_string()));
        }
        if text.starts_with("http://") || text.starts_with("https://") {
            return Ok(Location::Http(text.to_string()));
        }
        if text.starts_with("gftp://") {
            return Ok(Location::Gftp(text.to_string()));
        }
        Err(TransferError::UnsupportedScheme(text.to_string()))
    }
}

/// A container path resolved to a host path inside one volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedPath {
    /// The volume's host directory.
    pub root: PathBuf,
    /// Path components below the root (no `.`, `..` or root components).
    pub relative: PathBuf,
}

impl ResolvedPath {
    pub fn host_path(&self) -> PathBuf {
        self.root.join(&self.relative)
    }
}

/// Map `container_path` (e.g. `/golem/output/x`) into the volume that holds it
/// (the longest matching mount point). Purely lexical: `..` anywhere is refused.
pub fn resolve_container_path(
    volumes: &[Volume],
    container_path: &str,
) -> Result<ResolvedPath, TransferError> {
    let escape = |reason: &str| TransferError::Escape {
        path: container_path.to_string(),
        reason: reason.to_string(),
    };
    let path = Path::new(container_path);
    if !path.is_absolute() {
        return Err(escape("the path must be absolute"));
    }
    let mut parts: Vec<&std::ffi::OsStr> = Vec::new();
    for component in path.components() {
        match component {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(part) => parts.push(part),
            Component::ParentDir => return Err(escape("`..` is not allowed")),
            Component::Prefix(_) => return Err(escape("path prefixes are not allowed")),
        }
    }
    let mut best: Option<(&Volume, usize)> = None;
    for volume in volumes {
        let mount: Vec<&std::ffi::OsStr> = Path::new(&volume.guest_path)
            .components()
            .filter_map(|component| match component {
                Component::Normal(part) => Some(part),
                _ => None,
            })
            .collect();
        if parts.len() >= mount.len()
            && parts[..mount.len()] == mount[..]
            && best.is_none_or(|(_, length)| mount.len() > length)
        {
            best = Some((volume, mount.len()));
        }
    }
    let (volume, depth) = best.ok_or_else(|| TransferError::NoVolume(container_path.into()))?;
    Ok(ResolvedPath {
        root: volume.host_path.clone(),
        relative: parts[depth..].iter().collect(),
    })
}

fn io_error(path: &ResolvedPath, error: impl std::fmt::Display) -> TransferError {
    TransferError::Io {
        path: path.relative.display().to_string(),
        message: error.to_string(),
    }
}

/// Walk from the volume root to the parent of the target, refusing symlinks
/// and optionally creating missing directories.
async fn checked_parent(path: &ResolvedPath, create: bool) -> Result<PathBuf, TransferError> {
    let mut current = path.root.clone();
    let components: Vec<_> = path.relative.components().collect();
    let parents = components.len().saturating_sub(1);
    for component in &components[..parents] {
        current.push(component);
        match tokio::fs::symlink_metadata(&current).await {
            Ok(metadata) if metadata.file_type().is_symlink() => {
                return Err(TransferError::Escape {
                    path: path.relative.display().to_string(),
                    reason: "a directory on the way is a symlink".into(),
                })
            }
            Ok(metadata) if metadata.is_dir() => {}
            Ok(_) => return Err(io_error(path, "a parent is not a directory")),
            Err(error) if create && error.kind() == std::io::ErrorKind::NotFound => {
                tokio::fs::create_dir(&current)
                    .await
                    .map_err(|error| io_error(path, error))?;
            }
            Err(error) => return Err(io_error(path, error)),
        }
    }
    Ok(current)
}

fn no_follow() -> tokio::fs::OpenOptions {
    let mut options = tokio::fs::OpenOptions::new();
    options.custom_flags(libc::O_NOFOLLOW);
    options
}

/// Open a file inside a volume for reading.
pub async fn open_for_read(path: &ResolvedPath) -> Result<tokio::fs::File, TransferError> {
    if path.relative.as_os_str().is_empty() {
        return Err(io_error(path, "is a volume, not a file"));
    }
    checked_parent(path, false).await?;
    let file = no_follow()
        .read(true)
        .open(path.host_path())
        .await
        .map_err(|error| refuse_symlink(path, error))?;
    let metadata = file
        .metadata()
        .await
        .map_err(|error| io_error(path, error))?;
    if !metadata.is_file() {
        return Err(io_error(path, "not a regular file"));
    }
    Ok(file)
}

/// Create (or truncate) a file inside a volume for writing.
pub async fn create_for_write(path: &ResolvedPath) -> Result<tokio::fs::File, TransferError> {
    if path.relative.as_os_str().is_empty() {
        return Err(io_error(path, "is a volume, not a file"));
    }
    checked_parent(path, true).await?;
    no_follow()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path.host_path())
        .await
        .map_err(|error| refuse_symlink(path, error))
}

fn refuse_symlink(path: &ResolvedPath, error: std::io::Error) -> TransferError {
    if error.raw_os_error() == Some(libc::ELOOP) {
        TransferError::Escape {
            path: path.relative.display().to_string(),
            reason: "the file is a symlink".into(),
        }
    } else {
        io_error(path, error)
    }
}

/// Options of a `transfer` command other than `from`/`to`.
#[derive(Debug, Clone, Default)]
pub struct TransferOptions {
    pub format: Option<String>,
    pub depth: Option<u32>,
    pub fileset: Option<serde_json::Value>,
    /// The daemon's bus socket, for `gftp://` transfers (a fresh connection per transfer).
    pub bus_socket: Option<PathBuf>,
}

/// Execute one transfer; returns the number of bytes moved.
pub async fn transfer(
    volumes: &[Volume],
    from: &str,
    to: &str,
    options: &TransferOptions,
) -> Result<u64, TransferError> {
    if options.format.is_some() {
        return Err(TransferError::UnsupportedOption("format"));
    }
    if options.fileset.is_some() {
        return Err(TransferError::UnsupportedOption("fileset"));
    }
    let source = Location::parse(from)?;
    let destination = Location::parse(to)?;
    match (source, destination) {
        (Location::Gftp(url), Location::Container(path)) => {
            let target = resolve_container_path(volumes, &path)?;
            gftp_download(options.bus_socket.as_deref(), &url, &target).await
        }
        (Location::Container(path), Location::Gftp(url)) => {
            let source = resolve_container_path(volumes, &path)?;
            gftp_upload(options.bus_socket.as_deref(), &source, &url).await
        }
        (Location::Gftp(_), _) | (_, Location::Gftp(_)) => Err(TransferError::NoContainerSide),
        (Location::Http(url), Location::Container(path)) => {
            let target = resolve_container_path(volumes, &path)?;
            download(&url, &target).await
        }
        (Location::Container(path), Location::Http(url)) => {
            let source = resolve_container_path(volumes, &path)?;
            upload(&source, &url).await
        }
        (Location::Container(from), Location::Container(to)) => {
            let source = resolve_container_path(volumes, &from)?;
            let target = resolve_container_path(volumes, &to)?;
            let mut reader = open_for_read(&source).await?;
            let mut writer = create_for_write(&target).await?;
            let copied = tokio::io::copy(&mut reader, &mut writer)
                .await
                .map_err(|error| io_error(&target, error))?;
            writer
                .flush()
                .await
                .map_err(|error| io_error(&target, error))?;
            Ok(copied)
        }
        (Location::Http(_), Location::Http(_)) => Err(TransferError::NoContainerSide),
    }
}

fn gftp_error(url: &str, error: impl std::fmt::Display) -> TransferError {
    TransferError::Gftp {
        url: url.to_string(),
        message: error.to_string(),
    }
}

/// Parse a gftp URL and connect to the daemon's bus for it.
async fn gftp_session(
    bus_socket: Option<&Path>,
    url: &str,
) -> Result<(golem_gftp::Gftp, golem_gftp::GftpUrl), TransferError> {
    let bus_socket = bus_socket.ok_or(TransferError::GftpUnsupported)?;
    let parsed = url
        .parse::<golem_gftp::GftpUrl>()
        .map_err(|error| gftp_error(url, error))?;
    let gftp = golem_gftp::Gftp::connect(bus_socket)
        .await
        .map_err(|error| gftp_error(url, error))?;
    Ok((gftp, parsed))
}

async fn gftp_download(
    bus_socket: Option<&Path>,
    url: &str,
    target: &ResolvedPath,
) -> Result<u64, TransferError> {
    let (gftp, parsed) = gftp_session(bus_socket, url).await?;
    let file = create_for_write(target).await?.into_std().await;
    match gftp.download_to_file(&parsed, file).await {
        Ok(bytes) => Ok(bytes),
        Err(error) => {
            // Nothing unverified stays behind (the file was created by us, not a symlink).
            let _ = tokio::fs::remove_file(target.host_path()).await;
            Err(gftp_error(url, error))
        }
    }
}

async fn gftp_upload(
    bus_socket: Option<&Path>,
    source: &ResolvedPath,
    url: &str,
) -> Result<u64, TransferError> {
    let (gftp, parsed) = gftp_session(bus_socket, url).await?;
    let file = open_for_read(source).await?.into_std().await;
    gftp.upload_from_file(file, &parsed)
        .await
        .map_err(|error| gftp_error(url, error))
}

async fn download(url: &str, target: &ResolvedPath) -> Result<u64, TransferError> {
    let http_error = |error: reqwest::Error| TransferError::Http {
        url: url.to_string(),
        message: error.to_string(),
    };
    let response = reqwest::get(url)
        .await
        .and_then(|response| response.error_for_status())
        .map_err(http_error)?;
    let mut file = create_for_write(target).await?;
    let mut body = response.bytes_stream();
    let mut written = 0u64;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(http_error)?;
        file.write_all(&chunk)
            .await
            .map_err(|error| io_error(target, error))?;
        written += chunk.len() as u64;
    }
    file.flush()
        .await
        .map_err(|error| io_error(target, error))?;
    Ok(written)
}

async fn upload(source: &ResolvedPath, url: &str) -> Result<u64, TransferError> {
    let file = open_for_read(source).await?;
    let length = file
        .metadata()
        .await
        .map_err(|error| io_error(source, error))?
        .len();
    let body = reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::new(file));
    reqwest::Client::new()
        .put(url)
        .header(reqwest::header::CONTENT_LENGTH, length)
        .body(body)
        .send()
        .await
        .and_then(|response| response.error_for_status())
        .map_err(|error| TransferError::Http {
            url: url.to_string(),
            message: error.to_string(),
        })?;
    Ok(length)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::runtime::VolumeAccess;

    fn volumes(root: &Path) -> Vec<Volume> {
        ["/golem/input", "/golem/output", "/golem/output/deep"]
            .iter()
            .enumerate()
            .map(|(index, guest)| Volume {
                guest_path: guest.to_string(),
                host_path: root.join(format!("vol-{index}")),
                access: VolumeAccess::ReadWrite,
            })
            .collect()
    }

    #[test]
    fn resolves_to_the_longest_mount_point() {
        let root = Path::new("/w");
        let volumes = volumes(root);
        let resolved = resolve_container_path(&volumes, "/golem/output/x").unwrap();
        assert_eq!(resolved.host_path(), Path::new("/w/vol-1/x"));
        let resolved = resolve_container_path(&volumes, "/golem/output/deep/a/./b").unwrap();
        assert_eq!(resolved.host_path(), Path::new("/w/vol-2/a/b"));
        let resolved = resolve_container_path(&volumes, "//golem//input/").unwrap();
        assert_eq!(resolved.host_path(), Path::new("/w/vol-0"));
    }

    #[test]
    fn refuses_escapes_and_paths_outside_volumes() {
        let volumes = volumes(Path::new("/w"));
        for path in [
            "/golem/../../etc/passwd",
            "/golem/output/../../../etc/passwd",
            "/golem/output/..",
            "golem/output/x",
        ] {
            let error = resolve_container_path(&volumes, path).unwrap_err();
            assert!(
                matches!(error, TransferError::Escape { .. }),
                "{path}: {error}"
            );
        }
        assert!(matches!(
            resolve_container_path(&volumes, "/etc/passwd"),
            Err(TransferError::NoVolume(_))
        ));
        assert!(matches!(
            resolve_container_path(&volumes, "/golem/outputx/a"),
            Err(TransferError::NoVolume(_))
        ));
    }

    #[tokio::test]
    async fn copies_inside_volumes_and_refuses_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        let volumes = volumes(dir.path());
        for volume in &volumes {
            std::fs::create_dir_all(&volume.host_path).unwrap();
        }
        std::fs::write(volumes[0].host_path.join("in.txt"), b"data").unwrap();
        let copied = transfer(
            &volumes,
            "container:/golem/input/in.txt",
            "container:/golem/output/sub/dir/out.txt",
            &TransferOptions::default(),
        )
        .await
        .unwrap();
        assert_eq!(copied, 4);
        assert_eq!(
            std::fs::read(volumes[1].host_path.join("sub/dir/out.txt")).unwrap(),
            b"data"
        );

        // Symlinks planted inside a volume lead nowhere.
        let outside = dir.path().join("outside");
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("secret"), b"s").unwrap();
        std::os::unix::fs::symlink(outside.join("secret"), volumes[1].host_path.join("link"))
            .unwrap();
        std::os::unix::fs::symlink(&outside, volumes[1].host_path.join("dirlink")).unwrap();
        for (from, to) in [
            ("container:/golem/output/link", "container:/golem/input/a"),
            (
                "container:/golem/output/dirlink/secret",
                "container:/golem/input/a",
            ),
            (
                "container:/golem/input/in.txt",
                "container:/golem/output/link",
            ),
            (
                "container:/golem/input/in.txt",
                "container:/golem/output/dirlink/new",
            ),
        ] {
            let error = transfer(&volumes, from, to, &TransferOptions::default())
                .await
                .unwrap_err();
            assert!(
                matches!(error, TransferError::Escape { .. }),
                "{from} -> {to}: {error}"
            );
        }
        assert_eq!(std::fs::read(outside.join("secret")).unwrap(), b"s");
        assert!(!outside.join("new").exists());

        let gftp = "gftp://0x2c7536e3605d9c16a7a3d7b1898e529396a65c23/abc";
        let error = transfer(
            &volumes,
            gftp,
            "container:/golem/input/x",
            &TransferOptions::default(),
        )
        .await
        .unwrap_err();
        assert_eq!(error, TransferError::GftpUnsupported);
        let with_socket = TransferOptions {
            bus_socket: Some(dir.path().join("no-daemon.sock")),
            ..TransferOptions::default()
        };
        let error = transfer(
            &volumes,
            "gftp://0x01/abc",
            "container:/golem/input/x",
            &with_socket,
        )
        .await
        .unwrap_err();
        assert!(error.to_string().contains("invalid gftp url"), "{error}");
        let error = transfer(&volumes, gftp, "container:/golem/input/x", &with_socket)
            .await
            .unwrap_err();
        assert!(
            error.to_string().contains("is the daemon running"),
            "{error}"
        );
        let error = transfer(&volumes, gftp, "http://x/y", &with_socket)
            .await
            .unwrap_err();
        assert_eq!(error, TransferError::NoContainerSide);
        let error = transfer(
            &volumes,
            "file:///etc/passwd",
            "container:/golem/input/x",
            &TransferOptions::default(),
        )
        .await
        .unwrap_err();
        assert!(matches!(error, TransferError::UnsupportedScheme(_)));
    }
}
