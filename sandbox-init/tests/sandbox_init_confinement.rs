//! The confinement a server starts with under the real `gigmcp-sandbox-init`, when init runs as
//! root and in a sandbox: no new privileges, no capabilities, two seccomp filters, degraded
//! landlock changing nothing when landlock is enforced, and no fd above 2. Needs root.
//!
//! Most checks come with a control: the same probe without init, showing that the operation
//! works there and so that the test would notice if init stopped blocking it. How init is run
//! (directly as root, or in bwrap as uid 65534) is in `testkit::init`.

use sandbox_init::exit::{DEGRADED_PREFIX, WARNING_PREFIX};
use testkit::init::*;

#[test]
fn server_starts_confined_when_init_runs_as_root() {
    if !testkit::require_root("server_starts_confined_when_init_runs_as_root") {
        return;
    }
    let control = host(&["/bin/cat", "/proc/self/status"]);
    let control = stdout(&control);
    assert_ne!(
        status_field(&control, "CapEff"),
        "0000000000000000",
        "root has caps"
    );
    assert_eq!(status_field(&control, "Seccomp"), "0");

    let out = direct(
        &["--proxy-port", "3128"],
        &["/bin/cat", "/proc/self/status"],
    );
    assert_confined(&assert_ran(&out));
}

#[test]
fn server_starts_confined_in_a_sandbox() {
    if !testkit::require_root("server_starts_confined_in_a_sandbox") {
        return;
    }
    let out = sandboxed_init(
        &Binds::default(),
        3128,
        &[],
        &["/bin/cat", "/proc/self/status"],
    );
    let status = assert_ran(&out);
    assert_confined(&status);
    assert_eq!(status_field(&status, "Uid"), "65534\t65534\t65534\t65534");
    // No signal blocked: std's exec resets the mask init's runtime may have set. (Ignored
    // signals are not checked: SIG_IGN survives execve, so they depend on who started the test.)
    assert_eq!(status_field(&status, "SigBlk"), "0000000000000000");
}

#[test]
fn allow_degraded_landlock_changes_nothing_when_landlock_is_enforced() {
    if !testkit::require_root("allow_degraded_landlock_changes_nothing_when_landlock_is_enforced") {
        return;
    }
    let out = sandboxed_init(
        &Binds::default(),
        3128,
        &["--allow-degraded-landlock"],
        &["/bin/cat", "/proc/self/status"],
    );
    let err = stderr(&out);
    assert!(
        !err.contains(DEGRADED_PREFIX) && !err.contains(WARNING_PREFIX),
        "{err}"
    );
    assert_confined(&assert_ran(&out));
}

#[test]
fn fds_above_2_are_closed() {
    if !testkit::require_root("fds_above_2_are_closed") {
        return;
    }
    let probe = probe().to_str().expect("utf-8 path");
    let open = "exec 7</etc/hostname 100>/dev/null 1000</dev/null";
    let control = host(&["/bin/bash", "-c", &format!("{open}; exec {probe} fds")]);
    let control = assert_ran(&control);
    let inherited: Vec<&str> = control.split_whitespace().skip(1).collect();
    for fd in ["7", "100", "1000"] {
        // The test may itself have inherited more (from whatever started cargo).
        assert!(
            inherited.contains(&fd),
            "the control inherits fd {fd}: {control}"
        );
    }

    let init = init_bin();
    let script = format!("{open}; exec {init} --proxy-port 3128 -- {probe} fds");
    let out = host(&["/bin/bash", "-c", &script]);
    assert_eq!(assert_ran(&out), "fds\n");
}
