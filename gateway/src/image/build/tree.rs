//! A directory tree read as untrusted input: what an install step left in its data dir (its
//! author's install scripts ran there) or a base root the builder made. Walked beneath one
//! directory fd with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`, never following a link;
//! every file is re-opened the same way when its bytes are read, and refused if it is no longer
//! the file that was walked. Device nodes, fifos and sockets are refused by name, as are (in
//! [`Links::Inside`] trees) symbolic links that are absolute or climb out of the tree, and
//! counts, depths and sizes over the [`Limits`]. Hard links are not preserved: each name is
//! read as a file of its own, so the layer holds a copy (deterministic, and nothing for an
//! unpacker to resolve).

use std::ffi::OsStr;
use std::fs::File;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags};

const BENEATH: ResolveFlags = ResolveFlags::BENEATH
    .union(ResolveFlags::NO_SYMLINKS)
    .union(ResolveFlags::NO_MAGICLINKS);

/// Bounds on a tree (an install step can write anything its tmpfs and data dir hold).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_entries: usize,
    pub max_depth: usize,
    pub max_path_bytes: usize,
    pub max_file_bytes: u64,
    pub max_total_bytes: u64,
}

impl Limits {
    /// For a server's installed package: generous for node_modules, far below a disk.
    pub const APP: Limits = Limits {
        max_entries: 200_000,
        max_depth: 64,
        max_path_bytes: 1024,
        max_file_bytes: 256 << 20,
        max_total_bytes: 2 << 30,
    };
    /// For a base root the builder made from Debian packages.
    pub const BASE: Limits = Limits {
        max_entries: 100_000,
        max_depth: 64,
        max_path_bytes: 1024,
        max_file_bytes: 512 << 20,
        max_total_bytes: 4 << 30,
    };
}

/// Which symbolic links a tree may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Links {
    /// Relative links whose target stays inside the tree (npm's `.bin` links): an install
    /// output. An absolute target would name the image's own files (`/etc/shadow`), which a
    /// package has no business pointing at.
    Inside,
    /// Any target: a Debian root (`/etc/alternatives`, absolute library links), which the
    /// builder made itself from signed packages.
    Any,
}

/// What one entry is, with its normalised mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    Dir,
    File {
        size: u64,
        executable: bool,
        ino: u64,
    },
    Symlink {
        target: Vec<u8>,
    },
}

/// One entry: its path relative to the tree's root (bytes, no leading or trailing `/`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub path: Vec<u8>,
    pub kind: Kind,
}

impl Entry {
    /// The path as shown in errors.
    pub fn shown(&self) -> String {
        shown(&self.path)
    }
}

fn shown(path: &[u8]) -> String {
    String::from_utf8_lossy(path).into_owned()
}

/// Why a tree is refused; each names the offending entry.
#[derive(Debug, thiserror::Error)]
pub enum TreeError {
    #[error("{path}: {kind} (only directories, regular files and symbolic links are accepted)")]
    Special { path: String, kind: &'static str },
    #[error("{path}: a symbolic link to {target:?}, which leaves the tree")]
    LinkOutside { path: String, target: String },
    #[error("{path}: {size} bytes, over the {max}-byte limit for one file")]
    FileTooLarge { path: String, size: u64, max: u64 },
    #[error("the tree holds more than {0} bytes")]
    TotalTooLarge(u64),
    #[error("the tree holds more than {0} entries")]
    TooManyEntries(usize),
    #[error("{path}: nested deeper than {max} levels")]
    TooDeep { path: String, max: usize },
    #[error("{path}: the path is longer than {max} bytes")]
    PathTooLong { path: String, max: usize },
    #[error("{path}: changed while it was read")]
    Changed { path: String },
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

fn io(path: &[u8]) -> impl FnOnce(rustix::io::Errno) -> TreeError + '_ {
    move |e| TreeError::Io {
        path: if path.is_empty() {
            ".".into()
        } else {
            shown(path)
        },
        source: e.into(),
    }
}

/// A walked tree: its root fd and its entries sorted by path bytes (a parent sorts before its
/// children, as a prefix sorts before its extensions).
#[derive(Debug)]
pub struct Tree {
    root: OwnedFd,
    pub entries: Vec<Entry>,
}

impl Tree {
    /// Walks `root` (itself opened without following a link).
    pub fn scan(root: &Path, limits: Limits, links: Links) -> Result<Self, TreeError> {
        let fd = rustix::fs::open(
            root,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| TreeError::Io {
            path: root.display().to_string(),
            source: e.into(),
        })?;
        Self::scan_fd(fd, limits, links)
    }

    /// Walks the directory `fd`.
    pub fn scan_fd(root: OwnedFd, limits: Limits, links: Links) -> Result<Self, TreeError> {
        let mut entries = Vec::new();
        let mut total = 0u64;
        let mut pending: Vec<(Vec<u8>, usize)> = vec![(Vec::new(), 0)];
        while let Some((dir, depth)) = pending.pop() {
            let rel: PathBuf = if dir.is_empty() {
                ".".into()
            } else {
                PathBuf::from(OsStr::from_bytes(&dir))
            };
            let fd = rustix::fs::openat2(
                &root,
                &rel,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
                BENEATH,
            )
            .map_err(io(&dir))?;
            for item in rustix::fs::Dir::read_from(&fd).map_err(io(&dir))? {
                let item = item.map_err(io(&dir))?;
                let name = item.file_name().to_bytes();
                if name == b"." || name == b".." {
                    continue;
                }
                let mut path = dir.clone();
                if !path.is_empty() {
                    path.push(b'/');
                }
                path.extend_from_slice(name);
                if path.len() > limits.max_path_bytes {
                    return Err(TreeError::PathTooLong {
                        path: shown(&path),
                        max: limits.max_path_bytes,
                    });
                }
                if entries.len() >= limits.max_entries {
                    return Err(TreeError::TooManyEntries(limits.max_entries));
                }
                let st = rustix::fs::statat(&fd, item.file_name(), AtFlags::SYMLINK_NOFOLLOW)
                    .map_err(io(&path))?;
                let kind = match FileType::from_raw_mode(st.st_mode) {
                    FileType::Directory => {
                        if depth + 1 > limits.max_depth {
                            return Err(TreeError::TooDeep {
                                path: shown(&path),
                                max: limits.max_depth,
                            });
                        }
                        pending.push((path.clone(), depth + 1));
                        Kind::Dir
                    }
                    FileType::RegularFile => {
                        let size = u64::try_from(st.st_size).unwrap_or(u64::MAX);
                        if size > limits.max_file_bytes {
                            return Err(TreeError::FileTooLarge {
                                path: shown(&path),
                                size,
                                max: limits.max_file_bytes,
                            });
                        }
                        total = total.saturating_add(size);
                        if total > limits.max_total_bytes {
                            return Err(TreeError::TotalTooLarge(limits.max_total_bytes));
                        }
                        Kind::File {
                            size,
                            executable: st.st_mode & 0o111 != 0,
                            ino: st.st_ino,
                        }
                    }
                    FileType::Symlink => {
                        let target = rustix::fs::readlinkat(&fd, item.file_name(), Vec::new())
                            .map_err(io(&path))?
                            .into_bytes();
                        if links == Links::Inside && !stays_inside(&path, &target) {
                            return Err(TreeError::LinkOutside {
                                path: shown(&path),
                                target: shown(&target),
                            });
                        }
                        Kind::Symlink { target }
                    }
                    other => {
                        return Err(TreeError::Special {
                            path: shown(&path),
                            kind: special_name(other),
                        });
                    }
                };
                entries.push(Entry { path, kind });
            }
        }
        entries.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(Self { root, entries })
    }

    /// The bytes of a file entry, re-opened beneath the root without following a link, and
    /// refused unless it is still the regular file of the walk (same inode and size).
    pub fn open(&self, entry: &Entry) -> Result<impl Read, TreeError> {
        let Kind::File { size, ino, .. } = entry.kind else {
            return Err(TreeError::Changed {
                path: entry.shown(),
            });
        };
        let rel = PathBuf::from(OsStr::from_bytes(&entry.path));
        // Non-blocking: had a fifo replaced the file, opening it must not wait for a writer.
        let fd = rustix::fs::openat2(
            &self.root,
            &rel,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
            Mode::empty(),
            BENEATH,
        )
        .map_err(io(&entry.path))?;
        let st = rustix::fs::fstat(&fd).map_err(io(&entry.path))?;
        if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile
            || st.st_ino != ino
            || u64::try_from(st.st_size).ok() != Some(size)
        {
            return Err(TreeError::Changed {
                path: entry.shown(),
            });
        }
        Ok(File::from(fd).take(size))
    }
}

fn special_name(t: FileType) -> &'static str {
    match t {
        FileType::CharacterDevice => "a character device",
        FileType::BlockDevice => "a block device",
        FileType::Fifo => "a fifo",
        FileType::Socket => "a socket",
        _ => "a special file",
    }
}

/// Whether a link at `path` (tree-relative) pointing at `target` names something inside the
/// tree, resolved lexically from the link's directory. The final image confines every lookup
/// to its own root anyway; this keeps an install output from pointing outside its package.
fn stays_inside(path: &[u8], target: &[u8]) -> bool {
    if target.is_empty() || target.starts_with(b"/") || target.contains(&0) {
        return false;
    }
    let mut at: Vec<&[u8]> = path.split(|b| *b == b'/').collect();
    at.pop();
    for part in target.split(|b| *b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => {
                if at.pop().is_none() {
                    return false;
                }
            }
            name => at.push(name),
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_inside_are_accepted_and_any_other_is_refused() {
        assert!(stays_inside(b"node_modules/.bin/x", b"../x/dist/index.js"));
        assert!(stays_inside(b"a/b", b"c/../d"));
        assert!(!stays_inside(b"a/b", b"../../etc"));
        assert!(!stays_inside(b"x", b"/etc/shadow"));
        assert!(!stays_inside(b"x", b""));
        assert!(!stays_inside(b"a/x", b"b/../../.."));
    }
}
