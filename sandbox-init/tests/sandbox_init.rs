//! Runs the real `gigmcp-sandbox-init` against the real kernel (landlock, seccomp, capabilities)
//! and checks what the server it execs can and cannot do. Needs root (CI runs as root): tests
//! switch to uid 65534 and start bwrap the way the helper does.
//!
//! Two ways to run init:
//! - `direct`: as root on the host, no namespaces. Exercises dropping a full capability set and
//!   gives signal deaths without a pid-namespace init in between.
//! - `sandboxed`: bwrap run as uid 65534 (user, pid, ipc, uts, cgroup namespaces; a tmpfs root with
//!   the host's /usr and /etc read-only, private /tmp and /run), init bound at
//!   /run/gigmcp/init, as in production. The network namespace is the host's, so tests can
//!   listen on loopback.
//!
//! Most checks come with a control: the same probe without init, showing that the operation
//! works there and so that the test would notice if init stopped blocking it.
//!
//! `tests/support/probe.c` (compiled with cc at test time) does one operation per run and
//! prints `<op> ok` or `<op> errno=<n>`.

use std::net::TcpListener;
use std::os::linux::net::SocketAddrExt as _;
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::net::{SocketAddr, UnixListener};
use std::os::unix::process::{CommandExt as _, ExitStatusExt as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use sandbox_init::ExitCode;
use sandbox_init::exit::{DEGRADED_PREFIX, PREFIX, WARNING_PREFIX};

const INIT: &str = env!("CARGO_BIN_EXE_gigmcp-sandbox-init");
const NOBODY: u32 = 65534;
const SIGSYS: i32 = libc::SIGSYS;
/// Where the sandbox sees init and the probe.
const INIT_IN_SANDBOX: &str = sandbox_init::SANDBOX_PATH;
const PROBE_IN_SANDBOX: &str = "/run/gigmcp/probe";
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

/// The probe binary, compiled once per test run into cargo's per-target scratch dir.
fn probe() -> &'static Path {
    static PROBE: OnceLock<PathBuf> = OnceLock::new();
    PROBE.get_or_init(|| {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/probe.c");
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("sandbox-init");
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

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

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

/// The server ran, exited 0, and init printed nothing.
fn assert_ran(out: &Output) -> String {
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
fn assert_sigsys(out: &Output, what: &str) {
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
fn scratch(owner: u32) -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("gigmcp-init-test.")
        .tempdir_in("/var/tmp")
        .expect("tempdir in /var/tmp");
    std::os::unix::fs::chown(dir.path(), Some(owner), Some(owner)).expect("chown scratch");
    dir
}

/// Runs `argv` as root on the host, in a scratch working directory.
fn host(argv: &[&str]) -> Output {
    let cwd = scratch(0);
    Command::new(argv[0])
        .args(&argv[1..])
        .current_dir(cwd.path())
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run {argv:?}: {e}"))
}

/// Runs init directly on the host as root: `init <init_args> -- <server>`.
fn direct(init_args: &[&str], server: &[&str]) -> Output {
    let mut argv = vec![INIT];
    argv.extend(init_args);
    argv.push("--");
    argv.extend(server);
    host(&argv)
}

/// Host directories bound read-write into a sandbox.
#[derive(Default)]
struct Binds<'a> {
    /// Bound at /data.
    data: Option<&'a Path>,
    /// Bound at /var/tmp: writable as far as mounts and DAC go, but not in landlock's policy.
    var_tmp: Option<&'a Path>,
}

/// Runs `argv` inside bwrap started as uid 65534, like the helper does.
fn sandboxed(binds: &Binds, argv: &[&str]) -> Output {
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
    cmd.args(["--ro-bind", INIT, INIT_IN_SANDBOX, "--ro-bind"])
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
fn sandboxed_init(binds: &Binds, port: u16, extra: &[&str], server: &[&str]) -> Output {
    let port = port.to_string();
    let mut argv = vec![INIT_IN_SANDBOX, "--proxy-port", &port];
    argv.extend(extra);
    argv.push("--");
    argv.extend(server);
    sandboxed(binds, &argv)
}

/// bwrap (our pid-namespace init) turns a child's death by signal N into exit code 128 + N.
fn assert_sigsys_in_sandbox(out: &Output, what: &str) {
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

fn status_field<'a>(status: &'a str, name: &str) -> &'a str {
    status
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .unwrap_or_else(|| panic!("no {name} in {status}"))
        .trim()
}

/// The confinement every server must start with, as /proc/self/status shows it.
fn assert_confined(status: &str) {
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

// ---- command line and exec failures ----

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
        let out = Command::new(INIT).args(argv).output().expect("run init");
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

// ---- the confinement the server starts with ----

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
fn capabilities_that_cannot_be_dropped_exit_123() {
    if !testkit::require_root("capabilities_that_cannot_be_dropped_exit_123") {
        return;
    }
    // uid 65534 on the host, not in a user namespace: no CAP_SETPCAP to empty the full bounding
    // set it inherited. Init must refuse rather than exec with it.
    let out = Command::new(INIT)
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

    let script = format!("{open}; exec {INIT} --proxy-port 3128 -- {probe} fds");
    let out = host(&["/bin/bash", "-c", &script]);
    assert_eq!(assert_ran(&out), "fds\n");
}

// ---- landlock ----

#[test]
fn landlock_allows_writes_only_to_tmp_data_and_devices() {
    if !testkit::require_root("landlock_allows_writes_only_to_tmp_data_and_devices") {
        return;
    }
    let data = scratch(NOBODY);
    let var_tmp = scratch(NOBODY);
    let binds = Binds {
        data: Some(data.path()),
        var_tmp: Some(var_tmp.path()),
    };
    fn write(path: &str) -> [&str; 3] {
        [PROBE_IN_SANDBOX, "write", path]
    }

    // Control: without init, the mounts and file modes allow all of these.
    for path in ["/var/tmp/control", "/data/control"] {
        let out = sandboxed(&binds, &write(path));
        assert_eq!(assert_ran(&out), "write ok\n", "{path}");
    }

    for (path, want) in [
        ("/tmp/x", "write ok\n"),
        ("/data/x", "write ok\n"),
        ("/dev/null", "write ok\n"),
        ("/dev/full", "write ok\n"),
        ("/var/tmp/x", "write errno=13\n"),
        ("/dev/urandom", "write errno=13\n"),
    ] {
        let out = sandboxed_init(&binds, 3128, &["--data"], &write(path));
        assert_eq!(assert_ran(&out), want, "{path}");
    }
    assert!(data.path().join("x").exists());
    assert!(!var_tmp.path().join("x").exists());

    // Without --data, /data is as read-only as the rest.
    let out = sandboxed_init(&binds, 3128, &[], &write("/data/y"));
    assert_eq!(assert_ran(&out), "write errno=13\n");
    assert!(!data.path().join("y").exists());
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

#[test]
fn landlock_allows_tcp_connect_only_to_the_proxy_port_and_no_bind() {
    if !testkit::require_root("landlock_allows_tcp_connect_only_to_the_proxy_port_and_no_bind") {
        return;
    }
    let proxy = TcpListener::bind("127.0.0.1:0").expect("listen");
    let other = TcpListener::bind("127.0.0.1:0").expect("listen");
    let proxy_port = proxy.local_addr().expect("addr").port();
    let other_port = other.local_addr().expect("addr").port().to_string();
    let binds = Binds::default();

    let control = sandboxed(&binds, &[PROBE_IN_SANDBOX, "connect", &other_port]);
    assert_eq!(assert_ran(&control), "connect ok\n");
    let control = sandboxed(&binds, &[PROBE_IN_SANDBOX, "bind", "0"]);
    assert_eq!(assert_ran(&control), "bind ok\n");

    let out = sandboxed_init(
        &binds,
        proxy_port,
        &[],
        &[PROBE_IN_SANDBOX, "connect", &proxy_port.to_string()],
    );
    assert_eq!(assert_ran(&out), "connect ok\n");
    let out = sandboxed_init(
        &binds,
        proxy_port,
        &[],
        &[PROBE_IN_SANDBOX, "connect", &other_port],
    );
    assert_eq!(assert_ran(&out), "connect errno=13\n");
    for port in ["0", &proxy_port.to_string()] {
        let out = sandboxed_init(&binds, proxy_port, &[], &[PROBE_IN_SANDBOX, "bind", port]);
        assert_eq!(assert_ran(&out), "bind errno=13\n", "bind {port}");
    }
}

#[test]
fn landlock_allows_tls_and_dns_ports_only_with_transparent() {
    if !testkit::require_root("landlock_allows_tls_and_dns_ports_only_with_transparent") {
        return;
    }
    let other = TcpListener::bind("127.0.0.1:0").expect("listen");
    let other_port = other.local_addr().expect("addr").port().to_string();
    let binds = Binds::default();
    for port in ["443", "53"] {
        // Landlock refuses with EACCES; past it the host's loopback answers (a listener there,
        // or ECONNREFUSED without one).
        let out = sandboxed_init(&binds, 3128, &[], &[PROBE_IN_SANDBOX, "connect", port]);
        assert_eq!(assert_ran(&out), "connect errno=13\n", "without: {port}");
        let out = sandboxed_init(
            &binds,
            3128,
            &["--transparent"],
            &[PROBE_IN_SANDBOX, "connect", port],
        );
        let got = assert_ran(&out);
        assert!(
            got == "connect ok\n" || got == "connect errno=111\n",
            "with --transparent: {port}: {got}"
        );
    }
    // Transparent mode opens those two ports and nothing else; bind stays closed (port 0:
    // ports below 1024 would be refused to uid 65534 anyway).
    let out = sandboxed_init(
        &binds,
        3128,
        &["--transparent"],
        &[PROBE_IN_SANDBOX, "connect", &other_port],
    );
    assert_eq!(assert_ran(&out), "connect errno=13\n");
    let out = sandboxed_init(
        &binds,
        3128,
        &["--transparent"],
        &[PROBE_IN_SANDBOX, "bind", "0"],
    );
    assert_eq!(assert_ran(&out), "bind errno=13\n");
}

#[test]
fn landlock_scopes_signals_and_abstract_unix_sockets() {
    if !testkit::require_root("landlock_scopes_signals_and_abstract_unix_sockets") {
        return;
    }
    let binds = Binds::default();
    // pid 1 of the sandbox is bwrap, outside init's landlock domain.
    let control = sandboxed(&binds, &[PROBE_IN_SANDBOX, "kill", "1"]);
    assert_eq!(assert_ran(&control), "kill ok\n");
    let out = sandboxed_init(&binds, 3128, &[], &[PROBE_IN_SANDBOX, "kill", "1"]);
    assert_eq!(assert_ran(&out), "kill errno=1\n");

    // The sandbox shares the test's network namespace, so it could reach this socket.
    let name = format!("gigmcp-init-test-{}", std::process::id());
    let addr = SocketAddr::from_abstract_name(name.as_bytes()).expect("abstract address");
    let _listener = UnixListener::bind_addr(&addr).expect("bind abstract socket");
    let control = sandboxed(&binds, &[PROBE_IN_SANDBOX, "abstract", &name]);
    assert_eq!(assert_ran(&control), "abstract ok\n");
    let out = sandboxed_init(&binds, 3128, &[], &[PROBE_IN_SANDBOX, "abstract", &name]);
    assert_eq!(assert_ran(&out), "abstract errno=1\n");
}

// ---- seccomp ----

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
