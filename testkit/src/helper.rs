//! The privileged helper's harness: a private bus with the shipped helper policy, the real
//! `gigmcp-privhelper` on it with a generated configuration, minimal root filesystems, and a
//! client proxy.
//!
//! The helper runs in the test's own network namespace (see [`crate::privileged`]), so its
//! links and nftables table are the test's alone; what stays host-wide (named namespaces
//! `<instance>-<id>`, cgroup directories `<instance>`, sandbox uids) is named per harness. The
//! harness's drop stops the helper and removes whatever of those is left, even after a panic.

use std::io::{BufRead, BufReader};
use std::os::fd::AsFd;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use privhelper_api::{Limits, PrivHelperProxy, SandboxInfo, SandboxSpec};

use crate::bins::{static_init, workspace_bin};
use crate::bus::PrivateBus;
use crate::netns::Netns;
use crate::process::{Tied, spawn_tied};

/// The sandbox pool: private to the test's network namespace, so one value serves every test.
pub const POOL: &str = "10.232.0.0/16";
pub const PROXY_PORT: u16 = 3128;
/// Sandbox uids per harness.
const UID_COUNT: u32 = 1024;

/// A world-searchable temp dir (sandbox uids must traverse it).
pub fn open_tempdir() -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("gigmcp-test-")
        .tempdir()
        .expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

// Declared in teardown order: the helper stops (destroying its sandboxes) before its bus goes.
#[derive(Debug)]
pub struct Harness {
    helper: Option<Tied>,
    _bus: PrivateBus,
    netns: Netns,
    /// Names the helper's nftables table, named namespaces and cgroup directories.
    pub instance: String,
    pub link_prefix: String,
    pub uid_base: u32,
    pub address: String,
    pub images: PathBuf,
    pub data_root: PathBuf,
    pub ca_dir: PathBuf,
    pub config: PathBuf,
    pub dir: tempfile::TempDir,
}

impl Harness {
    /// A private bus and a running helper that accepts calls from `allowed_uid`, in the
    /// calling thread's network namespace (which must be a test's own).
    pub async fn start(allowed_uid: u32) -> Self {
        let netns = Netns::current();
        assert!(
            !netns.is_host(),
            "a helper test must run in its own network namespace: wrap it in testkit::privileged"
        );
        crate::names::sweep_stale();
        let dir = open_tempdir();
        let images = dir.path().join("images");
        let data_root = dir.path().join("data");
        let ca_dir = dir.path().join("ca");
        for d in [&images, &data_root, &ca_dir] {
            std::fs::create_dir_all(d).unwrap();
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let bus = PrivateBus::start(
            dir.path(),
            "org.gigmcp.PrivHelper1.conf",
            Some("org.gigmcp.PrivHelper1"),
        );
        let mut h = Self {
            helper: None,
            address: bus.address.clone(),
            _bus: bus,
            netns,
            instance: crate::names::unique("gt"),
            link_prefix: "gt".into(),
            uid_base: crate::names::uid_base(),
            config: dir.path().join("privhelper.toml"),
            images,
            data_root,
            ca_dir,
            dir,
        };
        std::fs::write(&h.config, h.config_text(allowed_uid)).unwrap();
        h.start_helper().await;
        h
    }

    fn config_text(&self, allowed_uid: u32) -> String {
        format!(
            "allowed_uid = {allowed_uid}\ninstance = \"{}\"\nlink_prefix = \"{}\"\n\
             images_dir = \"{}\"\ndata_root = \"{}\"\nca_dir = \"{}\"\npool = \"{POOL}\"\n\
             uid_base = {}\nuid_count = {UID_COUNT}\nsandbox_init = \"{}\"\n\
             [ceilings]\nmemory_max_bytes = 1073741824\npids_max = 256\ncpu_percent = 100\ntmp_bytes = 67108864\n",
            self.instance,
            self.link_prefix,
            self.images.display(),
            self.data_root.display(),
            self.ca_dir.display(),
            self.uid_base,
            static_init().display(),
        )
    }

    /// Starts the helper (in the test's namespace) and waits until it owns its bus name.
    pub async fn start_helper(&mut self) {
        let mut cmd = Command::new(workspace_bin("gigmcp-privhelper"));
        cmd.arg("--config")
            .arg(&self.config)
            .arg("--bus-address")
            .arg(&self.address)
            .env("RUST_LOG", "info")
            .stderr(Stdio::piped());
        let mut child = spawn_tied(cmd, Some(self.netns.as_fd())).expect("spawn helper");
        let stderr = child.child().stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("serving org.gigmcp.PrivHelper1") {
                    let _ = tx.send(());
                }
                eprintln!("[helper] {line}");
            }
        });
        // `child` is killed and reaped by its guard if this panics.
        if rx.recv_timeout(Duration::from_secs(30)).is_err() {
            panic!("helper did not start: {:?}", child.child().try_wait());
        }
        self.helper = Some(child);
    }

    /// SIGKILLs the helper (no cleanup of its own can run).
    pub fn kill_helper(&mut self) {
        if let Some(mut h) = self.helper.take() {
            h.kill();
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
        crate::rootfs::build(
            &self.images.join(name),
            &[(workspace_bin("gigmcp-attack"), "bin/gigmcp-attack")],
        );
        name.to_owned()
    }

    /// The attack image as `server add --rootfs` leaves a copy (`images_dir/dirs/<name>`), for
    /// a server record naming `dir:<name>`.
    pub fn attack_dir_image(&self, name: &str) -> String {
        crate::rootfs::build(
            &self.images.join("dirs").join(name),
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
            workdir: String::new(),
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

    /// The named namespace the helper made for sandbox `id`.
    pub fn sandbox_netns(&self, id: &str) -> String {
        format!("{}-{id}", self.instance)
    }

    /// Runs the attack binary as root inside a sandbox's netns (no landlock, no seccomp): only
    /// nftables stands between it and the host.
    pub fn in_netns(&self, info: &SandboxInfo, args: &[&str]) -> String {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.sandbox_netns(&info.id)])
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

    /// What this helper instance has right now: (netns, veth links, cgroup dirs, nftable
    /// elements, processes running as one of its sandbox uids).
    pub fn count_host(&self) -> HostCount {
        let netns = std::fs::read_dir("/run/netns")
            .map(|d| {
                d.flatten()
                    .filter(|e| {
                        e.file_name()
                            .to_string_lossy()
                            .starts_with(&format!("{}-", self.instance))
                    })
                    .count()
            })
            .unwrap_or(0);
        let instance_dirs = crate::cgroups::instance_dirs(|n| n == self.instance);
        HostCount {
            netns,
            links: self.count_links(),
            cgroups: instance_dirs
                .iter()
                .map(|d| crate::cgroups::sandboxes(d))
                .sum(),
            elements: self.count_elements(),
            processes: self.count_processes(),
        }
    }

    /// Host ends of sandbox links in the test's namespace (`/sys/class/net` would show the
    /// namespace sysfs was mounted in, not ours: ask the kernel from here instead).
    fn count_links(&self) -> usize {
        let out = Command::new("ip")
            .args(["-o", "link", "show"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split(": ").nth(1))
            .filter(|name| name.starts_with(&self.link_prefix))
            .count()
    }

    fn count_elements(&self) -> usize {
        let out = Command::new("nft")
            .args(["list", "table", "inet", &self.instance])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .matches(&format!("\"{}", self.link_prefix))
            .count()
    }

    fn count_processes(&self) -> usize {
        let uids = self.uid_base..self.uid_base + UID_COUNT;
        std::fs::read_dir("/proc")
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
                    .is_some_and(|uid| uids.contains(&uid))
            })
            .count()
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        // Orderly stop first: the helper destroys its sandboxes and its table itself.
        if let Some(mut helper) = self.helper.take() {
            helper.stop(Duration::from_secs(20));
        }
        // Then what a killed helper could not remove. A test instance is never reused, so
        // its cgroup parents go too (the helper keeps them for its own restarts).
        if let Ok(entries) = std::fs::read_dir("/run/netns") {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.starts_with(&format!("{}-", self.instance)) {
                    let _ = Command::new("ip").args(["netns", "del", &name]).output();
                }
            }
        }
        for dir in crate::cgroups::instance_dirs(|n| n == self.instance) {
            crate::cgroups::remove_tree(&dir);
        }
    }
}

#[derive(Debug, Default, PartialEq, Eq, Clone)]
pub struct HostCount {
    pub netns: usize,
    pub links: usize,
    pub cgroups: usize,
    pub elements: usize,
    pub processes: usize,
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

/// A TCP listener on a sandbox link's host address, bound *before* the sandbox (and its link)
/// exists: `IP_FREEBIND` lets it take an address not yet configured. It stands for someone else
/// holding the port the helper must bind there (which must fail the sandbox closed); the proxy
/// listener itself is the helper's, handed over with the sandbox.
pub fn listen_before_link(addr: std::net::SocketAddr) -> std::net::TcpListener {
    let socket = socket_before_link(addr, socket2::Type::STREAM);
    socket.listen(128).expect("listen");
    socket.into()
}

/// A UDP socket on a sandbox link's host address, bound before the link exists (see
/// [`listen_before_link`]), so "nothing arrived" means nothing was sent through.
pub fn udp_before_link(addr: std::net::SocketAddr) -> std::net::UdpSocket {
    socket_before_link(addr, socket2::Type::DGRAM).into()
}

fn socket_before_link(addr: std::net::SocketAddr, ty: socket2::Type) -> socket2::Socket {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, ty, None).expect("socket");
    socket.set_freebind_v4(true).expect("IP_FREEBIND");
    socket
        .bind(&addr.into())
        .unwrap_or_else(|e| panic!("bind {addr}: {e}"));
    socket
}
