//! `gigmcp.toml`: the daemon's configuration.
//!
//! Parsing is strict on purpose: an unknown key is far more often a typo in a security setting
//! than a harmless extra, so it is an error. Every error names the key (as a dotted path) and the
//! line it is on.

use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};

use ipnet::Ipv4Net;
use serde::Deserialize;

mod images;

pub use crate::image::registry::RegistryConfig;
pub use images::ImagesConfig;

/// Where the packaged default lives.
pub const DEFAULT_PATH: &str = "/etc/gigmcp/gigmcp.toml";

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub gateway: GatewayConfig,
    pub sandbox: SandboxConfig,
    pub egress: EgressSettings,
    pub log: LogConfig,
    pub front: FrontConfig,
    pub images: ImagesConfig,
}

/// The MCP front's defences against clients that hold connections or flood it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FrontConfig {
    /// A request head must arrive within this, from the connection's start (after TLS) or the
    /// end of the previous request; otherwise the connection is closed.
    #[serde(with = "humantime_serde_secs")]
    pub header_timeout: std::time::Duration,
    /// A request body must arrive within this once its head has (else 408).
    #[serde(with = "humantime_serde_secs")]
    pub body_timeout: std::time::Duration,
    #[serde(with = "humantime_serde_secs")]
    pub tls_handshake_timeout: std::time::Duration,
    /// Connections open at once; unset: derived from the daemon's descriptor limit
    /// ([`FrontConfig::max_connections_for`]).
    pub max_connections: Option<usize>,
    /// Connections open at once from one address (IPv6: one /64).
    pub max_connections_per_peer: usize,
    pub h2_max_concurrent_streams: u32,
    pub h2_max_header_list_bytes: u32,
    /// Refusals of unauthenticated requests audited per second; the rest are summarised.
    pub unauthenticated_audit_per_second: u32,
}

/// Descriptors kept for everything but the front's connections (store, sandboxes' stdio and
/// pidfds, egress listeners and upstream connections).
const FD_RESERVE: u64 = 256;
/// The most connections a derived default allows (memory, not descriptors, is then the bound).
const DERIVED_MAX_CONNECTIONS: u64 = 16_384;

impl FrontConfig {
    /// The connection cap: the configured one, or half of what `nofile` (the soft
    /// `RLIMIT_NOFILE`) leaves beyond [`FD_RESERVE`], so that a flood of connections can never
    /// take the descriptors sandboxes and the store need.
    pub fn max_connections_for(&self, nofile: u64) -> usize {
        self.max_connections.unwrap_or_else(|| {
            let derived =
                (nofile.saturating_sub(FD_RESERVE) / 2).clamp(16, DERIVED_MAX_CONNECTIONS);
            usize::try_from(derived).unwrap_or(usize::MAX)
        })
    }
}

impl Default for FrontConfig {
    fn default() -> Self {
        use std::time::Duration;
        Self {
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            tls_handshake_timeout: Duration::from_secs(10),
            max_connections: None,
            max_connections_per_peer: 64,
            h2_max_concurrent_streams: 32,
            h2_max_header_list_bytes: 65536,
            unauthenticated_audit_per_second: 20,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EgressSettings {
    /// A CA (PEM) trusted for upstream TLS besides the system's roots (internal APIs).
    pub extra_ca_file: Option<PathBuf>,
    /// Names resolved here instead of by the system (internal APIs without DNS). Private
    /// addresses still need the server's approved ranges.
    pub hosts: std::collections::BTreeMap<String, Vec<std::net::IpAddr>>,
    /// Open client connections per sandbox on its proxy port and transparent 443 together;
    /// past it a new connection is closed at once.
    pub max_connections_per_sandbox: usize,
    /// Open DNS-over-TCP connections per sandbox (transparent mode).
    pub max_dns_connections_per_sandbox: usize,
    /// Upstream connections the proxy holds for one sandbox.
    pub max_upstream_connections_per_sandbox: usize,
    /// File descriptors kept for the MCP front, the store, the bus and the daemon itself: the
    /// egress proxy's sockets, every sandbox together, stay below the fd limit minus this.
    pub reserved_fds: usize,
}

impl Default for EgressSettings {
    fn default() -> Self {
        Self {
            extra_ca_file: None,
            hosts: Default::default(),
            max_connections_per_sandbox: 256,
            max_dns_connections_per_sandbox: 16,
            max_upstream_connections_per_sandbox: 128,
            reserved_fds: 1024,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GatewayConfig {
    /// SQLite database, images and per-server data live here.
    pub state_dir: PathBuf,
    /// Address the MCP front listens on.
    pub listen: SocketAddr,
    /// `Host` values accepted besides `127.0.0.1:<port>` and `localhost:<port>` (DNS
    /// rebinding: a request naming any other host is refused).
    pub allowed_hosts: Vec<String>,
    /// `Origin` values accepted (browser clients); requests without `Origin` are not affected.
    pub allowed_origins: Vec<String>,
    /// Whether `gigmcp server add --unsigned` (a local rootfs, no registry signature) is allowed.
    pub allow_unsigned_servers: bool,
    /// TLS for the MCP front: a PEM certificate chain and its private key (both or neither).
    pub tls_cert_file: Option<PathBuf>,
    pub tls_key_file: Option<PathBuf>,
    /// A server with no call for this long is stopped (started again on the next call).
    #[serde(with = "humantime_serde_secs")]
    pub server_idle_stop: std::time::Duration,
}

/// `"15m"`-style durations (humantime).
mod humantime_serde_secs {
    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<std::time::Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text).map_err(serde::de::Error::custom)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SandboxConfig {
    /// IPv4 range carved into one /30 link per sandbox.
    pub pool: Ipv4Net,
    /// The bus the privileged helper is on: `system`, or a D-Bus address (a private bus).
    pub bus: String,
    /// The helper's `images_dir`: unsigned servers' root filesystems are copied here.
    pub images_dir: PathBuf,
    /// The helper's `ca_dir`: the gateway writes its CA certificate here for sandboxes.
    pub ca_dir: PathBuf,
    /// The port of each sandbox's egress proxy on its link's host address.
    pub proxy_port: u16,
    /// Each server's sandbox limits (the helper caps them again with its own ceilings).
    pub server_memory_max_bytes: u64,
    pub server_pids_max: u32,
    /// CPU in percent of one core.
    pub server_cpu_percent: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    pub level: LogLevel,
    pub format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines (journald adds its own timestamp).
    Text,
    /// One JSON object per line.
    Json,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            state_dir: PathBuf::from("/var/lib/gigmcp"),
            listen: SocketAddr::from(([127, 0, 0, 1], 8750)),
            allowed_hosts: Vec::new(),
            allowed_origins: Vec::new(),
            allow_unsigned_servers: false,
            tls_cert_file: None,
            tls_key_file: None,
            server_idle_stop: std::time::Duration::from_secs(15 * 60),
        }
    }
}

impl Default for SandboxConfig {
    fn default() -> Self {
        Self {
            pool: "10.231.0.0/16".parse().expect("valid literal"),
            bus: "system".into(),
            images_dir: PathBuf::from("/var/lib/gigmcp/images"),
            ca_dir: PathBuf::from("/var/lib/gigmcp/ca"),
            proxy_port: 3128,
            server_memory_max_bytes: 512 << 20,
            server_pids_max: 256,
            server_cpu_percent: 100,
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: LogLevel::Info,
            format: LogFormat::Text,
        }
    }
}

impl LogLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Error => "error",
            Self::Warn => "warn",
            Self::Info => "info",
            Self::Debug => "debug",
            Self::Trace => "trace",
        }
    }
}

/// A configuration error, located in the file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}: key `{key}`: {message}")]
    Invalid {
        path: PathBuf,
        line: usize,
        key: String,
        message: String,
    },
}

impl ConfigError {
    /// The offending key as a dotted path (`sandbox.pool`), if the error is about one.
    pub fn key(&self) -> Option<&str> {
        match self {
            Self::Invalid { key, .. } => Some(key),
            Self::Read { .. } => None,
        }
    }

    /// The 1-based line of the offending key or value.
    pub fn line(&self) -> Option<usize> {
        match self {
            Self::Invalid { line, .. } => Some(*line),
            Self::Read { .. } => None,
        }
    }
}

impl Config {
    fn validate_front(&self) -> Result<(), (&'static str, String)> {
        let f = &self.front;
        for (key, d) in [
            ("front.header_timeout", f.header_timeout),
            ("front.body_timeout", f.body_timeout),
            ("front.tls_handshake_timeout", f.tls_handshake_timeout),
        ] {
            if d.is_zero() {
                return Err((key, "must be longer than zero".into()));
            }
        }
        for (key, n) in [
            ("front.max_connections", f.max_connections.unwrap_or(1)),
            ("front.max_connections_per_peer", f.max_connections_per_peer),
            (
                "front.h2_max_concurrent_streams",
                f.h2_max_concurrent_streams as usize,
            ),
            (
                "front.h2_max_header_list_bytes",
                f.h2_max_header_list_bytes as usize,
            ),
        ] {
            if n == 0 {
                return Err((key, "must be at least 1".into()));
            }
        }
        Ok(())
    }

    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses and validates `text`; `path` is only used in error messages.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let invalid =
            |span: Option<Range<usize>>, key: String, message: String| ConfigError::Invalid {
                path: path.to_owned(),
                line: span.map_or(1, |s| line_of(text, s.start)),
                key,
                message,
            };
        let de = toml::Deserializer::parse(text)
            .map_err(|e| invalid(e.span(), String::from("(syntax)"), first_line(e.message())))?;
        let config: Config = serde_path_to_error::deserialize(de).map_err(|e| {
            let key = e.path().to_string();
            let inner = e.into_inner();
            invalid(inner.span(), key, first_line(inner.message()))
        })?;
        config.validate().map_err(|(key, message)| {
            let span = locate_key(text, key);
            invalid(span, key.to_owned(), message)
        })?;
        Ok(config)
    }

    /// Checks that need more than a type: returns the dotted key and what is wrong with it.
    fn validate(&self) -> Result<(), (&'static str, String)> {
        self.validate_front()?;
        self.images.validate()?;
        let pool = self.sandbox.pool;
        if pool != pool.trunc() {
            return Err((
                "sandbox.pool",
                format!("{pool} has host bits set; did you mean {}?", pool.trunc()),
            ));
        }
        // A /30 per sandbox: a /24 gives 64 sandboxes, the least that is useful.
        if pool.prefix_len() > 24 {
            return Err((
                "sandbox.pool",
                format!("{pool} is too small: use a /24 or larger (each sandbox takes a /30)"),
            ));
        }
        if !pool.addr().is_private() {
            return Err((
                "sandbox.pool",
                format!("{pool} is not in a private range (RFC 1918)"),
            ));
        }
        for (key, dir) in [
            ("sandbox.images_dir", &self.sandbox.images_dir),
            ("sandbox.ca_dir", &self.sandbox.ca_dir),
        ] {
            if !dir.is_absolute() {
                return Err((key, format!("{} is not an absolute path", dir.display())));
            }
        }
        // The helper binds the proxy port as root and refuses privileged ports (transparent
        // mode's 443 and 53 among them): say so at start, not at the first launch.
        if self.sandbox.proxy_port < 1024 {
            return Err((
                "sandbox.proxy_port",
                format!(
                    "{} is below 1024 (the helper refuses privileged ports)",
                    self.sandbox.proxy_port
                ),
            ));
        }
        if self.gateway.tls_cert_file.is_some() != self.gateway.tls_key_file.is_some() {
            return Err((
                "gateway.tls_key_file",
                "tls_cert_file and tls_key_file go together".into(),
            ));
        }
        let sb = &self.sandbox;
        for (key, too_small) in [
            (
                "sandbox.server_memory_max_bytes",
                sb.server_memory_max_bytes < (16 << 20),
            ),
            ("sandbox.server_pids_max", sb.server_pids_max < 8),
            ("sandbox.server_cpu_percent", sb.server_cpu_percent == 0),
        ] {
            if too_small {
                return Err((
                    key,
                    "too small to run a server (memory >= 16 MiB, pids >= 8, CPU > 0 %)".into(),
                ));
            }
        }
        let eg = &self.egress;
        for (key, value) in [
            (
                "egress.max_connections_per_sandbox",
                eg.max_connections_per_sandbox,
            ),
            (
                "egress.max_dns_connections_per_sandbox",
                eg.max_dns_connections_per_sandbox,
            ),
            (
                "egress.max_upstream_connections_per_sandbox",
                eg.max_upstream_connections_per_sandbox,
            ),
        ] {
            if value == 0 {
                return Err((key, "must be at least 1".into()));
            }
        }
        // The store, the bus, the journal and the front's listener alone take a few dozen.
        if eg.reserved_fds < 64 {
            return Err((
                "egress.reserved_fds",
                format!(
                    "{} leaves the daemon too few fds: use 64 or more",
                    eg.reserved_fds
                ),
            ));
        }
        if !self.gateway.state_dir.is_absolute() {
            return Err((
                "gateway.state_dir",
                format!(
                    "{} is not an absolute path",
                    self.gateway.state_dir.display()
                ),
            ));
        }
        Ok(())
    }
}

fn first_line(message: &str) -> String {
    message.lines().next().unwrap_or_default().trim().to_owned()
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// Finds the span of `table.key` in the document, for errors found after deserialising.
fn locate_key(text: &str, dotted: &str) -> Option<Range<usize>> {
    let (table, key) = dotted.rsplit_once('.')?;
    // The typed parse already succeeded, so the document is well-formed and a line scan for
    // `[table]` then `key =` is reliable for the flat layout this file has.
    let mut in_table = false;
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let trimmed = line.trim();
        if trimmed.starts_with('[') {
            in_table = trimmed.trim_matches(|c| c == '[' || c == ']').trim() == table;
        } else if in_table && trimmed.split('=').next().is_some_and(|k| k.trim() == key) {
            return Some(offset..offset + line.len());
        }
        offset += line.len();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("test.toml"))
    }

    #[test]
    fn empty_file_gives_defaults() {
        assert_eq!(parse("").unwrap(), Config::default());
    }

    #[test]
    fn shipped_default_is_valid_and_matches_builtin_defaults() {
        let text = include_str!("../../etc/gigmcp.toml");
        assert_eq!(parse(text).unwrap(), Config::default());
    }

    #[test]
    fn unknown_key_names_key_and_line() {
        let err = parse("[gateway]\nlisten = \"127.0.0.1:1\"\nstate_dri = \"/x\"\n").unwrap_err();
        assert_eq!(err.key(), Some("gateway.state_dri"), "{err}");
        assert_eq!(err.line(), Some(3), "{err}");
    }

    #[test]
    fn unknown_table_names_key_and_line() {
        let err = parse("\n[gatway]\nlisten = \"127.0.0.1:1\"\n").unwrap_err();
        assert_eq!(err.key(), Some("gatway"), "{err}");
        assert_eq!(err.line(), Some(2), "{err}");
    }

    #[test]
    fn wrong_type_names_key_and_line() {
        let err = parse("[gateway]\n\nlisten = 8750\n").unwrap_err();
        assert_eq!(err.key(), Some("gateway.listen"), "{err}");
        assert_eq!(err.line(), Some(3), "{err}");
    }

    #[test]
    fn bad_cidr_names_key_and_line() {
        let err = parse("[sandbox]\npool = \"10.231.0.0/33\"\n").unwrap_err();
        assert_eq!(err.key(), Some("sandbox.pool"), "{err}");
        assert_eq!(err.line(), Some(2), "{err}");
        let err = parse("[sandbox]\npool = \"not-a-cidr\"\n").unwrap_err();
        assert_eq!(err.key(), Some("sandbox.pool"), "{err}");
    }

    #[test]
    fn semantic_errors_name_key_and_line() {
        let err =
            parse("[log]\nlevel = \"info\"\n[sandbox]\n\npool = \"10.231.0.0/28\"\n").unwrap_err();
        assert_eq!(err.key(), Some("sandbox.pool"), "{err}");
        assert_eq!(err.line(), Some(5), "{err}");
        let err = parse("[sandbox]\npool = \"8.8.0.0/16\"\n").unwrap_err();
        assert_eq!(err.key(), Some("sandbox.pool"), "{err}");
        let err = parse("[sandbox]\npool = \"10.231.0.1/16\"\n").unwrap_err();
        assert!(err.to_string().contains("host bits"), "{err}");
        let err = parse("[gateway]\nstate_dir = \"relative\"\n").unwrap_err();
        assert_eq!(err.key(), Some("gateway.state_dir"), "{err}");
    }

    #[test]
    fn egress_caps_are_checked() {
        let err = parse("[egress]\nmax_connections_per_sandbox = 0\n").unwrap_err();
        assert_eq!(
            err.key(),
            Some("egress.max_connections_per_sandbox"),
            "{err}"
        );
        assert_eq!(err.line(), Some(2), "{err}");
        let err = parse("[egress]\nreserved_fds = 10\n").unwrap_err();
        assert_eq!(err.key(), Some("egress.reserved_fds"), "{err}");
        let ok = parse("[egress]\nmax_dns_connections_per_sandbox = 4\n").unwrap();
        assert_eq!(ok.egress.max_dns_connections_per_sandbox, 4);
    }

    #[test]
    fn bad_enum_value_names_key() {
        let err = parse("[log]\nformat = \"xml\"\n").unwrap_err();
        assert_eq!(err.key(), Some("log.format"), "{err}");
        assert_eq!(err.line(), Some(2), "{err}");
    }

    #[test]
    fn a_zero_front_limit_names_its_key() {
        let e = parse("[front]\nmax_connections_per_peer = 0\n").unwrap_err();
        assert_eq!(e.key(), Some("front.max_connections_per_peer"));
        let e = parse("[front]\nheader_timeout = \"0s\"\n").unwrap_err();
        assert_eq!(e.key(), Some("front.header_timeout"));
    }

    #[test]
    fn the_connection_cap_is_derived_from_the_descriptor_limit_unless_set() {
        let f = FrontConfig::default();
        assert_eq!(f.max_connections_for(1024), 384);
        assert_eq!(f.max_connections_for(100), 16);
        assert_eq!(f.max_connections_for(u64::MAX), 16_384);
        let set = FrontConfig {
            max_connections: Some(7),
            ..FrontConfig::default()
        };
        assert_eq!(set.max_connections_for(1 << 20), 7);
    }

    #[test]
    fn syntax_error_has_line() {
        let err = parse("[gateway]\nlisten = \n").unwrap_err();
        assert_eq!(err.line(), Some(2), "{err}");
    }
}
