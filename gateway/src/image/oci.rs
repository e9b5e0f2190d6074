//! The OCI image documents the gateway reads: descriptors, image manifests, image indexes and
//! image configs (OCI image-spec 1.1), and the Docker schema-2 media types registries still
//! serve for the same shapes. Our own types rather than the `oci-spec` crate: we read a handful
//! of fields, refuse duplicates and oversized documents, and keep the daemon's dependency tree
//! small; unknown fields are ignored, as the spec asks of readers.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::digest::Digest;

pub const MEDIA_OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const MEDIA_OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const MEDIA_OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const MEDIA_OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
pub const MEDIA_OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const MEDIA_OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
pub const MEDIA_DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const MEDIA_DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const MEDIA_DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const MEDIA_DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

/// The largest manifest or index read (the distribution spec's 4 MiB a registry must accept).
pub const MAX_MANIFEST_BYTES: u64 = 4 << 20;
/// The largest image config read.
pub const MAX_CONFIG_BYTES: u64 = 8 << 20;

/// How a layer's bytes are compressed, from its media type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

/// A layer media type we unpack, or `None` (foreign, non-distributable or unknown layers are
/// refused by the caller with the type named).
pub fn layer_compression(media_type: &str) -> Option<Compression> {
    match media_type {
        MEDIA_OCI_LAYER_TAR => Some(Compression::None),
        MEDIA_OCI_LAYER_GZIP | MEDIA_DOCKER_LAYER_GZIP => Some(Compression::Gzip),
        MEDIA_OCI_LAYER_ZSTD => Some(Compression::Zstd),
        _ => None,
    }
}

/// A manifest media type (an image, not an index).
pub fn is_manifest(media_type: &str) -> bool {
    matches!(media_type, MEDIA_OCI_MANIFEST | MEDIA_DOCKER_MANIFEST)
}

/// An index media type (a list of per-platform manifests).
pub fn is_index(media_type: &str) -> bool {
    matches!(media_type, MEDIA_OCI_INDEX | MEDIA_DOCKER_LIST)
}

/// A reference to content: its type, digest and exact size (the size caps every read of it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// The platform an index entry is built for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Platform {
    pub architecture: String,
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

impl Platform {
    /// This host's platform, in OCI's (Go's) names.
    pub fn host() -> Self {
        let architecture = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "x86" => "386",
            "powerpc64" => "ppc64le",
            other => other,
        };
        Self {
            architecture: architecture.into(),
            os: "linux".into(),
            variant: (architecture == "arm64").then(|| "v8".into()),
        }
    }

    /// Whether an index entry's platform runs here (an arm64 entry without a variant is v8).
    pub fn runs_here(&self, host: &Platform) -> bool {
        self.os == host.os
            && self.architecture == host.architecture
            && (self.variant.is_none() || self.variant == host.variant)
    }
}

/// An image manifest: one config and the layers, in order, bottom first.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// An image index: manifests, one per platform.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Index {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    pub manifests: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// An image config: what to run (merged with the gateway's manifest) and the layers' diff ids.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImageConfig {
    pub architecture: String,
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    #[serde(default)]
    pub config: RunConfig,
    pub rootfs: RootFs,
}

/// The part of an image config that says how the image runs. `User` is read but never used:
/// the sandbox always runs as 65534.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RunConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
}

/// The uncompressed digests of the layers, in order.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RootFs {
    #[serde(rename = "type")]
    pub kind: String,
    pub diff_ids: Vec<Digest>,
}

/// Why a document is refused.
#[derive(Debug, thiserror::Error)]
pub enum DocumentError {
    #[error("the {what} is {size} bytes, over the {max}-byte limit")]
    TooLarge {
        what: &'static str,
        size: usize,
        max: u64,
    },
    #[error("the {what} is not valid: {message}")]
    Invalid { what: &'static str, message: String },
}

fn parse<T: serde::de::DeserializeOwned>(
    what: &'static str,
    bytes: &[u8],
    max: u64,
) -> Result<T, DocumentError> {
    if bytes.len() as u64 > max {
        return Err(DocumentError::TooLarge {
            what,
            size: bytes.len(),
            max,
        });
    }
    let invalid = |message: String| DocumentError::Invalid { what, message };
    // Duplicate keys in a struct are refused by serde's derive ("duplicate field"); in a map
    // (labels, annotations) they are refused here, so two readers cannot see two documents.
    crate::image::oci::refuse_duplicate_keys(bytes).map_err(invalid)?;
    serde_json::from_slice(bytes).map_err(|e| invalid(e.to_string()))
}

impl Manifest {
    pub fn parse(bytes: &[u8]) -> Result<Self, DocumentError> {
        let m: Self = parse("image manifest", bytes, MAX_MANIFEST_BYTES)?;
        if m.schema_version != 2 {
            return Err(DocumentError::Invalid {
                what: "image manifest",
                message: format!("schemaVersion {} (only 2 is read)", m.schema_version),
            });
        }
        Ok(m)
    }
}

impl Index {
    pub fn parse(bytes: &[u8]) -> Result<Self, DocumentError> {
        let i: Self = parse("image index", bytes, MAX_MANIFEST_BYTES)?;
        if i.schema_version != 2 {
            return Err(DocumentError::Invalid {
                what: "image index",
                message: format!("schemaVersion {} (only 2 is read)", i.schema_version),
            });
        }
        Ok(i)
    }

    /// The entry for `host`, refusing none or more than one (an ambiguous index).
    pub fn pick(&self, host: &Platform) -> Result<&Descriptor, DocumentError> {
        let mut found = self.manifests.iter().filter(|d| {
            is_manifest(&d.media_type) && d.platform.as_ref().is_some_and(|p| p.runs_here(host))
        });
        let invalid = |message: String| DocumentError::Invalid {
            what: "image index",
            message,
        };
        match (found.next(), found.next()) {
            (Some(d), None) => Ok(d),
            (None, _) => Err(invalid(format!(
                "no manifest for {}/{}",
                host.os, host.architecture
            ))),
            (Some(_), Some(_)) => Err(invalid(format!(
                "more than one manifest for {}/{}",
                host.os, host.architecture
            ))),
        }
    }
}

impl ImageConfig {
    pub fn parse(bytes: &[u8]) -> Result<Self, DocumentError> {
        parse("image config", bytes, MAX_CONFIG_BYTES)
    }
}

/// Refuses a JSON document in which any object names a key twice.
pub(crate) fn refuse_duplicate_keys(bytes: &[u8]) -> Result<(), String> {
    use serde::de::{DeserializeSeed, MapAccess, SeqAccess, Visitor};
    struct Check;
    impl<'de> DeserializeSeed<'de> for Check {
        type Value = ();
        fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            d.deserialize_any(self)
        }
    }
    impl<'de> Visitor<'de> for Check {
        type Value = ();
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("JSON")
        }
        fn visit_bool<E>(self, _: bool) -> Result<(), E> {
            Ok(())
        }
        fn visit_i64<E>(self, _: i64) -> Result<(), E> {
            Ok(())
        }
        fn visit_u64<E>(self, _: u64) -> Result<(), E> {
            Ok(())
        }
        fn visit_f64<E>(self, _: f64) -> Result<(), E> {
            Ok(())
        }
        fn visit_str<E>(self, _: &str) -> Result<(), E> {
            Ok(())
        }
        fn visit_unit<E>(self) -> Result<(), E> {
            Ok(())
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
            while seq.next_element_seed(Check)?.is_some() {}
            Ok(())
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
            let mut seen = std::collections::HashSet::new();
            while let Some(key) = map.next_key::<String>()? {
                if !seen.insert(key.clone()) {
                    return Err(serde::de::Error::custom(format!("duplicate key {key:?}")));
                }
                map.next_value_seed(Check)?;
            }
            Ok(())
        }
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    Check.deserialize(&mut de).map_err(|e| e.to_string())?;
    de.end().map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest_json(extra: &str) -> String {
        let d = Digest::of(b"x");
        format!(
            r#"{{"schemaVersion":2,"mediaType":"{MEDIA_OCI_MANIFEST}","config":{{"mediaType":"{MEDIA_OCI_CONFIG}","digest":"{d}","size":1}},"layers":[{{"mediaType":"{MEDIA_OCI_LAYER_GZIP}","digest":"{d}","size":1}}]{extra}}}"#
        )
    }

    #[test]
    fn manifests_parse_and_duplicates_anywhere_are_refused() {
        let m = Manifest::parse(manifest_json("").as_bytes()).unwrap();
        assert_eq!(m.layers.len(), 1);
        assert_eq!(
            layer_compression(&m.layers[0].media_type),
            Some(Compression::Gzip)
        );
        let dup = manifest_json(r#","annotations":{"a":"1","a":"2"}"#);
        let err = Manifest::parse(dup.as_bytes()).unwrap_err().to_string();
        assert!(err.contains("duplicate key \"a\""), "{err}");
        let dup_field = manifest_json(r#","schemaVersion":2"#);
        assert!(Manifest::parse(dup_field.as_bytes()).is_err());
        let big = vec![b' '; MAX_MANIFEST_BYTES as usize + 1];
        assert!(matches!(
            Manifest::parse(&big),
            Err(DocumentError::TooLarge { .. })
        ));
    }

    #[test]
    fn an_index_picks_exactly_one_manifest_for_the_host() {
        let d = Digest::of(b"m");
        let entry = |arch: &str| {
            format!(
                r#"{{"mediaType":"{MEDIA_OCI_MANIFEST}","digest":"{d}","size":2,"platform":{{"architecture":"{arch}","os":"linux"}}}}"#
            )
        };
        let host = Platform {
            architecture: "amd64".into(),
            os: "linux".into(),
            variant: None,
        };
        let index = |entries: &[String]| {
            Index::parse(
                format!(
                    r#"{{"schemaVersion":2,"manifests":[{}]}}"#,
                    entries.join(",")
                )
                .as_bytes(),
            )
            .unwrap()
        };
        assert_eq!(
            index(&[entry("arm64"), entry("amd64")])
                .pick(&host)
                .unwrap()
                .size,
            2
        );
        assert!(index(&[entry("arm64")]).pick(&host).is_err());
        assert!(
            index(&[entry("amd64"), entry("amd64")])
                .pick(&host)
                .is_err()
        );
    }
}
