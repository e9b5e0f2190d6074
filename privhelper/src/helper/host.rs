//! The seam under a sandbox's lifecycle: [`Host`] is everything the helper asks of the host to
//! build one (the uid check, netns, veth, addresses, the listening sockets, firewall
//! elements, cgroups, the data dir's owner, the spawn) and to tear one down (kill, reap, and
//! the removals of [`Undo`]); [`LinuxHost`] is the real implementation. The order of the steps,
//! the unwinding after a failure and the teardown live in `lifecycle` and are tested there
//! against a recording double, without root.
//!
//! Every step that creates something on the host returns a [`Made`]: the value and the [`Undo`]
//! that removes exactly what the step created. Undos are plain data, so the lifecycle can keep
//! them in order and run them backwards, and a test can compare them.

use std::future::Future;
use std::net::Ipv4Addr;
use std::os::fd::OwnedFd;

use privhelper_api::Listeners;

use super::cgroup::{CgroupLimits, Layout, SandboxCgroup};
use super::firewall::{Firewall, LinkRule};
use super::network::{Link, Netns, Network};
pub use super::spawn::Launch;
use super::spawn::{Bwrap, Launcher, Started, Tracked};
use super::{StartError, StepError, TeardownError, reaper};

/// What one creation step made, and how to remove it again.
#[derive(Debug)]
pub struct Made<T> {
    pub value: T,
    pub undo: Undo,
}

/// The removal of one thing a creation step made on the host (or a step of teardown).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Undo {
    /// SIGKILL every process in the sandbox's cgroups (teardown only: creation's undo of the
    /// cgroups kills too).
    KillCgroup { id: String },
    /// Unpin and remove the sandbox's network namespace.
    RemoveNetns { id: String },
    /// Delete the host end of the veth pair (the peer goes with it).
    DeleteLink { link: String },
    /// Delete the sandbox's firewall elements.
    Revoke(LinkRule),
    /// Kill whatever runs in the sandbox's cgroups and remove them.
    RemoveCgroup { id: String },
}

/// Where a sandbox's listening sockets go: its link and host address, its proxy port, and
/// whether transparent mode's three sockets are wanted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenOn<'a> {
    pub host: Ipv4Addr,
    pub link: &'a str,
    pub proxy_port: u16,
    pub transparent: bool,
}

/// What the helper asks of the host to build a sandbox, tear it down and sweep a previous
/// run's leftovers, one call per step.
pub trait Host: Sync {
    type Netns: Send + Sync;
    type Cgroup: Send + Sync;
    type Sockets: Send;
    type Started: Send;
    /// What the helper keeps of a started sandbox to kill and reap it.
    type Process: Send;

    /// Refuses a sandbox uid that belongs to a user.
    fn check_uid(&self, uid: u32) -> Result<(), StepError>;
    fn create_netns(&self, id: &str) -> Result<Made<Self::Netns>, StepError>;
    fn create_veth(
        &self,
        ns: &Self::Netns,
        link: &str,
    ) -> impl Future<Output = Result<Made<()>, StepError>> + Send;
    /// Addresses both ends and brings them up (the addresses go with the link: no undo).
    fn configure_link(
        &self,
        ns: &Self::Netns,
        link: &str,
        addrs: Link,
    ) -> impl Future<Output = Result<(), StepError>> + Send;
    /// The proxy listener and, in transparent mode, its three sockets (closing them is their
    /// undo: they are dropped with the half-built sandbox).
    fn bind_listeners(&self, on: ListenOn<'_>) -> Result<Self::Sockets, StepError>;
    fn allow(&self, rule: &LinkRule) -> Result<Made<()>, StepError>;
    fn create_cgroup(
        &self,
        id: &str,
        limits: CgroupLimits,
    ) -> Result<Made<Self::Cgroup>, StepError>;
    /// Gives the data dir to the sandbox's uid (nothing to undo: the next sandbox of the same
    /// server takes it over the same way).
    fn give_data_dir(&self, dir: &OwnedFd, uid: u32, gid: u32) -> Result<(), StepError>;
    fn spawn(
        &self,
        launch: Launch<&Self::Netns, &Self::Cgroup>,
    ) -> impl Future<Output = Result<Self::Started, StepError>> + Send;
    /// What a previous run left on the host (found by our names' prefixes), as the removals
    /// that clear it.
    fn leftovers(&self) -> impl Future<Output = Result<Vec<Undo>, StartError>> + Send;
    /// Runs one undo; the caller carries on with the rest whatever it returns.
    fn undo(&self, undo: Undo) -> impl Future<Output = Result<(), TeardownError>> + Send;
    /// SIGKILLs the sandbox's outer bwrap: with it goes the sandbox's whole PID namespace.
    fn kill(&self, process: &Self::Process) -> Result<(), TeardownError>;
    /// Waits for the killed bwrap and for the namespace's init that outlives it by a moment,
    /// and returns bwrap's exit status.
    fn reap(
        &self,
        process: Self::Process,
    ) -> impl Future<Output = Result<Option<std::process::ExitStatus>, TeardownError>> + Send;
}

/// The real host: netlink, nftables, cgroupfs and the launcher thread.
#[derive(Debug)]
pub struct LinuxHost {
    pub network: Network,
    pub firewall: Firewall,
    pub cgroups: Layout,
    pub launcher: Launcher,
    /// The bwrap binary (from the configuration).
    pub bwrap: std::path::PathBuf,
    /// The prefix of our host link names (from the configuration).
    pub link_prefix: String,
    /// Host pids of outer bwraps not yet reaped by their own waiter. The launcher adds a pid
    /// under this lock as it spawns, and [`LinuxHost::reap_orphans`] scans under it.
    pub tracked: Tracked,
}

impl LinuxHost {
    /// Reaps orphaned sandbox processes (see `reaper`); returns how many are still alive.
    pub fn reap_orphans(&self) -> usize {
        let tracked = self.tracked.lock();
        let bwrap = self.bwrap.file_name().unwrap_or_default();
        reaper::reap_orphans(&tracked, &bwrap.to_string_lossy())
    }
}

impl Host for LinuxHost {
    type Netns = Netns;
    type Cgroup = SandboxCgroup;
    type Sockets = Listeners;
    type Started = Started;
    type Process = Bwrap;

    fn check_uid(&self, uid: u32) -> Result<(), StepError> {
        match nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)) {
            Ok(Some(user)) => Err(StepError::UidTaken {
                uid,
                user: user.name,
            }),
            _ => Ok(()),
        }
    }

    fn create_netns(&self, id: &str) -> Result<Made<Netns>, StepError> {
        let value = self.network.create_netns(id).map_err(StepError::Netns)?;
        let undo = Undo::RemoveNetns { id: id.to_owned() };
        Ok(Made { value, undo })
    }

    async fn create_veth(&self, ns: &Netns, link: &str) -> Result<Made<()>, StepError> {
        self.network
            .create_veth(ns, link)
            .await
            .map_err(StepError::Veth)?;
        let undo = Undo::DeleteLink {
            link: link.to_owned(),
        };
        Ok(Made { value: (), undo })
    }

    async fn configure_link(&self, ns: &Netns, link: &str, addrs: Link) -> Result<(), StepError> {
        self.network
            .configure(ns, link, addrs)
            .await
            .map_err(StepError::Addresses)
    }

    fn bind_listeners(&self, on: ListenOn<'_>) -> Result<Listeners, StepError> {
        super::transparent::bind(on.host, on.link, on.proxy_port, on.transparent)
            .map_err(StepError::Listener)
    }

    fn allow(&self, rule: &LinkRule) -> Result<Made<()>, StepError> {
        self.firewall.allow(rule).map_err(StepError::Firewall)?;
        let undo = Undo::Revoke(rule.clone());
        Ok(Made { value: (), undo })
    }

    fn create_cgroup(
        &self,
        id: &str,
        limits: CgroupLimits,
    ) -> Result<Made<SandboxCgroup>, StepError> {
        let value = self.cgroups.create(id, limits).map_err(StepError::Cgroup)?;
        let undo = Undo::RemoveCgroup { id: id.to_owned() };
        Ok(Made { value, undo })
    }

    fn give_data_dir(&self, dir: &OwnedFd, uid: u32, gid: u32) -> Result<(), StepError> {
        super::data_dir::chown_tree(dir, uid, gid).map_err(StepError::DataDir)
    }

    async fn spawn(&self, l: Launch<&Netns, &SandboxCgroup>) -> Result<Started, StepError> {
        // The arguments go to bwrap through an fd, never its argv (see `argv`).
        let mut pass_fds = l.pass_fds;
        let fd = super::argv::args_fd(&pass_fds);
        let file = super::argv::args_file(&l.args.options);
        pass_fds.push((args_memfd(&file).map_err(StepError::BwrapArgs)?, fd));
        let plan = Launch {
            netns: l.netns.file.try_clone().map_err(StepError::Dup)?,
            cgroup: l.cgroup.procs_files().map_err(StepError::Cgroup)?,
            args: l.args.through_fd(fd),
            pass_fds,
            uid: l.uid,
            gid: l.gid,
            nproc: l.nproc,
            nofile: l.nofile,
        };
        self.launcher.launch(plan).await.map_err(StepError::Spawn)
    }

    async fn leftovers(&self) -> Result<Vec<Undo>, StartError> {
        let cgroups = self.cgroups.leftovers();
        let found = self.network.leftovers(&self.link_prefix).await;
        let (namespaces, links) = found.map_err(StartError::Sweep)?;
        // Only a link named as the helper names them is a leftover; any other under the
        // prefix is the host's, and the firewall's wildcard would catch it: refused, not
        // deleted.
        if let Some(link) = links
            .iter()
            .find(|l| !super::is_sandbox_link(&self.link_prefix, l))
        {
            return Err(StartError::LinkPrefixTaken {
                prefix: self.link_prefix.clone(),
                link: link.clone(),
            });
        }
        let kills = cgroups.iter().map(|id| Undo::KillCgroup { id: id.clone() });
        let removals = cgroups
            .iter()
            .map(|id| Undo::RemoveCgroup { id: id.clone() });
        Ok(kills
            .chain(removals)
            .chain(links.into_iter().map(|link| Undo::DeleteLink { link }))
            .chain(namespaces.into_iter().map(|id| Undo::RemoveNetns { id }))
            .collect())
    }

    async fn undo(&self, undo: Undo) -> Result<(), TeardownError> {
        match undo {
            Undo::KillCgroup { id } => {
                self.cgroups.existing(&id).kill();
                Ok(())
            }
            Undo::RemoveNetns { id } => {
                self.network.remove_netns(&id).map_err(TeardownError::Netns)
            }
            Undo::DeleteLink { link } => {
                let deleted = self.network.delete_link(&link).await;
                deleted.map_err(TeardownError::Link)
            }
            Undo::Revoke(rule) => self.firewall.revoke(&rule).map_err(TeardownError::Firewall),
            Undo::RemoveCgroup { id } => {
                let cg = self.cgroups.existing(&id);
                cg.kill();
                // Waits (up to seconds) for the cgroups to empty: not on the runtime's threads.
                let removed = tokio::task::spawn_blocking(move || cg.remove()).await;
                removed
                    .map_err(TeardownError::Join)?
                    .map_err(TeardownError::Cgroup)
            }
        }
    }

    fn kill(&self, bwrap: &Bwrap) -> Result<(), TeardownError> {
        use rustix::process::{Signal, pidfd_send_signal};
        match pidfd_send_signal(&bwrap.pidfd, Signal::KILL) {
            Ok(()) | Err(rustix::io::Errno::SRCH) => Ok(()),
            Err(e) => Err(TeardownError::Kill(e.into())),
        }
    }

    async fn reap(
        &self,
        mut bwrap: Bwrap,
    ) -> Result<Option<std::process::ExitStatus>, TeardownError> {
        let pid = bwrap.child.id();
        let status = tokio::task::spawn_blocking(move || bwrap.child.wait().ok()).await;
        self.tracked.lock().remove(&pid);
        // The namespace's init outlives bwrap by a moment: reap it before reporting.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        while self.reap_orphans() > 0 && std::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        status.map_err(TeardownError::Join)
    }
}

/// A sealed memfd holding `data`, read from its start: bwrap's `--args` file. A memfd rather
/// than a pipe because the arguments (up to the spec's 64 KiB of argv and environment, plus
/// bwrap's own) can pass a pipe's capacity, and nobody would read the pipe before the write
/// had to finish.
fn args_memfd(data: &[u8]) -> std::io::Result<OwnedFd> {
    use rustix::fs::{MemfdFlags, SealFlags, SeekFrom};
    let fd = rustix::fs::memfd_create(
        "gigmcp-bwrap-args",
        MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING,
    )?;
    let mut rest = data;
    while !rest.is_empty() {
        let n = rustix::io::write(&fd, rest)?;
        rest = &rest[n..];
    }
    rustix::fs::fcntl_add_seals(
        &fd,
        SealFlags::WRITE | SealFlags::SHRINK | SealFlags::GROW | SealFlags::SEAL,
    )?;
    rustix::fs::seek(&fd, SeekFrom::Start(0))?;
    Ok(fd)
}
