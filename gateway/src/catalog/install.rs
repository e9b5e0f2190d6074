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
    #[error(
        "registry {registry}, target {target}: the index now pins the image {listed}, not the installed {installed}"
    )]
    ImageChanged {
        registry: String,
        target: String,
        listed: String,
        installed: String,
    },
    /// The index lists the target with other entitlements than the admin approved.
    #[error(
        "registry {registry}, target {target}: the index now carries another manifest than the installed one"
    )]
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::catalog::entry::ImageDescriptor;
    use crate::manifest::Manifest;
    use crate::tuf::{Expiry, KeyPair, Limits, Repo, RoleSetup, Stored};

    fn random_hex(n: usize) -> String {
        let mut b = vec![0u8; n];
        getrandom::fill(&mut b).unwrap();
        hex::encode(b)
    }

    fn entry(name: &str, version: &str, manifest: serde_json::Value) -> Entry {
        let mut m = manifest;
        m["name"] = name.into();
        m["version"] = version.into();
        Entry {
            name: name.to_owned(),
            version: version.to_owned(),
            description: Some(format!("the {name} server")),
            image: ImageDescriptor {
                repository: "reg.example/mcp/s".into(),
                digest: format!("sha256:{}", random_hex(32)),
                size: 1234,
                media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            },
            manifest: Manifest::from_json(&m.to_string()).unwrap(),
            source: None,
        }
    }

    fn clean(name: &str, version: &str) -> Entry {
        entry(name, version, serde_json::json!({"tools": ["echo"]}))
    }

    /// A registry `name` whose index, signed by our own `Repo`, lists `entries`; loaded as
    /// the store would hand it over.
    fn view(name: &str, entries: &[&Entry]) -> View {
        let dir = tempfile::tempdir().unwrap();
        let key = KeyPair::generate();
        let one = || (vec![key.public()], 1);
        let setup = RoleSetup {
            root: one(),
            timestamp: one(),
            snapshot: one(),
            targets: one(),
        };
        let now = SystemTime::now();
        let mut repo = Repo::init(dir.path(), &setup, Expiry::default(), &[&key], now).unwrap();
        for e in entries {
            let (path, length, sha256, custom) = e.to_target_parts();
            repo.set_target(Target {
                path,
                length,
                sha256,
                custom,
            });
        }
        repo.publish(&[&key], Expiry::default(), now).unwrap();
        let read = |f: &str| std::fs::read(dir.path().join(f)).unwrap();
        let stored = Stored {
            root: read("root.json"),
            timestamp: Some(read("timestamp.json")),
            snapshot: Some(read("snapshot.json")),
            targets: Some(read("targets.json")),
        };
        let record = RegistryRecord {
            name: name.to_owned(),
            location: dir.path().display().to_string(),
            pinned_root: read("1.root.json"),
            ca_pem: None,
            added_ms: 0,
        };
        (
            record,
            crate::tuf::load(&stored, &Limits::default()).unwrap(),
        )
    }

    fn spec(text: &str) -> Spec {
        Spec::parse(text).unwrap()
    }

    #[test]
    fn a_bare_name_resolves_to_the_latest_entry_parsed_from_the_verified_index() {
        let n = format!("s{}", random_hex(3));
        let (old, new) = (clean(&n, "1.9"), clean(&n, "1.10"));
        let views = [view("main", &[&old, &new])];
        let r = resolve(&views, &spec(&n), &LintPolicy::default(), SystemTime::now()).unwrap();
        assert_eq!(
            (r.registry.as_str(), r.target.as_str()),
            ("main", &*format!("{n}/1.10"))
        );
        assert_eq!(r.entry, new);
    }

    #[test]
    fn an_expired_index_names_nothing_to_install() {
        let n = format!("s{}", random_hex(3));
        let views = [view("main", &[&clean(&n, "1")])];
        let later = SystemTime::now() + Duration::from_secs(2 * 86_400);
        match resolve(&views, &spec(&n), &LintPolicy::default(), later) {
            Err(e @ InstallError::Expired { .. }) => {
                assert!(e.to_string().contains("gigmcp registry sync main"), "{e}");
                assert_eq!(e.kind(), "expired");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_entry_lint_refuses_is_refused_naming_registry_target_and_finding() {
        let n = format!("s{}", random_hex(3));
        let bad = entry(
            &n,
            "2",
            serde_json::json!({"tools": ["echo"], "egress": [{"host": "pastebin.com"}]}),
        );
        let views = [view("main", &[&bad])];
        match resolve(&views, &spec(&n), &LintPolicy::default(), SystemTime::now()) {
            Err(e @ InstallError::Lint { .. }) => {
                let text = e.to_string();
                assert!(
                    text.contains(&format!("registry main, target {n}/2")),
                    "{text}"
                );
                assert!(text.contains("egress[0]"), "{text}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_upgrade_goes_to_the_newest_newer_entry_of_the_same_registry() {
        let n = format!("s{}", random_hex(3));
        let (v1, v2, v3) = (clean(&n, "1"), clean(&n, "2"), clean(&n, "3"));
        let (_, loaded) = view("main", &[&v1, &v2, &v3]);
        let now = SystemTime::now();
        let policy = LintPolicy::default();
        let to = upgrade("main", &loaded, &format!("{n}/1"), None, &policy, now)
            .unwrap()
            .unwrap();
        assert_eq!(to.entry, v3);
        let asked = upgrade("main", &loaded, &format!("{n}/1"), Some("2"), &policy, now)
            .unwrap()
            .unwrap();
        assert_eq!(asked.entry, v2);
        assert!(
            upgrade("main", &loaded, &format!("{n}/3"), None, &policy, now)
                .unwrap()
                .is_none()
        );
        assert!(matches!(
            upgrade("main", &loaded, &format!("{n}/3"), Some("9"), &policy, now),
            Err(InstallError::Pick(PickError::NotFound { .. }))
        ));
    }

    #[test]
    fn a_search_matches_names_and_descriptions_and_says_why_an_entry_cannot_be_installed() {
        let (a, b) = (format!("a{}", random_hex(3)), format!("b{}", random_hex(3)));
        let bad = entry(
            &b,
            "1",
            serde_json::json!({"tools": ["echo"], "egress": [{"host": "pastebin.com"}]}),
        );
        let views = [view("main", &[&clean(&a, "1"), &bad])];
        let policy = LintPolicy::default();
        let all = search(&views, "", &policy);
        assert_eq!(all.len(), 2);
        let hits = search(&views, &format!("THE {}", a.to_uppercase()), &policy);
        assert_eq!(hits.len(), 1, "{hits:?}");
        assert_eq!(
            (hits[0].target.clone(), hits[0].problem.clone()),
            (format!("{a}/1"), None)
        );
        let refused = search(&views, &b, &policy);
        assert!(
            refused[0]
                .problem
                .as_deref()
                .is_some_and(|p| p.contains("lint")),
            "{refused:?}"
        );
    }

    #[test]
    fn a_server_is_listed_only_with_its_recorded_digest_and_manifest() {
        let n = format!("s{}", random_hex(3));
        let e = clean(&n, "1");
        let (_, loaded) = view("main", &[&e]);
        let target = e.target_path();
        let manifest = e.manifest_json();
        listed("main", &loaded, &target, &e.image.digest, &manifest).unwrap();
        let other = format!("sha256:{}", random_hex(32));
        assert!(matches!(
            listed("main", &loaded, &target, &other, &manifest),
            Err(InstallError::ImageChanged { .. })
        ));
        let changed = clean(&n, "1").manifest_json().replace("echo", "echo2");
        assert!(matches!(
            listed("main", &loaded, &target, &e.image.digest, &changed),
            Err(InstallError::ManifestChanged { .. })
        ));
        match listed(
            "main",
            &loaded,
            &format!("{n}/2"),
            &e.image.digest,
            &manifest,
        ) {
            Err(e @ InstallError::NotListed { .. }) => assert_eq!(e.kind(), "not-listed"),
            other => panic!("{other:?}"),
        }
    }
}
