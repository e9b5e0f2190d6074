//! An unpacked root's canonical listing and its digest: every path in byte order, one line
//! each, `PATH TYPE MODE SIZE CONTENT` (type `d`, `f`, `l`, or `o` for anything else; mode the
//! permission bits in octal; content the sha256 of a file's bytes or a link's target). Paths
//! and targets are written with every byte outside `!`..`~` (and `%`) as `%XX`, so the listing
//! is injective: two trees with the same listing are the same tree, as far as the sandbox can
//! tell (owners and times are not in it: the sandbox sees neither as meaningful).
//!
//! The store keeps the listing beside the record and its digest in the record; verifying
//! recomputes it from the files themselves, opened beneath the root without following links.

use std::ffi::OsStr;
use std::io::{self, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;

use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags};

use super::beneath;
use super::digest::{Digest, Hasher};

/// A root's listing and what it counts.
#[derive(Debug)]
pub struct Tree {
    pub digest: Digest,
    pub listing: Vec<u8>,
    /// Paths, the root included.
    pub entries: u64,
    /// Bytes of regular files.
    pub bytes: u64,
}

/// Why a tree could not be listed.
#[derive(Debug, thiserror::Error)]
pub enum TreeError {
    #[error("the tree has more than {0} entries")]
    TooManyEntries(u64),
    #[error("{path}: {source}")]
    Io { path: String, source: io::Error },
}

/// Makes every directory of the root read-only (0555): the last step of an unpack.
pub fn seal(root: &OwnedFd) -> Result<(), TreeError> {
    let mut stack = vec![(beneath::open_dir(root, "").map_err(at(b""))?, Vec::new())];
    while let Some((dir, rel)) = stack.pop() {
        for name in beneath::children(&dir).map_err(at(&rel))? {
            let path = join(&rel, name.as_bytes());
            if beneath::kind(&dir, &name).map_err(at(&path))? == Some(FileType::Directory) {
                stack.push((beneath::open_one(&dir, &name).map_err(at(&path))?, path));
            }
        }
        rustix::fs::fchmod(&dir, Mode::from_raw_mode(0o555)).map_err(|e| at(&rel)(e.into()))?;
    }
    Ok(())
}

/// Lists the tree beneath `root`, refusing more than `max_entries` paths.
pub fn list(root: &OwnedFd, max_entries: u64) -> Result<Tree, TreeError> {
    let mut lines: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    let mut bytes = 0u64;
    let top = beneath::open_dir(root, "").map_err(at(b""))?;
    let st = rustix::fs::fstat(&top).map_err(|e| at(b"")(e.into()))?;
    lines.push((Vec::new(), line(b"", 'd', st.st_mode, 0, "-")));
    let mut stack = vec![(top, Vec::new())];
    while let Some((dir, rel)) = stack.pop() {
        for name in beneath::children(&dir).map_err(at(&rel))? {
            if lines.len() as u64 >= max_entries {
                return Err(TreeError::TooManyEntries(max_entries));
            }
            let path = join(&rel, name.as_bytes());
            let st = rustix::fs::statat(&dir, &name, AtFlags::SYMLINK_NOFOLLOW)
                .map_err(|e| at(&path)(e.into()))?;
            let entry = match FileType::from_raw_mode(st.st_mode) {
                FileType::Directory => {
                    let sub = beneath::open_one(&dir, &name).map_err(at(&path))?;
                    let st = rustix::fs::fstat(&sub).map_err(|e| at(&path)(e.into()))?;
                    stack.push((sub, path.clone()));
                    line(&path, 'd', st.st_mode, 0, "-")
                }
                FileType::RegularFile => {
                    let (st, digest) = hash_file(&dir, &name).map_err(at(&path))?;
                    let size = st.st_size as u64;
                    bytes += size;
                    line(&path, 'f', st.st_mode, size, &digest.hex())
                }
                FileType::Symlink => {
                    let target = rustix::fs::readlinkat(&dir, &name, Vec::new())
                        .map_err(|e| at(&path)(e.into()))?;
                    let target = target.as_bytes();
                    line(&path, 'l', st.st_mode, target.len() as u64, &escape(target))
                }
                _ => line(&path, 'o', st.st_mode, 0, "-"),
            };
            lines.push((path, entry));
        }
    }
    lines.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    let mut listing = Vec::new();
    for (_, l) in &lines {
        listing.extend_from_slice(l);
    }
    Ok(Tree {
        digest: Digest::of(&listing),
        entries: lines.len() as u64,
        listing,
        bytes,
    })
}

/// The first path (shown with a leading `/`) whose line differs between two listings.
pub fn first_difference(old: &[u8], new: &[u8]) -> Option<String> {
    let mut a = old.split(|b| *b == b'\n');
    let mut b = new.split(|b| *b == b'\n');
    loop {
        match (a.next(), b.next()) {
            (None, None) => return None,
            (x, y) if x == y => continue,
            (x, y) => {
                let path = |l: Option<&[u8]>| {
                    l.filter(|l| !l.is_empty())
                        .map(|l| unescape(l.split(|b| *b == b' ').next().unwrap_or_default()))
                };
                let shown = match (path(x), path(y)) {
                    (Some(p), Some(q)) => p.min(q),
                    (Some(p), None) | (None, Some(p)) => p,
                    (None, None) => return None,
                };
                return Some(String::from_utf8_lossy(&shown).into_owned());
            }
        }
    }
}

fn hash_file(dir: impl AsFd, name: &OsStr) -> io::Result<(rustix::fs::Stat, Digest)> {
    // O_NONBLOCK: a file swapped for a fifo after it was examined must not hang the check.
    let fd = rustix::fs::openat2(
        dir,
        name,
        OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW | OFlags::NONBLOCK,
        Mode::empty(),
        ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
    )?;
    // The mode and size of what was opened, not of what the name pointed at a moment before.
    let st = rustix::fs::fstat(&fd)?;
    if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
        return Err(io::Error::other("changed type while the tree was listed"));
    }
    let mut file = std::fs::File::from(fd);
    let mut hasher = Hasher::default();
    let mut buf = vec![0u8; 256 << 10];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok((st, hasher.finish()))
}

fn line(path: &[u8], kind: char, mode: u32, size: u64, content: &str) -> Vec<u8> {
    format!(
        "/{} {kind} {:04o} {size} {content}\n",
        escape(path),
        mode & 0o7777
    )
    .into_bytes()
}

fn join(rel: &[u8], name: &[u8]) -> Vec<u8> {
    let mut path = rel.to_vec();
    if !path.is_empty() {
        path.push(b'/');
    }
    path.extend_from_slice(name);
    path
}

fn escape(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        if (b'!'..=b'~').contains(&b) && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn unescape(text: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    let mut i = 0;
    while i < text.len() {
        if text[i] == b'%'
            && let Some(v) = text
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(text[i]);
        i += 1;
    }
    out
}

fn at(path: &[u8]) -> impl FnOnce(io::Error) -> TreeError + '_ {
    move |source| TreeError::Io {
        path: format!("/{}", String::from_utf8_lossy(path)),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_listing_escapes_names_so_no_name_can_forge_a_line() {
        assert_eq!(escape(b"a b\n%c"), "a%20b%0A%25c");
        assert_eq!(unescape(escape(b"a b\n%c\xff").as_bytes()), b"a b\n%c\xff");
        let l = line(b"x y", 'f', 0o100444, 3, "abc");
        assert_eq!(l, b"/x%20y f 0444 3 abc\n");
    }

    #[test]
    fn the_first_difference_names_the_path_added_removed_or_changed() {
        let old = b"/ d 0555 0 -\n/a f 0444 1 aa\n/c f 0444 1 cc\n";
        let added = b"/ d 0555 0 -\n/a f 0444 1 aa\n/b f 0444 1 bb\n/c f 0444 1 cc\n";
        let changed = b"/ d 0555 0 -\n/a f 0555 1 aa\n/c f 0444 1 cc\n";
        let removed = b"/ d 0555 0 -\n/a f 0444 1 aa\n";
        assert_eq!(first_difference(old, added).as_deref(), Some("/b"));
        assert_eq!(first_difference(old, changed).as_deref(), Some("/a"));
        assert_eq!(first_difference(old, removed).as_deref(), Some("/c"));
        assert_eq!(first_difference(old, old), None);
    }
}
