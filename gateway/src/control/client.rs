//! [`DbusAdmin`]: [`AdminApi`] over `org.gigmcp.Gateway1`, so the CLI's commands run the same
//! against the running daemon as against a state directory opened offline. Blocking, as the
//! CLI is: each call drives its own single-threaded runtime.
//!
//! What the bus cannot carry the way a function call does, this side turns into what the
//! daemon takes: a secret's value is written into a sealed memfd and passed as a descriptor
//! (never into a message body); a tarball, a layout or root directory is opened here and its
//! descriptor passed (the daemon cannot see the caller's paths); the consent callback becomes
//! two calls, the second quoting the digest of exactly the text the admin agreed to.

use std::io::{Seek, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use super::proxy::Gateway1Proxy;
use super::{BUS_NAME, wire};
use crate::admin::consent::InstallRefusal;
use crate::admin::{
    AdminApi, AdminError, Answer, Confirm, ImportSelect, Installed, RegistryAdded, RegistryInfo,
    Shown, Upgraded,
};
use crate::catalog::SyncReport;
use crate::catalog::install::Hit;
use crate::image::{GcReport, ImageRecord};
use crate::store::{SecretMeta, ServerRecord, ToolDefinition};
use crate::tokens::NewToken;
use crate::vault::{Fingerprint, MasterKey, SecretValue, SetOutcome, VaultStatus};

/// The daemon is not on the bus (or the bus is not there): what to do instead.
#[derive(Debug, thiserror::Error)]
#[error(
    "gigmcpd is not running on the {bus} bus ({why}): start it (systemctl start gigmcp), or stop it and pass --state-dir (and --master-key-file) to work on the state directory offline"
)]
pub struct DaemonUnreachable {
    pub bus: String,
    pub why: String,
}

pub struct DbusAdmin {
    runtime: tokio::runtime::Runtime,
    proxy: Gateway1Proxy<'static>,
}

impl std::fmt::Debug for DbusAdmin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DbusAdmin")
    }
}

/// A D-Bus error as the admin layer's refusal: the daemon's message as it wrote it, the error's
/// name for errors that are not the daemon's own (the bus policy's `AccessDenied`).
fn from_bus(e: zbus::Error) -> AdminError {
    match e {
        zbus::Error::MethodError(name, msg, _)
            if name.as_str().starts_with("org.gigmcp.Gateway1.Error.") =>
        {
            AdminError::Refused(msg.unwrap_or_else(|| name.to_string()))
        }
        zbus::Error::MethodError(name, msg, _) => {
            AdminError::Refused(format!("{name}: {}", msg.unwrap_or_default()))
        }
        other => AdminError::Refused(format!("the daemon's bus: {other}")),
    }
}

/// The consent a refusal asks for: (digest, text), if it is `ConsentNeeded`.
fn consent_asked(e: &zbus::Error) -> Option<(String, String)> {
    match e {
        zbus::Error::MethodError(name, Some(msg), _)
            if name.as_str() == "org.gigmcp.Gateway1.Error.ConsentNeeded" =>
        {
            let (digest, text) = msg.split_once('\n').unwrap_or((msg, ""));
            Some((digest.to_owned(), text.to_owned()))
        }
        _ => None,
    }
}

/// An answer other than yes, as the offline path reports it.
fn not_agreed(answer: Answer, what: &str) -> AdminError {
    match answer {
        Answer::NoTerminal => InstallRefusal::NoTerminal(what.to_owned()).into(),
        _ => InstallRefusal::Declined(what.to_owned()).into(),
    }
}

/// `value` in a sealed memfd, rewound: the daemon reads it from the descriptor, and nothing
/// can change it in between.
fn value_fd(value: &SecretValue) -> Result<OwnedFd, AdminError> {
    use rustix::fs::{MemfdFlags, SealFlags};
    let io = |e: std::io::Error| AdminError::Refused(format!("passing the value: {e}"));
    let fd = rustix::fs::memfd_create(
        "gigmcp-secret",
        MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING,
    )
    .map_err(|e| io(e.into()))?;
    let mut file = std::fs::File::from(fd);
    file.write_all(value.expose()).map_err(io)?;
    file.rewind().map_err(io)?;
    rustix::fs::fcntl_add_seals(
        &file,
        SealFlags::WRITE | SealFlags::GROW | SealFlags::SHRINK | SealFlags::SEAL,
    )
    .map_err(|e| io(e.into()))?;
    Ok(file.into())
}

/// Opens a file or directory the caller names, to pass its descriptor.
fn open_for_daemon(path: &Path) -> Result<OwnedFd, AdminError> {
    std::fs::File::open(path)
        .map(Into::into)
        .map_err(|e| AdminError::Refused(format!("opening {}: {e}", path.display())))
}

impl DbusAdmin {
    /// Connects to the daemon on `bus` (`system` or an address); [`DaemonUnreachable`] if
    /// the bus or the daemon's name on it is not there.
    pub fn connect(bus: &str) -> Result<Self, DaemonUnreachable> {
        let unreachable = |why: String| DaemonUnreachable {
            bus: bus.to_owned(),
            why,
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| unreachable(e.to_string()))?;
        let proxy = runtime.block_on(async {
            let conn = super::connect(bus)
                .build()
                .await
                .map_err(|e| unreachable(e.to_string()))?;
            let dbus = zbus::fdo::DBusProxy::new(&conn)
                .await
                .map_err(|e| unreachable(e.to_string()))?;
            let name = zbus::names::BusName::try_from(BUS_NAME).expect("a valid bus name");
            if !dbus
                .name_has_owner(name)
                .await
                .map_err(|e| unreachable(e.to_string()))?
            {
                return Err(unreachable(format!("nobody owns {BUS_NAME}")));
            }
            Gateway1Proxy::new(&conn)
                .await
                .map_err(|e| unreachable(e.to_string()))
        })?;
        Ok(Self { runtime, proxy })
    }

    fn call<T>(
        &self,
        f: impl AsyncFnOnce(&Gateway1Proxy<'static>) -> zbus::Result<T>,
    ) -> Result<T, AdminError> {
        self.runtime.block_on(f(&self.proxy)).map_err(from_bus)
    }

    /// Starts a server in the daemon now.
    pub fn server_start(&mut self, name: &str) -> Result<(), AdminError> {
        self.call(async |p| p.server_start(name).await)
    }

    /// Stops a server; false if it was not running.
    pub fn server_stop(&mut self, name: &str) -> Result<bool, AdminError> {
        self.call(async |p| p.server_stop(name).await)
    }

    /// A server's last stderr lines, escaped by the daemon.
    pub fn server_logs(&mut self, name: &str, lines: u32) -> Result<Vec<String>, AdminError> {
        self.call(async |p| p.server_logs(name, lines).await)
    }

    /// The two-step consent: call with no consent; if the daemon asks, show its text, and on
    /// yes call again quoting its digest. A second request means the text changed in between
    /// (a sync): refused, nothing changed, rather than agreeing to what was not shown.
    fn with_consent<T>(
        &self,
        what: &str,
        confirm: Confirm<'_>,
        call: impl AsyncFn(&Gateway1Proxy<'static>, &str) -> zbus::Result<T>,
    ) -> Result<T, AdminError> {
        let first = self.runtime.block_on(call(&self.proxy, ""));
        let (digest, text) = match first {
            Err(e) => match consent_asked(&e) {
                Some(asked) => asked,
                None => return Err(from_bus(e)),
            },
            Ok(v) => return Ok(v),
        };
        match confirm(&text) {
            Answer::Yes => {}
            other => return Err(not_agreed(other, what)),
        }
        match self.runtime.block_on(call(&self.proxy, &digest)) {
            Err(e) if consent_asked(&e).is_some() => Err(AdminError::Refused(format!(
                "{what}: what it is entitled to changed while you were asked (the registry was synced?); nothing changed: run it again"
            ))),
            r => r.map_err(from_bus),
        }
    }
}

fn strings(v: &[ipnet::IpNet]) -> Vec<String> {
    v.iter().map(ToString::to_string).collect()
}

impl AdminApi for DbusAdmin {
    fn secret_set(&mut self, name: &str, value: &SecretValue) -> Result<SetOutcome, AdminError> {
        let fd = value_fd(value)?;
        let r = self.call(async |p| p.secret_set(name, fd.as_fd().into()).await)?;
        Ok(r.into())
    }

    fn secret_list(&mut self) -> Result<Vec<SecretMeta>, AdminError> {
        let l = self.call(async |p| p.secret_list().await)?;
        Ok(l.into_iter().map(Into::into).collect())
    }

    fn secret_remove(&mut self, name: &str) -> Result<(), AdminError> {
        self.call(async |p| p.secret_remove(name).await)
    }

    fn vault_status(&mut self) -> Result<VaultStatus, AdminError> {
        self.call(async |p| p.vault_status().await)?.try_into()
    }

    /// Offline only: the key is a credential file of root's that the daemon reads at start,
    /// so a rotation must be followed by installing the new file and restarting the daemon;
    /// done while it runs, its egress proxy would keep the old key.
    fn vault_rotate(&mut self, _new: MasterKey) -> Result<Fingerprint, AdminError> {
        Err(AdminError::Refused(
            "vault rotate works offline only: stop gigmcpd, run it with --state-dir and --master-key-file, install the new key as the master.key credential, start gigmcpd".into(),
        ))
    }

    /// Offline only: the tree is copied by `cp`, a child process, which cannot reach a
    /// directory the daemon holds by descriptor (and `/proc/<pid>/fd` of the non-dumpable
    /// daemon is root's). An image works over the bus: `gigmcp image build dir:PATH`, then
    /// `server add --image oci-layout:…`.
    fn server_add_unsigned(
        &mut self,
        _name: &str,
        rootfs: &Path,
        _manifest_json: &str,
        _approved_ranges: &[ipnet::IpNet],
    ) -> Result<ServerRecord, AdminError> {
        Err(AdminError::Refused(format!(
            "server add --rootfs {} works offline only (stop gigmcpd and pass --state-dir); with the daemon running, make it an image (gigmcp image build dir:{} --base … --out LAYOUT) and add it with --image oci-layout:LAYOUT@<digest>",
            rootfs.display(),
            rootfs.display()
        )))
    }

    fn server_add_image(
        &mut self,
        name: &str,
        image: &str,
        manifest_json: &str,
        approved_ranges: &[ipnet::IpNet],
    ) -> Result<ServerRecord, AdminError> {
        // An air-gapped layout is opened here; the daemon reads it through the descriptor.
        let (image, layout) = match image.strip_prefix("oci-layout:") {
            Some(rest) => {
                let (path, digest) = rest.rsplit_once('@').ok_or_else(|| {
                    AdminError::Refused(format!("image {image}: pin it by digest: …@sha256:<hex>"))
                })?;
                (
                    format!("oci-layout:@{digest}"),
                    vec![open_for_daemon(Path::new(path))?],
                )
            }
            None => (image.to_owned(), Vec::new()),
        };
        let ranges = strings(approved_ranges);
        let r = self.call(async |p| {
            let fds = layout.iter().map(|f| f.as_fd().into()).collect();
            p.server_add_image(name, &image, fds, manifest_json, &ranges)
                .await
        })?;
        Ok(r.into())
    }

    fn image_pull(&mut self, reference: &str) -> Result<ImageRecord, AdminError> {
        let r = self.call(async |p| p.image_pull(reference).await)?;
        Ok(r.into_record()?.0)
    }

    fn image_import(
        &mut self,
        path: &Path,
        select: &ImportSelect,
    ) -> Result<ImageRecord, AdminError> {
        let fd = open_for_daemon(path)?;
        let (digest, name) = match select {
            ImportSelect::Digest(d) => (d.as_str(), ""),
            ImportSelect::Name(n) => ("", n.as_str()),
            ImportSelect::Only => ("", ""),
        };
        let r = self.call(async |p| p.image_import(fd.as_fd().into(), digest, name).await)?;
        Ok(r.into_record()?.0)
    }

    fn image_list(&mut self) -> Result<Vec<(ImageRecord, Vec<String>)>, AdminError> {
        self.call(async |p| p.image_list().await)?
            .into_iter()
            .map(wire::ImageWire::into_record)
            .collect()
    }

    fn image_remove(&mut self, digest: &str) -> Result<u64, AdminError> {
        self.call(async |p| p.image_remove(digest).await)
    }

    fn image_gc(&mut self) -> Result<GcReport, AdminError> {
        self.call(async |p| p.image_gc().await)?.try_into()
    }

    fn server_list(&mut self) -> Result<Vec<ServerRecord>, AdminError> {
        let l = self.call(async |p| p.server_list().await)?;
        Ok(l.into_iter().map(Into::into).collect())
    }

    fn server_tools(&mut self, name: &str) -> Result<Vec<ToolDefinition>, AdminError> {
        let l = self.call(async |p| p.server_tools(name).await)?;
        Ok(l.into_iter().map(Into::into).collect())
    }

    fn server_tool_approve(&mut self, name: &str, tool: &str) -> Result<(), AdminError> {
        self.call(async |p| p.server_tool_approve(name, tool).await)
    }

    fn endpoint_add(
        &mut self,
        name: &str,
        servers: Vec<(String, Vec<String>)>,
    ) -> Result<(), AdminError> {
        self.call(async |p| p.endpoint_add(name, &servers).await)
    }

    fn endpoint_describe(
        &mut self,
        endpoint: &str,
        server: &str,
        tool: &str,
        description: &str,
    ) -> Result<(), AdminError> {
        self.call(async |p| {
            p.endpoint_describe(endpoint, server, tool, description)
                .await
        })
    }

    fn token_create(&mut self, endpoint: &str, label: &str) -> Result<NewToken, AdminError> {
        let t = self.call(async |p| p.token_create(endpoint, label).await)?;
        Ok(t.into())
    }

    fn token_revoke(&mut self, id: &str) -> Result<(), AdminError> {
        self.call(async |p| p.token_revoke(id).await)
    }

    fn registry_search(&mut self, text: &str) -> Result<Vec<Hit>, AdminError> {
        let l = self.call(async |p| p.registry_search(text).await)?;
        Ok(l.into_iter().map(Into::into).collect())
    }

    fn registry_show(&mut self, spec: &str) -> Result<Shown, AdminError> {
        Ok(self.call(async |p| p.registry_show(spec).await)?.into())
    }

    fn server_install(
        &mut self,
        spec: &str,
        local_name: Option<&str>,
        approved_ranges: &[ipnet::IpNet],
        shared: &[String],
        confirm: Confirm<'_>,
    ) -> Result<Installed, AdminError> {
        let ranges = strings(approved_ranges);
        let local = local_name.unwrap_or("");
        let r = self.with_consent(spec, confirm, async |p, consent| {
            p.server_install(spec, local, &ranges, shared, consent)
                .await
        })?;
        Ok(r.into())
    }

    fn server_upgrade(
        &mut self,
        name: &str,
        to: Option<&str>,
        approve: Option<&str>,
        shared: &[String],
        confirm: Confirm<'_>,
    ) -> Result<Upgraded, AdminError> {
        let (to, approve) = (to.unwrap_or(""), approve.unwrap_or(""));
        let what = format!("server {name}");
        self.with_consent(&what, confirm, async |p, consent| {
            p.server_upgrade(name, to, approve, shared, consent).await
        })?
        .try_into()
    }

    fn server_remove(&mut self, name: &str) -> Result<ServerRecord, AdminError> {
        Ok(self.call(async |p| p.server_remove(name).await)?.into())
    }

    fn registry_add(
        &mut self,
        name: &str,
        location: &str,
        root: &[u8],
        ca_pem: Option<&[u8]>,
    ) -> Result<RegistryAdded, AdminError> {
        let ca = ca_pem.unwrap_or_default();
        Ok(self
            .call(async |p| p.registry_add(name, location, root, ca).await)?
            .into())
    }

    fn registry_sync(&mut self, name: &str) -> Result<SyncReport, AdminError> {
        Ok(self.call(async |p| p.registry_sync(name).await)?.into())
    }

    fn registry_list(&mut self) -> Result<Vec<RegistryInfo>, AdminError> {
        self.call(async |p| p.registry_list().await)?
            .into_iter()
            .map(TryInto::try_into)
            .collect()
    }

    fn registry_forget(&mut self, name: &str) -> Result<(), AdminError> {
        self.call(async |p| p.registry_forget(name).await)
    }
}
