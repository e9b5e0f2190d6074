//! `gigmcp-privhelper`: the root daemon that creates and destroys sandboxes for the gateway over
//! D-Bus. The D-Bus types live in `privhelper-api` (which the gateway links instead of this
//! crate), the sandbox's first process in `sandbox-init`.
//!
//! Invariant: this crate links no HTTP, TLS, JSON-RPC or SQL code, and its whole dependency
//! closure is a committed allowlist (`deps.allowlist`, checked by `tests/dependency_allowlist.rs`).
//! Everything here runs as root, and must stay small enough to review line by line.

pub mod config;
pub mod helper;
pub mod ownership;
