//! Views against a real store: reused while nothing changes, rebuilt after a change made
//! through this connection or another one (another process, such as the CLI).

use super::*;
use crate::store::{EndpointRecord, ServerRecord, SqliteStore};

fn store(dir: &std::path::Path) -> Arc<dyn Store> {
    Arc::new(SqliteStore::open_in(dir).unwrap())
}

fn install(store: &dyn Store) {
    store
        .server_add(&ServerRecord::unsigned_for_test("s", "/bin/s"))
        .unwrap();
    store
        .endpoint_add(&EndpointRecord {
            name: "e".into(),
            servers: vec![("s".into(), vec!["*".into()])],
        })
        .unwrap();
}

#[test]
fn a_view_is_reused_while_the_store_is_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    install(&*store);
    let views = Views::new(store.clone());
    let first = views.get("e").unwrap();
    assert!(Arc::ptr_eq(&first, &views.get("e").unwrap()));
}

#[test]
fn a_change_through_the_same_store_is_seen_by_the_next_view() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    install(&*store);
    let views = Views::new(store.clone());
    assert!(views.get("e").unwrap().servers[0].descriptions.is_empty());
    store.endpoint_describe("e", "s", "t", "mine").unwrap();
    assert_eq!(views.get("e").unwrap().servers[0].descriptions["t"], "mine");
}

#[test]
fn a_change_from_another_connection_is_seen_by_the_next_view() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    install(&*store);
    let views = Views::new(store.clone());
    assert!(views.get("e").unwrap().servers[0].descriptions.is_empty());
    let cli = SqliteStore::open_in(dir.path()).unwrap();
    cli.endpoint_describe("e", "s", "t", "from the CLI")
        .unwrap();
    assert_eq!(
        views.get("e").unwrap().servers[0].descriptions["t"],
        "from the CLI"
    );
}

#[test]
fn an_unknown_endpoint_has_no_view() {
    let dir = tempfile::tempdir().unwrap();
    let views = Views::new(store(dir.path()));
    assert!(matches!(views.get("nope"), Err(ViewError::NoSuchEndpoint)));
}

/// Another process writing the same file with plain SQL (as a CLI of another version might):
/// only SQLite's `data_version` can tell the gateway's connection.
fn other_process(dir: &std::path::Path) -> rusqlite::Connection {
    let conn = rusqlite::Connection::open(dir.join(crate::store::sqlite::DB_FILE)).unwrap();
    conn.pragma_update(None, "foreign_keys", true).unwrap();
    conn
}

#[test]
fn a_subset_narrowed_by_another_process_is_seen_by_the_next_view() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    install(&*store);
    let views = Views::new(store.clone());
    assert!(views.get("e").unwrap().servers[0].allows("secret_tool"));
    other_process(dir.path())
        .execute(
            "UPDATE endpoint_servers SET tools = '[\"harmless\"]' WHERE endpoint = 'e'",
            [],
        )
        .unwrap();
    let view = views.get("e").unwrap();
    assert!(!view.servers[0].allows("secret_tool"));
    assert!(view.servers[0].allows("harmless"));
}

#[test]
fn a_server_removed_by_another_process_is_gone_from_the_next_view() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    install(&*store);
    let views = Views::new(store.clone());
    assert_eq!(views.get("e").unwrap().servers.len(), 1);
    other_process(dir.path())
        .execute("DELETE FROM servers WHERE name = 's'", [])
        .unwrap();
    assert!(views.get("e").unwrap().servers.is_empty());
}

#[test]
fn an_endpoint_removed_by_another_process_has_no_view_any_more() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    install(&*store);
    let views = Views::new(store.clone());
    views.get("e").unwrap();
    other_process(dir.path())
        .execute("DELETE FROM endpoints WHERE name = 'e'", [])
        .unwrap();
    assert!(matches!(views.get("e"), Err(ViewError::NoSuchEndpoint)));
}

#[test]
fn a_manifest_subset_changed_by_another_process_is_seen_by_the_next_view() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    install(&*store);
    let views = Views::new(store.clone());
    assert!(views.get("e").unwrap().servers[0].allows("secret_tool"));
    let narrowed = serde_json::json!({"name": "s", "version": "1", "command": ["/bin/s"], "tools": ["harmless"]});
    other_process(dir.path())
        .execute(
            "UPDATE servers SET manifest = ?1 WHERE name = 's'",
            [narrowed.to_string()],
        )
        .unwrap();
    assert!(!views.get("e").unwrap().servers[0].allows("secret_tool"));
}
