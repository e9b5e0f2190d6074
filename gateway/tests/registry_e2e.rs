//! Issue 12's install acceptance on real parts, through the real `gigmcp` and `gigmcpd`: a
//! community server (`@modelcontextprotocol/server-everything`, built with `gigmcp image build
//! --push` into a real docker-registry over HTTPS with a test CA, as `image_servers.rs` does)
//! is listed in an index signed with the gateway's own `tuf::Repo` whose entry pins the pushed
//! digest and size, served over loopback HTTP (`testkit::signed_registry`); then `registry
//! add`, `install --yes`, an endpoint and a token, `gigmcpd`, and a `tools/call` of `echo`
//! through the endpoint. A new version whose manifest adds a credential host is refused under
//! `upgrade --yes` (the diff and its digest printed, the record unchanged, audited) and
//! accepted with `--approve <digest>`; `remove` is refused while an endpoint exposes the
//! server; a target the index withdraws stops the server from starting (`NotInRegistry`).
//!
//! Without building anything: an entry whose digest or size differs from the pushed image
//! installs nothing and leaves no image; a bare name two registries offer is refused naming
//! both; an entry lint refuses is refused naming the registry, target and finding; no
//! terminal and no `--yes` installs nothing. Names and values are random.
//!
//! Root only (namespaces, nftables, cgroups): a loud SKIP without root, a failure on CI.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use testkit::env::{TestEnv, random_hex, run_with_stdin, text};
use testkit::helper::{Harness, POOL, PROXY_PORT};
use testkit::netns::Netns;
use testkit::registry::{Registry, RegistryAuth, random_name};
use testkit::signed_registry::{SignedRegistry, entry};

const EVERYTHING: &str = "npm:@modelcontextprotocol/server-everything@2026.8.31";

/// `gigmcp` with the test's configuration, in the host's network namespace (where the
/// docker-registry, the metadata server and the package mirror are reached).
struct Admin {
    host: Netns,
    config: PathBuf,
    env: TestEnv,
}

impl Admin {
    fn new(config_text: impl FnOnce(&TestEnv) -> String) -> Self {
        let env = TestEnv::new();
        let config = env.dir.path().join("gigmcp.toml");
        std::fs::write(&config, config_text(&env)).unwrap();
        Self {
            host: Netns::current(),
            config,
            env,
        }
    }

    fn run(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(testkit::bins::workspace_bin("gigmcp"));
        cmd.arg("--config")
            .arg(&self.config)
            .arg("--state-dir")
            .arg(&self.env.state_dir)
            .arg("--master-key-file")
            .arg(&self.env.key_file)
            .args(args);
        self.host.run(move || run_with_stdin(&mut cmd, b""))
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(out.status.success(), "gigmcp {args:?}: {}", text(&out));
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs a command that must fail; returns its stderr.
    fn refused(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            !out.status.success(),
            "gigmcp {args:?} succeeded: {}",
            text(&out)
        );
        String::from_utf8(out.stderr).unwrap()
    }

    /// The newest audit row of `action` on `target`: (outcome, detail).
    fn audited(&self, action: &str, target: &str) -> (String, String) {
        let rows = self.env.store().audit_recent(1000).unwrap();
        let row = rows
            .iter()
            .find(|e| e.action == action && e.target == target)
            .unwrap_or_else(|| panic!("no {action} {target} in {rows:?}"));
        (row.outcome.clone(), row.detail.clone())
    }

    /// Every server record, as the store holds them.
    fn servers(&self) -> Vec<gateway::store::ServerRecord> {
        self.env.store().server_list().unwrap()
    }
}

/// A configuration without a sandbox helper (nothing here starts a server).
fn offline_config(env: &TestEnv, images: &Path, registry: &Registry) -> String {
    format!(
        "[gateway]\nstate_dir = \"{state}\"\n[sandbox]\nimages_dir = \"{images}\"\n\
         [[images.registries]]\nhost = \"{host}\"\nca_file = \"{ca}\"\n",
        state = env.state_dir.display(),
        images = images.display(),
        host = registry.host(),
        ca = registry.config().ca_file.unwrap().display(),
    )
}

/// Everything under the image store's parts, for "nothing installed" checks.
fn store_contents(images: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for part in ["roots", "index", "blobs/sha256"] {
        if let Ok(entries) = std::fs::read_dir(images.join(part)) {
            out.extend(entries.map(|e| e.unwrap().path()));
        }
    }
    out.sort();
    out
}

/// The manifest of `name` at `version`: echo only, and a token bound to `hosts` (none
/// without hosts).
fn manifest(name: &str, version: &str, hosts: &[&str]) -> Value {
    let mut m = json!({"name": name, "version": version, "tools": ["echo"]});
    if !hosts.is_empty() {
        m["egress"] = hosts.iter().map(|h| json!({"host": h})).collect();
        m["credentials"] = json!([{"name": "EVERYTHING_TOKEN", "hosts": hosts,
            "inject": {"type": "header", "name": "Authorization", "format": "Bearer {}"}}]);
    }
    m
}

/// A small image pushed to `registry` (one layer of random bytes): (repository, digest, size).
async fn pushed_image(registry: &Registry, dir: &Path) -> (String, String, u64) {
    let root = dir.join("root");
    std::fs::create_dir_all(root.join("srv")).unwrap();
    std::fs::write(root.join("srv/data"), random_hex(64)).unwrap();
    let layout = dir.join("layout");
    let built = testkit::oci::build_layout(&layout, &root, json!({"Cmd": ["/srv/data"]}), "v1");
    let repo = random_name("mcp/r");
    registry.push_layout(&layout, "v1", &repo).await;
    let hex = built.manifest_digest.trim_start_matches("sha256:");
    let size = std::fs::metadata(layout.join("blobs/sha256").join(hex))
        .unwrap()
        .len();
    (
        format!("{}/{repo}", registry.host()),
        built.manifest_digest,
        size,
    )
}

fn host_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn an_entry_whose_digest_or_size_differs_from_the_pushed_image_installs_nothing() {
    if !testkit::require_root("registry_e2e") {
        return;
    }
    let rt = host_runtime();
    let registry = rt.block_on(Registry::start(RegistryAuth::Anonymous));
    let work = tempfile::tempdir().unwrap();
    let (repository, digest, size) = rt.block_on(pushed_image(&registry, work.path()));
    let images = work.path().join("images");
    let admin = Admin::new(|env| offline_config(env, &images, &registry));
    let mut index = SignedRegistry::new();
    let reg = random_name("r");
    admin.ok(&[
        "registry",
        "add",
        &reg,
        &index.url(),
        "--root",
        index.root_file().to_str().unwrap(),
    ]);

    // Another digest than the pushed one: the pull finds no such manifest.
    let mut other = digest.clone().into_bytes();
    let last = other.len() - 1;
    other[last] = if other[last] == b'0' { b'1' } else { b'0' };
    let other = String::from_utf8(other).unwrap();
    let (a, b) = (random_name("a"), random_name("b"));
    let wrong_digest = entry(&repository, &other, size, &manifest(&a, "1.0", &[]));
    // The pushed image, but another size than its manifest's.
    let wrong_size = entry(&repository, &digest, size + 1, &manifest(&b, "1.0", &[]));
    index.publish(&[&wrong_digest, &wrong_size], &[]);
    admin.ok(&["registry", "sync", &reg]);

    for (name, says) in [(&a, other.as_str()), (&b, "the entry pins")] {
        let before = store_contents(&images);
        let said = admin.refused(&["registry", "install", name, "--yes"]);
        assert!(said.contains(says), "{said}");
        assert!(admin.servers().is_empty(), "a server was recorded");
        assert_eq!(store_contents(&images), before, "the refusal left an image");
        let (outcome, detail) = admin.audited("server.refused", name);
        assert_eq!(outcome, "denied");
        assert!(detail.contains("action=install reason=image"), "{detail}");
    }
    drop(registry);
}

#[test]
fn a_bare_name_two_registries_offer_is_refused_naming_both() {
    if !testkit::require_root("registry_e2e") {
        return;
    }
    let images = tempfile::tempdir().unwrap();
    let admin = Admin::new(|env| {
        format!(
            "[gateway]\nstate_dir = \"{}\"\n[sandbox]\nimages_dir = \"{}\"\n",
            env.state_dir.display(),
            images.path().display()
        )
    });
    let name = random_name("s");
    let digest = format!("sha256:{}", random_hex(32));
    let one = entry(
        "reg.example/mcp/one",
        &digest,
        512,
        &manifest(&name, "1.0", &[]),
    );
    let (mut first, mut second) = (SignedRegistry::new(), SignedRegistry::new());
    let (r1, r2) = (random_name("r"), random_name("r"));
    for (reg, index) in [(&r1, &mut first), (&r2, &mut second)] {
        index.publish(&[&one], &[]);
        let root = index.root_file();
        admin.ok(&[
            "registry",
            "add",
            reg,
            &index.url(),
            "--root",
            root.to_str().unwrap(),
        ]);
        admin.ok(&["registry", "sync", reg]);
    }
    let said = admin.refused(&["registry", "install", &name, "--yes"]);
    assert!(
        said.contains(&format!("{r1}/{name}")) && said.contains(&format!("{r2}/{name}")),
        "{said}"
    );
    assert!(admin.servers().is_empty());
    let (_, detail) = admin.audited("server.refused", &name);
    assert!(detail.contains("reason=ambiguous"), "{detail}");
    // Each registry's own name still resolves (to what it lists).
    let shown = admin.ok(&["registry", "show", &format!("{r2}/{name}")]);
    assert!(shown.contains(&format!("{r2}/{name}/1.0")), "{shown}");
}

#[test]
fn an_entry_lint_refuses_is_refused_naming_registry_target_and_finding() {
    if !testkit::require_root("registry_e2e") {
        return;
    }
    let images = tempfile::tempdir().unwrap();
    let admin = Admin::new(|env| {
        format!(
            "[gateway]\nstate_dir = \"{}\"\n[sandbox]\nimages_dir = \"{}\"\n",
            env.state_dir.display(),
            images.path().display()
        )
    });
    let name = random_name("s");
    let digest = format!("sha256:{}", random_hex(32));
    let paste = json!({"name": name, "version": "2.0", "tools": ["echo"],
                       "egress": [{"host": "pastebin.com"}]});
    let bad = entry("reg.example/mcp/bad", &digest, 512, &paste);
    let mut index = SignedRegistry::new();
    index.publish(&[&bad], &[]);
    let reg = random_name("r");
    admin.ok(&[
        "registry",
        "add",
        &reg,
        &index.url(),
        "--root",
        index.root_file().to_str().unwrap(),
    ]);
    admin.ok(&["registry", "sync", &reg]);
    let said = admin.refused(&["registry", "install", &name, "--yes"]);
    assert!(
        said.contains(&format!("registry {reg}, target {name}/2.0")),
        "{said}"
    );
    assert!(
        said.contains("egress[0]") && said.contains("pastebin.com"),
        "{said}"
    );
    assert!(admin.servers().is_empty());
    let (_, detail) = admin.audited("server.refused", &name);
    assert!(detail.contains("reason=lint"), "{detail}");
}

/// Builds server-everything with the CLI and pushes it to `push_to`; returns its digest and
/// its manifest's size (from the layout the build wrote).
fn build_everything(admin: &Admin, h: &Harness, mirror: &str, push_to: &str) -> (String, u64) {
    let out = h.dir.path().join(format!("layout-{}", random_hex(3)));
    let cache = testkit::bins::target_dir().join("image-build-bases");
    let started = Instant::now();
    let built = admin.ok(&[
        "image",
        "build",
        EVERYTHING,
        "--base",
        "node",
        "--out",
        out.to_str().unwrap(),
        "--push",
        push_to,
        "--data-root",
        h.data_root.to_str().unwrap(),
        "--cache",
        cache.to_str().unwrap(),
        "--registry-address",
        mirror,
    ]);
    let digest = built.trim().to_owned();
    let hex = digest.trim_start_matches("sha256:");
    let size = std::fs::metadata(out.join("blobs/sha256").join(hex))
        .unwrap()
        .len();
    eprintln!(
        "[registry_e2e] built {EVERYTHING} -> {digest} in {:?}",
        started.elapsed()
    );
    (digest, size)
}

/// The text of a tool call's first content item, or its error.
fn answer(called: &Value) -> String {
    called["result"]["content"][0]["text"]
        .as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| called.to_string())
}

/// The digest an upgrade refusal asks to quote.
fn approve_digest(said: &str) -> String {
    let at = said.find("--approve ").unwrap_or_else(|| panic!("{said}")) + "--approve ".len();
    said[at..].split_whitespace().next().unwrap().to_owned()
}

#[test]
fn server_everything_is_installed_called_upgraded_with_its_diff_approved_and_withdrawn() {
    if !testkit::require_root("registry_e2e") {
        return;
    }
    let rt = host_runtime();
    let registry = rt.block_on(Registry::start(RegistryAuth::Anonymous));
    let (registry_host, registry_ca) = (registry.host(), registry.config().ca_file.unwrap());
    // Resolved here: the test's own network namespace has no resolver.
    let mirror = testkit::resolved_address("registry.npmjs.org").to_string();
    let mut index = SignedRegistry::new();
    let host = Netns::current();
    testkit::privileged("registry_e2e", 2, move || async move {
        let h = Harness::start(0).await;
        let front_port = testkit::free_loopback_port();
        let admin = Admin {
            host,
            ..Admin::new(|env| {
                format!(
                    "[gateway]\nstate_dir = \"{state}\"\nlisten = \"127.0.0.1:{front_port}\"\n\
                     [sandbox]\npool = \"{POOL}\"\nbus = \"{bus}\"\nimages_dir = \"{images}\"\n\
                     ca_dir = \"{ca}\"\nproxy_port = {PROXY_PORT}\n\
                     [[images.registries]]\nhost = \"{reg}\"\nca_file = \"{reg_ca}\"\n",
                    state = env.state_dir.display(),
                    bus = h.address,
                    images = h.images.display(),
                    ca = h.ca_dir.display(),
                    reg = registry_host,
                    reg_ca = registry_ca.display(),
                )
            })
        };
        let repo = random_name("mcp/everything");
        let (digest, size) = build_everything(
            &admin,
            &h,
            &mirror,
            &format!("{registry_host}/{repo}:{}", random_name("t")),
        );
        let repository = format!("{registry_host}/{repo}");
        let (one, two) = (
            format!("api-{}.example.com", random_hex(3)),
            format!("api-{}.example.com", random_hex(3)),
        );
        let v1 = entry(
            &repository,
            &digest,
            size,
            &manifest("everything", "2026.8.31", &[&one]),
        );
        index.publish(&[&v1], &[]);
        let reg = random_name("r");
        let root = index.root_file();
        admin.ok(&[
            "registry",
            "add",
            &reg,
            &index.url(),
            "--root",
            root.to_str().unwrap(),
        ]);
        admin.ok(&["registry", "sync", &reg]);
        let found = admin.ok(&["registry", "search", "everything"]);
        assert!(
            found.contains(&format!("{reg}/everything/2026.8.31")),
            "{found}"
        );

        // No terminal and no --yes: nothing installed.
        let asked = admin.run(&["registry", "install", "everything"]);
        assert!(!asked.status.success(), "{}", text(&asked));
        let (shown, said) = (
            String::from_utf8_lossy(&asked.stdout),
            String::from_utf8_lossy(&asked.stderr),
        );
        assert!(
            shown.contains(&one) && said.contains("--yes"),
            "{}",
            text(&asked)
        );
        assert!(admin.servers().is_empty());
        let (_, detail) = admin.audited("server.refused", "everything");
        assert!(detail.contains("reason=no-terminal"), "{detail}");

        let shown = admin.ok(&["registry", "install", "everything", "--yes"]);
        assert!(
            shown.contains(&one) && shown.contains("installed server everything"),
            "{shown}"
        );
        let [record] = admin.servers().try_into().unwrap();
        assert_eq!(
            (record.source.as_str(), record.image_digest.as_str()),
            ("registry", digest.as_str())
        );
        let origin = record.origin.clone().unwrap();
        assert_eq!(
            (origin.registry.as_str(), origin.target.as_str()),
            (reg.as_str(), "everything/2026.8.31")
        );
        let (outcome, detail) = admin.audited("server.install", "everything");
        assert_eq!(outcome, "ok");
        assert!(
            detail.contains(&format!(
                "registry={reg} target=everything/2026.8.31 image={digest}"
            )),
            "{detail}"
        );

        let ep = random_name("ep");
        admin.ok(&["endpoint", "add", &ep, "--server", "everything=echo"]);
        let token = admin.ok(&["endpoint", "token", "create", &ep, "--label", "t"]);
        let token = token.lines().last().unwrap().trim().to_owned();
        let bin = Path::new(env!("CARGO_BIN_EXE_gigmcpd"));
        let mut daemon = testkit::process::start_gigmcpd(bin, &admin.config, &admin.env.key_file);
        let front = SocketAddr::from(([127, 0, 0, 1], front_port));
        let echo = |message: String| {
            let (token, ep) = (token.clone(), ep.clone());
            async move {
                let args = json!({"name": "everything__echo", "arguments": {"message": message}});
                testkit::mcp::rpc(front, &ep, &token, "tools/call", args).await
            }
        };
        let message = format!("hello-{}", random_hex(8));
        let said = answer(&echo(message.clone()).await);
        assert!(said.contains(&message), "{said}");

        // A new version whose token may also reach another host.
        let v2 = entry(
            &repository,
            &digest,
            size,
            &manifest("everything", "2026.9.1", &[&one, &two]),
        );
        index.publish(&[&v2], &[]);
        admin.ok(&["registry", "sync", &reg]);
        let said = admin.refused(&["registry", "upgrade", "everything", "--yes"]);
        assert!(
            said.lines()
                .any(|l| l.trim_start().starts_with("+ ") && l.contains(&two)),
            "{said}"
        );
        let approve = approve_digest(&said);
        assert_eq!(
            admin.servers(),
            vec![record.clone()],
            "a refused upgrade changed the record"
        );
        let (outcome, detail) = admin.audited("server.refused", "everything");
        assert_eq!(outcome, "denied");
        assert!(
            detail.contains("action=upgrade reason=entitlements"),
            "{detail}"
        );
        let wrong = random_hex(8);
        let said = admin.refused(&["registry", "upgrade", "everything", "--approve", &wrong]);
        assert!(said.contains(&approve), "{said}");
        let done = admin.ok(&["registry", "upgrade", "everything", "--approve", &approve]);
        assert!(done.contains("to 2026.9.1"), "{done}");
        let [upgraded] = admin.servers().try_into().unwrap();
        assert_eq!(upgraded.version, "2026.9.1");
        assert_eq!(upgraded.origin.unwrap().target, "everything/2026.9.1");
        let (outcome, _) = admin.audited("server.upgrade", "everything");
        assert_eq!(outcome, "ok");

        // Removal is refused while the endpoint exposes it, naming the endpoint.
        let said = admin.refused(&["registry", "remove", "everything"]);
        assert!(said.contains(&ep), "{said}");
        assert_eq!(admin.servers().len(), 1);
        let spare = random_name("spare");
        admin.ok(&[
            "registry",
            "install",
            &format!("{reg}/everything@2026.8.31"),
            "--as",
            &spare,
            "--yes",
        ]);
        admin.ok(&["registry", "remove", &spare]);
        assert_eq!(admin.servers().len(), 1);
        let (outcome, _) = admin.audited("server.remove", &spare);
        assert_eq!(outcome, "ok");

        // The index withdraws the installed target: the next start is refused.
        index.publish(&[], &["everything/2026.9.1"]);
        admin.ok(&["registry", "sync", &reg]);
        daemon.stop(Duration::from_secs(20));
        let mut daemon = testkit::process::start_gigmcpd(bin, &admin.config, &admin.env.key_file);
        let called = echo(random_hex(4)).await;
        let said = called.to_string();
        assert!(said.contains("no longer lists it"), "{said}");
        let started = Instant::now();
        let failed = loop {
            let rows = admin.env.store().audit_recent(1000).unwrap();
            if let Some(row) = rows.into_iter().find(|e| e.action == "mcp.server.failed") {
                break row;
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "no mcp.server.failed audited"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert!(
            failed
                .detail
                .contains(&format!("registry {reg}, target everything/2026.9.1")),
            "{}",
            failed.detail
        );
        daemon.stop(Duration::from_secs(20));
    });
    drop(registry);
}
