//! Task packages: `hash:sha3:<hex>:<url>` is downloaded once, checked against
//! its hash and kept in the cache dir under that hash, so every later activity
//! with the same package starts from the cache. The digest length picks the
//! SHA-3 variant (56 hex digits: SHA3-224, also 256, 384 and 512), as in the
//! original. Sources: `http(s)://`, `file://` and local paths.

use std::path::{Path, PathBuf};

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
    #[error("task package hash mismatch: expected sha3 {expected}, got {actual} (from {url})")]
    HashMismatch {
        url: String,
        expected: String,
        actual: String,
    },
    #[error("task package cache error: {0}")]
    Cache(String),
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

/// Download (or find in the cache) and verify the package; returns its path
/// in the cache. An interrupted download leaves `.sha3-<hex>.partial` behind
/// and the next fetch resumes it (an HTTP `Range` request); an exclusive lock
/// on `.sha3-<hex>.lock` keeps two exe units from writing it at once. Progress
/// is logged about every 10 %.
pub async fn fetch(task_package: &str, cache_dir: &Path) -> Result<PathBuf, PackageError> {
    fetch_with_tee(task_package, cache_dir, None).await
}

/// Where [`fetch_with_tee`] also sends the package's bytes while it downloads.
pub type PackageTee = tokio::sync::mpsc::Sender<tokio_util::bytes::Bytes>;

/// [`fetch`], and every byte of the package, from the first and in order,
/// also goes to `tee` while it arrives (bytes an earlier attempt left in the
/// partial file included), so a runtime can process the package during the
/// download, e.g. stream it into an image load. Nothing is sent when the
/// package is already in the cache (read the returned file instead); when the
/// receiver goes away the download goes on without it. Only `Ok` says the
/// bytes were the right ones: the receiver must not commit what it built
/// from them before.
pub async fn fetch_with_tee(
    task_package: &str,
    cache_dir: &Path,
    tee: Option<PackageTee>,
) -> Result<PathBuf, PackageError> {
    let location = PackageLocation::parse(task_package)?;
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
    let actual = match download_and_hash(&location, &partial, &mut tee).await {
        Ok(actual) => actual,
        Err(error) => {
            // Keep a non-empty partial download for the next attempt to resume.
            if tokio::fs::metadata(&partial)
                .await
                .map(|meta| meta.len() == 0)
                .unwrap_or(false)
            {
                let _ = tokio::fs::remove_file(&partial).await;
            }
            return Err(error);
        }
    };
    if actual != location.digest {
        let _ = tokio::fs::remove_file(&partial).await;
        return Err(PackageError::HashMismatch {
            url: location.url,
            expected: location.digest,
            actual,
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
) -> Result<String, PackageError> {
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
        let client = reqwest::Client::new();
        let mut request = client.get(url);
        if have > 0 {
            request = request.header(reqwest::header::RANGE, format!("bytes={have}-"));
        }
        let response = request
            .send()
            .await
            .map_err(|error| download_error(error.to_string()))?;
        let response =
            if have > 0 && response.status() == reqwest::StatusCode::RANGE_NOT_SATISFIABLE {
                // The partial file already holds everything.
                tee.replay(partial, have).await.map_err(cache_error)?;
                return Ok(hasher.finish_hex());
            } else {
                response
                    .error_for_status()
                    .map_err(|error| download_error(error.to_string()))?
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
        let mut progress = Progress::new(url, have, total);
        let mut writer = tokio::io::BufWriter::with_capacity(1 << 20, file);
        let mut body = response.bytes_stream();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|error| download_error(error.to_string()))?;
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
        loop {
            let read = tokio::io::AsyncReadExt::read(&mut source, &mut buffer)
                .await
                .map_err(|error| download_error(error.to_string()))?;
            if read == 0 {
                break;
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
        let leftovers: Vec<_> = std::fs::read_dir(cache.join("packages"))
            .unwrap()
            .filter_map(|entry| entry.ok())
            .filter(|entry| entry.file_name().to_string_lossy().ends_with(".partial"))
            .collect();
        assert!(leftovers.is_empty());

        let error = fetch(&format!("hash:sha3:{wrong}:/no/such/file"), &cache)
            .await
            .unwrap_err();
        assert!(matches!(error, PackageError::Download { .. }), "{error}");
    }
}
