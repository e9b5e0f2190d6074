//! The secret vault: envelope encryption (see [`envelope`]) over the [`Store`].
//!
//! Invariants:
//! - a plaintext value exists only in a [`SecretValue`] (zeroized on drop, redacted in `Debug`);
//! - a master key that is not the store's is refused before any secret is read or written;
//! - rotation rewraps data keys in one transaction and never touches a sealed value.

pub mod envelope;
pub mod master_key;
pub mod secret;

use std::sync::Arc;

use crate::store::{Rewrapped, SecretMeta, SecretRecord, Store, StoreError, now_ms};

use envelope::{Binding, EnvelopeError};
pub use master_key::{Fingerprint, MasterKey, MasterKeyError};
pub use secret::{InvalidSecretName, MAX_VALUE_LEN, SecretName, SecretValue};

#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    #[error(
        "the loaded master key (fingerprint {loaded}) is not this store's (fingerprint {store}); nothing was read or written"
    )]
    WrongMasterKey { store: String, loaded: Fingerprint },
    #[error("secret {name}: {source}")]
    Secret {
        name: String,
        #[source]
        source: EnvelopeError,
    },
    #[error("no secret named {name}")]
    NotFound { name: String },
    #[error("secret value is {len} bytes; the limit is {MAX_VALUE_LEN}")]
    TooLarge { len: usize },
    #[error("secret value is empty")]
    Empty,
    #[error("secret {name} kept changing under concurrent writers; try again")]
    Contended { name: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Result of [`Vault::set`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SetOutcome {
    pub version: u64,
    pub created: bool,
}

/// What `vault status` reports. Names only, never values.
#[derive(Debug)]
pub struct VaultStatus {
    pub fingerprint: Fingerprint,
    pub secrets: usize,
    /// Secrets that failed to open: one line each, naming the secret and the reason.
    pub damaged: Vec<String>,
}

#[derive(Debug)]
pub struct Vault {
    store: Arc<dyn Store>,
    key: MasterKey,
}

/// How often a write retries when another writer changed the same secret in between.
const WRITE_ATTEMPTS: usize = 8;

impl Vault {
    /// Binds `key` to `store`. A fresh store adopts the key; any other store must already use it.
    pub fn open(store: Arc<dyn Store>, key: MasterKey) -> Result<Self, VaultError> {
        let loaded = key.fingerprint();
        let recorded = match store.master_fingerprint()? {
            Some(fp) => fp,
            None => store.claim_master_fingerprint(&loaded.to_hex())?,
        };
        if recorded != loaded.to_hex() {
            return Err(VaultError::WrongMasterKey {
                store: recorded,
                loaded,
            });
        }
        Ok(Self { store, key })
    }

    pub fn fingerprint(&self) -> Fingerprint {
        self.key.fingerprint()
    }

    /// Stores `value` under `name`: a new secret at version 1, or the next version of an
    /// existing one, always with a fresh data key.
    pub fn set(&self, name: &SecretName, value: &SecretValue) -> Result<SetOutcome, VaultError> {
        if value.is_empty() {
            return Err(VaultError::Empty);
        }
        if value.len() > MAX_VALUE_LEN {
            return Err(VaultError::TooLarge { len: value.len() });
        }
        for _ in 0..WRITE_ATTEMPTS {
            let current = self.store.secret_get(name.as_str())?;
            let now = now_ms();
            let (id, version, created_ms, expected) = match &current {
                Some(r) => (r.id.clone(), r.version + 1, r.created_ms, Some(r.version)),
                None => (new_id()?, 1, now, None),
            };
            let binding = Binding {
                id: &id,
                name: name.as_str(),
                version,
            };
            let sealed =
                envelope::seal(&self.key, binding, value).map_err(|source| VaultError::Secret {
                    name: name.to_string(),
                    source,
                })?;
            let record = SecretRecord {
                id,
                name: name.to_string(),
                version,
                sealed,
                created_ms,
                updated_ms: now,
                last_used_ms: current.as_ref().and_then(|r| r.last_used_ms),
            };
            match self.store.secret_put(&record, expected) {
                Ok(()) => {
                    return Ok(SetOutcome {
                        version,
                        created: current.is_none(),
                    });
                }
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(VaultError::Contended {
            name: name.to_string(),
        })
    }

    /// Opens a secret for use and records the use time.
    pub fn get(&self, name: &SecretName) -> Result<SecretValue, VaultError> {
        let record = self
            .store
            .secret_get(name.as_str())?
            .ok_or_else(|| VaultError::NotFound {
                name: name.to_string(),
            })?;
        let value = self.open_record(&record)?;
        self.store.secret_mark_used(name.as_str(), now_ms())?;
        Ok(value)
    }

    /// Every secret's value, to look for leaks of them (not a use: no use time is recorded).
    pub fn open_all_for_scanning(&self) -> Result<Vec<(String, SecretValue)>, VaultError> {
        self.store
            .secret_all()?
            .iter()
            .map(|r| Ok((r.name.clone(), self.open_record(r)?)))
            .collect()
    }

    pub fn list(&self) -> Result<Vec<SecretMeta>, VaultError> {
        Ok(self.store.secret_list()?)
    }

    pub fn remove(&self, name: &SecretName) -> Result<(), VaultError> {
        if self.store.secret_remove(name.as_str())? {
            Ok(())
        } else {
            Err(VaultError::NotFound {
                name: name.to_string(),
            })
        }
    }

    /// Counts the secrets and opens each one, reporting any that fail.
    pub fn status(&self) -> Result<VaultStatus, VaultError> {
        let all = self.store.secret_all()?;
        let damaged = all
            .iter()
            .filter_map(|r| self.open_record(r).err())
            .map(|e| e.to_string())
            .collect();
        Ok(VaultStatus {
            fingerprint: self.fingerprint(),
            secrets: all.len(),
            damaged,
        })
    }

    /// Rewraps every data key under `new` in one transaction. Every secret must open with the
    /// current key first: a damaged secret stops the rotation with nothing changed.
    /// On success the vault holds the new key; on failure nothing changed.
    pub fn rotate(&mut self, new: MasterKey) -> Result<(), VaultError> {
        let old_fp = self.fingerprint().to_hex();
        let new_fp = new.fingerprint().to_hex();
        if old_fp == new_fp {
            return Ok(());
        }
        for _ in 0..WRITE_ATTEMPTS {
            let all = self.store.secret_all()?;
            let mut rewrapped = Vec::with_capacity(all.len());
            for r in &all {
                let (key_nonce, wrapped_key) =
                    envelope::rewrap(&self.key, &new, binding_of(r), &r.sealed).map_err(
                        |source| VaultError::Secret {
                            name: r.name.clone(),
                            source,
                        },
                    )?;
                rewrapped.push(Rewrapped {
                    id: r.id.clone(),
                    version: r.version,
                    key_nonce,
                    wrapped_key,
                });
            }
            match self.store.rewrap_all(&old_fp, &new_fp, &rewrapped) {
                Ok(()) => {
                    self.key = new;
                    return Ok(());
                }
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(VaultError::Contended {
            name: String::from("(rotation)"),
        })
    }

    fn open_record(&self, r: &SecretRecord) -> Result<SecretValue, VaultError> {
        envelope::open(&self.key, binding_of(r), &r.sealed).map_err(|source| VaultError::Secret {
            name: r.name.clone(),
            source,
        })
    }
}

fn binding_of(r: &SecretRecord) -> Binding<'_> {
    Binding {
        id: &r.id,
        name: &r.name,
        version: r.version,
    }
}

fn new_id() -> Result<String, VaultError> {
    let mut id = [0u8; 16];
    getrandom::fill(&mut id).map_err(|_| VaultError::Secret {
        name: String::from("(new)"),
        source: EnvelopeError::Random,
    })?;
    Ok(hex::encode(id))
}
