//! Push (for `gigmcp image build --push`): an image from a directory layout or from the store
//! to a registry, with the pull's auth and credential rules. Blobs go up by monolithic upload
//! (`POST …/blobs/uploads/`, then `PUT ?digest=`, the registry re-hashing them), skipped when a
//! `HEAD` finds them; manifests go last (an index's children by digest first), the top one by
//! tag, and the digest the registry answers with must be the one we computed.

use std::path::PathBuf;

use bytes::Bytes;

use super::blobs::BlobStore;
use super::digest::Digest;
use super::layout::{Layout, LayoutError};
use super::limits::UnpackLimits;
use super::oci::{self, Descriptor};
use super::reference::Reference;
use super::registry::{RegistryClient, RegistryError};
use super::transfer::{self, Document, ResolveError};

/// Where the image's blobs are read from.
#[derive(Debug, Clone, Copy)]
pub enum PushSource<'a> {
    /// A directory layout (a tarball must be imported first).
    Layout(&'a Layout),
    Store(&'a BlobStore),
}

/// Why a push failed.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error("push from a layout tarball: import it, then push from the store")]
    Tarball,
    #[error("blob {digest} ({path}): {reason}")]
    Blob {
        digest: Digest,
        path: PathBuf,
        reason: String,
    },
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Resolve(#[from] ResolveError),
    #[error(transparent)]
    Layout(#[from] LayoutError),
}

impl PushSource<'_> {
    fn path(&self, digest: &Digest) -> Result<PathBuf, PushError> {
        match self {
            PushSource::Layout(l) => l.blob_path(digest).ok_or(PushError::Tarball),
            PushSource::Store(s) => Ok(s.path(digest)),
        }
    }

    /// A blob's file, checked to hold exactly the descriptor's size.
    fn sized(&self, d: &Descriptor) -> Result<PathBuf, PushError> {
        let path = self.path(&d.digest)?;
        let blob = |reason: String| PushError::Blob {
            digest: d.digest.clone(),
            path: path.clone(),
            reason,
        };
        let meta = std::fs::symlink_metadata(&path).map_err(|e| blob(e.to_string()))?;
        if !meta.is_file() || meta.len() != d.size {
            return Err(blob(format!(
                "{} bytes in a {}, the descriptor says {}",
                meta.len(),
                if meta.is_file() { "file" } else { "non-file" },
                d.size
            )));
        }
        Ok(path)
    }

    /// A document's bytes, verified.
    fn document(&self, d: &Descriptor) -> Result<(Bytes, Document), PushError> {
        transfer::check_manifest_descriptor(d)?;
        let path = self.sized(d)?;
        let bytes = std::fs::read(&path).map_err(|e| PushError::Blob {
            digest: d.digest.clone(),
            path: path.clone(),
            reason: e.to_string(),
        })?;
        if Digest::of(&bytes) != d.digest || bytes.len() as u64 != d.size {
            return Err(PushError::Blob {
                digest: d.digest.clone(),
                path,
                reason: "its bytes do not match its digest".into(),
            });
        }
        let (_, doc) = transfer::classify(&d.digest, &bytes, Some(&d.media_type))?;
        Ok((Bytes::from(bytes), doc))
    }
}

async fn push_blob(
    client: &RegistryClient,
    source: PushSource<'_>,
    repository: &str,
    d: &Descriptor,
) -> Result<(), PushError> {
    if client.has_blob(repository, &d.digest).await? {
        return Ok(());
    }
    let path = source.sized(d)?;
    client
        .upload_blob(repository, &d.digest, d.size, &path)
        .await?;
    Ok(())
}

/// Pushes a manifest's config and layers, then the manifest under `tag_or_digest`.
async fn push_manifest(
    client: &RegistryClient,
    source: PushSource<'_>,
    repository: &str,
    d: &Descriptor,
    bytes: Bytes,
    m: &oci::Manifest,
    tag_or_digest: &str,
) -> Result<Digest, PushError> {
    transfer::check_manifest(&d.digest, m, &UnpackLimits::default())?;
    for blob in std::iter::once(&m.config).chain(&m.layers) {
        push_blob(client, source, repository, blob).await?;
    }
    Ok(client
        .put_manifest(repository, tag_or_digest, &d.media_type, bytes)
        .await?)
}

/// Pushes the image `pinned` (a manifest or an index, found in `source`) to `target`'s
/// repository, under its tag (or its digest when `target` has no tag). Returns the digest the
/// registry confirmed.
pub async fn push(
    client: &RegistryClient,
    source: PushSource<'_>,
    pinned: &Descriptor,
    target: &Reference,
) -> Result<Digest, PushError> {
    let repo = &target.repository;
    let top_name = target
        .tag
        .clone()
        .unwrap_or_else(|| pinned.digest.to_string());
    let (bytes, doc) = source.document(pinned)?;
    match doc {
        Document::Manifest(m) => {
            push_manifest(client, source, repo, pinned, bytes, &m, &top_name).await
        }
        Document::Index(index) => {
            for child in &index.manifests {
                let (child_bytes, child_doc) = source.document(child)?;
                let Document::Manifest(m) = child_doc else {
                    return Err(ResolveError::NestedIndex {
                        digest: child.digest.clone(),
                    }
                    .into());
                };
                let name = child.digest.to_string();
                push_manifest(client, source, repo, child, child_bytes, &m, &name).await?;
            }
            Ok(client
                .put_manifest(repo, &top_name, &pinned.media_type, bytes)
                .await?)
        }
    }
}
