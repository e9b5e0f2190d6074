//! The MCP front with real parts: a SQLite store in a temp dir, the front on loopback, and real
//! servers nobody here wrote (`mcp-server-time` from PyPI, in `target/mcp-venv`, made by
//! `scripts/install-deps`).
//!
//! Servers are started by [`ChildLauncher`], a plain child process: these tests are about the
//! HTTP front, tokens, routing and lifecycle. Sandboxed launching is tested with the helper.

#![allow(missing_debug_implementations)] // Gw holds the front and pool, which have no Debug

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use gateway::audit::Auditor;
use gateway::mcp::front::{Front, FrontLimits};
use gateway::mcp::redact::Redactor;
use gateway::mcp::servers::{Launched, Launcher, ServerPool};
use gateway::mcp::stdio::SessionLimits;
use gateway::store::{
    AuditEvent, EndpointRecord, ServerRecord, SqliteStore, Store, TokenRecord, now_ms,
};
use gateway::tokens as token;

pub fn venv() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/mcp-venv/bin")
}

/// The venv must exist: on CI `scripts/install-deps` makes it; a missing one is a failure, not
/// a skip.
pub fn require_venv() {
    let v = venv();
    assert!(
        v.join("mcp-server-time").exists() && v.join("python").exists(),
        "{} is missing: run scripts/install-deps",
        v.display()
    );
}

/// Starts `manifest.command` as a child process; records the pids it started.
#[derive(Default, Clone)]
pub struct ChildLauncher {
    pub pids: Arc<Mutex<Vec<u32>>>,
}

/// Why a test server did not start.
#[derive(Debug, thiserror::Error)]
pub enum ChildLaunchError {
    #[error("manifest: {0}")]
    Manifest(#[from] gateway::manifest::ManifestError),
    #[error(transparent)]
    Plan(#[from] gateway::image::plan::PlanError),
    #[error("spawn {command}: {source}")]
    Spawn {
        command: String,
        source: std::io::Error,
    },
}

impl Launcher for ChildLauncher {
    type Error = ChildLaunchError;

    async fn launch(&self, server: &ServerRecord) -> Result<Launched, ChildLaunchError> {
        let m = gateway::manifest::Manifest::from_json(&server.manifest)?;
        // A plain directory's server: the manifest names its command (the plan refuses one
        // without), and this launcher runs it on the host, outside any image.
        let run = gateway::image::plan::plan(&server.name, None, &m, &[])?;
        let mut child = tokio::process::Command::new(&run.argv[0])
            .args(&run.argv[1..])
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .envs(&m.env)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| ChildLaunchError::Spawn {
                command: run.argv[0].clone(),
                source,
            })?;
        self.pids.lock().unwrap().push(child.id().unwrap_or(0));
        let stdout = child.stdout.take().unwrap();
        let stdin = child.stdin.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        Ok(Launched {
            stdout: Box::new(stdout),
            stdin: Box::new(stdin),
            stderr: Some(Box::new(stderr)),
            guard: Box::new(Mutex::new(child)),
        })
    }

    fn client_reason(err: &ChildLaunchError) -> &'static str {
        match err {
            ChildLaunchError::Manifest(_) | ChildLaunchError::Plan(_) => {
                "its manifest cannot be run"
            }
            ChildLaunchError::Spawn { .. } => "its program could not be started",
        }
    }
}

pub struct Gw {
    _dir: tempfile::TempDir,
    pub store: Arc<dyn Store>,
    /// The vault over `store` (the front's redactor holds it too).
    pub vault: Arc<gateway::vault::Vault>,
    pub addr: std::net::SocketAddr,
    pub launcher: ChildLauncher,
    pub pool: Arc<ServerPool<ChildLauncher>>,
    pub front: Arc<Front<ServerPool<ChildLauncher>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Gw {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub const ORIGIN_OK: &str = "http://localhost:3000";

/// A server to install: name, manifest (JSON).
pub type ServerSpec = (&'static str, serde_json::Value);
/// An endpoint: name, [(server, tools)].
pub type EndpointSpec = (&'static str, Vec<(&'static str, Vec<&'static str>)>);

pub fn node_bin(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../target/mcp-node/node_modules/.bin")
        .join(name)
}

impl Gw {
    /// A store with server `time` (manifest subset: its two tools), endpoint `agents` exposing
    /// only `get_current_time`, endpoint `other` exposing everything; the front on loopback.
    pub async fn start() -> Self {
        require_venv();
        let time = serde_json::json!({
            "name": "time", "version": "1",
            "command": [venv().join("mcp-server-time").to_str().unwrap(), "--local-timezone", "UTC"],
            "tools": ["get_current_time", "convert_time"],
        });
        Self::with(
            vec![("time", time)],
            vec![
                ("agents", vec![("time", vec!["get_current_time"])]),
                ("other", vec![("time", vec!["*"])]),
            ],
            &[],
        )
        .await
    }

    /// Installs `servers`, creates `endpoints`, puts `secrets` (name, value) in a vault whose
    /// values the front redacts, and serves on loopback.
    pub async fn with(
        servers: Vec<ServerSpec>,
        endpoints: Vec<EndpointSpec>,
        secrets: &[(&str, &str)],
    ) -> Self {
        Self::with_limits(servers, endpoints, secrets, FrontLimits::default()).await
    }

    pub async fn with_limits(
        servers: Vec<ServerSpec>,
        endpoints: Vec<EndpointSpec>,
        secrets: &[(&str, &str)],
        limits: FrontLimits,
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> =
            Arc::new(SqliteStore::open_in(&dir.path().join("state")).unwrap());
        for (name, manifest) in servers {
            assert!(
                store
                    .server_add(&ServerRecord {
                        name: name.into(),
                        version: "1".into(),
                        image_digest: "dir:/".into(),
                        manifest: manifest.to_string(),
                        source: "unsigned".into(),
                        approved_ranges: Vec::new(),
                        installed_ms: now_ms(),
                        origin: None,
                    })
                    .unwrap()
            );
        }
        for (name, servers) in endpoints {
            store
                .endpoint_add(&EndpointRecord {
                    name: name.into(),
                    servers: servers
                        .into_iter()
                        .map(|(s, tools)| (s.into(), tools.into_iter().map(String::from).collect()))
                        .collect(),
                })
                .unwrap();
        }
        let vault = Arc::new(
            gateway::vault::Vault::open(
                store.clone(),
                gateway::vault::MasterKey::generate().unwrap(),
            )
            .unwrap(),
        );
        for (name, value) in secrets {
            vault
                .set(
                    &gateway::vault::SecretName::parse(name).unwrap(),
                    &gateway::vault::SecretValue::from(value.as_bytes()),
                )
                .unwrap();
        }
        let launcher = ChildLauncher::default();
        // One audit queue, as in the daemon: flushing the front's flushes the pool's events.
        let queue = gateway::audit::AuditQueue::new(Auditor::new(store.clone(), "gigmcpd"));
        let pool = Arc::new(ServerPool::new(
            store.clone(),
            queue.clone(),
            launcher.clone(),
            SessionLimits::default(),
        ));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let front = Front::new(
            store.clone(),
            queue,
            pool.clone(),
            limits,
            vec![addr.to_string(), format!("localhost:{}", addr.port())],
            vec![ORIGIN_OK.into()],
            Some(Arc::new(Redactor::new(vault.clone()))),
        );
        let task = tokio::spawn(front.clone().serve(listener));
        Self {
            _dir: dir,
            store,
            vault,
            addr,
            launcher,
            pool,
            front,
            task,
        }
    }

    /// The directory of the gateway's SQLite files (to measure what a test makes them grow by).
    pub fn state_dir(&self) -> PathBuf {
        self._dir.path().join("state")
    }

    pub fn url(&self, endpoint: &str) -> String {
        format!("http://{}/mcp/{endpoint}", self.addr)
    }

    /// A new token for `endpoint`; returns (id, secret).
    pub fn token(&self, endpoint: &str) -> (String, String) {
        let t = token::generate().unwrap();
        self.store
            .token_add(&TokenRecord {
                id: t.id.clone(),
                endpoint: endpoint.into(),
                hash: t.hash.to_vec(),
                label: String::new(),
                created_ms: now_ms(),
                expires_ms: None,
                revoked_ms: None,
            })
            .unwrap();
        (t.id, t.secret.to_string())
    }

    /// A JSON-RPC call on the stateless revision (no session), with matching headers.
    pub async fn rpc(
        &self,
        endpoint: &str,
        token: &str,
        method: &str,
        params: serde_json::Value,
    ) -> serde_json::Value {
        rpc(self.addr, endpoint, token, method, params).await
    }

    /// The audit trail so far (after the queue is flushed).
    pub async fn audit(&self) -> Vec<AuditEvent> {
        self.front.flush_audit().await;
        let mut a = self.store.audit_recent(100_000).unwrap();
        a.reverse();
        a
    }
}

/// A JSON-RPC request on the stateless revision (no session), with the `Mcp-Method` and
/// `Mcp-Name` headers matching the body, as a well-behaved client sends them; the answer must be
/// 200 and is returned parsed.
pub async fn rpc(
    addr: std::net::SocketAddr,
    endpoint: &str,
    token: &str,
    method: &str,
    params: serde_json::Value,
) -> serde_json::Value {
    let body = serde_json::json!({"jsonrpc":"2.0","id":1,"method":method,"params":params});
    let bearer = format!("Bearer {token}");
    let mut headers = vec![
        ("authorization", bearer.as_str()),
        ("content-type", "application/json"),
        ("mcp-protocol-version", "2026-07-28"),
        ("mcp-method", method),
    ];
    // What Mcp-Name carries: the name, or a resource's URI.
    let named = if method == "resources/read" {
        "uri"
    } else {
        "name"
    };
    let name = params
        .get(named)
        .and_then(|n| n.as_str())
        .unwrap_or("")
        .to_owned();
    if !name.is_empty() {
        headers.push(("mcp-name", name.as_str()));
    }
    let path = format!("/mcp/{endpoint}");
    let (status, _, body) =
        http(addr, "POST", &path, &headers, body.to_string().into_bytes()).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    serde_json::from_slice(&body).unwrap()
}

/// The headers of a Streamable HTTP POST with `authorization` (a whole `Bearer …` value), JSON
/// in and JSON or SSE out, then `extra`.
pub fn post_headers<'a>(token: &'a str, extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut h = vec![
        ("authorization", token),
        ("content-type", "application/json"),
        ("accept", "application/json, text/event-stream"),
    ];
    h.extend_from_slice(extra);
    h
}

/// One raw HTTP exchange (a fresh connection each time): status, headers, body.
pub async fn http(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> (u16, http::HeaderMap, Vec<u8>) {
    use http_body_util::BodyExt;
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut req = http::Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr.to_string());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req
        .body(http_body_util::Full::new(bytes::Bytes::from(body)))
        .unwrap();
    match send.send_request(req).await {
        Ok(resp) => {
            let status = resp.status().as_u16();
            let headers = resp.headers().clone();
            let body = resp
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes().to_vec())
                .unwrap_or_default();
            (status, headers, body)
        }
        // The server may answer early and close while a huge body is still being sent.
        Err(e) => panic!("{method} {path}: {e}"),
    }
}

/// POSTs a body the server refuses by its declared length: the server may answer and close
/// before the body is written, so the body goes out from another task (write errors ignored)
/// while the response is read. Returns (status, body).
pub async fn post_oversized(
    addr: std::net::SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> (u16, Vec<u8>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut rd, mut wr) = tcp.into_split();
    let mut head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    wr.write_all(head.as_bytes()).await.unwrap();
    let writer = tokio::spawn(async move {
        let _ = wr.write_all(&body).await;
    });
    let mut got = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let read = async {
        while let Ok(n) = rd.read(&mut buf).await {
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
            if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                if got.len() >= end + 4 + len {
                    break;
                }
            }
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(30), read)
        .await
        .expect("a response to the oversized request");
    writer.abort();
    let end = got
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head");
    let status = String::from_utf8_lossy(&got[9..12]).parse().unwrap();
    (status, got[end + 4..].to_vec())
}
