//! Files beneath a volume's host directory, opened without a second look at
//! the path. The volume's directory is opened once; every component below it
//! is opened relative to the directory fd of its parent with `O_NOFOLLOW`
//! (`openat`/`mkdirat`), and the file itself the same way. A process in the
//! container that swaps a directory for a symlink at any moment gets an
//! `ELOOP`/`ENOTDIR` refusal instead of a path that leaves the volume: there
//! is no check-then-open window, because the kernel never resolves more than
//! one name at a time and never follows a link.
//!
//! It must never open, create or remove anything by a full host path below
//! the volume's root; removal goes through the parent's fd too
//! ([`VolumeFile::remove`]).

use std::ffi::OsString;
use std::fs::File;
use std::os::fd::OwnedFd;
use std::path::{Component, Path};

use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;

/// Why a path beneath a volume could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ConfinedError {
    /// The path would leave the volume (a symlink on the way or at the end).
    #[error("{0}")]
    Escape(&'static str),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Invalid(&'static str),
}

/// A file created inside a volume, with what is needed to remove it again
/// without a path lookup.
#[derive(Debug)]
pub struct VolumeFile {
    pub file: File,
    entry: VolumeEntry,
}

impl VolumeFile {
    /// Remove the file from the directory it was created in.
    pub fn remove(&self) -> std::io::Result<()> {
        self.entry.remove()
    }

    /// Split into the open file and a handle that can remove its entry.
    pub fn into_parts(self) -> (File, VolumeEntry) {
        (self.file, self.entry)
    }
}

/// A handle to a directory entry (the parent's fd and the name), for
/// removing it later.
#[derive(Debug)]
pub struct VolumeEntry {
    parent: OwnedFd,
    name: OsString,
}

impl VolumeEntry {
    pub fn remove(&self) -> std::io::Result<()> {
        rustix::fs::unlinkat(&self.parent, self.name.as_os_str(), AtFlags::empty())
            .map_err(std::io::Error::from)
    }
}

const DIRECTORY_FLAGS: OFlags = OFlags::DIRECTORY
    .union(OFlags::RDONLY)
    .union(OFlags::CLOEXEC)
    .union(OFlags::NOFOLLOW);

/// The normal components of `relative`; anything else is refused.
fn components(relative: &Path) -> Result<Vec<&std::ffi::OsStr>, ConfinedError> {
    let mut parts = Vec::new();
    for component in relative.components() {
        match component {
            Component::Normal(part) => parts.push(part),
            Component::CurDir => {}
            _ => {
                return Err(ConfinedError::Escape(
                    "only plain names are allowed below a volume",
                ))
            }
        }
    }
    if parts.is_empty() {
        return Err(ConfinedError::Invalid("is a volume, not a file"));
    }
    Ok(parts)
}

/// Map an `openat` failure on `name` in `dir` to an escape when a symlink was in the way.
fn classify(
    dir: &OwnedFd,
    name: &std::ffi::OsStr,
    errno: Errno,
    what: &'static str,
) -> ConfinedError {
    if errno == Errno::LOOP || errno == Errno::NOTDIR {
        let is_symlink = rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)
            .map(|stat| FileType::from_raw_mode(stat.st_mode) == FileType::Symlink)
            .unwrap_or(false);
        if is_symlink {
            return ConfinedError::Escape(what);
        }
        if errno == Errno::NOTDIR {
            return ConfinedError::Invalid("a parent is not a directory");
        }
    }
    ConfinedError::Io(errno.into())
}

/// Open `root` and walk to the directory holding the last component of
/// `parts`, creating missing directories when asked.
fn open_parent(
    root: &Path,
    parts: &[&std::ffi::OsStr],
    create: bool,
) -> Result<OwnedFd, ConfinedError> {
    let mut directory = rustix::fs::open(root, DIRECTORY_FLAGS, Mode::empty())
        .map_err(|errno| ConfinedError::Io(errno.into()))?;
    for part in &parts[..parts.len() - 1] {
        if create {
            match rustix::fs::mkdirat(&directory, *part, Mode::from_bits_truncate(0o777)) {
                Ok(()) => {}
                Err(errno) if errno == Errno::EXIST => {}
                Err(errno) => return Err(ConfinedError::Io(errno.into())),
            }
        }
        directory = rustix::fs::openat(&directory, *part, DIRECTORY_FLAGS, Mode::empty()).map_err(
            |errno| {
                classify(
                    &directory,
                    part,
                    errno,
                    "a directory on the way is a symlink",
                )
            },
        )?;
    }
    Ok(directory)
}

fn regular_file(fd: OwnedFd) -> Result<File, ConfinedError> {
    let file = File::from(fd);
    if !file.metadata()?.is_file() {
        return Err(ConfinedError::Invalid("not a regular file"));
    }
    Ok(file)
}

/// Open `root/relative` for reading; neither a directory on the way nor the
/// file may be a symlink, and the file must be a regular file.
pub fn open_for_read(root: &Path, relative: &Path) -> Result<File, ConfinedError> {
    let parts = components(relative)?;
    let parent = open_parent(root, &parts, false)?;
    let name = parts[parts.len() - 1];
    let flags = OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW | OFlags::NONBLOCK;
    let fd = rustix::fs::openat(&parent, name, flags, Mode::empty())
        .map_err(|errno| classify(&parent, name, errno, "the file is a symlink"))?;
    regular_file(fd)
}

/// Create (or truncate) `root/relative` for writing, creating missing
/// directories on the way; the same symlink rules as [`open_for_read`].
pub fn create_for_write(root: &Path, relative: &Path) -> Result<VolumeFile, ConfinedError> {
    let parts = components(relative)?;
    let parent = open_parent(root, &parts, true)?;
    let name = parts[parts.len() - 1];
    // NONBLOCK: a FIFO planted by the payload fails instead of blocking the open.
    let flags =
        OFlags::WRONLY | OFlags::CREATE | OFlags::CLOEXEC | OFlags::NOFOLLOW | OFlags::NONBLOCK;
    let fd = rustix::fs::openat(&parent, name, flags, Mode::from_bits_truncate(0o666))
        .map_err(|errno| classify(&parent, name, errno, "the file is a symlink"))?;
    // Truncate only once it is known to be a regular file of the volume.
    let file = regular_file(fd)?;
    file.set_len(0)?;
    Ok(VolumeFile {
        file,
        entry: VolumeEntry {
            parent,
            name: name.to_os_string(),
        },
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::io::{Read, Write};
    use std::os::unix::fs::symlink;

    #[test]
    fn opens_and_creates_beneath_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("volume");
        std::fs::create_dir_all(&root).unwrap();
        let mut created = create_for_write(&root, Path::new("a/b/c.txt")).unwrap();
        created.file.write_all(b"hello").unwrap();
        let mut text = String::new();
        open_for_read(&root, Path::new("a/b/c.txt"))
            .unwrap()
            .read_to_string(&mut text)
            .unwrap();
        assert_eq!(text, "hello");
        created.remove().unwrap();
        assert!(!root.join("a/b/c.txt").exists());
        assert!(matches!(
            open_for_read(&root, Path::new("a")),
            Err(ConfinedError::Invalid(_))
        ));
        assert!(matches!(
            open_for_read(&root, Path::new("")),
            Err(ConfinedError::Invalid(_))
        ));
        assert!(matches!(
            open_for_read(&root, Path::new("../volume/a/b")),
            Err(ConfinedError::Escape(_))
        ));
    }

    /// The exploit: a payload plants symlinks to a directory outside the
    /// volume (in the middle of the path) and to a file outside (as the last
    /// component); nothing outside is read, created or truncated.
    #[test]
    fn planted_symlinks_lead_nowhere() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("volume");
        let outside = dir.path().join("home");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("secret"), b"secret").unwrap();
        symlink(&outside, root.join("dirlink")).unwrap();
        symlink(outside.join("secret"), root.join("filelink")).unwrap();
        std::fs::create_dir_all(root.join("real")).unwrap();
        symlink("../../home", root.join("real/up")).unwrap();

        for relative in ["dirlink/secret", "filelink", "real/up/secret"] {
            let error = open_for_read(&root, Path::new(relative)).unwrap_err();
            assert!(
                matches!(error, ConfinedError::Escape(_)),
                "{relative}: {error}"
            );
        }
        for relative in [
            "dirlink/new",
            "filelink",
            "real/up/secret",
            "dirlink/deeper/new",
        ] {
            let error = create_for_write(&root, Path::new(relative)).unwrap_err();
            assert!(
                matches!(error, ConfinedError::Escape(_)),
                "{relative}: {error}"
            );
        }
        assert_eq!(std::fs::read(outside.join("secret")).unwrap(), b"secret");
        assert!(!outside.join("new").exists());
        assert!(!outside.join("deeper").exists());
    }

    /// The race of the old check-then-open: the directory is swapped for a
    /// symlink after the walk opened it; what was opened stays the original
    /// directory, and a later walk refuses the link.
    #[test]
    fn a_directory_swapped_after_opening_stays_the_original() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("volume");
        let outside = dir.path().join("home");
        std::fs::create_dir_all(root.join("out")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        let parts = [std::ffi::OsStr::new("out"), std::ffi::OsStr::new("f")];
        let parent = open_parent(&root, &parts, true).unwrap();
        std::fs::rename(root.join("out"), root.join("moved")).unwrap();
        symlink(&outside, root.join("out")).unwrap();
        let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        rustix::fs::openat(&parent, "f", flags, Mode::from_bits_truncate(0o600)).unwrap();
        assert!(root.join("moved/f").exists());
        assert!(!outside.join("f").exists());
        assert!(matches!(
            create_for_write(&root, Path::new("out/f")),
            Err(ConfinedError::Escape(_))
        ));
    }
}
