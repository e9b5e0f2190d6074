//! What arrives with a call and what a refusal becomes: a secret's value read from its
//! descriptor (bounded, wiped, never blocking), a descriptor as a path the daemon can open,
//! CIDR ranges parsed, the consent callback that says yes only to a quoted digest, and the
//! mapping of the admin layer's errors onto the interface's named errors.

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::{Arc, Mutex, PoisonError};

use sha2::{Digest, Sha256};

use super::ControlError;
use crate::admin::consent::InstallRefusal;
use crate::admin::{AdminError, Answer};
use crate::catalog::CatalogError;
use crate::store::StoreError;
use crate::vault::{MAX_VALUE_LEN, SecretValue, VaultError};

/// `sha256:<hex>` of what the admin is shown: what a consent must quote.
pub fn consent_digest(text: &str) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(text.as_bytes())))
}

/// The D-Bus error an admin refusal becomes: its kind chosen by what went wrong, its message
/// the admin layer's own.
pub fn to_control(e: AdminError) -> ControlError {
    let text = e.to_string();
    match e {
        AdminError::Name(_) => ControlError::InvalidArgument(text),
        AdminError::Vault(VaultError::NotFound { .. })
        | AdminError::Catalog(CatalogError::UnknownRegistry(_))
        | AdminError::Install(InstallRefusal::NotInstalled(_)) => ControlError::NotFound(text),
        AdminError::Vault(VaultError::TooLarge { .. } | VaultError::Empty) => {
            ControlError::InvalidArgument(text)
        }
        AdminError::Refused(_)
        | AdminError::Install(_)
        | AdminError::Catalog(_)
        | AdminError::Store(StoreError::InUse { .. } | StoreError::Invalid(_)) => {
            ControlError::Refused(text)
        }
        AdminError::Vault(_) | AdminError::Audit(_) | AdminError::Store(_) => {
            ControlError::Failed(text)
        }
    }
}

/// Reads a secret's value from the caller's descriptor: at most one byte over the limit (so
/// a longer one is refused by the vault, not truncated), into memory that is wiped. The read
/// never blocks: a pipe must hold the whole value (written and closed) when the call is made,
/// so that a caller cannot park the admin thread on an empty pipe.
pub fn read_value(fd: OwnedFd) -> Result<SecretValue, ControlError> {
    use std::io::Read;
    let flags = rustix::fs::fcntl_getfl(&fd)
        .map_err(|e| ControlError::InvalidArgument(format!("the value's descriptor: {e}")))?;
    rustix::fs::fcntl_setfl(&fd, flags | rustix::fs::OFlags::NONBLOCK)
        .map_err(|e| ControlError::InvalidArgument(format!("the value's descriptor: {e}")))?;
    let mut buf = zeroize::Zeroizing::new(Vec::with_capacity(1024));
    std::fs::File::from(fd)
        .take(MAX_VALUE_LEN as u64 + 1)
        .read_to_end(&mut buf)
        .map_err(|e| {
            ControlError::InvalidArgument(format!(
                "reading the value from its descriptor ({e}): pass a sealed memfd or a pipe written and closed before the call"
            ))
        })?;
    Ok(SecretValue::new(buf))
}

/// A file or directory the caller passed by descriptor, as a path the admin layer can open
/// (it opens paths, and refuses a link as the last component: `/proc/self/fd/N` is one).
/// A directory is reached as `/proc/self/fd/N/.` (the link resolved as a middle component,
/// to the caller's directory in whatever mount namespace it lives); a regular file (a
/// tarball) is copied into a private file of the daemon's temporary directory first, removed
/// when this is dropped.
#[derive(Debug)]
pub struct Received {
    _fd: OwnedFd,
    path: std::path::PathBuf,
    copy: bool,
}

impl Received {
    pub fn new(fd: OwnedFd) -> Result<Self, ControlError> {
        let bad = |e: std::io::Error| ControlError::InvalidArgument(format!("the descriptor: {e}"));
        let stat = rustix::fs::fstat(&fd).map_err(|e| bad(e.into()))?;
        let kind = rustix::fs::FileType::from_raw_mode(stat.st_mode);
        if kind == rustix::fs::FileType::Directory {
            let path = format!("/proc/self/fd/{}/.", fd.as_raw_fd()).into();
            return Ok(Self {
                _fd: fd,
                path,
                copy: false,
            });
        }
        if kind != rustix::fs::FileType::RegularFile {
            return Err(ControlError::InvalidArgument(
                "pass a directory or a regular file (a tarball)".into(),
            ));
        }
        let (path, mut out) = private_file()?;
        let copied = std::io::copy(
            &mut std::fs::File::from(fd.try_clone().map_err(bad)?),
            &mut out,
        );
        if let Err(e) = copied {
            let _ = std::fs::remove_file(&path);
            return Err(ControlError::Failed(format!("copying the tarball: {e}")));
        }
        Ok(Self {
            _fd: fd,
            path,
            copy: true,
        })
    }

    pub fn path(&self) -> &std::path::Path {
        &self.path
    }
}

impl Drop for Received {
    fn drop(&mut self) {
        if self.copy {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// A new file only this user can read, in the temporary directory (private to the daemon
/// under `PrivateTmp=`).
fn private_file() -> Result<(std::path::PathBuf, std::fs::File), ControlError> {
    use std::os::unix::fs::OpenOptionsExt;
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    loop {
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("gigmcpd-import-{}-{n}.tar", std::process::id()));
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
        {
            Ok(f) => return Ok((path, f)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(ControlError::Failed(format!("{}: {e}", path.display()))),
        }
    }
}

pub fn opt(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

pub fn ranges(list: &[String]) -> Result<Vec<ipnet::IpNet>, ControlError> {
    list.iter()
        .map(|r| {
            r.parse()
                .map_err(|e| ControlError::InvalidArgument(format!("range {r:?}: {e}")))
        })
        .collect()
}

/// What a consent callback saw: the text it was shown and refused (no matching digest).
pub type Seen = Arc<Mutex<Option<String>>>;

/// The consent callback of a two-step install or upgrade: yes exactly when `consent` is the
/// digest of the text shown now; otherwise the text is kept to be sent back.
pub fn consent_by_digest(consent: String, seen: Seen) -> impl FnMut(&str) -> Answer {
    move |text: &str| {
        if !consent.is_empty() && consent == consent_digest(text) {
            Answer::Yes
        } else {
            *seen.lock().unwrap_or_else(PoisonError::into_inner) = Some(text.to_owned());
            Answer::Declined
        }
    }
}

/// A refusal for want of consent becomes `ConsentNeeded` with the text and its digest.
pub fn consent_needed(e: AdminError, seen: &Seen) -> ControlError {
    let shown = seen.lock().unwrap_or_else(PoisonError::into_inner).take();
    match (e, shown) {
        (AdminError::Install(InstallRefusal::Declined(_)), Some(text)) => {
            ControlError::ConsentNeeded(format!("{}\n{text}", consent_digest(&text)))
        }
        (e, _) => to_control(e),
    }
}
