//! Seccomp under the real `gigmcp-sandbox-init`: namespace creation is killed, clone3 answers
//! ENOSYS, x32 syscalls are killed, and personality may be queried but not changed. Needs root.
//!
//! Most checks come with a control: the same probe without init, showing that the operation
//! works there and so that the test would notice if init stopped blocking it. How init is run
//! (directly as root, or in bwrap as uid 65534) is in `testkit::init`.

use testkit::init::*;

/// Namespace flags the kill filter must refuse to `clone`.
const CLONE_NS_FLAGS: [u64; 8] = [
    0x0002_0000, // CLONE_NEWNS
    0x0200_0000, // CLONE_NEWCGROUP
    0x0400_0000, // CLONE_NEWUTS
    0x0800_0000, // CLONE_NEWIPC
    0x1000_0000, // CLONE_NEWUSER
    0x2000_0000, // CLONE_NEWPID
    0x4000_0000, // CLONE_NEWNET
    0x0000_0080, // CLONE_NEWTIME
];

#[test]
fn seccomp_kills_namespace_creation() {
    if !testkit::require_root("seccomp_kills_namespace_creation") {
        return;
    }
    let probe = probe().to_str().expect("utf-8 path");
    let init = ["--proxy-port", "3128"];

    // Ordinary fork (clone without namespace flags) keeps working.
    assert_eq!(assert_ran(&direct(&init, &[probe, "fork"])), "fork ok\n");

    for flag in CLONE_NS_FLAGS {
        let flag = format!("{flag:#x}");
        assert_sigsys(
            &direct(&init, &[probe, "clone", &flag]),
            &format!("clone {flag}"),
        );
    }
    // Control: as root and without init, a namespace clone succeeds.
    assert_eq!(
        assert_ran(&host(&[probe, "clone", "0x20000"])),
        "clone ok\n"
    );

    assert_sigsys(&direct(&init, &[probe, "unshare", "0x10000000"]), "unshare");
    assert_sigsys(
        &direct(&init, &["/usr/bin/unshare", "-U", "true"]),
        "unshare -U true",
    );
    assert_sigsys(&direct(&init, &[probe, "mount"]), "mount");
    assert_sigsys(&direct(&init, &[probe, "ptrace"]), "ptrace");

    // The same in a real sandbox, where bwrap reports the death as 128 + SIGSYS.
    let out = sandboxed_init(
        &Binds::default(),
        3128,
        &[],
        &["/usr/bin/unshare", "-U", "true"],
    );
    assert_sigsys_in_sandbox(&out, "unshare -U true in a sandbox");
    let out = sandboxed_init(
        &Binds::default(),
        3128,
        &[],
        &[PROBE_IN_SANDBOX, "clone", "0x10000000"],
    );
    assert_sigsys_in_sandbox(&out, "clone(CLONE_NEWUSER) in a sandbox");
}

#[test]
fn clone3_answers_enosys() {
    if !testkit::require_root("clone3_answers_enosys") {
        return;
    }
    let probe = probe().to_str().expect("utf-8 path");
    // Control: clone3(NULL, 0) is EINVAL (size too small) without the filter.
    assert_eq!(assert_ran(&host(&[probe, "clone3"])), "clone3 errno=22\n");
    let out = direct(&["--proxy-port", "3128"], &[probe, "clone3"]);
    assert_eq!(assert_ran(&out), "clone3 errno=38\n");
}

#[cfg(target_arch = "x86_64")]
#[test]
fn x32_syscalls_are_killed() {
    if !testkit::require_root("x32_syscalls_are_killed") {
        return;
    }
    let probe = probe().to_str().expect("utf-8 path");
    // Control: without the filter an x32 getpid is ENOSYS (CONFIG_X86_X32_ABI off) or works;
    // either way the process survives.
    let control = assert_ran(&host(&[probe, "x32"]));
    assert!(
        control == "x32 errno=38\n" || control == "x32 ok\n",
        "{control}"
    );
    assert_sigsys(
        &direct(&["--proxy-port", "3128"], &[probe, "x32"]),
        "x32 getpid",
    );
}

#[test]
fn personality_may_be_queried_but_not_changed() {
    if !testkit::require_root("personality_may_be_queried_but_not_changed") {
        return;
    }
    let probe = probe().to_str().expect("utf-8 path");
    let init = ["--proxy-port", "3128"];
    assert_eq!(
        assert_ran(&host(&[probe, "personality", "0x8"])),
        "personality ok\n"
    );
    for query in ["0xffffffff", "0"] {
        let out = direct(&init, &[probe, "personality", query]);
        assert_eq!(assert_ran(&out), "personality ok\n", "personality({query})");
    }
    for change in ["0x8", "0x0040000"] {
        let out = direct(&init, &[probe, "personality", change]);
        assert_sigsys(&out, &format!("personality({change})"));
    }
}
