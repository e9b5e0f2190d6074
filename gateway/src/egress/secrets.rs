//! Real credential values for one sandbox, opened from the vault on demand.
//!
//! `Vault::get` decrypts and records the use time (a durable SQLite write), so a value is kept
//! for a short time (`EgressLimits::secret_ttl`) instead of costing an fsync per request; a
//! rotated secret is picked up within that time. Values live only in [`SecretValue`]s.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::vault::{SecretName, SecretValue, Vault};

#[derive(Debug)]
pub struct SecretCache {
    vault: Arc<Vault>,
    ttl: Duration,
    entries: Mutex<HashMap<SecretName, (SecretValue, Instant)>>,
}

impl SecretCache {
    pub fn new(vault: Arc<Vault>, ttl: Duration) -> Self {
        Self {
            vault,
            ttl,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// The value of `name`, or `None` if the vault cannot give it (the error is logged by name).
    pub async fn get(&self, name: &SecretName) -> Option<SecretValue> {
        if let Some((v, at)) = self.lock().get(name) {
            if at.elapsed() < self.ttl {
                return Some(v.clone());
            }
        }
        let vault = self.vault.clone();
        let key = name.clone();
        let opened = tokio::task::spawn_blocking(move || vault.get(&key)).await;
        match opened {
            Ok(Ok(v)) => {
                self.lock()
                    .insert(name.clone(), (v.clone(), Instant::now()));
                Some(v)
            }
            Ok(Err(e)) => {
                tracing::warn!(secret = %name, error = %e, "egress: cannot open credential");
                None
            }
            Err(_) => None,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<SecretName, (SecretValue, Instant)>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }
}
