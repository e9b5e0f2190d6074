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
mod tests {
    // The build's order and its unwinding, against `Recording`, a host double that records each
    // call and can fail any one step. No root needed: nothing touches the host.

    use std::net::Ipv4Addr;
    use std::os::fd::OwnedFd;
    use std::sync::Mutex;

    use super::*;
    use crate::helper::host::Launch;

    /// The steps of a build, as the double records them.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Step {
        CheckUid,
        CreateNetns,
        CreateVeth,
        ConfigureLink,
        BindTransparent,
        Allow,
        CreateCgroup,
        GiveDataDir,
        Spawn,
    }

    #[derive(Debug, Clone, PartialEq, Eq)]
    enum Call {
        Did(Step),
        Undid(Undo),
    }

    /// A host that does nothing but record, and fails at `fail_at`.
    #[derive(Debug, Default)]
    struct Recording {
        calls: Mutex<Vec<Call>>,
        fail_at: Option<Step>,
    }

    impl Recording {
        fn failing_at(step: Step) -> Self {
            Self {
                fail_at: Some(step),
                ..Self::default()
            }
        }

        fn calls(&self) -> Vec<Call> {
            self.calls.lock().unwrap().clone()
        }

        /// Records `step`, or fails it (a step that fails is recorded too: it was attempted).
        fn step(&self, step: Step) -> Result<(), StepError> {
            self.calls.lock().unwrap().push(Call::Did(step));
            if self.fail_at == Some(step) {
                return Err(StepError::Spawn(std::io::Error::other(format!("{step:?}"))));
            }
            Ok(())
        }

        fn made<T>(&self, step: Step, value: T, undo: Undo) -> Result<Made<T>, StepError> {
            self.step(step)?;
            Ok(Made { value, undo })
        }
    }

    impl Host for Recording {
        type Netns = ();
        type Cgroup = ();
        type Sockets = ();
        type Started = Vec<std::ffi::OsString>;

        fn check_uid(&self, _: u32) -> Result<(), StepError> {
            self.step(Step::CheckUid)
        }
        fn create_netns(&self, id: &str) -> Result<Made<()>, StepError> {
            let undo = Undo::RemoveNetns { id: id.into() };
            self.made(Step::CreateNetns, (), undo)
        }
        async fn create_veth(&self, _: &(), link: &str) -> Result<Made<()>, StepError> {
            let undo = Undo::DeleteLink { link: link.into() };
            self.made(Step::CreateVeth, (), undo)
        }
        async fn configure_link(&self, _: &(), _: &str, _: Link) -> Result<(), StepError> {
            self.step(Step::ConfigureLink)
        }
        fn bind_transparent(&self, _: Ipv4Addr, _: &str) -> Result<(), StepError> {
            self.step(Step::BindTransparent)
        }
        fn allow(&self, rule: &LinkRule) -> Result<Made<()>, StepError> {
            self.made(Step::Allow, (), Undo::Revoke(rule.clone()))
        }
        fn create_cgroup(&self, id: &str, _: CgroupLimits) -> Result<Made<()>, StepError> {
            let undo = Undo::RemoveCgroup { id: id.into() };
            self.made(Step::CreateCgroup, (), undo)
        }
        fn give_data_dir(&self, _: &OwnedFd, _: u32, _: u32) -> Result<(), StepError> {
            self.step(Step::GiveDataDir)
        }
        async fn spawn(&self, launch: Launch<'_, (), ()>) -> Result<Self::Started, StepError> {
            self.step(Step::Spawn)?;
            Ok(launch.args)
        }
        async fn undo(&self, undo: Undo) {
            self.calls.lock().unwrap().push(Call::Undid(undo));
        }
    }

    fn devnull() -> OwnedFd {
        std::fs::File::open("/dev/null").unwrap().into()
    }

    fn checked(transparent: bool, data: bool) -> Checked {
        Checked {
            server: "files".into(),
            rootfs: devnull(),
            data: data.then(devnull),
            ca: vec![(devnull(), "/run/gigmcp/ca.pem".into())],
            argv: vec!["node".into(), "server.js".into()],
            env: vec![],
            proxy_port: 3128,
            transparent,
            memory_max: 64 << 20,
            pids_max: 64,
            cpu_percent: 100,
            data_name: data.then(|| "files".into()),
        }
    }

    fn placement() -> Placement {
        Placement {
            id: "0123abcd".into(),
            link: "gm0123abcd".into(),
            addrs: Link {
                host: Ipv4Addr::new(10, 231, 0, 1),
                sandbox: Ipv4Addr::new(10, 231, 0, 2),
            },
            uid: 0x7000_0000,
            gid: 0x7000_0000,
        }
    }

    fn settings() -> Settings<'static> {
        Settings {
            init: std::path::Path::new("/usr/libexec/gigmcp/gigmcp-sandbox-init"),
            tmp_bytes: 1 << 20,
            allow_degraded_landlock: false,
        }
    }

    fn rule(transparent: bool) -> LinkRule {
        let at = placement();
        LinkRule {
            link: at.link,
            host: at.addrs.host,
            sandbox: at.addrs.sandbox,
            proxy_port: 3128,
            transparent,
        }
    }

    const ALL_STEPS: [Step; 9] = [
        Step::CheckUid,
        Step::CreateNetns,
        Step::CreateVeth,
        Step::ConfigureLink,
        Step::BindTransparent,
        Step::Allow,
        Step::CreateCgroup,
        Step::GiveDataDir,
        Step::Spawn,
    ];

    /// What undoing `step` removes, if the step creates anything on the host.
    fn undo_of(step: Step) -> Option<Undo> {
        let at = placement();
        match step {
            Step::CreateNetns => Some(Undo::RemoveNetns { id: at.id }),
            Step::CreateVeth => Some(Undo::DeleteLink { link: at.link }),
            Step::Allow => Some(Undo::Revoke(rule(true))),
            Step::CreateCgroup => Some(Undo::RemoveCgroup { id: at.id }),
            _ => None,
        }
    }

    fn run(host: &Recording, c: &Checked) -> Result<Built<Recording>, StepError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(build(host, &placement(), c, settings()))
    }

    #[test]
    fn a_transparent_sandbox_with_data_is_built_in_the_designed_order() {
        let host = Recording::default();
        run(&host, &checked(true, true)).expect("built");
        let want: Vec<Call> = ALL_STEPS.iter().map(|s| Call::Did(*s)).collect();
        assert_eq!(host.calls(), want);
    }

    #[test]
    fn a_plain_sandbox_skips_only_the_transparent_sockets_and_the_data_dir() {
        let host = Recording::default();
        run(&host, &checked(false, false)).expect("built");
        let want: Vec<Call> = ALL_STEPS
            .iter()
            .filter(|s| !matches!(s, Step::BindTransparent | Step::GiveDataDir))
            .map(|s| Call::Did(*s))
            .collect();
        assert_eq!(host.calls(), want);
    }

    #[test]
    fn a_built_sandbox_is_not_unwound() {
        let host = Recording::default();
        run(&host, &checked(true, true)).expect("built");
        assert!(!host.calls().iter().any(|c| matches!(c, Call::Undid(_))));
    }

    #[test]
    fn a_failure_at_any_step_undoes_exactly_the_earlier_steps_last_first() {
        for (n, &failing) in ALL_STEPS.iter().enumerate() {
            let host = Recording::failing_at(failing);
            let err = run(&host, &checked(true, true)).expect_err("injected failure");
            assert!(err.to_string().contains(&format!("{failing:?}")), "{err}");
            let mut want: Vec<Call> = ALL_STEPS[..=n].iter().map(|s| Call::Did(*s)).collect();
            want.extend(
                ALL_STEPS[..n]
                    .iter()
                    .rev()
                    .filter_map(|s| undo_of(*s))
                    .map(Call::Undid),
            );
            assert_eq!(host.calls(), want, "failure at {failing:?}");
        }
    }

    #[test]
    fn the_spawn_gets_the_argv_of_the_checked_spec() {
        let host = Recording::default();
        let built = run(&host, &checked(false, true)).expect("built");
        let c = checked(false, true);
        assert_eq!(built.started, bwrap_args(&c, settings()));
        assert_eq!(built.rule, rule(false));
    }

    #[test]
    fn a_data_dir_that_cannot_be_handed_over_is_the_specs_fault() {
        let e = StepError::DataDir(crate::helper::validate::DataDirError::TooDeep);
        let e = privhelper_api::HelperError::from(e);
        assert!(
            matches!(e, privhelper_api::HelperError::InvalidSpec(_)),
            "{e:?}"
        );
    }

    #[test]
    fn a_host_failure_names_its_step_in_the_reply() {
        let e = StepError::ResolvConf(std::io::Error::other("pipe"));
        match privhelper_api::HelperError::from(e) {
            privhelper_api::HelperError::Failed(m) => assert_eq!(m, "resolv.conf: pipe"),
            other => panic!("{other:?}"),
        }
    }
}
