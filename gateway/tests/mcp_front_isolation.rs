//! Who may do what on the MCP front, tested as an attacker would: a bad-token flood against
//! the audit trail, a second token in another token's session, a client choosing its session
//! id, and two hostile servers whose tool names would collide. Names and values are chosen at
//! random; every test runs in its own network namespace.

use testkit::mcp as mcp_support;
use testkit::names::random_u64;
use testkit::names::{between, random_name as name};

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use gateway::mcp::front::FrontLimits;
use mcp_support::{Gw, http, post_headers, venv};
use serde_json::{Value, json};
use tokio::net::TcpStream;

fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

/// A tiny MCP server: tools from `$TOOLS` (a JSON list of names, duplicates kept), calls
/// answered `"$NAME:<tool>"`, a tool named `slow…` sleeps 3 s first.
const SERVER: &str = r#"
import json, os, sys, time
name = os.environ["NAME"]
tools = json.loads(os.environ["TOOLS"])
for line in sys.stdin:
    msg = json.loads(line)
    if "id" not in msg or "method" not in msg:
        continue
    i, m, p = msg["id"], msg["method"], msg.get("params") or {}
    if m == "initialize":
        r = {"protocolVersion":"2025-06-18","capabilities":{"tools":{}},"serverInfo":{"name":name,"version":"1"}}
    elif m == "tools/list":
        r = {"tools":[{"name":t,"description":"tool %d of %s" % (n, name),"inputSchema":{"type":"object"}} for n, t in enumerate(tools)]}
    elif m == "tools/call":
        if p["name"].startswith("slow"):
            time.sleep(3)
        r = {"content":[{"type":"text","text":"%s:%s" % (name, p["name"])}]}
    else:
        print(json.dumps({"jsonrpc":"2.0","id":i,"error":{"code":-32601,"message":"nf"}}), flush=True)
        continue
    print(json.dumps({"jsonrpc":"2.0","id":i,"result":r}), flush=True)
"#;

fn server(name: &'static str, tools: &[&str]) -> (&'static str, Value) {
    let py = venv().join("python");
    (
        name,
        json!({"name": name, "version": "1", "command": [py.to_str().unwrap(), "-c", SERVER],
            "env": {"NAME": name, "TOOLS": serde_json::to_string(tools).unwrap()}}),
    )
}

/// `n` requests with random bad tokens over one keep-alive HTTP/1.1 connection; statuses.
async fn bad_token_requests(addr: SocketAddr, endpoint: &str, n: usize) -> Vec<u16> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut statuses = Vec::new();
    for _ in 0..n {
        let req = http::Request::post(format!("/mcp/{endpoint}"))
            .header("host", addr.to_string())
            .header(
                "authorization",
                format!("Bearer {}{}", gateway::tokens::PREFIX, name(43)),
            )
            .header("content-type", "application/json")
            .body(http_body_util::Full::new(bytes::Bytes::from_static(b"{}")))
            .unwrap();
        send.ready().await.unwrap();
        statuses.push(send.send_request(req).await.unwrap().status().as_u16());
    }
    statuses
}

#[test]
fn a_bad_token_flood_is_audited_at_a_bounded_rate_and_every_refusal_counted() {
    testkit::privileged(
        "a_bad_token_flood_is_audited_at_a_bounded_rate_and_every_refusal_counted",
        2,
        || async {
            let per_second = between(3, 10) as u32;
            let limits = FrontLimits {
                unauthenticated_audit_per_second: per_second,
                ..FrontLimits::default()
            };
            let endpoint = leak(name(7));
            let gw = Gw::with_limits(vec![], vec![(endpoint, vec![])], &[], limits).await;
            let before = gw.audit().await.len();
            let start = Instant::now();
            let floods: Vec<_> = (0..4)
                .map(|_| tokio::spawn(bad_token_requests(gw.addr, endpoint, 300)))
                .collect();
            let mut sent = 0u64;
            for f in floods {
                let statuses = f.await.unwrap();
                assert!(statuses.iter().all(|s| *s == 401), "{statuses:?}");
                sent += statuses.len() as u64;
            }
            let seconds = start.elapsed().as_secs() + 1;
            // The writer summarises a window once it is over, even with no new event.
            tokio::time::sleep(Duration::from_millis(2500)).await;
            let audit: Vec<_> = gw.audit().await.into_iter().skip(before).collect();
            let recorded = audit.iter().filter(|e| e.action == "mcp.denied").count() as u64;
            let summarised: u64 = audit
                .iter()
                .filter(|e| e.action == "audit.suppressed" && e.target == "mcp.denied")
                .map(|e| {
                    let n = e.detail.strip_prefix("suppressed=").unwrap();
                    n.split(' ').next().unwrap().parse::<u64>().unwrap()
                })
                .sum();
            assert!(
                recorded <= u64::from(per_second) * (seconds + 2),
                "{recorded} refusals recorded in {seconds} s at {per_second}/s"
            );
            assert_eq!(
                recorded + summarised,
                sent,
                "every refusal is recorded or counted"
            );
            assert!(
                audit
                    .iter()
                    .filter(|e| e.action == "audit.suppressed")
                    .all(|e| e.detail.contains("unknown token=")),
                "{audit:#?}"
            );
        },
    );
}

async fn initialize(gw: &Gw, endpoint: &str, bearer: &str, extra: &[(&str, &str)]) -> String {
    let body = json!({"jsonrpc":"2.0","id":1,"method":"initialize","params":{
        "protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"1"}}});
    let (status, headers, resp) = http(
        gw.addr,
        "POST",
        &format!("/mcp/{endpoint}"),
        &post_headers(bearer, extra),
        body.to_string().into_bytes(),
    )
    .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&resp));
    headers["mcp-session-id"].to_str().unwrap().to_owned()
}

/// One request: method, headers, body.
type Try<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str);

#[test]
fn a_second_token_cannot_use_stream_end_or_cancel_in_another_tokens_session() {
    testkit::privileged(
        "a_second_token_cannot_use_stream_end_or_cancel_in_another_tokens_session",
        2,
        || async {
            let srv = leak(name(6));
            let endpoint = leak(name(6));
            let gw = Gw::with(
                vec![server(srv, &["slow"])],
                vec![(endpoint, vec![(srv, vec!["*"])])],
                &[],
            )
            .await;
            let path = format!("/mcp/{endpoint}");
            let (_, a) = gw.token(endpoint);
            let (b_id, b) = gw.token(endpoint);
            let (a, b) = (format!("Bearer {a}"), format!("Bearer {b}"));
            let sid = initialize(&gw, endpoint, &a, &[]).await;
            let own = initialize(&gw, endpoint, &b, &[]).await;
            let in_a = [("mcp-session-id", sid.as_str())];
            // A's call runs; B tries everything with A's session id.
            let call_id = random_u64() % 1_000_000;
            let call = json!({"jsonrpc":"2.0","id":call_id,"method":"tools/call",
                "params":{"name": format!("{srv}__slow"),"arguments":{}}});
            let (addr, a2, sid2) = (gw.addr, a.clone(), sid.clone());
            let path2 = path.clone();
            let running = tokio::spawn(async move {
                http(
                    addr,
                    "POST",
                    &path2,
                    &post_headers(&a2, &[("mcp-session-id", &sid2)]),
                    call.to_string().into_bytes(),
                )
                .await
            });
            tokio::time::sleep(Duration::from_millis(500)).await;
            let list = json!({"jsonrpc":"2.0","id":2,"method":"tools/list"}).to_string();
            let cancel = json!({"jsonrpc":"2.0","method":"notifications/cancelled",
                "params":{"requestId": call_id}})
            .to_string();
            let sse = [
                ("accept", "text/event-stream"),
                ("mcp-session-id", sid.as_str()),
            ];
            let with_b = post_headers(&b, &in_a);
            let tries: [Try; 4] = [
                ("POST", &with_b, &list),
                ("POST", &with_b, &cancel),
                ("DELETE", &with_b, ""),
                ("GET", &[("authorization", b.as_str()), sse[0], sse[1]], ""),
            ];
            for (method, headers, body) in tries {
                let (status, _, resp) =
                    http(gw.addr, method, &path, headers, body.as_bytes().to_vec()).await;
                assert_eq!(
                    status,
                    404,
                    "{method} {body} in another token's session: {}",
                    String::from_utf8_lossy(&resp)
                );
            }
            // In its own session, B's cancellation of A's request id reaches nothing.
            let (status, _, _) = http(
                gw.addr,
                "POST",
                &path,
                &post_headers(&b, &[("mcp-session-id", &own)]),
                cancel.clone().into_bytes(),
            )
            .await;
            assert_eq!(status, 202);
            let (status, _, resp) = running.await.unwrap();
            assert_eq!(status, 200);
            let r: Value = serde_json::from_slice(&resp).unwrap();
            assert_eq!(
                r["result"]["content"][0]["text"],
                format!("{srv}:slow"),
                "A's call was not cancelled: {r}"
            );
            // A's session is still A's.
            let (status, _, _) = http(
                gw.addr,
                "POST",
                &path,
                &post_headers(&a, &in_a),
                list.into_bytes(),
            )
            .await;
            assert_eq!(status, 200);
            let audit = gw.audit().await;
            assert!(
                !audit.iter().any(|e| e.action == "mcp.cancel"),
                "{audit:#?}"
            );
            assert!(audit.iter().any(|e| e.action == "mcp.denied"
                && e.detail.contains(&format!("token={b_id}"))
                && e.detail.contains("unknown")));
        },
    );
}

#[test]
fn a_client_chosen_session_id_is_ignored_and_a_guessed_one_is_unknown() {
    testkit::privileged(
        "a_client_chosen_session_id_is_ignored_and_a_guessed_one_is_unknown",
        2,
        || async {
            let endpoint = leak(name(6));
            let gw = Gw::with(vec![], vec![(endpoint, vec![])], &[]).await;
            let (_, t) = gw.token(endpoint);
            let bearer = format!("Bearer {t}");
            let chosen = format!("{:016x}{:016x}", random_u64(), random_u64());
            let sid = initialize(&gw, endpoint, &bearer, &[("mcp-session-id", &chosen)]).await;
            assert_ne!(sid, chosen, "the client chose its session id");
            let ping = json!({"jsonrpc":"2.0","id":2,"method":"ping"}).to_string();
            let guessed = format!("{:016x}{:016x}", random_u64(), random_u64());
            for id in [&chosen, &guessed] {
                let (status, _, _) = http(
                    gw.addr,
                    "POST",
                    &format!("/mcp/{endpoint}"),
                    &post_headers(&bearer, &[("mcp-session-id", id)]),
                    ping.clone().into_bytes(),
                )
                .await;
                assert_eq!(status, 404, "session id {id}");
            }
            // The session the front chose works, and its sized answer says its size (the
            // connection's bookkeeping around the body must not turn it chunked).
            let (status, headers, _) = http(
                gw.addr,
                "POST",
                &format!("/mcp/{endpoint}"),
                &post_headers(&bearer, &[("mcp-session-id", &sid)]),
                ping.clone().into_bytes(),
            )
            .await;
            assert_eq!(status, 200);
            assert!(headers.contains_key("content-length"), "{headers:?}");
        },
    );
}

fn tool_names(list: &Value) -> Vec<String> {
    list["result"]["tools"]
        .as_array()
        .unwrap_or_else(|| panic!("{list}"))
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn two_hostile_servers_cannot_list_one_name_and_a_call_reaches_the_lister() {
    testkit::privileged(
        "two_hostile_servers_cannot_list_one_name_and_a_call_reaches_the_lister",
        2,
        || async {
            // `x` lists `_y` (and `y` twice); `x_` (a row from before the name rule) lists `y`:
            // both would be shown as `x___y`.
            let x = leak(name(5));
            let x_ = leak(format!("{x}_"));
            let y = name(5);
            let under = format!("_{y}");
            let endpoint = leak(name(6));
            let gw = Gw::with(
                vec![server(x, &[&under, &y, &y]), server(x_, &[&y])],
                vec![(endpoint, vec![(x, vec!["*"]), (x_, vec!["*"])])],
                &[],
            )
            .await;
            let (_, token) = gw.token(endpoint);
            let list = gw.rpc(endpoint, &token, "tools/list", json!({})).await;
            let mut names = tool_names(&list);
            let listed = names.len();
            names.sort();
            names.dedup();
            assert_eq!(names.len(), listed, "a name listed twice: {list}");
            assert_eq!(names, [format!("{x}___{y}"), format!("{x}__{y}")]);
            let shown = format!("{x}___{y}");
            let r = gw
                .rpc(
                    endpoint,
                    &token,
                    "tools/call",
                    json!({"name": shown, "arguments": {}}),
                )
                .await;
            assert_eq!(
                r["result"]["content"][0]["text"],
                format!("{x}:{under}"),
                "the call reached another server than the one that listed {shown}: {r}"
            );
            // The ambiguous server is neither listed nor started.
            assert_eq!(gw.launcher.pids.lock().unwrap().len(), 1);
            let audit = gw.audit().await;
            let hidden: Vec<_> = audit.iter().filter(|e| e.action == "mcp.hidden").collect();
            assert!(
                hidden
                    .iter()
                    .any(|e| e.detail.contains(&format!("server {x_}:"))
                        && e.detail.contains(&format!("{x}__{y}: listed twice"))),
                "{hidden:#?}"
            );
        },
    );
}
