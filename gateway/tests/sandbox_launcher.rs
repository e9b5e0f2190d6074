//! The gateway's `SandboxLauncher` against the real helper: what it makes of the helper's
//! signals and of its refusals.
//!
//! A server the helper refuses to start (an incomplete image) must reach the MCP client as a
//! `tools/list` error naming the server and the helper's reason, and the audit as a failure,
//! never as a server with no tools.
//!
//! `SandboxExited` can be emitted by anyone on the bus (signals are broadcast, and the system
//! bus lets every connection send them): only the helper's own unique name may be believed.
//! The gateway drives a sandbox's life from the fds the helper handed over (stdout's EOF, the
//! guard), never from the signal, and the API's signal stream keeps only what the helper's
//! unique name sent. Real parts: a private `dbus-daemon` with the shipped policy, the real
//! helper, a real sandbox started by the gateway's `SandboxLauncher`, and a second connection
//! forging the signal on the helper's path and interface with the live sandbox's id.
//!
//! Root only (namespaces, nftables, cgroups): a loud SKIP without root, a failure on CI.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use gateway::audit::Auditor;
use gateway::egress::{EgressConfig, EgressShared};
use gateway::sandbox::{Helper, SandboxLauncher};
use gateway::store::{ServerRecord, SqliteStore, Store, now_ms};
use gateway::vault::{MasterKey, Vault};
use privhelper_api::{INTERFACE, Limits, OBJECT_PATH};
use serde_json::json;
use testkit::env::random_hex;
use testkit::helper::{Harness, PROXY_PORT};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};

fn random_i32() -> i32 {
    i32::from_str_radix(&random_hex(3), 16).unwrap()
}

/// The gateway's launcher on the harness's helper, with the CA bundle the helper needs.
fn launcher(
    h: &Harness,
    store: Arc<dyn Store>,
    client: privhelper_api::PrivHelperProxy<'static>,
) -> SandboxLauncher {
    let vault = Arc::new(Vault::open(store.clone(), MasterKey::generate().unwrap()).unwrap());
    let ca_pem = h.dir.path().join("gateway-ca.pem");
    let shared = EgressShared::new(
        vault,
        Auditor::new(store, "gigmcpd"),
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
    SandboxLauncher {
        helper: Arc::new(Helper::connected(client)),
        egress: shared,
        proxy_port: PROXY_PORT,
        ca_bundle: "gateway-ca.pem".into(),
        limits: Limits {
            memory_max_bytes: 256 << 20,
            pids_max: 64,
            cpu_percent: 100,
        },
        images: Arc::new(
            gateway::image::ImageStore::open(&h.images, gateway::image::UnpackLimits::default())
                .unwrap(),
        ),
        catalog: None,
    }
}

#[test]
fn a_forged_sandbox_exited_tears_nothing_down_and_is_not_reported() {
    testkit::privileged("forged_sandbox_exited", 2, || async {
        let h = Harness::start(0).await;
        let image = h.attack_dir_image(&format!("img{}", random_hex(3)));
        let server = format!("s{}", random_hex(4));
        let store: Arc<dyn Store> =
            Arc::new(SqliteStore::open_in(&h.dir.path().join("state")).unwrap());
        let record = ServerRecord {
            name: server.clone(),
            version: "1".into(),
            image_digest: format!("dir:{image}"),
            manifest: json!({"name": server, "version": "1",
                "command": ["/bin/gigmcp-attack", "echo-stdio"]})
            .to_string(),
            source: "unsigned".into(),
            approved_ranges: Vec::new(),
            installed_ms: now_ms(),
            origin: None,
        };
        let launcher = launcher(&h, store, h.client().await);
        let launched = launcher.start(&record).await.expect("sandbox started");
        let mut stdin = launched.stdin;
        let mut stdout = tokio::io::BufReader::new(launched.stdout);
        let live = h.client().await.list_sandboxes().await.unwrap();
        assert_eq!(live.len(), 1, "{live:?}");
        let id = live[0].id.clone();

        // Whoever listens through the API's proxy (as the gateway would) ...
        let watcher = h.client().await;
        let mut exits = watcher.receive_sandbox_exited().await.unwrap();
        let watcher_name = watcher
            .inner()
            .connection()
            .unique_name()
            .unwrap()
            .to_owned();
        // ... and a forger: another connection on the same bus, no name of its own.
        let forger = zbus::connection::Builder::address(h.address.as_str())
            .build()
            .await
            .unwrap();
        let reason = format!("forged {}", random_hex(8));
        let body = (id.clone(), random_i32(), random_i32(), reason.clone());
        // Broadcast, and sent to the watcher's connection directly.
        forger
            .emit_signal(None::<&str>, OBJECT_PATH, INTERFACE, "SandboxExited", &body)
            .await
            .unwrap();
        forger
            .emit_signal(
                Some(watcher_name.as_str()),
                OBJECT_PATH,
                INTERFACE,
                "SandboxExited",
                &body,
            )
            .await
            .unwrap();

        let forged = tokio::time::timeout(Duration::from_secs(2), exits.next()).await;
        assert!(
            forged.is_err(),
            "a SandboxExited from {} was believed: {:?}",
            forger.unique_name().unwrap(),
            forged
                .ok()
                .flatten()
                .map(|s| s.args().map(|a| a.reason).ok())
        );
        // The sandbox lives: the helper still has it, and the server still answers.
        let live = h.client().await.list_sandboxes().await.unwrap();
        assert!(live.iter().any(|s| s.id == id), "{live:?}");
        let line = format!("ping {}\n", random_hex(8));
        stdin.write_all(line.as_bytes()).await.unwrap();
        let mut echoed = String::new();
        tokio::time::timeout(Duration::from_secs(5), stdout.read_line(&mut echoed))
            .await
            .expect("the server stopped answering after a forged signal")
            .unwrap();
        assert_eq!(echoed, format!("echo: {line}"));

        // The genuine signal does arrive once the gateway lets the sandbox go (the guard):
        // the watcher was listening all along.
        drop(launched.guard);
        drop(stdin);
        let real = tokio::time::timeout(Duration::from_secs(20), exits.next())
            .await
            .expect("no genuine SandboxExited")
            .expect("stream ended");
        let args = real.args().unwrap();
        assert_eq!(args.id, id);
        assert_ne!(args.reason, reason);
    });
}

#[test]
fn a_server_the_helper_refuses_is_a_tools_list_error_naming_it_with_the_helpers_words_only_in_the_audit()
 {
    use gateway::mcp::front::{Front, FrontLimits};
    use gateway::mcp::servers::ServerPool;
    use gateway::mcp::stdio::SessionLimits;
    use gateway::store::{EndpointRecord, TokenRecord};
    testkit::privileged("helper_refusal_reaches_the_client", 2, || async {
        let h = Harness::start(0).await;
        // An image without one of the directories bwrap mounts over: the helper refuses it.
        let image = h.attack_dir_image(&format!("img{}", random_hex(3)));
        let gone = ["proc", "dev", "tmp", "run"][usize::from(random_hex(1).as_bytes()[1] % 4)];
        std::fs::remove_dir(h.images.join("dirs").join(&image).join(gone)).unwrap();
        let server = format!("s{}", random_hex(4));
        let store: Arc<dyn Store> =
            Arc::new(SqliteStore::open_in(&h.dir.path().join("state")).unwrap());
        store
            .server_add(&ServerRecord {
                name: server.clone(),
                version: "1".into(),
                image_digest: format!("dir:{image}"),
                manifest: json!({"name": server, "version": "1",
                    "command": ["/bin/gigmcp-attack", "echo-stdio"]})
                .to_string(),
                source: "unsigned".into(),
                approved_ranges: Vec::new(),
                installed_ms: now_ms(),
                origin: None,
            })
            .unwrap();
        store
            .endpoint_add(&EndpointRecord {
                name: "e".into(),
                servers: vec![(server.clone(), vec!["*".into()])],
            })
            .unwrap();
        let audit = gateway::audit::AuditQueue::new(Auditor::new(store.clone(), "gigmcpd"));
        let pool = Arc::new(ServerPool::new(
            store.clone(),
            audit.clone(),
            launcher(&h, store.clone(), h.client().await),
            SessionLimits::default(),
        ));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let front = Front::new(
            store.clone(),
            audit.clone(),
            pool,
            FrontLimits::default(),
            vec![addr.to_string()],
            vec![],
            None,
        );
        let serving = tokio::spawn(front.clone().serve(listener));
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
        let token = t.secret.to_string();
        let list = testkit::mcp::rpc(addr, "e", &token, "tools/list", json!({})).await;
        let message = list["error"]["message"].as_str().unwrap_or_default();
        let why = format!("no /{gone} directory");
        assert!(
            list.get("result").is_none()
                && message.contains(&format!("server {server}"))
                && message.contains("the sandbox helper refused its sandbox"),
            "{list}"
        );
        // The helper's own words (host paths, its steps) reach the admin, not the client.
        assert!(!list.to_string().contains(&why), "{list}");
        audit.flush().await;
        let audit = store.audit_recent(1000).unwrap();
        assert!(
            audit.iter().any(|e| e.action == "mcp.server.failed"
                && e.target == server
                && e.outcome == "failed"
                && e.detail.contains(&why)),
            "{audit:#?}"
        );
        assert!(
            audit.iter().any(|e| e.action == "mcp.call"
                && e.outcome == "failed"
                && e.detail.contains("method=tools/list")),
            "{audit:#?}"
        );
        assert!(h.client().await.list_sandboxes().await.unwrap().is_empty());
        serving.abort();
    });
}
