//! The content-addressed blob store: `blobs/sha256/<hex>` under the image store's root, each
//! file read-only (0444) and named by the digest of its bytes. A blob arrives through a
//! [`BlobWriter`]: written to `tmp/` while its sha256 is computed, refused the moment it passes
//! the size the caller pinned, and renamed into place only when size and digest both match. A
//! writer dropped before [`BlobWriter::commit`] removes its file, so a refused or interrupted
//! pull leaves nothing behind; `tmp/` is emptied when the store opens (a crash mid-write).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rustix::fs::{FlockOperation, Mode, OFlags};

use super::digest::{Digest, Hasher};

/// Why a blob was refused or could not be stored.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error("blob {digest} is longer than the {pinned} bytes pinned for it")]
    TooLong { digest: Digest, pinned: u64 },
    #[error("blob {digest} ended after {got} of the {pinned} bytes pinned for it")]
    TooShort {
        digest: Digest,
        got: u64,
        pinned: u64,
    },
    #[error("blob {expected} does not match its digest: its bytes hash to {actual}")]
    DigestMismatch { expected: Digest, actual: Digest },
    #[error("blob {0} is not in the store")]
    Missing(Digest),
    #[error("the image store at {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error(
        "the image store is in use (a pull, import, build or install is under way; waited \
         {waited:?}): try again when it has ended"
    )]
    Busy { waited: Duration },
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> BlobError + '_ {
    move |source| BlobError::Io {
        path: path.to_owned(),
        source,
    }
}

/// The blob half of the image store.
#[derive(Debug, Clone)]
pub struct BlobStore {
    blobs: PathBuf,
    tmp: PathBuf,
    lock: PathBuf,
}

/// A hold on the image store's lock file (`.lock`, `flock`): several processes share the
/// store (the daemon, each CLI command, a build). What adds to the store (a blob being
/// written, an install, a whole pull or import from its first blob to its record) holds it
/// shared; what removes what another process may be using (emptying `tmp/`, gc, `image rm`)
/// holds it exclusive, so it never deletes a pull's blobs before their record exists or an
/// install's staging directory. Released when dropped.
#[derive(Debug)]
pub struct StoreLock {
    _held: OwnedFd,
}

impl BlobStore {
    /// Opens (creating) the store under `root`, removing what a crashed writer left in `tmp/`
    /// when no other process is adding to the store (otherwise the leftovers wait for the next
    /// open or gc).
    pub fn open(root: &Path) -> Result<Self, BlobError> {
        let blobs = root.join("blobs/sha256");
        let tmp = root.join("tmp");
        for dir in [&blobs, &tmp] {
            fs::create_dir_all(dir).map_err(io_at(dir))?;
        }
        let store = Self {
            blobs,
            tmp,
            lock: root.join(".lock"),
        };
        if let Some(_alone) = store.try_exclusive()? {
            store.empty_tmp()?;
        }
        Ok(store)
    }

    /// Removes everything in `tmp/` through directory fds, never following a link: the
    /// directory belongs to the daemon's user, and a root CLI opening the store must not be
    /// led (by an entry swapped for a link) to change or remove anything outside it.
    fn empty_tmp(&self) -> Result<(), BlobError> {
        let tmp = &self.tmp;
        let dir = rustix::fs::open(
            tmp,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| io_at(tmp)(e.into()))?;
        for name in super::beneath::children(&dir).map_err(io_at(tmp))? {
            super::beneath::remove(&dir, &name).map_err(io_at(&tmp.join(&name)))?;
        }
        Ok(())
    }

    fn lock_fd(&self) -> Result<OwnedFd, BlobError> {
        // Read-only is enough for flock, and lets a process of another user that shares the
        // store (root's CLI beside the gigmcp daemon) take the same lock.
        rustix::fs::open(
            &self.lock,
            OFlags::RDONLY | OFlags::CREATE | OFlags::CLOEXEC | OFlags::NOFOLLOW,
            Mode::from_raw_mode(0o644),
        )
        .map_err(|e| io_at(&self.lock)(e.into()))
    }

    /// A shared hold (waits while an exclusive one is held: a gc or a sweep, both short).
    pub fn shared(&self) -> Result<StoreLock, BlobError> {
        let fd = self.lock_fd()?;
        rustix::fs::flock(&fd, FlockOperation::LockShared)
            .map_err(|e| io_at(&self.lock)(e.into()))?;
        Ok(StoreLock { _held: fd })
    }

    /// An exclusive hold if nobody holds the lock now.
    pub fn try_exclusive(&self) -> Result<Option<StoreLock>, BlobError> {
        let fd = self.lock_fd()?;
        match rustix::fs::flock(&fd, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => Ok(Some(StoreLock { _held: fd })),
            Err(rustix::io::Errno::WOULDBLOCK) => Ok(None),
            Err(e) => Err(io_at(&self.lock)(e.into())),
        }
    }

    /// An exclusive hold, waiting at most `wait` for the shared holders to finish.
    pub fn exclusive(&self, wait: Duration) -> Result<StoreLock, BlobError> {
        let start = Instant::now();
        loop {
            if let Some(held) = self.try_exclusive()? {
                return Ok(held);
            }
            if start.elapsed() >= wait {
                return Err(BlobError::Busy { waited: wait });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The store's scratch directory (same filesystem as the blobs, so renames are atomic).
    pub fn tmp_dir(&self) -> &Path {
        &self.tmp
    }

    /// Where the blob `digest` lives (whether or not it is there).
    pub fn path(&self, digest: &Digest) -> PathBuf {
        self.blobs.join(digest.hex())
    }

    pub fn contains(&self, digest: &Digest) -> bool {
        self.path(digest).is_file()
    }

    /// Starts receiving the blob `digest` of exactly `pinned` bytes.
    pub fn writer(&self, digest: &Digest, pinned: u64) -> Result<BlobWriter, BlobError> {
        let shared = self.shared()?;
        let path = self
            .tmp
            .join(format!("blob-{}-{}", digest.hex(), random_suffix()));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(io_at(&path))?;
        Ok(BlobWriter {
            store: self.clone(),
            _shared: shared,
            file: Some(file),
            path,
            digest: digest.clone(),
            pinned,
            written: 0,
            hasher: Hasher::default(),
        })
    }

    /// Opens a stored blob, re-hashing it as it is read: [`VerifyingReader`] fails at the end
    /// if the file no longer matches its name (changed on disk after it was stored).
    pub fn open_blob(&self, digest: &Digest, size: u64) -> Result<VerifyingReader, BlobError> {
        let path = self.path(digest);
        let file = File::open(&path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => BlobError::Missing(digest.clone()),
            _ => BlobError::Io {
                path: path.clone(),
                source: e,
            },
        })?;
        Ok(VerifyingReader {
            inner: file,
            digest: digest.clone(),
            pinned: size,
            read: 0,
            hasher: Hasher::default(),
        })
    }

    /// A small stored blob (a manifest or config) read whole and verified, at most `max` bytes.
    pub fn read_small(&self, digest: &Digest, size: u64, max: u64) -> Result<Vec<u8>, BlobError> {
        if size > max {
            return Err(BlobError::TooLong {
                digest: digest.clone(),
                pinned: max,
            });
        }
        let mut out = Vec::with_capacity(size as usize);
        self.open_blob(digest, size)?
            .read_to_end(&mut out)
            .map_err(|e| unwrap_blob_error(e, &self.path(digest)))?;
        Ok(out)
    }

    /// Every stored blob's digest (for garbage collection).
    pub fn list(&self) -> Result<Vec<Digest>, BlobError> {
        let mut out = Vec::new();
        for entry in fs::read_dir(&self.blobs).map_err(io_at(&self.blobs))? {
            let entry = entry.map_err(io_at(&self.blobs))?;
            if let Some(d) = entry
                .file_name()
                .to_str()
                .and_then(|n| Digest::parse(&format!("sha256:{n}")).ok())
            {
                out.push(d);
            }
        }
        out.sort();
        Ok(out)
    }

    /// Removes a blob (garbage collection); a missing one is not an error.
    pub fn remove(&self, digest: &Digest) -> Result<(), BlobError> {
        let path = self.path(digest);
        match fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_at(&path)(e)),
            _ => Ok(()),
        }
    }
}

/// A blob being received. Bytes past the pinned size are refused before they are written.
#[derive(Debug)]
pub struct BlobWriter {
    store: BlobStore,
    _shared: StoreLock,
    file: Option<File>,
    path: PathBuf,
    digest: Digest,
    pinned: u64,
    written: u64,
    hasher: Hasher,
}

impl BlobWriter {
    /// Appends `data`, refusing it whole if it would pass the pinned size.
    pub fn write(&mut self, data: &[u8]) -> Result<(), BlobError> {
        if self.written + data.len() as u64 > self.pinned {
            return Err(BlobError::TooLong {
                digest: self.digest.clone(),
                pinned: self.pinned,
            });
        }
        let file = self
            .file
            .as_mut()
            .expect("a writer is not used after commit");
        file.write_all(data).map_err(io_at(&self.path))?;
        self.hasher.update(data);
        self.written += data.len() as u64;
        Ok(())
    }

    /// How many bytes arrived so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Checks size and digest, then makes the blob visible (read-only) under its digest.
    pub fn commit(mut self) -> Result<Digest, BlobError> {
        if self.written != self.pinned {
            return Err(BlobError::TooShort {
                digest: self.digest.clone(),
                got: self.written,
                pinned: self.pinned,
            });
        }
        let actual = std::mem::take(&mut self.hasher).finish();
        if actual != self.digest {
            return Err(BlobError::DigestMismatch {
                expected: self.digest.clone(),
                actual,
            });
        }
        let file = self.file.take().expect("commit runs once");
        file.sync_all().map_err(io_at(&self.path))?;
        file.set_permissions(fs::Permissions::from_mode(0o444))
            .map_err(io_at(&self.path))?;
        drop(file);
        let dest = self.store.path(&self.digest);
        // Same bytes under the same name: replacing an existing blob changes nothing.
        fs::rename(&self.path, &dest).map_err(io_at(&dest))?;
        self.path = PathBuf::new();
        Ok(self.digest.clone())
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        if !self.path.as_os_str().is_empty() {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// A stored blob read back with its digest and size re-checked: a read past the pinned size
/// and the final read (end of file) fail with a [`BlobError`] inside the `io::Error` if the
/// bytes no longer match.
#[derive(Debug)]
pub struct VerifyingReader {
    inner: File,
    digest: Digest,
    pinned: u64,
    read: u64,
    hasher: Hasher,
}

impl Read for VerifyingReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        if self.read > self.pinned {
            return Err(io::Error::other(BlobError::TooLong {
                digest: self.digest.clone(),
                pinned: self.pinned,
            }));
        }
        self.hasher.update(&buf[..n]);
        if n == 0 && !buf.is_empty() {
            if self.read != self.pinned {
                return Err(io::Error::other(BlobError::TooShort {
                    digest: self.digest.clone(),
                    got: self.read,
                    pinned: self.pinned,
                }));
            }
            let actual = std::mem::take(&mut self.hasher).finish();
            if actual != self.digest {
                return Err(io::Error::other(BlobError::DigestMismatch {
                    expected: self.digest.clone(),
                    actual,
                }));
            }
        }
        Ok(n)
    }
}

/// The [`BlobError`] inside an `io::Error` from a [`VerifyingReader`], or an I/O error at `path`.
pub fn unwrap_blob_error(e: io::Error, path: &Path) -> BlobError {
    if e.get_ref().is_some_and(|inner| inner.is::<BlobError>()) {
        *e.into_inner()
            .expect("checked above")
            .downcast::<BlobError>()
            .expect("checked above")
    } else {
        BlobError::Io {
            path: path.to_owned(),
            source: e,
        }
    }
}

/// Eight random bytes in hex: names for temporary files and directories that no concurrent
/// writer (another pull, a build, an unpack) can guess or collide with.
pub(crate) fn random_suffix() -> String {
    let mut b = [0u8; 8];
    getrandom::fill(&mut b).expect("the kernel's random source");
    hex::encode(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_blob_becomes_visible_only_when_size_and_digest_match() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let data = b"layer bytes";
        let d = Digest::of(data);

        let mut w = store.writer(&d, data.len() as u64).unwrap();
        w.write(&data[..4]).unwrap();
        assert!(matches!(w.write(&[0; 64]), Err(BlobError::TooLong { .. })));
        drop(w);
        assert!(!store.contains(&d));
        assert_eq!(
            fs::read_dir(store.tmp_dir()).unwrap().count(),
            0,
            "nothing left"
        );

        let mut w = store.writer(&d, data.len() as u64).unwrap();
        w.write(&data[..4]).unwrap();
        assert!(matches!(w.commit(), Err(BlobError::TooShort { .. })));

        let mut w = store.writer(&d, data.len() as u64).unwrap();
        w.write(b"LAYER bytes").unwrap();
        assert!(matches!(w.commit(), Err(BlobError::DigestMismatch { .. })));
        assert!(!store.contains(&d));
        assert_eq!(
            fs::read_dir(store.tmp_dir()).unwrap().count(),
            0,
            "nothing left"
        );

        let mut w = store.writer(&d, data.len() as u64).unwrap();
        w.write(data).unwrap();
        assert_eq!(w.commit().unwrap(), d);
        assert!(store.contains(&d));
        let mode = fs::metadata(store.path(&d)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o444);
        assert_eq!(store.read_small(&d, data.len() as u64, 1024).unwrap(), data);
        assert_eq!(store.list().unwrap(), vec![d]);
    }

    #[test]
    fn a_blob_changed_on_disk_fails_when_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let d = Digest::of(b"config");
        let mut w = store.writer(&d, 6).unwrap();
        w.write(b"config").unwrap();
        w.commit().unwrap();
        let path = store.path(&d);
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        fs::write(&path, b"CONFIG").unwrap();
        assert!(matches!(
            store.read_small(&d, 6, 1024),
            Err(BlobError::DigestMismatch { .. })
        ));
    }

    #[test]
    fn another_process_opening_the_store_leaves_a_blob_in_progress_alone() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let data = b"a layer still arriving";
        let d = Digest::of(data);
        let mut w = store.writer(&d, data.len() as u64).unwrap();
        w.write(&data[..5]).unwrap();
        // A second opener (another CLI command, the daemon starting) finds the store in use:
        // the writer's temp file stays, and gc or rm cannot take the store meanwhile.
        let other = BlobStore::open(dir.path()).unwrap();
        assert_eq!(fs::read_dir(other.tmp_dir()).unwrap().count(), 1);
        assert!(matches!(
            other.exclusive(Duration::from_millis(120)),
            Err(BlobError::Busy { .. })
        ));
        w.write(&data[5..]).unwrap();
        assert_eq!(w.commit().unwrap(), d);
        // Once nothing is being added, the store can be held alone again.
        assert!(other.exclusive(Duration::from_millis(120)).is_ok());
        assert!(other.contains(&d));
    }

    #[test]
    fn opening_the_store_removes_what_a_crashed_writer_left() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        // What a writer killed mid-blob leaves: its file, and no lock (a dead process holds
        // no flock).
        fs::write(store.tmp_dir().join("blob-x-1"), b"partial").unwrap();
        fs::create_dir_all(store.tmp_dir().join("unpack-1/a")).unwrap();
        fs::set_permissions(
            store.tmp_dir().join("unpack-1"),
            fs::Permissions::from_mode(0o555),
        )
        .unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        assert_eq!(fs::read_dir(store.tmp_dir()).unwrap().count(), 0);
    }
}
