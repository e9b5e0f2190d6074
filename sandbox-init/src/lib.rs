//! `gigmcp-sandbox-init`: the first program inside a sandbox. bwrap has built the namespaces
//! and the mount tree and runs it as uid 65534; it confines itself and then becomes the server:
//!
//! 1. landlock ([`landlock`]): read+execute everywhere, write only `/tmp` (and `/data` with
//!    `--data`) and a few devices, TCP connect only to the proxy port (and with `--transparent`
//!    to 443 and 53), no TCP bind, abstract unix sockets and signals scoped. Not enforced by the kernel → refuse, unless
//!    `--allow-degraded-landlock` (then a `DEGRADED:` line on stderr);
//! 2. `PR_SET_NO_NEW_PRIVS`;
//! 3. empty every capability set, bounding and ambient included ([`capabilities`]);
//! 4. close every fd above 2 ([`fds`]);
//! 5. install the seccomp filters `kill` and `enosys` ([`seccomp`]);
//! 6. `execve` the server (`PATH` lookup as `execvp`; the environment is bwrap's less `PWD`).
//!
//! Landlock goes first because it needs the filesystem (to open the rule paths) and the seccomp
//! filters last because after them only `execve` is left to do. Each failure exits with its
//! own code and one stderr line: see `exit`.
//!
//! The crate is two things by feature: without `confine` it is only [`args`] and
//! [`SANDBOX_PATH`], the contract the root helper links to build init's command line; with
//! `confine` (the default, and what the binary needs) it is the confinement itself. Its only
//! runtime dependencies are libc, landlock, caps and seccompiler, and it has no async runtime:
//! it is built static and runs before anything in the sandbox is locked.

pub mod args;
#[cfg(feature = "confine")]
pub mod bpf;
#[cfg(feature = "confine")]
pub mod capabilities;
#[cfg(feature = "confine")]
pub mod exit;
#[cfg(feature = "confine")]
pub mod fds;
#[cfg(feature = "confine")]
pub mod landlock;
#[cfg(feature = "confine")]
pub mod seccomp;
#[cfg(feature = "confine")]
mod sys;

#[cfg(feature = "confine")]
use std::ffi::OsString;
#[cfg(feature = "confine")]
use std::os::unix::process::CommandExt as _;

#[cfg(feature = "confine")]
pub use exit::ExitCode;

#[cfg(feature = "confine")]
use exit::fail;

/// Where the helper binds this binary inside the sandbox (`bwrap ... --tmpfs /run --ro-bind
/// <host path> /run/gigmcp/init`); under `/run` because bwrap cannot create a mount point in a
/// read-only image.
pub const SANDBOX_PATH: &str = "/run/gigmcp/init";

#[cfg(feature = "confine")]
/// Runs init with `argv` (argv\[0\] included) and never returns: it either becomes the server
/// or exits with an [`ExitCode`].
pub fn run(argv: impl IntoIterator<Item = OsString>) -> ! {
    let args = args::parse(argv.into_iter().skip(1))
        .unwrap_or_else(|e| fail(ExitCode::Usage, &format!("{e}; usage: {}", args::USAGE)));

    let policy = landlock::Policy {
        proxy_port: args.proxy_port,
        transparent: args.transparent,
        data: args.data,
    };
    match landlock::restrict(&policy).and_then(|e| e.verdict(args.allow_degraded_landlock)) {
        Ok(None) => {}
        Ok(Some(warning)) => exit::line(&warning),
        Err(e) => fail(ExitCode::Landlock, &e),
    }

    if let Err(e) = sys::set_no_new_privs() {
        fail(
            ExitCode::NoNewPrivs,
            &format!("prctl(PR_SET_NO_NEW_PRIVS): {e}"),
        );
    }
    match sys::no_new_privs() {
        Ok(true) => {}
        Ok(false) => fail(ExitCode::NoNewPrivs, "the flag did not stick"),
        Err(e) => fail(
            ExitCode::NoNewPrivs,
            &format!("prctl(PR_GET_NO_NEW_PRIVS): {e}"),
        ),
    }

    if let Err(e) = capabilities::drop_all() {
        fail(ExitCode::Capabilities, &e);
    }

    if let Err(e) = fds::close_above_stderr() {
        fail(ExitCode::Fds, &e);
    }

    let mut server = std::process::Command::new(&args.server[0]);
    // bwrap always exports PWD (of its --chdir); the server's environment must be exactly the
    // spec's, and the helper refuses specs that set PWD themselves.
    server.args(&args.server[1..]).env_remove("PWD");

    if let Err(e) = seccomp::install() {
        fail(ExitCode::Seccomp, &e);
    }

    // Only returns on failure. std resets the signal mask and SIGPIPE before execvp.
    let e = server.exec();
    let code = match e.raw_os_error() {
        Some(
            libc::ENOENT
            | libc::ENOTDIR
            | libc::EACCES
            | libc::EPERM
            | libc::ELOOP
            | libc::ENAMETOOLONG,
        ) => ExitCode::ExecNotFound,
        _ => ExitCode::Exec,
    };
    fail(code, &format!("{:?}: {e}", args.server[0]))
}
