//! Registries on the admin side: `registry add` (the admin pins a root: it must verify with
//! its own keys and threshold and not be expired; a first sync is then attempted and
//! reported), `sync` (the TUF workflow, its refusals audited as `registry.refused` with the
//! refusal's `reason=` word and nothing stored), `list` and `forget` (refused while a server
//! installed from the registry remains). Each verb is audited here, since a sync's outcome
//! decides which event it is.

use std::path::Path;
use std::time::SystemTime;

use super::AdminError;
use super::local::LocalAdmin;
use crate::audit::Outcome;
use crate::catalog::{self, CatalogError, SyncReport, state};
use crate::store::{RegistryRecord, StoreError, now_ms};
use crate::tuf::{self, Role, RootInfo, Versions};

/// What `registry add` did.
#[derive(Debug)]
pub struct RegistryAdded {
    pub record: RegistryRecord,
    pub root: RootInfo,
    /// The first sync: a refusal leaves the registry added, unsynced (nothing stored).
    pub first_sync: Result<SyncReport, AdminError>,
}

/// One registry, as `registry list` shows it.
#[derive(Debug, Clone)]
pub struct RegistryInfo {
    pub record: RegistryRecord,
    /// Each role's stored version (0: none yet).
    pub versions: Versions,
    pub synced_ms: Option<i64>,
    /// Verified targets in the stored index (`None` before the first sync).
    pub targets: Option<usize>,
    /// The first role whose stored metadata is expired now (a sync is due).
    pub expired: Option<Role>,
    /// Why the stored metadata no longer verifies, if it does not.
    pub problem: Option<String>,
    /// Servers installed from it.
    pub servers: Vec<String>,
}

/// The refusal word of a failed sync, or `None` if it did not fail on what the registry
/// served (an unknown name, the store).
fn refusal(e: &AdminError) -> Option<&'static str> {
    match e {
        AdminError::Catalog(
            c @ (CatalogError::Tuf(_)
            | CatalogError::Http(_)
            | CatalogError::Store(StoreError::Rollback { .. })),
        ) => Some(c.kind()),
        _ => None,
    }
}

fn versions_detail(before: &Versions, after: &Versions) -> String {
    format!(
        "root {}->{} timestamp {}->{} snapshot {}->{} targets {}->{}",
        before.root,
        after.root,
        before.timestamp,
        after.timestamp,
        before.snapshot,
        after.snapshot,
        before.targets,
        after.targets
    )
}

impl LocalAdmin {
    pub(super) fn add_registry(
        &mut self,
        name: &str,
        location: &str,
        root: &[u8],
        ca_pem: Option<&[u8]>,
    ) -> Result<RegistryAdded, AdminError> {
        let checked = self.check_new_registry(name, location, root, ca_pem);
        let (info, record) = match checked {
            Ok(ok) => ok,
            Err(e) => {
                let (action, outcome, reason) = match refusal(&e) {
                    Some(kind) => (
                        "registry.refused",
                        Outcome::Denied,
                        format!("reason={kind} "),
                    ),
                    None => ("registry.add", Outcome::Failed, String::new()),
                };
                self.audit_admin(action, name, outcome, &format!("{reason}{e}"))?;
                return Err(e);
            }
        };
        let keys = info.key_ids.join(",");
        self.audit_admin(
            "registry.add",
            name,
            Outcome::Ok,
            &format!(
                "location={location} root_version={} keys=[{keys}] ca={}",
                info.version,
                if ca_pem.is_some() { "pinned" } else { "system" }
            ),
        )?;
        let first_sync = self.sync_registry(name);
        Ok(RegistryAdded {
            record,
            root: info,
            first_sync,
        })
    }

    fn check_new_registry(
        &self,
        name: &str,
        location: &str,
        root: &[u8],
        ca_pem: Option<&[u8]>,
    ) -> Result<(RootInfo, RegistryRecord), AdminError> {
        super::local::check_name("registry", name)?;
        // Built once here so that a location which could never be fetched is refused now,
        // by name, rather than at every sync.
        catalog::fetcher_with_ca(location, ca_pem).map_err(AdminError::Catalog)?;
        if location.starts_with('/') && !Path::new(location).is_dir() {
            return Err(AdminError::Refused(format!(
                "{location} is not a directory of metadata"
            )));
        }
        let info = tuf::check_root(root, &tuf::Limits::default(), SystemTime::now())
            .map_err(|e| AdminError::Catalog(e.into()))?;
        let record = RegistryRecord {
            name: name.to_owned(),
            location: location.to_owned(),
            pinned_root: root.to_vec(),
            ca_pem: ca_pem.map(<[u8]>::to_vec),
            added_ms: now_ms(),
        };
        if !self.records().registry_add(&record)? {
            return Err(AdminError::Refused(format!("registry {name} exists")));
        }
        Ok((info, record))
    }

    /// One sync, audited: `registry.sync` with the versions before and after, or
    /// `registry.refused` with the refusal's reason (nothing stored).
    pub(super) fn sync_registry(&mut self, name: &str) -> Result<SyncReport, AdminError> {
        let result = (|| {
            let record = self
                .records()
                .registry_get(name)?
                .ok_or_else(|| CatalogError::UnknownRegistry(name.to_owned()))?;
            let mut fetch = catalog::fetcher_with_ca(&record.location, record.ca_pem.as_deref())?;
            catalog::sync(
                self.records(),
                name,
                fetch.as_mut(),
                &tuf::Limits::default(),
                SystemTime::now(),
            )
        })()
        .map_err(AdminError::Catalog);
        match &result {
            Ok(r) => self.audit_admin(
                "registry.sync",
                name,
                Outcome::Ok,
                &format!(
                    "{} targets={} changed={}",
                    versions_detail(&r.before, &r.after),
                    r.targets,
                    r.changed
                ),
            )?,
            Err(e) => match refusal(e) {
                Some(kind) => self.audit_admin(
                    "registry.refused",
                    name,
                    Outcome::Denied,
                    &format!("reason={kind} {e}"),
                )?,
                None => self.audit_admin("registry.sync", name, Outcome::Failed, &e.to_string())?,
            },
        }
        result
    }

    pub(super) fn list_registries(&self) -> Result<Vec<RegistryInfo>, AdminError> {
        let store = self.records();
        let servers = store.server_list()?;
        let limits = tuf::Limits::default();
        let mut out = Vec::new();
        for record in store.registry_list()? {
            let (_, _, versions, synced_ms) =
                state::stored(store, &record.name).map_err(AdminError::Catalog)?;
            let (mut targets, mut expired, mut problem) = (None, None, None);
            match state::load(store, &record.name, &limits) {
                Ok((_, loaded)) => {
                    targets = Some(loaded.targets.entries.len());
                    expired = loaded.expired(SystemTime::now());
                }
                Err(CatalogError::NotSynced(_)) => {}
                Err(e) => problem = Some(e.to_string()),
            }
            let users = servers
                .iter()
                .filter(|s| s.origin.as_ref().is_some_and(|o| o.registry == record.name))
                .map(|s| s.name.clone())
                .collect();
            out.push(RegistryInfo {
                record,
                versions,
                synced_ms,
                targets,
                expired,
                problem,
                servers: users,
            });
        }
        Ok(out)
    }

    pub(super) fn forget_registry(&self, name: &str) -> Result<(), AdminError> {
        let result = match self.records().registry_remove(name) {
            Ok(true) => Ok(()),
            Ok(false) => Err(AdminError::Refused(format!("no registry named {name}"))),
            Err(e) => Err(AdminError::Store(e)),
        };
        let outcome = match &result {
            Ok(()) => (Outcome::Ok, "metadata removed".to_owned()),
            Err(AdminError::Store(e @ StoreError::InUse { .. })) => {
                (Outcome::Denied, e.to_string())
            }
            Err(e) => (Outcome::Failed, e.to_string()),
        };
        self.audit_admin("registry.forget", name, outcome.0, &outcome.1)?;
        result
    }
}
