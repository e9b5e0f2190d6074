//! What the admin is shown before a server from a registry is installed or upgraded, what they
//! must agree to, and each refusal (`InstallRefusal`): the entitlements and a confirmation,
//! private ranges approved exactly, credential names the vault already holds named and agreed
//! to one by one. Pure: `install.rs` runs the steps against the store, the images and the audit.

use ipnet::IpNet;

use super::AdminError;
use super::install::{Answer, Confirm};
use crate::catalog::entitlements::Entitlements;
use crate::catalog::install::{InstallError, Resolved};
use crate::manifest::Manifest;
use crate::store::{RegistryOrigin, ServerRecord, StoreError, now_ms};

/// Why an install, upgrade or remove was refused (besides the image's own refusals).
#[derive(Debug, thiserror::Error)]
pub enum InstallRefusal {
    #[error(transparent)]
    Catalog(#[from] InstallError),
    #[error("server {0} is installed already (choose another local name with --as)")]
    Exists(String),
    #[error("server {0} is not installed")]
    NotInstalled(String),
    #[error("server {0} was not installed from a registry: nothing to do here")]
    NotFromRegistry(String),
    #[error("{0}: not confirmed; nothing changed")]
    Declined(String),
    #[error(
        "{0}: no terminal to confirm on; read the entitlements (gigmcp registry show), then pass --yes"
    )]
    NoTerminal(String),
    #[error("{what}: the manifest asks to reach the private ranges {}; approve each exactly, with --approve-range CIDR", missing.join(", "))]
    RangesMissing { what: String, missing: Vec<String> },
    #[error("{what}: --approve-range {} is not asked for by the manifest", unasked.join(", "))]
    RangesUnasked { what: String, unasked: Vec<String> },
    #[error(
        "server {name}: the upgrade to {to} adds entitlements, which --yes alone never accepts:\n{diff}\nto accept exactly these, run it again with --approve {digest}"
    )]
    AddsEntitlements {
        name: String,
        to: String,
        diff: String,
        digest: String,
    },
    #[error(
        "server {name}: --approve {given} is not this upgrade's (to {to}: --approve {digest}):\n{diff}"
    )]
    WrongApproval {
        name: String,
        to: String,
        given: String,
        digest: String,
        diff: String,
    },
    #[error("server {0}: its installed manifest does not parse ({1}); remove and install it again")]
    InstalledManifest(String, String),
    #[error(
        "{what}: the vault already holds a secret named {}, which this server would receive (secrets are found by name); to give it that secret, pass --share-credential NAME for each",
        names.join(", ")
    )]
    SharedCredential { what: String, names: Vec<String> },
    #[error("server {0} changed while it was being upgraded; nothing replaced")]
    Raced(String),
    #[error("image {reference}: {source}")]
    Image {
        reference: String,
        source: Box<AdminError>,
    },
}

impl InstallRefusal {
    /// A short stable word for the audit's `reason=`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Catalog(e) => e.kind(),
            Self::Exists(_) => "exists",
            Self::NotInstalled(_) => "not-installed",
            Self::NotFromRegistry(_) => "not-from-registry",
            Self::Declined(_) => "declined",
            Self::NoTerminal(_) => "no-terminal",
            Self::RangesMissing { .. } | Self::RangesUnasked { .. } => "ranges",
            Self::AddsEntitlements { .. } => "entitlements",
            Self::WrongApproval { .. } => "approval",
            Self::InstalledManifest(..) => "manifest",
            Self::SharedCredential { .. } => "shared-credential",
            Self::Raced(_) => "raced",
            Self::Image { .. } => "image",
        }
    }
}

impl From<InstallError> for AdminError {
    fn from(e: InstallError) -> Self {
        InstallRefusal::from(e).into()
    }
}

/// The `reason=` of a failed install, upgrade or remove.
pub(super) fn reason(e: &AdminError) -> &'static str {
    match e {
        AdminError::Install(r) => r.kind(),
        AdminError::Catalog(_) => "registry",
        AdminError::Store(StoreError::InUse { .. }) => "in-use",
        AdminError::Refused(_) => "refused",
        _ => "error",
    }
}

pub(super) fn ask(confirm: Confirm<'_>, shown: &str, what: String) -> Result<(), InstallRefusal> {
    match confirm(shown) {
        Answer::Yes => Ok(()),
        Answer::Declined => Err(InstallRefusal::Declined(what)),
        Answer::NoTerminal => Err(InstallRefusal::NoTerminal(what)),
    }
}

/// Every range the manifest asks for approved exactly, and nothing else approved.
pub(super) fn ranges_agree(
    manifest: &Manifest,
    approved: &[IpNet],
    what: &str,
) -> Result<(), InstallRefusal> {
    let asked: Vec<IpNet> = manifest.private_ranges.iter().map(|r| r.cidr).collect();
    let missing: Vec<String> = asked
        .iter()
        .filter(|r| !approved.contains(r))
        .map(|r| r.to_string())
        .collect();
    if !missing.is_empty() {
        return Err(InstallRefusal::RangesMissing {
            what: what.to_owned(),
            missing,
        });
    }
    let unasked: Vec<String> = approved
        .iter()
        .filter(|r| !asked.contains(r))
        .map(|r| r.to_string())
        .collect();
    if !unasked.is_empty() {
        return Err(InstallRefusal::RangesUnasked {
            what: what.to_owned(),
            unasked,
        });
    }
    Ok(())
}

/// What the admin reads before agreeing to an install.
pub(super) fn install_text(r: &Resolved, local: &str, shared: &[Shared]) -> String {
    format!(
        "{}/{} as server {local}\nimage {}\nentitled to:\n{}{}",
        r.registry,
        r.target,
        r.entry.reference(),
        Entitlements::of(&r.entry.manifest).render(),
        shared_text(shared)
    )
}

/// A credential the manifest declares whose name the vault already holds a secret for.
#[derive(Debug, Clone)]
pub(super) struct Shared {
    pub(super) name: String,
    /// The installed servers whose manifests declare that credential too.
    pub(super) servers: Vec<String>,
}

/// The warning lines for credentials that would be shared (empty if none). Names are the
/// manifest's checked credential names; the front end sanitises every line it prints.
pub(super) fn shared_text(shared: &[Shared]) -> String {
    shared
        .iter()
        .map(|s| {
            let users = if s.servers.is_empty() {
                "no installed server yet".to_owned()
            } else {
                format!("server {}", s.servers.join(", "))
            };
            format!(
                "\nSHARED CREDENTIAL {}: the vault already holds a secret of this name, used by {users}; this server would receive that same secret (accept only with --share-credential {})",
                s.name, s.name
            )
        })
        .collect()
}

/// Every shared credential passed with --share-credential.
pub(super) fn shared_agree(
    shared: &[Shared],
    given: &[String],
    what: &str,
) -> Result<(), InstallRefusal> {
    let names: Vec<String> = shared
        .iter()
        .filter(|s| !given.contains(&s.name))
        .map(|s| s.name.clone())
        .collect();
    if names.is_empty() {
        return Ok(());
    }
    Err(InstallRefusal::SharedCredential {
        what: what.to_owned(),
        names,
    })
}

/// The record a registry entry becomes.
pub(super) fn record_of(name: &str, r: &Resolved, ranges: &[IpNet]) -> ServerRecord {
    ServerRecord {
        name: name.to_owned(),
        version: r.entry.version.clone(),
        image_digest: r.entry.image.digest.clone(),
        manifest: r.entry.manifest_json(),
        source: "registry".into(),
        approved_ranges: ranges.iter().map(|r| r.to_string()).collect(),
        installed_ms: now_ms(),
        origin: Some(RegistryOrigin {
            registry: r.registry.clone(),
            target: r.target.clone(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest_asking(ranges: &[&str]) -> Manifest {
        let private: Vec<_> = ranges
            .iter()
            .map(|r| serde_json::json!({"cidr": r, "reason": "the office printer"}))
            .collect();
        Manifest::from_json(
            &serde_json::json!({"name": "s", "version": "1", "private_ranges": private})
                .to_string(),
        )
        .unwrap()
    }

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|r| r.parse().unwrap()).collect()
    }

    fn random(prefix: &str) -> String {
        let mut b = [0u8; 4];
        getrandom::fill(&mut b).unwrap();
        format!("{prefix}{}", hex::encode(b))
    }

    #[test]
    fn a_credential_the_vault_holds_is_named_with_its_servers_and_refused_unless_shared() {
        let (name, other) = (random("TOKEN_"), random("OTHER_"));
        let (a, b) = (random("srv-a"), random("srv-b"));
        let shared = [
            Shared {
                name: name.clone(),
                servers: vec![a.clone(), b.clone()],
            },
            Shared {
                name: other.clone(),
                servers: vec![],
            },
        ];
        let text = shared_text(&shared);
        assert!(
            text.contains(&format!("SHARED CREDENTIAL {name}:"))
                && text.contains(&format!("used by server {a}, {b}"))
                && text.contains(&format!("--share-credential {name}")),
            "{text}"
        );
        assert!(
            text.contains(&format!("SHARED CREDENTIAL {other}:")),
            "{text}"
        );
        // --yes alone (no --share-credential) and a partial list are refused, naming the rest.
        for given in [vec![], vec![name.clone()]] {
            let err = shared_agree(&shared, &given, "r/s/1").unwrap_err();
            let InstallRefusal::SharedCredential { names, .. } = &err else {
                panic!("{err}");
            };
            assert!(names.contains(&other) && !names.iter().any(|n| given.contains(n)));
            assert_eq!(err.kind(), "shared-credential");
        }
        shared_agree(&shared, &[name, other], "r/s/1").unwrap();
    }

    #[test]
    fn no_shared_credential_shows_and_asks_nothing() {
        assert_eq!(shared_text(&[]), "");
        shared_agree(&[], &[], "r/s/1").unwrap();
    }

    #[test]
    fn every_private_range_the_manifest_asks_for_must_be_approved_exactly() {
        let m = manifest_asking(&["10.20.0.0/16", "192.168.7.0/24"]);
        assert!(ranges_agree(&m, &nets(&["192.168.7.0/24", "10.20.0.0/16"]), "x").is_ok());
        match ranges_agree(&m, &nets(&["10.20.0.0/16", "192.168.0.0/16"]), "x") {
            Err(InstallRefusal::RangesMissing { missing, .. }) => {
                assert_eq!(missing, vec!["192.168.7.0/24".to_owned()])
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_approval_the_manifest_does_not_ask_for_is_refused_by_name() {
        let m = manifest_asking(&["10.20.0.0/16"]);
        match ranges_agree(&m, &nets(&["10.20.0.0/16", "10.9.0.0/24"]), "x") {
            Err(e @ InstallRefusal::RangesUnasked { .. }) => {
                assert!(e.to_string().contains("10.9.0.0/24"), "{e}");
                assert_eq!(e.kind(), "ranges");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_answer_other_than_yes_refuses_saying_how_to_agree() {
        let mut no = |_: &str| Answer::Declined;
        assert!(matches!(
            ask(&mut no, "", "w".into()),
            Err(InstallRefusal::Declined(_))
        ));
        let mut nobody = |_: &str| Answer::NoTerminal;
        let e = ask(&mut nobody, "", "w".into()).unwrap_err();
        assert!(e.to_string().contains("--yes"), "{e}");
        let mut shown = String::new();
        let mut yes = |s: &str| {
            shown = s.to_owned();
            Answer::Yes
        };
        assert!(ask(&mut yes, "the entitlements", "w".into()).is_ok());
        assert_eq!(shown, "the entitlements");
    }
}
