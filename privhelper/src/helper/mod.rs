//! `gigmcp-privhelper`: creates and destroys sandboxes for the gateway, over D-Bus.
//!
//! A sandbox's life (DESIGN 4): check the spec ([`validate`]) → pick a free slot (its /30 and its
//! host uid) → netns + veth ([`network`]) → firewall elements ([`firewall`]) → cgroups
//! ([`cgroup`]) → bwrap ([`spawn`]) → hand the stdio fds, a pidfd and (transparent mode) the
//! sockets of [`transparent`] to the caller. It ends when `DestroySandbox` is called, when the
//! gateway's end of stdin closes, or when the sandbox exits; teardown runs the same steps
//! backwards. On start-up [`Helper::sweep`] removes whatever a
//! previous run left.

pub mod cgroup;
pub mod firewall;
pub mod main;
pub mod network;
pub mod reaper;
pub mod spawn;
pub mod transparent;
pub mod validate;

use std::collections::{BTreeSet, HashMap};
use std::ffi::OsString;
use std::net::Ipv4Addr;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;

use tokio::sync::Mutex;
use zbus::OwnedFd as BusFd;
use zbus::message::Header;

use privhelper_api::{Created, HelperError, SandboxInfo, SandboxSpec, TransparentSockets};
use crate::config::Config;
use cgroup::{CgroupLimits, Layout, SandboxCgroup};
use firewall::{Firewall, LinkRule};
use network::{Link, Network};

use sandbox_init::SANDBOX_PATH as INIT_IN_SANDBOX;
/// The uid and gid the server has inside its user namespace.
const SANDBOX_ID: &str = "65534";

/// What [`Helper::build`] hands back besides the sandbox: stdin, stdout, stderr and pidfd for
/// the caller, the helper's own watch on stdin, and the transparent-mode sockets.
type Handed = (
    BusFd,
    BusFd,
    BusFd,
    BusFd,
    OwnedFd,
    Option<TransparentSockets>,
);

/// One live sandbox and everything that must be undone for it.
#[derive(Debug)]
struct Sandbox {
    info: SandboxInfo,
    link: String,
    rule: LinkRule,
    cgroup: SandboxCgroup,
    child: std::process::Child,
    pidfd: OwnedFd,
    data_name: Option<String>,
    /// Keeps the netns open for the sandbox's lifetime (it is pinned in /run/netns too).
    _netns: std::fs::File,
}

#[derive(Debug, Default)]
struct State {
    live: HashMap<String, Sandbox>,
    slots: BTreeSet<u32>,
    /// Data dirs of sandboxes being created or alive: at most one sandbox per data dir.
    data_in_use: std::collections::HashSet<String>,
}

/// The helper: configuration, host resources and the live sandboxes.
#[derive(Debug, Clone)]
pub struct Helper {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: Config,
    network: Network,
    firewall: Firewall,
    cgroups: Layout,
    launcher: spawn::Launcher,
    state: Mutex<State>,
    /// The bus connection, once serving: used to announce exits.
    bus: std::sync::OnceLock<zbus::Connection>,
    /// Host pids of the outer bwrap of every sandbox not yet reaped by its own waiter. The
    /// launcher adds a pid under this lock as it spawns, and the reaper scans under it.
    tracked: spawn::Tracked,
    /// The configured directories, opened once (see `validate::Roots`).
    roots: validate::Roots,
    /// Set at shutdown: no new sandboxes.
    shutting_down: std::sync::atomic::AtomicBool,
    /// Network removals still running in the background (awaited at shutdown).
    finishing: std::sync::Mutex<Vec<tokio::task::JoinHandle<Result<(), network::NetworkError>>>>,
}

/// What the start-up sweep removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Swept {
    pub namespaces: usize,
    pub links: usize,
    pub cgroups: usize,
}

impl Helper {
    /// Sets up host-wide state: the firewall table (recreated empty) and cgroup parents.
    pub async fn new(config: Config) -> anyhow::Result<Self> {
        use anyhow::Context;
        let network = Network::new(&config.instance).context("netlink")?;
        let firewall = Firewall::new(config.nft.clone(), &config.instance, &config.link_prefix);
        reaper::become_subreaper().context("becoming a child subreaper")?;
        let cgroups = Layout::detect(&config.instance)?;
        let roots = validate::Roots::open(&config).map_err(anyhow::Error::msg)?;
        let tracked = spawn::Tracked::default();
        cgroups.prepare()?;
        tracing::info!(cgroups = %cgroups.describe(), "cgroup layout");
        let helper = Self {
            inner: Arc::new(Inner {
                config,
                network,
                firewall,
                cgroups,
                launcher: spawn::Launcher::start(tracked.clone()),
                state: Mutex::new(State::default()),
                bus: std::sync::OnceLock::new(),
                tracked,
                roots,
                shutting_down: std::sync::atomic::AtomicBool::new(false),
                finishing: std::sync::Mutex::new(Vec::new()),
            }),
        };
        helper.spawn_reaper()?;
        Ok(helper)
    }

    /// Reaps orphaned sandbox processes whenever a child changes state.
    fn spawn_reaper(&self) -> anyhow::Result<()> {
        let mut sigchld = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::child())?;
        let helper = self.clone();
        tokio::spawn(async move {
            while sigchld.recv().await.is_some() {
                helper.reap();
            }
        });
        Ok(())
    }

    fn reap(&self) -> usize {
        let tracked = self.inner.tracked.lock();
        let bwrap = self.inner.config.bwrap.file_name().unwrap_or_default();
        reaper::reap_orphans(&tracked, &bwrap.to_string_lossy())
    }

    /// Removes everything a previous run left (its processes die with their cgroups), then
    /// installs a fresh, empty firewall table.
    pub async fn sweep(&self) -> anyhow::Result<Swept> {
        let i = &self.inner;
        let cgroups = i.cgroups.sweep();
        let (namespaces, links) = i.network.sweep(&i.config.link_prefix).await?;
        i.firewall.install()?;
        Ok(Swept {
            namespaces,
            links,
            cgroups,
        })
    }

    /// Destroys every live sandbox and removes the firewall table (orderly shutdown).
    pub async fn shutdown(&self) {
        use std::sync::atomic::Ordering;
        self.inner.shutting_down.store(true, Ordering::SeqCst);
        let ids: Vec<String> = self.inner.state.lock().await.live.keys().cloned().collect();
        for id in ids {
            let _ = self.destroy(&id, "helper shutdown", false).await;
        }
        let finishing: Vec<_> = self
            .inner
            .finishing
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
            .collect();
        for task in finishing {
            let _ = task.await;
        }
        // Teardowns started by watchers (sandboxes that exited) release their slot last.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while !self.inner.state.lock().await.slots.is_empty()
            && std::time::Instant::now() < deadline
        {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        if let Err(e) = self.inner.firewall.remove_table() {
            tracing::warn!("{e}");
        }
    }

    /// Lets the helper announce `SandboxExited` on `conn`.
    pub fn set_bus(&self, conn: zbus::Connection) {
        let _ = self.inner.bus.set(conn);
    }

    pub async fn list(&self) -> Vec<SandboxInfo> {
        let state = self.inner.state.lock().await;
        let mut all: Vec<_> = state.live.values().map(|s| s.info.clone()).collect();
        all.sort_by_key(|s| s.slot);
        all
    }

    pub async fn create(&self, spec: &SandboxSpec) -> Result<Created, HelperError> {
        let i = &self.inner;
        if i.shutting_down.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(HelperError::Failed("the helper is shutting down".into()));
        }
        let checked = validate::check(spec, &i.config, &i.roots)?;
        let data_name = checked.data_name.clone();
        let (slot, id) = {
            let mut state = i.state.lock().await;
            if let Some(name) = &data_name {
                if state.data_in_use.contains(name) {
                    return Err(HelperError::InvalidSpec(format!(
                        "data dir {name:?} is in use by another sandbox"
                    )));
                }
            }
            let slot = (0..i.config.slots())
                .find(|n| !state.slots.contains(n))
                .ok_or_else(|| {
                    HelperError::NoFreeSlot(format!("all {} slots are in use", i.config.slots()))
                })?;
            state.slots.insert(slot);
            if let Some(name) = &data_name {
                state.data_in_use.insert(name.clone());
            }
            (slot, new_id(&state))
        };
        match self.build(id.clone(), slot, checked).await {
            Ok((sandbox, fds)) => {
                let info = sandbox.info.clone();
                let watch = fds.4;
                i.state.lock().await.live.insert(id.clone(), sandbox);
                self.watch(id.clone(), watch);
                let transparent = fds.5.is_some();
                tracing::info!(id, server = %info.server, slot, transparent, "sandbox created");
                // The helper keeps none of these: each is closed here once the reply is sent.
                let sockets = fds.5.map(TransparentSockets::into_vec).unwrap_or_default();
                Ok((info, fds.0, fds.1, fds.2, fds.3, sockets))
            }
            Err(e) => {
                let mut state = i.state.lock().await;
                state.slots.remove(&slot);
                if let Some(name) = &data_name {
                    state.data_in_use.remove(name);
                }
                tracing::warn!(id, "sandbox creation failed: {e}");
                Err(e)
            }
        }
    }

    async fn build(
        &self,
        id: String,
        slot: u32,
        mut c: validate::Checked,
    ) -> Result<(Sandbox, Handed), HelperError> {
        let i = &self.inner;
        let cfg = &i.config;
        let failed =
            |step: &str, e: &dyn std::fmt::Display| HelperError::Failed(format!("{step}: {e}"));
        let base = u32::from(cfg.pool.network()) + slot * 4;
        let addrs = Link {
            host: Ipv4Addr::from(base + 1),
            sandbox: Ipv4Addr::from(base + 2),
        };
        let link = format!("{}{id}", cfg.link_prefix);
        let (uid, gid) = (cfg.uid_base + slot, cfg.uid_base + slot);
        // A sandbox uid must be nobody's: a real user's files and processes would be in reach.
        if let Ok(Some(user)) = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)) {
            return Err(HelperError::Failed(format!(
                "sandbox uid {uid} belongs to user {}: move uid_base to a free range",
                user.name
            )));
        }

        // The host address is known only now (it follows from the slot): put it where the
        // gateway asked for it (`api::PROXY_ADDR_TOKEN`), before anything reads the env.
        c.env = validate::expand_env(&c.env, addrs.host);
        let netns = i
            .network
            .create(&id, &link, addrs)
            .await
            .map_err(|e| failed("network", &e))?;
        let rule = LinkRule {
            link: link.clone(),
            host: addrs.host,
            sandbox: addrs.sandbox,
            proxy_port: c.proxy_port,
            transparent: c.transparent,
        };
        // From here on, undo what was done if a later step fails.
        let undo_network = || async {
            let _ = i.network.destroy(&id, &link).await;
        };
        // Bound before the firewall lets anything in: nothing can reach these ports unserved.
        let sockets = if c.transparent {
            match transparent::bind(addrs.host, &link) {
                Ok(s) => Some(s),
                Err(e) => {
                    undo_network().await;
                    return Err(failed("transparent mode", &e));
                }
            }
        } else {
            None
        };
        if let Err(e) = i.firewall.allow(&rule) {
            undo_network().await;
            return Err(failed("firewall", &e));
        }
        let cgroup = match i.cgroups.create(
            &id,
            CgroupLimits {
                memory_max: c.memory_max,
                pids_max: c.pids_max,
                cpu_percent: c.cpu_percent,
            },
        ) {
            Ok(cg) => cg,
            Err(e) => {
                let _ = i.firewall.revoke(&rule);
                undo_network().await;
                return Err(failed("cgroup", &e));
            }
        };
        let launched = async {
            if let Some(data) = &c.data {
                validate::chown_tree(data, uid, gid).map_err(|e| {
                    HelperError::InvalidSpec(format!(
                        "data dir cannot be given to the sandbox: {e}"
                    ))
                })?;
            }
            let resolv_conf = if c.transparent {
                let conf = transparent::resolv_conf(addrs.host);
                Some(
                    transparent::data_pipe(conf.as_bytes())
                        .map_err(|e| failed("resolv.conf", &e))?,
                )
            } else {
                None
            };
            let plan = self.plan(
                &c,
                uid,
                gid,
                netns.try_clone().map_err(|e| failed("netns", &e))?,
                &cgroup,
                resolv_conf,
            )?;
            i.launcher
                .launch(plan)
                .await
                .map_err(|e| failed("start bwrap", &e))
        }
        .await;
        let started = match launched {
            Ok(s) => s,
            Err(e) => {
                cgroup.kill();
                cgroup.remove();
                let _ = i.firewall.revoke(&rule);
                undo_network().await;
                return Err(e);
            }
        };
        let info = SandboxInfo {
            id: id.clone(),
            server: c.server.clone(),
            slot,
            host_addr: addrs.host.to_string(),
            sandbox_addr: addrs.sandbox.to_string(),
            pid: started.child.id(),
        };
        let sandbox = Sandbox {
            info,
            link,
            rule,
            cgroup,
            child: started.child,
            pidfd: started.pidfd,
            data_name: c.data_name,
            _netns: netns,
        };
        Ok((
            sandbox,
            (
                BusFd::from(started.stdin),
                BusFd::from(started.stdout),
                BusFd::from(started.stderr),
                BusFd::from(started.pidfd_for_caller),
                started.stdin_watch,
                sockets,
            ),
        ))
    }

    /// The bwrap command line and the child's setup (see [`spawn`] for the order of steps).
    fn plan(
        &self,
        c: &validate::Checked,
        uid: u32,
        gid: u32,
        netns: std::fs::File,
        cgroup: &SandboxCgroup,
        resolv_conf: Option<OwnedFd>,
    ) -> Result<spawn::Plan, HelperError> {
        let cfg = &self.inner.config;
        let dup = |fd: &OwnedFd| {
            fd.try_clone()
                .map_err(|e| HelperError::Failed(format!("dup: {e}")))
        };
        // fds are passed at fixed numbers from 3 up: rootfs, data, one per CA copy, then the
        // transparent-mode resolv.conf.
        let mut pass = vec![(dup(&c.rootfs)?, 3)];
        let mut args: Vec<OsString> = Vec::new();
        let mut arg = |a: &str| args.push(a.into());
        for flag in [
            "--unshare-user",
            "--unshare-pid",
            "--unshare-ipc",
            "--unshare-uts",
            "--unshare-cgroup",
            "--disable-userns",
            "--die-with-parent",
            "--new-session",
        ] {
            arg(flag);
        }
        for a in [
            "--uid",
            SANDBOX_ID,
            "--gid",
            SANDBOX_ID,
            "--hostname",
            "sandbox",
        ] {
            arg(a);
        }
        for a in ["--ro-bind-fd", "3", "/", "--proc", "/proc", "--dev", "/dev"] {
            arg(a);
        }
        let tmp = cfg.ceilings.tmp_bytes.to_string();
        for a in ["--size", &tmp, "--tmpfs", "/tmp", "--tmpfs", "/run"] {
            arg(a);
        }
        args.push("--ro-bind".into());
        args.push(cfg.sandbox_init.clone().into());
        args.push(INIT_IN_SANDBOX.into());
        let mut next = 4;
        if let Some(data) = &c.data {
            pass.push((dup(data)?, next));
            args.extend(["--bind-fd".into(), next.to_string().into(), "/data".into()]);
            next += 1;
        }
        for (fd, dest) in &c.ca {
            pass.push((dup(fd)?, next));
            args.extend([
                "--perms".into(),
                "0444".into(),
                "--ro-bind-data".into(),
                next.to_string().into(),
                dest.into(),
            ]);
            next += 1;
        }
        if let Some(fd) = resolv_conf {
            pass.push((fd, next));
            args.extend([
                "--perms".into(),
                "0444".into(),
                "--ro-bind-data".into(),
                next.to_string().into(),
                format!("/{}", validate::RESOLV_CONF).into(),
            ]);
        }
        args.push("--clearenv".into());
        for (k, v) in &c.env {
            args.extend(["--setenv".into(), k.into(), v.into()]);
        }
        args.extend(["--chdir".into(), "/tmp".into(), "--".into()]);
        args.push(INIT_IN_SANDBOX.into());
        let init = sandbox_init::args::Args {
            proxy_port: c.proxy_port,
            transparent: c.transparent,
            data: c.data.is_some(),
            allow_degraded_landlock: cfg.allow_degraded_landlock,
            server: c.argv.iter().map(OsString::from).collect(),
        };
        args.extend(init.to_args());
        Ok(spawn::Plan {
            bwrap: cfg.bwrap.clone(),
            args,
            uid,
            gid,
            netns,
            cgroup_procs: cgroup
                .procs_files()
                .map_err(|e| HelperError::Failed(e.to_string()))?,
            pass_fds: pass,
            nproc: u64::from(c.pids_max),
        })
    }

    /// Tears a sandbox down when it exits or when the gateway's end of its stdin closes.
    fn watch(&self, id: String, stdin_watch: OwnedFd) {
        let helper = self.clone();
        tokio::spawn(async move {
            let pidfd = {
                let state = helper.inner.state.lock().await;
                match state.live.get(&id).map(|s| s.pidfd.try_clone()) {
                    Some(Ok(fd)) => fd,
                    Some(Err(_)) => {
                        drop(state);
                        // Unwatchable: end it now rather than let it run unobserved.
                        let _ = helper.destroy(&id, "cannot watch the sandbox", false).await;
                        return;
                    }
                    None => return,
                }
            };
            let reason = match (spawn::watchable(pidfd), spawn::watchable(stdin_watch)) {
                (Ok(pidfd), Ok(stdin)) => {
                    tokio::select! {
                        _ = pidfd.readable() => "sandbox exited",
                        () = hung_up(&stdin) => "gateway closed the sandbox's stdin",
                    }
                }
                _ => "cannot watch the sandbox",
            };
            let _ = helper.destroy(&id, reason, false).await;
        });
    }

    /// Kills every process of the sandbox and removes all its resources.
    ///
    /// Processes, firewall elements and cgroups are gone when this returns. The network
    /// (deleting a veth waits for an RCU grace period, ~20 ms) is removed afterwards in the
    /// background when `network_later` is set, with the slot held until it is gone;
    /// `SandboxExited` is announced once everything is.
    pub async fn destroy(
        &self,
        id: &str,
        reason: &str,
        network_later: bool,
    ) -> Result<(), HelperError> {
        let i = &self.inner;
        let Some(mut sandbox) = i.state.lock().await.live.remove(id) else {
            return Err(HelperError::NotFound(format!("no sandbox {id:?}")));
        };
        // bwrap first: with it goes the sandbox's PID namespace, all of it. Then the cgroup, for
        // anything that escaped the namespace's death (nothing should).
        let _ = rustix::process::pidfd_send_signal(&sandbox.pidfd, rustix::process::Signal::KILL);
        sandbox.cgroup.kill();
        let mut problems = Vec::new();
        if let Err(e) = i.firewall.revoke(&sandbox.rule) {
            problems.push(e.to_string());
        }
        let status = tokio::task::spawn_blocking(move || {
            let status = sandbox.child.wait();
            sandbox.cgroup.remove();
            (sandbox, status)
        })
        .await
        .map_err(|e| HelperError::Failed(format!("reaping: {e}")))?;
        let (sandbox, status) = status;
        i.tracked.lock().remove(&sandbox.info.pid);
        // The namespace's init outlives bwrap by a moment: reap it before reporting.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        while self.reap() > 0 && std::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        let status = status.ok();
        let finish = {
            let helper = self.clone();
            let (id, reason) = (id.to_owned(), reason.to_owned());
            async move {
                let i = &helper.inner;
                let result = i.network.destroy(&id, &sandbox.link).await;
                if let Err(e) = &result {
                    tracing::error!(id, "removing the sandbox network: {e}");
                }
                {
                    let mut state = i.state.lock().await;
                    state.slots.remove(&sandbox.info.slot);
                    if let Some(name) = &sandbox.data_name {
                        state.data_in_use.remove(name);
                    }
                }
                helper.announce_exit(&id, status.as_ref(), &reason).await;
                tracing::info!(
                    id,
                    server = %sandbox.info.server,
                    reason,
                    status = ?status,
                    "sandbox destroyed"
                );
                result
            }
        };
        if network_later {
            let mut finishing = i.finishing.lock().unwrap_or_else(|p| p.into_inner());
            finishing.retain(|t| !t.is_finished());
            finishing.push(tokio::spawn(finish));
        } else if let Err(e) = finish.await {
            problems.push(e.to_string());
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(HelperError::Failed(problems.join("; ")))
        }
    }
}

impl Helper {
    async fn announce_exit(
        &self,
        id: &str,
        status: Option<&std::process::ExitStatus>,
        reason: &str,
    ) {
        use std::os::unix::process::ExitStatusExt;
        let Some(conn) = self.inner.bus.get() else {
            return;
        };
        let (code, signal) = match status {
            Some(s) => (s.code().unwrap_or(-1), s.signal().unwrap_or(0)),
            None => (-1, 0),
        };
        let emitted = async {
            let iface = conn
                .object_server()
                .interface::<_, Service>(privhelper_api::OBJECT_PATH)
                .await?;
            Service::sandbox_exited(iface.signal_emitter(), id, code, signal, reason).await
        }
        .await;
        if let Err(e) = emitted {
            tracing::warn!(id, "cannot announce the exit: {e}");
        }
    }
}

/// Resolves when every writer of the pipe behind `fd` has closed it.
async fn hung_up(fd: &tokio::io::unix::AsyncFd<OwnedFd>) {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    loop {
        let Ok(mut guard) = fd.readable().await else {
            return;
        };
        let mut fds = [PollFd::new(fd.get_ref().as_fd(), PollFlags::POLLIN)];
        let hup = poll(&mut fds, PollTimeout::ZERO).is_ok()
            && fds[0]
                .revents()
                .is_some_and(|r| r.contains(PollFlags::POLLHUP));
        if hup {
            return;
        }
        // Readable only because data is waiting for the server: wait for the next change.
        guard.clear_ready();
    }
}

fn new_id(state: &State) -> String {
    loop {
        let mut b = [0u8; 4];
        getrandom::fill(&mut b).expect("kernel randomness");
        let id = hex::encode(b);
        if !state.live.contains_key(&id) {
            return id;
        }
    }
}

/// The D-Bus face of the helper. Every method first checks the caller's uid with the bus: the
/// bus policy is the first fence, this is the second.
#[derive(Debug)]
pub struct Service {
    helper: Helper,
}

impl Service {
    pub fn new(helper: Helper) -> Self {
        Self { helper }
    }

    async fn authorize(
        &self,
        header: &Header<'_>,
        conn: &zbus::Connection,
    ) -> Result<(), HelperError> {
        let sender = header
            .sender()
            .ok_or_else(|| HelperError::PermissionDenied("message has no sender".into()))?;
        let uid = zbus::fdo::DBusProxy::new(conn)
            .await?
            .get_connection_unix_user(sender.clone().into())
            .await
            .map_err(zbus::Error::from)?;
        let allowed = self.helper.inner.config.caller_uid();
        if uid != allowed {
            tracing::warn!(uid, sender = %sender, "refused a caller that is not the gateway");
            return Err(HelperError::PermissionDenied(format!(
                "uid {uid} may not use the helper"
            )));
        }
        Ok(())
    }
}

#[zbus::interface(name = "org.gigmcp.PrivHelper1")]
impl Service {
    async fn create_sandbox(
        &self,
        spec: SandboxSpec,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &zbus::Connection,
    ) -> Result<Created, HelperError> {
        self.authorize(&header, conn).await?;
        self.helper.create(&spec).await.inspect_err(|e| {
            tracing::warn!(server = %spec.server, "CreateSandbox refused: {e}");
        })
    }

    async fn destroy_sandbox(
        &self,
        id: String,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &zbus::Connection,
    ) -> Result<(), HelperError> {
        self.authorize(&header, conn).await?;
        self.helper.destroy(&id, "DestroySandbox", true).await
    }

    async fn list_sandboxes(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &zbus::Connection,
    ) -> Result<Vec<SandboxInfo>, HelperError> {
        self.authorize(&header, conn).await?;
        Ok(self.helper.list().await)
    }

    #[zbus(signal)]
    async fn sandbox_exited(
        emitter: &zbus::object_server::SignalEmitter<'_>,
        id: &str,
        code: i32,
        signal: i32,
        reason: &str,
    ) -> zbus::Result<()>;
}
