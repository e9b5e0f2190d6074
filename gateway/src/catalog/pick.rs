//! Which registry target an admin means by `[REG/]NAME[@VERSION]`: the spec's grammar, the
//! order of versions, and the choice among every registry's target paths
//! (`<name>/<version>`). Pure: it sees names and paths only, never an entry's contents,
//! signatures or the store, so every rule here is a unit test.
//!
//! The order of versions (used for "latest" and for "newer"): split at `.`; segments are
//! compared in turn, numerically when both are all digits (`1.10` > `1.9`, leading zeros
//! ignored), else byte-wise; a version that is a prefix of another is older (`1.2` < `1.2.1`);
//! two versions equal so far (`1.02`, `1.2`) are ordered by their whole text, so the order is
//! total. Pre-release suffixes are not special (`1.0.0-rc1` sorts after `1.0.0`): name such a
//! version with `@VERSION` rather than relying on "latest".

use std::cmp::Ordering;

/// What the admin typed: an optional registry, a server name, an optional exact version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    pub registry: Option<String>,
    pub name: String,
    pub version: Option<String>,
}

/// Why a spec names no single target.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PickError {
    #[error("{spec:?}: write [REGISTRY/]NAME[@VERSION] ({why})")]
    BadSpec { spec: String, why: &'static str },
    #[error("no registry offers {spec}")]
    NotFound { spec: String },
    /// Two registries offer the same name: neither shadows the other, the admin picks.
    #[error(
        "{name} is offered by the registries {}: choose one, as {}",
        registries.join(", "),
        registries.iter().map(|r| format!("{r}/{name}")).collect::<Vec<_>>().join(" or ")
    )]
    Ambiguous {
        name: String,
        registries: Vec<String>,
    },
}

impl Spec {
    pub fn parse(text: &str) -> Result<Self, PickError> {
        let bad = |why| PickError::BadSpec {
            spec: text.to_owned(),
            why,
        };
        let (path, version) = match text.split_once('@') {
            Some((_, "")) => return Err(bad("an empty version")),
            Some((_, v)) if v.contains(['@', '/']) => return Err(bad("a version holds no @ or /")),
            Some((p, v)) => (p, Some(v.to_owned())),
            None => (text, None),
        };
        let (registry, name) = match path.split_once('/') {
            Some(("", _)) => return Err(bad("an empty registry")),
            Some((_, n)) if n.contains('/') => return Err(bad("one / at most")),
            Some((r, n)) => (Some(r.to_owned()), n),
            None => (None, path),
        };
        if name.is_empty() {
            return Err(bad("an empty name"));
        }
        Ok(Self {
            registry,
            name: name.to_owned(),
            version,
        })
    }
}

impl std::fmt::Display for Spec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(r) = &self.registry {
            write!(f, "{r}/")?;
        }
        write!(f, "{}", self.name)?;
        if let Some(v) = &self.version {
            write!(f, "@{v}")?;
        }
        Ok(())
    }
}

/// `<name>/<version>` split at its one `/`; `None` for any other shape.
pub fn split_target(path: &str) -> Option<(&str, &str)> {
    match path.split_once('/') {
        Some((n, v)) if !n.is_empty() && !v.is_empty() && !v.contains('/') => Some((n, v)),
        _ => None,
    }
}

/// The documented order of versions (module documentation).
pub fn version_cmp(a: &str, b: &str) -> Ordering {
    let mut left = a.split('.');
    let mut right = b.split('.');
    loop {
        match (left.next(), right.next()) {
            (None, None) => return a.cmp(b),
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(x), Some(y)) => match segment_cmp(x, y) {
                Ordering::Equal => continue,
                other => return other,
            },
        }
    }
}

fn segment_cmp(x: &str, y: &str) -> Ordering {
    let numeric = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if numeric(x) && numeric(y) {
        // Compared as digit strings, so no segment is too long for a number.
        let (x, y) = (x.trim_start_matches('0'), y.trim_start_matches('0'));
        x.len().cmp(&y.len()).then_with(|| x.cmp(y))
    } else {
        x.cmp(y)
    }
}

/// The one target `spec` names among `offers` (registry name, target path): the registry
/// (given, or the only one offering the name), then the version (given, or the latest).
pub fn pick<'a>(
    spec: &Spec,
    offers: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Result<(&'a str, &'a str), PickError> {
    let named: Vec<(&str, &str, &str)> = offers
        .into_iter()
        .filter_map(|(registry, path)| {
            let (name, version) = split_target(path)?;
            (name == spec.name && spec.registry.as_deref().is_none_or(|r| r == registry))
                .then_some((registry, path, version))
        })
        .collect();
    let mut registries: Vec<String> = named.iter().map(|(r, ..)| (*r).to_owned()).collect();
    registries.sort();
    registries.dedup();
    if registries.len() > 1 {
        return Err(PickError::Ambiguous {
            name: spec.name.clone(),
            registries,
        });
    }
    let chosen = match &spec.version {
        Some(wanted) => named.into_iter().find(|(.., v)| v == wanted),
        None => named
            .into_iter()
            .max_by(|(.., a), (.., b)| version_cmp(a, b)),
    };
    chosen
        .map(|(registry, path, _)| (registry, path))
        .ok_or_else(|| PickError::NotFound {
            spec: spec.to_string(),
        })
}

/// The target of `name` to upgrade to from `current` among one registry's `paths`: `to` if
/// given (any version but the current one), else the latest one newer than `current`;
/// `None` when there is nothing newer.
pub fn upgrade_target<'a>(
    name: &str,
    current: &str,
    to: Option<&str>,
    paths: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let candidates = paths
        .into_iter()
        .filter_map(|p| split_target(p).map(|(n, v)| (p, n, v)))
        .filter(|(_, n, v)| *n == name && *v != current);
    match to {
        Some(wanted) => candidates
            .filter(|(.., v)| *v == wanted)
            .map(|(p, ..)| p)
            .next(),
        None => candidates
            .filter(|(.., v)| version_cmp(v, current) == Ordering::Greater)
            .max_by(|(.., a), (.., b)| version_cmp(a, b))
            .map(|(p, ..)| p),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn random_name() -> String {
        let mut b = [0u8; 4];
        getrandom::fill(&mut b).unwrap();
        format!("s{}", hex::encode(b))
    }

    #[test]
    fn a_spec_names_an_optional_registry_a_name_and_an_optional_version() {
        let n = random_name();
        assert_eq!(
            Spec::parse(&format!("reg/{n}@1.2")).unwrap(),
            Spec {
                registry: Some("reg".into()),
                name: n.clone(),
                version: Some("1.2".into())
            }
        );
        let bare = Spec::parse(&n).unwrap();
        assert_eq!((bare.registry, bare.version), (None, None));
        assert_eq!(
            Spec::parse(&format!("r/{n}")).unwrap().to_string(),
            format!("r/{n}")
        );
    }

    #[test]
    fn a_spec_with_an_empty_part_or_a_second_separator_is_refused_saying_why() {
        for (text, why) in [
            ("a/b/c", "one / at most"),
            ("/b", "an empty registry"),
            ("r/", "an empty name"),
            ("b@", "an empty version"),
            ("b@1@2", "a version holds no @ or /"),
            ("b@1/2", "a version holds no @ or /"),
        ] {
            match Spec::parse(text) {
                Err(PickError::BadSpec { spec, why: w }) => {
                    assert_eq!((spec.as_str(), w), (text, why))
                }
                other => panic!("{text}: {other:?}"),
            }
        }
    }

    #[test]
    fn numeric_segments_compare_as_numbers_and_others_byte_wise() {
        use Ordering::*;
        for (a, b, want) in [
            ("1.10", "1.9", Greater),
            ("2026.8.31", "2026.10.1", Less),
            ("1.2", "1.2.1", Less),
            ("1.0.0-rc1", "1.0.0", Greater),
            ("1.a", "1.b", Less),
            ("1.02", "1.2", Less),
            ("1.2", "1.2", Equal),
            ("10", "9", Greater),
            ("123456789012345678901234567890", "99", Greater),
        ] {
            assert_eq!(version_cmp(a, b), want, "{a} vs {b}");
            assert_eq!(version_cmp(b, a), want.reverse(), "{b} vs {a}");
        }
    }

    #[test]
    fn a_bare_name_picks_the_latest_version_of_the_one_registry_offering_it() {
        let n = random_name();
        let paths = [format!("{n}/1.9"), format!("{n}/1.10"), format!("{n}x/9.0")];
        let offers = paths.iter().map(|p| ("r", p.as_str()));
        let spec = Spec::parse(&n).unwrap();
        assert_eq!(pick(&spec, offers).unwrap(), ("r", paths[1].as_str()));
    }

    #[test]
    fn a_version_picks_exactly_that_target_or_none() {
        let n = random_name();
        let paths = [format!("{n}/1.9"), format!("{n}/1.10")];
        let offers = || paths.iter().map(|p| ("r", p.as_str()));
        let at = Spec::parse(&format!("{n}@1.9")).unwrap();
        assert_eq!(pick(&at, offers()).unwrap().1, paths[0]);
        let missing = Spec::parse(&format!("{n}@1.09")).unwrap();
        assert_eq!(
            pick(&missing, offers()),
            Err(PickError::NotFound {
                spec: format!("{n}@1.09")
            })
        );
    }

    #[test]
    fn a_bare_name_two_registries_offer_is_refused_naming_both_and_a_registry_picks() {
        let n = random_name();
        let path = format!("{n}/1.0");
        let offers = || [("beta", path.as_str()), ("alpha", path.as_str())];
        let err = pick(&Spec::parse(&n).unwrap(), offers()).unwrap_err();
        assert_eq!(
            err,
            PickError::Ambiguous {
                name: n.clone(),
                registries: vec!["alpha".into(), "beta".into()]
            }
        );
        let text = err.to_string();
        assert!(text.contains(&format!("alpha/{n} or beta/{n}")), "{text}");
        let chosen = pick(&Spec::parse(&format!("beta/{n}")).unwrap(), offers()).unwrap();
        assert_eq!(chosen, ("beta", path.as_str()));
    }

    #[test]
    fn a_name_nobody_offers_and_malformed_paths_are_not_found() {
        let n = random_name();
        let odd = [n.clone(), format!("{n}/"), format!("{n}/1/2")];
        let offers = odd.iter().map(|p| ("r", p.as_str()));
        assert!(matches!(
            pick(&Spec::parse(&n).unwrap(), offers),
            Err(PickError::NotFound { .. })
        ));
    }

    #[test]
    fn an_upgrade_goes_to_the_latest_newer_version_or_the_one_asked_for() {
        let n = random_name();
        let paths = [
            format!("{n}/1.0"),
            format!("{n}/1.2"),
            format!("{n}/1.10"),
            format!("{n}/0.9"),
            "other/9.9".to_owned(),
        ];
        let all = || paths.iter().map(String::as_str);
        assert_eq!(
            upgrade_target(&n, "1.2", None, all()),
            Some(paths[2].as_str())
        );
        assert_eq!(upgrade_target(&n, "1.10", None, all()), None);
        assert_eq!(
            upgrade_target(&n, "1.10", Some("0.9"), all()),
            Some(paths[3].as_str())
        );
        assert_eq!(upgrade_target(&n, "1.2", Some("1.2"), all()), None);
        assert_eq!(upgrade_target(&n, "1.2", Some("7"), all()), None);
    }
}
