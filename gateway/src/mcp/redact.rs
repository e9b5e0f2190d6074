//! Tool arguments and results are scanned for the real value of every secret in the vault, in
//! every form the egress scrubber knows ([`crate::egress::forms`]: raw, base64 at any alignment,
//! hex, percent and form encoding, JSON escapes). The gateway holds the values, so this is an
//! exact match, not a guess; a hit is replaced by `[REDACTED:<name>]` and reported for the audit.
//!
//! The automaton over all forms of all values is built when the vault is read (at most every
//! [`TTL`]) and shared by every call until then, not rebuilt per call.
//!
//! Limits: values shorter than [`MIN_LEN`] bytes are not scanned (they would match ordinary
//! text); see [`crate::egress::forms`] for the forms that are not searched.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

pub use crate::egress::forms::MIN_LEN;
use crate::egress::forms::tagged;
use crate::egress::rewrite::Replacements;
use crate::vault::Vault;
/// How long the set of needles is reused before the vault is read again.
const TTL: Duration = Duration::from_secs(30);

struct Needles {
    built: Instant,
    set: Option<Replacements>,
    /// The secret's name for each needle of `set`.
    names: Vec<String>,
}

/// Finds and redacts secret values in JSON.
pub struct Redactor {
    vault: Arc<Vault>,
    cache: Mutex<Option<Arc<Needles>>>,
}

impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Redactor")
    }
}

impl Redactor {
    pub fn new(vault: Arc<Vault>) -> Self {
        Self {
            vault,
            cache: Mutex::new(None),
        }
    }

    fn needles(&self) -> Arc<Needles> {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = cache.as_ref()
            && n.built.elapsed() < TTL
        {
            return n.clone();
        }
        let mut pairs = Vec::new();
        let mut names = Vec::new();
        match self.vault.open_all_for_scanning() {
            Ok(all) => {
                for (name, value) in all {
                    if value.len() < MIN_LEN {
                        continue;
                    }
                    let tag = format!("[REDACTED:{name}]");
                    for pair in tagged(value.expose(), tag.as_bytes()) {
                        pairs.push(pair);
                        names.push(name.clone());
                    }
                }
            }
            // Fail closed would stop every call; fail open is logged loudly.
            Err(e) => tracing::error!(error = %e, "mcp: cannot read the vault to scan for leaks"),
        }
        let set = Replacements::new(pairs).unwrap_or_else(|e| {
            tracing::error!(error = %e, "mcp: cannot build the leak scanner");
            None
        });
        let n = Arc::new(Needles {
            built: Instant::now(),
            set,
            names,
        });
        *cache = Some(n.clone());
        n
    }

    /// Redacts every secret value in the strings (and keys) of `v`; returns the names of the
    /// secrets found, sorted, without duplicates.
    pub fn redact(&self, v: &mut Value) -> Vec<String> {
        let needles = self.needles();
        let Some(set) = &needles.set else {
            return Vec::new();
        };
        let mut hits = Vec::new();
        walk(v, set, &needles.names, &mut hits);
        hits.sort();
        hits.dedup();
        hits
    }
}

fn redact_str(
    s: &str,
    set: &Replacements,
    names: &[String],
    hits: &mut Vec<String>,
) -> Option<String> {
    // Names come from what matched, never from the text (a client may write "[REDACTED:x]").
    let found = set.hits(s.as_bytes());
    if found.is_empty() {
        return None;
    }
    hits.extend(found.into_iter().filter_map(|i| names.get(i).cloned()));
    Some(String::from_utf8_lossy(&set.replace_all(s.as_bytes())).into_owned())
}

fn walk(v: &mut Value, set: &Replacements, names: &[String], hits: &mut Vec<String>) {
    match v {
        Value::String(s) => {
            if let Some(r) = redact_str(s, set, names, hits) {
                *s = r;
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|x| walk(x, set, names, hits)),
        Value::Object(m) => {
            let keys: Vec<String> = m.keys().cloned().collect();
            for k in keys {
                let mut val = m.remove(&k).expect("key listed");
                walk(&mut val, set, names, hits);
                let k = redact_str(&k, set, names, hits).unwrap_or(k);
                m.insert(k, val);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod vault_tests {
    use super::*;
    use crate::store::{SqliteStore, Store};
    use crate::vault::{MasterKey, SecretName, SecretValue};
    use base64::Engine as _;

    #[test]
    fn redacts_values_from_the_vault_in_keys_and_nested_strings() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open_in(&dir.path().join("s")).unwrap());
        let vault = Arc::new(Vault::open(store, MasterKey::generate().unwrap()).unwrap());
        let secret = "sk-live-7a1f9c3e5b2d4a68e0";
        vault
            .set(
                &SecretName::parse("API_KEY").unwrap(),
                &SecretValue::from(secret.as_bytes()),
            )
            .unwrap();
        vault
            .set(
                &SecretName::parse("SHORT").unwrap(),
                &SecretValue::from(&b"abc"[..]),
            )
            .unwrap();
        let r = Redactor::new(vault);
        let b64 = base64::engine::general_purpose::STANDARD.encode(secret);
        let mut v =
            serde_json::json!({"a": [format!("x{secret}y"), {"k": b64}], secret: 1, "s": "abc"});
        assert_eq!(r.redact(&mut v), vec!["API_KEY".to_string()]);
        let text = v.to_string();
        assert!(!text.contains(secret) && !text.contains(&b64), "{text}");
        assert_eq!(v["a"][0], "x[REDACTED:API_KEY]y");
        // A form only the shared definition knows: the value inside a longer base64 blob.
        let inner = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("ab{secret}"));
        let mut blob = serde_json::json!({ "blob": inner });
        assert_eq!(r.redact(&mut blob), vec!["API_KEY".to_string()]);
        assert_eq!(
            v["s"], "abc",
            "values under {MIN_LEN} bytes are not scanned"
        );
    }
}
