//! Signed TUF registries for tests: fresh keys for each role, a `Repo` in a temporary directory
//! signed by them, random targets, hand edits of a role's file (re-signed or not) for attack
//! tests, and `Fetch` doubles: one that records what was asked for, one that reports a file too
//! large, one whose file never ends.
//!
//! Everything is real: the files are what `gateway::tuf::Repo` writes and a client reads
//! through `DirFetch`; an attack is an edit of those files, never a mock of the verifier.

use std::path::Path;
use std::time::{Duration, SystemTime};

use gateway::tuf::{
    DirFetch, Expiry, Fetch, FetchError, KeyPair, Repo, RoleSetup, Stored, Target, Versions,
    read_capped,
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
    /// More targets keys, beside `keys.targets` (see `with_targets_threshold`).
    pub extra: Vec<KeyPair>,
    pub repo: Repo,
}

impl Registry {
    /// A fresh repository (version 1 of every role), signed as of `now`.
    pub fn new(now: SystemTime) -> Self {
        Self::with_targets_threshold(now, 1, 1)
    }

    /// A fresh repository whose targets role has `n` keys and needs `threshold` of them.
    pub fn with_targets_threshold(now: SystemTime, n: usize, threshold: u32) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let keys = Keys::generate();
        let extra: Vec<KeyPair> = (1..n).map(|_| KeyPair::generate()).collect();
        let mut setup = keys.setup();
        setup.targets.0.extend(extra.iter().map(KeyPair::public));
        setup.targets.1 = threshold;
        let mut signers: Vec<&KeyPair> = keys.all().to_vec();
        signers.extend(extra.iter());
        let repo = Repo::init(dir.path(), &setup, Expiry::default(), &signers, now).unwrap();
        Registry {
            dir,
            keys,
            extra,
            repo,
        }
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
        let mut signers: Vec<&KeyPair> = self.keys.all().to_vec();
        signers.extend(self.extra.iter());
        self.repo.publish(&signers, Expiry::default(), now).unwrap()
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
    /// holding those keys).
    pub fn resign(
        &self,
        file: &str,
        signers: &[&KeyPair],
        edit: impl FnOnce(&mut Value),
    ) -> Vec<u8> {
        self.forge(file, file, signers, edit)
    }

    /// Reads role file `from`, edits its `signed`, signs it with `signers` and writes it as
    /// `to`; returns the bytes.
    pub fn forge(
        &self,
        from: &str,
        to: &str,
        signers: &[&KeyPair],
        edit: impl FnOnce(&mut Value),
    ) -> Vec<u8> {
        let mut doc = self.read(from);
        edit(&mut doc["signed"]);
        let bytes = serde_json::to_vec(&signed_doc(&doc["signed"], signers)).unwrap();
        self.write_raw(to, &bytes);
        bytes
    }
}

impl Registry {
    /// Every file of the directory, to put back with `restore` after an attack.
    pub fn save(&self) -> Vec<(String, Vec<u8>)> {
        let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(self.path())
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let name = e.file_name().into_string().unwrap();
                (name, std::fs::read(e.path()).unwrap())
            })
            .collect();
        files.sort();
        files
    }

    /// Puts the directory back as `save` found it (files added since are removed).
    pub fn restore(&self, saved: &[(String, Vec<u8>)]) {
        for e in std::fs::read_dir(self.path()).unwrap() {
            let e = e.unwrap();
            let name = e.file_name().into_string().unwrap();
            if !saved.iter().any(|(n, _)| *n == name) {
                std::fs::remove_file(e.path()).unwrap();
            }
        }
        for (name, bytes) in saved {
            self.write_raw(name, bytes);
        }
    }

    /// The file names the current timestamp and snapshot point at: (snapshot, targets).
    pub fn current_files(&self) -> (String, String) {
        let ts = self.read("timestamp.json");
        let snapshot = format!(
            "{}.snapshot.json",
            ts["signed"]["meta"]["snapshot.json"]["version"]
        );
        let snap = self.read(&snapshot);
        let targets = format!(
            "{}.targets.json",
            snap["signed"]["meta"]["targets.json"]["version"]
        );
        (snapshot, targets)
    }

    /// Re-signs the current snapshot (same version) and a new timestamp (version + 1) so they
    /// name the current bytes of the targets and snapshot files: after a hand edit of either,
    /// the edit alone is left to refuse (an attacker holding the snapshot and timestamp keys).
    pub fn rebind(&self) {
        let (snapshot, targets) = self.current_files();
        let raw = std::fs::read(self.path().join(&targets)).unwrap();
        let bytes = self.resign(&snapshot, &[&self.keys.snapshot], |s| {
            bind_meta(&mut s["meta"]["targets.json"], &raw)
        });
        self.write_raw("snapshot.json", &bytes);
        self.resign("timestamp.json", &[&self.keys.timestamp], |s| {
            s["version"] = json!(s["version"].as_u64().unwrap() + 1);
            bind_meta(&mut s["meta"]["snapshot.json"], &bytes)
        });
    }
}

/// Sets a `meta` entry's length and sha256 to those of `raw`.
pub fn bind_meta(meta: &mut Value, raw: &[u8]) {
    meta["length"] = json!(raw.len());
    meta["hashes"] = json!({"sha256": hex::encode(Sha256::digest(raw))});
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

/// A fetch that refuses `.1` as too large, as an HTTP client stopping at the cap does.
#[derive(Debug)]
pub struct TooLargeFor<F>(pub F, pub &'static str);

impl<F: Fetch> Fetch for TooLargeFor<F> {
    fn fetch(&mut self, file: &str, max: u64) -> Result<Vec<u8>, FetchError> {
        if file == self.1 {
            return Err(FetchError::TooLarge {
                file: file.into(),
                max,
            });
        }
        self.0.fetch(file, max)
    }
}

/// A fetch whose `file` is an endless body (a mirror that never stops sending), read through
/// `read_capped` as a real client reads; `read` counts the bytes taken from it.
#[derive(Debug)]
pub struct Endless<F> {
    pub inner: F,
    pub file: &'static str,
    pub read: u64,
}

impl<F> Endless<F> {
    pub fn new(inner: F, file: &'static str) -> Self {
        Endless {
            inner,
            file,
            read: 0,
        }
    }
}

impl<F: Fetch> Fetch for Endless<F> {
    fn fetch(&mut self, file: &str, max: u64) -> Result<Vec<u8>, FetchError> {
        if file != self.file {
            return self.inner.fetch(file, max);
        }
        let mut counted = Counted(std::io::repeat(b' '), 0);
        let result = read_capped(&mut counted, file, max);
        self.read = counted.1;
        result
    }
}

struct Counted<R>(R, u64);

impl<R: std::io::Read> std::io::Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.0.read(buf)?;
        self.1 += n as u64;
        Ok(n)
    }
}
