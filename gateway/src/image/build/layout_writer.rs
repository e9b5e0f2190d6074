//! Writes an image as an `oci-layout` directory (OCI image-spec, "Image Layout"): `oci-layout`,
//! `index.json` naming the one manifest (annotated `org.opencontainers.image.ref.name`), and
//! `blobs/sha256/<hex>` for the layers, the config and the manifest. Everything is written into
//! a staging directory beside the destination and renamed into place only when complete: a
//! failed build leaves nothing at `--out`, and its staging directory is removed on drop.
//! The documents are serialised from our own types (fields in declaration order, maps sorted),
//! so the same image always gives the same manifest bytes, hence the same digest.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use super::layer::{self, Layer, LayerError};
use super::tree::Tree;
use crate::image::blobs::random_suffix;
use crate::image::digest::{Digest, Hasher};
use crate::image::oci::{
    Descriptor, ImageConfig, Index, MEDIA_OCI_CONFIG, MEDIA_OCI_INDEX, MEDIA_OCI_LAYER_GZIP,
    MEDIA_OCI_MANIFEST, Manifest,
};

/// The annotation naming a manifest in an oci-layout's index.
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";

#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    #[error("{0} already exists: choose a new --out directory")]
    Exists(String),
    #[error("{path}: {source}")]
    Io { path: String, source: io::Error },
    #[error(transparent)]
    Layer(#[from] LayerError),
    #[error("the cached blob {path} is not {digest} ({size} bytes): remove the cache entry")]
    BadBlob {
        path: String,
        digest: Digest,
        size: u64,
    },
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> LayoutError + '_ {
    move |source| LayoutError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// An oci-layout being written; dropped before [`LayoutWriter::finish`], it leaves nothing.
#[derive(Debug)]
pub struct LayoutWriter {
    staging: PathBuf,
    out: PathBuf,
    blobs: PathBuf,
    finished: bool,
}

impl Drop for LayoutWriter {
    fn drop(&mut self) {
        if !self.finished {
            let _ = std::fs::remove_dir_all(&self.staging);
        }
    }
}

impl LayoutWriter {
    /// Starts a layout that will appear at `out` (which must not exist).
    pub fn create(out: &Path) -> Result<Self, LayoutError> {
        if out.symlink_metadata().is_ok() {
            return Err(LayoutError::Exists(out.display().to_string()));
        }
        let name = out
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "image".into());
        let parent = out
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let staging = parent.join(format!(".{name}.partial-{}", random_suffix()));
        let blobs = staging.join("blobs/sha256");
        std::fs::create_dir_all(&blobs).map_err(io_at(&blobs))?;
        Ok(Self {
            staging,
            out: out.to_owned(),
            blobs,
            finished: false,
        })
    }

    fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.blobs.join(digest.hex())
    }

    /// Writes `tree` as a gzipped layer (see [`layer::write`]).
    pub fn add_layer(
        &mut self,
        tree: &Tree,
        prefix: &str,
        mtime: u64,
    ) -> Result<(Descriptor, Digest), LayoutError> {
        let tmp = self.staging.join("layer.tmp");
        let file = File::create(&tmp).map_err(io_at(&tmp))?;
        let mut out = io::BufWriter::new(file);
        let layer = layer::write(tree, prefix, mtime, &mut out)?;
        out.into_inner()
            .map_err(|e| e.into_error())
            .and_then(|f| f.sync_all())
            .map_err(io_at(&tmp))?;
        let dest = self.blob_path(&layer.digest);
        std::fs::rename(&tmp, &dest).map_err(io_at(&dest))?;
        Ok((layer_descriptor(&layer), layer.diff_id))
    }

    /// Copies a base's layer blob (cached, or from an imported layout), re-hashed on the way.
    pub fn copy_layer(
        &mut self,
        from: &Path,
        layer: &Descriptor,
    ) -> Result<Descriptor, LayoutError> {
        let dest = self.blob_path(&layer.digest);
        let mut src = File::open(from).map_err(io_at(from))?;
        let mut dst = File::create(&dest).map_err(io_at(&dest))?;
        let (mut hasher, mut count, mut buf) = (Hasher::default(), 0u64, vec![0u8; 1 << 16]);
        loop {
            let n = src.read(&mut buf).map_err(io_at(from))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            count += n as u64;
            dst.write_all(&buf[..n]).map_err(io_at(&dest))?;
        }
        if count != layer.size || hasher.finish() != layer.digest {
            return Err(LayoutError::BadBlob {
                path: from.display().to_string(),
                digest: layer.digest.clone(),
                size: layer.size,
            });
        }
        let mut d = layer.clone();
        d.annotations.clear();
        d.platform = None;
        Ok(d)
    }

    /// Stores a JSON document as a blob and describes it.
    fn add_document(&mut self, media_type: &str, bytes: &[u8]) -> Result<Descriptor, LayoutError> {
        let digest = Digest::of(bytes);
        let path = self.blob_path(&digest);
        std::fs::write(&path, bytes).map_err(io_at(&path))?;
        Ok(Descriptor {
            media_type: media_type.into(),
            digest,
            size: bytes.len() as u64,
            platform: None,
            annotations: Default::default(),
        })
    }

    /// Writes the config, the manifest and the index, and moves the layout into place.
    /// Returns the manifest's descriptor (its digest is the image's).
    pub fn finish(
        mut self,
        config: &ImageConfig,
        layers: Vec<Descriptor>,
        ref_name: &str,
    ) -> Result<Descriptor, LayoutError> {
        let config_bytes = serde_json::to_vec(config).expect("a config serialises");
        let config = self.add_document(MEDIA_OCI_CONFIG, &config_bytes)?;
        let manifest = Manifest {
            schema_version: 2,
            media_type: Some(MEDIA_OCI_MANIFEST.into()),
            config,
            layers,
            annotations: Default::default(),
        };
        let manifest_bytes = serde_json::to_vec(&manifest).expect("a manifest serialises");
        let mut descriptor = self.add_document(MEDIA_OCI_MANIFEST, &manifest_bytes)?;
        descriptor
            .annotations
            .insert(REF_NAME.into(), ref_name.into());
        let index = Index {
            schema_version: 2,
            media_type: Some(MEDIA_OCI_INDEX.into()),
            manifests: vec![descriptor.clone()],
            annotations: Default::default(),
        };
        let write = |name: &str, bytes: &[u8]| {
            let path = self.staging.join(name);
            std::fs::write(&path, bytes).map_err(io_at(&path))
        };
        write("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        write(
            "index.json",
            &serde_json::to_vec(&index).expect("an index serialises"),
        )?;
        if self.out.symlink_metadata().is_ok() {
            return Err(LayoutError::Exists(self.out.display().to_string()));
        }
        std::fs::rename(&self.staging, &self.out).map_err(io_at(&self.out))?;
        self.finished = true;
        descriptor.annotations.clear();
        Ok(descriptor)
    }
}

fn layer_descriptor(layer: &Layer) -> Descriptor {
    Descriptor {
        media_type: MEDIA_OCI_LAYER_GZIP.into(),
        digest: layer.digest.clone(),
        size: layer.size,
        platform: None,
        annotations: Default::default(),
    }
}
