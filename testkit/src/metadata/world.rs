//! [`World`]: a signed registry served over loopback HTTP beside a gateway state directory,
//! driven through the real `gigmcp` binary: what the tests of the operator's registry verbs
//! share. Its timestamp role needs two signatures (its own key and `extra`), so a threshold
//! can be missed; any of its files can be forged by a holder of the keys.

use std::process::Output;
use std::time::SystemTime;

use gateway::store::RoleBody;
use gateway::tuf::{Expiry, KeyPair, Repo};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::{Hook, MetadataServer};
use crate::env::{TestEnv, random_hex};
use crate::tuf::{Keys, Registry, random_path, signed_doc};

/// A registry whose timestamp role needs two signatures (its own key and `extra`), served
/// over HTTP, and a gateway state directory.
#[derive(Debug)]
pub struct World {
    pub env: TestEnv,
    pub reg: Registry,
    pub extra: KeyPair,
    pub server: MetadataServer,
    pub name: String,
}

impl Default for World {
    fn default() -> Self {
        Self::new()
    }
}

impl World {
    /// Version 2 of every role (except root) published, nothing added to the gateway yet.
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let keys = Keys::generate();
        let extra = KeyPair::generate();
        let mut setup = keys.setup();
        setup.timestamp = (vec![keys.timestamp.public(), extra.public()], 2);
        let [a, b, c, d] = keys.all();
        let signers = [a, b, c, d, &extra];
        let now = SystemTime::now();
        let repo = Repo::init(dir.path(), &setup, Expiry::default(), &signers, now).unwrap();
        let server = MetadataServer::start(dir.path());
        let mut w = World {
            env: TestEnv::new(),
            reg: Registry {
                dir,
                keys,
                extra: Vec::new(),
                repo,
            },
            extra,
            server,
            name: format!("r{}", random_hex(5)),
        };
        w.reg.add(&random_path(), json!({}));
        w.reg.add(&random_path(), json!({}));
        w.publish(Expiry::default());
        w
    }

    /// Added and synced at version 3 (version 2's files are still served beside it).
    pub fn synced() -> Self {
        let mut w = World::new();
        assert_ok(&w.add());
        w.reg.add(&random_path(), json!({}));
        w.publish(Expiry::default());
        assert_ok(&w.sync());
        w
    }

    pub fn publish(&mut self, expiry: Expiry) {
        let k = &self.reg.keys;
        let signers = [&k.root, &k.timestamp, &k.snapshot, &k.targets, &self.extra];
        self.reg
            .repo
            .publish(&signers, expiry, SystemTime::now())
            .unwrap();
    }

    pub fn cli(&self, args: &[&str]) -> Output {
        self.env.cli(args, b"")
    }

    pub fn add(&self) -> Output {
        let root = self.reg.path().join("1.root.json");
        let root = root.to_str().unwrap();
        self.cli(&[
            "registry",
            "add",
            &self.name,
            &self.server.url(),
            "--root",
            root,
        ])
    }

    pub fn sync(&self) -> Output {
        self.cli(&["registry", "sync", &self.name])
    }

    pub fn rows(&self) -> (Vec<RoleBody>, Option<i64>) {
        self.env.store().registry_metadata(&self.name).unwrap()
    }

    pub fn raw(&self, file: &str) -> Vec<u8> {
        std::fs::read(self.reg.path().join(file)).unwrap()
    }

    /// `file`'s `signed` edited and signed again by `signers` (an attacker holding them).
    pub fn forged(
        &self,
        file: &str,
        signers: &[&KeyPair],
        edit: impl FnOnce(&mut Value),
    ) -> Vec<u8> {
        let mut doc = self.reg.read(file);
        edit(&mut doc["signed"]);
        serde_json::to_vec(&signed_doc(&doc["signed"], signers)).unwrap()
    }

    /// A timestamp of `version` naming these snapshot bytes as version `snapshot`, signed by
    /// both timestamp keys.
    pub fn timestamp_naming(&self, version: u64, snapshot: u64, bytes: &[u8]) -> Vec<u8> {
        let signers = [&self.reg.keys.timestamp, &self.extra];
        self.forged("timestamp.json", &signers, |s| {
            s["version"] = json!(version);
            s["meta"]["snapshot.json"] = meta(snapshot, bytes);
        })
    }

    /// Snapshot `version` naming these targets bytes as version `targets`, served under its
    /// consistent name, and a timestamp naming it: what a holder of both keys would publish.
    pub fn serve_snapshot_naming(&self, version: u64, targets: u64, bytes: &[u8]) {
        let snapshot = self.forged("snapshot.json", &[&self.reg.keys.snapshot], |s| {
            s["version"] = json!(version);
            s["meta"]["targets.json"] = meta(targets, bytes);
        });
        self.reg
            .write_raw(&format!("{version}.snapshot.json"), &snapshot);
        let ts = self.timestamp_naming(version, version, &snapshot);
        self.server.set_hook("timestamp.json", Hook::Body(ts));
    }
}

pub fn meta(version: u64, bytes: &[u8]) -> Value {
    json!({"version": version, "length": bytes.len(), "hashes": {"sha256": hex::encode(Sha256::digest(bytes))}})
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn assert_ok(out: &Output) {
    assert!(out.status.success(), "{}{}", stdout(out), stderr(out));
}
