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

// ---- Review (review-tuf): attacks found by the security review. ----

/// A /proc/self/status field in KiB ("VmHWM:" the peak resident size, "VmRSS:" the current).
fn kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// A repository as python-tuf writes it by default: the snapshot names targets.json by version
/// only (no length, no hashes), so the targets file is bound by its signature alone and a
/// mirror may serve anything up to the targets cap. Returns the targets file name.
fn python_style(reg: &Registry) -> String {
    let (snapshot, targets) = reg.current_files();
    let bytes = reg.resign(&snapshot, &[&reg.keys.snapshot], |s| {
        let m = s["meta"]["targets.json"].as_object_mut().unwrap();
        m.remove("length");
        m.remove("hashes");
    });
    reg.write_raw("snapshot.json", &bytes);
    reg.resign("timestamp.json", &[&reg.keys.timestamp], |s| {
        bump(s);
        bind_meta(&mut s["meta"]["snapshot.json"], &bytes)
    });
    tuf::update(&reg.pinned(), &mut reg.fetch(), &Limits::default(), now())
        .expect("the honest python-style repository updates");
    targets
}

/// A hostile mirror (no keys) serves targets whose `signed` is 1 MiB and which carry 3,000
/// well-formed signatures under the trusted targets key id. Each one is an ed25519 check that
/// hashes the whole 1 MiB message: 3 GB of SHA-512 and 3,000 point operations for one sync,
/// 1.6 TB within the 32 MiB cap. python-tuf checks each trusted key once.
#[test]
fn many_signatures_under_one_trusted_key_id_are_checked_once() {
    let mut reg = Registry::new(now());
    reg.add(&random_path(), json!({}));
    reg.publish(now());
    let targets = python_style(&reg);
    let k = &reg.keys.targets;
    let mut doc = reg.read(&targets);
    doc["signed"]["x-pad"] = json!("a".repeat(1 << 20));
    let other = k.signature(&json!({"unrelated": true}));
    doc["signatures"] = Value::Array(vec![other; 3000]);
    reg.write(&targets, &doc);
    let started = std::time::Instant::now();
    let e = tuf::update(&reg.pinned(), &mut reg.fetch(), &Limits::default(), now())
        .expect_err("the forged targets are refused");
    let took = started.elapsed();
    assert!(
        matches!(
            e,
            TufError::BadSignature {
                role: Role::Targets,
                ..
            }
        ),
        "{e}"
    );
    assert!(
        took < std::time::Duration::from_secs(3),
        "3,000 signatures by one key id took {took:?}: each was checked"
    );
}

/// A hostile mirror serves 8 MiB of targets whose unknown field is an array of tiny objects
/// (`{"":0}`, 7 bytes each): every one becomes a BTreeMap leaf of ~630 bytes, about 90 times
/// its size in heap (~20 times in resident memory), before any signature is looked at: 32 MiB
/// under the default cap is ~700 MB resident, ~3 GB of allocations.
#[test]
fn tiny_objects_do_not_amplify_memory_before_the_signature_check() {
    let mut reg = Registry::new(now());
    reg.add(&random_path(), json!({}));
    reg.publish(now());
    let targets = python_style(&reg);
    let mut doc = reg.read(&targets);
    let n = (8 << 20) / 7;
    doc["signed"]["x-pad"] = Value::Array(vec![json!({"": 0}); n]);
    reg.write(&targets, &doc);
    let size = std::fs::metadata(reg.path().join(&targets)).unwrap().len() as usize;
    drop(doc);
    // Resets the peak to the current size (Linux: clear_refs 5), so other tests' peaks before
    // do not hide this one's.
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let before = kib("VmHWM:");
    let e = tuf::update(&reg.pinned(), &mut reg.fetch(), &Limits::default(), now())
        .expect_err("the forged targets are refused");
    let peak = (kib("VmHWM:").saturating_sub(before) * 1024) as usize;
    println!("targets {size} bytes: peak heap growth {peak} bytes");
    assert!(matches!(e, TufError::BadSignature { .. }), "{e}");
    assert!(
        peak < 10 * size,
        "a {size}-byte targets file took {peak} bytes of heap ({}x) before it was refused",
        peak / size
    );
}

/// A root at version u64::MAX (check_root accepts it; its keys' holder or a typo in a
/// hand-written root): the next root's file name is computed with `+ 1`, which panics in a
/// debug build and wraps to "0.root.json" in release.
#[test]
fn a_root_at_the_last_version_does_not_overflow() {
    let mut reg = Registry::new(now());
    reg.publish(now());
    let root = reg.forge("1.root.json", "max.root.json", &[&reg.keys.root], |s| {
        s["version"] = json!(u64::MAX)
    });
    tuf::check_root(&root, &Limits::default(), now()).expect("a valid root to pin");
    let stored = tuf::Stored {
        root,
        ..Default::default()
    };
    let got = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        tuf::update(&stored, &mut reg.fetch(), &Limits::default(), now()).map(|u| u.versions)
    }));
    let got = got.expect("update does not panic on the last root version");
    assert_eq!(got.expect("nothing else is wrong").root, u64::MAX);
}

/// The author publishes regularly, but no target changes for 100 days: `publish` signs only a
/// new timestamp, so the snapshot (7 days) and targets (90 days) it keeps naming have expired
/// and every client refuses the repository as frozen.
#[test]
fn a_publish_with_nothing_changed_renews_expiring_snapshot_and_targets() {
    let t0 = now();
    let mut reg = Registry::new(t0);
    reg.add(&random_path(), json!({}));
    reg.publish(t0);
    let later = days(t0, 100);
    reg.publish(later);
    let up = tuf::update(&reg.pinned(), &mut reg.fetch(), &Limits::default(), later);
    assert!(up.is_ok(), "{}", up.unwrap_err());
}

/// Whoever can write the author's metadata directory (a pull request to a registry whose CI
/// opens the repository it checked out, another user of a shared work tree) adds a target to
/// targets.json without any key. `Repo::open` stages the file's entries unverified and the next
/// `publish`, seeing a targets file that does not verify, signs the injected entry with the
/// real keys: clients then install it as genuine.
#[test]
fn repo_open_does_not_sign_entries_injected_into_its_directory() {
    let mut reg = Registry::new(now());
    reg.add(&random_path(), json!({}));
    reg.publish(now());
    let mut doc = reg.read("targets.json");
    doc["signed"]["targets"]["evil/6.6.6"] = json!({
        "length": 1, "hashes": {"sha256": "00".repeat(32)}, "custom": {"injected": true}
    });
    reg.write("targets.json", &doc);
    let opened = tuf::Repo::open(reg.path());
    if let Ok(mut repo) = opened {
        let signers: Vec<&KeyPair> = reg.keys.all().to_vec();
        if repo
            .publish(&signers, tuf::Expiry::default(), now())
            .is_ok()
        {
            let up = tuf::update(&reg.pinned(), &mut reg.fetch(), &Limits::default(), now())
                .expect("the repository updates");
            assert!(
                !up.targets.entries.contains_key("evil/6.6.6"),
                "an entry nobody signed was published under the targets key"
            );
        }
    }
}
