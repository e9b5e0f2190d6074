//! File operations confined to a directory fd: every path is resolved by `openat2` with
//! `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS`, and every change is made by
//! an `*at` call relative to a parent opened that way, naming a single component. So no link
//! in the tree (one a layer made, or one an earlier layer left) can carry a write, a link or a
//! removal outside the directory, or even elsewhere inside it: resolution stops with `ELOOP`
//! at the first symbolic link on the way and with `EXDEV` at any way out.

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;

use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags};

const BENEATH: ResolveFlags = ResolveFlags::BENEATH
    .union(ResolveFlags::NO_SYMLINKS)
    .union(ResolveFlags::NO_MAGICLINKS);

/// Opens `rel` (components joined by `/`, none `.` or `..`; empty for `dir` itself) beneath
/// `dir` without following any link. Not `O_NOFOLLOW`: with it a trailing link gives
/// `ENOTDIR` to an `O_DIRECTORY` open, while `RESOLVE_NO_SYMLINKS` alone refuses every link,
/// the last one included, with `ELOOP`, so the caller can tell a link from a file.
pub fn open(dir: impl AsFd, rel: &str, flags: OFlags, mode: Mode) -> io::Result<OwnedFd> {
    let rel = if rel.is_empty() { "." } else { rel };
    Ok(rustix::fs::openat2(
        dir,
        rel,
        flags | OFlags::CLOEXEC,
        mode,
        BENEATH,
    )?)
}

/// Opens the directory `rel` beneath `dir`.
pub fn open_dir(dir: impl AsFd, rel: &str) -> io::Result<OwnedFd> {
    open(dir, rel, OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty())
}

/// What `name` (one component) in `parent` is, without following it; `None` if absent.
pub fn kind(parent: impl AsFd, name: impl AsRef<OsStr>) -> io::Result<Option<FileType>> {
    match rustix::fs::statat(parent, name.as_ref(), AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(FileType::from_raw_mode(st.st_mode))),
        Err(rustix::io::Errno::NOENT) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Removes `name` in `parent` whatever it is: a directory with everything beneath it (each
/// level opened beneath its parent, so a link inside is removed, never followed).
pub fn remove(parent: impl AsFd, name: impl AsRef<OsStr>) -> io::Result<()> {
    let (parent, name) = (parent.as_fd(), name.as_ref());
    match kind(parent, name)? {
        None => Ok(()),
        Some(FileType::Directory) => {
            let dir = open_one(parent, name)?;
            // The unpacker keeps directories writable until the root is complete; a tree
            // made read-only (GC, removal) is given its owner's write bit back first.
            rustix::fs::fchmod(&dir, Mode::from_raw_mode(0o700))?;
            for child in children(&dir)? {
                remove(&dir, &child)?;
            }
            Ok(rustix::fs::unlinkat(parent, name, AtFlags::REMOVEDIR)?)
        }
        Some(_) => Ok(rustix::fs::unlinkat(parent, name, AtFlags::empty())?),
    }
}

/// Opens the directory `name` (one component, any bytes) in `parent`, not following a link.
pub fn open_one(parent: impl AsFd, name: &OsStr) -> io::Result<OwnedFd> {
    Ok(rustix::fs::openat2(
        parent,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
        BENEATH,
    )?)
}

/// The names in the directory `dir` (without `.` and `..`), in no particular order.
pub fn children(dir: impl AsFd) -> io::Result<Vec<OsString>> {
    // A fresh fd: `Dir` reads from its own offset, and the caller keeps using `dir`.
    let fd = open_dir(dir, "")?;
    let mut names = Vec::new();
    for entry in rustix::fs::Dir::read_from(&fd)? {
        let entry = entry?;
        let name = entry.file_name().to_bytes();
        if name != b"." && name != b".." {
            names.push(OsStr::from_bytes(name).to_owned());
        }
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    #[test]
    fn resolution_stops_at_any_link_and_at_any_way_out() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("real")).unwrap();
        symlink("real", root.join("link")).unwrap();
        symlink("/", root.join("abs")).unwrap();
        let fd =
            rustix::fs::open(&root, OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty()).unwrap();
        assert!(open_dir(&fd, "real").is_ok());
        let loops = |rel: &str| open_dir(&fd, rel).unwrap_err().raw_os_error();
        assert_eq!(loops("link"), Some(libc_eloop()));
        assert_eq!(loops("abs/etc"), Some(libc_eloop()));
        assert_eq!(
            open_dir(&fd, "../root").unwrap_err().raw_os_error(),
            Some(rustix::io::Errno::XDEV.raw_os_error())
        );
    }

    #[test]
    fn removing_a_tree_removes_links_inside_it_never_their_targets() {
        let dir = tempfile::tempdir().unwrap();
        let outside = dir.path().join("outside");
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("keep"), "x").unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("d/e")).unwrap();
        symlink(&outside, root.join("d/e/out")).unwrap();
        let fd =
            rustix::fs::open(&root, OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty()).unwrap();
        remove(&fd, "d").unwrap();
        assert!(!root.join("d").exists());
        assert!(outside.join("keep").exists());
        assert_eq!(kind(&fd, "d").unwrap(), None);
    }

    fn libc_eloop() -> i32 {
        rustix::io::Errno::LOOP.raw_os_error()
    }
}
