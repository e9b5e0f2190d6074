//! Layers applied one after another to an image root, entry by entry: the `tar` crate only
//! reads headers (in raw mode, so its GNU long-name and PAX extension headers, which it would
//! read whole into memory, are read here with a cap), never unpacks. Every entry is created
//! by an `*at` call relative to its parent directory, opened beneath the root's fd by
//! [`beneath`](super::beneath) without following links: a symbolic link, a hard link, or a
//! directory link an earlier layer left can never make a write land outside the root.
//!
//! Refused, with the entry named: absolute paths, `..`, device nodes, fifos, sockets (a mode
//! whose type bits say so), setuid/setgid/sticky bits, extended attributes and ACLs (PAX
//! `SCHILY.xattr.*`, `LIBARCHIVE.xattr.*`, `SCHILY.acl.*`), sparse files, global PAX
//! headers, hard links to a path not already in the image or to anything but a regular file,
//! a path twice in one layer or spelt ambiguously (`a/./b`, `a//b`, a trailing slash on
//! anything but a directory, a long name given both as a GNU header and as a PAX path), names
//! that are not UTF-8 or hold a control character, whiteouts naming `.`, `..` or AUFS
//! metadata, and every limit of [`UnpackLimits`]. One leading `./` and one trailing `/` on a
//! directory are how tar writes names and are accepted.
//!
//! Whiteouts (`.wh.NAME`) remove NAME as the lower layers left it; an opaque marker
//! (`.wh..wh..opq`) empties its directory of lower layers' content but keeps what this layer
//! put there, as the OCI image spec says. A whiteout for a path this layer also writes is
//! refused as a duplicate: the spec gives the two orders different meanings.
//!
//! Modes: the sandbox reads the tree as "other" (its uid owns nothing), so a file becomes
//! 0555 when its owner could execute it and 0444 otherwise; directories become 0555 once the
//! root is complete (they stay 0700 while layers are applied, so later layers can change
//! them). Owners in the tar are ignored: files are the unpacking process's. A regular file
//! keeps its tar mtime (Python compares a `.pyc` against its source's); directories and links
//! get the time of unpack.

use std::collections::HashSet;
use std::io::{self, Read};
use std::os::fd::OwnedFd;

use rustix::fs::{AtFlags, FileType, Mode, OFlags, Timespec, Timestamps};
use tar::EntryType;

use super::beneath;
use super::blobs::VerifyingReader;
use super::digest::Digest;
use super::limits::UnpackLimits;
use super::oci::Compression;
use super::stream::{Budget, LayerStream, StreamError};

/// The largest PAX extended header read (real ones are a few hundred bytes).
const MAX_PAX_BYTES: u64 = 64 << 10;
/// The longest single path component Linux accepts.
const NAME_MAX: usize = 255;
const OPAQUE: &str = ".wh..wh..opq";
const WHITEOUT: &str = ".wh.";

/// Why a layer was refused. `entry` is the entry's name as the tar gave it.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("entry {entry:?} has an absolute path")]
    Absolute { entry: String },
    #[error("entry {entry:?} has a `..` component")]
    DotDot { entry: String },
    #[error("entry {entry:?} is a device node")]
    DeviceNode { entry: String },
    #[error("entry {entry:?} is a fifo")]
    Fifo { entry: String },
    #[error("entry {entry:?} is a socket")]
    Socket { entry: String },
    #[error("entry {entry:?} is of a type not unpacked ({kind})")]
    UnsupportedType { entry: String, kind: String },
    #[error("entry {entry:?} has setuid, setgid or sticky bits (mode {mode:o})")]
    SpecialBits { entry: String, mode: u32 },
    #[error("entry {entry:?} carries an extended attribute or ACL ({key})")]
    Xattr { entry: String, key: String },
    #[error("entry {entry:?} is a hard link to {target:?}, which is not in the image")]
    HardLinkMissing { entry: String, target: String },
    #[error("entry {entry:?} is a hard link to {target:?}, which is not a regular file")]
    HardLinkNotRegular { entry: String, target: String },
    #[error("entry {entry:?} is a hard link to {target:?}, outside the image")]
    HardLinkOutside { entry: String, target: String },
    #[error("entry {entry:?} names a path already in this layer")]
    Duplicate { entry: String },
    #[error("entry {entry:?} is ambiguous: {why}")]
    Ambiguous { entry: String, why: &'static str },
    #[error("entry {entry:?} has a bad name: {why}")]
    BadName { entry: String, why: &'static str },
    #[error("entry {entry:?} is a whiteout naming something outside its directory")]
    WhiteoutOutside { entry: String },
    #[error(
        "entry {entry:?} is written through a symbolic link (refused: it could leave the root)"
    )]
    SymlinkInPath { entry: String },
    #[error("entry {entry:?} is beneath something that is not a directory")]
    NotADirectory { entry: String },
    #[error("entry {entry:?} has a path longer than {limit} bytes (or a component over 255)")]
    PathTooLong { entry: String, limit: usize },
    #[error("entry {entry:?} is {size} bytes, over the {limit}-byte limit (images.max_file_bytes)")]
    FileTooLarge {
        entry: String,
        size: u64,
        limit: u64,
    },
    #[error("the layer has more than {limit} entries (images.max_entries_per_layer)")]
    TooManyLayerEntries { limit: u64 },
    #[error("the image has more than {limit} entries (images.max_entries)")]
    TooManyEntries { limit: u64 },
    #[error("the image has {count} layers, over the limit of {limit} (images.max_layers)")]
    TooManyLayers { count: usize, limit: usize },
    #[error("entry {entry:?}: {source}")]
    Limit {
        entry: String,
        #[source]
        source: StreamError,
    },
    #[error("the layer's uncompressed content hashes to {actual}, not its diff_id {expected}")]
    DiffIdMismatch { expected: Digest, actual: Digest },
    #[error(transparent)]
    Stream(#[from] StreamError),
    #[error("the layer is not a valid tar stream (after {after:?}): {message}")]
    Tar { after: String, message: String },
    #[error("entry {entry:?}: {source}")]
    Io {
        entry: String,
        #[source]
        source: io::Error,
    },
}

/// Layers applied in order to one root directory.
#[derive(Debug)]
pub struct Unpacker<'l> {
    root: OwnedFd,
    limits: &'l UnpackLimits,
    entries: u64,
    bytes: u64,
}

/// What one layer has written so far: the paths it named (for duplicates and opaque
/// directories) and every directory above them.
#[derive(Default)]
struct Layer {
    ours: HashSet<String>,
    ancestors: HashSet<String>,
    entries: u64,
}

/// Extension headers seen before the entry they describe.
#[derive(Default)]
struct Pending {
    long_name: Option<Vec<u8>>,
    long_link: Option<Vec<u8>>,
    pax: Option<Vec<u8>>,
}

/// An entry's name and link target once its extension headers are applied.
struct Names {
    raw: String,
    link: Option<Vec<u8>>,
    pax_size: Option<u64>,
}

impl<'l> Unpacker<'l> {
    /// Applies layers to `root`, an empty directory the caller made.
    pub fn new(root: OwnedFd, limits: &'l UnpackLimits) -> Self {
        Self {
            root,
            limits,
            entries: 0,
            bytes: 0,
        }
    }

    /// The root, for the caller's final pass.
    pub fn root(&self) -> &OwnedFd {
        &self.root
    }

    /// Applies one layer, read from its stored blob and checked against `diff_id`.
    pub fn layer(
        &mut self,
        blob: VerifyingReader,
        compression: Compression,
        compressed_size: u64,
        diff_id: &Digest,
    ) -> Result<(), UnpackError> {
        let budget = Budget::new(self.limits, compression, compressed_size, self.bytes);
        let stream = LayerStream::new(blob, compression, budget, self.limits);
        let mut archive = tar::Archive::new(stream);
        let mut layer = Layer::default();
        let mut last = String::from("(the start)");
        {
            let entries = archive
                .entries()
                .map_err(|e| tar_error(e, &last))?
                .raw(true);
            let mut pending = Pending::default();
            for entry in entries {
                let mut entry = entry.map_err(|e| tar_error(e, &last))?;
                layer.entries += 1;
                self.entries += 1;
                if layer.entries > self.limits.max_entries_per_layer {
                    return Err(UnpackError::TooManyLayerEntries {
                        limit: self.limits.max_entries_per_layer,
                    });
                }
                if self.entries > self.limits.max_entries {
                    return Err(UnpackError::TooManyEntries {
                        limit: self.limits.max_entries,
                    });
                }
                let kind = entry.header().entry_type();
                let shown_header = shown(&entry.path_bytes());
                let slot = match kind {
                    EntryType::GNULongName => Some((&mut pending.long_name, "GNU long name")),
                    EntryType::GNULongLink => Some((&mut pending.long_link, "GNU long link")),
                    EntryType::XHeader => Some((&mut pending.pax, "PAX header")),
                    _ => None,
                };
                if let Some((slot, what)) = slot {
                    if slot.is_some() {
                        return Err(UnpackError::Ambiguous {
                            entry: shown_header,
                            why: match what {
                                "PAX header" => "two PAX headers for one entry",
                                _ => "two GNU long-name headers for one entry",
                            },
                        });
                    }
                    let cap = if kind == EntryType::XHeader {
                        MAX_PAX_BYTES
                    } else {
                        self.limits.max_path_bytes as u64 + 1
                    };
                    *slot = Some(read_capped(&mut entry, cap, &shown_header, self.limits)?);
                    continue;
                }
                if kind == EntryType::XGlobalHeader {
                    return Err(UnpackError::UnsupportedType {
                        entry: shown_header,
                        kind: "a global PAX header (readers disagree on what it applies to)".into(),
                    });
                }
                let names = std::mem::take(&mut pending).apply(&entry)?;
                last = names.raw.clone();
                self.entry(&mut entry, names, &mut layer, &budget)?;
            }
            if pending.long_name.is_some() || pending.long_link.is_some() || pending.pax.is_some() {
                return Err(UnpackError::Tar {
                    after: last,
                    message: "an extension header describes no entry".into(),
                });
            }
        }
        let (actual, len) = archive.into_inner().finish()?;
        self.bytes += len;
        if &actual != diff_id {
            return Err(UnpackError::DiffIdMismatch {
                expected: diff_id.clone(),
                actual,
            });
        }
        Ok(())
    }

    fn entry(
        &mut self,
        entry: &mut tar::Entry<'_, LayerStream>,
        names: Names,
        layer: &mut Layer,
        budget: &Budget,
    ) -> Result<(), UnpackError> {
        let raw = names.raw;
        let header = entry.header();
        let kind = header.entry_type();
        let mode = header.mode().map_err(|e| tar_error(e, &raw))?;
        check_type(&raw, kind, mode)?;
        if mode & 0o7000 != 0 {
            return Err(UnpackError::SpecialBits { entry: raw, mode });
        }
        if let Some(size) = names.pax_size
            && size != entry.size()
        {
            return Err(UnpackError::Ambiguous {
                entry: raw,
                why: "its PAX size and its header size differ",
            });
        }
        let Some(path) = normalise(&raw, kind == EntryType::Directory, self.limits)? else {
            // The root itself (`./`): its mode is decided here, not by the layer.
            return Ok(());
        };
        let (dir, name) = path.rsplit_once('/').unwrap_or(("", &path));
        if dir.split('/').any(|c| c.starts_with(WHITEOUT)) {
            return Err(UnpackError::BadName {
                entry: raw,
                why: "a whiteout name used as a directory",
            });
        }
        if let Some(whited) = name.strip_prefix(WHITEOUT) {
            return self.whiteout(&raw, dir, name, whited, kind, layer);
        }
        if !layer.ours.insert(path.clone()) {
            return Err(UnpackError::Duplicate { entry: raw });
        }
        layer.note_ancestors(dir);
        let parent = self.parent(dir, &raw, true)?;
        let io_err = |source: io::Error| UnpackError::Io {
            entry: raw.clone(),
            source,
        };
        match kind {
            EntryType::Directory => match beneath::kind(&parent, name).map_err(io_err)? {
                Some(FileType::Directory) => Ok(()),
                existing => {
                    if existing.is_some() {
                        beneath::remove(&parent, name).map_err(io_err)?;
                    }
                    rustix::fs::mkdirat(&parent, name, Mode::from_raw_mode(0o700))
                        .map_err(|e| io_err(e.into()))
                }
            },
            EntryType::Regular | EntryType::Continuous => {
                let size = entry.size();
                if size > self.limits.max_file_bytes {
                    return Err(UnpackError::FileTooLarge {
                        entry: raw,
                        size,
                        limit: self.limits.max_file_bytes,
                    });
                }
                // Refused on the header's word, before a byte of a bomb is inflated.
                if entry.raw_file_position().saturating_add(size) > budget.bytes {
                    return Err(UnpackError::Limit {
                        entry: raw,
                        source: budget.error(),
                    });
                }
                let mtime = entry.header().mtime().unwrap_or(0);
                beneath::remove(&parent, name).map_err(io_err)?;
                let file = beneath::open(
                    &parent,
                    name,
                    OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL,
                    Mode::from_raw_mode(0o600),
                )
                .map_err(io_err)?;
                let mut out = std::fs::File::from(file);
                let copied = io::copy(entry, &mut out).map_err(|e| stream_error(e, &raw))?;
                if copied != size {
                    return Err(UnpackError::Tar {
                        after: raw,
                        message: format!("the entry ends after {copied} of its {size} bytes"),
                    });
                }
                let final_mode = if mode & 0o100 != 0 { 0o555 } else { 0o444 };
                rustix::fs::fchmod(&out, Mode::from_raw_mode(final_mode))
                    .map_err(|e| io_err(e.into()))?;
                let when = Timespec {
                    tv_sec: i64::try_from(mtime).unwrap_or(0),
                    tv_nsec: 0,
                };
                let times = Timestamps {
                    last_access: when,
                    last_modification: when,
                };
                rustix::fs::futimens(&out, &times).map_err(|e| io_err(e.into()))
            }
            EntryType::Symlink => {
                let target = names.link.unwrap_or_default();
                let target = link_target(&raw, &target, self.limits)?;
                beneath::remove(&parent, name).map_err(io_err)?;
                rustix::fs::symlinkat(target.as_str(), &parent, name).map_err(|e| io_err(e.into()))
            }
            EntryType::Link => {
                let target = names.link.unwrap_or_default();
                self.hard_link(&raw, &path, &parent, name, &target)
            }
            _ => unreachable!("check_type refused every other type"),
        }
    }

    /// `.wh.NAME` (remove NAME as lower layers left it) or the opaque marker.
    fn whiteout(
        &mut self,
        raw: &str,
        dir: &str,
        name: &str,
        whited: &str,
        kind: EntryType,
        layer: &mut Layer,
    ) -> Result<(), UnpackError> {
        if !matches!(kind, EntryType::Regular | EntryType::Continuous) {
            return Err(UnpackError::Ambiguous {
                entry: raw.into(),
                why: "a whiteout that is not a plain file",
            });
        }
        let join = |n: &str| {
            if dir.is_empty() {
                n.to_owned()
            } else {
                format!("{dir}/{n}")
            }
        };
        if name == OPAQUE {
            if !layer.ours.insert(join(OPAQUE)) {
                return Err(UnpackError::Duplicate { entry: raw.into() });
            }
            layer.note_ancestors(dir);
            // The directory itself is this layer's: it stays, emptied of what lower ones put.
            let parent = self.parent(dir, raw, true)?;
            return self.remove_lower(&parent, dir, layer, raw);
        }
        if whited.starts_with(WHITEOUT) {
            return Err(UnpackError::UnsupportedType {
                entry: raw.into(),
                kind: "AUFS whiteout metadata".into(),
            });
        }
        if whited.is_empty() || whited == "." || whited == ".." {
            return Err(UnpackError::WhiteoutOutside { entry: raw.into() });
        }
        let target = join(whited);
        if !layer.ours.insert(target.clone()) || layer.ancestors.contains(&target) {
            return Err(UnpackError::Duplicate { entry: raw.into() });
        }
        let parent = match self.parent(dir, raw, false) {
            Ok(p) => p,
            // Nothing below to remove.
            Err(UnpackError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        beneath::remove(&parent, whited).map_err(|source| UnpackError::Io {
            entry: raw.into(),
            source,
        })
    }

    /// Removes from the directory `rel` everything this layer did not write.
    fn remove_lower(
        &self,
        dir: &OwnedFd,
        rel: &str,
        layer: &Layer,
        raw: &str,
    ) -> Result<(), UnpackError> {
        let io_err = |source: io::Error| UnpackError::Io {
            entry: raw.into(),
            source,
        };
        for child in beneath::children(dir).map_err(io_err)? {
            let Some(child) = child.to_str() else {
                beneath::remove(dir, &child).map_err(io_err)?;
                continue;
            };
            let path = if rel.is_empty() {
                child.to_owned()
            } else {
                format!("{rel}/{child}")
            };
            let ours = layer.ours.contains(&path);
            if ours || layer.ancestors.contains(&path) {
                if beneath::kind(dir, child).map_err(io_err)? == Some(FileType::Directory) {
                    let sub = beneath::open_dir(dir, child).map_err(io_err)?;
                    self.remove_lower(&sub, &path, layer, raw)?;
                }
            } else {
                beneath::remove(dir, child).map_err(io_err)?;
            }
        }
        Ok(())
    }

    fn hard_link(
        &self,
        raw: &str,
        path: &str,
        parent: &OwnedFd,
        name: &str,
        target: &[u8],
    ) -> Result<(), UnpackError> {
        let shown_target = shown(target);
        let outside = || UnpackError::HardLinkOutside {
            entry: raw.into(),
            target: shown_target.clone(),
        };
        let target = match normalise(&shown_target, false, self.limits) {
            Ok(Some(t)) if std::str::from_utf8(target).is_ok() => t,
            Ok(_) => return Err(outside()),
            Err(UnpackError::Absolute { .. } | UnpackError::DotDot { .. }) => {
                return Err(outside());
            }
            Err(_) => {
                return Err(UnpackError::BadName {
                    entry: raw.into(),
                    why: "its hard link target is not a plain path",
                });
            }
        };
        if target == path {
            return Err(UnpackError::Ambiguous {
                entry: raw.into(),
                why: "a hard link to itself",
            });
        }
        let missing = || UnpackError::HardLinkMissing {
            entry: raw.into(),
            target: shown_target.clone(),
        };
        let (tdir, tname) = target.rsplit_once('/').unwrap_or(("", &target));
        let tparent = match self.parent(tdir, raw, false) {
            Ok(p) => p,
            Err(UnpackError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                return Err(missing());
            }
            Err(e) => return Err(e),
        };
        let io_err = |source: io::Error| UnpackError::Io {
            entry: raw.into(),
            source,
        };
        match beneath::kind(&tparent, tname).map_err(io_err)? {
            None => return Err(missing()),
            Some(FileType::RegularFile) => {}
            Some(_) => {
                return Err(UnpackError::HardLinkNotRegular {
                    entry: raw.into(),
                    target: shown_target,
                });
            }
        }
        beneath::remove(parent, name).map_err(io_err)?;
        // Flags empty: linkat does not follow a link at the target (already known regular).
        rustix::fs::linkat(&tparent, tname, parent, name, AtFlags::empty())
            .map_err(|e| io_err(e.into()))
    }

    /// Opens the directory `rel` beneath the root, creating what is missing (0700) when
    /// `create`: a layer need not list the directories above its files.
    fn parent(&self, rel: &str, raw: &str, create: bool) -> Result<OwnedFd, UnpackError> {
        let classify = |e: io::Error| match rustix::io::Errno::from_io_error(&e) {
            Some(rustix::io::Errno::LOOP | rustix::io::Errno::XDEV) => {
                UnpackError::SymlinkInPath { entry: raw.into() }
            }
            Some(rustix::io::Errno::NOTDIR) => UnpackError::NotADirectory { entry: raw.into() },
            _ => UnpackError::Io {
                entry: raw.into(),
                source: e,
            },
        };
        match beneath::open_dir(&self.root, rel) {
            Err(e) if create && e.kind() == io::ErrorKind::NotFound => {}
            other => return other.map_err(classify),
        }
        let mut dir = beneath::open_dir(&self.root, "").map_err(classify)?;
        for component in rel.split('/') {
            dir = match beneath::open_dir(&dir, component) {
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    rustix::fs::mkdirat(&dir, component, Mode::from_raw_mode(0o700))
                        .map_err(|e| classify(e.into()))?;
                    beneath::open_dir(&dir, component)
                }
                other => other,
            }
            .map_err(classify)?;
        }
        Ok(dir)
    }
}

impl Layer {
    fn note_ancestors(&mut self, dir: &str) {
        let mut at = dir;
        while !at.is_empty() && self.ancestors.insert(at.to_owned()) {
            at = at.rsplit_once('/').map_or("", |(up, _)| up);
        }
    }
}

impl Pending {
    /// The entry's name and link target, from its own header or the extension headers
    /// before it; a name given two ways is ambiguous (readers pick differently).
    fn apply(self, entry: &tar::Entry<'_, LayerStream>) -> Result<Names, UnpackError> {
        let header_name = entry.path_bytes().into_owned();
        let mut name = self.long_name.map(strip_nul);
        let mut link = self.long_link.map(strip_nul);
        let mut pax_size = None;
        if let Some(pax) = &self.pax {
            let shown_name = shown(name.as_deref().unwrap_or(&header_name));
            for ext in tar::PaxExtensions::new(pax) {
                let ext = ext.map_err(|_| UnpackError::Tar {
                    after: shown_name.clone(),
                    message: "a malformed PAX header".into(),
                })?;
                let key = String::from_utf8_lossy(ext.key_bytes()).into_owned();
                let value = ext.value_bytes();
                let twice = |slot: &Option<Vec<u8>>| {
                    slot.is_some().then_some(UnpackError::Ambiguous {
                        entry: shown_name.clone(),
                        why: "a long name given both as a GNU header and as a PAX record",
                    })
                };
                match key.as_str() {
                    "path" => {
                        if let Some(e) = twice(&name) {
                            return Err(e);
                        }
                        name = Some(value.to_vec());
                    }
                    "linkpath" => {
                        if let Some(e) = twice(&link) {
                            return Err(e);
                        }
                        link = Some(value.to_vec());
                    }
                    "size" => {
                        pax_size = Some(
                            std::str::from_utf8(value)
                                .ok()
                                .and_then(|v| v.parse().ok())
                                .ok_or_else(|| UnpackError::Tar {
                                    after: shown_name.clone(),
                                    message: "a PAX size that is not a number".into(),
                                })?,
                        );
                    }
                    k if k.starts_with("SCHILY.xattr.")
                        || k.starts_with("LIBARCHIVE.xattr.")
                        || k.starts_with("SCHILY.acl.")
                        || k.starts_with("RHT.security.") =>
                    {
                        return Err(UnpackError::Xattr {
                            entry: shown_name,
                            key,
                        });
                    }
                    k if k.starts_with("GNU.sparse.") => {
                        return Err(UnpackError::UnsupportedType {
                            entry: shown_name,
                            kind: "a sparse file".into(),
                        });
                    }
                    // Times, owners, charset and comments change nothing we keep.
                    _ => {}
                }
            }
        }
        let name = name.unwrap_or(header_name);
        let raw = match std::str::from_utf8(&name) {
            Ok(s) => s.to_owned(),
            Err(_) => {
                return Err(UnpackError::BadName {
                    entry: shown(&name),
                    why: "not UTF-8",
                });
            }
        };
        let link = link.or_else(|| entry.link_name_bytes().map(|l| l.into_owned()));
        Ok(Names {
            raw,
            link,
            pax_size,
        })
    }
}

/// The entry's type, checked against the type bits some writers (Go's archive/tar) put in
/// the mode; a socket only shows there, tar having no type for one.
fn check_type(raw: &str, kind: EntryType, mode: u32) -> Result<(), UnpackError> {
    let entry = || raw.to_owned();
    match kind {
        EntryType::Char | EntryType::Block => {
            return Err(UnpackError::DeviceNode { entry: entry() });
        }
        EntryType::Fifo => return Err(UnpackError::Fifo { entry: entry() }),
        EntryType::Regular
        | EntryType::Continuous
        | EntryType::Directory
        | EntryType::Symlink
        | EntryType::Link => {}
        EntryType::GNUSparse => {
            return Err(UnpackError::UnsupportedType {
                entry: entry(),
                kind: "a sparse file".into(),
            });
        }
        other => {
            return Err(UnpackError::UnsupportedType {
                entry: entry(),
                kind: format!("type {:?}", other.as_byte() as char),
            });
        }
    }
    let expected = match kind {
        EntryType::Directory => 0o040000,
        EntryType::Symlink => 0o120000,
        _ => 0o100000,
    };
    match mode & 0o170000 {
        0 => Ok(()),
        0o140000 => Err(UnpackError::Socket { entry: entry() }),
        0o020000 | 0o060000 => Err(UnpackError::DeviceNode { entry: entry() }),
        0o010000 => Err(UnpackError::Fifo { entry: entry() }),
        bits if bits == expected => Ok(()),
        _ => Err(UnpackError::Ambiguous {
            entry: entry(),
            why: "its mode's type bits and its tar type differ",
        }),
    }
}

/// The entry's path as components joined by `/`, or `None` for the root itself.
pub fn normalise(
    raw: &str,
    is_dir: bool,
    limits: &UnpackLimits,
) -> Result<Option<String>, UnpackError> {
    let entry = || raw.to_owned();
    if raw.chars().any(|c| c.is_control()) {
        return Err(UnpackError::BadName {
            entry: raw.escape_debug().to_string(),
            why: "a control character",
        });
    }
    if raw.len() > limits.max_path_bytes {
        return Err(UnpackError::PathTooLong {
            entry: entry(),
            limit: limits.max_path_bytes,
        });
    }
    if raw.starts_with('/') {
        return Err(UnpackError::Absolute { entry: entry() });
    }
    let mut path = raw.strip_prefix("./").unwrap_or(raw);
    if path.is_empty() || path == "." {
        return if is_dir {
            Ok(None)
        } else {
            Err(UnpackError::Ambiguous {
                entry: entry(),
                why: "the root named by something not a directory",
            })
        };
    }
    if let Some(stripped) = path.strip_suffix('/') {
        if !is_dir {
            return Err(UnpackError::Ambiguous {
                entry: entry(),
                why: "a trailing slash on something not a directory",
            });
        }
        path = stripped;
    }
    for component in path.split('/') {
        match component {
            "" => {
                return Err(UnpackError::Ambiguous {
                    entry: entry(),
                    why: "an empty component (`//`)",
                });
            }
            "." => {
                return Err(UnpackError::Ambiguous {
                    entry: entry(),
                    why: "a `.` component",
                });
            }
            ".." => return Err(UnpackError::DotDot { entry: entry() }),
            c if c.len() > NAME_MAX => {
                return Err(UnpackError::PathTooLong {
                    entry: entry(),
                    limit: limits.max_path_bytes,
                });
            }
            _ => {}
        }
    }
    Ok(Some(path.to_owned()))
}

/// A symbolic link's target: any path (it is never followed while the root is built or
/// checked, and inside the sandbox `/` is the image), but UTF-8 without control characters.
fn link_target(raw: &str, target: &[u8], limits: &UnpackLimits) -> Result<String, UnpackError> {
    let bad = |why| UnpackError::BadName {
        entry: raw.into(),
        why,
    };
    let target = std::str::from_utf8(target).map_err(|_| bad("a link target not UTF-8"))?;
    if target.is_empty() {
        return Err(bad("an empty link target"));
    }
    if target.chars().any(|c| c.is_control()) {
        return Err(bad("a control character in its link target"));
    }
    if target.len() > limits.max_path_bytes {
        return Err(UnpackError::PathTooLong {
            entry: raw.into(),
            limit: limits.max_path_bytes,
        });
    }
    Ok(target.to_owned())
}

/// An extension header's body, read up to `cap` bytes (no more is ever held): past it the
/// header is refused, named by what it began to say.
fn read_capped(
    entry: &mut tar::Entry<'_, LayerStream>,
    cap: u64,
    shown_header: &str,
    limits: &UnpackLimits,
) -> Result<Vec<u8>, UnpackError> {
    let mut out = Vec::with_capacity(entry.size().min(cap) as usize);
    entry
        .take(cap)
        .read_to_end(&mut out)
        .map_err(|e| stream_error(e, shown_header))?;
    if entry.size() > cap {
        let start: String = shown(&out).chars().take(120).collect();
        return Err(UnpackError::PathTooLong {
            entry: format!("{start}…"),
            limit: limits.max_path_bytes,
        });
    }
    Ok(out)
}

fn strip_nul(mut name: Vec<u8>) -> Vec<u8> {
    while name.last() == Some(&0) {
        name.pop();
    }
    name
}

/// A name for messages: lossy UTF-8, control characters escaped.
fn shown(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).escape_debug().to_string()
}

fn stream_error(e: io::Error, entry: &str) -> UnpackError {
    match StreamError::take(e) {
        Ok(source) => UnpackError::Limit {
            entry: entry.into(),
            source,
        },
        Err(e) => UnpackError::Io {
            entry: entry.into(),
            source: e,
        },
    }
}

fn tar_error(e: io::Error, after: &str) -> UnpackError {
    match StreamError::take(e) {
        Ok(source) => UnpackError::Stream(source),
        Err(e) => UnpackError::Tar {
            after: after.into(),
            message: e.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(raw: &str, is_dir: bool) -> Result<Option<String>, String> {
        normalise(raw, is_dir, &UnpackLimits::default()).map_err(|e| {
            let debug = format!("{e:?}");
            debug
                .split([' ', '('])
                .next()
                .unwrap_or_default()
                .to_owned()
        })
    }

    #[test]
    fn names_are_normalised_only_in_the_ways_tar_writes_them() {
        assert_eq!(norm("usr/bin/x", false), Ok(Some("usr/bin/x".into())));
        assert_eq!(norm("./usr/bin/x", false), Ok(Some("usr/bin/x".into())));
        assert_eq!(norm("usr/", true), Ok(Some("usr".into())));
        assert_eq!(norm("./", true), Ok(None));
        assert_eq!(norm(".", true), Ok(None));
        assert_eq!(norm("/etc/passwd", false), Err("Absolute".into()));
        assert_eq!(norm("a/../b", false), Err("DotDot".into()));
        assert_eq!(norm("..", true), Err("DotDot".into()));
        assert_eq!(norm("a/./b", false), Err("Ambiguous".into()));
        assert_eq!(norm("././a", false), Err("Ambiguous".into()));
        assert_eq!(norm("a//b", false), Err("Ambiguous".into()));
        assert_eq!(norm("usr/", false), Err("Ambiguous".into()));
        assert_eq!(norm("usr//", true), Err("Ambiguous".into()));
        assert_eq!(norm(".", false), Err("Ambiguous".into()));
        assert_eq!(norm("a\nb", false), Err("BadName".into()));
        assert_eq!(norm("a\u{0}b", false), Err("BadName".into()));
        assert_eq!(norm(&"c".repeat(256), false), Err("PathTooLong".into()));
        let long = vec!["d"; 2049].join("/");
        assert_eq!(norm(&long, false), Err("PathTooLong".into()));
    }

    #[test]
    fn a_mode_whose_type_bits_disagree_with_the_tar_type_is_refused() {
        let class = |kind, mode| {
            check_type("x", kind, mode).map_err(|e| {
                format!("{e:?}")
                    .split([' ', '('])
                    .next()
                    .unwrap_or_default()
                    .to_owned()
            })
        };
        assert_eq!(class(EntryType::Regular, 0o100644), Ok(()));
        assert_eq!(class(EntryType::Directory, 0o040755), Ok(()));
        assert_eq!(class(EntryType::Symlink, 0o120777), Ok(()));
        assert_eq!(class(EntryType::Regular, 0o644), Ok(()));
        assert_eq!(class(EntryType::Regular, 0o140644), Err("Socket".into()));
        assert_eq!(
            class(EntryType::Regular, 0o020644),
            Err("DeviceNode".into())
        );
        assert_eq!(class(EntryType::Regular, 0o010644), Err("Fifo".into()));
        assert_eq!(class(EntryType::Regular, 0o040755), Err("Ambiguous".into()));
        assert_eq!(
            class(EntryType::GNUSparse, 0o644),
            Err("UnsupportedType".into())
        );
        assert_eq!(
            class(EntryType::new(b'Z'), 0o644),
            Err("UnsupportedType".into())
        );
    }
}
