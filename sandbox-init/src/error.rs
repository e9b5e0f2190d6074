//! Why init stopped before the server started: [`InitError`], one variant per step, each
//! carrying that step's own error (defined beside the step; step 2, two `prctl`s in `lib.rs`,
//! has no module, so [`NoNewPrivsError`] is here). The variant decides the exit code:
//! [`InitError::exit_code`] is the one place a failure gets its code, so the step → code table
//! cannot drift between call sites. Its message is the detail of the stderr line
//! `gigmcp-sandbox-init: <step>: <detail>` (see `exit`).

use std::ffi::OsString;
use std::io;

use crate::args::{self, ArgsError};
use crate::capabilities::CapabilitiesError;
use crate::exit::ExitCode;
use crate::fds::FdsError;
use crate::landlock::LandlockError;
use crate::seccomp::SeccompError;

/// Why step 2 failed.
#[derive(Debug, thiserror::Error)]
pub enum NoNewPrivsError {
    /// `prctl(PR_SET_NO_NEW_PRIVS)` failed.
    #[error("prctl(PR_SET_NO_NEW_PRIVS): {0}")]
    Set(#[source] io::Error),
    /// `prctl(PR_GET_NO_NEW_PRIVS)` failed, so the flag cannot be verified.
    #[error("prctl(PR_GET_NO_NEW_PRIVS): {0}")]
    Get(#[source] io::Error),
    /// The set call succeeded but the kernel reports the flag unset.
    #[error("the flag did not stick")]
    DidNotStick,
}

/// The failed step and why.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    /// The command line is not the helper's (the synopsis follows the reason).
    #[error("{0}; usage: {usage}", usage = args::USAGE)]
    Usage(#[from] ArgsError),
    /// Step 1: landlock could not be set up, or is not enforced and degraded mode was not allowed.
    #[error(transparent)]
    Landlock(#[from] LandlockError),
    /// Step 2: no_new_privs could not be set.
    #[error(transparent)]
    NoNewPrivs(#[from] NoNewPrivsError),
    /// Step 3: a capability set could not be emptied.
    #[error(transparent)]
    Capabilities(#[from] CapabilitiesError),
    /// Step 4: fds above 2 could not be closed.
    #[error(transparent)]
    Fds(#[from] FdsError),
    /// Step 5: the seccomp programs are malformed or could not be installed.
    #[error(transparent)]
    Seccomp(#[from] SeccompError),
    /// Step 6: `execve` (after the `PATH` lookup) failed.
    #[error("{program:?}: {source}")]
    Exec {
        /// The server's argv\[0\].
        program: OsString,
        /// Why.
        source: io::Error,
    },
}

impl InitError {
    /// The exit code, and so the step named on the stderr line.
    pub fn exit_code(&self) -> ExitCode {
        match self {
            InitError::Usage(_) => ExitCode::Usage,
            InitError::Landlock(_) => ExitCode::Landlock,
            InitError::NoNewPrivs(_) => ExitCode::NoNewPrivs,
            InitError::Capabilities(_) => ExitCode::Capabilities,
            InitError::Fds(_) => ExitCode::Fds,
            InitError::Seccomp(_) => ExitCode::Seccomp,
            // A program that is missing or may not be run (most likely the spec's mistake) gets
            // its own code, apart from one that exists but could not start.
            InitError::Exec { source, .. } => match source.raw_os_error() {
                Some(
                    libc::ENOENT
                    | libc::ENOTDIR
                    | libc::EACCES
                    | libc::EPERM
                    | libc::ELOOP
                    | libc::ENAMETOOLONG,
                ) => ExitCode::ExecNotFound,
                _ => ExitCode::Exec,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exec(errno: i32) -> InitError {
        InitError::Exec {
            program: "/srv/mcp-server".into(),
            source: io::Error::from_raw_os_error(errno),
        }
    }

    /// One error of each step, with the code, step and detail the stderr line will carry.
    fn one_of_each() -> Vec<InitError> {
        vec![
            ArgsError::MissingProxyPort.into(),
            LandlockError::NotEnforced {
                why: "the kernel has no landlock support",
            }
            .into(),
            NoNewPrivsError::DidNotStick.into(),
            CapabilitiesError::MissingMask("CapAmb").into(),
            FdsError::StillOpen(vec![3, 7]).into(),
            SeccompError::NoX32Guard { name: "kill" }.into(),
            exec(libc::ENOENT),
            exec(libc::ETXTBSY),
        ]
    }

    #[test]
    fn each_step_exits_with_its_documented_code() {
        // One error of each step, in step order, lands on the documented table (`exit.rs`
        // tests the table's numbers and names), so no step borrows another's code.
        let codes: Vec<ExitCode> = one_of_each().iter().map(InitError::exit_code).collect();
        assert_eq!(codes, ExitCode::ALL);
    }

    #[test]
    fn each_step_keeps_its_message() {
        let details: Vec<String> = one_of_each().iter().map(ToString::to_string).collect();
        assert_eq!(
            details,
            [
                format!("--proxy-port is required; usage: {}", args::USAGE),
                "not enforced: the kernel has no landlock support; refusing to start the server \
                 (--allow-degraded-landlock would run it unconfined)"
                    .into(),
                "the flag did not stick".into(),
                "no CapAmb line in /proc/self/status".into(),
                "still open after closing: [3, 7]".into(),
                "kill program lacks the x32 guard".into(),
                format!(
                    "\"/srv/mcp-server\": {}",
                    io::Error::from_raw_os_error(libc::ENOENT)
                ),
                format!(
                    "\"/srv/mcp-server\": {}",
                    io::Error::from_raw_os_error(libc::ETXTBSY)
                ),
            ]
        );
    }

    #[test]
    fn exec_errors_of_a_missing_or_forbidden_program_are_not_found() {
        for errno in [
            libc::ENOENT,
            libc::ENOTDIR,
            libc::EACCES,
            libc::EPERM,
            libc::ELOOP,
            libc::ENAMETOOLONG,
        ] {
            assert_eq!(exec(errno).exit_code(), ExitCode::ExecNotFound, "{errno}");
        }
        for errno in [libc::ETXTBSY, libc::E2BIG, libc::ENOMEM, libc::ENOEXEC] {
            assert_eq!(exec(errno).exit_code(), ExitCode::Exec, "{errno}");
        }
    }
}
