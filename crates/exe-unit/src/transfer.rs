//! `transfer{from,to}`: `http(s)://` → `container:` (GET), `container:` →
//! `http(s)://` (PUT) and `container:` → `container:` (copy). A `container:`
//! path must fall inside one of the activity's volumes: `..` is refused
//! outright and the path is opened beneath the volume's directory one
//! component at a time from directory fds without following symlinks
//! ([`crate::confined`]), so neither a requestor's path nor a link the payload
//! plants (or swaps in while the transfer runs) reaches outside the work dir.
//! `gftp://<nodeId>/<hash>` → `container:` downloads a published file over the
//! daemon's bus (its sha3 checked against the URL; a mismatch leaves no file)
//! and `container:` → `gftp://` uploads into a requestor's upload slot (the
//! receiver checks the sha3 we send); both open the file the same confined way.
//!
//! HTTP runs on the provider's host network, so every request goes through
//! [`OutboundPolicy::client`]: public addresses only unless the provider
//! allowed private ones. Bytes written into the volumes count against the
//! activity's [`StorageBudget`]; a transfer that would exceed it fails and
//! removes what it wrote.

use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use futures::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::confined::{self, ConfinedError, VolumeEntry};
use crate::outbound::{self, OutboundPolicy};
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
    #[error("transfer {url} refused: {reason}")]
    Refused { url: String, reason: String },
    #[error("the activity's storage limit of {limit} bytes written into its volumes is reached; the transfer was stopped and its file removed")]
    StorageLimit { limit: u64 },
}

/// Bytes the activity may still write into its volumes through transfers.
/// Every byte a transfer writes counts, also when it overwrites a file, so
/// the total is an upper bound of what the volumes grew by.
#[derive(Debug)]
pub struct StorageBudget {
    limit: u64,
    used: AtomicU64,
}

impl StorageBudget {
    pub fn new(limit: u64) -> StorageBudget {
        StorageBudget {
            limit,
            used: AtomicU64::new(0),
        }
    }

    pub fn limit(&self) -> u64 {
        self.limit
    }

    pub fn used(&self) -> u64 {
        self.used.load(Ordering::SeqCst)
    }

    /// Take `bytes` from the budget, or refuse (taking nothing) when they do not fit.
    pub fn charge(&self, bytes: u64) -> Result<(), TransferError> {
        self.used
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |used| {
                used.checked_add(bytes).filter(|total| *total <= self.limit)
            })
            .map(|_| ())
            .map_err(|_| TransferError::StorageLimit { limit: self.limit })
    }

    /// What is left.
    pub fn remaining(&self) -> u64 {
        self.limit.saturating_sub(self.used())
    }
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

fn confined_error(path: &ResolvedPath, error: ConfinedError) -> TransferError {
    match error {
        ConfinedError::Escape(reason) => TransferError::Escape {
            path: path.relative.display().to_string(),
            reason: reason.to_string(),
        },
        ConfinedError::Invalid(reason) => io_error(path, reason),
        ConfinedError::Io(error) => io_error(path, error),
    }
}

/// Open a file inside a volume for reading (see [`crate::confined`]).
pub async fn open_for_read(path: &ResolvedPath) -> Result<tokio::fs::File, TransferError> {
    let (root, relative) = (path.root.clone(), path.relative.clone());
    let opened = tokio::task::spawn_blocking(move || confined::open_for_read(&root, &relative))
        .await
        .map_err(|error| io_error(path, error))?;
    opened
        .map(tokio::fs::File::from_std)
        .map_err(|error| confined_error(path, error))
}

/// Create (or truncate) a file inside a volume for writing; the entry lets a
/// failed transfer remove it again without a path lookup.
pub async fn create_for_write(
    path: &ResolvedPath,
) -> Result<(tokio::fs::File, VolumeEntry), TransferError> {
    let (root, relative) = (path.root.clone(), path.relative.clone());
    let created = tokio::task::spawn_blocking(move || confined::create_for_write(&root, &relative))
        .await
        .map_err(|error| io_error(path, error))?;
    let (file, entry) = created
        .map_err(|error| confined_error(path, error))?
        .into_parts();
    Ok((tokio::fs::File::from_std(file), entry))
}

/// Copy `reader` into `writer` within the budget; on any failure the written
/// file is removed.
async fn copy_within_budget(
    mut reader: impl tokio::io::AsyncRead + Unpin,
    mut writer: tokio::fs::File,
    entry: &VolumeEntry,
    target: &ResolvedPath,
    budget: Option<&StorageBudget>,
) -> Result<u64, TransferError> {
    let copied = async {
        let mut buffer = vec![0u8; 256 * 1024];
        let mut copied = 0u64;
        loop {
            let read = reader
                .read(&mut buffer)
                .await
                .map_err(|error| io_error(target, error))?;
            if read == 0 {
                break;
            }
            if let Some(budget) = budget {
                budget.charge(read as u64)?;
            }
            writer
                .write_all(&buffer[..read])
                .await
                .map_err(|error| io_error(target, error))?;
            copied += read as u64;
        }
        writer
            .flush()
            .await
            .map_err(|error| io_error(target, error))?;
        Ok(copied)
    }
    .await;
    if copied.is_err() {
        let _ = entry.remove();
    }
    copied
}

/// Options of a `transfer` command other than `from`/`to`.
#[derive(Debug, Clone, Default)]
pub struct TransferOptions {
    pub format: Option<String>,
    pub depth: Option<u32>,
    pub fileset: Option<serde_json::Value>,
    /// The daemon's bus socket, for `gftp://` transfers (a fresh connection per transfer).
    pub bus_socket: Option<PathBuf>,
    /// Where HTTP requests may go (public addresses only by default).
    pub outbound: OutboundPolicy,
    /// Bytes the activity may still write into its volumes; `None`: no limit.
    pub storage: Option<Arc<StorageBudget>>,
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
            gftp_download(options, &url, &target).await
        }
        (Location::Container(path), Location::Gftp(url)) => {
            let source = resolve_container_path(volumes, &path)?;
            gftp_upload(options.bus_socket.as_deref(), &source, &url).await
        }
        (Location::Gftp(_), _) | (_, Location::Gftp(_)) => Err(TransferError::NoContainerSide),
        (Location::Http(url), Location::Container(path)) => {
            let target = resolve_container_path(volumes, &path)?;
            download(options, &url, &target).await
        }
        (Location::Container(path), Location::Http(url)) => {
            let source = resolve_container_path(volumes, &path)?;
            upload(&options.outbound, &source, &url).await
        }
        (Location::Container(from), Location::Container(to)) => {
            let source = resolve_container_path(volumes, &from)?;
            let target = resolve_container_path(volumes, &to)?;
            let reader = open_for_read(&source).await?;
            let (writer, entry) = create_for_write(&target).await?;
            copy_within_budget(reader, writer, &entry, &target, options.storage.as_deref()).await
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
    options: &TransferOptions,
    url: &str,
    target: &ResolvedPath,
) -> Result<u64, TransferError> {
    let (gftp, parsed) = gftp_session(options.bus_socket.as_deref(), url).await?;
    let (file, entry) = create_for_write(target).await?;
    let file = file.into_std().await;
    let limit = options.storage.as_ref().map(|budget| budget.remaining());
    let downloaded = match gftp.download_to_file_limited(&parsed, file, limit).await {
        Ok(bytes) => match &options.storage {
            Some(budget) => budget.charge(bytes).map(|()| bytes),
            None => Ok(bytes),
        },
        Err(golem_gftp::GftpError::TooLarge { .. }) => Err(TransferError::StorageLimit {
            limit: options
                .storage
                .as_ref()
                .map(|budget| budget.limit())
                .unwrap_or(0),
        }),
        Err(error) => Err(gftp_error(url, error)),
    };
    if downloaded.is_err() {
        // Nothing unverified stays behind; removed through the directory we created it in.
        let _ = entry.remove();
    }
    downloaded
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

fn parse_http_url(policy: &OutboundPolicy, url: &str) -> Result<reqwest::Url, TransferError> {
    let parsed = reqwest::Url::parse(url).map_err(|error| TransferError::Http {
        url: url.to_string(),
        message: error.to_string(),
    })?;
    policy
        .check_url(&parsed)
        .map_err(|refused| TransferError::Refused {
            url: url.to_string(),
            reason: refused.to_string(),
        })?;
    Ok(parsed)
}

/// A reqwest failure: a refusal of the outbound policy stays a refusal.
fn http_failure(url: &str, error: &reqwest::Error) -> TransferError {
    match outbound::refusal(error) {
        Some(refusal) => TransferError::Refused {
            url: url.to_string(),
            reason: refusal.to_string(),
        },
        None => TransferError::Http {
            url: url.to_string(),
            message: outbound::describe(error),
        },
    }
}

fn client(policy: &OutboundPolicy, url: &str) -> Result<reqwest::Client, TransferError> {
    policy.client().map_err(|error| http_failure(url, &error))
}

async fn download(
    options: &TransferOptions,
    url: &str,
    target: &ResolvedPath,
) -> Result<u64, TransferError> {
    let parsed = parse_http_url(&options.outbound, url)?;
    let response = client(&options.outbound, url)?
        .get(parsed)
        .send()
        .await
        .and_then(|response| response.error_for_status())
        .map_err(|error| http_failure(url, &error))?;
    if let (Some(budget), Some(length)) = (&options.storage, response.content_length()) {
        if length > budget.remaining() {
            return Err(TransferError::StorageLimit {
                limit: budget.limit(),
            });
        }
    }
    let (file, entry) = create_for_write(target).await?;
    let body = response
        .bytes_stream()
        .map(|chunk| chunk.map_err(std::io::Error::other));
    let reader = tokio_util::io::StreamReader::new(body);
    copy_within_budget(reader, file, &entry, target, options.storage.as_deref())
        .await
        .map_err(|error| match error {
            TransferError::Io { message, .. } => TransferError::Http {
                url: url.to_string(),
                message,
            },
            other => other,
        })
}

async fn upload(
    policy: &OutboundPolicy,
    source: &ResolvedPath,
    url: &str,
) -> Result<u64, TransferError> {
    let parsed = parse_http_url(policy, url)?;
    let file = open_for_read(source).await?;
    let length = file
        .metadata()
        .await
        .map_err(|error| io_error(source, error))?
        .len();
    let body = reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::new(file));
    client(policy, url)?
        .put(parsed)
        .header(reqwest::header::CONTENT_LENGTH, length)
        .body(body)
        .send()
        .await
        .and_then(|response| response.error_for_status())
        .map_err(|error| http_failure(url, &error))?;
    Ok(length)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::runtime::VolumeAccess;
    use std::net::SocketAddr;

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

    /// A one-route HTTP server on loopback: answers every request with
    /// `response` and counts the connections it accepted.
    async fn serve(response: String) -> (u16, Arc<AtomicU64>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let hits = Arc::new(AtomicU64::new(0));
        let counter = hits.clone();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                let response = response.clone();
                tokio::spawn(async move {
                    let mut buffer = vec![0u8; 4096];
                    let _ = stream.read(&mut buffer).await;
                    let _ = stream.write_all(response.as_bytes()).await;
                    let _ = stream.shutdown().await;
                });
            }
        });
        (port, hits)
    }

    /// The redirect exploit: a URL whose host looks public (resolved here to
    /// a loopback test server through the policy's code-only override)
    /// redirects to a loopback service; the redirect is refused and the
    /// internal service is never contacted. With the provider's setting the
    /// same redirect is followed, which shows the test can fail.
    #[tokio::test]
    async fn redirects_to_private_addresses_are_refused() {
        let (internal, internal_hits) =
            serve("HTTP/1.1 200 OK\r\nContent-Length: 6\r\nConnection: close\r\n\r\nsecret".into())
                .await;
        let dir = tempfile::tempdir().unwrap();
        let volumes = volumes(dir.path());
        for volume in &volumes {
            std::fs::create_dir_all(&volume.host_path).unwrap();
        }
        for target in [
            format!("http://127.0.0.1:{internal}/secret"),
            format!("http://localhost:{internal}/secret"),
            format!("http://[::ffff:127.0.0.1]:{internal}/secret"),
        ] {
            let (first_hop, _) = serve(format!(
                "HTTP/1.1 302 Found\r\nLocation: {target}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            ))
            .await;
            let policy = |allow_private_addresses| OutboundPolicy {
                allow_private_addresses,
                unfiltered_hosts: vec![(
                    "public.test".to_string(),
                    SocketAddr::from(([127, 0, 0, 1], first_hop)),
                )],
            };
            let options = TransferOptions {
                outbound: policy(false),
                ..TransferOptions::default()
            };
            let from = format!("http://public.test:{first_hop}/package");
            let error = transfer(&volumes, &from, "container:/golem/output/x", &options)
                .await
                .unwrap_err();
            assert!(
                matches!(error, TransferError::Refused { .. }),
                "{target}: {error}"
            );
            assert!(
                error.to_string().contains("allow-private-transfers"),
                "{error}"
            );
            assert_eq!(internal_hits.load(Ordering::SeqCst), 0, "{target}");
            assert!(!volumes[1].host_path.join("x").exists());

            let allowed = TransferOptions {
                outbound: policy(true),
                ..TransferOptions::default()
            };
            transfer(&volumes, &from, "container:/golem/output/x", &allowed)
                .await
                .unwrap();
            assert_eq!(
                std::fs::read(volumes[1].host_path.join("x")).unwrap(),
                b"secret"
            );
            std::fs::remove_file(volumes[1].host_path.join("x")).unwrap();
            internal_hits.store(0, Ordering::SeqCst);
        }
    }

    #[tokio::test]
    async fn http_downloads_stop_at_the_storage_budget() {
        let body = "y".repeat(5000);
        let (port, _) = serve(format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ))
        .await;
        // Without a length the body is streamed and cut at the budget.
        let (chunked, _) = serve(format!(
            "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n{body}"
        ))
        .await;
        let dir = tempfile::tempdir().unwrap();
        let volumes = volumes(dir.path());
        for volume in &volumes {
            std::fs::create_dir_all(&volume.host_path).unwrap();
        }
        for port in [port, chunked] {
            let options = TransferOptions {
                outbound: OutboundPolicy::allow_private(),
                storage: Some(Arc::new(StorageBudget::new(1000))),
                ..TransferOptions::default()
            };
            let error = transfer(
                &volumes,
                &format!("http://127.0.0.1:{port}/big"),
                "container:/golem/output/big",
                &options,
            )
            .await
            .unwrap_err();
            assert!(
                matches!(error, TransferError::StorageLimit { limit: 1000 }),
                "{error}"
            );
            assert!(!volumes[1].host_path.join("big").exists());
        }
    }

    /// The check-then-open race of the issue, played for real: while
    /// transfers write `/golem/output/d/f` over and over, another thread
    /// atomically swaps the directory `d` with a symlink to a directory
    /// outside the volume (`RENAME_EXCHANGE`, as a payload in the container
    /// could). No write may ever land outside.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn swapping_a_directory_for_a_symlink_during_transfers_never_escapes() {
        let dir = tempfile::tempdir().unwrap();
        let volumes = volumes(dir.path());
        for volume in &volumes {
            std::fs::create_dir_all(&volume.host_path).unwrap();
        }
        let output = volumes[1].host_path.clone();
        let outside = dir.path().join("provider-home");
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::create_dir_all(output.join("d")).unwrap();
        std::os::unix::fs::symlink(&outside, output.join("swap")).unwrap();
        std::fs::write(volumes[0].host_path.join("in"), b"payload").unwrap();

        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let swapper = {
            let (stop, output) = (stop.clone(), output.clone());
            std::thread::spawn(move || {
                let mut swaps = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    rustix::fs::renameat_with(
                        rustix::fs::CWD,
                        output.join("d"),
                        rustix::fs::CWD,
                        output.join("swap"),
                        rustix::fs::RenameFlags::EXCHANGE,
                    )
                    .unwrap();
                    swaps += 1;
                }
                swaps
            })
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_millis(1500);
        let (mut written, mut refused) = (0u32, 0u32);
        while std::time::Instant::now() < deadline {
            match transfer(
                &volumes,
                "container:/golem/input/in",
                "container:/golem/output/d/f",
                &TransferOptions::default(),
            )
            .await
            {
                Ok(_) => written += 1,
                Err(_) => refused += 1,
            }
            assert!(
                !outside.join("f").exists(),
                "a transfer wrote outside the volume after {written} writes"
            );
        }
        stop.store(true, Ordering::SeqCst);
        let swaps = swapper.join().unwrap();
        assert!(swaps > 100, "the race did not run: {swaps} swaps");
        assert!(
            written + refused > 10,
            "{written} written, {refused} refused"
        );
    }
}
