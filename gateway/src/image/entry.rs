//! A tar entry as the unpacker sees it: what its header and the extension headers before it
//! say (name, link target, size), checked before anything is written, and every reason a
//! layer is refused ([`UnpackError`]). Pure: no file is touched here.

use std::io;

use tar::EntryType;

use super::digest::Digest;
use super::limits::UnpackLimits;
use super::stream::StreamError;

/// The longest single path component Linux accepts.
const NAME_MAX: usize = 255;

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

/// Extension headers seen before the entry they describe.
#[derive(Default)]
pub struct Pending {
    pub long_name: Option<Vec<u8>>,
    pub long_link: Option<Vec<u8>>,
    pub pax: Option<Vec<u8>>,
}

/// An entry's name and link target once its extension headers are applied.
pub struct Names {
    pub raw: String,
    pub link: Option<Vec<u8>>,
    pub pax_size: Option<u64>,
}

impl Pending {
    /// The entry's name and link target, from its own header or the extension headers
    /// before it; a name given two ways is ambiguous (readers pick differently).
    pub fn apply<R: io::Read>(self, entry: &tar::Entry<'_, R>) -> Result<Names, UnpackError> {
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
pub fn check_type(raw: &str, kind: EntryType, mode: u32) -> Result<(), UnpackError> {
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
pub fn link_target(raw: &str, target: &[u8], limits: &UnpackLimits) -> Result<String, UnpackError> {
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

pub fn strip_nul(mut name: Vec<u8>) -> Vec<u8> {
    while name.last() == Some(&0) {
        name.pop();
    }
    name
}

/// A name for messages: lossy UTF-8, control characters escaped.
pub fn shown(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).escape_debug().to_string()
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
