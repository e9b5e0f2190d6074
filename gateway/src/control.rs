//! `org.gigmcp.Gateway1` on D-Bus: what the CLI and desktop tooling ask of the running daemon
//! (DESIGN 6). For now: start and stop a server, and read its recent stderr.
//!
//! Two fences, as for the helper: the bus policy (`etc/dbus-1/system.d/org.gigmcp.Gateway1.conf`)
//! and a check here of the caller's uid with the bus: root, or a member of `gigmcp-admin`.
//! Every call is audited with the caller's uid.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use zbus::message::Header;

use crate::audit::{AuditQueue, Outcome};
use crate::mcp::servers::{Launcher, ServerPool};
use crate::mcp::stdio::CallError;

pub const BUS_NAME: &str = "org.gigmcp.Gateway1";
pub const OBJECT_PATH: &str = "/org/gigmcp/Gateway1";
/// Members of this group may administer the gateway over D-Bus (root always may).
pub const ADMIN_GROUP: &str = "gigmcp-admin";

/// Errors on the wire are named `org.gigmcp.Gateway1.Error.<Variant>`.
#[derive(Debug, zbus::DBusError)]
#[zbus(prefix = "org.gigmcp.Gateway1.Error")]
pub enum ControlError {
    #[zbus(error)]
    ZBus(zbus::Error),
    PermissionDenied(String),
    Failed(String),
}

type BoxFut<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What the interface needs of the server pool (object-safe, so the interface is not generic).
pub trait PoolControl: Send + Sync {
    fn start<'a>(&'a self, name: &'a str) -> BoxFut<'a, Result<(), CallError>>;
    fn stop<'a>(&'a self, name: &'a str) -> BoxFut<'a, bool>;
    fn logs(&self, name: &str, lines: usize) -> Vec<String>;
}

impl<L: Launcher> PoolControl for ServerPool<L> {
    fn start<'a>(&'a self, name: &'a str) -> BoxFut<'a, Result<(), CallError>> {
        Box::pin(self.start_now(name))
    }

    fn stop<'a>(&'a self, name: &'a str) -> BoxFut<'a, bool> {
        Box::pin(ServerPool::stop(self, name))
    }

    fn logs(&self, name: &str, lines: usize) -> Vec<String> {
        ServerPool::logs(self).tail(name, lines)
    }
}

pub struct Control {
    pool: Arc<dyn PoolControl>,
    audit: AuditQueue,
}

impl std::fmt::Debug for Control {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Control")
    }
}

/// Whether `uid` may administer the gateway: root, or a member of [`ADMIN_GROUP`].
fn is_admin(uid: u32) -> bool {
    use nix::unistd::{Group, Uid, User, getgrouplist};
    if uid == 0 {
        return true;
    }
    let (Ok(Some(user)), Ok(Some(group))) = (
        User::from_uid(Uid::from_raw(uid)),
        Group::from_name(ADMIN_GROUP),
    ) else {
        return false;
    };
    let Ok(name) = std::ffi::CString::new(user.name.clone()) else {
        return false;
    };
    getgrouplist(&name, user.gid).is_ok_and(|gs| gs.contains(&group.gid))
}

impl Control {
    pub fn new(pool: Arc<dyn PoolControl>, audit: AuditQueue) -> Self {
        Self { pool, audit }
    }

    /// The caller's uid, if it may administer the gateway.
    async fn authorize(
        &self,
        action: &'static str,
        target: &str,
        header: &Header<'_>,
        conn: &zbus::Connection,
    ) -> Result<u32, ControlError> {
        let sender = header
            .sender()
            .ok_or_else(|| ControlError::PermissionDenied("message has no sender".into()))?;
        let uid = zbus::fdo::DBusProxy::new(conn)
            .await?
            .get_connection_unix_user(sender.clone().into())
            .await
            .map_err(zbus::Error::from)?;
        if !is_admin(uid) {
            self.audit.record(
                action,
                target,
                Outcome::Denied,
                format!("uid={uid} reason=\"not root nor in {ADMIN_GROUP}\""),
            );
            return Err(ControlError::PermissionDenied(format!(
                "uid {uid} is not root nor in {ADMIN_GROUP}"
            )));
        }
        Ok(uid)
    }
}

#[zbus::interface(name = "org.gigmcp.Gateway1")]
impl Control {
    /// Starts a server now (it would start on its first call anyway).
    async fn server_start(
        &self,
        name: String,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &zbus::Connection,
    ) -> Result<(), ControlError> {
        let uid = self.authorize("server.start", &name, &header, conn).await?;
        let r = self.pool.start(&name).await;
        let (outcome, detail) = match &r {
            Ok(()) => (Outcome::Ok, format!("uid={uid}")),
            Err(e) => (Outcome::Failed, format!("uid={uid} error=\"{e}\"")),
        };
        self.audit.record("server.start", &name, outcome, detail);
        r.map_err(|e| ControlError::Failed(e.to_string()))
    }

    /// Stops a server; false if it was not running.
    async fn server_stop(
        &self,
        name: String,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &zbus::Connection,
    ) -> Result<bool, ControlError> {
        let uid = self.authorize("server.stop", &name, &header, conn).await?;
        let stopped = self.pool.stop(&name).await;
        self.audit.record(
            "server.stop",
            &name,
            Outcome::Ok,
            format!("uid={uid} was_running={stopped}"),
        );
        Ok(stopped)
    }

    /// The last `lines` lines (at most 1000) of a server's stderr, oldest first.
    async fn server_logs(
        &self,
        name: String,
        lines: u32,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &zbus::Connection,
    ) -> Result<Vec<String>, ControlError> {
        self.authorize("server.logs", &name, &header, conn).await?;
        Ok(self.pool.logs(&name, lines.min(1000) as usize))
    }
}

#[zbus::proxy(
    interface = "org.gigmcp.Gateway1",
    default_service = "org.gigmcp.Gateway1",
    default_path = "/org/gigmcp/Gateway1"
)]
pub trait Gateway1 {
    fn server_start(&self, name: &str) -> zbus::Result<()>;
    fn server_stop(&self, name: &str) -> zbus::Result<bool>;
    fn server_logs(&self, name: &str, lines: u32) -> zbus::Result<Vec<String>>;
}

/// Serves the interface on `bus` (`system` or an address) under [`BUS_NAME`].
pub async fn serve(bus: &str, control: Control) -> zbus::Result<zbus::Connection> {
    let builder = if bus == "system" {
        zbus::connection::Builder::system()
    } else {
        zbus::connection::Builder::address(bus)
    };
    builder
        .name(BUS_NAME)
        .serve_at(OBJECT_PATH, control)
        .build()
        .await
}

/// A client of the running daemon's interface on `bus`.
pub async fn client(bus: &str) -> zbus::Result<Gateway1Proxy<'static>> {
    let conn = if bus == "system" {
        zbus::Connection::system().await?
    } else {
        zbus::connection::Builder::address(bus).build().await?
    };
    Gateway1Proxy::new(&conn).await
}
