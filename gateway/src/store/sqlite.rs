//! The embedded SQLite backend: one file in the state directory, WAL, foreign keys on, a busy
//! timeout so that the daemon and CLI processes can write at the same time.

use std::fmt;
use std::fs::OpenOptions;
use std::io::Read;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, Row, TransactionBehavior, params};

use super::{
    AuditEvent, EndpointRecord, Rewrapped, SCHEMA_VERSION, Sealed, SecretMeta, SecretRecord,
    ServerRecord, Store, StoreError, TokenRecord, ToolDefinition, now_ms,
};

pub const DB_FILE: &str = "gigmcp.db";

/// Migrations, applied in order; entry `i` takes the schema from version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
    include_str!("migrations/0001_initial.sql"),
    include_str!("migrations/0002_tool_definitions.sql"),
    include_str!("migrations/0003_endpoint_descriptions.sql"),
];
const _: () = assert!(MIGRATIONS.len() == SCHEMA_VERSION as usize);

const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

pub struct SqliteStore {
    path: PathBuf,
    conn: Mutex<Connection>,
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
        Ok(Self {
            path: path.to_owned(),
            conn: Mutex::new(conn),
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

/// `Some(user_version)` from the header of an existing database, `None` if the file is absent
/// or empty.
fn header_user_version(path: &Path) -> Result<Option<u32>, StoreError> {
    let shown = || path.display().to_string();
    let mut file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(StoreError::Io {
                path: shown(),
                source,
            });
        }
    };
    let mut header = [0u8; 100];
    let mut read = 0;
    while read < header.len() {
        match file.read(&mut header[read..]) {
            Ok(0) => break,
            Ok(n) => read += n,
            Err(source) => {
                return Err(StoreError::Io {
                    path: shown(),
                    source,
                });
            }
        }
    }
    if read == 0 {
        return Ok(None);
    }
    if read < header.len() || &header[..16] != b"SQLite format 3\0" {
        return Err(StoreError::NotADatabase { path: shown() });
    }
    // The header's "user version" field: 4 bytes, big-endian, at offset 60.
    let version = u32::from_be_bytes([header[60], header[61], header[62], header[63]]);
    Ok(Some(version))
}

fn migrate(conn: &mut Connection, shown: &str) -> Result<(), StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    // Checked again under the write lock: a newer writer may have committed to the WAL.
    let current: u32 = tx.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if current > SCHEMA_VERSION {
        return Err(StoreError::NewerSchema {
            path: shown.to_owned(),
            found: current,
            supported: SCHEMA_VERSION,
        });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        tx.execute_batch(sql)?;
        tx.pragma_update(
            None,
            "user_version",
            u32::try_from(i + 1).expect("few migrations"),
        )?;
    }
    tx.commit()?;
    Ok(())
}

fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

const SECRET_COLUMNS: &str = "id, name, version, value_nonce, value_ct, key_nonce, wrapped_key, \
     master_fp, created_ms, updated_ms, last_used_ms";

fn secret_from_row(row: &Row<'_>) -> rusqlite::Result<SecretRecord> {
    Ok(SecretRecord {
        id: row.get(0)?,
        name: row.get(1)?,
        version: to_u64(row.get(2)?),
        sealed: Sealed {
            value_nonce: row.get(3)?,
            value_ct: row.get(4)?,
            key_nonce: row.get(5)?,
            wrapped_key: row.get(6)?,
            master_fp: row.get(7)?,
        },
        created_ms: row.get(8)?,
        updated_ms: row.get(9)?,
        last_used_ms: row.get(10)?,
    })
}

impl SqliteStore {
    fn servers(&self, name: Option<&str>) -> Result<Vec<ServerRecord>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT name, version, image_digest, manifest, source, installed_ms, \
             approved_private_ranges FROM servers WHERE ?1 IS NULL OR name = ?1 ORDER BY name",
        )?;
        let rows = stmt.query_map([name], |r| {
            Ok(ServerRecord {
                name: r.get(0)?,
                version: r.get(1)?,
                image_digest: r.get(2)?,
                manifest: r.get(3)?,
                source: r.get(4)?,
                installed_ms: r.get(5)?,
                approved_ranges: serde_json::from_str(&r.get::<_, String>(6)?).unwrap_or_default(),
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

impl Store for SqliteStore {
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
        let n = self.conn().execute(
            "INSERT INTO servers (name, version, image_digest, manifest, source, \
             approved_private_ranges, installed_ms) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (name) DO NOTHING",
            rusqlite::params![
                s.name,
                s.version,
                s.image_digest,
                s.manifest,
                s.source,
                serde_json::to_string(&s.approved_ranges).expect("strings serialize"),
                s.installed_ms
            ],
        )?;
        Ok(n == 1)
    }

    fn server_get(&self, name: &str) -> Result<Option<ServerRecord>, StoreError> {
        Ok(self.servers(Some(name))?.pop())
    }

    fn server_list(&self) -> Result<Vec<ServerRecord>, StoreError> {
        self.servers(None)
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

#[cfg(test)]
mod tests {
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
            "registry_state",
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
        assert!(
            matches!(err, StoreError::NewerSchema { found, .. } if found == SCHEMA_VERSION + 1)
        );
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
}
