//! What is already trusted, checked again without the network: `load` re-verifies what a store
//! holds (every signature against the stored root, timestamp → snapshot → targets bound by
//! version and hashes), and `check_root` vets a root an admin is about to pin.
//!
//! Expiry is not a refusal in `load`: `Loaded::expired` says which role has expired so the
//! caller decides (a sync refuses, a server start need not). Knows nothing of fetching.

use std::collections::BTreeMap;
use std::time::SystemTime;

use super::metadata::{self, Body, Doc, RootBody, SnapshotBody, TargetsBody, TimestampBody};
use super::update::check_expiry;
use super::verify::{verify_role, verify_state};
use super::{Limits, Role, Stored, Targets, TufError, Versions};

/// The verified, offline view of stored metadata.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub versions: Versions,
    pub targets: Targets,
    expires: BTreeMap<Role, SystemTime>,
}

impl Loaded {
    /// The first role (root, timestamp, snapshot, targets) expired at `now`, if any.
    pub fn expired(&self, now: SystemTime) -> Option<Role> {
        Role::ALL.into_iter().find(|r| now >= self.expires[r])
    }

    /// When `role` expires.
    pub fn expires(&self, role: Role) -> SystemTime {
        self.expires[&role]
    }
}

/// A root an admin may pin: its version, expiry, keys and layout.
#[derive(Debug, Clone)]
pub struct RootInfo {
    pub version: u64,
    pub expires: SystemTime,
    pub key_ids: Vec<String>,
    pub consistent_snapshot: bool,
}

/// Checks a root to pin: it verifies with its own keys and threshold and is not expired.
pub fn check_root(raw: &[u8], limits: &Limits, now: SystemTime) -> Result<RootInfo, TufError> {
    let root = metadata::parse::<RootBody>(raw, limits.root)?;
    verify_role(Role::Root, &root.body, &root)?;
    check_expiry(Role::Root, &root.common, now)?;
    Ok(RootInfo {
        version: root.common.version,
        expires: root.common.expires,
        key_ids: root.body.keys.keys().cloned().collect(),
        consistent_snapshot: root.body.consistent_snapshot,
    })
}

/// Re-verifies what the store holds.
pub fn load(stored: &Stored, limits: &Limits) -> Result<Loaded, TufError> {
    let root = metadata::parse::<RootBody>(&stored.root, limits.root)?;
    verify_role(Role::Root, &root.body, &root)?;
    let timestamp: Doc<TimestampBody> = stored_role(stored.timestamp.as_deref(), limits)?;
    let snapshot: Doc<SnapshotBody> = stored_role(stored.snapshot.as_deref(), limits)?;
    let targets: Doc<TargetsBody> = stored_role(stored.targets.as_deref(), limits)?;
    verify_state(&root.body, &timestamp, &snapshot, &targets)?;
    let expires = BTreeMap::from([
        (Role::Root, root.common.expires),
        (Role::Timestamp, timestamp.common.expires),
        (Role::Snapshot, snapshot.common.expires),
        (Role::Targets, targets.common.expires),
    ]);
    Ok(Loaded {
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
        expires,
    })
}

fn stored_role<T: Body>(raw: Option<&[u8]>, limits: &Limits) -> Result<Doc<T>, TufError> {
    let raw = raw.ok_or(TufError::Missing { role: T::ROLE })?;
    metadata::parse::<T>(raw, limits.of(T::ROLE))
}
