//! The client workflow of the TUF specification (5.3 to 5.6): from the trusted root, walk the
//! root chain, then timestamp, snapshot and targets, each checked in the specification's order.
//!
//! Each step stops one attack: the root chain (N+1 signed by N's and its own threshold) stops
//! a root nobody trusted; version checks against what the store holds stop rollback; expiry
//! stops freeze; snapshot and timestamp binding versions (and hashes) stop mix-and-match; caps
//! on every fetch stop endless data. Stored metadata that no longer verifies under the new root,
//! or all of timestamp and snapshot when their keys rotated (5.3.11, the fast-forward recovery),
//! is no longer a rollback reference. Knows nothing of where bytes come from or go.

use std::collections::BTreeSet;
use std::time::SystemTime;

use super::metadata::{
    self, Body, Common, Doc, MetaFile, RootBody, SnapshotBody, TargetsBody, TimestampBody,
    format_expires,
};
use super::verify::{check_meta, next_root, parse_verified, verify_role};
use super::{Fetch, FetchError, Limits, Role, Stored, Targets, TufError, Versions};

/// How many root versions one update may walk (the specification's cap on the chain).
const MAX_ROOT_ROTATIONS: u64 = 32;

/// What a successful update yields: the bytes to persist, their versions, the targets.
#[derive(Debug, Clone)]
pub struct Updated {
    pub stored: Stored,
    pub versions: Versions,
    pub targets: Targets,
}

/// The client workflow. `stored.root` must verify (self-signed). On `Err` nothing of `stored`
/// is to be persisted.
pub fn update(
    stored: &Stored,
    fetch: &mut dyn Fetch,
    limits: &Limits,
    now: SystemTime,
) -> Result<Updated, TufError> {
    let pinned = metadata::parse::<RootBody>(&stored.root, limits.root)?;
    verify_role(Role::Root, &pinned.body, &pinned)?;
    let root = update_root(pinned.clone(), fetch, limits)?;
    // 5.3.10: a frozen root (its final version expired) is refused before anything else.
    check_expiry(Role::Root, &root.common, now)?;
    let refs = References::of(stored, &pinned.body, &root.body, limits)?;
    let timestamp = update_timestamp(&root.body, refs.timestamp, fetch, limits, now)?;
    let snapshot = update_snapshot(&root.body, &timestamp, refs.snapshot, fetch, limits, now)?;
    let targets = update_targets(&root.body, &snapshot, refs.targets, fetch, limits, now)?;
    Ok(Updated {
        versions: Versions {
            root: root.common.version,
            timestamp: timestamp.common.version,
            snapshot: snapshot.common.version,
            targets: targets.common.version,
        },
        targets: Targets {
            version: targets.common.version,
            expires: targets.common.expires,
            entries: targets.body.entries,
        },
        stored: Stored {
            root: root.raw,
            timestamp: Some(timestamp.raw),
            snapshot: Some(snapshot.raw),
            targets: Some(targets.raw),
        },
    })
}

fn fetch_role(
    fetch: &mut dyn Fetch,
    role: Role,
    file: &str,
    max: u64,
) -> Result<Vec<u8>, TufError> {
    fetch
        .fetch(file, max)
        .map_err(|e| TufError::from_fetch(role, e))
}

pub(super) fn check_expiry(role: Role, common: &Common, now: SystemTime) -> Result<(), TufError> {
    if now >= common.expires {
        return Err(TufError::Expired {
            role,
            expires: format_expires(common.expires),
        });
    }
    Ok(())
}

/// 5.3: each N+1.root.json must be signed by N's root threshold and by its own, and be N+1.
fn update_root(
    mut trusted: Doc<RootBody>,
    fetch: &mut dyn Fetch,
    limits: &Limits,
) -> Result<Doc<RootBody>, TufError> {
    for _ in 0..MAX_ROOT_ROTATIONS {
        // A root at u64::MAX has no successor (its `+ 1` would overflow).
        let Some(next) = trusted.common.version.checked_add(1) else {
            break;
        };
        let file = format!("{next}.root.json");
        let raw = match fetch.fetch(&file, limits.root) {
            Ok(raw) => raw,
            Err(FetchError::NotFound { .. }) => break,
            Err(e) => return Err(TufError::from_fetch(Role::Root, e)),
        };
        trusted = next_root(&trusted, next, &raw, limits)?;
    }
    Ok(trusted)
}

/// The stored roles an update compares against: only those that still verify under the
/// current root.
struct References {
    timestamp: Option<Doc<TimestampBody>>,
    snapshot: Option<Doc<SnapshotBody>>,
    targets: Option<Doc<TargetsBody>>,
}

impl References {
    fn of(
        stored: &Stored,
        old: &RootBody,
        root: &RootBody,
        limits: &Limits,
    ) -> Result<Self, TufError> {
        // 5.3.11: rotated timestamp or snapshot keys drop both references, so a repository
        // recovering from a compromise can step back from versions an attacker pushed ahead.
        let rotated = [Role::Timestamp, Role::Snapshot]
            .into_iter()
            .any(|r| signers(old, r) != signers(root, r));
        let (timestamp, snapshot) = if rotated {
            (None, None)
        } else {
            (
                reference(stored.timestamp.as_deref(), root, limits)?,
                reference(stored.snapshot.as_deref(), root, limits)?,
            )
        };
        Ok(References {
            timestamp,
            snapshot,
            targets: reference(stored.targets.as_deref(), root, limits)?,
        })
    }
}

/// Who may sign `role`: the key material and the threshold.
fn signers(root: &RootBody, role: Role) -> (BTreeSet<[u8; 32]>, u32) {
    let keys = &root.roles[&role];
    let material = keys
        .key_ids
        .iter()
        .filter_map(|id| root.keys.get(id))
        .map(|k| *k.bytes())
        .collect();
    (material, keys.threshold)
}

fn reference<T: Body>(
    raw: Option<&[u8]>,
    root: &RootBody,
    limits: &Limits,
) -> Result<Option<Doc<T>>, TufError> {
    let Some(raw) = raw else { return Ok(None) };
    let doc = metadata::parse::<T>(raw, limits.of(T::ROLE))?;
    Ok(verify_role(T::ROLE, root, &doc).is_ok().then_some(doc))
}

/// 5.4: timestamp.json, never older than the trusted one, nor naming an older snapshot.
fn update_timestamp(
    root: &RootBody,
    trusted: Option<Doc<TimestampBody>>,
    fetch: &mut dyn Fetch,
    limits: &Limits,
    now: SystemTime,
) -> Result<Doc<TimestampBody>, TufError> {
    let raw = fetch_role(fetch, Role::Timestamp, "timestamp.json", limits.timestamp)?;
    let new = parse_verified::<TimestampBody>(&raw, limits.timestamp, root)?;
    let current = match trusted {
        Some(old) if new.common.version < old.common.version => {
            return Err(TufError::Rollback {
                role: Role::Timestamp,
                trusted: old.common.version,
                offered: new.common.version,
            });
        }
        // 5.4.3.1: the same version is no update; the trusted copy stays.
        Some(old) if new.common.version == old.common.version => old,
        Some(old) if new.body.snapshot.version < old.body.snapshot.version => {
            return Err(TufError::Rollback {
                role: Role::Snapshot,
                trusted: old.body.snapshot.version,
                offered: new.body.snapshot.version,
            });
        }
        _ => new,
    };
    check_expiry(Role::Timestamp, &current.common, now)?;
    Ok(current)
}

/// The file name a `meta` entry points at, and its bytes: reused from the store when they
/// still match, else fetched within the entry's length (when given) and the role's cap.
fn fetch_bound(
    root: &RootBody,
    role: Role,
    meta: &MetaFile,
    stored: Option<&[u8]>,
    fetch: &mut dyn Fetch,
    limits: &Limits,
    mismatch: fn(String) -> TufError,
) -> Result<(String, Vec<u8>, bool), TufError> {
    let file = if root.consistent_snapshot {
        format!("{}.{role}.json", meta.version)
    } else {
        format!("{role}.json")
    };
    if let Some(raw) = stored {
        if check_meta(role, &file, raw, meta, mismatch).is_ok() {
            return Ok((file, raw.to_vec(), true));
        }
    }
    let cap = limits.of(role);
    let max = meta.length.map_or(cap, |l| l.min(cap));
    let raw = match fetch.fetch(&file, max) {
        Err(FetchError::TooLarge { .. }) if max < cap => {
            let named = max;
            return Err(mismatch(format!(
                "{file} is longer than the {named} bytes named"
            )));
        }
        other => other.map_err(|e| TufError::from_fetch(role, e))?,
    };
    check_meta(role, &file, &raw, meta, mismatch)?;
    Ok((file, raw, false))
}

/// The rollback floor of a role another role names (5.5.3, 5.6.3: the version named may not be
/// below the trusted one; the naming role's own floor usually stops the same replay earlier,
/// but not after a fast-forward dropped it), and the trusted file's bytes when it is that very
/// version, so they are reused instead of fetched again.
fn reusable<T>(
    role: Role,
    named: u64,
    trusted: Option<&Doc<T>>,
) -> Result<Option<&[u8]>, TufError> {
    match trusted {
        Some(old) if named < old.common.version => Err(TufError::Rollback {
            role,
            trusted: old.common.version,
            offered: named,
        }),
        Some(old) if named == old.common.version => Ok(Some(old.raw.as_slice())),
        _ => Ok(None),
    }
}

/// 5.5: the snapshot the timestamp names, by version and (when given) hashes and length.
fn update_snapshot(
    root: &RootBody,
    timestamp: &Doc<TimestampBody>,
    trusted: Option<Doc<SnapshotBody>>,
    fetch: &mut dyn Fetch,
    limits: &Limits,
    now: SystemTime,
) -> Result<Doc<SnapshotBody>, TufError> {
    let meta = &timestamp.body.snapshot;
    let mismatch = |detail| TufError::TimestampMismatch { detail };
    let reusable = reusable(Role::Snapshot, meta.version, trusted.as_ref())?;
    let (file, raw, reused) = fetch_bound(
        root,
        Role::Snapshot,
        meta,
        reusable,
        fetch,
        limits,
        mismatch,
    )?;
    let doc = if reused {
        trusted.expect("reused only when stored")
    } else {
        let new = parse_verified::<SnapshotBody>(&raw, limits.snapshot, root)?;
        if new.common.version != meta.version {
            return Err(mismatch(format!(
                "timestamp names snapshot version {}, {file} is version {}",
                meta.version, new.common.version
            )));
        }
        if let Some(old) = &trusted {
            if new.body.targets.version < old.body.targets.version {
                return Err(TufError::Rollback {
                    role: Role::Targets,
                    trusted: old.body.targets.version,
                    offered: new.body.targets.version,
                });
            }
        }
        new
    };
    check_expiry(Role::Snapshot, &doc.common, now)?;
    Ok(doc)
}

/// 5.6: the targets the snapshot names. Delegations were refused when parsing.
fn update_targets(
    root: &RootBody,
    snapshot: &Doc<SnapshotBody>,
    trusted: Option<Doc<TargetsBody>>,
    fetch: &mut dyn Fetch,
    limits: &Limits,
    now: SystemTime,
) -> Result<Doc<TargetsBody>, TufError> {
    let meta = &snapshot.body.targets;
    let mismatch = |detail| TufError::SnapshotMismatch { detail };
    let reusable = reusable(Role::Targets, meta.version, trusted.as_ref())?;
    let (file, raw, reused) =
        fetch_bound(root, Role::Targets, meta, reusable, fetch, limits, mismatch)?;
    let doc = if reused {
        trusted.expect("reused only when stored")
    } else {
        let new = parse_verified::<TargetsBody>(&raw, limits.targets, root)?;
        if new.common.version != meta.version {
            return Err(mismatch(format!(
                "snapshot names targets version {}, {file} is version {}",
                meta.version, new.common.version
            )));
        }
        new
    };
    check_expiry(Role::Targets, &doc.common, now)?;
    Ok(doc)
}
