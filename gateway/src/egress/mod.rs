//! The egress proxy (DESIGN 3.4-3.6): the only place a real credential meets the network, and
//! only for the hosts it is bound to.
//!
//! One [`EgressProxy`] per sandbox, all sharing one [`EgressShared`] (vault, audit, CA, upstream
//! TLS roots, limits). Each proxy listens on its sandbox's host-side address N.1 and serves only
//! connections from N.2 (the attribution never depends on anything the sandbox says):
//! - HTTP CONNECT to allowlisted `host:port` ([`listener`]), then TLS interception
//!   ([`intercept`]) where every inner request is checked and forwarded ([`forward`]);
//! - plain-HTTP absolute-form requests, only to hosts the manifest allows over HTTP;
//! - transparent mode: TLS arriving on N.1:443, host from SNI; DNS answers ([`dns`]).
//!
//! No sandbox can starve another or the daemon: every socket held for a sandbox takes a slot
//! under that sandbox's caps and under one gateway-wide bound (`slots`); past a cap a new
//! connection is closed at once.
//!
//! Pure parts, unit-tested: [`policy`], [`address_class`], [`addresses`] (the order of the
//! address checks is stated there), [`approvals`], [`request`], [`dns`], [`forms`] (a value's
//! encoded forms, shared with the MCP front's redaction), [`rewrite`], `needles`;
//! [`host_addrs`] reads the host's own addresses from the kernel.
//!
//! The private modules form a stack, each importing only modules below it: `sandbox` (the
//! handle) → `listener` → `intercept` → `forward` → `context` (what a sandbox's connections
//! share) → the pure parts, `connector`, `secrets`, `idle`, `slots`, [`audit`].

pub mod address_class;
pub mod addresses;
pub mod approvals;
pub mod audit;
pub mod ca;
mod connector;
mod context;
pub mod dns;
pub mod forms;
mod forward;
pub mod host_addrs;
mod idle;
mod intercept;
mod listener;
pub mod needles;
pub mod policy;
pub mod request;
pub mod rewrite;
mod sandbox;
pub mod scrub;
mod secrets;
mod slots;
pub mod tls;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use rustls::{ClientConfig, ServerConfig};

use crate::manifest::Manifest;
use crate::vault::{Vault, VaultError};

pub use address_class::{AddressClass, Forbidden};
pub use addresses::{
    AddressGuard, HostsThenSystem, OptInError, Resolve, StaticResolver, SystemResolver,
};
pub use approvals::{ApprovalError, check_approval};
pub use ca::{CA_KEY_SECRET, CacheStats};
pub use host_addrs::{HostAddrs, HostAddrsError};
pub use policy::{Target, make_placeholder};
pub use sandbox::EgressProxy;

#[derive(Debug, thiserror::Error)]
pub enum EgressError {
    #[error("egress configuration: {0}")]
    Config(String),
    #[error("egress TLS: {0}")]
    Tls(String),
    #[error("egress I/O: {0}")]
    Io(String),
    #[error("no randomness available")]
    Random,
    #[error(transparent)]
    Vault(#[from] VaultError),
    #[error(transparent)]
    HostAddrs(#[from] HostAddrsError),
    #[error(transparent)]
    OptIn(#[from] OptInError),
}

/// Limits and timeouts, the same for every sandbox.
#[derive(Debug, Clone)]
pub struct EgressLimits {
    /// Open client connections per sandbox (proxy port and transparent 443 together); past it a
    /// new connection is closed at once.
    pub max_connections: usize,
    /// Open DNS-over-TCP connections per sandbox (transparent mode).
    pub max_dns_connections: usize,
    /// Upstream connections the proxy holds open for one sandbox (pooled or in use); a request
    /// needing another waits up to `connect_timeout` for one to close.
    pub max_upstream_connections: usize,
    /// Every socket the egress proxy holds, all sandboxes together: a bound below the daemon's
    /// fd limit, so the MCP front, the store and the bus always find an fd.
    pub max_gateway_connections: usize,
    /// Time to send a complete request head (slowloris).
    pub header_read_timeout: Duration,
    /// Time to finish the TLS handshake with the sandbox.
    pub handshake_timeout: Duration,
    /// A connection with no byte read or written for this long is closed.
    pub idle_timeout: Duration,
    /// No client connection lives longer than this.
    pub max_connection_lifetime: Duration,
    /// Largest request head (HTTP/1.1 buffer, HTTP/2 header list); larger gets 431.
    pub max_header_bytes: usize,
    /// Request bodies up to this size (with a known length) are read whole and checked before
    /// anything is sent; larger ones are checked as they stream.
    pub max_buffered_body: usize,
    pub resolve_timeout: Duration,
    /// How long a checked name resolution is reused by a sandbox.
    pub resolve_ttl: Duration,
    pub connect_timeout: Duration,
    /// Time for the upstream to answer with a response head.
    pub upstream_timeout: Duration,
    /// How long an opened credential is kept before the vault is asked again.
    pub secret_ttl: Duration,
    /// Leaf certificates kept (LRU).
    pub leaf_cache: usize,
}

impl Default for EgressLimits {
    fn default() -> Self {
        Self {
            max_connections: 256,
            max_dns_connections: 16,
            max_upstream_connections: 128,
            max_gateway_connections: 8192,
            header_read_timeout: Duration::from_secs(10),
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(120),
            max_connection_lifetime: Duration::from_secs(3600),
            max_header_bytes: 64 * 1024,
            max_buffered_body: 1024 * 1024,
            resolve_timeout: Duration::from_secs(5),
            resolve_ttl: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(10),
            upstream_timeout: Duration::from_secs(120),
            secret_ttl: Duration::from_secs(30),
            leaf_cache: 1024,
        }
    }
}

/// Installation-wide settings.
#[derive(Debug, Clone)]
pub struct EgressConfig {
    /// Where the CA certificate (PEM) is written for sandboxes.
    pub ca_cert_path: PathBuf,
    /// An extra CA trusted for upstream TLS, besides the system's roots.
    pub extra_upstream_ca: Option<PathBuf>,
    /// The sandbox address pool; never a destination, approved or not.
    pub sandbox_pool: IpNet,
    /// The gateway's own listen addresses (the MCP front); never a destination. Addresses of
    /// the host's interfaces are refused besides, read from the kernel.
    pub gateway_listen: Vec<IpAddr>,
    pub limits: EgressLimits,
    /// Name resolution; [`SystemResolver`] in production.
    pub resolver: Arc<dyn Resolve>,
}

impl EgressConfig {
    pub fn new(ca_cert_path: PathBuf) -> Self {
        Self {
            ca_cert_path,
            extra_upstream_ca: None,
            sandbox_pool: IpNet::V4(
                ipnet::Ipv4Net::new(Ipv4Addr::new(10, 231, 0, 0), 16).expect("static prefix"),
            ),
            gateway_listen: Vec::new(),
            limits: EgressLimits::default(),
            resolver: Arc::new(SystemResolver),
        }
    }
}

/// What every sandbox's proxy shares.
#[derive(Debug)]
pub struct EgressShared {
    vault: Arc<Vault>,
    audit: audit::EgressAudit,
    certs: Arc<ca::MintingResolver>,
    server_tls: Arc<ServerConfig>,
    client_tls: Arc<ClientConfig>,
    guard: Arc<AddressGuard>,
    limits: EgressLimits,
    resolver: Arc<dyn Resolve>,
    /// The gateway-wide socket bound every sandbox's slots draw from.
    slots: slots::GatewaySlots,
}

impl EgressShared {
    /// Loads (or on first start creates) the CA, writes its certificate, loads upstream roots,
    /// and subscribes to the host's addresses (in the caller's network namespace).
    pub fn new(
        vault: Arc<Vault>,
        audit: impl Into<crate::audit::AuditQueue>,
        config: EgressConfig,
    ) -> Result<Arc<Self>, EgressError> {
        let ca = ca::Ca::load_or_create(&vault, &config.ca_cert_path, tls::provider())?;
        let certs = Arc::new(ca::MintingResolver::new(ca, config.limits.leaf_cache));
        let guard = AddressGuard::new(
            config.sandbox_pool,
            config.gateway_listen,
            HostAddrs::open()?,
        );
        Ok(Arc::new(Self {
            server_tls: tls::server_config(certs.clone())?,
            client_tls: tls::client_config(config.extra_upstream_ca.as_deref())?,
            certs,
            audit: audit::EgressAudit::new(audit.into()),
            vault,
            slots: slots::GatewaySlots::new(config.limits.max_gateway_connections),
            guard: Arc::new(guard),
            limits: config.limits,
            resolver: config.resolver,
        }))
    }

    /// Leaf certificate cache counters.
    pub fn leaf_cache_stats(&self) -> CacheStats {
        self.certs.stats()
    }

    /// The CA certificate sandboxes must trust (PEM).
    pub fn ca_cert_pem(&self) -> &str {
        self.certs.ca().cert_pem()
    }

    pub fn limits(&self) -> &EgressLimits {
        &self.limits
    }

    /// Sockets the egress proxy holds now, every sandbox together (at most
    /// [`EgressLimits::max_gateway_connections`]).
    pub fn open_connections(&self) -> usize {
        self.limits.max_gateway_connections - self.slots.available()
    }

    /// Waits until every audit event recorded so far is in the store.
    pub async fn flush_audit(&self) {
        self.audit.flush().await;
    }
}

/// One sandbox's egress, as the daemon knows it after the helper created the sandbox.
#[derive(Debug, Clone)]
pub struct SandboxEgress {
    pub sandbox_id: String,
    /// N.1:port on the host side of the sandbox's link.
    pub listen: SocketAddr,
    /// N.2: the only peer address served.
    pub expected_peer: Ipv4Addr,
    pub manifest: Arc<Manifest>,
    /// (credential name, placeholder) for each credential of the manifest.
    pub placeholders: Vec<(String, String)>,
    /// Private ranges the admin approved for this server (never more than private space: see
    /// [`addresses`] for the order of checks).
    pub approved_ranges: Vec<IpNet>,
    /// Exact reserved-class addresses the operator opted in to for this sandbox (an image
    /// build's registry mirror: `addresses::ServerAddresses::with_reserved_opt_in`); empty for
    /// servers.
    pub reserved_opt_in: Vec<IpAddr>,
}
