//! Running a server in a sandbox: the privileged helper builds it (over D-Bus), the gateway
//! starts the sandbox's egress proxy and hands the server's stdio (stderr included, which the
//! pool logs) to the MCP layer. This is the production [`Launcher`].
//!
//! The server's environment is the manifest's, plus one random placeholder per credential
//! (never the value), the proxy variables (`@GIGMCP_PROXY_ADDR@` is filled in by the helper,
//! which picks the link) and the CA variables pointing at the bundle the helper mounts.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use privhelper_api::{Limits, PROXY_ADDR_TOKEN, PrivHelperProxy, SandboxSpec};

use crate::egress::{EgressProxy, EgressShared, SandboxEgress, make_placeholder};
use crate::manifest::Manifest;
use crate::mcp::servers::{Launched, Launcher};
use crate::store::ServerRecord;

/// Where the helper mounts the CA bundle inside every sandbox.
pub const CA_IN_SANDBOX: &str = "/run/gigmcp/ca.pem";

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

    pub async fn get(&self) -> Result<&PrivHelperProxy<'static>, String> {
        self.proxy
            .get_or_try_init(|| async {
                let conn = if self.bus == "system" {
                    zbus::Connection::system().await
                } else {
                    zbus::connection::Builder::address(self.bus.as_str())
                        .build()
                        .await
                };
                let conn =
                    conn.map_err(|e| format!("cannot reach the helper's bus ({}): {e}", self.bus))?;
                PrivHelperProxy::new(&conn)
                    .await
                    .map_err(|e| format!("the helper's D-Bus interface: {e}"))
            })
            .await
    }
}

#[derive(Debug, Clone)]
pub struct SandboxLauncher {
    pub helper: Arc<Helper>,
    pub egress: Arc<EgressShared>,
    pub proxy_port: u16,
    /// The CA bundle's file name in the helper's `ca_dir`.
    pub ca_bundle: String,
    pub limits: Limits,
}

/// Keeps a sandbox alive; dropping it stops the proxy and asks the helper to destroy it.
struct SandboxGuard {
    helper: PrivHelperProxy<'static>,
    id: String,
    _proxy: EgressProxy,
}

impl Drop for SandboxGuard {
    fn drop(&mut self) {
        let helper = self.helper.clone();
        let id = std::mem::take(&mut self.id);
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                if let Err(e) = helper.destroy_sandbox(&id).await {
                    tracing::debug!(sandbox = %id, error = %e, "destroy (it may be gone already)");
                }
            });
        }
    }
}

fn env_for(
    manifest: &Manifest,
    placeholders: &[(String, String)],
    port: u16,
) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = manifest
        .env
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if !env.iter().any(|(k, _)| k == "PATH") {
        env.push(("PATH".into(), "/usr/local/bin:/usr/bin:/bin".into()));
    }
    for (name, ph) in placeholders {
        env.push((name.clone(), ph.clone()));
    }
    let proxy = format!("http://{PROXY_ADDR_TOKEN}:{port}");
    for k in ["HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"] {
        env.push((k.into(), proxy.clone()));
    }
    for k in ["NO_PROXY", "no_proxy"] {
        env.push((k.into(), String::new()));
    }
    for k in [
        "SSL_CERT_FILE",
        "CURL_CA_BUNDLE",
        "REQUESTS_CA_BUNDLE",
        "NODE_EXTRA_CA_CERTS",
        "GIT_SSL_CAINFO",
    ] {
        env.push((k.into(), CA_IN_SANDBOX.into()));
    }
    env
}

impl Launcher for SandboxLauncher {
    async fn launch(&self, server: &ServerRecord) -> Result<Launched, String> {
        let manifest = Manifest::from_json(&server.manifest).map_err(|e| e.to_string())?;
        let rootfs = server.image_digest.strip_prefix("dir:").ok_or_else(|| {
            format!(
                "image {} is not a local root filesystem",
                server.image_digest
            )
        })?;
        let mut placeholders = Vec::new();
        for c in &manifest.credentials {
            placeholders.push((
                c.name.clone(),
                make_placeholder().map_err(|e| e.to_string())?,
            ));
        }
        let spec = SandboxSpec {
            server: server.name.clone(),
            rootfs: rootfs.to_owned(),
            argv: manifest.command.clone(),
            env: env_for(&manifest, &placeholders, self.proxy_port),
            data_dir: String::new(),
            ca_bundle: self.ca_bundle.clone(),
            proxy_port: self.proxy_port,
            transparent: false,
            limits: self.limits,
        };
        let helper = self.helper.get().await?.clone();
        let (info, stdin, stdout, stderr, _pidfd, fds) = helper
            .create_sandbox(&spec)
            .await
            .map_err(|e| format!("the helper refused the sandbox: {e}"))?;
        let destroy = |why: String| {
            let helper = helper.clone();
            let id = info.id.clone();
            async move {
                let _ = helper.destroy_sandbox(&id).await;
                why
            }
        };
        let host: Ipv4Addr = match info.host_addr.parse() {
            Ok(a) => a,
            Err(_) => return Err(destroy(format!("bad host address {}", info.host_addr)).await),
        };
        let peer: Ipv4Addr = match info.sandbox_addr.parse() {
            Ok(a) => a,
            Err(_) => {
                return Err(destroy(format!("bad sandbox address {}", info.sandbox_addr)).await);
            }
        };
        let egress = SandboxEgress {
            sandbox_id: info.id.clone(),
            listen: SocketAddr::new(IpAddr::V4(host), self.proxy_port),
            expected_peer: peer,
            manifest: Arc::new(manifest),
            placeholders,
            approved_ranges: server
                .approved_ranges
                .iter()
                .filter_map(|r| r.parse().ok())
                .collect(),
        };
        let proxy = match EgressProxy::spawn(egress, self.egress.clone()).await {
            Ok(p) => p,
            Err(e) => return Err(destroy(format!("egress proxy: {e}")).await),
        };
        drop(fds); // transparent-mode sockets: not asked for, so none
        // From here on, an early return destroys the sandbox (the guard's drop).
        let guard = SandboxGuard {
            helper: helper.clone(),
            id: info.id.clone(),
            _proxy: proxy,
        };
        let fd = |f: zbus::OwnedFd| std::os::fd::OwnedFd::from(f);
        let stdout = tokio::net::unix::pipe::Receiver::from_owned_fd(fd(stdout))
            .map_err(|e| format!("server stdout: {e}"))?;
        let stdin = tokio::net::unix::pipe::Sender::from_owned_fd(fd(stdin))
            .map_err(|e| format!("server stdin: {e}"))?;
        let stderr = tokio::net::unix::pipe::Receiver::from_owned_fd(fd(stderr))
            .map_err(|e| format!("server stderr: {e}"))?;
        tracing::info!(server = %server.name, sandbox = %info.id, "server started in a sandbox");
        Ok(Launched {
            stdout: Box::new(stdout),
            stdin: Box::new(stdin),
            stderr: Some(Box::new(stderr)),
            guard: Box::new(guard),
        })
    }
}
