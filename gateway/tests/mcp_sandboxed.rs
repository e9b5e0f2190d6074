//! Issue 5 end to end with real parts: a community server (`@modelcontextprotocol/server-everything`
//! from npm) runs in a real sandbox built by the real helper (private bus), launched by the
//! gateway's `SandboxLauncher` with its egress proxy; clients speak Streamable HTTP to the front.
//!
//! Root only (namespaces, nftables, cgroups): a loud SKIP without root, a failure on CI.

use testkit::mcp as mcp_support;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use gateway::audit::Auditor;
use gateway::egress::{EgressConfig, EgressShared};
use gateway::mcp::front::{Front, FrontLimits};
use gateway::mcp::redact::Redactor;
use gateway::mcp::servers::ServerPool;
use gateway::mcp::stdio::SessionLimits;
use gateway::sandbox::{Helper, SandboxLauncher};
use gateway::store::{EndpointRecord, ServerRecord, SqliteStore, Store, TokenRecord, now_ms};
use gateway::vault::{MasterKey, SecretName, SecretValue, Vault};
use privhelper_api::Limits;
use serde_json::{Value, json};
use testkit::helper::{Harness, PROXY_PORT};
use testkit::rootfs;

const SECRET: &str = "sk-live-SANDBOXED-5e8d1c9a7b3f2e40";

fn which(bin: &str) -> PathBuf {
    let out = std::process::Command::new("sh")
        .args(["-c", &format!("command -v {bin}")])
        .output()
        .unwrap();
    let p = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(!p.is_empty(), "{bin} missing on the host");
    std::fs::canonicalize(p).unwrap()
}

/// node and its libraries, and server-everything's `node_modules` at `/app/node_modules`.
fn everything_rootfs(images: &Path) -> String {
    let root = images.join("everything");
    rootfs::build(&root, &[(which("node"), "bin/node")]);
    let modules = mcp_support::node_bin("x")
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .to_owned();
    std::fs::create_dir_all(root.join("app")).unwrap();
    let ok = std::process::Command::new("cp")
        .arg("-a")
        .arg(&modules)
        .arg(root.join("app/node_modules"))
        .status()
        .unwrap()
        .success();
    assert!(ok);
    let ok = std::process::Command::new("chmod")
        .args(["-R", "a+rX"])
        .arg(&root)
        .status()
        .unwrap()
        .success();
    assert!(ok);
    "everything".into()
}

/// The distribution's Python (its interpreter, standard library and extension modules) and the
/// test venv's site-packages (`mcp-server-time` and its dependencies) at `/app/site-packages`.
fn time_rootfs(images: &Path) -> String {
    let root = images.join("time");
    let python = std::fs::canonicalize("/usr/bin/python3").expect("/usr/bin/python3");
    let stdlib = Path::new("/usr/lib").join(python.file_name().unwrap());
    let mut bins: Vec<(PathBuf, String)> = vec![(python.clone(), "usr/bin/python3".into())];
    for e in std::fs::read_dir(stdlib.join("lib-dynload"))
        .unwrap()
        .flatten()
    {
        let p = e.path();
        if p.extension().is_some_and(|x| x == "so") {
            let dest = p.to_string_lossy().trim_start_matches('/').to_owned();
            bins.push((p, dest));
        }
    }
    let site = mcp_support::venv().join("../lib/python3.11/site-packages");
    for e in walk(&site) {
        if e.extension().is_some_and(|x| x == "so") {
            let rel = e
                .strip_prefix(&site)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            bins.push((e.clone(), format!("app/site-packages/{rel}")));
        }
    }
    let bins_ref: Vec<(PathBuf, &str)> =
        bins.iter().map(|(p, d)| (p.clone(), d.as_str())).collect();
    rootfs::build(&root, &bins_ref);
    for (src, dest) in [
        (stdlib.clone(), root.join(stdlib.strip_prefix("/").unwrap())),
        (site, root.join("app/site-packages")),
    ] {
        std::fs::create_dir_all(&dest).unwrap();
        // Merge (the extension modules are there already); -n: keep them.
        let ok = std::process::Command::new("cp")
            .args(["-a", "-n", "--"])
            .arg(format!("{}/.", src.display()))
            .arg(&dest)
            .status()
            .unwrap()
            .success();
        assert!(ok, "copy {}", src.display());
    }
    for zoneinfo in ["/usr/share/zoneinfo"] {
        if Path::new(zoneinfo).exists() {
            let dest = root.join(zoneinfo.trim_start_matches('/'));
            std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
            let _ = std::process::Command::new("cp")
                .args(["-a", zoneinfo])
                .arg(&dest)
                .status();
        }
    }
    let ok = std::process::Command::new("chmod")
        .args(["-R", "a+rX"])
        .arg(&root)
        .status()
        .unwrap()
        .success();
    assert!(ok);
    "time".into()
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let ty = e.file_type().unwrap();
        if ty.is_dir() {
            out.extend(walk(&e.path()));
        } else if ty.is_file() {
            out.push(e.path());
        }
    }
    out
}

#[test]
fn server_everything_runs_sandboxed_behind_the_front() {
    testkit::privileged(
        "server_everything_runs_sandboxed_behind_the_front",
        2,
        || async {
            assert!(
                mcp_support::node_bin("mcp-server-everything").exists(),
                "target/mcp-node is missing: run scripts/install-deps"
            );
            let h = Harness::start(0).await;
            let dir = tempfile::tempdir().unwrap();
            let store: Arc<dyn Store> =
                Arc::new(SqliteStore::open_in(&dir.path().join("state")).unwrap());
            let vault =
                Arc::new(Vault::open(store.clone(), MasterKey::generate().unwrap()).unwrap());
            vault
                .set(
                    &SecretName::parse("API_TOKEN").unwrap(),
                    &SecretValue::from(SECRET.as_bytes()),
                )
                .unwrap();
            let ca_pem = dir.path().join("gateway-ca.pem");
            let shared = EgressShared::new(
                vault.clone(),
                Auditor::new(store.clone(), "gigmcpd"),
                EgressConfig::new(ca_pem.clone()),
            )
            .unwrap();
            std::fs::copy(&ca_pem, h.ca_dir.join("gateway-ca.pem")).unwrap();
            {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(
                    h.ca_dir.join("gateway-ca.pem"),
                    std::fs::Permissions::from_mode(0o644),
                )
                .unwrap();
            }
            let image = everything_rootfs(&h.images.join("dirs"));
            let manifest = json!({
                "name": "everything", "version": "2026.8.31",
                "command": ["/bin/node", "/app/node_modules/@modelcontextprotocol/server-everything/dist/index.js", "stdio"],
                // libuv's io_uring is killed by the seccomp policy; Node falls back without it.
                "env": {"UV_USE_IO_URING": "0", "HOME": "/tmp"},
                "egress": [{"host": "api.test.example"}],
                "credentials": [{"name": "API_TOKEN", "hosts": ["api.test.example"],
                    "inject": {"type": "header", "name": "Authorization", "format": "Bearer {}"}}],
            });
            store
                .server_add(&ServerRecord {
                    name: "everything".into(),
                    version: "2026.8.31".into(),
                    image_digest: format!("dir:{image}"),
                    manifest: manifest.to_string(),
                    source: "unsigned".into(),
                    approved_ranges: Vec::new(),
                    installed_ms: now_ms(),
                    origin: None,
                })
                .unwrap();
            store
                .endpoint_add(&EndpointRecord {
                    name: "e".into(),
                    servers: vec![("everything".into(), vec!["echo".into(), "get-env".into()])],
                })
                .unwrap();
            // mcp-server-time (PyPI), on the distribution's Python, in its own sandbox.
            let time_image = time_rootfs(&h.images.join("dirs"));
            let time_manifest = json!({
                "name": "time", "version": "2026.10.19",
                "command": ["/usr/bin/python3", "-m", "mcp_server_time", "--local-timezone", "UTC"],
                "env": {"PYTHONPATH": "/app/site-packages", "HOME": "/tmp"},
                "tools": ["get_current_time"],
            });
            store
                .server_add(&ServerRecord {
                    name: "time".into(),
                    version: "2026.10.19".into(),
                    image_digest: format!("dir:{time_image}"),
                    manifest: time_manifest.to_string(),
                    source: "unsigned".into(),
                    approved_ranges: Vec::new(),
                    installed_ms: now_ms(),
                    origin: None,
                })
                .unwrap();
            store
                .endpoint_add(&EndpointRecord {
                    name: "t".into(),
                    servers: vec![("time".into(), vec!["*".into()])],
                })
                .unwrap();
            let launcher = SandboxLauncher {
                helper: Arc::new(Helper::connected(h.client().await)),
                egress: shared.clone(),
                proxy_port: PROXY_PORT,
                ca_bundle: "gateway-ca.pem".into(),
                limits: Limits {
                    memory_max_bytes: 512 << 20,
                    pids_max: 128,
                    cpu_percent: 100,
                },
                images: Arc::new(
                    gateway::image::ImageStore::open(
                        &h.images,
                        gateway::image::UnpackLimits::default(),
                    )
                    .unwrap(),
                ),
                catalog: None,
            };
            let pool = Arc::new(ServerPool::new(
                store.clone(),
                Auditor::new(store.clone(), "gigmcpd"),
                launcher,
                SessionLimits::default(),
            ));
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let front = Front::new(
                store.clone(),
                Auditor::new(store.clone(), "gigmcpd"),
                pool.clone(),
                FrontLimits::default(),
                vec![addr.to_string()],
                vec![],
                Some(Arc::new(Redactor::new(vault))),
            );
            let serving = tokio::spawn(front.serve(listener));
            let t = gateway::tokens::generate().unwrap();
            store
                .token_add(&TokenRecord {
                    id: t.id.clone(),
                    endpoint: "e".into(),
                    hash: t.hash.to_vec(),
                    label: String::new(),
                    created_ms: now_ms(),
                    expires_ms: None,
                    revoked_ms: None,
                })
                .unwrap();
            let t2 = gateway::tokens::generate().unwrap();
            store
                .token_add(&TokenRecord {
                    id: t2.id.clone(),
                    endpoint: "t".into(),
                    hash: t2.hash.to_vec(),
                    label: String::new(),
                    created_ms: now_ms(),
                    expires_ms: None,
                    revoked_ms: None,
                })
                .unwrap();
            let (token_e, token_t) = (t.secret.to_string(), t2.secret.to_string());
            let rpc = |method: &'static str, params: Value| {
                mcp_support::rpc(addr, "e", &token_e, method, params)
            };

            // Started on first use, in a sandbox; the subset holds.
            let list = rpc("tools/list", json!({})).await;
            let mut names: Vec<&str> = list["result"]["tools"]
                .as_array()
                .unwrap_or_else(|| panic!("{list}"))
                .iter()
                .map(|t| t["name"].as_str().unwrap())
                .collect();
            names.sort();
            assert_eq!(names, ["everything__echo", "everything__get-env"]);
            let live = h.client().await.list_sandboxes().await.unwrap();
            assert_eq!(live.len(), 1, "{live:?}");
            assert_eq!(live[0].server, "everything");

            let echo = rpc(
            "tools/call",
            json!({"name": "everything__echo", "arguments": {"message": "hi from the sandbox"}}),
        )
        .await;
            assert!(
                echo.to_string().contains("Echo: hi from the sandbox"),
                "{echo}"
            );
            let outside = rpc(
                "tools/call",
                json!({"name": "everything__get-sum", "arguments": {"a": 1, "b": 2}}),
            )
            .await;
            assert_eq!(outside["error"]["code"], -32602, "{outside}");

            // The server's environment: a placeholder for the credential, never the value; the proxy
            // address filled in by the helper; the CA variables.
            let env = rpc(
                "tools/call",
                json!({"name": "everything__get-env", "arguments": {}}),
            )
            .await;
            let text = env.to_string();
            assert!(
                !text.contains(SECRET),
                "the secret reached the sandbox: {text}"
            );
            assert!(text.contains("gmcp_ph_"), "no placeholder: {text}");
            let host_addr = &live[0].host_addr;
            assert!(
                text.contains(&format!("http://{host_addr}:{PROXY_PORT}")),
                "{text}"
            );
            assert!(text.contains("/run/gigmcp/ca.pem"), "{text}");

            // mcp-server-time in its sandbox: the manifest's subset (get_current_time) holds.
            let list = mcp_support::rpc(addr, "t", &token_t, "tools/list", json!({})).await;
            let names: Vec<&str> = list["result"]["tools"]
                .as_array()
                .unwrap_or_else(|| panic!("{list}"))
                .iter()
                .map(|t| t["name"].as_str().unwrap())
                .collect();
            assert_eq!(names, ["time__get_current_time"], "{list}");
            let now = mcp_support::rpc(
            addr,
            "t",
            &token_t,
            "tools/call",
            json!({"name": "time__get_current_time", "arguments": {"timezone": "Europe/Paris"}}),
        )
        .await;
            assert!(now.to_string().contains("Europe/Paris"), "{now}");
            let outside = mcp_support::rpc(
                addr,
                "t",
                &token_t,
                "tools/call",
                json!({"name": "time__convert_time", "arguments": {}}),
            )
            .await;
            assert_eq!(outside["error"]["code"], -32602, "{outside}");
            assert_eq!(h.client().await.list_sandboxes().await.unwrap().len(), 2);
            assert!(pool.stop("time").await);

            // Stopping the server destroys its sandbox.
            assert!(pool.stop("everything").await);
            let mut gone = false;
            for _ in 0..50 {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                if h.client().await.list_sandboxes().await.unwrap().is_empty() {
                    gone = true;
                    break;
                }
            }
            assert!(gone, "sandbox still there after stop");
            serving.abort();
        },
    );
}
