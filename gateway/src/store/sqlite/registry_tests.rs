//! Registries, their metadata and the server writes a registry install needs, against real
//! SQLite files: what is refused is refused with nothing changed.

use super::*;
use crate::store::{RegistryOrigin, RegistryRecord, RoleBody};

fn random(prefix: &str) -> String {
    let mut b = [0u8; 6];
    getrandom::fill(&mut b).unwrap();
    format!("{prefix}{}", hex::encode(b))
}

fn registry(name: &str) -> RegistryRecord {
    RegistryRecord {
        name: name.to_owned(),
        location: format!("https://{name}.example/metadata"),
        pinned_root: random("root-").into_bytes(),
        ca_pem: Some(random("ca-").into_bytes()),
        added_ms: now_ms(),
    }
}

fn body(role: &str, version: u64) -> RoleBody {
    RoleBody {
        role: role.to_owned(),
        version,
        body: random(&format!("{role}-{version}-")).into_bytes(),
    }
}

fn all_roles(version: u64) -> Vec<RoleBody> {
    ["root", "timestamp", "snapshot", "targets"]
        .iter()
        .map(|r| body(r, version))
        .collect()
}

fn registry_server(name: &str, registry: &str, digest: &str) -> ServerRecord {
    ServerRecord {
        image_digest: digest.to_owned(),
        source: "registry".into(),
        origin: Some(RegistryOrigin {
            registry: registry.to_owned(),
            target: format!("{name}/1"),
        }),
        ..ServerRecord::unsigned_for_test(name, "/bin/true")
    }
}

fn open() -> (tempfile::TempDir, SqliteStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open_in(dir.path()).unwrap();
    (dir, store)
}

#[test]
fn a_registry_is_added_listed_got_and_removed() {
    let (_dir, store) = open();
    let (a, b) = (registry(&random("a")), registry(&random("b")));
    assert!(store.registry_add(&a).unwrap());
    assert!(store.registry_add(&b).unwrap());
    assert_eq!(store.registry_get(&a.name).unwrap(), Some(a.clone()));
    let mut want = vec![a.clone(), b.clone()];
    want.sort_by(|x, y| x.name.cmp(&y.name));
    assert_eq!(store.registry_list().unwrap(), want);
    assert!(store.registry_remove(&a.name).unwrap());
    assert!(!store.registry_remove(&a.name).unwrap());
    assert_eq!(store.registry_get(&a.name).unwrap(), None);
    assert_eq!(store.registry_list().unwrap(), vec![b]);
}

#[test]
fn a_taken_registry_name_is_refused_and_the_first_record_kept() {
    let (_dir, store) = open();
    let first = registry(&random("r"));
    let second = RegistryRecord {
        location: "/elsewhere".into(),
        ..registry(&first.name)
    };
    assert!(store.registry_add(&first).unwrap());
    assert!(!store.registry_add(&second).unwrap());
    assert_eq!(store.registry_get(&first.name).unwrap(), Some(first));
}

#[test]
fn a_registry_a_server_came_from_cannot_be_removed() {
    let (_dir, store) = open();
    let r = registry(&random("r"));
    store.registry_add(&r).unwrap();
    store
        .registry_metadata_put(&r.name, &all_roles(1), 5)
        .unwrap();
    let server = random("s");
    assert!(
        store
            .server_add(&registry_server(&server, &r.name, "sha256:aa"))
            .unwrap()
    );
    let before = store.registry_metadata(&r.name).unwrap();
    let err = store.registry_remove(&r.name).unwrap_err();
    assert!(
        matches!(&err, StoreError::InUse { users, .. } if users == &[format!("server {server}")]),
        "{err}"
    );
    assert_eq!(store.registry_get(&r.name).unwrap(), Some(r.clone()));
    assert_eq!(store.registry_metadata(&r.name).unwrap(), before);
}

#[test]
fn removing_a_registry_removes_its_metadata() {
    let (_dir, store) = open();
    let r = registry(&random("r"));
    store.registry_add(&r).unwrap();
    store
        .registry_metadata_put(&r.name, &all_roles(2), 5)
        .unwrap();
    store.registry_remove(&r.name).unwrap();
    let rows: i64 = store
        .conn()
        .query_row("SELECT count(*) FROM registry_metadata", [], |r| r.get(0))
        .unwrap();
    assert_eq!(rows, 0);
}

#[test]
fn metadata_put_replaces_every_role_and_the_sync_time() {
    let (_dir, store) = open();
    let r = registry(&random("r"));
    store.registry_add(&r).unwrap();
    assert_eq!(store.registry_metadata(&r.name).unwrap(), (vec![], None));
    store
        .registry_metadata_put(&r.name, &all_roles(1), 10)
        .unwrap();
    // Equal versions are accepted (a sync that found nothing new), higher ones too.
    let next = vec![
        body("root", 1),
        body("timestamp", 2),
        body("snapshot", 2),
        body("targets", 1),
    ];
    store.registry_metadata_put(&r.name, &next, 20).unwrap();
    assert_eq!(store.registry_metadata(&r.name).unwrap(), (next, Some(20)));
}

#[test]
fn a_role_below_its_stored_version_is_refused_with_nothing_written() {
    let (_dir, store) = open();
    let r = registry(&random("r"));
    store.registry_add(&r).unwrap();
    store
        .registry_metadata_put(&r.name, &all_roles(7), 10)
        .unwrap();
    let before = store.registry_metadata(&r.name).unwrap();
    for role in ["root", "timestamp", "snapshot", "targets"] {
        let offered: Vec<RoleBody> = ["root", "timestamp", "snapshot", "targets"]
            .iter()
            .map(|x| match (*x == role, *x == "root") {
                (true, _) => body(x, 6),
                // Under the same root nothing may go down (a newer root is the next test's).
                (false, true) => body(x, 7),
                (false, false) => body(x, 8),
            })
            .collect();
        let err = store
            .registry_metadata_put(&r.name, &offered, 30)
            .unwrap_err();
        assert!(
            matches!(&err, StoreError::Rollback { role: got, stored: 7, offered: 6, .. } if got == role),
            "{role}: {err}"
        );
        assert_eq!(store.registry_metadata(&r.name).unwrap(), before, "{role}");
    }
}

#[test]
fn a_newer_root_may_lower_timestamp_snapshot_and_targets() {
    let (_dir, store) = open();
    let r = registry(&random("r"));
    store.registry_add(&r).unwrap();
    store
        .registry_metadata_put(&r.name, &all_roles(7), 10)
        .unwrap();
    // TUF 5.3.11: root 8 rotated the other roles' keys; their versions start again.
    let offered = vec![
        body("root", 8),
        body("timestamp", 1),
        body("snapshot", 2),
        body("targets", 3),
    ];
    store.registry_metadata_put(&r.name, &offered, 20).unwrap();
    assert_eq!(
        store.registry_metadata(&r.name).unwrap(),
        (offered, Some(20))
    );
}

#[test]
fn a_newer_root_never_lets_the_root_itself_go_down() {
    let (_dir, store) = open();
    let r = registry(&random("r"));
    store.registry_add(&r).unwrap();
    store
        .registry_metadata_put(&r.name, &all_roles(7), 10)
        .unwrap();
    let before = store.registry_metadata(&r.name).unwrap();
    let offered = vec![
        body("root", 6),
        body("timestamp", 9),
        body("snapshot", 9),
        body("targets", 9),
    ];
    let err = store
        .registry_metadata_put(&r.name, &offered, 30)
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::Rollback { role, stored: 7, offered: 6, .. } if role == "root"),
        "{err}"
    );
    assert_eq!(store.registry_metadata(&r.name).unwrap(), before);
}

#[test]
fn a_stored_role_left_out_of_a_put_is_a_rollback() {
    let (_dir, store) = open();
    let r = registry(&random("r"));
    store.registry_add(&r).unwrap();
    store
        .registry_metadata_put(&r.name, &all_roles(3), 10)
        .unwrap();
    let before = store.registry_metadata(&r.name).unwrap();
    let offered = vec![body("root", 3), body("timestamp", 4), body("snapshot", 4)];
    let err = store
        .registry_metadata_put(&r.name, &offered, 30)
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::Rollback { role, stored: 3, offered: 0, .. } if role == "targets"),
        "{err}"
    );
    assert_eq!(store.registry_metadata(&r.name).unwrap(), before);
}

#[test]
fn a_sync_from_another_connection_cannot_regress_what_one_committed() {
    let dir = tempfile::tempdir().unwrap();
    let first = SqliteStore::open_in(dir.path()).unwrap();
    let second = SqliteStore::open_in(dir.path()).unwrap();
    let r = registry(&random("r"));
    first.registry_add(&r).unwrap();
    // Both processes read version 1; the first commits 5, the second then offers 3.
    first
        .registry_metadata_put(&r.name, &all_roles(1), 1)
        .unwrap();
    first
        .registry_metadata_put(&r.name, &all_roles(5), 2)
        .unwrap();
    let err = second
        .registry_metadata_put(&r.name, &all_roles(3), 3)
        .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Rollback {
                stored: 5,
                offered: 3,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(first.registry_metadata(&r.name).unwrap().1, Some(2));
}

#[test]
fn metadata_of_an_unknown_registry_is_refused() {
    let (_dir, store) = open();
    let name = random("nope");
    assert!(matches!(
        store.registry_metadata(&name),
        Err(StoreError::UnknownRegistry(n)) if n == name
    ));
    assert!(matches!(
        store.registry_metadata_put(&name, &all_roles(1), 1),
        Err(StoreError::UnknownRegistry(n)) if n == name
    ));
}

#[test]
fn a_server_keeps_the_registry_and_target_it_came_from() {
    let (_dir, store) = open();
    let r = registry(&random("r"));
    store.registry_add(&r).unwrap();
    let s = registry_server(&random("s"), &r.name, "sha256:aa");
    store.server_add(&s).unwrap();
    assert_eq!(store.server_get(&s.name).unwrap(), Some(s));
}

#[test]
fn a_replace_expecting_another_digest_changes_nothing() {
    let (_dir, store) = open();
    let r = registry(&random("r"));
    store.registry_add(&r).unwrap();
    let old = registry_server(&random("s"), &r.name, "sha256:aa");
    store.server_add(&old).unwrap();
    let new = ServerRecord {
        version: "2".into(),
        image_digest: "sha256:bb".into(),
        ..old.clone()
    };
    assert!(!store.server_replace(&new, "sha256:cc").unwrap());
    assert_eq!(store.server_get(&old.name).unwrap(), Some(old.clone()));
    let absent = ServerRecord {
        name: random("absent"),
        ..new.clone()
    };
    assert!(!store.server_replace(&absent, "sha256:aa").unwrap());
    assert_eq!(store.server_get(&absent.name).unwrap(), None);
}

#[test]
fn a_replace_expecting_the_current_digest_replaces_the_record() {
    let (_dir, store) = open();
    let r = registry(&random("r"));
    store.registry_add(&r).unwrap();
    let old = registry_server(&random("s"), &r.name, "sha256:aa");
    store.server_add(&old).unwrap();
    let new = ServerRecord {
        version: "2".into(),
        image_digest: "sha256:bb".into(),
        origin: Some(RegistryOrigin {
            registry: r.name.clone(),
            target: format!("{}/2", old.name),
        }),
        ..old.clone()
    };
    assert!(store.server_replace(&new, "sha256:aa").unwrap());
    assert_eq!(store.server_get(&old.name).unwrap(), Some(new));
}

fn tool(server: &str) -> ToolDefinition {
    ToolDefinition {
        server: server.to_owned(),
        tool: random("t"),
        approved: true,
        definition: "{}".into(),
        digest: "00".into(),
        seen_ms: 1,
    }
}

#[test]
fn removing_a_server_removes_its_tool_definitions() {
    let (_dir, store) = open();
    let s = ServerRecord::unsigned_for_test(&random("s"), "/bin/true");
    store.server_add(&s).unwrap();
    store.tool_definitions_put(&[tool(&s.name)]).unwrap();
    assert!(store.server_remove(&s.name).unwrap());
    assert!(!store.server_remove(&s.name).unwrap());
    assert_eq!(store.server_get(&s.name).unwrap(), None);
    assert!(store.tool_definitions(&s.name).unwrap().is_empty());
}

#[test]
fn a_server_an_endpoint_exposes_cannot_be_removed() {
    let (_dir, store) = open();
    let s = ServerRecord::unsigned_for_test(&random("s"), "/bin/true");
    store.server_add(&s).unwrap();
    let defs = vec![tool(&s.name)];
    store.tool_definitions_put(&defs).unwrap();
    let endpoint = random("e");
    store
        .endpoint_add(&EndpointRecord {
            name: endpoint.clone(),
            servers: vec![(s.name.clone(), vec!["*".into()])],
        })
        .unwrap();
    let err = store.server_remove(&s.name).unwrap_err();
    assert!(
        matches!(&err, StoreError::InUse { users, .. } if users == &[format!("endpoint {endpoint}")]),
        "{err}"
    );
    assert_eq!(store.server_get(&s.name).unwrap(), Some(s.clone()));
    assert_eq!(store.tool_definitions(&s.name).unwrap(), defs);
    assert_eq!(
        store
            .endpoint_get(&endpoint)
            .unwrap()
            .unwrap()
            .servers
            .len(),
        1
    );
}

#[test]
fn a_schema_3_database_gains_registries_and_keeps_its_servers_unsigned() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(DB_FILE);
    let server = random("s");
    {
        let conn = Connection::open(&path).unwrap();
        conn.pragma_update(None, "journal_mode", "wal").unwrap();
        for sql in [
            include_str!("../migrations/0001_initial.sql"),
            include_str!("../migrations/0002_tool_definitions.sql"),
            include_str!("../migrations/0003_endpoint_descriptions.sql"),
        ] {
            conn.execute_batch(sql).unwrap();
        }
        conn.pragma_update(None, "user_version", 3).unwrap();
        conn.execute(
            "INSERT INTO servers (name, version, image_digest, manifest, source, installed_ms) \
             VALUES (?1, '1', 'dir:/', '{}', 'unsigned', 1)",
            [&server],
        )
        .unwrap();
    }
    let store = SqliteStore::open(&path).unwrap();
    let got = store.server_get(&server).unwrap().unwrap();
    assert_eq!((got.origin, got.source.as_str()), (None, "unsigned"));
    assert!(store.registry_list().unwrap().is_empty());
}
