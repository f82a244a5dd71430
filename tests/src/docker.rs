//! Docker helpers for the VM exe unit's tests: the `GOLEM_TEST_DOCKER=1` gate
//! (the tier's tests are `#[ignore]`d and named `docker_*`; scripts/test.sh
//! runs them when an engine answers; run without the gate they fail), building the local test
//! images of `tests/images/` (nothing is pulled), `docker save`, writing a
//! `.gvmi` of an image, and listing containers by label.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Set to `1` to run the tests that need a Docker engine (`scripts/ensure-docker.sh` starts one).
pub const ENV_TEST_DOCKER: &str = "GOLEM_TEST_DOCKER";

/// The Docker tier's gate: `Ok(true)` when `GOLEM_TEST_DOCKER=1` and an engine
/// answers, an error otherwise. Tier tests are ignored by default, so reaching
/// this without the gate means the tier was asked for and is missing: that
/// fails rather than passing as if tested.
pub fn enabled(test: &str) -> anyhow::Result<bool> {
    anyhow::ensure!(
        std::env::var(ENV_TEST_DOCKER).ok().as_deref() == Some("1"),
        "{test} needs a Docker engine: set {ENV_TEST_DOCKER}=1 after scripts/ensure-docker.sh, or run scripts/test.sh, which runs this tier only when an engine answers"
    );
    let info = Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .output()?;
    anyhow::ensure!(
        info.status.success(),
        "{ENV_TEST_DOCKER}=1 but no docker engine answers: {}; run scripts/ensure-docker.sh",
        String::from_utf8_lossy(&info.stderr).trim()
    );
    Ok(true)
}

/// Run `docker <args>` and return its trimmed stdout; fails with its stderr.
/// Whether `guest_version` (a container's `/proc/version`) names another
/// kernel than the engine host's, as under gVisor.
pub fn names_another_kernel(guest_version: &str) -> anyhow::Result<bool> {
    let host_version = std::fs::read_to_string("/proc/version")?;
    let host_release = docker(&["info", "--format", "{{.KernelVersion}}"])?;
    Ok(guest_version.trim() != host_version.trim() && !guest_version.contains(host_release.trim()))
}

/// Whether the engine lists the runtime `name`.
pub fn has_runtime(name: &str) -> anyhow::Result<bool> {
    let runtimes: serde_json::Value =
        serde_json::from_str(&docker(&["info", "--format", "{{json .Runtimes}}"])?)?;
    Ok(runtimes.get(name).is_some())
}

pub fn docker(args: &[&str]) -> anyhow::Result<String> {
    let output = Command::new("docker").args(args).output()?;
    anyhow::ensure!(
        output.status.success(),
        "docker {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr).trim()
    );
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
}

fn images_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("images")
}

/// Build `tests/images/<name>` as `tag` (busybox-static on scratch).
pub fn build_test_image(name: &str, tag: &str) -> anyhow::Result<()> {
    let output = Command::new(images_dir().join("build.sh"))
        .args([name, tag])
        .output()?;
    anyhow::ensure!(
        output.status.success(),
        "building the test image {name} failed: {}",
        String::from_utf8_lossy(&output.stderr).trim()
    );
    Ok(())
}

/// `docker save` `tag` into `out`.
pub fn save_image(tag: &str, out: &Path) -> anyhow::Result<()> {
    docker(&["save", "-o", &out.to_string_lossy(), tag]).map(|_| ())
}

/// The container config of the engine's image `tag` (`docker inspect`'s
/// `Config`), as gvmkit-build puts it in a `.gvmi`.
pub fn image_config(tag: &str) -> anyhow::Result<serde_json::Value> {
    let mut config = inspect(tag)?
        .get("Config")
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("the image {tag} has no Config"))?;
    // gvmkit-build clears these two before writing the config.
    config["User"] = serde_json::Value::Null;
    config["Domainname"] = serde_json::json!("");
    Ok(config)
}

/// Write `out`, a `.gvmi` of the engine's image `tag` in gvmkit-build's
/// layout: a squashfs 4.0 of the image's exported root file system (Debian's
/// `tar2sqfs` reads `docker export` directly, so nothing is extracted as
/// root), then `crc32 (LE) | config JSON | its length as 8 digits`. The
/// original gvmkit-build (PyPI `gvmkit-build`) cannot run here: it pulls the
/// image and its `scx1332/squashfs` tool image from Docker Hub, which this
/// machine does not reach.
pub fn write_gvmi(tag: &str, config: &serde_json::Value, out: &Path) -> anyhow::Result<()> {
    // A command for images without one; the container is never started.
    let container = docker(&["create", tag, "true"])?;
    let rootfs = out.with_extension("rootfs.tar");
    let exported = docker(&["export", "-o", &rootfs.to_string_lossy(), &container]);
    docker(&["rm", &container])?;
    exported?;
    let status = Command::new("tar2sqfs")
        .args(["-q", "-f"])
        .arg(out)
        .stdin(std::fs::File::open(&rootfs)?)
        .status()
        .map_err(|error| {
            anyhow::anyhow!("tar2sqfs (Debian squashfs-tools-ng) cannot run: {error}")
        })?;
    std::fs::remove_file(&rootfs)?;
    anyhow::ensure!(status.success(), "tar2sqfs failed: {status}");
    let json = serde_json::to_vec(config)?;
    let mut crc = flate2::Crc::new();
    crc.update(&json);
    let mut file = std::fs::OpenOptions::new().append(true).open(out)?;
    file.write_all(&crc.sum().to_le_bytes())?;
    file.write_all(&json)?;
    file.write_all(format!("{:08}", json.len()).as_bytes())?;
    Ok(())
}

/// Ids of all containers (running or not) with `label` (`key` or `key=value`).
pub fn containers_with_label(label: &str) -> anyhow::Result<Vec<String>> {
    let filter = format!("label={label}");
    Ok(docker(&["ps", "-aq", "--no-trunc", "--filter", &filter])?
        .lines()
        .map(str::to_string)
        .filter(|line| !line.is_empty())
        .collect())
}

/// `docker inspect` of one object as JSON.
pub fn inspect(id: &str) -> anyhow::Result<serde_json::Value> {
    let text = docker(&["inspect", id])?;
    let mut list: Vec<serde_json::Value> = serde_json::from_str(&text)?;
    anyhow::ensure!(!list.is_empty(), "docker inspect {id} returned nothing");
    Ok(list.remove(0))
}
