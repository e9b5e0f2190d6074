//! The list of exfiltration-friendly services (paste sites, request bins, tunnels, webhook
//! catchers, file drops, URL shorteners, out-of-band testing domains, names that resolve to
//! any address) that a registry entry's egress may not name. The list is kept in the
//! repository, `registry/lint/exfil-hosts.toml`, one entry per domain with where it is known
//! from, and embedded here.
//!
//! A host matches when it equals a listed domain or is a subdomain of one (at a label
//! boundary: `notpastebin.com` is not `pastebin.com`). An internationalised host (a `xn--`
//! label) also matches when its Unicode form has the same confusable skeleton (UTS 39) as a
//! listed domain, so `pаstebin.com` with a Cyrillic `а` is caught as what it imitates. Plain
//! ASCII hosts are compared exactly: `rn` and `m` look alike too, but an ASCII name is what
//! the admin reads, and a skeleton match there would refuse honest names.
//!
//! It knows nothing of manifests: `lint` asks it about each host.

use serde::Deserialize;

use crate::manifest::valid_host;

/// The list as the repository keeps it.
const EMBEDDED: &str = include_str!("../../../registry/lint/exfil-hosts.toml");

/// One listed service.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExfilEntry {
    pub domain: String,
    pub category: String,
    /// Where the service is known from: its own site, or a public reference.
    pub source: String,
}

/// How a host matched an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExfilMatch<'a> {
    pub entry: &'a ExfilEntry,
    /// The host only looks like the domain (an internationalised look-alike).
    pub look_alike: bool,
}

#[derive(Debug, Clone)]
pub struct ExfilList {
    entries: Vec<ExfilEntry>,
    /// Each entry's confusable skeleton, in the same order.
    skeletons: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ExfilError {
    #[error("exfiltration list: {0}")]
    Parse(#[from] toml::de::Error),
    #[error("exfiltration list: {domain:?}: {why}")]
    Invalid { domain: String, why: &'static str },
    #[error("exfiltration list: {0} is listed twice")]
    Duplicate(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    service: Vec<ExfilEntry>,
}

impl ExfilList {
    /// The list kept in the repository (checked by this module's tests, so it always parses).
    pub fn embedded() -> Self {
        Self::parse(EMBEDDED).expect("registry/lint/exfil-hosts.toml is checked by its unit test")
    }

    /// A list in the repository's format: every domain an exact lower-case DNS name, listed
    /// once, with a category and a source.
    pub fn parse(text: &str) -> Result<Self, ExfilError> {
        let file: File = toml::from_str(text)?;
        let mut seen = std::collections::BTreeSet::new();
        for e in &file.service {
            let invalid = |why| ExfilError::Invalid {
                domain: e.domain.clone(),
                why,
            };
            if !valid_host(&e.domain) {
                return Err(invalid("not a lower-case DNS name"));
            }
            if e.category.trim().is_empty() || e.source.trim().is_empty() {
                return Err(invalid("needs a category and a source"));
            }
            if !seen.insert(e.domain.as_str()) {
                return Err(ExfilError::Duplicate(e.domain.clone()));
            }
        }
        let skeletons = file.service.iter().map(|e| skeleton(&e.domain)).collect();
        Ok(Self {
            entries: file.service,
            skeletons,
        })
    }

    pub fn entries(&self) -> &[ExfilEntry] {
        &self.entries
    }

    /// The entry `host` is, is under, or (internationalised) imitates.
    pub fn matches(&self, host: &str) -> Option<ExfilMatch<'_>> {
        let host = host.to_ascii_lowercase();
        if let Some(entry) = self.entries.iter().find(|e| under(&host, &e.domain)) {
            return Some(ExfilMatch {
                entry,
                look_alike: false,
            });
        }
        if !host.split('.').any(|label| label.starts_with("xn--")) {
            return None;
        }
        let (unicode, decoded) = idna::domain_to_unicode(&host);
        // A label that does not decode imitates nothing we can name; lint refuses it as a
        // host that is not an exact DNS name anyway.
        decoded.ok()?;
        let host_skeleton = skeleton(&unicode);
        self.skeletons
            .iter()
            .position(|s| under(&host_skeleton, s))
            .map(|i| ExfilMatch {
                entry: &self.entries[i],
                look_alike: true,
            })
    }
}

/// `host` is `domain` or a subdomain of it, at a label boundary.
fn under(host: &str, domain: &str) -> bool {
    host == domain
        || host
            .strip_suffix(domain)
            .is_some_and(|prefix| prefix.ends_with('.'))
}

/// The UTS 39 skeleton: what a string looks like, whatever script its letters come from.
fn skeleton(s: &str) -> String {
    unicode_security::skeleton(s)
        .collect::<String>()
        .to_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn random_label() -> String {
        let mut bytes = [0u8; 6];
        getrandom::fill(&mut bytes).unwrap();
        format!("x{}", hex::encode(bytes))
    }

    #[test]
    fn the_embedded_list_parses_with_over_80_sourced_lower_case_domains() {
        let list = ExfilList::embedded();
        assert!(list.entries().len() >= 80, "{}", list.entries().len());
        for e in list.entries() {
            assert_eq!(e.domain, e.domain.to_ascii_lowercase());
            assert!(
                e.source.starts_with("https://"),
                "{}: {}",
                e.domain,
                e.source
            );
        }
        for category in [
            "paste",
            "request-bin",
            "tunnel",
            "webhook",
            "file-drop",
            "url-shortener",
            "oast",
        ] {
            assert!(
                list.entries().iter().any(|e| e.category == category),
                "{category}"
            );
        }
    }

    #[test]
    fn a_list_with_a_duplicate_an_upper_case_domain_or_no_source_is_refused() {
        let one = |d: &str, src: &str| {
            format!("{{ domain = \"{d}\", category = \"paste\", source = \"{src}\" }}")
        };
        let dup = format!(
            "service = [{}, {}]",
            one("a.example", "x"),
            one("a.example", "y")
        );
        assert!(matches!(
            ExfilList::parse(&dup),
            Err(ExfilError::Duplicate(d)) if d == "a.example"
        ));
        for bad in [
            one("A.example", "x"),
            one("*.example", "x"),
            one("a.example", " "),
        ] {
            let text = format!("service = [{bad}]");
            assert!(
                matches!(ExfilList::parse(&text), Err(ExfilError::Invalid { .. })),
                "{bad}"
            );
        }
        let unknown =
            "service = [{ domain = \"a.example\", category = \"p\", source = \"s\", x = 1 }]";
        assert!(matches!(
            ExfilList::parse(unknown),
            Err(ExfilError::Parse(_))
        ));
    }

    #[test]
    fn a_listed_domain_and_its_subdomains_match_at_a_label_boundary_only() {
        let list = ExfilList::embedded();
        let label = random_label();
        let sub = format!("{label}.webhook.site");
        let m = list.matches(&sub).unwrap();
        assert_eq!(
            (m.entry.domain.as_str(), m.look_alike),
            ("webhook.site", false)
        );
        assert_eq!(
            list.matches("pastebin.com").unwrap().entry.category,
            "paste"
        );
        assert!(list.matches(&format!("{label}webhook.site")).is_none());
        assert!(
            list.matches(&format!("webhook.site.{label}.example"))
                .is_none()
        );
        assert!(list.matches(&format!("{label}.example")).is_none());
    }

    #[test]
    fn an_internationalised_look_alike_of_a_listed_domain_matches() {
        let list = ExfilList::embedded();
        // Cyrillic а (U+0430) and е (U+0435) for the Latin letters.
        for (imitation, original) in [
            ("p\u{430}stebin.com", "pastebin.com"),
            ("w\u{435}bhook.site", "webhook.site"),
        ] {
            let sub = format!("{}.{imitation}", random_label());
            let ascii = idna::domain_to_ascii(&sub).unwrap();
            assert!(ascii.contains("xn--"), "{ascii}");
            let m = list.matches(&ascii).unwrap();
            assert_eq!((m.entry.domain.as_str(), m.look_alike), (original, true));
        }
        let honest = idna::domain_to_ascii("b\u{fc}cher.example").unwrap();
        assert!(list.matches(&honest).is_none());
        assert!(list.matches("xn--zz.example").is_none());
    }
}
