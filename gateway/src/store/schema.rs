//! The schema on disk: embedded migrations applied in one transaction, and the version read
//! from the file header before SQLite opens it, so a newer database is refused untouched.

use std::io::Read;
use std::path::Path;

use rusqlite::{Connection, TransactionBehavior};

use super::{SCHEMA_VERSION, StoreError};

/// Migrations, applied in order; entry `i` takes the schema from version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
    include_str!("migrations/0001_initial.sql"),
    include_str!("migrations/0002_tool_definitions.sql"),
    include_str!("migrations/0003_endpoint_descriptions.sql"),
    include_str!("migrations/0004_registries.sql"),
];
const _: () = assert!(MIGRATIONS.len() == SCHEMA_VERSION as usize);

/// `Some(user_version)` from the header of an existing database, `None` if the file is absent
/// or empty.
pub(super) fn header_user_version(path: &Path) -> Result<Option<u32>, StoreError> {
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

pub(super) fn migrate(conn: &mut Connection, shown: &str) -> Result<(), StoreError> {
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
