//! `gigmcp-privhelper`: creates and destroys sandboxes for the gateway, over D-Bus.
//!
//! A sandbox's life (DESIGN 4): check the spec ([`validate`]) → pick a free slot (its /30 and its
//! host uid) → build it on the host ([`lifecycle`], through the [`host`] seam: netns + veth
//! ([`network`]), firewall elements ([`firewall`]), cgroups ([`cgroup`]), bwrap ([`spawn`]) with
//! the command line of [`argv`]) → hand the stdio fds, a pidfd and the listening sockets of
//! [`transparent`] (the proxy's, and transparent mode's) to the caller. It ends when `DestroySandbox` is called, when the
//! gateway's end of stdin closes, or when the sandbox exits; teardown ([`lifecycle`] again,
//! through the same seam) kills its processes first, then removes what the build made, trying
//! every step. On start-up [`Helper::sweep`] removes whatever a previous run left. The D-Bus
//! face is [`Service`].

mod argv;
mod cgroup;
mod data_dir;
mod error;
mod firewall;
mod host;
mod image;
mod lifecycle;
mod network;
mod reaper;
mod service;
mod spawn;
mod transparent;
mod validate;

pub use error::{StartError, StepError, TeardownError, TeardownErrors};
pub use service::Service;
pub use validate::{MIN_MEMORY, MIN_PIDS, is_static_elf};

use std::collections::{BTreeSet, HashMap};
use std::net::Ipv4Addr;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;

use tokio::sync::Mutex;
use zbus::OwnedFd as BusFd;

use crate::config::Config;
use cgroup::Layout;
use firewall::{Firewall, LinkRule};
use host::LinuxHost;
use network::{Link, Network};
use privhelper_api::{Created, HelperError, SandboxInfo, SandboxSpec};

/// One live sandbox and everything that must be undone for it.
#[derive(Debug)]
struct Sandbox {
    info: SandboxInfo,
    link: String,
    rule: LinkRule,
    bwrap: spawn::Bwrap,
    data_name: Option<String>,
    /// Keeps the netns open for the sandbox's lifetime (it is pinned in /run/netns too).
    netns: network::Netns,
}

#[derive(Debug, Default)]
struct State {
    live: HashMap<String, Sandbox>,
    slots: BTreeSet<u32>,
    /// Data dirs of sandboxes being created or alive: at most one sandbox per data dir.
    data_in_use: std::collections::HashSet<String>,
}

impl State {
    /// Frees the slot and the data dir of a sandbox that is gone (or was never made).
    fn release(&mut self, slot: u32, data_name: Option<&String>) {
        self.slots.remove(&slot);
        if let Some(name) = data_name {
            self.data_in_use.remove(name);
        }
    }
}

/// The helper: configuration, host resources and the live sandboxes.
#[derive(Debug, Clone)]
pub struct Helper {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: Config,
    host: LinuxHost,
    state: Mutex<State>,
    /// The bus connection, once serving: used to announce exits.
    bus: std::sync::OnceLock<zbus::Connection>,
    /// The configured directories, opened once (see `validate::Roots`).
    roots: validate::Roots,
    /// Set at shutdown: no new sandboxes.
    shutting_down: std::sync::atomic::AtomicBool,
    /// Network removals still running in the background (awaited at shutdown).
    finishing: std::sync::Mutex<Vec<tokio::task::JoinHandle<Result<(), TeardownErrors>>>>,
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
    pub async fn new(config: Config) -> Result<Self, StartError> {
        let network = Network::new(&config.instance).map_err(StartError::Netlink)?;
        let firewall = Firewall::new(config.nft.clone(), &config.instance, &config.link_prefix);
        reaper::become_subreaper().map_err(StartError::Subreaper)?;
        let cgroups = Layout::detect(&config.instance).map_err(StartError::Cgroups)?;
        let roots = validate::Roots::open(&config).map_err(StartError::Roots)?;
        let tracked = spawn::Tracked::default();
        cgroups.prepare().map_err(StartError::Cgroups)?;
        tracing::info!(?cgroups, "cgroup layout");
        let host = LinuxHost {
            network,
            firewall,
            cgroups,
            launcher: spawn::Launcher::start(config.bwrap.clone(), tracked.clone()),
            bwrap: config.bwrap.clone(),
            link_prefix: config.link_prefix.clone(),
            tracked,
        };
        let helper = Self {
            inner: Arc::new(Inner {
                config,
                host,
                state: Mutex::new(State::default()),
                bus: std::sync::OnceLock::new(),
                roots,
                shutting_down: std::sync::atomic::AtomicBool::new(false),
                finishing: std::sync::Mutex::new(Vec::new()),
            }),
        };
        helper.spawn_reaper().map_err(StartError::Signal)?;
        Ok(helper)
    }

    /// Reaps orphaned sandbox processes whenever a child changes state.
    fn spawn_reaper(&self) -> std::io::Result<()> {
        let mut sigchld = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::child())?;
        let helper = self.clone();
        tokio::spawn(async move {
            while sigchld.recv().await.is_some() {
                helper.inner.host.reap_orphans();
            }
        });
        Ok(())
    }

    /// The one uid allowed to call (see `Service`).
    fn caller_uid(&self) -> u32 {
        self.inner.config.caller_uid()
    }

    /// Removes everything a previous run left (see [`lifecycle::sweep`]), then installs a
    /// fresh, empty firewall table.
    pub async fn sweep(&self) -> Result<Swept, StartError> {
        let removed = lifecycle::sweep(&self.inner.host).await?;
        self.inner
            .host
            .firewall
            .install()
            .map_err(StartError::Firewall)?;
        let count = |f: fn(&host::Undo) -> bool| removed.iter().filter(|u| f(u)).count();
        Ok(Swept {
            namespaces: count(|u| matches!(u, host::Undo::RemoveNetns { .. })),
            links: count(|u| matches!(u, host::Undo::DeleteLink { .. })),
            cgroups: count(|u| matches!(u, host::Undo::RemoveCgroup { .. })),
        })
    }

    /// Destroys every live sandbox and removes the firewall table (orderly shutdown), and the
    /// instance's cgroup parents once they are empty.
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
        if let Err(e) = self.inner.host.firewall.remove_table() {
            tracing::warn!("{e}");
        }
        self.inner.host.cgroups.remove_parents();
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
            return Err(StepError::ShuttingDown.into());
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
            Ok((sandbox, created, stdin_watch)) => {
                let (server, transparent) = (sandbox.info.server.clone(), created.5.len() > 1);
                let mut state = i.state.lock().await;
                state.live.insert(id.clone(), sandbox);
                // Checked under the lock `shutdown` takes to collect the live sandboxes: one
                // that finished building after that collection would otherwise outlive the
                // firewall table (its link then under the host's policy).
                if i.shutting_down.load(std::sync::atomic::Ordering::SeqCst) {
                    drop(state);
                    let _ = self.destroy(&id, "helper shutdown", false).await;
                    return Err(StepError::ShuttingDown.into());
                }
                drop(state);
                self.watch(id.clone(), stdin_watch);
                tracing::info!(id, server, slot, transparent, "sandbox created");
                Ok(created)
            }
            Err(e) => {
                i.state.lock().await.release(slot, data_name.as_ref());
                tracing::warn!(id, "sandbox creation failed: {e}");
                Err(e.into())
            }
        }
    }

    /// Builds the sandbox in `slot` (see [`lifecycle`]) and splits it into what the helper
    /// keeps, the reply to the caller, and the helper's own watch on the sandbox's stdin.
    async fn build(
        &self,
        id: String,
        slot: u32,
        mut c: validate::Checked,
    ) -> Result<(Sandbox, Created, OwnedFd), StepError> {
        let cfg = &self.inner.config;
        let base = u32::from(cfg.pool.network()) + slot * 4;
        let at = lifecycle::Placement {
            link: format!("{}{id}", cfg.link_prefix),
            id,
            addrs: Link {
                host: Ipv4Addr::from(base + 1),
                sandbox: Ipv4Addr::from(base + 2),
            },
            uid: cfg.uid_base + slot,
            gid: cfg.uid_base + slot,
        };
        // The host address is known only now (it follows from the slot): put it where the
        // gateway asked for it (`api::PROXY_ADDR_TOKEN`), before anything reads the env.
        c.env = validate::expand_env(&c.env, at.addrs.host);
        let settings = lifecycle::Settings {
            init: &cfg.sandbox_init,
            tmp_bytes: cfg.ceilings.tmp_bytes,
            allow_degraded_landlock: cfg.allow_degraded_landlock,
            nofile: cfg.ceilings.nofile,
        };
        let built = lifecycle::build(&self.inner.host, &at, &c, settings).await?;
        let started = built.started;
        let info = SandboxInfo {
            id: at.id,
            server: c.server,
            slot,
            host_addr: at.addrs.host.to_string(),
            sandbox_addr: at.addrs.sandbox.to_string(),
            pid: started.bwrap.child.id(),
        };
        // The helper keeps none of the handed fds: each is closed here once the reply is sent.
        let created = (
            info.clone(),
            BusFd::from(started.stdin),
            BusFd::from(started.stdout),
            BusFd::from(started.stderr),
            BusFd::from(started.pidfd_for_caller),
            built.sockets.into_vec(),
        );
        let sandbox = Sandbox {
            info,
            link: at.link,
            rule: built.rule,
            bwrap: started.bwrap,
            data_name: c.data_name,
            netns: built.netns,
        };
        Ok((sandbox, created, started.stdin_watch))
    }

    /// Tears a sandbox down when it exits or when the gateway's end of its stdin closes.
    fn watch(&self, id: String, stdin_watch: OwnedFd) {
        let helper = self.clone();
        tokio::spawn(async move {
            let pidfd = {
                let state = helper.inner.state.lock().await;
                match state.live.get(&id).map(|s| s.bwrap.pidfd.try_clone()) {
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

    /// Kills every process of the sandbox and removes all its resources (see
    /// [`lifecycle::stop`] and [`lifecycle::unplug`] for the order), reporting every step that
    /// failed.
    ///
    /// Processes, firewall elements and cgroups are gone when this returns. The network is
    /// removed afterwards in the background when `network_later` is set, with the slot held
    /// until it is gone; `SandboxExited` is announced once everything is.
    pub async fn destroy(
        &self,
        id: &str,
        reason: &str,
        network_later: bool,
    ) -> Result<(), HelperError> {
        let i = &self.inner;
        let Some(sandbox) = i.state.lock().await.live.remove(id) else {
            return Err(HelperError::NotFound(format!("no sandbox {id:?}")));
        };
        let mut errors = TeardownErrors::default();
        let status = lifecycle::stop(&i.host, id, &sandbox.rule, sandbox.bwrap, &mut errors).await;
        let (helper, id, reason) = (self.clone(), id.to_owned(), reason.to_owned());
        let finish = async move {
            let i = &helper.inner;
            let result = lifecycle::unplug(&i.host, &id, &sandbox.link).await;
            drop(sandbox.netns);
            if let Err(e) = &result {
                tracing::error!(id, "removing the sandbox network: {e}");
            }
            let data_name = sandbox.data_name.as_ref();
            i.state.lock().await.release(sandbox.info.slot, data_name);
            helper.announce_exit(&id, status.as_ref(), &reason).await;
            let server = &sandbox.info.server;
            tracing::info!(id, server, reason, ?status, "sandbox destroyed");
            result
        };
        if network_later {
            let mut finishing = i.finishing.lock().unwrap_or_else(|p| p.into_inner());
            finishing.retain(|t| !t.is_finished());
            finishing.push(tokio::spawn(finish));
        } else if let Err(e) = finish.await {
            errors.0.extend(e.0);
        }
        Ok(errors.into_result()?)
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

/// Whether `link` is named as [`Helper::build`] names a sandbox's host link: `link_prefix`
/// and an id of [`new_id`]'s form (8 lowercase hex digits).
fn is_sandbox_link(link_prefix: &str, link: &str) -> bool {
    link.strip_prefix(link_prefix).is_some_and(|id| {
        id.len() == 8 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    })
}

fn new_id(state: &State) -> String {
    loop {
        let mut b = [0u8; 4];
        let n = rustix::rand::getrandom(&mut b, rustix::rand::GetRandomFlags::empty())
            .expect("kernel randomness");
        assert_eq!(n, b.len(), "getrandom returns up to 256 bytes whole");
        let id: String = b.iter().map(|x| format!("{x:02x}")).collect();
        if !state.live.contains_key(&id) {
            return id;
        }
    }
}

#[cfg(test)]
mod recording;
