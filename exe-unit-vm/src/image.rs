//! Images: the task package is recognised by its first bytes (a `docker
//! save` tarball, plain or gzip-compressed; or the original's `.gvmi`
//! image, package format `gvmkit-squash`, imported by [`crate::gvmi`]) and loaded into the engine by content only:
//! a tarball's own names are stripped on the way in ([`crate::archive`]), so a
//! load never sets or moves a tag; the exe unit then tags the loaded image id
//! `golem-vm-cache:<sha3 hex>` itself and records the id ([`crate::cache`]).
//! A tarball streams into the engine's load while it downloads
//! ([`download_and_load`]); its last bytes are held back until the hash is
//! verified, so a wrong or broken download never becomes an image.
//! `docker:<ref>` names an image the engine has or can pull; the runtime
//! refuses it unless the provider allows it.

use std::collections::VecDeque;
use std::path::Path;

use bollard::query_parameters::{CreateImageOptions, ImportImageOptions, TagImageOptions};
use bollard::Docker;
use futures::{Stream, StreamExt};
use golem_exe_unit::RuntimeError;

use crate::archive::{StripError, TagStripper};
pub use crate::engine::{engine_message, image_id, is_image_id, remove_loaded, Loaded};
use tokio::io::AsyncReadExt;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::bytes::Bytes;

/// Repository of the tags that cache loaded packages by hash.
pub const CACHE_REPOSITORY: &str = "golem-vm-cache";
/// Prefix of a task package that names an engine image instead of a file.
pub const DOCKER_REFERENCE_PREFIX: &str = "docker:";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageFormat {
    /// `docker save` output (a tar with `manifest.json`), maybe gzip-compressed.
    DockerArchive,
    /// The original's squashfs + JSON metadata image.
    GvmkitSquash,
    Unknown,
}

/// Recognise a package by its first bytes.
pub fn sniff(head: &[u8]) -> ImageFormat {
    let tar = head.len() >= 262 && &head[257..262] == b"ustar";
    let gzip = head.starts_with(&[0x1f, 0x8b]);
    if tar || gzip {
        ImageFormat::DockerArchive
    } else if head.starts_with(b"hsqs") {
        ImageFormat::GvmkitSquash
    } else {
        ImageFormat::Unknown
    }
}

/// The cache tag of a package whose digest is `digest`.
pub fn cache_tag(digest: &str) -> String {
    format!("{CACHE_REPOSITORY}:{digest}")
}

/// How many downloaded chunks may wait for the engine.
const TEE_CHUNKS: usize = 64;
/// Bytes enough to recognise a package's format.
const SNIFF_BYTES: usize = 512;

/// Fetch `task_package` (`hash:sha3:<hex>:<url>`) into the core's package
/// cache and load it into the engine at the same time: a `docker save`
/// tarball streams into `/images/load` while it downloads and is hashed; the
/// last chunk is held back until the hash is verified, and a failed download
/// or a wrong hash drops the request, so the engine never finishes loading it
/// (should it have, what it loaded is removed). Other formats, and a package
/// already in the file cache, are loaded from the file after the download.
/// Returns the loaded image's reference.
pub async fn download_and_load(
    docker: &Docker,
    task_package: &str,
    cache_dir: &Path,
    policy: &golem_exe_unit::package::FetchPolicy,
) -> Result<Loaded, RuntimeError> {
    let (tee, mut arriving) = mpsc::channel::<Bytes>(TEE_CHUNKS);
    let (verdict_sender, verdict) = watch::channel(None::<bool>);
    let download = {
        let task_package = task_package.to_string();
        let cache_dir = cache_dir.to_path_buf();
        let policy = policy.clone();
        tokio::spawn(async move {
            let fetched = golem_exe_unit::package::fetch_with_policy(
                &task_package,
                &cache_dir,
                Some(tee),
                &policy,
            )
            .await;
            let _ = verdict_sender.send(Some(fetched.is_ok()));
            fetched
        })
    };
    let download = async move {
        download
            .await
            .map_err(|error| RuntimeError::new(format!("the download task failed: {error}")))?
            .map_err(|error| RuntimeError::new(error.to_string()))
    };
    tokio::pin!(download);

    let mut head = VecDeque::new();
    let mut head_length = 0;
    while head_length < SNIFF_BYTES {
        let Some(chunk) = arriving.recv().await else {
            break;
        };
        head_length += chunk.len();
        head.push_back(chunk);
    }
    let first: Vec<u8> = head
        .iter()
        .flat_map(|chunk| chunk.iter().copied())
        .take(SNIFF_BYTES)
        .collect();
    if sniff(&first) != ImageFormat::DockerArchive {
        // Not streamable (or nothing was streamed: the file was cached).
        drop(arriving);
        let package = download.await?;
        return load(docker, &package).await;
    }

    let body = held_back_body(head, arriving, verdict);
    let import = load_archive(docker, body);
    tokio::pin!(import);
    let first_done = tokio::select! {
        downloaded = &mut download => Ok(downloaded),
        imported = &mut import => Err(imported),
    };
    match first_done {
        Ok(Ok(_)) => import.await,
        // Dropping `import` aborts its unfinished request.
        Ok(Err(error)) => Err(error),
        Err(imported) => {
            // The engine stopped before the end: normally an error. The
            // download goes on without it; its verdict explains better.
            match (download.await, imported) {
                (Err(error), Ok(loaded)) => {
                    remove_loaded(docker, &loaded).await;
                    Err(error)
                }
                (Err(error), Err(_)) => Err(error),
                (Ok(_), imported) => imported,
            }
        }
    }
}

/// The load request's body: `head` and then what keeps `arriving`, always
/// one chunk behind; the last chunk goes only once the download is verified
/// (an unverified body never ends, and its request is dropped).
fn held_back_body(
    head: VecDeque<Bytes>,
    arriving: mpsc::Receiver<Bytes>,
    verdict: watch::Receiver<Option<bool>>,
) -> impl Stream<Item = Bytes> + Send + 'static {
    futures::stream::unfold(
        (head, arriving, verdict),
        |(mut queue, mut arriving, mut verdict)| async move {
            loop {
                if queue.len() > 1 {
                    let chunk = queue.pop_front()?;
                    return Some((chunk, (queue, arriving, verdict)));
                }
                match arriving.recv().await {
                    Some(chunk) => queue.push_back(chunk),
                    None => {
                        let verified = verdict
                            .wait_for(Option::is_some)
                            .await
                            .map(|verdict| *verdict == Some(true))
                            .unwrap_or(false);
                        if !verified {
                            futures::future::pending::<()>().await;
                        }
                        let last = queue.pop_front()?;
                        return Some((last, (queue, arriving, verdict)));
                    }
                }
            }
        },
    )
}

/// Load a package file into the engine; returns the loaded image's reference.
pub async fn load(docker: &Docker, package: &Path) -> Result<Loaded, RuntimeError> {
    let mut file = tokio::fs::File::open(package).await.map_err(|error| {
        RuntimeError::new(format!(
            "cannot open the image package {}: {error}",
            package.display()
        ))
    })?;
    let mut head = vec![0u8; SNIFF_BYTES];
    let mut filled = 0;
    while filled < head.len() {
        let read = file.read(&mut head[filled..]).await.map_err(|error| {
            RuntimeError::new(format!("cannot read the image package: {error}"))
        })?;
        if read == 0 {
            break;
        }
        filled += read;
    }
    match sniff(&head[..filled]) {
        ImageFormat::DockerArchive => {}
        ImageFormat::GvmkitSquash => {
            let image_id = crate::gvmi::import(docker, package).await?;
            return Ok(Loaded { image_id });
        }
        ImageFormat::Unknown => {
            return Err(RuntimeError::new(
                "the package is not an image: expected a `docker save` tarball (tar or tar.gz) or a .gvmi made by gvmkit-build",
            ))
        }
    }
    let file = tokio::fs::File::open(package)
        .await
        .map_err(|error| RuntimeError::new(format!("cannot open the image package: {error}")))?;
    let body = tokio_util::io::ReaderStream::with_capacity(file, 1 << 20)
        .filter_map(|chunk| async move { chunk.ok() });
    load_archive(docker, body).await
}

/// `docker load` of a `docker save` tarball streamed as `body`, its names
/// stripped on the way ([`stripped_body`]); returns the loaded image's id. A
/// tarball the stripper refuses is never loaded: its request is dropped.
async fn load_archive(
    docker: &Docker,
    body: impl Stream<Item = Bytes> + Send + 'static,
) -> Result<Loaded, RuntimeError> {
    let (refusal_sender, refusal) = oneshot::channel();
    let load = load_stripped(docker, stripped_body(body, refusal_sender));
    tokio::pin!(load);
    tokio::select! {
        biased;
        Ok(error) = refusal => Err(RuntimeError::new(error.to_string())),
        loaded = &mut load => loaded,
    }
}

/// `body` rewritten by a [`TagStripper`]. When it refuses the archive, the
/// reason goes to `refusal` and the stream never ends (its request is dropped).
fn stripped_body(
    body: impl Stream<Item = Bytes> + Send + 'static,
    refusal: oneshot::Sender<StripError>,
) -> impl Stream<Item = Bytes> + Send + 'static {
    futures::stream::unfold(
        (Box::pin(body), TagStripper::new(), Some(refusal), false),
        |(mut body, mut stripper, mut refusal, mut ended)| async move {
            loop {
                if ended {
                    return None;
                }
                let step = match body.next().await {
                    Some(chunk) => stripper.push(&chunk),
                    None => {
                        ended = true;
                        stripper.finish()
                    }
                };
                match step {
                    Ok(bytes) if bytes.is_empty() => continue,
                    Ok(bytes) => {
                        return Some((Bytes::from(bytes), (body, stripper, refusal, ended)))
                    }
                    Err(error) => {
                        tracing::warn!(%error, "refusing the image package");
                        if let Some(refusal) = refusal.take() {
                            let _ = refusal.send(error);
                        }
                        futures::future::pending::<()>().await;
                    }
                }
            }
        },
    )
}

/// The engine's load of a tarball without names: the one image id it reports.
async fn load_stripped(
    docker: &Docker,
    body: impl Stream<Item = Bytes> + Send + 'static,
) -> Result<Loaded, RuntimeError> {
    let mut progress = docker.import_image_stream(
        ImportImageOptions {
            quiet: true,
            ..Default::default()
        },
        body,
        None,
    );
    let mut loaded = Vec::new();
    let mut named = Vec::new();
    let mut messages = Vec::new();
    while let Some(item) = progress.next().await {
        let info = item.map_err(|error| {
            RuntimeError::new(format!(
                "the engine cannot load the image package (is it a complete `docker save` tarball?): {}",
                engine_message(&error)
            ))
        })?;
        if let Some(stream) = info.stream {
            for line in stream.lines() {
                let line = line.trim();
                if let Some(id) = line.strip_prefix("Loaded image ID: ") {
                    loaded.push(id.to_string());
                } else if let Some(name) = line.strip_prefix("Loaded image: ") {
                    named.push(name.to_string());
                } else if !line.is_empty() {
                    messages.push(line.to_string());
                }
            }
        }
    }
    if !named.is_empty() {
        // The stripper's job is that this never happens; say so loudly.
        tracing::error!(
            ?named,
            "the engine named a loaded image although its names were stripped"
        );
        return Err(RuntimeError::new(format!(
            "the engine named the loaded image {} although its names were stripped; refusing it",
            named.join(", ")
        )));
    }
    match loaded.as_slice() {
        [image_id] if is_image_id(image_id) => Ok(Loaded {
            image_id: image_id.clone(),
        }),
        [] => Err(RuntimeError::new(format!(
            "the image package holds no image (the engine said: {})",
            if messages.is_empty() {
                "nothing".to_string()
            } else {
                messages.join("; ")
            }
        ))),
        more => Err(RuntimeError::new(format!(
            "the engine loaded {} images ({}) from one package; a task package holds exactly one",
            more.len(),
            more.join(", ")
        ))),
    }
}

/// Tag the image `image_id` as the cache entry of `digest`.
pub async fn tag_cached(docker: &Docker, image_id: &str, digest: &str) -> Result<(), RuntimeError> {
    docker
        .tag_image(
            image_id,
            Some(TagImageOptions {
                repo: Some(CACHE_REPOSITORY.to_string()),
                tag: Some(digest.to_string()),
            }),
        )
        .await
        .map_err(|error| {
            RuntimeError::new(format!(
                "cannot tag the loaded image: {}",
                engine_message(&error)
            ))
        })
}

/// Make sure `reference` (from `docker:<reference>`) is in the engine,
/// pulling it if needed; returns its image id. The cache's own repository
/// is not a reference a requestor may name.
pub async fn ensure_reference(docker: &Docker, reference: &str) -> Result<String, RuntimeError> {
    if reference.is_empty() {
        return Err(RuntimeError::new("the task package docker: names no image"));
    }
    if names_cache_repository(reference) {
        return Err(RuntimeError::new(format!(
            "the task package names the provider's image cache ({CACHE_REPOSITORY}); name an image instead"
        )));
    }
    if let Some(image_id) = image_id(docker, reference).await {
        return Ok(image_id);
    }
    let mut pull = docker.create_image(
        Some(CreateImageOptions {
            from_image: Some(reference.to_string()),
            ..Default::default()
        }),
        None,
        None,
    );
    while let Some(item) = pull.next().await {
        item.map_err(|error| {
            RuntimeError::new(format!(
                "the image {reference} is not on this provider and cannot be pulled: {}",
                engine_message(&error)
            ))
        })?;
    }
    image_id(docker, reference).await.ok_or_else(|| {
        RuntimeError::new(format!(
            "the image {reference} was pulled but the engine does not find it"
        ))
    })
}

/// Whether `reference` names an image of the cache's repository (with or
/// without the default registry's prefix, by tag or by digest).
pub fn names_cache_repository(reference: &str) -> bool {
    let without_digest = reference.split('@').next().unwrap_or_default();
    // A tag follows the last ':' unless that ':' belongs to a registry port.
    let repository = match without_digest.rsplit_once(':') {
        Some((repository, tag)) if !tag.contains('/') => repository,
        _ => without_digest,
    };
    let repository = repository
        .trim_start_matches("docker.io/")
        .trim_start_matches("library/");
    repository == CACHE_REPOSITORY
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_formats() {
        let mut tar = vec![0u8; 512];
        tar[257..262].copy_from_slice(b"ustar");
        assert_eq!(sniff(&tar), ImageFormat::DockerArchive);
        assert_eq!(sniff(&[0x1f, 0x8b, 8, 0]), ImageFormat::DockerArchive);
        assert_eq!(sniff(b"hsqs\0\0\0\0"), ImageFormat::GvmkitSquash);
        assert_eq!(sniff(b"just some text"), ImageFormat::Unknown);
        assert_eq!(sniff(b""), ImageFormat::Unknown);
    }

    #[test]
    fn docker_references_to_the_cache_repository_are_recognised() {
        for reference in [
            "golem-vm-cache:abc",
            "golem-vm-cache",
            "docker.io/library/golem-vm-cache:abc",
            "golem-vm-cache@sha256:00",
        ] {
            assert!(names_cache_repository(reference), "{reference}");
        }
        for reference in [
            "busybox:latest",
            "localhost:5000/golem-vm-cache-x:1",
            "me/golem-vm-cache:1",
        ] {
            assert!(!names_cache_repository(reference), "{reference}");
        }
    }
}
