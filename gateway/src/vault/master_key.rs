//! The master key: 32 bytes that wrap every data key. It comes from a systemd credential
//! (`LoadCredential=master.key`), or for development from a file, and is never stored in the
//! database. Only its fingerprint is, so a wrong key is recognised as such.

use std::fmt;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use zeroize::Zeroizing;

pub const KEY_LEN: usize = 32;
/// Name of the systemd credential that carries the key.
pub const CREDENTIAL_NAME: &str = "master.key";

/// Identifies a master key without revealing it: HMAC-SHA256 keyed by the master key over a
/// fixed label, truncated to 128 bits.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint([u8; 16]);

impl Fingerprint {
    pub fn to_hex(self) -> String {
        hex::encode(self.0)
    }

    pub fn from_hex(text: &str) -> Option<Self> {
        let mut out = [0u8; 16];
        hex::decode_to_slice(text, &mut out).ok()?;
        Some(Self(out))
    }

    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({})", self.to_hex())
    }
}

/// The master key in a zeroizing buffer. `Debug` shows the fingerprint only.
pub struct MasterKey {
    key: Zeroizing<[u8; KEY_LEN]>,
    fingerprint: Fingerprint,
}

#[derive(Debug, thiserror::Error)]
pub enum MasterKeyError {
    #[error(
        "no master key: set $CREDENTIALS_DIRECTORY (systemd LoadCredential=master.key) or pass --master-key-file"
    )]
    Missing,
    #[error("cannot read master key file {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "master key file {path} is readable by group or others (mode {mode:04o}); run chmod 600 on it"
    )]
    TooOpen { path: PathBuf, mode: u32 },
    #[error("master key file {path} is not a regular file")]
    NotAFile { path: PathBuf },
    #[error(
        "master key file {path} must hold exactly 32 bytes, raw or as 64 hex digits (found {len} bytes)"
    )]
    BadLength { path: PathBuf, len: usize },
    #[error("cannot create master key file {path}: {source}")]
    Create {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("no randomness from the kernel: {0}")]
    Random(getrandom::Error),
}

impl MasterKey {
    pub fn from_bytes(bytes: &[u8; KEY_LEN]) -> Self {
        let key = Zeroizing::new(*bytes);
        let fingerprint = fingerprint_of(&key);
        Self { key, fingerprint }
    }

    pub fn generate() -> Result<Self, MasterKeyError> {
        let mut key = Zeroizing::new([0u8; KEY_LEN]);
        getrandom::fill(&mut key[..]).map_err(MasterKeyError::Random)?;
        let fingerprint = fingerprint_of(&key);
        Ok(Self { key, fingerprint })
    }

    /// The key from `--master-key-file` if given, else the systemd credential.
    pub fn load(explicit: Option<&Path>) -> Result<Self, MasterKeyError> {
        match explicit {
            Some(path) => Self::from_file(path),
            None => {
                let dir =
                    std::env::var_os("CREDENTIALS_DIRECTORY").ok_or(MasterKeyError::Missing)?;
                Self::from_file(&Path::new(&dir).join(CREDENTIAL_NAME))
            }
        }
    }

    /// Reads a key file: 32 raw bytes, or 64 hex digits with optional trailing newline.
    /// Refuses a file that group or others can read: such a key must be assumed copied.
    pub fn from_file(path: &Path) -> Result<Self, MasterKeyError> {
        let io = |source| MasterKeyError::Io {
            path: path.to_owned(),
            source,
        };
        let mut file = std::fs::File::open(path).map_err(io)?;
        let meta = file.metadata().map_err(io)?;
        if !meta.is_file() {
            return Err(MasterKeyError::NotAFile {
                path: path.to_owned(),
            });
        }
        let mode = meta.mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(MasterKeyError::TooOpen {
                path: path.to_owned(),
                mode,
            });
        }
        // Read at most a little more than the longest valid form, into a zeroizing buffer.
        let mut buf = Zeroizing::new(Vec::with_capacity(2 * KEY_LEN + 2));
        file.by_ref()
            .take(2 * KEY_LEN as u64 + 2)
            .read_to_end(&mut buf)
            .map_err(io)?;
        let mut key = Zeroizing::new([0u8; KEY_LEN]);
        let hex_form = buf.strip_suffix(b"\n").unwrap_or(&buf);
        if buf.len() == KEY_LEN {
            key.copy_from_slice(&buf);
        } else if hex_form.len() == 2 * KEY_LEN
            && hex::decode_to_slice(hex_form, &mut key[..]).is_ok()
        {
        } else {
            return Err(MasterKeyError::BadLength {
                path: path.to_owned(),
                len: buf.len(),
            });
        }
        let fingerprint = fingerprint_of(&key);
        Ok(Self { key, fingerprint })
    }

    /// Writes a new random key to `path` (mode 0600, refusing to overwrite), as hex.
    pub fn generate_file(path: &Path) -> Result<Self, MasterKeyError> {
        use std::io::Write;
        let key = Self::generate()?;
        let create = |source| MasterKeyError::Create {
            path: path.to_owned(),
            source,
        };
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(create)?;
        let mut text = Zeroizing::new(hex::encode(&key.key[..]));
        text.push('\n');
        file.write_all(text.as_bytes()).map_err(create)?;
        file.sync_all().map_err(create)?;
        Ok(key)
    }

    pub fn fingerprint(&self) -> Fingerprint {
        self.fingerprint
    }

    pub(super) fn bytes(&self) -> &[u8; KEY_LEN] {
        &self.key
    }
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MasterKey(fingerprint {})", self.fingerprint)
    }
}

fn fingerprint_of(key: &[u8; KEY_LEN]) -> Fingerprint {
    let mut mac =
        <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(b"gigmcp master key fingerprint v1");
    let full = mac.finalize().into_bytes();
    let mut out = [0u8; 16];
    out.copy_from_slice(&full[..16]);
    Fingerprint(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn raw_and_hex_files_give_same_key() {
        let dir = tempfile::tempdir().unwrap();
        let raw = dir.path().join("raw");
        let hexf = dir.path().join("hex");
        let bytes = [7u8; 32];
        std::fs::write(&raw, bytes).unwrap();
        std::fs::write(&hexf, format!("{}\n", hex::encode(bytes))).unwrap();
        for p in [&raw, &hexf] {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        let a = MasterKey::from_file(&raw).unwrap();
        let b = MasterKey::from_file(&hexf).unwrap();
        assert_eq!(a.fingerprint(), b.fingerprint());
        assert_eq!(a.fingerprint(), MasterKey::from_bytes(&bytes).fingerprint());
    }

    #[test]
    fn group_or_world_readable_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k");
        std::fs::write(&p, [1u8; 32]).unwrap();
        for mode in [0o640, 0o604, 0o644, 0o660] {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
            let err = MasterKey::from_file(&p).unwrap_err();
            assert!(
                matches!(err, MasterKeyError::TooOpen { .. }),
                "{mode:o}: {err}"
            );
        }
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o400)).unwrap();
        MasterKey::from_file(&p).unwrap();
    }

    #[test]
    fn wrong_length_is_refused_without_echoing_content() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k");
        std::fs::write(&p, b"short-secret-material").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        let err = MasterKey::from_file(&p).unwrap_err().to_string();
        assert!(err.contains("exactly 32 bytes"), "{err}");
        assert!(!err.contains("short-secret"), "{err}");
    }

    #[test]
    fn generated_file_is_private_and_loads() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("new.key");
        let k = MasterKey::generate_file(&p).unwrap();
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(
            MasterKey::from_file(&p).unwrap().fingerprint(),
            k.fingerprint()
        );
        assert!(
            MasterKey::generate_file(&p).is_err(),
            "overwrote an existing key"
        );
        assert!(!format!("{k:?}").contains(&hex::encode(k.bytes())));
    }

    #[test]
    fn different_keys_have_different_fingerprints() {
        let a = MasterKey::from_bytes(&[1; 32]);
        let b = MasterKey::from_bytes(&[2; 32]);
        assert_ne!(a.fingerprint(), b.fingerprint());
        assert_eq!(
            Fingerprint::from_hex(&a.fingerprint().to_hex()),
            Some(a.fingerprint())
        );
    }
}
