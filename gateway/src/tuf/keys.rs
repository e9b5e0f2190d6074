//! Public keys as TUF writes them: the key object `{"keytype":"ed25519","scheme":"ed25519",
//! "keyval":{"public":HEX}}`, its key id (sha256 of that object's canonical JSON, as python-tuf
//! computes it) and the one signature check every role goes through.
//!
//! Only ed25519: any other key type or scheme is refused where it is read, not skipped, so a
//! root cannot count on keys this code would silently ignore. Knows nothing of roles,
//! thresholds or secrets (see `verify.rs` and `sign.rs`); key files are written here, new
//! files only (`write_new`), since both halves' files share that rule.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use ed25519_dalek::{Signature, VerifyingKey};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::cjson;

/// Why a key file could not be read or written. Never carries key material.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: already exists (a key file is never overwritten)")]
    Exists { path: PathBuf },
    #[error("{path}: mode {mode:04o} lets group or others read a private key (chmod 600 it)")]
    Permissions { path: PathBuf, mode: u32 },
    #[error("{path}: not a key file: {detail}")]
    Format { path: PathBuf, detail: String },
    #[error("{path}: the public key does not belong to the private key")]
    Mismatch { path: PathBuf },
}

/// An ed25519 public key as a TUF key object.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey {
    key: VerifyingKey,
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PublicKey")
            .field("key_id", &self.key_id())
            .finish()
    }
}

impl PublicKey {
    pub(super) fn from_verifying(key: VerifyingKey) -> Self {
        PublicKey { key }
    }

    /// Reads a key object (as in root.json's `keys`): ed25519 only, the public half in hex.
    pub fn from_json(v: &Value) -> Result<Self, String> {
        let obj = v.as_object().ok_or("a key is not an object")?;
        let keytype = obj.get("keytype").and_then(Value::as_str);
        let scheme = obj.get("scheme").and_then(Value::as_str);
        if keytype != Some("ed25519") || scheme != Some("ed25519") {
            return Err(format!(
                "key type {keytype:?} with scheme {scheme:?}: only ed25519 is supported"
            ));
        }
        let public = obj
            .get("keyval")
            .and_then(|k| k.get("public"))
            .and_then(Value::as_str)
            .ok_or("a key has no keyval.public")?;
        let bytes: [u8; 32] = hex::decode(public)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or("keyval.public is not 32 bytes of hex")?;
        let key = VerifyingKey::from_bytes(&bytes)
            .map_err(|_| "keyval.public is not an ed25519 point")?;
        Ok(PublicKey { key })
    }

    /// The key object, exactly the three fields python-tuf hashes for the key id.
    pub fn to_json(&self) -> Value {
        json!({
            "keytype": "ed25519",
            "scheme": "ed25519",
            "keyval": { "public": hex::encode(self.key.as_bytes()) },
        })
    }

    /// sha256 (hex) of the key object's canonical JSON.
    pub fn key_id(&self) -> String {
        hex::encode(Sha256::digest(cjson::to_canonical(&self.to_json())))
    }

    /// The raw 32 bytes: two key ids naming the same bytes are one signer.
    pub(super) fn bytes(&self) -> &[u8; 32] {
        self.key.as_bytes()
    }

    /// Whether `sig_hex` is this key's signature over `message`. Strict verification (no
    /// small-order keys, canonical `S`), so a signature has one valid encoding.
    pub(super) fn verifies(&self, message: &[u8], sig_hex: &str) -> bool {
        let Some(bytes) = hex::decode(sig_hex)
            .ok()
            .and_then(|b| <[u8; 64]>::try_from(b).ok())
        else {
            return false;
        };
        self.key
            .verify_strict(message, &Signature::from_bytes(&bytes))
            .is_ok()
    }

    /// Reads a public key file (the key object as JSON).
    pub fn read(path: &Path) -> Result<Self, KeyError> {
        let raw = std::fs::read(path).map_err(|source| KeyError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let v = cjson::parse(&raw).map_err(|e| KeyError::Format {
            path: path.to_path_buf(),
            detail: e.to_string(),
        })?;
        PublicKey::from_json(&v).map_err(|detail| KeyError::Format {
            path: path.to_path_buf(),
            detail,
        })
    }

    /// Writes the key object to a new file (refuses to overwrite).
    pub fn write(&self, path: &Path) -> Result<(), KeyError> {
        let mut text = serde_json::to_vec_pretty(&self.to_json()).expect("a Value serializes");
        text.push(b'\n');
        write_new(path, &text, 0o644)
    }
}

/// Creates `path` with `mode` and writes `bytes`, refusing an existing file.
pub(super) fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), KeyError> {
    let io = |source| KeyError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => KeyError::Exists {
                path: path.to_path_buf(),
            },
            _ => io(e),
        })?;
    file.write_all(bytes).map_err(io)?;
    file.write_all(b"\n").map_err(io)?;
    file.sync_all().map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 8032 section 7.1, test 1.
    const PUBLIC: &str = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";
    const SIG: &str = "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e06522490155\
                       5fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b";

    fn key() -> PublicKey {
        PublicKey::from_json(&json!({
            "keytype": "ed25519", "scheme": "ed25519", "keyval": {"public": PUBLIC}
        }))
        .unwrap()
    }

    #[test]
    fn the_key_id_is_the_sha256_of_the_canonical_key_object() {
        let canonical = format!(
            r#"{{"keytype":"ed25519","keyval":{{"public":"{PUBLIC}"}},"scheme":"ed25519"}}"#
        );
        assert_eq!(
            key().key_id(),
            hex::encode(Sha256::digest(canonical.as_bytes()))
        );
    }

    #[test]
    fn the_rfc_8032_signature_verifies() {
        assert!(key().verifies(b"", SIG));
    }

    #[test]
    fn a_flipped_or_truncated_signature_does_not_verify() {
        let mut flipped = hex::decode(SIG).unwrap();
        flipped[10] ^= 1;
        assert!(!key().verifies(b"", &hex::encode(flipped)));
        assert!(!key().verifies(b"", &SIG[..126]));
        assert!(!key().verifies(b"", "not hex"));
    }

    #[test]
    fn other_key_types_are_refused_by_name() {
        let e = PublicKey::from_json(&json!({
            "keytype": "rsa", "scheme": "rsassa-pss-sha256", "keyval": {"public": "x"}
        }))
        .unwrap_err();
        assert!(e.contains("rsa"), "{e}");
    }
}
