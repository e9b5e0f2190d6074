//! The registry catalog: what a registry entry is and how the gateway uses one. `entry` (a
//! verified TUF target as a server version: image descriptor, manifest, provenance),
//! `entitlements` (what a manifest lets a server do, and what an upgrade adds), `lint` (the
//! rules every entry passes before it is signed and again before it is installed) with
//! `exfil` (the list of exfiltration-friendly services lint refuses); `state` (a registry's
//! verified offline view, re-checked from the store on every read), `sync` (bringing it up to
//! date, nothing written on a refusal) and `http` (metadata files over HTTPS, capped and timed);
//! and the author's side: `mcp_registry` (the MCP Registry's server.json and listing pages),
//! `curation` (what a registry's reviewers add), `import` (the two → a manifest and an image
//! build), `author` (a registry repository's offline operations: add a server, sign, verify);
//! and which entry an install or upgrade takes (`pick`, `install`).
//!
//! It verifies no signature itself (the `tuf` layer does, `author` only calls it) and knows
//! nothing of how servers are run.

pub mod author;
pub mod curation;
pub mod entitlements;
pub mod entry;
pub mod exfil;
pub mod import;
pub mod install;
pub mod lint;
pub mod mcp_registry;
pub mod pick;

mod error;
pub mod http;
pub mod state;
pub mod sync;

pub use error::CatalogError;
pub use http::HttpFetch;
pub use state::{load, load_all};
pub use sync::{SyncReport, fetcher, fetcher_with_ca, sync};
