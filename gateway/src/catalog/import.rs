//! `server.json` + curation → a manifest and what to build the image from. The MCP Registry
//! says what a server is (its packages, its variables, which are secret); the curation says
//! what it may do. Every secret variable must be curated (where it may be sent and how), and
//! everything curated must exist in server.json: a mismatch is refused naming the variable.
//!
//! Packages: `npm` and `pypi` become the image builder's `npm:PKG@VER` / `pypi:PKG==VER`; an
//! `oci` package is the image itself, which must carry the label
//! `io.modelcontextprotocol.server.name` equal to server.json's name ([`check_oci_label`]:
//! the MCP Registry's proof that the image belongs to that server). A server with only remotes
//! is refused: someone else runs it, so there is nothing to sandbox. This module reads no
//! files and knows nothing of signing.

use std::collections::BTreeMap;

pub use crate::image::build::SERVER_NAME_LABEL;
use crate::manifest::{Credential, Manifest, ManifestError};

use super::curation::Curation;
use super::entry::Source;
use super::mcp_registry::{Package, ServerJson};

/// What the image is built from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BuildSpec {
    Npm {
        package: String,
        version: String,
    },
    Pypi {
        package: String,
        version: String,
    },
    /// An image reference as server.json gives it (usually a tag: the author pins the digest).
    Oci {
        reference: String,
    },
}

impl BuildSpec {
    /// `npm:PKG@VER`, `pypi:PKG==VER` (what `gigmcp image build` takes), or the reference.
    pub fn spec(&self) -> String {
        match self {
            BuildSpec::Npm { package, version } => format!("npm:{package}@{version}"),
            BuildSpec::Pypi { package, version } => format!("pypi:{package}=={version}"),
            BuildSpec::Oci { reference } => reference.clone(),
        }
    }
}

/// What an import gives: the entry's manifest, its build and its provenance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Imported {
    pub manifest: Manifest,
    pub build: BuildSpec,
    pub source: Source,
    pub description: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("{name}: only remotes ({url}): the server runs elsewhere, there is nothing to sandbox")]
    RemoteOnly { name: String, url: String },
    #[error("{name}: no npm, pypi or oci package with the stdio transport")]
    NoPackage { name: String },
    #[error("{name}: package {identifier} has no exact version")]
    NoVersion { name: String, identifier: String },
    #[error("secret variable {0} is not curated: say which hosts it may reach and how")]
    SecretNotCurated(String),
    #[error("curated secret {0} is not a secret variable of server.json")]
    UnknownSecret(String),
    #[error("curated env {0} is not a non-secret variable of server.json")]
    UnknownEnv(String),
    #[error("required variable {0} has no default: give it in the curation's [env]")]
    MissingEnv(String),
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error("image label {SERVER_NAME_LABEL} is {found:?}, server.json's name is {expected:?}")]
    Label {
        expected: String,
        found: Option<String>,
    },
}

pub fn import(server: &ServerJson, curation: &Curation) -> Result<Imported, ImportError> {
    let package = pick_package(server)?;
    let build = build_spec(server, package)?;
    let vars = &package.environment_variables;
    for v in vars.iter().filter(|v| v.is_secret) {
        if !curation.secrets.iter().any(|s| s.env == v.name) {
            return Err(ImportError::SecretNotCurated(v.name.clone()));
        }
    }
    let secret = |name: &str| vars.iter().any(|v| v.is_secret && v.name == name);
    if let Some(s) = curation.secrets.iter().find(|s| !secret(&s.env)) {
        return Err(ImportError::UnknownSecret(s.env.clone()));
    }
    let plain = |name: &str| vars.iter().any(|v| !v.is_secret && v.name == name);
    if let Some(k) = curation.env.keys().find(|k| !plain(k)) {
        return Err(ImportError::UnknownEnv(k.clone()));
    }
    let mut env = BTreeMap::new();
    for v in vars.iter().filter(|v| !v.is_secret) {
        match curation.env.get(&v.name).or(v.default.as_ref()) {
            Some(value) => {
                env.insert(v.name.clone(), value.clone());
            }
            None if v.is_required => return Err(ImportError::MissingEnv(v.name.clone())),
            None => {}
        }
    }
    let credentials = curation
        .secrets
        .iter()
        .map(|s| Credential {
            name: s.env.clone(),
            description: vars
                .iter()
                .find(|v| v.name == s.env)
                .and_then(|v| v.description.clone())
                .unwrap_or_default(),
            hosts: s.hosts.clone(),
            inject: s.inject.clone(),
        })
        .collect();
    let manifest = Manifest {
        name: curation.name.clone(),
        version: server.version.clone(),
        command: None,
        env,
        workdir: None,
        egress: curation.egress.clone(),
        credentials,
        tools: curation.tools.clone(),
        transparent: None,
        limits: curation.limits,
        private_ranges: curation.private_ranges.clone(),
    };
    manifest.check()?;
    Ok(Imported {
        manifest,
        source: Source {
            registry_name: server.name.clone(),
            package: build.spec(),
        },
        build,
        description: server.description.as_deref().map(one_line),
    })
}

/// An MCP Registry description as an entry may hold it (`Entry` refuses control characters):
/// whitespace controls (line breaks, tabs) become spaces, other controls are dropped.
fn one_line(description: &str) -> String {
    description
        .chars()
        .filter_map(|c| match c {
            c if c.is_control() && c.is_whitespace() => Some(' '),
            c if c.is_control() => None,
            c => Some(c),
        })
        .collect()
}

/// The first npm, pypi or oci package run over stdio (the only transport a sandbox speaks).
fn pick_package(server: &ServerJson) -> Result<&Package, ImportError> {
    let runnable = |p: &&Package| {
        matches!(p.registry_type.as_str(), "npm" | "pypi" | "oci") && p.transport.kind == "stdio"
    };
    if let Some(p) = server.packages.iter().find(runnable) {
        return Ok(p);
    }
    match server.remotes.first() {
        Some(remote) if server.packages.is_empty() => Err(ImportError::RemoteOnly {
            name: server.name.clone(),
            url: remote.url.chars().take(200).collect(),
        }),
        _ => Err(ImportError::NoPackage {
            name: server.name.clone(),
        }),
    }
}

fn build_spec(server: &ServerJson, p: &Package) -> Result<BuildSpec, ImportError> {
    if p.registry_type == "oci" {
        return Ok(BuildSpec::Oci {
            reference: p.identifier.clone(),
        });
    }
    // An exact version only: a range would build whatever is newest on the day.
    let version = p
        .version
        .clone()
        .filter(|v| {
            !v.is_empty()
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b".+-_".contains(&b))
        })
        .ok_or_else(|| ImportError::NoVersion {
            name: server.name.clone(),
            identifier: p.identifier.clone(),
        })?;
    let package = p.identifier.clone();
    Ok(if p.registry_type == "npm" {
        BuildSpec::Npm { package, version }
    } else {
        BuildSpec::Pypi { package, version }
    })
}

/// An OCI package's image must say it is the server server.json names.
pub fn check_oci_label(
    server_name: &str,
    labels: Option<&BTreeMap<String, String>>,
) -> Result<(), ImportError> {
    let found = labels.and_then(|l| l.get(SERVER_NAME_LABEL));
    if found.map(String::as_str) != Some(server_name) {
        return Err(ImportError::Label {
            expected: server_name.to_owned(),
            found: found.cloned(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::curation;
    use super::super::mcp_registry::parse_page;
    use super::*;

    fn snapshot() -> Vec<ServerJson> {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/mcp-registry/");
        ["servers-page-1.json", "servers-page-2.json"]
            .iter()
            .flat_map(|f| {
                parse_page(&std::fs::read(format!("{dir}{f}")).unwrap())
                    .unwrap()
                    .servers
            })
            .map(|e| e.server)
            .collect()
    }

    fn server(name: &str) -> ServerJson {
        snapshot().into_iter().find(|s| s.name == name).unwrap()
    }

    #[test]
    fn line_breaks_in_a_registry_description_become_spaces_and_other_controls_are_dropped() {
        assert_eq!(
            one_line("Tells\nthe\r\ntime\tand\u{85}date\u{1b}[2K\u{7}."),
            "Tells the  time and date[2K."
        );
    }

    const ISSUES: &str = r#"
        name = "issues"
        tools = ["create_issue"]
        [[egress]]
        host = "api.issues.example.com"
        [[secrets]]
        env = "ISSUES_TOKEN"
        hosts = ["api.issues.example.com"]
        inject = { type = "header", name = "Authorization", format = "Bearer {}" }
    "#;

    #[test]
    fn an_npm_server_imports_as_an_npm_build_with_its_curated_entitlements() {
        let s = server("io.github.example-org/issues");
        let got = import(&s, &curation::parse(ISSUES).unwrap()).unwrap();
        assert_eq!(got.build.spec(), "npm:@example-org/issues-mcp@1.4.2");
        assert_eq!(got.manifest.name, "issues");
        assert_eq!(got.manifest.version, "1.4.2");
        assert_eq!(got.manifest.credentials[0].name, "ISSUES_TOKEN");
        assert_eq!(
            got.manifest.credentials[0].description,
            "API token with issues:write"
        );
        assert_eq!(
            got.manifest.env["ISSUES_API_URL"],
            "https://api.issues.example.com"
        );
        assert_eq!(got.source.registry_name, "io.github.example-org/issues");
    }

    #[test]
    fn the_reference_servers_import_as_npm_and_pypi_builds() {
        let everything = import(
            &server("io.github.modelcontextprotocol/everything"),
            &curation::parse("name = \"everything\"\ntools = [\"echo\"]").unwrap(),
        )
        .unwrap();
        assert_eq!(
            everything.build.spec(),
            "npm:@modelcontextprotocol/server-everything@2026.8.31"
        );
        let time = import(
            &server("io.github.modelcontextprotocol/time"),
            &curation::parse("name = \"time\"\ntools = [\"get_current_time\"]").unwrap(),
        )
        .unwrap();
        assert_eq!(time.build.spec(), "pypi:mcp-server-time==2026.10.19");
        assert!(time.manifest.egress.is_empty());
    }

    #[test]
    fn an_uncurated_secret_variable_is_refused_naming_it() {
        let s = server("io.github.example-org/issues");
        let c = curation::parse("name = \"issues\"\ntools = [\"x\"]").unwrap();
        assert!(
            matches!(import(&s, &c), Err(ImportError::SecretNotCurated(v)) if v == "ISSUES_TOKEN")
        );
    }

    #[test]
    fn a_curated_name_server_json_does_not_have_is_refused_naming_it() {
        let s = server("io.github.example-org/issues");
        let extra = ISSUES.to_owned()
            + "[[secrets]]\nenv = \"OTHER\"\nhosts = [\"api.issues.example.com\"]\ninject = { type = \"basic\" }\n";
        let c = curation::parse(&extra).unwrap();
        assert!(matches!(import(&s, &c), Err(ImportError::UnknownSecret(v)) if v == "OTHER"));
        let env = ISSUES.replacen("tools", "env = { NOPE = \"1\" }\ntools", 1);
        let c = curation::parse(&env).unwrap();
        assert!(matches!(import(&s, &c), Err(ImportError::UnknownEnv(v)) if v == "NOPE"));
    }

    #[test]
    fn a_server_with_only_remotes_is_refused_as_nothing_to_sandbox() {
        let s = server("com.example/hosted-search");
        let e = import(&s, &curation::parse("name = \"search\"").unwrap()).unwrap_err();
        assert!(matches!(e, ImportError::RemoteOnly { .. }), "{e}");
        assert!(e.to_string().contains("nothing to sandbox"), "{e}");
    }

    #[test]
    fn an_oci_package_needs_the_server_name_label_of_its_server() {
        let s = server("io.github.example-org/weather");
        let c = "name = \"weather\"\ntools = [\"forecast\"]\n[[egress]]\nhost = \"api.weather.example.com\"\n\
                 [[secrets]]\nenv = \"WEATHER_API_KEY\"\nhosts = [\"api.weather.example.com\"]\n\
                 inject = { type = \"query\", param = \"key\" }\n";
        let got = import(&s, &curation::parse(c).unwrap()).unwrap();
        assert_eq!(
            got.build,
            BuildSpec::Oci {
                reference: "ghcr.io/example-org/weather-mcp:0.9.1".into()
            }
        );
        let mut labels = BTreeMap::from([(SERVER_NAME_LABEL.to_owned(), s.name.clone())]);
        assert!(check_oci_label(&s.name, Some(&labels)).is_ok());
        labels.insert(
            SERVER_NAME_LABEL.to_owned(),
            "io.github.someone/else".into(),
        );
        let e = check_oci_label(&s.name, Some(&labels))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("io.github.someone/else") && e.contains(&s.name),
            "{e}"
        );
        assert!(matches!(
            check_oci_label(&s.name, None),
            Err(ImportError::Label { found: None, .. })
        ));
    }
}
