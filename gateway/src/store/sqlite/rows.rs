//! Rows to records and back: integer conversions that cannot panic, and the secret row's
//! columns in the order [`secret_from_row`] reads them.

use rusqlite::Row;

use crate::store::{Sealed, SecretRecord};

pub(super) fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

pub(super) fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

pub(super) const SECRET_COLUMNS: &str = "id, name, version, value_nonce, value_ct, key_nonce, wrapped_key, \
     master_fp, created_ms, updated_ms, last_used_ms";

pub(super) fn secret_from_row(row: &Row<'_>) -> rusqlite::Result<SecretRecord> {
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
