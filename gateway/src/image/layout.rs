//! Import from an OCI image layout (air-gapped hosts): a directory, or a tar of one. The layout
//! must say `imageLayoutVersion` 1.0.0; `index.json` is read within the manifest cap; the image
//! is chosen by digest or by its `org.opencontainers.image.ref.name`. Every blob is copied
//! through a [`BlobWriter`], so it is capped at its descriptor's size and committed only when
//! its digest matches, exactly as a pull's are; a refusal removes what the import added.
//!
//! A tarball is never unpacked: one pass over its entries with the `tar` crate refuses what a
//! layout cannot contain (paths outside `oci-layout`, `index.json` and `blobs/sha256/<hex>`,
//! `..`, links, devices, duplicates) and records where each blob's bytes lie; each blob is
//! then streamed from the archive into its writer.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use nix::fcntl::OFlag;

use super::blobs::{BlobError, BlobStore};
use super::digest::Digest;
use super::limits::UnpackLimits;
use super::oci::{self, Descriptor, Index, Platform};
use super::transfer::{self, Document, ResolveError, Staged, StoredImage};
use super::{ImageRecord, ImageStore};

/// `org.opencontainers.image.ref.name`: the tag a layout gives an image.
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// The `oci-layout` file is read up to this.
const MAX_LAYOUT_FILE: u64 = 4 << 10;

/// Which image of a layout to take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Select {
    Digest(Digest),
    RefName(String),
}

impl std::fmt::Display for Select {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Select::Digest(d) => write!(f, "{d}"),
            Select::RefName(n) => write!(f, "{REF_NAME}={n:?}"),
        }
    }
}

/// Why an import was refused.
#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path}: not an OCI image layout: {reason}")]
    NotLayout { path: PathBuf, reason: String },
    #[error(
        "{layout}: entry {entry:?} is outside the layout (only oci-layout, index.json and blobs/sha256/<hex>)"
    )]
    Outside { layout: PathBuf, entry: String },
    #[error("{layout}: entry {entry:?} is a {kind}, not a regular file or directory")]
    EntryType {
        layout: PathBuf,
        entry: String,
        kind: String,
    },
    #[error("{layout}: entry {entry:?} appears twice")]
    Duplicate { layout: PathBuf, entry: String },
    #[error("{layout}: {entry} is {size} bytes, over the {max}-byte limit")]
    TooLarge {
        layout: PathBuf,
        entry: String,
        size: u64,
        max: u64,
    },
    #[error("{layout}: blob {digest} is missing")]
    Missing { layout: PathBuf, digest: Digest },
    #[error("{layout}: blob {digest} is {got} bytes, its descriptor says {pinned}")]
    Size {
        layout: PathBuf,
        digest: Digest,
        got: u64,
        pinned: u64,
    },
    #[error("{layout}: no image matches {select}")]
    NoMatch { layout: PathBuf, select: Select },
    #[error("{layout}: more than one image matches {select}")]
    Ambiguous { layout: PathBuf, select: Select },
    #[error("{layout}: index.json: {source}")]
    Index {
        layout: PathBuf,
        source: oci::DocumentError,
    },
    #[error("{layout}: {source}")]
    Blob { layout: PathBuf, source: BlobError },
    #[error("{layout}: {source}")]
    Resolve {
        layout: PathBuf,
        source: ResolveError,
    },
    #[error("{layout}: installing {select}: {source}")]
    Install {
        layout: PathBuf,
        select: Select,
        source: Box<super::ImageError>,
    },
}

/// Where a layout's files come from.
enum Source {
    Dir(PathBuf),
    /// The archive, and for each file the offset of its bytes and its length.
    Tar {
        file: File,
        entries: BTreeMap<String, (u64, u64)>,
    },
}

/// An opened layout: a directory or a tarball, checked for shape.
pub struct Layout {
    path: PathBuf,
    source: Source,
}

impl std::fmt::Debug for Layout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Layout").field("path", &self.path).finish()
    }
}

/// A layout file's bytes (a reader of exactly its length) and that length.
type Entry<'a> = (Box<dyn Read + 'a>, u64);

/// Opens a file without following a link at its last component, refusing anything but a
/// regular file (a FIFO would block, a device would read forever).
fn open_regular(path: &Path) -> Result<(File, u64), LayoutError> {
    let io = |source| LayoutError::Io {
        path: path.to_owned(),
        source,
    };
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags((OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK).bits())
        .open(path)
        .map_err(io)?;
    let meta = file.metadata().map_err(io)?;
    if !meta.is_file() {
        return Err(LayoutError::NotLayout {
            path: path.to_owned(),
            reason: "not a regular file".into(),
        });
    }
    Ok((file, meta.len()))
}

/// The layout path of a blob.
fn blob_entry(digest: &Digest) -> String {
    format!("blobs/sha256/{}", digest.hex())
}

/// An archive entry's path as a layout path (`./` prefixes and a directory's trailing `/`
/// dropped), or `None` if it could name anything outside the layout.
fn layout_path(raw: &[u8]) -> Option<String> {
    let s = std::str::from_utf8(raw).ok()?;
    let mut parts = Vec::new();
    for part in s.split('/') {
        match part {
            "" | "." => continue,
            ".." => return None,
            p => parts.push(p),
        }
    }
    if s.starts_with('/') {
        return None;
    }
    Some(parts.join("/"))
}

fn is_blob_name(p: &str) -> bool {
    p.strip_prefix("blobs/sha256/")
        .is_some_and(|hex| Digest::parse(&format!("sha256:{hex}")).is_ok())
}

impl Layout {
    /// Opens `path`: a directory, or a tar archive of one.
    pub fn open(path: &Path) -> Result<Self, LayoutError> {
        let meta = std::fs::metadata(path).map_err(|source| LayoutError::Io {
            path: path.to_owned(),
            source,
        })?;
        let source = if meta.is_dir() {
            for sub in ["blobs", "blobs/sha256"] {
                let p = path.join(sub);
                let m = std::fs::symlink_metadata(&p).map_err(|source| LayoutError::Io {
                    path: p.clone(),
                    source,
                })?;
                if !m.is_dir() {
                    return Err(LayoutError::NotLayout {
                        path: path.to_owned(),
                        reason: format!("{sub} is not a directory"),
                    });
                }
            }
            Source::Dir(path.to_owned())
        } else {
            Self::scan_tar(path)?
        };
        let layout = Self {
            path: path.to_owned(),
            source,
        };
        layout.check_version()?;
        Ok(layout)
    }

    fn scan_tar(path: &Path) -> Result<Source, LayoutError> {
        let layout = path.to_owned();
        let io = |source| LayoutError::Io {
            path: path.to_owned(),
            source,
        };
        let (file, _) = open_regular(path)?;
        let mut entries = BTreeMap::new();
        let mut archive = tar::Archive::new(file.try_clone().map_err(io)?);
        for entry in archive.entries_with_seek().map_err(io)? {
            let entry = entry.map_err(io)?;
            let raw = entry.path_bytes().into_owned();
            let shown = String::from_utf8_lossy(&raw)
                .chars()
                .take(200)
                .collect::<String>();
            let kind = entry.header().entry_type();
            if matches!(kind, tar::EntryType::XGlobalHeader) {
                continue;
            }
            let Some(p) = layout_path(&raw) else {
                return Err(LayoutError::Outside {
                    layout,
                    entry: shown,
                });
            };
            if kind.is_dir() {
                if !matches!(p.as_str(), "" | "blobs" | "blobs/sha256") {
                    return Err(LayoutError::Outside {
                        layout,
                        entry: shown,
                    });
                }
                continue;
            }
            if !matches!(p.as_str(), "oci-layout" | "index.json") && !is_blob_name(&p) {
                return Err(LayoutError::Outside {
                    layout,
                    entry: shown,
                });
            }
            if !(kind.is_file() || matches!(kind, tar::EntryType::Continuous)) {
                let kind = if kind.is_symlink() {
                    "symbolic link".to_owned()
                } else if kind.is_hard_link() {
                    "hard link".to_owned()
                } else {
                    format!("{kind:?}")
                };
                return Err(LayoutError::EntryType {
                    layout,
                    entry: shown,
                    kind,
                });
            }
            let place = (entry.raw_file_position(), entry.size());
            if entries.insert(p, place).is_some() {
                return Err(LayoutError::Duplicate {
                    layout,
                    entry: shown,
                });
            }
        }
        Ok(Source::Tar { file, entries })
    }

    /// A layout file's bytes as a reader of exactly its length, and that length.
    fn open_entry(&self, name: &str) -> Result<Option<Entry<'_>>, LayoutError> {
        match &self.source {
            Source::Dir(dir) => {
                let p = dir.join(name);
                match open_regular(&p) {
                    Ok((f, len)) => Ok(Some((Box::new(f.take(len)), len))),
                    Err(LayoutError::Io { source, .. })
                        if source.kind() == io::ErrorKind::NotFound =>
                    {
                        Ok(None)
                    }
                    Err(e) => Err(e),
                }
            }
            Source::Tar { file, entries } => {
                let Some(&(offset, len)) = entries.get(name) else {
                    return Ok(None);
                };
                let mut f = file;
                f.seek(SeekFrom::Start(offset))
                    .map_err(|source| LayoutError::Io {
                        path: self.path.clone(),
                        source,
                    })?;
                Ok(Some((Box::new(f.take(len)), len)))
            }
        }
    }

    /// A small file (`oci-layout`, `index.json`) read whole within `max`.
    fn read_small(&self, name: &str, max: u64) -> Result<Vec<u8>, LayoutError> {
        let (mut r, len) = self
            .open_entry(name)?
            .ok_or_else(|| LayoutError::NotLayout {
                path: self.path.clone(),
                reason: format!("no {name}"),
            })?;
        if len > max {
            return Err(LayoutError::TooLarge {
                layout: self.path.clone(),
                entry: name.into(),
                size: len,
                max,
            });
        }
        let mut out = Vec::with_capacity(len as usize);
        r.read_to_end(&mut out).map_err(|source| LayoutError::Io {
            path: self.path.join(name),
            source,
        })?;
        Ok(out)
    }

    fn check_version(&self) -> Result<(), LayoutError> {
        #[derive(serde::Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct OciLayout {
            image_layout_version: String,
        }
        let bytes = self.read_small("oci-layout", MAX_LAYOUT_FILE)?;
        let v: OciLayout = serde_json::from_slice(&bytes).map_err(|e| LayoutError::NotLayout {
            path: self.path.clone(),
            reason: format!("oci-layout: {e}"),
        })?;
        if v.image_layout_version != "1.0.0" {
            return Err(LayoutError::NotLayout {
                path: self.path.clone(),
                reason: format!(
                    "imageLayoutVersion {:?} (only 1.0.0 is read)",
                    v.image_layout_version
                ),
            });
        }
        Ok(())
    }

    /// The layout's `index.json`.
    pub fn index(&self) -> Result<Index, LayoutError> {
        let bytes = self.read_small("index.json", oci::MAX_MANIFEST_BYTES)?;
        Index::parse(&bytes).map_err(|source| LayoutError::Index {
            layout: self.path.clone(),
            source,
        })
    }

    /// The `index.json` entry `select` names.
    pub fn select(&self, select: &Select) -> Result<Descriptor, LayoutError> {
        let index = self.index()?;
        let mut found = index.manifests.iter().filter(|d| match select {
            Select::Digest(digest) => d.digest == *digest,
            Select::RefName(name) => d.annotations.get(REF_NAME) == Some(name),
        });
        match (found.next(), found.next()) {
            (Some(d), None) => Ok(d.clone()),
            (None, _) => Err(LayoutError::NoMatch {
                layout: self.path.clone(),
                select: select.clone(),
            }),
            (Some(_), Some(_)) => Err(LayoutError::Ambiguous {
                layout: self.path.clone(),
                select: select.clone(),
            }),
        }
    }

    /// Where blob `digest` lies, for a push's upload (a directory layout; `None` for a tar).
    pub fn blob_path(&self, digest: &Digest) -> Option<PathBuf> {
        match &self.source {
            Source::Dir(dir) => Some(dir.join(blob_entry(digest))),
            Source::Tar { .. } => None,
        }
    }

    /// Copies blob `d` into `store` through a writer pinned to its descriptor's size.
    fn copy_blob(
        &self,
        d: &Descriptor,
        store: &BlobStore,
        staged: &mut Staged,
    ) -> Result<(), LayoutError> {
        if store.contains(&d.digest) {
            return Ok(());
        }
        let blob_err = |source| LayoutError::Blob {
            layout: self.path.clone(),
            source,
        };
        let (mut r, len) =
            self.open_entry(&blob_entry(&d.digest))?
                .ok_or_else(|| LayoutError::Missing {
                    layout: self.path.clone(),
                    digest: d.digest.clone(),
                })?;
        if len != d.size {
            return Err(LayoutError::Size {
                layout: self.path.clone(),
                digest: d.digest.clone(),
                got: len,
                pinned: d.size,
            });
        }
        let mut w = store.writer(&d.digest, d.size).map_err(blob_err)?;
        let mut buf = vec![0u8; 256 << 10];
        loop {
            let n = r.read(&mut buf).map_err(|source| LayoutError::Io {
                path: self.path.join(blob_entry(&d.digest)),
                source,
            })?;
            if n == 0 {
                break;
            }
            w.write(&buf[..n]).map_err(blob_err)?;
        }
        w.commit().map_err(blob_err)?;
        staged.added(d.digest.clone());
        Ok(())
    }

    /// A document blob, copied into the store and read back verified.
    fn document(
        &self,
        d: &Descriptor,
        store: &BlobStore,
        staged: &mut Staged,
    ) -> Result<Document, LayoutError> {
        let resolve_err = |source| LayoutError::Resolve {
            layout: self.path.clone(),
            source,
        };
        transfer::check_manifest_descriptor(d).map_err(resolve_err)?;
        self.copy_blob(d, store, staged)?;
        let bytes = store
            .read_small(&d.digest, d.size, oci::MAX_MANIFEST_BYTES)
            .map_err(|source| LayoutError::Blob {
                layout: self.path.clone(),
                source,
            })?;
        Ok(transfer::classify(&d.digest, &bytes, Some(&d.media_type))
            .map_err(resolve_err)?
            .1)
    }

    /// Imports the image `select` names into `store`, within the default unpack limits.
    pub fn import(&self, select: &Select, store: &BlobStore) -> Result<StoredImage, LayoutError> {
        self.import_within(select, store, &UnpackLimits::default())
    }

    /// Imports the image `select` names into `store`, refusing before any layer is copied an
    /// image whose layers `limits` would refuse at unpack.
    pub fn import_within(
        &self,
        select: &Select,
        store: &BlobStore,
        limits: &UnpackLimits,
    ) -> Result<StoredImage, LayoutError> {
        let resolve_err = |source| LayoutError::Resolve {
            layout: self.path.clone(),
            source,
        };
        let pinned = self.select(select)?;
        let mut staged = Staged::new(store);
        let (manifest_desc, manifest) = match self.document(&pinned, store, &mut staged)? {
            Document::Manifest(m) => (pinned.clone(), m),
            Document::Index(index) => {
                let chosen = index
                    .pick(&Platform::host())
                    .map_err(|source| {
                        resolve_err(ResolveError::Document {
                            digest: pinned.digest.clone(),
                            source,
                        })
                    })?
                    .clone();
                match self.document(&chosen, store, &mut staged)? {
                    Document::Manifest(m) => (chosen, m),
                    Document::Index(_) => {
                        return Err(resolve_err(ResolveError::NestedIndex {
                            digest: chosen.digest,
                        }));
                    }
                }
            }
        };
        transfer::check_manifest(&manifest_desc.digest, &manifest, limits).map_err(resolve_err)?;
        for blob in std::iter::once(&manifest.config).chain(&manifest.layers) {
            self.copy_blob(blob, store, &mut staged)?;
        }
        staged.keep();
        Ok(StoredImage {
            pinned,
            manifest: manifest_desc,
            config: manifest.config,
            layers: manifest.layers,
        })
    }

    /// Imports the image `select` names into `images`' blobs, then installs it; the record's
    /// reference is `oci:<layout>` and the selection.
    pub fn import_and_install(
        &self,
        select: &Select,
        images: &ImageStore,
    ) -> Result<ImageRecord, LayoutError> {
        // Held from the first blob to the record: a gc meanwhile would see blobs no record names.
        let _shared = images
            .blobs()
            .shared()
            .map_err(|source| LayoutError::Blob {
                layout: self.path.clone(),
                source,
            })?;
        let imported = self.import_within(select, images.blobs(), images.limits())?;
        let reference = format!("oci:{}@{select}", self.path.display());
        images
            .install(&imported.pinned.digest, imported.pinned.size, &reference)
            .map_err(|source| LayoutError::Install {
                layout: self.path.clone(),
                select: select.clone(),
                source: Box::new(source),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archive_paths_outside_the_layout_are_refused() {
        assert_eq!(
            layout_path(b"./blobs/sha256/").as_deref(),
            Some("blobs/sha256")
        );
        assert_eq!(layout_path(b"index.json").as_deref(), Some("index.json"));
        assert_eq!(layout_path(b"blobs/../../etc/passwd"), None);
        assert_eq!(layout_path(b"/index.json"), None);
        assert!(is_blob_name(&format!(
            "blobs/sha256/{}",
            Digest::of(b"x").hex()
        )));
        assert!(!is_blob_name("blobs/sha256/ABC"));
        assert!(!is_blob_name("blobs/sha512/00"));
    }
}
