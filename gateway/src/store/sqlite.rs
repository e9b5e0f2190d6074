//! The embedded SQLite backend: one file in the state directory, WAL, foreign keys on, a busy
//! timeout so that the daemon and CLI processes can write at the same time.

use std::fmt;
use std::fs::OpenOptions;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use super::generation;
use super::schema::{header_user_version, migrate};
use super::{
    AuditEvent, EndpointRecord, Generation, RegistryRecord, Rewrapped, RoleBody, SCHEMA_VERSION,
    SecretMeta, SecretRecord, ServerRecord, Store, StoreError, TokenRecord, ToolDefinition, now_ms,
};
use rows::{SECRET_COLUMNS, secret_from_row, to_i64, to_u64};

pub const DB_FILE: &str = "gigmcp.db";

const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

pub struct SqliteStore {
    path: PathBuf,
    conn: Mutex<Connection>,
    /// Rows written through this connection to the tables endpoint views are built from.
    offer_writes: Arc<AtomicU64>,
}

impl fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .finish()
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the database in `state_dir` and brings its schema up to date.
    pub fn open_in(state_dir: &Path) -> Result<Self, StoreError> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(state_dir)
            .map_err(|source| StoreError::Io {
                path: state_dir.display().to_string(),
                source,
            })?;
        Self::open(&state_dir.join(DB_FILE))
    }

    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let shown = path.display().to_string();
        // Refuse a newer schema by reading the header ourselves, before SQLite may touch the
        // file (switching to WAL, recovering a journal).
        if let Some(found) = header_user_version(path)? {
            if found > SCHEMA_VERSION {
                return Err(StoreError::NewerSchema {
                    path: shown,
                    found,
                    supported: SCHEMA_VERSION,
                });
            }
        } else {
            // Create it private: SQLite gives the -wal and -shm files the same mode.
            OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .open(path)
                .map_err(|source| StoreError::Io {
                    path: shown.clone(),
                    source,
                })?;
        }
        let mut conn = Connection::open(path)?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        conn.pragma_update(None, "foreign_keys", true)?;
        conn.pragma_update(None, "journal_mode", "wal")?;
        // FULL: a committed secret or audit entry survives power loss, not just a crash.
        conn.pragma_update(None, "synchronous", "full")?;
        migrate(&mut conn, &shown)?;
        let offer_writes = generation::count_offer_writes(&mut conn)?;
        Ok(Self {
            path: path.to_owned(),
            conn: Mutex::new(conn),
            offer_writes,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves SQLite consistent (transactions roll back on
        // drop), so a poisoned lock is safe to keep using.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Store for SqliteStore {
    fn offer_generation(&self) -> Result<Generation, StoreError> {
        generation::current(&self.offer_writes, &self.conn())
    }

    fn master_fingerprint(&self) -> Result<Option<String>, StoreError> {
        Ok(self
            .conn()
            .query_row("SELECT value FROM meta WHERE key = 'master_fp'", [], |r| {
                r.get(0)
            })
            .optional()?)
    }

    fn claim_master_fingerprint(&self, fp: &str) -> Result<String, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute(
            "INSERT INTO meta (key, value) VALUES ('master_fp', ?1) ON CONFLICT (key) DO NOTHING",
            [fp],
        )?;
        let recorded: String =
            tx.query_row("SELECT value FROM meta WHERE key = 'master_fp'", [], |r| {
                r.get(0)
            })?;
        tx.commit()?;
        Ok(recorded)
    }

    fn secret_get(&self, name: &str) -> Result<Option<SecretRecord>, StoreError> {
        Ok(self
            .conn()
            .query_row(
                &format!("SELECT {SECRET_COLUMNS} FROM secrets WHERE name = ?1"),
                [name],
                secret_from_row,
            )
            .optional()?)
    }

    fn secret_put(&self, record: &SecretRecord, expected: Option<u64>) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let current: Option<(String, i64)> = tx
            .query_row(
                "SELECT id, version FROM secrets WHERE name = ?1",
                [&record.name],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        if current.as_ref().map(|(_, v)| to_u64(*v)) != expected {
            return Err(StoreError::Conflict {
                name: record.name.clone(),
            });
        }
        if let Some((old_id, _)) = current {
            tx.execute("DELETE FROM secrets WHERE id = ?1", [old_id])?;
        }
        let s = &record.sealed;
        tx.execute(
            &format!("INSERT INTO secrets ({SECRET_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)"),
            params![
                record.id,
                record.name,
                to_i64(record.version),
                s.value_nonce,
                s.value_ct,
                s.key_nonce,
                s.wrapped_key,
                s.master_fp,
                record.created_ms,
                record.updated_ms,
                record.last_used_ms,
            ],
        )?;
        tx.commit()?;
        Ok(())
    }

    fn secret_list(&self) -> Result<Vec<SecretMeta>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT name, version, created_ms, updated_ms, last_used_ms FROM secrets ORDER BY name",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(SecretMeta {
                name: r.get(0)?,
                version: to_u64(r.get(1)?),
                created_ms: r.get(2)?,
                updated_ms: r.get(3)?,
                last_used_ms: r.get(4)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn secret_all(&self) -> Result<Vec<SecretRecord>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!(
            "SELECT {SECRET_COLUMNS} FROM secrets ORDER BY name"
        ))?;
        let rows = stmt.query_map([], secret_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn secret_remove(&self, name: &str) -> Result<bool, StoreError> {
        Ok(self
            .conn()
            .execute("DELETE FROM secrets WHERE name = ?1", [name])?
            > 0)
    }

    fn secret_mark_used(&self, name: &str, ts_ms: i64) -> Result<(), StoreError> {
        self.conn().execute(
            "UPDATE secrets SET last_used_ms = ?2 WHERE name = ?1",
            params![name, ts_ms],
        )?;
        Ok(())
    }

    fn rewrap_all(
        &self,
        old_fp: &str,
        new_fp: &str,
        rewrapped: &[Rewrapped],
    ) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let conflict = || StoreError::Conflict {
            name: String::from("(rotation)"),
        };
        let recorded: Option<String> = tx
            .query_row("SELECT value FROM meta WHERE key = 'master_fp'", [], |r| {
                r.get(0)
            })
            .optional()?;
        if recorded.as_deref() != Some(old_fp) {
            return Err(conflict());
        }
        let now = now_ms();
        {
            let mut update = tx.prepare(
                "UPDATE secrets SET key_nonce = ?3, wrapped_key = ?4, master_fp = ?5, updated_ms = ?6 \
                 WHERE id = ?1 AND version = ?2 AND master_fp = ?7",
            )?;
            for r in rewrapped {
                let n = update.execute(params![
                    r.id,
                    to_i64(r.version),
                    r.key_nonce,
                    r.wrapped_key,
                    new_fp,
                    now,
                    old_fp
                ])?;
                if n != 1 {
                    return Err(conflict());
                }
            }
        }
        let left: i64 = tx.query_row(
            "SELECT count(*) FROM secrets WHERE master_fp != ?1",
            [new_fp],
            |r| r.get(0),
        )?;
        if left != 0 {
            return Err(conflict());
        }
        tx.execute(
            "UPDATE meta SET value = ?1 WHERE key = 'master_fp'",
            [new_fp],
        )?;
        tx.commit()?;
        Ok(())
    }

    fn audit_append(&self, e: &AuditEvent) -> Result<(), StoreError> {
        self.conn().execute(
            "INSERT INTO audit_events (ts_ms, actor, action, target, outcome, detail) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![e.ts_ms, e.actor, e.action, e.target, e.outcome, e.detail],
        )?;
        Ok(())
    }

    fn audit_append_many(&self, events: &[AuditEvent]) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        {
            let mut insert = tx.prepare_cached(
                "INSERT INTO audit_events (ts_ms, actor, action, target, outcome, detail) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?;
            for e in events {
                insert.execute(params![
                    e.ts_ms, e.actor, e.action, e.target, e.outcome, e.detail
                ])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn audit_recent(&self, limit: u32) -> Result<Vec<AuditEvent>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT ts_ms, actor, action, target, outcome, detail FROM audit_events \
             ORDER BY id DESC LIMIT ?1",
        )?;
        let rows = stmt.query_map([limit], |r| {
            Ok(AuditEvent {
                ts_ms: r.get(0)?,
                actor: r.get(1)?,
                action: r.get(2)?,
                target: r.get(3)?,
                outcome: r.get(4)?,
                detail: r.get(5)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn server_add(&self, s: &ServerRecord) -> Result<bool, StoreError> {
        servers::add(&self.conn(), s)
    }

    fn server_get(&self, name: &str) -> Result<Option<ServerRecord>, StoreError> {
        Ok(servers::list(&self.conn(), Some(name))?.pop())
    }

    fn server_list(&self) -> Result<Vec<ServerRecord>, StoreError> {
        servers::list(&self.conn(), None)
    }

    fn server_remove(&self, name: &str) -> Result<bool, StoreError> {
        servers::remove(&mut self.conn(), name)
    }

    fn server_replace(&self, s: &ServerRecord, expected_digest: &str) -> Result<bool, StoreError> {
        servers::replace(&self.conn(), s, expected_digest)
    }

    fn registry_add(&self, r: &RegistryRecord) -> Result<bool, StoreError> {
        registries::add(&self.conn(), r)
    }

    fn registry_get(&self, name: &str) -> Result<Option<RegistryRecord>, StoreError> {
        Ok(registries::list(&self.conn(), Some(name))?.pop())
    }

    fn registry_list(&self) -> Result<Vec<RegistryRecord>, StoreError> {
        registries::list(&self.conn(), None)
    }

    fn registry_remove(&self, name: &str) -> Result<bool, StoreError> {
        registries::remove(&mut self.conn(), name)
    }

    fn registry_metadata(&self, name: &str) -> Result<(Vec<RoleBody>, Option<i64>), StoreError> {
        registries::metadata(&self.conn(), name)
    }

    fn registry_metadata_put(
        &self,
        name: &str,
        bodies: &[RoleBody],
        synced_ms: i64,
    ) -> Result<(), StoreError> {
        registries::metadata_put(&mut self.conn(), name, bodies, synced_ms)
    }

    fn endpoint_add(&self, e: &EndpointRecord) -> Result<bool, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let n = tx.execute(
            "INSERT INTO endpoints (name, created_ms) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
            rusqlite::params![e.name, super::now_ms()],
        )?;
        if n == 0 {
            return Ok(false);
        }
        for (server, tools) in &e.servers {
            let exists: bool = tx.query_row(
                "SELECT EXISTS (SELECT 1 FROM servers WHERE name = ?1)",
                [server],
                |r| r.get(0),
            )?;
            if !exists {
                return Err(StoreError::Invalid(format!("no server named {server}")));
            }
            let tools = serde_json::to_string(tools).expect("strings serialize");
            tx.execute(
                "INSERT INTO endpoint_servers (endpoint, server, tools) VALUES (?1, ?2, ?3)",
                rusqlite::params![e.name, server, tools],
            )?;
        }
        tx.commit()?;
        Ok(true)
    }

    fn endpoint_get(&self, name: &str) -> Result<Option<EndpointRecord>, StoreError> {
        let conn = self.conn();
        let exists: bool = conn.query_row(
            "SELECT EXISTS (SELECT 1 FROM endpoints WHERE name = ?1)",
            [name],
            |r| r.get(0),
        )?;
        if !exists {
            return Ok(None);
        }
        let mut stmt = conn.prepare(
            "SELECT server, tools FROM endpoint_servers WHERE endpoint = ?1 ORDER BY server",
        )?;
        let rows = stmt.query_map([name], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
        })?;
        let mut servers = Vec::new();
        for row in rows {
            let (server, tools) = row?;
            let tools: Vec<String> = serde_json::from_str(&tools)
                .map_err(|e| StoreError::Invalid(format!("endpoint {name}: stored tools: {e}")))?;
            servers.push((server, tools));
        }
        Ok(Some(EndpointRecord {
            name: name.to_owned(),
            servers,
        }))
    }

    fn endpoint_describe(
        &self,
        endpoint: &str,
        server: &str,
        tool: &str,
        description: &str,
    ) -> Result<bool, StoreError> {
        let conn = self.conn();
        let exposed: bool = conn.query_row(
            "SELECT EXISTS (SELECT 1 FROM endpoint_servers WHERE endpoint = ?1 AND server = ?2)",
            rusqlite::params![endpoint, server],
            |r| r.get(0),
        )?;
        if !exposed {
            return Ok(false);
        }
        conn.execute(
            "INSERT INTO endpoint_tool_descriptions (endpoint, server, tool, description) \
             VALUES (?1, ?2, ?3, ?4) ON CONFLICT (endpoint, server, tool) \
             DO UPDATE SET description = excluded.description",
            rusqlite::params![endpoint, server, tool, description],
        )?;
        Ok(true)
    }

    fn endpoint_descriptions(
        &self,
        endpoint: &str,
    ) -> Result<Vec<(String, String, String)>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT server, tool, description FROM endpoint_tool_descriptions \
             WHERE endpoint = ?1 ORDER BY server, tool",
        )?;
        let rows = stmt.query_map([endpoint], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn token_add(&self, t: &TokenRecord) -> Result<(), StoreError> {
        self.conn().execute(
            "INSERT INTO tokens (id, endpoint, hash, label, created_ms, expires_ms, revoked_ms) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            rusqlite::params![
                t.id,
                t.endpoint,
                t.hash,
                t.label,
                t.created_ms,
                t.expires_ms,
                t.revoked_ms
            ],
        )?;
        Ok(())
    }

    fn token_by_hash(&self, hash: &[u8]) -> Result<Option<TokenRecord>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT id, endpoint, hash, label, created_ms, expires_ms, revoked_ms \
             FROM tokens WHERE hash = ?1",
        )?;
        let mut rows = stmt.query_map([hash], |r| {
            Ok(TokenRecord {
                id: r.get(0)?,
                endpoint: r.get(1)?,
                hash: r.get(2)?,
                label: r.get(3)?,
                created_ms: r.get(4)?,
                expires_ms: r.get(5)?,
                revoked_ms: r.get(6)?,
            })
        })?;
        Ok(rows.next().transpose()?)
    }

    fn tool_definitions(&self, server: &str) -> Result<Vec<ToolDefinition>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT tool, state, definition, digest, seen_ms FROM tool_definitions \
             WHERE server = ?1 ORDER BY tool, state",
        )?;
        let rows = stmt.query_map([server], |r| {
            Ok(ToolDefinition {
                server: server.to_owned(),
                tool: r.get(0)?,
                approved: r.get::<_, String>(1)? == "approved",
                definition: r.get(2)?,
                digest: r.get(3)?,
                seen_ms: r.get(4)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn tool_definitions_put(&self, defs: &[ToolDefinition]) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        for d in defs {
            tx.execute(
                "INSERT INTO tool_definitions (server, tool, state, definition, digest, seen_ms) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (server, tool, state) DO UPDATE \
                 SET definition = excluded.definition, digest = excluded.digest, \
                 seen_ms = excluded.seen_ms",
                rusqlite::params![
                    d.server,
                    d.tool,
                    if d.approved { "approved" } else { "pending" },
                    d.definition,
                    d.digest,
                    d.seen_ms
                ],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    fn tool_approve(&self, server: &str, tool: &str) -> Result<bool, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let moved = tx.execute(
            "INSERT INTO tool_definitions (server, tool, state, definition, digest, seen_ms) \
             SELECT server, tool, 'approved', definition, digest, seen_ms FROM tool_definitions \
             WHERE server = ?1 AND tool = ?2 AND state = 'pending' \
             ON CONFLICT (server, tool, state) DO UPDATE SET definition = excluded.definition, \
             digest = excluded.digest, seen_ms = excluded.seen_ms",
            rusqlite::params![server, tool],
        )?;
        tx.execute(
            "DELETE FROM tool_definitions WHERE server = ?1 AND tool = ?2 AND state = 'pending'",
            rusqlite::params![server, tool],
        )?;
        tx.commit()?;
        Ok(moved == 1)
    }

    fn token_revoke(&self, id: &str, now_ms: i64) -> Result<bool, StoreError> {
        let n = self.conn().execute(
            "UPDATE tokens SET revoked_ms = ?2 WHERE id = ?1 AND revoked_ms IS NULL",
            rusqlite::params![id, now_ms],
        )?;
        Ok(n == 1)
    }
}

mod registries;
#[cfg(test)]
mod registry_tests;
mod rows;
mod servers;
#[cfg(test)]
mod tests;
