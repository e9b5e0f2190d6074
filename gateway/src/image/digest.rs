//! Content digests: `sha256:` and 64 lowercase hex digits, the only algorithm an image here may
//! name (OCI image-spec, "Digests"). Anything else is refused when parsed, so a digest that
//! reached the rest of the code is one we can verify.

use std::fmt;

use sha2::{Digest as _, Sha256};

/// A sha256 content digest, as OCI writes it: `sha256:<64 lowercase hex>`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest([u8; 32]);

/// Why a string is not a digest we accept.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DigestError {
    #[error("digest {0:?} is not sha256 (the only algorithm accepted)")]
    Algorithm(String),
    #[error("digest {0:?} is not 64 lowercase hex digits after sha256:")]
    Encoding(String),
}

impl Digest {
    /// Parses `sha256:<hex>`; upper-case hex is refused, as the spec requires lowercase.
    pub fn parse(s: &str) -> Result<Self, DigestError> {
        let shown = || s.chars().take(80).collect::<String>();
        let Some(hex_part) = s.strip_prefix("sha256:") else {
            return Err(DigestError::Algorithm(shown()));
        };
        if hex_part.len() != 64
            || !hex_part
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        {
            return Err(DigestError::Encoding(shown()));
        }
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(hex_part, &mut bytes).map_err(|_| DigestError::Encoding(shown()))?;
        Ok(Self(bytes))
    }

    /// The digest of `data`.
    pub fn of(data: &[u8]) -> Self {
        Self(Sha256::digest(data).into())
    }

    /// The 64 hex digits, without the algorithm: the file name in a content-addressed store.
    pub fn hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Digest::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// A running sha256 over bytes as they stream past.
#[derive(Default)]
pub struct Hasher(Sha256);

impl fmt::Debug for Hasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Hasher")
    }
}

impl Hasher {
    pub fn update(&mut self, data: &[u8]) {
        self.0.update(data);
    }

    pub fn finish(self) -> Digest {
        Digest(self.0.finalize().into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_only_lowercase_sha256_and_round_trips() {
        let d = Digest::of(b"abc");
        assert_eq!(
            d.to_string(),
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(Digest::parse(&d.to_string()).unwrap(), d);
        let upper = d.to_string().replace("ba78", "BA78");
        assert!(matches!(
            Digest::parse(&upper),
            Err(DigestError::Encoding(_))
        ));
        assert!(matches!(
            Digest::parse("sha512:00"),
            Err(DigestError::Algorithm(_))
        ));
        assert!(matches!(
            Digest::parse("sha256:abc"),
            Err(DigestError::Encoding(_))
        ));
        assert!(matches!(
            Digest::parse(&format!("{d}0")),
            Err(DigestError::Encoding(_))
        ));
        let mut h = Hasher::default();
        h.update(b"a");
        h.update(b"bc");
        assert_eq!(h.finish(), d);
    }
}
