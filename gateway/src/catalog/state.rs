//! A registry's verified, offline view: what the store holds, re-verified by `tuf::load`
//! against the newest trusted root on every read, so a row changed behind the gateway's back
//! is refused rather than believed. No network: expiry is reported (`Loaded::expired`), not
//! refused, so the caller decides (a sync refuses it; a server start does not).

use crate::store::{RegistryRecord, RoleBody, Store};
use crate::tuf::{self, Role, Stored, TufError, Versions};

use super::CatalogError;

/// The registry's record, its stored metadata as `tuf` reads it, each role's stored version
/// and when it was last synced. Before the first sync only the root is stored: the one the
/// admin pinned.
pub fn stored(
    store: &dyn Store,
    registry: &str,
) -> Result<(RegistryRecord, Stored, Versions, Option<i64>), CatalogError> {
    let record = store
        .registry_get(registry)?
        .ok_or_else(|| CatalogError::UnknownRegistry(registry.to_owned()))?;
    let (bodies, synced_ms) = store.registry_metadata(registry)?;
    let mut stored = Stored {
        root: record.pinned_root.clone(),
        ..Stored::default()
    };
    let mut versions = Versions {
        root: pinned_version(&record.pinned_root),
        ..Versions::default()
    };
    for RoleBody {
        role,
        version,
        body,
    } in bodies
    {
        match role.as_str() {
            "root" => (stored.root, versions.root) = (body, version),
            "timestamp" => (stored.timestamp, versions.timestamp) = (Some(body), version),
            "snapshot" => (stored.snapshot, versions.snapshot) = (Some(body), version),
            "targets" => (stored.targets, versions.targets) = (Some(body), version),
            _ => {
                return Err(CatalogError::Stored {
                    registry: registry.to_owned(),
                    role,
                });
            }
        }
    }
    Ok((record, stored, versions, synced_ms))
}

/// The version the pinned root claims, for reports before the first sync stores a verified
/// one (`registry add` checked it; nothing is trusted on the strength of this number).
fn pinned_version(raw: &[u8]) -> u64 {
    tuf::cjson::parse(raw)
        .ok()
        .and_then(|v| v["signed"]["version"].as_u64())
        .unwrap_or(0)
}

/// The verified, offline view of one registry. [`CatalogError::NotSynced`] before its first
/// successful sync.
pub fn load(
    store: &dyn Store,
    registry: &str,
    limits: &tuf::Limits,
) -> Result<(RegistryRecord, tuf::Loaded), CatalogError> {
    let (record, stored, _, _) = stored(store, registry)?;
    match tuf::load(&stored, limits) {
        Ok(loaded) => Ok((record, loaded)),
        Err(TufError::Missing {
            role: Role::Timestamp | Role::Snapshot | Role::Targets,
        }) => Err(CatalogError::NotSynced(registry.to_owned())),
        Err(e) => Err(e.into()),
    }
}

/// Every synced registry's view, by name (for search, and install by a bare server name).
/// A registry never synced has no entries yet and is left out; one whose stored metadata no
/// longer verifies is an error, not skipped: a tampered store must not narrow a search
/// silently.
pub fn load_all(
    store: &dyn Store,
    limits: &tuf::Limits,
) -> Result<Vec<(RegistryRecord, tuf::Loaded)>, CatalogError> {
    let mut out = Vec::new();
    for record in store.registry_list()? {
        match load(store, &record.name, limits) {
            Ok(view) => out.push(view),
            Err(CatalogError::NotSynced(_)) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}
