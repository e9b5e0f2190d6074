//! Privileged test harness: a private `dbus-daemon` with the shipped bus policy, the real
//! `gigmcp-privhelper` on it, minimal root filesystems, and a client proxy.
//!
//! These tests need root (namespaces, veth, nftables, cgroups). Without root they say so loudly
//! and do nothing; on CI (`CI=true`) running without root is a failure, not a skip.
#![allow(dead_code)] // each test binary uses a different part of this module

pub mod rootfs;

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use privhelper_api::{Limits, PrivHelperProxy, SandboxSpec};

/// Test instance names: distinct from a real installation's, so tests never touch it.
pub const INSTANCE: &str = "gmtest";
pub const LINK_PREFIX: &str = "gt";
pub const POOL: &str = "10.232.0.0/16";
pub const UID_BASE: u32 = 0x7100_0000;
pub const PROXY_PORT: u16 = 3128;

/// Serialises the privileged tests of one binary: they share host-wide names.
pub static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// True if the test may run; false (after a loud message) if it must be skipped.
pub fn require_root(test: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{test}: privileged test run without root on CI");
    }
    eprintln!(
        "\n*** SKIPPED {test}: needs root (namespaces, nftables, cgroups). Run as root. ***\n"
    );
    false
}

/// A world-searchable temp dir (sandbox uids must traverse it).
pub fn open_tempdir() -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("gigmcp-test-")
        .tempdir()
        .expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

pub fn target_dir() -> PathBuf {
    // .../target/debug/deps/<test binary>
    let exe = std::env::current_exe().unwrap();
    exe.parent().unwrap().parent().unwrap().to_owned()
}

/// The statically linked `gigmcp-sandbox-init` (the helper refuses a dynamic one), built by
/// scripts/test into target/static-init.
pub fn static_init() -> PathBuf {
    let triple = if cfg!(target_arch = "aarch64") {
        "aarch64-unknown-linux-gnu"
    } else {
        "x86_64-unknown-linux-gnu"
    };
    let root = target_dir().parent().unwrap().to_owned();
    let path = root
        .join("static-init")
        .join(triple)
        .join("debug/gigmcp-sandbox-init");
    assert!(
        path.exists(),
        "{} missing: scripts/test builds it (RUSTFLAGS=\"-C target-feature=+crt-static\" cargo build -p sandbox-init --bin gigmcp-sandbox-init --target {triple} --target-dir target/static-init)",
        path.display()
    );
    path
}

/// A workspace binary (built by `cargo build --workspace --bins`): from this build's profile,
/// else from the debug build.
pub fn workspace_bin(name: &str) -> PathBuf {
    let here = target_dir().join(name);
    let debug = target_dir().parent().unwrap().join("debug").join(name);
    [here, debug]
        .into_iter()
        .find(|p| p.exists())
        .unwrap_or_else(|| {
            panic!("{name} missing: run `cargo build --workspace --bins` first (scripts/test does)")
        })
}

/// Held while a harness lives: the privileged tests of every checkout on this host use the same
/// instance, link and pool names, so two `cargo test` runs at once would sweep each other's
/// sandboxes. An exclusive `flock` makes them take turns.
const HOST_LOCK: &str = "/run/lock/gigmcp-privhelper-tests.lock";

fn host_lock() -> nix::fcntl::Flock<std::fs::File> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(HOST_LOCK)
        .unwrap_or_else(|e| panic!("{HOST_LOCK}: {e}"));
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
        .unwrap_or_else(|(_, e)| panic!("flock {HOST_LOCK}: {e}"))
}

pub struct Harness {
    pub dir: tempfile::TempDir,
    pub address: String,
    pub images: PathBuf,
    pub data_root: PathBuf,
    pub ca_dir: PathBuf,
    pub config: PathBuf,
    bus: Child,
    helper: Option<Child>,
    /// Released (after `Drop` has stopped the helper and the bus) when the harness goes.
    _host_lock: nix::fcntl::Flock<std::fs::File>,
}

impl Harness {
    /// A private bus and a running helper that accepts calls from `allowed_uid`.
    pub async fn start(allowed_uid: u32) -> Self {
        let host_lock = host_lock();
        let dir = open_tempdir();
        let images = dir.path().join("images");
        let data_root = dir.path().join("data");
        let ca_dir = dir.path().join("ca");
        for d in [&images, &data_root, &ca_dir] {
            std::fs::create_dir_all(d).unwrap();
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let (bus, address) = start_bus(dir.path());
        let config = dir.path().join("privhelper.toml");
        std::fs::write(
            &config,
            format!(
                "allowed_uid = {allowed_uid}\ninstance = \"{INSTANCE}\"\nlink_prefix = \"{LINK_PREFIX}\"\n\
                 images_dir = \"{}\"\ndata_root = \"{}\"\nca_dir = \"{}\"\npool = \"{POOL}\"\n\
                 uid_base = {UID_BASE}\nuid_count = 1024\nsandbox_init = \"{}\"\n\
                 [ceilings]\nmemory_max_bytes = 1073741824\npids_max = 256\ncpu_percent = 100\ntmp_bytes = 67108864\n",
                images.display(),
                data_root.display(),
                ca_dir.display(),
                static_init().display(),
            ),
        )
        .unwrap();
        let mut h = Self {
            dir,
            address,
            images,
            data_root,
            ca_dir,
            config,
            bus,
            helper: None,
            _host_lock: host_lock,
        };
        h.start_helper().await;
        h
    }

    /// Starts the helper and waits until it owns its bus name.
    pub async fn start_helper(&mut self) {
        // Found at run time (not `CARGO_BIN_EXE_*`), so the harness also compiles in the gateway's
        // tests, which include this file (`gateway/tests/sandbox_egress.rs`).
        let mut child = Command::new(workspace_bin("gigmcp-privhelper"))
            .arg("--config")
            .arg(&self.config)
            .arg("--bus-address")
            .arg(&self.address)
            .env("RUST_LOG", "info")
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn helper");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("serving org.gigmcp.PrivHelper1") {
                    let _ = tx.send(());
                }
                eprintln!("[helper] {line}");
            }
        });
        if rx.recv_timeout(Duration::from_secs(30)).is_err() {
            let _ = child.kill();
            panic!("helper did not start: {:?}", child.wait());
        }
        self.helper = Some(child);
    }

    /// SIGKILLs the helper (no cleanup of its own can run).
    pub fn kill_helper(&mut self) {
        if let Some(mut h) = self.helper.take() {
            h.kill().unwrap();
            h.wait().unwrap();
        }
    }

    /// Resident memory of the helper process, in KiB.
    pub fn helper_rss_kib(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.helper_pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap()
    }

    pub fn helper_pid(&self) -> u32 {
        self.helper.as_ref().expect("helper running").id()
    }

    pub async fn client(&self) -> PrivHelperProxy<'static> {
        let conn = zbus::connection::Builder::address(self.address.as_str())
            .build()
            .await
            .expect("connect to test bus");
        PrivHelperProxy::new(&conn).await.expect("proxy")
    }

    /// A rootfs under the images dir holding the attack program (and its libraries).
    pub fn attack_rootfs(&self, name: &str) -> String {
        rootfs::build(
            &self.images.join(name),
            &[(workspace_bin("gigmcp-attack"), "bin/gigmcp-attack")],
        );
        name.to_owned()
    }

    pub fn spec(&self, rootfs: &str, argv: &[&str]) -> SandboxSpec {
        SandboxSpec {
            server: "test".into(),
            rootfs: rootfs.into(),
            argv: argv.iter().map(|s| (*s).to_owned()).collect(),
            env: vec![("PATH".into(), "/bin".into())],
            data_dir: String::new(),
            ca_bundle: String::new(),
            proxy_port: PROXY_PORT,
            transparent: false,
            limits: Limits {
                memory_max_bytes: 256 << 20,
                pids_max: 64,
                cpu_percent: 100,
            },
        }
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        if let Some(mut h) = self.helper.take() {
            // Orderly stop: the helper destroys its sandboxes and its table.
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(h.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = h.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = h.kill();
            let _ = h.wait();
        }
        let _ = self.bus.kill();
        let _ = self.bus.wait();
    }
}

/// A private system-like bus: deny by default, the shipped helper policy with `gigmcp` replaced
/// by `root` (the tests' gateway), plus `nobody` allowed to send so that the helper's own uid
/// check can be seen refusing it.
fn start_bus(dir: &Path) -> (Child, String) {
    private_bus(
        dir,
        "org.gigmcp.PrivHelper1.conf",
        Some("org.gigmcp.PrivHelper1"),
    )
}

/// A private system-type bus in `dir` with one shipped policy file (`etc/dbus-1/system.d/`),
/// its user `gigmcp` mapped to root (who runs the tests), and optionally a rule letting
/// `nobody` call `destination` (to reach a service's own caller check past the bus policy).
/// Returns the `dbus-daemon` child and the bus address.
pub fn private_bus(
    dir: &Path,
    shipped_policy: &str,
    nobody_may_call: Option<&str>,
) -> (Child, String) {
    let policy_dir = dir.join("system.d");
    std::fs::create_dir_all(&policy_dir).unwrap();
    let shipped = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../etc/dbus-1/system.d")
            .join(shipped_policy),
    )
    .unwrap();
    assert!(shipped.contains("<policy user=\"gigmcp\">"));
    std::fs::write(
        policy_dir.join(shipped_policy),
        shipped.replace("<policy user=\"gigmcp\">", "<policy user=\"root\">"),
    )
    .unwrap();
    if let Some(dest) = nobody_may_call {
        std::fs::write(
            policy_dir.join("zz-test-nobody.conf"),
            format!(
                r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig><policy user="nobody">
  <allow send_destination="{dest}" send_interface="{dest}"/>
</policy></busconfig>"#
            ),
        )
        .unwrap();
    }
    let socket = dir.join("bus.sock");
    let conf = dir.join("bus.conf");
    std::fs::write(
        &conf,
        format!(
            r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <deny own="*"/>
    <deny send_type="method_call"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Introspectable"/>
    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
  </policy>
  <includedir>{}</includedir>
</busconfig>"#,
            socket.display(),
            policy_dir.display()
        ),
    )
    .unwrap();
    let mut bus = Command::new("dbus-daemon")
        .arg(format!("--config-file={}", conf.display()))
        .args(["--nofork", "--print-address=1"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("dbus-daemon (apt-get install dbus)");
    let mut line = String::new();
    BufReader::new(bus.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let address = line.trim().to_owned();
    assert!(address.starts_with("unix:"), "bus address: {address:?}");
    // Keep the socket reachable for other uids (the `nobody` caller).
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o777)).ok();
    (bus, address)
}

/// What this test instance has on the host right now: (netns, veth links, cgroup dirs,
/// nftable elements, processes running as a sandbox uid).
#[derive(Debug, Default, PartialEq, Eq, Clone)]
pub struct HostCount {
    pub netns: usize,
    pub links: usize,
    pub cgroups: usize,
    pub elements: usize,
    pub processes: usize,
}

pub fn count_host() -> HostCount {
    let netns = std::fs::read_dir("/run/netns")
        .map(|d| {
            d.flatten()
                .filter(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .starts_with(&format!("{INSTANCE}-"))
                })
                .count()
        })
        .unwrap_or(0);
    let links = std::fs::read_dir("/sys/class/net")
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(LINK_PREFIX))
        .count();
    let mut cgroups = 0;
    for root in [
        "/sys/fs/cgroup",
        "/sys/fs/cgroup/unified",
        "/sys/fs/cgroup/pids",
        "/sys/fs/cgroup/cpu",
        "/sys/fs/cgroup/memory",
    ] {
        cgroups += walk_count(Path::new(root), INSTANCE, 0);
    }
    let out = Command::new("nft")
        .args(["list", "table", "inet", INSTANCE])
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&out.stdout);
    let elements = listing.matches(&format!("\"{LINK_PREFIX}")).count();
    let processes = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| {
            std::fs::read_to_string(e.path().join("status"))
                .ok()
                .and_then(|s| {
                    s.lines()
                        .find(|l| l.starts_with("Uid:"))
                        .and_then(|l| l.split_whitespace().nth(1)?.parse::<u32>().ok())
                })
                .is_some_and(|uid| (UID_BASE..UID_BASE + 1024).contains(&uid))
        })
        .count();
    HostCount {
        netns,
        links,
        cgroups,
        elements,
        processes,
    }
}

/// Counts sandbox cgroup dirs: children of any dir named `instance`, up to a few levels deep.
fn walk_count(dir: &Path, instance: &str, depth: usize) -> usize {
    if depth > 4 {
        return 0;
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut n = 0;
    for e in entries.flatten() {
        let p = e.path();
        if !p.is_dir() || p.is_symlink() {
            continue;
        }
        if e.file_name() == instance {
            n += std::fs::read_dir(&p)
                .map(|d| {
                    d.flatten()
                        .filter(|c| c.path().is_dir() && c.file_name() != "supervisor")
                        .count()
                })
                .unwrap_or(0);
        } else {
            n += walk_count(&p, instance, depth + 1);
        }
    }
    n
}

/// Runs the attack binary as root inside a sandbox's netns (no landlock, no seccomp): only
/// nftables stands between it and the host.
pub fn in_netns(info: &privhelper_api::SandboxInfo, args: &[&str]) -> String {
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", &format!("{}-{}", INSTANCE, info.id)])
        .arg(workspace_bin("gigmcp-attack"))
        .args(args)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let name = args[0];
    text.strip_prefix(&format!("ATTACK {name} "))
        .unwrap_or_else(|| {
            panic!(
                "{name}: unexpected output {text:?} {}",
                String::from_utf8_lossy(&out.stderr)
            )
        })
        .to_owned()
}

/// Reads everything from an fd received over the bus, with a deadline.
pub fn read_all(fd: zbus::OwnedFd, timeout: Duration) -> Vec<u8> {
    use std::io::Read;
    let fd: std::os::fd::OwnedFd = fd.into();
    let mut file = std::fs::File::from(fd);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = file.read_to_end(&mut buf);
        let _ = tx.send(buf);
    });
    rx.recv_timeout(timeout).unwrap_or_default()
}
