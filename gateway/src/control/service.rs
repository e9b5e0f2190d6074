//! The `org.gigmcp.Gateway1` interface. Every method first asks the bus who called and
//! refuses (audited) anyone but root and `gigmcp-admin`; then an admin call runs on a blocking
//! thread behind one mutex (`admin`): admin calls are synchronous and some are long (an image
//! pull), and the MCP front's runtime threads must never wait on them. The admin layer audits
//! each change as `dbus:uid=<caller>`; reads are not audited (an `audit --follow` loop would
//! otherwise feed itself). After a change the matching signal says *what kind* of thing
//! changed, never a value: the system bus delivers signals to any local listener.
//!
//! Two things cannot cross the bus as they do in-process, and take two steps instead:
//! consent (`ServerInstall`/`ServerUpgrade` answer `ConsentNeeded` with the text and its
//! digest; the call is repeated with that digest, honoured only if the daemon computes the same
//! text now), and files (a secret's value, a tarball, a layout or root directory come as file
//! descriptors: the daemon, `ProtectHome=` and `PrivateTmp=`, cannot see the caller's paths).

// The interface's methods take the D-Bus arguments and then the bus's own (header,
// connection, signal emitter): a count clippy's limit was not written for.
#![allow(clippy::too_many_arguments)]

use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex, PoisonError};

use zbus::message::Header;
use zbus::object_server::SignalEmitter;

use super::ControlError;
use super::args::{
    Received, Seen, consent_by_digest, consent_needed, opt, ranges, read_value, to_control,
};
use super::auth::{ADMIN_GROUP, caller_uid, is_admin};
use super::pool::PoolControl;
use super::wire::*;
use crate::admin::local::LocalAdmin;
use crate::admin::{AdminApi, ImportSelect};
use crate::audit::{AuditQueue, Outcome};

pub struct Control {
    pool: Arc<dyn PoolControl>,
    audit: AuditQueue,
    admin: Arc<Mutex<LocalAdmin>>,
}

impl std::fmt::Debug for Control {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Control")
    }
}

impl Control {
    pub fn new(pool: Arc<dyn PoolControl>, audit: AuditQueue, admin: LocalAdmin) -> Self {
        Self {
            pool,
            audit,
            admin: Arc::new(Mutex::new(admin)),
        }
    }

    /// The caller's uid, if it may administer the gateway; a refusal is audited.
    async fn authorize(
        &self,
        action: &'static str,
        target: &str,
        header: &Header<'_>,
        conn: &zbus::Connection,
    ) -> Result<u32, ControlError> {
        let uid = caller_uid(header, conn).await?;
        if !is_admin(uid) {
            self.audit.record(
                action,
                target,
                Outcome::Denied,
                format!("uid={uid} reason=\"not root nor in {ADMIN_GROUP}\""),
            );
            return Err(ControlError::PermissionDenied(format!(
                "uid {uid} is not root nor in {ADMIN_GROUP}"
            )));
        }
        Ok(uid)
    }

    /// Runs `f` on the daemon's admin layer, on a blocking thread, one call at a time,
    /// audited as the caller.
    async fn admin<T, F>(&self, uid: u32, f: F) -> Result<T, ControlError>
    where
        T: Send + 'static,
        F: FnOnce(&mut LocalAdmin) -> Result<T, ControlError> + Send + 'static,
    {
        let admin = self.admin.clone();
        tokio::task::spawn_blocking(move || {
            let mut admin = admin.lock().unwrap_or_else(PoisonError::into_inner);
            admin.set_actor(format!("dbus:uid={uid}"));
            f(&mut admin)
        })
        .await
        .map_err(|e| ControlError::Failed(format!("the admin call did not complete: {e}")))?
    }

    /// A server whose record changed is stopped, so no session keeps running what was
    /// replaced, removed or approved differently: its next use starts it from the record.
    async fn restart_on_use(&self, name: &str, emitter: &SignalEmitter<'_>) {
        if self.pool.stop(name).await {
            let _ = Self::server_state_changed(emitter, name, "stopped").await;
        }
    }
}

#[zbus::interface(name = "org.gigmcp.Gateway1")]
impl Control {
    // --- secrets (write-only) ---

    /// Stores a secret; its value is read from `value` (a sealed memfd or a closed pipe),
    /// never carried in a message.
    async fn secret_set(
        &self,
        name: String,
        value: zbus::OwnedFd,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &zbus::Connection,
        #[zbus(signal_emitter)] emitter: SignalEmitter<'_>,
    ) -> Result<SetWire, ControlError> {
        let uid = self.authorize("secret.set", &name, &header, conn).await?;
        let fd: OwnedFd = value.into();
        let r = self
            .admin(uid, move |a| {
                let value = read_value(fd)?;
                a.secret_set(&name, &value).map_err(to_control)
            })
            .await?;
        let _ = Self::secrets_changed(&emitter).await;
        Ok(r.into())
    }

    async fn secret_list(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &zbus::Connection,
    ) -> Result<Vec<SecretWire>, ControlError> {
        let uid = self.authorize("secret.list", "", &header, conn).await?;
        let list = self
            .admin(uid, |a| a.secret_list().map_err(to_control))
            .await?;
        Ok(list.into_iter().map(Into::into).collect())
    }

    async fn secret_remove(
        &self,
        name: String,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &zbus::Connection,
        #[zbus(signal_emitter)] emitter: SignalEmitter<'_>,
    ) -> Result<(), ControlError> {
        let uid = self
            .authorize("secret.remove", &name, &header, conn)
            .await?;
        self.admin(uid, move |a| a.secret_remove(&name).map_err(to_control))
            .await?;
        let _ = Self::secrets_changed(&emitter).await;
        Ok(())
    }

    /// The master key's fingerprint and whether every secret opens (names only).
    async fn vault_status(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &zbus::Connection,
    ) -> Result<VaultStatusWire, ControlError> {
        let uid = self.authorize("vault.status", "", &header, conn).await?;
        let s = self
            .admin(uid, |a| a.vault_status().map_err(to_control))
            .await?;
        Ok(s.into())
    }

    // --- servers ---

    /// An unsigned server from an image pinned by digest; `oci-layout:@sha256:…` takes the
    /// layout from `layout` (one directory descriptor; none for a registry reference).
    async fn server_add_image(
        &self,
        name: String,
        image: String,
        layout: Vec<zbus::OwnedFd>,
        manifest: String,
        approved_ranges: Vec<String>,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &zbus::Connection,
        #[zbus(signal_emitter)] emitter: SignalEmitter<'_>,
    ) -> Result<ServerWire, ControlError> {
        let uid = self.authorize("server.add", &name, &header, conn).await?;
        let ranges = ranges(&approved_ranges)?;
        let mut fds: Vec<OwnedFd> = layout.into_iter().map(Into::into).collect();
        let mut received = None;
        let image = match (image.strip_prefix("oci-layout:"), fds.pop()) {
            (Some(rest), Some(fd)) if fds.is_empty() => {
                let digest = rest.rsplit_once('@').map_or(rest, |(_, d)| d);
                let layout = received.insert(Received::new(fd)?);
                format!("oci-layout:{}@{digest}", layout.path().display())
            }
            (None, None) => image,
            _ => {
                return Err(ControlError::InvalidArgument(
                    "an oci-layout: image needs exactly one layout descriptor, a registry reference none".into(),
                ));
            }
        };
        let r = self
            .admin(uid, move |a| {
                let r = a.server_add_image(&name, &image, &manifest, &ranges);
                drop(received);
                r.map_err(to_control)
            })
            .await?;
        let _ = Self::servers_changed(&emitter).await;
        Ok(r.into())
    }

    async fn server_list(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &zbus::Connection,
    ) -> Result<Vec<ServerWire>, ControlError> {
        let uid = self.authorize("server.list", "", &header, conn).await?;
        let list = self
            .admin(uid, |a| a.server_list().map_err(to_control))
            .await?;
        Ok(list.into_iter().map(Into::into).collect())
    }

    /// Approved tool definitions and those awaiting approval.
    async fn server_tools(
        &self,
        name: String,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &zbus::Connection,
    ) -> Result<Vec<ToolWire>, ControlError> {
        let uid = self.authorize("server.tools", &name, &header, conn).await?;
        let list = self
            .admin(uid, move |a| a.server_tools(&name).map_err(to_control))
            .await?;
        Ok(list.into_iter().map(Into::into).collect())
    }

    /// Approves a tool's pending definition; the server restarts on its next use.
    async fn server_tool_approve(
        &self,
        name: String,
        tool: String,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &zbus::Connection,
        #[zbus(signal_emitter)] emitter: SignalEmitter<'_>,
    ) -> Result<(), ControlError> {
        let uid = self
            .authorize("server.approve", &name, &header, conn)
            .await?;
        let n = name.clone();
        self.admin(uid, move |a| {
            a.server_tool_approve(&n, &tool).map_err(to_control)
        })
        .await?;
        self.restart_on_use(&name, &emitter).await;
        let _ = Self::servers_changed(&emitter).await;
        Ok(())
    }

    /// Installs a registry entry. `consent` empty, or not the digest of what the daemon would
    /// show now: `ConsentNeeded` with that text and its digest, nothing installed.
    /// `local_name` empty: the entry's name.
    async fn server_install(
        &self,
        spec: String,
        local_name: String,
        approved_ranges: Vec<String>,
        shared: Vec<String>,
        consent: String,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &zbus::Connection,
        #[zbus(signal_emitter)] emitter: SignalEmitter<'_>,
    ) -> Result<InstalledWire, ControlError> {
        let uid = self
            .authorize("server.install", &spec, &header, conn)
            .await?;
        let ranges = ranges(&approved_ranges)?;
        let r = self
            .admin(uid, move |a| {
                let seen = Seen::default();
                let mut confirm = consent_by_digest(consent, seen.clone());
                let local = opt(local_name);
                a.server_install(&spec, local.as_deref(), &ranges, &shared, &mut confirm)
                    .map_err(|e| consent_needed(e, &seen))
            })
            .await?;
        let _ = Self::servers_changed(&emitter).await;
        Ok(r.into())
    }

    /// Upgrades a registry server (`to` empty: the newest newer version). An added
    /// entitlement also needs `approve`, the diff's digest; the consent works as for
    /// `ServerInstall`. The running session is stopped.
    async fn server_upgrade(
        &self,
        name: String,
        to: String,
        approve: String,
        shared: Vec<String>,
        consent: String,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &zbus::Connection,
        #[zbus(signal_emitter)] emitter: SignalEmitter<'_>,
    ) -> Result<UpgradedWire, ControlError> {
        let uid = self
            .authorize("server.upgrade", &name, &header, conn)
            .await?;
        let n = name.clone();
        let r = self
            .admin(uid, move |a| {
                let seen = Seen::default();
                let mut confirm = consent_by_digest(consent, seen.clone());
                let (to, approve) = (opt(to), opt(approve));
                a.server_upgrade(&n, to.as_deref(), approve.as_deref(), &shared, &mut confirm)
                    .map_err(|e| consent_needed(e, &seen))
            })
            .await?;
        self.restart_on_use(&name, &emitter).await;
        let _ = Self::servers_changed(&emitter).await;
        Ok(r.into())
    }

    /// Removes a server (refused while an endpoint exposes it) and stops its session.
    async fn server_remove(
        &self,
        name: String,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &zbus::Connection,
        #[zbus(signal_emitter)] emitter: SignalEmitter<'_>,
    ) -> Result<ServerWire, ControlError> {
        let uid = self
            .authorize("server.remove", &name, &header, conn)
            .await?;
        let n = name.clone();
        let r = self
            .admin(uid, move |a| a.server_remove(&n).map_err(to_control))
            .await?;
        self.restart_on_use(&name, &emitter).await;
        let _ = Self::servers_changed(&emitter).await;
        Ok(r.into())
    }

    /// Starts a server now (it would start on its first call anyway).
    async fn server_start(
        &self,
        name: String,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &zbus::Connection,
        #[zbus(signal_emitter)] emitter: SignalEmitter<'_>,
    ) -> Result<(), ControlError> {
        let uid = self.authorize("server.start", &name, &header, conn).await?;
        let _ = Self::server_state_changed(&emitter, &name, "starting").await;
        let r = self.pool.start(&name).await;
        let (outcome, detail, state) = match &r {
            Ok(()) => (Outcome::Ok, format!("uid={uid}"), "running"),
            Err(e) => (
                Outcome::Failed,
                format!("uid={uid} error=\"{e}\""),
                "failed",
            ),
        };
        self.audit.record("server.start", &name, outcome, detail);
        let _ = Self::server_state_changed(&emitter, &name, state).await;
        r.map_err(|e| ControlError::Failed(e.to_string()))
    }

    /// Stops a server; false if it was not running.
    async fn server_stop(
        &self,
        name: String,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &zbus::Connection,
        #[zbus(signal_emitter)] emitter: SignalEmitter<'_>,
    ) -> Result<bool, ControlError> {
        let uid = self.authorize("server.stop", &name, &header, conn).await?;
        self.known_server(uid, &name).await?;
        let stopped = self.pool.stop(&name).await;
        self.audit.record(
            "server.stop",
            &name,
            Outcome::Ok,
            format!("uid={uid} was_running={stopped}"),
        );
        if stopped {
            let _ = Self::server_state_changed(&emitter, &name, "stopped").await;
        }
        Ok(stopped)
    }

    /// The last `lines` lines (at most 1000) of a server's stderr, oldest first, escaped.
    async fn server_logs(
        &self,
        name: String,
        lines: u32,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &zbus::Connection,
    ) -> Result<Vec<String>, ControlError> {
        let uid = self.authorize("server.logs", &name, &header, conn).await?;
        self.known_server(uid, &name).await?;
        Ok(self.pool.logs(&name, lines.min(1000) as usize))
    }

    // --- images ---

    async fn image_pull(
        &self,
        reference: String,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &zbus::Connection,
    ) -> Result<ImageWire, ControlError> {
        let uid = self
            .authorize("image.pull", &reference, &header, conn)
            .await?;
        self.admin(uid, move |a| {
            let r = a.image_pull(&reference).map_err(to_control)?;
            ImageWire::new(&r, None).map_err(to_control)
        })
        .await
    }

    /// Imports from `layout` (a tarball's file descriptor or a layout directory's): the image
    /// named `select_digest`, else `select_name`, else the layout's only one.
    async fn image_import(
        &self,
        layout: zbus::OwnedFd,
        select_digest: String,
        select_name: String,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &zbus::Connection,
    ) -> Result<ImageWire, ControlError> {
        let uid = self.authorize("image.import", "", &header, conn).await?;
        let layout = Received::new(layout.into())?;
        let select = match (opt(select_digest), opt(select_name)) {
            (Some(d), _) => ImportSelect::Digest(d),
            (None, Some(n)) => ImportSelect::Name(n),
            (None, None) => ImportSelect::Only,
        };
        self.admin(uid, move |a| {
            let r = a.image_import(layout.path(), &select).map_err(to_control)?;
            ImageWire::new(&r, None).map_err(to_control)
        })
        .await
    }

    /// Installed images, each with `servers` using it.
    async fn image_list(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &zbus::Connection,
    ) -> Result<Vec<ImageWire>, ControlError> {
        let uid = self.authorize("image.list", "", &header, conn).await?;
        self.admin(uid, |a| {
            a.image_list()
                .and_then(|l| {
                    l.into_iter()
                        .map(|(r, users)| ImageWire::new(&r, Some(users)))
                        .collect()
                })
                .map_err(to_control)
        })
        .await
    }

    /// Removes an image no server uses; the bytes freed.
    async fn image_remove(
        &self,
        digest: String,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &zbus::Connection,
    ) -> Result<u64, ControlError> {
        let uid = self.authorize("image.rm", &digest, &header, conn).await?;
        self.admin(uid, move |a| a.image_remove(&digest).map_err(to_control))
            .await
    }

    async fn image_gc(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &zbus::Connection,
    ) -> Result<GcWire, ControlError> {
        let uid = self.authorize("image.gc", "", &header, conn).await?;
        let r = self
            .admin(uid, |a| a.image_gc().map_err(to_control))
            .await?;
        Ok(r.into())
    }

    // --- endpoints and tokens ---

    /// Creates an endpoint: each server with its tool subset (`*`: all).
    async fn endpoint_add(
        &self,
        name: String,
        servers: Vec<(String, Vec<String>)>,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &zbus::Connection,
        #[zbus(signal_emitter)] emitter: SignalEmitter<'_>,
    ) -> Result<(), ControlError> {
        let uid = self.authorize("endpoint.add", &name, &header, conn).await?;
        self.admin(uid, move |a| {
            a.endpoint_add(&name, servers).map_err(to_control)
        })
        .await?;
        let _ = Self::endpoints_changed(&emitter).await;
        Ok(())
    }

    /// The endpoint's own description of `server`'s `tool`.
    async fn endpoint_describe(
        &self,
        endpoint: String,
        server: String,
        tool: String,
        description: String,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &zbus::Connection,
        #[zbus(signal_emitter)] emitter: SignalEmitter<'_>,
    ) -> Result<(), ControlError> {
        let uid = self
            .authorize("endpoint.describe", &endpoint, &header, conn)
            .await?;
        self.admin(uid, move |a| {
            a.endpoint_describe(&endpoint, &server, &tool, &description)
                .map_err(to_control)
        })
        .await?;
        let _ = Self::endpoints_changed(&emitter).await;
        Ok(())
    }

    /// A new bearer token: `id`, and `secret`, returned this once (only its hash is kept).
    async fn token_create(
        &self,
        endpoint: String,
        label: String,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &zbus::Connection,
        #[zbus(signal_emitter)] emitter: SignalEmitter<'_>,
    ) -> Result<NewTokenWire, ControlError> {
        let uid = self
            .authorize("token.create", &endpoint, &header, conn)
            .await?;
        let t = self
            .admin(uid, move |a| {
                a.token_create(&endpoint, &label).map_err(to_control)
            })
            .await?;
        let _ = Self::tokens_changed(&emitter).await;
        Ok(t.into())
    }

    async fn token_revoke(
        &self,
        id: String,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &zbus::Connection,
        #[zbus(signal_emitter)] emitter: SignalEmitter<'_>,
    ) -> Result<(), ControlError> {
        let uid = self.authorize("token.revoke", &id, &header, conn).await?;
        self.admin(uid, move |a| a.token_revoke(&id).map_err(to_control))
            .await?;
        let _ = Self::tokens_changed(&emitter).await;
        Ok(())
    }

    // --- registries ---

    /// Adds a registry trusting `root` (root.json's bytes) and `ca_pem` (empty: none) for its
    /// HTTPS; a first sync is attempted and reported.
    async fn registry_add(
        &self,
        name: String,
        location: String,
        root: Vec<u8>,
        ca_pem: Vec<u8>,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &zbus::Connection,
        #[zbus(signal_emitter)] emitter: SignalEmitter<'_>,
    ) -> Result<RegistryAddedWire, ControlError> {
        let uid = self.authorize("registry.add", &name, &header, conn).await?;
        let r = self
            .admin(uid, move |a| {
                let ca = (!ca_pem.is_empty()).then_some(ca_pem.as_slice());
                a.registry_add(&name, &location, &root, ca)
                    .map_err(to_control)
            })
            .await?;
        let _ = Self::registries_changed(&emitter).await;
        Ok(r.into())
    }

    async fn registry_sync(
        &self,
        name: String,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &zbus::Connection,
        #[zbus(signal_emitter)] emitter: SignalEmitter<'_>,
    ) -> Result<SyncWire, ControlError> {
        let uid = self
            .authorize("registry.sync", &name, &header, conn)
            .await?;
        let r = self
            .admin(uid, move |a| a.registry_sync(&name).map_err(to_control))
            .await?;
        let _ = Self::registries_changed(&emitter).await;
        Ok(r.into())
    }

    async fn registry_list(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &zbus::Connection,
    ) -> Result<Vec<RegistryInfoWire>, ControlError> {
        let uid = self.authorize("registry.list", "", &header, conn).await?;
        let list = self
            .admin(uid, |a| a.registry_list().map_err(to_control))
            .await?;
        Ok(list.into_iter().map(Into::into).collect())
    }

    /// Removes a registry (refused while a server installed from it remains).
    async fn registry_forget(
        &self,
        name: String,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &zbus::Connection,
        #[zbus(signal_emitter)] emitter: SignalEmitter<'_>,
    ) -> Result<(), ControlError> {
        let uid = self
            .authorize("registry.forget", &name, &header, conn)
            .await?;
        self.admin(uid, move |a| a.registry_forget(&name).map_err(to_control))
            .await?;
        let _ = Self::registries_changed(&emitter).await;
        Ok(())
    }

    /// Every target whose name or description contains `text` (all for "").
    async fn registry_search(
        &self,
        text: String,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &zbus::Connection,
    ) -> Result<Vec<HitWire>, ControlError> {
        let uid = self
            .authorize("registry.search", &text, &header, conn)
            .await?;
        let hits = self
            .admin(uid, move |a| a.registry_search(&text).map_err(to_control))
            .await?;
        Ok(hits.into_iter().map(Into::into).collect())
    }

    /// The entry `[REG/]NAME[@VERSION]` names, with what it would be entitled to.
    async fn registry_show(
        &self,
        spec: String,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &zbus::Connection,
    ) -> Result<ShownWire, ControlError> {
        let uid = self
            .authorize("registry.show", &spec, &header, conn)
            .await?;
        let s = self
            .admin(uid, move |a| a.registry_show(&spec).map_err(to_control))
            .await?;
        Ok(s.into())
    }

    // --- signals: names only, never values ---

    /// A server's session changed: `starting`, `running`, `stopped` or `failed`.
    #[zbus(signal)]
    async fn server_state_changed(
        emitter: &SignalEmitter<'_>,
        name: &str,
        state: &str,
    ) -> zbus::Result<()>;

    #[zbus(signal)]
    async fn servers_changed(emitter: &SignalEmitter<'_>) -> zbus::Result<()>;

    #[zbus(signal)]
    async fn endpoints_changed(emitter: &SignalEmitter<'_>) -> zbus::Result<()>;

    #[zbus(signal)]
    async fn tokens_changed(emitter: &SignalEmitter<'_>) -> zbus::Result<()>;

    #[zbus(signal)]
    async fn secrets_changed(emitter: &SignalEmitter<'_>) -> zbus::Result<()>;

    #[zbus(signal)]
    async fn registries_changed(emitter: &SignalEmitter<'_>) -> zbus::Result<()>;
}

impl Control {
    /// `NotFound` unless a server of that name is installed (stop and logs of a typo must not
    /// answer as if it were a quiet server).
    async fn known_server(&self, uid: u32, name: &str) -> Result<(), ControlError> {
        let n = name.to_owned();
        let known = self
            .admin(uid, move |a| {
                a.server_list()
                    .map(|l| l.iter().any(|s| s.name == n))
                    .map_err(to_control)
            })
            .await?;
        if known {
            Ok(())
        } else {
            Err(ControlError::NotFound(format!("no server named {name}")))
        }
    }
}
