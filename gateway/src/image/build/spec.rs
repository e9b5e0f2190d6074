//! What to build: `npm:NAME@VERSION`, `pypi:NAME==VERSION` or `dir:PATH`. Versions are exact
//! (a range would make the same spec build different code on different days), and names and
//! versions are held to their registries' character sets, which contain no shell, path or URL
//! syntax: the install step's command line is built from them.

use std::path::PathBuf;

/// The runtime a package needs, and so the base it is built on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ecosystem {
    Npm,
    Pypi,
}

impl Ecosystem {
    pub fn name(self) -> &'static str {
        match self {
            Self::Npm => "npm",
            Self::Pypi => "pypi",
        }
    }
}

/// A parsed build spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Spec {
    Npm {
        name: String,
        version: String,
    },
    Pypi {
        name: String,
        version: String,
    },
    /// A local package source (its `package.json`, or `pyproject.toml`/`setup.py`, says which).
    Dir {
        path: PathBuf,
        ecosystem: Ecosystem,
    },
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SpecError {
    #[error("{0:?}: expected npm:NAME@VERSION, pypi:NAME==VERSION or dir:PATH")]
    Form(String),
    #[error("{spec:?}: the package name {name:?} is not a valid {registry} name")]
    Name {
        spec: String,
        name: String,
        registry: &'static str,
    },
    #[error(
        "{spec:?}: the version {version:?} is not one exact version (ranges, tags and URLs are \
         refused: the same spec must always build the same code)"
    )]
    Version { spec: String, version: String },
    #[error("{0}: no package.json, pyproject.toml or setup.py: not a package source")]
    NotAPackage(String),
}

impl Spec {
    pub fn parse(text: &str) -> Result<Self, SpecError> {
        let form = || SpecError::Form(text.chars().take(200).collect());
        let (kind, rest) = text.split_once(':').ok_or_else(form)?;
        match kind {
            "npm" => {
                // The version follows the last `@` that is not the scope's.
                let at = rest
                    .get(1..)
                    .and_then(|r| r.rfind('@'))
                    .map(|i| i + 1)
                    .ok_or_else(form)?;
                let (name, version) = (&rest[..at], &rest[at + 1..]);
                if !valid_npm_name(name) {
                    return Err(SpecError::Name {
                        spec: text.into(),
                        name: name.into(),
                        registry: "npm",
                    });
                }
                check_version(text, version, b".+-")?;
                Ok(Self::Npm {
                    name: name.into(),
                    version: version.into(),
                })
            }
            "pypi" => {
                let (name, version) = rest.split_once("==").ok_or_else(form)?;
                if !valid_pypi_name(name) {
                    return Err(SpecError::Name {
                        spec: text.into(),
                        name: name.into(),
                        registry: "PyPI",
                    });
                }
                check_version(text, version, b".+!")?;
                Ok(Self::Pypi {
                    name: name.into(),
                    version: version.into(),
                })
            }
            "dir" if !rest.is_empty() => {
                let path = PathBuf::from(rest);
                let ecosystem = if path.join("package.json").is_file() {
                    Ecosystem::Npm
                } else if path.join("pyproject.toml").is_file() || path.join("setup.py").is_file() {
                    Ecosystem::Pypi
                } else {
                    return Err(SpecError::NotAPackage(path.display().to_string()));
                };
                Ok(Self::Dir { path, ecosystem })
            }
            _ => Err(form()),
        }
    }

    pub fn ecosystem(&self) -> Ecosystem {
        match self {
            Self::Npm { .. } => Ecosystem::Npm,
            Self::Pypi { .. } => Ecosystem::Pypi,
            Self::Dir { ecosystem, .. } => *ecosystem,
        }
    }

    /// The version, for the layout's ref name (`local` for a directory).
    pub fn version(&self) -> &str {
        match self {
            Self::Npm { version, .. } | Self::Pypi { version, .. } => version,
            Self::Dir { .. } => "local",
        }
    }
}

impl std::fmt::Display for Spec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Npm { name, version } => write!(f, "npm:{name}@{version}"),
            Self::Pypi { name, version } => write!(f, "pypi:{name}=={version}"),
            Self::Dir { path, .. } => write!(f, "dir:{}", path.display()),
        }
    }
}

/// npm's rules: at most 214 characters, lower case URL-safe characters, optionally one
/// `@scope/` prefix; neither part starts with `.` or `_`.
fn valid_npm_name(name: &str) -> bool {
    let part = |p: &str| {
        !p.is_empty()
            && !p.starts_with(['.', '_'])
            && p.bytes()
                .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~'))
    };
    name.len() <= 214
        && match name.strip_prefix('@') {
            Some(scoped) => scoped
                .split_once('/')
                .is_some_and(|(scope, pkg)| part(scope) && part(pkg)),
            None => part(name),
        }
}

/// PEP 508 names: letters, digits, `.`, `_`, `-`, starting and ending alphanumerically.
fn valid_pypi_name(name: &str) -> bool {
    let ends = |b: Option<u8>| b.is_some_and(|b| b.is_ascii_alphanumeric());
    name.len() <= 128
        && ends(name.bytes().next())
        && ends(name.bytes().last())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// One exact version: starts with a digit, then digits, letters and `extra`.
fn check_version(spec: &str, version: &str, extra: &[u8]) -> Result<(), SpecError> {
    let ok = version.len() <= 64
        && version.bytes().next().is_some_and(|b| b.is_ascii_digit())
        && version
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || extra.contains(&b));
    if ok {
        Ok(())
    } else {
        Err(SpecError::Version {
            spec: spec.into(),
            version: version.into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_npm_and_pypi_specs_parse_and_everything_else_is_refused_by_name() {
        assert_eq!(
            Spec::parse("npm:@modelcontextprotocol/server-everything@2026.8.31").unwrap(),
            Spec::Npm {
                name: "@modelcontextprotocol/server-everything".into(),
                version: "2026.8.31".into()
            }
        );
        assert_eq!(
            Spec::parse("pypi:mcp-server-time==2026.10.19").unwrap(),
            Spec::Pypi {
                name: "mcp-server-time".into(),
                version: "2026.10.19".into()
            }
        );
        for bad in [
            "npm:left-pad@^1.0.0",
            "npm:left-pad@latest",
            "npm:left-pad@1.0.0;curl",
            "pypi:requests==>=2",
            "pypi:requests==2.0 ",
        ] {
            assert!(
                matches!(Spec::parse(bad), Err(SpecError::Version { .. })),
                "{bad}"
            );
        }
        for bad in ["npm:Left-Pad@1.0.0", "npm:@x/../y@1.0.0", "pypi:-x==1"] {
            assert!(
                matches!(Spec::parse(bad), Err(SpecError::Name { .. })),
                "{bad}"
            );
        }
        for bad in ["left-pad", "npm:left-pad", "pypi:x", "cargo:x@1", "dir:"] {
            assert!(matches!(Spec::parse(bad), Err(SpecError::Form(_))), "{bad}");
        }
    }
}
