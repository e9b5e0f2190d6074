//! The admin command layer: what `gigmcp` can ask of a gateway, independent of how the request
//! travels. [`local::LocalAdmin`] works on a state directory directly; a D-Bus client of
//! `org.gigmcp.Gateway1` will implement the same trait, so the CLI does not change.

pub mod local;

use crate::store::{SecretMeta, StoreError};
use crate::vault::{
    Fingerprint, InvalidSecretName, MasterKey, SecretValue, SetOutcome, VaultError, VaultStatus,
};

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error(transparent)]
    Name(#[from] InvalidSecretName),
    #[error(transparent)]
    Vault(#[from] VaultError),
    #[error("audit trail unavailable, so the action was not confirmed: {0}")]
    Audit(StoreError),
}

pub trait AdminApi {
    /// Stores a secret (write-only: there is deliberately no call that reads a value back).
    fn secret_set(&mut self, name: &str, value: &SecretValue) -> Result<SetOutcome, AdminError>;
    fn secret_list(&mut self) -> Result<Vec<SecretMeta>, AdminError>;
    fn secret_remove(&mut self, name: &str) -> Result<(), AdminError>;
    fn vault_status(&mut self) -> Result<VaultStatus, AdminError>;
    /// Rewraps every data key under `new`; returns the new key's fingerprint.
    fn vault_rotate(&mut self, new: MasterKey) -> Result<Fingerprint, AdminError>;
}
