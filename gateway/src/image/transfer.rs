//! What pull and import share once a document's bytes are in hand: which kind of document it
//! is (its own `mediaType` first, the transport's label only when it has none, since the
//! bytes are what was pinned), what a manifest may reference (a config and layers of types we
//! read, within the size caps), and the rollback that makes a refused transfer leave nothing:
//! every blob it added to the store is removed again unless the whole image arrived.

use super::blobs::{BlobError, BlobStore};
use super::digest::Digest;
use super::limits::UnpackLimits;
use super::oci::{self, Descriptor, DocumentError, Index, Manifest};

/// An image whose every blob is in the store, each verified against its digest and size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredImage {
    /// The document the caller pinned: a manifest, or an index resolved to `manifest`.
    pub pinned: Descriptor,
    /// The host platform's manifest (equal to `pinned` when a manifest was pinned).
    pub manifest: Descriptor,
    pub config: Descriptor,
    /// Bottom first.
    pub layers: Vec<Descriptor>,
}

impl StoredImage {
    /// Every blob the image consists of: the pinned document, the chosen manifest (when it
    /// differs), the config, the layers.
    pub fn blobs(&self) -> Vec<&Descriptor> {
        let mut out = vec![&self.pinned];
        if self.manifest.digest != self.pinned.digest {
            out.push(&self.manifest);
        }
        out.push(&self.config);
        out.extend(&self.layers);
        out
    }
}

/// Why an image's documents are refused.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("{digest}: {source}")]
    Document {
        digest: Digest,
        source: DocumentError,
    },
    #[error("{digest} has media type {media_type:?}, neither an image manifest nor an index")]
    MediaType { digest: Digest, media_type: String },
    #[error("{digest} is an index inside an index (only one level is read)")]
    NestedIndex { digest: Digest },
    #[error("manifest {manifest}: config {config} has media type {media_type:?}")]
    ConfigType {
        manifest: Digest,
        config: Digest,
        media_type: String,
    },
    #[error(
        "manifest {manifest}: layer {layer} has media type {media_type:?} (tar, tar+gzip and \
         tar+zstd layers are read; foreign and non-distributable ones are not)"
    )]
    LayerType {
        manifest: Digest,
        layer: Digest,
        media_type: String,
    },
    #[error(
        "manifest {manifest} lists {layers} layers, over the limit of {max} (images.max_layers)"
    )]
    TooManyLayers {
        manifest: Digest,
        layers: usize,
        max: usize,
    },
    #[error("{what} {digest} claims {size} bytes, over the {max}-byte limit")]
    TooLarge {
        what: &'static str,
        digest: Digest,
        size: u64,
        max: u64,
    },
}

/// A manifest or an index.
#[derive(Debug)]
pub enum Document {
    Manifest(Manifest),
    Index(Index),
}

/// Reads `bytes` (already verified as `digest`) as a manifest or an index.
pub fn classify(
    digest: &Digest,
    bytes: &[u8],
    label: Option<&str>,
) -> Result<(String, Document), ResolveError> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Probe {
        media_type: Option<String>,
    }
    let doc_error = |source| ResolveError::Document {
        digest: digest.clone(),
        source,
    };
    let probe: Probe = serde_json::from_slice(bytes).map_err(|e| {
        doc_error(DocumentError::Invalid {
            what: "image document",
            message: e.to_string(),
        })
    })?;
    let media_type = probe
        .media_type
        .or_else(|| label.map(str::to_owned))
        .unwrap_or_default();
    let doc = if oci::is_manifest(&media_type) {
        Document::Manifest(Manifest::parse(bytes).map_err(doc_error)?)
    } else if oci::is_index(&media_type) {
        Document::Index(Index::parse(bytes).map_err(doc_error)?)
    } else {
        return Err(ResolveError::MediaType {
            digest: digest.clone(),
            media_type,
        });
    };
    Ok((media_type, doc))
}

/// A manifest descriptor an index points at, within the manifest cap.
pub fn check_manifest_descriptor(d: &Descriptor) -> Result<(), ResolveError> {
    if d.size > oci::MAX_MANIFEST_BYTES {
        return Err(ResolveError::TooLarge {
            what: "manifest",
            digest: d.digest.clone(),
            size: d.size,
            max: oci::MAX_MANIFEST_BYTES,
        });
    }
    Ok(())
}

/// Refuses a manifest whose config or layers we would not read, or whose layers the unpack
/// limits would refuse anyway: checked before the first blob is fetched, so a hostile
/// registry cannot make the gateway download (and write to disk) more than an image it could
/// ever install. A compressed layer larger than the uncompressed per-layer limit, or layers
/// larger in all than the per-image one, cannot unpack within them.
pub fn check_manifest(
    digest: &Digest,
    m: &Manifest,
    limits: &UnpackLimits,
) -> Result<(), ResolveError> {
    if m.layers.len() > limits.max_layers {
        return Err(ResolveError::TooManyLayers {
            manifest: digest.clone(),
            layers: m.layers.len(),
            max: limits.max_layers,
        });
    }
    let mut total: u64 = 0;
    for layer in &m.layers {
        if layer.size > limits.max_layer_bytes {
            return Err(ResolveError::TooLarge {
                what: "layer",
                digest: layer.digest.clone(),
                size: layer.size,
                max: limits.max_layer_bytes,
            });
        }
        total = total.saturating_add(layer.size);
        if total > limits.max_image_bytes {
            return Err(ResolveError::TooLarge {
                what: "layers in all, up to layer",
                digest: layer.digest.clone(),
                size: total,
                max: limits.max_image_bytes,
            });
        }
    }
    if !matches!(
        m.config.media_type.as_str(),
        oci::MEDIA_OCI_CONFIG | oci::MEDIA_DOCKER_CONFIG
    ) {
        return Err(ResolveError::ConfigType {
            manifest: digest.clone(),
            config: m.config.digest.clone(),
            media_type: m.config.media_type.clone(),
        });
    }
    if m.config.size > oci::MAX_CONFIG_BYTES {
        return Err(ResolveError::TooLarge {
            what: "config",
            digest: m.config.digest.clone(),
            size: m.config.size,
            max: oci::MAX_CONFIG_BYTES,
        });
    }
    for layer in &m.layers {
        if oci::layer_compression(&layer.media_type).is_none() {
            return Err(ResolveError::LayerType {
                manifest: digest.clone(),
                layer: layer.digest.clone(),
                media_type: layer.media_type.clone(),
            });
        }
    }
    Ok(())
}

/// The blobs a transfer added to the store, removed again on drop unless kept.
#[derive(Debug)]
pub struct Staged<'a> {
    store: &'a BlobStore,
    added: Vec<Digest>,
}

impl<'a> Staged<'a> {
    pub fn new(store: &'a BlobStore) -> Self {
        Self {
            store,
            added: Vec::new(),
        }
    }

    /// Records a blob this transfer committed (one that was not there before).
    pub fn added(&mut self, digest: Digest) {
        self.added.push(digest);
    }

    /// Stores verified document bytes (a manifest or index) under `digest`.
    pub fn put_document(&mut self, digest: &Digest, bytes: &[u8]) -> Result<(), BlobError> {
        if self.store.contains(digest) {
            return Ok(());
        }
        let mut w = self.store.writer(digest, bytes.len() as u64)?;
        w.write(bytes)?;
        w.commit()?;
        self.added(digest.clone());
        Ok(())
    }

    /// The transfer succeeded: what it added stays.
    pub fn keep(mut self) {
        self.added.clear();
    }
}

impl Drop for Staged<'_> {
    fn drop(&mut self) {
        for d in &self.added {
            let _ = self.store.remove(d);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layers_the_unpack_limits_would_refuse_are_refused_before_any_is_fetched() {
        let layer = |size: u64| {
            format!(
                r#"{{"mediaType":"{}","digest":"{}","size":{size}}}"#,
                oci::MEDIA_OCI_LAYER_GZIP,
                Digest::of(&size.to_le_bytes())
            )
        };
        let manifest = |layers: &[String]| {
            Manifest::parse(
                format!(
                    r#"{{"schemaVersion":2,"config":{{"mediaType":"{}","digest":"{}","size":2}},"layers":[{}]}}"#,
                    oci::MEDIA_OCI_CONFIG,
                    Digest::of(b"{}"),
                    layers.join(",")
                )
                .as_bytes(),
            )
            .unwrap()
        };
        let d = Digest::of(b"m");
        let limits = UnpackLimits::default();
        let ok = manifest(&[layer(1 << 20), layer(2 << 20)]);
        assert!(check_manifest(&d, &ok, &limits).is_ok());
        let huge = manifest(&[layer(1 << 60)]);
        let e = check_manifest(&d, &huge, &limits).unwrap_err();
        assert!(
            matches!(e, ResolveError::TooLarge { what: "layer", .. }),
            "{e}"
        );
        let n = limits.max_layer_bytes;
        let many_big: Vec<String> = (0..limits.max_image_bytes / n + 1)
            .map(|_| layer(n))
            .collect();
        let e = check_manifest(&d, &manifest(&many_big), &limits).unwrap_err();
        assert!(e.to_string().contains("layers in all"), "{e}");
        let too_many: Vec<String> = (0..=limits.max_layers as u64).map(layer).collect();
        let e = check_manifest(&d, &manifest(&too_many), &limits).unwrap_err();
        assert!(matches!(e, ResolveError::TooManyLayers { .. }), "{e}");
    }

    #[test]
    fn the_document_says_what_it_is_before_the_transport_does() {
        let d = Digest::of(b"x");
        let index = format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","manifests":[]}}"#,
            oci::MEDIA_OCI_INDEX
        );
        let (mt, doc) = classify(&d, index.as_bytes(), Some(oci::MEDIA_OCI_MANIFEST)).unwrap();
        assert_eq!(mt, oci::MEDIA_OCI_INDEX);
        assert!(matches!(doc, Document::Index(_)));
        let bare = r#"{"schemaVersion":2,"manifests":[]}"#;
        assert!(matches!(
            classify(&d, bare.as_bytes(), Some(oci::MEDIA_DOCKER_LIST))
                .unwrap()
                .1,
            Document::Index(_)
        ));
        let e = classify(&d, bare.as_bytes(), Some("text/plain")).unwrap_err();
        assert!(e.to_string().contains("text/plain"), "{e}");
    }

    #[test]
    fn a_dropped_transfer_removes_what_it_added_and_only_that() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let before = Digest::of(b"old");
        Staged::new(&store).put_document(&before, b"old").ok();
        assert!(!store.contains(&before), "dropped without keep");
        let mut kept = Staged::new(&store);
        kept.put_document(&before, b"old").unwrap();
        kept.keep();
        let mut s = Staged::new(&store);
        s.put_document(&before, b"old").unwrap();
        let new = Digest::of(b"new");
        s.put_document(&new, b"new").unwrap();
        drop(s);
        assert!(store.contains(&before), "it was there before");
        assert!(!store.contains(&new));
    }
}
