//! Pull by digest: the pinned document (whatever its `Content-Type` says, its bytes must hash
//! to the digest), the host platform's manifest when it is an index, then the config and the
//! layers, each streamed into the [`BlobStore`] and committed only when its size and digest
//! match. A blob already stored is not fetched again. Success means every one of them is in
//! the store; any refusal removes what this pull added, so nothing partial is ever visible.

use futures_util::StreamExt as _;

use super::blobs::BlobStore;
use super::digest::Digest;
use super::limits::UnpackLimits;
use super::oci::{Descriptor, MAX_MANIFEST_BYTES, Platform};
use super::reference::Reference;
use super::registry::{RegistryClient, RegistryError};
use super::transfer::{self, Document, ResolveError, Staged, StoredImage};
use super::{ImageRecord, ImageStore};

/// Blobs fetched at once.
const PARALLEL_BLOBS: usize = 3;

/// What a pull leaves in the store.
pub type Pulled = StoredImage;

/// Why a pull was refused.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error(
        "{0} names no digest: a pull goes by digest only (REPO@sha256:…), so that what runs is \
         what was pinned, not what a tag points at today"
    )]
    NoDigest(String),
    #[error("manifest {expected} from the registry hashes to {actual}: refused (tampered)")]
    ManifestDigest { expected: Digest, actual: Digest },
    #[error("manifest {digest}: the index says {pinned} bytes, the registry sent {got}")]
    ManifestSize {
        digest: Digest,
        pinned: u64,
        got: u64,
    },
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Resolve(#[from] ResolveError),
    #[error(transparent)]
    Blob(#[from] super::blobs::BlobError),
    #[error("installing {reference}: {source}")]
    Install {
        reference: String,
        source: Box<super::ImageError>,
    },
}

/// Fetches a manifest or index by digest and checks its bytes against it.
async fn fetch_document(
    client: &RegistryClient,
    repository: &str,
    digest: &Digest,
    max: u64,
) -> Result<(bytes::Bytes, Option<String>), PullError> {
    let (bytes, label) = client.fetch_manifest(repository, digest, max).await?;
    let actual = Digest::of(&bytes);
    if actual != *digest {
        return Err(PullError::ManifestDigest {
            expected: digest.clone(),
            actual,
        });
    }
    Ok((bytes, label))
}

/// Pulls the image `reference` pins into `store`, within the default unpack limits.
pub async fn pull(
    client: &RegistryClient,
    reference: &Reference,
    store: &BlobStore,
) -> Result<Pulled, PullError> {
    pull_within(client, reference, store, &UnpackLimits::default()).await
}

/// Pulls the image `reference` pins into `store`, refusing before any layer is fetched an
/// image whose layers `limits` would refuse at unpack.
pub async fn pull_within(
    client: &RegistryClient,
    reference: &Reference,
    store: &BlobStore,
    limits: &UnpackLimits,
) -> Result<Pulled, PullError> {
    let digest = reference
        .digest
        .clone()
        .ok_or_else(|| PullError::NoDigest(reference.to_string()))?;
    let repo = &reference.repository;
    let mut staged = Staged::new(store);

    let (bytes, label) = fetch_document(client, repo, &digest, MAX_MANIFEST_BYTES).await?;
    let (media_type, doc) = transfer::classify(&digest, &bytes, label.as_deref())?;
    staged.put_document(&digest, &bytes)?;
    let pinned = Descriptor {
        media_type,
        digest: digest.clone(),
        size: bytes.len() as u64,
        platform: None,
        annotations: Default::default(),
    };
    let (manifest_desc, manifest) = match doc {
        Document::Manifest(m) => (pinned.clone(), m),
        Document::Index(index) => {
            let chosen = index
                .pick(&Platform::host())
                .map_err(|source| ResolveError::Document {
                    digest: digest.clone(),
                    source,
                })?
                .clone();
            transfer::check_manifest_descriptor(&chosen)?;
            let (bytes, label) = fetch_document(client, repo, &chosen.digest, chosen.size).await?;
            if bytes.len() as u64 != chosen.size {
                return Err(PullError::ManifestSize {
                    digest: chosen.digest,
                    pinned: chosen.size,
                    got: bytes.len() as u64,
                });
            }
            let label = label.or_else(|| Some(chosen.media_type.clone()));
            match transfer::classify(&chosen.digest, &bytes, label.as_deref())? {
                (_, Document::Manifest(m)) => {
                    staged.put_document(&chosen.digest, &bytes)?;
                    (chosen, m)
                }
                (_, Document::Index(_)) => {
                    return Err(ResolveError::NestedIndex {
                        digest: chosen.digest,
                    }
                    .into());
                }
            }
        }
    };
    transfer::check_manifest(&manifest_desc.digest, &manifest, limits)?;

    // A few blobs at once: each connection's TLS and HTTP work runs in its own task (on
    // another core when there is one) while this one hashes and writes.
    let mut wanted: Vec<&Descriptor> = Vec::new();
    for blob in std::iter::once(&manifest.config).chain(&manifest.layers) {
        if !store.contains(&blob.digest) && !wanted.iter().any(|w| w.digest == blob.digest) {
            wanted.push(blob);
        }
    }
    // Recorded as each commits (not as the stream yields), so that a blob that finished
    // while another failed is rolled back too.
    let committed = std::sync::Mutex::new(Vec::new());
    let fetched = async {
        let mut fetches = futures_util::stream::iter(wanted)
            .map(|blob| async {
                client
                    .fetch_blob(repo, &blob.digest, blob.size, store)
                    .await?;
                committed
                    .lock()
                    .expect("not poisoned")
                    .push(blob.digest.clone());
                Ok::<(), PullError>(())
            })
            .buffer_unordered(PARALLEL_BLOBS);
        while let Some(done) = fetches.next().await {
            done?;
        }
        Ok::<(), PullError>(())
    }
    .await;
    for d in committed.into_inner().expect("not poisoned") {
        staged.added(d);
    }
    fetched?;
    staged.keep();
    Ok(StoredImage {
        pinned,
        manifest: manifest_desc,
        config: manifest.config,
        layers: manifest.layers,
    })
}

/// Pulls `reference` into `images`' blobs, then installs it (unpacked, recorded): the record
/// names the reference it came from.
pub async fn pull_and_install(
    client: &RegistryClient,
    reference: &Reference,
    images: &ImageStore,
) -> Result<ImageRecord, PullError> {
    // Held from the first blob to the record: a gc meanwhile would see blobs no record names.
    let _shared = images.blobs().shared().map_err(PullError::Blob)?;
    let pulled = pull_within(client, reference, images.blobs(), images.limits()).await?;
    let (images, shown) = (images.clone(), reference.to_string());
    // Unpacking is blocking file work: off the async workers.
    tokio::task::spawn_blocking(move || {
        images
            .install(&pulled.pinned.digest, pulled.pinned.size, &shown)
            .map_err(|source| PullError::Install {
                reference: shown.clone(),
                source: Box::new(source),
            })
    })
    .await
    .expect("the install task does not panic")
}
