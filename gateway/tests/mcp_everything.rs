//! Issue 5 with `@modelcontextprotocol/server-everything` (npm) behind the gateway and the
//! official TypeScript SDK as the client: subsets, secret redaction both ways, a server killed
//! in the middle of a call.

use testkit::mcp as mcp_support;

use std::time::Duration;

use base64::Engine as _;
use mcp_support::{Gw, http, node_bin};
use serde_json::{Value, json};

const SECRET: &str = "sk-live-7a1f9c3e5b2d4a68e0";

async fn gw() -> Gw {
    let everything = json!({
        "name": "everything", "version": "1",
        "command": [node_bin("mcp-server-everything").to_str().unwrap(), "stdio"],
        // The server's own environment holds the secret's base64 (as a leaky server might).
        "env": {"LEAKY": base64::engine::general_purpose::STANDARD.encode(SECRET)},
    });
    assert!(
        node_bin("mcp-server-everything").exists(),
        "target/mcp-node is missing: run scripts/install-deps"
    );
    Gw::with(
        vec![("everything", everything)],
        vec![(
            "e",
            vec![(
                "everything",
                vec!["echo", "get-env", "trigger-long-running-operation"],
            )],
        )],
        &[("API_KEY", SECRET)],
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secret_values_are_redacted_in_arguments_and_results() {
    let gw = gw().await;
    let (token_id, token) = gw.token("e");
    // Client → server: the argument never reaches the server; the echo shows the tag.
    let r = gw
        .rpc(
            "e",
            &token,
            "tools/call",
            json!({"name": "everything__echo", "arguments": {"message": format!("key={SECRET}")}}),
        )
        .await;
    let text = r["result"]["content"][0]["text"].as_str().unwrap();
    assert!(
        text.contains("[REDACTED:API_KEY]") && !text.contains(SECRET),
        "{text}"
    );
    // Server → client: the base64 of the value in the server's environment is redacted.
    let r = gw
        .rpc(
            "e",
            &token,
            "tools/call",
            json!({"name": "everything__get-env", "arguments": {}}),
        )
        .await;
    let text = r.to_string();
    let b64 = base64::engine::general_purpose::STANDARD.encode(SECRET);
    assert!(
        !text.contains(&b64) && text.contains("[REDACTED:API_KEY]"),
        "{text}"
    );
    let audit = gw.audit().await;
    let red: Vec<_> = audit
        .iter()
        .filter(|e| e.action == "mcp.redacted")
        .collect();
    assert!(
        red.iter().any(|e| e.detail.contains("arguments:API_KEY")
            && e.detail.contains(&format!("token={token_id}"))),
        "{red:#?}"
    );
    assert!(
        red.iter().any(|e| e.detail.contains("result:API_KEY")),
        "{red:#?}"
    );
    assert!(
        !audit
            .iter()
            .any(|e| e.detail.contains(SECRET) || e.detail.contains(&b64))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_killed_mid_call_fails_that_call_and_the_next_one_is_served() {
    let gw = gw().await;
    let (_, token) = gw.token("e");
    let r = gw
        .rpc(
            "e",
            &token,
            "tools/call",
            json!({"name": "everything__echo", "arguments": {"message": "warm"}}),
        )
        .await;
    assert!(r["result"].is_object(), "{r}");
    let pid = *gw.launcher.pids.lock().unwrap().last().unwrap();
    let killer = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::SIGKILL,
        )
        .unwrap();
    });
    let started = std::time::Instant::now();
    let r = gw.rpc("e", &token, "tools/call", json!({"name": "everything__trigger-long-running-operation", "arguments": {"duration": 20, "steps": 4}}))
    .await;
    killer.await.unwrap();
    assert_eq!(r["error"]["code"], -32001, "{r}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the failed call waited for a timeout"
    );
    let mut served = false;
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let r = gw
            .rpc(
                "e",
                &token,
                "tools/call",
                json!({"name": "everything__echo", "arguments": {"message": "again"}}),
            )
            .await;
        if r["result"].is_object() {
            served = true;
            break;
        }
    }
    assert!(served, "not restarted");
    assert_eq!(gw.launcher.pids.lock().unwrap().len(), 2);
}

/// The official TypeScript SDK's Streamable HTTP client with a bearer token.
const TS_CLIENT: &str = r#"
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
const [url, token] = process.argv.slice(1);
const transport = new StreamableHTTPClientTransport(new URL(url),
  { requestInit: { headers: { Authorization: `Bearer ${token}` } } });
const client = new Client({ name: "ts-sdk-test", version: "1.0.0" });
await client.connect(transport);
const tools = await client.listTools();
console.log("TOOLS", JSON.stringify(tools.tools.map((t) => t.name).sort()));
const r = await client.callTool({ name: "everything__echo", arguments: { message: "from ts" } });
console.log("CALL", JSON.stringify(r.content));
try {
  await client.callTool({ name: "everything__get-sum", arguments: { a: 1, b: 2 } });
  console.log("OUTSIDE ANSWERED");
} catch (e) {
  console.log("OUTSIDE REFUSED", e.message);
}
await client.close();
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typescript_sdk_lists_and_calls_within_the_subset() {
    let gw = gw().await;
    let (_, token) = gw.token("e");
    let node_dir = node_bin("x")
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .to_owned();
    let out = tokio::process::Command::new("node")
        .current_dir(&node_dir)
        .args(["--input-type=module", "-e", TS_CLIENT, &gw.url("e"), &token])
        .output();
    let out = tokio::time::timeout(Duration::from_secs(60), out)
        .await
        .unwrap()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stdout.contains("OUTSIDE"), "{stdout}\n{stderr}");
    assert!(
        stdout.contains(r#"TOOLS ["everything__echo","everything__get-env","everything__trigger-long-running-operation"]"#),
        "{stdout}"
    );
    assert!(stdout.contains("Echo: from ts"), "{stdout}");
    assert!(
        stdout.contains("OUTSIDE REFUSED") && stdout.contains("not available on this endpoint"),
        "{stdout}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prompts_and_resources_are_namespaced_and_routed() {
    let gw = gw().await;
    let (_, token) = gw.token("e");
    let prompts = gw.rpc("e", &token, "prompts/list", json!({})).await;
    let names: Vec<&str> = prompts["result"]["prompts"]
        .as_array()
        .unwrap_or_else(|| panic!("{prompts}"))
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"everything__simple-prompt"), "{names:?}");
    assert!(names.iter().all(|n| n.starts_with("everything__")));
    let got = gw
        .rpc(
            "e",
            &token,
            "prompts/get",
            json!({"name": "everything__args-prompt", "arguments": {"city": "Lyon"}}),
        )
        .await;
    assert!(got.to_string().contains("Lyon"), "{got}");

    let res = gw.rpc("e", &token, "resources/list", json!({})).await;
    let uris: Vec<&str> = res["result"]["resources"]
        .as_array()
        .unwrap_or_else(|| panic!("{res}"))
        .iter()
        .map(|r| r["uri"].as_str().unwrap())
        .collect();
    assert!(
        uris.contains(&"everything+demo://resource/static/document/features.md"),
        "{uris:?}"
    );
    let read = gw
        .rpc(
            "e",
            &token,
            "resources/read",
            json!({"uri": "everything+demo://resource/static/document/features.md"}),
        )
        .await;
    assert_eq!(
        read["result"]["contents"][0]["uri"],
        "everything+demo://resource/static/document/features.md",
        "{read}"
    );
    // A template expands on the namespaced form and routes the same way.
    let tpl = gw
        .rpc("e", &token, "resources/templates/list", json!({}))
        .await;
    assert!(
        tpl.to_string()
            .contains("everything+demo://resource/dynamic/text/{resourceId}"),
        "{tpl}"
    );
    let read = gw
        .rpc(
            "e",
            &token,
            "resources/read",
            json!({"uri": "everything+demo://resource/dynamic/text/7"}),
        )
        .await;
    assert!(read["result"]["contents"][0]["text"].is_string(), "{read}");
    // Another server's name, or none: refused, audited.
    let bad = gw
        .rpc(
            "e",
            &token,
            "resources/read",
            json!({"uri": "demo://resource/static/document/features.md"}),
        )
        .await;
    assert_eq!(bad["error"]["code"], -32602, "{bad}");
    let bad = gw
        .rpc(
            "e",
            &token,
            "prompts/get",
            json!({"name": "other__simple-prompt"}),
        )
        .await;
    assert_eq!(bad["error"]["code"], -32602, "{bad}");
    assert!(
        gw.audit()
            .await
            .iter()
            .any(|e| e.action == "mcp.denied" && e.detail.contains("other__simple-prompt"))
    );
}

/// The Python SDK with a progress callback: the gateway answers with server-sent events,
/// relaying the server's progress notifications under the client's token.
const PY_PROGRESS: &str = r#"
import asyncio, sys
import httpx2
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client

async def main(url, token):
    seen = []
    async def on_progress(progress, total, message):
        seen.append((progress, total))
    async with httpx2.AsyncClient(headers={"Authorization": "Bearer " + token}) as http:
        async with streamable_http_client(url, http_client=http) as streams:
            async with ClientSession(streams[0], streams[1]) as s:
                await s.initialize()
                r = await s.call_tool("everything__trigger-long-running-operation",
                    {"duration": 1, "steps": 4}, progress_callback=on_progress)
                print("RESULT", [c.text for c in r.content if hasattr(c, "text")], flush=True)
                print("PROGRESS", seen, flush=True)

asyncio.run(main(sys.argv[1], sys.argv[2]))
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_is_relayed_and_a_cancelled_call_ends_at_once() {
    let gw = gw().await;
    let (_, token) = gw.token("e");
    let out = tokio::process::Command::new(mcp_support::venv().join("python"))
        .arg("-c")
        .arg(PY_PROGRESS)
        .args([&gw.url("e"), &token])
        .output();
    let out = tokio::time::timeout(Duration::from_secs(60), out)
        .await
        .unwrap()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("RESULT"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let progress = stdout.lines().find(|l| l.starts_with("PROGRESS")).unwrap();
    assert_eq!(progress.matches('(').count(), 4, "{progress}");

    // Cancellation: a 20-second operation, streamed; the client cancels it by its own id.
    let bearer = format!("Bearer {token}");
    let addr = gw.addr;
    let call = json!({"jsonrpc":"2.0","id":"call-7","method":"tools/call","params":{
        "name":"everything__trigger-long-running-operation","arguments":{"duration":20,"steps":20},
        "_meta":{"progressToken":"mine"}}});
    let b2 = bearer.clone();
    let streamed = tokio::spawn(async move {
        let headers = [
            ("authorization", b2.as_str()),
            ("content-type", "application/json"),
            ("accept", "application/json, text/event-stream"),
            ("mcp-protocol-version", "2026-07-28"),
            ("mcp-method", "tools/call"),
            ("mcp-name", "everything__trigger-long-running-operation"),
        ];
        let started = std::time::Instant::now();
        let (status, h, body) = http(
            addr,
            "POST",
            "/mcp/e",
            &headers,
            call.to_string().into_bytes(),
        )
        .await;
        (
            status,
            h,
            String::from_utf8_lossy(&body).into_owned(),
            started.elapsed(),
        )
    });
    tokio::time::sleep(Duration::from_millis(2500)).await;
    // The same id again while the first is in flight: refused (a cancel must be unambiguous).
    let again = gw
        .rpc(
            "e",
            &token,
            "tools/call",
            json!({"name": "everything__echo", "arguments": {"message": "x"}}),
        )
        .await;
    assert!(
        again["result"].is_object(),
        "a different id (1) is fine: {again}"
    );
    let dup = json!({"jsonrpc":"2.0","id":"call-7","method":"tools/call","params":{
        "name":"everything__echo","arguments":{"message":"dup"}}});
    let dup_headers = [
        ("authorization", bearer.as_str()),
        ("content-type", "application/json"),
        ("mcp-protocol-version", "2026-07-28"),
        ("mcp-method", "tools/call"),
        ("mcp-name", "everything__echo"),
    ];
    let (_, _, body) = http(
        addr,
        "POST",
        "/mcp/e",
        &dup_headers,
        dup.to_string().into_bytes(),
    )
    .await;
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["error"]["code"], -32600, "{v}");
    let cancel = json!({"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":"call-7","reason":"changed my mind"}});
    let headers = [
        ("authorization", bearer.as_str()),
        ("content-type", "application/json"),
        ("mcp-protocol-version", "2026-07-28"),
        ("mcp-method", "notifications/cancelled"),
    ];
    let (status, _, _) = http(
        addr,
        "POST",
        "/mcp/e",
        &headers,
        cancel.to_string().into_bytes(),
    )
    .await;
    assert_eq!(status, 202);
    let (status, h, body, took) = streamed.await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(h["content-type"], "text/event-stream");
    assert!(took < Duration::from_secs(10), "not cancelled: {took:?}");
    // Progress came first, under the client's own token; then the cancellation error.
    assert!(body.contains(r#""progressToken":"mine""#), "{body}");
    assert!(
        !body.contains("gmcp-progress-"),
        "the gateway's token leaked: {body}"
    );
    assert!(body.contains("-32800"), "{body}");
    assert!(gw.audit().await.iter().any(|e| e.action == "mcp.cancel"));
    // The server is still healthy afterwards.
    let r = gw
        .rpc(
            "e",
            &token,
            "tools/call",
            json!({"name": "everything__echo", "arguments": {"message": "after"}}),
        )
        .await;
    assert!(r["result"].is_object(), "{r}");
}
