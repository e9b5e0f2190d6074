//! Types that hold secret material. None of them prints its contents: `Debug` is redacted and
//! there is no `Display`, so a value cannot reach a log line or an error message by accident.

use std::fmt;

use zeroize::Zeroizing;

/// Largest secret value accepted (a PEM bundle fits; a file dump does not).
pub const MAX_VALUE_LEN: usize = 64 * 1024;

/// A secret's plaintext, wiped from memory when dropped.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretValue(Zeroizing<Vec<u8>>);

impl SecretValue {
    pub fn new(bytes: Zeroizing<Vec<u8>>) -> Self {
        Self(bytes)
    }

    /// The plaintext. Callers must not log, format or persist it.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<&[u8]> for SecretValue {
    fn from(bytes: &[u8]) -> Self {
        Self(Zeroizing::new(bytes.to_vec()))
    }
}

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretValue(<redacted, {} bytes>)", self.0.len())
    }
}

/// A secret's name: what admins, manifests and the audit trail refer to. Names are not secret.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SecretName(String);

/// Why a secret name was refused.
#[derive(Debug, thiserror::Error)]
#[error(
    "invalid secret name {shown:?}: use 1 to 128 characters from A-Z a-z 0-9 _ . -, starting with a letter"
)]
pub struct InvalidSecretName {
    shown: String,
}

impl SecretName {
    pub fn parse(name: &str) -> Result<Self, InvalidSecretName> {
        let ok = (1..=128).contains(&name.len())
            && name.starts_with(|c: char| c.is_ascii_alphabetic())
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
        if ok {
            Ok(Self(name.to_owned()))
        } else {
            // Show a bounded, printable prefix only: the "name" could be a pasted value.
            let shown: String = name.chars().take(16).filter(|c| !c.is_control()).collect();
            Err(InvalidSecretName { shown })
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SecretName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_value() {
        let v = SecretValue::from(&b"hunter2-very-secret"[..]);
        let shown = format!("{v:?} {:?}", Some(&v));
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("19 bytes"), "{shown}");
    }

    #[test]
    fn names() {
        for good in ["GITHUB_TOKEN", "a", "slack.bot-token_2"] {
            SecretName::parse(good).unwrap();
        }
        for bad in ["", "1abc", "has space", "x/y", "ünicode", &"a".repeat(129)] {
            assert!(SecretName::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn invalid_name_error_is_bounded() {
        let err = SecretName::parse(&format!("ghp/{}", "x".repeat(100))).unwrap_err();
        assert!(err.to_string().len() < 200, "{err}");
    }
}
