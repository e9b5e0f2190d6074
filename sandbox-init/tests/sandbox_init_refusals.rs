//! The real `gigmcp-sandbox-init` refusing to start a server: usage errors exit 120, a missing or
//! non-executable server 126, other exec failures 127, capabilities that cannot be dropped 123,
//! and a landlock policy naming a data dir that is not there refuses to start; each with exactly
//! one stderr line naming the step. Needs root.
//!
//! Most checks come with a control: the same probe without init, showing that the operation
//! works there and so that the test would notice if init stopped blocking it. How init is run
//! (directly as root, or in bwrap as uid 65534) is in `testkit::init`.

use std::os::unix::process::CommandExt as _;
use std::process::{Command, Output};

use sandbox_init::ExitCode;
use sandbox_init::exit::PREFIX;
use testkit::init::*;

/// Init refused with `code`: that exit code and exactly one stderr line naming its step.
fn assert_refused(out: &Output, code: ExitCode) -> String {
    let err = stderr(out);
    assert_eq!(
        out.status.code(),
        Some(code.code()),
        "status {:?}, stderr {err:?}",
        out.status
    );
    assert_eq!(ExitCode::from_code(code.code()), Some(code));
    let want = format!("{PREFIX}{}: ", code.step());
    assert!(
        err.starts_with(&want),
        "stderr {err:?} should start with {want:?}"
    );
    assert_eq!(err.matches('\n').count(), 1, "one line: {err:?}");
    assert!(
        out.stdout.is_empty(),
        "the server must not have run: {:?}",
        stdout(out)
    );
    err
}

#[test]
fn usage_errors_exit_120_with_one_line() {
    for argv in [
        &[][..],
        &["--proxy-port", "3128"][..],
        &["--", "/bin/true"][..],
        &["--proxy-port", "3128", "--"][..],
        &["--proxy-port", "0", "--", "/bin/true"][..],
        &["--proxy-port", "http", "--", "/bin/true"][..],
        &["--proxy-port", "3128", "--verbose", "--", "/bin/true"][..],
        &["--proxy-port", "3128", "/bin/true"][..],
    ] {
        let out = Command::new(init_bin())
            .args(argv)
            .output()
            .expect("run init");
        let err = assert_refused(&out, ExitCode::Usage);
        assert!(
            err.contains("--proxy-port PORT"),
            "{argv:?}: synopsis in {err:?}"
        );
    }
}

#[test]
fn missing_or_non_executable_server_exits_126() {
    if !testkit::require_root("missing_or_non_executable_server_exits_126") {
        return;
    }
    let out = direct(&["--proxy-port", "3128"], &["/nonexistent/gigmcp-server"]);
    let err = assert_refused(&out, ExitCode::ExecNotFound);
    assert!(
        err.contains("\"/nonexistent/gigmcp-server\": No such file"),
        "{err}"
    );

    let out = direct(&["--proxy-port", "3128"], &["no-such-server-on-path"]);
    assert_refused(&out, ExitCode::ExecNotFound);

    let out = direct(&["--proxy-port", "3128"], &["/etc/passwd"]);
    let err = assert_refused(&out, ExitCode::ExecNotFound);
    assert!(err.contains("Permission denied"), "{err}");

    let out = sandboxed_init(&Binds::default(), 3128, &[], &["/usr/bin/no-such-server"]);
    assert_refused(&out, ExitCode::ExecNotFound);
}

#[test]
fn other_exec_failures_exit_127() {
    if !testkit::require_root("other_exec_failures_exit_127") {
        return;
    }
    // A binary that is open for writing cannot be executed (ETXTBSY).
    let dir = scratch(0);
    let bin = dir.path().join("server");
    std::fs::copy("/bin/true", &bin).expect("copy /bin/true");
    let _writer = std::fs::OpenOptions::new()
        .write(true)
        .open(&bin)
        .expect("open for writing");
    let out = direct(
        &["--proxy-port", "3128"],
        &[bin.to_str().expect("utf-8 path")],
    );
    let err = assert_refused(&out, ExitCode::Exec);
    assert!(err.contains("Text file busy"), "{err}");
}

#[test]
fn capabilities_that_cannot_be_dropped_exit_123() {
    if !testkit::require_root("capabilities_that_cannot_be_dropped_exit_123") {
        return;
    }
    // uid 65534 on the host, not in a user namespace: no CAP_SETPCAP to empty the full bounding
    // set it inherited. Init must refuse rather than exec with it.
    let out = Command::new(init_bin())
        .args(["--proxy-port", "3128", "--", "/bin/true"])
        .uid(NOBODY)
        .gid(NOBODY)
        .current_dir("/")
        .output()
        .expect("run init");
    let err = assert_refused(&out, ExitCode::Capabilities);
    assert!(err.contains("bounding="), "{err}");
}

#[test]
fn landlock_refuses_to_start_without_the_data_dir_it_was_told_about() {
    if !testkit::require_root("landlock_refuses_to_start_without_the_data_dir_it_was_told_about") {
        return;
    }
    let out = sandboxed_init(&Binds::default(), 3128, &["--data"], &["/bin/true"]);
    let err = assert_refused(&out, ExitCode::Landlock);
    assert!(err.contains("/data"), "{err}");
}
