//! [`AdminApi`] on a state directory opened in this process (development, recovery, and the
//! only transport until the daemon's D-Bus API exists).

use std::path::Path;
use std::sync::Arc;

use super::{AdminApi, AdminError};
use crate::audit::{Auditor, Outcome};
use crate::store::{SecretMeta, SqliteStore, Store};
use crate::vault::{
    Fingerprint, MasterKey, SecretName, SecretValue, SetOutcome, Vault, VaultStatus,
};

#[derive(Debug)]
pub struct LocalAdmin {
    vault: Vault,
    audit: Auditor,
}

impl LocalAdmin {
    pub fn open(state_dir: &Path, key: MasterKey, actor: String) -> anyhow::Result<Self> {
        use anyhow::Context;
        let store: Arc<dyn Store> = Arc::new(
            SqliteStore::open_in(state_dir)
                .with_context(|| format!("opening the store in {}", state_dir.display()))?,
        );
        let audit = Auditor::new(store.clone(), actor);
        let vault = match Vault::open(store, key) {
            Ok(v) => v,
            Err(e) => {
                // Best effort: the refusal itself is worth a trail entry.
                let _ = audit.record("vault.open", "master-key", Outcome::Denied, &e.to_string());
                return Err(e.into());
            }
        };
        Ok(Self { vault, audit })
    }

    /// Audits the result of an admin action, then returns it.
    fn audited<T>(
        &self,
        action: &str,
        target: &str,
        result: Result<T, AdminError>,
        detail: impl FnOnce(&T) -> String,
    ) -> Result<T, AdminError> {
        let (outcome, text) = match &result {
            Ok(v) => (Outcome::Ok, detail(v)),
            Err(e) => (Outcome::Failed, e.to_string()),
        };
        self.audit
            .record(action, target, outcome, &text)
            .map_err(AdminError::Audit)?;
        result
    }
}

impl AdminApi for LocalAdmin {
    fn secret_set(&mut self, name: &str, value: &SecretValue) -> Result<SetOutcome, AdminError> {
        let result = SecretName::parse(name)
            .map_err(AdminError::from)
            .and_then(|n| Ok(self.vault.set(&n, value)?));
        self.audited("secret.set", name, result, |o| {
            format!("version {}", o.version)
        })
    }

    fn secret_list(&mut self) -> Result<Vec<SecretMeta>, AdminError> {
        Ok(self.vault.list()?)
    }

    fn secret_remove(&mut self, name: &str) -> Result<(), AdminError> {
        let result = SecretName::parse(name)
            .map_err(AdminError::from)
            .and_then(|n| Ok(self.vault.remove(&n)?));
        self.audited("secret.remove", name, result, |_| String::new())
    }

    fn vault_status(&mut self) -> Result<VaultStatus, AdminError> {
        Ok(self.vault.status()?)
    }

    fn vault_rotate(&mut self, new: MasterKey) -> Result<Fingerprint, AdminError> {
        let new_fp = new.fingerprint();
        let target = format!("{} -> {new_fp}", self.vault.fingerprint());
        let result = self
            .vault
            .rotate(new)
            .map(|()| new_fp)
            .map_err(AdminError::from);
        self.audited("vault.rotate", &target, result, |_| String::new())
    }
}
