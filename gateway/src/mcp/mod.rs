//! The MCP front (DESIGN 2, 6): agents speak Streamable HTTP to `/mcp/<endpoint>`; the gateway
//! authenticates them, filters what each endpoint offers and relays to sandboxed servers over
//! their stdio.
//!
//! - [`jsonrpc`]: message classification, kept as JSON values (unknown fields survive);
//! - [`stdio`]: one session with a server over its stdin/stdout, shared by all callers;
//! - [`router`]: tools namespaced `<server>__<tool>`, subsets, routing;
//! - [`token`]: bearer tokens (random, shown once, stored hashed).

pub mod jsonrpc;
pub mod router;
pub mod stdio;
pub mod token;
