//! The author's signing keys: an ed25519 key pair, its private key file, and signatures over
//! canonical JSON.
//!
//! The secret half lives only in `ed25519_dalek::SigningKey` (zeroized on drop) and, while a
//! file is read or written, in `Zeroizing` buffers; it never reaches `Debug`, an error or a log.
//! A private key file is created 0600 and never overwritten, and one that group or others could
//! read is refused, as ssh refuses such a key. Knows nothing of roles or repositories.

use std::io::Read;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use ed25519_dalek::{Signer, SigningKey};
use serde_json::{Value, json};
use zeroize::Zeroizing;

use super::cjson;
use super::keys::{KeyError, PublicKey, write_new};

/// A key file is about 250 bytes; anything past this is not one.
const MAX_KEY_FILE: u64 = 4096;

/// An ed25519 key pair; the secret half zeroized on drop and never shown.
pub struct KeyPair {
    signing: SigningKey,
}

impl std::fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyPair")
            .field("key_id", &self.public().key_id())
            .finish_non_exhaustive()
    }
}

impl KeyPair {
    /// A new key pair from the operating system's random source.
    pub fn generate() -> Self {
        let mut seed = Zeroizing::new([0u8; 32]);
        getrandom::fill(seed.as_mut()).expect("the OS random source works");
        KeyPair {
            signing: SigningKey::from_bytes(&seed),
        }
    }

    pub fn public(&self) -> PublicKey {
        PublicKey::from_verifying(self.signing.verifying_key())
    }

    /// A TUF signature entry `{"keyid", "sig"}` over the canonical form of `signed` (for
    /// tools that sign a role's file by hand).
    pub fn signature(&self, signed: &Value) -> Value {
        json!({
            "keyid": self.public().key_id(),
            "sig": self.sign_hex(&cjson::to_canonical(signed)),
        })
    }

    /// The hex signature over `message`.
    pub(super) fn sign_hex(&self, message: &[u8]) -> String {
        hex::encode(self.signing.sign(message).to_bytes())
    }

    /// Reads a private key file, refusing one that group or others may read. The file is
    /// opened once, not through a symlink, and its mode checked on that open file, so no
    /// swap between the check and the read can hand over another file.
    pub fn read_private(path: &Path) -> Result<Self, KeyError> {
        let io = |source| KeyError::Io {
            path: path.to_path_buf(),
            source,
        };
        let format = |detail: &str| KeyError::Format {
            path: path.to_path_buf(),
            detail: detail.to_string(),
        };
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
            .open(path)
            .map_err(io)?;
        let meta = file.metadata().map_err(io)?;
        let mode = meta.permissions().mode();
        if mode & 0o077 != 0 {
            return Err(KeyError::Permissions {
                path: path.to_path_buf(),
                mode: mode & 0o7777,
            });
        }
        if !meta.is_file() || meta.len() > MAX_KEY_FILE {
            return Err(format("not a regular file of at most 4 KiB"));
        }
        // Sized up front (one byte more to see a file that grew), so the buffer holding the
        // secret never reallocates and leaves an unwiped copy behind.
        let mut raw = Zeroizing::new(Vec::with_capacity(MAX_KEY_FILE as usize + 1));
        file.take(MAX_KEY_FILE + 1)
            .read_to_end(&mut raw)
            .map_err(io)?;
        if raw.len() as u64 > MAX_KEY_FILE {
            return Err(format("not a regular file of at most 4 KiB"));
        }
        // The parsed document holds the secret's hex too: wipe it once read.
        let mut v = cjson::parse(&raw).map_err(|_| format("not JSON"))?;
        let private = take_private(&mut v).ok_or_else(|| format("no keyval.private"))?;
        let mut seed = Zeroizing::new([0u8; 32]);
        hex::decode_to_slice(private.as_bytes(), seed.as_mut())
            .map_err(|_| format("keyval.private is not 32 bytes of hex"))?;
        let pair = KeyPair {
            signing: SigningKey::from_bytes(&seed),
        };
        let public = PublicKey::from_json(&v).map_err(|d| format(&d))?;
        if public != pair.public() {
            return Err(KeyError::Mismatch {
                path: path.to_path_buf(),
            });
        }
        Ok(pair)
    }

    /// Writes the private key file (mode 0600, never over an existing file).
    pub fn write_private(&self, path: &Path) -> Result<(), KeyError> {
        let mut doc = self.public().to_json();
        let private = Zeroizing::new(hex::encode(self.signing.to_bytes()));
        doc["keyval"]["private"] = json!(private.as_str());
        let text = Zeroizing::new(serde_json::to_vec_pretty(&doc).expect("a Value serializes"));
        if let Some(Value::String(s)) = doc["keyval"].get_mut("private") {
            zeroize::Zeroize::zeroize(s);
        }
        write_new(path, &text, 0o600)
    }
}

/// Moves the secret's hex out of a parsed key document into a zeroizing string.
fn take_private(v: &mut Value) -> Option<Zeroizing<String>> {
    match v.get_mut("keyval")?.as_object_mut()?.remove("private")? {
        Value::String(s) => Some(Zeroizing::new(s)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_written_private_key_reads_back_as_the_same_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.json");
        let pair = KeyPair::generate();
        pair.write_private(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(
            KeyPair::read_private(&path).unwrap().public(),
            pair.public()
        );
    }

    #[test]
    fn a_private_key_readable_by_others_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.json");
        KeyPair::generate().write_private(&path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            KeyPair::read_private(&path),
            Err(KeyError::Permissions { mode: 0o644, .. })
        ));
    }

    #[test]
    fn a_private_key_reached_through_a_symlink_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("k.json");
        KeyPair::generate().write_private(&real).unwrap();
        let link = dir.path().join("link.json");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let e = KeyPair::read_private(&link).unwrap_err();
        assert!(
            matches!(&e, KeyError::Io { source, .. } if source.raw_os_error() == Some(nix::libc::ELOOP)),
            "{e}"
        );
    }

    #[test]
    fn an_existing_key_file_is_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.json");
        KeyPair::generate().write_private(&path).unwrap();
        let before = std::fs::read(&path).unwrap();
        assert!(matches!(
            KeyPair::generate().write_private(&path),
            Err(KeyError::Exists { .. })
        ));
        assert_eq!(std::fs::read(&path).unwrap(), before);
    }

    #[test]
    fn debug_shows_the_key_id_and_not_the_secret() {
        let pair = KeyPair::generate();
        let secret = hex::encode(pair.signing.to_bytes());
        let shown = format!("{pair:?}");
        assert!(shown.contains(&pair.public().key_id()));
        assert!(!shown.contains(&secret));
    }

    #[test]
    fn a_signature_verifies_with_the_public_half() {
        let pair = KeyPair::generate();
        let sig = pair.sign_hex(b"message");
        assert!(pair.public().verifies(b"message", &sig));
        assert!(!pair.public().verifies(b"messagf", &sig));
    }
}
