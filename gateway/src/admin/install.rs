//! Servers from signed registries, on the admin side: `search`, `show`, `install`, `upgrade`
//! and `remove`. An install is, in this order: the entry the spec names in the verified index
//! (`catalog::install`: parsed strictly, linted) → its entitlements shown and agreed to (the
//! front end's [`Confirm`]: `--yes`, or a typed "yes" on a terminal) → every private range
//! the manifest asks for approved by an exactly matching range, and no other → the image
//! pulled by the entry's digest, its size checked against the entry's, and checked to run
//! (`images.rs`, the path `server add --image` takes) → the record, with its origin. An
//! upgrade goes to a newer entry of the same registry and shows the entitlement diff: a diff
//! that only removes is agreed to like an install, one that adds anything is accepted only
//! with `--approve <digest>` quoting that exact diff (never by `--yes` alone). The old image
//! is left for `image gc`.
//!
//! Each success is audited (`server.install`, `server.upgrade`, `server.remove`), each
//! refusal as `server.refused` with `reason=`; a refusal changes nothing (an image the call
//! pulled goes with it). This layer starts and stops nothing: the daemon reads the records
//! when it next starts a server, and the launcher checks the index again then
//! (`sandbox.rs`).

use std::time::SystemTime;

use ipnet::IpNet;
use sha2::{Digest, Sha256};

use super::AdminError;
use super::images::{Added, ImageSource, WithImage};
use super::local::LocalAdmin;
use crate::audit::Outcome;
use crate::catalog::entitlements::Entitlements;
use crate::catalog::install::{self as catalog, Hit, InstallError, Resolved};
use crate::catalog::lint::LintPolicy;
use crate::catalog::pick::Spec;
use crate::catalog::state;
use crate::manifest::Manifest;
use crate::store::{RegistryOrigin, ServerRecord, StoreError, now_ms};

/// The admin's answer to what they were shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    Yes,
    Declined,
    /// Nobody can be asked (no terminal) and nothing said yes beforehand.
    NoTerminal,
}

/// Shows the admin what a server will be entitled to (or how that changes) and returns their
/// answer: the front end's half of a confirmation.
pub type Confirm<'a> = &'a mut dyn FnMut(&str) -> Answer;

/// A server installed from a registry.
#[derive(Debug, Clone)]
pub struct Installed {
    pub record: ServerRecord,
    pub registry: String,
    pub target: String,
    /// What the sandbox overrides of the image's configuration (`image::plan`).
    pub notes: Vec<String>,
}

/// What an upgrade did.
#[derive(Debug, Clone)]
pub enum Upgraded {
    /// The registry lists nothing newer than the installed version.
    Current { version: String },
    Replaced {
        record: Box<ServerRecord>,
        from: String,
        /// The entitlement diff, one line each (`+ …`, `- …`).
        diff: String,
    },
}

/// One entry as `show` presents it.
#[derive(Debug, Clone)]
pub struct Shown {
    pub registry: String,
    pub target: String,
    pub description: Option<String>,
    pub image: String,
    pub entitlements: String,
}

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
fn reason(e: &AdminError) -> &'static str {
    match e {
        AdminError::Install(r) => r.kind(),
        AdminError::Catalog(_) => "registry",
        AdminError::Store(StoreError::InUse { .. }) => "in-use",
        AdminError::Refused(_) => "refused",
        _ => "error",
    }
}

fn ask(confirm: Confirm<'_>, shown: &str, what: String) -> Result<(), InstallRefusal> {
    match confirm(shown) {
        Answer::Yes => Ok(()),
        Answer::Declined => Err(InstallRefusal::Declined(what)),
        Answer::NoTerminal => Err(InstallRefusal::NoTerminal(what)),
    }
}

/// Every range the manifest asks for approved exactly, and nothing else approved.
fn ranges_agree(manifest: &Manifest, approved: &[IpNet], what: &str) -> Result<(), InstallRefusal> {
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
fn install_text(r: &Resolved, local: &str, shared: &[Shared]) -> String {
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
struct Shared {
    name: String,
    /// The installed servers whose manifests declare that credential too.
    servers: Vec<String>,
}

/// The warning lines for credentials that would be shared (empty if none). Names are the
/// manifest's checked credential names; the front end sanitises every line it prints.
fn shared_text(shared: &[Shared]) -> String {
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
fn shared_agree(shared: &[Shared], given: &[String], what: &str) -> Result<(), InstallRefusal> {
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
fn record_of(name: &str, r: &Resolved, ranges: &[IpNet]) -> ServerRecord {
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

impl LocalAdmin {
    /// The credentials of `manifest` (except those named in `already`) whose names the vault
    /// holds a secret for, with the servers (but `except`) declaring each.
    fn shared_credentials(
        &self,
        manifest: &Manifest,
        already: &[String],
        except: &str,
    ) -> Result<Vec<Shared>, AdminError> {
        let mut shared = Vec::new();
        for c in &manifest.credentials {
            if already.contains(&c.name) || self.records().secret_get(&c.name)?.is_none() {
                continue;
            }
            let servers = self
                .records()
                .server_list()?
                .into_iter()
                .filter(|s| s.name != except)
                .filter(|s| {
                    Manifest::from_json(&s.manifest)
                        .is_ok_and(|m| m.credentials.iter().any(|x| x.name == c.name))
                })
                .map(|s| s.name)
                .collect();
            shared.push(Shared {
                name: c.name.clone(),
                servers,
            });
        }
        Ok(shared)
    }

    /// Audits an install, upgrade or remove: `action` on success, `server.refused` with
    /// the reason otherwise.
    fn audited_install<T>(
        &self,
        action: &str,
        target: &str,
        result: Result<T, AdminError>,
        detail: impl FnOnce(&T) -> String,
    ) -> Result<T, AdminError> {
        let verb = action.trim_start_matches("server.");
        let (action, outcome, text) = match &result {
            Ok(v) => (action, Outcome::Ok, detail(v)),
            Err(e) => (
                "server.refused",
                Outcome::Denied,
                format!("action={verb} reason={} {e}", reason(e)),
            ),
        };
        self.auditor()
            .record(action, target, outcome, &text)
            .map_err(AdminError::Audit)?;
        result
    }

    /// `install_server`, audited under the local name the install would have, whatever
    /// the outcome.
    pub(super) fn install_audited(
        &self,
        spec: &str,
        local_name: Option<&str>,
        approved: &[IpNet],
        shared: &[String],
        confirm: Confirm<'_>,
    ) -> Result<Installed, AdminError> {
        let result = self.install_server(spec, local_name, approved, shared, confirm);
        let parsed = Spec::parse(spec).map(|s| s.name);
        let target = local_name.or(parsed.as_deref().ok()).unwrap_or(spec);
        self.audited_install("server.install", target, result, |i| {
            format!(
                "registry={} target={} image={} manifest_sha256={} approved_ranges=[{}] shared_credentials=[{}]",
                i.registry,
                i.target,
                i.record.image_digest,
                hex::encode(Sha256::digest(i.record.manifest.as_bytes())),
                i.record.approved_ranges.join(","),
                shared.join(",")
            )
        })
    }

    pub(super) fn upgrade_audited(
        &self,
        name: &str,
        to: Option<&str>,
        approve: Option<&str>,
        shared: &[String],
        confirm: Confirm<'_>,
    ) -> Result<Upgraded, AdminError> {
        let result = self.upgrade_server(name, to, approve, shared, confirm);
        // Who accepted it: the quoted digest, or --yes / a "yes" typed on the terminal.
        let accepted_by = if approve.is_some() {
            "approve"
        } else {
            "confirm"
        };
        self.audited_install("server.upgrade", name, result, |u| match u {
            Upgraded::Current { version } => format!("current version={version}"),
            Upgraded::Replaced { record, from, diff } => format!(
                "from={from} to={} target={} image={} manifest_sha256={} accepted_by={accepted_by} shared_credentials=[{}] diff=[{}]",
                record.version,
                record.origin.as_ref().map_or("", |o| o.target.as_str()),
                record.image_digest,
                hex::encode(Sha256::digest(record.manifest.as_bytes())),
                shared.join(","),
                diff.lines().collect::<Vec<_>>().join("; ")
            ),
        })
    }

    pub(super) fn remove_audited(&self, name: &str) -> Result<ServerRecord, AdminError> {
        let result = self.remove_server(name);
        self.audited_install("server.remove", name, result, |r| {
            format!(
                "image={} version={} (the image stays until image gc)",
                r.image_digest, r.version
            )
        })
    }

    fn limits(&self) -> crate::tuf::Limits {
        crate::tuf::Limits::default()
    }

    pub(super) fn search_registries(&self, text: &str) -> Result<Vec<Hit>, AdminError> {
        let views = state::load_all(self.records(), &self.limits())?;
        Ok(catalog::search(&views, text, &LintPolicy::default()))
    }

    pub(super) fn show_entry(&self, spec: &str) -> Result<Shown, AdminError> {
        let spec = Spec::parse(spec).map_err(InstallError::from)?;
        let views = state::load_all(self.records(), &self.limits())?;
        let r = catalog::resolve(&views, &spec, &LintPolicy::default(), SystemTime::now())?;
        Ok(Shown {
            image: r.entry.reference(),
            entitlements: Entitlements::of(&r.entry.manifest).render(),
            description: r.entry.description.clone(),
            registry: r.registry,
            target: r.target,
        })
    }

    /// Pulls the entry's image and writes `record` with `commit`; the image's refusals are
    /// named as such.
    fn commit_with_image(
        &self,
        r: &Resolved,
        record: ServerRecord,
        commit: impl FnOnce(&dyn crate::store::Store, &ServerRecord) -> Result<(), AdminError>,
    ) -> Result<Added, AdminError> {
        let reference = r.entry.reference();
        let image = |source: AdminError| match source {
            AdminError::Install(_) | AdminError::Audit(_) => source,
            other => InstallRefusal::Image {
                reference: reference.clone(),
                source: Box::new(other),
            }
            .into(),
        };
        let source = ImageSource::parse(&reference).map_err(image)?;
        let new = WithImage {
            name: &record.name.clone(),
            manifest: &r.entry.manifest,
            record,
            size: Some(r.entry.image.size),
        };
        self.with_image(&source, new, commit).map_err(image)
    }

    fn install_server(
        &self,
        spec: &str,
        local: Option<&str>,
        approved: &[IpNet],
        share: &[String],
        confirm: Confirm<'_>,
    ) -> Result<Installed, AdminError> {
        let spec = Spec::parse(spec).map_err(InstallError::from)?;
        let name = local.unwrap_or(&spec.name).to_owned();
        super::local::check_name("server", &name)?;
        if self.records().server_get(&name)?.is_some() {
            return Err(InstallRefusal::Exists(name).into());
        }
        let views = state::load_all(self.records(), &self.limits())?;
        let r = catalog::resolve(&views, &spec, &LintPolicy::default(), SystemTime::now())?;
        let what = format!("{}/{}", r.registry, r.target);
        let shared = self.shared_credentials(&r.entry.manifest, &[], &name)?;
        ask(confirm, &install_text(&r, &name, &shared), what.clone())?;
        shared_agree(&shared, share, &what)?;
        ranges_agree(&r.entry.manifest, approved, &what)?;
        self.check_approvals(approved)?;
        let record = record_of(&name, &r, approved);
        let added = self.commit_with_image(&r, record, |store, record| {
            if store.server_add(record)? {
                Ok(())
            } else {
                Err(InstallRefusal::Exists(record.name.clone()).into())
            }
        })?;
        Ok(Installed {
            record: added.record,
            registry: r.registry,
            target: r.target,
            notes: added.notes,
        })
    }

    fn upgrade_server(
        &self,
        name: &str,
        to: Option<&str>,
        approve: Option<&str>,
        share: &[String],
        confirm: Confirm<'_>,
    ) -> Result<Upgraded, AdminError> {
        let current = self
            .records()
            .server_get(name)?
            .ok_or_else(|| InstallRefusal::NotInstalled(name.to_owned()))?;
        let origin = current
            .origin
            .clone()
            .ok_or_else(|| InstallRefusal::NotFromRegistry(name.to_owned()))?;
        let (_, loaded) = state::load(self.records(), &origin.registry, &self.limits())?;
        let policy = LintPolicy::default();
        let now = SystemTime::now();
        let Some(next) =
            catalog::upgrade(&origin.registry, &loaded, &origin.target, to, &policy, now)?
        else {
            return Ok(Upgraded::Current {
                version: current.version,
            });
        };
        let old = Manifest::from_json(&current.manifest)
            .map_err(|e| InstallRefusal::InstalledManifest(name.to_owned(), e.to_string()))?;
        let diff = Entitlements::of(&old).diff(&Entitlements::of(&next.entry.manifest));
        let (from, to) = (current.version.clone(), next.entry.version.clone());
        let digest = diff.digest(
            name,
            &from,
            &to,
            &next.entry.image.digest,
            &next.entry.manifest_json(),
        );
        let shown = diff.render();
        match approve {
            Some(given) if given != digest => {
                return Err(InstallRefusal::WrongApproval {
                    name: name.to_owned(),
                    to,
                    given: given.to_owned(),
                    digest,
                    diff: shown,
                }
                .into());
            }
            None if diff.needs_approval() => {
                return Err(InstallRefusal::AddsEntitlements {
                    name: name.to_owned(),
                    to,
                    diff: shown,
                    digest,
                }
                .into());
            }
            _ => {}
        }
        let had: Vec<String> = old.credentials.iter().map(|c| c.name.clone()).collect();
        let shared = self.shared_credentials(&next.entry.manifest, &had, name)?;
        let text = format!(
            "server {name}: {from} -> {to} ({}/{})\n{shown}{}",
            next.registry,
            next.target,
            shared_text(&shared)
        );
        let what = format!("server {name} to {to}");
        ask(confirm, &text, what.clone())?;
        shared_agree(&shared, share, &what)?;
        // Every range the new manifest asks for: each new one is an addition the digest
        // approved; ranges it no longer asks for are dropped.
        let ranges: Vec<IpNet> = next
            .entry
            .manifest
            .private_ranges
            .iter()
            .map(|r| r.cidr)
            .collect();
        self.check_approvals(&ranges)?;
        let record = record_of(name, &next, &ranges);
        let expected = current.image_digest.clone();
        let added = self.commit_with_image(&next, record, |store, record| {
            if store.server_replace(record, &expected)? {
                Ok(())
            } else {
                Err(InstallRefusal::Raced(record.name.clone()).into())
            }
        })?;
        Ok(Upgraded::Replaced {
            record: Box::new(added.record),
            from,
            diff: shown,
        })
    }

    fn remove_server(&self, name: &str) -> Result<ServerRecord, AdminError> {
        let record = self
            .records()
            .server_get(name)?
            .ok_or_else(|| InstallRefusal::NotInstalled(name.to_owned()))?;
        if record.origin.is_none() {
            return Err(InstallRefusal::NotFromRegistry(name.to_owned()).into());
        }
        match self.records().server_remove(name)? {
            true => Ok(record),
            false => Err(InstallRefusal::NotInstalled(name.to_owned()).into()),
        }
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
