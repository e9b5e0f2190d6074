//! Deterministic layers: a [`Tree`] written as a tar stream and gzipped, so that the same tree
//! gives the same bytes whenever and however it was made. Entries in path-byte order (the
//! tree's), every header filled in by us: one fixed mtime (`SOURCE_DATE_EPOCH`, else 0), uid
//! and gid 0, no user or group names, modes normalised (directories and executables 0755,
//! other files 0644: no setuid, setgid or sticky bit, which the unpacker refuses), no xattrs,
//! atime or ctime (GNU headers; long names as `././@LongLink` entries, themselves fixed). gzip
//! at a fixed level with a fixed header (mtime 0, no file name, OS byte 255 "unknown"). The
//! uncompressed stream's sha256 is the config's `diff_id`, the compressed one's the
//! descriptor's digest; both are computed while writing.

use std::ffi::OsStr;
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;

use flate2::{Compression, GzBuilder};

use super::tree::{Kind, Tree, TreeError};
use crate::image::digest::{Digest, Hasher};

/// The gzip level: fixed, as the compressed bytes (the digest) depend on it.
pub const GZIP_LEVEL: u32 = 6;
/// gzip's OS byte: "unknown", the same wherever the build runs.
const GZIP_OS: u8 = 255;

/// A written layer: the compressed blob's digest and size, and the uncompressed tar's digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layer {
    pub digest: Digest,
    pub size: u64,
    pub diff_id: Digest,
}

#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    #[error(transparent)]
    Tree(#[from] TreeError),
    #[error("writing the layer at {path}: {source}")]
    Write { path: String, source: io::Error },
}

/// A writer that hashes and counts what passes through it.
struct Hashing<W> {
    inner: W,
    hasher: Hasher,
    count: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// The fixed timestamp: `SOURCE_DATE_EPOCH` if it is set to a number, else 0.
pub fn source_date_epoch() -> u64 {
    std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// Writes `tree` as a gzipped tar layer to `out`, every entry under `prefix` (e.g. `app`; empty
/// for a root), the prefix's own directories first.
pub fn write(tree: &Tree, prefix: &str, mtime: u64, out: impl Write) -> Result<Layer, LayerError> {
    let gz = GzBuilder::new().mtime(0).operating_system(GZIP_OS).write(
        Hashing {
            inner: out,
            hasher: Hasher::default(),
            count: 0,
        },
        Compression::new(GZIP_LEVEL),
    );
    let mut tar = tar::Builder::new(Hashing {
        inner: gz,
        hasher: Hasher::default(),
        count: 0,
    });
    let fail = |path: &[u8]| {
        let path = String::from_utf8_lossy(path).into_owned();
        move |source| LayerError::Write { path, source }
    };
    let full = |rel: &[u8]| -> Vec<u8> {
        let mut p = prefix.as_bytes().to_vec();
        if !p.is_empty() && !rel.is_empty() {
            p.push(b'/');
        }
        p.extend_from_slice(rel);
        p
    };
    let mut at = Vec::new();
    for part in prefix.split('/').filter(|p| !p.is_empty()) {
        if !at.is_empty() {
            at.push(b'/');
        }
        at.extend_from_slice(part.as_bytes());
        let mut h = header(tar::EntryType::Directory, 0o755, mtime);
        tar.append_data(&mut h, OsStr::from_bytes(&at), io::empty())
            .map_err(fail(&at))?;
    }
    for entry in &tree.entries {
        let path = full(&entry.path);
        let name = OsStr::from_bytes(&path);
        match &entry.kind {
            Kind::Dir => {
                let mut h = header(tar::EntryType::Directory, 0o755, mtime);
                tar.append_data(&mut h, name, io::empty())
                    .map_err(fail(&path))?;
            }
            Kind::File {
                size, executable, ..
            } => {
                let mode = if *executable { 0o755 } else { 0o644 };
                let mut h = header(tar::EntryType::Regular, mode, mtime);
                h.set_size(*size);
                let data = tree.open(entry)?;
                tar.append_data(&mut h, name, data).map_err(fail(&path))?;
            }
            Kind::Symlink { target } => {
                let mut h = header(tar::EntryType::Symlink, 0o777, mtime);
                tar.append_link(&mut h, name, OsStr::from_bytes(target))
                    .map_err(fail(&path))?;
            }
        }
    }
    let done = |e| LayerError::Write {
        path: "(end of layer)".into(),
        source: e,
    };
    let tar_out = tar.into_inner().map_err(done)?;
    let diff_id = tar_out.hasher.finish();
    let mut compressed = tar_out.inner.finish().map_err(done)?;
    compressed.flush().map_err(done)?;
    Ok(Layer {
        digest: compressed.hasher.finish(),
        size: compressed.count,
        diff_id,
    })
}

fn header(kind: tar::EntryType, mode: u32, mtime: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(mtime);
    h.set_size(0);
    h
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{PermissionsExt, symlink};
    use std::path::Path;

    use super::*;
    use crate::image::build::tree::{Limits, Links};

    fn layer_of(root: &Path) -> (Vec<u8>, Layer) {
        let tree = Tree::scan(root, Limits::APP, Links::Inside).unwrap();
        let mut out = Vec::new();
        let layer = write(&tree, "app", 0, &mut out).unwrap();
        assert_eq!(layer.digest, Digest::of(&out));
        assert_eq!(layer.size, out.len() as u64);
        (out, layer)
    }

    /// A tree with a long name, a link, an executable and nested directories, created in
    /// `order` (the names' creation order differs between calls).
    fn make(root: &Path, order: &[&str]) {
        for name in order {
            match *name {
                "bin" => {
                    std::fs::create_dir_all(root.join("node_modules/.bin")).unwrap();
                    symlink("../pkg/index.js", root.join("node_modules/.bin/pkg")).unwrap();
                }
                "pkg" => {
                    std::fs::create_dir_all(root.join("node_modules/pkg")).unwrap();
                    let js = root.join("node_modules/pkg/index.js");
                    std::fs::write(&js, "#!/usr/bin/env node\n").unwrap();
                    std::fs::set_permissions(&js, std::fs::Permissions::from_mode(0o4775)).unwrap();
                }
                "long" => {
                    let deep = root.join("x".repeat(120)).join("y".repeat(90));
                    std::fs::create_dir_all(&deep).unwrap();
                    std::fs::write(deep.join("z".repeat(100)), b"long").unwrap();
                }
                _ => unreachable!(),
            }
        }
    }

    #[test]
    fn the_same_tree_gives_the_same_bytes_whatever_its_mtimes_or_creation_order() {
        // tmpfs lists a directory newest first, so there the creation order shows in readdir.
        let shm = || {
            tempfile::tempdir_in("/dev/shm")
                .or_else(|_| tempfile::tempdir())
                .unwrap()
        };
        let (a, b) = (shm(), shm());
        make(a.path(), &["bin", "pkg", "long"]);
        make(b.path(), &["long", "pkg", "bin"]);
        let (bytes_a, layer_a) = layer_of(a.path());
        assert_eq!(layer_of(a.path()).0, bytes_a, "twice over one tree");
        // Touch a file and a directory: the layer does not move.
        let f = File::options()
            .write(true)
            .open(b.path().join("node_modules/pkg/index.js"))
            .unwrap();
        f.set_modified(std::time::SystemTime::now() + std::time::Duration::from_secs(3600))
            .unwrap();
        std::fs::write(b.path().join("node_modules/tmp"), "").unwrap();
        std::fs::remove_file(b.path().join("node_modules/tmp")).unwrap();
        let (bytes_b, layer_b) = layer_of(b.path());
        assert_eq!(layer_a, layer_b);
        assert_eq!(bytes_a, bytes_b);
        // The gzip header: no flags (so no file name), mtime 0, OS 255.
        assert_eq!(bytes_a[3], 0);
        assert_eq!(&bytes_a[4..8], &[0, 0, 0, 0]);
        assert_eq!(bytes_a[9], GZIP_OS);
    }

    #[test]
    fn one_changed_byte_changes_both_digests() {
        let a = tempfile::tempdir().unwrap();
        make(a.path(), &["bin", "pkg", "long"]);
        let (_, before) = layer_of(a.path());
        std::fs::write(
            a.path().join("node_modules/pkg/index.js"),
            "#!/usr/bin/env nodf\n",
        )
        .unwrap();
        let (_, after) = layer_of(a.path());
        assert_ne!(before.digest, after.digest);
        assert_ne!(before.diff_id, after.diff_id);
    }

    #[test]
    fn headers_are_normalised_and_in_path_order() {
        let a = tempfile::tempdir().unwrap();
        make(a.path(), &["pkg", "long", "bin"]);
        let (bytes, layer) = layer_of(a.path());
        let mut tar_bytes = Vec::new();
        io::Read::read_to_end(
            &mut flate2::read::GzDecoder::new(&bytes[..]),
            &mut tar_bytes,
        )
        .unwrap();
        assert_eq!(Digest::of(&tar_bytes), layer.diff_id);
        let mut archive = tar::Archive::new(&tar_bytes[..]);
        let mut paths = Vec::new();
        for e in archive.entries().unwrap() {
            let e = e.unwrap();
            let h = e.header();
            assert_eq!((h.uid().unwrap(), h.gid().unwrap()), (0, 0));
            assert_eq!(h.mtime().unwrap(), 0);
            assert!(h.username_bytes().is_none_or(<[u8]>::is_empty));
            assert!(h.groupname_bytes().is_none_or(<[u8]>::is_empty));
            let mode = h.mode().unwrap();
            assert_eq!(mode & 0o7000, 0, "{:?}", e.path());
            paths.push(e.path().unwrap().to_string_lossy().into_owned());
        }
        assert_eq!(paths[0], "app");
        let js = paths
            .iter()
            .position(|p| p == "app/node_modules/pkg/index.js");
        assert!(js.is_some(), "{paths:?}");
        let mut sorted = paths.clone();
        sorted.sort();
        assert_eq!(paths, sorted);
        assert!(
            paths.iter().any(|p| p.len() > 300),
            "the long name survives"
        );
    }

    use std::fs::File;
}
