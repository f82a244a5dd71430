//! Task packages: `hash:sha3:<hex>:<url>` is downloaded once, checked against
//! its hash and kept in the cache dir under that hash, so every later activity
//! with the same package starts from the cache. The digest length picks the
//! SHA-3 variant (56 hex digits: SHA3-224, also 256, 384 and 512), as in the
//! original. Sources: `http(s)://`; `gftp://<node>/<name>`, fetched from the
//! requestor's node through the provider's daemon as the original's exe units
//! do (works wherever the two nodes reach each other, unlike an http server on
//! the requestor's loopback); and `file://` or local paths for the provider's
//! own requestor only. http(s) and gftp downloads resume an interrupted
//! partial file and log the same progress.
//!
//! A [`FetchPolicy`] bounds what a requestor can make the provider do:
//! downloads go through [`OutboundPolicy`] (public addresses only unless the
//! provider allows private ones), `file://` and local paths are refused
//! unless the requestor is the provider's own node, and a package larger
//! than `max_bytes` is stopped and removed. Errors never carry the provider's
//! paths (cache dir, work dir) or the hash of what a download produced: their
//! text goes to the requestor; the details go to the provider's log.

use std::path::{Path, PathBuf};

use crate::outbound::{self, OutboundPolicy};

use futures::StreamExt;
use sha3::Digest;
use tokio::io::AsyncWriteExt;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PackageError {
    #[error("task package {0:?} is not of the form hash:sha3:<hex>:<url>")]
    Malformed(String),
    #[error("task package hash algorithm {0:?} is not supported (use sha3)")]
    UnsupportedAlgorithm(String),
    #[error("task package sha3 digest has {0} hex digits; expected 56, 64, 96 or 128")]
    DigestLength(usize),
    #[error("cannot download the task package from {url}: {message}")]
    Download { url: String, message: String },
    #[error("task package download from {url} refused: {reason}")]
    Refused { url: String, reason: String },
    #[error("task packages from file:// URLs or local paths are only for the provider's own node; serve the package over gftp:// or http(s)://")]
    LocalFileRefused,
    #[error("the task package is larger than the provider's limit of {limit} bytes; the download was stopped and removed")]
    TooLarge { limit: u64 },
    #[error("task package hash mismatch: the downloaded bytes do not have sha3 {expected}; they were discarded (publish the package again and give its own hash in golem.srv.comp.task_package)")]
    HashMismatch { expected: String },
    #[error("task package {url} is not published by its node (never published, or no longer: the requestor stopped serving it); the requestor must publish the package again and keep serving it until its activities are deployed")]
    GftpNotPublished { url: String },
    #[error("cannot reach the node serving the task package {url}: {message}; the requestor's daemon must be running and connected to the network")]
    GftpUnreachable { url: String, message: String },
    #[error("gftp:// task packages need the exe unit's bus socket, which this one was not given")]
    GftpUnavailable,
    /// The detail (paths of the provider's cache) stays out of the message.
    #[error("the provider's task package cache failed")]
    Cache(String),
}

/// Packages larger than this are refused when the agreement offers no storage size.
pub const DEFAULT_MAX_PACKAGE_BYTES: u64 = 10 << 30;

/// What a package download may do for this activity's requestor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchPolicy {
    pub outbound: OutboundPolicy,
    /// `file://` URLs and local paths: only when the requestor is the provider's own node.
    pub allow_local_files: bool,
    /// The download is stopped (and removed) beyond this many bytes.
    pub max_bytes: u64,
    /// The daemon's bus socket: `gftp://` packages are fetched through it
    /// (none: they are refused with [`PackageError::GftpUnavailable`]).
    pub bus_socket: Option<PathBuf>,
}

impl Default for FetchPolicy {
    /// The strictest: public addresses, no local files, [`DEFAULT_MAX_PACKAGE_BYTES`].
    fn default() -> Self {
        FetchPolicy {
            outbound: OutboundPolicy::public_only(),
            allow_local_files: false,
            max_bytes: DEFAULT_MAX_PACKAGE_BYTES,
            bus_socket: None,
        }
    }
}

/// A parsed `hash:sha3:<hex>:<url>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageLocation {
    /// Lower-case hex digest.
    pub digest: String,
    pub url: String,
}

impl PackageLocation {
    pub fn parse(text: &str) -> Result<PackageLocation, PackageError> {
        let malformed = || PackageError::Malformed(text.to_string());
        let rest = strip_prefix_ignore_case(text, "hash:").ok_or_else(malformed)?;
        let rest = rest.strip_prefix("//").unwrap_or(rest);
        let (algorithm, rest) = rest.split_once(':').ok_or_else(malformed)?;
        if !algorithm.eq_ignore_ascii_case("sha3") {
            return Err(PackageError::UnsupportedAlgorithm(algorithm.to_string()));
        }
        let (digest, url) = rest.split_once(':').ok_or_else(malformed)?;
        let digest = digest
            .strip_prefix("0x")
            .unwrap_or(digest)
            .to_ascii_lowercase();
        if digest.is_empty() || !digest.bytes().all(|b| b.is_ascii_hexdigit()) || url.is_empty() {
            return Err(malformed());
        }
        if !matches!(digest.len(), 56 | 64 | 96 | 128) {
            return Err(PackageError::DigestLength(digest.len()));
        }
        Ok(PackageLocation {
            digest,
            url: url.to_string(),
        })
    }
}

/// Where a package's bytes come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PackageSource {
    Http,
    Gftp,
    /// `file://` or a path: the provider's own node only.
    LocalFile,
}

impl PackageLocation {
    pub fn source(&self) -> PackageSource {
        let url = self.url.as_str();
        if url.starts_with("http://") || url.starts_with("https://") {
            PackageSource::Http
        } else if url.starts_with("gftp://") {
            PackageSource::Gftp
        } else {
            PackageSource::LocalFile
        }
    }
}

fn strip_prefix_ignore_case<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    let head = text.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &text[prefix.len()..])
}

/// SHA-3 of the matching width for a digest of `hex_len` digits.
pub enum Sha3Hasher {
    Sha224(sha3::Sha3_224),
    Sha256(sha3::Sha3_256),
    Sha384(sha3::Sha3_384),
    Sha512(sha3::Sha3_512),
}

impl Sha3Hasher {
    pub fn for_hex_len(hex_len: usize) -> Option<Sha3Hasher> {
        Some(match hex_len {
            56 => Sha3Hasher::Sha224(sha3::Sha3_224::new()),
            64 => Sha3Hasher::Sha256(sha3::Sha3_256::new()),
            96 => Sha3Hasher::Sha384(sha3::Sha3_384::new()),
            128 => Sha3Hasher::Sha512(sha3::Sha3_512::new()),
            _ => return None,
        })
    }
    pub fn update(&mut self, data: &[u8]) {
        match self {
            Sha3Hasher::Sha224(h) => h.update(data),
            Sha3Hasher::Sha256(h) => h.update(data),
            Sha3Hasher::Sha384(h) => h.update(data),
            Sha3Hasher::Sha512(h) => h.update(data),
        }
    }
    pub fn finish_hex(self) -> String {
        match self {
            Sha3Hasher::Sha224(h) => hex::encode(h.finalize()),
            Sha3Hasher::Sha256(h) => hex::encode(h.finalize()),
            Sha3Hasher::Sha384(h) => hex::encode(h.finalize()),
            Sha3Hasher::Sha512(h) => hex::encode(h.finalize()),
        }
    }
}

/// Where a package with this digest lives in the cache.
pub fn cached_path(cache_dir: &Path, digest: &str) -> PathBuf {
    cache_dir.join("packages").join(format!("sha3-{digest}"))
}

/// Where [`fetch_with_policy`] also sends the package's bytes while it downloads.
pub type PackageTee = tokio::sync::mpsc::Sender<tokio_util::bytes::Bytes>;

/// Download (or find in the cache) and verify the package under `policy`;
/// returns its path in the cache. An interrupted download leaves
/// `.sha3-<hex>.partial` behind and the next fetch resumes it (an HTTP `Range`
/// request); an exclusive lock on `.sha3-<hex>.lock` keeps two exe units from
/// writing it at once. Progress is logged about every 10 %.
///
/// With `tee`, every byte of the package, from the first and in order, also
/// goes there while it arrives (bytes an earlier attempt left in the partial
/// file included), so a runtime can process the package during the download,
/// e.g. stream it into an image load. Nothing is sent when the package is
/// already in the cache (read the returned file instead); when the receiver
/// goes away the download goes on without it. Only `Ok` says the bytes were
/// the right ones: the receiver must not commit what it built from them before.
pub async fn fetch_with_policy(
    task_package: &str,
    cache_dir: &Path,
    tee: Option<PackageTee>,
    policy: &FetchPolicy,
) -> Result<PathBuf, PackageError> {
    let result = fetch_checked(task_package, cache_dir, tee, policy).await;
    if let Err(error) = &result {
        // The requestor sees the message; the provider's log gets the detail.
        tracing::warn!(detail = ?error, "task package fetch failed");
    }
    result
}

async fn fetch_checked(
    task_package: &str,
    cache_dir: &Path,
    tee: Option<PackageTee>,
    policy: &FetchPolicy,
) -> Result<PathBuf, PackageError> {
    let location = PackageLocation::parse(task_package)?;
    let is_remote = location.source() != PackageSource::LocalFile;
    if !is_remote && !policy.allow_local_files {
        return Err(PackageError::LocalFileRefused);
    }
    let target = cached_path(cache_dir, &location.digest);
    if tokio::fs::metadata(&target).await.is_ok() {
        tracing::debug!(path = %target.display(), "task package found in the cache");
        return Ok(target);
    }
    let directory = target
        .parent()
        .ok_or_else(|| PackageError::Cache("cache path has no parent".into()))?;
    tokio::fs::create_dir_all(directory)
        .await
        .map_err(|error| PackageError::Cache(format!("{}: {error}", directory.display())))?;
    let _lock = lock_download(&directory.join(format!(".sha3-{}.lock", location.digest))).await?;
    // Another exe unit may have finished it while we waited for the lock.
    if tokio::fs::metadata(&target).await.is_ok() {
        return Ok(target);
    }
    let partial = directory.join(format!(".sha3-{}.partial", location.digest));
    let mut tee = Tee(tee);
    let actual = match download_and_hash(&location, &partial, &mut tee, policy).await {
        Ok(actual) => actual,
        Err(error) => {
            // Only an interrupted http(s) or gftp download (bounded by
            // max_bytes) is kept, for the next attempt to resume; anything
            // else is removed.
            let resumable = matches!(
                error,
                PackageError::Download { .. } | PackageError::GftpUnreachable { .. }
            ) && is_remote;
            let empty = tokio::fs::metadata(&partial)
                .await
                .map(|meta| meta.len() == 0)
                .unwrap_or(false);
            if !resumable || empty {
                let _ = tokio::fs::remove_file(&partial).await;
            }
            return Err(error);
        }
    };
    if actual != location.digest {
        let _ = tokio::fs::remove_file(&partial).await;
        tracing::info!(url = %location.url, expected = %location.digest, %actual, "task package hash mismatch");
        return Err(PackageError::HashMismatch {
            expected: location.digest,
        });
    }
    tokio::fs::rename(&partial, &target)
        .await
        .map_err(|error| PackageError::Cache(format!("{}: {error}", target.display())))?;
    tracing::info!(url = %location.url, path = %target.display(), "task package downloaded and verified");
    Ok(target)
}

/// Hold an exclusive `flock` on `path` until the returned guard is dropped.
async fn lock_download(path: &Path) -> Result<nix::fcntl::Flock<std::fs::File>, PackageError> {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|error| PackageError::Cache(format!("{}: {error}", path.display())))?;
        nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive).map_err(|(_, errno)| {
            PackageError::Cache(format!("cannot lock {}: {errno}", path.display()))
        })
    })
    .await
    .map_err(|error| PackageError::Cache(format!("lock task failed: {error}")))?
}

/// Logs download progress about every 10 % (or every 64 MiB when the size is unknown).
struct Progress<'a> {
    url: &'a str,
    total: Option<u64>,
    done: u64,
    next_report: u64,
}

impl<'a> Progress<'a> {
    fn new(url: &'a str, done: u64, total: Option<u64>) -> Self {
        let mut progress = Progress {
            url,
            total,
            done,
            next_report: 0,
        };
        progress.next_report = done + progress.step();
        progress
    }
    fn step(&self) -> u64 {
        self.total
            .map(|total| (total / 10).max(1))
            .unwrap_or(64 << 20)
    }
    fn add(&mut self, bytes: usize) {
        self.done += bytes as u64;
        if self.done >= self.next_report {
            self.next_report = self.done + self.step();
            tracing::info!(url = %self.url, bytes = self.done, total = ?self.total, "downloading the task package");
        }
    }
}

/// The optional receiver of the bytes being downloaded; dropped when it hangs up.
struct Tee(Option<PackageTee>);

impl Tee {
    async fn send(&mut self, chunk: tokio_util::bytes::Bytes) {
        if let Some(sender) = &self.0 {
            if sender.send(chunk).await.is_err() {
                self.0 = None;
            }
        }
    }

    /// Send the first `length` bytes of `file` (what an earlier attempt left).
    async fn replay(&mut self, file: &Path, length: u64) -> std::io::Result<()> {
        if self.0.is_none() || length == 0 {
            return Ok(());
        }
        let mut source = tokio::fs::File::open(file).await?;
        let mut left = length;
        while left > 0 && self.0.is_some() {
            let mut buffer = vec![0u8; usize::try_from(left.min(1 << 20)).unwrap_or(1 << 20)];
            let read = tokio::io::AsyncReadExt::read(&mut source, &mut buffer).await?;
            if read == 0 {
                break;
            }
            buffer.truncate(read);
            left -= read as u64;
            self.send(tokio_util::bytes::Bytes::from(buffer)).await;
        }
        Ok(())
    }
}

async fn download_and_hash(
    location: &PackageLocation,
    partial: &Path,
    tee: &mut Tee,
    policy: &FetchPolicy,
) -> Result<String, PackageError> {
    let hasher = Sha3Hasher::for_hex_len(location.digest.len())
        .ok_or(PackageError::DigestLength(location.digest.len()))?;
    let file = tokio::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(partial)
        .await
        .map_err(|error| cache_error(partial, error))?;
    match location.source() {
        PackageSource::Http => download_http(location, partial, file, hasher, tee, policy).await,
        PackageSource::Gftp => download_gftp(location, partial, file, hasher, tee, policy).await,
        PackageSource::LocalFile => {
            let mut sink =
                PackageSink::new(file, partial, hasher, &location.url, (0, None), policy);
            copy_local_file(location, &mut sink, tee).await?;
            sink.finish().await
        }
    }
}

fn cache_error(partial: &Path, error: std::io::Error) -> PackageError {
    PackageError::Cache(format!("{}: {error}", partial.display()))
}

/// Hash what an earlier attempt left in the partial file (its cursor ends
/// there); returns how many bytes that was.
async fn hash_partial(
    file: &mut tokio::fs::File,
    partial: &Path,
    hasher: &mut Sha3Hasher,
) -> Result<u64, PackageError> {
    let mut have = 0u64;
    let mut buffer = vec![0u8; 256 * 1024];
    loop {
        let read = tokio::io::AsyncReadExt::read(file, &mut buffer)
            .await
            .map_err(|error| cache_error(partial, error))?;
        if read == 0 {
            return Ok(have);
        }
        hasher.update(&buffer[..read]);
        have += read as u64;
    }
}

/// Empty the partial file for a download that starts over.
async fn start_over(
    file: &mut tokio::fs::File,
    partial: &Path,
    location: &PackageLocation,
) -> Result<Sha3Hasher, PackageError> {
    file.set_len(0)
        .await
        .map_err(|error| cache_error(partial, error))?;
    tokio::io::AsyncSeekExt::seek(file, std::io::SeekFrom::Start(0))
        .await
        .map_err(|error| cache_error(partial, error))?;
    Sha3Hasher::for_hex_len(location.digest.len())
        .ok_or(PackageError::DigestLength(location.digest.len()))
}

/// Where the arriving bytes go: the partial file, the hasher, the progress
/// log and the size limit, the same for every source.
struct PackageSink<'a> {
    writer: tokio::io::BufWriter<tokio::fs::File>,
    hasher: Sha3Hasher,
    progress: Progress<'a>,
    partial: &'a Path,
    max_bytes: u64,
}

impl<'a> PackageSink<'a> {
    /// `file` (at `partial`) holds `done` bytes already, of `total` when
    /// it is known, and `hasher` has seen them.
    fn new(
        file: tokio::fs::File,
        partial: &'a Path,
        hasher: Sha3Hasher,
        url: &'a str,
        (done, total): (u64, Option<u64>),
        policy: &FetchPolicy,
    ) -> Self {
        PackageSink {
            writer: tokio::io::BufWriter::with_capacity(1 << 20, file),
            hasher,
            progress: Progress::new(url, done, total),
            partial,
            max_bytes: policy.max_bytes,
        }
    }

    async fn take(
        &mut self,
        chunk: tokio_util::bytes::Bytes,
        tee: &mut Tee,
    ) -> Result<(), PackageError> {
        if self.progress.done + chunk.len() as u64 > self.max_bytes {
            return Err(PackageError::TooLarge {
                limit: self.max_bytes,
            });
        }
        self.hasher.update(&chunk);
        self.writer
            .write_all(&chunk)
            .await
            .map_err(|error| cache_error(self.partial, error))?;
        self.progress.add(chunk.len());
        tee.send(chunk).await;
        Ok(())
    }

    /// Flush the file; the hex digest of everything in it.
    async fn finish(mut self) -> Result<String, PackageError> {
        self.writer
            .flush()
            .await
            .map_err(|error| cache_error(self.partial, error))?;
        Ok(self.hasher.finish_hex())
    }
}

/// An http(s) download; a partial file is resumed with a `Range` request.
async fn download_http(
    location: &PackageLocation,
    partial: &Path,
    mut file: tokio::fs::File,
    mut hasher: Sha3Hasher,
    tee: &mut Tee,
    policy: &FetchPolicy,
) -> Result<String, PackageError> {
    let too_large = PackageError::TooLarge {
        limit: policy.max_bytes,
    };
    let url = location.url.as_str();
    let download_error = |message: String| PackageError::Download {
        url: url.to_string(),
        message,
    };
    // Hash what an earlier attempt left, then ask only for the rest.
    let mut have = hash_partial(&mut file, partial, &mut hasher).await?;
    if have > policy.max_bytes {
        return Err(too_large);
    }
    let refused = |reason: String| PackageError::Refused {
        url: url.to_string(),
        reason,
    };
    let parsed = reqwest::Url::parse(url).map_err(|error| download_error(error.to_string()))?;
    policy
        .outbound
        .check_url(&parsed)
        .map_err(|error| refused(error.to_string()))?;
    let client = policy
        .outbound
        .client()
        .map_err(|error| download_error(outbound::describe(&error)))?;
    let mut request = client.get(parsed);
    if have > 0 {
        request = request.header(reqwest::header::RANGE, format!("bytes={have}-"));
    }
    let failure = |error: reqwest::Error| match outbound::refusal(&error) {
        Some(refusal) => refused(refusal.to_string()),
        None => download_error(outbound::describe(&error)),
    };
    let response = request.send().await.map_err(failure)?;
    let response = if have > 0 && response.status() == reqwest::StatusCode::RANGE_NOT_SATISFIABLE {
        // The partial file already holds everything.
        tee.replay(partial, have)
            .await
            .map_err(|error| cache_error(partial, error))?;
        return Ok(hasher.finish_hex());
    } else {
        response.error_for_status().map_err(failure)?
    };
    if have > 0 && response.status() == reqwest::StatusCode::PARTIAL_CONTENT {
        tracing::info!(url, bytes = have, "resuming the task package download");
        tee.replay(partial, have)
            .await
            .map_err(|error| cache_error(partial, error))?;
    } else if have > 0 {
        // The server ignored the range: start over.
        hasher = start_over(&mut file, partial, location).await?;
        have = 0;
    }
    let total = response.content_length().map(|length| length + have);
    if total.is_some_and(|total| total > policy.max_bytes) {
        return Err(too_large);
    }
    let mut sink = PackageSink::new(file, partial, hasher, url, (have, total), policy);
    let mut body = response.bytes_stream();
    while let Some(chunk) = body.next().await {
        sink.take(chunk.map_err(failure)?, tee).await?;
    }
    let done = sink.progress.done;
    if let Some(total) = total.filter(|total| done < *total) {
        return Err(download_error(format!(
            "the connection ended after {done} of {total} bytes"
        )));
    }
    sink.finish().await
}

/// A gftp download from the publishing node, through this provider's daemon
/// (the exe unit's bus socket); a partial file is resumed from its end.
async fn download_gftp(
    location: &PackageLocation,
    partial: &Path,
    mut file: tokio::fs::File,
    mut hasher: Sha3Hasher,
    tee: &mut Tee,
    policy: &FetchPolicy,
) -> Result<String, PackageError> {
    let url = location.url.as_str();
    let failure = |error: golem_gftp::GftpError| gftp_failure(url, error);
    let gftp_url: golem_gftp::GftpUrl = url.parse().map_err(
        |error: golem_model::gftp::GftpUrlError| PackageError::Download {
            url: url.to_string(),
            message: error.reason,
        },
    )?;
    let bus_socket = policy
        .bus_socket
        .as_deref()
        .ok_or(PackageError::GftpUnavailable)?;
    let gftp = golem_gftp::Gftp::connect(bus_socket)
        .await
        .map_err(failure)?;
    let size = gftp.remote_size(&gftp_url).await.map_err(failure)?;
    if size > policy.max_bytes {
        return Err(PackageError::TooLarge {
            limit: policy.max_bytes,
        });
    }
    let mut have = hash_partial(&mut file, partial, &mut hasher).await?;
    if have > size {
        // Not what this URL serves now: start over.
        hasher = start_over(&mut file, partial, location).await?;
        have = 0;
    } else if have > 0 {
        tracing::info!(url, bytes = have, "resuming the task package download");
        tee.replay(partial, have)
            .await
            .map_err(|error| cache_error(partial, error))?;
    }
    let mut sink = PackageSink::new(file, partial, hasher, url, (have, Some(size)), policy);
    let mut chunks = std::pin::pin!(gftp.read_from(&gftp_url, size, have));
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk.map_err(failure)?;
        sink.take(tokio_util::bytes::Bytes::from(chunk), tee)
            .await?;
    }
    sink.finish().await
}

/// A gftp failure in the requestor's terms: not published, the node not
/// reachable, or another download error.
fn gftp_failure(url: &str, error: golem_gftp::GftpError) -> PackageError {
    use golem_gftp::GftpError;
    use golem_model::ErrorCode;
    match error {
        GftpError::NotPublished { .. } => PackageError::GftpNotPublished {
            url: url.to_string(),
        },
        GftpError::Remote { error, .. }
            if matches!(error.code, ErrorCode::Unavailable | ErrorCode::Timeout) =>
        {
            PackageError::GftpUnreachable {
                url: url.to_string(),
                message: error.message,
            }
        }
        // The exe unit's own bus connection: a provider problem, logged.
        GftpError::Connect(error) => PackageError::Cache(format!("the daemon's bus: {error}")),
        other => PackageError::Download {
            url: url.to_string(),
            message: other.to_string(),
        },
    }
}

/// `file://` or an absolute path (the provider's own node only).
async fn copy_local_file(
    location: &PackageLocation,
    sink: &mut PackageSink<'_>,
    tee: &mut Tee,
) -> Result<(), PackageError> {
    let url = location.url.as_str();
    let download_error = |message: String| PackageError::Download {
        url: url.to_string(),
        message,
    };
    let path = url.strip_prefix("file://").unwrap_or(url);
    if !path.starts_with('/') {
        return Err(download_error(
            "only http(s)://, gftp://, file:// and absolute paths are supported".into(),
        ));
    }
    let mut source = tokio::fs::File::open(path)
        .await
        .map_err(|error| download_error(error.to_string()))?;
    sink.writer
        .get_mut()
        .set_len(0)
        .await
        .map_err(|error| cache_error(sink.partial, error))?;
    let mut buffer = vec![0u8; 256 * 1024];
    loop {
        let read = tokio::io::AsyncReadExt::read(&mut source, &mut buffer)
            .await
            .map_err(|error| download_error(error.to_string()))?;
        if read == 0 {
            return Ok(());
        }
        sink.take(
            tokio_util::bytes::Bytes::copy_from_slice(&buffer[..read]),
            tee,
        )
        .await?;
    }
}

/// The SHA3-224 hex digest of `data` (what `hash:sha3:` uses for 56 digits).
pub fn sha3_224_hex(data: &[u8]) -> String {
    hex::encode(sha3::Sha3_224::digest(data))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn parses_the_original_forms() {
        let digest = "a".repeat(56);
        let location =
            PackageLocation::parse(&format!("hash:sha3:{digest}:http://h:80/x.gvmi")).unwrap();
        assert_eq!(location.digest, digest);
        assert_eq!(location.url, "http://h:80/x.gvmi");
        let location =
            PackageLocation::parse(&format!("HASH://sha3:0x{}:file:///p", "B".repeat(64))).unwrap();
        assert_eq!(location.digest, "b".repeat(64));
        assert_eq!(location.url, "file:///p");
        assert!(matches!(
            PackageLocation::parse("http://h/x"),
            Err(PackageError::Malformed(_))
        ));
        assert!(matches!(
            PackageLocation::parse(&format!("hash:sha256:{digest}:http://h")),
            Err(PackageError::UnsupportedAlgorithm(_))
        ));
        assert!(matches!(
            PackageLocation::parse("hash:sha3:abcd:http://h"),
            Err(PackageError::DigestLength(4))
        ));
        assert!(matches!(
            PackageLocation::parse(&format!("hash:sha3:{}:http://h", "g".repeat(56))),
            Err(PackageError::Malformed(_))
        ));
    }

    fn own_node() -> FetchPolicy {
        FetchPolicy {
            allow_local_files: true,
            ..FetchPolicy::default()
        }
    }

    async fn fetch(task_package: &str, cache: &Path) -> Result<PathBuf, PackageError> {
        fetch_with_policy(task_package, cache, None, &own_node()).await
    }

    fn leftovers(cache: &Path) -> Vec<String> {
        std::fs::read_dir(cache.join("packages"))
            .map(|entries| {
                entries
                    .filter_map(|entry| entry.ok())
                    .map(|entry| entry.file_name().to_string_lossy().into_owned())
                    .filter(|name| !name.ends_with(".lock"))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The oracle exploit: another node's requestor names a provider file
    /// with a wrong hash; the refusal comes before the file is read and says
    /// nothing about it (no path, no hash, no existence).
    #[tokio::test]
    async fn local_files_are_refused_to_other_nodes_without_an_oracle() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("identity.key");
        std::fs::write(&secret, b"key bytes").unwrap();
        let cache = dir.path().join("cache");
        let wrong = "0".repeat(56);
        for url in [
            format!("file://{}", secret.display()),
            secret.display().to_string(),
            format!("file://{}", dir.path().join("missing").display()),
        ] {
            let error = fetch_with_policy(
                &format!("hash:sha3:{wrong}:{url}"),
                &cache,
                None,
                &FetchPolicy::default(),
            )
            .await
            .unwrap_err();
            assert_eq!(error, PackageError::LocalFileRefused);
            let message = error.to_string();
            assert!(
                !message.contains(&*dir.path().to_string_lossy()),
                "{message}"
            );
            assert!(!message.contains(&sha3_224_hex(b"key bytes")), "{message}");
        }
        // Even the own node's hash mismatch no longer tells the real hash.
        let error = fetch(
            &format!("hash:sha3:{wrong}:file://{}", secret.display()),
            &cache,
        )
        .await
        .unwrap_err();
        assert!(
            !error.to_string().contains(&sha3_224_hex(b"key bytes")),
            "{error}"
        );
        assert!(leftovers(&cache).is_empty(), "{:?}", leftovers(&cache));
    }

    /// The disk-filling exploit: an endless source stops at the limit and
    /// leaves no partial file behind.
    #[tokio::test]
    async fn endless_packages_stop_at_the_limit_and_leave_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("cache");
        let policy = FetchPolicy {
            max_bytes: 3 << 20,
            ..own_node()
        };
        let error = fetch_with_policy(
            &format!("hash:sha3:{}:file:///dev/zero", "0".repeat(56)),
            &cache,
            None,
            &policy,
        )
        .await
        .unwrap_err();
        assert_eq!(error, PackageError::TooLarge { limit: 3 << 20 });
        assert!(leftovers(&cache).is_empty(), "{:?}", leftovers(&cache));
    }

    #[tokio::test]
    async fn downloads_from_loopback_are_refused_without_the_setting() {
        let dir = tempfile::tempdir().unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        for host in ["127.0.0.1", "localhost", "[::ffff:127.0.0.1]"] {
            let error = fetch_with_policy(
                &format!("hash:sha3:{}:http://{host}:{port}/p.wasm", "0".repeat(56)),
                &dir.path().join("cache"),
                None,
                &FetchPolicy::default(),
            )
            .await
            .unwrap_err();
            assert!(
                matches!(error, PackageError::Refused { .. }),
                "{host}: {error}"
            );
            assert!(
                error.to_string().contains("allow-private-transfers"),
                "{error}"
            );
        }
        assert!(leftovers(&dir.path().join("cache")).is_empty());
    }

    #[tokio::test]
    async fn fetches_verifies_and_caches() {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("package.bin");
        std::fs::write(&source, b"package bytes").unwrap();
        let cache = dir.path().join("cache");
        let digest = sha3_224_hex(b"package bytes");
        let task_package = format!("hash:sha3:{digest}:file://{}", source.display());
        let path = fetch(&task_package, &cache).await.unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"package bytes");
        // The cache answers even when the source is gone.
        std::fs::remove_file(&source).unwrap();
        assert_eq!(fetch(&task_package, &cache).await.unwrap(), path);

        // A 512-bit digest of other bytes.
        std::fs::write(&source, b"other").unwrap();
        let digest512 = hex::encode(sha3::Sha3_512::digest(b"other"));
        let path = fetch(
            &format!("hash:sha3:{digest512}:{}", source.display()),
            &cache,
        )
        .await
        .unwrap();
        assert_eq!(std::fs::read(path).unwrap(), b"other");

        // Wrong hash: a clear error and nothing left in the cache.
        let wrong = "0".repeat(56);
        let error = fetch(&format!("hash:sha3:{wrong}:{}", source.display()), &cache)
            .await
            .unwrap_err();
        assert!(error.to_string().contains("hash mismatch"), "{error}");
        assert!(!cached_path(&cache, &wrong).exists());
        assert!(leftovers(&cache)
            .iter()
            .all(|name| !name.ends_with(".partial")));

        let error = fetch(&format!("hash:sha3:{wrong}:/no/such/file"), &cache)
            .await
            .unwrap_err();
        assert!(matches!(error, PackageError::Download { .. }), "{error}");
    }
}
