//! The `servers` rows: reading and adding records, and the two writes an installed registry
//! server needs besides adding — removal (refused while an endpoint exposes it) and an upgrade
//! that replaces the record only if it still holds the image the admin was shown.

use rusqlite::{Connection, TransactionBehavior, params};

use crate::store::{RegistryOrigin, ServerRecord, StoreError};

const COLUMNS: &str = "name, version, image_digest, manifest, source, installed_ms, \
     approved_private_ranges, registry, target";

fn from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ServerRecord> {
    let registry: Option<String> = r.get(7)?;
    let target: Option<String> = r.get(8)?;
    Ok(ServerRecord {
        name: r.get(0)?,
        version: r.get(1)?,
        image_digest: r.get(2)?,
        manifest: r.get(3)?,
        source: r.get(4)?,
        installed_ms: r.get(5)?,
        approved_ranges: serde_json::from_str(&r.get::<_, String>(6)?).unwrap_or_default(),
        // The schema keeps the two columns both set or both NULL.
        origin: registry
            .zip(target)
            .map(|(registry, target)| RegistryOrigin { registry, target }),
    })
}

/// One server (`Some(name)`) or all of them, by name.
pub(super) fn list(conn: &Connection, name: Option<&str>) -> Result<Vec<ServerRecord>, StoreError> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {COLUMNS} FROM servers WHERE ?1 IS NULL OR name = ?1 ORDER BY name"
    ))?;
    let rows = stmt.query_map([name], from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

fn ranges(s: &ServerRecord) -> String {
    serde_json::to_string(&s.approved_ranges).expect("strings serialize")
}

fn origin(s: &ServerRecord) -> (Option<&str>, Option<&str>) {
    match &s.origin {
        Some(o) => (Some(o.registry.as_str()), Some(o.target.as_str())),
        None => (None, None),
    }
}

/// Runs `f` with the record's columns as parameters, in `COLUMNS`' order.
fn with_row<T>(
    s: &ServerRecord,
    f: impl FnOnce(&[&dyn rusqlite::ToSql]) -> rusqlite::Result<T>,
) -> rusqlite::Result<T> {
    let (registry, target) = origin(s);
    f(params![
        s.name,
        s.version,
        s.image_digest,
        s.manifest,
        s.source,
        s.installed_ms,
        ranges(s),
        registry,
        target
    ])
}

pub(super) fn add(conn: &Connection, s: &ServerRecord) -> Result<bool, StoreError> {
    let n = with_row(s, |row| {
        conn.execute(
            &format!(
                "INSERT INTO servers ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) \
                 ON CONFLICT (name) DO NOTHING"
            ),
            row,
        )
    })?;
    Ok(n == 1)
}

pub(super) fn remove(conn: &mut Connection, name: &str) -> Result<bool, StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    // Checked inside the transaction: endpoint_servers would cascade silently, and an endpoint
    // losing a server is a change the admin makes on the endpoint, not a side effect.
    let endpoints: Vec<String> = tx
        .prepare("SELECT endpoint FROM endpoint_servers WHERE server = ?1 ORDER BY endpoint")?
        .query_map([name], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    if !endpoints.is_empty() {
        return Err(StoreError::InUse {
            what: format!("server {name}"),
            users: endpoints.iter().map(|e| format!("endpoint {e}")).collect(),
        });
    }
    // tool_definitions go with it (ON DELETE CASCADE).
    let n = tx.execute("DELETE FROM servers WHERE name = ?1", [name])?;
    tx.commit()?;
    Ok(n == 1)
}

pub(super) fn replace(
    conn: &Connection,
    s: &ServerRecord,
    expected_digest: &str,
) -> Result<bool, StoreError> {
    // One statement: the digest the upgrade started from is checked where the row is written.
    let n = with_row(s, |row| {
        let mut row = row.to_vec();
        row.push(&expected_digest);
        conn.execute(
            "UPDATE servers SET version = ?2, image_digest = ?3, manifest = ?4, source = ?5, \
             installed_ms = ?6, approved_private_ranges = ?7, registry = ?8, target = ?9 \
             WHERE name = ?1 AND image_digest = ?10",
            &*row,
        )
    })?;
    Ok(n == 1)
}
