//! Signed TUF registries for tests: fresh keys for each role, a `Repo` in a temporary directory
//! signed by them, random targets, hand edits of a role's file (re-signed or not) for attack
//! tests, and a `Fetch` that records what was asked for.
//!
//! Everything is real: the files are what `gateway::tuf::Repo` writes and a client reads
//! through `DirFetch`; an attack is an edit of those files, never a mock of the verifier.

use std::path::Path;
use std::time::{Duration, SystemTime};

use gateway::tuf::{
    DirFetch, Expiry, Fetch, FetchError, KeyPair, Repo, RoleSetup, Stored, Target, Versions,
};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::names::{random_name, random_u64};

/// One key for each role.
#[derive(Debug)]
pub struct Keys {
    pub root: KeyPair,
    pub timestamp: KeyPair,
    pub snapshot: KeyPair,
    pub targets: KeyPair,
}

impl Keys {
    pub fn generate() -> Self {
        Keys {
            root: KeyPair::generate(),
            timestamp: KeyPair::generate(),
            snapshot: KeyPair::generate(),
            targets: KeyPair::generate(),
        }
    }

    /// Each role held by its one key, threshold 1.
    pub fn setup(&self) -> RoleSetup {
        RoleSetup {
            root: (vec![self.root.public()], 1),
            timestamp: (vec![self.timestamp.public()], 1),
            snapshot: (vec![self.snapshot.public()], 1),
            targets: (vec![self.targets.public()], 1),
        }
    }

    pub fn all(&self) -> [&KeyPair; 4] {
        [&self.root, &self.timestamp, &self.snapshot, &self.targets]
    }
}

/// A registry's metadata directory and the keys that sign it.
#[derive(Debug)]
pub struct Registry {
    pub dir: tempfile::TempDir,
    pub keys: Keys,
    pub repo: Repo,
}

impl Registry {
    /// A fresh repository (version 1 of every role), signed as of `now`.
    pub fn new(now: SystemTime) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let keys = Keys::generate();
        let repo = Repo::init(
            dir.path(),
            &keys.setup(),
            Expiry::default(),
            &keys.all(),
            now,
        )
        .unwrap();
        Registry { dir, keys, repo }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn fetch(&self) -> DirFetch {
        DirFetch::new(self.path())
    }

    /// What an admin pins: version 1 of root.
    pub fn pinned(&self) -> Stored {
        Stored {
            root: std::fs::read(self.path().join("1.root.json")).unwrap(),
            ..Stored::default()
        }
    }

    /// Stages a random target at `path` with `custom` and returns it.
    pub fn add(&mut self, path: &str, custom: Value) -> Target {
        let target = random_target(path, custom);
        self.repo.set_target(target.clone());
        target
    }

    /// Publishes with every key, default expiries.
    pub fn publish(&mut self, now: SystemTime) -> Versions {
        let keys = self.keys.all();
        self.repo.publish(&keys, Expiry::default(), now).unwrap()
    }

    /// A role file's JSON.
    pub fn read(&self, file: &str) -> Value {
        serde_json::from_slice(&std::fs::read(self.path().join(file)).unwrap()).unwrap()
    }

    /// Writes raw bytes as a role file.
    pub fn write_raw(&self, file: &str, bytes: &[u8]) {
        std::fs::write(self.path().join(file), bytes).unwrap();
    }

    /// Writes `doc` as a role file.
    pub fn write(&self, file: &str, doc: &Value) {
        self.write_raw(file, &serde_json::to_vec(doc).unwrap());
    }

    /// Edits `signed` of a role file with `edit` and signs it again with `signers` (an attacker
    /// holding those keys); also writes the same bytes under `also`, if given.
    pub fn resign(
        &self,
        file: &str,
        signers: &[&KeyPair],
        edit: impl FnOnce(&mut Value),
    ) -> Vec<u8> {
        let mut doc = self.read(file);
        edit(&mut doc["signed"]);
        let bytes = serde_json::to_vec(&signed_doc(&doc["signed"], signers)).unwrap();
        self.write_raw(file, &bytes);
        bytes
    }
}

/// `{"signed": signed, "signatures": [...]}` signed by each of `signers`.
pub fn signed_doc(signed: &Value, signers: &[&KeyPair]) -> Value {
    let sigs: Vec<Value> = signers.iter().map(|k| k.signature(signed)).collect();
    json!({"signed": signed, "signatures": sigs})
}

/// A target with a random length and digest.
pub fn random_target(path: &str, custom: Value) -> Target {
    Target {
        path: path.to_string(),
        length: random_u64() % 100_000 + 1,
        sha256: hex::encode(Sha256::digest(random_name(16).as_bytes())),
        custom,
    }
}

/// A random server-like target path "<name>/<version>".
pub fn random_path() -> String {
    format!("{}/1.{}.0", random_name(8), random_u64() % 100)
}

/// `now` moved by `days` (negative: the past).
pub fn days(now: SystemTime, days: i64) -> SystemTime {
    let d = Duration::from_secs(days.unsigned_abs() * 86_400);
    if days >= 0 { now + d } else { now - d }
}

/// A `Fetch` that records every file asked for.
#[derive(Debug)]
pub struct Recording<F> {
    pub inner: F,
    pub asked: Vec<String>,
}

impl<F: Fetch> Recording<F> {
    pub fn new(inner: F) -> Self {
        Recording {
            inner,
            asked: Vec::new(),
        }
    }
}

impl<F: Fetch> Fetch for Recording<F> {
    fn fetch(&mut self, file: &str, max: u64) -> Result<Vec<u8>, FetchError> {
        self.asked.push(file.to_string());
        self.inner.fetch(file, max)
    }
}
