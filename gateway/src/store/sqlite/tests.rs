//! The SQLite backend against real files: schema and settings of a fresh store, reopening,
//! file modes, and refusal of databases it must not touch.

use super::*;

fn checksum(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    files.sort();
    files
}

#[test]
fn fresh_store_has_current_schema_and_settings() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open_in(dir.path()).unwrap();
    let conn = store.conn();
    let v: u32 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(v, SCHEMA_VERSION);
    let mode: String = conn
        .pragma_query_value(None, "journal_mode", |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    let fk: i64 = conn
        .pragma_query_value(None, "foreign_keys", |r| r.get(0))
        .unwrap();
    assert_eq!(fk, 1);
    for table in [
        "secrets",
        "servers",
        "endpoints",
        "endpoint_servers",
        "tokens",
        "audit_events",
        "registries",
        "registry_metadata",
    ] {
        let n: i64 = conn
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE type='table' AND name=?1",
                [table],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(n, 1, "missing table {table}");
    }
}

#[test]
fn reopening_is_idempotent_and_keeps_data() {
    let dir = tempfile::tempdir().unwrap();
    let ev = AuditEvent {
        ts_ms: 1,
        actor: "a".into(),
        action: "b".into(),
        target: "c".into(),
        outcome: "ok".into(),
        detail: String::new(),
    };
    SqliteStore::open_in(dir.path())
        .unwrap()
        .audit_append(&ev)
        .unwrap();
    let store = SqliteStore::open_in(dir.path()).unwrap();
    assert_eq!(store.audit_recent(10).unwrap(), vec![ev]);
}

#[test]
fn files_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let store = SqliteStore::open_in(&state).unwrap();
    store.claim_master_fingerprint("x").unwrap();
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&state), 0o700);
    for entry in std::fs::read_dir(&state).unwrap() {
        let p = entry.unwrap().path();
        assert_eq!(mode(&p), 0o600, "{}", p.display());
    }
}

#[test]
fn newer_schema_is_refused_and_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(DB_FILE);
    {
        // A database as a future gigmcp would leave it: WAL, cleanly closed.
        let conn = Connection::open(&path).unwrap();
        conn.pragma_update(None, "journal_mode", "wal").unwrap();
        conn.execute_batch("CREATE TABLE future (x INTEGER); INSERT INTO future VALUES (42);")
            .unwrap();
        conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .unwrap();
    }
    let before = checksum(dir.path());
    let err = SqliteStore::open(&path).unwrap_err();
    assert!(matches!(err, StoreError::NewerSchema { found, .. } if found == SCHEMA_VERSION + 1));
    assert!(err.to_string().contains("nothing was changed"), "{err}");
    assert_eq!(
        checksum(dir.path()),
        before,
        "refused open modified the state dir"
    );
}

#[test]
fn non_database_file_is_refused_and_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(DB_FILE);
    std::fs::write(&path, vec![b'x'; 4096]).unwrap();
    let err = SqliteStore::open(&path).unwrap_err();
    assert!(matches!(err, StoreError::NotADatabase { .. }), "{err}");
    assert_eq!(std::fs::read(&path).unwrap(), vec![b'x'; 4096]);
}

#[test]
fn the_offer_generation_stays_while_only_the_audit_trail_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open_in(dir.path()).unwrap();
    let before = store.offer_generation().unwrap();
    store
        .audit_append(&AuditEvent {
            ts_ms: 1,
            actor: "t".into(),
            action: "a".into(),
            target: "x".into(),
            outcome: "ok".into(),
            detail: String::new(),
        })
        .unwrap();
    assert_eq!(store.offer_generation().unwrap(), before);
}

#[test]
fn the_offer_generation_moves_with_an_endpoint_written_here() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open_in(dir.path()).unwrap();
    let before = store.offer_generation().unwrap();
    store
        .endpoint_add(&EndpointRecord {
            name: "e".into(),
            servers: Vec::new(),
        })
        .unwrap();
    assert_ne!(store.offer_generation().unwrap(), before);
}

#[test]
fn the_offer_generation_moves_with_a_write_from_another_connection() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open_in(dir.path()).unwrap();
    let before = store.offer_generation().unwrap();
    let other = SqliteStore::open_in(dir.path()).unwrap();
    other
        .endpoint_add(&EndpointRecord {
            name: "e".into(),
            servers: Vec::new(),
        })
        .unwrap();
    assert_ne!(store.offer_generation().unwrap(), before);
}
