//! The author's metadata directory, laid out as a client fetches it: `root.json` and every
//! `N.root.json`, `timestamp.json`, `snapshot.json` + `N.snapshot.json`, `targets.json` +
//! `N.targets.json` (consistent snapshots, so a client mid-publish never mixes versions).
//!
//! Targets are staged in memory and signed by `publish`, which writes targets, then snapshot,
//! then timestamp (each file renamed into place whole), so at every moment the directory
//! holds a consistent repository. A role whose signed file no longer verifies under the
//! current root (its keys rotated) is signed again at the next publish. `open` trusts only
//! what the chain from `1.root.json` (the author's own anchor) vouches for, expiry aside, and
//! a signed version's file is never overwritten. Knows nothing of what a
//! target's `custom` value means (catalog's job) or where the directory is served.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::keys::PublicKey;
use super::metadata::{self, Doc, RootBody, SnapshotBody, TargetsBody, TimestampBody};
use super::metadata::{Body, format_expires};
use super::sign::KeyPair;
use super::verify::{next_root, verify_role, verify_state};
use super::{Limits, Role, Target, TufError, Versions, cjson};

/// The spec version written into every role.
const SPEC_VERSION: &str = "1.0.31";

/// Who signs what: keys and threshold per role.
#[derive(Debug, Clone)]
pub struct RoleSetup {
    pub root: (Vec<PublicKey>, u32),
    pub timestamp: (Vec<PublicKey>, u32),
    pub snapshot: (Vec<PublicKey>, u32),
    pub targets: (Vec<PublicKey>, u32),
}

impl RoleSetup {
    fn of(&self, role: Role) -> &(Vec<PublicKey>, u32) {
        match role {
            Role::Root => &self.root,
            Role::Timestamp => &self.timestamp,
            Role::Snapshot => &self.snapshot,
            Role::Targets => &self.targets,
        }
    }
}

/// How long each newly signed role is valid.
#[derive(Debug, Clone, Copy)]
pub struct Expiry {
    pub root: Duration,
    pub timestamp: Duration,
    pub snapshot: Duration,
    pub targets: Duration,
}

impl Default for Expiry {
    fn default() -> Self {
        const DAY: u64 = 86_400;
        Expiry {
            root: Duration::from_secs(365 * DAY),
            timestamp: Duration::from_secs(DAY),
            snapshot: Duration::from_secs(7 * DAY),
            targets: Duration::from_secs(90 * DAY),
        }
    }
}

/// Why the author's repository could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: a repository is already there")]
    Exists { path: PathBuf },
    #[error("{path}: already exists (a signed version is never overwritten)")]
    Occupied { path: PathBuf },
    #[error("{path}: not the newest root of the chain (version {newest})")]
    NotNewestRoot { path: PathBuf, newest: u64 },
    #[error("{path}: not a valid repository: {source}")]
    Invalid { path: PathBuf, source: TufError },
    #[error("{role}: {have} of the given keys may sign it, {needed} needed")]
    Signers {
        role: Role,
        have: usize,
        needed: u32,
    },
    #[error("{role}: threshold {threshold} with {keys} key(s) can never be met")]
    Setup {
        role: Role,
        threshold: u32,
        keys: usize,
    },
    #[error("target {path:?}: custom holds a non-integer number (canonical JSON has none)")]
    NotCanonical { path: String },
}

/// An author's metadata directory.
#[derive(Debug)]
pub struct Repo {
    dir: PathBuf,
    root: Doc<RootBody>,
    targets: Doc<TargetsBody>,
    snapshot: Doc<SnapshotBody>,
    timestamp: Doc<TimestampBody>,
    staged: BTreeMap<String, Target>,
}

impl Repo {
    /// Creates a repository: root version 1, then empty targets, snapshot and timestamp.
    pub fn init(
        dir: &Path,
        setup: &RoleSetup,
        expiry: Expiry,
        signers: &[&KeyPair],
        now: SystemTime,
    ) -> Result<Repo, RepoError> {
        let io = |source| RepoError::Io {
            path: dir.to_path_buf(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        if dir.join("root.json").exists() {
            return Err(RepoError::Exists {
                path: dir.to_path_buf(),
            });
        }
        let signed = root_signed(setup, 1, later(now, expiry.root))?;
        let keys = role_key_ids(setup, Role::Root);
        let file = sign_file(Role::Root, signed, &keys, setup.root.1, signers)?;
        write_new(dir, "1.root.json", &file)?;
        write_atomic(dir, "root.json", &file)?;
        let empty = targets_signed(1, later(now, expiry.targets), &BTreeMap::new());
        let keys = role_key_ids(setup, Role::Targets);
        let targets = sign_file(Role::Targets, empty, &keys, setup.targets.1, signers)?;
        write_new(dir, "1.targets.json", &targets)?;
        write_atomic(dir, "targets.json", &targets)?;
        let snapshot = meta_signed(Role::Snapshot, 1, later(now, expiry.snapshot), 1, &targets);
        let keys = role_key_ids(setup, Role::Snapshot);
        let snapshot = sign_file(Role::Snapshot, snapshot, &keys, setup.snapshot.1, signers)?;
        write_new(dir, "1.snapshot.json", &snapshot)?;
        write_atomic(dir, "snapshot.json", &snapshot)?;
        let ts = meta_signed(
            Role::Timestamp,
            1,
            later(now, expiry.timestamp),
            1,
            &snapshot,
        );
        let keys = role_key_ids(setup, Role::Timestamp);
        let ts = sign_file(Role::Timestamp, ts, &keys, setup.timestamp.1, signers)?;
        write_atomic(dir, "timestamp.json", &ts)?;
        Repo::open(dir)
    }

    /// Opens an existing repository, verified as a client verifies it but for expiry (an
    /// author must be able to re-open an expired repository to renew it): the root chain from
    /// `1.root.json`, the author's trust anchor in their own checkout (each N+1 signed by N's
    /// threshold and its own; `root.json` must be the newest), then timestamp → snapshot →
    /// targets signed under that root and bound by version, length and hash. So nothing
    /// written into the directory by someone without the keys is staged and signed again.
    pub fn open(dir: &Path) -> Result<Repo, RepoError> {
        let root = root_chain(dir)?;
        if read_file(dir, "root.json")? != root.raw {
            return Err(RepoError::NotNewestRoot {
                path: dir.join("root.json"),
                newest: root.common.version,
            });
        }
        let invalid = |source| RepoError::Invalid {
            path: dir.to_path_buf(),
            source,
        };
        let limits = Limits::default();
        let timestamp: Doc<TimestampBody> = read_doc(dir, "timestamp.json", &limits)?;
        let snapshot: Doc<SnapshotBody> = read_doc(dir, "snapshot.json", &limits)?;
        let targets: Doc<TargetsBody> = read_doc(dir, "targets.json", &limits)?;
        verify_state(&root.body, &timestamp, &snapshot, &targets).map_err(invalid)?;
        Ok(Repo {
            dir: dir.to_path_buf(),
            root,
            staged: targets.body.entries.clone(),
            targets,
            snapshot,
            timestamp,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The targets as staged (what the next publish signs).
    pub fn targets(&self) -> &BTreeMap<String, Target> {
        &self.staged
    }

    /// Adds or replaces a target, staged until `publish`.
    pub fn set_target(&mut self, target: Target) {
        self.staged.insert(target.path.clone(), target);
    }

    /// Removes a staged target; false if there was none.
    pub fn remove_target(&mut self, path: &str) -> bool {
        self.staged.remove(path).is_some()
    }

    /// Signs new targets (if changed), snapshot and timestamp with the signers holding those
    /// roles' keys, each version + 1. Nothing changed: only a new timestamp (and the targets
    /// or snapshot that would expire before it).
    pub fn publish(
        &mut self,
        signers: &[&KeyPair],
        expiry: Expiry,
        now: SystemTime,
    ) -> Result<Versions, RepoError> {
        if let Some(t) = self
            .staged
            .values()
            .find(|t| !cjson::is_canonical(&t.custom))
        {
            return Err(RepoError::NotCanonical {
                path: t.path.clone(),
            });
        }
        // A role that would expire before the timestamp signed now is signed again, so a
        // publish with nothing changed never points a fresh timestamp at expired files.
        let horizon = later(now, expiry.timestamp);
        let targets_due = self.staged != self.targets.body.entries
            || !self.verifies(Role::Targets)
            || self.targets.common.expires <= horizon;
        let snapshot_due = targets_due
            || !self.verifies(Role::Snapshot)
            || self.snapshot.common.expires <= horizon;
        if targets_due {
            let version = self.targets.common.version + 1;
            let signed = targets_signed(version, later(now, expiry.targets), &self.staged);
            let file = self.sign(Role::Targets, signed, signers)?;
            write_new(&self.dir, &format!("{version}.targets.json"), &file)?;
            write_atomic(&self.dir, "targets.json", &file)?;
            self.targets = parse_own(&self.dir, &file)?;
        }
        if snapshot_due {
            let version = self.snapshot.common.version + 1;
            let expires = later(now, expiry.snapshot);
            let targets = &self.targets;
            let signed = meta_signed(
                Role::Snapshot,
                version,
                expires,
                targets.common.version,
                &targets.raw,
            );
            let file = self.sign(Role::Snapshot, signed, signers)?;
            write_new(&self.dir, &format!("{version}.snapshot.json"), &file)?;
            write_atomic(&self.dir, "snapshot.json", &file)?;
            self.snapshot = parse_own(&self.dir, &file)?;
        }
        let version = self.timestamp.common.version + 1;
        let snapshot = &self.snapshot;
        let signed = meta_signed(
            Role::Timestamp,
            version,
            later(now, expiry.timestamp),
            snapshot.common.version,
            &snapshot.raw,
        );
        let file = self.sign(Role::Timestamp, signed, signers)?;
        write_atomic(&self.dir, "timestamp.json", &file)?;
        self.timestamp = parse_own(&self.dir, &file)?;
        Ok(self.versions())
    }

    /// Writes N+1.root.json for `setup`, signed by the current root threshold (`old`) and by
    /// the new one (`new`); returns N+1. The other roles are re-signed by the next publish
    /// where their keys changed.
    pub fn rotate_root(
        &mut self,
        setup: &RoleSetup,
        old: &[&KeyPair],
        new: &[&KeyPair],
        expiry: Duration,
        now: SystemTime,
    ) -> Result<u64, RepoError> {
        let version = self.root.common.version + 1;
        let signed = root_signed(setup, version, later(now, expiry))?;
        let canonical = cjson::to_canonical(&signed);
        let current = &self.root.body.roles[&Role::Root];
        let mut sigs = signatures(
            Role::Root,
            &canonical,
            &current.key_ids,
            current.threshold,
            old,
        )?;
        let new_ids = role_key_ids(setup, Role::Root);
        for s in signatures(Role::Root, &canonical, &new_ids, setup.root.1, new)? {
            if !sigs.iter().any(|o| o["keyid"] == s["keyid"]) {
                sigs.push(s);
            }
        }
        let file = serde_json::to_vec(&json!({"signatures": sigs, "signed": signed}))
            .expect("a Value serializes");
        write_new(&self.dir, &format!("{version}.root.json"), &file)?;
        write_atomic(&self.dir, "root.json", &file)?;
        self.root = parse_own(&self.dir, &file)?;
        Ok(version)
    }

    fn versions(&self) -> Versions {
        Versions {
            root: self.root.common.version,
            timestamp: self.timestamp.common.version,
            snapshot: self.snapshot.common.version,
            targets: self.targets.common.version,
        }
    }

    fn verifies(&self, role: Role) -> bool {
        let root = &self.root.body;
        match role {
            Role::Targets => verify_role(role, root, &self.targets).is_ok(),
            Role::Snapshot => verify_role(role, root, &self.snapshot).is_ok(),
            Role::Timestamp => verify_role(role, root, &self.timestamp).is_ok(),
            Role::Root => verify_role(role, root, &self.root).is_ok(),
        }
    }

    fn sign(&self, role: Role, signed: Value, signers: &[&KeyPair]) -> Result<Vec<u8>, RepoError> {
        let keys = &self.root.body.roles[&role];
        sign_file(role, signed, &keys.key_ids, keys.threshold, signers)
    }
}

fn later(now: SystemTime, d: Duration) -> SystemTime {
    now.checked_add(d).unwrap_or(now)
}

fn role_key_ids(setup: &RoleSetup, role: Role) -> Vec<String> {
    setup.of(role).0.iter().map(PublicKey::key_id).collect()
}

fn root_signed(setup: &RoleSetup, version: u64, expires: SystemTime) -> Result<Value, RepoError> {
    let mut keys = serde_json::Map::new();
    let mut roles = serde_json::Map::new();
    for role in Role::ALL {
        let (list, threshold) = setup.of(role);
        let mut ids: Vec<String> = list.iter().map(PublicKey::key_id).collect();
        ids.dedup();
        if *threshold == 0 || *threshold as usize > ids.len() {
            return Err(RepoError::Setup {
                role,
                threshold: *threshold,
                keys: ids.len(),
            });
        }
        for key in list {
            keys.insert(key.key_id(), key.to_json());
        }
        roles.insert(
            role.as_str().into(),
            json!({"keyids": ids, "threshold": threshold}),
        );
    }
    Ok(json!({
        "_type": "root",
        "spec_version": SPEC_VERSION,
        "version": version,
        "expires": format_expires(expires),
        "consistent_snapshot": true,
        "keys": keys,
        "roles": roles,
    }))
}

fn targets_signed(version: u64, expires: SystemTime, targets: &BTreeMap<String, Target>) -> Value {
    let entries: serde_json::Map<String, Value> = targets
        .values()
        .map(|t| {
            let mut e = json!({"length": t.length, "hashes": {"sha256": t.sha256}});
            if !t.custom.is_null() {
                e["custom"] = t.custom.clone();
            }
            (t.path.clone(), e)
        })
        .collect();
    json!({
        "_type": "targets",
        "spec_version": SPEC_VERSION,
        "version": version,
        "expires": format_expires(expires),
        "targets": entries,
    })
}

/// A snapshot (naming targets.json) or timestamp (naming snapshot.json) with the named file's
/// version, length and sha256.
fn meta_signed(role: Role, version: u64, expires: SystemTime, named: u64, raw: &[u8]) -> Value {
    let name = if role == Role::Snapshot {
        "targets.json"
    } else {
        "snapshot.json"
    };
    json!({
        "_type": role.as_str(),
        "spec_version": SPEC_VERSION,
        "version": version,
        "expires": format_expires(expires),
        "meta": { name: {
            "version": named,
            "length": raw.len(),
            "hashes": {"sha256": hex::encode(Sha256::digest(raw))},
        }},
    })
}

/// One signature per signer holding one of `key_ids`; at least `threshold` of them.
fn signatures(
    role: Role,
    canonical: &[u8],
    key_ids: &[String],
    threshold: u32,
    signers: &[&KeyPair],
) -> Result<Vec<Value>, RepoError> {
    let mut out: Vec<Value> = Vec::new();
    for signer in signers {
        let id = signer.public().key_id();
        if key_ids.contains(&id) && !out.iter().any(|s| s["keyid"] == id.as_str()) {
            out.push(json!({"keyid": id, "sig": signer.sign_hex(canonical)}));
        }
    }
    if out.len() < threshold as usize {
        return Err(RepoError::Signers {
            role,
            have: out.len(),
            needed: threshold,
        });
    }
    Ok(out)
}

fn sign_file(
    role: Role,
    signed: Value,
    key_ids: &[String],
    threshold: u32,
    signers: &[&KeyPair],
) -> Result<Vec<u8>, RepoError> {
    let sigs = signatures(
        role,
        &cjson::to_canonical(&signed),
        key_ids,
        threshold,
        signers,
    )?;
    Ok(
        serde_json::to_vec(&json!({"signatures": sigs, "signed": signed}))
            .expect("a Value serializes"),
    )
}

/// The newest root of the directory's chain, from `1.root.json` (self-signed, version 1),
/// each `N+1.root.json` signed by N's threshold and its own (as `update` walks it, but without
/// a cap on the count: the chain is the author's own).
fn root_chain(dir: &Path) -> Result<Doc<RootBody>, RepoError> {
    let limits = Limits::default();
    let invalid = |name: &str, source| RepoError::Invalid {
        path: dir.join(name),
        source,
    };
    let first = read_file(dir, "1.root.json")?;
    let mut root = metadata::parse::<RootBody>(&first, limits.root)
        .and_then(|r| verify_role(Role::Root, &r.body, &r).map(|()| r))
        .map_err(|e| invalid("1.root.json", e))?;
    if root.common.version != 1 {
        let e = TufError::UnexpectedVersion {
            role: Role::Root,
            file: "1.root.json".into(),
            expected: 1,
            found: root.common.version,
        };
        return Err(invalid("1.root.json", e));
    }
    while let Some(next) = root.common.version.checked_add(1) {
        let name = format!("{next}.root.json");
        let raw = match std::fs::read(dir.join(&name)) {
            Ok(raw) => raw,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
            Err(source) => {
                return Err(RepoError::Io {
                    path: dir.join(&name),
                    source,
                });
            }
        };
        root = next_root(&root, next, &raw, &limits).map_err(|e| invalid(&name, e))?;
    }
    Ok(root)
}

fn read_doc<T: Body>(dir: &Path, name: &str, limits: &Limits) -> Result<Doc<T>, RepoError> {
    let raw = read_file(dir, name)?;
    metadata::parse::<T>(&raw, limits.of(T::ROLE)).map_err(|source| RepoError::Invalid {
        path: dir.join(name),
        source,
    })
}

fn read_file(dir: &Path, name: &str) -> Result<Vec<u8>, RepoError> {
    let path = dir.join(name);
    std::fs::read(&path).map_err(|source| RepoError::Io { path, source })
}

fn parse_own<T: Body>(dir: &Path, raw: &[u8]) -> Result<Doc<T>, RepoError> {
    metadata::parse::<T>(raw, u64::MAX).map_err(|source| RepoError::Invalid {
        path: dir.to_path_buf(),
        source,
    })
}

/// Writes `name` in `dir` whole: a new temporary file of a random name (created, never
/// opened through a planted symlink), synced, renamed over the old one, the directory synced
/// so the rename survives a crash.
fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), RepoError> {
    let path = dir.join(name);
    let tmp = write_temp(dir, name, bytes)?;
    let renamed = std::fs::rename(&tmp, &path);
    finish(dir, &tmp, &path, renamed)
}

/// Writes `name` in `dir` whole, refusing an existing file: a signed version (`N.root.json`,
/// `N.snapshot.json`, `N.targets.json`) is never replaced. The temporary file is hard-linked
/// into place, which fails where the name exists and never shows a partial file.
fn write_new(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), RepoError> {
    let path = dir.join(name);
    let tmp = write_temp(dir, name, bytes)?;
    let linked = std::fs::hard_link(&tmp, &path);
    if let Err(e) = &linked {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            let _ = std::fs::remove_file(&tmp);
            return Err(RepoError::Occupied { path });
        }
    }
    let linked = linked.and_then(|()| std::fs::remove_file(&tmp));
    finish(dir, &tmp, &path, linked)
}

fn write_temp(dir: &Path, name: &str, bytes: &[u8]) -> Result<PathBuf, RepoError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut nonce = [0u8; 8];
    getrandom::fill(&mut nonce).expect("the OS random source works");
    let tmp = dir.join(format!(".{name}.{}.tmp", hex::encode(nonce)));
    let io = |source| RepoError::Io {
        path: tmp.clone(),
        source,
    };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(&tmp)
        .map_err(io)?;
    let written = f.write_all(bytes).and_then(|()| f.sync_all());
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(io(e));
    }
    Ok(tmp)
}

/// After the rename or link: the temporary file removed on failure, the directory synced.
fn finish(dir: &Path, tmp: &Path, path: &Path, done: std::io::Result<()>) -> Result<(), RepoError> {
    let io = |source| RepoError::Io {
        path: path.to_path_buf(),
        source,
    };
    if let Err(e) = done {
        let _ = std::fs::remove_file(tmp);
        return Err(io(e));
    }
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io)
}
