//! What crosses the bus: each record as an `a{sv}` dictionary (the idiom of systemd and
//! NetworkManager: a client ignores keys it does not know, a newer daemon may add some), lists
//! as `aa{sv}`. Keys are snake_case; optional fields are absent rather than empty. The domain
//! types stay free of D-Bus: each wire struct here converts from its domain type (the daemon's
//! side) and back (the client's side, [`super::client::DbusAdmin`]), so the CLI prints the same
//! records whichever way they came. docs/DBUS.md lists every key.
//!
//! Deliberately absent: any secret value. A token's secret is the one exception, in the reply
//! to `TokenCreate` only (a method reply goes to the caller alone, never broadcast).

use zbus::{DeserializeDict, SerializeDict, Type};

use crate::admin::{AdminError, Installed, RegistryAdded, RegistryInfo, Shown, Upgraded};
use crate::catalog::SyncReport;
use crate::catalog::install::Hit;
use crate::image::{GcReport, ImageRecord};
use crate::store::{RegistryOrigin, RegistryRecord, SecretMeta, ServerRecord, ToolDefinition};
use crate::tokens::NewToken;
use crate::tuf::{RootInfo, Versions};
use crate::vault::{Fingerprint, SetOutcome, VaultStatus};

/// A record the daemon sent that does not convert back (a different daemon version).
fn garbled(what: &str, why: impl std::fmt::Display) -> AdminError {
    AdminError::Refused(format!("the daemon's {what} does not parse: {why}"))
}

#[derive(Debug, Clone, SerializeDict, DeserializeDict, Type)]
#[zbus(signature = "a{sv}")]
pub struct SecretWire {
    name: String,
    version: u64,
    created_ms: i64,
    updated_ms: i64,
    last_used_ms: Option<i64>,
}

impl From<SecretMeta> for SecretWire {
    fn from(m: SecretMeta) -> Self {
        Self {
            name: m.name,
            version: m.version,
            created_ms: m.created_ms,
            updated_ms: m.updated_ms,
            last_used_ms: m.last_used_ms,
        }
    }
}

impl From<SecretWire> for SecretMeta {
    fn from(w: SecretWire) -> Self {
        Self {
            name: w.name,
            version: w.version,
            created_ms: w.created_ms,
            updated_ms: w.updated_ms,
            last_used_ms: w.last_used_ms,
        }
    }
}

#[derive(Debug, Clone, SerializeDict, DeserializeDict, Type)]
#[zbus(signature = "a{sv}")]
pub struct SetWire {
    version: u64,
    created: bool,
}

impl From<SetOutcome> for SetWire {
    fn from(o: SetOutcome) -> Self {
        Self {
            version: o.version,
            created: o.created,
        }
    }
}

impl From<SetWire> for SetOutcome {
    fn from(w: SetWire) -> Self {
        Self {
            version: w.version,
            created: w.created,
        }
    }
}

#[derive(Debug, Clone, SerializeDict, DeserializeDict, Type)]
#[zbus(signature = "a{sv}")]
pub struct VaultStatusWire {
    fingerprint: String,
    secrets: u64,
    damaged: Vec<String>,
}

impl From<VaultStatus> for VaultStatusWire {
    fn from(s: VaultStatus) -> Self {
        Self {
            fingerprint: s.fingerprint.to_hex(),
            secrets: s.secrets as u64,
            damaged: s.damaged,
        }
    }
}

impl TryFrom<VaultStatusWire> for VaultStatus {
    type Error = AdminError;
    fn try_from(w: VaultStatusWire) -> Result<Self, AdminError> {
        Ok(Self {
            fingerprint: Fingerprint::from_hex(&w.fingerprint)
                .ok_or_else(|| garbled("fingerprint", &w.fingerprint))?,
            secrets: w.secrets as usize,
            damaged: w.damaged,
        })
    }
}

#[derive(Debug, Clone, SerializeDict, DeserializeDict, Type)]
#[zbus(signature = "a{sv}")]
pub struct ServerWire {
    name: String,
    version: String,
    image_digest: String,
    manifest: String,
    source: String,
    approved_ranges: Vec<String>,
    installed_ms: i64,
    origin_registry: Option<String>,
    origin_target: Option<String>,
}

impl From<ServerRecord> for ServerWire {
    fn from(r: ServerRecord) -> Self {
        let (origin_registry, origin_target) = match r.origin {
            Some(o) => (Some(o.registry), Some(o.target)),
            None => (None, None),
        };
        Self {
            name: r.name,
            version: r.version,
            image_digest: r.image_digest,
            manifest: r.manifest,
            source: r.source,
            approved_ranges: r.approved_ranges,
            installed_ms: r.installed_ms,
            origin_registry,
            origin_target,
        }
    }
}

impl From<ServerWire> for ServerRecord {
    fn from(w: ServerWire) -> Self {
        Self {
            name: w.name,
            version: w.version,
            image_digest: w.image_digest,
            manifest: w.manifest,
            source: w.source,
            approved_ranges: w.approved_ranges,
            installed_ms: w.installed_ms,
            origin: match (w.origin_registry, w.origin_target) {
                (Some(registry), Some(target)) => Some(RegistryOrigin { registry, target }),
                _ => None,
            },
        }
    }
}

#[derive(Debug, Clone, SerializeDict, DeserializeDict, Type)]
#[zbus(signature = "a{sv}")]
pub struct ToolWire {
    server: String,
    tool: String,
    approved: bool,
    definition: String,
    digest: String,
    seen_ms: i64,
}

impl From<ToolDefinition> for ToolWire {
    fn from(d: ToolDefinition) -> Self {
        Self {
            server: d.server,
            tool: d.tool,
            approved: d.approved,
            definition: d.definition,
            digest: d.digest,
            seen_ms: d.seen_ms,
        }
    }
}

impl From<ToolWire> for ToolDefinition {
    fn from(w: ToolWire) -> Self {
        Self {
            server: w.server,
            tool: w.tool,
            approved: w.approved,
            definition: w.definition,
            digest: w.digest,
            seen_ms: w.seen_ms,
        }
    }
}

/// A new token: its id and, this once, its secret (only its hash is kept).
#[derive(SerializeDict, DeserializeDict, Type)]
#[zbus(signature = "a{sv}")]
pub struct NewTokenWire {
    id: String,
    secret: String,
}

impl std::fmt::Debug for NewTokenWire {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewTokenWire")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl From<NewToken> for NewTokenWire {
    fn from(t: NewToken) -> Self {
        Self {
            id: t.id,
            secret: t.secret.to_string(),
        }
    }
}

impl From<NewTokenWire> for NewToken {
    fn from(mut w: NewTokenWire) -> Self {
        let secret = zeroize::Zeroizing::new(std::mem::take(&mut w.secret));
        Self {
            hash: crate::tokens::hash(&secret),
            id: w.id,
            secret,
        }
    }
}

/// An installed image: the digest and figures a `busctl` reader wants, and the whole record
/// as JSON (the image store's own format, `index/<hex>.json`) for a client to rebuild it.
#[derive(Debug, Clone, SerializeDict, DeserializeDict, Type)]
#[zbus(signature = "a{sv}")]
pub struct ImageWire {
    digest: String,
    unpacked_bytes: u64,
    layers: u64,
    record_json: String,
    /// Only in `ImageList`: the servers using it.
    servers: Option<Vec<String>>,
}

impl ImageWire {
    pub fn new(r: &ImageRecord, servers: Option<Vec<String>>) -> Result<Self, AdminError> {
        Ok(Self {
            digest: r.pinned.to_string(),
            unpacked_bytes: r.unpacked_bytes,
            layers: r.layers.len() as u64,
            record_json: serde_json::to_string(r)
                .map_err(|e| AdminError::Refused(format!("image record: {e}")))?,
            servers,
        })
    }

    pub fn into_record(self) -> Result<(ImageRecord, Vec<String>), AdminError> {
        let r = serde_json::from_str(&self.record_json).map_err(|e| garbled("image record", e))?;
        Ok((r, self.servers.unwrap_or_default()))
    }
}

#[derive(Debug, Clone, SerializeDict, DeserializeDict, Type)]
#[zbus(signature = "a{sv}")]
pub struct GcWire {
    images: Vec<String>,
    blobs: Vec<String>,
    tmp: Vec<String>,
    bytes_freed: u64,
}

impl From<GcReport> for GcWire {
    fn from(r: GcReport) -> Self {
        Self {
            images: r.images.iter().map(ToString::to_string).collect(),
            blobs: r.blobs.iter().map(ToString::to_string).collect(),
            tmp: r.tmp,
            bytes_freed: r.bytes_freed,
        }
    }
}

impl TryFrom<GcWire> for GcReport {
    type Error = AdminError;
    fn try_from(w: GcWire) -> Result<Self, AdminError> {
        let digests = |v: Vec<String>| {
            v.iter()
                .map(|d| crate::image::digest::Digest::parse(d).map_err(|e| garbled("digest", e)))
                .collect::<Result<Vec<_>, _>>()
        };
        Ok(Self {
            images: digests(w.images)?,
            blobs: digests(w.blobs)?,
            tmp: w.tmp,
            bytes_freed: w.bytes_freed,
        })
    }
}

#[derive(Debug, Clone, SerializeDict, DeserializeDict, Type)]
#[zbus(signature = "a{sv}")]
pub struct HitWire {
    registry: String,
    target: String,
    description: Option<String>,
    problem: Option<String>,
}

impl From<Hit> for HitWire {
    fn from(h: Hit) -> Self {
        Self {
            registry: h.registry,
            target: h.target,
            description: h.description,
            problem: h.problem,
        }
    }
}

impl From<HitWire> for Hit {
    fn from(w: HitWire) -> Self {
        Self {
            registry: w.registry,
            target: w.target,
            description: w.description,
            problem: w.problem,
        }
    }
}

#[derive(Debug, Clone, SerializeDict, DeserializeDict, Type)]
#[zbus(signature = "a{sv}")]
pub struct ShownWire {
    registry: String,
    target: String,
    description: Option<String>,
    image: String,
    entitlements: String,
}

impl From<Shown> for ShownWire {
    fn from(s: Shown) -> Self {
        Self {
            registry: s.registry,
            target: s.target,
            description: s.description,
            image: s.image,
            entitlements: s.entitlements,
        }
    }
}

impl From<ShownWire> for Shown {
    fn from(w: ShownWire) -> Self {
        Self {
            registry: w.registry,
            target: w.target,
            description: w.description,
            image: w.image,
            entitlements: w.entitlements,
        }
    }
}

#[derive(Debug, Clone, SerializeDict, DeserializeDict, Type)]
#[zbus(signature = "a{sv}")]
pub struct InstalledWire {
    record: ServerWire,
    registry: String,
    target: String,
    notes: Vec<String>,
}

impl From<Installed> for InstalledWire {
    fn from(i: Installed) -> Self {
        Self {
            record: i.record.into(),
            registry: i.registry,
            target: i.target,
            notes: i.notes,
        }
    }
}

impl From<InstalledWire> for Installed {
    fn from(w: InstalledWire) -> Self {
        Self {
            record: w.record.into(),
            registry: w.registry,
            target: w.target,
            notes: w.notes,
        }
    }
}

/// `state` is `current` (nothing newer: `version`) or `replaced` (`record`, `from`, `diff`).
#[derive(Debug, Clone, SerializeDict, DeserializeDict, Type)]
#[zbus(signature = "a{sv}")]
pub struct UpgradedWire {
    state: String,
    version: Option<String>,
    record: Option<ServerWire>,
    from: Option<String>,
    diff: Option<String>,
}

impl From<Upgraded> for UpgradedWire {
    fn from(u: Upgraded) -> Self {
        match u {
            Upgraded::Current { version } => Self {
                state: "current".into(),
                version: Some(version),
                record: None,
                from: None,
                diff: None,
            },
            Upgraded::Replaced { record, from, diff } => Self {
                state: "replaced".into(),
                version: Some(record.version.clone()),
                record: Some((*record).into()),
                from: Some(from),
                diff: Some(diff),
            },
        }
    }
}

impl TryFrom<UpgradedWire> for Upgraded {
    type Error = AdminError;
    fn try_from(w: UpgradedWire) -> Result<Self, AdminError> {
        match (w.state.as_str(), w.record) {
            ("current", _) => Ok(Upgraded::Current {
                version: w.version.unwrap_or_default(),
            }),
            ("replaced", Some(record)) => Ok(Upgraded::Replaced {
                record: Box::new(record.into()),
                from: w.from.unwrap_or_default(),
                diff: w.diff.unwrap_or_default(),
            }),
            (state, _) => Err(garbled("upgrade result", state)),
        }
    }
}

#[derive(Debug, Clone, SerializeDict, DeserializeDict, Type)]
#[zbus(signature = "a{sv}")]
pub struct VersionsWire {
    root: u64,
    timestamp: u64,
    snapshot: u64,
    targets: u64,
}

impl From<Versions> for VersionsWire {
    fn from(v: Versions) -> Self {
        Self {
            root: v.root,
            timestamp: v.timestamp,
            snapshot: v.snapshot,
            targets: v.targets,
        }
    }
}

impl From<VersionsWire> for Versions {
    fn from(w: VersionsWire) -> Self {
        Self {
            root: w.root,
            timestamp: w.timestamp,
            snapshot: w.snapshot,
            targets: w.targets,
        }
    }
}

#[derive(Debug, Clone, SerializeDict, DeserializeDict, Type)]
#[zbus(signature = "a{sv}")]
pub struct SyncWire {
    before: VersionsWire,
    after: VersionsWire,
    targets: u64,
    changed: bool,
}

impl From<SyncReport> for SyncWire {
    fn from(r: SyncReport) -> Self {
        Self {
            before: r.before.into(),
            after: r.after.into(),
            targets: r.targets as u64,
            changed: r.changed,
        }
    }
}

impl From<SyncWire> for SyncReport {
    fn from(w: SyncWire) -> Self {
        Self {
            before: w.before.into(),
            after: w.after.into(),
            targets: w.targets as usize,
            changed: w.changed,
        }
    }
}

/// A registry as added: what was pinned (public data: a root and a CA certificate).
#[derive(Debug, Clone, SerializeDict, DeserializeDict, Type)]
#[zbus(signature = "a{sv}")]
pub struct RegistryWire {
    name: String,
    location: String,
    pinned_root: Vec<u8>,
    ca_pem: Option<Vec<u8>>,
    added_ms: i64,
}

impl From<RegistryRecord> for RegistryWire {
    fn from(r: RegistryRecord) -> Self {
        Self {
            name: r.name,
            location: r.location,
            pinned_root: r.pinned_root,
            ca_pem: r.ca_pem,
            added_ms: r.added_ms,
        }
    }
}

impl From<RegistryWire> for RegistryRecord {
    fn from(w: RegistryWire) -> Self {
        Self {
            name: w.name,
            location: w.location,
            pinned_root: w.pinned_root,
            ca_pem: w.ca_pem,
            added_ms: w.added_ms,
        }
    }
}

/// `RegistryAdd`'s reply: the record, the pinned root, and the first sync's report or why it
/// was refused (the registry stays added, unsynced).
#[derive(Debug, Clone, SerializeDict, DeserializeDict, Type)]
#[zbus(signature = "a{sv}")]
pub struct RegistryAddedWire {
    record: RegistryWire,
    root_version: u64,
    root_expires_ms: u64,
    root_key_ids: Vec<String>,
    root_consistent_snapshot: bool,
    first_sync: Option<SyncWire>,
    first_sync_error: Option<String>,
}

fn ms(t: std::time::SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl From<RegistryAdded> for RegistryAddedWire {
    fn from(a: RegistryAdded) -> Self {
        let (first_sync, first_sync_error) = match a.first_sync {
            Ok(r) => (Some(r.into()), None),
            Err(e) => (None, Some(e.to_string())),
        };
        Self {
            record: a.record.into(),
            root_version: a.root.version,
            root_expires_ms: ms(a.root.expires),
            root_key_ids: a.root.key_ids,
            root_consistent_snapshot: a.root.consistent_snapshot,
            first_sync,
            first_sync_error,
        }
    }
}

impl From<RegistryAddedWire> for RegistryAdded {
    fn from(w: RegistryAddedWire) -> Self {
        Self {
            record: w.record.into(),
            root: RootInfo {
                version: w.root_version,
                expires: std::time::UNIX_EPOCH
                    + std::time::Duration::from_millis(w.root_expires_ms),
                key_ids: w.root_key_ids,
                consistent_snapshot: w.root_consistent_snapshot,
            },
            first_sync: match (w.first_sync, w.first_sync_error) {
                (Some(r), _) => Ok(r.into()),
                (None, e) => Err(AdminError::Refused(e.unwrap_or_default())),
            },
        }
    }
}

#[derive(Debug, Clone, SerializeDict, DeserializeDict, Type)]
#[zbus(signature = "a{sv}")]
pub struct RegistryInfoWire {
    record: RegistryWire,
    versions: VersionsWire,
    synced_ms: Option<i64>,
    targets: Option<u64>,
    /// The first role found expired: `root`, `timestamp`, `snapshot` or `targets`.
    expired: Option<String>,
    problem: Option<String>,
    servers: Vec<String>,
}

impl From<RegistryInfo> for RegistryInfoWire {
    fn from(i: RegistryInfo) -> Self {
        Self {
            record: i.record.into(),
            versions: i.versions.into(),
            synced_ms: i.synced_ms,
            targets: i.targets.map(|n| n as u64),
            expired: i.expired.map(|r| r.as_str().to_owned()),
            problem: i.problem,
            servers: i.servers,
        }
    }
}

impl TryFrom<RegistryInfoWire> for RegistryInfo {
    type Error = AdminError;
    fn try_from(w: RegistryInfoWire) -> Result<Self, AdminError> {
        use crate::tuf::Role;
        let expired = match w.expired {
            None => None,
            Some(name) => Some(
                Role::ALL
                    .into_iter()
                    .find(|r| r.as_str() == name)
                    .ok_or_else(|| garbled("role", &name))?,
            ),
        };
        Ok(Self {
            record: w.record.into(),
            versions: w.versions.into(),
            synced_ms: w.synced_ms,
            targets: w.targets.map(|n| n as usize),
            expired,
            problem: w.problem,
            servers: w.servers,
        })
    }
}
