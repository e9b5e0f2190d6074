//! Every refusal the signed registry promises, one test each, on real repositories edited the
//! way an attacker would (files replayed, swapped, re-signed with stolen or foreign keys). Each
//! asserts the exact refusal, that `update` returned `Err` (so the caller has nothing to
//! persist), and that the honest repository then updates from the same stored state.

use std::time::SystemTime;

use gateway::tuf::{self, Fetch, KeyPair, Limits, Role, TufError, Updated};
use serde_json::{Value, json};
use testkit::names::random_name;
use testkit::tuf::{Endless, Registry, TooLargeFor, bind_meta, days, random_path, signed_doc};

fn now() -> SystemTime {
    SystemTime::now()
}

/// A registry a client has synced once, and the files as they were then.
struct Case {
    reg: Registry,
    first: Updated,
    old_timestamp: Vec<u8>,
    saved: Vec<(String, Vec<u8>)>,
}

fn synced() -> Case {
    synced_from(Registry::new(now()))
}

fn synced_from(mut reg: Registry) -> Case {
    let custom = json!({"gigmcp": {"description": random_name(12), "n": 1}});
    reg.add(&random_path(), custom);
    let old_timestamp = std::fs::read(reg.path().join("timestamp.json")).unwrap();
    reg.publish(now());
    let first = tuf::update(&reg.pinned(), &mut reg.fetch(), &Limits::default(), now()).unwrap();
    let saved = reg.save();
    Case {
        reg,
        first,
        old_timestamp,
        saved,
    }
}

impl Case {
    /// The repository moves on honestly (a new target: targets, snapshot, timestamp + 1)
    /// without the client seeing it.
    fn moved_on(mut self) -> Self {
        self.reg.add(&random_path(), json!({"gigmcp": {}}));
        self.reg.publish(now());
        self.saved = self.reg.save();
        self
    }

    fn refused(&self) -> TufError {
        self.refused_with(&mut self.reg.fetch(), &Limits::default(), now())
    }

    fn refused_with(&self, fetch: &mut dyn Fetch, limits: &Limits, at: SystemTime) -> TufError {
        tuf::update(&self.first.stored, fetch, limits, at).expect_err("the attack is refused")
    }

    /// The attack undone and a new honest publish: the same stored state updates.
    fn honest_update_still_works(mut self) {
        self.reg.restore(&self.saved);
        let v = self.reg.publish(now());
        let up = tuf::update(
            &self.first.stored,
            &mut self.reg.fetch(),
            &Limits::default(),
            now(),
        )
        .expect("the honest repository updates");
        assert_eq!(up.versions, v);
    }
}

fn bump(s: &mut Value) {
    s["version"] = json!(s["version"].as_u64().unwrap() + 1);
}

fn past() -> Value {
    json!("2001-01-01T00:00:00Z")
}

#[test]
fn a_replayed_older_timestamp_is_refused_as_rollback() {
    let case = synced();
    case.reg.write_raw("timestamp.json", &case.old_timestamp);
    let e = case.refused();
    assert!(
        matches!(
            e,
            TufError::Rollback {
                role: Role::Timestamp,
                trusted: 2,
                offered: 1
            }
        ),
        "{e}"
    );
    assert_eq!(e.kind(), "rollback");
    case.honest_update_still_works();
}

#[test]
fn a_timestamp_naming_an_older_snapshot_is_refused_as_rollback() {
    let case = synced();
    let ts = &case.reg.keys.timestamp;
    case.reg.resign("timestamp.json", &[ts], |s| {
        bump(s);
        s["meta"]["snapshot.json"]["version"] = json!(1);
    });
    let e = case.refused();
    assert!(
        matches!(
            e,
            TufError::Rollback {
                role: Role::Snapshot,
                trusted: 2,
                offered: 1
            }
        ),
        "{e}"
    );
    case.honest_update_still_works();
}

#[test]
fn a_snapshot_naming_older_targets_is_refused_as_rollback() {
    let case = synced();
    let reg = &case.reg;
    let old_targets = std::fs::read(reg.path().join("1.targets.json")).unwrap();
    let snapshot = reg.forge(
        "2.snapshot.json",
        "3.snapshot.json",
        &[&reg.keys.snapshot],
        |s| {
            bump(s);
            s["meta"]["targets.json"]["version"] = json!(1);
            bind_meta(&mut s["meta"]["targets.json"], &old_targets);
        },
    );
    reg.resign("timestamp.json", &[&reg.keys.timestamp], |s| {
        bump(s);
        s["meta"]["snapshot.json"]["version"] = json!(3);
        bind_meta(&mut s["meta"]["snapshot.json"], &snapshot);
    });
    let e = case.refused();
    assert!(
        matches!(
            e,
            TufError::Rollback {
                role: Role::Targets,
                trusted: 2,
                offered: 1
            }
        ),
        "{e}"
    );
    case.honest_update_still_works();
}

#[test]
fn the_last_timestamp_replayed_past_its_expiry_is_refused_as_a_freeze() {
    let case = synced();
    // Nothing new is published: the mirror keeps serving the timestamp the client has.
    let e = case.refused_with(&mut case.reg.fetch(), &Limits::default(), days(now(), 2));
    assert!(
        matches!(
            e,
            TufError::Expired {
                role: Role::Timestamp,
                ..
            }
        ),
        "{e}"
    );
    assert_eq!(e.kind(), "expired");
    case.honest_update_still_works();
}

#[test]
fn a_new_timestamp_already_expired_is_refused() {
    let case = synced();
    case.reg
        .resign("timestamp.json", &[&case.reg.keys.timestamp], |s| {
            bump(s);
            s["expires"] = past();
        });
    let e = case.refused();
    assert!(
        matches!(
            e,
            TufError::Expired {
                role: Role::Timestamp,
                ..
            }
        ),
        "{e}"
    );
    case.honest_update_still_works();
}

#[test]
fn an_expired_snapshot_is_refused() {
    let case = synced();
    let (snapshot, _) = case.reg.current_files();
    case.reg.resign(&snapshot, &[&case.reg.keys.snapshot], |s| {
        s["expires"] = past()
    });
    case.reg.rebind();
    let e = case.refused();
    assert!(
        matches!(
            e,
            TufError::Expired {
                role: Role::Snapshot,
                ..
            }
        ),
        "{e}"
    );
    case.honest_update_still_works();
}

#[test]
fn expired_targets_are_refused() {
    let case = synced();
    let (_, targets) = case.reg.current_files();
    case.reg.resign(&targets, &[&case.reg.keys.targets], |s| {
        s["expires"] = past()
    });
    case.reg.rebind();
    let e = case.refused();
    assert!(
        matches!(
            e,
            TufError::Expired {
                role: Role::Targets,
                ..
            }
        ),
        "{e}"
    );
    case.honest_update_still_works();
}

#[test]
fn an_expired_root_is_refused_before_anything_else_is_fetched() {
    let case = synced();
    let e = case.refused_with(&mut case.reg.fetch(), &Limits::default(), days(now(), 400));
    assert!(
        matches!(
            e,
            TufError::Expired {
                role: Role::Root,
                ..
            }
        ),
        "{e}"
    );
    case.honest_update_still_works();
}

#[test]
fn older_targets_under_a_snapshot_naming_a_newer_version_are_refused_as_mix_and_match() {
    let case = synced().moved_on();
    let reg = &case.reg;
    // Like python-tuf's default, a snapshot naming versions only: the version must bind.
    let bytes = reg.resign("3.snapshot.json", &[&reg.keys.snapshot], |s| {
        let meta = s["meta"]["targets.json"].as_object_mut().unwrap();
        meta.remove("hashes");
        meta.remove("length");
    });
    reg.write_raw("snapshot.json", &bytes);
    reg.resign("timestamp.json", &[&reg.keys.timestamp], |s| {
        bump(s);
        bind_meta(&mut s["meta"]["snapshot.json"], &bytes);
    });
    let older = std::fs::read(reg.path().join("2.targets.json")).unwrap();
    reg.write_raw("3.targets.json", &older);
    let e = case.refused();
    assert!(
        matches!(&e, TufError::SnapshotMismatch { detail } if detail.contains("version 2")),
        "{e}"
    );
    assert_eq!(e.kind(), "mix-and-match");
    case.honest_update_still_works();
}

#[test]
fn targets_whose_length_or_hash_differs_from_the_snapshot_are_refused() {
    let case = synced().moved_on();
    let older = std::fs::read(case.reg.path().join("2.targets.json")).unwrap();
    case.reg.write_raw("3.targets.json", &older);
    let e = case.refused();
    assert!(matches!(e, TufError::SnapshotMismatch { .. }), "{e}");
    case.honest_update_still_works();
}

#[test]
fn a_snapshot_whose_hash_differs_from_the_timestamp_is_refused() {
    let case = synced().moved_on();
    let mut other = std::fs::read(case.reg.path().join("3.snapshot.json")).unwrap();
    // Same length, one hex digit of its signature changed: only the hash can tell.
    let at = other.windows(7).position(|w| w == b"\"sig\":\"").unwrap() + 7;
    other[at] = if other[at] == b'0' { b'1' } else { b'0' };
    case.reg.write_raw("3.snapshot.json", &other);
    let e = case.refused();
    assert!(
        matches!(&e, TufError::TimestampMismatch { detail } if detail.contains("sha256")),
        "{e}"
    );
    case.honest_update_still_works();
}

#[test]
fn a_timestamp_signed_by_a_key_root_does_not_list_is_refused() {
    let case = synced();
    let stranger = KeyPair::generate();
    case.reg.resign("timestamp.json", &[&stranger], bump);
    let e = case.refused();
    assert!(
        matches!(&e, TufError::UnknownKey { role: Role::Timestamp, key_id } if *key_id == stranger.public().key_id()),
        "{e}"
    );
    assert_eq!(e.kind(), "unknown-key");
    case.honest_update_still_works();
}

#[test]
fn one_key_signing_twice_does_not_meet_a_threshold_of_two() {
    let case = synced_from(Registry::with_targets_threshold(now(), 3, 2));
    let (_, targets) = case.reg.current_files();
    let k = &case.reg.keys.targets;
    let mut doc = case.reg.read(&targets);
    doc = signed_doc(&doc["signed"], &[k, k]);
    case.reg.write(&targets, &doc);
    case.reg.rebind();
    let e = case.refused();
    assert!(
        matches!(
            e,
            TufError::Threshold {
                role: Role::Targets,
                valid: 1,
                needed: 2
            }
        ),
        "{e}"
    );
    assert_eq!(e.kind(), "threshold");
    case.honest_update_still_works();
}

fn edit_signature(case: &Case, edit: impl FnOnce(&mut String)) -> TufError {
    let mut doc = case.reg.read("timestamp.json");
    bump(&mut doc["signed"]);
    doc = signed_doc(&doc["signed"], &[&case.reg.keys.timestamp]);
    let mut sig = doc["signatures"][0]["sig"].as_str().unwrap().to_string();
    edit(&mut sig);
    doc["signatures"][0]["sig"] = json!(sig);
    case.reg.write("timestamp.json", &doc);
    case.refused()
}

#[test]
fn a_truncated_signature_is_refused() {
    let case = synced();
    let e = edit_signature(&case, |s| s.truncate(testkit::names::random_in(2..126)));
    assert!(
        matches!(
            e,
            TufError::BadSignature {
                role: Role::Timestamp,
                ..
            }
        ),
        "{e}"
    );
    assert_eq!(e.kind(), "signature");
    case.honest_update_still_works();
}

#[test]
fn a_signature_with_one_bit_flipped_is_refused() {
    let case = synced();
    let at = testkit::names::random_in(0..128);
    let e = edit_signature(&case, |s| {
        let flipped = u8::from_str_radix(&s[at..at + 1], 16).unwrap() ^ 1;
        s.replace_range(at..at + 1, &format!("{flipped:x}"));
    });
    assert!(
        matches!(
            e,
            TufError::BadSignature {
                role: Role::Timestamp,
                ..
            }
        ),
        "{e}"
    );
    case.honest_update_still_works();
}

/// Version 2 of root handing the root role to `new`, signed by `signers`.
fn rotate_by_hand(case: &Case, new: &KeyPair, signers: &[&KeyPair]) {
    let id = new.public().key_id();
    case.reg.forge("1.root.json", "2.root.json", signers, |s| {
        bump(s);
        s["keys"][&id] = new.public().to_json();
        s["roles"]["root"]["keyids"] = json!([id]);
    });
}

#[test]
fn a_root_rotation_signed_only_by_the_new_keys_is_refused() {
    let case = synced();
    let new = KeyPair::generate();
    rotate_by_hand(&case, &new, &[&new]);
    let e = case.refused();
    assert!(
        matches!(e, TufError::RotationThreshold { version: 2, .. }),
        "{e}"
    );
    assert_eq!(e.kind(), "rotation");
    case.honest_update_still_works();
}

#[test]
fn a_root_rotation_signed_only_by_the_old_keys_is_refused() {
    let case = synced();
    let new = KeyPair::generate();
    rotate_by_hand(&case, &new, &[&case.reg.keys.root]);
    let e = case.refused();
    assert!(
        matches!(&e, TufError::RotationThreshold { version: 2, detail } if detail.contains("its own")),
        "{e}"
    );
    case.honest_update_still_works();
}

/// Replaces the first `from` in the role file with `to`, byte for byte.
fn splice(case: &Case, file: &str, from: &str, to: &str) {
    let text = String::from_utf8(std::fs::read(case.reg.path().join(file)).unwrap()).unwrap();
    assert!(text.contains(from), "{file} has no {from}");
    case.reg
        .write_raw(file, text.replacen(from, to, 1).as_bytes());
}

fn assert_duplicate(e: TufError, role: Role, key: &str) {
    assert!(
        matches!(&e, TufError::DuplicateKey { role: r, key: k } if *r == role && k == key),
        "{e}"
    );
    assert_eq!(e.kind(), "duplicate-key");
}

#[test]
fn a_key_repeated_in_signed_is_refused() {
    let case = synced();
    case.reg
        .resign("timestamp.json", &[&case.reg.keys.timestamp], bump);
    splice(
        &case,
        "timestamp.json",
        "\"signed\":{",
        "\"signed\":{\"version\":99,",
    );
    assert_duplicate(case.refused(), Role::Timestamp, "version");
    case.honest_update_still_works();
}

#[test]
fn a_key_repeated_in_a_signature_is_refused() {
    let case = synced();
    case.reg
        .resign("timestamp.json", &[&case.reg.keys.timestamp], bump);
    splice(
        &case,
        "timestamp.json",
        "\"sig\":",
        "\"sig\":\"00\",\"sig\":",
    );
    assert_duplicate(case.refused(), Role::Timestamp, "sig");
    case.honest_update_still_works();
}

#[test]
fn a_key_repeated_deep_inside_a_targets_custom_value_is_refused() {
    let case = synced();
    let (_, targets) = case.reg.current_files();
    let shadow = random_name(10);
    splice(
        &case,
        &targets,
        "\"gigmcp\":{",
        &format!("\"gigmcp\":{{\"description\":\"{shadow}\","),
    );
    case.reg.rebind();
    assert_duplicate(case.refused(), Role::Targets, "description");
    case.honest_update_still_works();
}

#[test]
fn a_fetch_that_reports_a_file_too_large_is_refused_as_too_large() {
    let case = synced();
    let mut fetch = TooLargeFor(case.reg.fetch(), "timestamp.json");
    let e = case.refused_with(&mut fetch, &Limits::default(), now());
    assert!(
        matches!(e, TufError::TooLarge { role: Role::Timestamp, max } if max == Limits::default().timestamp),
        "{e}"
    );
    assert_eq!(e.kind(), "too-large");
    case.honest_update_still_works();
}

#[test]
fn a_file_in_a_directory_larger_than_its_limit_is_refused() {
    let case = synced().moved_on();
    let limits = Limits {
        targets: 200,
        ..Limits::default()
    };
    let e = case.refused_with(&mut case.reg.fetch(), &limits, now());
    assert!(
        matches!(
            e,
            TufError::TooLarge {
                role: Role::Targets,
                max: 200
            }
        ),
        "{e}"
    );
    case.honest_update_still_works();
}

#[test]
fn an_endless_root_is_refused_at_the_cap_having_read_no_more() {
    let case = synced();
    let mut fetch = Endless::new(case.reg.fetch(), "2.root.json");
    let limits = Limits::default();
    let e = case.refused_with(&mut fetch, &limits, now());
    assert!(
        matches!(
            e,
            TufError::TooLarge {
                role: Role::Root,
                ..
            }
        ),
        "{e}"
    );
    assert!(fetch.read <= limits.root + 1, "read {} bytes", fetch.read);
    case.honest_update_still_works();
}

#[test]
fn an_endless_timestamp_is_refused_at_the_cap_having_read_no_more() {
    let case = synced();
    let mut fetch = Endless::new(case.reg.fetch(), "timestamp.json");
    let e = case.refused_with(&mut fetch, &Limits::default(), now());
    assert!(
        matches!(
            e,
            TufError::TooLarge {
                role: Role::Timestamp,
                ..
            }
        ),
        "{e}"
    );
    assert!(fetch.read <= Limits::default().timestamp + 1);
    case.honest_update_still_works();
}

#[test]
fn targets_with_delegations_are_refused_as_unsupported() {
    let case = synced();
    let (_, targets) = case.reg.current_files();
    case.reg.resign(&targets, &[&case.reg.keys.targets], |s| {
        s["delegations"] = json!({"keys": {}, "roles": [{"name": random_name(6)}]});
    });
    case.reg.rebind();
    let e = case.refused();
    assert!(
        matches!(
            e,
            TufError::Unsupported {
                role: Role::Targets,
                ..
            }
        ),
        "{e}"
    );
    assert_eq!(e.kind(), "unsupported");
    case.honest_update_still_works();
}

#[test]
fn a_snapshot_served_as_the_timestamp_is_refused_for_its_type() {
    let case = synced();
    let (snapshot, _) = case.reg.current_files();
    let bytes = std::fs::read(case.reg.path().join(snapshot)).unwrap();
    case.reg.write_raw("timestamp.json", &bytes);
    let e = case.refused();
    assert!(
        matches!(&e, TufError::WrongType { role: Role::Timestamp, expected: "timestamp", found } if found == "snapshot"),
        "{e}"
    );
    case.honest_update_still_works();
}
