//! The vault through the real `gigmcp` binary and a real SQLite file: round trips, tampering,
//! rotation (including SIGKILL mid-rotation) and concurrent writers.

use testkit::env as common;

use std::collections::HashMap;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{TestEnv, contains, random_hex, text};
use gateway::vault::{SecretName, SecretValue, VaultError};

fn name(s: &str) -> SecretName {
    SecretName::parse(s).unwrap()
}

/// Sets `n` secrets with random values through the library; returns name → value.
fn fill(env: &TestEnv, n: usize) -> HashMap<String, String> {
    let vault = env.vault();
    let mut all = HashMap::new();
    for i in 0..n {
        let (k, v) = (format!("SECRET_{i:04}"), format!("sv-{}", random_hex(20)));
        vault
            .set(&name(&k), &SecretValue::from(v.as_bytes()))
            .unwrap();
        all.insert(k, v);
    }
    all
}

#[test]
fn round_trip_of_1000_secrets_never_shows_a_value() {
    let env = TestEnv::new();
    let mut all = fill(&env, 1000);

    // Through the CLI too: from stdin (trailing newline dropped) and from a file (verbatim).
    let stdin_value = format!("stdin-{}", random_hex(16));
    let out = env.cli(
        &["secret", "set", "FROM_STDIN"],
        format!("{stdin_value}\n").as_bytes(),
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("created secret FROM_STDIN (version 1)"));
    all.insert("FROM_STDIN".into(), stdin_value);
    let file_value = format!("file-{}\n", random_hex(16));
    let file = env.dir.path().join("value.txt");
    std::fs::write(&file, &file_value).unwrap();
    let out = env.cli(
        &[
            "secret",
            "set",
            "FROM_FILE",
            "--from-file",
            file.to_str().unwrap(),
        ],
        b"",
    );
    assert!(out.status.success(), "{}", text(&out));
    std::fs::remove_file(&file).unwrap();
    all.insert("FROM_FILE".into(), file_value);

    // Every value comes back exactly, from a freshly opened store.
    let vault = env.vault();
    for (k, v) in &all {
        assert_eq!(vault.get(&name(k)).unwrap().expose(), v.as_bytes(), "{k}");
    }

    // `secret list` names every secret and prints no value.
    let out = env.cli(&["secret", "list"], b"");
    assert!(out.status.success(), "{}", text(&out));
    let listing = text(&out);
    assert_eq!(
        listing.lines().count(),
        all.len() + 1,
        "one line per secret plus header"
    );
    for (k, v) in &all {
        assert!(listing.contains(k.as_str()), "{k} missing from list");
        assert!(
            !listing.contains(v.trim_end()),
            "list printed the value of {k}"
        );
    }
    let out = env.cli(&["vault", "status"], b"");
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains(&format!("secrets: {}", all.len())));

    // No plaintext anywhere in the state directory: database, WAL, shared memory.
    let files = env.state_files();
    assert!(files.iter().any(|(p, _)| p.ends_with("gigmcp.db")));
    for (path, bytes) in &files {
        for (k, v) in &all {
            assert!(
                !contains(bytes, v.trim_end().as_bytes()),
                "value of {k} found in {}",
                path.display()
            );
        }
    }
}

#[test]
fn a_value_never_goes_on_the_command_line_or_in_errors() {
    let env = TestEnv::new();
    // There is no argv form for a value: an extra argument is a usage error.
    let out = env.cli(&["secret", "set", "X", "the-value"], b"");
    assert!(!out.status.success());
    // An over-long value is refused with its size, not its content.
    let big = "z".repeat(70 * 1024);
    let out = env.cli(&["secret", "set", "BIG"], big.as_bytes());
    assert!(!out.status.success());
    assert!(text(&out).contains("limit"), "{}", text(&out));
    assert!(!text(&out).contains("zzzz"), "{}", text(&out));
    // A pasted value as a name is refused without echoing it.
    let out = env.cli(&["secret", "set", "ghp/0123456789abcdefSECRETTAIL"], b"v");
    assert!(!out.status.success());
    assert!(!text(&out).contains("SECRETTAIL"), "{}", text(&out));
}

/// Applies `sql` to the database behind the vault's back.
fn tamper(env: &TestEnv, sql: &str) {
    let conn = rusqlite::Connection::open(env.db_path()).unwrap();
    conn.execute_batch(sql).unwrap();
}

fn status_fails_naming(env: &TestEnv, secret: &str, reason: &str) {
    let out = env.cli(&["vault", "status"], b"");
    let shown = text(&out);
    assert!(
        !out.status.success(),
        "status passed after tampering: {shown}"
    );
    assert!(
        shown.contains(&format!("DAMAGED: secret {secret}: {reason}")),
        "{shown}"
    );
    let err = env.vault().get(&name(secret)).unwrap_err();
    assert!(
        matches!(&err, VaultError::Secret { name, .. } if name == secret),
        "{err}"
    );
    assert!(err.to_string().contains(reason), "{err}");
}

fn tamper_env() -> TestEnv {
    let env = TestEnv::new();
    let vault = env.vault();
    for (k, v) in [
        ("ALPHA", "alpha-value"),
        ("BRAVO", "bravo-value"),
        ("CHARLIE", "c"),
    ] {
        vault
            .set(&name(k), &SecretValue::from(v.as_bytes()))
            .unwrap();
    }
    env
}

/// Flips the lowest bit of byte `i` (0-based) of blob column `col` of secret `who`.
fn flip_byte(env: &TestEnv, col: &str, who: &str, i: usize) {
    let conn = rusqlite::Connection::open(env.db_path()).unwrap();
    let mut blob: Vec<u8> = conn
        .query_row(
            &format!("SELECT {col} FROM secrets WHERE name = ?1"),
            [who],
            |r| r.get(0),
        )
        .unwrap();
    blob[i] ^= 0x01;
    let n = conn
        .execute(
            &format!("UPDATE secrets SET {col} = ?2 WHERE name = ?1"),
            rusqlite::params![who, blob],
        )
        .unwrap();
    assert_eq!(n, 1);
}

#[test]
fn flipped_byte_in_sealed_value_is_caught() {
    let env = tamper_env();
    let before = std::fs::read(env.db_path()).unwrap();
    flip_byte(&env, "value_ct", "BRAVO", 2);
    assert_ne!(before, std::fs::read(env.db_path()).unwrap());
    status_fails_naming(&env, "BRAVO", "sealed value failed authentication");
    // The others are unaffected.
    assert_eq!(
        env.vault().get(&name("ALPHA")).unwrap().expose(),
        b"alpha-value"
    );
}

#[test]
fn flipped_byte_in_value_nonce_is_caught() {
    let env = tamper_env();
    flip_byte(&env, "value_nonce", "ALPHA", 23);
    status_fails_naming(&env, "ALPHA", "sealed value failed authentication");
}

#[test]
fn flipped_byte_in_wrapped_data_key_is_caught() {
    let env = tamper_env();
    flip_byte(&env, "wrapped_key", "CHARLIE", 0);
    status_fails_naming(&env, "CHARLIE", "data key failed authentication");
}

#[test]
fn flipped_byte_in_data_key_nonce_is_caught() {
    let env = tamper_env();
    flip_byte(&env, "key_nonce", "CHARLIE", 9);
    status_fails_naming(&env, "CHARLIE", "data key failed authentication");
}

#[test]
fn swapped_sealed_values_are_caught() {
    let env = tamper_env();
    tamper(
        &env,
        "CREATE TEMP TABLE t AS SELECT name, value_nonce, value_ct FROM secrets;
         UPDATE secrets SET
           value_nonce = (SELECT value_nonce FROM t WHERE t.name = CASE secrets.name WHEN 'ALPHA' THEN 'BRAVO' ELSE 'ALPHA' END),
           value_ct    = (SELECT value_ct    FROM t WHERE t.name = CASE secrets.name WHEN 'ALPHA' THEN 'BRAVO' ELSE 'ALPHA' END)
         WHERE name IN ('ALPHA', 'BRAVO');",
    );
    status_fails_naming(&env, "ALPHA", "sealed value failed authentication");
    status_fails_naming(&env, "BRAVO", "sealed value failed authentication");
}

#[test]
fn swapped_whole_envelopes_are_caught() {
    // Swapping every crypto column (value and data key) between rows still fails: the data
    // key's associated data binds it to the row's id.
    let env = tamper_env();
    tamper(
        &env,
        "CREATE TEMP TABLE t AS SELECT * FROM secrets;
         UPDATE secrets SET
           value_nonce = (SELECT value_nonce FROM t WHERE t.name = CASE secrets.name WHEN 'ALPHA' THEN 'BRAVO' ELSE 'ALPHA' END),
           value_ct    = (SELECT value_ct    FROM t WHERE t.name = CASE secrets.name WHEN 'ALPHA' THEN 'BRAVO' ELSE 'ALPHA' END),
           key_nonce   = (SELECT key_nonce   FROM t WHERE t.name = CASE secrets.name WHEN 'ALPHA' THEN 'BRAVO' ELSE 'ALPHA' END),
           wrapped_key = (SELECT wrapped_key FROM t WHERE t.name = CASE secrets.name WHEN 'ALPHA' THEN 'BRAVO' ELSE 'ALPHA' END)
         WHERE name IN ('ALPHA', 'BRAVO');",
    );
    status_fails_naming(&env, "ALPHA", "data key failed authentication");
}

#[test]
fn wrong_master_key_is_refused_before_any_secret_is_touched() {
    let env = tamper_env();
    let secrets_before = dump_secrets(&env);
    let wrong = env.other_key("wrong.key");
    for args in [
        &["vault", "status"][..],
        &["secret", "list"],
        &["secret", "rm", "ALPHA"],
    ] {
        let out = env.cli_with_key(&wrong, args, b"");
        assert!(!out.status.success(), "{args:?} passed with the wrong key");
        assert!(text(&out).contains("is not this store's"), "{}", text(&out));
    }
    let out = env.cli_with_key(&wrong, &["secret", "set", "DELTA"], b"d");
    assert!(!out.status.success());
    assert_eq!(
        dump_secrets(&env),
        secrets_before,
        "a refused key changed secrets"
    );
    // The refusal is audited.
    let denied = env
        .store()
        .audit_recent(20)
        .unwrap()
        .into_iter()
        .filter(|e| e.action == "vault.open" && e.outcome == "denied")
        .count();
    assert_eq!(denied, 4);
}

#[test]
fn row_wrapped_by_another_key_is_named() {
    let env = tamper_env();
    tamper(
        &env,
        "UPDATE secrets SET master_fp = '00112233445566778899aabbccddeeff' WHERE name = 'BRAVO'",
    );
    status_fails_naming(
        &env,
        "BRAVO",
        "wrapped by master key 00112233445566778899aabbccddeeff",
    );
}

fn dump_secrets(env: &TestEnv) -> Vec<Vec<u8>> {
    let conn = rusqlite::Connection::open(env.db_path()).unwrap();
    let mut stmt = conn
        .prepare("SELECT id || name || version || hex(value_nonce) || hex(value_ct) || hex(key_nonce) || hex(wrapped_key) || master_fp FROM secrets ORDER BY name")
        .unwrap();
    stmt.query_map([], |r| r.get::<_, String>(0))
        .unwrap()
        .map(|r| r.unwrap().into_bytes())
        .collect()
}

#[test]
fn rotation_moves_every_secret_to_the_new_key() {
    let env = TestEnv::new();
    let all = fill(&env, 200);
    let ct_before = ciphertexts(&env);
    let new_key = env.other_key("new.key");
    let out = env.cli(
        &[
            "vault",
            "rotate",
            "--new-master-key-file",
            new_key.to_str().unwrap(),
        ],
        b"",
    );
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        ciphertexts(&env),
        ct_before,
        "rotation touched a sealed value"
    );

    let out = env.cli(&["vault", "status"], b"");
    assert!(!out.status.success(), "old key still accepted");
    assert!(text(&out).contains("is not this store's"));
    let out = env.cli_with_key(&new_key, &["vault", "status"], b"");
    assert!(out.status.success(), "{}", text(&out));
    let vault = gateway::vault::Vault::open(
        env.store(),
        gateway::vault::MasterKey::from_file(&new_key).unwrap(),
    )
    .unwrap();
    for (k, v) in &all {
        assert_eq!(vault.get(&name(k)).unwrap().expose(), v.as_bytes());
    }
}

#[test]
fn rotation_with_a_damaged_secret_changes_nothing() {
    let env = tamper_env();
    flip_byte(&env, "wrapped_key", "BRAVO", 4);
    let before = dump_secrets(&env);
    let new_key = env.other_key("new.key");
    let out = env.cli(
        &[
            "vault",
            "rotate",
            "--new-master-key-file",
            new_key.to_str().unwrap(),
        ],
        b"",
    );
    assert!(!out.status.success());
    assert!(text(&out).contains("secret BRAVO"), "{}", text(&out));
    assert_eq!(dump_secrets(&env), before);
    let out = env.cli_with_key(&new_key, &["secret", "list"], b"");
    assert!(
        !out.status.success(),
        "new key adopted after failed rotation"
    );
}

fn ciphertexts(env: &TestEnv) -> Vec<(String, Vec<u8>, Vec<u8>)> {
    let conn = rusqlite::Connection::open(env.db_path()).unwrap();
    let mut stmt = conn
        .prepare("SELECT name, value_nonce, value_ct FROM secrets ORDER BY name")
        .unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

/// Which key the store answers to after an interrupted rotation: `Some(true)` if every secret
/// opens with the new key only, `Some(false)` if every secret opens with the old key only.
fn rotation_state(env: &TestEnv, new_key: &std::path::Path, all: &HashMap<String, String>) -> bool {
    let old_ok = env.cli(&["vault", "status"], b"");
    let new_ok = env.cli_with_key(new_key, &["vault", "status"], b"");
    assert!(
        old_ok.status.success() != new_ok.status.success(),
        "mixed state: old={} new={}",
        text(&old_ok),
        text(&new_ok)
    );
    let key = if new_ok.status.success() {
        gateway::vault::MasterKey::from_file(new_key).unwrap()
    } else {
        env.key()
    };
    let vault = gateway::vault::Vault::open(env.store(), key).unwrap();
    for (k, v) in all {
        assert_eq!(vault.get(&name(k)).unwrap().expose(), v.as_bytes(), "{k}");
    }
    new_ok.status.success()
}

#[test]
fn rotation_killed_at_any_point_leaves_all_old_or_all_new() {
    const SECRETS: usize = 1500;
    const RUNS: usize = 40;
    let pristine = TestEnv::new();
    let all = fill(&pristine, SECRETS);
    let new_key = pristine.other_key("new.key");

    // Calibrate: how long an uninterrupted rotation takes, process start included.
    let calibrate = TestEnv::new();
    copy_dir(&pristine.state_dir, &calibrate.state_dir);
    std::fs::copy(&pristine.key_file, &calibrate.key_file).unwrap();
    let started = Instant::now();
    let out = calibrate.cli(
        &[
            "vault",
            "rotate",
            "--new-master-key-file",
            new_key.to_str().unwrap(),
        ],
        b"",
    );
    let full = started.elapsed();
    assert!(out.status.success(), "{}", text(&out));

    let (mut old, mut new, mut killed_running) = (0, 0, 0);
    for run in 0..RUNS {
        let env = TestEnv::new();
        copy_dir(&pristine.state_dir, &env.state_dir);
        std::fs::copy(&pristine.key_file, &env.key_file).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_gigmcp"))
            .arg("--state-dir")
            .arg(&env.state_dir)
            .arg("--master-key-file")
            .arg(&env.key_file)
            .args(["vault", "rotate", "--new-master-key-file"])
            .arg(&new_key)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // Kill points spread over [0, 1.2 × the full run], jittered.
        let jitter = u64::from(random_hex(1).as_bytes()[0] % 16);
        let at = full.mul_f64(1.2 * run as f64 / RUNS as f64) + Duration::from_micros(jitter * 100);
        std::thread::sleep(at);
        if child.try_wait().unwrap().is_none() {
            killed_running += 1;
        }
        let _ = child.kill();
        child.wait().unwrap();
        if rotation_state(&env, &new_key, &all) {
            new += 1;
        } else {
            old += 1;
        }
    }
    eprintln!(
        "rotation of {SECRETS} secrets takes {full:?}; {RUNS} kills: {killed_running} while running, {old} left all-old, {new} left all-new"
    );
    assert!(
        killed_running >= RUNS / 2,
        "too few kills landed mid-run: {killed_running}"
    );
}

#[test]
fn two_processes_writing_at_once_lose_nothing() {
    let env = TestEnv::new();
    // Create the store first so both writers find it initialised.
    env.cli(&["secret", "set", "INIT"], b"init");
    const EACH: usize = 60;
    let writers: Vec<_> = (0..2)
        .map(|w| {
            let state = env.state_dir.clone();
            let key = env.key_file.clone();
            std::thread::spawn(move || {
                let mut written = Vec::new();
                for i in 0..EACH {
                    let (k, v) = (
                        format!("W{w}_{i:03}"),
                        format!("value-{w}-{i}-{}", random_hex(8)),
                    );
                    for target in [k.as_str(), "SHARED"] {
                        let out = common::run_with_stdin(
                            Command::new(env!("CARGO_BIN_EXE_gigmcp"))
                                .arg("--state-dir")
                                .arg(&state)
                                .arg("--master-key-file")
                                .arg(&key)
                                .args(["secret", "set", target]),
                            v.as_bytes(),
                        );
                        assert!(out.status.success(), "{}", text(&out));
                    }
                    written.push((k, v));
                }
                written
            })
        })
        .collect();
    let written: Vec<_> = writers
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    let vault = env.vault();
    for (k, v) in &written {
        assert_eq!(vault.get(&name(k)).unwrap().expose(), v.as_bytes(), "{k}");
    }
    let list = vault.list().unwrap();
    assert_eq!(list.len(), 2 * EACH + 2);
    // Every update of the shared name was applied on top of the previous one.
    let shared = list.iter().find(|m| m.name == "SHARED").unwrap();
    assert_eq!(shared.version, 2 * EACH as u64);
    let audited = env
        .store()
        .audit_recent(10_000)
        .unwrap()
        .into_iter()
        .filter(|e| e.action == "secret.set" && e.outcome == "ok")
        .count();
    assert_eq!(audited, 4 * EACH + 1);
}
