//! Starting bwrap as the sandbox's dedicated uid, inside the sandbox's netns and cgroups.
//!
//! This is the one place the helper needs `unsafe`: `Command::pre_exec` runs code in the forked
//! child of a multi-threaded process, where only async-signal-safe calls are allowed. The child
//! setup below is therefore raw `libc` calls on pre-computed values, in this order:
//!
//! 1. join the sandbox's cgroups (write "0" to each `cgroup.procs`), while still root;
//! 2. `setns` into the sandbox's network namespace, while still root;
//! 3. put the fds bwrap needs at fixed numbers (without close-on-exec);
//! 4. rlimits: no core dumps, `RLIMIT_NPROC` = the sandbox's pids ceiling (the uid is the
//!    sandbox's alone, so this counts exactly its processes), `RLIMIT_NOFILE` soft = hard =
//!    the configured bound (raising a hard limit takes `CAP_SYS_RESOURCE` in the initial user
//!    namespace, which nothing in the sandbox has, so the server cannot undo it);
//! 5. drop supplementary groups, then gid, then uid (real, effective and saved) — uid last,
//!    since after it nothing privileged is possible;
//! 6. join a new anonymous session keyring, owned by the sandbox's uid: otherwise the sandbox
//!    would possess the helper's session keyring and every key linked from it (keyrings are
//!    not namespaced; the server's seccomp filter kills keyctl, bwrap's pid 1 has none).
//!
//! It also registers a started sandbox's fds with the async reactor ([`watchable`]), which tokio
//! marks `unsafe` because the fd must stay open while registered.
//!
//! `std`'s own `.uid()`/`.gid()` cannot be used: std applies them *before* `pre_exec`, after which
//! `setns` would fail.
#![allow(unsafe_code)]

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;

use rustix::pipe::PipeFlags;
use rustix::process::{Pid, PidfdFlags};

/// Everything bwrap is started with: its argv (see `argv`), the fds it gets at fixed numbers,
/// and the identity, netns (`N`) and cgroups (`C`) its child setup enters. The lifecycle fills
/// it with references to its host's values, the launcher gets the files themselves ([`Plan`]).
#[derive(Debug)]
pub struct Launch<N, C> {
    pub args: super::argv::Argv,
    /// fds to hand to bwrap, and the number each must have in the child.
    pub pass_fds: Vec<(OwnedFd, RawFd)>,
    pub uid: u32,
    pub gid: u32,
    pub nproc: u64,
    pub nofile: u64,
    pub netns: N,
    pub cgroup: C,
}

/// What the launcher starts: the netns file and each cgroup's `cgroup.procs`, opened.
pub type Plan = Launch<File, Vec<File>>;

/// Host pids of live outer bwraps, shared by the launcher (adds as it spawns) and the reaper
/// (scans under the lock), so a just-spawned bwrap is never mistaken for an orphan.
#[derive(Debug, Clone, Default)]
pub struct Tracked(std::sync::Arc<std::sync::Mutex<std::collections::HashSet<u32>>>);

impl Tracked {
    pub fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::HashSet<u32>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A sandbox's outer bwrap, as the helper keeps it to watch, kill and reap it.
#[derive(Debug)]
pub struct Bwrap {
    pub child: Child,
    pub pidfd: OwnedFd,
}

/// A started sandbox, as the helper keeps and hands out its parts.
#[derive(Debug)]
pub struct Started {
    pub bwrap: Bwrap,
    /// A second pidfd, for the gateway.
    pub pidfd_for_caller: OwnedFd,
    /// The server's stdin (write end), stdout and stderr (read ends): for the gateway.
    pub stdin: OwnedFd,
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
    /// A duplicate of the stdin read end: it reports hang-up when the gateway's end closes.
    pub stdin_watch: OwnedFd,
}

type Request = (Plan, tokio::sync::oneshot::Sender<io::Result<Started>>);

/// Starts sandboxes from one long-lived thread: bwrap's `--die-with-parent` is a parent-death
/// signal, which Linux ties to the *thread* that forked, so that thread must live as long as the
/// helper (a pool thread that retires would kill its sandboxes).
#[derive(Debug, Clone)]
pub struct Launcher {
    tx: mpsc::Sender<Request>,
}

impl Launcher {
    /// Starts the launcher thread, which runs `bwrap` for every plan it is sent.
    pub fn start(bwrap: PathBuf, tracked: Tracked) -> Self {
        let (tx, rx) = mpsc::channel::<Request>();
        std::thread::Builder::new()
            .name("launcher".into())
            .spawn(move || {
                for (plan, reply) in rx {
                    let _ = reply.send(start(&bwrap, plan, &tracked));
                }
            })
            .expect("spawn launcher thread");
        Self { tx }
    }

    pub async fn launch(&self, plan: Plan) -> io::Result<Started> {
        let (reply, rx) = tokio::sync::oneshot::channel();
        self.tx
            .send((plan, reply))
            .map_err(|_| io::Error::other("launcher thread is gone"))?;
        rx.await
            .map_err(|_| io::Error::other("launcher thread dropped the request"))?
    }
}

/// Values the child setup reads; all plain integers, so the closure allocates nothing.
#[derive(Clone, Copy)]
struct ChildSetup {
    netns: RawFd,
    procs: [RawFd; 4],
    nprocs: usize,
    pass: [(RawFd, RawFd); 8],
    npass: usize,
    uid: libc::uid_t,
    gid: libc::gid_t,
    nproc: libc::rlim_t,
    nofile: libc::rlim_t,
}

fn start(bwrap: &Path, plan: Plan, tracked: &Tracked) -> io::Result<Started> {
    if plan.cgroup.len() > 4 || plan.pass_fds.len() > 8 {
        return Err(io::Error::other("too many fds for the child setup"));
    }
    let (stdin_r, stdin_w) = rustix::pipe::pipe_with(PipeFlags::CLOEXEC)?;
    let (stdout_r, stdout_w) = rustix::pipe::pipe_with(PipeFlags::CLOEXEC)?;
    let (stderr_r, stderr_w) = rustix::pipe::pipe_with(PipeFlags::CLOEXEC)?;
    let stdin_watch = stdin_r.try_clone()?;

    let mut setup = ChildSetup {
        netns: plan.netns.as_raw_fd(),
        procs: [-1; 4],
        nprocs: plan.cgroup.len(),
        pass: [(-1, -1); 8],
        npass: plan.pass_fds.len(),
        uid: plan.uid,
        gid: plan.gid,
        nproc: plan.nproc,
        nofile: plan.nofile,
    };
    for (i, f) in plan.cgroup.iter().enumerate() {
        setup.procs[i] = f.as_raw_fd();
    }
    for (i, (fd, target)) in plan.pass_fds.iter().enumerate() {
        setup.pass[i] = (fd.as_raw_fd(), *target);
    }

    let mut cmd = Command::new(bwrap);
    // Not the host path: bwrap's argv is what the sandbox reads in /proc/1/cmdline.
    cmd.arg0("bwrap")
        .args(plan.args.all())
        .env_clear()
        .stdin(Stdio::from(stdin_r))
        .stdout(Stdio::from(stdout_w))
        .stderr(Stdio::from(stderr_w));
    // The closure only makes async-signal-safe libc calls on integers captured by value (no
    // allocation, no locks), as required between fork and exec in a threaded process.
    // SAFETY: as above; the fds it uses are owned by `plan`, which outlives `spawn`.
    unsafe {
        cmd.pre_exec(move || child_setup(&setup));
    }
    let mut child = {
        let mut tracked = tracked.lock();
        let child = cmd.spawn()?;
        tracked.insert(child.id());
        child
    };
    // The child is unreaped until we wait on it, so its pid cannot be reused.
    let pid = Pid::from_child(&child);
    let pidfds = rustix::process::pidfd_open(pid, PidfdFlags::empty())
        .map_err(io::Error::from)
        .and_then(|fd| Ok((fd.try_clone()?, fd)));
    let (pidfd, pidfd_for_caller) = match pidfds {
        Ok(fds) => fds,
        Err(e) => {
            // Never leave a sandbox running that nobody can see.
            let _ = child.kill();
            let _ = child.wait();
            tracked.lock().remove(&child.id());
            return Err(e);
        }
    };
    drop(plan);
    Ok(Started {
        bwrap: Bwrap { child, pidfd },
        pidfd_for_caller,
        stdin: stdin_w,
        stdout: stdout_r,
        stderr: stderr_r,
        stdin_watch,
    })
}

fn check(ret: libc::c_int) -> io::Result<()> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Runs in the forked child, before exec. See the module comment for the order.
fn child_setup(s: &ChildSetup) -> io::Result<()> {
    for &fd in &s.procs[..s.nprocs] {
        // SAFETY: writing a 1-byte static buffer to an fd owned by the plan.
        let n = unsafe { libc::write(fd, b"0".as_ptr().cast(), 1) };
        if n != 1 {
            return Err(io::Error::last_os_error());
        }
    }
    // SAFETY: setns on an fd of a network namespace file owned by the plan.
    check(unsafe { libc::setns(s.netns, libc::CLONE_NEWNET) })?;
    // Move every source above the targets first, so a source sitting on another's target number
    // is never overwritten.
    let above = s.pass[..s.npass].iter().map(|&(_, t)| t).max().unwrap_or(2) + 1;
    let mut high = [-1; 8];
    for (i, &(src, _)) in s.pass[..s.npass].iter().enumerate() {
        // SAFETY: F_DUPFD_CLOEXEC on an open fd returns a new fd (>= `above`) or -1.
        let fd = unsafe { libc::fcntl(src, libc::F_DUPFD_CLOEXEC, above) };
        check(fd)?;
        high[i] = fd;
    }
    for (i, &(_, target)) in s.pass[..s.npass].iter().enumerate() {
        // SAFETY: dup2 onto a fixed number; the copy does not have close-on-exec.
        check(unsafe { libc::dup2(high[i], target) })?;
    }
    // Anything else inherited without close-on-exec (fds zbus received without
    // MSG_CMSG_CLOEXEC, say) must not reach bwrap. CLOEXEC rather than close: std's error pipe
    // to the parent is among them and must survive until exec.
    // SAFETY: close_range with the CLOEXEC flag only sets flags on this process's fds.
    check(unsafe {
        libc::syscall(
            libc::SYS_close_range,
            above as libc::c_uint,
            libc::c_uint::MAX,
            libc::CLOSE_RANGE_CLOEXEC as libc::c_uint,
        ) as libc::c_int
    })?;
    let zero = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    let nproc = libc::rlimit {
        rlim_cur: s.nproc,
        rlim_max: s.nproc,
    };
    // SAFETY: setrlimit with pointers to stack values.
    check(unsafe { libc::setrlimit(libc::RLIMIT_CORE, &zero) })?;
    let nofile = libc::rlimit {
        rlim_cur: s.nofile,
        rlim_max: s.nofile,
    };
    // SAFETY: as above.
    check(unsafe { libc::setrlimit(libc::RLIMIT_NPROC, &nproc) })?;
    // SAFETY: as above.
    check(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &nofile) })?;
    // SAFETY: an empty group list; a null pointer with size 0 is allowed.
    check(unsafe { libc::setgroups(0, std::ptr::null()) })?;
    // SAFETY: plain syscalls on integers.
    check(unsafe { libc::setresgid(s.gid, s.gid, s.gid) })?;
    // SAFETY: as above; after this the child has no privilege left.
    check(unsafe { libc::setresuid(s.uid, s.uid, s.uid) })?;
    // SAFETY: KEYCTL_JOIN_SESSION_KEYRING with a null name makes an anonymous keyring; the
    // kernel reads no memory of ours and returns its serial.
    let keyring = unsafe {
        libc::syscall(
            libc::SYS_keyctl,
            libc::KEYCTL_JOIN_SESSION_KEYRING,
            std::ptr::null::<libc::c_char>(),
        )
    };
    if keyring < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Registers an owned fd with the reactor so its readiness can be awaited.
pub fn watchable(fd: OwnedFd) -> io::Result<tokio::io::unix::AsyncFd<OwnedFd>> {
    // SAFETY: the `AsyncFd` takes ownership of the `OwnedFd`, so the fd stays open and refers to
    // the same file description for as long as it is registered, and `as_raw_fd` is constant.
    unsafe { tokio::io::unix::AsyncFd::register(fd) }.map_err(|e| e.into())
}
