//! Threshold signature checks: does a document carry valid signatures by at least `threshold`
//! distinct keys that a root trusts for its role?
//!
//! "Distinct" is by key material, not by key id: a signature listed twice, or one key under
//! two ids, counts once, so one stolen key cannot meet a threshold of two. Signatures beyond
//! the threshold are not needed to be valid (the specification's rule), and each trusted key is
//! checked once (its first signature), as python-tuf does; when the threshold is
//! not met, the refusal names the most telling reason: a bad signature by a trusted key, then a
//! key root does not trust, then the count. `check_meta` is the other binding: a file's bytes
//! against the length and hashes another role names for it. `parse_verified` joins parsing
//! and the signature check so a file over its container budget is still judged by its
//! signatures first (on streamed canonical bytes, never a parsed `Value`). Knows nothing of
//! versions.

use std::collections::BTreeSet;

use sha2::{Digest, Sha256, Sha512};

use super::metadata::{
    self, Body, Doc, MetaFile, RootBody, Sig, SnapshotBody, TargetsBody, TimestampBody,
};
use super::{Limits, Role, TufError};

/// Parses a file of `T`'s role and checks its signatures against `root`. A file within its
/// byte cap but over its container budget is refused as too large only after its signatures
/// were checked on streamed canonical bytes: a forged file is named forged, and neither costs
/// a `Value` of it.
pub(super) fn parse_verified<T: Body>(
    raw: &[u8],
    max: u64,
    root: &RootBody,
) -> Result<Doc<T>, TufError> {
    match metadata::parse::<T>(raw, max) {
        Err(too_many @ TufError::TooManyContainers { .. }) => {
            let (canonical, signatures) = metadata::envelope(T::ROLE, raw, max)?;
            verify_signatures(T::ROLE, root, &canonical, &signatures)?;
            Err(too_many)
        }
        parsed => {
            let doc = parsed?;
            verify_role(T::ROLE, root, &doc)?;
            Ok(doc)
        }
    }
}

/// Checks `doc`'s signatures against `root`'s keys and threshold for `role`.
pub(super) fn verify_role<T>(role: Role, root: &RootBody, doc: &Doc<T>) -> Result<(), TufError> {
    verify_signatures(role, root, &doc.canonical, &doc.signatures)
}

fn verify_signatures(
    role: Role,
    root: &RootBody,
    canonical: &[u8],
    signatures: &[Sig],
) -> Result<(), TufError> {
    let trusted = &root.roles[&role];
    let mut counted: BTreeSet<[u8; 32]> = BTreeSet::new();
    // Each trusted key is checked once: a file repeating signatures under one key id costs
    // one verification (each hashes the whole message), not one per copy.
    let mut tried: BTreeSet<[u8; 32]> = BTreeSet::new();
    let mut bad = None;
    let mut unknown = None;
    for s in signatures {
        let key = trusted
            .key_ids
            .iter()
            .find(|id| **id == s.key_id)
            .and_then(|id| root.keys.get(id));
        let Some(key) = key else {
            unknown.get_or_insert_with(|| s.key_id.clone());
            continue;
        };
        if !tried.insert(*key.bytes()) {
            continue;
        }
        if key.verifies(canonical, &s.sig) {
            counted.insert(*key.bytes());
        } else {
            bad.get_or_insert_with(|| s.key_id.clone());
        }
    }
    let valid = u32::try_from(counted.len()).unwrap_or(u32::MAX);
    if valid >= trusted.threshold {
        return Ok(());
    }
    Err(match (bad, unknown) {
        (Some(key_id), _) => TufError::BadSignature { role, key_id },
        (None, Some(key_id)) => TufError::UnknownKey { role, key_id },
        (None, None) => TufError::Threshold {
            role,
            valid,
            needed: trusted.threshold,
        },
    })
}

/// Checks a file's bytes against the length and hashes a `meta` entry names (sha256 and
/// sha512; other algorithms are skipped, but at least one must be checkable). `mismatch`
/// builds the refusal, which names who disagrees with whom.
pub(super) fn check_meta(
    role: Role,
    file: &str,
    raw: &[u8],
    meta: &MetaFile,
    mismatch: fn(String) -> TufError,
) -> Result<(), TufError> {
    if let Some(length) = meta.length {
        if raw.len() as u64 != length {
            return Err(mismatch(format!(
                "{file} is {} bytes, {length} expected",
                raw.len()
            )));
        }
    }
    if meta.hashes.is_empty() {
        return Ok(());
    }
    let mut checked = false;
    for (alg, want) in &meta.hashes {
        let got = match alg.as_str() {
            "sha256" => hex::encode(Sha256::digest(raw)),
            "sha512" => hex::encode(Sha512::digest(raw)),
            _ => continue,
        };
        checked = true;
        if !got.eq_ignore_ascii_case(want) {
            return Err(mismatch(format!("{file}: {alg} is {got}, {want} expected")));
        }
    }
    if !checked {
        return Err(TufError::Unsupported {
            role,
            detail: format!("{file}: no sha256 or sha512 among its hashes"),
        });
    }
    Ok(())
}

/// One step of the chain: `raw` (the file of root version `next`) is signed by `trusted`'s
/// root threshold and by its own, and says version `next`.
pub(super) fn next_root(
    trusted: &Doc<RootBody>,
    next: u64,
    raw: &[u8],
    limits: &Limits,
) -> Result<Doc<RootBody>, TufError> {
    let new = metadata::parse::<RootBody>(raw, limits.root)?;
    let old_version = trusted.common.version;
    verify_role(Role::Root, &trusted.body, &new).map_err(|e| TufError::RotationThreshold {
        version: next,
        detail: format!("not signed by the threshold of root version {old_version}: {e}"),
    })?;
    verify_role(Role::Root, &new.body, &new).map_err(|e| TufError::RotationThreshold {
        version: next,
        detail: format!("not signed by its own threshold: {e}"),
    })?;
    if new.common.version != next {
        return Err(TufError::UnexpectedVersion {
            role: Role::Root,
            file: format!("{next}.root.json"),
            expected: next,
            found: new.common.version,
        });
    }
    Ok(new)
}

/// One stored state, expiry aside (`load`, `Repo::open`): timestamp, snapshot and targets each
/// signed under `root`, the snapshot exactly the one the timestamp names and the targets the
/// one the snapshot names (version, and length and hashes where named).
pub(super) fn verify_state(
    root: &RootBody,
    timestamp: &Doc<TimestampBody>,
    snapshot: &Doc<SnapshotBody>,
    targets: &Doc<TargetsBody>,
) -> Result<(), TufError> {
    verify_role(Role::Timestamp, root, timestamp)?;
    verify_role(Role::Snapshot, root, snapshot)?;
    verify_role(Role::Targets, root, targets)?;
    bind(
        Role::Snapshot,
        &snapshot.raw,
        snapshot.common.version,
        &timestamp.body.snapshot,
        |detail| TufError::TimestampMismatch { detail },
    )?;
    bind(
        Role::Targets,
        &targets.raw,
        targets.common.version,
        &snapshot.body.targets,
        |detail| TufError::SnapshotMismatch { detail },
    )
}

fn bind(
    role: Role,
    raw: &[u8],
    version: u64,
    meta: &MetaFile,
    mismatch: fn(String) -> TufError,
) -> Result<(), TufError> {
    let file = format!("{role}.json");
    if version != meta.version {
        return Err(mismatch(format!(
            "{role} version {} is named, {version} is stored",
            meta.version
        )));
    }
    check_meta(role, &file, raw, meta, mismatch)
}
