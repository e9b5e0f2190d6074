//! REVIEW-12: attacks on the catalog's use of the TUF client (not on `tuf` itself).

use std::time::SystemTime;

use gateway::catalog::{state, sync};
use gateway::store::{RegistryRecord, SqliteStore, Store, now_ms};
use gateway::tuf::{Expiry, KeyPair, Limits, Role};
use serde_json::json;
use testkit::tuf::Registry;

/// TUF 5.3.11 (fast-forward recovery): an attacker holding the timestamp key pushed
/// timestamp version 1000 and the gateway synced it. The registry recovers by rotating the
/// timestamp key in root 2 and publishing an honest timestamp (version 4). `tuf::update`
/// accepts that (tests/tuf_update.rs), but `catalog::sync` then writes it through
/// `registry_metadata_put`, which refuses any role's version going down: the sync fails as a
/// "rollback" for ever, the store keeps the compromised root 1 and the attacker's timestamp,
/// and `registry forget` (the only way out) is refused while any server from it is installed.
#[test]
fn review_a_fast_forward_recovery_reaches_the_store() {
    let now = SystemTime::now();
    let mut reg = Registry::new(now);
    reg.publish(now);
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open_in(&dir.path().join("state")).unwrap();
    store
        .registry_add(&RegistryRecord {
            name: "main".into(),
            location: reg.path().display().to_string(),
            pinned_root: reg.pinned().root,
            ca_pem: None,
            added_ms: now_ms(),
        })
        .unwrap();
    let limits = Limits::default();
    sync(&store, "main", &mut reg.fetch(), &limits, now).unwrap();

    // The compromise: a fast-forwarded timestamp, synced.
    let ts = &reg.keys.timestamp;
    reg.resign("timestamp.json", &[ts], |s| s["version"] = json!(1000));
    let pushed = sync(&store, "main", &mut reg.fetch(), &limits, now).unwrap();
    assert_eq!(pushed.after.timestamp, 1000);

    // The recovery: root 2 replaces the timestamp key; an honest, lower timestamp.
    let new_ts = KeyPair::generate();
    let mut setup = reg.keys.setup();
    setup.timestamp = (vec![new_ts.public()], 1);
    let root = [&reg.keys.root];
    let expiry = Expiry::default();
    reg.repo
        .rotate_root(&setup, &root, &root, expiry.root, now)
        .unwrap();
    let signers = [
        &reg.keys.root,
        &new_ts,
        &reg.keys.snapshot,
        &reg.keys.targets,
    ];
    reg.repo.publish(&signers, expiry, now).unwrap();

    let recovered = sync(&store, "main", &mut reg.fetch(), &limits, now);
    let report = recovered.unwrap_or_else(|e| {
        panic!("the registry's 5.3.11 recovery never reaches the gateway: {e}")
    });
    assert_eq!(report.after.root, 2);
    let (_, loaded) = state::load(&store, "main", &limits).unwrap();
    assert_eq!(loaded.versions.root, 2);
    assert!(loaded.expired(now) != Some(Role::Timestamp));
}
