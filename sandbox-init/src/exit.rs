//! Exit codes and stderr lines of `gigmcp-sandbox-init`: the contract with whoever reads them
//! (the helper reaps bwrap, the gateway audits the server's stderr).
//!
//! Every failure before the server starts exits with its own code and prints exactly one line,
//! `gigmcp-sandbox-init: <step>: <detail>`, on stderr. Once `execve` succeeds, exit codes and
//! stderr belong to the server; a server may exit with any of these codes too, so a reader
//! should trust a code only together with its stderr line. Which code a failure gets is
//! decided in one place, `InitError::exit_code`.
//!
//! | code | step | meaning |
//! |---|---|---|
//! | 120 | `usage` | bad command line |
//! | 121 | `landlock` | landlock could not be set up, or is not enforced and `--allow-degraded-landlock` was not given |
//! | 122 | `no_new_privs` | `PR_SET_NO_NEW_PRIVS` failed or did not stick |
//! | 123 | `capabilities` | a capability set (incl. bounding, ambient) could not be emptied |
//! | 124 | `fds` | file descriptors above 2 could not be closed |
//! | 125 | `seccomp` | the seccomp programs are malformed or could not be installed |
//! | 126 | `exec` | the server program was not found or may not be executed (ENOENT, ENOTDIR, EACCES, EPERM, ELOOP, ENAMETOOLONG) |
//! | 127 | `exec` | `execve` failed otherwise (ETXTBSY, E2BIG, ENOMEM, …) |
//!
//! Two more lines may appear on stderr before a server that does start:
//! `gigmcp-sandbox-init: DEGRADED: …` (landlock not enforced, run anyway because of
//! `--allow-degraded-landlock`) and `gigmcp-sandbox-init: WARNING: …` (landlock only partially
//! enforced by an older kernel).

use std::io::Write as _;

use crate::error::InitError;

/// What every line `gigmcp-sandbox-init` prints starts with.
pub const PREFIX: &str = "gigmcp-sandbox-init: ";
/// Start of the line printed when the server runs without landlock (audit it).
pub const DEGRADED_PREFIX: &str = "gigmcp-sandbox-init: DEGRADED: ";
/// Start of the line printed when landlock is only partially enforced.
pub const WARNING_PREFIX: &str = "gigmcp-sandbox-init: WARNING: ";

/// Why `gigmcp-sandbox-init` stopped before the server started. See the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExitCode {
    /// 120: bad command line.
    Usage,
    /// 121: landlock failed or is not enforced (and degraded mode was not allowed).
    Landlock,
    /// 122: no_new_privs could not be set.
    NoNewPrivs,
    /// 123: capabilities could not be cleared.
    Capabilities,
    /// 124: stray file descriptors could not be closed.
    Fds,
    /// 125: seccomp filters could not be installed.
    Seccomp,
    /// 126: the server program was not found or may not be executed.
    ExecNotFound,
    /// 127: `execve` failed for another reason.
    Exec,
}

impl ExitCode {
    /// Every code, in step order.
    pub const ALL: [ExitCode; 8] = [
        ExitCode::Usage,
        ExitCode::Landlock,
        ExitCode::NoNewPrivs,
        ExitCode::Capabilities,
        ExitCode::Fds,
        ExitCode::Seccomp,
        ExitCode::ExecNotFound,
        ExitCode::Exec,
    ];

    /// The process exit code.
    pub const fn code(self) -> i32 {
        match self {
            ExitCode::Usage => 120,
            ExitCode::Landlock => 121,
            ExitCode::NoNewPrivs => 122,
            ExitCode::Capabilities => 123,
            ExitCode::Fds => 124,
            ExitCode::Seccomp => 125,
            ExitCode::ExecNotFound => 126,
            ExitCode::Exec => 127,
        }
    }

    /// The code's meaning, if `code` is one of ours.
    pub fn from_code(code: i32) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.code() == code)
    }

    /// The step name that follows [`PREFIX`] in the stderr line.
    pub const fn step(self) -> &'static str {
        match self {
            ExitCode::Usage => "usage",
            ExitCode::Landlock => "landlock",
            ExitCode::NoNewPrivs => "no_new_privs",
            ExitCode::Capabilities => "capabilities",
            ExitCode::Fds => "fds",
            ExitCode::Seccomp => "seccomp",
            ExitCode::ExecNotFound | ExitCode::Exec => "exec",
        }
    }

    /// A short human description, for logs and audit entries.
    pub const fn reason(self) -> &'static str {
        match self {
            ExitCode::Usage => "bad sandbox-init command line",
            ExitCode::Landlock => "landlock could not be enforced",
            ExitCode::NoNewPrivs => "no_new_privs could not be set",
            ExitCode::Capabilities => "capabilities could not be dropped",
            ExitCode::Fds => "inherited file descriptors could not be closed",
            ExitCode::Seccomp => "seccomp filters could not be installed",
            ExitCode::ExecNotFound => "server program not found or not executable",
            ExitCode::Exec => "server program could not be executed",
        }
    }
}

/// `detail` on one line: control characters (newlines included) become spaces.
pub fn one_line(detail: &str) -> String {
    detail
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// Prints `gigmcp-sandbox-init: <step>: <detail>` for `error` and exits with its code.
pub(crate) fn fail(error: &InitError) -> ! {
    let code = error.exit_code();
    line(&format!(
        "{PREFIX}{}: {}",
        code.step(),
        one_line(&error.to_string())
    ));
    std::process::exit(code.code())
}

/// Prints one already-prefixed line on stderr, ignoring errors (stderr may be closed).
pub(crate) fn line(text: &str) {
    let _ = writeln!(std::io::stderr().lock(), "{}", one_line(text));
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn codes_are_distinct_and_round_trip() {
        let codes: HashSet<i32> = ExitCode::ALL.iter().map(|c| c.code()).collect();
        assert_eq!(codes.len(), ExitCode::ALL.len());
        for c in ExitCode::ALL {
            assert_eq!(ExitCode::from_code(c.code()), Some(c));
            assert!((120..=127).contains(&c.code()));
        }
        assert_eq!(ExitCode::from_code(0), None);
        assert_eq!(ExitCode::from_code(1), None);
        assert_eq!(ExitCode::from_code(128 + 31), None);
    }

    #[test]
    fn the_documented_table() {
        let table: Vec<(i32, &str)> = ExitCode::ALL.iter().map(|c| (c.code(), c.step())).collect();
        assert_eq!(
            table,
            [
                (120, "usage"),
                (121, "landlock"),
                (122, "no_new_privs"),
                (123, "capabilities"),
                (124, "fds"),
                (125, "seccomp"),
                (126, "exec"),
                (127, "exec"),
            ]
        );
    }

    #[test]
    fn one_line_flattens_control_characters() {
        assert_eq!(one_line("a\nb\r\tc"), "a b  c");
        assert_eq!(one_line("plain"), "plain");
    }
}
