//! The bounded image cache. Every package this provider loaded has a marker
//! `<cache-dir>/vm-images/sha3-<hex>`: its modification time is the entry's
//! last use, its lines the tags the load set (a `docker save` tarball names
//! its images). At deploy, once the activity's container exists, the entries
//! beyond the newest `max_images` are evicted unless a container uses their
//! image: the `golem-vm-cache:<sha3>` tag, the tags the load set (when they
//! still name the same image), the package file and the marker. Only entries
//! with a marker are considered, so providers sharing an engine never evict
//! what they did not load.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use bollard::query_parameters::{ListContainersOptions, RemoveImageOptions};
use bollard::Docker;

use crate::image::{cache_tag, engine_message};

/// The directory of the markers under the provider's cache dir.
pub const MARKER_DIRECTORY: &str = "vm-images";

#[derive(Debug, Clone)]
pub struct ImageCache {
    cache_dir: PathBuf,
    max_images: usize,
}

/// One marker: a cached package's digest and its last use.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    digest: String,
    last_used: SystemTime,
}

impl ImageCache {
    /// The cache of the provider whose cache dir is `cache_dir`.
    pub fn new(cache_dir: &Path, max_images: usize) -> ImageCache {
        ImageCache {
            cache_dir: cache_dir.to_path_buf(),
            max_images: max_images.max(1),
        }
    }

    fn marker(&self, digest: &str) -> PathBuf {
        self.cache_dir
            .join(MARKER_DIRECTORY)
            .join(format!("sha3-{digest}"))
    }

    /// Record a use of the entry `digest`; after a load, `tags` are the tags it set.
    pub fn touch(&self, digest: &str, tags: Option<&[String]>) -> std::io::Result<()> {
        let marker = self.marker(digest);
        if let Some(parent) = marker.parent() {
            std::fs::create_dir_all(parent)?;
        }
        match tags {
            Some(tags) => std::fs::write(&marker, tags.join("\n")),
            None => match std::fs::OpenOptions::new().append(true).open(&marker) {
                Ok(file) => file.set_modified(SystemTime::now()),
                // A cache entry from before markers, or another provider's.
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                    std::fs::write(&marker, "")
                }
                Err(error) => Err(error),
            },
        }
    }

    /// The markers, most recently used first.
    fn entries(&self) -> Vec<Entry> {
        let Ok(listing) = std::fs::read_dir(self.cache_dir.join(MARKER_DIRECTORY)) else {
            return Vec::new();
        };
        let mut entries: Vec<Entry> = listing
            .filter_map(Result::ok)
            .filter_map(|entry| {
                let name = entry.file_name().into_string().ok()?;
                let digest = name.strip_prefix("sha3-")?.to_string();
                let last_used = entry.metadata().ok()?.modified().ok()?;
                Some(Entry { digest, last_used })
            })
            .collect();
        entries.sort_by(|a, b| {
            b.last_used
                .cmp(&a.last_used)
                .then_with(|| a.digest.cmp(&b.digest))
        });
        entries
    }

    /// Evict the least recently used entries beyond the limit that no
    /// container uses; returns the digests evicted.
    pub async fn evict(&self, docker: &Docker) -> Vec<String> {
        let entries = self.entries();
        if entries.len() <= self.max_images {
            return Vec::new();
        }
        let in_use = match images_in_use(docker).await {
            Ok(in_use) => in_use,
            Err(error) => {
                tracing::warn!(error = %engine_message(&error), "cannot list containers; nothing evicted");
                return Vec::new();
            }
        };
        let mut evicted = Vec::new();
        for entry in &entries[self.max_images..] {
            match self.evict_entry(docker, &entry.digest, &in_use).await {
                Ok(true) => evicted.push(entry.digest.clone()),
                Ok(false) => {}
                Err(error) => {
                    tracing::warn!(digest = %entry.digest, %error, "cannot evict a cached image")
                }
            }
        }
        if !evicted.is_empty() {
            tracing::info!(?evicted, limit = self.max_images, "evicted cached images");
        }
        evicted
    }

    /// Remove one entry unless a container uses its image; `Ok(false)` when kept.
    async fn evict_entry(
        &self,
        docker: &Docker,
        digest: &str,
        in_use: &HashSet<String>,
    ) -> Result<bool, String> {
        let tag = cache_tag(digest);
        if let Ok(image) = docker.inspect_image(&tag).await {
            let id = image.id.unwrap_or_default();
            if in_use.contains(&id) {
                tracing::debug!(%tag, "a container uses this cached image; kept");
                return Ok(false);
            }
            let loaded_tags = std::fs::read_to_string(self.marker(digest)).unwrap_or_default();
            remove_tag(docker, &tag).await?;
            for loaded in loaded_tags.lines().filter(|line| !line.is_empty()) {
                let same_image = docker
                    .inspect_image(loaded)
                    .await
                    .is_ok_and(|other| other.id.as_deref() == Some(id.as_str()));
                if same_image {
                    remove_tag(docker, loaded).await?;
                }
            }
        }
        let package = golem_exe_unit::package::cached_path(&self.cache_dir, digest);
        for path in [package, self.marker(digest)] {
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                Err(error) => return Err(format!("cannot remove {}: {error}", path.display())),
            }
        }
        Ok(true)
    }
}

/// Remove a tag; the engine deletes the image with its last tag.
async fn remove_tag(docker: &Docker, tag: &str) -> Result<(), String> {
    match docker
        .remove_image(tag, None::<RemoveImageOptions>, None)
        .await
    {
        Ok(_) => Ok(()),
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => Ok(()),
        Err(error) => Err(format!("cannot remove {tag}: {}", engine_message(&error))),
    }
}

/// The image ids of all containers, running or not.
async fn images_in_use(docker: &Docker) -> Result<HashSet<String>, bollard::errors::Error> {
    let containers = docker
        .list_containers(Some(ListContainersOptions {
            all: true,
            ..Default::default()
        }))
        .await?;
    Ok(containers
        .into_iter()
        .filter_map(|container| container.image_id)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_order_entries_by_last_use() {
        let dir = tempfile::tempdir().unwrap_or_else(|error| panic!("{error}"));
        let cache = ImageCache::new(dir.path(), 2);
        let tags = vec!["a:latest".to_string()];
        for digest in ["aa", "bb", "cc"] {
            cache
                .touch(digest, Some(&tags))
                .unwrap_or_else(|error| panic!("{error}"));
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        cache
            .touch("aa", None)
            .unwrap_or_else(|error| panic!("{error}"));
        let order: Vec<String> = cache.entries().into_iter().map(|e| e.digest).collect();
        assert_eq!(order, vec!["aa", "cc", "bb"]);
        // A plain use keeps the tags the load recorded.
        assert_eq!(
            std::fs::read_to_string(cache.marker("aa")).unwrap_or_default(),
            "a:latest"
        );
    }
}
