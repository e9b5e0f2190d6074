//! What the proxy searches one host's traffic for, built once per set of credential values and
//! shared by every request to that host until a value changes (rotation), instead of per call:
//! - in responses from the host, every [`super::forms`] form of the real value of every
//!   credential bound to it, each replaced by the same form of its placeholder;
//! - in requests to the host, the placeholders of credentials not bound to it, and every form
//!   of the real value of every credential (the sandbox never holds one legitimately: a real
//!   value in its request has leaked and is on its way out).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::forms::{Form, paired};
use super::policy::CredentialRule;
use super::rewrite::{Replacements, TooLarge};

/// Whose a request needle is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    /// Index into the policy's credentials.
    pub credential: usize,
    /// The real value (in some form), or the placeholder.
    pub real: bool,
}

/// The searches for one host.
#[derive(Debug)]
pub struct HostNeedles {
    /// Responses: real values → placeholders; `None` when no credential is bound here.
    pub scrub: Option<Replacements>,
    /// Requests: what must not leave; `None` when there is nothing to look for.
    pub scan: Option<Replacements>,
    /// The owner of each `scan` needle, by index.
    pub owners: Vec<Owner>,
}

impl HostNeedles {
    /// `values[i]` is the real value of `creds[i]`, if the vault gave it.
    pub fn build(
        creds: &[CredentialRule],
        values: &[Option<&[u8]>],
        host: &str,
    ) -> Result<Self, TooLarge> {
        let mut scrub = Vec::new();
        let mut scan: Vec<(Form, Zeroizing<Vec<u8>>)> = Vec::new();
        let mut owners = Vec::new();
        for (i, cred) in creds.iter().enumerate() {
            let placeholder = cred.placeholder.as_bytes();
            let bound = cred.bound_to(host);
            if !bound {
                scan.push((Form::exact(placeholder), Zeroizing::new(Vec::new())));
                owners.push(Owner {
                    credential: i,
                    real: false,
                });
            }
            let Some(value) = values.get(i).copied().flatten() else {
                continue;
            };
            for (form, with) in paired(value, placeholder) {
                scan.push((form.clone(), Zeroizing::new(Vec::new())));
                owners.push(Owner {
                    credential: i,
                    real: true,
                });
                if bound {
                    scrub.push((form, with));
                }
            }
        }
        Ok(Self {
            scrub: Replacements::new(scrub)?,
            scan: Replacements::new(scan)?,
            owners,
        })
    }
}

/// What identifies a set of values without keeping them: a hash over every value, in order.
type Fingerprint = [u8; 32];

fn fingerprint(values: &[Option<&[u8]>]) -> Fingerprint {
    let mut h = Sha256::new();
    for v in values {
        match v {
            Some(v) => {
                h.update([1]);
                h.update((v.len() as u64).to_le_bytes());
                h.update(v);
            }
            None => h.update([0]),
        }
    }
    h.finalize().into()
}

/// One sandbox's [`HostNeedles`] by host, rebuilt when the values change.
#[derive(Debug, Default)]
pub struct NeedleCache {
    entries: Mutex<HashMap<String, (Fingerprint, Arc<HostNeedles>)>>,
}

impl NeedleCache {
    pub fn get(
        &self,
        creds: &[CredentialRule],
        values: &[Option<&[u8]>],
        host: &str,
    ) -> Result<Arc<HostNeedles>, TooLarge> {
        let print = fingerprint(values);
        if let Some((p, n)) = self.lock().get(host)
            && *p == print
        {
            return Ok(n.clone());
        }
        // Built outside the lock: a concurrent request to another host does not wait for it.
        let built = Arc::new(HostNeedles::build(creds, values, host)?);
        self.lock().insert(host.to_owned(), (print, built.clone()));
        Ok(built)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Fingerprint, Arc<HostNeedles>)>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::egress::policy::Presentation;
    use crate::vault::SecretName;

    fn cred(name: &str, host: &str) -> CredentialRule {
        CredentialRule {
            name: SecretName::parse(name).unwrap(),
            placeholder: format!("gmcp_ph_{name}_0123456789"),
            hosts: vec![host.into()],
            inject: Presentation::Basic,
        }
    }

    #[test]
    fn a_host_scrubs_its_own_values_and_refuses_every_value_and_foreign_placeholders() {
        let creds = [cred("A", "a.example"), cred("B", "b.example")];
        let values = [Some(&b"value-of-A-123"[..]), Some(&b"value-of-B-456"[..])];
        let n = HostNeedles::build(&creds, &values, "a.example").unwrap();
        let scrub = n.scrub.unwrap();
        assert!(scrub.found_in(b"x value-of-A-123"));
        assert!(!scrub.found_in(b"x value-of-B-456"));
        let scan = n.scan.unwrap();
        let owner = |hay: &[u8]| scan.first_in(hay).map(|i| n.owners[i]);
        assert_eq!(
            owner(hex::encode("value-of-A-123").as_bytes()),
            Some(Owner {
                credential: 0,
                real: true
            })
        );
        assert_eq!(
            owner(creds[1].placeholder.as_bytes()),
            Some(Owner {
                credential: 1,
                real: false
            })
        );
        assert_eq!(owner(creds[0].placeholder.as_bytes()), None);
    }

    #[test]
    fn the_cache_rebuilds_when_a_value_changes() {
        let creds = [cred("A", "a.example")];
        let cache = NeedleCache::default();
        let one = cache
            .get(&creds, &[Some(b"first-value-1")], "a.example")
            .unwrap();
        let again = cache
            .get(&creds, &[Some(b"first-value-1")], "a.example")
            .unwrap();
        assert!(Arc::ptr_eq(&one, &again));
        let rotated = cache
            .get(&creds, &[Some(b"second-value-2")], "a.example")
            .unwrap();
        assert!(rotated.scrub.as_ref().unwrap().found_in(b"second-value-2"));
    }
}
