//! Layers applied one after another to an image root, entry by entry: the `tar` crate only
//! reads headers (in raw mode, so its GNU long-name and PAX extension headers, which it would
//! read whole into memory, are read here with a cap), never unpacks. Every entry is created
//! by an `*at` call relative to its parent directory, opened beneath the root's fd by
//! [`beneath`](super::beneath) without following links: a symbolic link, a hard link, or a
//! directory link an earlier layer left can never make a write land outside the root.
//!
//! Refused, with the entry named (the name and type checks are [`entry`](super::entry)'s): absolute paths, `..`, device nodes, fifos, sockets (a mode
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
use super::entry::{Names, Pending, UnpackError, check_type, link_target, normalise, shown};
use super::limits::UnpackLimits;
use super::oci::Compression;
use super::stream::{Budget, LayerStream, StreamError};

/// The largest PAX extended header read (real ones are a few hundred bytes).
const MAX_PAX_BYTES: u64 = 64 << 10;
const OPAQUE: &str = ".wh..wh..opq";
const WHITEOUT: &str = ".wh.";

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
