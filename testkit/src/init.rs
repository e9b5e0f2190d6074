//! Running the real `gigmcp-sandbox-init` against the real kernel (landlock, seccomp,
//! capabilities) for sandbox-init's tests, and checking what the server it execs can and cannot
//! do. Callers need root (CI runs as root): they switch to uid 65534 and start bwrap the way the
//! helper does.
//!
//! Two ways to run init:
//! - [`direct`]: as root on the host, no namespaces. Exercises dropping a full capability set and
//!   gives signal deaths without a pid-namespace init in between.
//! - [`sandboxed`]: bwrap run as uid 65534 (user, pid, ipc, uts, cgroup namespaces; a tmpfs root
//!   with the host's /usr and /etc read-only, private /tmp and /run), init bound at
//!   /run/gigmcp/init, as in production. The network namespace is the host's, so tests can
//!   listen on loopback.
//!
//! `sandbox-init/tests/support/probe.c` (compiled with cc at test time) does one operation per
//! run and prints `<op> ok` or `<op> errno=<n>`.

use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::process::CommandExt as _;
use std::os::unix::process::ExitStatusExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use crate::bins::{target_dir, workspace_bin};

/// The `gigmcp-sandbox-init` cargo built for this test run (`target/<profile>`).
pub fn init_bin() -> &'static str {
    static INIT: OnceLock<String> = OnceLock::new();
    INIT.get_or_init(|| {
        let bin = workspace_bin("gigmcp-sandbox-init");
        bin.to_str().expect("utf-8 path").to_owned()
    })
}

/// The unprivileged uid and gid sandboxes run as.
pub const NOBODY: u32 = 65534;
/// The signal seccomp kills with.
pub const SIGSYS: i32 = libc::SIGSYS;
/// Where the sandbox sees init.
pub const INIT_IN_SANDBOX: &str = sandbox_init::SANDBOX_PATH;
/// Where the sandbox sees the probe.
pub const PROBE_IN_SANDBOX: &str = "/run/gigmcp/probe";
/// The probe binary, compiled once per test run into cargo's per-target scratch dir.
pub fn probe() -> &'static Path {
    static PROBE: OnceLock<PathBuf> = OnceLock::new();
    PROBE.get_or_init(|| {
        let src =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../sandbox-init/tests/support/probe.c");
        let dir = target_dir()
            .parent()
            .unwrap()
            .join("tmp")
            .join("sandbox-init");
        std::fs::create_dir_all(&dir).expect("create probe dir");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let bin = dir.join("probe");
        let tmp = dir.join(format!("probe.{}", std::process::id()));
        let out = Command::new("cc")
            .args(["-Wall", "-Wextra", "-Werror", "-O1", "-o"])
            .arg(&tmp)
            .arg(&src)
            .output()
            .expect("run cc (scripts/install-deps installs gcc)");
        assert!(
            out.status.success(),
            "cc: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::rename(&tmp, &bin).expect("install probe");
        bin
    })
}

/// The output's stdout as text.
pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The output's stderr as text.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The server ran, exited 0, and init printed nothing.
pub fn assert_ran(out: &Output) -> String {
    assert!(
        out.status.success(),
        "status {:?}, stderr {:?}",
        out.status,
        stderr(out)
    );
    assert_eq!(
        stderr(out),
        "",
        "init must be silent when everything is enforced"
    );
    stdout(out)
}

/// Killed by seccomp: SIGSYS, and the probe never reported back.
pub fn assert_sigsys(out: &Output, what: &str) {
    assert_eq!(
        out.status.signal(),
        Some(SIGSYS),
        "{what}: status {:?}, stdout {:?}, stderr {:?}",
        out.status,
        stdout(out),
        stderr(out)
    );
    assert!(out.stdout.is_empty(), "{what}: {:?}", stdout(out));
}

/// A scratch directory that is not /tmp (landlock must not let the server write there).
pub fn scratch(owner: u32) -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("gigmcp-init-test.")
        .tempdir_in("/var/tmp")
        .expect("tempdir in /var/tmp");
    std::os::unix::fs::chown(dir.path(), Some(owner), Some(owner)).expect("chown scratch");
    dir
}

/// Runs `argv` as root on the host, in a scratch working directory.
pub fn host(argv: &[&str]) -> Output {
    let cwd = scratch(0);
    Command::new(argv[0])
        .args(&argv[1..])
        .current_dir(cwd.path())
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run {argv:?}: {e}"))
}

/// Runs init directly on the host as root: `init <init_args> -- <server>`.
pub fn direct(init_args: &[&str], server: &[&str]) -> Output {
    let mut argv = vec![init_bin()];
    argv.extend(init_args);
    argv.push("--");
    argv.extend(server);
    host(&argv)
}

/// Host directories bound read-write into a sandbox.
#[derive(Debug, Default)]
pub struct Binds<'a> {
    /// Bound at /data.
    pub data: Option<&'a Path>,
    /// Bound at /var/tmp: writable as far as mounts and DAC go, but not in landlock's policy.
    pub var_tmp: Option<&'a Path>,
}

/// Runs `argv` inside bwrap started as uid 65534, like the helper does.
pub fn sandboxed(binds: &Binds, argv: &[&str]) -> Output {
    let mut cmd = Command::new("bwrap");
    cmd.args([
        "--unshare-user",
        "--unshare-pid",
        "--unshare-ipc",
        "--unshare-uts",
        "--unshare-cgroup",
        "--die-with-parent",
        "--new-session",
        "--uid",
        "65534",
        "--gid",
        "65534",
        "--ro-bind",
        "/usr",
        "/usr",
        "--ro-bind",
        "/etc",
        "/etc",
    ]);
    for dir in ["/bin", "/lib", "/lib64", "/sbin"] {
        match std::fs::read_link(dir) {
            Ok(target) => {
                cmd.arg("--symlink").arg(target).arg(dir);
            }
            Err(_) if Path::new(dir).is_dir() => {
                cmd.args(["--ro-bind", dir, dir]);
            }
            Err(_) => {}
        }
    }
    cmd.args([
        "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp", "--tmpfs", "/run",
    ]);
    cmd.args(["--ro-bind", init_bin(), INIT_IN_SANDBOX, "--ro-bind"])
        .arg(probe())
        .arg(PROBE_IN_SANDBOX);
    if let Some(dir) = binds.data {
        cmd.arg("--bind").arg(dir).arg("/data");
    }
    if let Some(dir) = binds.var_tmp {
        cmd.arg("--bind").arg(dir).arg("/var/tmp");
    }
    cmd.args([
        "--remount-ro",
        "/",
        "--clearenv",
        "--setenv",
        "PATH",
        "/usr/bin:/bin",
    ]);
    cmd.args(["--chdir", "/tmp", "--"]).args(argv);
    cmd.uid(NOBODY)
        .gid(NOBODY)
        .current_dir("/")
        .stdin(Stdio::null())
        .output()
        .expect("run bwrap (scripts/install-deps installs bubblewrap)")
}

/// `init --proxy-port <port> <extra> -- <server>` inside a sandbox.
pub fn sandboxed_init(binds: &Binds, port: u16, extra: &[&str], server: &[&str]) -> Output {
    let port = port.to_string();
    let mut argv = vec![INIT_IN_SANDBOX, "--proxy-port", &port];
    argv.extend(extra);
    argv.push("--");
    argv.extend(server);
    sandboxed(binds, &argv)
}

/// bwrap (our pid-namespace init) turns a child's death by signal N into exit code 128 + N.
pub fn assert_sigsys_in_sandbox(out: &Output, what: &str) {
    assert_eq!(
        out.status.code(),
        Some(128 + SIGSYS),
        "{what}: status {:?}, stdout {:?}, stderr {:?}",
        out.status,
        stdout(out),
        stderr(out)
    );
    assert!(out.stdout.is_empty(), "{what}: {:?}", stdout(out));
}

/// One field of /proc/<pid>/status, trimmed.
pub fn status_field<'a>(status: &'a str, name: &str) -> &'a str {
    status
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .unwrap_or_else(|| panic!("no {name} in {status}"))
        .trim()
}

/// The confinement every server must start with, as /proc/self/status shows it.
pub fn assert_confined(status: &str) {
    assert_eq!(status_field(status, "NoNewPrivs"), "1");
    for cap in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        assert_eq!(status_field(status, cap), "0000000000000000", "{cap}");
    }
    assert_eq!(status_field(status, "Seccomp"), "2", "filter mode");
    assert_eq!(
        status_field(status, "Seccomp_filters"),
        "2",
        "kill + enosys"
    );
}

/// A random 64-bit value, for attack tests' arguments.
pub fn random_u64() -> u64 {
    let mut b = [0u8; 8];
    getrandom::fill(&mut b).expect("random");
    u64::from_le_bytes(b)
}

/// The number of `name` on the arch under test, from libc (not from seccompiler's tables, so
/// that a wrong table there cannot hide a rule from the kernel tests); `None` for a name this
/// list does not know, which those tests treat as a failure (add the name here).
pub fn syscall_nr(name: &str) -> Option<libc::c_long> {
    use libc::*;
    Some(match name {
        "unshare" => SYS_unshare,
        "setns" => SYS_setns,
        "clone" => SYS_clone,
        "clone3" => SYS_clone3,
        "mount" => SYS_mount,
        "umount2" => SYS_umount2,
        "fsopen" => SYS_fsopen,
        "fsconfig" => SYS_fsconfig,
        "fsmount" => SYS_fsmount,
        "fspick" => SYS_fspick,
        "open_tree" => SYS_open_tree,
        "move_mount" => SYS_move_mount,
        "mount_setattr" => SYS_mount_setattr,
        "pivot_root" => SYS_pivot_root,
        "chroot" => SYS_chroot,
        "ptrace" => SYS_ptrace,
        "process_vm_readv" => SYS_process_vm_readv,
        "process_vm_writev" => SYS_process_vm_writev,
        "bpf" => SYS_bpf,
        "perf_event_open" => SYS_perf_event_open,
        "keyctl" => SYS_keyctl,
        "add_key" => SYS_add_key,
        "request_key" => SYS_request_key,
        "kexec_load" => SYS_kexec_load,
        "kexec_file_load" => SYS_kexec_file_load,
        "init_module" => SYS_init_module,
        "finit_module" => SYS_finit_module,
        "delete_module" => SYS_delete_module,
        "userfaultfd" => SYS_userfaultfd,
        "io_uring_setup" => SYS_io_uring_setup,
        "io_uring_enter" => SYS_io_uring_enter,
        "io_uring_register" => SYS_io_uring_register,
        "open_by_handle_at" => SYS_open_by_handle_at,
        "name_to_handle_at" => SYS_name_to_handle_at,
        "personality" => SYS_personality,
        "socket" => SYS_socket,
        "socketpair" => SYS_socketpair,
        "sendto" => SYS_sendto,
        "sendmsg" => SYS_sendmsg,
        "sendmmsg" => SYS_sendmmsg,
        "setsockopt" => SYS_setsockopt,
        "pidfd_getfd" => SYS_pidfd_getfd,
        "process_madvise" => SYS_process_madvise,
        "kcmp" => SYS_kcmp,
        "swapon" => SYS_swapon,
        "swapoff" => SYS_swapoff,
        "reboot" => SYS_reboot,
        "acct" => SYS_acct,
        "quotactl" => SYS_quotactl,
        "quotactl_fd" => SYS_quotactl_fd,
        "settimeofday" => SYS_settimeofday,
        "clock_settime" => SYS_clock_settime,
        "clock_adjtime" => SYS_clock_adjtime,
        "adjtimex" => SYS_adjtimex,
        "syslog" => SYS_syslog,
        "lookup_dcookie" => SYS_lookup_dcookie,
        "vhangup" => SYS_vhangup,
        "nfsservctl" => SYS_nfsservctl,
        #[cfg(target_arch = "x86_64")]
        "iopl" => SYS_iopl,
        #[cfg(target_arch = "x86_64")]
        "ioperm" => SYS_ioperm,
        #[cfg(target_arch = "x86_64")]
        "uselib" => SYS_uselib,
        _ => return None,
    })
}
