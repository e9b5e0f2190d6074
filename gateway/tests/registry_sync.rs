//! `gigmcp registry add|sync|list|forget` through the real binary, on a real state directory,
//! against a registry's metadata (written by `tuf::Repo`) served over loopback HTTP by
//! `testkit::metadata`. Every attack the TUF threat model names is one test: the sync exits
//! non-zero, stderr names the role and the refusal, the store's metadata rows are byte for
//! byte what they were, and the audit trail holds `registry.refused` with that reason. One test
//! drives `catalog::sync` in process: the store's floor against a TUF fast-forward recovery.

use std::time::{Duration, SystemTime};

use gateway::catalog;
use gateway::store::{RegistryOrigin, RegistryRecord, ServerRecord, SqliteStore, Store, now_ms};
use gateway::tuf::{Expiry, KeyPair, Limits, Role};
use serde_json::json;
use testkit::env::random_hex;
use testkit::metadata::world::{World, assert_ok, stderr, stdout};
use testkit::metadata::{Hook, MetadataServer};
use testkit::tuf::{Registry, random_path};
use testkit::upstream::TestCa;

/// The sync is refused naming `role` and `kind`, nothing stored changed, and the refusal is
/// in the audit trail with that reason.
fn assert_refused(w: &World, role: &str, kind: &str) {
    let before = w.rows();
    let out = w.sync();
    assert!(!out.status.success(), "accepted: {}", stdout(&out));
    let err = stderr(&out);
    assert!(err.contains(&format!("sync refused ({kind})")), "{err}");
    assert!(err.contains(role), "stderr does not name {role}: {err}");
    assert_eq!(
        w.rows(),
        before,
        "a refused sync changed the stored metadata"
    );
    let events = w.env.store().audit_recent(20).unwrap();
    assert!(
        events.iter().any(|e| e.action == "registry.refused"
            && e.target == w.name
            && e.outcome == "denied"
            && e.detail.starts_with(&format!("reason={kind} "))),
        "no registry.refused reason={kind} in {events:#?}"
    );
}

/// One refusal per test, so each attack fails by name.
macro_rules! refused {
    ($(#[$doc:meta])* $test:ident, $role:literal, $kind:literal, |$w:ident| $attack:block) => {
        $(#[$doc])*
        #[test]
        fn $test() {
            #[allow(unused_mut)]
            let mut $w = World::synced();
            $attack
            assert_refused(&$w, $role, $kind);
        }
    };
}

refused!(
    /// An older, genuinely signed timestamp served again.
    a_rolled_back_timestamp_is_refused, "timestamp", "rollback", |w| {
        let old = w.timestamp_naming(2, 2, &w.raw("2.snapshot.json"));
        w.server.set_hook("timestamp.json", Hook::Body(old));
    }
);

refused!(
    /// A newer timestamp naming an older snapshot.
    a_rolled_back_snapshot_is_refused, "snapshot", "rollback", |w| {
        let ts = w.timestamp_naming(4, 2, &w.raw("2.snapshot.json"));
        w.server.set_hook("timestamp.json", Hook::Body(ts));
    }
);

refused!(
    /// A newer snapshot naming an older targets.
    a_rolled_back_targets_is_refused, "targets", "rollback", |w| {
        w.serve_snapshot_naming(4, 2, &w.raw("2.targets.json"));
    }
);

refused!(
    /// A newer targets, properly named by snapshot and timestamp, already expired.
    expired_targets_metadata_is_refused, "targets", "expired", |w| {
        let targets = w.forged("targets.json", &[&w.reg.keys.targets], |s| {
            s["version"] = json!(4);
            s["expires"] = json!("2001-01-01T00:00:00Z");
        });
        w.reg.write_raw("4.targets.json", &targets);
        w.serve_snapshot_naming(4, 4, &targets);
    }
);

refused!(
    /// The timestamp the gateway holds, replayed unchanged after it expired.
    a_frozen_timestamp_replayed_after_its_expiry_is_refused, "timestamp", "expired", |w| {
        w.publish(Expiry {
            timestamp: Duration::from_secs(2),
            ..Expiry::default()
        });
        assert_ok(&w.sync());
        std::thread::sleep(Duration::from_millis(3100));
    }
);

refused!(
    /// The targets file an older snapshot named, served under the newer snapshot's name.
    an_older_targets_with_a_newer_snapshot_is_mix_and_match, "targets", "mix-and-match", |w| {
        w.reg.add(&random_path(), json!({}));
        w.publish(Expiry::default());
        w.reg.write_raw("4.targets.json", &w.raw("2.targets.json"));
    }
);

refused!(
    /// A timestamp signed by a key the root does not list.
    a_signature_by_a_key_not_in_root_is_refused, "timestamp", "unknown-key", |w| {
        let stranger = KeyPair::generate();
        let ts = w.forged("timestamp.json", &[&stranger], |s| s["version"] = json!(4));
        w.server.set_hook("timestamp.json", Hook::Body(ts));
    }
);

refused!(
    /// One valid signature where the root asks for two.
    a_threshold_not_met_is_refused, "timestamp", "threshold", |w| {
        let ts = w.forged("timestamp.json", &[&w.reg.keys.timestamp], |s| {
            s["version"] = json!(4)
        });
        w.server.set_hook("timestamp.json", Hook::Body(ts));
    }
);

/// The current timestamp with one signature's hex changed by `damage`.
fn damaged_signature(w: &World, damage: impl FnOnce(&mut String)) {
    let mut doc = w.reg.read("timestamp.json");
    let mut sig = doc["signatures"][0]["sig"].as_str().unwrap().to_owned();
    damage(&mut sig);
    doc["signatures"][0]["sig"] = json!(sig);
    let bytes = serde_json::to_vec(&doc).unwrap();
    w.server.set_hook("timestamp.json", Hook::Body(bytes));
}

refused!(
    a_truncated_signature_is_refused,
    "timestamp",
    "signature",
    |w| {
        damaged_signature(&w, |s| s.truncate(s.len() - 2));
    }
);

refused!(
    a_bit_flipped_signature_is_refused,
    "timestamp",
    "signature",
    |w| {
        damaged_signature(&w, |s| {
            let i = (testkit::names::random_u64() as usize) % s.len();
            let c = u8::from_str_radix(&s[i..=i], 16).unwrap() ^ 1;
            s.replace_range(i..=i, &format!("{c:x}"));
        });
    }
);

refused!(
    /// A version 2 root that only its own new key signed.
    a_root_rotation_not_signed_by_the_old_threshold_is_refused, "root", "rotation", |w| {
        let new = KeyPair::generate();
        let id = new.public().key_id();
        let root = w.forged("1.root.json", &[&new], |s| {
            s["version"] = json!(2);
            s["keys"][&id] = new.public().to_json();
            s["roles"]["root"]["keyids"] = json!([id]);
        });
        w.reg.write_raw("2.root.json", &root);
    }
);

refused!(
    /// A timestamp whose JSON says `_type` twice (two parsers could read two documents).
    duplicate_json_keys_are_refused, "timestamp", "duplicate-key", |w| {
        let text = String::from_utf8(w.raw("timestamp.json")).unwrap();
        let doubled = text.replacen(
            "\"_type\":\"timestamp\"",
            "\"_type\":\"timestamp\",\"_type\":\"timestamp\"",
            1,
        );
        assert_ne!(doubled, text);
        w.server.set_hook("timestamp.json", Hook::Body(doubled.into_bytes()));
    }
);

refused!(
    /// A timestamp of 17 KiB (the limit is 16 KiB).
    metadata_over_its_size_limit_is_refused, "timestamp", "too-large", |w| {
        w.server.set_hook("timestamp.json", Hook::Body(vec![b' '; 17 << 10]));
    }
);

refused!(
    /// A timestamp that never ends.
    metadata_that_never_ends_is_refused, "timestamp", "too-large", |w| {
        w.server.set_hook("timestamp.json", Hook::Endless);
    }
);

#[test]
fn a_registry_is_added_and_synced_showing_each_roles_version() {
    let w = World::new();
    let out = w.add();
    assert_ok(&out);
    let text = stdout(&out);
    assert!(
        text.contains(&format!("added registry {} at {}", w.name, w.server.url())),
        "{text}"
    );
    assert!(
        text.contains("root 1, timestamp 2, snapshot 2, targets 2"),
        "{text}"
    );
    assert!(text.contains("; 2 targets"), "{text}");
    let (rows, synced) = w.rows();
    let versions: Vec<(&str, u64)> = rows.iter().map(|r| (r.role.as_str(), r.version)).collect();
    assert_eq!(
        versions,
        [
            ("root", 1),
            ("timestamp", 2),
            ("snapshot", 2),
            ("targets", 2)
        ]
    );
    assert!(synced.is_some());
    assert_eq!(
        rows[3].body,
        w.raw("2.targets.json"),
        "stored byte for byte"
    );
    let actions: Vec<String> = w
        .env
        .store()
        .audit_recent(5)
        .unwrap()
        .into_iter()
        .map(|e| e.action)
        .collect();
    assert_eq!(
        actions[..2],
        ["registry.sync".to_owned(), "registry.add".to_owned()]
    );
}

#[test]
fn a_newer_index_moves_every_version_it_changed() {
    let mut w = World::synced();
    w.reg.add(&random_path(), json!({}));
    w.publish(Expiry::default());
    let out = w.sync();
    assert_ok(&out);
    let text = stdout(&out);
    assert!(
        text.contains("root 1, timestamp 4, snapshot 4, targets 4 (was root 1, timestamp 3, snapshot 3, targets 3); 4 targets"),
        "{text}"
    );
}

#[test]
fn an_unchanged_index_syncs_as_up_to_date() {
    let w = World::synced();
    let before = w.rows().0;
    let out = w.sync();
    assert_ok(&out);
    assert!(
        stdout(&out).contains("is up to date: root 1, timestamp 3"),
        "{}",
        stdout(&out)
    );
    assert_eq!(w.rows().0, before);
}

#[test]
fn a_root_rotated_by_both_thresholds_is_followed() {
    let mut w = World::synced();
    let new_root = KeyPair::generate();
    let k = &w.reg.keys;
    let mut setup = k.setup();
    setup.root = (vec![new_root.public()], 1);
    setup.timestamp = (vec![k.timestamp.public(), w.extra.public()], 2);
    let year = Duration::from_secs(365 * 86_400);
    w.reg
        .repo
        .rotate_root(&setup, &[&k.root], &[&new_root], year, SystemTime::now())
        .unwrap();
    let out = w.sync();
    assert_ok(&out);
    assert!(
        stdout(&out).contains("root 2, timestamp 3"),
        "{}",
        stdout(&out)
    );
    assert_eq!(w.rows().0[0].body, w.raw("2.root.json"));
}

#[test]
fn a_registry_served_over_https_with_its_own_ca_is_added_with_ca() {
    let w = World::new();
    let ca = TestCa::new(&["127.0.0.1"]);
    let (cert, key) = ca.issue(&["127.0.0.1"], false);
    let tls = MetadataServer::start_tls(w.reg.path(), &cert, &key);
    let ca_file = w.env.dir.path().join("registry-ca.pem");
    std::fs::write(&ca_file, &ca.ca_pem).unwrap();
    let root = w.reg.path().join("1.root.json");
    let args = [
        "registry",
        "add",
        &w.name,
        &tls.url(),
        "--root",
        root.to_str().unwrap(),
    ];
    let without = w.cli(&args);
    assert!(!without.status.success());
    assert!(
        stderr(&without).contains("sync refused (fetch)"),
        "{}",
        stderr(&without)
    );
    let other = format!("{}-ca", w.name);
    let mut with = args.to_vec();
    with[2] = &other;
    with.extend(["--ca", ca_file.to_str().unwrap()]);
    let out = w.cli(&with);
    assert_ok(&out);
    assert!(stdout(&out).contains("root 1, timestamp 2, snapshot 2, targets 2"));
}

#[test]
fn a_pinned_root_whose_signature_does_not_verify_is_refused_and_nothing_added() {
    let w = World::new();
    let mut doc = w.reg.read("1.root.json");
    doc["signed"]["version"] = json!(7);
    let root = w.env.dir.path().join("forged-root.json");
    std::fs::write(&root, serde_json::to_vec(&doc).unwrap()).unwrap();
    let out = w.cli(&[
        "registry",
        "add",
        &w.name,
        &w.server.url(),
        "--root",
        root.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("root"), "{}", stderr(&out));
    assert!(w.env.store().registry_get(&w.name).unwrap().is_none());
    assert_eq!(
        w.server.total_requests(),
        0,
        "nothing fetched for a refused root"
    );
    let events = w.env.store().audit_recent(5).unwrap();
    assert!(
        events
            .iter()
            .any(|e| e.action == "registry.refused" && e.detail.starts_with("reason=signature ")),
        "{events:#?}"
    );
}

#[test]
fn a_taken_registry_name_is_refused() {
    let w = World::synced();
    let before = w.rows();
    let out = w.add();
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains(&format!("registry {} exists", w.name)),
        "{}",
        stderr(&out)
    );
    assert_eq!(w.rows(), before);
}

#[test]
fn the_list_shows_each_registrys_versions_targets_and_servers() {
    let w = World::synced();
    let never = World::new();
    let root = never.reg.path().join("1.root.json");
    // Added while its server answers 503: added, never synced.
    never.server.set_hook("timestamp.json", Hook::Status(503));
    let args = [
        "registry",
        "add",
        &never.name,
        &never.server.url(),
        "--root",
        root.to_str().unwrap(),
    ];
    assert!(!w.cli(&args).status.success());
    let out = w.cli(&["registry", "list"]);
    assert_ok(&out);
    let text = stdout(&out);
    let line = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .unwrap()
            .to_owned()
    };
    let synced = line(&w.name);
    assert!(
        synced
            .split_whitespace()
            .take(6)
            .eq([w.name.as_str(), "1", "3", "3", "3", "3"]),
        "{synced}"
    );
    assert!(line(&never.name).contains("never synced"), "{text}");
}

fn install_from(w: &World) -> String {
    let server = format!("s{}", random_hex(4));
    let record = ServerRecord {
        name: server.clone(),
        version: "1.0.0".into(),
        image_digest: format!("sha256:{}", random_hex(32)),
        manifest: json!({"name": server, "version": "1.0.0", "command": ["/bin/true"]}).to_string(),
        source: "registry".into(),
        approved_ranges: Vec::new(),
        installed_ms: now_ms(),
        origin: Some(RegistryOrigin {
            registry: w.name.clone(),
            target: format!("{server}/1.0.0"),
        }),
    };
    assert!(w.env.store().server_add(&record).unwrap());
    server
}

#[test]
fn forgetting_a_registry_a_server_came_from_is_refused_and_nothing_removed() {
    let w = World::synced();
    let server = install_from(&w);
    let before = w.rows();
    let out = w.cli(&["registry", "forget", &w.name]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains(&format!("in use by server {server}")),
        "{}",
        stderr(&out)
    );
    assert_eq!(w.rows(), before);
    let listed = stdout(&w.cli(&["registry", "list"]));
    assert!(listed.contains(&server), "{listed}");
    let events = w.env.store().audit_recent(5).unwrap();
    assert!(
        events
            .iter()
            .any(|e| e.action == "registry.forget" && e.outcome == "denied")
    );
}

#[test]
fn forgetting_a_registry_removes_it_and_its_metadata() {
    let w = World::synced();
    assert_ok(&w.cli(&["registry", "forget", &w.name]));
    let store = w.env.store();
    assert!(store.registry_get(&w.name).unwrap().is_none());
    assert!(store.registry_metadata(&w.name).is_err());
    assert!(!stdout(&w.cli(&["registry", "list"])).contains(&w.name));
}

#[test]
fn a_sync_of_every_registry_syncs_the_good_ones_and_fails_naming_the_refused_one() {
    let mut good = World::synced();
    let bad = World::new();
    let root = bad.reg.path().join("1.root.json");
    let args = [
        "registry",
        "add",
        &bad.name,
        &bad.server.url(),
        "--root",
        root.to_str().unwrap(),
    ];
    assert_ok(&good.cli(&args));
    bad.server.set_hook("timestamp.json", Hook::Endless);
    good.reg.add(&random_path(), json!({}));
    good.publish(Expiry::default());
    let out = good.cli(&["registry", "sync"]);
    assert!(!out.status.success());
    assert!(stdout(&out).contains(&format!(
        "synced registry {}: root 1, timestamp 4",
        good.name
    )));
    let err = stderr(&out);
    assert!(
        err.contains(&format!("registry {}: sync refused (too-large)", bad.name)),
        "{err}"
    );
    assert!(err.contains("1 of 2 registries refused"), "{err}");
}

/// TUF 5.3.11 (fast-forward recovery): an attacker holding the timestamp key pushed
/// timestamp version 1000 and the gateway synced it. The registry recovers by rotating the
/// timestamp key in root 2 and publishing an honest timestamp (version 4). `tuf::update`
/// accepts that (tests/tuf_update.rs), and `catalog::sync` must write it through
/// `registry_metadata_put`: were any role's version refused to go down, the sync would fail as a
/// "rollback" for ever, the store would keep the compromised root 1 and the attacker's timestamp,
/// and `registry forget` (the only way out) would stay refused while any server from it is installed.
/// In process (not through the binary): the store's rule is what is under test.
#[test]
fn a_fast_forward_recovery_after_a_stolen_timestamp_key_reaches_the_store() {
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
    catalog::sync(&store, "main", &mut reg.fetch(), &limits, now).unwrap();

    // The compromise: a fast-forwarded timestamp, synced.
    let ts = &reg.keys.timestamp;
    reg.resign("timestamp.json", &[ts], |s| s["version"] = json!(1000));
    let pushed = catalog::sync(&store, "main", &mut reg.fetch(), &limits, now).unwrap();
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

    let recovered = catalog::sync(&store, "main", &mut reg.fetch(), &limits, now);
    let report = recovered.unwrap_or_else(|e| {
        panic!("the registry's 5.3.11 recovery never reaches the gateway: {e}")
    });
    assert_eq!(report.after.root, 2);
    let (_, loaded) = catalog::state::load(&store, "main", &limits).unwrap();
    assert_eq!(loaded.versions.root, 2);
    assert!(loaded.expired(now) != Some(Role::Timestamp));
}
