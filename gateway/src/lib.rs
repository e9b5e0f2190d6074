//! Gig'MCP gateway: the unprivileged daemon `gigmcpd` and the admin CLI `gigmcp`.
//!
//! See `docs/ARCHITECTURE.md` for the map. Layers, bottom up: [`store`] (persistence behind a
//! trait), [`tokens`] (bearer tokens, shared by admin and the MCP front), [`vault`] (envelope encryption over the store), [`audit`], [`admin`] (the command
//! layer, transport-independent), then the front ends [`cli`] and [`daemon`].

pub mod admin;
pub mod audit;
pub mod catalog;
pub mod cli;
pub mod config;
pub mod control;
pub mod daemon;
pub mod egress;
pub mod image;
pub mod image_builder;
pub mod logging;
pub mod manifest;
pub mod mcp;
pub mod sandbox;
pub mod store;
pub mod terminal;
pub mod tokens;
pub mod tuf;
pub mod vault;
