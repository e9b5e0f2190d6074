//! The TUF client workflow on real repositories (what `gateway::tuf::Repo` writes, read back
//! through `DirFetch`): first update, an update with nothing new, root rotation with a key
//! change, consistent and plain snapshots, `load` of the stored state and `expired()`.

use std::time::SystemTime;

use gateway::tuf::{self, Expiry, KeyPair, Limits, Role, RoleSetup, Stored};
use serde_json::json;
use testkit::tuf::{Recording, Registry, days, random_path};

fn now() -> SystemTime {
    SystemTime::now()
}

#[test]
fn a_first_update_yields_every_published_target_with_its_custom_value() {
    let mut reg = Registry::new(now());
    let a = reg.add(&random_path(), json!({"gigmcp": {"n": 1}}));
    let b = reg.add(&random_path(), serde_json::Value::Null);
    let published = reg.publish(now());
    let up = tuf::update(&reg.pinned(), &mut reg.fetch(), &Limits::default(), now()).unwrap();
    assert_eq!(up.versions, published);
    assert_eq!(up.targets.entries.len(), 2);
    assert_eq!(up.targets.entries[&a.path], a);
    assert_eq!(up.targets.entries[&b.path], b);
    assert!(up.stored.timestamp.is_some() && up.stored.targets.is_some());
}

#[test]
fn a_second_update_with_nothing_new_fetches_only_the_timestamp() {
    let mut reg = Registry::new(now());
    reg.add(&random_path(), json!({}));
    reg.publish(now());
    let first = tuf::update(&reg.pinned(), &mut reg.fetch(), &Limits::default(), now()).unwrap();
    let mut fetch = Recording::new(reg.fetch());
    let second = tuf::update(&first.stored, &mut fetch, &Limits::default(), now()).unwrap();
    assert_eq!(fetch.asked, ["2.root.json", "timestamp.json"]);
    assert_eq!(second.stored, first.stored);
    assert_eq!(second.versions, first.versions);
}

#[test]
fn a_new_timestamp_alone_fetches_no_snapshot_or_targets() {
    let mut reg = Registry::new(now());
    reg.add(&random_path(), json!({}));
    reg.publish(now());
    let first = tuf::update(&reg.pinned(), &mut reg.fetch(), &Limits::default(), now()).unwrap();
    let v = reg.publish(now());
    let mut fetch = Recording::new(reg.fetch());
    let second = tuf::update(&first.stored, &mut fetch, &Limits::default(), now()).unwrap();
    assert_eq!(fetch.asked, ["2.root.json", "timestamp.json"]);
    assert_eq!(second.versions, v);
    assert_eq!(second.versions.timestamp, first.versions.timestamp + 1);
}

#[test]
fn an_update_after_a_change_fetches_the_new_consistent_files() {
    let mut reg = Registry::new(now());
    reg.publish(now());
    let first = tuf::update(&reg.pinned(), &mut reg.fetch(), &Limits::default(), now()).unwrap();
    let t = reg.add(&random_path(), json!({"x": "y"}));
    let v = reg.publish(now());
    let mut fetch = Recording::new(reg.fetch());
    let second = tuf::update(&first.stored, &mut fetch, &Limits::default(), now()).unwrap();
    let snapshot = format!("{}.snapshot.json", v.snapshot);
    let targets = format!("{}.targets.json", v.targets);
    assert_eq!(
        fetch.asked,
        ["2.root.json", "timestamp.json", &snapshot, &targets]
    );
    assert_eq!(second.targets.entries[&t.path], t);
}

#[test]
fn a_repository_without_consistent_snapshots_is_read_by_plain_names() {
    let mut reg = Registry::new(now());
    let t = reg.add(&random_path(), json!({}));
    reg.publish(now());
    // The same repository re-signed by its root key with consistent_snapshot off.
    let root_key = &reg.keys.root;
    for file in ["1.root.json", "root.json"] {
        reg.resign(file, &[root_key], |s| {
            s["consistent_snapshot"] = json!(false)
        });
    }
    for file in [
        "1.snapshot.json",
        "2.snapshot.json",
        "1.targets.json",
        "2.targets.json",
    ] {
        std::fs::remove_file(reg.path().join(file)).unwrap();
    }
    let mut fetch = Recording::new(reg.fetch());
    let up = tuf::update(&reg.pinned(), &mut fetch, &Limits::default(), now()).unwrap();
    assert_eq!(
        fetch.asked,
        [
            "2.root.json",
            "timestamp.json",
            "snapshot.json",
            "targets.json"
        ]
    );
    assert_eq!(up.targets.entries[&t.path], t);
}

#[test]
fn a_root_rotated_twice_with_new_keys_is_followed_to_its_last_version() {
    let mut reg = Registry::new(now());
    reg.add(&random_path(), json!({}));
    reg.publish(now());
    let first = tuf::update(&reg.pinned(), &mut reg.fetch(), &Limits::default(), now()).unwrap();
    let (root2, root3, ts2) = (
        KeyPair::generate(),
        KeyPair::generate(),
        KeyPair::generate(),
    );
    let mut setup = reg.keys.setup();
    setup.root = (vec![root2.public()], 1);
    let v2 = reg
        .repo
        .rotate_root(
            &setup,
            &[&reg.keys.root],
            &[&root2],
            Expiry::default().root,
            now(),
        )
        .unwrap();
    // Version 3 also rotates the timestamp key: the next publish must re-sign the timestamp.
    let setup3 = RoleSetup {
        root: (vec![root3.public()], 1),
        timestamp: (vec![ts2.public()], 1),
        ..setup
    };
    let v3 = reg
        .repo
        .rotate_root(&setup3, &[&root2], &[&root3], Expiry::default().root, now())
        .unwrap();
    assert_eq!((v2, v3), (2, 3));
    let signers = [&root3, &ts2, &reg.keys.snapshot, &reg.keys.targets];
    reg.repo
        .publish(&signers, Expiry::default(), now())
        .unwrap();
    let mut fetch = Recording::new(reg.fetch());
    let up = tuf::update(&first.stored, &mut fetch, &Limits::default(), now()).unwrap();
    assert_eq!(up.versions.root, 3);
    assert_eq!(
        &fetch.asked[..3],
        ["2.root.json", "3.root.json", "4.root.json"]
    );
    assert_eq!(
        tuf::check_root(&up.stored.root, &Limits::default(), now())
            .unwrap()
            .key_ids
            .len(),
        4
    );
}

#[test]
fn load_re_verifies_the_stored_state_offline() {
    let mut reg = Registry::new(now());
    let t = reg.add(&random_path(), json!({"k": [1, 2]}));
    reg.publish(now());
    let up = tuf::update(&reg.pinned(), &mut reg.fetch(), &Limits::default(), now()).unwrap();
    drop(reg);
    let loaded = tuf::load(&up.stored, &Limits::default()).unwrap();
    assert_eq!(loaded.versions, up.versions);
    assert_eq!(loaded.targets.entries[&t.path], t);
    assert_eq!(loaded.expired(now()), None);
}

#[test]
fn expired_names_the_first_role_past_its_expiry() {
    let mut reg = Registry::new(now());
    reg.publish(now());
    let up = tuf::update(&reg.pinned(), &mut reg.fetch(), &Limits::default(), now()).unwrap();
    let loaded = tuf::load(&up.stored, &Limits::default()).unwrap();
    // Default expiries: timestamp 1 day, snapshot 7, targets 90, root 365.
    assert_eq!(loaded.expired(days(now(), 2)), Some(Role::Timestamp));
    assert_eq!(loaded.expired(days(now(), 400)), Some(Role::Root));
    let without_ts = Stored {
        timestamp: None,
        ..up.stored
    };
    assert!(matches!(
        tuf::load(&without_ts, &Limits::default()),
        Err(tuf::TufError::Missing {
            role: Role::Timestamp
        })
    ));
}

#[test]
fn check_root_accepts_a_self_signed_root_and_reports_its_keys() {
    let reg = Registry::new(now());
    let info = tuf::check_root(&reg.pinned().root, &Limits::default(), now()).unwrap();
    assert_eq!(info.version, 1);
    assert!(info.consistent_snapshot);
    let mut want: Vec<String> = reg.keys.all().iter().map(|k| k.public().key_id()).collect();
    want.sort();
    assert_eq!(info.key_ids, want);
}

#[test]
fn a_timestamp_key_rotation_recovers_from_a_fast_forwarded_timestamp() {
    let mut reg = Registry::new(now());
    reg.publish(now());
    // An attacker holding the timestamp key pushed version 1000, and the client took it.
    let ts = &reg.keys.timestamp;
    reg.resign("timestamp.json", &[ts], |s| s["version"] = json!(1000));
    let limits = Limits::default();
    let pushed = tuf::update(&reg.pinned(), &mut reg.fetch(), &limits, now()).unwrap();
    assert_eq!(pushed.versions.timestamp, 1000);
    // Without a rotation, the honest timestamp (version 3) is below what the client holds.
    reg.publish(now());
    assert!(matches!(
        tuf::update(&pushed.stored, &mut reg.fetch(), &limits, now()),
        Err(tuf::TufError::Rollback {
            role: Role::Timestamp,
            trusted: 1000,
            offered: 3
        })
    ));
    // Recovery (5.3.11): root 2 replaces the timestamp key, so the old floor no longer counts.
    let new_ts = KeyPair::generate();
    let mut setup = reg.keys.setup();
    setup.timestamp = (vec![new_ts.public()], 1);
    let root = [&reg.keys.root];
    let expiry = Expiry::default();
    reg.repo
        .rotate_root(&setup, &root, &root, expiry.root, now())
        .unwrap();
    let signers = [
        &reg.keys.root,
        &new_ts,
        &reg.keys.snapshot,
        &reg.keys.targets,
    ];
    reg.repo.publish(&signers, expiry, now()).unwrap();
    let up = tuf::update(&pushed.stored, &mut reg.fetch(), &limits, now()).unwrap();
    assert_eq!((up.versions.root, up.versions.timestamp), (2, 4));
}
