//! Envelope encryption of one secret (DESIGN 3.8), as pure functions over bytes.
//!
//! - A fresh random 256-bit data key per secret version.
//! - The value is sealed with XChaCha20-Poly1305 under the data key, random 192-bit nonce,
//!   associated data = (id, name, version): a sealed value moved to another row, renamed or
//!   replayed at another version fails to open.
//! - The data key is wrapped with XChaCha20-Poly1305 under the master key, associated data =
//!   (id, version, master key fingerprint).
//!
//! Random 192-bit nonces make accidental reuse negligible without any nonce bookkeeping, which
//! is why XChaCha rather than ChaCha20-Poly1305 (96-bit nonces) is used.

use chacha20poly1305::aead::{Aead, Payload};
use chacha20poly1305::{KeyInit, XChaCha20Poly1305, XNonce};
use zeroize::Zeroizing;

use super::master_key::{Fingerprint, MasterKey};
use super::secret::SecretValue;
use crate::store::Sealed;

pub const NONCE_LEN: usize = 24;
const DATA_KEY_LEN: usize = 32;
const TAG_LEN: usize = 16;
/// Length of a wrapped data key: the key plus the Poly1305 tag.
pub const WRAPPED_KEY_LEN: usize = DATA_KEY_LEN + TAG_LEN;

const VALUE_LABEL: &[u8] = b"gigmcp/secret-value/v1";
const WRAP_LABEL: &[u8] = b"gigmcp/data-key/v1";

/// What a secret's ciphertext is bound to.
#[derive(Debug, Clone, Copy)]
pub struct Binding<'a> {
    pub id: &'a str,
    pub name: &'a str,
    pub version: u64,
}

/// Which layer of the envelope failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    #[error("wrapped by master key {stored}, but the loaded master key is {loaded}")]
    WrongMasterKey { stored: String, loaded: Fingerprint },
    #[error("data key failed authentication (tampered or corrupted)")]
    DataKey,
    #[error("sealed value failed authentication (tampered, corrupted or moved from another row)")]
    Value,
    #[error("no randomness from the kernel")]
    Random,
}

pub fn seal(
    master: &MasterKey,
    binding: Binding<'_>,
    value: &SecretValue,
) -> Result<Sealed, EnvelopeError> {
    let mut data_key = Zeroizing::new([0u8; DATA_KEY_LEN]);
    getrandom::fill(&mut data_key[..]).map_err(|_| EnvelopeError::Random)?;
    let value_nonce = random_nonce()?;
    let value_ct = cipher(&data_key[..])
        .encrypt(
            &XNonce::from(value_nonce),
            Payload {
                msg: value.expose(),
                aad: &value_aad(binding),
            },
        )
        .map_err(|_| EnvelopeError::Value)?;
    let (key_nonce, wrapped_key) = wrap(master, binding, &data_key)?;
    Ok(Sealed {
        value_nonce: value_nonce.to_vec(),
        value_ct,
        key_nonce,
        wrapped_key,
        master_fp: master.fingerprint().to_hex(),
    })
}

pub fn open(
    master: &MasterKey,
    binding: Binding<'_>,
    sealed: &Sealed,
) -> Result<SecretValue, EnvelopeError> {
    let data_key = unwrap(master, binding, sealed)?;
    let nonce = nonce_of(&sealed.value_nonce).ok_or(EnvelopeError::Value)?;
    let plain = cipher(&data_key[..])
        .decrypt(
            &nonce,
            Payload {
                msg: &sealed.value_ct,
                aad: &value_aad(binding),
            },
        )
        .map_err(|_| EnvelopeError::Value)?;
    Ok(SecretValue::new(Zeroizing::new(plain)))
}

/// Unwraps the data key with `old` and wraps it again under `new`. The sealed value is not
/// touched: that is what makes rotation cheap and safe to interrupt.
pub fn rewrap(
    old: &MasterKey,
    new: &MasterKey,
    binding: Binding<'_>,
    sealed: &Sealed,
) -> Result<(Vec<u8>, Vec<u8>), EnvelopeError> {
    let data_key = unwrap(old, binding, sealed)?;
    wrap(new, binding, &data_key)
}

fn wrap(
    master: &MasterKey,
    binding: Binding<'_>,
    data_key: &[u8; DATA_KEY_LEN],
) -> Result<(Vec<u8>, Vec<u8>), EnvelopeError> {
    let nonce = random_nonce()?;
    let wrapped = cipher(master.bytes())
        .encrypt(
            &XNonce::from(nonce),
            Payload {
                msg: data_key,
                aad: &wrap_aad(binding, &master.fingerprint().to_hex()),
            },
        )
        .map_err(|_| EnvelopeError::DataKey)?;
    Ok((nonce.to_vec(), wrapped))
}

fn unwrap(
    master: &MasterKey,
    binding: Binding<'_>,
    sealed: &Sealed,
) -> Result<Zeroizing<[u8; DATA_KEY_LEN]>, EnvelopeError> {
    if sealed.master_fp != master.fingerprint().to_hex() {
        return Err(EnvelopeError::WrongMasterKey {
            stored: sealed.master_fp.clone(),
            loaded: master.fingerprint(),
        });
    }
    let nonce = nonce_of(&sealed.key_nonce).ok_or(EnvelopeError::DataKey)?;
    let plain = Zeroizing::new(
        cipher(master.bytes())
            .decrypt(
                &nonce,
                Payload {
                    msg: &sealed.wrapped_key,
                    aad: &wrap_aad(binding, &sealed.master_fp),
                },
            )
            .map_err(|_| EnvelopeError::DataKey)?,
    );
    let mut key = Zeroizing::new([0u8; DATA_KEY_LEN]);
    if plain.len() != DATA_KEY_LEN {
        return Err(EnvelopeError::DataKey);
    }
    key.copy_from_slice(&plain);
    Ok(key)
}

fn cipher(key: &[u8]) -> XChaCha20Poly1305 {
    XChaCha20Poly1305::new_from_slice(key).expect("keys are always 32 bytes")
}

fn random_nonce() -> Result<[u8; NONCE_LEN], EnvelopeError> {
    let mut nonce = [0u8; NONCE_LEN];
    getrandom::fill(&mut nonce).map_err(|_| EnvelopeError::Random)?;
    Ok(nonce)
}

fn nonce_of(bytes: &[u8]) -> Option<XNonce> {
    let array: [u8; NONCE_LEN] = bytes.try_into().ok()?;
    Some(XNonce::from(array))
}

/// Length-prefixed fields, so that no two different bindings encode to the same bytes.
fn encode(label: &[u8], fields: &[&[u8]]) -> Vec<u8> {
    let mut out =
        Vec::with_capacity(label.len() + fields.iter().map(|f| f.len() + 4).sum::<usize>());
    out.extend_from_slice(label);
    for field in fields {
        let len = u32::try_from(field.len()).expect("bound fields are short");
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(field);
    }
    out
}

fn value_aad(b: Binding<'_>) -> Vec<u8> {
    encode(
        VALUE_LABEL,
        &[b.id.as_bytes(), b.name.as_bytes(), &b.version.to_be_bytes()],
    )
}

fn wrap_aad(b: Binding<'_>, master_fp: &str) -> Vec<u8> {
    encode(
        WRAP_LABEL,
        &[
            b.id.as_bytes(),
            &b.version.to_be_bytes(),
            master_fp.as_bytes(),
        ],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const B: Binding<'static> = Binding {
        id: "id-1",
        name: "TOKEN",
        version: 1,
    };

    fn sealed() -> (MasterKey, Sealed) {
        let mk = MasterKey::from_bytes(&[9; 32]);
        let s = seal(&mk, B, &SecretValue::from(&b"value-123"[..])).unwrap();
        (mk, s)
    }

    #[test]
    fn round_trip_and_fresh_randomness() {
        let (mk, s) = sealed();
        assert_eq!(open(&mk, B, &s).unwrap().expose(), b"value-123");
        let s2 = seal(&mk, B, &SecretValue::from(&b"value-123"[..])).unwrap();
        assert_ne!(s.value_nonce, s2.value_nonce);
        assert_ne!(s.value_ct, s2.value_ct);
        assert_ne!(s.wrapped_key, s2.wrapped_key);
        assert_eq!(s.wrapped_key.len(), WRAPPED_KEY_LEN);
    }

    #[test]
    fn binding_is_checked() {
        let (mk, s) = sealed();
        for other in [
            Binding { id: "id-2", ..B },
            Binding { name: "OTHER", ..B },
            Binding { version: 2, ..B },
        ] {
            assert!(open(&mk, other, &s).is_err(), "{other:?} opened");
        }
        // Name is only in the value's AD: the data key still unwraps, the value does not.
        assert_eq!(
            open(&mk, Binding { name: "OTHER", ..B }, &s),
            Err(EnvelopeError::Value)
        );
    }

    #[test]
    fn every_flipped_byte_is_caught() {
        let (mk, s) = sealed();
        let fields: [fn(&mut Sealed) -> &mut Vec<u8>; 4] = [
            |s| &mut s.value_nonce,
            |s| &mut s.value_ct,
            |s| &mut s.key_nonce,
            |s| &mut s.wrapped_key,
        ];
        for field in fields {
            let len = field(&mut s.clone()).len();
            for i in 0..len {
                let mut t = s.clone();
                field(&mut t)[i] ^= 0x01;
                assert!(open(&mk, B, &t).is_err());
            }
            let mut t = s.clone();
            field(&mut t).pop();
            assert!(open(&mk, B, &t).is_err(), "truncation not caught");
        }
    }

    #[test]
    fn wrong_master_key_is_named_as_such() {
        let (_, s) = sealed();
        let other = MasterKey::from_bytes(&[8; 32]);
        assert!(matches!(
            open(&other, B, &s),
            Err(EnvelopeError::WrongMasterKey { .. })
        ));
        // Even with the fingerprint forged to match, the key does not unwrap.
        let mut forged = s.clone();
        forged.master_fp = other.fingerprint().to_hex();
        assert_eq!(open(&other, B, &forged), Err(EnvelopeError::DataKey));
    }

    #[test]
    fn rewrap_moves_to_new_key_only() {
        let (old, mut s) = sealed();
        let new = MasterKey::from_bytes(&[10; 32]);
        let before_ct = s.value_ct.clone();
        let (nonce, wrapped) = rewrap(&old, &new, B, &s).unwrap();
        s.key_nonce = nonce;
        s.wrapped_key = wrapped;
        s.master_fp = new.fingerprint().to_hex();
        assert_eq!(s.value_ct, before_ct);
        assert_eq!(open(&new, B, &s).unwrap().expose(), b"value-123");
        assert!(open(&old, B, &s).is_err());
    }
}
