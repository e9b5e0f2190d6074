//! The front end to end without processes or sockets: requests go straight to
//! [`Front::handle`], a real store in a temporary directory, and a fake MCP server on the far
//! side of an in-memory duplex pipe that answers `tools/list` and echoes `tools/call`, and
//! records every method it was sent.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use super::{Front, FrontLimits};
use crate::audit::{AuditQueue, Auditor};
use crate::mcp::router::Sessions;
use crate::mcp::stdio::{CallError, ServerSession, SessionLimits};
use crate::store::{EndpointRecord, ServerRecord, SqliteStore, Store, TokenRecord, now_ms};
use crate::tokens;

const HOST: &str = "gw.test:443";

/// What the fake server was asked, by method (with the tool name for calls).
type Seen = Arc<Mutex<Vec<String>>>;

/// A fake server speaking newline-delimited JSON-RPC on `io`: two tools, `echo` and `rm`.
async fn fake_server(io: tokio::io::DuplexStream, seen: Seen) {
    let (r, mut w) = tokio::io::split(io);
    let mut lines = BufReader::new(r).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let msg: Value = serde_json::from_str(&line).unwrap();
        let method = msg["method"].as_str().unwrap_or_default().to_owned();
        let name = msg["params"]["name"].as_str().unwrap_or_default();
        seen.lock()
            .unwrap()
            .push(format!("{method} {name}").trim().into());
        let result = match method.as_str() {
            "tools/list" => json!({"tools": [
                {"name": "echo", "description": "echoes", "inputSchema": {"type": "object"}},
                {"name": "rm", "description": "removes", "inputSchema": {"type": "object"}},
            ]}),
            "tools/call" => json!({"content": [{"type": "text",
                "text": msg["params"]["arguments"]["text"].clone()}]}),
            _ => continue,
        };
        let answer = json!({"jsonrpc": "2.0", "id": msg["id"], "result": result});
        w.write_all(format!("{answer}\n").as_bytes()).await.unwrap();
    }
}

/// One fake server, `files`, behind the [`Sessions`] the front asks.
struct FakeServers {
    sessions: HashMap<String, Arc<ServerSession>>,
    changes: tokio::sync::broadcast::Sender<(String, String)>,
}

impl Sessions for FakeServers {
    async fn session(&self, server: &str) -> Result<Arc<ServerSession>, CallError> {
        Ok(self.sessions[server].clone())
    }

    fn list_changes(&self) -> tokio::sync::broadcast::Receiver<(String, String)> {
        self.changes.subscribe()
    }
}

struct Rig {
    front: Arc<Front<FakeServers>>,
    store: Arc<dyn Store>,
    token: String,
    seen: Seen,
    _dir: tempfile::TempDir,
}

/// Server `files` installed; endpoint `e` exposes only its `echo`; a token for `e`.
fn rig() -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open_in(dir.path()).unwrap());
    store
        .server_add(&ServerRecord::unsigned_for_test("files", "/bin/files"))
        .unwrap();
    store
        .endpoint_add(&EndpointRecord {
            name: "e".into(),
            servers: vec![("files".into(), vec!["echo".into()])],
        })
        .unwrap();
    let t = tokens::generate().unwrap();
    store
        .token_add(&TokenRecord {
            id: t.id.clone(),
            endpoint: "e".into(),
            hash: t.hash.to_vec(),
            label: "test".into(),
            created_ms: now_ms(),
            expires_ms: None,
            revoked_ms: None,
        })
        .unwrap();
    let (ours, theirs) = tokio::io::duplex(64 * 1024);
    let seen = Seen::default();
    tokio::spawn(fake_server(theirs, seen.clone()));
    let (r, w) = tokio::io::split(ours);
    let session = ServerSession::start("files", r, w, SessionLimits::default());
    let servers = Arc::new(FakeServers {
        sessions: HashMap::from([("files".to_owned(), session)]),
        changes: tokio::sync::broadcast::channel(4).0,
    });
    let audit = AuditQueue::new(Auditor::new(store.clone(), "test"));
    let front = Front::new(
        store.clone(),
        audit,
        servers,
        FrontLimits::default(),
        vec![HOST.into()],
        Vec::new(),
        None,
    );
    Rig {
        front,
        store,
        token: t.secret.to_string(),
        seen,
        _dir: dir,
    }
}

impl Rig {
    /// A stateless (2026-07-28) `POST` of `method` with `params`.
    async fn post(&self, method: &str, params: Value) -> (StatusCode, Value) {
        let name = params["name"].as_str().unwrap_or_default().to_owned();
        let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
        let req = Request::post("/mcp/e")
            .header("host", HOST)
            .header("authorization", format!("Bearer {}", self.token))
            .header("content-type", "application/json")
            .header("mcp-protocol-version", "2026-07-28")
            .header("mcp-method", method)
            .header("mcp-name", name)
            .body(Full::new(Bytes::from(body.to_string())))
            .unwrap();
        self.send(req).await
    }

    async fn send(&self, req: Request<Full<Bytes>>) -> (StatusCode, Value) {
        let resp = self.front.handle(req).await;
        let status = resp.status();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    fn calls_seen(&self) -> Vec<String> {
        let seen = self.seen.lock().unwrap();
        seen.iter()
            .filter(|m| m.starts_with("tools/call"))
            .cloned()
            .collect()
    }
}

#[tokio::test]
async fn a_tool_in_the_subset_is_called_under_the_servers_own_name() {
    let rig = rig();
    let (status, body) = rig
        .post(
            "tools/call",
            json!({"name": "files__echo", "arguments": {"text": "hi"}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["result"]["content"][0]["text"], "hi");
    assert_eq!(rig.calls_seen(), ["tools/call echo"]);
}

#[tokio::test]
async fn a_tool_outside_the_subset_is_refused_and_never_reaches_the_server() {
    let rig = rig();
    let (status, body) = rig
        .post("tools/call", json!({"name": "files__rm", "arguments": {}}))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body["error"]["message"],
        "tool files__rm is not available on this endpoint"
    );
    assert!(rig.calls_seen().is_empty());
}

#[tokio::test]
async fn tools_list_shows_only_the_subset_namespaced() {
    let rig = rig();
    let (_, body) = rig.post("tools/list", json!({})).await;
    let names: Vec<&str> = body["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["files__echo"]);
}

#[tokio::test]
async fn an_admin_change_to_the_endpoint_is_seen_by_the_next_request() {
    let rig = rig();
    let (_, before) = rig.post("tools/list", json!({})).await;
    assert_eq!(before["result"]["tools"][0]["description"], "echoes");
    assert!(
        rig.store
            .endpoint_describe("e", "files", "echo", "says it back")
            .unwrap()
    );
    let (_, after) = rig.post("tools/list", json!({})).await;
    assert_eq!(after["result"]["tools"][0]["description"], "says it back");
}

#[tokio::test]
async fn a_request_for_a_foreign_host_is_refused_with_403() {
    let rig = rig();
    let req = Request::post("/mcp/e")
        .header("host", "evil.example:443")
        .header("authorization", format!("Bearer {}", rig.token))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(b"{}")))
        .unwrap();
    let (status, body) = rig.send(req).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body["error"], "Host not allowed");
}

#[tokio::test]
async fn a_request_without_a_token_is_refused_with_401() {
    let rig = rig();
    let req = Request::post("/mcp/e")
        .header("host", HOST)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(b"{}")))
        .unwrap();
    let resp = rig.front.handle(req).await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        resp.headers()["www-authenticate"],
        "Bearer realm=\"gigmcp\""
    );
}

#[tokio::test]
async fn stateless_headers_that_disagree_with_the_body_are_refused() {
    let rig = rig();
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": {"name": "files__rm"}});
    let req = Request::post("/mcp/e")
        .header("host", HOST)
        .header("authorization", format!("Bearer {}", rig.token))
        .header("content-type", "application/json")
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", "tools/call")
        .header("mcp-name", "files__echo")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap();
    let (status, _) = rig.send(req).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(rig.calls_seen().is_empty());
}

#[tokio::test]
async fn a_session_request_without_initialize_is_refused() {
    let rig = rig();
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "ping"});
    let req = Request::post("/mcp/e")
        .header("host", HOST)
        .header("authorization", format!("Bearer {}", rig.token))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap();
    let (status, body) = rig.send(req).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["message"], "missing Mcp-Session-Id");
}
