//! Image references: `HOST[:PORT]/REPO[/…][:TAG][@sha256:<hex>]`. The registry host is always
//! written out (there is no default registry to guess), repository components follow the
//! distribution spec's grammar, and a tag is kept for display and push only: a pull goes by
//! digest, so what runs is what the admin pinned, whatever the tag points at today.

use std::fmt;

use super::digest::{Digest, DigestError};

/// A parsed image reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// `host[:port]`, lower-cased: the key of `[[images.registries]]`.
    pub registry: String,
    /// `name[/name…]`, as it appears in `/v2/<repository>/…`.
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<Digest>,
}

/// Why a string is not an image reference.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReferenceError {
    #[error("image reference {0:?} names no registry host: write HOST[:PORT]/REPO@sha256:<hex>")]
    NoRegistry(String),
    #[error("image reference {reference:?}: registry {host:?} is not host[:port]")]
    Registry { reference: String, host: String },
    #[error(
        "image reference {reference:?}: repository component {component:?} is not lowercase \
         letters and digits joined by '.', '_', '__' or '-'"
    )]
    Repository {
        reference: String,
        component: String,
    },
    #[error(
        "image reference {reference:?}: tag {tag:?} is not [A-Za-z0-9_][A-Za-z0-9_.-]{{0,127}}"
    )]
    Tag { reference: String, tag: String },
    #[error("image reference {reference:?}: {source}")]
    Digest {
        reference: String,
        source: DigestError,
    },
    #[error("image reference {0:?} is longer than 4096 bytes")]
    TooLong(String),
}

impl Reference {
    pub fn parse(s: &str) -> Result<Self, ReferenceError> {
        let shown = || s.chars().take(120).collect::<String>();
        if s.len() > 4096 {
            return Err(ReferenceError::TooLong(shown()));
        }
        let (rest, digest) = match s.split_once('@') {
            Some((rest, d)) => {
                let d = Digest::parse(d).map_err(|source| ReferenceError::Digest {
                    reference: shown(),
                    source,
                })?;
                (rest, Some(d))
            }
            None => (s, None),
        };
        let Some((host, path)) = rest.split_once('/') else {
            return Err(ReferenceError::NoRegistry(shown()));
        };
        // A first component without '.' or ':' (and not localhost) is a Docker Hub path
        // (`library/x`): refused rather than guessed.
        if !(host.contains('.') || host.contains(':') || host == "localhost") {
            return Err(ReferenceError::NoRegistry(shown()));
        }
        if !valid_host(host) {
            return Err(ReferenceError::Registry {
                reference: shown(),
                host: host.into(),
            });
        }
        // The tag is after the last ':' of the last path component.
        let (repository, tag) = match path.rsplit_once(':') {
            Some((repo, tag)) if !tag.contains('/') => (repo, Some(tag)),
            _ => (path, None),
        };
        for component in repository.split('/') {
            if !valid_component(component) {
                return Err(ReferenceError::Repository {
                    reference: shown(),
                    component: component.into(),
                });
            }
        }
        if let Some(tag) = tag
            && !valid_tag(tag)
        {
            return Err(ReferenceError::Tag {
                reference: shown(),
                tag: tag.into(),
            });
        }
        Ok(Self {
            registry: host.to_ascii_lowercase(),
            repository: repository.into(),
            tag: tag.map(str::to_owned),
            digest,
        })
    }

    /// The same image pinned to `digest` (after a push, or once an index was resolved).
    pub fn with_digest(&self, digest: Digest) -> Self {
        Self {
            digest: Some(digest),
            ..self.clone()
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

fn valid_host(host: &str) -> bool {
    let port_ok = |p: &str| p.parse::<u16>().is_ok_and(|p| p != 0);
    if let Some(rest) = host.strip_prefix('[') {
        let Some((v6, tail)) = rest.split_once(']') else {
            return false;
        };
        return v6.parse::<std::net::Ipv6Addr>().is_ok()
            && (tail.is_empty() || tail.strip_prefix(':').is_some_and(port_ok));
    }
    let (name, port) = match host.split_once(':') {
        Some((n, p)) => (n, Some(p)),
        None => (host, None),
    };
    !name.is_empty()
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
        && port.is_none_or(port_ok)
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*` (distribution spec, "path-component").
fn valid_component(c: &str) -> bool {
    let b = c.as_bytes();
    if b.is_empty() || !is_alnum(b[0]) || !is_alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if is_alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !is_alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-');
        if !ok {
            return false;
        }
    }
    true
}

fn is_alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

fn valid_tag(t: &str) -> bool {
    let b = t.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter()
            .all(|&x| x.is_ascii_alphanumeric() || matches!(x, b'_' | b'.' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_reference_parses_and_prints_back() {
        let d = Digest::of(b"m");
        let s = format!("reg.example:5000/team/mcp-server__x:v1.2@{d}");
        let r = Reference::parse(&s).unwrap();
        assert_eq!(r.registry, "reg.example:5000");
        assert_eq!(r.repository, "team/mcp-server__x");
        assert_eq!(r.tag.as_deref(), Some("v1.2"));
        assert_eq!(r.digest, Some(d.clone()));
        assert_eq!(r.to_string(), s);
        let no_tag = Reference::parse(&format!("127.0.0.1:5000/a@{d}")).unwrap();
        assert_eq!((no_tag.tag, no_tag.repository.as_str()), (None, "a"));
        let v6 = Reference::parse(&format!("[::1]:5000/a/b@{d}")).unwrap();
        assert_eq!(v6.registry, "[::1]:5000");
        let tag_only = Reference::parse("localhost:5000/a:latest").unwrap();
        assert_eq!(tag_only.digest, None);
    }

    #[test]
    fn bad_references_are_refused_with_the_part_named() {
        let d = Digest::of(b"m");
        assert!(matches!(
            Reference::parse(&format!("library/node@{d}")),
            Err(ReferenceError::NoRegistry(_))
        ));
        assert!(matches!(
            Reference::parse(&format!("node@{d}")),
            Err(ReferenceError::NoRegistry(_))
        ));
        let e = Reference::parse(&format!("reg.example/Team/x@{d}")).unwrap_err();
        assert!(e.to_string().contains("\"Team\""), "{e}");
        assert!(Reference::parse(&format!("reg.example/a/../b@{d}")).is_err());
        assert!(Reference::parse(&format!("reg.example/a//b@{d}")).is_err());
        assert!(Reference::parse("reg.example/a:-x").is_err());
        assert!(Reference::parse("reg.example:99999/a:x").is_err());
        assert!(Reference::parse("reg_example.com/a:x").is_err());
        assert!(matches!(
            Reference::parse("reg.example/a@sha512:00"),
            Err(ReferenceError::Digest { .. })
        ));
    }
}
