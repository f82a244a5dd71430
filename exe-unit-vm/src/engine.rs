//! The connection to the Docker engine and the container labels: connecting
//! (with API version negotiation), the engine's version for `offer-template`,
//! the removal of containers left behind by exe units that died, and the
//! small image helpers both loaders share (`Loaded`, image ids, removing a
//! failed load, the engine's error words).

use std::collections::HashMap;
use std::time::Duration;

use bollard::query_parameters::{
    ListContainersOptions, RemoveContainerOptions, RemoveImageOptions,
};
use bollard::Docker;

/// Marks every container this exe unit creates.
pub const LABEL_KIND: &str = "golem.exe-unit";
pub const LABEL_KIND_VALUE: &str = "vm";
pub const LABEL_AGREEMENT: &str = "golem.agreement-id";
/// The provider's node id (the agreement's `offer.providerId`).
pub const LABEL_NODE: &str = "golem.node-id";
pub const LABEL_ACTIVITY: &str = "golem.activity-id";
/// Pid and start time (clock ticks after boot) of the owning exe unit.
pub const LABEL_OWNER_PID: &str = "golem.exe-unit.pid";
pub const LABEL_OWNER_START: &str = "golem.exe-unit.start";

/// How long one engine request may take (image loads of big files included).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(3600);

#[derive(Debug, thiserror::Error)]
#[error("no docker engine is reachable ({0}); start one (e.g. scripts/ensure-docker.sh) or set DOCKER_HOST")]
pub struct NoEngine(pub String);

/// Connect to the local engine (`DOCKER_HOST` or the default unix socket)
/// and agree on an API version the engine speaks.
pub async fn connect() -> Result<Docker, NoEngine> {
    let docker = Docker::connect_with_local_defaults()
        .map_err(|error| NoEngine(error.to_string()))?
        .with_timeout(REQUEST_TIMEOUT);
    let docker = tokio::time::timeout(Duration::from_secs(10), docker.negotiate_version())
        .await
        .map_err(|_| NoEngine("the engine did not answer within 10 s".into()))?
        .map_err(|error| NoEngine(error.to_string()))?;
    Ok(docker)
}

/// The engine's version string, e.g. `20.10.24`.
pub async fn version(docker: &Docker) -> Result<String, NoEngine> {
    let version = tokio::time::timeout(Duration::from_secs(5), docker.version())
        .await
        .map_err(|_| NoEngine("the engine did not answer within 5 s".into()))?
        .map_err(|error| NoEngine(error.to_string()))?;
    Ok(version.version.unwrap_or_else(|| "unknown".into()))
}

/// The names of the runtimes the engine can run containers with (`runc`,
/// `runsc`, ...).
pub async fn runtimes(docker: &Docker) -> Result<Vec<String>, NoEngine> {
    let info = tokio::time::timeout(Duration::from_secs(5), docker.info())
        .await
        .map_err(|_| NoEngine("the engine did not answer within 5 s".into()))?
        .map_err(|error| NoEngine(error.to_string()))?;
    let mut names: Vec<String> = info.runtimes.unwrap_or_default().into_keys().collect();
    names.sort();
    Ok(names)
}

/// The start time of a process in clock ticks after boot (field 22 of
/// `/proc/<pid>/stat`); with the pid it names one process for good.
pub fn process_start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; it ends at the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Whether the exe unit that labelled a container is still alive.
pub fn owner_alive(labels: &HashMap<String, String>) -> bool {
    let pid = labels.get(LABEL_OWNER_PID).and_then(|pid| pid.parse().ok());
    let start = labels
        .get(LABEL_OWNER_START)
        .and_then(|start| start.parse::<u64>().ok());
    match (pid, start) {
        (Some(pid), Some(start)) => process_start_time(pid) == Some(start),
        _ => false,
    }
}

/// Remove every container of this exe-unit kind whose owner is gone;
/// returns how many were removed.
pub async fn remove_leftovers(docker: &Docker) -> Result<usize, bollard::errors::Error> {
    let filters = HashMap::from([(
        "label".to_string(),
        vec![format!("{LABEL_KIND}={LABEL_KIND_VALUE}")],
    )]);
    let containers = docker
        .list_containers(Some(ListContainersOptions {
            all: true,
            filters: Some(filters),
            ..Default::default()
        }))
        .await?;
    let mut removed = 0;
    for container in containers {
        let labels = container.labels.unwrap_or_default();
        if owner_alive(&labels) {
            continue;
        }
        let Some(id) = container.id else { continue };
        // Its exe unit died before unmounting the volumes' nosuid mount
        // (the bind sources' parent, `<work-dir>/volumes`).
        let mut volume_roots: Vec<std::path::PathBuf> = container
            .mounts
            .unwrap_or_default()
            .into_iter()
            .filter_map(|mount| mount.source)
            .filter_map(|source| std::path::Path::new(&source).parent().map(Into::into))
            .filter(|parent: &std::path::PathBuf| parent.ends_with("volumes"))
            .collect();
        volume_roots.dedup();
        for root in volume_roots {
            if nix::mount::umount2(&root, nix::mount::MntFlags::MNT_DETACH).is_ok() {
                tracing::info!(path = %root.display(), "unmounted a leftover volumes mount");
            }
        }
        match docker
            .remove_container(
                &id,
                Some(RemoveContainerOptions {
                    force: true,
                    ..Default::default()
                }),
            )
            .await
        {
            Ok(()) => {
                tracing::info!(container = %id, activity = ?labels.get(LABEL_ACTIVITY), "removed a leftover container");
                removed += 1;
            }
            Err(error) => {
                tracing::warn!(container = %id, %error, "cannot remove a leftover container")
            }
        }
    }
    Ok(removed)
}

/// What a load put into the engine: one image, by id, without names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loaded {
    /// The image id (`sha256:<64 hex>`).
    pub image_id: String,
}

/// Whether `text` is a full image id, `sha256:` and 64 hex digits.
pub fn is_image_id(text: &str) -> bool {
    text.strip_prefix("sha256:")
        .is_some_and(|hex| hex.len() == 64 && hex.bytes().all(|byte| byte.is_ascii_hexdigit()))
}

/// The id of the image `reference` names, if the engine has it.
pub async fn image_id(docker: &Docker, reference: &str) -> Option<String> {
    docker
        .inspect_image(reference)
        .await
        .ok()
        .and_then(|image| image.id)
}

/// The engine's own words for an error, without bollard's wrapping.
pub fn engine_message(error: &bollard::errors::Error) -> String {
    match error {
        bollard::errors::Error::DockerResponseServerError { message, .. } => message.clone(),
        bollard::errors::Error::DockerStreamError { error } => error.clone(),
        other => other.to_string(),
    }
}

/// Remove what a failed deploy loaded (best effort). An image that carries
/// a name was there before (the same content under someone's tag): kept.
pub async fn remove_loaded(docker: &Docker, loaded: &Loaded) {
    let reference = &loaded.image_id;
    let named = docker
        .inspect_image(reference)
        .await
        .map(|image| !image.repo_tags.unwrap_or_default().is_empty())
        .unwrap_or(true);
    if named {
        return;
    }
    match docker
        .remove_image(reference, None::<RemoveImageOptions>, None)
        .await
    {
        Ok(_) => tracing::info!(%reference, "removed the image of a failed load"),
        Err(error) => {
            tracing::warn!(%reference, error = %engine_message(&error), "cannot remove the image of a failed load")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_is_alive_and_others_are_not() {
        let pid = std::process::id();
        let start = process_start_time(pid);
        assert!(start.is_some());
        let labels = |pid: String, start: String| {
            HashMap::from([
                (LABEL_OWNER_PID.to_string(), pid),
                (LABEL_OWNER_START.to_string(), start),
            ])
        };
        let start = start.unwrap_or_default();
        assert!(owner_alive(&labels(pid.to_string(), start.to_string())));
        // Same pid, other start time: a reused pid.
        assert!(!owner_alive(&labels(
            pid.to_string(),
            (start + 1).to_string()
        )));
        assert!(!owner_alive(&labels("4194304".into(), "1".into())));
        assert!(!owner_alive(&HashMap::new()));
    }
}
