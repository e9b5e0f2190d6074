//! Persistent state behind one narrow API.
//!
//! Callers use the [`Store`] trait only; [`sqlite::SqliteStore`] is the embedded default. A
//! Postgres backend for several gateways sharing state would be a second implementation of the
//! same trait: nothing outside this module names SQLite.

mod generation;
mod schema;
pub mod sqlite;

pub use sqlite::SqliteStore;

/// The schema version this build writes; a database with a higher one is refused.
pub const SCHEMA_VERSION: u32 = 4;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "database {path} has schema version {found}, newer than the {supported} this gigmcp understands; upgrade gigmcp (nothing was changed)"
    )]
    NewerSchema {
        path: String,
        found: u32,
        supported: u32,
    },
    #[error("{path} is not a Gig'MCP database (no SQLite header)")]
    NotADatabase { path: String },
    #[error("cannot prepare state directory {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("secret {name} was changed concurrently; try again")]
    Conflict { name: String },
    #[error("{0}")]
    Invalid(String),
    #[error("{what} is in use by {}: nothing was removed", users.join(", "))]
    InUse { what: String, users: Vec<String> },
    #[error(
        "registry {registry}: {role} version {offered} is below the stored {stored} (rollback): nothing was written"
    )]
    Rollback {
        registry: String,
        role: String,
        stored: u64,
        offered: u64,
    },
    #[error("no registry named {0}")]
    UnknownRegistry(String),
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
}

/// A sealed secret as stored (the vault's envelope, opaque here: the store keeps bytes and
/// knows nothing of the cryptography). Byte fields are kept as read so that a tampered length is an
/// authentication failure, not a panic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    pub value_nonce: Vec<u8>,
    pub value_ct: Vec<u8>,
    pub key_nonce: Vec<u8>,
    pub wrapped_key: Vec<u8>,
    pub master_fp: String,
}

/// A secret row: its sealed envelope and bookkeeping. Never a plaintext.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretRecord {
    pub id: String,
    pub name: String,
    pub version: u64,
    pub sealed: Sealed,
    pub created_ms: i64,
    pub updated_ms: i64,
    pub last_used_ms: Option<i64>,
}

/// What `secret list` shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretMeta {
    pub name: String,
    pub version: u64,
    pub created_ms: i64,
    pub updated_ms: i64,
    pub last_used_ms: Option<i64>,
}

/// A new wrapping of one data key, produced by master key rotation.
#[derive(Debug, Clone)]
pub struct Rewrapped {
    pub id: String,
    pub version: u64,
    pub key_nonce: Vec<u8>,
    pub wrapped_key: Vec<u8>,
}

/// One audit trail entry. `detail` is free text and must never carry a secret value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEvent {
    pub ts_ms: i64,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub outcome: String,
    pub detail: String,
}

/// An installed server: the manifest it was approved with and where its image is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerRecord {
    pub name: String,
    pub version: String,
    /// `sha256:<hex>` of the image, or `dir:<path>` for an unsigned local rootfs.
    pub image_digest: String,
    /// The manifest, as JSON.
    pub manifest: String,
    /// `registry` or `unsigned`.
    pub source: String,
    /// Private ranges (CIDR) the admin approved as destinations for this server.
    pub approved_ranges: Vec<String>,
    pub installed_ms: i64,
    /// The registry and target it was installed from (`source` is `registry` when set).
    pub origin: Option<RegistryOrigin>,
}

/// Where a registry server came from: the registry's name and the target it was installed as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryOrigin {
    pub registry: String,
    /// `<name>/<version>`.
    pub target: String,
}

/// A registry the admin added: where its metadata is served and the root the admin pinned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryRecord {
    pub name: String,
    /// An https URL (http only to loopback) or an absolute directory path.
    pub location: String,
    /// The root.json bytes the admin pinned at `registry add`.
    pub pinned_root: Vec<u8>,
    /// A self-hosted registry's CA (PEM), trusted besides the system's roots for its HTTPS;
    /// its bytes are kept, not its path, so what the admin pinned cannot change underneath.
    pub ca_pem: Option<Vec<u8>>,
    pub added_ms: i64,
}

/// The newest verified metadata file of one role, byte for byte as the registry served it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleBody {
    /// `root`, `timestamp`, `snapshot` or `targets`.
    pub role: String,
    pub version: u64,
    pub body: Vec<u8>,
}

#[cfg(test)]
impl ServerRecord {
    /// An unsigned server whose manifest only names `command`: what the unit tests install.
    pub(crate) fn unsigned_for_test(name: &str, command: &str) -> Self {
        let manifest = serde_json::json!({"name": name, "version": "1", "command": [command]});
        Self {
            name: name.into(),
            version: "1".into(),
            image_digest: "dir:/".into(),
            manifest: manifest.to_string(),
            source: "unsigned".into(),
            approved_ranges: Vec::new(),
            installed_ms: now_ms(),
            origin: None,
        }
    }
}

/// An endpoint and its servers, each with its tool subset (`["*"]`: all).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointRecord {
    pub name: String,
    pub servers: Vec<(String, Vec<String>)>,
}

/// A bearer token, as stored: never the token itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRecord {
    pub id: String,
    pub endpoint: String,
    pub hash: Vec<u8>,
    pub label: String,
    pub created_ms: i64,
    pub expires_ms: Option<i64>,
    pub revoked_ms: Option<i64>,
}

/// A tool's definition (canonical JSON of name, description and input schema), approved or
/// seen and awaiting approval.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolDefinition {
    pub server: String,
    pub tool: String,
    pub approved: bool,
    pub definition: String,
    /// SHA-256 of `definition`, hex.
    pub digest: String,
    pub seen_ms: i64,
}

/// Where what endpoints offer stands (servers, endpoints with their subsets and descriptions,
/// tool definitions). Two equal generations mean none of that was written in between, by this
/// process or another one; a cache of it is valid while the generation stays the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Generation {
    pub written_here: u64,
    pub written_elsewhere: i64,
}

/// Everything the gateway persists. Implementations must make each method atomic.
pub trait Store: Send + Sync + std::fmt::Debug {
    /// The current [`Generation`]: cheap enough to ask on every request.
    fn offer_generation(&self) -> Result<Generation, StoreError>;
    /// Fingerprint of the master key the store's data keys are wrapped with, once one is set.
    fn master_fingerprint(&self) -> Result<Option<String>, StoreError>;
    /// Records `fp` as the store's master key if none is recorded yet; returns the recorded one.
    fn claim_master_fingerprint(&self, fp: &str) -> Result<String, StoreError>;

    fn secret_get(&self, name: &str) -> Result<Option<SecretRecord>, StoreError>;
    /// Writes `record` if the stored version of its name is still `expected` (`None`: absent).
    /// Otherwise nothing is written and [`StoreError::Conflict`] is returned.
    fn secret_put(&self, record: &SecretRecord, expected: Option<u64>) -> Result<(), StoreError>;
    fn secret_list(&self) -> Result<Vec<SecretMeta>, StoreError>;
    fn secret_all(&self) -> Result<Vec<SecretRecord>, StoreError>;
    /// Returns whether a secret of that name existed.
    fn secret_remove(&self, name: &str) -> Result<bool, StoreError>;
    fn secret_mark_used(&self, name: &str, ts_ms: i64) -> Result<(), StoreError>;
    /// Replaces every wrapped data key and the recorded master fingerprint in one transaction.
    /// Fails with nothing changed unless `rewrapped` covers exactly the rows wrapped by `old_fp`
    /// at the versions given.
    fn rewrap_all(
        &self,
        old_fp: &str,
        new_fp: &str,
        rewrapped: &[Rewrapped],
    ) -> Result<(), StoreError>;

    fn audit_append(&self, event: &AuditEvent) -> Result<(), StoreError>;
    /// Appends several events in one transaction (one disk sync for the lot).
    fn audit_append_many(&self, events: &[AuditEvent]) -> Result<(), StoreError>;
    /// The newest `limit` events, newest first.
    fn audit_recent(&self, limit: u32) -> Result<Vec<AuditEvent>, StoreError>;

    /// Adds a server; `Ok(false)` if one of that name exists (nothing changed).
    fn server_add(&self, server: &ServerRecord) -> Result<bool, StoreError>;
    fn server_get(&self, name: &str) -> Result<Option<ServerRecord>, StoreError>;
    fn server_list(&self) -> Result<Vec<ServerRecord>, StoreError>;
    /// Removes a server with its tool definitions; `Ok(false)` if there is none.
    /// [`StoreError::InUse`] (nothing removed) while an endpoint exposes it.
    fn server_remove(&self, name: &str) -> Result<bool, StoreError>;
    /// Replaces the record of `server.name` if its current `image_digest` is `expected_digest`
    /// (an upgrade from what the caller showed the admin); `Ok(false)`, nothing changed,
    /// otherwise. Tool definitions are kept: a changed one waits for approval as ever.
    fn server_replace(
        &self,
        server: &ServerRecord,
        expected_digest: &str,
    ) -> Result<bool, StoreError>;

    /// Adds a registry; `Ok(false)` if the name is taken (nothing changed).
    fn registry_add(&self, registry: &RegistryRecord) -> Result<bool, StoreError>;
    fn registry_get(&self, name: &str) -> Result<Option<RegistryRecord>, StoreError>;
    fn registry_list(&self) -> Result<Vec<RegistryRecord>, StoreError>;
    /// Removes a registry and its metadata; `Ok(false)` if there is none.
    /// [`StoreError::InUse`] (nothing removed) while a server's origin names it.
    fn registry_remove(&self, name: &str) -> Result<bool, StoreError>;
    /// The registry's stored metadata (root, timestamp, snapshot, targets: those present, in
    /// that order) and when it was last synced. [`StoreError::UnknownRegistry`] if none.
    fn registry_metadata(&self, name: &str) -> Result<(Vec<RoleBody>, Option<i64>), StoreError>;
    /// Replaces the registry's metadata by `bodies` in one transaction, refusing with
    /// [`StoreError::Rollback`] (nothing written) if any role's version is below the stored
    /// one, or a stored role is missing: checked under the write lock, so a concurrent sync
    /// cannot make it go backwards either.
    fn registry_metadata_put(
        &self,
        name: &str,
        bodies: &[RoleBody],
        synced_ms: i64,
    ) -> Result<(), StoreError>;

    /// Adds an endpoint with its servers (which must exist); `Ok(false)` if the name is taken.
    fn endpoint_add(&self, endpoint: &EndpointRecord) -> Result<bool, StoreError>;
    fn endpoint_get(&self, name: &str) -> Result<Option<EndpointRecord>, StoreError>;

    /// Sets the endpoint's own description of a server's tool; `Ok(false)` if the endpoint
    /// does not expose that server.
    fn endpoint_describe(
        &self,
        endpoint: &str,
        server: &str,
        tool: &str,
        description: &str,
    ) -> Result<bool, StoreError>;
    /// (server, tool, description) overrides of an endpoint.
    fn endpoint_descriptions(
        &self,
        endpoint: &str,
    ) -> Result<Vec<(String, String, String)>, StoreError>;

    fn token_add(&self, token: &TokenRecord) -> Result<(), StoreError>;
    fn token_by_hash(&self, hash: &[u8]) -> Result<Option<TokenRecord>, StoreError>;
    fn tool_definitions(&self, server: &str) -> Result<Vec<ToolDefinition>, StoreError>;
    /// Inserts or replaces definitions (by server, tool and state), in one transaction.
    fn tool_definitions_put(&self, defs: &[ToolDefinition]) -> Result<(), StoreError>;
    /// Makes a tool's pending definition the approved one; `Ok(false)` if none is pending.
    fn tool_approve(&self, server: &str, tool: &str) -> Result<bool, StoreError>;
    /// Marks a token revoked; `Ok(false)` if there is no such (unrevoked) token.
    fn token_revoke(&self, id: &str, now_ms: i64) -> Result<bool, StoreError>;
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    let elapsed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX)
}
