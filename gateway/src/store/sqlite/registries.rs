//! The `registries` and `registry_metadata` rows: the registries the admin added, and the
//! newest verified metadata of each role kept byte for byte. The store checks no signature
//! (it knows nothing of TUF): it only guarantees that a role's stored version never goes down,
//! inside the transaction that writes it.

use std::collections::BTreeMap;

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use super::rows::{to_i64, to_u64};
use crate::store::{RegistryRecord, RoleBody, StoreError};

/// Roles in the order the TUF workflow trusts them (and `registry_metadata` returns them).
const ROLE_ORDER: &str =
    "CASE role WHEN 'root' THEN 0 WHEN 'timestamp' THEN 1 WHEN 'snapshot' THEN 2 ELSE 3 END";

fn from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RegistryRecord> {
    Ok(RegistryRecord {
        name: r.get(0)?,
        location: r.get(1)?,
        pinned_root: r.get(2)?,
        ca_pem: r.get(3)?,
        added_ms: r.get(4)?,
    })
}

pub(super) fn add(conn: &Connection, r: &RegistryRecord) -> Result<bool, StoreError> {
    let n = conn.execute(
        "INSERT INTO registries (name, location, pinned_root, ca_pem, added_ms) \
         VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (name) DO NOTHING",
        params![r.name, r.location, r.pinned_root, r.ca_pem, r.added_ms],
    )?;
    Ok(n == 1)
}

pub(super) fn list(
    conn: &Connection,
    name: Option<&str>,
) -> Result<Vec<RegistryRecord>, StoreError> {
    let mut stmt = conn.prepare(
        "SELECT name, location, pinned_root, ca_pem, added_ms FROM registries \
         WHERE ?1 IS NULL OR name = ?1 ORDER BY name",
    )?;
    let rows = stmt.query_map([name], from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub(super) fn remove(conn: &mut Connection, name: &str) -> Result<bool, StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let servers: Vec<String> = tx
        .prepare("SELECT name FROM servers WHERE registry = ?1 ORDER BY name")?
        .query_map([name], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    if !servers.is_empty() {
        return Err(StoreError::InUse {
            what: format!("registry {name}"),
            users: servers.iter().map(|s| format!("server {s}")).collect(),
        });
    }
    // Its metadata goes with it (ON DELETE CASCADE).
    let n = tx.execute("DELETE FROM registries WHERE name = ?1", [name])?;
    tx.commit()?;
    Ok(n == 1)
}

fn bodies(conn: &Connection, name: &str) -> Result<Vec<RoleBody>, StoreError> {
    let mut stmt = conn.prepare(&format!(
        "SELECT role, version, body FROM registry_metadata WHERE registry = ?1 ORDER BY {ROLE_ORDER}"
    ))?;
    let rows = stmt.query_map([name], |r| {
        Ok(RoleBody {
            role: r.get(0)?,
            version: to_u64(r.get(1)?),
            body: r.get(2)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

fn synced_ms(conn: &Connection, name: &str) -> Result<Option<i64>, StoreError> {
    conn.query_row(
        "SELECT synced_ms FROM registries WHERE name = ?1",
        [name],
        |r| r.get::<_, Option<i64>>(0),
    )
    .optional()?
    .ok_or_else(|| StoreError::UnknownRegistry(name.to_owned()))
}

pub(super) fn metadata(
    conn: &Connection,
    name: &str,
) -> Result<(Vec<RoleBody>, Option<i64>), StoreError> {
    let synced = synced_ms(conn, name)?;
    Ok((bodies(conn, name)?, synced))
}

pub(super) fn metadata_put(
    conn: &mut Connection,
    name: &str,
    offered: &[RoleBody],
    synced: i64,
) -> Result<(), StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    synced_ms(&tx, name)?;
    let mut new: BTreeMap<&str, u64> = BTreeMap::new();
    for b in offered {
        if new.insert(b.role.as_str(), b.version).is_some() {
            return Err(StoreError::Invalid(format!(
                "registry {name}: role {} given twice",
                b.role
            )));
        }
    }
    // Read under the write lock (BEGIN IMMEDIATE): no other sync can commit in between.
    let stored_bodies = bodies(&tx, name)?;
    let stored_root = stored_bodies
        .iter()
        .find(|b| b.role == "root")
        .map_or(0, |b| b.version);
    // A newer root may lower timestamp, snapshot and targets: TUF 5.3.11 (fast-forward
    // recovery) discards them when their keys rotate, so a registry recovering from a
    // compromised key publishes lower versions again. tuf::update has already kept the floors
    // of roles whose keys did not change; refusing here would pin the attacker's versions for
    // ever. The root itself never goes down, and under the same root nothing does.
    let root_rises = new.get("root").copied().unwrap_or(0) > stored_root;
    for stored in stored_bodies {
        let offered = new.get(stored.role.as_str()).copied().unwrap_or(0);
        let may_lower = root_rises && stored.role != "root";
        if offered < stored.version && !may_lower {
            return Err(StoreError::Rollback {
                registry: name.to_owned(),
                role: stored.role,
                stored: stored.version,
                offered,
            });
        }
    }
    tx.execute("DELETE FROM registry_metadata WHERE registry = ?1", [name])?;
    {
        let mut insert = tx.prepare(
            "INSERT INTO registry_metadata (registry, role, version, body) VALUES (?1, ?2, ?3, ?4)",
        )?;
        for b in offered {
            insert.execute(params![name, b.role, to_i64(b.version), b.body])?;
        }
    }
    tx.execute(
        "UPDATE registries SET synced_ms = ?2 WHERE name = ?1",
        params![name, synced],
    )?;
    tx.commit()?;
    Ok(())
}
