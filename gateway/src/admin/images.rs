//! Images on the admin side, over the one [`ImageStore`] at `sandbox.images_dir` the daemon
//! also opens: pull by digest, import from an `oci-layout` (directory or tarball), list,
//! remove (refused while a server uses it), garbage-collect (keeping every image a server
//! record names), and what `server add --image` needs: the image installed (pulled or
//! imported unless it already is), and taken away again if the add is refused, when the add
//! brought it. Each verb is audited by the caller (`local.rs`).

use std::collections::HashSet;
use std::path::Path;

use zeroize::Zeroizing;

use super::AdminError;
use crate::config::ImagesConfig;
use crate::image::digest::Digest;
use crate::image::layout::{Layout, Select};
use crate::image::reference::Reference;
use crate::image::registry::{ClientOptions, RegistryClient};
use crate::image::transfer::StoredImage;
use crate::image::{GcReport, ImageRecord, ImageStore, UnpackLimits, pull};
use crate::store::Store;
use crate::vault::{SecretName, Vault};

/// How `server add --image` names its image: `oci-layout:PATH@sha256:<hex>` (an air-gapped
/// host's layout, directory or tarball) or a registry reference pinned by digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageSource {
    Layout { path: String, digest: Digest },
    Registry(Reference),
}

impl ImageSource {
    pub fn parse(text: &str) -> Result<Self, AdminError> {
        let refused = |why: String| AdminError::Refused(format!("image {text:?}: {why}"));
        if let Some(rest) = text.strip_prefix("oci-layout:") {
            let (path, digest) = rest
                .rsplit_once('@')
                .ok_or_else(|| refused("pin it: oci-layout:PATH@sha256:<hex>".into()))?;
            let digest = Digest::parse(digest).map_err(|e| refused(e.to_string()))?;
            return Ok(Self::Layout {
                path: path.to_owned(),
                digest,
            });
        }
        let reference = Reference::parse(text).map_err(|e| refused(e.to_string()))?;
        if reference.digest.is_none() {
            return Err(refused(
                "a tag can move: pin the image by digest (REF@sha256:<hex>)".into(),
            ));
        }
        Ok(Self::Registry(reference))
    }

    /// The digest the admin pinned.
    pub fn digest(&self) -> &Digest {
        match self {
            Self::Layout { digest, .. } => digest,
            Self::Registry(r) => r.digest.as_ref().expect("parse requires a digest"),
        }
    }
}

impl std::fmt::Display for ImageSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Layout { path, digest } => write!(f, "oci-layout:{path}@{digest}"),
            Self::Registry(r) => write!(f, "{r}"),
        }
    }
}

/// What the image verbs need besides the store.
#[derive(Debug, Clone)]
pub struct ImageSettings {
    pub images_dir: std::path::PathBuf,
    pub unpack: UnpackLimits,
    pub registries: ImagesConfig,
}

fn refused(e: impl std::fmt::Display) -> AdminError {
    AdminError::Refused(e.to_string())
}

pub fn open(settings: &ImageSettings) -> Result<ImageStore, AdminError> {
    ImageStore::open(&settings.images_dir, settings.unpack.clone()).map_err(refused)
}

/// Pulls `reference` (pinned by digest) into the store's blobs, with the credentials its
/// `[[images.registries]]` entry names (the password read from the vault).
pub fn pull_blobs(
    store: &ImageStore,
    reference: &Reference,
    settings: &ImageSettings,
    vault: &Vault,
) -> Result<StoredImage, AdminError> {
    let config = settings.registries.registry(&reference.registry);
    let password = match &config.password_secret {
        Some(name) => {
            let name = SecretName::parse(name)?;
            let value = vault.get(&name)?;
            let text = std::str::from_utf8(value.expose()).map_err(|_| {
                refused(format!(
                    "registry {}: the secret {} is not UTF-8",
                    config.host,
                    name.as_str()
                ))
            })?;
            Some(Zeroizing::new(text.to_owned()))
        }
        None => None,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(refused)?;
    rt.block_on(async {
        let client = RegistryClient::new(&config, password, ClientOptions::default())
            .await
            .map_err(refused)?;
        pull::pull_within(&client, reference, store.blobs(), store.limits())
            .await
            .map_err(refused)
    })
}

/// Imports the image `select` names from the layout at `path` into the store's blobs.
pub fn import_blobs(
    store: &ImageStore,
    path: &Path,
    select: &Select,
) -> Result<StoredImage, AdminError> {
    Layout::open(path)
        .and_then(|layout| layout.import(select, store.blobs()))
        .map_err(refused)
}

/// Installs what a pull or import stored; a refusal leaves behind no blob that no installed
/// image references.
pub fn install(
    store: &ImageStore,
    stored: &StoredImage,
    reference: &str,
) -> Result<ImageRecord, AdminError> {
    match store.install(&stored.pinned.digest, stored.pinned.size, reference) {
        Ok(record) => Ok(record),
        Err(e) => {
            // The blobs this pull brought are referenced by no record now: collected.
            let _ = collect_blobs(store);
            Err(refused(e))
        }
    }
}

/// Removes the blobs no installed image references (and stale temporaries), keeping every
/// installed image.
pub fn collect_blobs(store: &ImageStore) -> Result<GcReport, AdminError> {
    let keep: HashSet<Digest> = store
        .list()
        .map_err(refused)?
        .into_iter()
        .map(|r| r.pinned)
        .collect();
    store.gc(&keep).map_err(refused)
}

/// The servers whose records name `digest`.
pub fn users_of(store: &dyn Store, digest: &Digest) -> Result<Vec<String>, AdminError> {
    let name = digest.to_string();
    Ok(store
        .server_list()?
        .into_iter()
        .filter(|s| s.image_digest == name)
        .map(|s| s.name)
        .collect())
}

/// Every digest a server record names: what `gc` keeps.
pub fn in_use(store: &dyn Store) -> Result<HashSet<Digest>, AdminError> {
    Ok(store
        .server_list()?
        .into_iter()
        .filter_map(|s| Digest::parse(&s.image_digest).ok())
        .collect())
}

/// Removes `digest`'s image, refused while a server uses it; returns the bytes freed (its
/// root and the blobs no other image shares).
pub fn remove(store: &ImageStore, records: &dyn Store, digest: &Digest) -> Result<u64, AdminError> {
    let users = users_of(records, digest)?;
    if !users.is_empty() {
        return Err(AdminError::Refused(format!(
            "image {digest} is used by server {}: remove the server first",
            users.join(", ")
        )));
    }
    let record = store
        .get(digest)
        .map_err(refused)?
        .ok_or_else(|| AdminError::Refused(format!("image {digest} is not installed")))?;
    store.remove(digest).map_err(refused)?;
    let blobs = collect_blobs(store)?;
    Ok(record.unpacked_bytes + blobs.bytes_freed)
}

/// The size a registry's entry pins, against the installed image's top document (the digest
/// is checked by the pull; the size is the entry's word too, and must agree).
fn check_size(record: &ImageRecord, size: Option<u64>) -> Result<(), AdminError> {
    match size {
        Some(pinned) if pinned != record.pinned_size => Err(AdminError::Refused(format!(
            "image {}: its manifest is {} bytes, the entry pins {pinned}",
            record.pinned, record.pinned_size
        ))),
        _ => Ok(()),
    }
}

/// Which image of a layout `image import` takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImportSelect {
    Digest(String),
    Name(String),
    /// The layout's only image.
    Only,
}

/// A server installed from an image, and what the audit entry says about it.
#[derive(Debug)]
pub(super) struct Added {
    pub record: crate::store::ServerRecord,
    pub reference: String,
    pub notes: Vec<String>,
}

/// A server record to write once its image is installed and checked, and what the image
/// must be besides its digest.
pub(super) struct WithImage<'a> {
    pub name: &'a str,
    pub manifest: &'a crate::manifest::Manifest,
    /// The record, whose `image_digest` is the image's.
    pub record: crate::store::ServerRecord,
    /// The size the registry's entry pins for the image's manifest (`None`: only the digest
    /// is pinned, as with `server add --image`).
    pub size: Option<u64>,
}

impl super::local::LocalAdmin {
    pub(super) fn add_image(
        &self,
        name: &str,
        image: &str,
        manifest_json: &str,
        approved_ranges: &[ipnet::IpNet],
    ) -> Result<Added, AdminError> {
        let manifest = self.check_unsigned_add(name, manifest_json, approved_ranges)?;
        let source = ImageSource::parse(image)?;
        let record = crate::store::ServerRecord {
            name: name.to_owned(),
            version: manifest.version.clone(),
            image_digest: source.digest().to_string(),
            manifest: manifest_json.to_owned(),
            source: "unsigned".into(),
            approved_ranges: approved_ranges.iter().map(|r| r.to_string()).collect(),
            installed_ms: crate::store::now_ms(),
            origin: None,
        };
        let new = WithImage {
            name,
            manifest: &manifest,
            record,
            size: None,
        };
        self.with_image(&source, new, |store, record| {
            if store.server_add(record)? {
                Ok(())
            } else {
                Err(AdminError::Refused(format!(
                    "server {name} is installed already"
                )))
            }
        })
    }

    /// Installs `source`'s image unless it is installed (then verifies it, as a start
    /// would), checks that `new` can run from it, and writes the record with `commit`. A
    /// refusal at any step takes away an image this call brought.
    pub(super) fn with_image(
        &self,
        source: &ImageSource,
        new: WithImage<'_>,
        commit: impl FnOnce(
            &dyn crate::store::Store,
            &crate::store::ServerRecord,
        ) -> Result<(), AdminError>,
    ) -> Result<Added, AdminError> {
        let digest = source.digest().clone();
        let settings = self.image_settings();
        let store = open(&settings)?;
        // Held until the server's record names the image: a gc in between would see an
        // image no server uses, and remove it.
        let shared = store.blobs().shared().map_err(refused)?;
        let existed = store.get(&digest).map_err(refused)?.is_some();
        let record = if existed {
            // Installed before: checked as a start would check it.
            store.verify(&digest).map_err(refused)?
        } else {
            let stored = match source {
                ImageSource::Layout { path, digest } => {
                    import_blobs(&store, Path::new(path), &Select::Digest(digest.clone()))?
                }
                ImageSource::Registry(reference) => {
                    pull_blobs(&store, reference, &settings, self.vault())?
                }
            };
            install(&store, &stored, &source.to_string())?
        };
        let checked = check_size(&record, new.size)
            .and_then(|()| super::local::run_plan(new.name, Some(&record.config.config), new.manifest))
            .and_then(|run| {
                let root = settings
                    .images_dir
                    .join(ImageStore::rootfs_relative(&digest));
                super::image_layout::check(&root, &run).map_err(|e| {
                    AdminError::Refused(format!(
                        "image {digest}: {e} (see \"What an image must contain\" in docs/SANDBOX.md)"
                    ))
                })?;
                Ok(run)
            })
            .and_then(|run| commit(self.records(), &new.record).map(|()| run));
        let run = match checked {
            Ok(run) => run,
            Err(e) => {
                // This call brought the image: it goes with the refusal (removal holds the
                // store alone, so this call lets go of it first).
                drop(shared);
                if !existed {
                    let _ = store.remove(&digest);
                    let _ = collect_blobs(&store);
                }
                return Err(e);
            }
        };
        drop(shared);
        Ok(Added {
            record: new.record,
            reference: source.to_string(),
            notes: run.notes,
        })
    }

    pub(super) fn pull_image(&self, reference: &str) -> Result<ImageRecord, AdminError> {
        let reference = match ImageSource::parse(reference)? {
            ImageSource::Registry(r) => r,
            ImageSource::Layout { .. } => {
                return Err(AdminError::Refused(
                    "an oci-layout is imported: gigmcp image import PATH".into(),
                ));
            }
        };
        let settings = self.image_settings();
        let store = open(&settings)?;
        let digest = reference.digest.clone().expect("parse requires a digest");
        if let Some(record) = store.get(&digest).map_err(refused)? {
            return Ok(record);
        }
        let stored = pull_blobs(&store, &reference, &settings, self.vault())?;
        install(&store, &stored, &reference.to_string())
    }

    pub(super) fn import_image(
        &self,
        path: &Path,
        select: &ImportSelect,
    ) -> Result<ImageRecord, AdminError> {
        let store = open(&self.image_settings())?;
        let layout = Layout::open(path).map_err(refused)?;
        let select = match select {
            ImportSelect::Digest(d) => Select::Digest(Digest::parse(d).map_err(refused)?),
            ImportSelect::Name(n) => Select::RefName(n.clone()),
            ImportSelect::Only => {
                let index = layout.index().map_err(refused)?;
                match index.manifests.as_slice() {
                    [only] => Select::Digest(only.digest.clone()),
                    list => {
                        return Err(AdminError::Refused(format!(
                            "{} holds {} images: choose one with --digest or --name",
                            path.display(),
                            list.len()
                        )));
                    }
                }
            }
        };
        let stored = layout
            .import_within(&select, store.blobs(), store.limits())
            .map_err(refused)?;
        install(
            &store,
            &stored,
            &format!("oci-layout:{}@{}", path.display(), stored.pinned.digest),
        )
    }

    pub(super) fn list_images(&self) -> Result<Vec<(ImageRecord, Vec<String>)>, AdminError> {
        let store = open(&self.image_settings())?;
        store
            .list()
            .map_err(refused)?
            .into_iter()
            .map(|r| {
                let users = users_of(self.records(), &r.pinned)?;
                Ok((r, users))
            })
            .collect()
    }

    pub(super) fn remove_image(&self, digest: &str) -> Result<u64, AdminError> {
        let digest = Digest::parse(digest).map_err(refused)?;
        let store = open(&self.image_settings())?;
        remove(&store, self.records(), &digest)
    }

    pub(super) fn collect_images(&self) -> Result<GcReport, AdminError> {
        let store = open(&self.image_settings())?;
        store.gc(&in_use(self.records())?).map_err(refused)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex() -> String {
        let mut b = [0u8; 32];
        getrandom::fill(&mut b).unwrap();
        hex::encode(b)
    }

    #[test]
    fn an_image_is_named_by_digest_from_a_registry_or_an_oci_layout() {
        let h = hex();
        let s = ImageSource::parse(&format!("oci-layout:/srv/x@y/layout@sha256:{h}")).unwrap();
        assert_eq!(
            s,
            ImageSource::Layout {
                path: "/srv/x@y/layout".into(),
                digest: Digest::parse(&format!("sha256:{h}")).unwrap()
            }
        );
        let s = ImageSource::parse(&format!("reg.example:5000/mcp/srv:1.0@sha256:{h}")).unwrap();
        assert_eq!(s.digest().hex(), h);
        assert!(matches!(s, ImageSource::Registry(ref r) if r.registry == "reg.example:5000"));
    }

    #[test]
    fn an_image_not_pinned_by_a_sha256_digest_is_refused_by_name() {
        let h = hex();
        for (text, says) in [
            (
                "reg.example/mcp/srv:1.0".to_owned(),
                "pin the image by digest",
            ),
            (
                "oci-layout:/srv/layout".to_owned(),
                "oci-layout:PATH@sha256",
            ),
            (format!("oci-layout:/srv/layout@sha512:{h}"), "sha256"),
            (format!("reg.example/mcp/srv@sha256:{}", &h[..60]), "sha256"),
        ] {
            match ImageSource::parse(&text) {
                Err(AdminError::Refused(m)) => {
                    assert!(m.contains(&format!("{text:?}")) && m.contains(says), "{m}")
                }
                other => panic!("{text}: {other:?}"),
            }
        }
    }
}
