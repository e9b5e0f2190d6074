//! Real sandboxes served by the gateway's egress proxy, for the end-to-end egress tests: the
//! gateway side (store, vault with one credential, CA handed to the helper, shared egress state)
//! with a fake HTTPS upstream in a network namespace of its own, a rootfs holding real clients
//! (curl, Python, Node), and one client run in a sandbox to its exit.

#![allow(missing_debug_implementations)] // Gateway holds the store and egress state, which have no Debug

use gateway::audit::Auditor;
use gateway::egress::{
    EgressConfig, EgressShared, SandboxEgress, StaticResolver, make_placeholder,
};
use gateway::manifest::Manifest;
use gateway::store::{AuditEvent, SqliteStore, Store};
use gateway::vault::{MasterKey, SecretName, SecretValue, Vault};
use privhelper_api::{Listeners, PROXY_ADDR_TOKEN, PrivHelperProxy};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::egress::{TOKEN_VALUE, contains};
use crate::helper::{Harness, PROXY_PORT};
use crate::netns::NamedNetns;
use crate::{rootfs, upstream};

/// Look-alikes of variables and of the proxy token: the helper must pass them on verbatim.
pub const NOT_EXPANDED: &str = "$HOME ${PATH} @GIGMCP_PROXY_ADDR @HOME@ @gigmcp_proxy_addr@";

/// Name of the gateway CA inside the helper's `ca_dir` (what `SandboxSpec::ca_bundle` names).
pub const CA_NAME: &str = "gateway-ca.pem";
pub const CA_IN_SANDBOX: &str = "/run/gigmcp/ca.pem";

/// The upstream's link, in the test's own network namespace (so its name and addresses are
/// the test's alone).
pub const UPSTREAM_LINK: &str = "gsbxu";
pub const UPSTREAM_NET: &str = "10.239.77.0/30";
pub const UPSTREAM_HOST_SIDE: Ipv4Addr = Ipv4Addr::new(10, 239, 77, 1);
pub const UPSTREAM_IP: Ipv4Addr = Ipv4Addr::new(10, 239, 77, 2);

/// The upstream's namespace: a generated name (`/run/netns` is host-wide); deleting it on drop
/// deletes the veth pair too.
pub struct UpNet {
    pub ns: NamedNetns,
}

impl UpNet {
    /// Creates the namespace, its veth pair and addresses.
    pub fn create() -> Self {
        let ip = crate::netns::ip_ok;
        let net = Self {
            ns: NamedNetns::add(crate::names::unique("gmeg")),
        };
        let ns = net.ns.name.as_str();
        ip(&[
            "link",
            "add",
            UPSTREAM_LINK,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            ns,
        ]);
        ip(&[
            "addr",
            "add",
            &format!("{UPSTREAM_HOST_SIDE}/30"),
            "dev",
            UPSTREAM_LINK,
        ]);
        ip(&["link", "set", UPSTREAM_LINK, "up"]);
        ip(&[
            "-n",
            ns,
            "addr",
            "add",
            &format!("{UPSTREAM_IP}/30"),
            "dev",
            "eth0",
        ]);
        ip(&["-n", ns, "link", "set", "eth0", "up"]);
        ip(&["-n", ns, "link", "set", "lo", "up"]);
        net
    }

    pub fn upstream_ip(&self) -> Ipv4Addr {
        UPSTREAM_IP
    }
}

/// The gateway side: store, vault, CA, shared egress state, and the upstream it reaches.
pub struct Gateway {
    _dir: tempfile::TempDir,
    pub net: UpNet,
    pub store: Arc<dyn Store>,
    pub shared: Arc<EgressShared>,
    pub upstream: upstream::Upstream,
    pub ph: String,
}

impl Gateway {
    pub async fn start(h: &Harness) -> Self {
        let net = UpNet::create();
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> =
            Arc::new(SqliteStore::open_in(&dir.path().join("state")).unwrap());
        let vault = Arc::new(Vault::open(store.clone(), MasterKey::generate().unwrap()).unwrap());
        vault
            .set(
                &SecretName::parse("API_TOKEN").unwrap(),
                &SecretValue::from(TOKEN_VALUE.as_bytes()),
            )
            .unwrap();
        let test_ca = upstream::TestCa::new(&["api.test.example", "other.test.example"]);
        let test_ca_pem = dir.path().join("upstream-ca.pem");
        std::fs::write(&test_ca_pem, &test_ca.ca_pem).unwrap();
        let up = IpAddr::V4(net.upstream_ip());
        let upstream =
            upstream::Upstream::start(&net.ns.name, SocketAddr::new(up, 443), &test_ca).await;
        let mut resolver = StaticResolver::new();
        resolver
            .insert("api.test.example", vec![up])
            .insert("other.test.example", vec![up]);
        let ca_pem = dir.path().join("gateway-ca.pem");
        let mut config = EgressConfig::new(ca_pem.clone());
        config.extra_upstream_ca = Some(test_ca_pem);
        config.resolver = Arc::new(resolver);
        let shared =
            EgressShared::new(vault, Auditor::new(store.clone(), "gigmcpd"), config).unwrap();
        // The CA the sandboxes trust, where the helper takes it from: a fresh (single-link)
        // regular file owned by the caller (root here), readable by all.
        let dest = h.ca_dir.join(CA_NAME);
        std::fs::copy(&ca_pem, &dest).unwrap();
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
        Self {
            _dir: dir,
            net,
            store,
            shared,
            upstream,
            ph: make_placeholder().unwrap(),
        }
    }

    pub async fn audit(&self) -> Vec<AuditEvent> {
        self.shared.flush_audit().await;
        let mut all = self.store.audit_recent(100_000).unwrap();
        all.reverse();
        all
    }
}

/// Two allowlisted hosts; the one credential is bound to the first, presented as a bearer token.
pub fn manifest() -> Manifest {
    Manifest::from_json(
        r#"{"name":"sandbox-egress-test","version":"1","command":["/bin/server"],
        "egress":[{"host":"api.test.example"},{"host":"other.test.example"}],
        "credentials":[
          {"name":"API_TOKEN","hosts":["api.test.example"],
           "inject":{"type":"header","name":"Authorization","format":"Bearer {}"}}
        ]}"#,
    )
    .expect("test manifest")
}

/// What a sandboxed client did.
pub struct Run {
    pub host_addr: Ipv4Addr,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl Run {
    pub fn out(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
    pub fn err(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
    /// Everything the sandbox printed: it must hold the placeholder at most, never the key.
    pub fn assert_never_saw_key(&self, what: &str) {
        assert!(
            !contains(&self.stdout, TOKEN_VALUE.as_bytes())
                && !contains(&self.stderr, TOKEN_VALUE.as_bytes()),
            "{what}: the real key reached the sandbox:\n{}\n{}",
            self.out(),
            self.err()
        );
    }
}

/// The environment every sandbox gets: proxy variables (N.1 substituted by the helper), the CA
/// variables, and the credential's placeholder.
pub fn sandbox_env(ph: &str) -> Vec<(String, String)> {
    let proxy = format!("http://{PROXY_ADDR_TOKEN}:{PROXY_PORT}");
    let mut env: Vec<(String, String)> = vec![
        ("PATH".into(), "/bin:/usr/bin".into()),
        ("HOME".into(), "/tmp".into()),
        ("GITHUB_TOKEN".into(), ph.into()),
        // libuv's io_uring is killed by the seccomp policy; Node falls back without it.
        ("UV_USE_IO_URING".into(), "0".into()),
        // Only the exact token is substituted: these reach the sandbox verbatim.
        ("NOT_EXPANDED".into(), NOT_EXPANDED.into()),
    ];
    for k in ["HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"] {
        env.push((k.into(), proxy.clone()));
    }
    for k in [
        "SSL_CERT_FILE",
        "CURL_CA_BUNDLE",
        "REQUESTS_CA_BUNDLE",
        "NODE_EXTRA_CA_CERTS",
        "GIT_SSL_CAINFO",
    ] {
        env.push((k.into(), CA_IN_SANDBOX.into()));
    }
    env
}

/// Creates a sandbox running `argv` in `rootfs`, serves its egress on the sockets the helper
/// bound for it (the proxy listener; in transparent mode TLS and DNS too), sends one line on stdin (the Python client waits for it),
/// and collects everything the sandbox printed until it exits.
pub async fn run_in_sandbox(
    h: &Harness,
    client: &PrivHelperProxy<'static>,
    gw: &Gateway,
    rootfs: &str,
    argv: &[&str],
    transparent: bool,
) -> Run {
    let mut spec = h.spec(rootfs, argv);
    spec.env = sandbox_env(&gw.ph);
    spec.ca_bundle = CA_NAME.into();
    spec.transparent = transparent;
    spec.limits.memory_max_bytes = 512 << 20;
    spec.limits.pids_max = 128;
    let (info, stdin, stdout, stderr, _pidfd, fds) = client
        .create_sandbox(&spec)
        .await
        .unwrap_or_else(|e| panic!("create {rootfs}: {e}"));
    let host_addr: Ipv4Addr = info.host_addr.parse().unwrap();
    let sb = SandboxEgress {
        sandbox_id: info.id.clone(),
        listen: SocketAddr::new(IpAddr::V4(host_addr), PROXY_PORT),
        expected_peer: info.sandbox_addr.parse().unwrap(),
        manifest: Arc::new(manifest()),
        placeholders: [("API_TOKEN".to_string(), gw.ph.clone())]
            .into_iter()
            .collect(),
        approved_ranges: vec![UPSTREAM_NET.parse().unwrap()],
        reserved_opt_in: Vec::new(),
    };
    let listeners = Listeners::from_reply(fds).unwrap();
    assert_eq!(listeners.transparent.is_some(), transparent);
    let proxy =
        gateway::sandbox::serve_egress(sb, gw.shared.clone(), listeners, host_addr).unwrap();
    let stdin: std::os::fd::OwnedFd = stdin.into();
    let mut stdin = std::fs::File::from(stdin);
    {
        use std::io::Write;
        let _ = stdin.write_all(b"go\n");
    }
    let timeout = Duration::from_secs(90);
    let (stdout, stderr) = tokio::task::spawn_blocking(move || {
        let err = std::thread::spawn(move || crate::helper::read_all(stderr, timeout));
        let out = crate::helper::read_all(stdout, timeout);
        (out, err.join().unwrap())
    })
    .await
    .unwrap();
    // Closing stdin tears the sandbox down (if it has not gone already).
    drop(stdin);
    drop(proxy);
    let run = Run {
        host_addr,
        stdout,
        stderr,
    };
    eprintln!(
        "--- {rootfs} {argv:?}\n[stdout]\n{}\n[stderr]\n{}",
        run.out(),
        run.err()
    );
    run
}

/// Copies a directory tree, leaving out the named entries (test suites, caches, GUI toolkits).
pub fn copy_tree(src: &Path, dest: &Path, skip: &[&str]) {
    std::fs::create_dir_all(dest).unwrap();
    for e in std::fs::read_dir(src).unwrap().flatten() {
        let name = e.file_name();
        if skip.iter().any(|s| name == *s) {
            continue;
        }
        let ty = e.file_type().unwrap();
        let to = dest.join(&name);
        if ty.is_dir() {
            copy_tree(&e.path(), &to, skip);
        } else if ty.is_symlink() {
            let target = std::fs::read_link(e.path()).unwrap();
            std::os::unix::fs::symlink(target, &to).unwrap();
        } else if ty.is_file() {
            std::fs::copy(e.path(), &to).unwrap();
        }
    }
}

/// `curl` and `sh` (for `$GITHUB_TOKEN` in a header), Python with its standard library
/// (without tests and caches; lib-dynload's libraries too), and Node.
pub fn build_rootfs(h: &Harness) -> String {
    let name = "clients";
    let root = h.images.join(name);
    let node = which("node");
    // The distribution's interpreter (not a pyenv shim) and its standard library.
    let python = std::fs::canonicalize("/usr/bin/python3").expect("/usr/bin/python3 missing");
    let stdlib = Path::new("/usr/lib").join(python.file_name().unwrap());
    assert!(
        stdlib.join("os.py").exists(),
        "{} missing",
        stdlib.display()
    );
    let stdlib_in_image = stdlib.to_string_lossy().trim_start_matches('/').to_owned();
    let mut bins: Vec<(PathBuf, &str)> = vec![
        (which("curl"), "bin/curl"),
        (which("dash"), "bin/sh"),
        (python.clone(), "usr/bin/python3"),
        (node, "bin/node"),
    ];
    let dynload: Vec<PathBuf> = std::fs::read_dir(stdlib.join("lib-dynload"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "so"))
        .collect();
    let dests: Vec<String> = dynload
        .iter()
        .map(|p| p.to_string_lossy().trim_start_matches('/').to_owned())
        .collect();
    for (p, d) in dynload.iter().zip(&dests) {
        bins.push((p.clone(), d.as_str()));
    }
    rootfs::build(&root, &bins);
    copy_tree(
        &stdlib,
        &root.join(&stdlib_in_image),
        &[
            "test",
            "__pycache__",
            "site-packages",
            "dist-packages",
            "idlelib",
            "tkinter",
            "lib2to3",
            "ensurepip",
            "lib-dynload",
        ],
    );
    // Readable by every sandbox uid (rootfs::build set modes before the copy).
    let status = std::process::Command::new("chmod")
        .args(["-R", "a+rX"])
        .arg(&root)
        .status()
        .unwrap();
    assert!(status.success());
    name.into()
}

pub fn which(bin: &str) -> PathBuf {
    let out = std::process::Command::new("sh")
        .args(["-c", &format!("command -v {bin}")])
        .output()
        .unwrap();
    let p = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(!p.is_empty(), "{bin} missing on the host");
    std::fs::canonicalize(p).unwrap()
}
