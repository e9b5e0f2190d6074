//! [`AdminApi`] on a store and vault: opened from a state directory in this process (the
//! offline CLI: development, recovery, the daemon stopped), or the running daemon's own
//! (`for_daemon`: what `org.gigmcp.Gateway1` calls, so the key is never loaded twice).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::images::{ImageSettings, ImportSelect};
use super::{AdminApi, AdminError, RegistryAdded, RegistryInfo, image_layout};
use crate::audit::{Auditor, Outcome};
use crate::catalog::SyncReport;
use crate::egress::{AddressGuard, HostAddrs, check_approval};
use crate::image::oci::RunConfig;
use crate::image::plan::{RunPlan, copied_rootfs, gateway_env, plan};
use crate::image::{GcReport, ImageRecord};
use crate::manifest::Manifest;
use crate::store::{
    EndpointRecord, SecretMeta, ServerRecord, SqliteStore, Store, TokenRecord, ToolDefinition,
    now_ms,
};
use crate::tokens::{self, NewToken};
use crate::vault::{
    Fingerprint, MasterKey, SecretName, SecretValue, SetOutcome, Vault, VaultStatus,
};

/// What the admin layer takes from the configuration.
#[derive(Debug, Clone)]
pub struct AdminSettings {
    pub allow_unsigned_servers: bool,
    /// The helper's `images_dir`, where unsigned root filesystems are copied.
    pub images_dir: PathBuf,
    /// The sandbox pool and the gateway's listen addresses: no approval may overlap them.
    pub sandbox_pool: ipnet::IpNet,
    pub gateway_listen: Vec<std::net::IpAddr>,
    /// What an image may cost to unpack, and the registries images are pulled from.
    pub unpack: crate::image::UnpackLimits,
    pub registries: crate::config::ImagesConfig,
}

impl AdminSettings {
    /// The settings `gigmcp.toml` gives (the CLI offline and the daemon read the same).
    pub fn from_config(config: &crate::config::Config) -> Self {
        Self {
            allow_unsigned_servers: config.gateway.allow_unsigned_servers,
            images_dir: config.sandbox.images_dir.clone(),
            sandbox_pool: ipnet::IpNet::V4(config.sandbox.pool),
            gateway_listen: vec![config.gateway.listen.ip()],
            unpack: config.images.unpack.clone(),
            registries: config.images.clone(),
        }
    }
}

#[derive(Debug)]
pub struct LocalAdmin {
    /// Shared with the daemon's egress proxy when the daemon serves; owned alone offline
    /// (only then can `vault rotate` change the key: see `vault_rotate`).
    vault: Arc<Vault>,
    audit: Auditor,
    store: Arc<dyn Store>,
    settings: AdminSettings,
}

/// Server, endpoint and registry names: they appear in URLs, tool names (`<server>__<tool>`),
/// `REGISTRY/SERVER` references and paths.
pub(super) fn check_name(kind: &str, name: &str) -> Result<(), AdminError> {
    if crate::manifest::valid_server_name(name) {
        Ok(())
    } else {
        Err(AdminError::Refused(format!(
            "{kind} name {name:?}: use 1-32 of a-z 0-9 - _, starting with a letter or digit, without \"__\" and not ending in \"_\""
        )))
    }
}

impl LocalAdmin {
    pub fn open(
        state_dir: &Path,
        key: MasterKey,
        actor: String,
        settings: AdminSettings,
    ) -> anyhow::Result<Self> {
        use anyhow::Context;
        let store: Arc<dyn Store> = Arc::new(
            SqliteStore::open_in(state_dir)
                .with_context(|| format!("opening the store in {}", state_dir.display()))?,
        );
        let audit = Auditor::new(store.clone(), actor);
        let vault = match Vault::open(store.clone(), key) {
            Ok(v) => v,
            Err(e) => {
                // Best effort: the refusal itself is worth a trail entry.
                let _ = audit.record("vault.open", "master-key", Outcome::Denied, &e.to_string());
                return Err(e.into());
            }
        };
        Ok(Self {
            vault: Arc::new(vault),
            audit,
            store,
            settings,
        })
    }

    /// The admin layer over the running daemon's store and vault (opened once, with the
    /// master key, at the daemon's start).
    pub fn for_daemon(
        store: Arc<dyn Store>,
        vault: Arc<Vault>,
        actor: String,
        settings: AdminSettings,
    ) -> Self {
        Self {
            audit: Auditor::new(store.clone(), actor),
            vault,
            store,
            settings,
        }
    }

    /// Who the next actions are audited as (the daemon serves one caller at a time: the
    /// D-Bus caller's uid).
    pub fn set_actor(&mut self, actor: String) {
        self.audit = Auditor::new(self.store.clone(), actor);
    }

    /// Records one admin event; an event that cannot be written fails the action.
    pub(super) fn audit_admin(
        &self,
        action: &str,
        target: &str,
        outcome: Outcome,
        detail: &str,
    ) -> Result<(), AdminError> {
        self.audit
            .record(action, target, outcome, detail)
            .map_err(AdminError::Audit)
    }

    /// Audits the result of an admin action, then returns it.
    fn audited<T>(
        &self,
        action: &str,
        target: &str,
        result: Result<T, AdminError>,
        detail: impl FnOnce(&T) -> String,
    ) -> Result<T, AdminError> {
        let (outcome, text) = match &result {
            Ok(v) => (Outcome::Ok, detail(v)),
            Err(e) => (Outcome::Failed, e.to_string()),
        };
        self.audit
            .record(action, target, outcome, &text)
            .map_err(AdminError::Audit)?;
        result
    }
}

impl AdminApi for LocalAdmin {
    fn secret_set(&mut self, name: &str, value: &SecretValue) -> Result<SetOutcome, AdminError> {
        let result = SecretName::parse(name)
            .map_err(AdminError::from)
            .and_then(|n| Ok(self.vault.set(&n, value)?));
        self.audited("secret.set", name, result, |o| {
            format!("version {}", o.version)
        })
    }

    fn secret_list(&mut self) -> Result<Vec<SecretMeta>, AdminError> {
        Ok(self.vault.list()?)
    }

    fn secret_remove(&mut self, name: &str) -> Result<(), AdminError> {
        let result = SecretName::parse(name)
            .map_err(AdminError::from)
            .and_then(|n| Ok(self.vault.remove(&n)?));
        self.audited("secret.remove", name, result, |_| String::new())
    }

    fn vault_status(&mut self) -> Result<VaultStatus, AdminError> {
        Ok(self.vault.status()?)
    }

    fn vault_rotate(&mut self, new: MasterKey) -> Result<Fingerprint, AdminError> {
        let new_fp = new.fingerprint();
        let target = format!("{} -> {new_fp}", self.vault.fingerprint());
        // Only a vault this process owns alone can change its key: the daemon's is shared with
        // the egress proxy, which would keep the old key (rotation is an offline verb).
        let result = match Arc::get_mut(&mut self.vault) {
            Some(vault) => vault.rotate(new).map(|()| new_fp).map_err(AdminError::from),
            None => Err(AdminError::Refused(
                "the vault is in use by the running daemon: stop it and rotate offline (--state-dir)"
                    .into(),
            )),
        };
        self.audited("vault.rotate", &target, result, |_| String::new())
    }

    fn server_add_unsigned(
        &mut self,
        name: &str,
        rootfs: &Path,
        manifest_json: &str,
        approved_ranges: &[ipnet::IpNet],
    ) -> Result<ServerRecord, AdminError> {
        let result = self.add_unsigned(name, rootfs, manifest_json, approved_ranges);
        self.audited("server.add", name, result, |r| {
            format!(
                "source=unsigned image={} approved_ranges=[{}] UNSIGNED: not verified by any registry",
                r.image_digest,
                r.approved_ranges.join(",")
            )
        })
    }

    fn server_add_image(
        &mut self,
        name: &str,
        image: &str,
        manifest_json: &str,
        approved_ranges: &[ipnet::IpNet],
    ) -> Result<ServerRecord, AdminError> {
        let result = self.add_image(name, image, manifest_json, approved_ranges);
        self.audited("server.add", name, result, |a| {
            format!(
                "source=unsigned image={} reference={} approved_ranges=[{}]{} UNSIGNED: not verified by any registry",
                a.record.image_digest,
                a.reference,
                a.record.approved_ranges.join(","),
                a.notes.iter().map(|n| format!("; {n}")).collect::<String>(),
            )
        })
        .map(|a| a.record)
    }

    fn image_pull(&mut self, reference: &str) -> Result<ImageRecord, AdminError> {
        let result = self.pull_image(reference);
        self.audited("image.pull", reference, result, image_detail)
    }

    fn image_import(
        &mut self,
        path: &Path,
        select: &ImportSelect,
    ) -> Result<ImageRecord, AdminError> {
        let result = self.import_image(path, select);
        self.audited(
            "image.import",
            &path.display().to_string(),
            result,
            image_detail,
        )
    }

    fn image_list(&mut self) -> Result<Vec<(ImageRecord, Vec<String>)>, AdminError> {
        self.list_images()
    }

    fn image_remove(&mut self, digest: &str) -> Result<u64, AdminError> {
        let result = self.remove_image(digest);
        self.audited("image.rm", digest, result, |b| format!("bytes_freed={b}"))
    }

    fn image_gc(&mut self) -> Result<GcReport, AdminError> {
        let result = self.collect_images();
        self.audited("image.gc", "images", result, |r| {
            format!(
                "images_removed={} blobs_removed={} bytes_freed={}",
                r.images.len(),
                r.blobs.len(),
                r.bytes_freed
            )
        })
    }

    fn server_list(&mut self) -> Result<Vec<ServerRecord>, AdminError> {
        Ok(self.store.server_list()?)
    }

    fn server_tools(&mut self, name: &str) -> Result<Vec<ToolDefinition>, AdminError> {
        Ok(self.store.tool_definitions(name)?)
    }

    fn server_tool_approve(&mut self, name: &str, tool: &str) -> Result<(), AdminError> {
        let approved = if tool.is_empty() {
            Ok(false) // the first-listing marker, not a tool
        } else {
            self.store.tool_approve(name, tool)
        };
        let result = match approved {
            Ok(true) => Ok(()),
            Ok(false) => Err(AdminError::Refused(format!(
                "server {name} has no definition of {tool} awaiting approval"
            ))),
            Err(e) => Err(e.into()),
        };
        self.audited(
            "server.tool.approve",
            &format!("{name}/{tool}"),
            result,
            |_| String::new(),
        )
    }

    fn endpoint_add(
        &mut self,
        name: &str,
        servers: Vec<(String, Vec<String>)>,
    ) -> Result<(), AdminError> {
        let detail = servers
            .iter()
            .map(|(s, t)| format!("{s}={}", t.join(",")))
            .collect::<Vec<_>>()
            .join(" ");
        let result = check_name("endpoint", name).and_then(|()| {
            let mut seen = std::collections::HashSet::new();
            for (server, tools) in &servers {
                if !seen.insert(server) {
                    return Err(AdminError::Refused(format!(
                        "server {server} is listed twice"
                    )));
                }
                if tools.is_empty() || tools.iter().any(|t| t.is_empty()) {
                    return Err(AdminError::Refused(format!(
                        "server {server}: name its tools (server=tool1,tool2), or * for all"
                    )));
                }
            }
            let record = EndpointRecord {
                name: name.to_owned(),
                servers,
            };
            match self.store.endpoint_add(&record)? {
                true => Ok(()),
                false => Err(AdminError::Refused(format!("endpoint {name} exists"))),
            }
        });
        self.audited("endpoint.add", name, result, |_| detail)
    }

    fn endpoint_describe(
        &mut self,
        endpoint: &str,
        server: &str,
        tool: &str,
        description: &str,
    ) -> Result<(), AdminError> {
        let result = if description.len() > 4096 || description.chars().any(char::is_control) {
            Err(AdminError::Refused(
                "a description is at most 4096 bytes, without control characters".into(),
            ))
        } else {
            match self
                .store
                .endpoint_describe(endpoint, server, tool, description)
            {
                Ok(true) => Ok(()),
                Ok(false) => Err(AdminError::Refused(format!(
                    "endpoint {endpoint} does not expose server {server}"
                ))),
                Err(e) => Err(e.into()),
            }
        };
        self.audited(
            "endpoint.describe",
            &format!("{endpoint}/{server}__{tool}"),
            result,
            |_| format!("description_bytes={}", description.len()),
        )
    }

    fn token_create(&mut self, endpoint: &str, label: &str) -> Result<NewToken, AdminError> {
        let result = (|| {
            if self.store.endpoint_get(endpoint)?.is_none() {
                return Err(AdminError::Refused(format!("no endpoint named {endpoint}")));
            }
            let t = tokens::generate().map_err(|e| AdminError::Refused(e.to_string()))?;
            self.store.token_add(&TokenRecord {
                id: t.id.clone(),
                endpoint: endpoint.to_owned(),
                hash: t.hash.to_vec(),
                label: label.chars().take(200).collect(),
                created_ms: now_ms(),
                expires_ms: None,
                revoked_ms: None,
            })?;
            Ok(t)
        })();
        self.audited("token.create", endpoint, result, |t| {
            format!("token={}", t.id)
        })
    }

    fn token_revoke(&mut self, id: &str) -> Result<(), AdminError> {
        let result = match self.store.token_revoke(id, now_ms()) {
            Ok(true) => Ok(()),
            Ok(false) => Err(AdminError::Refused(format!("no live token {id}"))),
            Err(e) => Err(e.into()),
        };
        self.audited("token.revoke", id, result, |_| String::new())
    }

    fn registry_search(
        &mut self,
        text: &str,
    ) -> Result<Vec<crate::catalog::install::Hit>, AdminError> {
        self.search_registries(text)
    }

    fn registry_show(&mut self, spec: &str) -> Result<super::Shown, AdminError> {
        self.show_entry(spec)
    }

    fn server_install(
        &mut self,
        spec: &str,
        local_name: Option<&str>,
        approved_ranges: &[ipnet::IpNet],
        shared: &[String],
        confirm: super::Confirm<'_>,
    ) -> Result<super::Installed, AdminError> {
        self.install_audited(spec, local_name, approved_ranges, shared, confirm)
    }

    fn server_upgrade(
        &mut self,
        name: &str,
        to: Option<&str>,
        approve: Option<&str>,
        shared: &[String],
        confirm: super::Confirm<'_>,
    ) -> Result<super::Upgraded, AdminError> {
        self.upgrade_audited(name, to, approve, shared, confirm)
    }

    fn server_remove(&mut self, name: &str) -> Result<ServerRecord, AdminError> {
        self.remove_audited(name)
    }

    fn registry_add(
        &mut self,
        name: &str,
        location: &str,
        root: &[u8],
        ca_pem: Option<&[u8]>,
    ) -> Result<RegistryAdded, AdminError> {
        self.add_registry(name, location, root, ca_pem)
    }

    fn registry_sync(&mut self, name: &str) -> Result<SyncReport, AdminError> {
        self.sync_registry(name)
    }

    fn registry_list(&mut self) -> Result<Vec<RegistryInfo>, AdminError> {
        self.list_registries()
    }

    fn registry_forget(&mut self, name: &str) -> Result<(), AdminError> {
        self.forget_registry(name)
    }
}

/// An installed image, for the audit.
fn image_detail(r: &ImageRecord) -> String {
    format!(
        "image={} reference={} layers={} unpacked_bytes={} entries={}",
        r.pinned,
        r.reference,
        r.layers.len(),
        r.unpacked_bytes,
        r.entries
    )
}

/// What `name`'s sandbox will run, as the launcher will compute it: the gateway's variables
/// are named here with empty values (the placeholders are minted at each start), which is all
/// the plan's overrides and notes depend on.
pub(super) fn run_plan(
    name: &str,
    image: Option<&RunConfig>,
    manifest: &Manifest,
) -> Result<RunPlan, AdminError> {
    let names: Vec<(String, String)> = manifest
        .credentials
        .iter()
        .map(|c| (c.name.clone(), String::new()))
        .collect();
    plan(name, image, manifest, &gateway_env(&names, "", 0))
        .map_err(|e| AdminError::Refused(e.to_string()))
}

impl LocalAdmin {
    /// Each approval against this host's never-reachable addresses as of now (the proxy checks
    /// again at every connection, so an address the host gains later stays closed too).
    pub(super) fn check_approvals(
        &self,
        approved_ranges: &[ipnet::IpNet],
    ) -> Result<(), AdminError> {
        if approved_ranges.is_empty() {
            return Ok(());
        }
        let host = HostAddrs::open().map_err(|e| AdminError::Refused(e.to_string()))?;
        let guard = AddressGuard::new(
            self.settings.sandbox_pool,
            self.settings.gateway_listen.clone(),
            host,
        );
        approved_ranges
            .iter()
            .try_for_each(|r| check_approval(*r, &guard))
            .map_err(|e| AdminError::Refused(e.to_string()))
    }

    pub(super) fn auditor(&self) -> &Auditor {
        &self.audit
    }

    pub(super) fn vault(&self) -> &Vault {
        &self.vault
    }

    pub(super) fn records(&self) -> &dyn Store {
        self.store.as_ref()
    }

    pub(super) fn image_settings(&self) -> ImageSettings {
        ImageSettings {
            images_dir: self.settings.images_dir.clone(),
            unpack: self.settings.unpack.clone(),
            registries: self.settings.registries.clone(),
        }
    }

    /// What every unsigned add checks before touching any image: the name, the setting that
    /// allows unsigned servers, the manifest, the approvals, and that no such server exists.
    pub(super) fn check_unsigned_add(
        &self,
        name: &str,
        manifest_json: &str,
        approved_ranges: &[ipnet::IpNet],
    ) -> Result<Manifest, AdminError> {
        check_name("server", name)?;
        if !self.settings.allow_unsigned_servers {
            return Err(AdminError::Refused(
                "unsigned servers are not allowed: set gateway.allow_unsigned_servers = true in gigmcp.toml (development only)".into(),
            ));
        }
        let manifest =
            Manifest::from_json(manifest_json).map_err(|e| AdminError::Refused(e.to_string()))?;
        self.check_approvals(approved_ranges)?;
        if manifest.name != name {
            return Err(AdminError::Refused(format!(
                "the manifest names the server {:?}, not {name:?}",
                manifest.name
            )));
        }
        if self.store.server_get(name)?.is_some() {
            return Err(AdminError::Refused(format!(
                "server {name} is installed already"
            )));
        }
        Ok(manifest)
    }

    fn add_unsigned(
        &self,
        name: &str,
        rootfs: &Path,
        manifest_json: &str,
        approved_ranges: &[ipnet::IpNet],
    ) -> Result<ServerRecord, AdminError> {
        let manifest = self.check_unsigned_add(name, manifest_json, approved_ranges)?;
        let run = run_plan(name, None, &manifest)?;
        let meta = std::fs::symlink_metadata(rootfs)
            .map_err(|e| AdminError::Refused(format!("{}: {e}", rootfs.display())))?;
        if !meta.is_dir() {
            return Err(AdminError::Refused(format!(
                "{} is not a directory",
                rootfs.display()
            )));
        }
        // The helper only runs images inside its images_dir: copy the tree there (cp keeps
        // modes and symlinks as symlinks; the helper refuses to follow any).
        let dest = self.settings.images_dir.join(copied_rootfs(name));
        if dest.exists() {
            return Err(AdminError::Refused(format!(
                "{} exists already",
                dest.display()
            )));
        }
        let dirs = dest.parent().unwrap_or(&self.settings.images_dir);
        std::fs::create_dir_all(dirs)
            .map_err(|e| AdminError::Refused(format!("{}: {e}", dirs.display())))?;
        let status = std::process::Command::new("cp")
            .arg("-a")
            .arg("--")
            .arg(rootfs)
            .arg(&dest)
            .status()
            .map_err(|e| AdminError::Refused(format!("cp: {e}")))?;
        if !status.success() {
            let _ = std::fs::remove_dir_all(&dest);
            return Err(AdminError::Refused(format!(
                "copying {} to {} failed",
                rootfs.display(),
                dest.display()
            )));
        }
        // The copy is what runs: checked, so that an image that cannot start is refused here,
        // by name, rather than at the server's first call (docs/SANDBOX.md, the image layout).
        if let Err(e) = image_layout::check(&dest, &run) {
            let _ = std::fs::remove_dir_all(&dest);
            return Err(AdminError::Refused(format!(
                "{}: {e} (see \"What an image must contain\" in docs/SANDBOX.md)",
                rootfs.display()
            )));
        }
        let record = ServerRecord {
            name: name.to_owned(),
            version: manifest.version.clone(),
            image_digest: format!("dir:{name}"),
            manifest: manifest_json.to_owned(),
            source: "unsigned".into(),
            approved_ranges: approved_ranges.iter().map(|r| r.to_string()).collect(),
            installed_ms: now_ms(),
            origin: None,
        };
        if !self.store.server_add(&record)? {
            let _ = std::fs::remove_dir_all(&dest);
            return Err(AdminError::Refused(format!(
                "server {name} is installed already"
            )));
        }
        Ok(record)
    }
}
