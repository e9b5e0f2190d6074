//! `sync`: one registry brought up to date by the TUF client workflow (`tuf::update`), its
//! newest verified metadata then written in one store transaction that refuses any role's
//! version going down (so two syncs racing cannot regress it either). On any refusal nothing
//! is written: the store keeps the last good metadata byte for byte.
//!
//! `fetcher` picks where the bytes come from (a URL or a directory); `sync` itself takes any
//! `tuf::Fetch`. Knows nothing of audit or the CLI.

use std::time::SystemTime;

use crate::store::{RoleBody, Store};
use crate::tuf::{self, Versions};

use super::http::{DEFAULT_DEADLINE, HttpFetch};
use super::{CatalogError, state};

/// The [`tuf::Fetch`] for a registry's location: an `https://` URL (`http://` to a loopback
/// address), or an absolute directory path (a registry on this host's disk, air-gapped).
pub fn fetcher(location: &str) -> Result<Box<dyn tuf::Fetch>, CatalogError> {
    fetcher_with_ca(location, None)
}

/// As [`fetcher`], trusting `ca_pem` too for an https location (a self-hosted registry).
pub fn fetcher_with_ca(
    location: &str,
    ca_pem: Option<&[u8]>,
) -> Result<Box<dyn tuf::Fetch>, CatalogError> {
    if location.starts_with("https://") || location.starts_with("http://") {
        return Ok(Box::new(HttpFetch::with_ca(
            location,
            DEFAULT_DEADLINE,
            ca_pem,
        )?));
    }
    let location_error = |reason| CatalogError::Location {
        location: location.to_owned(),
        reason,
    };
    if ca_pem.is_some() {
        return Err(location_error(
            "a CA certificate only applies to an https location",
        ));
    }
    if !location.starts_with('/') {
        return Err(location_error(
            "neither an https:// URL nor an absolute directory path",
        ));
    }
    Ok(Box::new(tuf::DirFetch::new(location)))
}

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

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::*;
    use crate::catalog::state::{load, load_all};
    use crate::store::RegistryRecord;
    use crate::store::{SqliteStore, now_ms};
    use crate::tuf::{DirFetch, Expiry, KeyPair, Repo, RoleSetup, Target};

    /// A store with one registry whose repository (one key for every role) lists `targets`.
    fn registry(targets: usize) -> (tempfile::TempDir, SqliteStore, Repo, KeyPair) {
        let dir = tempfile::tempdir().unwrap();
        let key = KeyPair::generate();
        let one = (vec![key.public()], 1);
        let setup = RoleSetup {
            root: one.clone(),
            timestamp: one.clone(),
            snapshot: one.clone(),
            targets: one,
        };
        let now = SystemTime::now();
        let mut repo = Repo::init(
            &dir.path().join("repo"),
            &setup,
            Expiry::default(),
            &[&key],
            now,
        )
        .unwrap();
        for i in 0..targets {
            repo.set_target(Target {
                path: format!("server-{i}/1.0.0"),
                length: 100 + i as u64,
                sha256: format!("{i:064x}"),
                custom: serde_json::Value::Null,
            });
        }
        repo.publish(&[&key], Expiry::default(), now).unwrap();
        let store = SqliteStore::open_in(&dir.path().join("state")).unwrap();
        let root = std::fs::read(repo.dir().join("1.root.json")).unwrap();
        store
            .registry_add(&RegistryRecord {
                name: "main".into(),
                location: repo.dir().display().to_string(),
                pinned_root: root,
                ca_pem: None,
                added_ms: now_ms(),
            })
            .unwrap();
        (dir, store, repo, key)
    }

    #[test]
    fn a_registry_never_synced_has_no_view_yet() {
        let (_dir, store, _, _) = registry(2);
        let limits = tuf::Limits::default();
        assert!(matches!(
            load(&store, "main", &limits),
            Err(CatalogError::NotSynced(n)) if n == "main"
        ));
        assert!(load_all(&store, &limits).unwrap().is_empty());
    }

    #[test]
    fn a_synced_registry_loads_its_verified_targets_offline() {
        let (_dir, store, repo, _) = registry(3);
        let limits = tuf::Limits::default();
        let mut fetch = DirFetch::new(repo.dir());
        let report = sync(&store, "main", &mut fetch, &limits, SystemTime::now()).unwrap();
        assert_eq!((report.before.timestamp, report.after.timestamp), (0, 2));
        assert_eq!((report.before.root, report.targets), (1, 3));
        let (record, loaded) = load(&store, "main", &limits).unwrap();
        assert_eq!(record.name, "main");
        assert_eq!(loaded.versions, report.after);
        assert!(loaded.targets.entries.contains_key("server-2/1.0.0"));
        assert_eq!(load_all(&store, &limits).unwrap().len(), 1);
    }

    #[test]
    fn a_stored_row_changed_behind_the_gateways_back_is_refused_on_load() {
        let (_dir, store, repo, _) = registry(1);
        let limits = tuf::Limits::default();
        let mut fetch = DirFetch::new(repo.dir());
        sync(&store, "main", &mut fetch, &limits, SystemTime::now()).unwrap();
        let (mut bodies, synced) = store.registry_metadata("main").unwrap();
        let targets = bodies.iter_mut().find(|b| b.role == "targets").unwrap();
        let text = String::from_utf8(targets.body.clone()).unwrap();
        targets.body = text
            .replace("server-0/1.0.0", "server-9/1.0.0")
            .into_bytes();
        store
            .registry_metadata_put("main", &bodies, synced.unwrap())
            .unwrap();
        assert!(matches!(
            load(&store, "main", &limits),
            Err(CatalogError::Tuf(_))
        ));
        assert!(load_all(&store, &limits).is_err());
    }

    #[test]
    fn a_refused_sync_writes_nothing() {
        let (_dir, store, repo, _) = registry(1);
        let limits = tuf::Limits::default();
        let mut fetch = DirFetch::new(repo.dir());
        sync(&store, "main", &mut fetch, &limits, SystemTime::now()).unwrap();
        let before = store.registry_metadata("main").unwrap();
        // A year on, everything but root has expired: the sync is a freeze refusal.
        let later = SystemTime::now() + std::time::Duration::from_secs(200 * 86_400);
        let err = sync(&store, "main", &mut fetch, &limits, later).unwrap_err();
        assert_eq!(err.kind(), "expired", "{err}");
        assert_eq!(store.registry_metadata("main").unwrap(), before);
    }
}
