//! [`SignedRegistry`]: a registry's signed index for tests, written with the gateway's own
//! author side (`tuf::Repo`: one root key, one key for targets, snapshot and timestamp) and
//! served over loopback HTTP by [`MetadataServer`]. Entries are the catalog's `Entry`, so a
//! test states an entry's image and manifest and the index carries exactly that.

use std::path::PathBuf;
use std::time::SystemTime;

use gateway::catalog::entry::{Entry, ImageDescriptor};
use gateway::manifest::Manifest;
use gateway::tuf::{Expiry, KeyPair, Repo, RoleSetup, Target};

use crate::metadata::MetadataServer;

/// A signed index in a temporary directory, served on 127.0.0.1.
pub struct SignedRegistry {
    pub dir: tempfile::TempDir,
    online_key: KeyPair,
    repo: Repo,
    pub server: MetadataServer,
}

impl std::fmt::Debug for SignedRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignedRegistry")
            .field("dir", &self.dir.path())
            .field("url", &self.server.url())
            .finish_non_exhaustive()
    }
}

impl SignedRegistry {
    /// A new index (root version 1, no targets) and its server; the root key signs the root
    /// once and is dropped. Must be started in the
    /// network namespace of whoever syncs it (the server binds 127.0.0.1 there).
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let (root_key, online_key) = (KeyPair::generate(), KeyPair::generate());
        let online = || (vec![online_key.public()], 1);
        let setup = RoleSetup {
            root: (vec![root_key.public()], 1),
            timestamp: online(),
            snapshot: online(),
            targets: online(),
        };
        let repo = Repo::init(
            dir.path(),
            &setup,
            Expiry::default(),
            &[&root_key, &online_key],
            SystemTime::now(),
        )
        .expect("init the signed index");
        let server = MetadataServer::start(dir.path());
        Self {
            dir,
            online_key,
            repo,
            server,
        }
    }

    /// The root an admin pins (`registry add --root`).
    pub fn root_file(&self) -> PathBuf {
        self.dir.path().join("1.root.json")
    }

    pub fn url(&self) -> String {
        self.server.url()
    }

    /// Adds (or replaces) each entry's target, removes the targets named, and signs new
    /// targets, snapshot and timestamp.
    pub fn publish(&mut self, entries: &[&Entry], removed: &[&str]) {
        for e in entries {
            let (path, length, sha256, custom) = e.to_target_parts();
            self.repo.set_target(Target {
                path,
                length,
                sha256,
                custom,
            });
        }
        for path in removed {
            assert!(self.repo.remove_target(path), "no target {path} to remove");
        }
        self.repo
            .publish(&[&self.online_key], Expiry::default(), SystemTime::now())
            .expect("publish");
    }
}

impl Default for SignedRegistry {
    fn default() -> Self {
        Self::new()
    }
}

/// An entry for `manifest` (whose `name` and `version` it takes) with its image at
/// `repository` pinned by `digest` and `size`.
pub fn entry(repository: &str, digest: &str, size: u64, manifest: &serde_json::Value) -> Entry {
    let manifest = Manifest::from_json(&manifest.to_string()).expect("a valid manifest");
    Entry {
        name: manifest.name.clone(),
        version: manifest.version.clone(),
        description: Some(format!("{} for tests", manifest.name)),
        image: ImageDescriptor {
            repository: repository.to_owned(),
            digest: digest.to_owned(),
            size,
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
        },
        manifest,
        source: None,
    }
}
