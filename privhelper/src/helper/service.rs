//! The D-Bus face of the helper: `org.gigmcp.PrivHelper1` served over a [`Helper`], with the
//! caller checked on every call, and the `SandboxExited` signal.

use zbus::message::Header;

use privhelper_api::{Created, HelperError, SandboxInfo, SandboxSpec};

use super::Helper;

/// The D-Bus face of the helper. Every method first checks the caller's uid with the bus: the
/// bus policy is the first fence, this is the second.
#[derive(Debug)]
pub struct Service {
    helper: Helper,
}

impl Service {
    pub fn new(helper: Helper) -> Self {
        Self { helper }
    }

    async fn authorize(
        &self,
        header: &Header<'_>,
        conn: &zbus::Connection,
    ) -> Result<(), HelperError> {
        let sender = header
            .sender()
            .ok_or_else(|| HelperError::PermissionDenied("message has no sender".into()))?;
        let uid = zbus::fdo::DBusProxy::new(conn)
            .await?
            .get_connection_unix_user(sender.clone().into())
            .await
            .map_err(zbus::Error::from)?;
        let allowed = self.helper.caller_uid();
        if uid != allowed {
            tracing::warn!(uid, sender = %sender, "refused a caller that is not the gateway");
            return Err(HelperError::PermissionDenied(format!(
                "uid {uid} may not use the helper"
            )));
        }
        Ok(())
    }
}

#[zbus::interface(name = "org.gigmcp.PrivHelper1")]
impl Service {
    async fn create_sandbox(
        &self,
        spec: SandboxSpec,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &zbus::Connection,
    ) -> Result<Created, HelperError> {
        self.authorize(&header, conn).await?;
        self.helper.create(&spec).await.inspect_err(|e| {
            tracing::warn!(server = %spec.server, "CreateSandbox refused: {e}");
        })
    }

    async fn destroy_sandbox(
        &self,
        id: String,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &zbus::Connection,
    ) -> Result<(), HelperError> {
        self.authorize(&header, conn).await?;
        self.helper.destroy(&id, "DestroySandbox", true).await
    }

    async fn list_sandboxes(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &zbus::Connection,
    ) -> Result<Vec<SandboxInfo>, HelperError> {
        self.authorize(&header, conn).await?;
        Ok(self.helper.list().await)
    }

    #[zbus(signal)]
    async fn sandbox_exited(
        emitter: &zbus::object_server::SignalEmitter<'_>,
        id: &str,
        code: i32,
        signal: i32,
        reason: &str,
    ) -> zbus::Result<()>;
}

impl Helper {
    pub(super) async fn announce_exit(
        &self,
        id: &str,
        status: Option<&std::process::ExitStatus>,
        reason: &str,
    ) {
        use std::os::unix::process::ExitStatusExt;
        let Some(conn) = self.inner.bus.get() else {
            return;
        };
        let (code, signal) = match status {
            Some(s) => (s.code().unwrap_or(-1), s.signal().unwrap_or(0)),
            None => (-1, 0),
        };
        let emitted = async {
            let iface = conn
                .object_server()
                .interface::<_, Service>(privhelper_api::OBJECT_PATH)
                .await?;
            Service::sandbox_exited(iface.signal_emitter(), id, code, signal, reason).await
        }
        .await;
        if let Err(e) = emitted {
            tracing::warn!(id, "cannot announce the exit: {e}");
        }
    }
}
