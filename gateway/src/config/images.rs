//! `[images]`: the registries that need more than anonymous HTTPS, and the unpack limits, side
//! by side in one table.

use serde::Deserialize;

use super::RegistryConfig;

/// Where images come from: the registries that need more than anonymous HTTPS with the
/// system's roots. A registry not listed is reached that way.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(from = "ImagesSection")]
pub struct ImagesConfig {
    pub registries: Vec<RegistryConfig>,
    /// What an image may cost to unpack (the other `[images]` keys).
    pub unpack: crate::image::UnpackLimits,
}

/// `[images]` as written: the registries and the unpack limits side by side in one table.
/// Spelt out rather than `flatten`ed: serde's `deny_unknown_fields` does not work across a
/// flattened struct, and a misspelt limit must be refused by key, not silently defaulted.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct ImagesSection {
    registries: Vec<RegistryConfig>,
    max_layers: Option<usize>,
    max_entries_per_layer: Option<u64>,
    max_entries: Option<u64>,
    max_path_bytes: Option<usize>,
    max_file_bytes: Option<u64>,
    max_layer_bytes: Option<u64>,
    max_image_bytes: Option<u64>,
    max_compression_ratio: Option<u64>,
    max_zstd_window_bytes: Option<u64>,
}

impl From<ImagesSection> for ImagesConfig {
    fn from(s: ImagesSection) -> Self {
        let d = crate::image::UnpackLimits::default();
        Self {
            registries: s.registries,
            // Every field named: a limit added to UnpackLimits fails the build here.
            unpack: crate::image::UnpackLimits {
                max_layers: s.max_layers.unwrap_or(d.max_layers),
                max_entries_per_layer: s.max_entries_per_layer.unwrap_or(d.max_entries_per_layer),
                max_entries: s.max_entries.unwrap_or(d.max_entries),
                max_path_bytes: s.max_path_bytes.unwrap_or(d.max_path_bytes),
                max_file_bytes: s.max_file_bytes.unwrap_or(d.max_file_bytes),
                max_layer_bytes: s.max_layer_bytes.unwrap_or(d.max_layer_bytes),
                max_image_bytes: s.max_image_bytes.unwrap_or(d.max_image_bytes),
                max_compression_ratio: s.max_compression_ratio.unwrap_or(d.max_compression_ratio),
                max_zstd_window_bytes: s.max_zstd_window_bytes.unwrap_or(d.max_zstd_window_bytes),
            },
        }
    }
}

impl ImagesConfig {
    /// The settings for `host` (`host[:port]` as a reference names it): the configured entry,
    /// or anonymous HTTPS with the system's roots.
    pub fn registry(&self, host: &str) -> RegistryConfig {
        self.registries
            .iter()
            .find(|r| r.host.eq_ignore_ascii_case(host))
            .cloned()
            .unwrap_or_else(|| RegistryConfig::anonymous(host))
    }

    /// Checks that need more than a type: the dotted key and what is wrong with it.
    pub(super) fn validate(&self) -> Result<(), (&'static str, String)> {
        let mut hosts = std::collections::BTreeSet::new();
        for r in &self.registries {
            r.validate().map_err(|m| ("images.registries", m))?;
            if !hosts.insert(r.host.to_ascii_lowercase()) {
                return Err(("images.registries", format!("{} is listed twice", r.host)));
            }
        }
        self.unpack.validate()
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::{Config, ConfigError};

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("test.toml"))
    }

    #[test]
    fn registries_are_checked_and_looked_up_by_host() {
        let ok = parse(
            "[[images.registries]]\nhost = \"reg.example:5000\"\nusername = \"u\"\n\
             password_secret = \"reg-pw\"\ntoken_origins = [\"https://auth.example\"]\n\
             [[images.registries]]\nhost = \"127.0.0.1:5001\"\nplain_http = true\n",
        )
        .unwrap();
        let r = ok.images.registry("REG.example:5000");
        assert_eq!(r.password_secret.as_deref(), Some("reg-pw"));
        assert!(ok.images.registry("127.0.0.1:5001").plain_http);
        assert_eq!(
            ok.images.registry("other.example"),
            RegistryConfig::anonymous("other.example")
        );
        for (bad, says) in [
            ("host = \"reg.example\"\nplain_http = true", "loopback"),
            ("host = \"reg.example\"\nusername = \"u\"", "go together"),
            (
                "host = \"reg.example\"\ntoken_origins = [\"http://auth.example\"]",
                "https://host",
            ),
            ("host = \"reg.example:0\"", "host[:port]"),
        ] {
            let err = parse(&format!("[[images.registries]]\n{bad}\n")).unwrap_err();
            assert_eq!(err.key(), Some("images.registries"), "{err}");
            assert!(err.to_string().contains(says), "{bad}: {err}");
        }
        let twice = "[[images.registries]]\nhost = \"a.example\"\n";
        let err = parse(&format!("{twice}{twice}")).unwrap_err();
        assert!(err.to_string().contains("listed twice"), "{err}");
    }

    #[test]
    fn image_limits_are_read_and_a_useless_one_names_its_key() {
        let ok = parse("[images]\nmax_layers = 8\nmax_file_bytes = 1048576\n").unwrap();
        assert_eq!(ok.images.unpack.max_layers, 8);
        assert_eq!(ok.images.unpack.max_file_bytes, 1 << 20);
        assert_eq!(
            ok.images.unpack.max_entries,
            crate::image::UnpackLimits::default().max_entries
        );
        let e = parse("[images]\n\nmax_compression_ratio = 0\n").unwrap_err();
        assert_eq!(e.key(), Some("images.max_compression_ratio"), "{e}");
        assert_eq!(e.line(), Some(3), "{e}");
        let e = parse("[images]\nmax_layer = 3\n").unwrap_err();
        assert_eq!(e.key(), Some("images.max_layer"), "{e}");
    }
}
