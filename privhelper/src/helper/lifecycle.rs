//! How a sandbox is built, step by step, on a [`Host`], and how a half-built one is unwound.
//!
//! The order (DESIGN 4), and why each step comes where it does:
//! 1. the slot's uid must be nobody's, before anything runs as it;
//! 2. netns, then the veth pair into it, then its addresses: the sandbox's only way out;
//! 3. the listening sockets (the proxy's, and transparent mode's), bound once the link's host
//!    address exists and *before* the firewall lets anything reach their ports: every port the
//!    server may use is listening before it starts, and a port someone else holds stops the
//!    build here, before anything runs (their undo is closing them, as a failed build returns);
//! 4. the firewall elements for this link;
//! 5. the cgroups, which bwrap's child joins before it execs;
//! 6. the data dir given to the slot's uid, last before the spawn: by then the uid is known to
//!    be nobody else's;
//! 7. bwrap, with its argv from `argv`.
//!
//! Each creation step hands back an [`Undo`]; [`Unwind`] keeps them, and on a failure at any
//! step runs exactly the earlier ones, last first. On success they are dropped: a live sandbox
//! is torn down in its own order, processes first ([`stop`], then [`unplug`]), and every step
//! is tried whatever the earlier ones did, each failure reported ([`TeardownErrors`]).

use std::os::fd::OwnedFd;

use super::argv;
use super::cgroup::CgroupLimits;
use super::firewall::LinkRule;
use super::host::{Host, Launch, ListenOn, Made, Undo};
use super::network::Link;
use super::transparent;
use super::validate::Checked;
use super::{StartError, StepError, TeardownErrors};

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
    /// The sandbox's `RLIMIT_NOFILE` (soft and hard).
    pub nofile: u64,
}

/// A built sandbox: everything the helper keeps or hands out.
#[derive(Debug)]
pub struct Built<H: Host> {
    pub netns: H::Netns,
    pub rule: LinkRule,
    pub sockets: H::Sockets,
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
            if let Err(e) = host.undo(undo.clone()).await {
                tracing::warn!(?undo, "undoing a half-built sandbox: {e}");
            }
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
    let sockets = host.bind_listeners(ListenOn {
        host: at.addrs.host,
        link: &at.link,
        proxy_port: c.proxy_port,
        transparent: c.transparent,
    })?;
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
        nofile: settings.nofile,
        netns: &netns,
        cgroup: &cgroup,
    };
    let started = host.spawn(launch).await?;
    Ok(Built {
        netns,
        rule,
        sockets,
        started,
    })
}

/// Tears down the first part of live sandbox `id`: its processes, firewall elements and
/// cgroups. Returns bwrap's exit status (if it could be had); failed steps go to `errors`.
pub async fn stop<H: Host>(
    host: &H,
    id: &str,
    rule: &LinkRule,
    process: H::Process,
    errors: &mut TeardownErrors,
) -> Option<std::process::ExitStatus> {
    let id = id.to_owned();
    // bwrap first: with it goes the sandbox's PID namespace, all of it. Then the cgroup, for
    // anything that escaped the namespace's death (nothing should).
    errors.note(host.kill(&process));
    errors.note(host.undo(Undo::KillCgroup { id: id.clone() }).await);
    errors.note(host.undo(Undo::Revoke(rule.clone())).await);
    // The cgroups empty as their processes die: reap bwrap (and the namespace's init) before
    // waiting for that and removing them.
    let status = errors.note(host.reap(process).await).flatten();
    errors.note(host.undo(Undo::RemoveCgroup { id }).await);
    status
}

/// Tears down the rest: the link (its peer goes with it), then the netns. Deleting a veth
/// waits for an RCU grace period (~20 ms), so the helper may run this in the background.
pub async fn unplug<H: Host>(host: &H, id: &str, link: &str) -> Result<(), TeardownErrors> {
    let mut errors = TeardownErrors::default();
    let link = link.to_owned();
    errors.note(host.undo(Undo::DeleteLink { link }).await);
    errors.note(host.undo(Undo::RemoveNetns { id: id.into() }).await);
    errors.into_result()
}

/// Clears what a previous run left (see [`Host::leftovers`]) in teardown's order: processes
/// first (killing a cgroup kills them), then cgroups, links, namespaces. Every removal is
/// tried; each failure is logged, and does not stop the helper from starting (a leftover of
/// ours is inert: the firewall drops everything from our links until the table says
/// otherwise). Returns the removals it ran.
pub async fn sweep<H: Host>(host: &H) -> Result<Vec<Undo>, StartError> {
    let mut found = host.leftovers().await?;
    found.sort_by_key(|undo| match undo {
        Undo::KillCgroup { .. } => 0,
        Undo::Revoke(_) => 1,
        Undo::RemoveCgroup { .. } => 2,
        Undo::DeleteLink { .. } => 3,
        Undo::RemoveNetns { .. } => 4,
    });
    for undo in &found {
        if let Err(e) = host.undo(undo.clone()).await {
            tracing::warn!(?undo, "sweeping a previous run's leftover: {e}");
        }
    }
    Ok(found)
}

fn bwrap_args(c: &Checked, s: Settings<'_>) -> argv::Argv {
    let ca_dests: Vec<&str> = c.ca.iter().map(|(_, dest)| dest.as_str()).collect();
    argv::bwrap_args(&argv::Inputs {
        init: s.init,
        tmp_bytes: s.tmp_bytes,
        data: c.data.is_some(),
        ca_dests: &ca_dests,
        transparent: c.transparent,
        env: &c.env,
        argv: &c.argv,
        workdir: &c.workdir,
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
    // The build's order, its unwinding and the teardown, against `Recording`, a host double that
    // records each call and can fail any steps. No root needed: nothing touches the host.

    use std::net::Ipv4Addr;
    use std::os::fd::OwnedFd;

    use privhelper_api::HelperError;

    use super::*;
    use crate::helper::recording::{Call, Recording, Step};

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
            workdir: "/tmp".into(),
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
            nofile: 256,
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
        Step::BindListeners,
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
    fn a_plain_sandbox_skips_only_the_data_dir_and_binds_its_proxy_listener_alone() {
        let host = Recording::default();
        run(&host, &checked(false, false)).expect("built");
        let want: Vec<Call> = ALL_STEPS
            .iter()
            .filter(|s| !matches!(s, Step::GiveDataDir))
            .map(|s| Call::Did(*s))
            .collect();
        assert_eq!(host.calls(), want);
        let link = placement().link;
        let on = |transparent| {
            let on = ListenOn {
                host: placement().addrs.host,
                link: &link,
                proxy_port: 3128,
                transparent,
            };
            format!("{on:?}")
        };
        assert_eq!(host.listened(), [on(false)]);
        let host = Recording::default();
        run(&host, &checked(true, false)).expect("built");
        assert_eq!(host.listened(), [on(true)]);
    }

    #[test]
    fn the_listeners_are_bound_before_the_firewall_opens_and_the_server_starts() {
        let host = Recording::default();
        run(&host, &checked(false, false)).expect("built");
        let at = |step| host.calls().iter().position(|c| *c == Call::Did(step));
        let listen = at(Step::BindListeners).expect("listeners bound");
        assert!(
            listen > at(Step::ConfigureLink).unwrap(),
            "before its address"
        );
        assert!(
            listen < at(Step::Allow).unwrap(),
            "after the firewall opened"
        );
        assert!(
            listen < at(Step::Spawn).unwrap(),
            "after the server started"
        );
    }

    #[test]
    fn the_listeners_are_closed_when_a_later_step_fails_and_kept_when_the_build_succeeds() {
        let later = ALL_STEPS
            .iter()
            .skip_while(|s| **s != Step::BindListeners)
            .skip(1);
        for &failing in later {
            let host = Recording::failing_at(&[failing]);
            run(&host, &checked(true, true)).expect_err("injected failure");
            assert_eq!(host.open_listeners(), 0, "failure at {failing:?}");
        }
        let host = Recording::default();
        let built = run(&host, &checked(true, true)).expect("built");
        assert_eq!(host.open_listeners(), 1, "handed out with the sandbox");
        drop(built);
        assert_eq!(host.open_listeners(), 0);
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
            let host = Recording::failing_at(&[failing]);
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

    /// Tears down the sandbox of `placement()` on `host`: both parts, as `Helper::destroy`
    /// runs them.
    fn tear_down(host: &Recording) -> Result<(), TeardownErrors> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let at = placement();
        rt.block_on(async {
            let mut errors = TeardownErrors::default();
            stop(host, &at.id, &rule(false), (), &mut errors).await;
            if let Err(e) = unplug(host, &at.id, &at.link).await {
                errors.0.extend(e.0);
            }
            errors.into_result()
        })
    }

    /// Teardown in its designed order: processes first (bwrap, then whatever is left in the
    /// cgroups), then the firewall elements, the reaping, the cgroups, the link, the netns.
    fn teardown_order() -> Vec<Call> {
        let at = placement();
        vec![
            Call::Did(Step::Kill),
            Call::Undid(Undo::KillCgroup { id: at.id.clone() }),
            Call::Undid(Undo::Revoke(rule(false))),
            Call::Did(Step::Reap),
            Call::Undid(Undo::RemoveCgroup { id: at.id.clone() }),
            Call::Undid(Undo::DeleteLink { link: at.link }),
            Call::Undid(Undo::RemoveNetns { id: at.id }),
        ]
    }

    const TEARDOWN_STEPS: [Step; 7] = [
        Step::Kill,
        Step::KillCgroup,
        Step::Revoke,
        Step::Reap,
        Step::RemoveCgroup,
        Step::DeleteLink,
        Step::RemoveNetns,
    ];

    #[test]
    fn a_live_sandbox_is_torn_down_processes_first_then_firewall_cgroups_link_and_netns() {
        let host = Recording::default();
        tear_down(&host).expect("torn down");
        assert_eq!(host.calls(), teardown_order());
    }

    #[test]
    fn a_failed_teardown_step_does_not_stop_the_later_ones_and_is_reported() {
        for failing in TEARDOWN_STEPS {
            let host = Recording::failing_at(&[failing]);
            let errors = tear_down(&host).expect_err("injected failure");
            assert_eq!(host.calls(), teardown_order(), "failure at {failing:?}");
            assert_eq!(errors.0.len(), 1, "{errors}");
            assert!(
                errors.to_string().contains(&format!("{failing:?}")),
                "{errors}"
            );
        }
    }

    #[test]
    fn when_every_teardown_step_fails_every_step_is_still_tried_and_every_error_reported() {
        let host = Recording::failing_at(&TEARDOWN_STEPS);
        let errors = tear_down(&host).expect_err("injected failures");
        assert_eq!(host.calls(), teardown_order());
        let reported: Vec<String> = errors.0.iter().map(ToString::to_string).collect();
        let want: Vec<String> = TEARDOWN_STEPS.iter().map(|s| format!("{s:?}")).collect();
        assert_eq!(reported.len(), want.len(), "{errors}");
        for (got, step) in reported.iter().zip(&want) {
            assert!(got.ends_with(step.as_str()), "{got} should name {step}");
        }
        // The D-Bus reply carries all of them, in order.
        let HelperError::Failed(reply) = HelperError::from(errors) else {
            panic!("teardown failures are the host's");
        };
        assert_eq!(reply.matches("; ").count(), want.len() - 1, "{reply}");
    }

    #[test]
    fn the_sweep_removes_a_previous_runs_leftovers_in_teardown_order_past_failures() {
        let (a, b) = ("0123abcd".to_owned(), "4567cdef".to_owned());
        let mut host = Recording::failing_at(&[Step::KillCgroup, Step::DeleteLink]);
        // As the host lists them: in no particular order.
        host.leftovers = vec![
            Undo::RemoveNetns { id: a.clone() },
            Undo::DeleteLink {
                link: format!("gm{a}"),
            },
            Undo::RemoveCgroup { id: a.clone() },
            Undo::KillCgroup { id: a.clone() },
            Undo::RemoveCgroup { id: b.clone() },
            Undo::KillCgroup { id: b.clone() },
        ];
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let removed = rt.block_on(sweep(&host)).expect("swept");
        let want = [
            Undo::KillCgroup { id: a.clone() },
            Undo::KillCgroup { id: b.clone() },
            Undo::RemoveCgroup { id: a.clone() },
            Undo::RemoveCgroup { id: b },
            Undo::DeleteLink {
                link: format!("gm{a}"),
            },
            Undo::RemoveNetns { id: a },
        ];
        assert_eq!(removed, want);
        assert_eq!(host.calls(), want.map(Call::Undid));
    }

    #[test]
    fn a_data_dir_that_cannot_be_handed_over_is_the_specs_fault() {
        let e = StepError::DataDir(crate::helper::data_dir::DataDirError::TooDeep);
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
