//! Installing from registries, the catalog's half: from every registry's verified view (what
//! `catalog::state` loads from the store, signatures checked) to the one entry an admin's
//! `[REG/]NAME[@VERSION]` names, parsed strictly and linted; the newer entry an upgrade goes
//! to; what `search` lists; and the check before each start that the index still lists what
//! was installed ([`listed`]).
//!
//! It knows nothing of images, the vault, confirmation or the audit (the admin layer does
//! that), and never fetches: a view is as fresh as the last `registry sync`. An index whose
//! timestamp, snapshot or targets has expired names no entry to install or upgrade to (an
//! attacker who freezes a registry must not get an old entry installed), but does not stop
//! [`listed`]: a registry that cannot be reached must not stop running services, and sync
//! refuses expired metadata anyway.

use std::time::SystemTime;

use crate::catalog::entry::{Entry, EntryError};
use crate::catalog::lint::{Finding, LintPolicy, lint};
use crate::catalog::pick::{self, PickError, Spec};
use crate::store::RegistryRecord;
use crate::tuf::{Loaded, Role, Target};

/// A registry's verified view, as `catalog::state::load` returns it.
pub type View = (RegistryRecord, Loaded);

/// The entry a spec named, and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub registry: String,
    pub target: String,
    pub entry: Entry,
}

/// One target `search` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hit {
    pub registry: String,
    pub target: String,
    /// The entry's description, if it parsed and has one.
    pub description: Option<String>,
    /// Why the entry cannot be installed (it fails to parse, or lint refuses it).
    pub problem: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error(transparent)]
    Pick(#[from] PickError),
    #[error("registry {registry}, target {target}: {source}")]
    Entry {
        registry: String,
        target: String,
        source: EntryError,
    },
    #[error(
        "registry {registry}, target {target}: lint refuses the entry: {}",
        findings.iter().map(|f| format!("{}: {}: {}", f.field, f.rule, f.message)).collect::<Vec<_>>().join("; ")
    )]
    Lint {
        registry: String,
        target: String,
        findings: Vec<Finding>,
    },
    #[error(
        "registry {registry}: its {} metadata has expired, so it names nothing to install: run `gigmcp registry sync {registry}`",
        role.as_str()
    )]
    Expired { registry: String, role: Role },
    #[error("registry {registry} has no target {target}")]
    NotListed { registry: String, target: String },
    /// The index lists the target with another image than the one installed.
    #[error("registry {registry}, target {target}: the index now pins the image {listed}, not the installed {installed}")]
    ImageChanged {
        registry: String,
        target: String,
        listed: String,
        installed: String,
    },
    /// The index lists the target with other entitlements than the admin approved.
    #[error("registry {registry}, target {target}: the index now carries another manifest than the installed one")]
    ManifestChanged { registry: String, target: String },
}

impl InstallError {
    /// A short stable word for the audit's `reason=`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Pick(PickError::BadSpec { .. }) => "spec",
            Self::Pick(PickError::NotFound { .. }) => "not-found",
            Self::Pick(PickError::Ambiguous { .. }) => "ambiguous",
            Self::Entry { .. } => "entry",
            Self::Lint { .. } => "lint",
            Self::Expired { .. } => "expired",
            Self::NotListed { .. } => "not-listed",
            Self::ImageChanged { .. } => "image-changed",
            Self::ManifestChanged { .. } => "manifest-changed",
        }
    }
}

/// `target` of `registry` as an entry: parsed strictly (`Entry::from_target`), then linted.
pub fn entry_of(
    registry: &str,
    target: &Target,
    policy: &LintPolicy,
) -> Result<Entry, InstallError> {
    let entry = parse(registry, target)?;
    let findings = lint(&entry.manifest, policy);
    if findings.is_empty() {
        Ok(entry)
    } else {
        Err(InstallError::Lint {
            registry: registry.to_owned(),
            target: target.path.clone(),
            findings,
        })
    }
}

fn parse(registry: &str, target: &Target) -> Result<Entry, InstallError> {
    Entry::from_target(&target.path, target.length, &target.sha256, &target.custom).map_err(
        |source| InstallError::Entry {
            registry: registry.to_owned(),
            target: target.path.clone(),
            source,
        },
    )
}

fn fresh(registry: &str, loaded: &Loaded, now: SystemTime) -> Result<(), InstallError> {
    match loaded.expired(now) {
        Some(role) => Err(InstallError::Expired {
            registry: registry.to_owned(),
            role,
        }),
        None => Ok(()),
    }
}

/// The one entry `spec` names among every registry's view.
pub fn resolve(
    views: &[View],
    spec: &Spec,
    policy: &LintPolicy,
    now: SystemTime,
) -> Result<Resolved, InstallError> {
    let offers = views.iter().flat_map(|(record, loaded)| {
        loaded
            .targets
            .entries
            .keys()
            .map(move |path| (record.name.as_str(), path.as_str()))
    });
    let (registry, path) = pick::pick(spec, offers)?;
    let (_, loaded) = views
        .iter()
        .find(|(r, _)| r.name == registry)
        .expect("pick chose one of the views");
    fresh(registry, loaded, now)?;
    let target = &loaded.targets.entries[path];
    Ok(Resolved {
        registry: registry.to_owned(),
        target: path.to_owned(),
        entry: entry_of(registry, target, policy)?,
    })
}

/// What an installed server (`target` of `registry`, now at `version`) upgrades to in that
/// registry's view: `to`, or the latest newer version; `Ok(None)` when there is none.
pub fn upgrade(
    registry: &str,
    loaded: &Loaded,
    target: &str,
    to: Option<&str>,
    policy: &LintPolicy,
    now: SystemTime,
) -> Result<Option<Resolved>, InstallError> {
    let (name, version) = pick::split_target(target).ok_or_else(|| InstallError::NotListed {
        registry: registry.to_owned(),
        target: target.to_owned(),
    })?;
    let paths = loaded.targets.entries.keys().map(String::as_str);
    let Some(path) = pick::upgrade_target(name, version, to, paths) else {
        return match to {
            Some(v) => Err(PickError::NotFound {
                spec: format!("{registry}/{name}@{v}"),
            }
            .into()),
            None => Ok(None),
        };
    };
    fresh(registry, loaded, now)?;
    let entry = entry_of(registry, &loaded.targets.entries[path], policy)?;
    Ok(Some(Resolved {
        registry: registry.to_owned(),
        target: path.to_owned(),
        entry,
    }))
}

/// Every target whose name or description contains `text` (case-insensitively; every
/// target for an empty text), by registry, name and version order.
pub fn search(views: &[View], text: &str, policy: &LintPolicy) -> Vec<Hit> {
    let wanted = text.to_lowercase();
    let mut hits: Vec<Hit> = views
        .iter()
        .flat_map(|(record, loaded)| {
            loaded.targets.entries.values().map(move |t| {
                let (description, problem) = match entry_of(&record.name, t, policy) {
                    Ok(e) => (e.description, None),
                    Err(e) => (None, Some(e.to_string())),
                };
                Hit {
                    registry: record.name.clone(),
                    target: t.path.clone(),
                    description,
                    problem,
                }
            })
        })
        .filter(|h| {
            h.target.to_lowercase().contains(&wanted)
                || h.description
                    .as_deref()
                    .is_some_and(|d| d.to_lowercase().contains(&wanted))
        })
        .collect();
    hits.sort_by(|a, b| {
        let (an, av) = pick::split_target(&a.target).unwrap_or((&a.target, ""));
        let (bn, bv) = pick::split_target(&b.target).unwrap_or((&b.target, ""));
        (&a.registry, an)
            .cmp(&(&b.registry, bn))
            .then_with(|| pick::version_cmp(av, bv))
    });
    hits
}

/// Whether `registry`'s verified view still lists `target` with the image digest and the
/// manifest a server was installed with (`image_digest` as `sha256:<hex>`, `manifest_json`
/// as the record keeps it, `Entry::manifest_json`'s canonical text). Expiry is not checked
/// (module documentation), nor lint: the policy may have changed since the admin approved.
pub fn listed(
    registry: &str,
    loaded: &Loaded,
    target: &str,
    image_digest: &str,
    manifest_json: &str,
) -> Result<(), InstallError> {
    let found = loaded
        .targets
        .entries
        .get(target)
        .ok_or_else(|| InstallError::NotListed {
            registry: registry.to_owned(),
            target: target.to_owned(),
        })?;
    let entry = parse(registry, found)?;
    if entry.image.digest != image_digest {
        return Err(InstallError::ImageChanged {
            registry: registry.to_owned(),
            target: target.to_owned(),
            listed: entry.image.digest,
            installed: image_digest.to_owned(),
        });
    }
    if entry.manifest_json() != manifest_json {
        return Err(InstallError::ManifestChanged {
            registry: registry.to_owned(),
            target: target.to_owned(),
        });
    }
    Ok(())
}
