//! `org.gigmcp.Gateway1` on D-Bus: every admin verb of the running daemon, for the CLI and
//! desktop tooling (DESIGN 6, docs/DBUS.md). With the daemon running, no admin command needs
//! the state directory or the master key: the daemon's one [`LocalAdmin`] over its own store
//! and vault answers, one call at a time.
//!
//! - `service.rs`: the interface (`Control`): each method authorizes the caller, runs the admin
//!   call off the async runtime, converts the result (`wire.rs`) and emits a names-only signal.
//! - `args.rs`: descriptors, ranges and consent as they arrive; admin errors as D-Bus errors.
//! - `auth.rs`: the daemon's own fence (root or `gigmcp-admin`, asked of the bus by uid), the
//!   second after the bus policy (`etc/dbus-1/system.d/org.gigmcp.Gateway1.conf`).
//! - `pool.rs`: what the interface needs of the server pool (start, stop, logs).
//! - `wire.rs`: records as `a{sv}`, both ways.
//! - `client.rs`: `DbusAdmin`, the CLI's [`crate::admin::AdminApi`] over the bus.
//!
//! [`LocalAdmin`]: crate::admin::local::LocalAdmin

mod args;
mod auth;
mod client;
mod pool;
mod proxy;
mod service;
pub mod wire;

pub use auth::ADMIN_GROUP;
pub use client::{DaemonUnreachable, DbusAdmin};
pub use pool::PoolControl;
pub use proxy::Gateway1Proxy;
pub use service::Control;

pub const BUS_NAME: &str = "org.gigmcp.Gateway1";
pub const OBJECT_PATH: &str = "/org/gigmcp/Gateway1";

/// Errors on the wire are named `org.gigmcp.Gateway1.Error.<Variant>`; each carries a message
/// meant for the admin (`ConsentNeeded`'s: the digest on its first line, then the text).
#[derive(Debug, zbus::DBusError)]
#[zbus(prefix = "org.gigmcp.Gateway1.Error")]
pub enum ControlError {
    #[zbus(error)]
    ZBus(zbus::Error),
    /// The caller is not root nor in `gigmcp-admin`.
    PermissionDenied(String),
    /// No server, endpoint, token, secret, registry or image of that name.
    NotFound(String),
    /// The request is understood and refused (a policy, a conflict, a failed check).
    Refused(String),
    /// An install or upgrade needs the admin's consent to exactly this text.
    ConsentNeeded(String),
    /// A malformed argument (a name, a range, a file descriptor).
    InvalidArgument(String),
    /// The daemon could not do it (the store, the audit trail, the helper).
    Failed(String),
}

/// A connection to `bus`: `system`, or a D-Bus address (tests, development).
fn connect(bus: &str) -> zbus::connection::Builder<'static> {
    if bus == "system" {
        zbus::connection::Builder::system()
    } else {
        zbus::connection::Builder::address(bus)
    }
}

/// Serves the interface on `bus` (`system` or an address) under [`BUS_NAME`].
pub async fn serve(bus: &str, control: Control) -> zbus::Result<zbus::Connection> {
    connect(bus)
        .name(BUS_NAME)
        .serve_at(OBJECT_PATH, control)
        .build()
        .await
}
