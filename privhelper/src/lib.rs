//! Gig'MCP's privileged side: `gigmcp-privhelper` (root, D-Bus activated) and
//! `gigmcp-sandbox-init` (the first process inside a sandbox).
//!
//! Invariant: this crate links no HTTP, TLS, JSON-RPC or SQL code (a test runs `cargo tree` to
//! enforce it). Everything here runs with privilege or inside the sandbox, and must stay small
//! enough to review line by line.

pub mod api;
pub mod config;
pub mod helper;
pub mod init;
