//! `sync`: one registry brought up to date by the TUF client workflow (`tuf::update`), its
//! newest verified metadata then written in one store transaction that refuses any role's
//! version going down (so two syncs racing cannot regress it either). On any refusal nothing
//! is written: the store keeps the last good metadata byte for byte.
//!
//! Knows nothing of where the bytes come from (a `tuf::Fetch`) nor of audit or the CLI.

use std::time::SystemTime;

use crate::store::{RoleBody, Store};
use crate::tuf::{self, Versions};

use super::{CatalogError, state};

/// What one sync did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncReport {
    /// Each role's stored version before (0: none yet) and after.
    pub before: Versions,
    pub after: Versions,
    /// How many targets (server versions) the verified index now lists.
    pub targets: usize,
    /// Whether any role's version moved.
    pub changed: bool,
}

/// Fetches, verifies and stores `registry`'s newest metadata as of `now`.
pub fn sync(
    store: &dyn Store,
    registry: &str,
    fetch: &mut dyn tuf::Fetch,
    limits: &tuf::Limits,
    now: SystemTime,
) -> Result<SyncReport, CatalogError> {
    let (_, stored, before, _) = state::stored(store, registry)?;
    let updated = tuf::update(&stored, fetch, limits, now)?;
    let after = updated.versions;
    let s = updated.stored;
    let mut bodies = vec![RoleBody {
        role: "root".into(),
        version: after.root,
        body: s.root,
    }];
    for (role, version, body) in [
        ("timestamp", after.timestamp, s.timestamp),
        ("snapshot", after.snapshot, s.snapshot),
        ("targets", after.targets, s.targets),
    ] {
        if let Some(body) = body {
            bodies.push(RoleBody {
                role: role.into(),
                version,
                body,
            });
        }
    }
    store.registry_metadata_put(registry, &bodies, system_ms(now))?;
    Ok(SyncReport {
        before,
        after,
        targets: updated.targets.entries.len(),
        changed: before != after,
    })
}

fn system_ms(t: SystemTime) -> i64 {
    let ms = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis();
    i64::try_from(ms).unwrap_or(i64::MAX)
}
