//! The data dir holds the node key, the app-key hashes, the bus socket and the
//! whole market, activity and payment history, so it is private to the user
//! running the daemon: the dir and every dir under it mode 0700, every file
//! 0600 (owner bits kept, group and other bits cleared). [`make_private`] runs
//! at every start, so a dir created by an older build or by hand with 0755 and
//! 0644 files is fixed too, and again once sled has created its files. Files
//! sled creates later are covered by the binary's umask of 0077. It never
//! follows a symlink, and never touches anything outside the data dir.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Mode bits no one but the owner may have on anything in the data dir.
const NOT_OWNER: u32 = 0o077;

#[derive(Debug, thiserror::Error)]
#[error("cannot make {path} private to its owner: {source}")]
pub struct PrivateDirError {
    pub path: PathBuf,
    pub source: std::io::Error,
}

/// Create `data_dir` if needed and clear the group and other bits of it and of
/// everything below it; returns how many modes were changed.
pub fn make_private(data_dir: &Path) -> Result<usize, PrivateDirError> {
    let failed = |path: &Path| {
        let path = path.to_path_buf();
        move |source| PrivateDirError { path, source }
    };
    std::fs::create_dir_all(data_dir).map_err(failed(data_dir))?;
    let mut changed = 0;
    let mut pending = vec![data_dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        changed += restrict(&dir, 0o700)?;
        for entry in std::fs::read_dir(&dir).map_err(failed(&dir))? {
            let entry = entry.map_err(failed(&dir))?;
            let path = entry.path();
            // `file_type` of a dir entry does not follow symlinks.
            let kind = entry.file_type().map_err(failed(&path))?;
            if kind.is_symlink() {
                continue;
            }
            if kind.is_dir() {
                pending.push(path);
            } else {
                changed += restrict(&path, 0)?;
            }
        }
    }
    if changed > 0 {
        tracing::info!(data_dir = %data_dir.display(), changed, "data dir made private to its owner (0700 dirs, 0600 files)");
    }
    Ok(changed)
}

/// Clear the group and other bits of `path` and set `required` owner bits;
/// 1 when the mode changed.
fn restrict(path: &Path, required: u32) -> Result<usize, PrivateDirError> {
    let failed = |source| PrivateDirError {
        path: path.to_path_buf(),
        source,
    };
    let mode = std::fs::symlink_metadata(path)
        .map_err(failed)?
        .permissions()
        .mode()
        & 0o7777;
    let private = (mode & !NOT_OWNER & 0o700) | required;
    if private == mode {
        return Ok(0);
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(private)).map_err(failed)?;
    Ok(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::symlink_metadata(path)
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    }

    #[test]
    fn an_open_dir_and_its_files_become_private_and_stay_usable() {
        let root = tempfile::tempdir().unwrap();
        let data_dir = root.path().join("data");
        std::fs::create_dir_all(data_dir.join("db/blobs")).unwrap();
        for (path, bits) in [
            (data_dir.clone(), 0o755),
            (data_dir.join("db"), 0o775),
            (data_dir.join("db/blobs"), 0o777),
        ] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(bits)).unwrap();
        }
        for (file, bits) in [
            ("identity.key", 0o644),
            ("db/conf", 0o664),
            ("db/blobs/1", 0o666),
            ("script", 0o755),
        ] {
            let path = data_dir.join(file);
            std::fs::write(&path, b"x").unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(bits)).unwrap();
        }
        let outside = root.path().join("outside");
        std::fs::write(&outside, b"x").unwrap();
        std::fs::set_permissions(&outside, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::os::unix::fs::symlink(&outside, data_dir.join("link")).unwrap();

        assert_eq!(make_private(&data_dir).unwrap(), 7);
        for dir in ["", "db", "db/blobs"] {
            assert_eq!(mode(&data_dir.join(dir)), 0o700, "{dir}");
        }
        for file in ["identity.key", "db/conf", "db/blobs/1"] {
            assert_eq!(mode(&data_dir.join(file)), 0o600, "{file}");
        }
        assert_eq!(mode(&data_dir.join("script")), 0o700, "owner bits are kept");
        assert_eq!(mode(&outside), 0o644, "a symlink is not followed");
        assert_eq!(
            make_private(&data_dir).unwrap(),
            0,
            "nothing left to change"
        );
    }

    #[test]
    fn a_missing_dir_is_created_private() {
        let root = tempfile::tempdir().unwrap();
        let data_dir = root.path().join("a/b");
        make_private(&data_dir).unwrap();
        assert_eq!(mode(&data_dir), 0o700);
    }
}
