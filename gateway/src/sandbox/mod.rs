//! Running a server in a sandbox: the privileged helper builds it (over D-Bus), binding the
//! sandbox's proxy listener (and, in transparent mode, TLS and DNS sockets) before the server
//! starts; the gateway serves the sandbox's egress on those sockets ([`serve_egress`]) and
//! hands the server's stdio (stderr included, which the pool logs) to the MCP layer. This is
//! the production [`Launcher`]. Transparent mode follows the manifest
//! ([`Manifest::transparent_mode`]: on by default for servers that declare egress).
//!
//! A sandbox's end is learnt from the fds the helper handed over (the server's stdout reaching
//! EOF ends the session, and the guard destroys the sandbox), never from the helper's
//! `SandboxExited` signal: anyone on the bus can emit one, and the fds tell the same news no
//! later (bwrap's death ends its PID namespace, and with it every holder of the pipe). The
//! gateway does not subscribe to it; a forged one changes nothing
//! (`tests/sandbox_launcher.rs`).
//!
//! The server's command, environment and working directory are `image::plan`'s: the image's
//! configuration, the manifest over it, and the gateway's own variables over both: one random
//! placeholder per credential (never the value), the proxy variables (`@GIGMCP_PROXY_ADDR@` is
//! filled in by the helper, which picks the link) and the CA variables pointing at the bundle
//! the helper mounts.
//!
//! A server installed from a signed registry starts only while that registry's index, as
//! the store holds it and re-verified offline (signatures against the stored root), still
//! lists its target with the recorded image digest and an equal manifest
//! ([`LaunchError::NotInRegistry`]): a target the registry withdrew, or changed, stops
//! starting after the next sync. Expiry does not block a start: a registry that cannot be
//! reached must not stop running services (sync refuses expired metadata, and install and
//! upgrade refuse to choose from it).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use privhelper_api::{
    FdCountError, Limits, Listeners, PROXY_ADDR_TOKEN, PrivHelperProxy, SandboxInfo, SandboxSpec,
};

use crate::egress::{EgressError, EgressProxy, EgressShared, SandboxEgress, make_placeholder};
use crate::image::ImageStore;
use crate::image::digest::Digest;
use crate::image::oci::RunConfig;
use crate::image::plan::{PlanError, copied_rootfs, gateway_env, plan};
use crate::manifest::Manifest;
use crate::mcp::servers::{Launched, Launcher};
use crate::store::{RegistryOrigin, ServerRecord, Store};

mod helper;
mod limits;

pub use helper::{Helper, HelperUnreachable};
pub use limits::effective_limits;

/// Why a server could not be started in a sandbox, by the step that failed.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error(transparent)]
    Manifest(#[from] crate::manifest::ManifestError),
    #[error("image {0} is neither sha256:<hex> nor dir:<name>")]
    NotLocalRootfs(String),
    /// Missing, or changed on disk since it was installed: the server does not run.
    #[error("image {digest}: {source}")]
    Image {
        digest: String,
        source: crate::image::ImageError,
    },
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error("{0}")]
    Placeholder(EgressError),
    #[error(transparent)]
    Helper(#[from] HelperUnreachable),
    #[error("the helper refused the sandbox: {0}")]
    Refused(Box<dyn std::error::Error + Send + Sync>),
    #[error("bad host address {0}")]
    BadHostAddress(String),
    #[error("bad sandbox address {0}")]
    BadSandboxAddress(String),
    #[error("the helper's listening sockets: {0}")]
    Listeners(FdCountError),
    #[error("egress proxy: {0}")]
    Egress(EgressError),
    #[error("server {stream}: {source}")]
    Stdio {
        stream: &'static str,
        source: std::io::Error,
    },
    /// Installed from a registry whose verified index no longer lists it as installed.
    #[error("registry {registry}, target {target}: not started: {reason}")]
    NotInRegistry {
        registry: String,
        target: String,
        reason: Box<Unlisted>,
    },
}

/// Why the registry no longer vouches for a server it installed.
#[derive(Debug, thiserror::Error)]
pub enum Unlisted {
    /// The stored index does not load or verify (or the registry was forgotten).
    #[error(transparent)]
    State(crate::catalog::CatalogError),
    /// It verifies, but no longer lists the target as installed.
    #[error(transparent)]
    Listing(crate::catalog::install::InstallError),
    #[error("this launcher has no registry state to check against")]
    NoState,
}

#[derive(Debug, Clone)]
pub struct SandboxLauncher {
    pub helper: Arc<Helper>,
    pub egress: Arc<EgressShared>,
    pub proxy_port: u16,
    /// The CA bundle's file name in the helper's `ca_dir`.
    pub ca_bundle: String,
    pub limits: Limits,
    /// The store at `sandbox.images_dir` (the one the CLI installs into): an image is
    /// verified against its recorded tree before every start.
    pub images: Arc<ImageStore>,
    /// The store holding the registries' verified metadata, against which a server with an
    /// origin is checked before each start; `None` for a launcher that runs no registry
    /// server (image builds, tests), which then refuses one.
    pub catalog: Option<Arc<dyn Store>>,
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

impl SandboxLauncher {
    /// The helper's sandbox for `server`, its egress proxy, and the server's stdio.
    pub async fn start(&self, server: &ServerRecord) -> Result<Launched, LaunchError> {
        let manifest = Manifest::from_json(&server.manifest)?;
        if let Some(origin) = &server.origin {
            self.still_listed(server, origin).await?;
        }
        let (rootfs, image) = self.root_of(server).await?;
        let job = Job {
            name: server.name.clone(),
            rootfs,
            image,
            manifest,
            data_dir: String::new(),
            approved_ranges: server
                .approved_ranges
                .iter()
                .filter_map(|r| r.parse().ok())
                .collect(),
            reserved_opt_in: Vec::new(),
        };
        Ok(self.start_job(job).await?.0)
    }

    /// A sandbox for `job`; also returns the helper's id for it.
    async fn start_job(&self, job: Job) -> Result<(Launched, String), LaunchError> {
        let Job {
            name,
            rootfs,
            image,
            manifest,
            data_dir,
            approved_ranges,
            reserved_opt_in,
        } = job;
        let placeholders = manifest
            .credentials
            .iter()
            .map(|c| Ok((c.name.clone(), make_placeholder()?)))
            .collect::<Result<Vec<_>, EgressError>>()
            .map_err(LaunchError::Placeholder)?;
        let gateway = gateway_env(&placeholders, PROXY_ADDR_TOKEN, self.proxy_port);
        let run = plan(&name, image.as_ref(), &manifest, &gateway)?;
        let spec = SandboxSpec {
            server: name.clone(),
            rootfs,
            argv: run.argv,
            env: run.env,
            workdir: run.workdir.unwrap_or_default(),
            data_dir,
            ca_bundle: self.ca_bundle.clone(),
            proxy_port: self.proxy_port,
            transparent: manifest.transparent_mode(),
            limits: effective_limits(&self.limits, &manifest),
        };
        let helper = self.helper.get().await?.clone();
        let (info, stdin, stdout, stderr, _pidfd, fds) = helper
            .create_sandbox(&spec)
            .await
            .map_err(|e| LaunchError::Refused(Box::new(e)))?;
        let egress = SandboxEgress {
            sandbox_id: info.id.clone(),
            listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), self.proxy_port),
            expected_peer: Ipv4Addr::UNSPECIFIED,
            manifest: Arc::new(manifest),
            placeholders,
            approved_ranges,
            reserved_opt_in,
        };
        let proxy = match self.egress_for(egress, &info, fds) {
            Ok(p) => p,
            Err(e) => {
                // Nothing holds the sandbox yet: it goes now, not when the helper sweeps.
                let _ = helper.destroy_sandbox(&info.id).await;
                return Err(e);
            }
        };
        // From here on, an early return destroys the sandbox (the guard's drop).
        let guard = SandboxGuard {
            helper: helper.clone(),
            id: info.id.clone(),
            _proxy: proxy,
        };
        let launched = Launched {
            stdout: Box::new(receiver(stdout, "stdout")?),
            stdin: Box::new(sender(stdin)?),
            stderr: Some(Box::new(receiver(stderr, "stderr")?)),
            guard: Box::new(guard),
        };
        tracing::info!(server = %name, sandbox = %info.id, "server started in a sandbox");
        Ok((launched, info.id))
    }

    /// That `origin`'s registry still lists `server` as installed; on a blocking thread (it
    /// reads the store and verifies every signature of the index).
    async fn still_listed(
        &self,
        server: &ServerRecord,
        origin: &RegistryOrigin,
    ) -> Result<(), LaunchError> {
        let refused = |reason| LaunchError::NotInRegistry {
            registry: origin.registry.clone(),
            target: origin.target.clone(),
            reason: Box::new(reason),
        };
        let Some(store) = self.catalog.clone() else {
            return Err(refused(Unlisted::NoState));
        };
        let (record, at) = (server.clone(), origin.clone());
        let checked = tokio::task::spawn_blocking(move || {
            let limits = crate::tuf::Limits::default();
            let (_, loaded) = crate::catalog::state::load(store.as_ref(), &at.registry, &limits)
                .map_err(Unlisted::State)?;
            crate::catalog::install::listed(
                &at.registry,
                &loaded,
                &at.target,
                &record.image_digest,
                &record.manifest,
            )
            .map_err(Unlisted::Listing)
        })
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
        checked.map_err(refused)
    }

    /// Where the helper finds `server`'s root (relative to `images_dir`) and the image's run
    /// configuration. An image is verified first, on a blocking thread (it reads the whole
    /// tree): a missing or changed one refuses the start.
    async fn root_of(
        &self,
        server: &ServerRecord,
    ) -> Result<(String, Option<RunConfig>), LaunchError> {
        if let Some(name) = server.image_digest.strip_prefix("dir:") {
            return Ok((copied_rootfs(name), None));
        }
        let digest = Digest::parse(&server.image_digest)
            .map_err(|_| LaunchError::NotLocalRootfs(server.image_digest.clone()))?;
        let (images, pinned) = (self.images.clone(), digest.clone());
        let verified = tokio::task::spawn_blocking(move || images.verify(&pinned))
            .await
            .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
        let record = verified.map_err(|source| LaunchError::Image {
            digest: server.image_digest.clone(),
            source,
        })?;
        Ok((
            ImageStore::rootfs_relative(&digest),
            Some(record.config.config),
        ))
    }

    /// The sandbox's egress proxy on the sockets the helper bound on its host-side address,
    /// serving only its sandbox-side one.
    fn egress_for(
        &self,
        mut egress: SandboxEgress,
        info: &SandboxInfo,
        fds: Vec<zbus::OwnedFd>,
    ) -> Result<EgressProxy, LaunchError> {
        let host: Ipv4Addr = info
            .host_addr
            .parse()
            .map_err(|_| LaunchError::BadHostAddress(info.host_addr.clone()))?;
        egress.expected_peer = info
            .sandbox_addr
            .parse()
            .map_err(|_| LaunchError::BadSandboxAddress(info.sandbox_addr.clone()))?;
        egress.listen = SocketAddr::new(IpAddr::V4(host), self.proxy_port);
        let listeners = Listeners::from_reply(fds).map_err(LaunchError::Listeners)?;
        serve_egress(egress, self.egress.clone(), listeners, host).map_err(LaunchError::Egress)
    }
}

/// Serves a sandbox's egress on the sockets the helper bound for it before its server started:
/// the proxy port, and in transparent mode TLS on `host:443` and DNS on `host:53` (allowlisted
/// names answer `host`). The gateway binds nothing itself, so the server's first connection
/// always finds its proxy listening, and a port someone else holds has already failed the
/// sandbox closed. Must be called within a tokio runtime.
pub fn serve_egress(
    egress: SandboxEgress,
    shared: Arc<EgressShared>,
    listeners: Listeners,
    host: Ipv4Addr,
) -> Result<EgressProxy, EgressError> {
    use std::net::{TcpListener, UdpSocket};
    let proxy = EgressProxy::from_listener(egress, shared, TcpListener::from(listeners.proxy))?;
    if let Some(t) = listeners.transparent {
        proxy.adopt_transparent_listener(TcpListener::from(t.tls))?;
        let (udp, tcp) = (UdpSocket::from(t.dns_udp), TcpListener::from(t.dns_tcp));
        proxy.adopt_dns(Some(udp), Some(tcp), host)?;
    }
    Ok(proxy)
}

fn receiver(
    f: zbus::OwnedFd,
    stream: &'static str,
) -> Result<tokio::net::unix::pipe::Receiver, LaunchError> {
    tokio::net::unix::pipe::Receiver::from_owned_fd(std::os::fd::OwnedFd::from(f))
        .map_err(|source| LaunchError::Stdio { stream, source })
}

fn sender(f: zbus::OwnedFd) -> Result<tokio::net::unix::pipe::Sender, LaunchError> {
    tokio::net::unix::pipe::Sender::from_owned_fd(std::os::fd::OwnedFd::from(f)).map_err(|source| {
        LaunchError::Stdio {
            stream: "stdin",
            source,
        }
    })
}

/// What a sandbox is started for: an installed server, or an image build's install step.
struct Job {
    name: String,
    rootfs: String,
    /// The image's run configuration (`None` for a copied directory).
    image: Option<RunConfig>,
    manifest: Manifest,
    data_dir: String,
    approved_ranges: Vec<ipnet::IpNet>,
    reserved_opt_in: Vec<IpAddr>,
}

/// The most of an install step's stdout or stderr kept (the rest is read and dropped).
const INSTALL_OUTPUT_MAX: usize = 1 << 20;

async fn read_capped(mut from: impl tokio::io::AsyncRead + Unpin) -> Vec<u8> {
    use tokio::io::AsyncReadExt;
    let (mut kept, mut buf) = (Vec::new(), vec![0u8; 16 << 10]);
    while let Ok(n) = from.read(&mut buf).await {
        if n == 0 {
            break;
        }
        let room = INSTALL_OUTPUT_MAX.saturating_sub(kept.len());
        kept.extend_from_slice(&buf[..n.min(room)]);
    }
    kept
}

/// An image build's install step: the sandbox runs its command to the end (stdin closed),
/// and is destroyed, its processes gone, before the builder reads what it left.
impl crate::image::build::install::SandboxRunner for SandboxLauncher {
    type Error = LaunchError;

    async fn run(
        &self,
        job: crate::image::build::install::InstallSandbox,
        timeout: std::time::Duration,
    ) -> Result<crate::image::build::install::Finished, LaunchError> {
        let (launched, id) = self
            .start_job(Job {
                name: job.name,
                rootfs: job.rootfs,
                image: None,
                manifest: job.manifest,
                data_dir: job.data_dir,
                approved_ranges: Vec::new(),
                reserved_opt_in: job.reserved_opt_in,
            })
            .await?;
        let Launched {
            stdout,
            stdin,
            stderr,
            guard,
        } = launched;
        // Held open to the end: the helper ends a sandbox whose stdin the gateway closed.
        let _stdin = stdin;
        let both = async {
            let err = async {
                match stderr {
                    Some(e) => read_capped(e).await,
                    None => Vec::new(),
                }
            };
            tokio::join!(read_capped(stdout), err)
        };
        let finished = match tokio::time::timeout(timeout, both).await {
            Ok((stdout, stderr)) => crate::image::build::install::Finished {
                stdout,
                stderr,
                timed_out: false,
            },
            Err(_) => crate::image::build::install::Finished {
                timed_out: true,
                ..Default::default()
            },
        };
        // A process that closed its stdio could still be writing to the data dir: the
        // sandbox goes (its cgroup killed) before anyone reads the output.
        // (Gone already when the command ended by itself: the helper tears down a sandbox
        // whose processes all exited.)
        let helper = self.helper.get().await?;
        match helper.destroy_sandbox(&id).await {
            Ok(()) | Err(privhelper_api::HelperError::NotFound(_)) => {}
            Err(e) => return Err(LaunchError::Refused(Box::new(e))),
        }
        drop(guard);
        Ok(finished)
    }
}

impl Launcher for SandboxLauncher {
    type Error = LaunchError;

    async fn launch(&self, server: &ServerRecord) -> Result<Launched, LaunchError> {
        self.start(server).await
    }

    fn client_reason(err: &LaunchError) -> &'static str {
        match err {
            LaunchError::Manifest(_) | LaunchError::NotLocalRootfs(_) | LaunchError::Plan(_) => {
                "its installed image or manifest cannot be run"
            }
            LaunchError::Image { .. } => {
                "its image is missing or does not match the digest it was installed with"
            }
            LaunchError::NotInRegistry { .. } => {
                "its registry no longer lists it as installed (sync, then upgrade or remove it)"
            }
            LaunchError::Helper(_) => "the sandbox helper is not reachable",
            LaunchError::Refused(_) => "the sandbox helper refused its sandbox",
            LaunchError::Placeholder(_)
            | LaunchError::BadHostAddress(_)
            | LaunchError::BadSandboxAddress(_)
            | LaunchError::Listeners(_)
            | LaunchError::Egress(_)
            | LaunchError::Stdio { .. } => "the gateway could not set up its sandbox",
        }
    }
}
