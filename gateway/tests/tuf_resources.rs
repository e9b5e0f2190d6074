//! Resource attacks on the TUF client and the author's repository: a signature flood under one
//! trusted key id, tiny objects amplifying memory before any signature is checked, a root at
//! the last version, a repository that would freeze itself, entries injected into an author's
//! directory. Each asserts the exact outcome; names and values are random.

use std::time::SystemTime;

use gateway::tuf::{self, KeyPair, Limits, Role, TufError};
use serde_json::{Value, json};
use testkit::tuf::{Registry, bind_meta, days, random_path};

fn now() -> SystemTime {
    SystemTime::now()
}

/// Set in the child process `tiny_objects_do_not_amplify_memory_before_the_signature_check`
/// starts: the repository directory to update from.
const CHILD_DIR: &str = "GIGMCP_TEST_TUF_CHILD_DIR";

fn bump(s: &mut Value) {
    s["version"] = json!(s["version"].as_u64().unwrap() + 1);
}

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
    // The update runs in a fresh process (this test binary again, this test only): in this one
    // the forged file's own construction has grown the heap already, so its peak would hide
    // the update's (freed pages are reused without raising VmHWM).
    if let Some(dir) = std::env::var_os(CHILD_DIR) {
        let dir = std::path::PathBuf::from(dir);
        let stored = tuf::Stored {
            root: std::fs::read(dir.join("1.root.json")).unwrap(),
            ..tuf::Stored::default()
        };
        let before = kib("VmHWM:");
        let e = tuf::update(
            &stored,
            &mut tuf::DirFetch::new(&dir),
            &Limits::default(),
            now(),
        )
        .expect_err("the forged targets are refused");
        let peak = kib("VmHWM:").saturating_sub(before);
        println!("child: refused={} peak_kib={peak}", e.kind());
        return;
    }
    let mut reg = Registry::new(now());
    reg.add(&random_path(), json!({}));
    reg.publish(now());
    let targets = python_style(&reg);
    let mut doc = reg.read(&targets);
    let n = (8 << 20) / 7;
    doc["signed"]["x-pad"] = Value::Array(vec![json!({"": 0}); n]);
    reg.write(&targets, &doc);
    let size = std::fs::metadata(reg.path().join(&targets)).unwrap().len();
    drop(doc);
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "tiny_objects_do_not_amplify_memory_before_the_signature_check",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_DIR, reg.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "child: {stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = stdout
        .lines()
        .find_map(|l| l.split_once("child: ").map(|(_, r)| r))
        .unwrap_or_else(|| panic!("no child report in {stdout}"));
    println!("targets {size} bytes: {line}");
    // A forgery (no key signs it) is refused on its signature, the container budget keeping the
    // peak near the file's own size (before the budget: ~40x, 327 MB for this 8 MiB file).
    assert!(line.starts_with("refused=signature "), "{line}");
    let peak: u64 = line.rsplit('=').next().unwrap().parse().unwrap();
    assert!(
        peak * 1024 < 6 * size,
        "a {size}-byte targets file took {peak} KiB at peak ({}x) before it was refused",
        peak * 1024 / size
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
