//! Interoperability with python-tuf, the reference implementation (`tuf` 7 and securesystemslib
//! from PyPI, in `target/mcp-venv`): the proof that our metadata is really TUF. A repository
//! python-tuf writes (with a root rotation) verifies in our `update`; a repository our `Repo`
//! signs verifies in python-tuf's `ngclient.Updater`, which also refuses it once one signature
//! byte is flipped (so the oracle can fail); and our canonical JSON is byte-identical to
//! securesystemslib's `encode_canonical`.
//!
//! Without python-tuf the tests say so and return, unless `CI=true`: there it is a failure.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::SystemTime;

use gateway::tuf::{self, DirFetch, Expiry, KeyPair, Limits, Target, cjson};
use serde_json::{Value, json};
use testkit::names::random_name;
use testkit::tuf::{Registry, random_path, random_target};

fn python() -> Option<PathBuf> {
    let py = testkit::mcp::venv().join("python");
    let present = Command::new(&py)
        .args(["-c", "import tuf.ngclient, securesystemslib.signer"])
        .status()
        .is_ok_and(|s| s.success());
    if present {
        return Some(py);
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "python-tuf is missing from {}: run scripts/install-deps",
        py.display()
    );
    eprintln!(
        "SKIPPED: python-tuf is not installed in {} (run scripts/install-deps)",
        py.display()
    );
    None
}

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/tuf_interop")
        .join(name)
}

fn run(py: &Path, args: &[&Path]) -> (bool, String) {
    let out = Command::new(py).args(args).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Targets as the python scripts read and write them.
fn expected(targets: &[Target]) -> Value {
    let map: serde_json::Map<String, Value> = targets
        .iter()
        .map(|t| {
            let v = json!({"length": t.length, "sha256": t.sha256, "custom": t.custom});
            (t.path.clone(), v)
        })
        .collect();
    Value::Object(map)
}

fn custom() -> Value {
    json!({"gigmcp": {
        "description": format!("{} — “quoted” \"and\" \\ back\nslashed ✓", random_name(8)),
        "manifest": {"egress": [{"host": format!("{}.example.com", random_name(6)), "ports": [443]}],
                     "tools": [], "limits": {"memory_mib": 256}},
    }})
}

#[test]
fn a_repository_python_tuf_writes_with_a_root_rotation_verifies_here() {
    let Some(py) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let targets: Vec<Target> = (0..4)
        .map(|_| random_target(&random_path(), custom()))
        .collect();
    let wanted = dir.path().join("targets.json");
    std::fs::write(&wanted, serde_json::to_vec(&expected(&targets)).unwrap()).unwrap();
    let out = dir.path().join("repo");
    std::fs::create_dir(&out).unwrap();
    let (ok, text) = run(&py, &[&script("make_repo.py"), &out, &wanted]);
    assert!(ok, "make_repo.py: {text}");

    let pinned = tuf::Stored {
        root: std::fs::read(out.join("1.root.json")).unwrap(),
        ..Default::default()
    };
    let up = tuf::update(
        &pinned,
        &mut DirFetch::new(&out),
        &Limits::default(),
        SystemTime::now(),
    )
    .unwrap();
    assert_eq!(
        up.versions.root, 2,
        "the rotation python signed is followed"
    );
    let got: BTreeMap<String, Target> = targets.into_iter().map(|t| (t.path.clone(), t)).collect();
    assert_eq!(up.targets.entries, got);
    tuf::load(&up.stored, &Limits::default()).unwrap();
}

/// A repository our code signs: init, three targets, publish, a root rotation, publish.
fn our_repository() -> (Registry, Vec<Target>) {
    let now = SystemTime::now();
    let mut reg = Registry::new(now);
    let targets: Vec<Target> = (0..3).map(|_| reg.add(&random_path(), custom())).collect();
    reg.publish(now);
    let new_root = KeyPair::generate();
    let mut setup = reg.keys.setup();
    setup.root = (vec![new_root.public()], 1);
    let old = [&reg.keys.root];
    reg.repo
        .rotate_root(&setup, &old, &[&new_root], Expiry::default().root, now)
        .unwrap();
    let signers = [
        &new_root,
        &reg.keys.timestamp,
        &reg.keys.snapshot,
        &reg.keys.targets,
    ];
    reg.repo.publish(&signers, Expiry::default(), now).unwrap();
    (reg, targets)
}

#[test]
fn a_repository_our_code_signs_verifies_in_python_tuf() {
    let Some(py) = python() else { return };
    let (reg, targets) = our_repository();
    let wanted = reg.path().join("expected.json.txt");
    std::fs::write(&wanted, serde_json::to_vec(&expected(&targets)).unwrap()).unwrap();
    let root = reg.path().join("1.root.json");
    let (ok, text) = run(
        &py,
        &[&script("verify_repo.py"), reg.path(), &root, &wanted],
    );
    assert!(ok, "python-tuf refused our repository: {text}");
    assert!(text.contains("verified 3 targets"), "{text}");
}

#[test]
fn python_tuf_refuses_our_repository_with_one_signature_byte_flipped() {
    let Some(py) = python() else { return };
    let (reg, targets) = our_repository();
    let (_, file) = reg.current_files();
    let mut doc = reg.read(&file);
    let sig = doc["signatures"][0]["sig"].as_str().unwrap().to_string();
    let flipped = if sig.starts_with('0') { "1" } else { "0" };
    doc["signatures"][0]["sig"] = json!(format!("{flipped}{}", &sig[1..]));
    reg.write(&file, &doc);
    reg.rebind();
    let wanted = reg.path().join("expected.json.txt");
    std::fs::write(&wanted, serde_json::to_vec(&expected(&targets)).unwrap()).unwrap();
    let root = reg.path().join("1.root.json");
    let (ok, text) = run(
        &py,
        &[&script("verify_repo.py"), reg.path(), &root, &wanted],
    );
    assert!(!ok, "python-tuf accepted a flipped signature: {text}");
    assert!(text.contains("refused: UnsignedMetadataError"), "{text}");
}

#[test]
fn our_canonical_json_is_byte_identical_to_securesystemslib() {
    let Some(py) = python() else { return };
    let values = json!([
        {},
        [],
        "",
        {"b": 1, "a": {"d": [], "c": {}}, "": null, "A": true, "é": false, "😀": 0},
        "quote \" backslash \\ slash / newline \n tab \t nul \u{0} bell \u{7} del \u{7f}",
        "unicode: é ß 中文 \u{2028} \u{feff} 😀 \u{10ffff}",
        {"nested": [[[{"k": [1, -1, 0, 9007199254740993_u64, -9223372036854775808_i64]}]]]},
        [random_name(20), {"x": random_name(5)}, "\u{1f}"],
        {"z": 1, "y": 2, "Z": 3, "aa": 4, "a": 5, "ab": 6, "a\u{0}": 7},
        18446744073709551615_u64,
    ]);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("values.json");
    std::fs::write(&file, serde_json::to_vec(&values).unwrap()).unwrap();
    let (ok, text) = run(&py, &[&script("canonical.py"), &file]);
    assert!(ok, "canonical.py: {text}");
    let theirs: Vec<&str> = text.lines().collect();
    let values = values.as_array().unwrap();
    assert_eq!(theirs.len(), values.len(), "{text}");
    for (value, theirs) in values.iter().zip(theirs) {
        assert_eq!(hex::encode(cjson::to_canonical(value)), theirs, "{value}");
    }
}
