//! A registry entry: one version of one server as the signed index describes it. In TUF terms
//! it is a target: the path `<name>/<version>`, the length and sha256 of the server's OCI image
//! manifest (so the index pins the image), and in `custom` what the gateway needs besides:
//!
//! ```json
//! {"gigmcp": {"description": "…", "image": {"repository": "HOST/REPO", "mediaType": "…"},
//!             "manifest": {…}, "source": {"registry_name": "…", "package": "…"}}}
//! ```
//!
//! Parsing is strict (unknown fields refused at every level, the manifest through its own parser
//! and [`Manifest::check`]) and every error names the field. This module knows nothing of
//! signatures: it is handed targets the `tuf` layer verified, and hands back their parts.

use serde::{Deserialize, Serialize};

use crate::image::oci::{MAX_MANIFEST_BYTES, is_manifest};
use crate::image::reference::Reference;
use crate::manifest::{Manifest, ManifestError, valid_server_name};

/// The longest description shown to the admin, in characters.
pub const MAX_DESCRIPTION_CHARS: usize = 300;

/// A registry entry: one server version as the signed index describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    pub version: String,
    /// At most 300 characters, shown through `crate::terminal`.
    pub description: Option<String>,
    pub image: ImageDescriptor,
    /// The entitlements; its name and version are the entry's.
    pub manifest: Manifest,
    pub source: Option<Source>,
}

/// Where and what to pull.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageDescriptor {
    /// `HOST/REPO` or `oci-layout:PATH`, without tag or digest.
    pub repository: String,
    /// `sha256:<hex>` of the image manifest.
    pub digest: String,
    pub size: u64,
    pub media_type: String,
}

/// Provenance: the MCP Registry name and the package the image was built from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Source {
    pub registry_name: String,
    pub package: String,
}

#[derive(Debug, thiserror::Error)]
pub enum EntryError {
    #[error("target path {path:?}: {why}")]
    Path { path: String, why: &'static str },
    #[error("sha256 {0:?} is not 64 lower-case hex digits")]
    Sha256(String),
    #[error("length {0} is not an image manifest's size (1 byte to 4 MiB)")]
    Length(u64),
    #[error("custom.{field}: {detail}")]
    Field { field: String, detail: String },
    #[error("custom.gigmcp.manifest: {0}")]
    Manifest(#[from] ManifestError),
    #[error("custom.gigmcp.manifest.{field} is {manifest:?} but the target path says {path:?}")]
    Mismatch {
        field: &'static str,
        manifest: String,
        path: String,
    },
    #[error("custom.gigmcp.image.mediaType {0:?} is not an OCI or Docker image manifest")]
    MediaType(String),
    #[error("custom.gigmcp.image.repository {repository:?}: {why}")]
    Repository { repository: String, why: String },
    #[error("custom.gigmcp.description is {0} characters long (at most 300)")]
    Description(usize),
    #[error("custom.gigmcp.description holds a control character (it is shown as one line)")]
    DescriptionControl,
}

/// `custom` as the index carries it.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Custom {
    gigmcp: Gigmcp,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Gigmcp {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    description: Option<String>,
    image: Image,
    /// Kept as JSON here and parsed by the manifest's own rules, so its errors are its own.
    manifest: serde_json::Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    source: Option<Source>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Image {
    repository: String,
    media_type: String,
}

impl Entry {
    /// The target path: `<name>/<version>`.
    pub fn target_path(&self) -> String {
        format!("{}/{}", self.name, self.version)
    }

    /// The entry of a verified target. `path` must be `<name>/<version>` and equal the
    /// manifest's; `sha256_hex` and `length` become the image's digest and size.
    pub fn from_target(
        path: &str,
        length: u64,
        sha256_hex: &str,
        custom: &serde_json::Value,
    ) -> Result<Entry, EntryError> {
        let (name, version) = split_path(path)?;
        if sha256_hex.len() != 64
            || !sha256_hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(EntryError::Sha256(sha256_hex.chars().take(80).collect()));
        }
        if length == 0 || length > MAX_MANIFEST_BYTES {
            return Err(EntryError::Length(length));
        }
        let Custom { gigmcp } = strict(custom, "")?;
        let manifest: Manifest = strict(&gigmcp.manifest, "gigmcp.manifest.")?;
        manifest.check()?;
        for (field, in_manifest, in_path) in [
            ("name", &manifest.name, name),
            ("version", &manifest.version, version),
        ] {
            if in_manifest != in_path {
                return Err(EntryError::Mismatch {
                    field,
                    manifest: in_manifest.clone(),
                    path: in_path.to_owned(),
                });
            }
        }
        if let Some(d) = &gigmcp.description {
            let chars = d.chars().count();
            if chars > MAX_DESCRIPTION_CHARS {
                return Err(EntryError::Description(chars));
            }
            // Shown right above the image and entitlements: a line break would let the
            // author print a forged entitlements block.
            if d.chars().any(char::is_control) {
                return Err(EntryError::DescriptionControl);
            }
        }
        if !is_manifest(&gigmcp.image.media_type) {
            return Err(EntryError::MediaType(gigmcp.image.media_type));
        }
        check_repository(&gigmcp.image.repository)?;
        Ok(Entry {
            name: name.to_owned(),
            version: version.to_owned(),
            description: gigmcp.description,
            image: ImageDescriptor {
                repository: gigmcp.image.repository,
                digest: format!("sha256:{sha256_hex}"),
                size: length,
                media_type: gigmcp.image.media_type,
            },
            manifest,
            source: gigmcp.source,
        })
    }

    /// The inverse of [`Entry::from_target`]: (path, length, sha256 hex, custom).
    pub fn to_target_parts(&self) -> (String, u64, String, serde_json::Value) {
        let custom = Custom {
            gigmcp: Gigmcp {
                description: self.description.clone(),
                image: Image {
                    repository: self.image.repository.clone(),
                    media_type: self.image.media_type.clone(),
                },
                manifest: serde_json::to_value(&self.manifest).expect("a manifest serialises"),
                source: self.source.clone(),
            },
        };
        let hex = self
            .image
            .digest
            .strip_prefix("sha256:")
            .unwrap_or(&self.image.digest);
        (
            self.target_path(),
            self.image.size,
            hex.to_owned(),
            serde_json::to_value(custom).expect("an entry serialises"),
        )
    }

    /// `HOST/REPO@sha256:<hex>` (or `oci-layout:PATH@sha256:<hex>`): what `server add
    /// --image` and the install's pull accept.
    pub fn reference(&self) -> String {
        format!("{}@{}", self.image.repository, self.image.digest)
    }

    /// The manifest as the JSON a server record stores: keys sorted, no spaces, so equal
    /// manifests give equal text.
    pub fn manifest_json(&self) -> String {
        // serde_json's maps are ordered (no `preserve_order`): a Value prints sorted. Not
        // `tuf::cjson`: canonical JSON leaves control characters unescaped, which JSON parsers
        // (the manifest's own) refuse, and this text is parsed again at every start.
        let value = serde_json::to_value(&self.manifest).expect("a manifest serialises");
        value.to_string()
    }
}

/// `<name>/<version>`: a valid server name and a version of `[A-Za-z0-9._+-]`, 1-64 long,
/// starting with a letter or digit (so no `..` and no second `/`).
fn split_path(path: &str) -> Result<(&str, &str), EntryError> {
    let bad = |why| EntryError::Path {
        path: path.chars().take(120).collect(),
        why,
    };
    let (name, version) = path.split_once('/').ok_or(bad("is not <name>/<version>"))?;
    if !valid_server_name(name) {
        return Err(bad("the name is not a server name (1-32 of a-z 0-9 - _)"));
    }
    let version_ok = (1..=64).contains(&version.len())
        && version.as_bytes()[0].is_ascii_alphanumeric()
        && version
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._+-".contains(&b));
    if !version_ok {
        return Err(bad("the version is not 1-64 of A-Z a-z 0-9 . _ + -"));
    }
    Ok((name, version))
}

/// `HOST/REPO` without tag or digest (the digest is the target's), or `oci-layout:/PATH`.
fn check_repository(repository: &str) -> Result<(), EntryError> {
    let bad = |why: String| EntryError::Repository {
        repository: repository.chars().take(120).collect(),
        why,
    };
    if let Some(path) = repository.strip_prefix("oci-layout:") {
        // No control character: the path is shown to the admin, line by line.
        if !path.starts_with('/') || path.contains('@') || path.chars().any(char::is_control) {
            return Err(bad(
                "an oci-layout path is absolute, without '@' or control characters".into(),
            ));
        }
        return Ok(());
    }
    let r = Reference::parse(repository).map_err(|e| bad(e.to_string()))?;
    if r.tag.is_some() || r.digest.is_some() {
        return Err(bad(
            "names a tag or digest: the target's sha256 is the image".into(),
        ));
    }
    Ok(())
}

/// `value` as a `T`, an error naming the field (`prefix` + serde's path) otherwise.
fn strict<T: serde::de::DeserializeOwned>(
    value: &serde_json::Value,
    prefix: &str,
) -> Result<T, EntryError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        EntryError::Field {
            field: format!("{prefix}{path}").trim_end_matches(".").to_owned(),
            detail: e.into_inner().to_string(),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::oci::{MEDIA_DOCKER_MANIFEST, MEDIA_OCI_INDEX, MEDIA_OCI_MANIFEST};

    const HEX: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn custom() -> serde_json::Value {
        serde_json::json!({"gigmcp": {
            "description": "Tells the time",
            "image": {"repository": "127.0.0.1:5000/servers/time", "mediaType": MEDIA_OCI_MANIFEST},
            "manifest": {"name": "time", "version": "2026.10.19", "tools": ["get_current_time"]},
            "source": {"registry_name": "io.github.example/time", "package": "pypi:mcp-server-time==2026.10.19"},
        }})
    }

    fn parse(custom: &serde_json::Value) -> Result<Entry, EntryError> {
        Entry::from_target("time/2026.10.19", 1234, HEX, custom)
    }

    #[test]
    fn an_entry_round_trips_through_its_target_parts() {
        let entry = parse(&custom()).unwrap();
        assert_eq!(entry.image.digest, format!("sha256:{HEX}"));
        assert_eq!(entry.image.size, 1234);
        assert_eq!(
            entry.reference(),
            format!("127.0.0.1:5000/servers/time@sha256:{HEX}")
        );
        let (path, length, hex, custom) = entry.to_target_parts();
        assert_eq!(
            (path.as_str(), length, hex.as_str()),
            ("time/2026.10.19", 1234, HEX)
        );
        assert_eq!(
            Entry::from_target(&path, length, &hex, &custom).unwrap(),
            entry
        );
    }

    #[test]
    fn equal_manifests_give_equal_manifest_json_whatever_their_key_order() {
        let a = parse(&custom()).unwrap();
        let mut reordered = custom();
        reordered["gigmcp"]["manifest"] = serde_json::from_str(
            r#"{"tools": ["get_current_time"], "version": "2026.10.19", "name": "time"}"#,
        )
        .unwrap();
        let b = parse(&reordered).unwrap();
        assert_eq!(a.manifest_json(), b.manifest_json());
        assert_eq!(Manifest::from_json(&a.manifest_json()).unwrap(), a.manifest);
        let mut control = custom();
        control["gigmcp"]["manifest"]["env"] = serde_json::json!({"NOTE": "line\nbreak\u{1}"});
        let c = parse(&control).unwrap();
        assert_eq!(Manifest::from_json(&c.manifest_json()).unwrap(), c.manifest);
    }

    #[test]
    fn a_manifest_name_or_version_other_than_the_target_path_is_refused() {
        for (field, value) in [("name", "clock"), ("version", "2026.10.20")] {
            let mut c = custom();
            c["gigmcp"]["manifest"][field] = value.into();
            match parse(&c) {
                Err(EntryError::Mismatch {
                    field: f, manifest, ..
                }) => {
                    assert_eq!((f, manifest.as_str()), (field, value))
                }
                other => panic!("{field}: {other:?}"),
            }
        }
    }

    #[test]
    fn a_target_path_that_is_not_name_slash_version_is_refused() {
        for path in [
            "time",
            "time/",
            "/1",
            "Time/1",
            "time/1/2",
            "time/../1",
            "time/.1",
            "a__b/1",
        ] {
            assert!(
                matches!(
                    Entry::from_target(path, 1, HEX, &custom()),
                    Err(EntryError::Path { .. })
                ),
                "{path}"
            );
        }
    }

    #[test]
    fn a_digest_that_is_not_64_lower_case_hex_digits_is_refused() {
        for bad in [
            &HEX[1..],
            &HEX.to_uppercase(),
            &format!("{}g", &HEX[1..]),
            "",
        ] {
            let e = Entry::from_target("time/2026.10.19", 1, bad, &custom()).unwrap_err();
            assert!(matches!(e, EntryError::Sha256(_)), "{bad}: {e}");
        }
        for length in [0, MAX_MANIFEST_BYTES + 1] {
            let e = Entry::from_target("time/2026.10.19", length, HEX, &custom()).unwrap_err();
            assert!(matches!(e, EntryError::Length(l) if l == length), "{e}");
        }
    }

    #[test]
    fn an_unknown_field_at_any_level_is_refused_naming_it() {
        for (at, expect) in [
            ("", "unknown field `extra`"),
            ("gigmcp", "gigmcp"),
            ("image", "gigmcp.image"),
            ("manifest", "gigmcp.manifest"),
        ] {
            let mut c = custom();
            let obj = match at {
                "" => &mut c,
                "gigmcp" => &mut c["gigmcp"],
                other => &mut c["gigmcp"][other],
            };
            obj["extra"] = 1.into();
            let e = parse(&c).unwrap_err();
            assert!(matches!(e, EntryError::Field { .. }), "{at}: {e}");
            assert!(e.to_string().contains(expect), "{at}: {e}");
            assert!(e.to_string().contains("extra"), "{at}: {e}");
        }
        let mut c = custom();
        c["gigmcp"]["manifest"]["egress"] = serde_json::json!([{"host": "a.example", "port": 1}]);
        let e = parse(&c).unwrap_err().to_string();
        assert!(e.contains("gigmcp.manifest.egress[0]"), "{e}");
    }

    #[test]
    fn a_manifest_its_own_checks_refuse_is_refused() {
        let mut c = custom();
        c["gigmcp"]["manifest"]["egress"] = serde_json::json!([{"host": "*.example.com"}]);
        assert!(matches!(parse(&c), Err(EntryError::Manifest(_))));
    }

    #[test]
    fn a_description_over_300_characters_is_refused() {
        let mut c = custom();
        c["gigmcp"]["description"] = "é".repeat(MAX_DESCRIPTION_CHARS).into();
        assert!(parse(&c).is_ok());
        c["gigmcp"]["description"] = "é".repeat(MAX_DESCRIPTION_CHARS + 1).into();
        assert!(matches!(parse(&c), Err(EntryError::Description(301))));
    }

    #[test]
    fn a_media_type_that_is_not_an_image_manifest_is_refused() {
        let mut c = custom();
        c["gigmcp"]["image"]["mediaType"] = MEDIA_DOCKER_MANIFEST.into();
        assert!(parse(&c).is_ok());
        for bad in [MEDIA_OCI_INDEX, "application/json", "text/html"] {
            c["gigmcp"]["image"]["mediaType"] = bad.into();
            assert!(
                matches!(parse(&c), Err(EntryError::MediaType(m)) if m == bad),
                "{bad}"
            );
        }
    }

    /// The repository is printed to the admin on the `image` line of the install
    /// confirmation and of `show` (`print_lines` sanitises each line, but splits at line
    /// breaks first): an oci-layout path holding a line break forges whole lines of the
    /// entitlements text the admin agrees to.
    #[test]
    fn an_oci_layout_repository_with_a_control_character_is_refused() {
        for bad in [
            "oci-layout:/srv/x\nentitled to:\negress:\n  (none: the server reaches no network)",
            "oci-layout:/srv/x\r\u{1b}[2K",
            "oci-layout:/srv/x\u{85}fake",
        ] {
            let mut c = custom();
            c["gigmcp"]["image"]["repository"] = bad.into();
            assert!(
                matches!(parse(&c), Err(EntryError::Repository { .. })),
                "{bad:?} accepted"
            );
        }
    }

    /// The description is printed line by line by `registry show` right above
    /// `image …` / `entitled to:`: a line break lets an entry author print a forged
    /// entitlements block (and up to 300 characters of blank lines) before the real one.
    #[test]
    fn a_description_with_a_line_break_is_refused() {
        let mut c = custom();
        c["gigmcp"]["description"] =
            "Tells the time\nimage reg.example/t@sha256:00\nentitled to:\negress:\n  (none: the server reaches no network)".into();
        assert!(parse(&c).is_err(), "a multi-line description is accepted");
    }

    #[test]
    fn a_repository_with_a_tag_or_digest_or_without_a_registry_is_refused() {
        let mut c = custom();
        c["gigmcp"]["image"]["repository"] = "oci-layout:/srv/layouts/time".into();
        assert!(parse(&c).is_ok());
        for bad in [
            "127.0.0.1:5000/servers/time:latest".to_owned(),
            format!("127.0.0.1:5000/servers/time@sha256:{HEX}"),
            "servers/time".to_owned(),
            "oci-layout:relative/path".to_owned(),
        ] {
            c["gigmcp"]["image"]["repository"] = bad.clone().into();
            assert!(
                matches!(parse(&c), Err(EntryError::Repository { .. })),
                "{bad}"
            );
        }
    }
}
