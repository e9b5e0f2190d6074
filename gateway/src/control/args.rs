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

/// A descriptor as a path this process can open (`/proc/self/fd/N`: the caller's file or
/// directory, whatever mount namespace it lives in). The descriptor must outlive its use.
pub fn fd_path(fd: &OwnedFd) -> std::path::PathBuf {
    format!("/proc/self/fd/{}", fd.as_raw_fd()).into()
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
