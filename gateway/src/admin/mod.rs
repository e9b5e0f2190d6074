//! The admin command layer: what `gigmcp` can ask of a gateway, independent of how the request
//! travels. [`local::LocalAdmin`] works on a state directory directly; a D-Bus client of
//! `org.gigmcp.Gateway1` will implement the same trait, so the CLI does not change.

pub mod consent;
pub mod image_layout;
pub mod images;
pub mod install;
pub mod local;
pub mod registry;

use std::path::Path;

use crate::catalog::{CatalogError, SyncReport};
use crate::image::{GcReport, ImageRecord};
use crate::store::{SecretMeta, ServerRecord, StoreError, ToolDefinition};
use crate::tokens::NewToken;
use crate::vault::{
    Fingerprint, InvalidSecretName, MasterKey, SecretValue, SetOutcome, VaultError, VaultStatus,
};
pub use images::ImportSelect;
pub use install::{Answer, Confirm, Installed, Shown, Upgraded};
pub use registry::{RegistryAdded, RegistryInfo};

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error(transparent)]
    Name(#[from] InvalidSecretName),
    #[error(transparent)]
    Vault(#[from] VaultError),
    #[error("audit trail unavailable, so the action was not confirmed: {0}")]
    Audit(StoreError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error("{0}")]
    Refused(String),
    /// A server install, upgrade or remove from a registry, refused.
    #[error(transparent)]
    Install(#[from] consent::InstallRefusal),
}

pub trait AdminApi {
    /// Stores a secret (write-only: there is deliberately no call that reads a value back).
    fn secret_set(&mut self, name: &str, value: &SecretValue) -> Result<SetOutcome, AdminError>;
    fn secret_list(&mut self) -> Result<Vec<SecretMeta>, AdminError>;
    fn secret_remove(&mut self, name: &str) -> Result<(), AdminError>;
    fn vault_status(&mut self) -> Result<VaultStatus, AdminError>;
    /// Rewraps every data key under `new`; returns the new key's fingerprint.
    fn vault_rotate(&mut self, new: MasterKey) -> Result<Fingerprint, AdminError>;

    /// Installs a server from a local root filesystem and manifest, without a registry
    /// signature (refused unless the configuration allows it).
    /// `approved_ranges`: private destinations the server may reach (each one audited).
    fn server_add_unsigned(
        &mut self,
        name: &str,
        rootfs: &Path,
        manifest_json: &str,
        approved_ranges: &[ipnet::IpNet],
    ) -> Result<ServerRecord, AdminError>;
    /// Installs a server from an image pinned by digest (`HOST/REPO@sha256:…`, or
    /// `oci-layout:PATH@sha256:…` on an air-gapped host), pulled or imported unless it is
    /// installed already, without a registry signature (refused unless the configuration
    /// allows it). An image this call brought is removed again if the add is refused.
    fn server_add_image(
        &mut self,
        name: &str,
        image: &str,
        manifest_json: &str,
        approved_ranges: &[ipnet::IpNet],
    ) -> Result<ServerRecord, AdminError>;
    /// Pulls and installs an image pinned by digest (a no-op when it is installed).
    fn image_pull(&mut self, reference: &str) -> Result<ImageRecord, AdminError>;
    /// Imports and installs an image from an `oci-layout` directory or tarball.
    fn image_import(
        &mut self,
        path: &Path,
        select: &ImportSelect,
    ) -> Result<ImageRecord, AdminError>;
    /// Installed images, each with the servers that use it.
    fn image_list(&mut self) -> Result<Vec<(ImageRecord, Vec<String>)>, AdminError>;
    /// Removes an image no server uses; returns the bytes freed.
    fn image_remove(&mut self, digest: &str) -> Result<u64, AdminError>;
    /// Removes every image no server record names, and the blobs only they used.
    fn image_gc(&mut self) -> Result<GcReport, AdminError>;
    fn server_list(&mut self) -> Result<Vec<ServerRecord>, AdminError>;
    /// The server's approved tool definitions and those awaiting approval.
    fn server_tools(&mut self, name: &str) -> Result<Vec<ToolDefinition>, AdminError>;
    fn server_tool_approve(&mut self, name: &str, tool: &str) -> Result<(), AdminError>;
    /// Creates an endpoint exposing `servers`, each with its tool subset (`*`: all).
    fn endpoint_add(
        &mut self,
        name: &str,
        servers: Vec<(String, Vec<String>)>,
    ) -> Result<(), AdminError>;
    /// The endpoint's own description of `server`'s `tool` (shown instead of the server's).
    fn endpoint_describe(
        &mut self,
        endpoint: &str,
        server: &str,
        tool: &str,
        description: &str,
    ) -> Result<(), AdminError>;
    /// A new bearer token for `endpoint`; its secret is shown once, only its hash is kept.
    fn token_create(&mut self, endpoint: &str, label: &str) -> Result<NewToken, AdminError>;
    fn token_revoke(&mut self, id: &str) -> Result<(), AdminError>;

    /// Every registry target whose name or description contains `text` (all for "").
    fn registry_search(
        &mut self,
        text: &str,
    ) -> Result<Vec<crate::catalog::install::Hit>, AdminError>;
    /// The entry `[REG/]NAME[@VERSION]` names, with what it would be entitled to.
    fn registry_show(&mut self, spec: &str) -> Result<Shown, AdminError>;
    /// Installs the entry `spec` names as `local_name` (default: the entry's name) once
    /// `confirm` agrees to its entitlements; every private range its manifest asks for must
    /// be in `approved_ranges`, exactly, and nothing else; every credential whose name the
    /// vault already holds (the server would receive that secret) must be in `shared`.
    fn server_install(
        &mut self,
        spec: &str,
        local_name: Option<&str>,
        approved_ranges: &[ipnet::IpNet],
        shared: &[String],
        confirm: Confirm<'_>,
    ) -> Result<Installed, AdminError>;
    /// Upgrades a server installed from a registry to `to` (default: the newest newer
    /// version there). An upgrade that adds entitlements needs `approve` = the digest of
    /// exactly that diff, whatever `confirm` says; a credential it adds whose name the vault
    /// already holds must be in `shared`.
    fn server_upgrade(
        &mut self,
        name: &str,
        to: Option<&str>,
        approve: Option<&str>,
        shared: &[String],
        confirm: Confirm<'_>,
    ) -> Result<Upgraded, AdminError>;
    /// Removes a server installed from a registry (refused while an endpoint exposes it);
    /// its image stays for `image gc`.
    fn server_remove(&mut self, name: &str) -> Result<ServerRecord, AdminError>;
    /// Adds a registry at `location` (https URL, or an absolute directory) trusting `root`
    /// (root.json bytes: verified with its own keys and threshold, not expired), and `ca_pem`
    /// for its HTTPS besides the system's roots. A first sync is attempted and reported; its
    /// refusal leaves the registry added and unsynced.
    fn registry_add(
        &mut self,
        name: &str,
        location: &str,
        root: &[u8],
        ca_pem: Option<&[u8]>,
    ) -> Result<RegistryAdded, AdminError>;
    /// Fetches and verifies the registry's newest metadata; on a refusal nothing is stored.
    fn registry_sync(&mut self, name: &str) -> Result<SyncReport, AdminError>;
    fn registry_list(&mut self) -> Result<Vec<RegistryInfo>, AdminError>;
    /// Removes a registry and its metadata (refused while a server installed from it remains).
    fn registry_forget(&mut self, name: &str) -> Result<(), AdminError>;
}
