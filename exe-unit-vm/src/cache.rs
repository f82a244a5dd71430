//! The image cache: which loaded image serves a package, and its bound.
//! Every package this provider loaded has a record
//! `<cache-dir>/vm-images/sha3-<hex>`, written by the exe unit only after a
//! verified load: its content is the image id the load produced, its
//! modification time the entry's last use. A cached image is reused only when
//! the `golem-vm-cache:<sha3>` tag still points to the recorded id (a tag is
//! a name anyone with the engine can move; the record is the provider's own),
//! and the container is created from that id. At deploy, once the activity's
//! container exists, the entries beyond the newest `max_images` are evicted
//! unless a container uses their image: the cache tag (when it still names the
//! recorded image), the package file and the record. Only entries with a
//! record are considered, so providers sharing an engine never evict what
//! they did not load.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use bollard::query_parameters::{ListContainersOptions, RemoveImageOptions};
use bollard::Docker;

use crate::image::{cache_tag, engine_message, is_image_id};

/// The directory of the records under the provider's cache dir.
pub const MARKER_DIRECTORY: &str = "vm-images";

#[derive(Debug, Clone)]
pub struct ImageCache {
    cache_dir: PathBuf,
    max_images: usize,
}

/// One record: a cached package's digest and its last use.
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

    /// Record that the verified load of package `digest` produced `image_id`.
    pub fn record(&self, digest: &str, image_id: &str) -> std::io::Result<()> {
        let marker = self.marker(digest);
        if let Some(parent) = marker.parent() {
            std::fs::create_dir_all(parent)?;
        }
        // Written whole under another name, then renamed: a reader never
        // sees half a record.
        let partial = marker.with_file_name(format!(".sha3-{digest}.partial"));
        std::fs::write(&partial, format!("{image_id}\n"))?;
        std::fs::rename(&partial, &marker)
    }

    /// The image id recorded for package `digest`, if this provider loaded
    /// it (records from before ids were recorded hold none).
    pub fn recorded(&self, digest: &str) -> Option<String> {
        let text = std::fs::read_to_string(self.marker(digest)).ok()?;
        let id = text.lines().next()?.trim();
        is_image_id(id).then(|| id.to_string())
    }

    /// The image to run for package `digest` from the cache: the recorded
    /// id when the cache tag still points to it; `None` means load it again.
    pub async fn lookup(&self, docker: &Docker, digest: &str) -> Option<String> {
        let tag = cache_tag(digest);
        let recorded = self.recorded(digest);
        let tagged = crate::image::image_id(docker, &tag).await;
        let hit = verified_hit(recorded.as_deref(), tagged.as_deref());
        if hit.is_none() && tagged.is_some() {
            tracing::warn!(%tag, ?recorded, ?tagged, "the cache tag does not name the image this provider recorded; loading the package again");
        }
        hit
    }

    /// Record a use of the entry `digest` (its record must exist).
    pub fn touch(&self, digest: &str) -> std::io::Result<()> {
        std::fs::OpenOptions::new()
            .append(true)
            .open(self.marker(digest))?
            .set_modified(SystemTime::now())
    }

    /// The records, most recently used first.
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
        let recorded = self.recorded(digest);
        if let Some(id) = &recorded {
            if in_use.contains(id) {
                tracing::debug!(%tag, "a container uses this cached image; kept");
                return Ok(false);
            }
        }
        if let Ok(image) = docker.inspect_image(&tag).await {
            let id = image.id.unwrap_or_default();
            if in_use.contains(&id) {
                tracing::debug!(%tag, "a container uses this cached image; kept");
                return Ok(false);
            }
            // The tag is ours to remove when it names what we loaded (or the
            // record predates ids); a tag moved elsewhere is left alone.
            if recorded.is_none() || recorded.as_deref() == Some(id.as_str()) {
                remove_tag(docker, &tag).await?;
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

/// The image a cache hit may run: the id this provider recorded after a
/// verified load, and only while the cache tag still points to it.
pub fn verified_hit(recorded: Option<&str>, tag_points_to: Option<&str>) -> Option<String> {
    match (recorded, tag_points_to) {
        (Some(recorded), Some(tagged)) if recorded == tagged => Some(recorded.to_string()),
        _ => None,
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
    fn records_order_entries_by_last_use() {
        let dir = tempfile::tempdir().unwrap_or_else(|error| panic!("{error}"));
        let cache = ImageCache::new(dir.path(), 2);
        let id = format!("sha256:{}", "ab".repeat(32));
        for digest in ["aa", "bb", "cc"] {
            cache
                .record(digest, &id)
                .unwrap_or_else(|error| panic!("{error}"));
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        cache.touch("aa").unwrap_or_else(|error| panic!("{error}"));
        let order: Vec<String> = cache.entries().into_iter().map(|e| e.digest).collect();
        assert_eq!(order, vec!["aa", "cc", "bb"]);
        // A use keeps the recorded id.
        assert_eq!(cache.recorded("aa"), Some(id));
    }

    #[test]
    fn a_cache_hit_needs_the_tag_to_point_to_the_recorded_image() {
        let ours = format!("sha256:{}", "0a".repeat(32));
        let planted = format!("sha256:{}", "0b".repeat(32));
        assert_eq!(verified_hit(Some(&ours), Some(&ours)), Some(ours.clone()));
        // Someone moved the tag (e.g. a tarball that named it): reload.
        assert_eq!(verified_hit(Some(&ours), Some(&planted)), None);
        // A tag this provider never recorded (another's, or planted): reload.
        assert_eq!(verified_hit(None, Some(&planted)), None);
        assert_eq!(verified_hit(Some(&ours), None), None);
    }

    #[test]
    fn only_a_written_record_with_a_full_image_id_counts() {
        let dir = tempfile::tempdir().unwrap_or_else(|error| panic!("{error}"));
        let cache = ImageCache::new(dir.path(), 2);
        // Nothing recorded: a use does not create a record.
        assert_eq!(cache.recorded("dd"), None);
        assert!(cache.touch("dd").is_err());
        assert_eq!(cache.recorded("dd"), None);
        // A record in the old format (the tags a load set) names no image.
        std::fs::create_dir_all(dir.path().join(MARKER_DIRECTORY))
            .unwrap_or_else(|error| panic!("{error}"));
        std::fs::write(cache.marker("ee"), "victim-app:latest\n")
            .unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(cache.recorded("ee"), None);
        std::fs::write(cache.marker("ee"), "sha256:1234\n")
            .unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(cache.recorded("ee"), None);
        let id = format!("sha256:{}", "0f".repeat(32));
        cache
            .record("ee", &id)
            .unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(cache.recorded("ee"), Some(id));
    }
}
