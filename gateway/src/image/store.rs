//! The image store: installed images as flattened, read-only roots beside the blob store.
//!
//! ```text
//! images_dir/blobs/sha256/<hex>   manifests, indexes, configs, compressed layers (stored once)
//! images_dir/tmp/unpack-<random>  an install in progress (emptied when the store opens)
//! images_dir/roots/<hex>/rootfs   one flattened root per installed image
//! images_dir/index/<hex>.json     its record; index/<hex>.tree its canonical listing
//! ```
//!
//! **One flattened tree per image, not layers stacked by bwrap's overlay options.** The helper
//! examines one tree beneath one fd (mount points, CA paths, no links on the way) and bwrap
//! binds it read-only: nothing has whiteout or opaque-directory semantics in root's context,
//! where overlayfs would interpret them (and the mount API is not the sandbox's to use anyway).
//! Images never share an inode, so no image can change another's files, however either was
//! made: each compressed layer blob is stored once in `blobs/`, and unpacked again per image
//! that uses it (disk traded for isolation; a layer blob is immutable, a root is checked).
//!
//! An install unpacks into `tmp/unpack-<random>/rootfs`, seals it (directories 0555), lists
//! it, and renames the whole directory to `roots/<hex>` only at the end; the record written
//! after it is the commit point. A refusal removes the staging directory; a crash leaves it in
//! `tmp/` (emptied when the store opens) or leaves a root without a record, which opening the
//! store removes. The record holds the tree digest: [`ImageStore::verify`] recomputes it from
//! the files before every start of the image and refuses a tree that changed, naming the
//! first path that differs.

use std::collections::HashSet;
use std::fs;
use std::io::{self, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rustix::fs::{FlockOperation, Mode, OFlags};
use serde::{Deserialize, Serialize};

use super::beneath;
use super::blobs::{BlobStore, random_suffix};
use super::digest::Digest;
use super::error::{ImageError, io_at};
use super::limits::UnpackLimits;
use super::oci::{self, Descriptor, ImageConfig};
use super::resolve::resolve;
use super::tree::{self, TreeError};
use super::unpack::Unpacker;

/// The largest record read back (its config is capped at 8 MiB).
const MAX_RECORD_BYTES: u64 = 16 << 20;
/// How long `gc` and `image rm` wait for what is adding to the store to end.
const LOCK_WAIT: Duration = Duration::from_secs(30);
/// A file in `tmp/` unchanged for this long belongs to no pull still running.
const STALE_TMP: Duration = Duration::from_secs(3600);

/// An installed image: what was pinned, what it resolved to, and the digest of its tree.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImageRecord {
    /// The digest the admin pinned: a manifest, or an index resolved to this host.
    pub pinned: Digest,
    pub pinned_size: u64,
    pub pinned_media_type: String,
    /// The platform manifest (the pinned digest itself unless it was an index).
    pub manifest: Digest,
    pub manifest_descriptor: Descriptor,
    pub config_digest: Digest,
    pub config: ImageConfig,
    pub layers: Vec<Descriptor>,
    /// Bytes of regular files in the root.
    pub unpacked_bytes: u64,
    /// Paths in the root, the root itself included.
    pub entries: u64,
    pub added_ms: u64,
    /// The reference it was installed from (`registry/repo@sha256:…`, `oci:DIR`, …).
    pub reference: String,
    /// sha256 of the root's canonical listing ([`tree`](super::tree)).
    pub tree_digest: Digest,
}

/// What [`ImageStore::gc`] removed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct GcReport {
    pub images: Vec<Digest>,
    pub blobs: Vec<Digest>,
    /// Names of stale entries removed from `tmp/`.
    pub tmp: Vec<String>,
    pub bytes_freed: u64,
}

/// Installed images, their roots and records, over the blob store.
#[derive(Debug, Clone)]
pub struct ImageStore {
    root: PathBuf,
    blobs: BlobStore,
    limits: UnpackLimits,
}

impl ImageStore {
    /// Opens (creating) the store under `root`: empties `tmp/` and removes roots without a
    /// record (an install that crashed before its commit) and records without a root, when
    /// no other process is adding to the store ([`StoreLock`](super::blobs::StoreLock)); otherwise that waits for the
    /// next open or [`Self::gc`].
    pub fn open(root: &Path, limits: UnpackLimits) -> Result<Self, ImageError> {
        limits
            .validate()
            .map_err(|(key, message)| ImageError::Limits {
                key: key.trim_start_matches("images."),
                message,
            })?;
        let blobs = BlobStore::open(root)?;
        let store = Self {
            root: root.to_owned(),
            blobs,
            limits,
        };
        for dir in [store.roots_dir(), store.index_dir()] {
            fs::create_dir_all(&dir).map_err(io_at(&dir))?;
            fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).map_err(io_at(&dir))?;
        }
        if let Some(_alone) = store.blobs.try_exclusive()? {
            store.sweep_orphans()?;
        }
        Ok(store)
    }

    pub fn blobs(&self) -> &BlobStore {
        &self.blobs
    }

    pub fn limits(&self) -> &UnpackLimits {
        &self.limits
    }

    /// "roots/<hex>/rootfs": what `SandboxSpec.rootfs` gets (relative to images_dir).
    pub fn rootfs_relative(pinned: &Digest) -> String {
        format!("roots/{}/rootfs", pinned.hex())
    }

    /// Installs the image `pinned` (`pinned_size` bytes). Every blob the pinned document
    /// names must already be in [`Self::blobs`] (a pull or import put them there, verified);
    /// an index is resolved to [`Platform::host`]. Installing an installed image returns its
    /// record.
    pub fn install(
        &self,
        pinned: &Digest,
        pinned_size: u64,
        reference: &str,
    ) -> Result<ImageRecord, ImageError> {
        let _shared = self.blobs.shared()?;
        if let Some(record) = self.get(pinned)? {
            return Ok(record);
        }
        let resolved = resolve(&self.blobs, &self.limits, pinned, pinned_size)?;
        let staging = Staging::new(self.blobs.tmp_dir())?;
        let rootfs = staging.path.join("rootfs");
        fs::create_dir(&rootfs).map_err(io_at(&rootfs))?;
        let root_fd = rustix::fs::open(
            &rootfs,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| io_at(&rootfs)(e.into()))?;
        let mut unpacker = Unpacker::new(root_fd, &self.limits);
        for (index, layer) in resolved.manifest.layers.iter().enumerate() {
            let compression =
                oci::layer_compression(&layer.media_type).expect("checked when resolved");
            let blob = self.blobs.open_blob(&layer.digest, layer.size)?;
            unpacker
                .layer(
                    blob,
                    compression,
                    layer.size,
                    &resolved.config.rootfs.diff_ids[index],
                )
                .map_err(|source| ImageError::Unpack {
                    index,
                    layer: layer.digest.clone(),
                    source: Box::new(source),
                })?;
        }
        tree::seal(unpacker.root())?;
        let listing = tree::list(unpacker.root(), u64::MAX)?;
        drop(unpacker);

        let record = ImageRecord {
            pinned: pinned.clone(),
            pinned_size,
            pinned_media_type: resolved.pinned_media_type,
            manifest: resolved.manifest_descriptor.digest.clone(),
            manifest_descriptor: resolved.manifest_descriptor,
            config_digest: resolved.manifest.config.digest.clone(),
            config: resolved.config,
            layers: resolved.manifest.layers,
            unpacked_bytes: listing.bytes,
            entries: listing.entries,
            added_ms: SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            reference: reference.to_owned(),
            tree_digest: listing.digest.clone(),
        };
        let hex = pinned.hex();
        write_atomic(&self.index_dir(), &format!("{hex}.tree"), &listing.listing)?;
        let dest = self.roots_dir().join(&hex);
        if let Err(e) = fs::rename(&staging.path, &dest) {
            // Another install of the same image won the race: its record is the answer.
            if let Some(existing) = self.get(pinned)? {
                return Ok(existing);
            }
            return Err(io_at(&dest)(e));
        }
        staging.committed();
        // Traversable by the sandbox's uid, which owns nothing here.
        fs::set_permissions(&dest, fs::Permissions::from_mode(0o555)).map_err(io_at(&dest))?;
        let json = serde_json::to_vec_pretty(&record).expect("a record serialises");
        write_atomic(&self.index_dir(), &format!("{hex}.json"), &json)?;
        Ok(record)
    }

    /// The record of an installed image, `None` if it is not installed.
    pub fn get(&self, pinned: &Digest) -> Result<Option<ImageRecord>, ImageError> {
        let path = self.record_path(pinned);
        let bytes = match read_capped(&path, MAX_RECORD_BYTES) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_at(&path)(e)),
        };
        let record: ImageRecord =
            serde_json::from_slice(&bytes).map_err(|e| ImageError::Record {
                path: path.clone(),
                message: e.to_string(),
            })?;
        if &record.pinned != pinned {
            return Err(ImageError::Record {
                path,
                message: format!("it records {}, not {pinned}", record.pinned),
            });
        }
        Ok(Some(record))
    }

    /// Every installed image, oldest first.
    pub fn list(&self) -> Result<Vec<ImageRecord>, ImageError> {
        let mut out = Vec::new();
        for digest in self.recorded()? {
            if let Some(record) = self.get(&digest)? {
                out.push(record);
            }
        }
        out.sort_by(|a, b| (a.added_ms, &a.pinned).cmp(&(b.added_ms, &b.pinned)));
        Ok(out)
    }

    /// Recomputes the tree digest of an installed image's root and compares it with the
    /// record's; the daemon calls this before every sandbox start of the image.
    pub fn verify(&self, pinned: &Digest) -> Result<ImageRecord, ImageError> {
        let record = self
            .get(pinned)?
            .ok_or_else(|| ImageError::NotInstalled(pinned.clone()))?;
        let tampered = |path: Option<String>| ImageError::Tampered {
            digest: pinned.clone(),
            path,
        };
        let images = rustix::fs::open(
            &self.root,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| io_at(&self.root)(e.into()))?;
        let rootfs = match beneath::open_dir(&images, &Self::rootfs_relative(pinned)) {
            Ok(fd) => fd,
            Err(_) => return Err(tampered(Some("/".into()))),
        };
        // Room to list what was added (and name it), still bounded.
        let max = record.entries.saturating_mul(2).saturating_add(1024);
        let now = match tree::list(&rootfs, max) {
            Ok(t) => t,
            Err(TreeError::TooManyEntries(_)) => return Err(tampered(None)),
            Err(TreeError::Io { path, .. }) => return Err(tampered(Some(path))),
        };
        if now.digest == record.tree_digest {
            return Ok(record);
        }
        let kept = read_capped(&self.tree_path(pinned), u64::MAX).ok();
        let path = kept
            .filter(|k| Digest::of(k) == record.tree_digest)
            .and_then(|k| tree::first_difference(&k, &now.listing));
        Err(tampered(path))
    }

    /// Removes an installed image: its record (first: from then on it is not installed),
    /// its root and its listing. Its blobs stay until [`Self::gc`].
    pub fn remove(&self, pinned: &Digest) -> Result<(), ImageError> {
        let _alone = self.blobs.exclusive(LOCK_WAIT)?;
        self.remove_held(pinned)
    }

    fn remove_held(&self, pinned: &Digest) -> Result<(), ImageError> {
        let record = self.record_path(pinned);
        let root = self.roots_dir().join(pinned.hex());
        if !record.exists() && fs::symlink_metadata(&root).is_err() {
            return Err(ImageError::NotInstalled(pinned.clone()));
        }
        remove_file(&record)?;
        self.remove_root(&pinned.hex())?;
        remove_file(&self.tree_path(pinned))
    }

    /// Removes every installed image not in `keep`, then every blob no remaining record
    /// references, then what is stale in `tmp/`. It holds the store exclusively (waiting up to
    /// [`LOCK_WAIT`] for pulls, imports and installs to end), since a blob pulled but not yet
    /// installed is referenced by no record.
    pub fn gc(&self, keep: &HashSet<Digest>) -> Result<GcReport, ImageError> {
        let _alone = self.blobs.exclusive(LOCK_WAIT)?;
        let mut report = GcReport::default();
        for record in self.list()? {
            if !keep.contains(&record.pinned) {
                self.remove_held(&record.pinned)?;
                report.bytes_freed += record.unpacked_bytes;
                report.images.push(record.pinned);
            }
        }
        let mut referenced = HashSet::new();
        for record in self.list()? {
            referenced.insert(record.pinned);
            referenced.insert(record.manifest);
            referenced.insert(record.config_digest);
            referenced.extend(record.layers.into_iter().map(|l| l.digest));
        }
        for blob in self.blobs.list()? {
            if !referenced.contains(&blob) {
                let size = fs::metadata(self.blobs.path(&blob)).map_or(0, |m| m.len());
                self.blobs.remove(&blob)?;
                report.bytes_freed += size;
                report.blobs.push(blob);
            }
        }
        let tmp = self.blobs.tmp_dir();
        let tmp_fd = open_dir(tmp)?;
        for entry in fs::read_dir(tmp).map_err(io_at(tmp))? {
            let entry = entry.map_err(io_at(tmp))?;
            let name = entry.file_name();
            if is_stale(&entry.path())? {
                report.bytes_freed += bytes_under(&entry.path());
                beneath::remove(&tmp_fd, &name).map_err(io_at(&entry.path()))?;
                report.tmp.push(name.to_string_lossy().into_owned());
            }
        }
        self.sweep_orphans()?;
        Ok(report)
    }

    fn roots_dir(&self) -> PathBuf {
        self.root.join("roots")
    }

    fn index_dir(&self) -> PathBuf {
        self.root.join("index")
    }

    fn record_path(&self, pinned: &Digest) -> PathBuf {
        self.index_dir().join(format!("{}.json", pinned.hex()))
    }

    fn tree_path(&self, pinned: &Digest) -> PathBuf {
        self.index_dir().join(format!("{}.tree", pinned.hex()))
    }

    /// The digests that have a record.
    fn recorded(&self) -> Result<Vec<Digest>, ImageError> {
        let dir = self.index_dir();
        let mut out = Vec::new();
        for entry in fs::read_dir(&dir).map_err(io_at(&dir))? {
            let name = entry.map_err(io_at(&dir))?.file_name();
            if let Some(d) = name
                .to_str()
                .and_then(|n| n.strip_suffix(".json"))
                .and_then(|hex| Digest::parse(&format!("sha256:{hex}")).ok())
            {
                out.push(d);
            }
        }
        Ok(out)
    }

    fn remove_root(&self, hex: &str) -> Result<(), ImageError> {
        let roots = self.roots_dir();
        let fd = open_dir(&roots)?;
        beneath::remove(&fd, hex).map_err(io_at(&roots.join(hex)))
    }

    /// Roots without a record (a crash between the rename and the record) and listings
    /// without a record go; so do temporary record files.
    fn sweep_orphans(&self) -> Result<(), ImageError> {
        let recorded: HashSet<String> = self.recorded()?.iter().map(Digest::hex).collect();
        let roots = self.roots_dir();
        for entry in fs::read_dir(&roots).map_err(io_at(&roots))? {
            let name = entry.map_err(io_at(&roots))?.file_name();
            if !recorded.contains(name.to_string_lossy().as_ref()) {
                let fd = open_dir(&roots)?;
                beneath::remove(&fd, &name).map_err(io_at(&roots.join(&name)))?;
            }
        }
        let index = self.index_dir();
        for entry in fs::read_dir(&index).map_err(io_at(&index))? {
            let entry = entry.map_err(io_at(&index))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let orphan_tree = name
                .strip_suffix(".tree")
                .is_some_and(|hex| !recorded.contains(hex));
            if orphan_tree || name.starts_with('.') {
                remove_file(&entry.path())?;
            }
        }
        Ok(())
    }
}

/// `tmp/unpack-<random>`, locked while the install runs (so GC leaves it alone) and removed
/// on drop unless it was renamed into place.
struct Staging {
    path: PathBuf,
    _lock: OwnedFd,
    committed: bool,
}

impl Staging {
    fn new(tmp: &Path) -> Result<Self, ImageError> {
        let path = tmp.join(format!("unpack-{}", random_suffix()));
        fs::create_dir(&path).map_err(io_at(&path))?;
        let lock = rustix::fs::open(
            &path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .and_then(|fd| rustix::fs::flock(&fd, FlockOperation::LockExclusive).map(|()| fd))
        .map_err(|e| io_at(&path)(e.into()))?;
        Ok(Self {
            path,
            _lock: lock,
            committed: false,
        })
    }

    fn committed(mut self) {
        self.committed = true;
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.committed
            && let (Some(parent), Some(name)) = (self.path.parent(), self.path.file_name())
            && let Ok(fd) = open_dir(parent)
        {
            let _ = beneath::remove(&fd, name);
        }
    }
}

/// Whether an entry of `tmp/` belongs to nothing still running: an unpack directory nobody
/// holds the lock of, or anything else left unchanged for [`STALE_TMP`].
fn is_stale(path: &Path) -> Result<bool, ImageError> {
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(io_at(path)(e)),
    };
    let unpack = meta.is_dir()
        && path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("unpack-"));
    if unpack {
        let fd = open_dir(path)?;
        return match rustix::fs::flock(&fd, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => Ok(true),
            Err(rustix::io::Errno::WOULDBLOCK) => Ok(false),
            Err(e) => Err(io_at(path)(e.into())),
        };
    }
    let age = meta
        .modified()
        .ok()
        .and_then(|m| SystemTime::now().duration_since(m).ok());
    Ok(age.is_some_and(|a| a > STALE_TMP))
}

fn bytes_under(path: &Path) -> u64 {
    let Ok(meta) = fs::symlink_metadata(path) else {
        return 0;
    };
    if !meta.is_dir() {
        return meta.len();
    }
    fs::read_dir(path)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| bytes_under(&e.path()))
                .sum()
        })
        .unwrap_or(0)
}

fn open_dir(path: &Path) -> Result<OwnedFd, ImageError> {
    rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| io_at(path)(e.into()))
}

fn remove_file(path: &Path) -> Result<(), ImageError> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_at(path)(e)),
        _ => Ok(()),
    }
}

fn read_capped(path: &Path, max: u64) -> io::Result<Vec<u8>> {
    use std::io::Read;
    let mut out = Vec::new();
    fs::File::open(path)?.take(max).read_to_end(&mut out)?;
    Ok(out)
}

/// Writes `name` in `dir` whole or not at all: a temporary file, synced, then renamed.
fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), ImageError> {
    let tmp = dir.join(format!(".{name}.{}", random_suffix()));
    let result = (|| {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&tmp, dir.join(name))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(io_at(&dir.join(name)))
}
