//! The gateway's way to the privileged helper: its D-Bus proxy, connected on first use, so the
//! daemon serves (and each call reports clearly) while the helper or its bus is not up yet.

use privhelper_api::PrivHelperProxy;

/// The helper's D-Bus proxy, connected on first use: the gateway serves (and reports clearly
/// per call) while the helper or its bus is not up yet.
#[derive(Debug)]
pub struct Helper {
    bus: String,
    proxy: tokio::sync::OnceCell<PrivHelperProxy<'static>>,
}

impl Helper {
    /// `bus`: `system`, or a D-Bus address.
    pub fn on_bus(bus: &str) -> Self {
        Self {
            bus: bus.to_owned(),
            proxy: tokio::sync::OnceCell::new(),
        }
    }

    /// An already connected proxy.
    pub fn connected(proxy: PrivHelperProxy<'static>) -> Self {
        Self {
            bus: String::new(),
            proxy: tokio::sync::OnceCell::new_with(Some(proxy)),
        }
    }

    /// The proxy, once connected; `None` if it never was.
    pub fn get_if_connected(&self) -> Option<&PrivHelperProxy<'static>> {
        self.proxy.get()
    }

    pub async fn get(&self) -> Result<&PrivHelperProxy<'static>, HelperUnreachable> {
        self.proxy
            .get_or_try_init(|| async {
                let conn = if self.bus == "system" {
                    zbus::Connection::system().await
                } else {
                    zbus::connection::Builder::address(self.bus.as_str())
                        .build()
                        .await
                };
                let conn = conn.map_err(|source| HelperUnreachable::Bus {
                    bus: self.bus.clone(),
                    source,
                })?;
                PrivHelperProxy::new(&conn)
                    .await
                    .map_err(HelperUnreachable::Interface)
            })
            .await
    }
}

/// Why the helper cannot be asked anything.
#[derive(Debug, thiserror::Error)]
pub enum HelperUnreachable {
    #[error("cannot reach the helper's bus ({bus}): {source}")]
    Bus { bus: String, source: zbus::Error },
    #[error("the helper's D-Bus interface: {0}")]
    Interface(zbus::Error),
}
