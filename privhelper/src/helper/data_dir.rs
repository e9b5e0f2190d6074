//! The server's data dir: opened beneath the configured data root, never through a link, and
//! given to the sandbox's uid by a bounded walk (the tree was written by an untrusted server).

use std::os::fd::OwnedFd;
use std::path::Path;

use rustix::fs::{FileType, Mode, OFlags};

use super::validate::{BENEATH, Roots, open_beneath, simple_name};
use privhelper_api::HelperError;

/// Most entries and deepest nesting a data dir may have (its tree is walked as root).
const MAX_DATA_ENTRIES: usize = 100_000;
const MAX_DATA_DEPTH: usize = 64;

/// The server's data dir, created (0700) below the data root if missing.
pub(super) fn open_data_dir(name: &str, roots: &Roots) -> Result<OwnedFd, HelperError> {
    let outside =
        |why: String| HelperError::DataDirOutsideRoot(format!("data dir {name:?}: {why}"));
    if !simple_name(name, 64) || name.contains("..") {
        return Err(outside("must be one name of a-z 0-9 - _ .".into()));
    }
    let root = &roots.data;
    match rustix::fs::mkdirat(root, name, Mode::from_raw_mode(0o700)) {
        Ok(()) | Err(rustix::io::Errno::EXIST) => {}
        Err(e) => return Err(HelperError::Failed(format!("cannot create data dir: {e}"))),
    }
    open_beneath(
        root,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW,
    )
    .map_err(|e| outside(format!("cannot be opened as a directory ({e})")))
}

/// Why a data dir could not be given to the sandbox.
#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    #[error("{}: {source}", path.display())]
    Io {
        path: std::path::PathBuf,
        source: rustix::io::Errno,
    },
    #[error("more than {MAX_DATA_ENTRIES} entries")]
    TooManyEntries,
    #[error("nested deeper than {MAX_DATA_DEPTH} levels")]
    TooDeep,
}

/// Gives a data dir and everything in it to the sandbox's uid, without following a link.
/// Runs only while no sandbox uses the dir, so nothing can race the walk. The walk is
/// iterative and bounded in depth and entries (the tree was made by an untrusted server), and
/// holds one directory fd at a time: pending directories are kept as paths, each re-opened
/// beneath `dir` without following links.
pub fn chown_tree(dir: &OwnedFd, uid: u32, gid: u32) -> Result<(), DataDirError> {
    use rustix::fs::{AtFlags, Gid, Uid};
    use std::os::unix::ffi::OsStrExt;
    let (uid, gid) = (Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)));
    let at = |rel: &Path| {
        let path = rel.to_owned();
        move |source| DataDirError::Io { path, source }
    };
    rustix::fs::fchown(dir, uid, gid).map_err(at(Path::new(".")))?;
    let mut pending = vec![(std::path::PathBuf::from("."), 0usize)];
    let mut entries_seen = 0;
    while let Some((rel, depth)) = pending.pop() {
        let current = rustix::fs::openat2(
            dir,
            &rel,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
            BENEATH,
        )
        .map_err(at(&rel))?;
        for entry in rustix::fs::Dir::read_from(&current).map_err(at(&rel))? {
            let entry = entry.map_err(at(&rel))?;
            let name = entry.file_name();
            if name.to_bytes() == b"." || name.to_bytes() == b".." {
                continue;
            }
            entries_seen += 1;
            if entries_seen > MAX_DATA_ENTRIES {
                return Err(DataDirError::TooManyEntries);
            }
            rustix::fs::chownat(&current, name, uid, gid, AtFlags::SYMLINK_NOFOLLOW)
                .map_err(at(&rel))?;
            if entry.file_type() == FileType::Directory {
                if depth + 1 > MAX_DATA_DEPTH {
                    return Err(DataDirError::TooDeep);
                }
                let name = std::ffi::OsStr::from_bytes(name.to_bytes());
                pending.push((rel.join(name), depth + 1));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner(p: &Path) -> u32 {
        use std::os::unix::fs::MetadataExt;
        std::fs::symlink_metadata(p).unwrap().uid()
    }

    #[test]
    fn chown_tree_walks_without_following_links_and_is_bounded() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("*** SKIPPED chown_tree test: needs root ***");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("a/b/c")).unwrap();
        std::fs::write(root.join("a/b/c/f"), "x").unwrap();
        let outside = tempfile::NamedTempFile::new().unwrap();
        std::os::unix::fs::symlink(outside.path(), root.join("a/link")).unwrap();
        let fd = rustix::fs::open(root, OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty()).unwrap();
        chown_tree(&fd, 4242, 4242).unwrap();
        assert_eq!(owner(&root.join("a/b/c/f")), 4242);
        assert_eq!(owner(&root.join("a/link")), 4242, "the link itself");
        assert_eq!(owner(outside.path()), 0, "followed a link");

        let mut deep = root.join("deep");
        for _ in 0..=MAX_DATA_DEPTH {
            deep = deep.join("d");
        }
        std::fs::create_dir_all(&deep).unwrap();
        let err = chown_tree(&fd, 4242, 4242).unwrap_err();
        assert!(matches!(err, DataDirError::TooDeep), "{err}");
    }
}
