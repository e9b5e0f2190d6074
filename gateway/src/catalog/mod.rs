//! The registry catalog: what a registry entry is and how the gateway uses one. `entry` (a
//! verified TUF target as a server version: image descriptor, manifest, provenance),
//! `entitlements` (what a manifest lets a server do, and what an upgrade adds), `lint` (the
//! rules every entry passes before it is signed and again before it is installed) with
//! `exfil` (the list of exfiltration-friendly services lint refuses); the registries'
//! verified state in the store (`state`), its `sync` over `http`; and which entry an install
//! or upgrade takes (`pick`, `install`).
//!
//! It verifies no signature itself (the `tuf` layer verifies what it is handed) and knows
//! nothing of how servers are run.

pub mod entitlements;
pub mod entry;
pub mod exfil;
pub mod install;
pub mod lint;
pub mod pick;

mod error;
pub mod http;
pub mod state;
pub mod sync;

pub use error::CatalogError;
pub use http::HttpFetch;
pub use state::{load, load_all};
pub use sync::{SyncReport, fetcher, fetcher_with_ca, sync};
