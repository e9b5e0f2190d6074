//! TUF metadata (the Update Framework's format: root, timestamp, snapshot, targets) verified by
//! our own code, and the author's side that signs it.
//!
//! The client side is `update` (the specification's workflow, 5.3 to 5.6: the root chain with
//! rotation, then timestamp, snapshot and targets, each against rollback, freeze and
//! mix-and-match), `load` (offline re-verification of what a store holds) and `check_root` (a
//! root an admin pins). The author side is `KeyPair` and `Repo`. Canonical JSON (`cjson`) is
//! public so other modules refuse duplicate keys the same way.
//!
//! Knows nothing of OCI images, manifests, registries' names or the store: a target is a path,
//! a length, a sha256 and an opaque `custom` value; bytes come through the `Fetch` seam and the
//! caller persists `Updated::stored`. Delegations are refused, not followed.

pub mod cjson;
mod error;
mod fetch;
mod keys;
mod metadata;
mod repo;
mod sign;
mod trusted;
mod update;
mod verify;

use std::collections::BTreeMap;
use std::time::SystemTime;

pub use error::{FetchError, TufError};
pub use fetch::{DirFetch, Fetch, read_capped};
pub use keys::{KeyError, PublicKey};
pub use repo::{Expiry, Repo, RepoError, RoleSetup};
pub use sign::KeyPair;
pub use trusted::{Loaded, RootInfo, check_root, load};
pub use update::{Updated, update};

/// Size caps for each role's file (bytes). Defaults: root 512 KiB, timestamp 16 KiB,
/// snapshot 4 MiB, targets 32 MiB (1,000 servers with manifests come to about 1.5 MB).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub root: u64,
    pub timestamp: u64,
    pub snapshot: u64,
    pub targets: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            root: 512 << 10,
            timestamp: 16 << 10,
            snapshot: 4 << 20,
            targets: 32 << 20,
        }
    }
}

impl Limits {
    pub fn of(&self, role: Role) -> u64 {
        match role {
            Role::Root => self.root,
            Role::Timestamp => self.timestamp,
            Role::Snapshot => self.snapshot,
            Role::Targets => self.targets,
        }
    }
}

/// The four top-level roles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    Root,
    Timestamp,
    Snapshot,
    Targets,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Root, Role::Timestamp, Role::Snapshot, Role::Targets];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Root => "root",
            Role::Timestamp => "timestamp",
            Role::Snapshot => "snapshot",
            Role::Targets => "targets",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The raw bytes of the newest verified metadata of one registry, as the store keeps them.
/// `root` is the newest trusted root (at first: the root the admin pinned).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stored {
    pub root: Vec<u8>,
    pub timestamp: Option<Vec<u8>>,
    pub snapshot: Option<Vec<u8>>,
    pub targets: Option<Vec<u8>>,
}

/// Each role's version; 0: none yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Versions {
    pub root: u64,
    pub timestamp: u64,
    pub snapshot: u64,
    pub targets: u64,
}

/// One target of targets.json. For Gig'MCP: path "<server>/<version>", length and sha256 the
/// OCI image manifest's size and digest (lower-case hex), `custom` the entry (`Null` if absent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub path: String,
    pub length: u64,
    pub sha256: String,
    pub custom: serde_json::Value,
}

/// The verified targets role.
#[derive(Debug, Clone)]
pub struct Targets {
    pub version: u64,
    pub expires: SystemTime,
    pub entries: BTreeMap<String, Target>,
}
