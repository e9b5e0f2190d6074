//! The registry catalog: what a registry entry is and how the gateway uses one. `entry` (a
//! verified TUF target as a server version: image descriptor, manifest, provenance),
//! `entitlements` (what a manifest lets a server do, and what an upgrade adds), `lint` (the
//! rules every entry passes before it is signed and again before it is installed) with
//! `exfil` (the list of exfiltration-friendly services lint refuses).
//!
//! It knows nothing of signatures (the `tuf` layer verifies what it is handed) and nothing of
//! how servers are run.

pub mod entitlements;
pub mod entry;
pub mod exfil;
pub mod lint;
