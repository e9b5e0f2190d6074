//! `--base oci-layout:DIR@sha256:…`: a runtime base imported from an oci-layout directory (a
//! base built elsewhere, e.g. from a Node.js release tarball), pinned by its manifest digest.
//! Every document and layer is read through the layout's own checks and re-hashed against the
//! digest and size that name it before the image uses it; its layers are copied as they are
//! (media type included), its config's `Env` is the image's starting environment.

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::image::digest::Digest;
use crate::image::layout::{Layout, Select};
use crate::image::oci::{self, Descriptor, ImageConfig, Manifest, Platform};

/// A base from a layout: its layers (file, descriptor) and diff ids, and its environment.
#[derive(Debug, Clone)]
pub struct ImportedBase {
    pub layers: Vec<(PathBuf, Descriptor)>,
    pub diff_ids: Vec<Digest>,
    pub env: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ImportedError {
    #[error("--base {0:?}: expected oci-layout:DIR@sha256:<64 hex>")]
    Form(String),
    #[error("the base layout {dir}: {message}")]
    Invalid { dir: String, message: String },
}

/// Parses `oci-layout:DIR@sha256:…`.
pub fn parse(text: &str) -> Result<(PathBuf, Digest), ImportedError> {
    let form = || ImportedError::Form(text.chars().take(200).collect());
    let rest = text.strip_prefix("oci-layout:").ok_or_else(form)?;
    let (dir, digest) = rest.rsplit_once('@').ok_or_else(form)?;
    let digest = Digest::parse(digest).map_err(|_| form())?;
    if dir.is_empty() {
        return Err(form());
    }
    Ok((PathBuf::from(dir), digest))
}

/// Reads the pinned manifest's base from the layout at `dir`.
pub fn read(dir: &Path, digest: &Digest) -> Result<ImportedBase, ImportedError> {
    let invalid = |message: String| ImportedError::Invalid {
        dir: dir.display().to_string(),
        message,
    };
    let layout = Layout::open(dir).map_err(|e| invalid(e.to_string()))?;
    let top = layout
        .select(&Select::Digest(digest.clone()))
        .map_err(|e| invalid(e.to_string()))?;
    if !oci::is_manifest(&top.media_type) {
        return Err(invalid(format!(
            "{digest} is a {}, not an image manifest",
            top.media_type
        )));
    }
    let blob = |d: &Descriptor, max: u64| -> Result<(PathBuf, Vec<u8>), ImportedError> {
        let path = layout
            .blob_path(&d.digest)
            .ok_or_else(|| invalid("a tarball layout: unpack it into a directory first".into()))?;
        if d.size > max {
            return Err(invalid(format!("{} is over {max} bytes", d.digest)));
        }
        let mut bytes = Vec::new();
        std::fs::File::open(&path)
            .and_then(|f| f.take(max + 1).read_to_end(&mut bytes))
            .map_err(|e| invalid(format!("{}: {e}", d.digest)))?;
        if bytes.len() as u64 != d.size || Digest::of(&bytes) != d.digest {
            return Err(invalid(format!(
                "blob {} does not match its digest",
                d.digest
            )));
        }
        Ok((path, bytes))
    };
    let (_, manifest_bytes) = blob(&top, oci::MAX_MANIFEST_BYTES)?;
    let manifest = Manifest::parse(&manifest_bytes).map_err(|e| invalid(e.to_string()))?;
    let (_, config_bytes) = blob(&manifest.config, oci::MAX_CONFIG_BYTES)?;
    let config = ImageConfig::parse(&config_bytes).map_err(|e| invalid(e.to_string()))?;
    let host = Platform::host();
    if config.os != host.os || config.architecture != host.architecture {
        return Err(invalid(format!(
            "the base is {}/{}, this host {}/{}",
            config.os, config.architecture, host.os, host.architecture
        )));
    }
    if config.rootfs.diff_ids.len() != manifest.layers.len() {
        return Err(invalid(
            "its config's diff_ids do not match its layers".into(),
        ));
    }
    let mut layers = Vec::new();
    for d in &manifest.layers {
        if oci::layer_compression(&d.media_type).is_none() {
            return Err(invalid(format!("layer {} is a {}", d.digest, d.media_type)));
        }
        let path = layout
            .blob_path(&d.digest)
            .ok_or_else(|| invalid("a tarball layout".into()))?;
        layers.push((path, d.clone()));
    }
    Ok(ImportedBase {
        layers,
        diff_ids: config.rootfs.diff_ids.clone(),
        env: config.config.env.clone().unwrap_or_default(),
    })
}
