//! The `org.gigmcp.PrivHelper1` D-Bus interface as seen by both sides: the types that cross the
//! bus, the errors the helper answers with, and the client proxy the gateway uses.
//!
//! Everything in a [`SandboxSpec`] comes from the gateway, which the helper treats as untrusted:
//! paths are names relative to directories the helper's own configuration fixes, and nothing in
//! a spec can choose a host uid, a capability or a namespace.
//!
//! This crate is what the gateway links of the privileged side: the wire types, the well-known
//! names, the error names and the generated client proxy. It knows nothing of how the helper
//! builds a sandbox, and links nothing the gateway does not already need for D-Bus.

mod error;
mod proxy;
mod reply;
mod spec;

pub use error::HelperError;
pub use proxy::{PrivHelperProxy, SandboxExited, SandboxExitedArgs, SandboxExitedStream};
pub use reply::{
    Created, DNS_PORT, FdCountError, Listeners, SandboxInfo, TLS_PORT, TransparentSockets,
};
pub use spec::{Limits, PROXY_ADDR_TOKEN, SandboxSpec};

/// The helper's well-known name on the system bus.
pub const BUS_NAME: &str = "org.gigmcp.PrivHelper1";
/// The object that serves [`INTERFACE`].
pub const OBJECT_PATH: &str = "/org/gigmcp/PrivHelper1";
/// The interface the gateway calls to create and destroy sandboxes.
pub const INTERFACE: &str = "org.gigmcp.PrivHelper1";
