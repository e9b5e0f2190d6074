//! The offer generation of the SQLite backend (see [`Store::offer_generation`]): rows written
//! through this connection to the tables that say what an endpoint offers, counted by the
//! connection's update hook, and SQLite's `data_version`, which moves when another connection
//! (another process, such as the CLI) commits.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use rusqlite::Connection;
use rusqlite::hooks::Action;

#[cfg(doc)]
use super::Store;
use super::{Generation, StoreError};

/// The tables that say what an endpoint offers. Every row written to one of them, by any method
/// present or future, moves [`Store::offer_generation`]: the connection's update hook counts
/// them, so no write path can forget to invalidate the views built on them.
const OFFER_TABLES: [&str; 5] = [
    "servers",
    "endpoints",
    "endpoint_servers",
    "endpoint_tool_descriptions",
    "tool_definitions",
];

/// Starts counting the rows `conn` writes to [`OFFER_TABLES`].
pub(super) fn count_offer_writes(conn: &mut Connection) -> Result<Arc<AtomicU64>, StoreError> {
    let offer_writes = Arc::new(AtomicU64::new(0));
    let counter = offer_writes.clone();
    conn.update_hook(Some(move |_: Action, _: &str, table: &str, _: i64| {
        if OFFER_TABLES.contains(&table) {
            counter.fetch_add(1, Ordering::Release);
        }
    }))?;
    Ok(offer_writes)
}

/// The generation now, given this connection's count of offer writes.
pub(super) fn current(
    offer_writes: &AtomicU64,
    conn: &Connection,
) -> Result<Generation, StoreError> {
    // Read in this order: a view built after this call sees at least these writes.
    let written_here = offer_writes.load(Ordering::Acquire);
    let written_elsewhere = conn.pragma_query_value(None, "data_version", |r| r.get(0))?;
    Ok(Generation {
        written_here,
        written_elsewhere,
    })
}
