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
//! own code and one stderr line: each step's error is a variant of [`InitError`], which decides
//! the code; see `exit` for the table.
//!
//! The crate is two things by feature: without `confine` it is only [`args`] and
//! [`SANDBOX_PATH`], the contract the root helper links to build init's command line; with
//! `confine` (the default, and what the binary needs) it is the confinement itself. Its only
//! runtime dependencies are libc, landlock, caps, seccompiler and thiserror (which landlock
//! links anyway), and it has no async runtime:
//! it is built static and runs before anything in the sandbox is locked.

pub mod args;
#[cfg(feature = "confine")]
pub mod bpf;
#[cfg(feature = "confine")]
pub mod capabilities;
#[cfg(feature = "confine")]
pub mod error;
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
use std::convert::Infallible;
#[cfg(feature = "confine")]
use std::ffi::OsString;
#[cfg(feature = "confine")]
use std::os::unix::process::CommandExt as _;

#[cfg(feature = "confine")]
pub use error::InitError;
#[cfg(feature = "confine")]
pub use exit::ExitCode;

#[cfg(feature = "confine")]
use error::NoNewPrivsError;
#[cfg(feature = "confine")]
use exit::fail;

/// Where the helper binds this binary inside the sandbox (`bwrap ... --tmpfs /run --ro-bind
/// <host path> /run/gigmcp/init`); under `/run` because bwrap cannot create a mount point in a
/// read-only image.
pub const SANDBOX_PATH: &str = "/run/gigmcp/init";

#[cfg(feature = "confine")]
/// Runs init with `argv` (argv\[0\] included) and never returns: it either becomes the server
/// or exits with the [`ExitCode`] of the step that failed.
pub fn run(argv: impl IntoIterator<Item = OsString>) -> ! {
    match confine_and_exec(argv) {
        Ok(never) => match never {},
        Err(e) => fail(&e),
    }
}

/// The steps of the module docs, in their order; only returns on failure.
#[cfg(feature = "confine")]
fn confine_and_exec(argv: impl IntoIterator<Item = OsString>) -> Result<Infallible, InitError> {
    let args = args::parse(argv.into_iter().skip(1))?;

    let policy = landlock::Policy {
        proxy_port: args.proxy_port,
        transparent: args.transparent,
        data: args.data,
    };
    if let Some(warning) = landlock::restrict(&policy)?.verdict(args.allow_degraded_landlock)? {
        exit::line(&warning);
    }

    set_no_new_privs()?;

    capabilities::drop_all()?;

    fds::close_above_stderr()?;

    let mut server = std::process::Command::new(&args.server[0]);
    // bwrap always exports PWD (of its --chdir); the server's environment must be exactly the
    // spec's, and the helper refuses specs that set PWD themselves.
    server.args(&args.server[1..]).env_remove("PWD");

    seccomp::install()?;

    // Only returns on failure. std resets the signal mask and SIGPIPE before execvp.
    let source = server.exec();
    Err(InitError::Exec {
        program: args.server[0].clone(),
        source,
    })
}

/// Step 2, checked: landlock's `restrict_self` tries to set the flag too, but best effort; the
/// server must never run without it (or a setuid binary could undo steps 3 and 5), so init sets
/// it itself and reads it back.
#[cfg(feature = "confine")]
fn set_no_new_privs() -> Result<(), NoNewPrivsError> {
    sys::set_no_new_privs().map_err(NoNewPrivsError::Set)?;
    match sys::no_new_privs() {
        Ok(true) => Ok(()),
        Ok(false) => Err(NoNewPrivsError::DidNotStick),
        Err(e) => Err(NoNewPrivsError::Get(e)),
    }
}
