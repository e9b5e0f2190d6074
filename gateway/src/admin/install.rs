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
//! (`sandbox/mod.rs`).

use std::time::SystemTime;

use ipnet::IpNet;
use sha2::{Digest, Sha256};

use super::AdminError;
use super::consent::{
    InstallRefusal, Shared, ask, install_text, ranges_agree, reason, record_of, shared_agree,
    shared_text,
};
use super::images::{Added, ImageSource, WithImage};
use super::local::LocalAdmin;
use crate::audit::Outcome;
use crate::catalog::entitlements::Entitlements;
use crate::catalog::install::{self as catalog, Hit, InstallError, Resolved};
use crate::catalog::lint::LintPolicy;
use crate::catalog::pick::Spec;
use crate::catalog::state;
use crate::manifest::Manifest;
use crate::store::ServerRecord;

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
