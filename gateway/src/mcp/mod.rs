//! The MCP front (DESIGN 2, 6): agents speak Streamable HTTP to `/mcp/<endpoint>`; the gateway
//! authenticates them, filters what each endpoint offers and relays to sandboxed servers over
//! their stdio.
//!
//! - [`jsonrpc`]: message classification, kept as JSON values (unknown fields survive);
//! - [`stdio`]: one session with a server over its stdin/stdout, shared by all callers;
//! - [`router`]: tools namespaced `<server>__<tool>`, subsets, routing (a call's progress
//!   relayed by `progress`);
//! - [`front`]: Streamable HTTP: serving and TLS, admission, sessions, calls in flight, SSE,
//!   dispatch, audit;
//! - [`refusal`]: every refusal of the front, with its HTTP status, JSON-RPC code and reason;
//! - [`view`]: what each endpoint offers, cached until the store changes;
//! - [`servers`]: server lifecycle (start on first use, restart with backoff);
//! - [`redact`]: secret values found in tool arguments and results are redacted;
//! - [`approval`]: tool definitions as approved; changed ones hidden until approved again;
//!
//! Bearer tokens live below both the front and admin, in [`crate::tokens`].

pub mod approval;
pub mod front;
pub mod jsonrpc;
pub mod names;
mod progress;
pub mod redact;
pub mod refusal;
pub mod router;
pub mod servers;
pub mod stdio;
pub mod view;
