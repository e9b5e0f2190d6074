//! Bearer tokens for endpoints: 256 random bits, shown once, stored only as SHA-256.
//!
//! A plain hash (not a slow password hash) is enough: the input is 256 random bits, so there is
//! nothing to guess offline. Lookups go by hash, and the stored hash is compared in constant
//! time as well, so response timing says nothing about how close a guess was.

use base64::Engine as _;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

/// Every token starts with this, so scanners (and people) recognise a leaked one.
pub const PREFIX: &str = "gmcp_tk_";

/// A token as shown once to the admin. Wiped when dropped.
pub struct NewToken {
    pub id: String,
    pub secret: Zeroizing<String>,
    pub hash: [u8; 32],
}

impl std::fmt::Debug for NewToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewToken")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
#[error("no randomness available for a token")]
pub struct NoRandomness;

pub fn generate() -> Result<NewToken, NoRandomness> {
    let mut raw = Zeroizing::new([0u8; 32]);
    getrandom::fill(&mut raw[..]).map_err(|_| NoRandomness)?;
    let mut id = [0u8; 8];
    getrandom::fill(&mut id).map_err(|_| NoRandomness)?;
    let secret = Zeroizing::new(format!(
        "{PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&raw[..])
    ));
    Ok(NewToken {
        id: hex::encode(id),
        hash: hash(&secret),
        secret,
    })
}

/// The stored form of a presented token.
pub fn hash(presented: &str) -> [u8; 32] {
    Sha256::digest(presented.as_bytes()).into()
}

/// Whether two hashes are equal, in constant time.
pub fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

/// A token from an `Authorization` header value: `Bearer <token>` (scheme case-insensitive),
/// of the right shape; anything else is `None`.
pub fn from_header(value: &[u8]) -> Option<&str> {
    let text = std::str::from_utf8(value).ok()?;
    let (scheme, rest) = text.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let t = rest.trim();
    (t.starts_with(PREFIX) && t.len() == PREFIX.len() + 43).then_some(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_unique_and_parse_back() {
        let a = generate().unwrap();
        let b = generate().unwrap();
        assert_ne!(*a.secret, *b.secret);
        let header = format!("Bearer {}", &*a.secret);
        let t = from_header(header.as_bytes()).unwrap();
        assert!(same(&hash(t), &a.hash));
        assert!(!same(&hash(t), &b.hash));
        assert!(from_header(format!("bearer {}", &*a.secret).as_bytes()).is_some());
        assert!(from_header(b"Basic abc").is_none());
        assert!(from_header(b"Bearer gmcp_tk_short").is_none());
        assert!(!format!("{a:?}").contains(&*a.secret));
    }
}
