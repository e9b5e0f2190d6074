//! What the gateway asks for: a [`SandboxSpec`] and its [`Limits`].

use serde::{Deserialize, Serialize};
use zbus::zvariant::Type;

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
    /// The server's working directory inside the sandbox: absolute, without `.` or `..`, a
    /// directory of the image reached without any symbolic link, not beneath a place the
    /// sandbox mounts over (`/proc`, `/dev`, `/tmp`, `/run`). Empty: the private `/tmp`.
    pub workdir: String,
    /// Per-server writable directory, relative to the helper's `data_root`; empty for none.
    pub data_dir: String,
    /// CA bundle file name inside the helper's `ca_dir`; empty for none.
    pub ca_bundle: String,
    /// The one TCP port the sandbox may connect to, on its link's host address (the proxy).
    /// The helper binds it there before the server starts and hands the listener over (see
    /// `Listeners`). At least 1024, and not one of the host service ports the helper's
    /// configuration reserves.
    pub proxy_port: u16,
    /// Transparent mode, for servers that ignore proxy variables: the sandbox may also reach
    /// its link's host address on TCP `TLS_PORT`, UDP `DNS_PORT` and TCP `DNS_PORT`, the
    /// helper binds those three sockets and returns them in `Created` after the proxy's (see
    /// `Listeners`), and the image's `/etc/resolv.conf` (which must be a regular
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
