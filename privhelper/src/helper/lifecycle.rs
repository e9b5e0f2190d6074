//! How a sandbox is built, step by step, on a [`Host`], and how a half-built one is unwound.
//!
//! The order (DESIGN 4), and why each step comes where it does:
//! 1. the slot's uid must be nobody's, before anything runs as it;
//! 2. netns, then the veth pair into it, then its addresses: the sandbox's only way out;
//! 3. transparent mode's sockets, bound *before* the firewall lets anything reach their ports;
//! 4. the firewall elements for this link;
//! 5. the cgroups, which bwrap's child joins before it execs;
//! 6. the data dir given to the slot's uid, last before the spawn: by then the uid is known to
//!    be nobody else's;
//! 7. bwrap, with its argv from `argv`.
//!
//! Each creation step hands back an [`Undo`]; [`Unwind`] keeps them, and on a failure at any
//! step runs exactly the earlier ones, last first. On success they are dropped: the live
//! sandbox is torn down by `Helper::destroy`, in its own order (processes first).

use std::os::fd::OwnedFd;

use super::StepError;
use super::argv;
use super::cgroup::CgroupLimits;
use super::firewall::LinkRule;
use super::host::{Host, Launch, Made, Undo};
use super::network::Link;
use super::transparent;
use super::validate::Checked;

/// Where and as whom a sandbox is built: fixed by its slot before the build starts.
#[derive(Debug, Clone)]
pub struct Placement {
    pub id: String,
    pub link: String,
    pub addrs: Link,
    pub uid: u32,
    pub gid: u32,
}

/// The configuration the build reads.
#[derive(Debug, Clone, Copy)]
pub struct Settings<'a> {
    pub init: &'a std::path::Path,
    pub tmp_bytes: u64,
    pub allow_degraded_landlock: bool,
}

/// A built sandbox: everything the helper keeps or hands out.
#[derive(Debug)]
pub struct Built<H: Host> {
    pub netns: H::Netns,
    pub rule: LinkRule,
    pub cgroup: H::Cgroup,
    pub sockets: Option<H::Sockets>,
    pub started: H::Started,
}

/// The undos of the steps done so far.
#[must_use = "a half-built sandbox must be unwound or kept"]
#[derive(Debug, Default)]
pub struct Unwind {
    done: Vec<Undo>,
}

impl Unwind {
    /// Records what `made` must undo and hands over its value.
    pub fn keep<T>(&mut self, made: Made<T>) -> T {
        self.done.push(made.undo);
        made.value
    }

    /// Undoes every recorded step, the last one first.
    pub async fn run<H: Host>(self, host: &H) {
        for undo in self.done.into_iter().rev() {
            host.undo(undo).await;
        }
    }
}

/// Builds sandbox `at` from `c` on `host`; on failure nothing of it is left on the host.
pub async fn build<H: Host>(
    host: &H,
    at: &Placement,
    c: &Checked,
    settings: Settings<'_>,
) -> Result<Built<H>, StepError> {
    let mut unwind = Unwind::default();
    match steps(host, at, c, settings, &mut unwind).await {
        Ok(built) => {
            drop(unwind);
            Ok(built)
        }
        Err(e) => {
            unwind.run(host).await;
            Err(e)
        }
    }
}

async fn steps<H: Host>(
    host: &H,
    at: &Placement,
    c: &Checked,
    settings: Settings<'_>,
    unwind: &mut Unwind,
) -> Result<Built<H>, StepError> {
    host.check_uid(at.uid)?;
    let netns = unwind.keep(host.create_netns(&at.id)?);
    unwind.keep(host.create_veth(&netns, &at.link).await?);
    host.configure_link(&netns, &at.link, at.addrs).await?;
    let sockets = match c.transparent {
        true => Some(host.bind_transparent(at.addrs.host, &at.link)?),
        false => None,
    };
    let rule = LinkRule {
        link: at.link.clone(),
        host: at.addrs.host,
        sandbox: at.addrs.sandbox,
        proxy_port: c.proxy_port,
        transparent: c.transparent,
    };
    unwind.keep(host.allow(&rule)?);
    let limits = CgroupLimits {
        memory_max: c.memory_max,
        pids_max: c.pids_max,
        cpu_percent: c.cpu_percent,
    };
    let cgroup = unwind.keep(host.create_cgroup(&at.id, limits)?);
    if let Some(data) = &c.data {
        host.give_data_dir(data, at.uid, at.gid)?;
    }
    let launch = Launch {
        args: bwrap_args(c, settings),
        pass_fds: argv::numbered(pass_fds(c, at)?),
        uid: at.uid,
        gid: at.gid,
        nproc: u64::from(c.pids_max),
        netns: &netns,
        cgroup: &cgroup,
    };
    let started = host.spawn(launch).await?;
    Ok(Built {
        netns,
        rule,
        cgroup,
        sockets,
        started,
    })
}

fn bwrap_args(c: &Checked, s: Settings<'_>) -> Vec<std::ffi::OsString> {
    let ca_dests: Vec<&str> = c.ca.iter().map(|(_, dest)| dest.as_str()).collect();
    argv::bwrap_args(&argv::Inputs {
        init: s.init,
        tmp_bytes: s.tmp_bytes,
        data: c.data.is_some(),
        ca_dests: &ca_dests,
        transparent: c.transparent,
        env: &c.env,
        argv: &c.argv,
        proxy_port: c.proxy_port,
        allow_degraded_landlock: s.allow_degraded_landlock,
    })
}

/// Copies of the fds bwrap reads, in `argv`'s order: rootfs, data, CA copies, resolv.conf.
fn pass_fds(c: &Checked, at: &Placement) -> Result<Vec<OwnedFd>, StepError> {
    let dup = |fd: &OwnedFd| fd.try_clone().map_err(StepError::Dup);
    let mut fds = vec![dup(&c.rootfs)?];
    if let Some(data) = &c.data {
        fds.push(dup(data)?);
    }
    for (fd, _) in &c.ca {
        fds.push(dup(fd)?);
    }
    if c.transparent {
        let conf = transparent::resolv_conf(at.addrs.host);
        fds.push(transparent::data_pipe(conf.as_bytes()).map_err(StepError::ResolvConf)?);
    }
    Ok(fds)
}

#[cfg(test)]
#[path = "lifecycle_tests.rs"]
mod tests;
