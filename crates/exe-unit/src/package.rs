//! Task packages: `hash:sha3:<hex>:<url>` is downloaded once, checked against
//! its hash and kept in the cache dir under that hash, so every later activity
//! with the same package starts from the cache. The digest length picks the
//! SHA-3 variant (56 hex digits: SHA3-224, also 256, 384 and 512), as in the
//! original. Sources: `http(s)://`, and `file://` or local paths for the
//! provider's own requestor only.
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
    #[error("task packages from file:// URLs or local paths are only for the provider's own node; serve the package over http(s)://")]
    LocalFileRefused,
    #[error("the task package is larger than the provider's limit of {limit} bytes; the download was stopped and removed")]
    TooLarge { limit: u64 },
    #[error("task package hash mismatch: the downloaded bytes do not have sha3 {expected}; they were discarded")]
    HashMismatch { expected: String },
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
}

impl Default for FetchPolicy {
    /// The strictest: public addresses, no local files, [`DEFAULT_MAX_PACKAGE_BYTES`].
    fn default() -> Self {
        FetchPolicy {
            outbound: OutboundPolicy::public_only(),
            allow_local_files: false,
            max_bytes: DEFAULT_MAX_PACKAGE_BYTES,
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
    let is_http = location.url.starts_with("http://") || location.url.starts_with("https://");
    if !is_http && !policy.allow_local_files {
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
            // Only an interrupted http(s) download (bounded by max_bytes) is
            // kept, for the next attempt to resume; anything else is removed.
            let resumable = matches!(error, PackageError::Download { .. }) && is_http;
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
    let too_large = PackageError::TooLarge {
        limit: policy.max_bytes,
    };
    let download_error = |message: String| PackageError::Download {
        url: location.url.clone(),
        message,
    };
    let cache_error =
        |error: std::io::Error| PackageError::Cache(format!("{}: {error}", partial.display()));
    let mut hasher = Sha3Hasher::for_hex_len(location.digest.len())
        .ok_or(PackageError::DigestLength(location.digest.len()))?;
    let url = location.url.as_str();
    let mut file = tokio::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(partial)
        .await
        .map_err(cache_error)?;
    if url.starts_with("http://") || url.starts_with("https://") {
        // Hash what an earlier attempt left, then ask only for the rest.
        let mut have = 0u64;
        let mut buffer = vec![0u8; 256 * 1024];
        loop {
            let read = tokio::io::AsyncReadExt::read(&mut file, &mut buffer)
                .await
                .map_err(cache_error)?;
            if read == 0 {
                break;
            }
            hasher.update(&buffer[..read]);
            have += read as u64;
        }
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
        let response =
            if have > 0 && response.status() == reqwest::StatusCode::RANGE_NOT_SATISFIABLE {
                // The partial file already holds everything.
                tee.replay(partial, have).await.map_err(cache_error)?;
                return Ok(hasher.finish_hex());
            } else {
                response.error_for_status().map_err(failure)?
            };
        if have > 0 && response.status() == reqwest::StatusCode::PARTIAL_CONTENT {
            tracing::info!(url, bytes = have, "resuming the task package download");
            tee.replay(partial, have).await.map_err(cache_error)?;
        } else if have > 0 {
            // The server ignored the range: start over.
            hasher = Sha3Hasher::for_hex_len(location.digest.len())
                .ok_or(PackageError::DigestLength(location.digest.len()))?;
            file.set_len(0).await.map_err(cache_error)?;
            tokio::io::AsyncSeekExt::seek(&mut file, std::io::SeekFrom::Start(0))
                .await
                .map_err(cache_error)?;
            have = 0;
        }
        let total = response.content_length().map(|length| length + have);
        if total.is_some_and(|total| total > policy.max_bytes) {
            return Err(too_large);
        }
        let mut progress = Progress::new(url, have, total);
        let mut writer = tokio::io::BufWriter::with_capacity(1 << 20, file);
        let mut body = response.bytes_stream();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(failure)?;
            if progress.done + chunk.len() as u64 > policy.max_bytes {
                return Err(too_large);
            }
            hasher.update(&chunk);
            writer.write_all(&chunk).await.map_err(cache_error)?;
            progress.add(chunk.len());
            tee.send(chunk).await;
        }
        writer.flush().await.map_err(cache_error)?;
        if let Some(total) = total {
            if progress.done < total {
                return Err(download_error(format!(
                    "the connection ended after {} of {total} bytes",
                    progress.done
                )));
            }
        }
    } else {
        let path = url.strip_prefix("file://").unwrap_or(url);
        if !path.starts_with('/') {
            return Err(download_error(
                "only http(s)://, file:// and absolute paths are supported".into(),
            ));
        }
        let mut source = tokio::fs::File::open(path)
            .await
            .map_err(|error| download_error(error.to_string()))?;
        file.set_len(0).await.map_err(cache_error)?;
        let mut buffer = vec![0u8; 256 * 1024];
        let mut done = 0u64;
        loop {
            let read = tokio::io::AsyncReadExt::read(&mut source, &mut buffer)
                .await
                .map_err(|error| download_error(error.to_string()))?;
            if read == 0 {
                break;
            }
            done += read as u64;
            if done > policy.max_bytes {
                return Err(too_large);
            }
            hasher.update(&buffer[..read]);
            file.write_all(&buffer[..read]).await.map_err(cache_error)?;
            tee.send(tokio_util::bytes::Bytes::copy_from_slice(&buffer[..read]))
                .await;
        }
        file.flush().await.map_err(cache_error)?;
    }
    Ok(hasher.finish_hex())
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
