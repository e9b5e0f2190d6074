//! Why an image could not be installed, found, checked or removed: one error for the store,
//! the document it resolves and the layers it unpacks.

use std::io;
use std::path::{Path, PathBuf};

use super::blobs::BlobError;
use super::digest::Digest;
use super::entry::UnpackError;
use super::oci::DocumentError;
use super::tree::TreeError;

/// Why an image could not be installed, found, checked or removed.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error(transparent)]
    Blob(#[from] BlobError),
    #[error("{digest}: {source}")]
    Document {
        digest: Digest,
        #[source]
        source: DocumentError,
    },
    #[error("{digest} has media type {media_type:?}, which is not one this store installs")]
    UnsupportedMediaType { digest: Digest, media_type: String },
    #[error("the image is built for {got}, not for this host ({want})")]
    Platform { want: String, got: String },
    #[error("the manifest lists {layers} layers but its config {diff_ids} diff_ids")]
    DiffIdCount { layers: usize, diff_ids: usize },
    #[error("layer {index} ({layer}): {source}")]
    Unpack {
        index: usize,
        layer: Digest,
        #[source]
        source: Box<UnpackError>,
    },
    #[error(transparent)]
    Refused(Box<UnpackError>),
    #[error("image {digest} changed on disk since it was installed{}", path.as_ref().map(|p| format!(" (first difference: {p})")).unwrap_or_default())]
    Tampered {
        digest: Digest,
        path: Option<String>,
    },
    #[error("image {0} is not installed")]
    NotInstalled(Digest),
    #[error("the record {path}: {message}")]
    Record { path: PathBuf, message: String },
    #[error("images.{key}: {message}")]
    Limits { key: &'static str, message: String },
    #[error(transparent)]
    Tree(#[from] TreeError),
    #[error("the image store at {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

pub(super) fn io_at(path: &Path) -> impl FnOnce(io::Error) -> ImageError + '_ {
    move |source| ImageError::Io {
        path: path.to_owned(),
        source,
    }
}
