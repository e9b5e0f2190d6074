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

use serde::{Deserialize, Serialize};
use zbus::OwnedFd;
use zbus::zvariant::Type;

/// The helper's well-known name on the system bus.
pub const BUS_NAME: &str = "org.gigmcp.PrivHelper1";
/// The object that serves [`INTERFACE`].
pub const OBJECT_PATH: &str = "/org/gigmcp/PrivHelper1";
/// The interface the gateway calls to create and destroy sandboxes.
pub const INTERFACE: &str = "org.gigmcp.PrivHelper1";

/// What the gateway asks for. Bounds are checked by the helper (its `validate` module).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Type)]
pub struct SandboxSpec {
    /// The server's id: `[a-z0-9][a-z0-9_-]{0,63}`. Used in names and logs only.
    pub server: String,
    /// The image's root filesystem, relative to the helper's `images_dir` (an absolute path
    /// must lie inside it). Resolved without following any symlink.
    pub rootfs: String,
    /// The server's command line, run by `gigmcp-sandbox-init` inside the sandbox.
    pub argv: Vec<String>,
    /// The server's complete environment (the sandbox starts from an empty one). In values
    /// (never names), each occurrence of [`PROXY_ADDR_TOKEN`] is replaced by the link's host
    /// address, which the gateway only learns from the reply (e.g.
    /// `HTTPS_PROXY=http://@GIGMCP_PROXY_ADDR@:3128`). Nothing else is substituted.
    pub env: Vec<(String, String)>,
    /// Per-server writable directory, relative to the helper's `data_root`; empty for none.
    pub data_dir: String,
    /// CA bundle file name inside the helper's `ca_dir`; empty for none.
    pub ca_bundle: String,
    /// The one TCP port the sandbox may connect to, on its link's host address (the proxy).
    /// With `transparent` it may not be [`TLS_PORT`] or [`DNS_PORT`].
    pub proxy_port: u16,
    /// Transparent mode, for servers that ignore proxy variables: the sandbox may also reach
    /// its link's host address on TCP [`TLS_PORT`], UDP [`DNS_PORT`] and TCP [`DNS_PORT`], the
    /// helper binds those three sockets and returns them in [`Created`] (see
    /// [`TransparentSockets`]), and the image's `/etc/resolv.conf` (which must be a regular
    /// file) is replaced by one naming the host address as the only nameserver.
    pub transparent: bool,
    pub limits: Limits,
}

/// Replaced by the sandbox's host address (`SandboxInfo::host_addr`, dotted IPv4) in the values
/// of [`SandboxSpec::env`] before the server starts: the proxy's address is fixed by the slot the
/// helper picks, after the gateway has sent the spec. A literal, exact-match token (no
/// expression, no escaping, no other variable): an address is at most 15 bytes, shorter than the
/// token, so no value can grow past the checked bounds.
pub const PROXY_ADDR_TOKEN: &str = "@GIGMCP_PROXY_ADDR@";

/// Resource limits; each is capped by the helper's configured ceiling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Type)]
pub struct Limits {
    pub memory_max_bytes: u64,
    pub pids_max: u32,
    /// CPU time in percent of one core (100 = one full core).
    pub cpu_percent: u32,
}

/// A live sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Type)]
pub struct SandboxInfo {
    pub id: String,
    pub server: String,
    /// Index of the sandbox's /30 in the pool.
    pub slot: u32,
    /// Address of the host end of the link: where the proxy listens.
    pub host_addr: String,
    /// Address of the sandbox end of the link.
    pub sandbox_addr: String,
    /// Host pid of the sandbox's outermost process (bwrap).
    pub pid: u32,
}

/// What `CreateSandbox` returns: the sandbox, the server's stdin (write end), stdout and
/// stderr (read ends), a pidfd of the sandbox's outermost process, and the transparent-mode
/// sockets: `[tls, dns_udp, dns_tcp]` when the spec asked for transparent mode, else empty
/// (see [`TransparentSockets`]).
pub type Created = (
    SandboxInfo,
    OwnedFd,
    OwnedFd,
    OwnedFd,
    OwnedFd,
    Vec<OwnedFd>,
);

/// The TCP port a transparent-mode sandbox connects to for TLS (its DNS answers point there).
pub const TLS_PORT: u16 = 443;
/// The port, UDP and TCP, of a transparent-mode sandbox's nameserver.
pub const DNS_PORT: u16 = 53;

/// The sockets the helper made for a transparent-mode sandbox, all in the host network
/// namespace, bound to the link's host address (`SandboxInfo::host_addr`) *and* to the link
/// itself (`SO_BINDTODEVICE`): packets arriving on any other interface never reach them. The
/// host's own processes can still connect (local delivery), but never from the sandbox's
/// address, so the server must accept a peer only if it is `SandboxInfo::sandbox_addr` (on the
/// link, nftables drops every other source). Blocking mode, as the helper made them: set
/// `O_NONBLOCK` before handing them to a reactor.
#[derive(Debug)]
pub struct TransparentSockets {
    /// A listening TCP socket on `host_addr:443`.
    pub tls: std::os::fd::OwnedFd,
    /// A UDP socket bound to `host_addr:53`.
    pub dns_udp: std::os::fd::OwnedFd,
    /// A listening TCP socket on `host_addr:53`.
    pub dns_tcp: std::os::fd::OwnedFd,
}

impl TransparentSockets {
    /// The order of the sockets in [`Created`]'s last field.
    pub fn into_vec(self) -> Vec<OwnedFd> {
        vec![self.tls.into(), self.dns_udp.into(), self.dns_tcp.into()]
    }

    /// Splits [`Created`]'s last field: `None` when it is empty (not transparent mode), an
    /// error when it has any other number of fds.
    pub fn from_reply(fds: Vec<OwnedFd>) -> Result<Option<Self>, FdCountError> {
        let n = fds.len();
        let mut fds = fds.into_iter().map(std::os::fd::OwnedFd::from);
        match (fds.next(), fds.next(), fds.next(), fds.next()) {
            (None, ..) => Ok(None),
            (Some(tls), Some(dns_udp), Some(dns_tcp), None) => Ok(Some(Self {
                tls,
                dns_udp,
                dns_tcp,
            })),
            _ => Err(FdCountError(n)),
        }
    }
}

/// A `CreateSandbox` reply whose transparent-mode fd list is neither empty nor three long.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("expected 0 or 3 transparent-mode fds, got {0}")]
pub struct FdCountError(pub usize);

/// Errors on the wire are named `org.gigmcp.PrivHelper1.Error.<Variant>`.
#[derive(Debug, zbus::DBusError)]
#[zbus(prefix = "org.gigmcp.PrivHelper1.Error")]
pub enum HelperError {
    #[zbus(error)]
    ZBus(zbus::Error),
    /// The caller is not the configured gateway uid.
    PermissionDenied(String),
    /// A field of the spec is malformed or out of bounds.
    InvalidSpec(String),
    /// The rootfs does not resolve to a directory inside the images directory.
    RootfsOutsideImages(String),
    /// The rootfs lacks a directory the sandbox needs as a mount point.
    RootfsIncomplete(String),
    /// The data dir does not resolve inside the data root.
    DataDirOutsideRoot(String),
    /// The CA bundle does not resolve to a regular file inside the CA directory.
    InvalidCaBundle(String),
    /// Every /30 slot (or sandbox uid) is in use.
    NoFreeSlot(String),
    /// No live sandbox has that id.
    NotFound(String),
    /// Setting up or tearing down failed on the host; the message says which step.
    Failed(String),
}

#[zbus::proxy(
    interface = "org.gigmcp.PrivHelper1",
    default_service = "org.gigmcp.PrivHelper1",
    default_path = "/org/gigmcp/PrivHelper1"
)]
pub trait PrivHelper {
    fn create_sandbox(&self, spec: &SandboxSpec) -> Result<Created, HelperError>;
    fn destroy_sandbox(&self, id: &str) -> Result<(), HelperError>;
    fn list_sandboxes(&self) -> Result<Vec<SandboxInfo>, HelperError>;

    /// A sandbox ended and its resources are gone. `code` is bwrap's exit code (128 + n when
    /// the server was killed by signal n), or -1 with `signal` set when bwrap itself was killed.
    #[zbus(signal)]
    fn sandbox_exited(
        &self,
        id: String,
        code: i32,
        signal: i32,
        reason: String,
    ) -> zbus::Result<()>;
}
