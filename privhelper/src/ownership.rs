//! The ownership walk (OpenSSH's StrictModes): the helper runs its configuration file, `bwrap`,
//! `nft` and the sandbox init as root, so each must be a file that only root can change.
//!
//! Every path component from `/` down to the file is checked: owned by root (or the helper's
//! own uid), not writable by group or others — except a directory with the sticky bit (such as
//! `/tmp`), whose entries only their owners can rename or remove, as long as the entry under it
//! is root's — and in particular not owned by the gateway's uid. A symbolic link is resolved
//! and its target walked the same way (the directory holding the link is checked like any
//! other), so a root-owned link into a directory the gateway owns is refused too.
//!
//! Checked once at start: what is written only by root stays so until root changes it, so the
//! paths can be used later without a race. POSIX ACLs need not be read: a named user or group
//! entry is bounded by the ACL's mask, which the kernel shows as the group bits of the mode,
//! so an ACL that lets anyone but the owner write sets g+w and is refused here as "writable by
//! its group" (checked on ext4: `u:<uid>:rwx` with mask `rwx` shows as 0775; with mask `r-x`,
//! where that entry cannot write, as 0755).

use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

/// Symbolic links followed in one walk before giving up (the kernel's own limit).
const MAX_LINKS: u32 = 40;

/// Who may own what the helper trusts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owners {
    /// The helper's own uid (root in production).
    pub helper_uid: u32,
    /// The gateway's uid and gid: named in a refusal when they are the ones who could write.
    pub gateway_uid: Option<u32>,
    pub gateway_gid: Option<u32>,
}

/// Why a path cannot be trusted.
#[derive(Debug, thiserror::Error)]
pub enum UntrustedPath {
    #[error("{file}: {component}: {source}")]
    Stat {
        file: PathBuf,
        component: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{file}: {component} is owned by the gateway's uid {uid}: the gateway could replace it"
    )]
    OwnedByGateway {
        file: PathBuf,
        component: PathBuf,
        uid: u32,
    },
    #[error("{file}: {component} is owned by uid {uid}, not root: that user could replace it")]
    NotRootOwned {
        file: PathBuf,
        component: PathBuf,
        uid: u32,
    },
    #[error(
        "{file}: {component} is writable by {who} (mode {mode:04o}){gateway}: make it 0755 or \
         stricter (chmod go-w)"
    )]
    Writable {
        file: PathBuf,
        component: PathBuf,
        who: &'static str,
        mode: u32,
        /// " — the gateway's group" when the group is the gateway's.
        gateway: &'static str,
    },
    #[error("{file}: {component} is not a regular file")]
    NotAFile { file: PathBuf, component: PathBuf },
    #[error("{file}: more than {MAX_LINKS} symbolic links")]
    TooManyLinks { file: PathBuf },
    #[error("{file}: not an absolute path")]
    Relative { file: PathBuf },
}

/// Walks `file` (see the module's rules); on success, the path it resolves to.
pub fn check_file(file: &Path, owners: Owners) -> Result<PathBuf, UntrustedPath> {
    Walk {
        file,
        owners,
        links: 0,
    }
    .run()
}

struct Walk<'a> {
    file: &'a Path,
    owners: Owners,
    links: u32,
}

impl Walk<'_> {
    fn run(&mut self) -> Result<PathBuf, UntrustedPath> {
        if !self.file.is_absolute() {
            return Err(UntrustedPath::Relative {
                file: self.file.to_owned(),
            });
        }
        let mut at = PathBuf::from("/");
        let root = self.stat(&at)?;
        self.check_owner(&at, &root)?;
        self.check_dir_modes(&at, &root)?;
        // Components still to walk, first on top: a link's target is pushed in front.
        let mut todo: Vec<OsString> = Self::components(self.file);
        todo.reverse();
        while let Some(name) = todo.pop() {
            match name.as_bytes() {
                b"." => continue,
                b".." => {
                    at.pop();
                    continue;
                }
                _ => {}
            }
            let next = at.join(&name);
            let meta = self.stat(&next)?;
            // Whoever owns the entry decides what it is: checked before following a link too
            // (in a sticky directory, a link someone else planted is theirs).
            self.check_owner(&next, &meta)?;
            if meta.file_type().is_symlink() {
                self.links += 1;
                if self.links > MAX_LINKS {
                    return Err(UntrustedPath::TooManyLinks {
                        file: self.file.to_owned(),
                    });
                }
                let target = std::fs::read_link(&next).map_err(|source| self.io(&next, source))?;
                if target.is_absolute() {
                    at = PathBuf::from("/");
                }
                let mut more = Self::components(&target);
                more.reverse();
                todo.extend(more);
                continue;
            }
            let last = todo.is_empty();
            if last {
                if !meta.file_type().is_file() {
                    return Err(UntrustedPath::NotAFile {
                        file: self.file.to_owned(),
                        component: next,
                    });
                }
                self.check_not_writable(&next, &meta)?;
            } else {
                self.check_dir_modes(&next, &meta)?;
            }
            at = next;
        }
        Ok(at)
    }

    fn components(path: &Path) -> Vec<OsString> {
        path.components()
            .filter_map(|c| match c {
                Component::Normal(n) => Some(n.to_owned()),
                Component::ParentDir => Some("..".into()),
                Component::CurDir => Some(".".into()),
                Component::RootDir | Component::Prefix(_) => None,
            })
            .collect()
    }

    fn stat(&self, path: &Path) -> Result<std::fs::Metadata, UntrustedPath> {
        std::fs::symlink_metadata(path).map_err(|source| self.io(path, source))
    }

    fn io(&self, component: &Path, source: std::io::Error) -> UntrustedPath {
        UntrustedPath::Stat {
            file: self.file.to_owned(),
            component: component.to_owned(),
            source,
        }
    }

    fn check_owner(&self, at: &Path, meta: &std::fs::Metadata) -> Result<(), UntrustedPath> {
        let uid = meta.uid();
        if Some(uid) == self.owners.gateway_uid && uid != 0 {
            return Err(UntrustedPath::OwnedByGateway {
                file: self.file.to_owned(),
                component: at.to_owned(),
                uid,
            });
        }
        if uid != 0 && uid != self.owners.helper_uid {
            return Err(UntrustedPath::NotRootOwned {
                file: self.file.to_owned(),
                component: at.to_owned(),
                uid,
            });
        }
        Ok(())
    }

    /// A directory on the way: not writable by group or others, unless sticky (its entries,
    /// each checked for its owner, cannot be renamed or removed by anyone else).
    fn check_dir_modes(&self, at: &Path, meta: &std::fs::Metadata) -> Result<(), UntrustedPath> {
        if meta.mode() & 0o1000 != 0 {
            return Ok(());
        }
        self.check_not_writable(at, meta)
    }

    fn check_not_writable(&self, at: &Path, meta: &std::fs::Metadata) -> Result<(), UntrustedPath> {
        let mode = meta.mode() & 0o7777;
        let who = match (mode & 0o020 != 0, mode & 0o002 != 0) {
            (_, true) => "others",
            (true, false) => "its group",
            (false, false) => return Ok(()),
        };
        let gateway = if mode & 0o020 != 0 && Some(meta.gid()) == self.owners.gateway_gid {
            " — the gateway's group"
        } else {
            ""
        };
        Err(UntrustedPath::Writable {
            file: self.file.to_owned(),
            component: at.to_owned(),
            who,
            mode,
            gateway,
        })
    }
}

/// The files the helper runs or reads as root, by configuration key: each must pass the walk.
/// The configuration file itself is walked before it is read ([`check_file`] with no gateway
/// ids yet: root's alone is stricter than "not the gateway's").
pub fn check_tools(config: &crate::config::Config) -> Result<(), UntrustedPath> {
    let gateway_uid = config.caller_uid();
    let owners = Owners {
        helper_uid: rustix::process::geteuid().as_raw(),
        gateway_uid: Some(gateway_uid),
        gateway_gid: nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(gateway_uid))
            .ok()
            .flatten()
            .map(|u| u.gid.as_raw()),
    };
    for file in [&config.bwrap, &config.nft, &config.sandbox_init] {
        check_file(file, owners)?;
    }
    Ok(())
}
