//! The author's side under attack, and the container budget: `Repo::open` trusts only what its
//! own chain from `1.root.json` vouches for (expiry aside), `publish` never replaces a signed
//! version, and a signed file too rich in objects is refused as too large, on real
//! repositories in temporary directories. Each attack asserts the exact refusal and that no
//! file of the directory changed.

use std::time::SystemTime;

use gateway::tuf::{self, Expiry, KeyPair, Limits, Repo, RepoError, Role, TufError};
use serde_json::{Value, json};
use testkit::tuf::{Registry, bind_meta, days, random_path};

fn now() -> SystemTime {
    SystemTime::now()
}

fn published() -> Registry {
    let mut reg = Registry::new(now());
    reg.add(&random_path(), json!({"n": random_path()}));
    reg.publish(now());
    reg
}

#[test]
fn an_expired_repository_reopens_and_its_next_publish_renews_it() {
    let t0 = now();
    let mut reg = Registry::new(t0);
    let path = random_path();
    reg.add(&path, json!({}));
    reg.publish(t0);
    // Past timestamp, snapshot and targets (1, 7, 90 days), within root (365).
    let later = days(t0, 200);
    let mut repo = Repo::open(reg.path()).expect("an expired repository opens");
    repo.publish(&reg.keys.all(), Expiry::default(), later)
        .expect("nothing stale is refused: the author renews it");
    let up = tuf::update(&reg.pinned(), &mut reg.fetch(), &Limits::default(), later)
        .expect("the renewed repository verifies");
    assert!(up.targets.entries.contains_key(&path));
}

#[test]
fn a_root_added_to_the_chain_without_the_old_keys_is_refused_on_open() {
    let reg = published();
    let evil = KeyPair::generate();
    reg.forge("1.root.json", "2.root.json", &[&evil], |s| {
        s["version"] = json!(2);
    });
    let before = reg.save();
    let e = Repo::open(reg.path()).expect_err("a root nobody trusted");
    assert!(
        matches!(&e, RepoError::Invalid { source: TufError::RotationThreshold { version: 2, .. }, path }
            if path.ends_with("2.root.json")),
        "{e}"
    );
    assert_eq!(reg.save(), before);
}

#[test]
fn a_root_json_that_is_not_the_newest_of_the_chain_is_refused_on_open() {
    let reg = published();
    reg.forge("1.root.json", "2.root.json", &[&reg.keys.root], |s| {
        s["version"] = json!(2);
    });
    let e = Repo::open(reg.path()).expect_err("root.json is still version 1");
    assert!(
        matches!(&e, RepoError::NotNewestRoot { newest: 2, .. }),
        "{e}"
    );
}

#[test]
fn a_snapshot_edited_without_its_key_is_refused_on_open() {
    let reg = published();
    let mut doc = reg.read("snapshot.json");
    doc["signed"]["meta"]["targets.json"]["version"] = json!(99);
    reg.write("snapshot.json", &doc);
    let before = reg.save();
    let e = Repo::open(reg.path()).expect_err("an unsigned snapshot");
    assert!(
        matches!(
            &e,
            RepoError::Invalid {
                source: TufError::BadSignature {
                    role: Role::Snapshot,
                    ..
                },
                ..
            }
        ),
        "{e}"
    );
    assert_eq!(reg.save(), before);
}

#[test]
fn publish_never_overwrites_an_existing_signed_version() {
    let mut reg = published();
    let next = reg.read("targets.json")["signed"]["version"]
        .as_u64()
        .unwrap()
        + 1;
    let planted = format!("{next}.targets.json");
    let bytes = random_path().into_bytes();
    reg.write_raw(&planted, &bytes);
    reg.add(&random_path(), json!({}));
    let before = reg.save();
    let e = reg
        .repo
        .publish(&reg.keys.all(), Expiry::default(), now())
        .expect_err("the version's file is already there");
    assert!(
        matches!(&e, RepoError::Occupied { path } if path.ends_with(&planted)),
        "{e}"
    );
    assert_eq!(
        reg.save(),
        before,
        "nothing written, no temporary file left"
    );
}

/// A targets file the author signed, unbound by hash in the snapshot (python-tuf's default),
/// padded with a million tiny objects: over the container budget of its cap, so refused as
/// too large once its signature was found valid.
#[test]
fn a_signed_targets_file_over_the_container_budget_is_refused_as_too_large() {
    let reg = published();
    let (snapshot, targets) = reg.current_files();
    let pad = Value::Array(vec![json!({"": 0}); 1 << 20]);
    let raw = reg.resign(&targets, &[&reg.keys.targets], |s| s["x-pad"] = pad);
    reg.write_raw("targets.json", &raw);
    let snap = reg.resign(&snapshot, &[&reg.keys.snapshot], |s| {
        let m = s["meta"]["targets.json"].as_object_mut().unwrap();
        m.remove("length");
        m.remove("hashes");
    });
    reg.write_raw("snapshot.json", &snap);
    reg.resign("timestamp.json", &[&reg.keys.timestamp], |s| {
        s["version"] = json!(s["version"].as_u64().unwrap() + 1);
        bind_meta(&mut s["meta"]["snapshot.json"], &snap)
    });
    let e = tuf::update(&reg.pinned(), &mut reg.fetch(), &Limits::default(), now())
        .expect_err("too many objects");
    assert_eq!(e.kind(), "too-large");
    assert!(
        matches!(e, TufError::TooManyContainers { role: Role::Targets, budget: 131_072, containers }
            if containers > 1 << 20),
        "{e}"
    );
}
