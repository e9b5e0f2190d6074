//! Gig'MCP's privileged side: `gigmcp-privhelper` (root, D-Bus activated) and
//! `gigmcp-sandbox-init` (the first process inside a sandbox).
//!
//! Invariant: this crate links no HTTP, TLS, JSON-RPC or SQL code (a test runs `cargo tree` to
//! enforce it). Everything here runs with privilege or inside the sandbox, and must stay small
//! enough to review line by line.

/// The helper's well-known name on the system bus.
pub const BUS_NAME: &str = "org.gigmcp.PrivHelper1";
/// The object that serves [`INTERFACE`].
pub const OBJECT_PATH: &str = "/org/gigmcp/PrivHelper1";
/// The interface the gateway calls to create and destroy sandboxes.
pub const INTERFACE: &str = "org.gigmcp.PrivHelper1";

pub mod init;
