//! The MCP front's handling of raw requests: bad input of every kind gets its own error and an
//! audit event while serving goes on, the stateless protocol revision needs headers that match
//! the body, and sessions are bounded in number and expire when idle.

use testkit::mcp as mcp_support;

use std::time::Duration;

use mcp_support::{Gw, ORIGIN_OK, http, post_headers, venv};
use serde_json::{Value, json};

async fn initialize(gw: &Gw, bearer: &str) -> String {
    let body = json!({"jsonrpc":"2.0","id":1,"method":"initialize","params":{
        "protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"1"}}});
    let (status, headers, resp) = http(
        gw.addr,
        "POST",
        "/mcp/agents",
        &post_headers(bearer, &[]),
        body.to_string().into_bytes(),
    )
    .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&resp));
    let r: Value = serde_json::from_slice(&resp).unwrap();
    assert_eq!(r["result"]["protocolVersion"], "2025-06-18");
    headers["mcp-session-id"].to_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_its_error_and_an_audit_event_and_serving_goes_on() {
    let gw = Gw::start().await;
    let (_, token) = gw.token("agents");
    let bearer = format!("Bearer {token}");
    let (other_id, other) = gw.token("other");
    let other_bearer = format!("Bearer {other}");
    let (revoked_id, revoked) = gw.token("agents");
    assert!(gw.store.token_revoke(&revoked_id, 1).unwrap());
    let revoked_bearer = format!("Bearer {revoked}");
    let sid = initialize(&gw, &bearer).await;
    let list = json!({"jsonrpc":"2.0","id":2,"method":"tools/list"})
        .to_string()
        .into_bytes();

    struct Case<'a> {
        name: &'a str,
        headers: Vec<(&'a str, &'a str)>,
        body: Vec<u8>,
        status: u16,
        /// Expected JSON-RPC error code, when the answer is one.
        rpc: Option<i64>,
    }
    let batch = serde_json::to_vec(&vec![
        json!({"jsonrpc":"2.0","id":1,"method":"ping"});
        10_000
    ])
    .unwrap();
    let huge = {
        let mut b = br#"{"jsonrpc":"2.0","id":1,"method":"ping","params":{"pad":""#.to_vec();
        b.resize(100 << 20, b'a');
        b.extend_from_slice(br#""}}"#);
        b
    };
    let session = [("mcp-session-id", sid.as_str())];
    let cases = vec![
        Case {
            name: "malformed JSON",
            headers: post_headers(&bearer, &session),
            body: b"{\"jsonrpc\":".to_vec(),
            status: 400,
            rpc: Some(-32700),
        },
        Case {
            name: "batch of 10,000",
            headers: post_headers(&bearer, &session),
            body: batch,
            status: 400,
            rpc: Some(-32600),
        },
        Case {
            name: "unknown session",
            headers: post_headers(
                &bearer,
                &[("mcp-session-id", "00112233445566778899aabbccddeeff")],
            ),
            body: list.clone(),
            status: 404,
            rpc: Some(-32600),
        },
        Case {
            name: "no session",
            headers: post_headers(&bearer, &[]),
            body: list.clone(),
            status: 400,
            rpc: Some(-32600),
        },
        Case {
            name: "unsupported version",
            headers: post_headers(
                &bearer,
                &[
                    ("mcp-session-id", sid.as_str()),
                    ("mcp-protocol-version", "1999-01-01"),
                ],
            ),
            body: list.clone(),
            status: 400,
            rpc: Some(-32600),
        },
        Case {
            name: "stateless header mismatch",
            headers: post_headers(
                &bearer,
                &[
                    ("mcp-protocol-version", "2026-07-28"),
                    ("mcp-method", "tools/call"),
                ],
            ),
            body: list.clone(),
            status: 400,
            rpc: Some(-32600),
        },
        Case {
            name: "missing token",
            headers: vec![("content-type", "application/json")],
            body: list.clone(),
            status: 401,
            rpc: None,
        },
        Case {
            name: "wrong token",
            headers: post_headers(
                "Bearer gmcp_tk_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
                &session,
            ),
            body: list.clone(),
            status: 401,
            rpc: None,
        },
        Case {
            name: "revoked token",
            headers: post_headers(&revoked_bearer, &session),
            body: list.clone(),
            status: 401,
            rpc: None,
        },
        Case {
            name: "token of another endpoint",
            headers: post_headers(&other_bearer, &session),
            body: list.clone(),
            status: 401,
            rpc: None,
        },
        Case {
            name: "bad Origin",
            headers: post_headers(
                &bearer,
                &[
                    ("mcp-session-id", sid.as_str()),
                    ("origin", "http://evil.example"),
                ],
            ),
            body: list.clone(),
            status: 403,
            rpc: None,
        },
        Case {
            name: "wrong content type",
            headers: vec![
                ("authorization", bearer.as_str()),
                ("content-type", "text/plain"),
                ("mcp-session-id", sid.as_str()),
            ],
            body: list.clone(),
            status: 415,
            rpc: None,
        },
    ];
    for c in cases {
        let before = gw.audit().await.len();
        let (status, headers, body) =
            http(gw.addr, "POST", "/mcp/agents", &c.headers, c.body).await;
        assert_eq!(
            status,
            c.status,
            "{}: {}",
            c.name,
            String::from_utf8_lossy(&body)
        );
        if let Some(code) = c.rpc {
            let v: Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(v["error"]["code"], code, "{}: {v}", c.name);
        }
        if status == 401 {
            let w = headers["www-authenticate"].to_str().unwrap();
            assert!(w.starts_with("Bearer realm=\"gigmcp\""), "{}: {w}", c.name);
        }
        let audit = gw.audit().await;
        assert!(
            audit[before..]
                .iter()
                .any(|e| e.action == "mcp.denied" && e.outcome == "denied"),
            "{}: no audit event",
            c.name
        );
        // Serving goes on: the good session still works after each bad request.
        let (status, _, body) = http(
            gw.addr,
            "POST",
            "/mcp/agents",
            &post_headers(&bearer, &session),
            list.clone(),
        )
        .await;
        assert_eq!(
            status,
            200,
            "after {}: {}",
            c.name,
            String::from_utf8_lossy(&body)
        );
    }
    // 100 MB: refused by its declared length (413), audited; serving goes on.
    let before = gw.audit().await.len();
    let (status, body) = mcp_support::post_oversized(
        gw.addr,
        "/mcp/agents",
        &post_headers(&bearer, &session),
        huge,
    )
    .await;
    assert_eq!(status, 413, "{}", String::from_utf8_lossy(&body));
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["error"]["code"], -32600);
    assert!(
        gw.audit().await[before..]
            .iter()
            .any(|e| e.action == "mcp.denied" && e.detail.contains("request body too large"))
    );
    let (status, _, _) = http(
        gw.addr,
        "POST",
        "/mcp/agents",
        &post_headers(&bearer, &session),
        list.clone(),
    )
    .await;
    assert_eq!(status, 200);

    // A bad Host (DNS rebinding) is refused before anything else.
    let (status, _, _) = {
        let tcp = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
        let (mut send, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
                .await
                .unwrap();
        tokio::spawn(conn);
        let req = http::Request::post("/mcp/agents")
            .header("host", "attacker.example:80")
            .header("authorization", bearer.as_str())
            .body(http_body_util::Full::new(bytes::Bytes::from(list.clone())))
            .unwrap();
        let r = send.send_request(req).await.unwrap();
        (r.status().as_u16(), (), ())
    };
    assert_eq!(status, 403);
    // The other endpoint's token works on its own endpoint (it sees both tools).
    let (status, h, _) = http(
        gw.addr,
        "POST",
        "/mcp/other",
        &post_headers(&other_bearer, &[]),
        json!({"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}).to_string().into_bytes(),
    )
    .await;
    assert_eq!(status, 200);
    let osid = h["mcp-session-id"].to_str().unwrap().to_owned();
    let (_, _, body) = http(
        gw.addr,
        "POST",
        "/mcp/other",
        &post_headers(&other_bearer, &[("mcp-session-id", &osid)]),
        list.clone(),
    )
    .await;
    let v: Value = serde_json::from_slice(&body).unwrap();
    let mut names: Vec<&str> = v["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["time__convert_time", "time__get_current_time"]);
    let _ = other_id;
    // DELETE ends the session; it is unknown afterwards.
    let (status, _, _) = http(
        gw.addr,
        "DELETE",
        "/mcp/agents",
        &post_headers(&bearer, &session),
        vec![],
    )
    .await;
    assert_eq!(status, 200);
    let (status, _, _) = http(
        gw.addr,
        "POST",
        "/mcp/agents",
        &post_headers(&bearer, &session),
        list,
    )
    .await;
    assert_eq!(status, 404);
    let _ = ORIGIN_OK;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stateless_revision_needs_matching_headers() {
    let gw = Gw::start().await;
    let (_, token) = gw.token("agents");
    let bearer = format!("Bearer {token}");
    let call = json!({"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"time__get_current_time","arguments":{"timezone":"UTC"},"x-unknown":{"kept":true}}});
    let ok = [
        ("mcp-protocol-version", "2026-07-28"),
        ("mcp-method", "tools/call"),
        ("mcp-name", "time__get_current_time"),
    ];
    let (status, _, body) = http(
        gw.addr,
        "POST",
        "/mcp/agents",
        &post_headers(&bearer, &ok),
        call.to_string().into_bytes(),
    )
    .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["id"], 5);
    assert!(
        v["result"]["content"][0]["text"]
            .as_str()
            .unwrap()
            .contains("UTC"),
        "{v}"
    );
    // Mcp-Name naming an allowed tool while the body calls another: refused before routing.
    let sneaky = json!({"jsonrpc":"2.0","id":6,"method":"tools/call","params":{"name":"time__convert_time","arguments":{}}});
    let (status, _, body) = http(
        gw.addr,
        "POST",
        "/mcp/agents",
        &post_headers(&bearer, &ok),
        sneaky.to_string().into_bytes(),
    )
    .await;
    assert_eq!(status, 400, "{}", String::from_utf8_lossy(&body));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_are_bounded_and_expire() {
    mcp_support::require_venv();
    let time = json!({"name": "time", "version": "1",
        "command": [venv().join("mcp-server-time").to_str().unwrap()]});
    let limits = gateway::mcp::front::FrontLimits {
        max_sessions: 3,
        session_idle: Duration::from_millis(700),
        ..Default::default()
    };
    let gw = Gw::with_limits(
        vec![("time", time)],
        vec![("agents", vec![("time", vec!["*"])])],
        &[],
        limits,
    )
    .await;
    let (_, token) = gw.token("agents");
    let bearer = format!("Bearer {token}");
    let init = json!({"jsonrpc":"2.0","id":1,"method":"initialize","params":{
        "protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"1"}}})
    .to_string()
    .into_bytes();
    let mut sids = Vec::new();
    for _ in 0..3 {
        let (status, h, _) = http(
            gw.addr,
            "POST",
            "/mcp/agents",
            &post_headers(&bearer, &[]),
            init.clone(),
        )
        .await;
        assert_eq!(status, 200);
        sids.push(h["mcp-session-id"].to_str().unwrap().to_owned());
    }
    // Past the limit: 503 with a JSON-RPC error, audited.
    let (status, _, body) = http(
        gw.addr,
        "POST",
        "/mcp/agents",
        &post_headers(&bearer, &[]),
        init.clone(),
    )
    .await;
    assert_eq!(status, 503, "{}", String::from_utf8_lossy(&body));
    assert!(
        gw.audit()
            .await
            .iter()
            .any(|e| e.action == "mcp.denied" && e.detail.contains("too many sessions"))
    );
    // Idle sessions expire: their ids are unknown (404), and their slots are free again.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let ping = json!({"jsonrpc":"2.0","id":2,"method":"ping"})
        .to_string()
        .into_bytes();
    let (status, _, _) = http(
        gw.addr,
        "POST",
        "/mcp/agents",
        &post_headers(&bearer, &[("mcp-session-id", &sids[0])]),
        ping,
    )
    .await;
    assert_eq!(status, 404);
    let (status, _, _) = http(
        gw.addr,
        "POST",
        "/mcp/agents",
        &post_headers(&bearer, &[]),
        init,
    )
    .await;
    assert_eq!(status, 200);
}
