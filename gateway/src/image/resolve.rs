//! What a pinned digest names, resolved and checked before anything is unpacked: the pinned
//! document (a manifest, or an index resolved to this host's platform), its config (this
//! host's OS and architecture, one diff_id per layer) and its layers (media types we unpack,
//! no more than the limit). Every blob is read from the store, verified, with the size its
//! descriptor pinned as its cap.

use serde::Deserialize;

use super::blobs::BlobStore;
use super::digest::Digest;
use super::entry::UnpackError;
use super::error::ImageError;
use super::limits::UnpackLimits;
use super::oci::{
    self, Descriptor, DocumentError, ImageConfig, Index, MAX_CONFIG_BYTES, MAX_MANIFEST_BYTES,
    Manifest, Platform,
};

/// An image ready to unpack.
#[derive(Debug)]
pub struct Resolved {
    pub pinned_media_type: String,
    pub manifest_descriptor: Descriptor,
    pub manifest: Manifest,
    pub config: ImageConfig,
}

/// What a pinned digest names, resolved and checked before anything is unpacked.
pub fn resolve(
    blobs: &BlobStore,
    limits: &UnpackLimits,
    pinned: &Digest,
    pinned_size: u64,
) -> Result<Resolved, ImageError> {
    let document = |digest: &Digest| {
        let digest = digest.clone();
        move |source| ImageError::Document { digest, source }
    };
    let bytes = blobs.read_small(pinned, pinned_size, MAX_MANIFEST_BYTES)?;
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Probe {
        media_type: Option<String>,
        manifests: Option<serde::de::IgnoredAny>,
        layers: Option<serde::de::IgnoredAny>,
    }
    let probe: Probe = serde_json::from_slice(&bytes).map_err(|e| ImageError::Document {
        digest: pinned.clone(),
        source: DocumentError::Invalid {
            what: "pinned document",
            message: e.to_string(),
        },
    })?;
    let is_index = match probe.media_type.as_deref() {
        Some(t) if oci::is_index(t) => true,
        Some(t) if oci::is_manifest(t) => false,
        None if probe.manifests.is_some() => true,
        None if probe.layers.is_some() => false,
        other => {
            return Err(ImageError::UnsupportedMediaType {
                digest: pinned.clone(),
                media_type: other.unwrap_or("(none)").into(),
            });
        }
    };
    let (manifest_descriptor, manifest_bytes, pinned_media_type) = if is_index {
        let index = Index::parse(&bytes).map_err(document(pinned))?;
        let entry = index
            .pick(&Platform::host())
            .map_err(document(pinned))?
            .clone();
        let bytes = blobs.read_small(&entry.digest, entry.size, MAX_MANIFEST_BYTES)?;
        let media = probe
            .media_type
            .unwrap_or_else(|| oci::MEDIA_OCI_INDEX.into());
        (entry, bytes, media)
    } else {
        let media = probe
            .media_type
            .unwrap_or_else(|| oci::MEDIA_OCI_MANIFEST.into());
        let descriptor = Descriptor {
            media_type: media.clone(),
            digest: pinned.clone(),
            size: pinned_size,
            platform: None,
            annotations: Default::default(),
        };
        (descriptor, bytes, media)
    };
    let md = &manifest_descriptor.digest;
    let manifest = Manifest::parse(&manifest_bytes).map_err(document(md))?;
    if let Some(t) = &manifest.media_type
        && !oci::is_manifest(t)
    {
        return Err(ImageError::UnsupportedMediaType {
            digest: md.clone(),
            media_type: t.clone(),
        });
    }
    let config_type = manifest.config.media_type.as_str();
    if config_type != oci::MEDIA_OCI_CONFIG && config_type != oci::MEDIA_DOCKER_CONFIG {
        return Err(ImageError::UnsupportedMediaType {
            digest: manifest.config.digest.clone(),
            media_type: config_type.into(),
        });
    }
    let config_bytes = blobs.read_small(
        &manifest.config.digest,
        manifest.config.size,
        MAX_CONFIG_BYTES,
    )?;
    let config = ImageConfig::parse(&config_bytes).map_err(document(&manifest.config.digest))?;
    let host = Platform::host();
    if config.os != host.os || config.architecture != host.architecture {
        return Err(ImageError::Platform {
            want: format!("{}/{}", host.os, host.architecture),
            got: format!("{}/{}", config.os, config.architecture),
        });
    }
    if manifest.layers.len() > limits.max_layers {
        return Err(ImageError::Refused(Box::new(UnpackError::TooManyLayers {
            count: manifest.layers.len(),
            limit: limits.max_layers,
        })));
    }
    if manifest.layers.len() != config.rootfs.diff_ids.len() {
        return Err(ImageError::DiffIdCount {
            layers: manifest.layers.len(),
            diff_ids: config.rootfs.diff_ids.len(),
        });
    }
    for layer in &manifest.layers {
        if oci::layer_compression(&layer.media_type).is_none() {
            return Err(ImageError::UnsupportedMediaType {
                digest: layer.digest.clone(),
                media_type: layer.media_type.clone(),
            });
        }
    }
    Ok(Resolved {
        pinned_media_type,
        manifest_descriptor,
        manifest,
        config,
    })
}
